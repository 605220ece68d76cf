//! The Prometheus Pushgateway sink: `PUT` a group, `DELETE` it, list groups.
//!
//! API: <https://github.com/prometheus/pushgateway#api>. The grouping key is the URL path
//! `/metrics/job/<job>/<label>/<value>…`; a value that is empty, contains `/`, or is a dot
//! segment goes base64url-encoded as `<label>@base64/<value>`. `PUT` replaces the whole
//! group, so series that vanished from the server vanish from the group too.
//!
//! One keep-alive HTTP client; every request has a timeout; retries (only for what may
//! succeed later: connection errors, 408, 429, 5xx) back off until a caller's deadline.
//! This module never sees Arkouda data: only bytes of exposition text and label pairs.

pub mod keys_file;
pub mod sink;

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use tokio::time::Instant;

use super::http::{describe, ClientOptions};
use super::retry;
use sink::Layout;

/// Content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A request body, gzipped when it is large: the Pushgateway accepts `Content-Encoding:
/// gzip`, and a 4096-locale job's text (1.5 MB) shrinks ~10-fold, which counts on a
/// site's network at every interval. Small bodies are not worth the CPU.
#[derive(Clone, Debug)]
pub struct Payload {
    bytes: Bytes,
    gzipped: bool,
}

impl Payload {
    /// `text`, gzipped (fast level) when it has at least `threshold` bytes (0: never).
    pub fn new(text: Bytes, threshold: u64) -> Payload {
        match gzip(&text, threshold) {
            Some(z) => z,
            None => Payload {
                bytes: text,
                gzipped: false,
            },
        }
    }

    /// [`Payload::new`] of a borrowed text (a sink's reused buffer): copied only when it
    /// goes as it is, compressed straight from the buffer otherwise.
    pub fn from_text(text: &[u8], threshold: u64) -> Payload {
        gzip(text, threshold).unwrap_or_else(|| Payload {
            bytes: Bytes::copy_from_slice(text),
            gzipped: false,
        })
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn is_gzipped(&self) -> bool {
        self.gzipped
    }
}

/// `text` gzipped when it has at least `threshold` bytes (0: never); None: as it is.
fn gzip(text: &[u8], threshold: u64) -> Option<Payload> {
    if threshold == 0 || (text.len() as u64) < threshold {
        return None;
    }
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(text.len() / 8),
        flate2::Compression::fast(),
    );
    // Writing to memory does not fail; were it to, the plain text still works.
    std::io::Write::write_all(&mut enc, text)
        .and_then(|()| enc.finish())
        .ok()
        .map(|z| Payload {
            bytes: Bytes::from(z),
            gzipped: true,
        })
}

/// Which of `n` Pushgateways a job belongs to in shard mode: FNV-1a of its job id, so
/// every agent, the Slurm hooks and `delete` agree without talking to each other, across
/// versions and hosts.
pub fn shard(job_id: &str, n: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in job_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    if n == 0 {
        0
    } else {
        (h % n as u64) as usize
    }
}

/// The labels that name one group: `job` first, then the rest in a fixed order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupingKey {
    pairs: Vec<(String, String)>,
}

impl GroupingKey {
    /// `job` plus the other labels, which keep their order.
    pub fn new(job: &str, labels: Vec<(String, String)>) -> GroupingKey {
        let mut pairs = Vec::with_capacity(labels.len() + 1);
        pairs.push(("job".to_string(), job.to_string()));
        pairs.extend(labels.into_iter().filter(|(k, _)| k != "job"));
        GroupingKey { pairs }
    }

    pub fn pairs(&self) -> &[(String, String)] {
        &self.pairs
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The URL path of this group, `/metrics/job/…`.
    pub fn path(&self) -> String {
        let mut path = String::from("/metrics");
        for (name, value) in &self.pairs {
            path.push('/');
            if needs_base64(value) {
                path.push_str(name);
                path.push_str("@base64/");
                if value.is_empty() {
                    // The Pushgateway's spelling of an empty value.
                    path.push('=');
                } else {
                    path.push_str(&base64::engine::general_purpose::URL_SAFE.encode(value));
                }
            } else {
                path.push_str(name);
                path.push('/');
                path.extend(utf8_percent_encode(value, SEGMENT));
            }
        }
        path
    }
}

/// Path-segment characters to escape: all but the unreserved ones.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn needs_base64(value: &str) -> bool {
    // `.` and `..` would be resolved away as dot segments by URL normalisation, even
    // percent-encoded, so they too go as base64.
    value.is_empty() || value.contains('/') || value == "." || value == ".."
}

