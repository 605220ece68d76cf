//! Faults: nothing hangs, nothing is lost. Every fault of the Arkouda server and of the
//! Pushgateway, injected for real (the simulator's fault modes, a Pushgateway stopped and
//! restarted, a TCP proxy that refuses, stalls or answers 5xx in front of a real
//! Pushgateway), must be survived, recovered from without a restart, counted in the
//! agent's own series, and logged once per state change.

use std::time::{Duration, Instant};

use crate::common::*;

const LOST: &str = "Arkouda metrics server lost";
const WAITING: &str = "waiting for the Arkouda metrics server";
const ANSWERING: &str = "Arkouda metrics server is answering";
const PUSH_FAILING: &str = "cannot push to the Pushgateway";
const PUSHING: &str = "pushing to the Pushgateway";

fn up(g: &Group) -> Option<f64> {
    g.value("arkouda_up", &[])
}

/// Arkouda is not up when the agent starts and comes up 10 s later: the agent pushes
/// arkouda_up 0 meanwhile, then real data, with no restart.
#[test]
fn server_comes_up_late() {
    let pg = Pushgateway::start();
    let port = free_port();
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &format!("tcp://127.0.0.1:{port}"),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "late",
        "--interval",
        "500ms",
        "--arkouda-timeout",
        "300ms",
    ]);
    let started = Instant::now();
    let g = pg.wait_group("late", "arkouda_up 0", |g| up(g) == Some(0.0));
    assert!(g.all("arkouda_requests_total").is_empty());
    let wait = Duration::from_secs(10).saturating_sub(started.elapsed());
    std::thread::sleep(wait);
    let g = pg.wait_group("late", "arkouda_up 0 still, with errors counted", |g| {
        up(g) == Some(0.0)
            && g.value("arkouda_agent_poll_errors_total", &[])
                .unwrap_or(0.0)
                >= 10.0
    });
    assert_eq!(
        g.value("arkouda_agent_last_success_timestamp_seconds", &[]),
        Some(0.0)
    );
    let _sim = Sim::start_on(port, &[]);
    let g = pg.wait_group("late", "data", |g| up(g) == Some(1.0));
    assert_eq!(
        g.value("arkouda_requests_total", &[("command", "create")]),
        Some(2.0)
    );
    assert!(agent.child.try_wait().unwrap().is_none(), "no restart");
    let log = agent.log_text();
    assert_eq!(count_lines(&log, WAITING), 1, "{log}");
    assert_eq!(count_lines(&log, ANSWERING), 1, "{log}");
}

/// The metrics daemon stops answering mid-run: arkouda_up 0 within two intervals (the
/// stuck REQ socket is replaced), data again when it answers.
#[test]
fn server_hangs_then_answers_again() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("hang");
    let control = dir.path("control");
    let sim = Sim::start(&["--control", control.to_str().unwrap()]);
    let agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "hang",
        "--interval",
        "500ms",
        "--arkouda-timeout",
        "300ms",
    ]);
    pg.wait_group("hang", "data", |g| up(g) == Some(1.0));
    std::fs::write(&control, "hang").unwrap();
    let hung = Instant::now();
    pg.wait_group("hang", "arkouda_up 0", |g| up(g) == Some(0.0));
    assert!(
        hung.elapsed() <= Duration::from_millis(1000 + 300),
        "took {:?}",
        hung.elapsed()
    );
    std::thread::sleep(Duration::from_secs(1));
    let before = pg.job_groups("hang")[0].value("arkouda_requests_total", &[("command", "create")]);
    assert_eq!(before, None, "no stale data while down");
    std::fs::remove_file(&control).unwrap();
    let g = pg.wait_group("hang", "data again", |g| up(g) == Some(1.0));
    assert!(g.value("arkouda_agent_poll_errors_total", &[]).unwrap() >= 2.0);
    let log = agent.log_text();
    assert_eq!(count_lines(&log, LOST), 1, "{log}");
    assert_eq!(count_lines(&log, ANSWERING), 2, "{log}");
}

