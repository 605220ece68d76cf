//! A ZeroMQ REQ client for one Arkouda metrics endpoint.
//!
//! Every request has a send and a receive timeout. After any failure the socket is closed
//! and a fresh one is made for the next request: a REQ socket that missed a reply is stuck
//! in its send/receive cycle, and the real metrics daemon can stop answering for good
//! (it dies silently on a bad request), so nothing here ever waits without a bound.
//! Nothing blocks: the socket's notification descriptor (ZMQ_FD) is in the tokio
//! reactor, so a request waits on the runtime's own thread, with no thread hand-off.

use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::time::Instant;

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
    conn: Option<Conn>,
    endpoint: String,
    opts: ClientOptions,
    /// A request was sent and its reply not yet read: set while a request is under way,
    /// so that one cancelled half-way (the agent stopping) leaves the socket to be remade
    /// rather than a REQ socket stuck between its send and its receive.
    in_flight: bool,
}

/// A REQ socket, seen by the reactor as its notification descriptor (ZMQ_FD).
struct Sock {
    socket: zmq::Socket,
    fd: RawFd,
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

/// A socket registered with the runtime's reactor (deregistered before it closes: the
/// `AsyncFd` drops its registration, then the socket).
struct Conn(AsyncFd<Sock>);

impl Conn {
    fn socket(&self) -> &zmq::Socket {
        &self.0.get_ref().socket
    }

    /// Waits until the socket has `want` (ZMQ_EVENTS), or `deadline` passes (false).
    ///
    /// ZMQ_FD only says that ZMQ_EVENTS may have changed (and is edge-like: reading
    /// ZMQ_EVENTS can consume the notification), so ZMQ_EVENTS is read before every wait
    /// and again after every wake-up; a readiness cleared before that read cannot hide
    /// one that comes after it.
    async fn wait(&mut self, want: zmq::PollEvents, deadline: Instant) -> Result<bool, zmq::Error> {
        loop {
            if self.socket().get_events()?.intersects(want) {
                return Ok(true);
            }
            match tokio::time::timeout_at(deadline, self.0.readable_mut()).await {
                Ok(Ok(mut guard)) => guard.clear_ready(),
                Ok(Err(e)) => return Err(io_to_zmq(&e)),
                Err(_) => return Ok(false),
            }
        }
    }
}

fn io_to_zmq(e: &std::io::Error) -> zmq::Error {
    zmq::Error::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))
}

