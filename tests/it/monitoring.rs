//! From push to picture, on real components only: a real Prometheus (Debian's 2.42), a
//! real Pushgateway, the simulator and the agent, plus `promtool` for the shipped
//! configuration, rules and rule tests and for the exposition the agent pushes and serves,
//! and static checks of the two Grafana dashboards, the job's and the site's (no Grafana
//! server exists on these machines, so every panel query also runs against the real
//! Prometheus, and the site table's `merge` is replayed on the answers). Every PromQL
//! expression shipped (dashboards, rules, documented queries) is also parsed by a PromQL
//! parser (`promql-parser`), without any Prometheus.
//!
//! One Prometheus serves the whole end-to-end scenario: it reads its configuration only at
//! start, so the ports of the Pushgateway and of the scrape-mode agent are chosen first and
//! its `prometheus.yml` is generated from the shipped one. It lives inside the single test
//! that uses it (`prometheus_end_to_end`) and is killed on Drop, panics included, so it
//! cannot outlive the test process.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";

const PROMETHEUS_YML: &str = "config/prometheus/prometheus.yml";
const RULES_YML: &str = "config/prometheus/arkouda.rules.yml";
const RULE_TESTS_YML: &str = "tests/prometheus/arkouda.rules.test.yml";
const DASHBOARD: &str = "config/grafana/dashboards/arkouda-job.json";
const SITE_DASHBOARD: &str = "config/grafana/dashboards/arkouda-site.json";
/// The exposition format's Content-Type (text format 0.0.4), as Prometheus's own client
/// libraries and the Pushgateway send it.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A file of the repository.
fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// Runs promtool; returns (success, combined output).
fn promtool(args: &[&str]) -> (bool, String) {
    need(PROMTOOL, "prometheus");
    let out = Command::new(PROMTOOL)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PROMTOOL}: {e}"));
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Replaces the single occurrence of `from` (panics if there is not exactly one).
fn replace_once(text: &str, from: &str, to: &str) -> String {
    let n = text.matches(from).count();
    assert_eq!(
        n, 1,
        "{from:?} occurs {n} times in the shipped prometheus.yml"
    );
    text.replacen(from, to, 1)
}

/// The shipped prometheus.yml with 1 s intervals, the Pushgateway's address, and its
/// commented scrape-mode job uncommented and pointed at `agent`.
fn test_prometheus_yml(pushgateway: &str, agent: &str) -> String {
    let shipped = read(PROMETHEUS_YML);
    let mut text = replace_once(&shipped, "scrape_interval: 15s", "scrape_interval: 1s");
    text = replace_once(&text, "evaluation_interval: 15s", "evaluation_interval: 1s");
    text = replace_once(&text, "\"pushgateway:9091\"", &format!("\"{pushgateway}\""));
    let mut out = Vec::new();
    let mut uncommented = 0;
    let mut in_job = false;
    for line in text.lines() {
        if line == "  # - job_name: arkouda-agents" {
            in_job = true;
        } else if in_job && !line.starts_with("  #   ") {
            in_job = false;
        }
        if in_job {
            out.push(format!("  {}", &line[4..]));
            uncommented += 1;
        } else {
            out.push(line.to_string());
        }
    }
    assert!(
        uncommented >= 4,
        "the shipped prometheus.yml has no commented `arkouda-agents` scrape job"
    );
    replace_once(
        &(out.join("\n") + "\n"),
        "\"nid0001:9555\"",
        &format!("\"{agent}\""),
    )
}

/// One sample of a query answer.
#[derive(Clone, Debug)]
struct Sample {
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn name(&self) -> &str {
        self.labels
            .get("__name__")
            .map(String::as_str)
            .unwrap_or("")
    }
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

fn num(v: &Value) -> f64 {
    v.as_str()
        .and_then(|s| s.parse::<f64>().ok())
        .unwrap_or(f64::NAN)
}

/// A real Prometheus on a free port with its own storage, killed on Drop.
struct Prometheus {
    url: String,
    // Declared before `_dir` so the process dies before its storage is removed.
    proc: Proc,
    _dir: TempDir,
    http: reqwest::blocking::Client,
}

impl Prometheus {
    /// Starts Prometheus with `config` (written next to a copy of the shipped rules).
    fn start(config: &str) -> Prometheus {
        need(PROMETHEUS, "prometheus");
        let dir = TempDir::new("prometheus");
        let cfg = dir.path("prometheus.yml");
        std::fs::write(&cfg, config).expect("write prometheus.yml");
        std::fs::copy(repo(RULES_YML), dir.path("arkouda.rules.yml")).expect("copy the rules");
        // The generated configuration must be valid for promtool as well.
        let (ok, out) = promtool(&["check", "config", &cfg.display().to_string()]);
        assert!(
            ok,
            "promtool check config on the test's copy:\n{out}\n{config}"
        );
        let port = free_port();
        let mut cmd = Command::new(PROMETHEUS);
        cmd.arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"));
        let proc = Proc::spawn("prometheus", cmd, Stdio::null());
        let p = Prometheus {
            url: format!("http://127.0.0.1:{port}"),
            proc,
            _dir: dir,
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .expect("http client"),
        };
        eventually(Duration::from_secs(20), "Prometheus to be ready", || {
            let r = p
                .http
                .get(format!("{}/-/ready", p.url))
                .send()
                .map_err(|e| e.to_string())?;
            if r.status().is_success() {
                Ok(())
            } else {
                Err(r.status().to_string())
            }
        });
        p
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
            return Err(format!("{path_and_query}: HTTP {status}: {v}"));
        }
        Ok(v["data"].clone())
    }