/// The server dies and restarts: its counters start again from zero. They are exported as
/// counters, which Prometheus reads as a reset; the agent's own counters keep growing.
#[test]
fn server_restarts_and_counters_reset() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let port = sim.metrics_port;
    let _agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "restart",
        "--interval",
        "300ms",
        "--arkouda-timeout",
        "300ms",
    ]);
    pg.wait_group("restart", "a few ticks", |g| {
        g.value("arkouda_requests_total", &[("command", "create")])
            .unwrap_or(0.0)
            >= 8.0
    });
    drop(sim);
    let g = pg.wait_group("restart", "arkouda_up 0", |g| up(g) == Some(0.0));
    let errors = g.value("arkouda_agent_poll_errors_total", &[]).unwrap();
    let _sim = Sim::start_on(port, &[]);
    let g = pg.wait_group("restart", "data from the new server", |g| {
        up(g) == Some(1.0)
            && g.value("arkouda_requests_total", &[("command", "create")])
                .unwrap_or(99.0)
                < 8.0
    });
    assert!(g.value("arkouda_agent_poll_errors_total", &[]).unwrap() >= errors);
}

/// Garbage, truncated, oversized and ERROR replies: counted, arkouda_up 0, one log line
/// each time the server goes bad, no crash; unknown categories are skipped and counted.
#[test]
fn bad_replies_are_counted_and_logged_once() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("bad");
    let control = dir.path("control");
    let sim = Sim::start(&["--control", control.to_str().unwrap()]);
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "bad",
        "--interval",
        "200ms",
        "--arkouda-timeout",
        "300ms",
        "--max-reply-bytes",
        "100000",
    ]);
    pg.wait_group("bad", "data", |g| up(g) == Some(1.0));
    let faults = ["garbage", "truncated", "error", "oversized:300000"];
    for fault in faults {
        std::fs::write(&control, fault).unwrap();
        let errors = pg.job_groups("bad")[0]
            .value("arkouda_agent_poll_errors_total", &[])
            .unwrap();
        pg.wait_group("bad", &format!("{fault}: down with errors counted"), |g| {
            up(g) == Some(0.0)
                && g.value("arkouda_agent_poll_errors_total", &[]).unwrap() >= errors + 3.0
        });
        std::fs::write(&control, "none").unwrap();
        pg.wait_group("bad", &format!("after {fault}: data again"), |g| {
            up(g) == Some(1.0)
        });
    }
    std::fs::write(&control, "unknown-categories").unwrap();
    let g = pg.wait_group("bad", "unknown records skipped", |g| {
        up(g) == Some(1.0)
            && g.value("arkouda_agent_skipped_records_total", &[])
                .unwrap_or(0.0)
                >= 4.0
    });
    assert!(g
        .value("arkouda_requests_total", &[("command", "create")])
        .is_some());
    assert!(agent.child.try_wait().unwrap().is_none(), "still running");
    let log = agent.log_text();
    assert_eq!(count_lines(&log, LOST), faults.len(), "{log}");
    assert!(log.contains("reply is not JSON"), "{log}");
    assert!(
        log.contains("server answered with an error: Error: simulated failure"),
        "{log}"
    );
    // Each unknown thing is reported once, however many cycles carry it.
    assert_eq!(count_lines(&log, "category FUTURE_CATEGORY"), 1, "{log}");
    assert_eq!(count_lines(&log, "scope GALAXY"), 1, "{log}");
}

fn run_behind_proxy(pg_url: &str, job: &str, extra: &[&str], sim: &Sim) -> Proc {
    let endpoint = sim.endpoint();
    let mut args = vec![
        "run",
        "--arkouda",
        &endpoint,
        "--pushgateway",
        pg_url,
        "--job-id",
        job,
        "--interval",
        "500ms",
    ];
    if !extra.contains(&"--push-timeout") {
        args.extend(["--push-timeout", "300ms"]);
    }
    args.extend(extra);
    spawn_agent(&args)
}

