//! `arkouda-push-agent sweep` against a real Pushgateway: on a real single-node Slurm (jobs
//! that ended, run, and array tasks; then slurmctld stopped), and without any scheduler
//! (`--no-scheduler`, leases pushed by real agents). Assertions are on what the Pushgateway
//! holds afterwards and on the lines the sweep prints.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::slurm_cluster::{Hooks, SlurmCluster};
use arkouda_push_agent::translate::AGENT_LEASE;

/// A group as this agent would push it, with only a lease (same HELP and TYPE as the
/// agent's, or the Pushgateway would refuse the agent's pushes).
fn lease_body(expiry: f64) -> String {
    format!(
        "# HELP {n} {h}\n# TYPE {n} gauge\n{n} {expiry}\n",
        n = AGENT_LEASE.name,
        h = AGENT_LEASE.help
    )
}

fn group_path(id: &str, cluster: &str) -> String {
    format!("/metrics/job/arkouda/slurm_job_id/{id}/cluster/{cluster}")
}

fn has_group(pg: &Pushgateway, want: &[(&str, &str)]) -> bool {
    let want: BTreeMap<String, String> = labels(want);
    pg.groups().iter().any(|g| g.labels == want)
}

/// Runs `sweep` with `args`; returns (exit code, stdout, stderr).
fn sweep(slurm_conf: Option<&std::path::Path>, args: &[&str]) -> (i32, String, String) {
    let mut cmd = agent_command(&[&["sweep"], args].concat());
    if let Some(conf) = slurm_conf {
        cmd.env("SLURM_CONF", conf);
    }
    let t = Instant::now();
    let out = run_agent_cmd(cmd);
    eprintln!(
        "sweep {args:?} in {:?}: rc {}\n{}{}",
        t.elapsed(),
        out.0,
        out.1,
        out.2
    );
    out
}

