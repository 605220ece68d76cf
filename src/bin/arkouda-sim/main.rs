//! `arkouda-sim`: a simulator of an `arkouda_server` metrics port (and
//! optionally its main port), faithful to `docs/arkouda-protocol.md`
//! release by release. It is an independent implementation: it does not use
//! the agent's library code.
//!
//! On start it binds its REP socket(s), writes the connection-info file if
//! asked, and prints exactly one line to stdout:
//! `READY metrics=<port> main=<port or 0> pid=<pid>`. It exits 0 on
//! SIGTERM/SIGINT or on a main-port `shutdown`, deleting the connection-info
//! file.
//!
//! # Deterministic workload
//!
//! Tests compute expected values from this description.
//!
//! * **Tick.** The state advances by one tick per `metrics` request with
//!   category `ALL` on the *metrics* port (the first ALL reply is tick 1, the
//!   second tick 2, …), counted before the reply is built. Nothing else
//!   advances it (not other categories, not `metrics` on the main port, not
//!   `error`-fault replies, which are not processed). The state starts at
//!   tick 0, where the formulas below still apply.
//! * **Per-user runs at tick k**, for each of the U users of `--users` (in
//!   that order, duplicates removed): `connect` 1, `getconfig` 1,
//!   `create` 2k, `randint` 3k, `sum` k, each `--weird-names` command k
//!   (`a/b`, `q"uote`, `back\slash`, `new⏎line`, `ünï code`, empty name), and
//!   the failing `bad_cmd` floor(k/5) times (error class
//!   `IllegalArgumentError`). `bad_cmd` is counted in the request metrics only
//!   from v2024.10.02 on, and in NUM_ERRORS (`IllegalArgumentError` and
//!   `total`) only in v2024.04.19 (NUM_ERRORS is `total` = 0 from v2024.10.02).
//!   A command that has not run (count 0) has no record at all; `total`
//!   records are always present.
//! * **Global count** of a command = U × per-user count + the main-port
//!   requests actually received with that `cmd` (counted after their reply;
//!   before v2024.10.02 only NORMAL replies count, from v2024.10.02 every
//!   parsed and authenticated request counts). Main-port requests are also
//!   counted per request `user`; users not in `--users` are appended after
//!   the simulated ones. Metrics-port requests are never counted.
//! * **Order**: scripted commands in the order connect, getconfig, create,
//!   randint, sum, weird…, bad_cmd, then commands seen only on the main port
//!   in first-seen order, then `total`.
//! * **Response times**: the command with index i in
//!   [connect, getconfig, create, randint, sum, weird…, bad_cmd] has
//!   avg = last = 0.001 × (i+1) s (so bad_cmd is 0.006 s, or 0.012 s with
//!   weird names); any other (main-port) command 0.0001 s.
//!   TOTAL_RESPONSE_TIME = avg × global count.
//! * **Memory**: locale 0 uses k × 1e8 bytes at tick k and every locale
//!   reports locale 0's bytes (the real quirk); with
//!   `--distinct-locale-memory` locale i reports (k×100 + i) × 1e6 bytes.
//!   Physical memory per locale is 274877906944 bytes, 128 PUs, 128 max
//!   tasks. Percent = used / (memMax or physical) × 100 (memMax only from
//!   v2023.03.01). TOTAL_MEMORY_USED[c] = global count_c × (locale-0 used ×
//!   numLocales) / 1e9.
//! * **Names**: locale i's name and hostname are `<prefix><i:04>`; the server
//!   hostname is locale 0's (`--server-hostname` renames locale 0); `server_port`/`ServerPort` is the main port
//!   (5555 when no main port is served).
//! * **Categories per release**: v2022.08.15/v2022.09.30: NUM_REQUESTS
//!   (global + user), SYSTEM, SERVER; v2023.02.08 adds AVG_RESPONSE_TIME for
//!   `create` and `sum` only; v2023.03.01: RESPONSE_TIME and
//!   AVG_RESPONSE_TIME for every command; v2023.04.07 adds
//!   TOTAL_RESPONSE_TIME and TOTAL_MEMORY_USED; v2024.04.19 adds NUM_ERRORS.
//!
//! # Strictness
//!
//! A request the imitated release's request or parameter record would not
//! parse (no `size`, in any release; a parameter without `objType` in
//! v2022.09.30 – v2024.06.21; unreadable `args` with `size` > 0 for any
//! command from v2022.09.30) or a `metrics` category it cannot cast ends the
//! simulated metrics daemon for good, silently, as it ends the real one: the
//! port stays bound and nothing answers again (docs/arkouda-protocol.md).
//!
//! # Fault modes (metrics port only)
//!
//! What a real metrics daemon does: `none`, `hang` (a busy locale 0 holds
//! the reply), `die-after:N` (counts `metrics` requests since the mode took
//! effect; the (N+1)-th one kills the daemon: silence for good), `slow:MS`.
//! What no real metrics daemon does (it only ever goes silent), kept as
//! robustness tests of the agent: `garbage`, `truncated`, `error`,
//! `oversized:BYTES`, `unknown-categories` (records of a future release). With
//! `--control FILE`, the file's trimmed content (when it exists) is read
//! before each request and overrides `--fault`; unparsable content means
//! `none`.

