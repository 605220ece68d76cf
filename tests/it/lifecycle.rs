//! The agent's lifecycle against a real Pushgateway: the group is deleted on SIGTERM and
//! SIGINT; after SIGKILL, `delete --job-id` removes every group of that job and nothing
//! else; configuration mistakes exit 2 naming the key and its source.

use std::time::{Duration, Instant};

use crate::common::*;

fn run_args<'a>(pg: &'a Pushgateway, job: &'a str, endpoint: &'a str) -> Vec<&'a str> {
    vec![
        "run",
        "--arkouda",
        endpoint,
        "--pushgateway",
        &pg.url,
        "--job-id",
        job,
        "--interval",
        "300ms",
    ]
}

/// SIGTERM (and SIGINT): the group is gone within 2 s and the exit code is 0.
#[test]
fn signal_deletes_the_group_and_exits_0() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2"]);
    let endpoint = sim.endpoint();
    for (job, sig) in [("term", "TERM"), ("int", "INT")] {
        let mut agent = spawn_agent(&run_args(&pg, job, &endpoint));
        pg.wait_group(job, "the group", |g| {
            g.value("arkouda_up", &[]) == Some(1.0)
        });
        let sent = Instant::now();
        agent.signal(sig);
        pg.wait_gone(job, Duration::from_secs(2));
        let status = agent.wait_exit(Duration::from_secs(3));
        assert_eq!(
            status.code(),
            Some(0),
            "SIG{sig}; log:\n{}",
            agent.log_text()
        );
        assert!(sent.elapsed() < Duration::from_secs(3));
        let log = agent.log_text();
        assert!(log.contains("group deleted"), "{log}");
    }
}

/// SIGHUP, as an agent started by hand in an `salloc` shell gets when the shell closes:
/// handled as SIGTERM (the group is deleted, exit 0).
#[test]
fn sighup_deletes_the_group_and_exits_0() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let mut agent = spawn_agent(&run_args(&pg, "hup", &endpoint));
    pg.wait_group("hup", "the group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    agent.signal("HUP");
    pg.wait_gone("hup", Duration::from_secs(2));
    let status = agent.wait_exit(Duration::from_secs(3));
    let log = agent.log_text();
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(log.contains("stop requested signal=\"SIGHUP\""), "{log}");
    assert!(log.contains("group deleted"), "{log}");
}

/// An agent whose final delete is held up (the Pushgateway stalls), stopped by SIGTERM.
/// Returns the agent, the proxy and the Pushgateway once the agent is deleting.
fn agent_stuck_in_its_delete(job: &str) -> (Proc, FaultProxy, Pushgateway) {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Pass);
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let url = proxy.url();
    let agent = spawn_agent(&[
        "run",
        "--arkouda",
        &endpoint,
        "--pushgateway",
        &url,
        "--job-id",
        job,
        "--interval",
        "300ms",
        "--push-timeout",
        "1s",
        "--shutdown-timeout",
        "10s",
    ]);
    pg.wait_group(job, "the group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    proxy.set(ProxyMode::Stall, true);
    agent.signal("TERM");
    eventually(
        Duration::from_secs(5),
        "the agent to start its delete",
        || {
            let log = agent.log_text();
            if log.contains("stopping: deleting the job's group") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    (agent, proxy, pg)
}

/// `systemctl stop` and the Epilog's own SIGTERM (or SIGHUP from a closing terminal) can
/// reach the agent while it deletes its group: the delete goes on, exit 0, group gone.
#[test]
fn a_second_sigterm_does_not_abandon_the_delete() {
    let (mut agent, proxy, pg) = agent_stuck_in_its_delete("twice");
    agent.signal("TERM");
    agent.signal("HUP");
    eventually(
        Duration::from_secs(5),
        "the agent to note the repeat",
        || {
            let log = agent.log_text();
            if log.contains("already stopping: the delete goes on") {
                Ok(())
            } else {
                Err(log)
            }
        },
    );
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the agent still runs its delete"
    );
    assert_eq!(pg.job_groups("twice").len(), 1, "not deleted yet");
    proxy.set(ProxyMode::Pass, true);
    pg.wait_gone("twice", Duration::from_secs(5));
    let status = agent.wait_exit(Duration::from_secs(5));
    assert_eq!(status.code(), Some(0), "{}", agent.log_text());
}

/// Only a second SIGINT (Ctrl-C twice) abandons the delete: exit 130 at once.
#[test]
fn a_second_sigint_abandons_the_delete() {
    let (mut agent, _proxy, pg) = agent_stuck_in_its_delete("ctrlc");
    let sent = Instant::now();
    agent.signal("INT");
    let status = agent.wait_exit(Duration::from_secs(2));
    assert!(sent.elapsed() < Duration::from_secs(2));
    assert_eq!(status.code(), Some(130), "{}", agent.log_text());
    assert!(agent
        .log_text()
        .contains("second SIGINT, exiting at once without cleanup"));
    assert_eq!(pg.job_groups("ctrlc").len(), 1, "the group is left behind");
}

/// SIGTERM while the Arkouda server hangs (a poll is stuck in its receive): the group is
/// still deleted at once.
#[test]
fn signal_during_a_stuck_poll() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("hang");
    let control = dir.path("control");
    let sim = Sim::start(&["--control", control.to_str().unwrap()]);
    let endpoint = sim.endpoint();
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &endpoint,
        "--pushgateway",
        &pg.url,
        "--job-id",
        "stuck",
        "--interval",
        "300ms",
        "--arkouda-timeout",
        "30s",
    ]);
    pg.wait_group("stuck", "the group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    std::fs::write(&control, "hang").unwrap();
    // Let a poll get stuck in the hung server.
    std::thread::sleep(Duration::from_millis(800));
    agent.signal("TERM");
    pg.wait_gone("stuck", Duration::from_secs(2));
    assert_eq!(agent.wait_exit(Duration::from_secs(2)).code(), Some(0));
}