/// One cluster, one Pushgateway: Slurm's answer decides, then with slurmctld stopped the
/// leases do.
#[test]
fn sweep_on_a_real_slurm() {
    let mut c = SlurmCluster::start("apasweep", &Hooks::default());
    let pg = Pushgateway::start();
    let name = c.name.clone();

    let ended = c.submit("ended", "#!/bin/bash\nexit 0\n", &[]);
    let (running, stop_running) = c.waiting_job("running", "", &[]);
    let (array, stop_array) = c.waiting_job("array", "", &["--array=0-1"]);
    c.wait_state(&ended, &["COMPLETED"], Duration::from_secs(60));
    c.wait_state(&running, &["RUNNING"], Duration::from_secs(60));
    // The array's tasks by their own job ids (%A), as their agents label their groups.
    let tasks: Vec<String> = eventually(Duration::from_secs(60), "both array tasks to run", || {
        let (ok, out) = c.slurm(
            "/usr/bin/squeue",
            &["-h", "-r", "-j", &array, "-t", "R", "-o", "%A"],
        );
        let ids: Vec<String> = out.split_whitespace().map(str::to_string).collect();
        if ok && ids.len() == 2 {
            Ok(ids)
        } else {
            Err(out)
        }
    });
    let task = tasks
        .iter()
        .find(|t| **t != array)
        .cloned()
        .unwrap_or_else(|| tasks[0].clone());

    let t = now();
    // Slurm's answer wins over the lease both ways.
    pg.put_raw(&group_path(&ended, &name), &lease_body(t + 3600.0));
    pg.put_raw(&group_path(&running, &name), &lease_body(t - 7200.0));
    pg.put_raw(&group_path(&task, &name), &lease_body(t - 7200.0));
    // Not this agent's, or not this cluster's: never touched.
    pg.put_raw(
        "/metrics/job/backup/instance/db1",
        "backup_last_success 1\n",
    );
    pg.put_raw(
        "/metrics/job/arkouda/instance/no-job-id",
        &lease_body(t - 7200.0),
    );
    pg.put_raw(&group_path(&ended, "othercluster"), &lease_body(t - 7200.0));
    // Not a Slurm job id (a long-lived server's group): its live lease keeps it.
    pg.put_raw(&group_path("shared-server", &name), &lease_body(t + 3600.0));
    let common = ["--pushgateway", pg.url.as_str(), "--cluster", name.as_str()];
    let conf = c.conf.clone();

    // A dry run deletes nothing.
    let (rc, out, _) = sweep(Some(&conf), &[&common[..], &["--dry-run"]].concat());
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!(
            "would delete {}{}: Slurm no longer runs job {ended}",
            pg.url,
            group_path(&ended, &name)
        )),
        "{out}"
    );
    assert!(has_group(
        &pg,
        &[
            ("job", "arkouda"),
            ("slurm_job_id", &ended),
            ("cluster", &name)
        ]
    ));

    let (rc, out, _) = sweep(Some(&conf), &common);
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("scheduler check: squeue lists "), "{out}");
    assert!(
        out.contains(&format!(
            "deleted {}{}: Slurm no longer runs job {ended}",
            pg.url,
            group_path(&ended, &name)
        )),
        "{out}"
    );
    for id in [&running, &task] {
        // "2h ago", or "2h 1s ago" on a loaded machine.
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("kept {}{}: ", pg.url, group_path(id, &name))))
            .unwrap_or_else(|| panic!("no line for {id}: {out}"));
        assert!(
            line.contains(&format!("job {id} is still in Slurm (lease expired 2h "))
                && line.ends_with("ago, beyond the grace: its agent may have died)"),
            "{out}"
        );
    }
    assert!(
        out.contains(
            "job id `shared-server` is not a Slurm job id, so its lease decides: lease valid for"
        ),
        "{out}"
    );
    assert!(
        out.contains("sweep: 1 deleted, 3 kept, 3 groups of other exporters untouched"),
        "{out}"
    );
    let groups: Vec<BTreeMap<String, String>> = pg.groups().into_iter().map(|g| g.labels).collect();
    assert!(
        !has_group(
            &pg,
            &[
                ("job", "arkouda"),
                ("slurm_job_id", &ended),
                ("cluster", &name)
            ]
        ),
        "{groups:?}"
    );
    for id in [running.as_str(), task.as_str(), "shared-server"] {
        assert!(
            has_group(
                &pg,
                &[("job", "arkouda"), ("slurm_job_id", id), ("cluster", &name)]
            ),
            "{id}: {groups:?}"
        );
    }
    assert!(has_group(&pg, &[("job", "backup"), ("instance", "db1")]));
    assert!(has_group(
        &pg,
        &[("job", "arkouda"), ("instance", "no-job-id")]
    ));
    assert!(has_group(
        &pg,
        &[
            ("job", "arkouda"),
            ("slurm_job_id", &ended),
            ("cluster", "othercluster")
        ]
    ));

    // Without `cluster`, the sweep learns it from Slurm (scontrol show config) and leaves
    // the other cluster's group alone.
    let (rc, out, _) = sweep(
        Some(&conf),
        &["--pushgateway", pg.url.as_str(), "--dry-run"],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains(&format!("cluster `{name}` (Slurm's ClusterName)")),
        "{out}"
    );
    assert!(out.contains("scheduler check: squeue lists "), "{out}");
    assert!(!out.contains("partial view"), "root sees every job: {out}");
    assert!(!out.contains("othercluster"), "{out}");

    // slurmctld down: the leases decide. A lease expired long ago goes, a live one and
    // one expired within the grace stay.
    let t = now();
    pg.put_raw(&group_path("999999991", &name), &lease_body(t + 3600.0));
    pg.put_raw(&group_path("999999992", &name), &lease_body(t - 60.0));
    c.stop_ctld();
    let started = Instant::now();
    let (rc, out, _) = sweep(Some(&conf), &common);
    let took = started.elapsed();
    assert_eq!(rc, 0, "{out}");
    assert!(out.contains("scheduler check skipped: "), "{out}");
    assert!(out.contains("leases decide, grace 10m"), "{out}");
    assert!(
        took < Duration::from_secs(20),
        "the squeue call is bounded: {took:?}"
    );
    for id in [&running, &task] {
        let line = format!(
            "deleted {}{}: job {id}: lease expired 2h",
            pg.url,
            group_path(id, &name)
        );
        assert!(
            out.lines()
                .any(|l| l.starts_with(&line) && l.ends_with("ago, beyond the grace")),
            "{out}"
        );
    }
    assert!(out.contains("job 999999991: lease valid for"), "{out}");
    assert!(out.contains("job 999999992: lease expired 1m"), "{out}");
    let groups: Vec<BTreeMap<String, String>> = pg.groups().into_iter().map(|g| g.labels).collect();
    for id in [running.as_str(), task.as_str()] {
        assert!(
            !has_group(
                &pg,
                &[("job", "arkouda"), ("slurm_job_id", id), ("cluster", &name)]
            ),
            "{id}: {groups:?}"
        );
    }
    for id in ["999999991", "999999992", "shared-server"] {
        assert!(
            has_group(
                &pg,
                &[("job", "arkouda"), ("slurm_job_id", id), ("cluster", &name)]
            ),
            "{id}: {groups:?}"
        );
    }
    assert!(has_group(&pg, &[("job", "backup"), ("instance", "db1")]));
    assert!(has_group(
        &pg,
        &[("job", "arkouda"), ("instance", "no-job-id")]
    ));
    for stop in [stop_running, stop_array] {
        let _ = std::fs::write(stop, "");
    }
}