mod chapel;
mod fault;
mod release;
mod request;
mod server;
mod workload;

use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::fault::{Fault, FaultSource};
use crate::release::Release;
use crate::server::{ReplyLog, Shared};
use crate::workload::{SimConfig, SimState};

/// Simulated Arkouda metrics server (and optional main port) for tests.
#[derive(Parser, Debug)]
#[command(name = "arkouda-sim", version, about)]
struct Cli {
    /// Metrics port; 0 lets the OS pick.
    #[arg(long, default_value_t = 5556, value_name = "PORT")]
    metrics_port: u16,
    /// Also serve the main port (0 lets the OS pick).
    #[arg(long, value_name = "PORT")]
    main_port: Option<u16>,
    /// Address to bind ("*" for all interfaces).
    #[arg(long, default_value = "127.0.0.1", value_name = "ADDR")]
    bind: String,
    /// Number of simulated locales.
    #[arg(long, default_value_t = 1, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    locales: u32,
    /// Imitated release: 2022.08.15, 2022.09.30, 2022.11.10, 2022.12.09,
    /// 2023.02.08, 2023.03.01, 2023.04.07, 2024.04.19, 2024.10.02, 2025.07.03,
    /// 2025.09.30 or head (= 2026.07.15, the newest tag); optional "v". Each is
    /// the first tag of a behaviour of the metrics port (docs/arkouda-protocol.md).
    #[arg(long, default_value = "head", value_name = "R", value_parser = Release::parse)]
    release: Release,
    /// Locale i is named `<P><i:04>`.
    #[arg(long, default_value = "nid", value_name = "P")]
    hostname_prefix: String,
    /// Locale 0's (hence the server's) host name instead of `<P>0000`, for a
    /// connection-info file that must resolve in tests (e.g. 127.0.0.1).
    #[arg(long, value_name = "NAME")]
    server_hostname: Option<String>,
    /// Comma-separated simulated users.
    #[arg(long, default_value = "alice", value_name = "LIST")]
    users: String,
    /// Token checked on the main port (default: $ARKOUDA_SERVER_TOKEN).
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Connection-info file to write (default: $ARKOUDA_SERVER_CONNECTION_INFO).
    #[arg(long, value_name = "PATH")]
    connection_info: Option<PathBuf>,
    /// Percent-memory denominator (the server's --memMax), v2023.03.01 on.
    #[arg(long, value_name = "BYTES")]
    mem_max: Option<u64>,
    /// Locale i reports its own memory instead of locale 0's.
    #[arg(long)]
    distinct_locale_memory: bool,
    /// Add commands whose names stress label encoding.
    #[arg(long)]
    weird_names: bool,
    /// Initial fault mode of the metrics port. Like the real daemon: none, hang (a busy
    /// locale 0), die-after:N (the daemon's loop ends: silence for good, the port stays
    /// open), slow:MS. Robustness tests only, never seen from a real metrics daemon
    /// (it only goes silent): garbage, truncated, error, oversized:BYTES,
    /// unknown-categories (a future release's records).
    #[arg(long, default_value = "none", value_name = "MODE", value_parser = parse_fault)]
    fault: Fault,
    /// File whose trimmed content, when it exists, is the current fault mode.
    #[arg(long, value_name = "FILE")]
    control: Option<PathBuf>,
    /// Append one JSON line per reply sent.
    #[arg(long, value_name = "FILE")]
    reply_log: Option<PathBuf>,
}

fn parse_fault(s: &str) -> Result<Fault, String> {
    s.parse()
}

fn nonempty_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn parse_users(list: &str) -> Vec<String> {
    let mut users: Vec<String> = Vec::new();
    for u in list.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        if !users.iter().any(|x| x == u) {
            users.push(u.to_string());
        }
    }
    users
}

/// The connection-info line of the release (§1.7).
fn connection_info_line(cfg: &SimConfig) -> String {
    let host = cfg.server_hostname();
    let port = cfg.server_port();
    if cfg.release.conn_info_has_url() {
        let mut url = format!("tcp://{host}:{port}");
        if let Some(t) = &cfg.token {
            url.push_str(&format!("?token={t}"));
        }
        format!("{host} {port} {url}\n")
    } else {
        format!("{host} {port}\n")
    }
}