/// The Pushgateway is down at start: the agent keeps polling, counts the failed pushes,
/// and the group appears within one interval of the Pushgateway's return.
#[test]
fn pushgateway_down_at_start() {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Refuse);
    let sim = Sim::start(&[]);
    let agent = run_behind_proxy(&proxy.url(), "pgdown", &[], &sim);
    eventually(Duration::from_secs(10), "failed pushes logged", || {
        if agent.log_text().contains(PUSH_FAILING) {
            Ok(())
        } else {
            Err("no".into())
        }
    });
    std::thread::sleep(Duration::from_secs(1));
    proxy.set(ProxyMode::Pass, true);
    let back = Instant::now();
    let g = pg.wait_group("pgdown", "the group", |g| up(g) == Some(1.0));
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "{:?}",
        back.elapsed()
    );
    // Polling went on meanwhile: the simulator's tick moved on.
    assert!(
        g.value("arkouda_requests_total", &[("command", "create")])
            .unwrap()
            >= 4.0
    );
    let g = pg.wait_group("pgdown", "push errors reported", |g| {
        g.value("arkouda_agent_push_errors_total", &[])
            .unwrap_or(0.0)
            >= 1.0
    });
    assert_eq!(up(&g), Some(1.0));
    let log = agent.log_text();
    assert_eq!(count_lines(&log, PUSH_FAILING), 1, "{log}");
    assert_eq!(count_lines(&log, PUSHING), 1, "{log}");
}

/// The Pushgateway restarts mid-run and loses its groups: the group is back within one
/// interval of its return.
#[test]
fn pushgateway_restart_restores_the_group() {
    let pg = Pushgateway::start();
    let port = pg.port();
    let sim = Sim::start(&[]);
    let _agent = run_behind_proxy(&pg.url, "pgrestart", &[], &sim);
    pg.wait_group("pgrestart", "the group", |g| up(g) == Some(1.0));
    drop(pg);
    std::thread::sleep(Duration::from_millis(700));
    let pg = Pushgateway::start_on(port);
    let back = Instant::now();
    pg.wait_group("pgrestart", "the group restored", |g| up(g) == Some(1.0));
    assert!(
        back.elapsed() < Duration::from_millis(1500),
        "{:?}",
        back.elapsed()
    );
}

/// A Pushgateway slower than the timeout, then one answering 503: pushes fail and are
/// counted, polling goes on, and everything is restored once it answers properly.
#[test]
fn pushgateway_slow_then_5xx() {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Pass);
    let sim = Sim::start(&[]);
    let agent = run_behind_proxy(&proxy.url(), "slow", &[], &sim);
    pg.wait_group("slow", "the group", |g| up(g) == Some(1.0));
    for (mode, kind) in [
        (ProxyMode::Stall, "timed out"),
        (ProxyMode::Status(503), "HTTP 503"),
    ] {
        proxy.set(mode, true);
        let before = pg.job_groups("slow")[0]
            .value("arkouda_requests_total", &[("command", "create")])
            .unwrap();
        eventually(Duration::from_secs(10), "the failure logged", || {
            let log = agent.log_text();
            if log
                .lines()
                .any(|l| l.contains(PUSH_FAILING) && l.contains(kind))
            {
                Ok(())
            } else {
                Err(log)
            }
        });
        std::thread::sleep(Duration::from_secs(1));
        proxy.set(ProxyMode::Pass, true);
        let g = pg.wait_group("slow", "pushes again, with newer data", |g| {
            g.value("arkouda_requests_total", &[("command", "create")])
                .unwrap_or(0.0)
                > before + 2.0
        });
        assert!(g.value("arkouda_agent_push_errors_total", &[]).unwrap() >= 1.0);
    }
    let log = agent.log_text();
    // One line per change of state: at least one per fault (a fault may show first as a
    // reset connection, then as its status, which is a change of state too), not one per
    // failed cycle.
    let failing = count_lines(&log, PUSH_FAILING);
    assert!((2..=4).contains(&failing), "{log}");
    // A 503 may pass on a later try: retried with backoff inside the cycle.
    assert!(
        log.lines()
            .any(|l| l.contains("retrying the request") && l.contains("HTTP 503")),
        "{log}"
    );
}

