//! Test fixtures: a real Pushgateway, the Arkouda simulator and the agent, each a child
//! process on a free loopback port, polled until ready, killed on Drop (panics included),
//! with its log printed when a test fails.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

pub const AGENT: &str = env!("CARGO_BIN_EXE_arkouda-push-agent");
pub const SIM: &str = env!("CARGO_BIN_EXE_arkouda-sim");

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "apa-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&p).expect("create temp dir");
        TempDir(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port")
}

/// Polls `f` every 50 ms until it returns Some, or panics after `limit` with `what` and
/// the last value seen.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Result<T, String>) -> T {
    let start = Instant::now();
    loop {
        match f() {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > limit {
                    panic!("timed out after {limit:?} waiting for {what}; last: {last}");
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A child process that is killed on drop and prints its log if the test is failing.
pub struct Proc {
    pub name: String,
    pub child: Child,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Proc {
    pub fn spawn(name: &str, mut cmd: Command, stdout: Stdio) -> Proc {
        let dir = TempDir::new(name);
        let log = dir.path("log");
        let f = File::create(&log).expect("log file");
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(f);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Proc {
            name: name.to_string(),
            child,
            log,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "kill -{sig} {} failed", self.name);
    }

    /// Waits for the process to exit within `limit`.
    pub fn wait_exit(&mut self, limit: Duration) -> ExitStatus {
        eventually(limit, &format!("{} to exit", self.name), || {
            match self.child.try_wait() {
                Ok(Some(s)) => Ok(s),
                Ok(None) => Err("still running".into()),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- {} log ({}) -----\n{}",
                self.name,
                self.log.display(),
                log_tail(&self.log)
            );
        }
    }
}

/// A real Pushgateway (Debian's prometheus-pushgateway), no persistence.
pub struct Pushgateway {
    pub url: String,
    pub proc: Proc,
    http: reqwest::blocking::Client,
    /// Basic-auth credentials of a Pushgateway started with a web config.
    pub auth: Option<(String, String)>,
}

/// One series as the Pushgateway holds it.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// One group: its grouping labels and its series.
#[derive(Clone, Debug)]
pub struct Group {
    pub labels: BTreeMap<String, String>,
    pub series: Vec<Series>,
}

impl Group {
    /// Value of `name` whose labels include all of `want`.
    pub fn value(&self, name: &str, want: &[(&str, &str)]) -> Option<f64> {
        self.series
            .iter()
            .find(|s| {
                s.name == name
                    && want
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    pub fn all(&self, name: &str) -> Vec<&Series> {
        self.series.iter().filter(|s| s.name == name).collect()
    }
}

/// The groups among `groups` whose `slurm_job_id` is `job_id`.
pub fn of_job(groups: Vec<Group>, job_id: &str) -> Vec<Group> {
    groups
        .into_iter()
        .filter(|g| g.labels.get("slurm_job_id").map(String::as_str) == Some(job_id))
        .collect()
}

/// Waits until `groups()` (a Pushgateway's, however it is asked) holds exactly one group of
/// the job satisfying `ok`, and returns it.
pub fn wait_one_group(
    groups: impl Fn() -> Vec<Group>,
    job_id: &str,
    what: &str,
    ok: impl Fn(&Group) -> bool,
) -> Group {
    eventually(Duration::from_secs(15), what, || {
        match of_job(groups(), job_id).as_slice() {
            [g] if ok(g) => Ok(g.clone()),
            other => Err(format!("{other:?}")),
        }
    })
}

/// Waits until `groups()` holds no group of the job.
pub fn wait_no_group(groups: impl Fn() -> Vec<Group>, job_id: &str, limit: Duration) {
    eventually(limit, &format!("job {job_id}'s groups to be gone"), || {
        let left = of_job(groups(), job_id);
        if left.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} groups left: {:?}",
                left.len(),
                left.iter().map(|g| &g.labels).collect::<Vec<_>>()
            ))
        }
    })
}

/// The groups of a Pushgateway's `GET /api/v1/metrics` answer, with their series.
pub fn parse_groups(v: &serde_json::Value) -> Vec<Group> {
    let mut out = Vec::new();
    for g in v["data"].as_array().expect("data array") {
        let labels = to_map(&g["labels"]);
        let mut series = Vec::new();
        for (name, fam) in g.as_object().expect("group object") {
            let Some(metrics) = fam.get("metrics").and_then(|m| m.as_array()) else {
                continue;
            };
            for m in metrics {
                let value = m["value"]
                    .as_str()
                    .and_then(|s| s.parse::<f64>().ok())
                    .unwrap_or(f64::NAN);
                series.push(Series {
                    name: name.clone(),
                    labels: to_map(&m["labels"]),
                    value,
                });
            }
        }
        out.push(Group { labels, series });
    }
    out
}

pub fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Pushgateway {
    pub fn start() -> Pushgateway {
        Pushgateway::start_on(free_port())
    }

    /// On a given port (to restart one in place).
    pub fn start_on(port: u16) -> Pushgateway {
        Pushgateway::start_with(port, &[], reqwest::blocking::Client::new(), "http")
    }

    /// With extra flags (e.g. `--web.config.file` for TLS and basic auth), read back with
    /// `http` over `scheme`.
    pub fn start_with(
        port: u16,
        extra: &[&str],
        http: reqwest::blocking::Client,
        scheme: &str,
    ) -> Pushgateway {
        Pushgateway::start_authed(port, extra, http, scheme, None)
    }

    /// With basic-auth credentials for reading it back.
    pub fn start_authed(
        port: u16,
        extra: &[&str],
        http: reqwest::blocking::Client,
        scheme: &str,
        auth: Option<(String, String)>,
    ) -> Pushgateway {
        let bin = "/usr/bin/prometheus-pushgateway";
        assert!(
            Path::new(bin).exists(),
            "{bin} is missing: install the Debian package prometheus-pushgateway (scripts/test.sh does)"
        );
        let mut cmd = Command::new(bin);
        cmd.arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--persistence.file=")
            .arg("--web.enable-admin-api")
            .args(extra);
        let proc = Proc::spawn("pushgateway", cmd, Stdio::null());
        let pg = Pushgateway {
            url: format!("{scheme}://127.0.0.1:{port}"),
            proc,
            http,
            auth,
        };
        eventually(
            Duration::from_secs(10),
            "the Pushgateway to be ready",
            || {
                pg.request(reqwest::Method::GET, "/-/ready")
                    .send()
                    .map_err(|e| e.to_string())
                    .and_then(|r| {
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(r.status().to_string())
                        }
                    })
            },
        );
        pg
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::blocking::RequestBuilder {
        let r = self
            .http
            .request(method, format!("{}{path}", self.url))
            .timeout(Duration::from_secs(5));
        match &self.auth {
            Some((u, p)) => r.basic_auth(u, Some(p)),
            None => r,
        }
    }

    /// Every group with its series (from `GET /api/v1/metrics`).
    pub fn groups(&self) -> Vec<Group> {
        let v: serde_json::Value = self
            .request(reqwest::Method::GET, "/api/v1/metrics")
            .timeout(Duration::from_secs(5))
            .send()
            .and_then(|r| r.json())
            .expect("GET /api/v1/metrics");
        parse_groups(&v)
    }

    /// The groups whose `slurm_job_id` is `job_id`.
    pub fn job_groups(&self, job_id: &str) -> Vec<Group> {
        of_job(self.groups(), job_id)
    }

    /// Waits until the job has exactly one group satisfying `ok`, and returns it.
    pub fn wait_group(&self, job_id: &str, what: &str, ok: impl Fn(&Group) -> bool) -> Group {
        wait_one_group(|| self.groups(), job_id, what, ok)
    }

    /// Waits until the job has no group left.
    pub fn wait_gone(&self, job_id: &str, limit: Duration) {
        wait_no_group(|| self.groups(), job_id, limit)
    }

    pub fn port(&self) -> u16 {
        self.url
            .rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .expect("port in url")
    }

    /// DELETEs a raw grouping path.
    pub fn delete_raw(&self, path: &str) {
        let r = self
            .request(reqwest::Method::DELETE, path)
            .send()
            .expect("DELETE");
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }

    /// PUTs a text body to a raw grouping path (for groups of "other exporters").
    pub fn put_raw(&self, path: &str, body: &str) {
        let r = self
            .request(reqwest::Method::PUT, path)
            .body(body.to_string())
            .send()
            .expect("PUT");
        assert!(r.status().is_success(), "PUT {path}: {}", r.status());
    }
}

fn to_map(v: &serde_json::Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

/// The Arkouda simulator.
/// Every `--release` mode of the simulator, oldest first, as `arkouda-sim --help` lists
/// them (checked by `sim_release_modes_are_listed_in_help`).
pub const SIM_RELEASES: &[&str] = &[
    "2022.08.15",
    "2022.09.30",
    "2022.11.10",
    "2022.12.09",
    "2023.02.08",
    "2023.03.01",
    "2023.04.07",
    "2024.04.19",
    "2024.10.02",
    "2025.07.03",
    "2025.09.30",
    "head",
];

pub struct Sim {
    pub proc: Proc,
    pub metrics_port: u16,
    pub main_port: u16,
}

impl Sim {
    /// Starts `arkouda-sim` with an OS-chosen metrics port and `args`.
    pub fn start(args: &[&str]) -> Sim {
        Sim::start_on(0, args)
    }

    pub fn start_on(port: u16, args: &[&str]) -> Sim {
        let mut cmd = Command::new(SIM);
        cmd.arg("--metrics-port")
            .arg(port.to_string())
            .args(args)
            .env_clear();
        let mut proc = Proc::spawn("arkouda-sim", cmd, Stdio::piped());
        let stdout = proc.child.stdout.take().expect("sim stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("sim READY line");
        let field = |name: &str| -> u16 {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| {
                    panic!(
                        "no {name}= in sim's line {line:?}; log: {}",
                        proc.log_text()
                    )
                })
        };
        let metrics_port = field("metrics");
        let main_port = field("main");
        Sim {
            proc,
            metrics_port,
            main_port,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.metrics_port)
    }
}

/// A lock directory for the agents of this test process.
pub fn lock_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("apa-locks-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("lock dir");
        d
    })
}

/// The agent binary with a clean environment (no SLURM_* or ARKOUDA_* from the caller,
/// no /etc config file).
pub fn agent_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(AGENT);
    cmd.args(args)
        .env_clear()
        .env("ARKOUDA_PUSH_AGENT_CONFIG", "/dev/null")
        // Locks of this test process only: test files run at once and reuse job ids.
        .env("ARKOUDA_PUSH_AGENT_LOCK_DIR", lock_dir())
        .env("ARKOUDA_PUSH_AGENT_LOG_LEVEL", "debug");
    cmd
}

/// Starts `arkouda-push-agent` with `args`.
pub fn spawn_agent(args: &[&str]) -> Proc {
    spawn_agent_cmd(agent_command(args))
}

pub fn spawn_agent_cmd(cmd: Command) -> Proc {
    Proc::spawn("arkouda-push-agent", cmd, Stdio::null())
}

/// Runs the agent to completion; returns (exit code, stdout, stderr).
pub fn run_agent(args: &[&str]) -> (i32, String, String) {
    run_agent_cmd(agent_command(args))
}

pub fn run_agent_cmd(mut cmd: Command) -> (i32, String, String) {
    let out = cmd.stdin(Stdio::null()).output().expect("run agent");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// What the fault proxy does with a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProxyMode {
    /// Relay to the upstream.
    Pass,
    /// Close at once (as a server that is down).
    Refuse,
    /// Accept and never answer (as a hung server).
    Stall,
    /// Answer every request with this HTTP status.
    Status(u16),
}

/// A TCP proxy in front of a real server that injects network faults. It only sits on
/// the path: every answer in Pass mode is the real server's.
pub struct FaultProxy {
    pub port: u16,
    state: std::sync::Arc<std::sync::Mutex<ProxyState>>,
}

struct ProxyState {
    mode: ProxyMode,
    conns: Vec<std::net::TcpStream>,
    stop: bool,
}

impl FaultProxy {
    pub fn start(upstream_port: u16, mode: ProxyMode) -> FaultProxy {
        use std::io::{Read, Write};
        use std::net::{Shutdown, TcpStream};
        let listener = TcpListener::bind("127.0.0.1:0").expect("proxy bind");
        let port = listener.local_addr().expect("proxy addr").port();
        let state = std::sync::Arc::new(std::sync::Mutex::new(ProxyState {
            mode,
            conns: Vec::new(),
            stop: false,
        }));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut client) = conn else { continue };
                let mode = {
                    let mut s = st.lock().unwrap();
                    if s.stop {
                        return;
                    }
                    if let Ok(c) = client.try_clone() {
                        s.conns.push(c);
                    }
                    s.mode
                };
                match mode {
                    ProxyMode::Refuse => {
                        let _ = client.shutdown(Shutdown::Both);
                    }
                    ProxyMode::Stall => {} // kept open in `conns` until the mode changes
                    ProxyMode::Status(code) => {
                        std::thread::spawn(move || {
                            let mut buf = [0u8; 65536];
                            // Answer the first request on the connection once its head arrives.
                            if matches!(client.read(&mut buf), Ok(n) if n > 0) {
                                let resp = format!("HTTP/1.1 {code} Injected\r\nContent-Length: 8\r\nConnection: close\r\n\r\ninjected");
                                let _ = client.write_all(resp.as_bytes());
                            }
                            let _ = client.shutdown(Shutdown::Both);
                        });
                    }
                    ProxyMode::Pass => {
                        let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream_port))
                        else {
                            let _ = client.shutdown(Shutdown::Both);
                            continue;
                        };
                        let (Ok(mut c2), Ok(mut s2)) = (client.try_clone(), server.try_clone())
                        else {
                            continue;
                        };
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut client, &mut server);
                            let _ = server.shutdown(Shutdown::Both);
                        });
                        std::thread::spawn(move || {
                            let _ = std::io::copy(&mut s2, &mut c2);
                            let _ = c2.shutdown(Shutdown::Both);
                        });
                    }
                }
            }
        });
        FaultProxy { port, state }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// New connections get `mode`; with `cut`, open connections are closed too (so a
    /// keep-alive connection cannot outlive a fault), else they stay as they are.
    pub fn set(&self, mode: ProxyMode, cut: bool) {
        let mut s = self.state.lock().unwrap();
        s.mode = mode;
        if cut {
            for c in s.conns.drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap();
        s.stop = true;
        for c in s.conns.drain(..) {
            let _ = c.shutdown(std::net::Shutdown::Both);
        }
        // Wake the accept loop so it sees `stop`.
        let _ = std::net::TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Lines of `log` that contain `needle`.
pub fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// Fails loudly when a component the test runs is not installed.
pub fn need(bin: &str, package: &str) {
    assert!(
        Path::new(bin).exists(),
        "{bin} is missing: install the Debian package {package} (scripts/test.sh does)"
    );
}

/// Unix time in seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}