    /// An instant query at `time`: the series of the vector (a scalar has no labels).
    fn query_at(&self, q: &str, time: f64) -> Result<Vec<Sample>, String> {
        let data = self.api(&format!(
            "/api/v1/query?query={}&time={time:.3}",
            utf8_percent_encode(q, NON_ALPHANUMERIC)
        ))?;
        match data["resultType"].as_str() {
            Some("vector") => Ok(data["result"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|s| Sample {
                            labels: label_map(&s["metric"]),
                            value: num(&s["value"][1]),
                        })
                        .collect()
                })
                .unwrap_or_default()),
            Some("scalar") => Ok(vec![Sample {
                labels: BTreeMap::new(),
                value: num(&data["result"][1]),
            }]),
            other => Err(format!("{q}: unexpected result type {other:?}")),
        }
    }

    fn query(&self, q: &str) -> Result<Vec<Sample>, String> {
        self.query_at(q, now())
    }

    /// A range query over the last two minutes: the number of series and of points.
    fn query_range(&self, q: &str) -> Result<(usize, usize), String> {
        let end = now();
        let data = self.api(&format!(
            "/api/v1/query_range?query={}&start={:.3}&end={end:.3}&step=1",
            utf8_percent_encode(q, NON_ALPHANUMERIC),
            end - 120.0
        ))?;
        let series = data["result"].as_array().cloned().unwrap_or_default();
        let points = series
            .iter()
            .map(|s| s["values"].as_array().map_or(0, Vec::len))
            .sum();
        Ok((series.len(), points))
    }

    /// `GET /api/v1/label/NAME/values?match[]=SELECTOR`.
    fn label_values(&self, name: &str, selector: &str) -> Result<Vec<String>, String> {
        let data = self.api(&format!(
            "/api/v1/label/{name}/values?match[]={}",
            utf8_percent_encode(selector, NON_ALPHANUMERIC)
        ))?;
        Ok(data
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// What the simulator sent in its `metrics ALL` reply of tick `tick` (from `--reply-log`):
/// global requests per command (without `total`) and memory per locale.
fn sim_reported(
    reply_log: &Path,
    tick: u64,
) -> Option<(BTreeMap<String, f64>, BTreeMap<String, f64>)> {
    let text = std::fs::read_to_string(reply_log).ok()?;
    let entry = text.lines().find_map(|l| {
        let e: Value = serde_json::from_str(l).ok()?;
        (e["port"] == "metrics" && e["category"] == "ALL" && e["tick"].as_u64() == Some(tick))
            .then_some(e)
    })?;
    let records: Value = serde_json::from_str(entry["msg"].as_str()?).ok()?;
    let mut requests = BTreeMap::new();
    let mut memory = BTreeMap::new();
    for r in records.as_array()? {
        let name = r["name"].as_str().unwrap_or_default();
        let value = r["value"].as_f64().unwrap_or(f64::NAN);
        match (r["category"].as_str(), r["scope"].as_str()) {
            (Some("NUM_REQUESTS"), Some("GLOBAL")) if name != "total" => {
                requests.insert(name.to_string(), value);
            }
            (Some("SYSTEM"), Some("LOCALE")) if name == "arkouda_memory_used_per_locale" => {
                let locale = match &r["locale_num"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                memory.insert(locale, value);
            }
            _ => {}
        }
    }
    Some((requests, memory))
}

const LOCALES: usize = 3;
const USERS: &str = "alice,bob";
const RELEASE: &str = "2024.04.19";

/// Checks that Prometheus holds, for `job_id`, exactly the memory per locale and requests
/// per command that the simulator reported at one tick, with exactly the expected labels
/// (`instance`: none through the Pushgateway, the target's address in scrape mode).
/// Returns the tick.
fn check_values_match_simulator(
    prom: &Prometheus,
    job_id: &str,
    reply_log: &Path,
    instance: Option<&str>,
) -> u64 {
    let q = format!(
        "{{__name__=~\"arkouda_locale_memory_used_bytes|arkouda_requests_total\",slurm_job_id=\"{job_id}\"}}"
    );
    // One query, 2 s in the past: every series comes from the same, complete scrape.
    let samples = eventually(
        Duration::from_secs(60),
        &format!("job {job_id}'s memory and requests in Prometheus"),
        || {
            let s = prom.query_at(&q, now() - 2.0)?;
            let mem = s
                .iter()
                .filter(|s| s.name() == "arkouda_locale_memory_used_bytes")
                .count();
            let req = s
                .iter()
                .filter(|s| s.name() == "arkouda_requests_total")
                .count();
            if mem == LOCALES && req > 0 {
                Ok(s)
            } else {
                Err(format!("{mem} memory and {req} request series: {s:?}"))
            }
        },
    );
    let mut memory = BTreeMap::new();
    let mut requests = BTreeMap::new();
    for s in &samples {
        let mut want: BTreeMap<String, String> = labels(&[
            ("__name__", s.name()),
            ("job", "arkouda"),
            ("slurm_job_id", job_id),
            ("cluster", "c1"),
        ]);
        if let Some(i) = instance {
            want.insert("instance".into(), i.into());
        }
        let key = if s.name() == "arkouda_requests_total" {
            let c = s.labels.get("command").cloned().unwrap_or_default();
            want.insert("command".into(), c.clone());
            requests.insert(c.clone(), s.value);
            c
        } else {
            let l = s.labels.get("locale").cloned().unwrap_or_default();
            want.insert("locale".into(), l.clone());
            memory.insert(l.clone(), s.value);
            l
        };
        assert_eq!(s.labels, want, "labels of {} {key}", s.name());
    }
    // Tick k: locale i reports (100k + i) × 1e6 bytes (--distinct-locale-memory).
    let mem0 = memory["0"];
    let k = mem0 / 1e8;
    assert!(
        k >= 1.0 && k.fract() == 0.0,
        "locale 0's memory {mem0} is no tick"
    );
    let tick = k as u64;
    let (want_requests, want_memory) = sim_reported(reply_log, tick)
        .unwrap_or_else(|| panic!("no ALL reply of tick {tick} in {}", reply_log.display()));
    assert_eq!(
        memory, want_memory,
        "job {job_id}: memory per locale vs the simulator's reply of tick {tick}"
    );
    assert_eq!(
        requests, want_requests,
        "job {job_id}: requests per command vs the simulator's reply of tick {tick}"
    );
    // And the documented workload: 2 users, create 2k, randint 3k, sum k each.
    for i in 0..LOCALES {
        assert_eq!(memory[&i.to_string()], (k * 100.0 + i as f64) * 1e6);
    }
    assert_eq!(requests["create"], 2.0 * 2.0 * k);
    assert_eq!(requests["randint"], 2.0 * 3.0 * k);
    assert_eq!(requests["sum"], 2.0 * k);
    tick
}

/// Every rule name of the shipped rules file: (recording rules, alerts).
fn rule_names() -> (Vec<String>, Vec<String>) {
    let text = read(RULES_YML);
    let mut records = Vec::new();
    let mut alerts = Vec::new();
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("- record: ") {
            records.push(n.trim().to_string());
        } else if let Some(n) = line.strip_prefix("- alert: ") {
            alerts.push(n.trim().to_string());
        }
    }
    assert!(!records.is_empty() && !alerts.is_empty(), "no rules parsed");
    (records, alerts)
}

fn dashboard() -> Value {
    load_dashboard(DASHBOARD)
}

fn load_dashboard(path: &str) -> Value {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path} is no valid JSON: {e}"))
}

/// Every panel, nested ones (in collapsed rows) included.
fn all_panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    let mut stack: Vec<&Value> = d["panels"]
        .as_array()
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    while let Some(p) = stack.pop() {
        if let Some(inner) = p["panels"].as_array() {
            stack.extend(inner.iter());
        }
        out.push(p);
    }
    out.sort_by_key(|p| p["id"].as_i64());
    out
}

/// Grafana's built-in variables a query may use.
const BUILTINS: &[&str] = &[
    "__rate_interval",
    "__interval",
    "__interval_ms",
    "__range",
    "__range_s",
    "__range_ms",
    "__from",
    "__to",
];

/// Grafana's built-in variables of data links.
const LINK_BUILTINS: &[&str] = &["__data", "__field", "__url_time_range"];

/// The variable references (`$name`, `${name}`, `${name:fmt}`, `[[name]]`) in `text`.
fn variable_refs(text: &str) -> Vec<String> {
    let word = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        let after = &rest[i + 1..];
        let name = match after.strip_prefix('{') {
            Some(inner) => word(inner),
            None => word(after),
        };
        // `$1` in a label_replace replacement is a regex group, not a variable.
        if !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit()) {
            out.push(name);
        }
        rest = after;
    }
    let mut rest = text;
    while let Some(i) = rest.find("[[") {
        let after = &rest[i + 2..];
        let name = word(after);
        if !name.is_empty() {
            out.push(name);
        }
        rest = after;
    }
    out
}

/// Fills the variables of `text` from `vars` (panics on one that is not there).
fn substitute(text: &str, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (braced, inner) = match after.strip_prefix('{') {
            Some(inner) => (true, inner),
            None => (false, after),
        };
        let name: String = inner
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let value = vars
            .get(name.as_str())
            .unwrap_or_else(|| panic!("no value for ${name} in {text}"));
        out.push_str(value);
        let mut consumed = name.len();
        if braced {
            consumed += 1 + inner[name.len()..].find('}').map_or(0, |j| j + 1);
        }
        rest = &after[consumed..];
    }
    out.push_str(rest);
    out
}

/// A `label_values(SELECTOR, LABEL)` variable query, split.
fn label_values_query(q: &str) -> (String, String) {
    let inner = q
        .trim()
        .strip_prefix("label_values(")
        .and_then(|s| s.strip_suffix(')'))
        .unwrap_or_else(|| panic!("variable query {q:?} is not label_values(SELECTOR, LABEL)"));
    let (sel, label) = inner
        .rsplit_once(',')
        .unwrap_or_else(|| panic!("variable query {q:?} has no label"));
    (sel.trim().to_string(), label.trim().to_string())
}

/// Runs every panel query of dashboard `d`, variables filled in from `vars`, until each
/// returns data (instant queries: a sample; range queries: a series over the last two
/// minutes); returns the number of queries.
fn check_panels_return_data(prom: &Prometheus, d: &Value, vars: &BTreeMap<&str, &str>) -> usize {
    let mut queries = 0;
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("target expr");
            let q = substitute(expr, vars);
            let what = format!("panel {:?} query {q}", p["title"]);
            if t["instant"] == true {
                eventually(Duration::from_secs(30), &what, || match prom.query(&q)? {
                    s if s.is_empty() => Err("no data".into()),
                    s => Ok(s),
                });
            } else {
                eventually(Duration::from_secs(30), &what, || {
                    match prom.query_range(&q)? {
                        (0, _) => Err("no series".into()),
                        (n, points) => Ok((n, points)),
                    }
                });
            }
            queries += 1;
        }
    }
    queries
}

/// The site dashboard's only panel of type `ty` (`table`), or panics.
fn site_panel<'a>(d: &'a Value, ty: &str) -> &'a Value {
    let found: Vec<&Value> = all_panels(d)
        .into_iter()
        .filter(|p| p["type"] == ty)
        .collect();
    match found.as_slice() {
        [p] => p,
        other => panic!("{} panels of type {ty} in the site dashboard", other.len()),
    }
}

/// The single query of a panel.
fn only_expr(p: &Value) -> &str {
    match p["targets"].as_array().map(Vec::as_slice) {
        Some([t]) => t["expr"].as_str().expect("expr"),
        _ => panic!("panel {:?} has not exactly one query", p["title"]),
    }
}