/// How a job's groups are spread over several Pushgateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushgatewayMode {
    /// Each job to one Pushgateway, chosen by a stable hash of its job id.
    Shard,
    /// Each job to every Pushgateway (high availability).
    All,
}

/// The Pushgateways and how a job's groups go to them: what the sink is configured with,
/// and `delete`, `sweep` and the Slurm backstops with it (the `pushgateway*` keys,
/// `layout`, `gzip_threshold`, `push_timeout`, `keys_file`, `no_push`).
#[derive(Clone, Debug)]
pub struct PushgatewaySettings {
    /// Base URLs; empty: no Pushgateway.
    pub urls: Vec<String>,
    pub mode: PushgatewayMode,
    pub layout: Layout,
    /// Gzip request bodies of at least this many bytes (0: never).
    pub gzip_threshold: u64,
    /// Every request's timeout (`push_timeout`), User-Agent, auth and TLS.
    pub client: ClientOptions,
    /// run: where the sink records its groups' keys for the Slurm Epilog.
    pub keys_file: Option<PathBuf>,
    /// run: push nothing even to listed Pushgateways (scrape mode, remote write only).
    pub no_push: bool,
}

impl PushgatewaySettings {
    /// Whether `run` and `once` push to a Pushgateway at all (and so take the group's lock).
    pub fn pushes(&self) -> bool {
        !self.no_push && !self.urls.is_empty()
    }

    /// Every listed Pushgateway (`delete`, `check` and the Slurm backstops act on all).
    pub fn every(&self) -> Result<Vec<Pushgateway>, PushError> {
        self.urls
            .iter()
            .map(|url| Pushgateway::new(url, &self.client))
            .collect()
    }

    /// The Pushgateways a job pushes to: in shard mode the one its job id hashes to, in
    /// `all` mode every one.
    pub fn of_job(&self, job_id: &str) -> Result<Vec<Pushgateway>, PushError> {
        let mut all = self.every()?;
        if self.mode == PushgatewayMode::Shard && all.len() > 1 {
            let i = shard(job_id, all.len());
            return Ok(vec![all.swap_remove(i)]);
        }
        Ok(all)
    }
}

/// Why a request failed. Messages never include credentials.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
    #[error("{op} {url}: {reason}")]
    Transport {
        op: &'static str,
        url: String,
        reason: String,
    },
    #[error("{op} {url}: HTTP {status}: {body}")]
    Status {
        op: &'static str,
        url: String,
        status: u16,
        body: String,
    },
    #[error("{op} {url}: unexpected answer: {reason}")]
    BadAnswer {
        op: &'static str,
        url: String,
        reason: String,
    },
}

impl PushError {
    fn retryable(&self) -> bool {
        match self {
            PushError::Transport { .. } => true,
            PushError::Status { status, .. } => retry::retryable_status(*status),
            PushError::Setup(_) | PushError::BadAnswer { .. } => false,
        }
    }

    /// A short, stable name of the kind of failure, for state-change logging.
    pub fn kind(&self) -> String {
        match self {
            PushError::Setup(_) => "setup".into(),
            PushError::Transport { .. } => "unreachable".into(),
            PushError::Status { status, .. } => format!("http_{status}"),
            PushError::BadAnswer { .. } => "bad_answer".into(),
        }
    }
}

/// A group as `GET /api/v1/metrics` lists it.
#[derive(Clone, Debug, PartialEq)]
pub struct Group {
    pub labels: Vec<(String, String)>,
    pub push_time_seconds: Option<f64>,
}

/// The most of a `GET /api/v1/metrics` listing that `delete --job-id` and `sweep` read:
/// 128 MiB, some 500,000 series held (a 64-locale job pushes ~360). A larger listing is
/// refused with an error that says so, rather than read into memory without end.
pub const LISTING_LIMIT: usize = 128 << 20;

pub struct Pushgateway {
    http: reqwest::Client,
    base: String,
    client: ClientOptions,
    /// [`LISTING_LIMIT`], lowered by tests.
    listing_limit: usize,
}

const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_CAP: Duration = Duration::from_secs(2);