impl Client {
    pub fn new(endpoint: impl Into<String>, opts: ClientOptions) -> Client {
        Client {
            ctx: zmq::Context::new(),
            conn: None,
            endpoint: endpoint.into(),
            opts,
            in_flight: false,
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

    /// A request was cut short before its reply came (its future was dropped).
    pub fn busy(&self) -> bool {
        self.in_flight
    }

    /// Closes the socket; the next request opens a new one.
    pub fn reset(&mut self) {
        // LINGER is 0, so dropping never blocks on unsent messages.
        self.conn = None;
        self.in_flight = false;
    }

    fn zmq_err(&self, source: zmq::Error) -> ClientError {
        ClientError::Zmq {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    fn open(&self) -> Result<Conn, ClientError> {
        let ms = i32::try_from(self.opts.timeout.as_millis())
            .unwrap_or(i32::MAX)
            .max(1);
        let s = self.ctx.socket(zmq::REQ).map_err(|e| self.zmq_err(e))?;
        let max = i64::try_from(self.opts.max_reply_bytes).unwrap_or(i64::MAX);
        // The timeouts bound a blocking call, of which there is none (every send and
        // receive below is non-blocking, bounded by the runtime's timers); kept as a
        // second bound all the same.
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
        let fd = s.get_fd().map_err(|e| self.zmq_err(e))?;
        // SAFETY: ZMQ_FD is the socket's own descriptor, open and the same from the
        // socket's creation to its close; the socket lives inside the AsyncFd, which
        // deregisters the descriptor before it drops the socket.
        let registered =
            unsafe { AsyncFd::register_with_interest(Sock { socket: s, fd }, Interest::READABLE) };
        registered
            .map(Conn)
            .map_err(|e| self.zmq_err(io_to_zmq(&e.into_parts().1)))
    }

    /// One request and its reply, each within the timeout, on the runtime (the socket's
    /// descriptor is in the reactor: no thread waits). Any failure resets the socket; so
    /// does a request that was cancelled before its reply came.
    pub async fn request(
        &mut self,
        cmd: &str,
        category: Option<&str>,
        style: ArgStyle,
    ) -> Result<Reply, ClientError> {
        if self.in_flight {
            self.reset();
        }
        let result = self.request_inner(cmd, category, style).await;
        if result.is_err() {
            self.reset();
        }
        result
    }

    async fn request_inner(
        &mut self,
        cmd: &str,
        category: Option<&str>,
        style: ArgStyle,
    ) -> Result<Reply, ClientError> {
        let mut conn = match self.conn.take() {
            Some(c) => c,
            None => self.open()?,
        };
        let token = self.opts.token.as_ref().map(Secret::expose).unwrap_or("");
        let frame = protocol::request(&self.opts.user, token, cmd, category, style);
        self.in_flight = true;
        // Dropped half-way, this future drops `conn` with it: the next request opens a
        // new socket.
        let reply = exchange(&mut conn, &frame, self.opts.timeout).await;
        let reply = match reply {
            Ok(r) => r,
            Err(Failed::Send) => {
                return Err(ClientError::Unreachable {
                    endpoint: self.endpoint.clone(),
                    after: self.opts.timeout,
                })
            }
            Err(Failed::Receive) => {
                return Err(ClientError::Timeout {
                    endpoint: self.endpoint.clone(),
                    after: self.opts.timeout,
                })
            }
            Err(Failed::Zmq(e)) => return Err(self.zmq_err(e)),
        };
        self.conn = Some(conn);
        self.in_flight = false;
        protocol::parse_reply(&reply).map_err(|source| ClientError::Protocol {
            endpoint: self.endpoint.clone(),
            source,
        })
    }
}

/// Why an exchange failed.
enum Failed {
    /// Not sent within the timeout (no server connected).
    Send,
    /// No reply within the timeout.
    Receive,
    Zmq(zmq::Error),
}

/// Sends `frame` and receives the reply, each within `timeout`. The reply is returned
/// where libzmq put it (a 4096-locale reply is ~2 MB): it is parsed in place, no copy.
async fn exchange(
    conn: &mut Conn,
    frame: &[u8],
    timeout: Duration,
) -> Result<zmq::Message, Failed> {
    let deadline = Instant::now() + timeout;
    loop {
        if !conn
            .wait(zmq::POLLOUT, deadline)
            .await
            .map_err(Failed::Zmq)?
        {
            return Err(Failed::Send);
        }
        match conn.socket().send(frame, zmq::DONTWAIT) {
            Ok(()) => break,
            // Not writable after all (the peer went away meanwhile): wait again.
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => return Err(Failed::Zmq(e)),
        }
    }
    let deadline = Instant::now() + timeout;
    let mut reply = zmq::Message::new();
    loop {
        if !conn
            .wait(zmq::POLLIN, deadline)
            .await
            .map_err(Failed::Zmq)?
        {
            return Err(Failed::Receive);
        }
        match conn.socket().recv(&mut reply, zmq::DONTWAIT) {
            Ok(()) => return Ok(reply),
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => return Err(Failed::Zmq(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(timeout: Duration) -> ClientOptions {
        ClientOptions {
            timeout,
            user: "t".into(),
            token: None,
            max_reply_bytes: 1 << 20,
        }
    }

    /// A REP server on a thread that answers each request with its own command (after
    /// `delay` for `getconfig`), until it has been idle for two seconds.
    fn echo_server(delay: Duration) -> String {
        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.set_rcvtimeo(2000).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = rep.get_last_endpoint().unwrap().unwrap();
        std::thread::spawn(move || {
            while let Ok(frame) = rep.recv_bytes(0) {
                let req: serde_json::Value = serde_json::from_slice(&frame).unwrap();
                let cmd = req["cmd"].as_str().unwrap().to_string();
                if cmd == "getconfig" {
                    std::thread::sleep(delay);
                }
                let frame = format!(r#"{{"msg": "{cmd}", "msgType": "NORMAL", "user": "t"}}"#);
                rep.send(frame.as_bytes(), 0).unwrap();
            }
        });
        endpoint
    }

    /// Replies come through the reactor, request after request on one socket; a request
    /// cut short (its future dropped before the answer) leaves no stale answer for the
    /// next one: the socket is remade.
    #[tokio::test]
    async fn a_request_cut_short_leaves_no_stale_answer() {
        let endpoint = echo_server(Duration::from_millis(300));
        let mut c = Client::new(endpoint, opts(Duration::from_secs(5)));
        for _ in 0..3 {
            let reply = c.request("metrics", None, ArgStyle::Json).await.unwrap();
            assert_eq!(reply.msg, "metrics");
        }
        let cut = tokio::time::timeout(
            Duration::from_millis(100),
            c.request("getconfig", None, ArgStyle::Json),
        )
        .await;
        assert!(cut.is_err());
        assert!(c.busy());
        // The answer to `getconfig` comes in the meantime, to the socket given up.
        tokio::time::sleep(Duration::from_millis(400)).await;
        let reply = c.request("metrics", None, ArgStyle::Json).await.unwrap();
        assert_eq!(reply.msg, "metrics");
        assert!(!c.busy());
    }

    /// No server: "unreachable" within the timeout; a server that never answers: "timeout".
    #[tokio::test]
    async fn every_wait_is_bounded() {
        let mut c = Client::new("tcp://127.0.0.1:1", opts(Duration::from_millis(100)));
        let t = Instant::now();
        let e = c
            .request("getconfig", None, ArgStyle::Json)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Unreachable { .. }), "{e}");
        assert!(t.elapsed() < Duration::from_secs(2));

        let ctx = zmq::Context::new();
        let rep = ctx.socket(zmq::REP).unwrap();
        rep.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = rep.get_last_endpoint().unwrap().unwrap();
        let mut c = Client::new(endpoint, opts(Duration::from_millis(200)));
        let e = c
            .request("getconfig", None, ArgStyle::Json)
            .await
            .unwrap_err();
        assert!(matches!(e, ClientError::Timeout { .. }), "{e}");
        assert!(!c.busy());
    }
}
