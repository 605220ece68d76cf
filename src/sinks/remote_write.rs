//! The Prometheus remote-write sink: each cycle's families, with the job's grouping labels,
//! `POST`ed to a receiver (Prometheus with `--web.enable-remote-write-receiver`,
//! VictoriaMetrics, Mimir, Thanos Receive, Cortex, vmagent, the OpenTelemetry collector).
//!
//! Protocol: Prometheus Remote-Write 1.0,
//! <https://prometheus.io/docs/specs/remote_write_spec/>. The body is a protobuf
//! `prometheus.WriteRequest` ([`proto`], encoded by hand) compressed with the
//! snappy *block* format, sent with `Content-Encoding: snappy`,
//! `Content-Type: application/x-protobuf`, `X-Prometheus-Remote-Write-Version: 0.1.0` and
//! the agent's User-Agent. Every series carries `__name__`, the grouping labels the
//! Pushgateway would add (`job`, `slurm_job_id`, `cluster`, static labels; not its
//! `instance=""`) and its own labels, sorted by name; every sample of a cycle has that
//! cycle's time.
//!
//! Delivery: one bounded queue per receiver ([`queue`]), sent strictly in order by a
//! background task, so a slow or dead receiver never holds up a cycle. Connection errors,
//! 5xx and 429 are retried with capped, jittered backoff; any other answer (a 400 for a
//! sample the receiver will never take) drops that request, counted, since sending it
//! again would fail the same way. When the queue is full the oldest request is dropped,
//! counted. Timestamps never go backwards, so no sample is ever out of order.
//!
//! Staleness: a series that vanishes between two cycles (a command or locale gone) gets
//! a staleness marker (the NaN with bits `0x7ff0000000000002`) in the next request, as
//! Prometheus does for a scrape; at job end one request marks every series still live,
//! stamped with the current time (after the last sample: Prometheus rejects an older
//! marker with 400 and rolls back the whole request). Queries then stop showing the job
//! at once instead of five minutes later.
//!
//! Deliberately not done: metric metadata (HELP/TYPE; optional in 1.0 and fixed by
//! `translate`'s table anyway), exemplars, native histograms, Remote-Write 2.0, batching
//! several cycles into one request (each cycle is one small request; a backlog is sent
//! request by request), sharding one receiver's queue over parallel connections (one job
//! writes a few thousand samples per cycle), and a queue on disk (a backlog is lost when
//! the agent stops; the staleness markers are sent before it exits).

pub mod proto;
pub mod queue;
pub mod request_builder;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http::{self, ClientOptions};
use super::retry;
use super::{BoxFuture, CheckLine, Counters, Cycle, Sink};
use queue::Queue;
use request_builder::{Encoded, RequestBuilder};

/// `Content-Type` of a remote-write body.
pub const CONTENT_TYPE: &str = "application/x-protobuf";
/// `Content-Encoding` of a remote-write body (the snappy block format, not framed).
pub const CONTENT_ENCODING: &str = "snappy";
/// The header naming the protocol version, and its value for 1.0.
pub const VERSION_HEADER: &str = "X-Prometheus-Remote-Write-Version";
pub const VERSION: &str = "0.1.0";

const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(5);

/// Whether a remote-write answer may succeed when sent again: 5xx and 429 only, as the
/// spec says (a 408 or any other 4xx means this request will never be accepted).
pub fn retryable_status(status: u16) -> bool {
    status == 429 || (500..600).contains(&status)
}

/// The receivers and how to reach them (the `remote_write*` keys, and `push_timeout`):
/// one set of auth and TLS options for all of them, as for the Pushgateways.
#[derive(Clone, Debug)]
pub struct RemoteWriteSettings {
    /// Write endpoints, e.g. `http://prometheus:9090/api/v1/write`; empty: no remote write.
    pub urls: Vec<String>,
    pub client: ClientOptions,
    /// Requests held per receiver while it is down or slow (at least one).
    pub queue_size: usize,
}

/// Why remote writing failed. Messages never include credentials.
#[derive(Debug, thiserror::Error)]
pub enum RemoteWriteError {
    #[error("cannot set up remote write to {url}: {reason}")]
    Setup { url: String, reason: String },
    #[error("POST {url}: {reason}")]
    Transport { url: String, reason: String },
    #[error("POST {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error(transparent)]
    Encode(#[from] request_builder::EncodeError),
    #[error("remote write to {url}: {pending} request(s) still unsent at the deadline")]
    Unsent { url: String, pending: usize },
}

impl RemoteWriteError {
    fn retryable(&self) -> bool {
        match self {
            RemoteWriteError::Transport { .. } => true,
            RemoteWriteError::Status { status, .. } => retryable_status(*status),
            _ => false,
        }
    }