/// SIGKILL leaves the groups behind; `delete --job-id` removes every group of that job
/// (whatever its other labels), and no group of another job or another exporter.
#[test]
fn delete_after_kill_removes_only_that_job() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let agent1 = spawn_agent(&run_args(&pg, "100", &endpoint));
    let mut second_args = run_args(&pg, "100", &endpoint);
    second_args.extend(["--labels", "instance=second/server"]);
    let agent2 = spawn_agent(&second_args);
    let _other_job = spawn_agent(&run_args(&pg, "200", &endpoint));
    pg.put_raw(
        "/metrics/job/other-exporter/slurm_job_id/100",
        "some_metric 1\n",
    );

    eventually(
        Duration::from_secs(15),
        "both groups of job 100 and job 200's",
        || {
            let n100 = pg
                .job_groups("100")
                .iter()
                .filter(|g| g.labels["job"] == "arkouda")
                .count();
            let n200 = pg.job_groups("200").len();
            if n100 == 2 && n200 == 1 {
                Ok(())
            } else {
                Err(format!("{n100} {n200}"))
            }
        },
    );
    agent1.signal("KILL");
    agent2.signal("KILL");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pg.job_groups("100").len(), 3, "SIGKILL leaves the groups");

    let (code, out, err) = run_agent(&["delete", "--job-id", "100", "--pushgateway", &pg.url]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("deleted {}/metrics/job/arkouda/", pg.url)),
        "{out}"
    );
    eventually(
        Duration::from_secs(2),
        "only the other exporter's group of job 100",
        || {
            let left: Vec<_> = pg.job_groups("100").into_iter().map(|g| g.labels).collect();
            if left.len() == 1 && left[0]["job"] == "other-exporter" {
                Ok(())
            } else {
                Err(format!("{left:?}"))
            }
        },
    );
    assert_eq!(
        pg.job_groups("200").len(),
        1,
        "job 200's group is untouched"
    );

    // Idempotent: nothing left to delete is success.
    let (code, out, _) = run_agent(&["delete", "--job-id", "100", "--pushgateway", &pg.url]);
    assert_eq!(code, 0);
    assert!(out.contains("no group of job 100"), "{out}");
}

