//! Talking to Arkouda's metrics server: find it, learn its release, poll it.
//!
//! [`Session`] is what the agent uses: it finds the server (a fixed address, or the host
//! named by arkouda_server's connection-info file), and after every (re)connect asks
//! `getconfig` (for the release, hence the request shape) and `SERVER_INFO`; each poll then
//! asks `metrics` with category `ALL`. It returns typed records.
//!
//! This module knows nothing of Prometheus, HTTP or the Pushgateway, and never waits
//! without a timeout. It runs on the agent's async runtime (see [`client`]).

pub mod client;
pub mod protocol;

use std::path::PathBuf;
use std::sync::Arc;

pub use client::{Client, ClientError, ClientOptions};
pub use protocol::{Category, LocaleRef, Record, Records, Release, Scope, ServerInfo};

use protocol::ArgStyle;

/// Where the server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    /// A fixed `tcp://host:port`.
    Endpoint(String),
    /// The host comes from arkouda_server's connection-info file, the port is the metrics
    /// port; `fallback_host` is used while the file does not exist (the Slurm prolog gives
    /// the first node).
    ConnectionInfo {
        path: PathBuf,
        port: u16,
        fallback_host: Option<String>,
    },
}

/// What a [`Session`] is configured with (the `arkouda*` keys, `metrics_port`,
/// `connection_info`, `max_reply_bytes`).
#[derive(Clone, Debug)]
pub struct ArkoudaSettings {
    pub location: Location,
    /// The release to speak; None: learned from `getconfig` after each (re)connect.
    pub release: Option<Release>,
    pub client: ClientOptions,
}

/// Why a poll failed.
#[derive(Debug, thiserror::Error)]
pub enum PollError {
    #[error("waiting for the connection-info file {path}: {reason}")]
    NoConnectionInfo { path: PathBuf, reason: String },
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("bad metrics reply from {endpoint}: {source}")]
    Protocol {
        endpoint: String,
        #[source]
        source: protocol::ProtocolError,
    },
}

impl PollError {
    /// A short, stable name of the kind of failure, for logs and state-change detection.
    pub fn kind(&self) -> &'static str {
        match self {
            PollError::NoConnectionInfo { .. } => "no_connection_info",
            PollError::Client(ClientError::Unreachable { .. }) => "unreachable",
            PollError::Client(ClientError::Timeout { .. }) => "timeout",
            PollError::Client(ClientError::Zmq { .. }) => "zmq",
            PollError::Client(ClientError::Protocol { .. }) | PollError::Protocol { .. } => {
                "bad_reply"
            }
        }
    }
}

/// The result of one successful poll.
#[derive(Debug)]
pub struct Poll {
    pub records: Records,
    /// Present once SERVER_INFO was read after the latest (re)connect.
    pub server_info: Option<Arc<ServerInfo>>,
    pub release: Option<Release>,
}

pub struct Session {
    location: Location,
    client: Client,
    /// A fixed release from the configuration; otherwise learned from `getconfig`.
    fixed_release: Option<Release>,
    release: Option<Release>,
    style: ArgStyle,
    server_info: Option<Arc<ServerInfo>>,
    connected: bool,
}

impl Session {
    pub fn new(settings: &ArkoudaSettings) -> Session {
        let endpoint = match &settings.location {
            Location::Endpoint(e) => e.clone(),
            Location::ConnectionInfo { .. } => String::new(),
        };
        let fixed_release = settings.release;
        Session {
            location: settings.location.clone(),
            client: Client::new(endpoint, settings.client.clone()),
            fixed_release,
            release: fixed_release,
            style: fixed_release.map_or(ArgStyle::Json, Release::arg_style),
            server_info: None,
            connected: false,
        }
    }

    /// The endpoint in use (empty until the connection-info file was read).
    pub fn endpoint(&self) -> &str {
        self.client.endpoint()
    }

    fn locate(&mut self) -> Result<(), PollError> {
        if let Location::ConnectionInfo {
            path,
            port,
            fallback_host,
        } = &self.location
        {
            let host = match std::fs::read_to_string(path) {
                Ok(text) => protocol::parse_connection_info(&text)
                    .map(|info| info.host)
                    .ok_or_else(|| PollError::NoConnectionInfo {
                        path: path.clone(),
                        reason: "the file is empty".to_string(),
                    })?,
                Err(_) if fallback_host.is_some() => fallback_host.clone().unwrap_or_default(),
                Err(e) => {
                    return Err(PollError::NoConnectionInfo {
                        path: path.clone(),
                        reason: e.to_string(),
                    })
                }
            };
            let endpoint = format!("tcp://{host}:{port}");
            self.client.set_endpoint(&endpoint);
        }
        Ok(())
    }

    async fn handshake(&mut self) -> Result<(), PollError> {
        self.locate()?;
        if self.fixed_release.is_none() {
            // getconfig takes no arguments, so it is safe to send before the release is
            // known; a metrics request in the wrong shape would kill the metrics daemon.
            let reply = self
                .client
                .request("getconfig", None, ArgStyle::Json)
                .await?;
            self.release = protocol::release_from_config(&reply.msg);
            self.style = self.release.map_or(ArgStyle::Json, Release::arg_style);
        }
        let reply = self
            .client
            .request("metrics", Some("SERVER_INFO"), self.style)
            .await?;
        self.server_info = Some(Arc::new(protocol::parse_server_info(&reply.msg).map_err(
            |source| PollError::Protocol {
                endpoint: self.client.endpoint().to_string(),
                source,
            },
        )?));
        self.connected = true;
        Ok(())
    }

    /// One poll: (re)connect if needed, then `metrics ALL`.
    ///
    /// Cancel-safe: a poll dropped half-way (the agent stopping) leaves the session to
    /// reconnect at the next poll.
    pub async fn poll(&mut self) -> Result<Poll, PollError> {
        self.connected &= !self.client.busy();
        let result = self.poll_inner().await;
        if result.is_err() {
            self.connected = false;
            self.client.reset();
        }
        result
    }

    async fn poll_inner(&mut self) -> Result<Poll, PollError> {
        if !self.connected {
            self.handshake().await?;
        }
        let reply = self
            .client
            .request("metrics", Some("ALL"), self.style)
            .await?;
        if reply.msg.is_empty() {
            return Err(PollError::Protocol {
                endpoint: self.client.endpoint().to_string(),
                source: protocol::ProtocolError::Empty("metrics".into()),
            });
        }
        let records =
            protocol::parse_records(&reply.msg).map_err(|source| PollError::Protocol {
                endpoint: self.client.endpoint().to_string(),
                source,
            })?;
        Ok(Poll {
            records,
            server_info: self.server_info.clone(),
            release: self.release,
        })
    }
}
