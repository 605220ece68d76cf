//! The push cycle against a real Pushgateway and the simulator: exact grouping labels,
//! per-locale labels and values, values that advance, every Arkouda release, legacy names,
//! dry run, and finding the server through the connection-info file.

use crate::common::*;

/// The group of a 3-locale job has exactly the grouping labels, each locale's series the
/// right `locale` label and the simulator's values, and the values advance between cycles.
#[test]
fn three_locales_exact_labels_values_and_progress() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "3", "--distinct-locale-memory"]);
    let _agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "4242",
        "--interval",
        "300ms",
    ]);
    let g = pg.wait_group("4242", "the job's group with data", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
            && g.all("arkouda_locale_memory_used_bytes").len() == 3
    });
    assert_eq!(
        g.labels,
        labels(&[("job", "arkouda"), ("slurm_job_id", "4242")])
    );

    // Tick k of the simulator: locale i reports (100k + i) × 1e6 bytes; per user
    // create = 2k, randint = 3k, sum = k; connect and getconfig 1.
    let check = |g: &Group| -> f64 {
        let mem0 = g
            .value("arkouda_locale_memory_used_bytes", &[("locale", "0")])
            .unwrap();
        let k = mem0 / 1e8;
        assert_eq!(k.fract(), 0.0, "tick from memory {mem0}");
        for i in 0..3 {
            let l = i.to_string();
            let series: Vec<&Series> = g
                .all("arkouda_locale_memory_used_bytes")
                .into_iter()
                .filter(|s| s.labels["locale"] == l)
                .collect();
            assert_eq!(series.len(), 1, "locale {l}");
            // The Pushgateway adds instance="" to series of a group whose key has none.
            assert_eq!(
                series[0].labels,
                labels(&[
                    ("job", "arkouda"),
                    ("slurm_job_id", "4242"),
                    ("instance", ""),
                    ("locale", &l)
                ])
            );
            assert_eq!(series[0].value, (k * 100.0 + i as f64) * 1e6, "locale {l}");
            let ratio = g
                .value("arkouda_locale_memory_used_ratio", &[("locale", &l)])
                .unwrap();
            let want = (k * 100.0 + i as f64) * 1e6 / 274877906944.0;
            assert!(
                (ratio - want).abs() < want * 1e-5,
                "ratio {ratio} vs {want}"
            );
            assert_eq!(
                g.value("arkouda_locale_physical_memory_bytes", &[("locale", &l)]),
                Some(274877906944.0)
            );
            assert_eq!(
                g.value("arkouda_locale_processing_units", &[("locale", &l)]),
                Some(128.0)
            );
            let info = g
                .all("arkouda_locale_info")
                .into_iter()
                .find(|s| s.labels["locale"] == l)
                .unwrap();
            assert_eq!(info.labels["locale_name"], format!("nid{i:04}"));
        }
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "create")]),
            Some(2.0 * k)
        );
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "randint")]),
            Some(3.0 * k)
        );
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "sum")]),
            Some(k)
        );
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "connect")]),
            Some(1.0)
        );
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "total")]),
            None
        );
        assert_eq!(
            g.value(
                "arkouda_user_requests_total",
                &[("user", "alice"), ("command", "create")]
            ),
            Some(2.0 * k)
        );
        assert_eq!(g.value("arkouda_locales", &[]), Some(3.0));
        let info = g.all("arkouda_server_info");
        assert_eq!(info.len(), 1);
        assert_eq!(info[0].labels["version"], "v2026.07.15");
        assert_eq!(info[0].labels["hostname"], "nid0000");
        assert_eq!(info[0].labels["server_name"], "arkouda-metrics");
        assert_eq!(g.value("arkouda_agent_poll_errors_total", &[]), Some(0.0));
        assert!(
            g.value("arkouda_agent_last_success_timestamp_seconds", &[])
                .unwrap()
                > 1.7e9
        );
        k
    };
    let k1 = check(&g);
    let g2 = pg.wait_group("4242", "a later cycle", |g| {
        g.value("arkouda_locale_memory_used_bytes", &[("locale", "0")])
            .unwrap_or(0.0)
            / 1e8
            > k1
    });
    let k2 = check(&g2);
    assert!(k2 > k1);
}