/// `delete` fails (exit 1) when the Pushgateway cannot be reached.
#[test]
fn delete_fails_when_pushgateway_is_down() {
    let port = free_port();
    let (code, _, err) = run_agent(&[
        "delete",
        "--job-id",
        "1",
        "--pushgateway",
        &format!("http://127.0.0.1:{port}"),
        "--shutdown-timeout",
        "500ms",
    ]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot connect"), "{err}");
}

struct Case {
    args: Vec<String>,
    env: Option<(&'static str, &'static str)>,
    want: &'static str,
}

/// A configuration mistake: exit 2, one message naming the key and where it came from,
/// nothing started.
#[test]
fn configuration_errors_exit_2() {
    let dir = TempDir::new("cfg");
    let file = dir.path("config.toml");
    std::fs::write(&file, "interval = \"soon\"\n").unwrap();
    let bad_file = dir.path("bad.toml");
    std::fs::write(&bad_file, "pushgatewy = \"http://x\"\n").unwrap();

    let file = file.display().to_string();
    let bad_file = bad_file.display().to_string();
    let job = ["run", "--job-id", "1"];
    let with = |extra: &[&str]| -> Vec<String> {
        job.iter().chain(extra).map(|s| s.to_string()).collect()
    };
    let cases = vec![
        Case {
            args: with(&["--interval", "soon"]),
            env: None,
            want: "invalid value for `interval` = \"soon\" (from flag --interval)",
        },
        Case {
            args: with(&[]),
            env: Some(("POLLING_INTERVAL_SECONDS", "x")),
            want:
                "invalid value for `interval` = \"x\" (from environment POLLING_INTERVAL_SECONDS)",
        },
        Case {
            args: with(&["--config", &file]),
            env: None,
            want: "invalid value for `interval` = \"soon\" (from file ",
        },
        Case {
            args: with(&["--config", &bad_file]),
            env: None,
            want: "unknown key `pushgatewy` in file ",
        },
        Case {
            args: with(&["--config", "/nonexistent.toml"]),
            env: None,
            want: "cannot read config file /nonexistent.toml",
        },
        Case {
            args: vec!["run".into()],
            env: None,
            want: "missing `job_id`",
        },
        Case {
            args: with(&["--metrics-port", "99999"]),
            env: None,
            want: "invalid value for `metrics_port` = \"99999\" (from flag --metrics-port)",
        },
    ];
    for Case { args, env, want } in cases {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut cmd = agent_command(&args);
        if let Some((k, v)) = env {
            cmd.env(k, v);
        }
        let (code, out, err) = run_agent_cmd(cmd);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(err.contains(want), "{args:?}\n got: {err}\nwant: {want}");
        assert_eq!(err.lines().count(), 1, "one line: {err}");
    }
    // clap's own mistakes are exit 2 too, and secrets have no flag.
    let (code, _, err) = run_agent(&["run", "--pushgateway-password", "x"]);
    assert_eq!(code, 2, "{err}");
}

/// Two agents for one group: the second refuses with a clear message (exit 1), and the
/// first keeps pushing. Another group of the same job (a second server) is allowed.
#[test]
fn second_agent_for_a_group_refuses() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let dir = TempDir::new("lock");
    let lock_dir = dir.0.to_str().unwrap();
    let mut args = run_args(&pg, "lock", &endpoint);
    args.extend(["--lock-dir", lock_dir]);
    let first = spawn_agent(&args);
    pg.wait_group("lock", "the first agent's group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let (code, _, err) = run_agent(&args);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("another agent (pid {}) is already pushing group /metrics/job/arkouda/slurm_job_id/lock", first.pid())),
        "{err}"
    );
    let mut second_server = args.clone();
    second_server.extend(["--labels", "instance=b"]);
    let mut second = spawn_agent(&second_server);
    eventually(Duration::from_secs(10), "two groups of the job", || {
        let n = pg.job_groups("lock").len();
        if n == 2 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
    // Two groups, two locks; both files gone once their agents have stopped cleanly.
    let locks = || std::fs::read_dir(&dir.0).map(|d| d.count()).unwrap_or(0);
    assert_eq!(locks(), 2);
    let mut first = first;
    for a in [&mut first, &mut second] {
        a.signal("TERM");
        assert!(a.wait_exit(Duration::from_secs(10)).success());
    }
    assert_eq!(locks(), 0, "lock files left behind");

    // An agent that pushes to no Pushgateway (scrape mode) takes no lock: it starts beside
    // the job's pushing agent and serves the same job.
    let first = spawn_agent(&args);
    pg.wait_group("lock", "the pushing agent's group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let addr = format!("127.0.0.1:{}", free_port());
    let mut scrape_args = args.clone();
    scrape_args.extend(["--listen", &addr, "--no-push"]);
    let mut scraper = spawn_agent(&scrape_args);
    let http = reqwest::blocking::Client::new();
    let body = eventually(
        Duration::from_secs(10),
        "the scrape-only agent's /metrics",
        || {
            http.get(format!("http://{addr}/metrics"))
                .timeout(Duration::from_secs(2))
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.text())
                .map_err(|e| e.to_string())
        },
    );
    assert!(body.contains("slurm_job_id=\"lock\""), "{body}");
    assert_eq!(locks(), 1, "only the pushing agent holds a lock");
    let mut first = first;
    for a in [&mut scraper, &mut first] {
        a.signal("TERM");
        assert!(a.wait_exit(Duration::from_secs(10)).success());
    }
}

/// Kills a process by pid when dropped (for a daemon that is no child of the test).
struct KillOnDrop(i32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn session_id(pid: i32) -> Option<i32> {
    // Field 6 of /proc/PID/stat, after the parenthesised command name.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// `run --daemonize --pid-file`: returns at once with the agent detached in its own
/// session, logging to --log-file; SIGTERM to the pid in the file deletes the group and
/// removes the pid file.
#[test]
fn daemonize_with_pid_and_log_file() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let dir = TempDir::new("daemon");
    let pid_file = dir.path("agent.pid");
    let log_file = dir.path("agent.log");
    let mut args = run_args(&pg, "daemon", &endpoint);
    args.extend([
        "--daemonize",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "--log-file",
        log_file.to_str().unwrap(),
    ]);
    let started = Instant::now();
    let (code, out, err) = run_agent(&args);
    assert_eq!(code, 0, "{out}{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    // The caller's pipes were released: output() returned, so nothing held them.
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("pid file")
        .trim()
        .parse()
        .expect("pid");
    let _guard = KillOnDrop(pid);
    assert_eq!(
        session_id(pid),
        Some(pid),
        "the daemon leads its own session"
    );
    pg.wait_group("daemon", "the daemon's group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    assert!(std::fs::read_to_string(&log_file)
        .unwrap_or_default()
        .contains("agent started"));

    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    pg.wait_gone("daemon", Duration::from_secs(2));
    eventually(
        Duration::from_secs(3),
        "the daemon to exit and remove its pid file",
        || {
            if session_id(pid).is_none() && !pid_file.exists() {
                Ok(())
            } else {
                Err("still there".into())
            }
        },
    );

    // A daemon that cannot start reports why to its caller and exits 1.
    let mut bad = run_args(&pg, "daemon2", &endpoint);
    bad.extend(["--daemonize", "--pid-file", "/nonexistent/dir/agent.pid"]);
    let (code, _, err) = run_agent(&bad);
    assert_eq!(code, 1);
    assert!(
        err.contains("cannot write the pid file /nonexistent/dir/agent.pid"),
        "{err}"
    );

    // So does one that fails later in its start (its CA file cannot be read): the caller
    // is told only once the agent is up. (A listen address that is taken is no such
    // failure: see `a_taken_listen_address_is_not_fatal`.)
    let mut bad_ca = run_args(&pg, "daemon3", &endpoint);
    bad_ca.extend([
        "--daemonize",
        "--pushgateway-ca-file",
        "/nonexistent/ca.pem",
    ]);
    let (code, _, err) = run_agent(&bad_ca);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot read CA file /nonexistent/ca.pem"),
        "{err}"
    );
}

/// `--watch-pid`: the agent ends, deleting its group, when the watched process exits.
#[test]
fn watch_pid_ends_with_the_server() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let endpoint = sim.endpoint();
    let mut server = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let server_pid = server.id().to_string();
    let mut args = run_args(&pg, "watch", &endpoint);
    args.extend(["--watch-pid", &server_pid]);
    let mut agent = spawn_agent(&args);
    pg.wait_group("watch", "the group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    server.kill().unwrap();
    server.wait().unwrap();
    pg.wait_gone("watch", Duration::from_secs(2));
    assert_eq!(agent.wait_exit(Duration::from_secs(2)).code(), Some(0));
    assert!(agent.log_text().contains("the watched process has exited"));
}

/// On a Pushgateway shared by clusters, `delete --job-id --cluster` leaves the same job id
/// of another cluster alone.
#[test]
fn delete_respects_the_cluster() {
    let pg = Pushgateway::start();
    for cluster in ["a", "b"] {
        pg.put_raw(
            &format!("/metrics/job/arkouda/slurm_job_id/300/cluster/{cluster}"),
            "arkouda_up 1\n",
        );
    }
    let (code, out, err) = run_agent(&[
        "delete",
        "--job-id",
        "300",
        "--cluster",
        "a",
        "--pushgateway",
        &pg.url,
    ]);
    assert_eq!(code, 0, "{out}{err}");
    eventually(Duration::from_secs(2), "only cluster b's group", || {
        let left: Vec<_> = pg.job_groups("300").into_iter().map(|g| g.labels).collect();
        if left.len() == 1 && left[0]["cluster"] == "b" {
            Ok(())
        } else {
            Err(format!("{left:?}"))
        }
    });
}

/// A `listen` address that is taken (two jobs on one node sharing the site's port) is
/// not fatal: the agent pushes with `arkouda_agent_listen_errors_total` > 0, logs the
/// failure once, and serves `/metrics` as soon as the port is free.
#[test]
fn a_taken_listen_address_is_not_fatal() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "busyport",
        "--interval",
        "300ms",
        "--listen",
        &addr,
    ]);
    let g = pg.wait_group("busyport", "a push counting failed binds", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
            && g.value("arkouda_agent_listen_errors_total", &[])
                .is_some_and(|n| n >= 2.0)
    });
    assert!(g.value("arkouda_agent_listen_errors_total", &[]).unwrap() >= 2.0);
    let log = agent.log_text();
    assert_eq!(count_lines(&log, "cannot serve GET /metrics"), 1, "{log}");
    assert!(log.contains(&format!("cannot listen on {addr}")), "{log}");

    drop(taken);
    let http = reqwest::blocking::Client::new();
    let body = eventually(
        Duration::from_secs(10),
        "GET /metrics on the freed port",
        || {
            let r = http
                .get(format!("http://{addr}/metrics"))
                .timeout(Duration::from_secs(2))
                .send()
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                r.text().map_err(|e| e.to_string())
            } else {
                Err(r.status().to_string())
            }
        },
    );
    assert!(
        body.contains("arkouda_up{job=\"arkouda\",slurm_job_id=\"busyport\"} 1\n"),
        "{body}"
    );
    let log = agent.log_text();
    assert_eq!(count_lines(&log, "cannot serve GET /metrics"), 1, "{log}");
    assert_eq!(count_lines(&log, "the address is free again"), 1, "{log}");
    // Pushing never stopped.
    pg.wait_group("busyport", "the group still pushed", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
}

