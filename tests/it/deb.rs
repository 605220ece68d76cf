//! The Debian package, proven by installing it on this machine: build it
//! (scripts/build-deb.sh, from the binary the tests already built), `dpkg -i`, check the
//! layout (`dpkg -L`), the conffile, the system user, that nothing was started or enabled
//! and slurm.conf untouched, `--version`, the man page, `systemd-analyze verify` of the
//! installed units; then a real Slurm cluster whose slurm.conf names the INSTALLED hooks
//! (/usr/libexec/arkouda-push-agent/…), with the installed config
//! (/etc/arkouda-push-agent/config.toml, opted in and pointed at the test's Pushgateway),
//! runs a job whose agent runs as the package's user; finally `dpkg --purge` leaves no
//! user, no config and no running process.
//!
//! This changes the machine: it purges a previous install first, and purges on the way
//! out even when it fails. Other tests never read /etc/arkouda-push-agent/config.toml
//! (their agents run with ARKOUDA_PUSH_AGENT_CONFIG=/dev/null or a config of their own) and
//! never run /usr/bin/arkouda-push-agent (they use the binary cargo built), so installing
//! it cannot change them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use crate::slurm_cluster::{processes, require, Hooks, SlurmCluster};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const PKG: &str = "arkouda-push-agent";
const USER: &str = "arkouda-push-agent";
const BIN: &str = "/usr/bin/arkouda-push-agent";
const CONFIG: &str = "/etc/arkouda-push-agent/config.toml";

/// Runs a command; (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn installed() -> bool {
    let (_, out, _) = run(Command::new("/usr/bin/dpkg-query").args(["-W", "-f=${Status}", PKG]));
    out.trim() == "install ok installed"
}

fn purge() {
    let (ok, out, err) = run(Command::new("/usr/bin/dpkg")
        .args(["--purge", PKG])
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(ok, "dpkg --purge {PKG}: {out}{err}");
}

/// Purges the package when the test ends, failed or not: the machine is shared.
struct PurgeOnDrop;

impl Drop for PurgeOnDrop {
    fn drop(&mut self) {
        if installed() {
            let _ = run(Command::new("/usr/bin/dpkg").args(["--purge", PKG]));
        }
    }
}

fn user_entry() -> Option<Vec<String>> {
    let (ok, out, _) = run(Command::new("/usr/bin/getent").args(["passwd", USER]));
    ok.then(|| out.trim().split(':').map(str::to_string).collect())
}

/// Processes running the installed binary (also once it is deleted) or as the package's user.
fn package_processes(uid: Option<u32>) -> Vec<crate::slurm_cluster::ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| {
            p.exe
                .as_ref()
                .is_some_and(|e| e.to_string_lossy().starts_with(BIN))
                || Some(p.uid) == uid
        })
        .collect()
}

/// An exclusive lock on a file under /run/lock, held while the package is on the machine.
pub fn machine_lock() -> nix::fcntl::Flock<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open("/run/lock/arkouda-push-agent-deb-test.lock")
        .expect("open the lock file");
    nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("lock")
}

/// Builds the package into `out_dir` from the binary these tests built (scripts/build-deb.sh
/// with PROFILE=dev); its path.
pub fn build_deb(out_dir: &Path) -> PathBuf {
    let (ok, _, err) = run(Command::new(env!("CARGO")).args(["deb", "--version"]));
    assert!(
        ok,
        "cargo-deb is missing (scripts/test.sh installs it): {err}"
    );
    // build-deb.sh packages target/debug, which must be the binary these tests built.
    assert_eq!(
        Path::new(AGENT),
        Path::new(&format!("{REPO}/target/debug/arkouda-push-agent")),
        "the package is built from target/debug"
    );
    let t = Instant::now();
    let (ok, out, err) = run(Command::new("/bin/bash")
        .arg(format!("{REPO}/scripts/build-deb.sh"))
        .arg("--no-build")
        .env("PROFILE", "dev")
        .env("DEB_OUT", out_dir)
        .current_dir(REPO));
    assert!(ok, "scripts/build-deb.sh: {out}{err}");
    let deb = PathBuf::from(out.lines().last().unwrap_or_default().trim());
    assert!(deb.exists(), "no .deb at {}: {out}{err}", deb.display());
    eprintln!("built {} in {:?}", deb.display(), t.elapsed());
    deb
}

fn file_hash(path: &str) -> Option<Vec<u8>> {
    std::fs::read(path).ok()
}

