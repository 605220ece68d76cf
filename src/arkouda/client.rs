//! A ZeroMQ REQ client for one Arkouda metrics endpoint.
//!
//! Every request has a send and a receive timeout. After any failure the socket is closed
//! and a fresh one is made for the next request: a REQ socket that missed a reply is stuck
//! in its send/receive cycle, and the real metrics daemon can stop answering for good
//! (it dies silently on a bad request), so nothing here ever waits without a bound.
//! Blocking calls: the agent runs them off its async runtime.

use std::time::Duration;

use super::protocol::{self, ArgStyle, ProtocolError, Reply};
use crate::secret::Secret;

/// Why a request failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach {endpoint} within {after:?} (is arkouda_server running with the METRICS daemon?)")]
    Unreachable { endpoint: String, after: Duration },
    #[error("no reply from {endpoint} within {after:?} (server hung, too busy, or the reply was over max_reply_bytes)")]
    Timeout { endpoint: String, after: Duration },
    #[error("ZeroMQ error talking to {endpoint}: {source}")]
    Zmq {
        endpoint: String,
        #[source]
        source: zmq::Error,
    },
    #[error("bad reply from {endpoint}: {source}")]
    Protocol {
        endpoint: String,
        #[source]
        source: ProtocolError,
    },
}

/// How to talk to the server.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    pub timeout: Duration,
    pub user: String,
    pub token: Option<Secret>,
    pub max_reply_bytes: u64,
}

pub struct Client {
    ctx: zmq::Context,
    socket: Option<zmq::Socket>,
    endpoint: String,
    opts: ClientOptions,
}

impl Client {
    pub fn new(endpoint: impl Into<String>, opts: ClientOptions) -> Client {
        Client {
            ctx: zmq::Context::new(),
            socket: None,
            endpoint: endpoint.into(),
            opts,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Points the client elsewhere (the server moved); drops the old socket.
    pub fn set_endpoint(&mut self, endpoint: &str) {
        if self.endpoint != endpoint {
            self.endpoint = endpoint.to_string();
            self.reset();
        }
    }

    /// Closes the socket; the next request opens a new one.
    pub fn reset(&mut self) {
        // LINGER is 0, so dropping never blocks on unsent messages.
        self.socket = None;
    }

    fn zmq_err(&self, source: zmq::Error) -> ClientError {
        ClientError::Zmq {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn open(&self) -> Result<zmq::Socket, ClientError> {
        let ms = i32::try_from(self.opts.timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let s = self.ctx.socket(zmq::REQ).map_err(|e| self.zmq_err(e))?;
        let max = i64::try_from(self.opts.max_reply_bytes).unwrap_or(i64::MAX);
        s.set_linger(0)
            .and_then(|_| s.set_sndtimeo(ms))
            .and_then(|_| s.set_rcvtimeo(ms))
            .and_then(|_| s.set_maxmsgsize(max))
            // Queue nothing for a peer that is not connected: a send to a dead server then
            // times out as "unreachable" instead of waiting for a reply that cannot come.
            .and_then(|_| s.set_immediate(true))
            .and_then(|_| s.set_tcp_keepalive(1))
            .map_err(|e| self.zmq_err(e))?;
        s.connect(&self.endpoint).map_err(|e| self.zmq_err(e))?;
        Ok(s)
    }

    /// One request and its reply. Any failure resets the socket.
    pub fn request(
        &mut self,
        cmd: &str,
        category: Option<&str>,
        style: ArgStyle,
    ) -> Result<Reply, ClientError> {
        let result = self.request_inner(cmd, category, style);
        if result.is_err() {
            self.reset();
        }
        result
    }

    fn request_inner(
        &mut self,
        cmd: &str,
        category: Option<&str>,
        style: ArgStyle,
    ) -> Result<Reply, ClientError> {
        if self.socket.is_none() {
            self.socket = Some(self.open()?);
        }
        let token = self.opts.token.as_ref().map(Secret::expose).unwrap_or("");
        let frame = protocol::request(&self.opts.user, token, cmd, category, style);
        let Some(socket) = self.socket.as_ref() else {
            return Err(self.zmq_err(zmq::Error::ENOTSOCK));
        };
        match socket.send(frame, 0) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) => {
                return Err(ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    after: self.opts.timeout,
                })
            }
            Err(e) => return Err(self.zmq_err(e)),
        }
        let reply = match socket.recv_bytes(0) {
            Ok(b) => b,
            Err(zmq::Error::EAGAIN) => {
                return Err(ClientError::Timeout {
                    endpoint: self.endpoint.clone(),
                    after: self.opts.timeout,
                })
            }
            Err(e) => return Err(self.zmq_err(e)),
        };
        protocol::parse_reply(&reply).map_err(|source| ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            source,
        })
    }
}
