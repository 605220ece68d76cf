//! Remote write on real receivers: Debian's Prometheus 2.42 (with
//! `--web.enable-remote-write-receiver`) and VictoriaMetrics 1.79, each started once for
//! this file and read back through its own query API, with the simulator's deterministic
//! workload as the expectation.
//!
//! One test function holds the whole scenario (a test runner may run each test in a
//! process of its own, and the receivers are to start once): three agents run at once.
//! - `direct` writes to both receivers, pushes to a real Pushgateway and serves `--listen`
//!   (the sinks combine): its series carry exactly the grouping and series labels and the
//!   simulator's values; after SIGTERM no instant query returns them within a second
//!   (staleness markers), while a range query still has the data.
//! - `outage` writes through a FaultProxy per receiver that refuses connections, then
//!   answers 503, then relays again: every cycle's sample arrives after recovery, in order,
//!   and the receivers log no rejected request.
//! - `small_queue` goes through the same outage with a queue of two requests: the oldest
//!   are dropped and counted, and what arrives is still in order.

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const VICTORIA_METRICS: &str = "/usr/bin/victoria-metrics";
const LOCALES: usize = 3;
const USERS: &str = "alice,bob";

/// One series of a query answer, with its newest sample.
#[derive(Clone, Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    time: f64,
    value: f64,
}

fn label_map(v: &Value) -> BTreeMap<String, String> {
    v.as_object()
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn point(v: &Value) -> (f64, f64) {
    let t = v[0].as_f64().unwrap_or(f64::NAN);
    let x = v[1]
        .as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN);
    (t, x)
}

/// One series' labels and its raw (time, value) samples.
type RawSeries = (BTreeMap<String, String>, Vec<(f64, f64)>);

/// A remote-write receiver with a Prometheus-compatible query API, killed on Drop.
struct Receiver {
    name: &'static str,
    /// Base URL of the query API.
    url: String,
    port: u16,
    // Declared before `_dir` so the process dies before its storage is removed.
    proc: Proc,
    _dir: TempDir,
    http: reqwest::blocking::Client,
}

impl Receiver {
    fn prometheus() -> Receiver {
        need(PROMETHEUS, "prometheus");
        let dir = TempDir::new("rw-prometheus");
        let cfg = dir.path("prometheus.yml");
        // Nothing to scrape: every series comes by remote write.
        std::fs::write(
            &cfg,
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n",
        )
        .expect("write prometheus.yml");
        let port = free_port();
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--web.enable-remote-write-receiver");
        Receiver::wait_ready(
            "prometheus",
            port,
            Proc::spawn("prometheus", cmd, Stdio::null()),
            dir,
            "/-/ready",
        )
    }

    fn victoria_metrics() -> Receiver {
        need(VICTORIA_METRICS, "victoria-metrics");
        let dir = TempDir::new("rw-victoria-metrics");
        let port = free_port();
        let mut cmd = Command::new(VICTORIA_METRICS);
        cmd.arg(format!("-storageDataPath={}", dir.path("vm").display()))
            .arg(format!("-httpListenAddr=127.0.0.1:{port}"))
            .arg("-retentionPeriod=1d")
            // Else instant queries hide the newest 30 s.
            .arg("-search.latencyOffset=1s");
        Receiver::wait_ready(
            "victoria-metrics",
            port,
            Proc::spawn("victoria-metrics", cmd, Stdio::null()),
            dir,
            "/health",
        )
    }

    fn wait_ready(
        name: &'static str,
        port: u16,
        proc: Proc,
        dir: TempDir,
        ready: &str,
    ) -> Receiver {
        let r = Receiver {
            name,
            url: format!("http://127.0.0.1:{port}"),
            port,
            proc,
            _dir: dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        eventually(
            Duration::from_secs(30),
            &format!("{name} to be ready"),
            || {
                let resp = r
                    .http
                    .get(format!("{}{ready}", r.url))
                    .send()
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(resp.status().to_string())
                }
            },
        );
        r
    }