#[test]
fn deb_install_slurm_lifecycle_and_purge() {
    for (bin, pkg) in [
        ("/usr/bin/dpkg", "dpkg"),
        ("/usr/bin/dpkg-query", "dpkg"),
        ("/usr/bin/getent", "libc-bin"),
        ("/usr/bin/man", "man-db"),
        ("/usr/bin/zcat", "gzip"),
        ("/usr/bin/systemd-analyze", "systemd"),
        ("/usr/sbin/useradd", "passwd"),
    ] {
        require(bin, pkg);
    }

    // One install at a time on this machine: another run of this suite (a developer's, at
    // the same time) would purge the package from under this one.
    let _machine = machine_lock();
    if installed() {
        eprintln!("{PKG} is installed: purging it first");
        purge();
    }
    let _purge = PurgeOnDrop;

    let out_dir = TempDir::new("deb");
    let deb = build_deb(&out_dir.0);

    // Install: nothing starts, nothing is enabled, slurm.conf is untouched.
    let slurm_conf_before = file_hash("/etc/slurm/slurm.conf");
    assert!(package_processes(None).is_empty());
    let t = Instant::now();
    let (ok, out, err) = run(Command::new("/usr/bin/dpkg")
        .arg("-i")
        .arg(&deb)
        .env("DEBIAN_FRONTEND", "noninteractive"));
    assert!(ok, "dpkg -i: {out}{err}");
    eprintln!("installed in {:?}", t.elapsed());
    assert!(installed());

    let (_, listed, _) = run(Command::new("/usr/bin/dpkg").args(["-L", PKG]));
    let listed: Vec<&str> = listed.lines().collect();
    for path in [
        "/usr/bin/arkouda-push-agent",
        "/usr/bin/arkouda-srun",
        "/usr/libexec/arkouda-push-agent/prolog",
        "/usr/libexec/arkouda-push-agent/epilog",
        "/usr/libexec/arkouda-push-agent/epilog-slurmctld",
        "/usr/libexec/arkouda-push-agent/task-prolog",
        "/lib/systemd/system/arkouda-push-agent.service",
        "/lib/systemd/system/arkouda-push-agent@.service",
        "/lib/systemd/system/arkouda-push-agent-sweep.service",
        "/lib/systemd/system/arkouda-push-agent-sweep.timer",
        CONFIG,
        "/usr/share/man/man1/arkouda-push-agent.1.gz",
        "/usr/share/man/man1/arkouda-push-agent-sweep.1.gz",
        "/usr/share/doc/arkouda-push-agent/README.md",
        "/usr/share/doc/arkouda-push-agent/install.md",
        "/usr/share/doc/arkouda-push-agent/slurm.md",
        "/usr/share/doc/arkouda-push-agent/examples/arkouda-push-agent.toml",
        "/usr/share/doc/arkouda-push-agent/examples/prometheus/arkouda.rules.yml",
        "/usr/share/doc/arkouda-push-agent/examples/grafana/arkouda-job.json",
        "/usr/share/doc/arkouda-push-agent/examples/grafana/arkouda-site.json",
    ] {
        assert!(
            listed.contains(&path),
            "dpkg -L lacks {path}:\n{}",
            listed.join("\n")
        );
        assert!(Path::new(path).exists(), "{path} is listed but missing");
    }
    assert!(
        !listed.iter().any(|p| p.contains("arkouda-sim")),
        "the simulator is not packaged"
    );
    for exe in [
        "/usr/bin/arkouda-push-agent",
        "/usr/bin/arkouda-srun",
        "/usr/libexec/arkouda-push-agent/prolog",
    ] {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(exe).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755, "{exe}");
    }
    let (_, conffiles, _) =
        run(Command::new("/usr/bin/dpkg-query").args(["-W", "-f=${Conffiles}", PKG]));
    assert!(conffiles.contains(CONFIG), "conffiles: {conffiles}");

    let entry = user_entry().expect("the package creates its system user");
    let uid: u32 = entry[2].parse().unwrap();
    assert!(uid < 1000, "a system user: {entry:?}");
    assert_eq!(entry[6], "/usr/sbin/nologin", "{entry:?}");

    assert!(
        package_processes(Some(uid)).is_empty(),
        "installing started something: {:?}",
        package_processes(Some(uid))
    );
    assert_eq!(file_hash("/etc/slurm/slurm.conf"), slurm_conf_before);
    for dir in ["multi-user.target.wants", "timers.target.wants"] {
        let enabled: Vec<String> = std::fs::read_dir(format!("/etc/systemd/system/{dir}"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("arkouda-push-agent"))
                    .collect()
            })
            .unwrap_or_default();
        assert!(enabled.is_empty(), "enabled at install: {enabled:?}");
    }
    for script in ["postinst", "prerm", "postrm"] {
        let text = std::fs::read_to_string(format!("/var/lib/dpkg/info/{PKG}.{script}")).unwrap();
        for word in [
            "systemctl enable",
            "deb-systemd-helper enable",
            "systemctl start",
            "deb-systemd-invoke start",
        ] {
            assert!(!text.contains(word), "{script} says `{word}`");
        }
    }

    // The packaged config opts no job in.
    let config = std::fs::read_to_string(CONFIG).unwrap();
    assert!(config.contains("\nselect = \"none\"\n"), "{config}");
    let (ok, out, err) = run(Command::new(BIN)
        .args(["slurm", "prolog"])
        .env_clear()
        .env("SLURM_JOB_ID", "77")
        .env("SLURM_JOB_COMMENT", "arkouda-metrics")
        .env("SLURM_JOB_NODELIST", "n1")
        .env("SLURMD_NODENAME", "n1")
        .env("SLURM_SCRIPT_CONTEXT", "prolog_slurmd"));
    assert!(ok, "{out}{err}");
    assert!(
        format!("{out}{err}").contains("select = none"),
        "the packaged config selects no job: {out}{err}"
    );

    let (ok, out, err) = run(Command::new(BIN).arg("--version"));
    assert!(ok, "{err}");
    assert_eq!(
        out.trim(),
        format!("arkouda-push-agent {}", env!("CARGO_PKG_VERSION"))
    );

    for page in ["arkouda-push-agent", "arkouda-push-agent-sweep"] {
        let (ok, out, err) = run(Command::new("/usr/bin/man").args(["-w", page]));
        assert!(ok, "man -w {page}: {err}");
        assert_eq!(out.trim(), format!("/usr/share/man/man1/{page}.1.gz"));
    }
    let (ok, page, _) =
        run(Command::new("/usr/bin/zcat").arg("/usr/share/man/man1/arkouda-push-agent-sweep.1.gz"));
    assert!(ok && page.contains(".TH"), "{page}");
    for flag in ["grace", "dry\\-run", "no\\-scheduler"] {
        assert!(page.contains(flag), "the sweep page documents --{flag}");
    }

    let sa = "/usr/bin/systemd-analyze";
    for unit in [
        "arkouda-push-agent@4242.service",
        "arkouda-push-agent.service",
        "arkouda-push-agent-sweep.service",
        "arkouda-push-agent-sweep.timer",
    ] {
        let (ok, out, err) = run(Command::new(sa)
            .arg("verify")
            .arg(format!("/lib/systemd/system/{unit}")));
        assert!(
            ok && out.trim().is_empty() && err.trim().is_empty(),
            "systemd-analyze verify {unit}:\n{out}{err}"
        );
    }

    installed_hooks_lifecycle(uid);

    // An agent still running at removal, as the package's user, detached (as a Prolog
    // starts it): the prerm stops it, and it deletes its group on the way out.
    require("/usr/bin/setpriv", "util-linux");
    let pg = Pushgateway::start();
    let (ok, out, err) = run(Command::new("/usr/bin/setpriv")
        .args(["--reuid", USER, "--regid", USER, "--clear-groups", "--"])
        .arg(BIN)
        .args([
            "run",
            "--daemonize",
            "--job-id",
            "4343",
            "--interval",
            "300ms",
        ])
        .args(["--pushgateway", &pg.url])
        .arg(format!("--arkouda=tcp://127.0.0.1:{}", free_port()))
        .env_clear());
    assert!(ok, "the installed agent did not start: {out}{err}");
    pg.wait_group("4343", "the running agent's group", |g| {
        g.value("arkouda_up", &[]) == Some(0.0)
    });
    assert_eq!(package_processes(Some(uid)).len(), 1);

    // Purge: no user, no config, no process, no binary, and the agent's group deleted.
    let t = Instant::now();
    purge();
    eprintln!("purged in {:?}", t.elapsed());
    pg.wait_gone("4343", Duration::from_secs(5));
    assert!(!installed());
    assert!(user_entry().is_none(), "the user is gone");
    let (found, _, _) = run(Command::new("/usr/bin/getent").args(["group", USER]));
    assert!(!found, "the group is gone");
    for path in [
        "/etc/arkouda-push-agent",
        BIN,
        "/usr/libexec/arkouda-push-agent",
        "/run/arkouda-push-agent",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left after purge");
    }
    let left = package_processes(Some(uid));
    assert!(left.is_empty(), "processes left after purge: {left:?}");
}

