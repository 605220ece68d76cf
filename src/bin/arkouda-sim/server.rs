//! The two daemons: the metrics port (§2.2) and the optional main port
//! (§1.4), each a REP socket served by its own thread.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::chapel::{self, Port};
use crate::fault::{self, Fault, FaultSource};
use crate::release::Category;
use crate::request::{self, Request};
use crate::workload::{self, SimConfig, SimState, Snapshot};

/// Everything both daemons share.
pub struct Shared {
    pub cfg: SimConfig,
    pub state: Mutex<SimState>,
    pub faults: FaultSource,
    pub reply_log: ReplyLog,
    pub conn_info: Option<PathBuf>,
}

impl Shared {
    pub fn state(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Delete the connection-info file (idempotent).
    pub fn cleanup(&self) {
        if let Some(p) = &self.conn_info {
            match std::fs::remove_file(p) {
                Ok(()) => eprintln!("arkouda-sim: removed connection info {}", p.display()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => eprintln!("arkouda-sim: cannot remove {}: {e}", p.display()),
            }
        }
    }
}

/// `--reply-log`: one JSON line per reply sent.
pub struct ReplyLog {
    file: Option<Mutex<File>>,
    seq: AtomicU64,
}

pub struct LogEntry<'a> {
    pub port: Port,
    pub cmd: &'a str,
    pub category: Option<Category>,
    pub tick: u64,
    pub msg: &'a str,
    pub fault: Option<&'a Fault>,
}

impl ReplyLog {
    pub fn open(path: Option<&PathBuf>) -> anyhow::Result<ReplyLog> {
        let file = match path {
            Some(p) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| anyhow::anyhow!("cannot open reply log {}: {e}", p.display()))?,
            )),
            None => None,
        };
        Ok(ReplyLog {
            file,
            seq: AtomicU64::new(0),
        })
    }

    pub fn write(&self, e: &LogEntry<'_>) {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let Some(file) = &self.file else { return };
        let mut line = serde_json::json!({
            "seq": seq,
            "port": e.port.label(),
            "cmd": e.cmd,
            "category": e.category.map(Category::name),
            "tick": e.tick,
            "msg": e.msg,
        });
        if let (Some(f), Some(obj)) = (e.fault, line.as_object_mut()) {
            if *f != Fault::None {
                obj.insert(
                    "fault".to_string(),
                    serde_json::Value::String(f.to_string()),
                );
            }
        }
        let mut text = line.to_string();
        text.push('\n');
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(err) = f.write_all(text.as_bytes()).and_then(|()| f.flush()) {
            eprintln!("arkouda-sim: reply log write failed: {err}");
        }
    }
}

/// Bind a REP socket on `tcp://<bind>:<port>` (`*` for port 0) and return it
/// with the port actually bound.
pub fn bind_rep(ctx: &zmq::Context, bind: &str, port: u16) -> anyhow::Result<(zmq::Socket, u16)> {
    let sock = ctx.socket(zmq::REP)?;
    sock.set_linger(1000)?;
    let host = if bind.contains(':') && !bind.starts_with('[') {
        sock.set_ipv6(true)?;
        format!("[{bind}]")
    } else {
        bind.to_string()
    };
    let endpoint = if port == 0 {
        format!("tcp://{host}:*")
    } else {
        format!("tcp://{host}:{port}")
    };
    sock.bind(&endpoint)
        .map_err(|e| anyhow::anyhow!("cannot bind {endpoint}: {e}"))?;
    let last = sock
        .get_last_endpoint()?
        .map_err(|raw| anyhow::anyhow!("bad endpoint bytes {raw:?}"))?;
    let real = last
        .rsplit(':')
        .next()
        .and_then(|p| p.parse::<u16>().ok())
        .ok_or_else(|| anyhow::anyhow!("cannot read port from endpoint {last:?}"))?;
    Ok((sock, real))
}

/// The metrics daemon ended (§2.2): keep the socket bound, never receive or
/// reply again.
fn die_silently(sock: &zmq::Socket, reason: &str) -> ! {
    eprintln!("arkouda-sim: [metrics] daemon died silently: {reason}");
    let _keep_bound = sock;
    loop {
        std::thread::park();
    }
}

fn short(bytes: &[u8]) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.chars().count() > 200 {
        let mut t: String = s.chars().take(200).collect();
        t.push('…');
        t
    } else {
        s.into_owned()
    }
}

