//! The Debian package under a live systemd: a real systemd 252 as PID 1 in namespaces of its
//! own (tests/it/systemd_live_init.sh builds its root, an overlay in memory over the
//! machine's), driven through `nsenter`, with a one-node Slurm inside whose daemons
//! (munged, slurmctld, slurmd) are units, as on a site. In it: `dpkg -i` runs the
//! maintainer scripts; a job opted in by its comment makes slurmd run the installed Prolog,
//! which starts `arkouda-push-agent@<job>.service` (the unit's user, NoNewPrivileges,
//! seccomp, a read-only root and `/run`); `dpkg -i` of a newer version while that agent runs
//! keeps the agent pushing and the site's config; the job's end makes slurmd run the newer
//! Epilog, which stops the unit, and the group goes; the long-lived unit starts and stops;
//! the sweep timer runs the sweep service as the package's user under its hardening, which
//! asks that Slurm through munge and deletes the groups of jobs Slurm does not run;
//! `dpkg --purge` with an agent running leaves no group, user, config, unit or process.
//!
//! Nothing of this touches the machine: dpkg, useradd, systemd, journald and Slurm write
//! into the overlay or the test's directory, the Pushgateway, the simulator and Slurm run
//! as units inside the namespace's own network. A file in the machine's /tmp proves that
//! systemd-tmpfiles never reached it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arkouda_push_agent::slurm::hooks::{CTLD_LIMIT, EPILOG_LIMIT, PROLOG_LIMIT};

use crate::common::*;
use crate::deb::{build_deb, machine_lock, run};
use crate::slurm_cluster::{hook_end, mount_ns, require, HookEnd, PLUGINS};

const INIT: &str = include_str!("systemd_live_init.sh");
/// The only unit the booted systemd is asked to reach (it pulls in sysinit.target alone).
const TARGET: &str = "arkouda-push-agent-test.target";
const PKG: &str = "arkouda-push-agent";
const USER: &str = "arkouda-push-agent";
const CONFIG: &str = "/etc/arkouda-push-agent/config.toml";
/// Ports inside the namespace's own network, where nothing else runs.
const PUSHGATEWAY: &str = "http://127.0.0.1:9091";
const METRICS_PORT: u16 = 5556;
const PATH: &str = "PATH=/usr/sbin:/usr/bin:/sbin:/bin";
/// The Slurm cluster inside: its name and configuration.
const CLUSTER: &str = "live";
const SLURM_CONF: &str = "/io/slurm/slurm.conf";

/// A systemd booted as PID 1 of its own mount, UTS, IPC, network, PID and cgroup namespaces,
/// in a cgroup of its own, on a root in memory. Powered off (and its cgroup removed) on drop.
struct LiveSystemd {
    /// The `unshare` process: it waits for the namespace's PID 1.
    unshare: Child,
    /// systemd's pid as this machine sees it.
    pid: i32,
    cgroup: PathBuf,
    io: TempDir,
}

/// The root of the cgroup v2 hierarchy (hybrid machines mount it at `unified`).
fn cgroup2_root() -> PathBuf {
    for root in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if Path::new(root).join("cgroup.controllers").exists() {
            return PathBuf::from(root);
        }
    }
    panic!("no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified")
}