/// Without a scheduler: a group whose agent was killed (a short lease) is deleted once its
/// lease is older than the grace; a live agent's group is kept. Slurm is never asked.
#[test]
fn sweep_without_scheduler_decides_by_leases() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2"]);
    let ep = sim.endpoint();
    let mut dead = spawn_agent(&[
        "run",
        "--arkouda",
        &ep,
        "--pushgateway",
        &pg.url,
        "--job-id",
        "501",
        "--interval",
        "300ms",
        "--lease",
        "1s",
    ]);
    let mut live = spawn_agent(&[
        "run",
        "--arkouda",
        &ep,
        "--pushgateway",
        &pg.url,
        "--job-id",
        "502",
        "--interval",
        "1s",
    ]);
    let lease_of = |id: &str| {
        pg.wait_group(id, &format!("job {id}'s group with a lease"), |g| {
            g.value(AGENT_LEASE.name, &[]).is_some() && g.value("push_time_seconds", &[]).is_some()
        })
    };
    // The lease is the push time plus `lease` (default 4 x interval).
    for (id, lease) in [("501", 1.0), ("502", 4.0)] {
        let g = lease_of(id);
        let expiry = g.value(AGENT_LEASE.name, &[]).unwrap_or_default();
        let pushed = g.value("push_time_seconds", &[]).unwrap_or_default();
        assert!(
            (expiry - pushed - lease).abs() < 0.5,
            "job {id}: lease {expiry} vs push time {pushed}"
        );
    }
    pg.put_raw(
        "/metrics/job/backup/instance/db1",
        "backup_last_success 1\n",
    );

    dead.signal("KILL");
    dead.wait_exit(Duration::from_secs(5));
    assert_eq!(
        pg.job_groups("501").len(),
        1,
        "a killed agent leaves its group"
    );
    // Its lease (1 s) and the grace (1 s) pass.
    std::thread::sleep(Duration::from_secs(3));

    // The squeue path names nothing: proof that Slurm is not asked.
    let (rc, out, _) = sweep(
        None,
        &[
            "--pushgateway",
            &pg.url,
            "--no-scheduler",
            "--grace",
            "1s",
            "--squeue",
            "/nonexistent/squeue",
        ],
    );
    assert_eq!(rc, 0, "{out}");
    assert!(
        out.contains("scheduler check skipped (no_scheduler): leases decide, grace 1s"),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "deleted {}/metrics/job/arkouda/slurm_job_id/501: job 501: lease expired",
            pg.url
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "kept {}/metrics/job/arkouda/slurm_job_id/502: job 502: lease valid for",
            pg.url
        )),
        "{out}"
    );
    assert!(
        out.contains("1 groups of other exporters untouched"),
        "{out}"
    );
    assert!(pg.job_groups("501").is_empty());
    assert_eq!(pg.job_groups("502").len(), 1);
    assert!(has_group(&pg, &[("job", "backup"), ("instance", "db1")]));

    // The live agent still owns its group and removes it when stopped.
    live.signal("TERM");
    assert!(live.wait_exit(Duration::from_secs(10)).success());
    pg.wait_gone("502", Duration::from_secs(5));
}