/// Sinks are independent: with the Pushgateway stalled (it accepts and never answers), the
/// poll goes on every interval and scrape mode serves each new cycle; the stalled sink only
/// ever gets the newest cycle. Before the sink step a stuck push held the cycle for its
/// whole timeout (2 polls in 5 s at a 1 s interval).
#[test]
fn a_stalled_pushgateway_holds_up_neither_the_poll_nor_scrape_mode() {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Stall);
    let sim = Sim::start(&[]);
    let addr = format!("127.0.0.1:{}", free_port());
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &proxy.url(),
        "--job-id",
        "stalled",
        "--interval",
        "200ms",
        "--push-timeout",
        "5s",
        "--listen",
        &addr,
    ]);
    let http = reqwest::blocking::Client::new();
    // The sim's tick is the number of polls: `create` counts 2 per tick.
    let creates = || -> Result<f64, String> {
        let body = http
            .get(format!("http://{addr}/metrics"))
            .timeout(Duration::from_secs(2))
            .send()
            .and_then(|r| r.text())
            .map_err(|e| e.to_string())?;
        body.lines()
            .find(|l| l.starts_with("arkouda_requests_total{") && l.contains("command=\"create\""))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("no create count in {body}"))
    };
    let first = eventually(Duration::from_secs(10), "a first scrape", creates);
    let started = std::time::Instant::now();
    // 10 more polls within 4 s at a 200 ms interval, while every push hangs for 5 s.
    let later = eventually(Duration::from_secs(4), "ten more polls", || {
        let n = creates()?;
        if n >= first + 20.0 {
            Ok(n)
        } else {
            Err(format!("create {n}, first {first}"))
        }
    });
    eprintln!(
        "{} polls in {:?} with the Pushgateway stalled",
        (later - first) / 2.0,
        started.elapsed()
    );
    agent.signal("TERM");
    agent.wait_exit(Duration::from_secs(15));
}