fn main() {
    if let Err(e) = run() {
        eprintln!("arkouda-sim: error: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;

    let token = cli
        .token
        .clone()
        .or_else(|| nonempty_env("ARKOUDA_SERVER_TOKEN"));
    let conn_info = cli
        .connection_info
        .clone()
        .or_else(|| nonempty_env("ARKOUDA_SERVER_CONNECTION_INFO").map(PathBuf::from));

    let metrics_ctx = zmq::Context::new();
    let (metrics_sock, metrics_port) =
        server::bind_rep(&metrics_ctx, &cli.bind, cli.metrics_port).context("metrics port")?;
    let main_ctx = zmq::Context::new();
    let main = match cli.main_port {
        Some(p) => Some(server::bind_rep(&main_ctx, &cli.bind, p).context("main port")?),
        None => None,
    };
    let main_port = main.as_ref().map(|(_, p)| *p);

    let cfg = SimConfig {
        release: cli.release,
        locales: cli.locales as usize,
        hostname_prefix: cli.hostname_prefix.clone(),
        server_hostname: cli.server_hostname.clone(),
        users: parse_users(&cli.users),
        weird_names: cli.weird_names,
        distinct_locale_memory: cli.distinct_locale_memory,
        mem_max: cli.mem_max,
        metrics_port,
        main_port,
        token,
    };
    let shared = Arc::new(Shared {
        reply_log: ReplyLog::open(cli.reply_log.as_ref())?,
        faults: FaultSource {
            initial: cli.fault.clone(),
            control: cli.control.clone(),
        },
        state: Mutex::new(SimState::default()),
        conn_info,
        cfg,
    });

    if let Some(path) = &shared.conn_info {
        std::fs::write(path, connection_info_line(&shared.cfg))
            .with_context(|| format!("writing connection info {}", path.display()))?;
    }

    {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("metrics".to_string())
            .spawn(move || {
                // Keep the context alive as long as the socket.
                let _ctx = metrics_ctx;
                server::run_metrics(metrics_sock, &shared);
            })
            .context("spawning metrics thread")?;
    }
    if let Some((sock, _)) = main {
        let shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("main".to_string())
            .spawn(move || server::run_main(main_ctx, sock, &shared))
            .context("spawning main thread")?;
    }

    eprintln!(
        "arkouda-sim: imitating arkouda {} with {} locale(s), users {:?}, metrics port {}, main port {}",
        shared.cfg.release,
        shared.cfg.locales,
        shared.cfg.users,
        metrics_port,
        main_port.map_or_else(|| "none".to_string(), |p| p.to_string())
    );
    {
        let mut out = std::io::stdout().lock();
        writeln!(
            out,
            "READY metrics={metrics_port} main={} pid={}",
            main_port.unwrap_or(0),
            std::process::id()
        )?;
        out.flush()?;
    }

    if let Some(sig) = signals.forever().next() {
        eprintln!("arkouda-sim: signal {sig}, exiting");
    }
    shared.cleanup();
    std::process::exit(0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(release: Release, token: Option<&str>, main_port: Option<u16>) -> SimConfig {
        SimConfig {
            release,
            locales: 1,
            hostname_prefix: "nid".to_string(),
            server_hostname: None,
            users: vec!["alice".to_string()],
            weird_names: false,
            distinct_locale_memory: false,
            mem_max: None,
            metrics_port: 5556,
            main_port,
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn connection_info_per_release() {
        assert_eq!(
            connection_info_line(&cfg(Release::Head, None, None)),
            "nid0000 5555 tcp://nid0000:5555\n"
        );
        assert_eq!(
            connection_info_line(&cfg(Release::V2022_09_30, Some("abc"), Some(6000))),
            "nid0000 6000 tcp://nid0000:6000?token=abc\n"
        );
        assert_eq!(
            connection_info_line(&cfg(Release::V2022_08_15, Some("abc"), Some(6000))),
            "nid0000 6000\n"
        );
    }

    #[test]
    fn users_list() {
        assert_eq!(parse_users("alice, bob,,alice"), vec!["alice", "bob"]);
        assert!(parse_users("").is_empty());
    }

    #[test]
    fn cli_parses() {
        let c = Cli::try_parse_from([
            "arkouda-sim",
            "--metrics-port",
            "0",
            "--release",
            "v2023.04.07",
            "--fault",
            "slow:10",
            "--locales",
            "4096",
        ])
        .unwrap();
        assert_eq!(c.release, Release::V2023_04_07);
        assert_eq!(c.fault, Fault::Slow(10));
        assert_eq!(c.locales, 4096);
        assert!(Cli::try_parse_from(["arkouda-sim", "--release", "2023.06.16"]).is_err());
        assert!(Cli::try_parse_from(["arkouda-sim", "--locales", "0"]).is_err());
        assert!(Cli::try_parse_from(["arkouda-sim", "--fault", "boom"]).is_err());
    }
}
