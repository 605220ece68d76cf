//! A real single-node Slurm cluster for a test file: Debian's munged, slurmctld and slurmd,
//! started under a temporary directory with their own key, socket, ports and job id range
//! (the recipe of shared/docs/real-components.md), with the hooks the test names in
//! slurm.conf; optionally job accounting through slurmdbd and a MariaDB of its own
//! (`Site::accounting`). Used by tests/slurm.rs (the repository's hooks behind test
//! wrappers, an extra partition, accounting), tests/deb.rs (the installed package's hooks)
//! and tests/sweep.rs (jobs that run and end, slurmctld stopped).
//!
//! Included with `#[path = "common/slurm.rs"] mod slurm_cluster;` next to `mod common;`, so
//! the other test files do not compile it. Every daemon dies with the test (PDEATHSIG);
//! Drop cancels the jobs, stops the daemons and kills by pid what still runs from the
//! cluster's directory.

#![allow(dead_code)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{eventually, free_port, Proc, TempDir};

/// The plugins and policies every test cluster shares: no cgroups, no accounting of job
/// resources, one core per task, nodes back in service on their own.
pub const PLUGINS: &str = "ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
";

/// How a hook run ended, from its `<hook>: end rc=<code> after <ms> ms` log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HookEnd {
    /// None: `rc=none` (the binary was not run).
    pub rc: Option<i32>,
    pub ms: u64,
}

/// The end of `hook`'s run, if `line` is its `end` line.
pub fn hook_end(line: &str, hook: &str) -> Option<HookEnd> {
    let rest = line.split(&format!("{hook}: end rc=")).nth(1)?;
    let mut words = rest.split_whitespace();
    let rc = words.next().and_then(|r| r.parse().ok());
    let ms = words
        .nth(1)
        .and_then(|m| m.parse().ok())
        .unwrap_or(u64::MAX);
    Some(HookEnd { rc, ms })
}

pub fn require(path: &str, package: &str) {
    assert!(
        Path::new(path).exists(),
        "{path} is missing: install the Debian package {package} (scripts/test.sh does)"
    );
}

pub fn write_file(path: &Path, text: &str, mode: u32) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn mkdir(path: &Path, mode: u32) {
    std::fs::create_dir_all(path).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

pub fn short_hostname() -> String {
    let h = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    h.trim()
        .split('.')
        .next()
        .unwrap_or("localhost")
        .to_string()
}

pub fn cmdline(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

/// A running (not zombie) process.
#[derive(Clone, Debug)]
pub struct ProcInfo {
    pub pid: i32,
    pub uid: u32,
    pub exe: Option<PathBuf>,
    pub argv: Vec<String>,
}

pub fn processes() -> Vec<ProcInfo> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next());
        if matches!(state, None | Some('Z' | 'X')) {
            continue;
        }
        let Ok(meta) = std::fs::metadata(format!("/proc/{pid}")) else {
            continue;
        };
        out.push(ProcInfo {
            pid,
            uid: meta.uid(),
            exe: std::fs::read_link(format!("/proc/{pid}/exe")).ok(),
            argv: cmdline(pid),
        });
    }
    out
}