/// `summary_file`: at exit the agent writes the job's summary, exactly the contract's
/// fields, with the simulator's numbers; `%j` is the job id. A summary that cannot be
/// written is logged and leaves the exit code 0.
#[test]
fn the_job_summary_is_written_at_exit() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2", "--release", "2024.04.19"]);
    let dir = TempDir::new("summary");
    let template = dir.path("job-%j.json");
    let endpoint = sim.endpoint();
    // An agent of job `id` writing its summary to `summary`, with `extra` flags.
    let agent_of = |id: &str, summary: &str, extra: &[&str]| {
        let mut args = vec![
            "run",
            "--arkouda",
            &endpoint,
            "--pushgateway",
            &pg.url,
            "--job-id",
            id,
            "--interval",
            "200ms",
            "--summary-file",
            summary,
        ];
        args.extend_from_slice(extra);
        spawn_agent(&args)
    };
    let mut agent = agent_of("5150", template.to_str().unwrap(), &["--cluster", "c9"]);
    // Three polls at least (tick 3: `create` counts 6).
    pg.wait_group("5150", "three polls", |g| {
        g.value("arkouda_requests_total", &[("command", "create")])
            .is_some_and(|v| v >= 6.0)
    });
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(0));
    let path = dir.path("job-5150.json");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    let mut want = vec![
        "job_id",
        "cluster",
        "started",
        "ended",
        "duration_seconds",
        "polls",
        "failed_polls",
        "server",
        "requests",
        "errors",
        "peak_memory_bytes",
    ];
    want.sort_unstable();
    let mut got = keys.clone();
    got.sort_unstable();
    assert_eq!(got, want, "{v}");
    assert_eq!(v["job_id"], "5150");
    assert_eq!(v["cluster"], "c9");
    assert_eq!(v["server"]["version"], "v2024.04.19");
    assert_eq!(v["server"]["locales"], 2);
    let polls = v["polls"].as_u64().unwrap();
    assert!(polls >= 3, "{v}");
    assert_eq!(v["failed_polls"], 0);
    // Tick k = polls: create 2k for one user, memory k × 1e8 on every locale.
    assert_eq!(v["requests"]["create"].as_u64(), Some(2 * polls), "{v}");
    assert_eq!(v["requests"]["sum"].as_u64(), Some(polls), "{v}");
    assert_eq!(
        v["peak_memory_bytes"]["1"].as_u64(),
        Some(polls * 100_000_000),
        "{v}"
    );
    let started = v["started"].as_str().unwrap();
    assert!(started.ends_with('Z') && started.len() == 20, "{started}");
    assert!(v["duration_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["errors"], serde_json::json!({"all": 0}), "{v}");
    // Only the summary in the directory: no temporary file left.
    let names: Vec<_> = std::fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.contains("5150") || n.ends_with(".tmp"))
        .collect();
    assert_eq!(names, vec!["job-5150.json".to_string()]);

    // With a linger the summary is written at the stop, before the linger: under Slurm
    // the Epilog kills a lingering agent, which would otherwise never write it.
    let mut lingering = agent_of("5152", template.to_str().unwrap(), &["--linger", "60s"]);
    pg.wait_group("5152", "a push", |_| true);
    lingering.signal("TERM");
    let path = dir.path("job-5152.json");
    let text = eventually(Duration::from_secs(3), "the summary at the stop", || {
        std::fs::read_to_string(&path).map_err(|e| e.to_string())
    });
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["job_id"], "5152");
    assert!(v["polls"].as_u64().unwrap() >= 1, "{v}");
    assert!(
        lingering.child.try_wait().unwrap().is_none(),
        "the agent lingers on after writing the summary"
    );
    lingering.signal("KILL");
    lingering.wait_exit(Duration::from_secs(5));

    // A directory that does not exist: logged, exit 0.
    let mut agent = agent_of("5151", "/nonexistent/dir/%j.json", &[]);
    pg.wait_group("5151", "a push", |_| true);
    agent.signal("TERM");
    assert_eq!(agent.wait_exit(Duration::from_secs(10)).code(), Some(0));
    assert!(
        agent
            .log_text()
            .contains("cannot write the job summary (the exit code is not affected)"),
        "{}",
        agent.log_text()
    );
}