/// Every release of the simulator is polled correctly: each gets the request shape it
/// understands (a wrong one kills the real metrics daemon) and each reply shape is read.
#[test]
fn every_release_is_polled() {
    let pg = Pushgateway::start();
    for (i, release) in SIM_RELEASES.iter().enumerate() {
        // TOTAL_* categories from v2023.04.07 ("head" sorts after every date).
        let totals = *release >= "2023.04.07";
        let job = format!("rel{i}");
        let sim = Sim::start(&["--release", release, "--locales", "2"]);
        let (code, _, err) = run_agent(&[
            "once",
            "--arkouda",
            &sim.endpoint(),
            "--pushgateway",
            &pg.url,
            "--job-id",
            &job,
        ]);
        assert_eq!(code, 0, "release {release}: {err}");
        let g = pg.wait_group(&job, "the group", |_| true);
        assert_eq!(g.value("arkouda_up", &[]), Some(1.0), "{release}");
        // First ALL request: tick 1.
        assert_eq!(
            g.value("arkouda_requests_total", &[("command", "create")]),
            Some(2.0),
            "{release}"
        );
        assert_eq!(
            g.all("arkouda_locale_memory_used_bytes").len(),
            2,
            "{release}"
        );
        assert_eq!(
            g.value("arkouda_locale_memory_used_bytes", &[("locale", "1")]),
            Some(1e8),
            "{release}"
        );
        let version = if *release == "head" {
            "v2026.07.15".to_string()
        } else {
            format!("v{release}")
        };
        assert_eq!(g.all("arkouda_server_info")[0].labels["version"], version);
        assert_eq!(
            g.all("arkouda_command_response_seconds_total").len(),
            if totals { 5 } else { 0 },
            "{release}"
        );
        // bad_cmd first fails at tick 5: at tick 1 no error class has a count, so from
        // v2024.04.19 (NUM_ERRORS) the one error series is `all`, 0.
        let errors = if *release >= "2024.04.19" {
            Some(0.0)
        } else {
            None
        };
        assert_eq!(
            g.value("arkouda_errors_total", &[("error_type", "all")]),
            errors,
            "{release}"
        );
        assert_eq!(
            g.all("arkouda_errors_total").len(),
            usize::from(errors.is_some()),
            "{release}"
        );
        // The metrics daemon is still alive: a second poll works.
        let (code, _, err) = run_agent(&[
            "once",
            "--arkouda",
            &sim.endpoint(),
            "--pushgateway",
            &pg.url,
            "--job-id",
            &job,
        ]);
        assert_eq!(code, 0, "release {release}, second poll: {err}");
        let g = pg.wait_group(&job, "tick 2", |g| {
            g.value("arkouda_requests_total", &[("command", "create")]) == Some(4.0)
        });
        assert_eq!(
            g.value("arkouda_agent_skipped_records_total", &[]),
            Some(0.0),
            "{release}"
        );
    }
}

/// v2024.04.19 counts errors per class: after tick 5 `bad_cmd` has failed once.
#[test]
fn error_classes_are_counted() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--release", "2024.04.19"]);
    let _agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "errs",
        "--interval",
        "200ms",
    ]);
    // Before the first error NUM_ERRORS is `total` alone: the `all` series, 0.
    let g = pg.wait_group("errs", "the error total", |g| {
        g.value("arkouda_errors_total", &[]).is_some()
    });
    if g.value("arkouda_errors_total", &[("error_type", "all")]) == Some(0.0) {
        assert_eq!(g.all("arkouda_errors_total").len(), 1);
    }
    let g = pg.wait_group("errs", "an error class", |g| {
        g.value(
            "arkouda_errors_total",
            &[("error_type", "IllegalArgumentError")],
        )
        .is_some()
    });
    assert_eq!(
        g.value(
            "arkouda_errors_total",
            &[("error_type", "IllegalArgumentError")]
        ),
        Some(1.0)
    );
    assert_eq!(
        g.all("arkouda_errors_total").len(),
        1,
        "no `total` (`all`) row beside the classes"
    );
}