pub fn kill9(pid: i32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// What slurm.conf runs at a job's start and end (absolute paths; None: nothing).
#[derive(Clone, Debug, Default)]
pub struct Hooks {
    pub prolog: Option<String>,
    pub epilog: Option<String>,
    pub epilog_slurmctld: Option<String>,
}

/// The shape of a cluster: its compute nodes and site policies.
#[derive(Clone, Debug, Default)]
pub struct Site {
    /// Compute nodes, each its own `slurmd -N NAME` in its own mount namespace (a private
    /// `/run` and `/etc/hosts` where node `i` (from 1) is `127.0.0.1i`); empty: the one
    /// node named after this machine, in the machine's namespace.
    pub nodes: Vec<String>,
    /// slurm.conf lines added as they are (`PrivateData=jobs`…).
    pub conf: String,
    /// Partition lines besides `debug` (the default, every node).
    pub partitions: Vec<String>,
    /// The first job id (default: a random one of its own).
    pub first_job_id: Option<u32>,
    /// Job accounting through slurmdbd, with a MariaDB of its own (`sacct`, `sacctmgr`);
    /// off: `accounting_storage/none`.
    pub accounting: bool,
}

impl Site {
    /// The loopback address of node `name` in the nodes' /etc/hosts.
    pub fn node_addr(&self, name: &str) -> Option<String> {
        let i = self.nodes.iter().position(|n| n == name)?;
        Some(format!("127.0.0.{}", 11 + i))
    }
}

pub struct SlurmCluster {
    pub name: String,
    pub conf: PathBuf,
    /// The (first) node's name.
    pub node: String,
    pub site: Site,
    /// munged, slurmctld, then one slurmd per node.
    daemons: Vec<Option<Proc>>,
    /// MariaDB and slurmdbd, with `Site::accounting`: stopped after the others (they are
    /// dropped after `Drop::drop` ran), so that slurmctld's last records reach them.
    accounting: Vec<Proc>,
    pub w: TempDir,
}

impl SlurmCluster {
    pub fn path(&self, p: &str) -> PathBuf {
        self.w.path(p)
    }

    /// A cluster named `name` whose slurm.conf runs `hooks`, with the one partition `debug`.
    pub fn start(name: &str, hooks: &Hooks) -> SlurmCluster {
        SlurmCluster::start_in(SlurmCluster::prepare_dir(), name, hooks, &[])
    }

    /// Checks that the packages are installed and makes the cluster's directory (mode 755,
    /// as every directory on the way must be traversable by an unprivileged agent) with its
    /// layout: `munge`, `etc`, `state`, `run`, `log`, `bin`, `jobs`, `work` and the spool.
    /// A test adds its own files there (hook wrappers, configs, binaries) before
    /// [`SlurmCluster::start_in`].
    pub fn prepare_dir() -> TempDir {
        for (bin, pkg) in [
            ("/usr/sbin/slurmctld", "slurm-wlm"),
            ("/usr/sbin/slurmd", "slurm-wlm"),
            ("/usr/bin/sbatch", "slurm-wlm"),
            ("/usr/bin/squeue", "slurm-wlm"),
            ("/usr/sbin/munged", "munge"),
            ("/usr/sbin/mungekey", "munge"),
            ("/usr/bin/timeout", "coreutils"),
        ] {
            require(bin, pkg);
        }
        let w = TempDir::new("slurm");
        mkdir(&w.0, 0o755);
        for d in ["munge", "etc", "state", "run", "log", "bin", "jobs", "work"] {
            mkdir(&w.path(d), 0o755);
        }
        mkdir(
            &w.path(&format!("spool/slurmd-{}", short_hostname())),
            0o755,
        );
        w
    }

    /// Starts the cluster in `w` (from [`SlurmCluster::prepare_dir`]): the partition
    /// `debug` (the default) and one more for each of `partitions`, all on the one node.
    pub fn start_in(w: TempDir, name: &str, hooks: &Hooks, partitions: &[&str]) -> SlurmCluster {
        let site = Site {
            partitions: partitions
                .iter()
                .map(|part| format!("PartitionName={part} Nodes=ALL MaxTime=INFINITE State=UP"))
                .collect(),
            ..Site::default()
        };
        SlurmCluster::start_site(w, name, hooks, site)
    }

    /// Starts a cluster of the shape `site` in `w` (from [`SlurmCluster::prepare_dir`]).
    pub fn start_site(w: TempDir, name: &str, hooks: &Hooks, site: Site) -> SlurmCluster {
        let started = Instant::now();
        let p = |s: &str| w.path(s);
        let host = short_hostname();
        let node = site.nodes.first().cloned().unwrap_or_else(|| host.clone());
        let hook = |key: &str, v: &Option<String>| {
            v.as_ref()
                .map(|path| format!("{key}={path}\n"))
                .unwrap_or_default()
        };
        let ctld_port = free_port();
        let slurmd_port = free_port();
        let dbd_port = free_port();
        let accounting = if site.accounting {
            format!(
                "AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
AccountingStoragePort={dbd_port}
AccountingStoragePass={}/munge/munge.sock",
                w.0.display()
            )
        } else {
            "AccountingStorageType=accounting_storage/none".to_string()
        };
        // A job id range of its own: concurrent clusters on this machine never share an id.
        let first_job_id = site
            .first_job_id
            .unwrap_or_else(|| 100_000 + fastrand::u32(0..800_000));
        let node_lines = if site.nodes.is_empty() {
            format!("NodeName={host} NodeAddr=127.0.0.1 CPUs=8 State=UNKNOWN\n")
        } else {
            site.nodes
                .iter()
                .map(|n| {
                    format!(
                        "NodeName={n} NodeHostname={host} NodeAddr=127.0.0.1 Port={} CPUs=4 State=UNKNOWN\n",
                        free_port()
                    )
                })
                .collect()
        };
        let conf = format!(
            "ClusterName={name}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
CommunicationParameters=NoCtldInAddrAny,NoInAddrAny
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket={w}/munge/munge.sock
StateSaveLocation={w}/state
SlurmdSpoolDir={w}/spool/slurmd-%n
SlurmctldPidFile={w}/run/slurmctld.pid
SlurmdPidFile={w}/run/slurmd-%n.pid
SlurmctldLogFile={w}/log/slurmctld.log
SlurmdLogFile={w}/log/slurmd-%n.log
{accounting}
{PLUGINS}{prolog}{epilog}{epilog_ctld}PrologFlags=Alloc
PrologEpilogTimeout=60
InactiveLimit=0
MinJobAge=600
KillWait=5
FirstJobId={first_job_id}
SlurmdParameters=config_overrides
{site_conf}
{node_lines}PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
{partitions}",
            site_conf = site.conf,
            w = w.0.display(),
            prolog = hook("Prolog", &hooks.prolog),
            epilog = hook("Epilog", &hooks.epilog),
            epilog_ctld = hook("EpilogSlurmctld", &hooks.epilog_slurmctld),
            partitions = site
                .partitions
                .iter()
                .map(|line| format!("{line}\n"))
                .collect::<String>(),
        );
        let conf_path = p("etc/slurm.conf");
        write_file(&conf_path, &conf, 0o644);

        let status = Command::new("/usr/sbin/mungekey")
            .args(["-c", "-k"])
            .arg(p("munge/munge.key"))
            .status()
            .expect("mungekey");
        assert!(status.success(), "mungekey failed");
        let s = |x: PathBuf| x.display().to_string();
        let mut daemons = vec![Some(daemon(
            "munged",
            "/usr/sbin/munged",
            vec![
                "-F".into(),
                format!("--key-file={}", s(p("munge/munge.key"))),
                format!("--socket={}", s(p("munge/munge.sock"))),
                format!("--pid-file={}", s(p("munge/munged.pid"))),
                format!("--log-file={}", s(p("munge/munged.log"))),
                format!("--seed-file={}", s(p("munge/munged.seed"))),
            ],
        ))];
        eventually(Duration::from_secs(10), "munged's socket", || {
            if p("munge/munge.sock").exists() {
                Ok(())
            } else {
                Err(std::fs::read_to_string(p("munge/munged.log")).unwrap_or_default())
            }
        });
        let accounting = if site.accounting {
            start_accounting(&w, name, &conf_path, dbd_port)
        } else {
            Vec::new()
        };
        let f = s(conf_path.clone());
        daemons.push(Some(daemon(
            "slurmctld",
            "/usr/sbin/slurmctld",
            vec!["-D".into(), "-i".into(), "-f".into(), f.clone()],
        )));
        if site.nodes.is_empty() {
            daemons.push(Some(daemon(
                "slurmd",
                "/usr/sbin/slurmd",
                vec!["-D".into(), "-f".into(), f],
            )));
        } else {
            // The nodes' /etc/hosts: this machine's, plus each node at its own address.
            let mut hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
            for n in &site.nodes {
                hosts.push_str(&format!("{} {n}\n", site.node_addr(n).unwrap()));
            }
            write_file(&p("hosts"), &hosts, 0o644);
            for n in &site.nodes {
                mkdir(&p(&format!("spool/slurmd-{n}")), 0o755);
                daemons.push(Some(node_daemon(&w.0, n, &f)));
            }
        }
        let nodes = site.nodes.len().max(1);
        let cluster = SlurmCluster {
            name: name.to_string(),
            conf: conf_path,
            node,
            site,
            daemons,
            accounting,
            w,
        };
        eventually(Duration::from_secs(30), "the nodes to be idle", || {
            let (ok, out) = cluster.slurm("/usr/bin/sinfo", &["-h", "-N", "-o", "%N %T"]);
            let idle = out.lines().filter(|l| l.ends_with(" idle")).count();
            if ok && idle >= nodes {
                Ok(())
            } else {
                Err(format!(
                    "sinfo: {out}; slurmctld log: {}",
                    cluster.tail("log/slurmctld.log")
                ))
            }
        });
        eprintln!("slurm cluster {name} up in {:?}", started.elapsed());
        cluster
    }

    pub fn tail(&self, rel: &str) -> String {
        let text = std::fs::read_to_string(self.path(rel)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Runs a Slurm client command, bounded (a client retries for a minute when it cannot
    /// reach slurmctld). Returns (success, stdout + stderr).
    pub fn slurm(&self, prog: &str, args: &[&str]) -> (bool, String) {
        let out = Command::new("/usr/bin/timeout")
            .arg("30")
            .arg(prog)
            .args(args)
            .env("SLURM_CONF", &self.conf)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{prog}: {e}"));
        let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.push_str(&String::from_utf8_lossy(&out.stderr));
        (out.status.success(), text)
    }

    /// Submits `script` (as root) with extra sbatch arguments; returns the job id.
    pub fn submit(&self, name: &str, script: &str, args: &[&str]) -> String {
        self.submit_env(name, script, args, &[])
    }

    /// As [`SlurmCluster::submit`], with variables added to sbatch's environment (which
    /// the job inherits).
    pub fn submit_env(
        &self,
        name: &str,
        script: &str,
        args: &[&str],
        env: &[(String, String)],
    ) -> String {
        let path = self.path(&format!("jobs/{name}.sh"));
        write_file(&path, script, 0o755);
        let workdir = self.path(&format!("work/{name}"));
        mkdir(&workdir, 0o755);
        let out = Command::new("/usr/bin/sbatch")
            .arg("--parsable")
            .arg(format!("--job-name={name}"))
            .arg(format!(
                "--output={}",
                self.path(&format!("jobs/{name}.out")).display()
            ))
            .arg(format!("--chdir={}", workdir.display()))
            .args(args)
            .arg(&path)
            .env("SLURM_CONF", &self.conf)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .expect("sbatch");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "sbatch {name}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let id = text
            .trim()
            .split(';')
            .next()
            .unwrap_or_default()
            .to_string();
        assert!(
            !id.is_empty() && id.chars().all(|c| c.is_ascii_digit()),
            "{text}"
        );
        id
    }

    /// A job that runs until the file `stop` exists (then exits 0); `pre` runs first in
    /// the background (e.g. the simulator as the job's Arkouda server).
    pub fn waiting_job(&self, name: &str, pre: &str, args: &[&str]) -> (String, PathBuf) {
        let stop = self.path(&format!("jobs/{name}.stop"));
        let script = format!(
            "#!/bin/bash\n{pre}\nwhile [ ! -e {stop} ]; do sleep 0.1; done\nkill -TERM $(jobs -p) 2>/dev/null\nwait\nexit 0\n",
            stop = stop.display()
        );
        (self.submit(name, &script, args), stop)
    }

    pub fn job_field(&self, id: &str, field: &str) -> String {
        let (_, out) = self.slurm("/usr/bin/scontrol", &["show", "job", "-o", id]);
        out.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{field}=")))
            .unwrap_or_default()
            .to_string()
    }

    pub fn wait_state(&self, id: &str, states: &[&str], limit: Duration) -> String {
        eventually(limit, &format!("job {id} to be {states:?}"), || {
            let s = self.job_field(id, "JobState");
            if states.contains(&s.as_str()) {
                Ok(s)
            } else {
                Err(s)
            }
        })
    }

    /// The pid of node `name`'s slurmd (a multi-node cluster), while it runs.
    pub fn slurmd_pid(&self, name: &str) -> Option<i32> {
        let i = self.site.nodes.iter().position(|n| n == name)?;
        let d = self.daemons.get(2 + i)?.as_ref()?;
        // The daemon is `unshare`, which execs sh, which execs slurmd: the same pid.
        Some(d.pid())
    }

    /// The mount namespace of node `name` (its slurmd's), e.g. `mnt:[4026532]`.
    pub fn node_ns(&self, name: &str) -> Option<String> {
        mount_ns(self.slurmd_pid(name)?)
    }

    /// Which node process `pid` runs on: the node whose mount namespace it shares.
    pub fn node_of(&self, pid: i32) -> Option<String> {
        let ns = mount_ns(pid)?;
        self.site
            .nodes
            .iter()
            .find(|n| self.node_ns(n).as_deref() == Some(ns.as_str()))
            .cloned()
    }

    /// Crashes node `name`: SIGKILLs every process of its mount namespace (slurmd, the
    /// job steps, the agent, the job's server), as a power cut would. Returns how many.
    pub fn crash_node(&mut self, name: &str) -> usize {
        let Some(ns) = self.node_ns(name) else {
            return 0;
        };
        let i = self.site.nodes.iter().position(|n| n == name).unwrap();
        let mut n = 0;
        // Until none is left: a process may fork while the others die.
        for _ in 0..20 {
            let victims: Vec<i32> = processes()
                .into_iter()
                .filter(|p| mount_ns(p.pid).as_deref() == Some(ns.as_str()))
                .map(|p| p.pid)
                .collect();
            if victims.is_empty() {
                break;
            }
            for pid in victims {
                kill9(pid);
                n += 1;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if let Some(mut d) = self.daemons.get_mut(2 + i).and_then(Option::take) {
            let _ = d.child.wait();
        }
        n
    }

    /// Starts node `name`'s slurmd again (in a new namespace) after [`SlurmCluster::crash_node`].
    pub fn restart_node(&mut self, name: &str) {
        let i = self.site.nodes.iter().position(|n| n == name).unwrap();
        let conf = self.conf.display().to_string();
        self.daemons[2 + i] = Some(node_daemon(&self.w.0, name, &conf));
    }

    /// Stops slurmctld (SIGTERM) and waits for it to exit.
    pub fn stop_ctld(&mut self) {
        if let Some(mut d) = self.daemons.get_mut(1).and_then(Option::take) {
            d.signal("TERM");
            d.wait_exit(Duration::from_secs(20));
        }
    }
}

/// The mount namespace of a process (`readlink /proc/PID/ns/mnt`).
pub fn mount_ns(pid: i32) -> Option<String> {
    std::fs::read_link(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|p| p.display().to_string())
}

/// One node's slurmd in a mount namespace of its own: a private /run (with /run/lock) and
/// the cluster's /etc/hosts, inherited by its hooks, steps and whatever they start.
fn node_daemon(w: &Path, name: &str, conf: &str) -> Proc {
    let script = format!(
        "mount --bind {w}/hosts /etc/hosts && mount -t tmpfs -o mode=755 tmpfs /run && \
         mkdir -m 1777 /run/lock && exec /usr/sbin/slurmd -D -N {name} -f {conf}",
        w = w.display()
    );
    daemon(
        &format!("slurmd-{name}"),
        "/usr/bin/unshare",
        vec![
            "-m".into(),
            "--propagation".into(),
            "private".into(),
            "--".into(),
            "/bin/sh".into(),
            "-c".into(),
            script,
        ],
    )
}

/// Job accounting for a cluster: a MariaDB of its own (a fresh data directory, on a free
/// loopback port, no grant tables: nothing but slurmdbd reaches it) and slurmdbd (its
/// slurmdbd.conf beside slurm.conf, mode 0600 as it insists), with the cluster added, as a
/// site's `sacctmgr add cluster` does; before slurmctld starts.
fn start_accounting(w: &TempDir, name: &str, conf: &Path, dbd_port: u16) -> Vec<Proc> {
    for (bin, pkg) in [
        ("/usr/sbin/mariadbd", "mariadb-server"),
        ("/usr/bin/mariadb-install-db", "mariadb-server"),
        ("/usr/sbin/slurmdbd", "slurmdbd"),
        ("/usr/bin/sacctmgr", "slurm-client"),
        ("/usr/bin/sacct", "slurm-client"),
    ] {
        require(bin, pkg);
    }
    let started = Instant::now();
    let p = |s: &str| w.path(s);
    mkdir(&p("db"), 0o700);
    let out = Command::new("/usr/bin/mariadb-install-db")
        .arg("--no-defaults")
        .arg(format!("--datadir={}", p("db").display()))
        .args([
            "--user=root",
            "--skip-test-db",
            "--auth-root-authentication-method=normal",
        ])
        .output()
        .expect("mariadb-install-db");
    assert!(
        out.status.success(),
        "mariadb-install-db: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let db_port = free_port();
    let db = daemon(
        "mariadbd",
        "/usr/sbin/mariadbd",
        vec![
            "--no-defaults".into(),
            format!("--datadir={}", p("db").display()),
            format!("--socket={}", p("run/mariadb.sock").display()),
            format!("--pid-file={}", p("run/mariadb.pid").display()),
            format!("--log-error={}", p("log/mariadb.log").display()),
            format!("--port={db_port}"),
            "--bind-address=127.0.0.1".into(),
            "--user=root".into(),
            "--skip-grant-tables".into(),
            "--skip-name-resolve".into(),
        ],
    );
    eventually(Duration::from_secs(30), "MariaDB to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", db_port))
            .map(|_| ())
            .map_err(|e| {
                format!(
                    "{e}: {}",
                    std::fs::read_to_string(p("log/mariadb.log")).unwrap_or_default()
                )
            })
    });
    let dbd_conf = conf.with_file_name("slurmdbd.conf");
    write_file(
        &dbd_conf,
        &format!(
            "AuthType=auth/munge
AuthInfo=socket={w}/munge/munge.sock
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort={dbd_port}
SlurmUser=root
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort={db_port}
StorageUser=root
StorageLoc=slurm_acct_db
PidFile={w}/run/slurmdbd.pid
LogFile={w}/log/slurmdbd.log
",
            w = w.0.display()
        ),
        0o600,
    );
    let mut cmd = Command::new("/usr/sbin/slurmdbd");
    cmd.arg("-D").env("SLURM_CONF", conf);
    let dbd = daemon_cmd("slurmdbd", cmd);
    eventually(
        Duration::from_secs(60),
        "slurmdbd to add the cluster",
        || {
            let out = Command::new("/usr/bin/timeout")
                .args(["10", "/usr/bin/sacctmgr", "-i", "add", "cluster", name])
                .env("SLURM_CONF", conf)
                .stdin(Stdio::null())
                .output()
                .expect("sacctmgr");
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            if out.status.success() {
                Ok(())
            } else {
                let log = std::fs::read_to_string(p("log/slurmdbd.log")).unwrap_or_default();
                Err(format!("{text}; slurmdbd log: {log}"))
            }
        },
    );
    eprintln!("MariaDB and slurmdbd up in {:?}", started.elapsed());
    vec![db, dbd]
}

/// A daemon that dies with the thread that started it (PR_SET_PDEATHSIG), so a killed
/// test process leaves none behind; the orderly teardown is the cluster's Drop.
fn daemon(name: &str, prog: &str, args: Vec<String>) -> Proc {
    let mut cmd = Command::new(prog);
    cmd.args(args);
    daemon_cmd(name, cmd)
}

fn daemon_cmd(name: &str, mut cmd: Command) -> Proc {
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL)
                .map_err(std::io::Error::from)
        });
    }
    Proc::spawn(name, cmd, Stdio::null())
}

impl Drop for SlurmCluster {
    fn drop(&mut self) {
        // Orderly: cancel what runs, let the Epilogs run, then stop the daemons.
        if self.daemons.get(1).is_some_and(Option::is_some) {
            let _ = self.slurm("/usr/bin/scancel", &["--user=root"]);
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                let (ok, out) = self.slurm("/usr/bin/squeue", &["-h", "-o", "%i"]);
                if !ok || out.trim().is_empty() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        for d in self.daemons.iter().flatten() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(d.pid()),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for d in self.daemons.iter_mut().flatten() {
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && matches!(d.child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        // Anything left that a job started from the cluster's directory: kill it by pid
        // (twice: a hook still running at the first pass may start one more).
        let root = format!("{}/", self.w.0.display());
        for pass in 0..2 {
            if pass > 0 {
                std::thread::sleep(Duration::from_millis(500));
            }
            for p in processes() {
                if p.argv.iter().take(2).any(|a| a.starts_with(&root))
                    && p.pid != std::process::id() as i32
                {
                    kill9(p.pid);
                }
            }
        }
    }
}
