//! The deterministic simulated workload and the JSON texts built from it
//! (metric records, SERVER_INFO, getconfig). The workload itself is
//! documented at the top of `main.rs`.

use crate::chapel;
use crate::release::{Category, Release};

pub const PHYSICAL_MEMORY: u64 = 274_877_906_944;
pub const NUM_PUS: u64 = 128;
pub const MAX_TASKS: u64 = 128;
/// Main-port number reported when no main port is served.
pub const DEFAULT_MAIN_PORT: u16 = 5555;
/// Response time of a command that is not part of the scripted workload
/// (only reachable through real main-port requests).
pub const OTHER_COMMAND_SECONDS: f64 = 1e-4;

pub const WEIRD_NAMES: [&str; 6] = ["a/b", "q\"uote", "back\\slash", "new\nline", "ünï code", ""];
pub const BAD_CMD: &str = "bad_cmd";
pub const BAD_CMD_ERROR: &str = "IllegalArgumentError";

/// Static description of the simulated server.
#[derive(Debug, Clone)]
pub struct SimConfig {
    pub release: Release,
    pub locales: usize,
    pub hostname_prefix: String,
    /// Locale 0's host name (hence the server's), when it must resolve (tests).
    pub server_hostname: Option<String>,
    pub users: Vec<String>,
    pub weird_names: bool,
    pub distinct_locale_memory: bool,
    pub mem_max: Option<u64>,
    pub metrics_port: u16,
    pub main_port: Option<u16>,
    pub token: Option<String>,
}

impl SimConfig {
    pub fn locale_name(&self, i: usize) -> String {
        match (&self.server_hostname, i) {
            (Some(h), 0) => h.clone(),
            _ => format!("{}{:04}", self.hostname_prefix, i),
        }
    }

    pub fn server_hostname(&self) -> String {
        self.locale_name(0)
    }

    /// `ServerPort` as the server reports it.
    pub fn server_port(&self) -> u16 {
        self.main_port.unwrap_or(DEFAULT_MAIN_PORT)
    }

    /// The scripted commands in index order: connect, getconfig, create,
    /// randint, sum, weird…, bad_cmd.
    pub fn workload_commands(&self) -> Vec<&'static str> {
        let mut v = vec!["connect", "getconfig", "create", "randint", "sum"];
        if self.weird_names {
            v.extend(WEIRD_NAMES);
        }
        v.push(BAD_CMD);
        v
    }

    /// How often one user has run scripted command `name` at tick `k`.
    pub fn per_user_runs(name: &str, k: u64) -> u64 {
        match name {
            "connect" | "getconfig" => 1,
            "create" => 2 * k,
            "randint" => 3 * k,
            "sum" => k,
            BAD_CMD => k / 5,
            _ => k, // weird names: like sum
        }
    }

    /// Whether runs of `name` show up in the request metrics of this release.
    fn counted(&self, name: &str) -> bool {
        name != BAD_CMD || self.release.counts_failed_commands()
    }

    /// Mean (= last) response time of a command in seconds.
    pub fn avg_seconds(&self, name: &str) -> f64 {
        match self.workload_commands().iter().position(|c| *c == name) {
            Some(i) => 0.001 * (i as f64 + 1.0),
            None => OTHER_COMMAND_SECONDS,
        }
    }

    fn percent_denominator(&self) -> f64 {
        match self.mem_max {
            Some(m) if m > 0 && self.release.honours_mem_max() => m as f64,
            _ => PHYSICAL_MEMORY as f64,
        }
    }
}

/// Counts of requests actually received on the main port, kept in first-seen
/// order (globally and per user).
#[derive(Debug, Default, Clone)]
pub struct MainCounts {
    global: Vec<(String, u64)>,
    users: Vec<(String, Vec<(String, u64)>)>,
}

fn bump(list: &mut Vec<(String, u64)>, name: &str) {
    match list.iter_mut().find(|(n, _)| n == name) {
        Some((_, c)) => *c += 1,
        None => list.push((name.to_string(), 1)),
    }
}