    /// A short, stable name of the kind of failure, for state-change logging.
    pub fn kind(&self) -> String {
        match self {
            RemoteWriteError::Setup { .. } => "setup".into(),
            RemoteWriteError::Transport { .. } => "unreachable".into(),
            RemoteWriteError::Status { status, .. } => format!("http_{status}"),
            RemoteWriteError::Encode(_) => "encode".into(),
            RemoteWriteError::Unsent { .. } => "unsent".into(),
        }
    }
}

/// What the cycle and the sender task share.
struct Shared {
    url: String,
    queue: Mutex<Queue>,
    /// Something was queued (or dropped): the sender looks again.
    wake: Notify,
    /// The queue became empty.
    drained: Notify,
    /// The agent's counters: `remote_write_errors` (each failed attempt, and each
    /// request that could not be encoded) and `remote_write_dropped` (requests given up
    /// on: rejected (4xx but 429), pushed out of the full queue, or cleared at job end so
    /// the staleness markers go out in time), summed over receivers.
    counters: Arc<Counters>,
    /// The queue has overflowed since it was last empty (logged once per overflow).
    overflowing: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves a queue that is still consistent (every
        // operation is a single VecDeque call), so a poisoned lock is used as it is.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn count_dropped(&self, n: usize) {
        Counters::add(&self.counters.remote_write_dropped, n as u64);
    }

    fn count_error(&self) {
        Counters::add(&self.counters.remote_write_errors, 1);
    }
}

/// Remote write as a [`Sink`]: each cycle encoded once (one [`RequestBuilder`] for the
/// job), the same bytes queued for every receiver, each sent in order by its own task.
pub struct RemoteWriteSink {
    builder: RequestBuilder,
    receivers: Vec<Receiver>,
    /// The receivers, for `check`.
    settings: RemoteWriteSettings,
}

impl RemoteWriteSink {
    /// One receiver per URL of `settings`, every series carrying `grouping` (`job`
    /// first); their sender tasks start on the current runtime.
    pub fn new(
        settings: &RemoteWriteSettings,
        grouping: &[(String, String)],
        counters: Arc<Counters>,
    ) -> Result<RemoteWriteSink, RemoteWriteError> {
        counters.with_remote_write();
        let receivers = settings
            .urls
            .iter()
            .map(|url| Receiver::new(url, settings, counters.clone()))
            .collect::<Result<Vec<_>, _>>()?;
        for r in &receivers {
            tracing::info!(receiver = %r.url(), "also writing every cycle by Prometheus remote write");
        }
        Ok(RemoteWriteSink {
            builder: RequestBuilder::new(grouping),
            receivers,
            settings: settings.clone(),
        })
    }

    fn enqueue_everywhere(&self, e: &Encoded) {
        for r in &self.receivers {
            r.enqueue(e);
        }
    }

    fn count_error(&self) {
        if let Some(r) = self.receivers.first() {
            r.shared.count_error();
        }
    }
}

impl Sink for RemoteWriteSink {
    fn name(&self) -> &'static str {
        "remote_write"
    }

    /// Queues the cycle for every receiver, stamped with the cycle's time; never waits
    /// for the network, so a slow receiver holds up nothing.
    fn ship(&mut self, cycle: Arc<Cycle>, _deadline: Instant) -> BoxFuture<'_, bool> {
        let ok = match self.builder.cycle(&cycle.families, cycle.unix_ms) {
            Ok(e) => {
                self.enqueue_everywhere(&e);
                true
            }
            Err(e) => {
                // Only input over 4 GiB fails to compress; counted, not retried.
                self.count_error();
                tracing::error!(error = %e, "cannot encode a remote-write request; skipping this cycle");
                false
            }
        };
        Box::pin(std::future::ready(ok))
    }

    fn flush(&mut self, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let drains: Vec<Drain> = self.receivers.iter().map(Receiver::drain).collect();
            let mut all = true;
            for (d, r) in drains.iter().zip(&self.receivers) {
                if !d.wait(deadline).await {
                    tracing::warn!(receiver = %r.url(), "remote write not done before the timeout");
                    all = false;
                }
            }
            all
        })
    }

    /// Queues the staleness markers that end every series written (stamped now, after the
    /// last sample) for every receiver, and waits for them, and for what is queued
    /// before them, until `deadline`.
    fn end(&mut self, deadline: Instant) -> BoxFuture<'_, bool> {
        let now_ms = crate::sinks::unix_ms();
        let markers = match self.builder.end(now_ms) {
            Ok(Some(e)) => {
                self.enqueue_everywhere(&e);
                e.stale_markers
            }
            Ok(None) => 0,
            Err(e) => {
                self.count_error();
                tracing::error!(error = %e, "cannot encode the staleness markers");
                0
            }
        };
        let drains: Vec<(String, Drain)> = self
            .receivers
            .iter()
            .map(|r| (r.url().to_string(), r.drain()))
            .collect();
        Box::pin(async move {
            let finished =
                futures_util::future::join_all(drains.iter().map(|(_, d)| d.finish(deadline)))
                    .await;
            let mut all = true;
            for ((url, _), r) in drains.iter().zip(finished) {
                match r {
                    Ok(()) => {
                        tracing::info!(receiver = %url, series = markers, "remote-written series ended (staleness markers sent)")
                    }
                    Err(e) => {
                        all = false;
                        tracing::warn!(error = %e, "could not end the remote-written series; receivers drop them from queries within five minutes by themselves");
                    }
                }
            }
            all
        })
    }

    fn check(&self, deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>> {
        Box::pin(async move {
            let mut lines = Vec::with_capacity(self.settings.urls.len());
            for url in &self.settings.urls {
                lines.push(
                    match Receiver::probe(url, &self.settings.client, deadline).await {
                        Ok(()) => Ok(format!("OK {url}")),
                        Err(e) => Err(e.to_string()),
                    },
                );
            }
            lines
        })
    }
}

