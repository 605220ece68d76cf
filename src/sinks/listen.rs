//! Scrape mode: serves the latest cycle's exposition text at `GET /metrics` and the
//! agent's liveness at `GET /healthz`, for sites that scrape the agent instead of (or as
//! well as) using a Pushgateway, as they scraped the old exporter.
//!
//! Each cycle replaces the whole body, so a series that vanished from the server vanishes
//! from the next scrape: nothing stale is served. The served series carry the job's
//! grouping labels (`job`, `slurm_job_id`, …), so a scrape job with `honor_labels: true`
//! stores the same series as one that scrapes the Pushgateway. This module never sees
//! Arkouda data, only bytes, and never blocks the cycle: a slow scraper waits on its own
//! connection.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::time::Instant;

use super::{BoxFuture, CheckLine, Counters, Cycle, Sink};
use crate::model;

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Shared {
    body: Bytes,
    last_cycle: Option<Instant>,
}

/// The server of `GET /metrics` and `GET /healthz`, updated after every cycle.
#[derive(Clone)]
pub struct Listen {
    shared: Arc<Mutex<Shared>>,
    addr: SocketAddr,
    /// /healthz fails when no cycle finished for this long.
    stale_after: Duration,
    /// The accept loop, stopped when the sink ends.
    server: Option<Arc<tokio::task::JoinHandle<()>>>,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {reason}")]
pub struct ListenError {
    addr: String,
    reason: String,
}

impl Listen {
    /// Binds `addr` and serves in the background on the current runtime.
    pub async fn start(addr: &str, interval: Duration) -> Result<Listen, ListenError> {
        let err = |reason: String| ListenError {
            addr: addr.to_string(),
            reason,
        };
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| err(e.to_string()))?;
        let local = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let listen = Listen {
            shared: Arc::new(Mutex::new(Shared {
                body: Bytes::new(),
                last_cycle: None,
            })),
            addr: local,
            stale_after: interval * 3 + Duration::from_secs(5),
            server: None,
        };
        let served = listen.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    // Out of file descriptors, say: try again shortly rather than spin.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let this = served.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let this = this.clone();
                        async move { Ok::<_, std::convert::Infallible>(this.answer(&req)) }
                    });
                    let conn = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
                    // A scraper that never finishes its request is dropped.
                    let _ = tokio::time::timeout(Duration::from_secs(60), conn).await;
                });
            }
        });
        Ok(Listen {
            server: Some(Arc::new(server)),
            ..listen
        })
    }

    /// Stops accepting scrapers.
    pub fn stop(&self) {
        if let Some(s) = &self.server {
            s.abort();
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces what `/metrics` serves.
    pub fn update(&self, body: Bytes) {
        if let Ok(mut s) = self.shared.lock() {
            s.body = body;
            s.last_cycle = Some(Instant::now());
        }
    }

    fn answer<B>(&self, req: &Request<B>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, ctype: &str, body: Bytes| {
            let mut r = Response::new(Full::new(body));
            *r.status_mut() = status;
            if let Ok(v) = hyper::header::HeaderValue::from_str(ctype) {
                r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
            }
            r
        };
        let (body, last) = match self.shared.lock() {
            Ok(s) => (s.body.clone(), s.last_cycle),
            Err(_) => (Bytes::new(), None),
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") if last.is_some() => {
                reply(StatusCode::OK, TEXT_FORMAT, body)
            }
            (&Method::GET, "/metrics") => reply(
                StatusCode::SERVICE_UNAVAILABLE,
                "text/plain",
                Bytes::from_static(b"no cycle has finished yet\n"),
            ),
            (&Method::GET, "/healthz") => match last {
                Some(t) if t.elapsed() <= self.stale_after => {
                    reply(StatusCode::OK, "text/plain", Bytes::from_static(b"ok\n"))
                }
                _ => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    Bytes::from_static(b"no recent cycle\n"),
                ),
            },
            _ => reply(
                StatusCode::NOT_FOUND,
                "text/plain",
                Bytes::from_static(b"try /metrics or /healthz\n"),
            ),
        }
    }
}

/// The state of the address, for logging only its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Unknown,
    Up,
    Down(String),
}

/// Scrape mode as a [`Sink`]: serves each cycle with the job's grouping labels added.
///
/// A bind that fails (the port is taken, e.g. by another job's agent on the node) is not
/// fatal: it is logged, counted in `arkouda_agent_listen_errors_total`, and tried again
/// with every cycle while the other sinks go on.
pub struct ListenSink {
    addr: String,
    interval: Duration,
    grouping: Vec<(String, String)>,
    listen: Option<Listen>,
    state: State,
    counters: Arc<Counters>,
    text: String,
}

impl ListenSink {
    pub fn new(
        addr: String,
        interval: Duration,
        grouping: Vec<(String, String)>,
        counters: Arc<Counters>,
    ) -> ListenSink {
        counters.with_listen();
        ListenSink {
            addr,
            interval,
            grouping,
            listen: None,
            state: State::Unknown,
            counters,
            text: String::new(),
        }
    }

    /// Binds the address if it is not bound yet; logs only changes of state.
    async fn bind(&mut self) {
        if self.listen.is_some() {
            return;
        }
        match Listen::start(&self.addr, self.interval).await {
            Ok(listen) => {
                let again = if self.state == State::Unknown {
                    ""
                } else {
                    " (the address is free again)"
                };
                tracing::info!(address = %listen.local_addr(), "serving GET /metrics and GET /healthz{again}");
                self.state = State::Up;
                self.listen = Some(listen);
            }
            Err(e) => {
                Counters::add(&self.counters.listen_errors, 1);
                let state = State::Down(e.to_string());
                if self.state != state {
                    tracing::warn!(error = %e, "cannot serve GET /metrics; pushing goes on, and the address is tried again every cycle (counted in arkouda_agent_listen_errors_total)");
                    self.state = state;
                }
            }
        }
    }
}

impl Sink for ListenSink {
    fn name(&self) -> &'static str {
        "listen"
    }

    fn ship(&mut self, cycle: Arc<Cycle>, _deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            self.bind().await;
            let Some(listen) = &self.listen else {
                return false;
            };
            match model::encode_text(&cycle.families, &self.grouping, &mut self.text) {
                Ok(()) => {
                    listen.update(Bytes::copy_from_slice(self.text.as_bytes()));
                    true
                }
                Err(_) => false,
            }
        })
    }

    fn end(&mut self, _deadline: Instant) -> BoxFuture<'_, bool> {
        if let Some(l) = self.listen.take() {
            l.stop();
        }
        Box::pin(std::future::ready(true))
    }

    fn check(&self, _deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>> {
        let line = Ok(format!(
            "serves GET /metrics at {} while the agent runs",
            self.addr
        ));
        Box::pin(std::future::ready(vec![line]))
    }
}