/// `--legacy-names` emits the old exporter's names and labels.
#[test]
fn legacy_names() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2"]);
    let (code, _, err) = run_agent(&[
        "once",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "legacy",
        "--legacy-names",
        "--server-name",
        "prod",
    ]);
    assert_eq!(code, 0, "{err}");
    let g = pg.wait_group("legacy", "the group", |_| true);
    assert_eq!(
        g.value(
            "arkouda_number_of_requests_per_command",
            &[("command", "create"), ("arkouda_server_name", "prod")]
        ),
        Some(2.0)
    );
    // connect 1 + getconfig 1 + create 2 + randint 3 + sum 1 at tick 1.
    assert_eq!(g.value("arkouda_total_number_of_requests", &[]), Some(8.0));
    let mem = g.all("arkouda_memory_used_per_locale");
    assert_eq!(mem.len(), 2);
    assert_eq!(mem[1].labels["locale_num"], "1");
    assert_eq!(mem[1].labels["locale_name"], "nid0001");
    assert!(g.all("arkouda_requests_total").is_empty());
    assert_eq!(g.value("arkouda_up", &[]), Some(1.0));
}

/// `once --dry-run` prints the exposition text and pushes nothing.
#[test]
fn dry_run_prints_and_does_not_push() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    // A dry run needs no job id.
    let (code, out, err) = run_agent(&[
        "once",
        "--dry-run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("# TYPE arkouda_requests_total counter\n"),
        "{out}"
    );
    assert!(
        out.contains("arkouda_requests_total{command=\"create\"} 2\n"),
        "{out}"
    );
    assert!(out.contains("\narkouda_up 1\n"), "{out}");
    assert!(pg.job_groups("dry").is_empty());
}

/// `once` exits non-zero when the server does not answer, and still pushes arkouda_up 0.
#[test]
fn once_fails_when_the_server_is_down() {
    let pg = Pushgateway::start();
    let port = free_port();
    let (code, _, _) = run_agent(&[
        "once",
        "--arkouda",
        &format!("tcp://127.0.0.1:{port}"),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "down",
        "--arkouda-timeout",
        "200ms",
    ]);
    assert_eq!(code, 1);
    let g = pg.wait_group("down", "arkouda_up 0", |_| true);
    assert_eq!(g.value("arkouda_up", &[]), Some(0.0));
    assert_eq!(g.value("arkouda_agent_poll_errors_total", &[]), Some(1.0));
    assert!(g.all("arkouda_requests_total").is_empty());
}

/// The server found through its connection-info file, which appears only after the agent
/// started: arkouda_up 0 meanwhile, then data, with no restart.
#[test]
fn connection_info_file_waited_for() {
    let pg = Pushgateway::start();
    let dir = TempDir::new("ci");
    let info = dir.path("server.info");
    let port = free_port();
    let _agent = spawn_agent(&[
        "run",
        "--connection-info",
        info.to_str().unwrap(),
        "--metrics-port",
        &port.to_string(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "cinfo",
        "--interval",
        "200ms",
        "--arkouda-timeout",
        "300ms",
    ]);
    let g = pg.wait_group("cinfo", "arkouda_up 0 while there is no server", |g| {
        g.value("arkouda_up", &[]) == Some(0.0)
    });
    assert!(g.value("arkouda_agent_poll_errors_total", &[]).unwrap() >= 1.0);
    let _sim = Sim::start_on(
        port,
        &[
            "--connection-info",
            info.to_str().unwrap(),
            "--server-hostname",
            "127.0.0.1",
        ],
    );
    let g = pg.wait_group("cinfo", "data once the server is up", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    assert!(g
        .value("arkouda_requests_total", &[("command", "create")])
        .is_some());
}

/// A token from a file works, and neither the log nor `check` shows it.
#[test]
fn token_file_is_never_shown() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&[]);
    let dir = TempDir::new("tok");
    let token = dir.path("token");
    std::fs::write(&token, "s3cr3t-t0ken\n").unwrap();
    let args = [
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "tok",
        "--arkouda-token-file",
        token.to_str().unwrap(),
    ];
    let (code, out, err) = run_agent(&[&["once"], &args[..]].concat());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("s3cr3t") && !out.contains("s3cr3t"), "{err}");
    let mut cmd = agent_command(&[&["check"], &args[..]].concat());
    cmd.env(
        "ARKOUDA_PUSH_AGENT_PUSHGATEWAY_BEARER_TOKEN",
        "b3arer-s3cret",
    );
    let (code, out, err) = run_agent_cmd(cmd);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("arkouda_token = (unset)"), "{out}");
    assert!(out.contains("pushgateway_bearer_token = *** (environment ARKOUDA_PUSH_AGENT_PUSHGATEWAY_BEARER_TOKEN)"), "{out}");
    assert!(out.contains("arkouda: OK"), "{out}");
    assert!(out.contains("pushgateway: OK"), "{out}");
    assert!(
        !out.contains("s3cr3t") && !err.contains("s3cr3t"),
        "{out}{err}"
    );
}