/// Physical memory per locale in the simulator (bytes); the memory-ratio denominator.
const SIM_PHYSICAL_MEMORY: f64 = 274877906944.0;

/// The requests a simulator of `USERS` runs per tick, all commands: create 2, randint 3,
/// sum 1 per user (connect and getconfig stay at 1).
const SIM_REQUESTS_PER_TICK: f64 = 2.0 * (2.0 + 3.0 + 1.0);

/// The site's stat panels count exactly the two jobs (3 locales each); the sums are of
/// two jobs' simulated values.
fn check_site_stats(prom: &Prometheus, d: &Value, vars: &BTreeMap<&str, &str>) {
    let mut seen = BTreeSet::new();
    for p in all_panels(d).into_iter().filter(|p| p["type"] == "stat") {
        let title = p["title"].as_str().unwrap_or_default();
        let q = substitute(only_expr(p), vars);
        let check = |v: f64| -> Result<(), String> {
            let ok = match title {
                "Running jobs" => v == 2.0,
                "Servers not answering" | "Agents not pushing" => v == 0.0,
                "Locales in use" => v == 2.0 * LOCALES as f64,
                // Two jobs of 3 locales at ticks k1, k2: (300 (k1 + k2) + 6) MB.
                "Memory used (all jobs)" => {
                    let mb = v / 1e6 - 6.0;
                    mb >= 600.0 && mb % 300.0 == 0.0
                }
                // Two jobs at most one tick a second; rate5m is lower while a job is
                // younger than 5 minutes (the increase is divided by the 5 minutes).
                "Requests per second (all jobs)" => {
                    v > 0.0 && v <= 2.0 * 1.5 * SIM_REQUESTS_PER_TICK
                }
                other => panic!("no expectation for the site's stat {other:?}"),
            };
            if ok {
                Ok(())
            } else {
                Err(format!("{title}: {v}"))
            }
        };
        eventually(
            Duration::from_secs(30),
            &format!("stat {title}: {q}"),
            || match prom.query(&q)?.as_slice() {
                [s] => check(s.value),
                other => Err(format!("{} samples: {other:?}", other.len())),
            },
        );
        seen.insert(title.to_string());
    }
    assert_eq!(seen.len(), 6, "stats checked: {seen:?}");
}

/// The top lists hold each of the two jobs once, with its cluster, and each bar's link
/// opens that job.
fn check_site_top_lists(prom: &Prometheus, d: &Value, vars: &BTreeMap<&str, &str>) {
    let tops: Vec<&Value> = all_panels(d)
        .into_iter()
        .filter(|p| p["type"] == "bargauge")
        .collect();
    let titles: Vec<&str> = tops.iter().filter_map(|p| p["title"].as_str()).collect();
    for want in ["Top jobs by memory", "Top jobs by request rate"] {
        assert!(titles.contains(&want), "no panel {want:?}: {titles:?}");
    }
    for p in tops {
        let q = substitute(only_expr(p), vars);
        let samples = eventually(Duration::from_secs(30), &q, || {
            let s = prom.query(&q)?;
            let jobs: BTreeSet<&str> = s
                .iter()
                .filter_map(|s| s.labels.get("slurm_job_id").map(String::as_str))
                .collect();
            if s.len() == 2 && jobs == BTreeSet::from(["4242", "4243"]) {
                Ok(s)
            } else {
                Err(format!("{s:?}"))
            }
        });
        let url = panel_link_urls(p).pop().expect("a top list has a link");
        for s in samples {
            assert_eq!(
                s.labels.keys().collect::<Vec<_>>(),
                ["cluster", "slurm_job_id"],
                "{q}"
            );
            assert!(s.value > 0.0 && s.value.is_finite(), "{q}: {s:?}");
            let (_, params) = split_url(&fill_link(&url, &s.labels, vars));
            assert_eq!(params.get("var-job_id"), s.labels.get("slurm_job_id"));
            assert_eq!(params.get("var-cluster"), s.labels.get("cluster"));
        }
    }
}

/// The site table: its queries at one instant, merged as Grafana's `merge` transformation
/// merges them, give exactly one row per running job with exactly the expected columns
/// and values. Returns the rows.
fn check_site_table(
    prom: &Prometheus,
    d: &Value,
    vars: &BTreeMap<&str, &str>,
) -> Vec<BTreeMap<String, String>> {
    let table = site_panel(d, "table");
    let transformations: Vec<&str> = table["transformations"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(transformations, ["merge", "organize"]);
    let targets: Vec<(String, String)> = table["targets"]
        .as_array()
        .expect("table targets")
        .iter()
        .map(|t| {
            assert_eq!(t["instant"], true, "{t}");
            assert_eq!(t["format"], "table", "{t}");
            (
                t["refId"].as_str().expect("refId").to_string(),
                substitute(t["expr"].as_str().expect("expr"), vars),
            )
        })
        .collect();
    // The columns, by the refId of their query.
    let col = |name: &str| -> String {
        let refs: BTreeMap<&str, &str> = BTreeMap::from([
            ("up", "A"),
            ("info", "B"),
            ("locales", "C"),
            ("memory", "D"),
            ("memory ratio", "E"),
            ("requests", "F"),
            ("errors", "G"),
            ("push age", "H"),
        ]);
        format!("Value #{}", refs[name])
    };
    assert_eq!(targets.len(), 8, "{targets:?}");
    eventually(Duration::from_secs(30), "one table row per job", || {
        let at = now() - 1.0;
        let mut frames = Vec::new();
        for (r, q) in &targets {
            frames.push((r.clone(), prom.query_at(q, at)?));
        }
        let rows = grafana_merge(&frames);
        let jobs: Vec<&str> = rows
            .iter()
            .filter_map(|r| r.get("slurm_job_id").map(String::as_str))
            .collect();
        if rows.len() != 2 || jobs.iter().collect::<BTreeSet<_>>().len() != 2 {
            return Err(format!("{} rows: {rows:?}", rows.len()));
        }
        for row in &rows {
            let job = row["slurm_job_id"].as_str();
            let num = |c: &str| -> f64 {
                row.get(&col(c))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(f64::NAN)
            };
            let bad = |what: &str| Err(format!("job {job}: {what}: {row:?}"));
            let mut want_cols: BTreeSet<String> = ["cluster", "slurm_job_id", "user", "partition"]
                .iter()
                .map(|s| s.to_string())
                .chain(
                    [
                        "up",
                        "info",
                        "locales",
                        "memory",
                        "memory ratio",
                        "requests",
                        "errors",
                    ]
                    .iter()
                    .map(|c| col(c)),
                )
                .collect();
            match job {
                // Pushgateway mode: the push age is a few seconds at most.
                "4242" => {
                    want_cols.insert(col("push age"));
                    if !(0.0..15.0).contains(&num("push age")) {
                        return bad("push age");
                    }
                }
                // Scrape mode: nothing is pushed, the cell is empty.
                "4243" => {}
                other => return bad(&format!("unknown job {other}")),
            }
            if row.keys().cloned().collect::<BTreeSet<_>>() != want_cols {
                return bad(&format!("columns, not {want_cols:?}"));
            }
            for (label, want) in [("cluster", "c1"), ("user", "alice"), ("partition", "debug")] {
                if row[label] != want {
                    return bad(label);
                }
            }
            if num("up") != 1.0 || num("info") != 1.0 {
                return bad("up or info");
            }
            if num("locales") != LOCALES as f64 {
                return bad("locales");
            }
            // Locale i holds (100k + i) MB at tick k: the job, (300k + 3) MB.
            let k = (num("memory") / 1e6 - 3.0) / 300.0;
            if !(k >= 1.0 && k.fract() == 0.0) {
                return bad("memory is no tick's");
            }
            // The other columns may come from a scrape or rule evaluation a tick apart;
            // Arkouda's percentages have about 6 significant digits.
            let ticks = (k as u64).saturating_sub(2)..=k as u64 + 2;
            let ratio = num("memory ratio");
            if !ticks.clone().any(|j| {
                let want = (100.0 * j as f64 + (LOCALES - 1) as f64) * 1e6 / SIM_PHYSICAL_MEMORY;
                (ratio - want).abs() <= 1e-5 * want
            }) {
                return bad("memory ratio is not the busiest locale's of a tick near k");
            }
            // IllegalArgumentError: floor(k/5) per user (v2024.04.19).
            let errors = num("errors");
            if !ticks.clone().any(|j| errors == 2.0 * (j / 5) as f64) {
                return bad("errors");
            }
            // At most one tick a second (rate5m is lower while the job is young).
            let rate = num("requests");
            if !(rate > 0.0 && rate <= SIM_REQUESTS_PER_TICK * 1.5) {
                return bad("requests per second");
            }
        }
        Ok(rows)
    })
}

/// Grafana's `merge` transformation over instant queries in table format: one frame per
/// query (refId, samples) with a column per label and `Value #<refId>`. The key columns
/// are those present in every non-empty frame; a row joins the earlier rows of its key
/// whose shared columns agree, else starts a row of its own. No key column: no merge.
fn grafana_merge(frames: &[(String, Vec<Sample>)]) -> Vec<BTreeMap<String, String>> {
    type Row = BTreeMap<String, String>;
    let frames: Vec<(BTreeSet<String>, Vec<Row>)> = frames
        .iter()
        .filter(|(_, samples)| !samples.is_empty())
        .map(|(r, samples)| {
            let value = format!("Value #{r}");
            let mut fields: BTreeSet<String> = samples
                .iter()
                .flat_map(|s| s.labels.keys().cloned())
                .collect();
            let rows = samples
                .iter()
                .map(|s| {
                    let mut row: BTreeMap<String, String> = fields
                        .iter()
                        .map(|f| (f.clone(), s.labels.get(f).cloned().unwrap_or_default()))
                        .collect();
                    row.insert(value.clone(), s.value.to_string());
                    row
                })
                .collect();
            fields.insert(value);
            (fields, rows)
        })
        .collect();
    let Some((first, _)) = frames.first() else {
        return Vec::new();
    };
    let keys: Vec<&String> = first
        .iter()
        .filter(|f| frames.iter().all(|(fields, _)| fields.contains(*f)))
        .collect();
    let all_rows = frames.iter().flat_map(|(_, rows)| rows.iter().cloned());
    if keys.is_empty() {
        return all_rows.collect();
    }
    let mut out: Vec<(String, Row)> = Vec::new();
    for row in all_rows {
        let key: Vec<&str> = keys.iter().map(|k| row[*k].as_str()).collect();
        let key = key.join("\u{0}");
        let mut merged = false;
        for (_, existing) in out.iter_mut().filter(|(k, _)| *k == key) {
            if row
                .iter()
                .all(|(f, v)| existing.get(f).is_none_or(|e| e == v))
            {
                existing.extend(row.clone());
                merged = true;
            }
        }
        if !merged {
            out.push((key, row));
        }
    }
    out.into_iter().map(|(_, row)| row).collect()
}

/// The URLs of a panel's data links (field defaults, overrides and panel links).
fn panel_link_urls(p: &Value) -> Vec<String> {
    let fc = &p["fieldConfig"];
    let mut links: Vec<&Value> = fc["defaults"]["links"]
        .as_array()
        .into_iter()
        .flatten()
        .collect();
    for o in fc["overrides"].as_array().into_iter().flatten() {
        for prop in o["properties"].as_array().into_iter().flatten() {
            if prop["id"] == "links" {
                links.extend(prop["value"].as_array().into_iter().flatten());
            }
        }
    }
    links.extend(p["links"].as_array().into_iter().flatten());
    links
        .into_iter()
        .map(|l| l["url"].as_str().expect("link url").to_string())
        .collect()
}

/// A data link's URL as Grafana fills it in for one table row or one series: the fields
/// (`${__data.fields.NAME}`) or labels (`${__field.labels.NAME}`) from `fields`, the
/// dashboard's time range (`${__url_time_range}`), the dashboard's variables from `vars`.
fn fill_link(url: &str, fields: &BTreeMap<String, String>, vars: &BTreeMap<&str, &str>) -> String {
    let mut out = String::new();
    let mut rest = url;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let inner = &rest[i + 2..];
        let end = inner
            .find('}')
            .unwrap_or_else(|| panic!("unclosed ${{ in {url}"));
        let name = &inner[..end];
        let value = if let Some(f) = name
            .strip_prefix("__data.fields.")
            .or_else(|| name.strip_prefix("__field.labels."))
        {
            fields
                .get(f)
                .unwrap_or_else(|| panic!("{url}: no field {f} in {fields:?}"))
                .clone()
        } else if name == "__url_time_range" {
            "from=now-1h&to=now".to_string()
        } else {
            vars.get(name)
                .unwrap_or_else(|| panic!("{url}: no variable {name}"))
                .to_string()
        };
        out.push_str(&value);
        rest = &inner[end + 1..];
    }
    out.push_str(rest);
    out
}