fn lookup(list: &[(String, u64)], name: &str) -> u64 {
    list.iter().find(|(n, _)| n == name).map_or(0, |(_, c)| *c)
}

impl MainCounts {
    pub fn record(&mut self, user: &str, cmd: &str) {
        bump(&mut self.global, cmd);
        match self.users.iter_mut().find(|(u, _)| u == user) {
            Some((_, l)) => bump(l, cmd),
            None => self
                .users
                .push((user.to_string(), vec![(cmd.to_string(), 1)])),
        }
    }
}

/// Mutable simulation state shared by both daemons.
#[derive(Debug, Default, Clone)]
pub struct SimState {
    pub tick: u64,
    pub main: MainCounts,
}

/// One flat metric record (`Metric`, `LocaleMetric` or `UserMetric`).
fn push_record(
    out: &mut Vec<String>,
    name: &str,
    category: &str,
    scope: &str,
    value: f64,
    extra: &str,
) {
    let mut s = String::with_capacity(128 + extra.len() + name.len());
    s.push_str("{\"name\":");
    chapel::push_string(&mut s, name);
    s.push_str(", \"category\":");
    chapel::push_string(&mut s, category);
    s.push_str(", \"scope\":");
    chapel::push_string(&mut s, scope);
    s.push_str(", \"timestamp\":");
    chapel::push_string(&mut s, &chapel::now_timestamp());
    s.push_str(", \"value\":");
    s.push_str(&chapel::real(value));
    s.push_str(extra);
    s.push('}');
    out.push(s);
}

fn join_array(items: &[String]) -> String {
    let len: usize = items.iter().map(|s| s.len() + 2).sum();
    let mut s = String::with_capacity(len + 2);
    s.push('[');
    for (i, it) in items.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push_str(it);
    }
    s.push(']');
    s
}

/// A view of the workload at one tick.
pub struct Snapshot<'a> {
    pub cfg: &'a SimConfig,
    pub tick: u64,
    pub main: &'a MainCounts,
}

impl<'a> Snapshot<'a> {
    pub fn new(cfg: &'a SimConfig, state: &'a SimState) -> Self {
        Snapshot {
            cfg,
            tick: state.tick,
            main: &state.main,
        }
    }

    fn num_users(&self) -> u64 {
        self.cfg.users.len() as u64
    }

    /// Global request counts (count > 0 only), scripted commands first, then
    /// commands seen only on the main port.
    pub fn global_requests(&self) -> Vec<(String, u64)> {
        let scripted = self.cfg.workload_commands();
        let mut v = Vec::new();
        for name in &scripted {
            let mut c = lookup(&self.main.global, name);
            if self.cfg.counted(name) {
                c += self.num_users() * SimConfig::per_user_runs(name, self.tick);
            }
            if c > 0 {
                v.push((name.to_string(), c));
            }
        }
        for (name, c) in &self.main.global {
            if *c > 0 && !scripted.contains(&name.as_str()) {
                v.push((name.clone(), *c));
            }
        }
        v
    }

    /// Per-user request counts, simulated users first.
    pub fn user_requests(&self) -> Vec<(String, Vec<(String, u64)>)> {
        let scripted = self.cfg.workload_commands();
        let empty: Vec<(String, u64)> = Vec::new();
        let mut out = Vec::new();
        for user in &self.cfg.users {
            let main = self
                .main
                .users
                .iter()
                .find(|(u, _)| u == user)
                .map_or(&empty, |(_, l)| l);
            let mut v = Vec::new();
            for name in &scripted {
                let mut c = lookup(main, name);
                if self.cfg.counted(name) {
                    c += SimConfig::per_user_runs(name, self.tick);
                }
                if c > 0 {
                    v.push((name.to_string(), c));
                }
            }
            for (name, c) in main {
                if *c > 0 && !scripted.contains(&name.as_str()) {
                    v.push((name.clone(), *c));
                }
            }
            out.push((user.clone(), v));
        }
        for (user, l) in &self.main.users {
            if !self.cfg.users.contains(user) {
                out.push((user.clone(), l.clone()));
            }
        }
        out
    }

