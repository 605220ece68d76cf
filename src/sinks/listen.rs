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

const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

struct Shared {
    body: Bytes,
    last_cycle: Option<Instant>,
}

/// The handle the agent updates after every cycle.
#[derive(Clone)]
pub struct Listen {
    shared: Arc<Mutex<Shared>>,
    addr: SocketAddr,
    /// /healthz fails when no cycle finished for this long.
    stale_after: Duration,
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
        };
        let served = listen.clone();
        tokio::spawn(async move {
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
        Ok(listen)
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