/// A URL's path and query parameters (each given once).
fn split_url(url: &str) -> (String, BTreeMap<String, String>) {
    let (path, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        assert!(
            params.insert(k.to_string(), v.to_string()).is_none(),
            "{url}: {k} twice"
        );
    }
    (path.to_string(), params)
}

/// Runs `promtool check metrics` on `body` (its standard input): (success, output).
fn promtool_check_metrics(body: &str) -> (bool, String) {
    use std::io::Write;
    need(PROMTOOL, "prometheus");
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {PROMTOOL}: {e}"));
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(body.as_bytes()).expect("write to promtool");
    drop(stdin);
    let out = child.wait_with_output().expect("promtool");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// `promtool check metrics` accepts `body` and reports nothing at all.
fn check_metrics_clean(body: &str, what: &str) {
    assert!(body.lines().count() > 20, "{what}: {body}");
    let (ok, out) = promtool_check_metrics(body);
    assert!(
        ok && out.trim().is_empty(),
        "promtool check metrics on {what}:\n{out}\n{body}"
    );
}

/// The whole chain on one Prometheus: (a) the pushed values arrive unchanged, (c) scrape
/// mode gives the same series, the rules load and record, (b) every job dashboard query
/// returns data, (e) with both jobs running every site dashboard query returns data and
/// its table has one row per job, (f) the Pushgateway's and the scrape-mode agent's bodies
/// pass `promtool check metrics` and scrape mode sends the text format's Content-Type, and
/// (a) after SIGTERM the series go stale.
#[test]
fn prometheus_end_to_end() {
    let started = Instant::now();
    let logs = TempDir::new("monitoring");
    let pg = Pushgateway::start();
    let listen = format!("127.0.0.1:{}", free_port());
    let sim_args = |log: &Path| -> Vec<String> {
        [
            "--locales",
            &LOCALES.to_string(),
            "--distinct-locale-memory",
            "--release",
            RELEASE,
            "--users",
            USERS,
            "--reply-log",
            &log.display().to_string(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let push_log = logs.path("push-replies.jsonl");
    let scrape_log = logs.path("scrape-replies.jsonl");
    let a1 = sim_args(&push_log);
    let a2 = sim_args(&scrape_log);
    let sim_push = Sim::start(&a1.iter().map(String::as_str).collect::<Vec<_>>());
    let sim_scrape = Sim::start(&a2.iter().map(String::as_str).collect::<Vec<_>>());
    // Our own lock directory: the default (/run/lock) is shared by the whole machine.
    let lock_dir = logs.0.display().to_string();
    let common_args = [
        "--lock-dir",
        &lock_dir,
        "--cluster",
        "c1",
        "--job-user",
        "alice",
        "--partition",
        "debug",
        "--interval",
        "1s",
    ];
    let push_endpoint = sim_push.endpoint();
    let mut push_agent = spawn_agent(
        &[
            &[
                "run",
                "--arkouda",
                &push_endpoint,
                "--pushgateway",
                &pg.url,
                "--job-id",
                "4242",
            ][..],
            &common_args[..],
        ]
        .concat(),
    );
    let scrape_endpoint = sim_scrape.endpoint();
    let mut scrape_agent = spawn_agent(
        &[
            &[
                "run",
                "--arkouda",
                &scrape_endpoint,
                "--job-id",
                "4243",
                "--listen",
                &listen,
                "--no-push",
            ][..],
            &common_args[..],
        ]
        .concat(),
    );
    let prom = Prometheus::start(&test_prometheus_yml(
        &format!("127.0.0.1:{}", pg.port()),
        &listen,
    ));

    for agent in [&mut push_agent, &mut scrape_agent] {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the agent exited early ({status}): {}", agent.log_text());
        }
    }

    // (a) Through the Pushgateway: exactly the simulator's values and the group's labels
    // (the Pushgateway's instance="" is no label in Prometheus).
    let t = Instant::now();
    let tick = check_values_match_simulator(&prom, "4242", &push_log, None);
    eprintln!(
        "pushgateway path: values of tick {tick} in Prometheus after {:?}",
        t.elapsed()
    );

    // (c) Scrape mode: the agent's own /metrics, scraped directly, gives the same values
    // for its simulator, and the same series names and label sets as the Pushgateway path
    // (other job id; Prometheus adds the target's instance; no push_time series; only the
    // scrape agent counts its listen errors).
    let tick = check_values_match_simulator(&prom, "4243", &scrape_log, Some(&listen));
    eprintln!("scrape path: values of tick {tick} in Prometheus");
    let series_of = |job: &str| -> Result<BTreeSet<Vec<(String, String)>>, String> {
        let s = prom.query_at(
            &format!("{{__name__=~\"arkouda_.+\",slurm_job_id=\"{job}\"}}"),
            now() - 2.0,
        )?;
        Ok(s.into_iter()
            .filter(|s| {
                s.labels.get("__name__").map(String::as_str)
                    != Some("arkouda_agent_listen_errors_total")
            })
            .map(|s| {
                s.labels
                    .into_iter()
                    .filter(|(k, _)| k != "instance" && k != "slurm_job_id")
                    .collect()
            })
            .collect())
    };
    let pushed = eventually(
        Duration::from_secs(30),
        "the same series through both paths",
        || {
            let a = series_of("4242")?;
            let b = series_of("4243")?;
            if a == b && a.iter().any(|l| l[0].1 == "arkouda_errors_total") {
                Ok(a)
            } else {
                Err(format!(
                    "only pushed: {:?}; only scraped: {:?}",
                    a.difference(&b).collect::<Vec<_>>(),
                    b.difference(&a).collect::<Vec<_>>()
                ))
            }
        },
    );
    let names: BTreeSet<&str> = pushed.iter().map(|l| l[0].1.as_str()).collect();
    for want in [
        "arkouda_up",
        "arkouda_server_info",
        "arkouda_locale_info",
        "arkouda_job_info",
        "arkouda_agent_poll_duration_seconds",
        "arkouda_command_response_seconds_total",
        "arkouda_user_requests_total",
    ] {
        assert!(names.contains(want), "{want} missing from {names:?}");
    }
    let instances = |job: &str| -> BTreeSet<Option<String>> {
        prom.query(&format!(
            "{{__name__=~\"arkouda_.+\",slurm_job_id=\"{job}\"}}"
        ))
        .expect("query")
        .into_iter()
        .map(|s| s.labels.get("instance").cloned())
        .collect()
    };
    assert_eq!(instances("4242"), BTreeSet::from([None]));
    assert_eq!(instances("4243"), BTreeSet::from([Some(listen.clone())]));
    let push_time = |job: &str| {
        prom.query(&format!("push_time_seconds{{slurm_job_id=\"{job}\"}}"))
            .expect("query")
            .len()
    };
    assert_eq!(push_time("4242"), 1);
    assert_eq!(push_time("4243"), 0);

    // The shipped rules load and evaluate without error, every alert has its severity and
    // texts, every recording rule has data for the job, and a healthy job raises no alert.
    let (records, alerts) = rule_names();
    let groups = eventually(
        Duration::from_secs(30),
        "every rule evaluated without error",
        || {
            let data = prom.api("/api/v1/rules")?;
            let groups = data["groups"].as_array().cloned().unwrap_or_default();
            let rules: Vec<Value> = groups
                .iter()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            let bad: Vec<String> = rules
                .iter()
                .filter(|r| r["health"] != "ok")
                .map(|r| format!("{}: {} {}", r["name"], r["health"], r["lastError"]))
                .collect();
            if rules.len() == records.len() + alerts.len() && bad.is_empty() {
                Ok(rules)
            } else {
                Err(format!("{} rules, not ok: {bad:?}", rules.len()))
            }
        },
    );
    for r in groups.iter().filter(|r| r["type"] == "alerting") {
        let sev = r["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            ["critical", "warning", "info"].contains(&sev),
            "{}: severity {sev:?}",
            r["name"]
        );
        for a in ["summary", "description"] {
            assert!(
                r["annotations"][a].as_str().is_some_and(|s| s.len() > 10),
                "{}: no {a}",
                r["name"]
            );
        }
    }
    for rec in &records {
        eventually(
            Duration::from_secs(30),
            &format!("{rec} for job 4242"),
            || match prom.query(&format!("{rec}{{slurm_job_id=\"4242\"}}"))? {
                s if s.is_empty() => Err("no data".into()),
                s if s.iter().any(|s| !s.value.is_finite()) => Err(format!("{s:?}")),
                s => Ok(s),
            },
        );
    }
    let share = prom
        .query("sum(job_locale:arkouda_locale_memory_used_bytes:share{slurm_job_id=\"4242\"})")
        .expect("query");
    assert!(
        share.len() == 1 && (share[0].value - 1.0).abs() < 1e-9,
        "the shares of a job's locales sum to 1: {share:?}"
    );
    // Pending included: no alert expression is true for a healthy job.
    let alerts_now = prom
        .query("ALERTS{slurm_job_id=~\"4242|4243\"}")
        .expect("query ALERTS");
    assert!(
        alerts_now.is_empty(),
        "healthy jobs raise no alert: {alerts_now:?}"
    );

    // (b) Every panel query of the dashboard, variables filled in, returns data; and each
    // variable's query finds the job.
    let d = dashboard();
    let mut vars: BTreeMap<&str, &str> = BTreeMap::from([
        ("datasource", "prometheus"),
        ("cluster", "c1"),
        ("job_id", "4242"),
        // A multi-value variable in a regex, as Grafana formats it.
        ("locale", "(0|1|2)"),
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__interval_ms", "15000"),
        ("__range", "1h"),
        ("__range_s", "3600"),
        ("__range_ms", "3600000"),
    ]);
    let want_values = [
        ("cluster", vec!["c1"]),
        ("job_id", vec!["4242", "4243"]),
        ("locale", vec!["0", "1", "2"]),
    ];
    for v in d["templating"]["list"].as_array().expect("templating.list") {
        if v["type"] != "query" {
            continue;
        }
        let name = v["name"].as_str().unwrap_or_default();
        let q = v["query"]["query"]
            .as_str()
            .or(v["definition"].as_str())
            .unwrap_or_default();
        let (sel, label) = label_values_query(&substitute(q, &vars));
        let got = prom.label_values(&label, &sel).expect("label values");
        let want = want_values
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, w)| w.clone())
            .unwrap_or_else(|| panic!("unexpected variable {name}"));
        assert_eq!(got, want, "variable {name}: {q}");
    }
    let queries = check_panels_return_data(&prom, &d, &vars);
    eprintln!("{queries} job dashboard queries returned data");
    // The per-locale panels see each locale: one memory series per locale.
    vars.insert("locale", "(0|2)");
    let two = prom
        .query(&substitute(
            "arkouda_locale_memory_used_bytes{cluster=~\"$cluster\", slurm_job_id=\"$job_id\", locale=~\"$locale\"}",
            &vars,
        ))
        .expect("query");
    assert_eq!(two.len(), 2, "{two:?}");

    // The queries docs/monitoring.md offers users are valid PromQL and find the job.
    let doc = read("docs/monitoring.md");
    let section = doc
        .split("## Queries users ask for most")
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .expect("docs/monitoring.md: section of queries");
    let mut doc_queries = 0;
    for q in section.lines().filter_map(|l| l.strip_prefix("    ")) {
        let s = eventually(Duration::from_secs(30), &format!("docs query {q}"), || {
            match prom.query(q)? {
                // A filter may rightly find nothing for a healthy job.
                s if s.is_empty() && !q.contains(" > ") => Err("no data".into()),
                s => Ok(s),
            }
        });
        if q.contains("slurm_job_id=\"4242\"") {
            assert!(
                s.iter()
                    .all(|s| s.labels.get("slurm_job_id").is_none_or(|j| j == "4242")),
                "{q}: {s:?}"
            );
        }
        doc_queries += 1;
    }
    assert!(doc_queries >= 10, "{doc_queries} queries in the docs");

    // (e) The site dashboard with both jobs running (4242 through the Pushgateway, 4243
    // scraped): its variable finds the cluster, every panel query returns data, the stats
    // and top lists count exactly the two jobs, and the table (its queries merged as
    // Grafana's `merge` transformation does) has exactly one row per job, with the job's
    // values; each row's link opens the job dashboard on a job its variables find.
    let site = load_dashboard(SITE_DASHBOARD);
    for v in site["templating"]["list"]
        .as_array()
        .expect("templating.list")
    {
        if v["type"] != "query" {
            continue;
        }
        let q = v["query"]["query"].as_str().unwrap_or_default();
        let (sel, label) = label_values_query(&substitute(q, &vars));
        let got = prom.label_values(&label, &sel).expect("label values");
        assert_eq!(got, ["c1"], "site variable {}: {q}", v["name"]);
    }
    let queries = check_panels_return_data(&prom, &site, &vars);
    eprintln!("{queries} site dashboard queries returned data");
    check_site_stats(&prom, &site, &vars);
    check_site_top_lists(&prom, &site, &vars);
    let t = Instant::now();
    let rows = check_site_table(&prom, &site, &vars);
    eprintln!("site table: one row per job after {:?}", t.elapsed());
    let job_dashboard = dashboard();
    let table = site_panel(&site, "table");
    let url = panel_link_urls(table)
        .pop()
        .expect("the site table has a link");
    for row in &rows {
        let (path, params) = split_url(&fill_link(&url, row, &vars));
        assert!(path.starts_with("/d/arkouda-job/"), "{path}");
        let job = &row["slurm_job_id"];
        assert_eq!(params.get("var-job_id"), Some(job), "{url} for {row:?}");
        assert_eq!(params.get("var-cluster").map(String::as_str), Some("c1"));
        // The job dashboard, opened with these values, lists the job in its variable.
        let job_var = job_dashboard["templating"]["list"]
            .as_array()
            .and_then(|l| l.iter().find(|v| v["name"] == "job_id"))
            .expect("job dashboard's job_id variable");
        let q = job_var["query"]["query"].as_str().expect("job_id query");
        let link_vars = BTreeMap::from([("cluster", params["var-cluster"].as_str())]);
        let (sel, label) = label_values_query(&substitute(q, &link_vars));
        let ids = prom.label_values(&label, &sel).expect("label values");
        assert!(
            ids.contains(job),
            "job dashboard's job ids {ids:?} lack {job}"
        );
    }

    // (f) What reaches Prometheus passes `promtool check metrics` with no finding: the
    // Pushgateway's whole /metrics (job 4242's group and its own metrics), and the
    // scrape-mode agent's /metrics, served with the text format's exact Content-Type.
    let http = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("http client");
    let pushed = http
        .get(format!("{}/metrics", pg.url))
        .send()
        .and_then(|r| r.text())
        .expect("GET the Pushgateway's /metrics");
    assert!(
        pushed.contains(
            "\narkouda_up{cluster=\"c1\",instance=\"\",job=\"arkouda\",slurm_job_id=\"4242\"} 1\n"
        ),
        "{pushed}"
    );
    check_metrics_clean(&pushed, "the Pushgateway's /metrics");
    let r = http
        .get(format!("http://{listen}/metrics"))
        .send()
        .expect("GET the scrape-mode agent's /metrics");
    assert_eq!(r.status().as_u16(), 200);
    let ctype: Vec<&str> = r
        .headers()
        .get_all(reqwest::header::CONTENT_TYPE)
        .iter()
        .map(|v| v.to_str().unwrap_or("(not text)"))
        .collect();
    assert_eq!(
        ctype,
        [TEXT_FORMAT],
        "Content-Type of scrape mode's /metrics"
    );
    let scraped = r.text().expect("body");
    assert!(
        scraped.contains("\narkouda_up{job=\"arkouda\",slurm_job_id=\"4243\",cluster=\"c1\"} 1\n"),
        "{scraped}"
    );
    check_metrics_clean(&scraped, "the scrape-mode agent's /metrics");

    // (a) SIGTERM: the agent deletes its group and the series go stale.
    let t = Instant::now();
    push_agent.signal("TERM");
    let status = push_agent.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "agent exit: {status:?}");
    pg.wait_gone("4242", Duration::from_secs(5));
    for name in ["arkouda_locale_memory_used_bytes", "arkouda_requests_total"] {
        eventually(
            Duration::from_secs(10),
            &format!("{name} of job 4242 to go stale"),
            || match prom.query(&format!("{name}{{slurm_job_id=\"4242\"}}"))? {
                s if s.is_empty() => Ok(()),
                s => Err(format!("{} series left", s.len())),
            },
        );
    }
    eprintln!("pushed series stale {:?} after SIGTERM", t.elapsed());

    // In scrape mode the target goes down and its series go stale too.
    scrape_agent.signal("TERM");
    let status = scrape_agent.wait_exit(Duration::from_secs(15));
    assert!(status.success(), "scrape agent exit: {status:?}");
    eventually(
        Duration::from_secs(10),
        "job 4243's series to go stale",
        || match prom.query("{__name__=~\"arkouda_.+\",slurm_job_id=\"4243\"}")? {
            s if s.is_empty() => Ok(()),
            s => Err(format!("{} series left", s.len())),
        },
    );
    eventually(
        Duration::from_secs(10),
        "up of the scrape-mode target to be 0",
        || match prom.query("up{job=\"arkouda-agents\"}")?.as_slice() {
            [s] if s.value == 0.0 => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    assert!(
        prom.proc
            .log_text()
            .lines()
            .all(|l| !l.contains("level=error")),
        "Prometheus logged errors:\n{}",
        prom.proc.log_text()
    );
    eprintln!("end to end in {:?}", started.elapsed());
}

/// (d) The shipped configuration, rules and rule tests pass promtool, and a wrong
/// expectation in the rule tests fails it.
#[test]
fn promtool_checks_config_rules_and_rule_tests() {
    for args in [
        vec!["check", "config", PROMETHEUS_YML],
        vec!["check", "rules", RULES_YML],
        vec!["test", "rules", RULE_TESTS_YML],
    ] {
        let (ok, out) = promtool(&args);
        assert!(ok, "promtool {}:\n{out}", args.join(" "));
    }

    // A wrong expectation must fail: the rule tests are not vacuous.
    let dir = TempDir::new("ruletests");
    let text = read(RULE_TESTS_YML);
    let text = replace_once_in(
        &text,
        "  - ../../config/prometheus/arkouda.rules.yml",
        &format!("  - {}", repo(RULES_YML).display()),
    );
    let wrong = replace_once_in(&text, "value: 0.75\n", "value: 0.76\n");
    let path = dir.path("wrong.test.yml");
    std::fs::write(&path, wrong).expect("write");
    let (ok, out) = promtool(&["test", "rules", &path.display().to_string()]);
    assert!(!ok, "a wrong expectation passed:\n{out}");
    assert!(out.contains("7.6E-01"), "{out}");
}

fn replace_once_in(text: &str, from: &str, to: &str) -> String {
    assert_eq!(text.matches(from).count(), 1, "{from:?}");
    text.replacen(from, to, 1)
}

/// Every recording rule has an expression test, every alert a firing and a not-firing
/// case, in the rule tests.
#[test]
fn every_rule_is_unit_tested() {
    let (records, alerts) = rule_names();
    let text = read(RULE_TESTS_YML);
    for r in &records {
        assert!(
            text.contains(&format!("- expr: {r}\n")),
            "recording rule {r} has no promql_expr_test"
        );
    }
    let mut firing = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    let mut current = String::new();
    for line in text.lines().map(str::trim) {
        if let Some(n) = line.strip_prefix("alertname: ") {
            current = n.trim().to_string();
        } else if line == "exp_alerts: []" {
            quiet.insert(current.clone());
        } else if line == "exp_alerts:" {
            firing.insert(current.clone());
        }
    }
    for a in &alerts {
        assert!(firing.contains(a), "alert {a} has no firing case");
        assert!(quiet.contains(a), "alert {a} has no not-firing case");
    }
    let known: BTreeSet<&String> = alerts.iter().collect();
    for a in firing.iter().chain(&quiet) {
        assert!(known.contains(a), "the tests name an unknown alert {a}");
    }
}

/// The job dashboard is Grafana dashboard JSON: schema version, unique panel ids, a grid
/// position for each panel within 24 columns and without overlaps, every panel and target
/// on the `datasource` variable, and every variable used defined.
#[test]
fn dashboard_json_is_valid() {
    let d = check_dashboard(DASHBOARD, &["datasource", "cluster", "job_id", "locale"]);
    assert_eq!(d["uid"], "arkouda-job");
}

/// The checks of `dashboard_json_is_valid` on the dashboard at `path`, which must define
/// the variables `want_vars`; returns the dashboard.
fn check_dashboard(path: &str, want_vars: &[&str]) -> Value {
    let d = load_dashboard(path);
    assert!(
        d["schemaVersion"].as_i64().is_some_and(|v| v >= 36),
        "schemaVersion: {}",
        d["schemaVersion"]
    );
    for key in ["uid", "title"] {
        assert!(d[key].as_str().is_some_and(|s| !s.is_empty()), "no {key}");
    }
    assert!(d["time"]["from"].is_string() && d["time"]["to"].is_string());

    let vars = d["templating"]["list"].as_array().expect("templating.list");
    let names: Vec<&str> = vars.iter().filter_map(|v| v["name"].as_str()).collect();
    let unique: BTreeSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len(), "duplicate variables: {names:?}");
    for want in want_vars {
        assert!(names.contains(want), "no variable {want}: {names:?}");
    }
    let ds_var = vars
        .iter()
        .find(|v| v["name"] == "datasource")
        .expect("datasource variable");
    assert_eq!(ds_var["type"], "datasource");
    assert_eq!(ds_var["query"], "prometheus");
    let our_ds = serde_json::json!({"type": "prometheus", "uid": "${datasource}"});
    for v in vars.iter().filter(|v| v["type"] == "query") {
        assert_eq!(v["datasource"], our_ds, "variable {}", v["name"]);
        let q = v["query"]["query"].as_str().expect("query variable query");
        assert_eq!(v["definition"].as_str(), Some(q), "variable {}", v["name"]);
        label_values_query(q);
    }

    let panels = all_panels(&d);
    assert!(panels.len() >= 10, "{} panels", panels.len());
    let mut ids = BTreeSet::new();
    let mut cells: BTreeMap<(i64, i64), i64> = BTreeMap::new();
    for p in &panels {
        let id = p["id"].as_i64().expect("panel id");
        assert!(ids.insert(id), "duplicate panel id {id}");
        let title = p["title"].as_str().unwrap_or_default();
        assert!(!title.is_empty(), "panel {id} has no title");
        assert!(p["type"].is_string(), "panel {id} has no type");
        let g = &p["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|k| {
            g[k].as_i64()
                .unwrap_or_else(|| panic!("panel {id}: gridPos.{k}"))
        });
        assert!(
            x >= 0 && y >= 0 && w > 0 && h > 0 && x + w <= 24,
            "panel {id}: gridPos {g}"
        );
        if p["type"] == "row" {
            continue;
        }
        for cx in x..x + w {
            for cy in y..y + h {
                if let Some(other) = cells.insert((cx, cy), id) {
                    panic!("panels {other} and {id} overlap at ({cx}, {cy})");
                }
            }
        }
        assert_eq!(p["datasource"], our_ds, "panel {id} ({title})");
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {id} has no query");
        let mut refs = BTreeSet::new();
        for t in targets {
            assert!(
                t["datasource"].is_null() || t["datasource"] == our_ds,
                "panel {id}: target datasource {}",
                t["datasource"]
            );
            assert!(
                t["expr"].as_str().is_some_and(|e| !e.trim().is_empty()),
                "panel {id}: empty query"
            );
            let r = t["refId"].as_str().expect("refId");
            assert!(
                refs.insert(r.to_string()),
                "panel {id}: duplicate refId {r}"
            );
        }
    }

    // Every variable referenced anywhere in the dashboard is defined or built in; the
    // data-link variables only in links.
    fn strings<'a>(v: &'a Value, in_link: bool, out: &mut Vec<(&'a str, bool)>) {
        match v {
            Value::String(s) => out.push((s, in_link)),
            Value::Array(a) => a.iter().for_each(|v| strings(v, in_link, out)),
            Value::Object(o) => o
                .iter()
                .for_each(|(k, v)| strings(v, in_link || k == "links", out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    strings(&d, false, &mut all);
    let mut used = BTreeSet::new();
    for (s, in_link) in all {
        for name in variable_refs(s) {
            assert!(
                names.contains(&name.as_str())
                    || BUILTINS.contains(&name.as_str())
                    || in_link && LINK_BUILTINS.contains(&name.as_str()),
                "undefined variable ${name} in {s:?}"
            );
            used.insert(name);
        }
    }
    for n in &names {
        assert!(used.contains(*n), "variable {n} is never used");
    }
    d
}

/// The Grafana provisioning files name a Prometheus data source and a file provider for
/// the dashboards' directory, which holds exactly the two dashboards it names, each with
/// its own uid.
#[test]
fn grafana_provisioning_files() {
    let ds = read("config/grafana/provisioning/datasources/prometheus.yml");
    assert!(ds.contains("apiVersion: 1"), "{ds}");
    assert!(ds.contains("type: prometheus"), "{ds}");
    let dash = read("config/grafana/provisioning/dashboards/arkouda.yml");
    assert!(dash.contains("apiVersion: 1"), "{dash}");
    assert!(dash.contains("type: file"), "{dash}");
    assert!(dash.contains("path: "), "{dash}");
    let mut files: Vec<String> = std::fs::read_dir(repo("config/grafana/dashboards"))
        .expect("dashboards directory")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["arkouda-job.json", "arkouda-site.json"]);
    let mut uids = BTreeSet::new();
    for f in &files {
        assert!(
            dash.contains(f.as_str()),
            "the provider's comment does not name {f}"
        );
        let d = load_dashboard(&format!("config/grafana/dashboards/{f}"));
        assert!(
            uids.insert(d["uid"].to_string()),
            "{f}: uid {} twice",
            d["uid"]
        );
    }
    let cargo = read("Cargo.toml");
    for f in &files {
        assert!(
            cargo.contains(&format!(
                "[\"config/grafana/dashboards/{f}\", \"usr/share/doc/arkouda-push-agent/examples/grafana/\", \"644\"]"
            )),
            "the Debian package does not ship {f}"
        );
    }
}

/// The site dashboard: valid as the job dashboard is, uid `arkouda-site`, the job table
/// merged from instant table queries, and every per-job panel links to the job
/// dashboard's uid with its `job_id` and `cluster` (and data source) variables, which the
/// job dashboard defines; the dashboard's own link goes there too.
#[test]
fn site_dashboard_json_is_valid() {
    let site = check_dashboard(SITE_DASHBOARD, &["datasource", "cluster"]);
    let job = dashboard();
    assert_eq!(site["uid"], "arkouda-site");
    let job_uid = job["uid"].as_str().expect("job dashboard uid");
    assert_ne!(site["uid"], job["uid"]);
    let job_vars: BTreeSet<String> = job["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(|n| format!("var-{n}")))
        .collect();

    let table = site_panel(&site, "table");
    assert!(
        table["targets"].as_array().is_some_and(|t| t.len() >= 8),
        "{}",
        table["targets"]
    );
    let vars = BTreeMap::from([("datasource", "prometheus")]);
    let fields = labels(&[("slurm_job_id", "4242"), ("cluster", "c1")]);
    let mut linked = 0;
    for p in all_panels(&site) {
        let urls = panel_link_urls(p);
        let per_job =
            ["table", "bargauge", "timeseries"].contains(&p["type"].as_str().unwrap_or(""));
        assert_eq!(
            !urls.is_empty(),
            per_job,
            "panel {:?}: links {urls:?}",
            p["title"]
        );
        for url in urls {
            let field = if p["type"] == "table" {
                "__data.fields"
            } else {
                "__field.labels"
            };
            for v in ["slurm_job_id", "cluster"] {
                assert!(url.contains(&format!("${{{field}.{v}}}")), "{url}");
            }
            let (path, params) = split_url(&fill_link(&url, &fields, &vars));
            assert!(path.starts_with(&format!("/d/{job_uid}/")), "{url}");
            assert_eq!(params["var-job_id"], "4242", "{url}");
            assert_eq!(params["var-cluster"], "c1", "{url}");
            assert_eq!(params["var-datasource"], "prometheus", "{url}");
            assert_eq!((&params["from"][..], &params["to"][..]), ("now-1h", "now"));
            for k in params.keys().filter(|k| k.starts_with("var-")) {
                assert!(job_vars.contains(k), "{url}: the job dashboard has no {k}");
            }
            linked += 1;
        }
    }
    assert!(linked >= 6, "{linked} links");
    let top: Vec<&Value> = site["links"].as_array().into_iter().flatten().collect();
    assert!(
        top.iter()
            .any(|l| l["url"].as_str() == Some(&format!("/d/{job_uid}/arkouda-job"))),
        "dashboard links: {top:?}"
    );
}

/// Every expression of the rules file: the one-line `expr:` values and the `expr: |`
/// blocks; as many as there are rules.
fn rule_exprs() -> Vec<String> {
    let text = read(RULES_YML);
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let indent = line.len() - line.trim_start().len();
        if let Some(v) = line.trim_start().strip_prefix("expr:") {
            let v = v.trim();
            if v == "|" || v == "|-" || v == ">-" {
                let mut block = Vec::new();
                while i + 1 < lines.len() {
                    let next = lines[i + 1];
                    if !next.trim().is_empty() && next.len() - next.trim_start().len() <= indent {
                        break;
                    }
                    block.push(next.trim());
                    i += 1;
                }
                out.push(block.join("\n").trim().to_string());
            } else {
                out.push(v.to_string());
            }
        }
        i += 1;
    }
    let (records, alerts) = rule_names();
    assert_eq!(out.len(), records.len() + alerts.len(), "{out:?}");
    out
}

/// Every expression of a dashboard, variables filled in: panel queries and the selectors
/// of `label_values` variable queries. (What, expression.)
fn dashboard_exprs(d: &Value, vars: &BTreeMap<&str, &str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in all_panels(d) {
        for t in p["targets"].as_array().into_iter().flatten() {
            let expr = t["expr"].as_str().expect("expr");
            out.push((format!("panel {}", p["title"]), substitute(expr, vars)));
        }
    }
    for v in d["templating"]["list"].as_array().into_iter().flatten() {
        if v["type"] == "query" {
            let q = v["query"]["query"].as_str().expect("variable query");
            let (sel, _) = label_values_query(&substitute(q, vars));
            out.push((format!("variable {}", v["name"]), sel));
        }
    }
    out
}

/// The indented query lines of a section of a Markdown document.
fn doc_queries(path: &str, heading: &str) -> Vec<String> {
    let doc = read(path);
    let section = doc
        .split(heading)
        .nth(1)
        .and_then(|s| s.split("\n## ").next())
        .unwrap_or_else(|| panic!("{path}: no section {heading:?}"));
    section
        .lines()
        .filter_map(|l| l.strip_prefix("    "))
        .map(str::to_string)
        .collect()
}

/// Every PromQL expression shipped parses with a PromQL parser (promql-parser): both
/// dashboards' queries and variable selectors (Grafana's variables replaced by plausible
/// values first), every rule of arkouda.rules.yml, and the queries the docs offer. The
/// parser rejects what Prometheus rejects: an unfilled `$__rate_interval` range, a missing
/// parenthesis, an unknown function.
#[test]
fn promql_expressions_parse() {
    let vars: BTreeMap<&str, &str> = BTreeMap::from([
        ("datasource", "prometheus"),
        ("cluster", "(c1|c2)"),
        ("job_id", "4242"),
        ("locale", "(0|1|2)"),
        ("__rate_interval", "1m"),
        ("__interval", "15s"),
        ("__interval_ms", "15000"),
        ("__range", "1h"),
        ("__range_s", "3600"),
        ("__range_ms", "3600000"),
        ("__from", "1700000000000"),
        ("__to", "1700003600000"),
    ]);
    let mut exprs: Vec<(String, String)> = Vec::new();
    for path in [DASHBOARD, SITE_DASHBOARD] {
        let d = load_dashboard(path);
        let found = dashboard_exprs(&d, &vars);
        assert!(found.len() >= 10, "{path}: {found:?}");
        exprs.extend(found.into_iter().map(|(w, e)| (format!("{path}: {w}"), e)));
    }
    exprs.extend(rule_exprs().into_iter().map(|e| (RULES_YML.to_string(), e)));
    for (path, heading) in [
        ("docs/monitoring.md", "## Queries users ask for most"),
        ("docs/metrics.md", "## Example queries"),
    ] {
        let found = doc_queries(path, heading);
        assert!(found.len() >= 5, "{path}: {found:?}");
        exprs.extend(found.into_iter().map(|e| (path.to_string(), e)));
    }
    let mut bad = Vec::new();
    for (what, e) in &exprs {
        if let Err(err) = promql_parser::parser::parse(e) {
            bad.push(format!("{what}: {e}\n  {err}"));
        }
    }
    assert!(
        bad.is_empty(),
        "PromQL that does not parse:\n{}",
        bad.join("\n")
    );
    eprintln!("{} PromQL expressions parsed", exprs.len());

    // The parser is no rubber stamp.
    for wrong in [
        "increase(arkouda_agent_poll_errors_total[$__rate_interval])",
        "sum by (cluster (arkouda_up)",
        "sum(rate(arkouda_requests_total[5m])",
        "arkouda_up{cluster=~\"c1\"",
        "rate_of(arkouda_requests_total[5m])",
        "rate(arkouda_up)",
    ] {
        assert!(
            promql_parser::parser::parse(wrong).is_err(),
            "the parser accepted {wrong}"
        );
    }
}

/// What the agent pushes (`once --dry-run` prints the body of its PUT), with the default
/// and the legacy names and command names that stress the text format, passes
/// `promtool check metrics` with no finding; a counter without `_total` would not.
#[test]
fn pushed_body_passes_promtool_check_metrics() {
    let sim = Sim::start(&[
        "--locales",
        "2",
        "--release",
        RELEASE,
        "--users",
        USERS,
        "--weird-names",
    ]);
    let endpoint = sim.endpoint();
    let dir = TempDir::new("dryrun");
    let lock_dir = dir.0.display().to_string();
    for extra in [&[][..], &["--legacy-names"][..]] {
        let args = [
            &[
                "once",
                "--dry-run",
                "--arkouda",
                &endpoint,
                "--job-id",
                "4244",
                "--cluster",
                "c1",
                "--job-user",
                "alice",
                "--partition",
                "debug",
                "--lock-dir",
                &lock_dir,
            ][..],
            extra,
        ]
        .concat();
        let (code, body, err) = run_agent(&args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(body.contains("\narkouda_up 1\n"), "{body}");
        assert!(body.contains("new\\nline"), "weird names: {body}");
        check_metrics_clean(&body, &format!("once --dry-run {extra:?}"));
        if extra.is_empty() {
            let wrong = body.replace(
                "arkouda_agent_poll_errors_total",
                "arkouda_agent_poll_errors",
            );
            let (ok, out) = promtool_check_metrics(&wrong);
            assert!(
                !ok && out.contains("counter metrics should have \"_total\" suffix"),
                "{out}"
            );
        }
    }
}

/// `linger`: a job shorter than one scrape interval still reaches Prometheus. The agent's
/// final push (with its end time) stays `linger` long (here 3 s against a 1 s scrape), so
/// Prometheus scrapes the job's final values before the group is deleted.
#[test]
fn linger_gets_a_short_jobs_final_values_into_prometheus() {
    let pg = Pushgateway::start();
    let prom = Prometheus::start(&test_prometheus_yml(
        &format!("127.0.0.1:{}", pg.port()),
        "127.0.0.1:9",
    ));
    // Prometheus scrapes the Pushgateway before the job starts.
    eventually(
        Duration::from_secs(30),
        "a first scrape of the Pushgateway",
        || match prom.query_at("up{job=\"pushgateway\"}", now()) {
            Ok(s) if s.iter().any(|s| s.value == 1.0) => Ok(()),
            Ok(s) => Err(format!("{} series", s.len())),
            Err(e) => Err(e),
        },
    );
    let sim = Sim::start(&[]);
    let dir = TempDir::new("linger");
    let mut agent = spawn_agent(&[
        "run",
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &pg.url,
        "--job-id",
        "short",
        "--interval",
        "10s",
        "--linger",
        "3s",
        "--lock-dir",
        dir.0.to_str().unwrap(),
    ]);
    // The job ends right after its first push: well within one scrape interval.
    pg.wait_group("short", "the first push", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let stopped = std::time::Instant::now();
    agent.signal("TERM");
    let g = pg.wait_group("short", "the final push with the end time", |g| {
        g.value("arkouda_agent_end_timestamp_seconds", &[])
            .is_some()
    });
    let end = g.value("arkouda_agent_end_timestamp_seconds", &[]).unwrap();
    let lease = g
        .value("arkouda_agent_lease_expiry_timestamp_seconds", &[])
        .unwrap();
    assert!((lease - end - 3.0).abs() < 0.01, "lease {lease}, end {end}");
    // Prometheus gets the final values.
    let q = "arkouda_agent_end_timestamp_seconds{slurm_job_id=\"short\"}";
    let seen = eventually(
        Duration::from_secs(10),
        "the final push in Prometheus",
        || match prom.query_at(q, now()) {
            Ok(s) if !s.is_empty() => Ok(s[0].value),
            Ok(_) => Err("not yet".into()),
            Err(e) => Err(e),
        },
    );
    assert_eq!(seen, end);
    // Then the group goes, and the agent exits 0.
    pg.wait_gone("short", Duration::from_secs(8));
    assert!(
        stopped.elapsed() >= Duration::from_millis(2500),
        "{:?}",
        stopped.elapsed()
    );
    assert_eq!(agent.wait_exit(Duration::from_secs(5)).code(), Some(0));
    let (code, out, _) = run_agent(&["get", "linger", "--linger", "3s"]);
    assert_eq!((code, out.as_str()), (0, "3\n"));
}