    /// Errors per class (only v2024.04.19 counts any).
    pub fn errors(&self) -> Vec<(String, u64)> {
        if self.cfg.release != Release::V2024_04_19 {
            return Vec::new();
        }
        let c = self.num_users() * SimConfig::per_user_runs(BAD_CMD, self.tick);
        if c > 0 {
            vec![(BAD_CMD_ERROR.to_string(), c)]
        } else {
            Vec::new()
        }
    }

    pub fn locale0_used(&self) -> f64 {
        self.tick as f64 * 1e8
    }

    pub fn locale_used(&self, i: usize) -> f64 {
        if self.cfg.distinct_locale_memory {
            (self.tick as f64 * 100.0 + i as f64) * 1e6
        } else {
            self.locale0_used()
        }
    }

    /// `memoryUsed()` on locale 0 × numLocales, in GB (1e9 bytes).
    fn total_memory_gb(&self) -> f64 {
        self.locale0_used() * self.cfg.locales as f64 / 1e9
    }

    fn num_requests_records(&self, out: &mut Vec<String>, future_field: bool) {
        let counts = self.global_requests();
        let total: u64 = counts.iter().map(|(_, c)| c).sum();
        for (name, c) in &counts {
            push_record(out, name, "NUM_REQUESTS", "GLOBAL", *c as f64, "");
        }
        let extra = if future_field {
            ", \"future_field\":\"surprise\""
        } else {
            ""
        };
        push_record(out, "total", "NUM_REQUESTS", "GLOBAL", total as f64, extra);
    }

    /// Which commands have response-time / memory-total records.
    fn timed_commands(&self, cat: Category) -> Vec<(String, u64)> {
        let r = self.cfg.release;
        let all = self.global_requests();
        match cat {
            Category::ResponseTime if r >= Release::V2023_03_01 => all,
            Category::AvgResponseTime if r >= Release::V2023_03_01 => all,
            // v2023.02.08: only commands with an array argument.
            Category::AvgResponseTime if r >= Release::V2023_02_08 => all
                .into_iter()
                .filter(|(n, _)| n == "create" || n == "sum")
                .collect(),
            Category::TotalResponseTime | Category::TotalMemoryUsed
                if r >= Release::V2023_04_07 =>
            {
                all
            }
            _ => Vec::new(),
        }
    }

    fn timed_records(&self, cat: Category, out: &mut Vec<String>) {
        let gb = self.total_memory_gb();
        for (name, c) in self.timed_commands(cat) {
            let avg = self.cfg.avg_seconds(&name);
            let value = match cat {
                Category::TotalResponseTime => avg * c as f64,
                Category::TotalMemoryUsed => c as f64 * gb,
                _ => avg,
            };
            push_record(out, &name, cat.name(), "GLOBAL", value, "");
        }
    }

    fn system_records(&self, out: &mut Vec<String>) {
        let denom = self.cfg.percent_denominator();
        for i in 0..self.cfg.locales {
            let name = self.cfg.locale_name(i);
            let mut extra = format!(", \"locale_num\":{i}, \"locale_name\":");
            chapel::push_string(&mut extra, &name);
            extra.push_str(", \"locale_hostname\":");
            chapel::push_string(&mut extra, &name);
            let used = self.locale_used(i);
            push_record(
                out,
                "arkouda_memory_used_per_locale",
                "SYSTEM",
                "LOCALE",
                used,
                &extra,
            );
            push_record(
                out,
                "arkouda_percent_memory_used_per_locale",
                "SYSTEM",
                "LOCALE",
                used / denom * 100.0,
                &extra,
            );
        }
    }

    fn user_records(&self, out: &mut Vec<String>) {
        for (user, counts) in self.user_requests() {
            let extra = format!(", \"user\":{}", chapel::string(&user));
            let total: u64 = counts.iter().map(|(_, c)| c).sum();
            for (name, c) in &counts {
                push_record(out, name, "NUM_REQUESTS", "USER", *c as f64, &extra);
            }
            push_record(out, "total", "NUM_REQUESTS", "USER", total as f64, &extra);
        }
    }