/// One receiver: its queue and its sender task.
struct Receiver {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Builds the client of the receiver at `url` and starts its sender task on the
    /// current Tokio runtime.
    fn new(
        url: &str,
        settings: &RemoteWriteSettings,
        counters: Arc<Counters>,
    ) -> Result<Receiver, RemoteWriteError> {
        let setup = |reason: String| RemoteWriteError::Setup {
            url: url.to_string(),
            reason,
        };
        let client = http::client(&settings.client, "remote_write", url)
            .map_err(|e| setup(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| setup(format!("no async runtime: {e}")))?;
        let shared = Arc::new(Shared {
            url: url.to_string(),
            queue: Mutex::new(Queue::new(settings.queue_size)),
            wake: Notify::new(),
            drained: Notify::new(),
            counters,
            overflowing: AtomicBool::new(false),
        });
        let sender = Sender {
            shared: shared.clone(),
            http: client,
            opts: settings.client.clone(),
        };
        Ok(Receiver {
            task: runtime.spawn(sender.run()),
            shared,
        })
    }

    fn url(&self) -> &str {
        &self.shared.url
    }

    /// Queues one encoded request (the same bytes for every receiver: `Bytes` is shared,
    /// not copied). Never waits for the network.
    fn enqueue(&self, e: &Encoded) {
        let dropped = self
            .shared
            .lock()
            .push(e.body.clone(), e.samples, e.stale_markers);
        if dropped.is_some() {
            self.shared.count_dropped(1);
            if !self.shared.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(receiver = %self.shared.url, "remote-write queue full: dropping the oldest requests until the receiver catches up (counted in arkouda_agent_remote_write_dropped_total)");
            }
        }
        self.shared.wake.notify_one();
    }

    /// A handle to wait until everything queued so far is sent.
    fn drain(&self) -> Drain {
        Drain {
            shared: self.shared.clone(),
        }
    }

