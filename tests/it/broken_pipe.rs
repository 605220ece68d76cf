//! A reader that goes away early (`sweep | head -1`, a closed pipe) ends the output
//! quietly: no panic, the work still all done, the exit code what it would have been.

use std::process::{Command, Stdio};

use crate::common::*;
use arkouda_push_agent::translate::AGENT_LEASE;

/// Groups of `n` jobs whose leases expired an hour ago (a sweep without the scheduler
/// deletes them all).
fn expired_groups(pg: &Pushgateway, first: u32, n: u32) {
    let body = format!(
        "# HELP {n} {h}\n# TYPE {n} gauge\n{n} {e}\n",
        n = AGENT_LEASE.name,
        h = AGENT_LEASE.help,
        e = now() - 3600.0
    );
    for id in first..first + n {
        pg.put_raw(&format!("/metrics/job/arkouda/slurm_job_id/{id}"), &body);
    }
}

fn ours(pg: &Pushgateway) -> usize {
    pg.groups()
        .iter()
        .filter(|g| g.labels.get("job").map(String::as_str) == Some("arkouda"))
        .count()
}

/// Runs `cmd` with standard output and standard error on a pipe whose reader has already
/// gone: every write fails with EPIPE. Returns the exit code (None: killed by a signal).
fn with_closed_pipe(mut cmd: Command) -> Option<i32> {
    let (reader, writer) = std::io::pipe().expect("pipe");
    drop(reader);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(writer.try_clone().expect("pipe"))
        .stderr(writer)
        .status()
        .expect("run the agent");
    status.code()
}

/// The sweep's output into a closed pipe: every deletion still happens, exit 0.
#[test]
fn sweep_into_a_closed_pipe_deletes_everything() {
    let pg = Pushgateway::start();
    expired_groups(&pg, 1000, 40);
    let args = [
        "sweep",
        "--pushgateway",
        &pg.url,
        "--no-scheduler",
        "--grace",
        "1s",
    ];
    let code = with_closed_pipe(agent_command(&args));
    assert_eq!(code, Some(0), "no panic (101), no SIGPIPE death (None)");
    assert_eq!(ours(&pg), 0, "every group deleted");
}

/// `sweep | head -1` in a shell: the first line reaches `head`, the sweep goes on past
/// the broken pipe part-way through its deletions, and its exit code is 0.
#[test]
fn sweep_piped_into_head() {
    let pg = Pushgateway::start();
    expired_groups(&pg, 2000, 200);
    let mut cmd = agent_command(&[]);
    let env: Vec<(String, String)> = cmd
        .get_envs()
        .filter_map(|(k, v)| Some((k.to_str()?.to_string(), v?.to_str()?.to_string())))
        .collect();
    cmd = Command::new("/bin/bash");
    // Both streams into the pipe; at info level the first line is the sweep's own, and a
    // log line follows for every group deleted.
    cmd.env_clear()
        .envs(env)
        .env("ARKOUDA_PUSH_AGENT_LOG_LEVEL", "info")
        .arg("-c")
        .arg(r#""$@" 2>&1 | head -1; exit "${PIPESTATUS[0]}""#)
        .args(["bash", AGENT, "sweep", "--pushgateway", &pg.url])
        .args(["--no-scheduler", "--grace", "1s"]);
    let (code, out, err) = run_agent_cmd(cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(
        out.starts_with("scheduler check skipped (no_scheduler)"),
        "{out}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(ours(&pg), 0, "every group deleted");
}

/// `delete --job-id`, `check` and `once --dry-run` into a closed pipe: the same exit code
/// as with a reader, and `delete` still deletes every group of the job.
#[test]
fn other_subcommands_into_a_closed_pipe() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    for instance in ["a", "b", "c"] {
        pg.put_raw(
            &format!("/metrics/job/arkouda/slurm_job_id/77/instance/{instance}"),
            "arkouda_up 1\n",
        );
    }
    let code = with_closed_pipe(agent_command(&[
        "delete",
        "--job-id",
        "77",
        "--pushgateway",
        &pg.url,
    ]));
    assert_eq!(code, Some(0));
    assert!(
        pg.job_groups("77").is_empty(),
        "every group of job 77 deleted"
    );

    let endpoint = sim.endpoint();
    let down = format!("http://127.0.0.1:{}", free_port());
    let cases: Vec<Vec<&str>> = vec![
        vec!["check", "--arkouda", &endpoint, "--pushgateway", &pg.url],
        vec![
            "check",
            "--arkouda",
            &endpoint,
            "--pushgateway",
            &down,
            "--push-timeout",
            "300ms",
        ],
        vec!["once", "--dry-run", "--arkouda", &endpoint],
        vec![
            "delete",
            "--job-id",
            "1",
            "--pushgateway",
            &down,
            "--shutdown-timeout",
            "300ms",
        ],
    ];
    for args in cases {
        let (want, out, err) = run_agent(&args);
        assert!(want == 0 || want == 1, "{args:?}: {out}{err}");
        let got = with_closed_pipe(agent_command(&args));
        assert_eq!(got, Some(want), "{args:?}");
    }
}