    fn error_records(&self, out: &mut Vec<String>) {
        let errs = self.errors();
        let total: u64 = errs.iter().map(|(_, c)| c).sum();
        for (name, c) in &errs {
            push_record(out, name, "NUM_ERRORS", "GLOBAL", *c as f64, "");
        }
        push_record(out, "total", "NUM_ERRORS", "GLOBAL", total as f64, "");
    }

    /// The `msg` text for `metrics` with category `cat` (which the caller has
    /// already checked is answerable). `unknown` adds the records of the
    /// `unknown-categories` fault to ALL.
    pub fn metrics_msg(&self, cat: Category, unknown: bool) -> String {
        let r = self.cfg.release;
        let has = |c: Category| r.categories().contains(&c);
        let mut out = Vec::new();
        match cat {
            Category::ServerInfo => return self.server_info(),
            Category::Server => {}
            Category::NumRequests => self.num_requests_records(&mut out, false),
            Category::ResponseTime
            | Category::AvgResponseTime
            | Category::TotalResponseTime
            | Category::TotalMemoryUsed => self.timed_records(cat, &mut out),
            Category::System => self.system_records(&mut out),
            Category::NumErrors => self.error_records(&mut out),
            Category::All => {
                self.num_requests_records(&mut out, unknown);
                if unknown {
                    push_record(
                        &mut out,
                        "future_metric",
                        "FUTURE_CATEGORY",
                        "GLOBAL",
                        1.0,
                        "",
                    );
                }
                for c in [
                    Category::ResponseTime,
                    Category::AvgResponseTime,
                    Category::TotalResponseTime,
                    Category::TotalMemoryUsed,
                ] {
                    if has(c) {
                        self.timed_records(c, &mut out);
                    }
                }
                self.system_records(&mut out);
                if unknown {
                    push_record(
                        &mut out,
                        "galaxy_metric",
                        "NUM_REQUESTS",
                        "GALAXY",
                        4.2e1,
                        "",
                    );
                }
                // SERVER: always empty.
                self.user_records(&mut out);
                if has(Category::NumErrors) {
                    self.error_records(&mut out);
                }
            }
        }
        join_array(&out)
    }

    /// SERVER_INFO: a single object.
    pub fn server_info(&self) -> String {
        let cfg = self.cfg;
        let mut s = String::with_capacity(64 + cfg.locales * 200);
        s.push_str("{\"hostname\":");
        chapel::push_string(&mut s, &cfg.server_hostname());
        s.push_str(", \"version\":");
        chapel::push_string(&mut s, &cfg.release.version_string());
        s.push_str(&format!(
            ", \"server_port\":{}, \"locales\":[",
            cfg.server_port()
        ));
        for i in 0..cfg.locales {
            if i > 0 {
                s.push_str(", ");
            }
            let name = chapel::string(&cfg.locale_name(i));
            s.push_str(&format!(
                "{{\"name\":{name}, \"id\":\"{i}\", \"hostname\":{name}, \"number_of_processing_units\":{NUM_PUS}, \"physical_memory\":{PHYSICAL_MEMORY}, \"max_number_of_tasks\":{MAX_TASKS}}}"
            ));
        }
        s.push_str(&format!("], \"number_of_locales\":{}}}", cfg.locales));
        s
    }
}