/// A directory with a fake `squeue` that lists `listed` and a fake `scontrol` whose
/// configuration says ClusterName `alpha`, PrivateData=jobs, SlurmUser slurm(64030).
/// Returns the squeue path (scontrol is found beside it).
fn fake_slurm(dir: &TempDir, listed: &[&str]) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let lines: String = listed.iter().map(|id| format!("{id} {id}\\n")).collect();
    let scripts = [
        (
            "squeue",
            format!(
                "#!/bin/sh\ncase \" $* \" in *' --all '*) ;; *) echo 'no --all' >&2; exit 1;; esac\nprintf '{lines}'\n"
            ),
        ),
        (
            "scontrol",
            "#!/bin/sh\nprintf 'ClusterName             = alpha\\nPrivateData             = jobs,usage\\nSlurmUser               = slurm(64030)\\nMCSPlugin               = mcs/none\\n'\n".to_string(),
        ),
    ];
    for (name, body) in scripts {
        let p = dir.path(name);
        std::fs::write(&p, body).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let _ = std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755));
    dir.path("squeue")
}

fn alpha(id: &str) -> String {
    group_path(id, "alpha")
}

/// Slurm's policies, with fake squeue and scontrol: under PrivateData=jobs an
/// unprivileged sweep sees a partial view, so a job it does not list keeps its group while
/// the lease is live; root's full view deletes it (Slurm's answer wins). Either way the
/// cluster comes from Slurm's ClusterName, another cluster's group is left alone, and a
/// group without a cluster label goes by its lease.
#[test]
fn sweep_with_a_partial_view_lets_leases_decide() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("fakeslurm");
    let squeue = fake_slurm(&dir, &["701"]);
    let t = now();
    let put = |path: &str, expiry: f64| pg.put_raw(path, &lease_body(expiry));
    put(&alpha("701"), t - 7200.0); // listed: kept whatever its lease
    put(&alpha("702"), t + 3600.0); // unlisted, live lease
    put(&alpha("703"), t - 7200.0); // unlisted, lease long expired
    put(&group_path("704", "beta"), t - 7200.0); // another cluster's
    put("/metrics/job/arkouda/slurm_job_id/705", t + 3600.0); // no cluster label, live
    put("/metrics/job/arkouda/slurm_job_id/706", t - 7200.0); // no cluster label, expired
    let args = [
        "--pushgateway",
        pg.url.as_str(),
        "--squeue",
        squeue.to_str().unwrap(),
    ];
    let present = |id: &str, cluster: Option<&str>| {
        let mut want = vec![("job", "arkouda"), ("slurm_job_id", id)];
        if let Some(c) = cluster {
            want.push(("cluster", c));
        }
        has_group(&pg, &want)
    };

    // As an unprivileged user (the package's sweep user, say): a partial view.
    let mut cmd = agent_command(&[&["sweep"][..], &args].concat());
    std::os::unix::process::CommandExt::uid(&mut cmd, 65534);
    std::os::unix::process::CommandExt::gid(&mut cmd, 65534);
    let (rc, out, err) = run_agent_cmd(cmd);
    eprintln!("{out}{err}");
    assert_eq!(rc, 0, "{out}{err}");
    assert!(
        out.contains("cluster `alpha` (Slurm's ClusterName)"),
        "{out}"
    );
    assert!(
        out.contains("scheduler check: squeue lists 1 jobs, a partial view: PrivateData=jobs hides other users' jobs from this sweep (uid 65534, neither root nor SlurmUser slurm)"),
        "{out}"
    );
    let url = &pg.url;
    for line in [
        format!("kept {url}{}: job 701 is still in Slurm", alpha("701")),
        format!("kept {url}{}: job 702 is not in Slurm's answer, but PrivateData=jobs", alpha("702")),
        format!("deleted {url}{}: job 703 is not in Slurm's answer, but PrivateData=jobs", alpha("703")),
        format!("kept {url}/metrics/job/arkouda/slurm_job_id/705: job 705 is not in Slurm's answer, but the group has no cluster label"),
        format!("deleted {url}/metrics/job/arkouda/slurm_job_id/706: job 706 is not in Slurm's answer, but the group has no cluster label"),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&line)), "{line}\n{out}");
    }
    assert!(!out.contains("beta"), "{out}");
    assert!(
        out.contains("sweep: 2 deleted, 3 kept, 1 groups of other exporters untouched"),
        "{out}"
    );
    for (id, cluster) in [
        ("701", Some("alpha")),
        ("702", Some("alpha")),
        ("704", Some("beta")),
        ("705", None),
    ] {
        assert!(present(id, cluster), "{id}");
    }
    assert!(!present("703", Some("alpha")) && !present("706", None));

    // As root: a full view, and Slurm's answer wins over the live lease of job 702.
    let (rc, out, _) = sweep(None, &args);
    assert_eq!(rc, 0, "{out}");
    assert!(!out.contains("partial view"), "{out}");
    assert!(
        out.contains(&format!(
            "deleted {url}{}: Slurm no longer runs job 702",
            alpha("702")
        )),
        "{out}"
    );
    assert!(
        out.contains("sweep: 1 deleted, 2 kept, 1 groups of other exporters untouched"),
        "{out}"
    );
    assert!(!present("702", Some("alpha")));
    for (id, cluster) in [("701", Some("alpha")), ("704", Some("beta")), ("705", None)] {
        assert!(present(id, cluster), "{id}");
    }
}