    /// The remote-write endpoint (both receivers use the same path).
    fn write_url(&self) -> String {
        format!("{}/api/v1/write", self.url)
    }

    fn api(&self, path_and_query: &str) -> Result<Value, String> {
        let r = self
            .http
            .get(format!("{}{path_and_query}", self.url))
            .send()
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let v: Value = r.json().map_err(|e| e.to_string())?;
        if !status.is_success() || v["status"] != "success" {
            return Err(format!(
                "{}: {path_and_query}: HTTP {status}: {v}",
                self.name
            ));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at `time`: each series with its sample.
    fn query_at(&self, q: &str, time: f64) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!(
            "/api/v1/query?query={}&time={time:.3}",
            utf8_percent_encode(q, NON_ALPHANUMERIC)
        ))?;
        Ok(data["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let (time, value) = point(&s["value"]);
                        Sample {
                            labels: label_map(&s["metric"]),
                            time,
                            value,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The raw samples of each series of `selector` over the last `window` seconds
    /// (an instant query of a range selector).
    fn raw(&self, selector: &str, window: u64) -> Result<Vec<RawSeries>, String> {
        let data = self.api(&format!(
            "/api/v1/query?query={}&time={:.3}",
            utf8_percent_encode(&format!("{selector}[{window}s]"), NON_ALPHANUMERIC),
            now()
        ))?;
        if data["resultType"] != "matrix" {
            return Err(format!("{}: not a matrix: {data}", self.name));
        }
        Ok(data["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        let points = s["values"]
                            .as_array()
                            .map(|v| v.iter().map(point).collect())
                            .unwrap_or_default();
                        (label_map(&s["metric"]), points)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Points of a range query over the last `seconds`, step 1 s.
    fn range_points(&self, q: &str, seconds: f64) -> Result<usize, String> {
        let end = now();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step=1",
            utf8_percent_encode(q, NON_ALPHANUMERIC),
            end - seconds
        ))?;
        Ok(data["result"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s["values"].as_array().map_or(0, Vec::len))
                    .sum()
            })
            .unwrap_or_default())
    }

    /// Log lines that show a rejected or failed write.
    fn rejections(&self) -> Vec<String> {
        self.proc
            .log_text()
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("level=error")
                    || l.contains("\terror\t")
                    || l.contains("out of order")
                    || l.contains("out-of-order")
                    || l.contains("out of bounds")
                    || l.contains("duplicate sample")
                    || (l.contains("remote write") && (l.contains("warn") || l.contains("err")))
            })
            .map(str::to_string)
            .collect()
    }
}

fn sim() -> Sim {
    Sim::start(&[
        "--locales",
        &LOCALES.to_string(),
        "--distinct-locale-memory",
        "--release",
        "2024.04.19",
        "--users",
        USERS,
    ])
}

fn agent(endpoint: &str, job_id: &str, lock_dir: &str, extra: &[&str]) -> Proc {
    let mut args = vec![
        "run",
        "--arkouda",
        endpoint,
        "--job-id",
        job_id,
        "--cluster",
        "c1",
        "--labels",
        "site=x",
        "--interval",
        "1s",
        "--lock-dir",
        lock_dir,
    ];
    args.extend_from_slice(extra);
    spawn_agent(&args)
}

/// Checks one consistent instant answer for `job_id`: exact label sets and the values of
/// one simulator tick k (memory per locale and requests per command), all with one
/// timestamp (the cycle's). Returns k.
fn check_values(r: &Receiver, job_id: &str) -> u64 {
    let q = format!(
        "{{__name__=~\"arkouda_locale_memory_used_bytes|arkouda_requests_total\",slurm_job_id=\"{job_id}\"}}"
    );
    eventually(
        Duration::from_secs(30),
        &format!("{}: job {job_id}'s memory and requests", r.name),
        || {
            let s = r.query_at(&q, now() - 1.5)?;
            let mem: BTreeMap<String, f64> = s
                .iter()
                .filter(|s| s.labels["__name__"] == "arkouda_locale_memory_used_bytes")
                .map(|s| (s.labels.get("locale").cloned().unwrap_or_default(), s.value))
                .collect();
            let req: BTreeMap<String, f64> = s
                .iter()
                .filter(|s| s.labels["__name__"] == "arkouda_requests_total")
                .map(|s| {
                    (
                        s.labels.get("command").cloned().unwrap_or_default(),
                        s.value,
                    )
                })
                .collect();
            if mem.len() != LOCALES || req.len() < 3 {
                return Err(format!("not all series yet: {s:?}"));
            }
            let times: Vec<f64> = s.iter().map(|s| s.time).collect();
            let k = mem["0"] / 1e8;
            if k < 1.0 || k.fract() != 0.0 {
                return Err(format!("locale 0's memory {} is no tick", mem["0"]));
            }
            // Every series of a cycle carries that cycle's one timestamp.
            if times.iter().any(|t| *t != times[0]) {
                return Err(format!("samples of several cycles: {times:?}"));
            }
            for (i, v) in &mem {
                let i: f64 = i.parse().map_err(|_| format!("locale {i}"))?;
                if *v != (k * 100.0 + i) * 1e6 {
                    return Err(format!("tick {k}: memory {mem:?}"));
                }
            }
            let want = [("create", 4.0 * k), ("randint", 6.0 * k), ("sum", 2.0 * k)];
            for (c, v) in want {
                if req.get(c) != Some(&v) {
                    return Err(format!("tick {k}: requests {req:?}"));
                }
            }
            // Exactly the grouping labels the Pushgateway would add (no instance) plus
            // the series' own.
            for x in &s {
                let own = if x.labels["__name__"] == "arkouda_requests_total" {
                    "command"
                } else {
                    "locale"
                };
                let mut want: Vec<&str> =
                    vec!["__name__", "cluster", "job", "site", "slurm_job_id", own];
                want.sort();
                let got: Vec<&str> = x.labels.keys().map(String::as_str).collect();
                assert_eq!(got, want, "{}: labels of {x:?}", r.name);
                assert_eq!(x.labels["job"], "arkouda");
                assert_eq!(x.labels["cluster"], "c1");
                assert_eq!(x.labels["site"], "x");
            }
            Ok(k as u64)
        },
    )
}

/// The samples of locale 0's memory of `job_id` over the last `window` seconds: one per
/// cycle, so (--distinct-locale-memory) consecutive ticks k × 1e8. Asserts they are in
/// time order with increasing ticks; returns the ticks.
fn ticks(r: &Receiver, job_id: &str, window: u64) -> Vec<u64> {
    let series = r
        .raw(
            &format!("arkouda_locale_memory_used_bytes{{slurm_job_id=\"{job_id}\",locale=\"0\"}}"),
            window,
        )
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(series.len(), 1, "{}: {series:?}", r.name);
    let points = &series[0].1;
    for w in points.windows(2) {
        assert!(
            w[0].0 < w[1].0 && w[0].1 < w[1].1,
            "{}: job {job_id}: samples out of order: {w:?}",
            r.name
        );
    }
    points.iter().map(|(_, v)| (v / 1e8) as u64).collect()
}

/// The agent's own counter as the receiver holds it.
fn counter(r: &Receiver, name: &str, job_id: &str) -> Option<f64> {
    r.query_at(&format!("{name}{{slurm_job_id=\"{job_id}\"}}"), now() - 1.5)
        .ok()?
        .first()
        .map(|s| s.value)
}

#[test]
fn remote_write_end_to_end() {
    let started = Instant::now();
    let prom = Receiver::prometheus();
    let vm = Receiver::victoria_metrics();
    let pg = Pushgateway::start();
    eprintln!("receivers ready after {:?}", started.elapsed());
    let locks = TempDir::new("rw-locks");
    let lock_dir = locks.0.display().to_string();

    // A proxy per receiver for the outage; `small_queue` shares Prometheus' proxy.
    let prom_proxy = FaultProxy::start(prom.port, ProxyMode::Pass);
    let vm_proxy = FaultProxy::start(vm.port, ProxyMode::Pass);

    let (sim_direct, sim_outage, sim_small) = (sim(), sim(), sim());
    let listen = format!("127.0.0.1:{}", free_port());
    let (p_url, v_url) = (prom.write_url(), vm.write_url());
    let mut direct = agent(
        &sim_direct.endpoint(),
        "7001",
        &lock_dir,
        &[
            "--pushgateway",
            &pg.url,
            "--listen",
            &listen,
            "--remote-write",
            &p_url,
            "--remote-write",
            &v_url,
        ],
    );
    let (pp_url, vp_url) = (
        format!("{}/api/v1/write", prom_proxy.url()),
        format!("{}/api/v1/write", vm_proxy.url()),
    );
    let mut outage = agent(
        &sim_outage.endpoint(),
        "7002",
        &lock_dir,
        &[
            "--no-push",
            "--remote-write",
            &pp_url,
            "--remote-write",
            &vp_url,
        ],
    );
    let mut small = agent(
        &sim_small.endpoint(),
        "7003",
        &lock_dir,
        &[
            "--no-push",
            "--remote-write",
            &pp_url,
            "--remote-write-queue-size",
            "2",
        ],
    );

    // (1) The sinks combine, and the values and labels are the simulator's.
    for r in [&prom, &vm] {
        let k = check_values(r, "7001");
        eprintln!(
            "{}: job 7001 at tick {k} after {:?}",
            r.name,
            started.elapsed()
        );
    }
    pg.wait_group("7001", "job 7001's group in the Pushgateway", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let scraped = reqwest::blocking::get(format!("http://{listen}/metrics"))
        .and_then(|r| r.text())
        .expect("GET /metrics");
    assert!(
        scraped.contains("arkouda_agent_remote_write_errors_total{job=\"arkouda\""),
        "{scraped}"
    );
    for r in [&prom, &vm] {
        check_values(r, "7002");
    }

    // (2) The outage: refused, then 503, then back; the agents keep polling meanwhile.
    let before: Vec<u64> = ticks(&prom, "7002", 120);
    eprintln!("outage starts; job 7002 has ticks {before:?}");
    for p in [&prom_proxy, &vm_proxy] {
        p.set(ProxyMode::Refuse, true);
    }
    std::thread::sleep(Duration::from_secs(3));
    for p in [&prom_proxy, &vm_proxy] {
        p.set(ProxyMode::Status(503), true);
    }
    std::thread::sleep(Duration::from_secs(3));
    for p in [&prom_proxy, &vm_proxy] {
        p.set(ProxyMode::Pass, true);
    }
    let recovered = Instant::now();

    // (3) SIGTERM to `direct`: its series end at once, and stay in range queries.
    direct.signal("TERM");
    let status = direct.wait_exit(Duration::from_secs(10));
    assert!(
        status.success(),
        "direct agent: {status}\n{}",
        direct.log_text()
    );
    let exited = Instant::now();
    for r in [&prom, &vm] {
        let q = "{slurm_job_id=\"7001\"}";
        // Within a second of the exit. VictoriaMetrics adds its own search latency (its
        // newest data becomes searchable ~1 s after it arrives, and -search.latencyOffset
        // hides the newest 1 s): for it the second starts once that has passed.
        let limit = match r.name {
            "victoria-metrics" => Duration::from_secs(2),
            _ => Duration::from_secs(1),
        };
        eventually(
            limit.saturating_sub(exited.elapsed()),
            &format!("{}: job 7001's series to leave instant queries", r.name),
            || match r.query_at(q, now()) {
                Ok(s) if s.is_empty() => Ok(()),
                Ok(s) => Err(format!("{} series left", s.len())),
                Err(e) => Err(e),
            },
        );
        eprintln!(
            "{}: job 7001 gone from instant queries {:?} after the agent exited",
            r.name,
            exited.elapsed()
        );
        let points = r
            .range_points("arkouda_up{slurm_job_id=\"7001\"}", 120.0)
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(points > 0, "{}: no range data of job 7001 left", r.name);
    }
    pg.wait_gone("7001", Duration::from_secs(5));
    assert!(
        direct
            .log_text()
            .contains("remote-written series ended (staleness markers sent)"),
        "{}",
        direct.log_text()
    );

    // (4) After the outage: every cycle's sample, in order, at both receivers.
    for r in [&prom, &vm] {
        let t = eventually(
            Duration::from_secs(30),
            &format!("{}: job 7002's backlog to arrive", r.name),
            || {
                let t = ticks(r, "7002", 300);
                let first = before.first().copied().unwrap_or(1);
                let want: Vec<u64> = (first..first + t.len() as u64).collect();
                // Samples of the outage window arrived once the newest tick is past the
                // outage and no tick is missing.
                if t == want
                    && t.last()
                        .is_some_and(|l| *l >= before.last().copied().unwrap_or(0) + 8)
                {
                    Ok(t)
                } else {
                    Err(format!("ticks {t:?}"))
                }
            },
        );
        eprintln!(
            "{}: job 7002 has every tick {}..={} ({:?} after recovery)",
            r.name,
            t[0],
            t[t.len() - 1],
            recovered.elapsed()
        );
        let errors = eventually(Duration::from_secs(10), "the agent's error counter", || {
            counter(r, "arkouda_agent_remote_write_errors_total", "7002")
                .filter(|v| *v > 0.0)
                .ok_or_else(|| "no errors counted yet".to_string())
        });
        let dropped = counter(r, "arkouda_agent_remote_write_dropped_total", "7002");
        assert_eq!(
            dropped,
            Some(0.0),
            "{}: nothing dropped with the default queue",
            r.name
        );
        eprintln!("{}: job 7002 counted {errors} failed attempts", r.name);
    }
    let log = outage.log_text();
    assert!(
        count_lines(&log, "cannot remote-write") <= 4,
        "one warning per state change and receiver:\n{log}"
    );

    // (5) A queue of two: the oldest requests of the outage are dropped and counted; the
    // rest arrive in order.
    let t = eventually(
        Duration::from_secs(30),
        "job 7003 to be written again after the outage",
        || {
            let t = ticks(&prom, "7003", 300);
            let gaps = t.windows(2).filter(|w| w[1] != w[0] + 1).count();
            if gaps >= 1
                && counter(&prom, "arkouda_agent_remote_write_dropped_total", "7003")
                    .is_some_and(|d| d >= 1.0)
            {
                Ok(t)
            } else {
                Err(format!("ticks {t:?}"))
            }
        },
    );
    eprintln!("prometheus: job 7003 (queue of 2) has ticks {t:?}");

    // (6) No receiver rejected anything; a clean stop of the other agents.
    for a in [&mut outage, &mut small] {
        a.signal("TERM");
        let status = a.wait_exit(Duration::from_secs(10));
        assert!(status.success(), "{status}\n{}", a.log_text());
    }
    for r in [&prom, &vm] {
        for job in ["7002", "7003"] {
            if r.name == "victoria-metrics" && job == "7003" {
                continue;
            }
            eventually(
                Duration::from_secs(2),
                &format!("{}: job {job}'s series to end", r.name),
                || match r.query_at(&format!("{{slurm_job_id=\"{job}\"}}"), now()) {
                    Ok(s) if s.is_empty() => Ok(()),
                    Ok(s) => Err(format!("{} series left: {s:?}", s.len())),
                    Err(e) => Err(e),
                },
            );
        }
        let bad = r.rejections();
        assert!(
            bad.is_empty(),
            "{} logged rejections:\n{}",
            r.name,
            bad.join("\n")
        );
    }
    eprintln!("remote write end to end in {:?}", started.elapsed());
}
