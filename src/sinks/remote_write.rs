//! The Prometheus remote-write sink: each cycle's families, with the job's grouping labels,
//! `POST`ed to a receiver (Prometheus with `--web.enable-remote-write-receiver`,
//! VictoriaMetrics, Mimir, Thanos Receive, Cortex, vmagent, the OpenTelemetry collector).
//!
//! Protocol: Prometheus Remote-Write 1.0,
//! <https://prometheus.io/docs/specs/remote_write_spec/>. The body is a protobuf
//! `prometheus.WriteRequest` ([`proto`], hand-written `prost` structs) compressed with the
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

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use prometheus::proto::MetricFamily;
use tokio::sync::Notify;
use tokio::time::Instant;

use super::http::{self, ClientOptions};
use super::retry;
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

/// How to reach one receiver, and what to put on every series.
#[derive(Clone, Debug)]
pub struct Options {
    /// The write endpoint, e.g. `http://prometheus:9090/api/v1/write`.
    pub url: String,
    pub client: ClientOptions,
    /// Requests held while the receiver is down or slow (at least one).
    pub queue_size: usize,
    /// The job's grouping labels, `job` first.
    pub grouping: Vec<(String, String)>,
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
    /// Failed requests: each failed attempt, and each request that could not be encoded.
    errors: AtomicU64,
    /// Requests given up on: rejected (4xx but 429), pushed out of the full queue, or
    /// cleared at job end so the staleness markers go out in time.
    dropped: AtomicU64,
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
        self.dropped.fetch_add(n as u64, Ordering::Relaxed);
    }
}

/// One receiver: encodes each cycle and hands it to its sender task.
pub struct RemoteWrite {
    shared: Arc<Shared>,
    builder: RequestBuilder,
    task: tokio::task::JoinHandle<()>,
}

impl RemoteWrite {
    /// Builds the client and starts the sender task on the current Tokio runtime.
    pub fn new(opts: Options) -> Result<RemoteWrite, RemoteWriteError> {
        let setup = |reason: String| RemoteWriteError::Setup {
            url: opts.url.clone(),
            reason,
        };
        let client = http::client(&opts.client, "remote_write", &opts.url)
            .map_err(|e| setup(e.to_string()))?;
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| setup(format!("no async runtime: {e}")))?;
        let shared = Arc::new(Shared {
            url: opts.url.clone(),
            queue: Mutex::new(Queue::new(opts.queue_size)),
            wake: Notify::new(),
            drained: Notify::new(),
            errors: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            overflowing: AtomicBool::new(false),
        });
        let sender = Sender {
            shared: shared.clone(),
            http: client,
            opts: opts.client,
        };
        Ok(RemoteWrite {
            task: runtime.spawn(sender.run()),
            builder: RequestBuilder::new(&opts.grouping),
            shared,
        })
    }

    pub fn url(&self) -> &str {
        &self.shared.url
    }

    /// Failed attempts and unencodable requests since the start.
    pub fn errors_total(&self) -> u64 {
        self.shared.errors.load(Ordering::Relaxed)
    }

    /// Requests given up on since the start.
    pub fn dropped_total(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Requests waiting (including one being sent).
    pub fn pending(&self) -> usize {
        self.shared.lock().len()
    }

    /// Queues one cycle's families, all stamped `now_ms`. Never waits for the network.
    pub fn write(&mut self, families: &[MetricFamily], now_ms: i64) {
        match self.builder.cycle(families, now_ms) {
            Ok(e) => self.enqueue(e),
            Err(e) => {
                // Only input over 4 GiB fails to compress; counted, not retried.
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %self.shared.url, error = %e, "cannot encode a remote-write request; skipping this cycle");
            }
        }
    }

    fn enqueue(&self, e: Encoded) {
        let dropped = self.shared.lock().push(e.body, e.samples, e.stale_markers);
        if dropped.is_some() {
            self.shared.count_dropped(1);
            if !self.shared.overflowing.swap(true, Ordering::Relaxed) {
                tracing::warn!(receiver = %self.shared.url, "remote-write queue full: dropping the oldest requests until the receiver catches up (counted in arkouda_agent_remote_write_dropped_total)");
            }
        }
        self.shared.wake.notify_one();
    }

    /// Queues the staleness markers that end every live series, stamped `now_ms`, and
    /// returns a handle to wait for them. The markers go after everything queued (order
    /// is never broken); [`Drain::finish`] clears a backlog that would hold them past the
    /// deadline.
    pub fn end(&mut self, now_ms: i64) -> Drain {
        let mut markers = 0;
        match self.builder.end(now_ms) {
            Ok(Some(e)) => {
                markers = e.stale_markers;
                self.enqueue(e);
            }
            Ok(None) => {}
            Err(e) => {
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(receiver = %self.shared.url, error = %e, "cannot encode the staleness markers");
            }
        }
        Drain {
            shared: self.shared.clone(),
            markers,
        }
    }

    /// A handle to wait until everything queued so far is sent.
    pub fn drain(&self) -> Drain {
        Drain {
            shared: self.shared.clone(),
            markers: 0,
        }
    }

    /// Tries the receiver with the smallest real request, an empty `WriteRequest` (for
    /// `check`): it writes nothing, but passes auth, TLS and the protocol.
    pub async fn probe(opts: &Options, deadline: Instant) -> Result<(), RemoteWriteError> {
        let client = http::client(&opts.client, "remote_write", &opts.url).map_err(|e| {
            RemoteWriteError::Setup {
                url: opts.url.clone(),
                reason: e.to_string(),
            }
        })?;
        let body = snap::raw::Encoder::new()
            .compress_vec(&[])
            .map_err(request_builder::EncodeError::from)?;
        let send = send_once(&client, &opts.client, &opts.url, Bytes::from(body));
        match tokio::time::timeout_at(deadline, send).await {
            Ok(r) => r,
            Err(_) => Err(RemoteWriteError::Transport {
                url: opts.url.clone(),
                reason: "timed out".into(),
            }),
        }
    }
}

impl Drop for RemoteWrite {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits for one receiver's queue to empty.
pub struct Drain {
    shared: Arc<Shared>,
    markers: usize,
}

impl Drain {
    /// Staleness markers queued by [`RemoteWrite::end`].
    pub fn markers(&self) -> usize {
        self.markers
    }

    /// Waits until the queue is empty; false at `deadline`.
    pub async fn wait(&self, deadline: Instant) -> bool {
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
    pub async fn finish(&self, deadline: Instant) -> Result<(), RemoteWriteError> {
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
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
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
                    self.shared.errors.fetch_add(1, Ordering::Relaxed);
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