/// The metrics-port loop. Never returns normally.
pub fn run_metrics(sock: zmq::Socket, shared: &Shared) {
    let cfg = &shared.cfg;
    let mut last_mode: Option<Fault> = None;
    let mut metrics_in_mode: u64 = 0;
    loop {
        let frames = match sock.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("arkouda-sim: [metrics] recv failed: {e}");
                if e == zmq::Error::ETERM {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        let first: &[u8] = frames.first().map_or(&[], Vec::as_slice);

        let mut mode = shared.faults.current();
        if last_mode.as_ref() != Some(&mode) {
            metrics_in_mode = 0;
            last_mode = Some(mode.clone());
        }
        if mode == Fault::Hang {
            eprintln!(
                "arkouda-sim: [metrics] hang: holding request {}",
                short(first)
            );
            while mode == Fault::Hang {
                std::thread::sleep(Duration::from_millis(50));
                mode = shared.faults.current();
            }
            eprintln!("arkouda-sim: [metrics] hang over, mode now {mode}");
            metrics_in_mode = 0;
            last_mode = Some(mode.clone());
        }

        let (req, category) = match request::metrics_port_decision(cfg.release, first) {
            Ok(x) => x,
            Err(reason) => die_silently(&sock, &format!("{reason}; request {}", short(first))),
        };
        if req.cmd == "metrics" {
            if let Fault::DieAfter(n) = mode {
                if metrics_in_mode >= n {
                    die_silently(&sock, &format!("die-after:{n} reached"));
                }
            }
            metrics_in_mode += 1;
        }

        if let Fault::Slow(ms) = mode {
            std::thread::sleep(Duration::from_millis(ms));
        }

        let (msg, msg_type, tick) = if mode == Fault::Error {
            let tick = shared.state().tick;
            ("Error: simulated failure".to_string(), "ERROR", tick)
        } else {
            let (msg, tick) = metrics_port_msg(shared, &req, category, &mode);
            (msg, "NORMAL", tick)
        };
        let frame = chapel::reply_frame(cfg.release, Port::Metrics, &msg, msg_type, &req.user);
        let bytes: Vec<u8> = match &mode {
            Fault::Garbage => fault::GARBAGE.to_vec(),
            Fault::Truncated => {
                let b = frame.as_bytes();
                b[..b.len() / 2].to_vec()
            }
            Fault::Oversized(n) => fault::oversize(&frame, *n).into_bytes(),
            _ => frame.into_bytes(),
        };
        eprintln!(
            "arkouda-sim: [metrics] user={:?} cmd={:?} category={} tick={tick} fault={mode} reply={}B",
            req.user,
            req.cmd,
            category.map_or("-", Category::name),
            bytes.len()
        );
        if let Err(e) = sock.send(bytes, 0) {
            eprintln!("arkouda-sim: [metrics] send failed: {e}");
        }
        shared.reply_log.write(&LogEntry {
            port: Port::Metrics,
            cmd: &req.cmd,
            category,
            tick,
            msg: &msg,
            fault: Some(&mode),
        });
    }
}

/// The `msg` of a metrics-port reply, and the tick it reflects.
fn metrics_port_msg(
    shared: &Shared,
    req: &Request,
    category: Option<Category>,
    mode: &Fault,
) -> (String, u64) {
    let cfg = &shared.cfg;
    match (req.cmd.as_str(), category) {
        ("metrics", Some(cat)) => {
            let mut st = shared.state();
            if cat == Category::All {
                st.tick += 1;
            }
            let msg = Snapshot::new(cfg, &st).metrics_msg(
                cat,
                cat == Category::All && *mode == Fault::UnknownCategories,
            );
            (msg, st.tick)
        }
        ("connect", _) => (
            format!(
                "connected to arkouda metrics server tcp://*:{}",
                cfg.metrics_port
            ),
            shared.state().tick,
        ),
        ("getconfig", _) => (workload::getconfig_json(cfg), shared.state().tick),
        // No default branch in the real dispatch: an empty NORMAL reply.
        _ => (String::new(), shared.state().tick),
    }
}

struct MainOutcome {
    user: String,
    cmd: String,
    msg: String,
    ok: bool,
    category: Option<Category>,
    /// (user, cmd) to count once the reply is sent.
    count_as: Option<(String, String)>,
    shutdown: bool,
}

fn main_outcome(shared: &Shared, frames: &[Vec<u8>], req_count: u64) -> MainOutcome {
    let cfg = &shared.cfg;
    let first: &[u8] = frames.first().map_or(&[], Vec::as_slice);
    let first = first.strip_suffix(b"BINARY_PAYLOAD").unwrap_or(first);
    let err = |req: Option<&Request>, msg: String| MainOutcome {
        user: req.map_or_else(String::new, |r| r.user.clone()),
        cmd: req.map_or_else(String::new, |r| r.cmd.clone()),
        msg,
        ok: false,
        category: None,
        count_as: None,
        shutdown: false,
    };
    let req = match request::parse_request(first) {
        Ok(r) => r,
        Err(e) => return err(None, format!("Error: {e}")),
    };
    if let Some(tok) = &cfg.token {
        if req.token.is_empty() || req.token == "None" {
            return err(
                Some(&req),
                "Error: access to arkouda requires a token".to_string(),
            );
        }
        if &req.token != tok {
            return err(
                Some(&req),
                format!(
                    "Error: token {} does not match server token, check with server owner",
                    req.token
                ),
            );
        }
    }
    let port = cfg.server_port();
    let mut category = None;
    let mut shutdown = false;
    let (msg, ok) = match req.cmd.as_str() {
        "" => ("Server received an empty command".to_string(), false),
        "connect" => {
            let mut m = format!("connected to arkouda server tcp://*:{port}");
            if cfg.token.is_some() {
                m.push_str(&format!(" as user {} with token {}", req.user, req.token));
            }
            (m, true)
        }
        "disconnect" => (
            format!("disconnected from arkouda server tcp://*:{port}"),
            true,
        ),
        "shutdown" => {
            shutdown = true;
            (format!("shutdown server ({req_count} req)"), true)
        }
        "ruok" => ("imok".to_string(), true),
        "noop" => ("noop".to_string(), true),
        "getconfig" => (workload::getconfig_json(cfg), true),
        "metrics" => match request::request_params(cfg.release, &req)
            .and_then(|params| request::metrics_category(cfg.release, &req, &params))
        {
            Ok(cat) => {
                category = Some(cat);
                let st = shared.state();
                (Snapshot::new(cfg, &st).metrics_msg(cat, false), true)
            }
            Err(e) => (format!("Error: {e}"), false),
        },
        other => (format!("Unrecognized command: {other}"), false),
    };
    let counted = ok || cfg.release.counts_failed_commands();
    MainOutcome {
        count_as: counted.then(|| (req.user.clone(), req.cmd.clone())),
        user: req.user,
        cmd: req.cmd,
        msg,
        ok,
        category,
        shutdown,
    }
}

/// The main-port loop. Exits the process on `shutdown`.
pub fn run_main(ctx: zmq::Context, sock: zmq::Socket, shared: &Shared) {
    let cfg = &shared.cfg;
    let mut req_count: u64 = 0;
    loop {
        let frames = match sock.recv_multipart(0) {
            Ok(f) => f,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                eprintln!("arkouda-sim: [main] recv failed: {e}");
                if e == zmq::Error::ETERM {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
        };
        req_count += 1;
        let out = main_outcome(shared, &frames, req_count);
        let msg_type = if out.ok { "NORMAL" } else { "ERROR" };
        let frame = chapel::reply_frame(cfg.release, Port::Main, &out.msg, msg_type, &out.user);
        eprintln!(
            "arkouda-sim: [main] user={:?} cmd={:?} type={msg_type} counted={} reply={}B",
            out.user,
            out.cmd,
            out.count_as.is_some(),
            frame.len()
        );
        if let Err(e) = sock.send(frame.as_bytes(), 0) {
            eprintln!("arkouda-sim: [main] send failed: {e}");
        }
        let tick = {
            let mut st = shared.state();
            if let Some((u, c)) = &out.count_as {
                st.main.record(u, c);
            }
            st.tick
        };
        shared.reply_log.write(&LogEntry {
            port: Port::Main,
            cmd: &out.cmd,
            category: out.category,
            tick,
            msg: &out.msg,
            fault: None,
        });
        if out.shutdown {
            eprintln!("arkouda-sim: [main] shutdown requested");
            // Closing the socket and terminating its context flushes the
            // reply (linger) before the process exits.
            drop(sock);
            drop(ctx);
            shared.cleanup();
            std::process::exit(0);
        }
    }
}