impl Pushgateway {
    /// The Pushgateway at base URL `url`, reached with `client`.
    pub fn new(url: &str, client: &ClientOptions) -> Result<Pushgateway, PushError> {
        // Built where every HTTP sink builds its client (same TLS, auth and timeouts).
        let http = super::http::client(client, "pushgateway", url)
            .map_err(|e| PushError::Setup(e.to_string()))?;
        Ok(Pushgateway {
            http,
            base: url.trim_end_matches('/').to_string(),
            client: client.clone(),
            listing_limit: LISTING_LIMIT,
        })
    }

    pub fn url(&self) -> &str {
        &self.base
    }

    async fn send_once(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<Payload>,
    ) -> Result<reqwest::Response, PushError> {
        let mut req = super::http::authed(&self.client, self.http.request(method, url));
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, TEXT_FORMAT);
            // Never on DELETE: only a body is ever compressed.
            if b.gzipped {
                req = req.header(reqwest::header::CONTENT_ENCODING, "gzip");
            }
            req = req.body(b.bytes);
        }
        let resp = req.send().await.map_err(|e| PushError::Transport {
            op,
            url: url.to_string(),
            reason: describe(&e),
        })?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        Err(PushError::Status {
            op,
            url: url.to_string(),
            status: status.as_u16(),
            body: super::http::error_body(resp, 300).await,
        })
    }

    /// Sends with retries until `deadline`; returns the last error when time runs out.
    async fn send(
        &self,
        op: &'static str,
        method: reqwest::Method,
        url: &str,
        body: Option<Payload>,
        deadline: Instant,
    ) -> Result<reqwest::Response, PushError> {
        let mut attempt = 0;
        loop {
            let err = match tokio::time::timeout_at(
                deadline,
                self.send_once(op, method.clone(), url, body.clone()),
            )
            .await
            {
                Ok(Ok(resp)) => return Ok(resp),
                Ok(Err(e)) => e,
                Err(_) => {
                    return Err(PushError::Transport {
                        op,
                        url: url.to_string(),
                        reason: "timed out (no answer before the deadline)".into(),
                    })
                }
            };
            let wait = retry::backoff(attempt, RETRY_BASE, RETRY_CAP);
            if !err.retryable() || Instant::now() + wait >= deadline {
                return Err(err);
            }
            tracing::debug!(error = %err, attempt, "request failed; retrying the request");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    /// Replaces the group with `body` (text exposition).
    pub async fn push(
        &self,
        key: &GroupingKey,
        body: Payload,
        deadline: Instant,
    ) -> Result<(), PushError> {
        let url = format!("{}{}", self.base, key.path());
        self.send("PUT", reqwest::Method::PUT, &url, Some(body), deadline)
            .await
            .map(drop)
    }

    /// Deletes the group (the Pushgateway answers 202 whether it existed or not).
    pub async fn delete(&self, key: &GroupingKey, deadline: Instant) -> Result<(), PushError> {
        let url = format!("{}{}", self.base, key.path());
        self.send("DELETE", reqwest::Method::DELETE, &url, None, deadline)
            .await
            .map(drop)
    }

    /// `GET /api/v1/metrics` (every series of every group) as JSON, read with a bound:
    /// at most `listing_limit` bytes ([`LISTING_LIMIT`]), streamed, and refused past it.
    async fn listing(&self, deadline: Instant) -> Result<serde_json::Value, PushError> {
        let url = format!("{}/api/v1/metrics", self.base);
        let bad = |reason: String| PushError::BadAnswer {
            op: "GET",
            url: url.clone(),
            reason,
        };
        let too_large = || {
            bad(format!(
                "the listing is larger than {} bytes, the most this agent reads (too many groups held: delete by grouping key, or shard the Pushgateway)",
                self.listing_limit
            ))
        };
        let read = async {
            let mut resp = self
                .send("GET", reqwest::Method::GET, &url, None, deadline)
                .await?;
            if resp
                .content_length()
                .is_some_and(|n| n > self.listing_limit as u64)
            {
                return Err(too_large());
            }
            match super::http::read_at_most(&mut resp, self.listing_limit).await {
                Ok((body, true)) => Ok(body),
                Ok((_, false)) => Err(too_large()),
                Err(e) => Err(bad(format!("reading the listing: {}", describe(&e)))),
            }
        };
        // `send` bounds the answer's head; the body is bounded by the same deadline.
        let body = tokio::time::timeout_at(deadline, read)
            .await
            .map_err(|_| PushError::Transport {
                op: "GET",
                url: url.clone(),
                reason: "timed out reading the listing (no whole answer before the deadline)"
                    .into(),
            })??;
        serde_json::from_slice(&body).map_err(|e| bad(e.to_string()))
    }

    /// Every group the Pushgateway holds, with its labels.
    pub async fn groups(&self, deadline: Instant) -> Result<Vec<Group>, PushError> {
        let url = format!("{}/api/v1/metrics", self.base);
        let bad = |reason: String| PushError::BadAnswer {
            op: "GET",
            url: url.clone(),
            reason,
        };
        let v = self.listing(deadline).await?;
        let data = v
            .get("data")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad("no data array".into()))?;
        Ok(data
            .iter()
            .filter_map(|g| {
                let labels = g.get("labels")?.as_object()?;
                let mut pairs: Vec<(String, String)> = labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                pairs.sort();
                let push_time_seconds = g
                    .get("push_time_seconds")
                    .and_then(|p| p.get("metrics"))
                    .and_then(|m| m.get(0))
                    .and_then(|m| m.get("value"))
                    .and_then(|v| v.as_str())
                    .and_then(|s| s.parse().ok());
                Some(Group {
                    labels: pairs,
                    push_time_seconds,
                })
            })
            .collect())
    }

    /// Every group with the values of its unlabelled series `metrics` (None: the group
    /// has none), in that order, e.g. the agent's lease and end time for `sweep`. One
    /// `GET /api/v1/metrics`, as `groups`.
    pub async fn groups_with_values(
        &self,
        metrics: &[&str],
        deadline: Instant,
    ) -> Result<Vec<(Group, Vec<Option<f64>>)>, PushError> {
        let url = format!("{}/api/v1/metrics", self.base);
        let bad = |reason: String| PushError::BadAnswer {
            op: "GET",
            url: url.clone(),
            reason,
        };
        let v = self.listing(deadline).await?;
        let data = v
            .get("data")
            .and_then(|d| d.as_array())
            .ok_or_else(|| bad("no data array".into()))?;
        // The Pushgateway gives each family as {"metrics": [{"labels": …, "value": "1.5"}]}.
        let first_value = |g: &serde_json::Value, name: &str| -> Option<f64> {
            g.get(name)?
                .get("metrics")?
                .get(0)?
                .get("value")?
                .as_str()?
                .parse()
                .ok()
        };
        Ok(data
            .iter()
            .filter_map(|g| {
                let labels = g.get("labels")?.as_object()?;
                let mut pairs: Vec<(String, String)> = labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect();
                pairs.sort();
                let group = Group {
                    labels: pairs,
                    push_time_seconds: first_value(g, "push_time_seconds"),
                };
                Some((group, metrics.iter().map(|m| first_value(g, m)).collect()))
            })
            .collect())
    }

    /// Is it up and answering (`GET /-/ready`)?
    pub async fn ready(&self, deadline: Instant) -> Result<(), PushError> {
        let url = format!("{}/-/ready", self.base);
        self.send("GET", reqwest::Method::GET, &url, None, deadline)
            .await
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(labels: &[(&str, &str)]) -> GroupingKey {
        GroupingKey::new(
            "arkouda",
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    fn pgw(url: &str) -> Pushgateway {
        Pushgateway::new(
            url,
            &ClientOptions {
                timeout: Duration::from_secs(20),
                user_agent: "test".into(),
                username: None,
                password: None,
                bearer_token: None,
                ca_file: None,
                insecure_skip_verify: false,
            },
        )
        .unwrap()
    }

    /// A listing past the limit is refused at once, whether its length is announced or
    /// it streams without end; one within the limit is read.
    #[tokio::test]
    async fn listings_are_read_with_a_bound() {
        use crate::sinks::http::testing::serve;
        let deadline = || Instant::now() + Duration::from_secs(20);
        let endless = serve(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n",
            None,
        );
        let mut p = pgw(&endless);
        p.listing_limit = 1 << 20;
        let started = std::time::Instant::now();
        let e = p.groups(deadline()).await.unwrap_err().to_string();
        assert!(
            e.contains("the listing is larger than 1048576 bytes, the most this agent reads"),
            "{e}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        let e = p
            .groups_with_values(&["x"], deadline())
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("the listing is larger than"), "{e}");

        let announced = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n",
            Some(5_000_000),
        );
        let mut p = pgw(&announced);
        p.listing_limit = 1 << 20;
        let e = p.groups(deadline()).await.unwrap_err().to_string();
        assert!(e.contains("the listing is larger than"), "{e}");

        let json = serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
            Some(0),
        );
        let e = pgw(&json).groups(deadline()).await.unwrap_err().to_string();
        assert!(e.ends_with("unexpected answer: no data array"), "{e}");
    }

    /// An error answer with a body without end gives its status and the start of the
    /// body, at once.
    #[tokio::test]
    async fn error_bodies_are_read_with_a_bound() {
        use crate::sinks::http::testing::serve;
        let url = serve(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            None,
        );
        let started = std::time::Instant::now();
        let e = pgw(&url)
            .push(
                &key(&[("slurm_job_id", "1")]),
                Payload::new(Bytes::from_static(b"x 1\n"), 0),
                Instant::now() + Duration::from_secs(20),
            )
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        let PushError::Status { status, body, .. } = e else {
            panic!("{e}");
        };
        assert_eq!((status, body), (400, "x".repeat(300)));
    }

    #[test]
    fn shard_is_stable_and_spreads() {
        // Pinned values (FNV-1a 64 of the job id, computed outside this code): a change here
        // moves every running job to another Pushgateway, and the Slurm backstops of an
        // older version would look for its group in the wrong place.
        for (id, n, want) in [
            ("4242", 3, 2), // 0x317ca9d88928e945
            ("4242", 7, 3),
            ("12345", 2, 0),  // 0xe575e8883c0f89f8
            ("1000_7", 5, 4), // 0x32d3cc1a8fcb58c2
            ("", 3, 2),       // the offset basis 0xcbf29ce484222325
        ] {
            assert_eq!(shard(id, n), want, "{id} over {n}");
        }
        assert_eq!(shard("", 1), 0);
        assert_eq!(shard("x", 0), 0);
        let mut counts = [0usize; 4];
        for id in 1000..5000 {
            counts[shard(&id.to_string(), 4)] += 1;
        }
        assert!(counts.iter().all(|&c| c > 800), "{counts:?}");
    }

    #[test]
    fn payload_gzips_only_large_bodies() {
        let small = Payload::new(Bytes::from_static(b"x 1\n"), 1024);
        assert!(!small.is_gzipped());
        let text: String = (0..5000).map(|i| format!("m{{l=\"{i}\"}} {i}\n")).collect();
        let big = Payload::new(Bytes::from(text.clone()), 1024);
        assert!(big.is_gzipped());
        assert!(big.len() < text.len() / 3);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&big.bytes[..]), &mut out)
            .unwrap();
        assert_eq!(out, text);
        assert!(!Payload::new(Bytes::from(text), 0).is_gzipped());
    }

    #[test]
    fn grouping_path_encoding() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (
                &[("slurm_job_id", "4242")],
                "/metrics/job/arkouda/slurm_job_id/4242",
            ),
            (
                &[("slurm_job_id", "4242_7")],
                "/metrics/job/arkouda/slurm_job_id/4242_7",
            ),
            (
                &[("instance", "a/b")],
                "/metrics/job/arkouda/instance@base64/YS9i",
            ),
            (
                &[("instance", "")],
                "/metrics/job/arkouda/instance@base64/=",
            ),
            (
                &[("instance", "two words")],
                "/metrics/job/arkouda/instance/two%20words",
            ),
            (
                &[("instance", "ünï")],
                "/metrics/job/arkouda/instance/%C3%BCn%C3%AF",
            ),
            (
                &[("instance", "..")],
                "/metrics/job/arkouda/instance@base64/Li4=",
            ),
            (
                &[("instance", ".")],
                "/metrics/job/arkouda/instance@base64/Lg==",
            ),
            (
                &[("instance", "a?b#c%d")],
                "/metrics/job/arkouda/instance/a%3Fb%23c%25d",
            ),
            (
                &[("instance", "?>?")],
                "/metrics/job/arkouda/instance/%3F%3E%3F",
            ),
        ];
        for (labels, want) in cases {
            assert_eq!(key(labels).path(), *want, "{labels:?}");
        }
        // A job name with a slash is encoded the same way.
        assert_eq!(
            GroupingKey::new("a/b", vec![]).path(),
            "/metrics/job@base64/YS9i"
        );
        // base64url, never `+` or `/`.
        assert_eq!(
            key(&[("x", "/>?")]).path(),
            "/metrics/job/arkouda/x@base64/Lz4_"
        );
    }
}