/// The Pushgateway answers 400 (another group holds a metric of the same name with
/// another type): not retried in a loop, counted, logged once; pushing works again once
/// the conflict is gone.
#[test]
fn pushgateway_400_inconsistent_metrics() {
    let pg = Pushgateway::start();
    pg.put_raw(
        "/metrics/job/intruder",
        "# TYPE arkouda_up counter\narkouda_up 1\n",
    );
    let sim = Sim::start(&[]);
    let agent = run_behind_proxy(&pg.url, "conflict", &[], &sim);
    eventually(Duration::from_secs(10), "the 400 logged", || {
        let log = agent.log_text();
        if log.contains("HTTP 400") {
            Ok(())
        } else {
            Err(log)
        }
    });
    // A rejected PUT still leaves an empty group holding push_failure_time_seconds.
    assert!(pg.job_groups("conflict").iter().all(|g| up(g).is_none()));
    std::thread::sleep(Duration::from_secs(1));
    pg.delete_raw("/metrics/job/intruder");
    let g = pg.wait_group("conflict", "the group", |g| up(g) == Some(1.0));
    assert!(g.value("arkouda_agent_push_errors_total", &[]).unwrap() >= 2.0);
    let log = agent.log_text();
    assert_eq!(count_lines(&log, PUSH_FAILING), 1, "{log}");
    // A 400 is not retried within a cycle: one PUT per cycle, not a storm.
    let retries: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("retrying the request"))
        .collect();
    assert!(retries.is_empty(), "{retries:?}");
}

/// SIGTERM while a push is stuck: the stuck push is abandoned, the group still deleted.
#[test]
fn sigterm_while_a_push_is_stuck() {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Pass);
    let sim = Sim::start(&[]);
    let mut agent = run_behind_proxy(&proxy.url(), "stuckpush", &["--push-timeout", "30s"], &sim);
    pg.wait_group("stuckpush", "the group", |g| up(g) == Some(1.0));
    // Stall what is open now and the next push; new connections afterwards pass again.
    proxy.set(ProxyMode::Stall, true);
    std::thread::sleep(Duration::from_millis(800));
    proxy.set(ProxyMode::Pass, false);
    agent.signal("TERM");
    pg.wait_gone("stuckpush", Duration::from_secs(2));
    assert_eq!(agent.wait_exit(Duration::from_secs(2)).code(), Some(0));
}

/// SIGINT while stopping (Ctrl-C after a SIGTERM) exits at once, even while the final
/// delete hangs. A second SIGTERM does not (lifecycle::a_second_sigterm_does_not_abandon_the_delete).
#[test]
fn sigint_while_stopping_exits_at_once() {
    let pg = Pushgateway::start();
    let proxy = FaultProxy::start(pg.port(), ProxyMode::Pass);
    let sim = Sim::start(&[]);
    let mut agent = run_behind_proxy(&proxy.url(), "twice", &["--shutdown-timeout", "60s"], &sim);
    pg.wait_group("twice", "the group", |g| up(g) == Some(1.0));
    proxy.set(ProxyMode::Stall, true);
    agent.signal("TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "the delete hangs"
    );
    let second = Instant::now();
    agent.signal("INT");
    let status = agent.wait_exit(Duration::from_secs(1));
    assert!(second.elapsed() < Duration::from_millis(500));
    assert_eq!(status.code(), Some(128 + 2));
}

/// Label values with `/`, quotes, backslashes, newlines, non-ASCII and empty strings: the
/// push is accepted and every value reads back unchanged; `promtool check metrics`
/// accepts the exposition text.
#[test]
fn awkward_label_values_round_trip() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--weird-names"]);
    let (code, _, err) = run_agent(&[
        "once",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "weird",
        "--labels",
        "instance=a/b",
    ]);
    assert_eq!(code, 0, "{err}");
    let g = pg.wait_group("weird", "the group", |_| true);
    assert_eq!(g.labels["instance"], "a/b");
    for name in ["a/b", "q\"uote", "back\\slash", "new\nline", "ünï code"] {
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", name)]),
            Some(1.0),
            "{name:?}"
        );
    }
    // An empty label value is the same as no label in Prometheus.
    assert!(g
        .all("arkouda_requests_total")
        .iter()
        .any(|s| s.labels.get("command").is_none_or(|c| c.is_empty())));

    let (code, out, err) = run_agent(&[
        "once",
        "--dry-run",
        "--arkouda",
        &sim.endpoint(),
        "--job-id",
        "weird",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut promtool = std::process::Command::new("/usr/bin/promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("promtool (Debian package prometheus)");
    std::io::Write::write_all(promtool.stdin.as_mut().unwrap(), out.as_bytes()).unwrap();
    let res = promtool.wait_with_output().unwrap();
    assert!(
        res.status.success(),
        "promtool: {}{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
}