/// `dashboard_url`: arkouda-srun tells its user where the job's dashboard is, with the
/// job id and cluster filled in, when the agent starts; `dashboard-url` prints the link.
#[test]
fn arkouda_srun_prints_the_dashboard_link() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("dashboard");
    let conf = dir.path("config.toml");
    std::fs::write(
        &conf,
        format!(
            "pushgateway = \"{}\"\ncluster = \"c1\"\ndashboard_url = \"https://grafana.example/d/arkouda-job?var-job_id={{job_id}}&var-cluster={{cluster}}\"\n",
            pg.url
        ),
    )
    .unwrap();
    let out =
        std::process::Command::new(concat!(env!("CARGO_MANIFEST_DIR"), "/slurm/arkouda-srun"))
            .arg("0.5")
            .env("SLURM_JOB_ID", "777")
            .env("ARKOUDA_SERVER", "/bin/sleep")
            .env("ARKOUDA_PUSH_AGENT_BIN", AGENT)
            .env("ARKOUDA_PUSH_AGENT_CONFIG", &conf)
            .env("ARKOUDA_PUSH_AGENT_LOCK_DIR", dir.0.to_str().unwrap())
            .env("TMPDIR", dir.0.to_str().unwrap())
            .output()
            .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.lines().any(|l| l
            == "arkouda-srun: dashboard: https://grafana.example/d/arkouda-job?var-job_id=777&var-cluster=c1"),
        "{err}"
    );
    // Without dashboard_url: nothing printed, exit 0.
    let (code, out, err) = run_agent(&["dashboard-url", "--job-id", "1", "--pushgateway", &pg.url]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
}

