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
