//! Site scale against real Pushgateways: sharding by job id over three, HA (`all`) with one
//! of them stopped, one group per locale, gzip bodies, and the cardinality budget.

use std::time::Duration;

use crate::common::*;
use arkouda_push_agent::sinks::pushgateway::shard;

fn list(pgs: &[&Pushgateway]) -> String {
    pgs.iter()
        .map(|p| p.url.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

/// Shard mode: each job's group is on exactly the Pushgateway its hash names, and
/// `delete --job-id` finds it there.
#[test]
fn shard_mode_puts_each_job_on_its_own_pushgateway() {
    let pgs = [
        Pushgateway::start(),
        Pushgateway::start(),
        Pushgateway::start(),
    ];
    let urls = list(&pgs.iter().collect::<Vec<_>>());
    let sim = Sim::start(&[]);
    let jobs: Vec<String> = (1..=9).map(|i| format!("shard{i}")).collect();
    let mut used = [false; 3];
    for job in &jobs {
        let (code, _, err) = run_agent(&[
            "once",
            "--arkouda",
            &sim.endpoint(),
            "--pushgateway",
            &urls,
            "--job-id",
            job,
        ]);
        assert_eq!(code, 0, "{err}");
        let home = shard(job, 3);
        used[home] = true;
        for (i, pg) in pgs.iter().enumerate() {
            if i == home {
                pg.wait_group(job, "the job's group on its shard", |g| {
                    g.value("arkouda_up", &[]) == Some(1.0)
                });
            } else {
                assert!(
                    pg.job_groups(job).is_empty(),
                    "{job} also on pushgateway {i}"
                );
            }
        }
    }
    assert!(
        used.iter().all(|u| *u),
        "nine jobs spread over all three: {used:?}"
    );
    let job = &jobs[0];
    let (code, out, err) = run_agent(&["delete", "--job-id", job, "--pushgateway", &urls]);
    assert_eq!(code, 0, "{out}{err}");
    pgs[shard(job, 3)].wait_gone(job, Duration::from_secs(2));
    assert_eq!(out.matches("no group of job").count(), 2, "{out}");
}

/// `all` mode: every Pushgateway holds the group; with one stopped, the others are still
/// updated and, at SIGTERM, deleted.
#[test]
fn all_mode_survives_one_pushgateway_down() {
    let a = Pushgateway::start();
    let b = Pushgateway::start();
    let c = Pushgateway::start();
    let urls = list(&[&a, &b, &c]);
    let sim = Sim::start(&[]);
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &urls,
        "--pushgateway-mode",
        "all",
        "--job-id",
        "ha",
        "--interval",
        "300ms",
        "--push-timeout",
        "300ms",
    ]);
    for pg in [&a, &b, &c] {
        pg.wait_group("ha", "the group on every Pushgateway", |g| {
            g.value("arkouda_up", &[]) == Some(1.0)
        });
    }
    drop(c);
    let tick = |pg: &Pushgateway| {
        pg.job_groups("ha")[0]
            .value("arkouda_requests_total", &[("command", "create")])
            .unwrap()
    };
    let (ta, tb) = (tick(&a), tick(&b));
    a.wait_group("ha", "a still updated", |g| {
        g.value("arkouda_requests_total", &[("command", "create")])
            .unwrap()
            > ta + 4.0
    });
    b.wait_group("ha", "b still updated", |g| {
        g.value("arkouda_requests_total", &[("command", "create")])
            .unwrap()
            > tb + 4.0
    });
    agent.signal("TERM");
    a.wait_gone("ha", Duration::from_secs(3));
    b.wait_gone("ha", Duration::from_secs(3));
    // The stopped one could not be cleaned: said, and exit 1.
    let status = agent.wait_exit(Duration::from_secs(10));
    assert_eq!(status.code(), Some(1), "{}", agent.log_text());
}

/// `layout = "locale"`: one group per locale plus the job's group, with exact grouping
/// labels; SIGTERM leaves none.
#[test]
fn locale_layout_groups() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "3", "--distinct-locale-memory"]);
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "perloc",
        "--layout",
        "locale",
        "--interval",
        "300ms",
    ]);
    let groups = eventually(Duration::from_secs(10), "four groups", || {
        let g = pg.job_groups("perloc");
        if g.len() == 4 && g.iter().all(|g| g.series.len() > 2) {
            Ok(g)
        } else {
            Err(format!("{}", g.len()))
        }
    });
    let mut keys: Vec<_> = groups.iter().map(|g| g.labels.clone()).collect();
    keys.sort();
    let key = |loc: Option<&str>| {
        let mut l = labels(&[("job", "arkouda"), ("slurm_job_id", "perloc")]);
        if let Some(loc) = loc {
            l.insert("locale".into(), loc.into());
        }
        l
    };
    let mut want = vec![key(None), key(Some("0")), key(Some("1")), key(Some("2"))];
    want.sort();
    assert_eq!(keys, want);
    let job_group = groups
        .iter()
        .find(|g| !g.labels.contains_key("locale"))
        .unwrap();
    assert_eq!(job_group.value("arkouda_up", &[]), Some(1.0));
    assert!(job_group.all("arkouda_locale_memory_used_bytes").is_empty());
    let loc1 = groups
        .iter()
        .find(|g| g.labels.get("locale").map(String::as_str) == Some("1"))
        .unwrap();
    assert_eq!(loc1.all("arkouda_locale_memory_used_bytes").len(), 1);
    assert!(loc1.all("arkouda_up").is_empty());
    agent.signal("TERM");
    pg.wait_gone("perloc", Duration::from_secs(2));
    assert_eq!(agent.wait_exit(Duration::from_secs(3)).code(), Some(0));
}