/// slurm/task-prolog.sh, as Slurm runs it for a task: with dashboard_url set and the
/// Prolog's files of the run on this node, task 0 gets exactly the `print` line (Slurm puts
/// its text into the job's output); any other task, or a job the Prolog started no agent
/// for, gets nothing. Always exit 0.
#[test]
fn the_task_prolog_prints_the_dashboard_link() {
    let dir = TempDir::new("taskprolog");
    let state = dir.path("state");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::write(state.join("31337.pid"), "1\n").unwrap();
    let conf = dir.path("config.toml");
    std::fs::write(
        &conf,
        format!(
            "dashboard_url = \"https://grafana.example/d/arkouda-job?var-job_id={{job_id}}&var-cluster={{cluster}}\"\n[slurm]\nstate_dir = \"{}\"\n",
            state.display()
        ),
    )
    .unwrap();
    let task = |job: &str, procid: &str| {
        let out = std::process::Command::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/slurm/task-prolog.sh"
        ))
        .env_clear()
        .env("ARKOUDA_PUSH_AGENT_BIN", AGENT)
        .env("ARKOUDA_PUSH_AGENT_CONFIG", &conf)
        .env("SLURM_JOB_ID", job)
        .env("SLURM_CLUSTER_NAME", "alpha")
        .env("SLURM_PROCID", procid)
        .output()
        .unwrap();
        assert_eq!(out.status.code(), Some(0));
        String::from_utf8(out.stdout).unwrap()
    };
    assert_eq!(
        task("31337", "0"),
        "print arkouda-srun: dashboard: https://grafana.example/d/arkouda-job?var-job_id=31337&var-cluster=alpha\n"
    );
    assert_eq!(task("31337", "3"), "");
    assert_eq!(task("31338", "0"), "", "no agent of this job on this node");
}