/// Scrape mode: `--listen` serves the latest poll with the grouping labels, `/healthz`
/// answers; with `--no-push` nothing reaches the Pushgateway.
#[test]
fn scrape_mode_serves_metrics_and_healthz() {
    let pg = Pushgateway::start();
    let sim = Sim::start(&["--locales", "2"]);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let _agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "scrape",
        "--interval",
        "300ms",
        "--listen",
        &addr,
        "--no-push",
    ]);
    let http = reqwest::blocking::Client::new();
    let body = eventually(std::time::Duration::from_secs(10), "GET /metrics", || {
        let r = http
            .get(format!("http://{addr}/metrics"))
            .send()
            .map_err(|e| e.to_string())?;
        if r.status().is_success() {
            r.text().map_err(|e| e.to_string())
        } else {
            Err(r.status().to_string())
        }
    });
    assert!(
        body.contains("# TYPE arkouda_requests_total counter\n"),
        "{body}"
    );
    assert!(
        body.contains("arkouda_up{job=\"arkouda\",slurm_job_id=\"scrape\"} 1\n"),
        "{body}"
    );
    assert!(body.contains("arkouda_locale_memory_used_bytes{job=\"arkouda\",slurm_job_id=\"scrape\",locale=\"1\"} "), "{body}");
    let health = http.get(format!("http://{addr}/healthz")).send().unwrap();
    assert_eq!(health.status().as_u16(), 200);
    assert_eq!(
        http.get(format!("http://{addr}/nope"))
            .send()
            .unwrap()
            .status()
            .as_u16(),
        404
    );
    assert!(
        pg.job_groups("scrape").is_empty(),
        "--no-push pushes nothing"
    );

    let (code, _, err) = run_agent(&["run", "--job-id", "x", "--no-push"]);
    assert_eq!(code, 2);
    assert!(err.contains("invalid value for `no_push`"), "{err}");
}

/// SIM_RELEASES (what these tests run) is the list of modes `arkouda-sim --help` gives.
#[test]
fn sim_release_modes_are_listed_in_help() {
    let out = std::process::Command::new(SIM)
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).replace(char::is_whitespace, " ");
    let at = help.find("Imitated release:").expect("--release help");
    let listed: Vec<String> = help[at..]
        .split([' ', ','])
        .filter(|w| w.len() == 10 && w.starts_with("20") || *w == "head")
        .map(str::to_string)
        .take_while(|w| w != "2026.07.15")
        .collect();
    assert_eq!(listed, SIM_RELEASES, "{help}");
}