/// The `getconfig` JSON: exactly the keys of the imitated release, in its order
/// (`Release::getconfig_keys`), each with its type, written as Chapel writes a class.
pub fn getconfig_json(cfg: &SimConfig) -> String {
    let r = cfg.release;
    let mut s = String::with_capacity(1024 + cfg.locales * 120);
    s.push('{');
    for (i, key) in r.getconfig_keys().into_iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('"');
        s.push_str(key);
        s.push_str("\":");
        match key {
            "arkoudaVersion" => chapel::push_string(&mut s, &r.version_string()),
            "chplVersion" => chapel::push_string(&mut s, r.chpl_version()),
            "pythonVersion" => s.push_str("\"3.12.4\""),
            "ZMQVersion" => s.push_str("\"4.3.5\""),
            "HDF5Version" => s.push_str("\"1.14.4\""),
            "serverHostname" => chapel::push_string(&mut s, &cfg.server_hostname()),
            "ServerPort" => s.push_str(&cfg.server_port().to_string()),
            "numLocales" | "numNodes" => s.push_str(&cfg.locales.to_string()),
            "numPUs" => s.push_str(&NUM_PUS.to_string()),
            "maxTaskPar" => s.push_str(&MAX_TASKS.to_string()),
            "physicalMemory" => s.push_str(&PHYSICAL_MEMORY.to_string()),
            "distributionType" => s.push_str("\"BlockDom(1,int(64),false,unmanaged DefaultDist)\""),
            "LocaleConfigs" => locale_configs(cfg, &mut s),
            "authenticate" => s.push_str(if cfg.token.is_some() { "true" } else { "false" }),
            "logLevel" => s.push_str("\"INFO\""),
            "logChannel" => s.push_str("\"CONSOLE\""),
            "regexMaxCaptures" => s.push_str("20"),
            "byteorder" => s.push_str("\"little\""),
            "autoShutdown" | "serverInfoNoSplash" => s.push_str("false"),
            "maxArrayDims" => s.push('1'),
            // A key the release table names but nothing here fills: a bug in the table.
            other => unreachable!("getconfig key {other} has no value"),
        }
    }
    s.push('}');
    s
}