    /// Tries the receiver with the smallest real request, an empty `WriteRequest` (for
    /// `check`): it writes nothing, but passes auth, TLS and the protocol.
    async fn probe(
        url: &str,
        opts: &ClientOptions,
        deadline: Instant,
    ) -> Result<(), RemoteWriteError> {
        let client =
            http::client(opts, "remote_write", url).map_err(|e| RemoteWriteError::Setup {
                url: url.to_string(),
                reason: e.to_string(),
            })?;
        let body = snap::raw::Encoder::new()
            .compress_vec(&[])
            .map_err(request_builder::EncodeError::from)?;
        let send = send_once(&client, opts, url, Bytes::from(body));
        match tokio::time::timeout_at(deadline, send).await {
            Ok(r) => r,
            Err(_) => Err(RemoteWriteError::Transport {
                url: url.to_string(),
                reason: "timed out".into(),
            }),
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for one receiver's queue to empty.
struct Drain {
    shared: Arc<Shared>,
}

impl Drain {
    /// Waits until the queue is empty; false at `deadline`.
    async fn wait(&self, deadline: Instant) -> bool {
        loop {
            let notified = self.shared.drained.notified();
            tokio::pin!(notified);
            // Registered before looking, so an emptying in between is not missed.
            notified.as_mut().enable();
            if self.shared.lock().is_empty() {
                return true;
            }
            tokio::select! {
                _ = notified => {}
                _ = tokio::time::sleep_until(deadline) => return self.shared.lock().is_empty(),
            }
        }
    }

    /// At job end: waits for the backlog until half the time to `deadline` has passed,
    /// then drops what is still queued ahead of the newest request (the staleness
    /// markers; counted) and waits for that one until `deadline`.
    async fn finish(&self, deadline: Instant) -> Result<(), RemoteWriteError> {
        let now = Instant::now();
        let half = now + deadline.saturating_duration_since(now) / 2;
        if self.wait(half).await {
            return Ok(());
        }
        let cleared = self.shared.lock().keep_newest_only();
        if cleared > 0 {
            self.shared.count_dropped(cleared);
            tracing::warn!(receiver = %self.shared.url, cleared, "dropping queued remote-write requests so that the staleness markers go out before the shutdown deadline");
            self.shared.wake.notify_one();
        }
        if self.wait(deadline).await {
            return Ok(());
        }
        Err(RemoteWriteError::Unsent {
            url: self.shared.url.clone(),
            pending: self.shared.lock().len(),
        })
    }
}

/// The state of the receiver, for logging only its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Unknown,
    Up,
    Retrying(String),
    Rejected(String),
}

/// The background task: sends the queue's front until it is accepted, rejected or
/// dropped, then the next.
struct Sender {
    shared: Arc<Shared>,
    http: reqwest::Client,
    opts: ClientOptions,
}

impl Sender {
    async fn run(self) {
        let mut state = State::Unknown;
        let mut attempt: u32 = 0;
        loop {
            let front = self.shared.lock().front();
            let Some(p) = front else {
                if self.shared.overflowing.swap(false, Ordering::Relaxed) {
                    tracing::info!(receiver = %self.shared.url, "remote-write backlog sent");
                }
                self.shared.drained.notify_waiters();
                self.shared.wake.notified().await;
                continue;
            };
            let result = send_once(&self.http, &self.opts, &self.shared.url, p.body.clone()).await;
            let next = match &result {
                Ok(()) => State::Up,
                Err(e) if e.retryable() => State::Retrying(e.kind()),
                Err(e) => State::Rejected(e.kind()),
            };
            if next != state {
                match &result {
                    Ok(()) => tracing::info!(
                        receiver = %self.shared.url,
                        samples = p.samples,
                        stale_markers = p.stale_markers,
                        "remote write is working"
                    ),
                    Err(e) if e.retryable() => tracing::warn!(
                        error = %e,
                        "cannot remote-write; retrying with backoff, keeping later requests queued in order"
                    ),
                    Err(e) => tracing::warn!(
                        error = %e,
                        "the remote-write receiver rejected a request; dropping it (counted in arkouda_agent_remote_write_dropped_total)"
                    ),
                }
                state = next;
            }
            match result {
                Ok(()) => {
                    attempt = 0;
                    self.shared.lock().done(p.seq);
                }
                Err(e) if e.retryable() => {
                    self.shared.count_error();
                    let wait = retry::backoff(attempt, RETRY_BASE, RETRY_CAP);
                    attempt = attempt.saturating_add(1);
                    tracing::debug!(error = %e, attempt, "remote write failed; retrying");
                    // A new request or a cleared backlog wakes it early: the front may
                    // have changed.
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = self.shared.wake.notified() => {}
                    }
                }
                Err(_) => {
                    attempt = 0;
                    self.shared.count_error();
                    if self.shared.lock().done(p.seq) {
                        self.shared.count_dropped(1);
                    }
                }
            }
        }
    }
}

/// Sends one request, no retry.
async fn send_once(
    client: &reqwest::Client,
    opts: &ClientOptions,
    url: &str,
    body: Bytes,
) -> Result<(), RemoteWriteError> {
    let req = http::authed(opts, client.post(url))
        .header(reqwest::header::CONTENT_ENCODING, CONTENT_ENCODING)
        .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
        .header(VERSION_HEADER, VERSION)
        .body(body);
    let resp = req.send().await.map_err(|e| RemoteWriteError::Transport {
        url: url.to_string(),
        reason: http::describe(&e),
    })?;
    let status = resp.status();
    // Read the answer either way (a bounded read: at most ERROR_BODY_LIMIT bytes), so
    // that the connection can be reused.
    let body = http::error_body(resp, 300).await;
    if status.is_success() {
        return Ok(());
    }
    Err(RemoteWriteError::Status {
        url: url.to_string(),
        status: status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses() {
        for s in [429, 500, 501, 502, 503, 504] {
            assert!(retryable_status(s), "{s}");
        }
        for s in [200, 204, 400, 401, 403, 404, 408, 409, 413] {
            assert!(!retryable_status(s), "{s}");
        }
    }
}