/// A group whose agent ended the job with a `linger` (it carries the end time) is kept,
/// even with a full view of Slurm, until its lease (end + linger) has expired beyond the
/// grace; then it goes like any other.
#[test]
fn a_lingering_group_is_kept_until_its_linger_ends() {
    use arkouda_push_agent::translate::AGENT_END;
    let pg = Pushgateway::start();
    let dir = TempDir::new("fakeslurm-linger");
    let squeue = fake_slurm(&dir, &[]);
    let t = now();
    let lingering = |lease: f64| {
        format!(
            "{}# HELP {n} {h}\n# TYPE {n} gauge\n{n} {end}\n",
            lease_body(lease),
            n = AGENT_END.name,
            h = AGENT_END.help,
            end = t - 1.0
        )
    };
    pg.put_raw(&alpha("801"), &lingering(t + 600.0)); // lingering, live
    pg.put_raw(&alpha("802"), &lingering(t - 7200.0)); // its linger long over
    pg.put_raw(&alpha("803"), &lease_body(t + 600.0)); // ended without linger
    let (rc, out, _) = sweep(
        None,
        &[
            "--pushgateway",
            pg.url.as_str(),
            "--squeue",
            squeue.to_str().unwrap(),
        ],
    );
    assert_eq!(rc, 0, "{out}");
    let url = &pg.url;
    for line in [
        format!("kept {url}{}: job 801 is not in Slurm's answer, but its agent ended the job with a linger, so its lease decides: lease valid for", alpha("801")),
        format!("deleted {url}{}: job 802 is not in Slurm's answer, but its agent ended the job with a linger, so its lease decides: lease expired", alpha("802")),
        format!("deleted {url}{}: Slurm no longer runs job 803", alpha("803")),
    ] {
        assert!(out.lines().any(|l| l.starts_with(&line)), "{line}\n{out}");
    }
}