/// `delete --job-id` removes every group of a per-locale job too.
#[test]
fn delete_removes_locale_groups() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2"]);
    let (code, _, err) = run_agent(&[
        "once",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "perloc2",
        "--layout",
        "locale",
    ]);
    assert_eq!(code, 0, "{err}");
    eventually(Duration::from_secs(5), "three groups", || {
        let n = pg.job_groups("perloc2").len();
        if n == 3 {
            Ok(())
        } else {
            Err(n.to_string())
        }
    });
    let (code, out, err) = run_agent(&["delete", "--job-id", "perloc2", "--pushgateway", &pg.url]);
    assert_eq!(code, 0, "{out}{err}");
    pg.wait_gone("perloc2", Duration::from_secs(2));
}

/// Gzip: the Pushgateway holds the same group with and without compression.
#[test]
fn gzip_bodies_give_the_same_group() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "64", "--release", "2024.04.19"]);
    let series = |job: &str, threshold: &str| {
        let (code, _, err) = run_agent(&[
            "once",
            "--arkouda",
            &sim.endpoint(),
            "--pushgateway",
            &pg.url,
            "--job-id",
            job,
            "--gzip-threshold",
            threshold,
            "--arkouda-release",
            "2024.04.19",
        ]);
        assert_eq!(code, 0, "{err}");
        let g = pg.wait_group(job, "the group", |_| true);
        let mut s: Vec<(String, Vec<(String, String)>)> = g
            .series
            .iter()
            .filter(|s| !s.name.starts_with("arkouda_agent_") && !s.name.starts_with("push_"))
            .map(|s| {
                let mut l: Vec<_> = s
                    .labels
                    .iter()
                    .filter(|(k, _)| *k != "slurm_job_id")
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                l.sort();
                (s.name.clone(), l)
            })
            .collect();
        s.sort();
        s
    };
    let gz = series("gz", "1");
    let plain = series("plain", "0");
    assert!(gz.len() > 64 * 2, "{}", gz.len());
    assert_eq!(gz, plain);
}

/// The cardinality budget: the first N command names keep their series, later ones are
/// summed into command="other", which never goes backwards; what was folded is counted.
#[test]
fn cardinality_budget_folds_into_other() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--weird-names"]);
    let _agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "budget",
        "--max-commands",
        "3",
        "--interval",
        "300ms",
    ]);
    let mut last_other = 0.0;
    for round in 0..3 {
        let g = pg.wait_group("budget", "a later cycle", |g| {
            g.value("arkouda_requests_total", &[("command", "other")])
                .unwrap_or(0.0)
                > last_other
        });
        let commands: Vec<String> = g
            .all("arkouda_requests_total")
            .iter()
            .map(|s| s.labels["command"].clone())
            .collect();
        let mut sorted = commands.clone();
        sorted.sort();
        // connect, getconfig and create come first in the reply: they keep their series.
        assert_eq!(
            sorted,
            vec!["connect", "create", "getconfig", "other"],
            "round {round}"
        );
        let create = g
            .value("arkouda_requests_total", &[("command", "create")])
            .unwrap();
        let k = create / 2.0;
        // randint 3k + sum k + six weird names k each (bad_cmd fails: not counted before it runs).
        let other = g
            .value("arkouda_requests_total", &[("command", "other")])
            .unwrap();
        let bad = (k / 5.0).floor();
        assert_eq!(other, 3.0 * k + k + 6.0 * k + bad, "round {round}, k {k}");
        assert!(other >= last_other);
        last_other = other;
        assert!(g.value("arkouda_agent_series_dropped_total", &[]).unwrap() > 0.0);
        assert!(g
            .all("arkouda_command_avg_response_seconds")
            .iter()
            .all(|s| s.labels["command"] != "other"));
        assert!(g.value("arkouda_agent_series", &[]).unwrap() > 10.0);
    }
}