/// The real-Slurm lifecycle once more, with everything where the package put it.
fn installed_hooks_lifecycle(uid: u32) {
    let pg = Pushgateway::start();
    let port = free_port();
    // The site's edits to the installed config: its Pushgateway, a short interval for the
    // test, the job's metrics port, and opting jobs in by comment.
    let original = std::fs::read_to_string(CONFIG).unwrap();
    let mut config = original.clone();
    for (from, to) in [
        (
            "# pushgateway = \"http://pushgateway.example.org:9091\"",
            format!("pushgateway = \"{}\"", pg.url),
        ),
        ("interval = \"5s\"", "interval = \"300ms\"".to_string()),
        ("metrics_port = 5556", format!("metrics_port = {port}")),
        ("select = \"none\"", "select = \"comment\"".to_string()),
    ] {
        assert_eq!(config.matches(&format!("\n{from}\n")).count(), 1, "{from}");
        config = config.replace(&format!("\n{from}\n"), &format!("\n{to}\n"));
    }
    std::fs::write(CONFIG, config).unwrap();

    let lib = "/usr/libexec/arkouda-push-agent";
    let c = SlurmCluster::start(
        "apadeb",
        &Hooks {
            prolog: Some(format!("{lib}/prolog")),
            epilog: Some(format!("{lib}/epilog")),
            epilog_slurmctld: Some(format!("{lib}/epilog-slurmctld")),
        },
    );
    let conf = std::fs::read_to_string(&c.conf).unwrap();
    assert!(conf.contains("Prolog=/usr/libexec/arkouda-push-agent/prolog\n"));
    let sim = c.path("bin/arkouda-sim");
    std::fs::copy(SIM, &sim).expect("copy the simulator");
    let (id, stop) = c.waiting_job(
        "installed",
        &format!("{} --metrics-port {port} --locales 2 &", sim.display()),
        &["--comment=arkouda-metrics"],
    );
    let want = labels(&[
        ("job", "arkouda"),
        ("slurm_job_id", &id),
        ("cluster", &c.name),
    ]);
    let g = eventually(
        Duration::from_secs(60),
        "the job's group from the installed agent",
        || {
            let groups = pg.job_groups(&id);
            match groups.as_slice() {
                [g] if g.value("arkouda_up", &[]) == Some(1.0)
                    && g.value("arkouda_locales", &[]) == Some(2.0) =>
                {
                    Ok(g.clone())
                }
                other => Err(format!(
                    "{:?}; job {}; slurmd log: {}",
                    other.iter().map(|g| &g.labels).collect::<Vec<_>>(),
                    c.job_field(&id, "JobState"),
                    c.tail(&format!("log/slurmd-{}.log", c.node))
                )),
            }
        },
    );
    assert_eq!(g.labels, want);
    assert!(g
        .value("arkouda_agent_lease_expiry_timestamp_seconds", &[])
        .is_some());

    // The agent: the installed binary, as the package's user, recorded in the state dir.
    let agents: Vec<crate::slurm_cluster::ProcInfo> = package_processes(None)
        .into_iter()
        .filter(|p| p.argv.windows(2).any(|w| w[0] == "--job-id" && w[1] == id))
        .collect();
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert_eq!(agents[0].exe.as_deref(), Some(Path::new(BIN)));
    assert_eq!(agents[0].uid, uid, "the agent runs as {USER}");
    let pid_file = format!("/run/arkouda-push-agent/{id}.pid");
    assert_eq!(
        std::fs::read_to_string(&pid_file)
            .unwrap_or_default()
            .trim(),
        agents[0].pid.to_string(),
        "{pid_file}"
    );

    // The job ends: the Epilog stops the agent, the group goes.
    std::fs::write(&stop, "").unwrap();
    c.wait_state(&id, &["COMPLETED"], Duration::from_secs(60));
    pg.wait_gone(&id, Duration::from_secs(15));
    eventually(
        Duration::from_secs(10),
        "the job's agent to be gone",
        || {
            let left: Vec<i32> = package_processes(Some(uid)).iter().map(|p| p.pid).collect();
            if left.is_empty() {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    drop(c);
}