impl LiveSystemd {
    fn boot() -> LiveSystemd {
        static N: AtomicUsize = AtomicUsize::new(0);
        let io = TempDir::new("live-systemd");
        let init = io.path("init.sh");
        std::fs::write(&init, INIT).unwrap();
        std::fs::set_permissions(&init, std::fs::Permissions::from_mode(0o755)).unwrap();
        let cgroup = cgroup2_root().join(format!(
            "apa-live-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir(&cgroup).unwrap_or_else(|e| panic!("create {}: {e}", cgroup.display()));
        let log = std::fs::File::create(io.path("init.log")).unwrap();
        // The shell moves itself into the cgroup first, so that systemd's cgroup namespace
        // is rooted there; then everything is unshared at once.
        let unshare = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {cg}/cgroup.procs && exec /usr/bin/unshare --mount --propagation private \
                 --uts --ipc --net --pid --fork --cgroup -- /bin/bash {init} {io} {TARGET}",
                cg = cgroup.display(),
                init = init.display(),
                io = io.0.display(),
            ))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start unshare");
        let mut sys = LiveSystemd {
            unshare,
            pid: 0,
            cgroup,
            io,
        };
        let t = Instant::now();
        sys.pid = eventually(Duration::from_secs(20), "systemd to start", || {
            if let Ok(Some(status)) = sys.unshare.try_wait() {
                panic!("the namespace ended ({status}): {}", sys.init_log());
            }
            let pid: i32 = std::fs::read_to_string(sys.io.path("host-pid"))
                .ok()
                .and_then(|p| p.trim().parse().ok())
                .ok_or("no host-pid yet")?;
            let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| e.to_string())?;
            if exe.ends_with("systemd") {
                Ok(pid)
            } else {
                Err(format!("pid {pid} runs {}", exe.display()))
            }
        });
        eventually(Duration::from_secs(30), "systemd to be running", || {
            let (_, out, _) = sys.run(&[], &["systemctl", "is-system-running"]);
            match out.trim() {
                "running" => Ok(()),
                "degraded" => {
                    let (_, failed, _) = sys.run(&[], &["systemctl", "--failed", "--no-pager"]);
                    panic!("systemd is degraded:\n{failed}")
                }
                other => Err(other.to_string()),
            }
        });
        eprintln!("systemd running in {:?} (pid {})", t.elapsed(), sys.pid);
        sys
    }

    fn init_log(&self) -> String {
        std::fs::read_to_string(self.io.path("init.log")).unwrap_or_default()
    }

    /// Panics unless `pid` is still the namespace's systemd: a reused pid would send the
    /// command to the machine.
    fn guard(&self) {
        if let Err(e) = self.still_ours() {
            panic!("{e}");
        }
    }

    /// Whether `pid` is still the namespace's systemd (a question, not an assertion: the
    /// drop asks it while a failed test unwinds, where a panic would abort).
    fn still_ours(&self) -> Result<(), String> {
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid));
        if !exe.as_ref().is_ok_and(|e| e.ends_with("systemd")) {
            return Err(format!(
                "pid {} is no longer the test's systemd ({exe:?})",
                self.pid
            ));
        }
        if mount_ns(self.pid) == mount_ns(std::process::id() as i32) {
            return Err(format!(
                "pid {} shares this machine's mount namespace",
                self.pid
            ));
        }
        Ok(())
    }

    /// Runs a command inside, with a clean environment plus `env`: (success, stdout, stderr).
    fn run(&self, env: &[(&str, &str)], args: &[&str]) -> (bool, String, String) {
        self.guard();
        let pid = self.pid.to_string();
        run(Command::new("/usr/bin/nsenter")
            .args([
                "-t", &pid, "-m", "-u", "-i", "-n", "-p", "-C", "-r", "-w", "--",
            ])
            .args(["/usr/bin/env", "-i", PATH, "DEBIAN_FRONTEND=noninteractive"])
            .args(env.iter().map(|(k, v)| format!("{k}={v}")))
            .args(args))
    }

    /// Runs a command inside that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(&[], args);
        assert!(ok, "{args:?} failed:\n{out}{err}");
        out
    }

    /// A path inside, seen from this machine.
    fn path(&self, p: &str) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root{p}", self.pid))
    }

    fn show(&self, unit: &str, property: &str) -> String {
        self.ok(&[
            "systemctl",
            "show",
            "--timestamp=unix",
            "-p",
            property,
            "--value",
            unit,
        ])
        .trim()
        .to_string()
    }

    /// The Pushgateway's groups (asked from inside: it listens in the namespace's network).
    fn groups(&self) -> Vec<Group> {
        let url = format!("{PUSHGATEWAY}/api/v1/metrics");
        let body = self.ok(&["curl", "-sSf", "--max-time", "5", &url]);
        parse_groups(&serde_json::from_str(&body).expect("Pushgateway JSON"))
    }

    fn job_groups(&self, job: &str) -> Vec<Group> {
        of_job(self.groups(), job)
    }

    fn wait_group(&self, job: &str, what: &str, ok: impl Fn(&Group) -> bool) -> Group {
        wait_one_group(|| self.groups(), job, what, ok)
    }

    /// Waits until the job's group is gone; how long that took.
    fn wait_gone(&self, job: &str, limit: Duration) -> Duration {
        let t = Instant::now();
        wait_no_group(|| self.groups(), job, limit);
        t.elapsed()
    }

    /// Runs a Slurm client inside, against the test's cluster.
    fn slurm(&self, args: &[&str]) -> String {
        let (ok, out, err) = self.run(&[("SLURM_CONF", SLURM_CONF)], args);
        assert!(ok, "{args:?}: {out}{err}");
        out
    }

    /// A job that runs until `/io/stop-<tag>` exists, opted in by its comment; its id.
    fn submit(&self, tag: &str) -> String {
        let wait = format!("while [ ! -e /io/stop-{tag} ]; do sleep 0.2; done");
        let out = self.slurm(&[
            "sbatch",
            "--parsable",
            "--comment=arkouda-metrics",
            "-J",
            tag,
            "-o",
            "/io/slurm/job-%j.out",
            "--wrap",
            &wait,
        ]);
        out.trim().split(';').next().unwrap_or_default().to_string()
    }

    fn job_state(&self, id: &str) -> String {
        let out = self.slurm(&["scontrol", "-o", "show", "job", id]);
        out.split_whitespace()
            .find_map(|f| f.strip_prefix("JobState="))
            .unwrap_or_default()
            .to_string()
    }

    fn wait_state(&self, id: &str, want: &str) {
        eventually(
            Duration::from_secs(60),
            &format!("job {id} {want}"),
            || match self.job_state(id) {
                s if s == want => Ok(()),
                s => Err(s),
            },
        );
    }

    /// How long a hook of job `id` took, from its "end" line in the journal, found the way
    /// docs/troubleshooting.md says (journald files the tag's job id as `SYSLOG_PID`).
    fn hook_took(&self, id: &str, hook: &str) -> Duration {
        let pid = format!("SYSLOG_PID={id}");
        eventually(
            Duration::from_secs(15),
            &format!("job {id}'s {hook} to end"),
            || {
                let lines = self.ok(&[
                    "journalctl",
                    "--no-pager",
                    "-o",
                    "cat",
                    "-t",
                    "arkouda-push-agent",
                    &pid,
                ]);
                match lines.lines().find_map(|l| hook_end(l, hook)) {
                    Some(HookEnd { rc: Some(0), ms }) => Ok(Duration::from_millis(ms)),
                    _ => Err(format!(
                        "no `{hook}: end rc=0` line of job {id} yet:\n{lines}"
                    )),
                }
            },
        )
    }

    /// Processes inside running as `uid`.
    fn processes_of(&self, uid: u32) -> Vec<String> {
        self.ok(&["ps", "-e", "-o", "uid=,pid=,args="])
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(uid.to_string().as_str()))
            .map(str::to_string)
            .collect()
    }
}

