//! The one place an HTTP client is built: every sink that talks HTTP (Pushgateway, remote
//! write) gets the same timeouts, keep-alive, User-Agent, CA handling and auth, so a TLS
//! or auth option means the same thing for each of them.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// How to reach and authenticate to one HTTP endpoint.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Timeout of one request (and of connecting).
    pub timeout: Duration,
    pub user_agent: String,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
}

/// Why a client could not be built (a CA file that cannot be read or is not PEM).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SetupError(pub String);

/// The User-Agent of every request this agent sends.
pub fn user_agent() -> String {
    format!("arkouda-push-agent/{}", crate::VERSION)
}

/// Builds a keep-alive client. `what` names the endpoint (e.g. `pushgateway`) and the
/// option (`<what>_insecure_skip_verify`) in the warning when verification is off.
pub fn client(opts: &ClientOptions, what: &str, url: &str) -> Result<reqwest::Client, SetupError> {
    let mut builder = reqwest::Client::builder()
        .timeout(opts.timeout)
        .connect_timeout(opts.timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .user_agent(opts.user_agent.clone());
    if let Some(ca) = &opts.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| SetupError(format!("cannot read CA file {}: {e}", ca.display())))?;
        let cert = reqwest::Certificate::from_pem(&pem)
            .map_err(|e| SetupError(format!("CA file {} is not PEM: {e}", ca.display())))?;
        builder = builder.tls_certs_merge([cert]);
    }
    if opts.insecure_skip_verify {
        tracing::warn!(
            endpoint = %url,
            "TLS certificate verification is OFF ({what}_insecure_skip_verify): anyone on the path can read and forge requests"
        );
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder.build().map_err(|e| SetupError(e.to_string()))
}

/// Adds the configured credentials: a bearer token, else basic auth, else nothing.
pub fn authed(opts: &ClientOptions, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
    if let Some(token) = &opts.bearer_token {
        req.bearer_auth(token.expose())
    } else if let Some(user) = &opts.username {
        req.basic_auth(user, opts.password.as_ref().map(Secret::expose))
    } else {
        req
    }
}

/// The error chain of a reqwest error, without the URL's credentials (there are none: the
/// configuration refuses passwords in URLs).
pub fn describe(e: &reqwest::Error) -> String {
    let mut out = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The most of an error answer's body that is read (a Pushgateway's or a remote-write
/// receiver's 4xx/5xx): only its start is quoted in the message, and a broken or hostile
/// endpoint must not make the agent read without end.
pub const ERROR_BODY_LIMIT: usize = 4096;

/// Reads at most `limit` bytes of `resp`'s body, chunk by chunk as they arrive. The bool
/// is true when that was the whole body; false when more was left unread (the connection
/// is then dropped, not reused).
pub async fn read_at_most(
    resp: &mut reqwest::Response,
    limit: usize,
) -> Result<(Vec<u8>, bool), reqwest::Error> {
    let mut buf = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        let room = limit - buf.len();
        if chunk.len() > room {
            buf.extend_from_slice(&chunk[..room]);
            return Ok((buf, false));
        }
        buf.extend_from_slice(&chunk);
    }
    Ok((buf, true))
}

/// The start of an error answer, for a message: at most [`ERROR_BODY_LIMIT`] bytes read,
/// at most `quote` bytes kept (on a character boundary), trimmed. Empty when the body
/// cannot be read.
pub async fn error_body(mut resp: reqwest::Response, quote: usize) -> String {
    let bytes = read_at_most(&mut resp, ERROR_BODY_LIMIT)
        .await
        .map(|(b, _)| b)
        .unwrap_or_default();
    let mut text = String::from_utf8_lossy(&bytes).into_owned();
    crate::text::truncate_chars(&mut text, quote);
    text.trim().to_string()
}

#[cfg(test)]
pub(crate) mod testing {
    //! A one-shot HTTP server for the sinks' tests: answers every connection with a fixed
    //! head and then a body of `body_len` bytes (None: without end, until the client goes).

    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Serves on a free loopback port; returns its base URL.
    pub fn serve(head: &'static str, body_len: Option<usize>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                std::thread::spawn(move || {
                    let mut req = [0u8; 8192];
                    if !matches!(conn.read(&mut req), Ok(n) if n > 0) {
                        return;
                    }
                    if conn.write_all(head.as_bytes()).is_err() {
                        return;
                    }
                    let chunk = vec![b'x'; 64 * 1024];
                    let mut sent = 0usize;
                    loop {
                        let n = match body_len {
                            Some(len) if sent >= len => return,
                            Some(len) => chunk.len().min(len - sent),
                            None => chunk.len(),
                        };
                        if conn.write_all(&chunk[..n]).is_err() {
                            return;
                        }
                        sent += n;
                    }
                });
            }
        });
        format!("http://{addr}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap()
    }

    /// An error answer whose body never ends is read only up to the limit, at once.
    #[tokio::test]
    async fn an_endless_error_body_is_cut() {
        let url = testing::serve(
            "HTTP/1.1 500 Oops\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n",
            None,
        );
        let started = Instant::now();
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 500);
        let text = error_body(resp, 300).await;
        assert_eq!(text, "x".repeat(300));
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn read_at_most_says_whether_it_read_everything() {
        let url = testing::serve(
            "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nConnection: close\r\n\r\n",
            Some(1000),
        );
        let mut resp = client().get(&url).send().await.unwrap();
        let (bytes, complete) = read_at_most(&mut resp, 1000).await.unwrap();
        assert_eq!((bytes.len(), complete), (1000, true));
        let mut resp = client().get(&url).send().await.unwrap();
        let (bytes, complete) = read_at_most(&mut resp, 999).await.unwrap();
        assert_eq!((bytes.len(), complete), (999, false));
    }
}