fn locale_configs(cfg: &SimConfig, s: &mut String) {
    let keys = cfg.release.locale_config_keys();
    s.push('[');
    for i in 0..cfg.locales {
        if i > 0 {
            s.push_str(", ");
        }
        s.push('{');
        for (j, key) in keys.iter().enumerate() {
            if j > 0 {
                s.push_str(", ");
            }
            s.push('"');
            s.push_str(key);
            s.push_str("\":");
            match *key {
                "id" => s.push_str(&i.to_string()),
                "name" => chapel::push_string(s, &cfg.locale_name(i)),
                "numPUs" => s.push_str(&NUM_PUS.to_string()),
                "numColocales" => s.push('0'),
                "maxTaskPar" => s.push_str(&MAX_TASKS.to_string()),
                "physicalMemory" => s.push_str(&PHYSICAL_MEMORY.to_string()),
                other => unreachable!("LocaleConfigs key {other} has no value"),
            }
        }
        s.push('}');
    }
    s.push(']');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn cfg(release: Release) -> SimConfig {
        SimConfig {
            release,
            locales: 2,
            hostname_prefix: "nid".to_string(),
            server_hostname: None,
            users: vec!["alice".to_string(), "bob".to_string()],
            weird_names: false,
            distinct_locale_memory: false,
            mem_max: None,
            metrics_port: 5556,
            main_port: None,
            token: None,
        }
    }

    fn all_at(cfg: &SimConfig, tick: u64) -> Vec<Value> {
        let state = SimState {
            tick,
            main: MainCounts::default(),
        };
        let msg = Snapshot::new(cfg, &state).metrics_msg(Category::All, false);
        match serde_json::from_str(&msg) {
            Ok(Value::Array(v)) => v,
            other => panic!("not an array: {other:?}"),
        }
    }

    fn find<'v>(recs: &'v [Value], cat: &str, scope: &str, name: &str) -> Option<&'v Value> {
        recs.iter()
            .find(|r| r["category"] == cat && r["scope"] == scope && r["name"] == name)
    }

    fn cats(recs: &[Value]) -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for r in recs {
            let c = r["category"].as_str().unwrap_or("").to_string();
            if v.last() != Some(&c) {
                v.push(c);
            }
        }
        v
    }

    #[test]
    fn head_all_at_tick_5() {
        let c = cfg(Release::Head);
        let recs = all_at(&c, 5);
        assert_eq!(
            cats(&recs),
            vec![
                "NUM_REQUESTS",
                "RESPONSE_TIME",
                "AVG_RESPONSE_TIME",
                "TOTAL_RESPONSE_TIME",
                "TOTAL_MEMORY_USED",
                "SYSTEM",
                "NUM_REQUESTS",
                "NUM_ERRORS"
            ]
        );
        // 2 users: create = 2*2*5, bad_cmd = 2*1 (counted at head).
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "create").unwrap()["value"],
            20.0
        );
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "bad_cmd").unwrap()["value"],
            2.0
        );
        // total = 2*(1+1+10+15+5+1)
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "total").unwrap()["value"],
            66.0
        );
        let first_total = recs.iter().position(|r| r["name"] == "total").unwrap();
        assert_eq!(recs[first_total - 1]["name"], "bad_cmd");
        // sum is index 4: avg 0.005 s, total = 0.005*10.
        assert_eq!(
            find(&recs, "AVG_RESPONSE_TIME", "GLOBAL", "sum").unwrap()["value"],
            0.005
        );
        assert_eq!(
            find(&recs, "TOTAL_RESPONSE_TIME", "GLOBAL", "sum").unwrap()["value"],
            0.05
        );
        // memory: locale 0 = 5e8, 2 locales -> 1 GB per run; randint 30 runs.
        assert_eq!(
            find(&recs, "TOTAL_MEMORY_USED", "GLOBAL", "randint").unwrap()["value"],
            30.0
        );
        let sys: Vec<&Value> = recs.iter().filter(|r| r["category"] == "SYSTEM").collect();
        assert_eq!(sys.len(), 4);
        assert_eq!(sys[2]["locale_num"], 1);
        assert_eq!(sys[2]["locale_name"], "nid0001");
        assert_eq!(sys[2]["value"], 5e8);
        let users: Vec<&Value> = recs.iter().filter(|r| r["scope"] == "USER").collect();
        assert_eq!(users.len(), 2 * 7);
        assert_eq!(users[6]["name"], "total");
        assert_eq!(users[6]["user"], "alice");
        assert_eq!(users[6]["value"], 33.0);
        let errs: Vec<&Value> = recs
            .iter()
            .filter(|r| r["category"] == "NUM_ERRORS")
            .collect();
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0]["name"], "total");
        assert_eq!(errs[0]["value"], 0.0);
    }

    #[test]
    fn old_releases_send_only_their_categories() {
        for r in [Release::V2022_08_15, Release::V2022_09_30] {
            let recs = all_at(&cfg(r), 7);
            assert_eq!(
                cats(&recs),
                vec!["NUM_REQUESTS", "SYSTEM", "NUM_REQUESTS"],
                "{r}"
            );
            assert!(find(&recs, "NUM_REQUESTS", "GLOBAL", "bad_cmd").is_none());
        }
        let recs = all_at(&cfg(Release::V2023_02_08), 1);
        let avg: Vec<&Value> = recs
            .iter()
            .filter(|r| r["category"] == "AVG_RESPONSE_TIME")
            .collect();
        assert_eq!(avg.len(), 2);
        assert_eq!(avg[0]["name"], "create");
        assert_eq!(avg[1]["name"], "sum");
        let recs = all_at(&cfg(Release::V2023_03_01), 1);
        assert_eq!(
            cats(&recs),
            vec![
                "NUM_REQUESTS",
                "RESPONSE_TIME",
                "AVG_RESPONSE_TIME",
                "SYSTEM",
                "NUM_REQUESTS"
            ]
        );
        let recs = all_at(&cfg(Release::V2024_04_19), 10);
        assert!(find(&recs, "NUM_REQUESTS", "GLOBAL", "bad_cmd").is_none());
        assert_eq!(
            find(&recs, "NUM_ERRORS", "GLOBAL", "IllegalArgumentError").unwrap()["value"],
            4.0
        );
        assert_eq!(
            find(&recs, "NUM_ERRORS", "GLOBAL", "total").unwrap()["value"],
            4.0
        );
        let recs = all_at(&cfg(Release::V2024_04_19), 4);
        assert!(find(&recs, "NUM_ERRORS", "GLOBAL", "IllegalArgumentError").is_none());
    }

    #[test]
    fn memory_quirk_and_mem_max() {
        let mut c = cfg(Release::V2023_04_07);
        c.mem_max = Some(1_000_000_000);
        let recs = all_at(&c, 2);
        let pct = find(
            &recs,
            "SYSTEM",
            "LOCALE",
            "arkouda_percent_memory_used_per_locale",
        )
        .unwrap();
        assert_eq!(pct["value"], 20.0);
        c.release = Release::V2022_09_30;
        let recs = all_at(&c, 2);
        let pct = find(
            &recs,
            "SYSTEM",
            "LOCALE",
            "arkouda_percent_memory_used_per_locale",
        )
        .unwrap();
        let v = pct["value"].as_f64().unwrap();
        assert!((v - 2e8 / PHYSICAL_MEMORY as f64 * 100.0).abs() < 1e-6);
        c.distinct_locale_memory = true;
        let recs = all_at(&c, 3);
        let mem: Vec<f64> = recs
            .iter()
            .filter(|r| r["name"] == "arkouda_memory_used_per_locale")
            .map(|r| r["value"].as_f64().unwrap())
            .collect();
        assert_eq!(mem, vec![3e8, 3.01e8]);
    }

    #[test]
    fn weird_names_and_main_port_counts() {
        let mut c = cfg(Release::Head);
        c.weird_names = true;
        c.users = vec!["alice".to_string()];
        let mut state = SimState {
            tick: 1,
            main: MainCounts::default(),
        };
        state.main.record("alice", "ruok");
        state.main.record("carol", "connect");
        let msg = Snapshot::new(&c, &state).metrics_msg(Category::All, true);
        let recs: Vec<Value> = serde_json::from_str(&msg).unwrap();
        for w in WEIRD_NAMES {
            assert_eq!(
                find(&recs, "NUM_REQUESTS", "GLOBAL", w).unwrap()["value"],
                1.0
            );
        }
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "connect").unwrap()["value"],
            2.0
        );
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "ruok").unwrap()["value"],
            1.0
        );
        assert_eq!(
            find(&recs, "RESPONSE_TIME", "GLOBAL", "ruok").unwrap()["value"],
            1e-4
        );
        // bad_cmd index with weird names = 11.
        let bad = c.avg_seconds(BAD_CMD);
        assert!((bad - 0.012).abs() < 1e-12);
        let carol: Vec<&Value> = recs.iter().filter(|r| r["user"] == "carol").collect();
        assert_eq!(carol.len(), 2);
        assert!(find(&recs, "FUTURE_CATEGORY", "GLOBAL", "future_metric").is_some());
        assert!(find(&recs, "NUM_REQUESTS", "GALAXY", "galaxy_metric").is_some());
        assert_eq!(
            find(&recs, "NUM_REQUESTS", "GLOBAL", "total").unwrap()["future_field"],
            "surprise"
        );
    }

    #[test]
    fn tick_zero_and_single_categories() {
        let c = cfg(Release::Head);
        let state = SimState::default();
        let snap = Snapshot::new(&c, &state);
        assert_eq!(snap.metrics_msg(Category::Server, false), "[]");
        let nr: Vec<Value> =
            serde_json::from_str(&snap.metrics_msg(Category::NumRequests, false)).unwrap();
        let names: Vec<&str> = nr.iter().map(|r| r["name"].as_str().unwrap()).collect();
        assert_eq!(names, vec!["connect", "getconfig", "total"]);
        let info: Value =
            serde_json::from_str(&snap.metrics_msg(Category::ServerInfo, false)).unwrap();
        assert_eq!(info["hostname"], "nid0000");
        assert_eq!(info["server_port"], 5555);
        assert_eq!(info["locales"][1]["id"], "1");
        assert_eq!(info["number_of_locales"], 2);
        let msg = snap.metrics_msg(Category::NumRequests, false);
        assert!(msg.starts_with("[{\"name\":\"connect\", \"category\":\"NUM_REQUESTS\", \"scope\":\"GLOBAL\", \"timestamp\":\""));
        assert!(msg.contains("\"value\":2.000000e+00}"));
    }

    #[test]
    fn getconfig_fields() {
        // The keys in order, per docs/arkouda-protocol.md §7 (ServerConfig.chpl at each tag).
        let k0 = "arkoudaVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel regexMaxCaptures byteorder";
        let k1 = "arkoudaVersion chplVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel regexMaxCaptures byteorder";
        let k2 = "arkoudaVersion chplVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash";
        let k3 = "arkoudaVersion chplVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel logChannel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash";
        let k4 = "arkoudaVersion chplVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel logChannel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash maxArrayDims";
        let k5 = "arkoudaVersion chplVersion pythonVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel logChannel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash maxArrayDims";
        let k6 = "arkoudaVersion chplVersion pythonVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel logChannel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash";
        let kh = "arkoudaVersion chplVersion pythonVersion ZMQVersion HDF5Version serverHostname ServerPort numLocales numNodes numPUs maxTaskPar physicalMemory distributionType LocaleConfigs authenticate logLevel logChannel regexMaxCaptures byteorder autoShutdown serverInfoNoSplash";
        let old_locale = "id name numPUs maxTaskPar physicalMemory";
        let new_locale = "id name numPUs numColocales maxTaskPar physicalMemory";
        let want = [
            (Release::V2022_08_15, k0, old_locale),
            (Release::V2022_09_30, k1, old_locale),
            (Release::V2022_11_10, k1, old_locale),
            (Release::V2022_12_09, k2, old_locale),
            (Release::V2023_02_08, k3, old_locale),
            (Release::V2023_03_01, k3, old_locale),
            (Release::V2023_04_07, k3, old_locale),
            (Release::V2024_04_19, k3, old_locale),
            (Release::V2024_10_02, k4, old_locale),
            (Release::V2025_07_03, k5, old_locale),
            (Release::V2025_09_30, k6, old_locale),
            (Release::Head, kh, new_locale),
        ];
        assert_eq!(want.len(), Release::ALL.len());
        // serde_json's map keeps insertion order only with preserve_order: read the keys
        // in the order they appear in the text instead.
        fn keys_in_order(text: &str, obj: &serde_json::Map<String, Value>) -> String {
            let mut keys: Vec<(usize, &String)> = obj
                .keys()
                .map(|k| (text.find(&format!("\"{k}\":")).unwrap(), k))
                .collect();
            keys.sort();
            keys.into_iter()
                .map(|(_, k)| k.as_str())
                .collect::<Vec<_>>()
                .join(" ")
        }
        for (r, top, locale) in want {
            let c = cfg(r);
            let text = getconfig_json(&c);
            let v: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(keys_in_order(&text, v.as_object().unwrap()), top, "{r}");
            let entry = &v["LocaleConfigs"][1];
            let entry_text = entry.to_string();
            let mut names: Vec<&str> = locale.split(' ').collect();
            names.sort_unstable();
            let mut got: Vec<&str> = entry
                .as_object()
                .unwrap()
                .keys()
                .map(String::as_str)
                .collect();
            got.sort_unstable();
            assert_eq!(got, names, "{r}: {entry_text}");
            assert!(
                text.contains(&format!(
                    "{{\"id\":1, \"name\":\"nid0001\", \"numPUs\":128, {}",
                    if locale == new_locale {
                        "\"numColocales\":0, "
                    } else {
                        ""
                    }
                )),
                "{r}: {text}"
            );
            assert_eq!(v["arkoudaVersion"], format!("v{}", r.tag()));
            assert!(v["regexMaxCaptures"].is_i64());
            assert_eq!(v["ServerPort"], 5555);
            assert_eq!(v["LocaleConfigs"].as_array().unwrap().len(), 2);
            assert_eq!(v["authenticate"], false);
        }
    }

    #[test]
    fn many_locales_fast() {
        let mut c = cfg(Release::Head);
        c.locales = 4096;
        let state = SimState {
            tick: 3,
            main: MainCounts::default(),
        };
        let t = std::time::Instant::now();
        let msg = Snapshot::new(&c, &state).metrics_msg(Category::All, false);
        let _ = getconfig_json(&c);
        assert!(t.elapsed().as_secs_f64() < 2.0);
        assert!(msg.contains("\"locale_name\":\"nid4095\""));
    }
}