impl Drop for LiveSystemd {
    fn drop(&mut self) {
        if self.pid > 0 && self.still_ours().is_ok() {
            if std::thread::panicking() {
                let (_, journal, _) = self.run(&[], &["journalctl", "--no-pager", "-n", "150"]);
                eprintln!("----- journal of the test's systemd -----\n{journal}");
                eprintln!("----- init -----\n{}", self.init_log());
            }
            // SIGRTMIN+4 asks systemd to power off.
            unsafe { libc::kill(self.pid, libc::SIGRTMIN() + 4) };
        }
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if !matches!(self.unshare.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if matches!(self.unshare.try_wait(), Ok(None)) {
            // The end of the namespace's PID 1 ends every process in it.
            if self.pid > 0 && self.still_ours().is_ok() {
                unsafe { libc::kill(self.pid, libc::SIGKILL) };
            }
            let _ = self.unshare.kill();
            let _ = self.unshare.wait();
        }
        remove_cgroup(&self.cgroup);
    }
}

/// Removes a cgroup and the ones systemd made under it, deepest first, once empty.
fn remove_cgroup(dir: &Path) {
    fn dirs(dir: &Path, out: &mut Vec<PathBuf>) {
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    dirs(&e.path(), out);
                }
            }
        }
        out.push(dir.to_path_buf());
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut all = Vec::new();
        dirs(dir, &mut all);
        for d in &all {
            let _ = std::fs::remove_dir(d);
        }
        if !dir.exists() || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A one-node Slurm inside, each daemon a unit of its own as on a site (munged, slurmctld,
/// slurmd), its hooks the installed ones: slurmd runs the Prolog and Epilog, which find
/// systemd and start and stop the job's unit.
fn start_slurm(sys: &LiveSystemd) {
    let host = sys.ok(&["hostname", "-s"]).trim().to_string();
    // The job's first node is where the agent finds the Arkouda server: this host, on the
    // namespace's loopback (the overlay's /etc/hosts, not the machine's).
    let hosts = sys.path("/etc/hosts");
    let mut text = std::fs::read_to_string(&hosts).unwrap_or_default();
    text.push_str(&format!("127.0.0.1 {host}\n"));
    std::fs::write(&hosts, text).unwrap();
    // Slurm resolves names with AI_ADDRCONFIG, which glibc answers only when an address
    // other than loopback is configured: a veth pair gives the namespace one.
    sys.ok(&[
        "ip", "link", "add", "apa0", "type", "veth", "peer", "name", "apa1",
    ]);
    sys.ok(&["ip", "addr", "add", "10.254.254.1/30", "dev", "apa0"]);
    sys.ok(&["ip", "link", "set", "apa0", "up"]);
    sys.ok(&["ip", "link", "set", "apa1", "up"]);
    for d in ["munge", "state", "spool", "log", "run"] {
        std::fs::create_dir_all(sys.io.path(&format!("slurm/{d}"))).unwrap();
    }
    let lib = "/usr/libexec/arkouda-push-agent";
    let conf = format!(
        "ClusterName={CLUSTER}
SlurmctldHost={host}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=/io/slurm/munge/munge.sock
StateSaveLocation=/io/slurm/state
SlurmdSpoolDir=/io/slurm/spool
SlurmctldPidFile=/io/slurm/run/slurmctld.pid
SlurmdPidFile=/io/slurm/run/slurmd.pid
SlurmctldLogFile=/io/slurm/log/slurmctld.log
SlurmdLogFile=/io/slurm/log/slurmd.log
AccountingStorageType=accounting_storage/none
{PLUGINS}Prolog={lib}/prolog
Epilog={lib}/epilog
EpilogSlurmctld={lib}/epilog-slurmctld
PrologFlags=Alloc
InactiveLimit=0
MinJobAge=600
KillWait=5
SlurmdParameters=config_overrides
NodeName={host} NodeAddr=127.0.0.1 CPUs=4 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"
    );
    std::fs::write(sys.io.path("slurm/slurm.conf"), conf).unwrap();
    // The cgroup v2 plugin Slurm would pick under this systemd refuses a kernel that also
    // mounts v1 hierarchies (this machine's); the cluster uses no cgroup plugin anyway.
    std::fs::write(sys.io.path("slurm/cgroup.conf"), "CgroupPlugin=cgroup/v1\n").unwrap();
    sys.ok(&["mungekey", "-c", "-k", "/io/slurm/munge/munge.key"]);
    sys.ok(&[
        "systemd-run",
        "--unit=test-munged",
        "/usr/sbin/munged",
        "-F",
        "--key-file=/io/slurm/munge/munge.key",
        "--socket=/io/slurm/munge/munge.sock",
        "--pid-file=/io/slurm/munge/munged.pid",
        "--log-file=/io/slurm/munge/munged.log",
        "--seed-file=/io/slurm/munge/munged.seed",
    ]);
    eventually(Duration::from_secs(10), "munged's socket", || {
        if sys.io.path("slurm/munge/munge.sock").exists() {
            Ok(())
        } else {
            Err(sys.ok(&["systemctl", "status", "--no-pager", "test-munged"]))
        }
    });
    sys.ok(&[
        "systemd-run",
        "--unit=test-slurmctld",
        "/usr/sbin/slurmctld",
        "-D",
        "-i",
        "-f",
        SLURM_CONF,
    ]);
    sys.ok(&[
        "systemd-run",
        "--unit=test-slurmd",
        "/usr/sbin/slurmd",
        "-D",
        "-f",
        SLURM_CONF,
    ]);
    eventually(Duration::from_secs(30), "the node to be idle", || {
        let (_, out, err) = sys.run(
            &[("SLURM_CONF", SLURM_CONF)],
            &["sinfo", "-h", "-N", "-o", "%T"],
        );
        if out.trim() == "idle" {
            Ok(())
        } else {
            let log = |f: &str| {
                let text = std::fs::read_to_string(sys.io.path(f)).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                lines[lines.len().saturating_sub(15)..].join("\n")
            };
            Err(format!(
                "{out}{err}\nslurmd: {}\nslurmctld: {}",
                log("slurm/log/slurmd.log"),
                log("slurm/log/slurmctld.log")
            ))
        }
    });
}

/// The same package as a newer version (`VERSION+upgrade1`), as an upgrade ships it.
fn newer_version(deb: &Path, dir: &Path) -> (PathBuf, String) {
    let tree = dir.join("newer");
    let (ok, out, err) = run(Command::new("/usr/bin/dpkg-deb")
        .arg("-R")
        .arg(deb)
        .arg(&tree));
    assert!(ok, "dpkg-deb -R: {out}{err}");
    let control = tree.join("DEBIAN/control");
    let text = std::fs::read_to_string(&control).unwrap();
    let version = text
        .lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .expect("a Version field")
        .to_string();
    let newer = format!("{version}+upgrade1");
    std::fs::write(
        &control,
        text.replace(
            &format!("Version: {version}\n"),
            &format!("Version: {newer}\n"),
        ),
    )
    .unwrap();
    let out_deb = dir.join("newer.deb");
    let (ok, out, err) = run(Command::new("/usr/bin/dpkg-deb")
        .args(["-Zgzip", "-z1", "--root-owner-group", "-b"])
        .arg(&tree)
        .arg(&out_deb));
    assert!(ok, "dpkg-deb -b: {out}{err}");
    (out_deb, newer)
}

#[test]
fn live_systemd_package_lifecycle() {
    for (bin, pkg) in [
        ("/usr/bin/unshare", "util-linux"),
        ("/usr/bin/nsenter", "util-linux"),
        ("/usr/bin/setpriv", "util-linux"),
        ("/lib/systemd/systemd", "systemd"),
        ("/usr/bin/dpkg-deb", "dpkg"),
        ("/usr/bin/curl", "curl"),
        ("/usr/bin/ps", "procps"),
        ("/usr/bin/prometheus-pushgateway", "prometheus-pushgateway"),
        ("/usr/sbin/ip", "iproute2"),
        ("/usr/sbin/munged", "munge"),
        ("/usr/sbin/slurmctld", "slurm-wlm"),
        ("/usr/sbin/slurmd", "slurm-wlm"),
        ("/usr/bin/sbatch", "slurm-wlm"),
    ] {
        require(bin, pkg);
    }
    // The namespace's root is an overlay over the machine's: no install on the machine
    // while it runs (tests/it/deb.rs installs there).
    let _machine = machine_lock();
    let build = TempDir::new("live-deb");
    let deb = build_deb(&build.0);
    let (newer_deb, newer) = newer_version(&deb, &build.0);

    // A systemd booted on the machine's /tmp would wipe this.
    let canary = TempDir::new("live-canary");
    std::fs::write(canary.path("canary"), "x").unwrap();

    let sys = LiveSystemd::boot();
    for (from, to) in [
        (deb.as_path(), "v1.deb"),
        (newer_deb.as_path(), "v2.deb"),
        (Path::new(SIM), "arkouda-sim"),
    ] {
        std::fs::copy(from, sys.io.path(to)).unwrap();
    }
    assert!(
        canary.path("canary").exists(),
        "the machine's /tmp was touched"
    );
    if sys.run(&[], &["dpkg-query", "-W", PKG]).0 {
        sys.ok(&["dpkg", "--purge", PKG]);
    }

    // Install under systemd: the user, the units known to systemd, nothing enabled or started.
    let t = Instant::now();
    sys.ok(&["dpkg", "-i", "/io/v1.deb"]);
    eprintln!("dpkg -i under systemd: {:?}", t.elapsed());
    let uid: u32 = sys.ok(&["id", "-u", USER]).trim().parse().unwrap();
    for unit in [
        "arkouda-push-agent.service",
        "arkouda-push-agent-sweep.timer",
    ] {
        assert_eq!(sys.show(unit, "LoadState"), "loaded", "{unit}");
        assert_eq!(sys.show(unit, "UnitFileState"), "disabled", "{unit}");
        assert_eq!(sys.show(unit, "ActiveState"), "inactive", "{unit}");
    }
    assert!(sys.processes_of(uid).is_empty());

    // The site's edits to the installed config.
    let config_path = sys.path(CONFIG);
    let mut config = std::fs::read_to_string(&config_path).unwrap();
    for (from, to) in [
        (
            "# pushgateway = \"http://pushgateway.example.org:9091\"".to_string(),
            format!("pushgateway = \"{PUSHGATEWAY}\""),
        ),
        ("interval = \"5s\"".into(), "interval = \"300ms\"".into()),
        (
            "metrics_port = 5556".into(),
            format!("metrics_port = {METRICS_PORT}"),
        ),
        ("select = \"none\"".into(), "select = \"comment\"".into()),
    ] {
        assert_eq!(config.matches(&format!("\n{from}\n")).count(), 1, "{from}");
        config = config.replace(&format!("\n{from}\n"), &format!("\n{to}\n"));
    }
    std::fs::write(&config_path, &config).unwrap();

    // The Pushgateway and the job's Arkouda server, as units of their own.
    sys.ok(&[
        "systemd-run",
        "--unit=test-pushgateway",
        "/usr/bin/prometheus-pushgateway",
        "--web.listen-address=127.0.0.1:9091",
        // Debian's build persists to /var/lib/prometheus/pushgateway.data by default: the
        // overlay shows the machine's file, and its groups would be loaded here.
        "--persistence.file=",
    ]);
    let port = METRICS_PORT.to_string();
    sys.ok(&[
        "systemd-run",
        "--unit=test-arkouda",
        "/io/arkouda-sim",
        "--metrics-port",
        &port,
        "--locales",
        "2",
    ]);
    eventually(Duration::from_secs(15), "the Pushgateway", || {
        let (ok, out, err) = sys.run(
            &[],
            &[
                "curl",
                "-sf",
                "--max-time",
                "1",
                &format!("{PUSHGATEWAY}/-/ready"),
            ],
        );
        if ok {
            Ok(())
        } else {
            Err(format!("{out}{err}"))
        }
    });

    // Slurm inside, its daemons units; a job opted in by its comment: slurmd runs the
    // installed Prolog, which starts the job's unit; the agent runs as the unit says.
    start_slurm(&sys);
    let id = sys.submit("first");
    let unit = format!("arkouda-push-agent@{id}.service");
    let g = sys.wait_group(&id, "the job's group from its unit", |g| {
        g.value("arkouda_up", &[]) == Some(1.0) && g.value("arkouda_locales", &[]) == Some(2.0)
    });
    assert_eq!(
        g.labels,
        labels(&[
            ("job", "arkouda"),
            ("slurm_job_id", &id),
            ("cluster", CLUSTER)
        ])
    );
    assert_eq!(sys.show(&unit, "ActiveState"), "active");
    let prolog = sys.hook_took(&id, "prolog");
    assert!(prolog < PROLOG_LIMIT, "Prolog took {prolog:?}");
    let main_pid = sys.show(&unit, "MainPID");
    let status = sys.ok(&["cat", &format!("/proc/{main_pid}/status")]);
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(field("Uid"), uid.to_string(), "the unit's User=");
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(field("Seccomp"), "2", "SystemCallFilter= in force");
    assert_eq!(field("CapEff"), "0000000000000000");
    let mountinfo = sys.ok(&["cat", &format!("/proc/{main_pid}/mountinfo")]);
    let mount_opts = |point: &str| -> String {
        mountinfo
            .lines()
            .rev()
            .find_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                (f.get(4) == Some(&point)).then(|| f.get(5).unwrap_or(&"").to_string())
            })
            .unwrap_or_else(|| panic!("{point} is not a mount point of the agent:\n{mountinfo}"))
    };
    let ro = |opts: &str| opts.split(',').any(|o| o == "ro");
    assert!(ro(&mount_opts("/")), "ProtectSystem=strict: / read-only");
    assert!(ro(&mount_opts("/run")), "ReadOnlyPaths=/run");
    assert!(
        !ro(&mount_opts("/run/arkouda-push-agent/locks")),
        "the locks stay writable"
    );
    assert!(
        !ro(&mount_opts(&format!("/run/arkouda-push-agent/{id}.keys"))),
        "its keys file stays writable"
    );
    eprintln!("Prolog run by slurmd (systemctl start): {prolog:?}");

    // A newer version installed while the agent runs: the agent keeps pushing, the site's
    // config stays.
    let t = Instant::now();
    let out = sys.ok(&["dpkg", "-i", "/io/v2.deb"]);
    eprintln!("dpkg -i of {newer} over a running agent: {:?}", t.elapsed());
    assert!(
        !out.contains("Configuration file"),
        "dpkg asked about the config:\n{out}"
    );
    let after = now();
    assert_eq!(
        sys.ok(&["dpkg-query", "-W", "-f=${Version}", PKG]).trim(),
        newer
    );
    assert_eq!(
        std::fs::read_to_string(&config_path).unwrap(),
        config,
        "the conffile is kept"
    );
    assert_eq!(sys.show(&unit, "ActiveState"), "active");
    let new_pid = sys.show(&unit, "MainPID");
    eprintln!("agent pid {main_pid} before the upgrade, {new_pid} after");
    sys.wait_group(&id, "pushes after the upgrade", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
            && g.value("arkouda_agent_last_success_timestamp_seconds", &[])
                .is_some_and(|t| t > after)
    });

    // The job ends: slurmd runs the (newer) Epilog, which stops the unit; the agent
    // deletes the group on its way out.
    let t = Instant::now();
    std::fs::write(sys.io.path("stop-first"), "").unwrap();
    sys.wait_state(&id, "COMPLETED");
    let gone = sys.wait_gone(&id, Duration::from_secs(5)) + t.elapsed();
    let epilog = sys.hook_took(&id, "epilog");
    assert!(epilog < EPILOG_LIMIT, "Epilog took {epilog:?}");
    let ctld = sys.hook_took(&id, "epilog-slurmctld");
    assert!(ctld < CTLD_LIMIT, "EpilogSlurmctld took {ctld:?}");
    assert_eq!(sys.show(&unit, "ActiveState"), "inactive");
    assert!(
        sys.processes_of(uid).is_empty(),
        "{:?}",
        sys.processes_of(uid)
    );
    let state: Vec<String> = sys
        .ok(&["find", "/run/arkouda-push-agent", "-mindepth", "1"])
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        state,
        ["/run/arkouda-push-agent/locks"],
        "the job's files are gone"
    );
    eprintln!("Epilog run by slurmd (systemctl stop): {epilog:?}; EpilogSlurmctld {ctld:?}; group gone {gone:?} after the job was told to end");

    // The long-lived unit: started, its group; stopped, gone.
    let defaults = sys.path("/etc/default/arkouda-push-agent");
    std::fs::write(&defaults, "ARKOUDA_PUSH_AGENT_JOB_ID=shared-server\n").unwrap();
    sys.ok(&["systemctl", "start", "arkouda-push-agent.service"]);
    sys.wait_group("shared-server", "the long-lived unit's group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    sys.ok(&["systemctl", "stop", "arkouda-push-agent.service"]);
    sys.wait_gone("shared-server", Duration::from_secs(5));

    // The sweep timer, enabled as docs/install.md says, with SLURM_CONF in
    // /etc/default/arkouda-push-agent as its unit reads it. It runs the sweep service as
    // the package's user under its hardening; that user sees every job (no PrivateData),
    // so Slurm's answer decides: the groups of jobs Slurm does not run go, whatever their
    // lease; the running job's stays.
    std::fs::write(&defaults, format!("SLURM_CONF={SLURM_CONF}\n")).unwrap();
    let running = sys.submit("second");
    sys.wait_group(&running, "the second job's group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let lease = |job: &str, at: f64| {
        let url = format!("{PUSHGATEWAY}/metrics/job/arkouda/slurm_job_id/{job}/cluster/{CLUSTER}");
        // Typed as the agents push it: the Pushgateway refuses a family of two types.
        let name = "arkouda_agent_lease_expiry_timestamp_seconds";
        let body = format!("# TYPE {name} gauge\n{name} {at}\n");
        sys.ok(&["curl", "-sSf", "-X", "PUT", "--data-binary", &body, &url]);
    };
    lease("900", 1000.0);
    lease("901", now() + 3600.0);
    let timer = "arkouda-push-agent-sweep.timer";
    let t0 = now();
    sys.ok(&["systemctl", "enable", "--now", timer]);
    assert_eq!(sys.show(timer, "ActiveState"), "active");
    assert_eq!(sys.show(timer, "UnitFileState"), "enabled");
    let timers: serde_json::Value =
        serde_json::from_str(&sys.ok(&["systemctl", "list-timers", "--all", "-o", "json"]))
            .expect("list-timers JSON");
    let next = timers
        .as_array()
        .and_then(|t| t.iter().find(|t| t["unit"] == timer))
        .and_then(|t| t["next"].as_f64())
        .map(|us| us / 1e6)
        .unwrap_or_else(|| panic!("no next run of {timer}: {timers}"));
    assert!(
        next > t0 && next <= t0 + 5.0 * 60.0 + 30.0 + 1.0,
        "next sweep at {next}, now {t0}"
    );
    // Its schedule brought forward (a drop-in, as a site would add one): the timer runs the
    // packaged service.
    let dropin = sys.path("/etc/systemd/system/arkouda-push-agent-sweep.timer.d");
    std::fs::create_dir_all(&dropin).unwrap();
    std::fs::write(
        dropin.join("test.conf"),
        "[Timer]\nOnActiveSec=1s\nAccuracySec=100ms\nRandomizedDelaySec=0\n",
    )
    .unwrap();
    sys.ok(&["systemctl", "daemon-reload"]);
    sys.ok(&["systemctl", "restart", timer]);
    let sweep = "arkouda-push-agent-sweep.service";
    sys.wait_gone("900", Duration::from_secs(20));
    eventually(
        Duration::from_secs(10),
        "the sweep service to finish",
        || match (
            sys.show(sweep, "Result").as_str(),
            sys.show(sweep, "ActiveState").as_str(),
            sys.show(sweep, "ExecMainStatus").as_str(),
        ) {
            ("success", "inactive", "0") => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        sys.job_groups("901").is_empty(),
        "Slurm does not run job 901: its group goes"
    );
    assert_eq!(
        sys.job_groups(&running).len(),
        1,
        "the running job's group is kept"
    );
    let journal = sys.ok(&["journalctl", "--no-pager", "-u", sweep]);
    assert!(
        journal.contains("sweep: 2 deleted, 1 kept"),
        "the sweep judged exactly the three groups, with Slurm's answer:\n{journal}"
    );
    // Its report and its log share the journal: each deletion is written there once.
    let deletion = format!("slurm_job_id/900/cluster/{CLUSTER}");
    assert_eq!(
        journal.lines().filter(|l| l.contains(&deletion)).count(),
        1,
        "{journal}"
    );

    // Purge with the second job's agent running: the agent is stopped and deletes its
    // group; no user, config, enabled unit or process is left.
    let t = Instant::now();
    sys.ok(&["dpkg", "--purge", PKG]);
    let purge = t.elapsed();
    sys.wait_gone(&running, Duration::from_secs(5));
    eprintln!("dpkg --purge with an agent running: {purge:?}");
    assert!(
        !sys.run(&[], &["getent", "passwd", USER]).0,
        "the user is gone"
    );
    assert!(!sys.path("/etc/arkouda-push-agent").exists());
    assert!(!sys
        .path("/etc/systemd/system/timers.target.wants/arkouda-push-agent-sweep.timer")
        .exists());
    assert_eq!(sys.show(timer, "ActiveState"), "inactive");
    assert_eq!(
        sys.show(
            &format!("arkouda-push-agent@{running}.service"),
            "ActiveState"
        ),
        "inactive"
    );
    assert_eq!(
        sys.show("arkouda-push-agent.service", "LoadState"),
        "not-found"
    );
    assert!(
        sys.processes_of(uid).is_empty(),
        "{:?}",
        sys.processes_of(uid)
    );
    assert!(
        canary.path("canary").exists(),
        "the machine's /tmp was touched"
    );
    let cgroup = sys.cgroup.clone();
    drop(sys);
    assert!(
        canary.path("canary").exists(),
        "the machine's /tmp was touched"
    );
    assert!(!cgroup.exists(), "{} is left", cgroup.display());
}