/// The whole exposition the agent pushes for each simulated release, for a fixed simulator
/// state (one poll: tick 1; two locales, two users), compared with a golden file in
/// tests/golden/: any change of a name, unit, HELP, TYPE, label or order is a diff here.
/// Only the agent's own timings and its lease (now + lease) are masked. `UPDATE_GOLDEN=1` rewrites the files.
#[test]
fn golden_exposition_per_release() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some();
    let volatile = [
        "arkouda_agent_poll_duration_seconds ",
        "arkouda_agent_last_success_timestamp_seconds ",
        "arkouda_agent_lease_expiry_timestamp_seconds ",
    ];
    let mut help_type: std::collections::BTreeMap<String, String> = Default::default();
    let mut failures = Vec::new();
    for release in SIM_RELEASES {
        let sim = Sim::start(&[
            "--release",
            release,
            "--locales",
            "2",
            "--users",
            "alice,bob",
        ]);
        let (code, out, err) = run_agent(&[
            "once",
            "--dry-run",
            "--arkouda",
            &sim.endpoint(),
            "--job-id",
            "golden",
            "--server-name",
            "golden-server",
        ]);
        assert_eq!(code, 0, "{release}: {err}");
        let text: String = out
            .lines()
            .map(|l| match volatile.iter().find(|v| l.starts_with(*v)) {
                Some(v) => format!("{v}<masked>\n"),
                None => format!("{l}\n"),
            })
            .collect();
        // HELP and TYPE of a name are the same in every release.
        for l in text.lines().filter(|l| l.starts_with("# ")) {
            let mut words = l.splitn(4, ' ');
            let key = format!(
                "{} {}",
                words.nth(1).unwrap_or(""),
                words.next().unwrap_or("")
            );
            let prev = help_type.entry(key).or_insert_with(|| l.to_string());
            assert_eq!(prev, l, "{release}: HELP/TYPE differ between releases");
        }
        let path = dir.join(format!("{release}.prom"));
        if update {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
        if want != text {
            failures.push(format!(
                "{release}: the exposition differs from {}; got:\n{text}",
                path.display()
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// A frame the imitated release would not parse ends the simulated metrics daemon for
/// good, as it ends the real one: no reply to it, nor to a good request after it, while
/// the port stays open. Each release gets the malformation its own record refuses.
#[test]
fn simulator_goes_silent_for_good_on_an_unreadable_request() {
    let good = |release: &str| -> String {
        let (args, size) = match release {
            "2022.08.15" => ("ALL".to_string(), -1),
            r if r < "2024.10.02" => (
                r#"["{\"key\": \"category\", \"objType\": \"VALUE\", \"dtype\": \"str\", \"val\": \"ALL\"}"]"#.to_string(),
                1,
            ),
            _ => (
                r#"["{\"key\": \"category\", \"dtype\": \"str\", \"val\": \"ALL\"}"]"#
                    .to_string(),
                1,
            ),
        };
        serde_json::json!({"user": "u", "token": "", "cmd": "metrics", "format": "STRING", "args": args, "size": size}).to_string()
    };
    let cases: Vec<(&str, String)> = SIM_RELEASES
        .iter()
        .flat_map(|r| {
            let mut v = vec![(
                *r,
                r#"{"user": "u", "token": "", "cmd": "getconfig", "format": "STRING", "args": ""}"#
                    .to_string(),
            )];
            if (*r >= "2022.09.30") && (*r < "2024.10.02") {
                // A parameter without objType.
                v.push((*r, good("head")));
            }
            if *r >= "2022.11.10" {
                // connect with unreadable args and size 1.
                v.push((
                    *r,
                    r#"{"user": "u", "token": "", "cmd": "connect", "format": "STRING", "args": "x", "size": 1}"#
                        .to_string(),
                ));
            }
            v
        })
        .collect();
    let ctx = zmq::Context::new();
    let ask = |endpoint: &str, frame: &str| -> Option<Vec<u8>> {
        let s = ctx.socket(zmq::REQ).unwrap();
        s.set_linger(0).unwrap();
        // A live simulator answers within milliseconds; silence is waited for this long.
        s.set_rcvtimeo(1000).unwrap();
        s.connect(endpoint).unwrap();
        s.send(frame, 0).unwrap();
        s.recv_bytes(0).ok()
    };
    // The cases are independent: run them side by side (each waits out two silences).
    std::thread::scope(|scope| {
        for (release, bad) in &cases {
            let (ask, good) = (&ask, &good);
            scope.spawn(move || {
                let sim = Sim::start(&["--release", release]);
                let ep = sim.endpoint();
                assert!(
                    ask(&ep, &good(release)).is_some(),
                    "{release}: a good request is answered"
                );
                assert!(ask(&ep, bad).is_none(), "{release}: {bad} is answered");
                assert!(
                    ask(&ep, &good(release)).is_none(),
                    "{release}: the daemon answers again after {bad}"
                );
                assert!(
                    sim.proc.log_text().contains("daemon died silently"),
                    "{release}"
                );
            });
        }
    });
}
