//! Arkouda records → the cycle's metric families ([`crate::model`]). Pure data to data: no
//! I/O, no clock.
//!
//! This module owns every metric name, unit and HELP text. HELP and TYPE must be the same
//! for a name in every group a Pushgateway holds (or it answers 400), so they come from one
//! fixed table, [`DEFS`], and never from the data. `docs/metrics.md` documents the mapping.
//!
//! Units are converted to base units here: TOTAL_MEMORY_USED is in GB (1e9 bytes),
//! percentages become ratios. Arkouda's `total` rows are dropped in the new names (they
//! are `sum()` of the others, and keeping them would double every sum). Record timestamps
//! are dropped (naive server-local time; the Pushgateway rejects timestamps anyway).

use crate::arkouda::{Category, Record, Scope, ServerInfo};
use crate::model::{Def, Family, Kind};

macro_rules! defs {
    ($($id:ident = $name:literal, $kind:ident, $help:literal;)*) => {
        $(pub const $id: &Def = &Def { name: $name, kind: Kind::$kind, help: $help };)*
        /// Every metric this agent can emit.
        pub static DEFS: &[&Def] = &[$($id),*];
    };
}

defs! {
    UP = "arkouda_up", Gauge, "1 when the last poll of the Arkouda metrics server succeeded, else 0.";
    REQUESTS = "arkouda_requests_total", Counter, "Requests to arkouda_server per command (NUM_REQUESTS).";
    USER_REQUESTS = "arkouda_user_requests_total", Counter, "Requests to arkouda_server per user and command (NUM_REQUESTS, scope USER).";
    RESPONSE_SECONDS = "arkouda_command_response_seconds_total", Counter, "Cumulative response time per command in seconds (TOTAL_RESPONSE_TIME).";
    AVG_RESPONSE = "arkouda_command_avg_response_seconds", Gauge, "Mean response time per command in seconds (AVG_RESPONSE_TIME).";
    LAST_RESPONSE = "arkouda_command_last_response_seconds", Gauge, "Response time of the latest call per command in seconds (RESPONSE_TIME).";
    COMMAND_MEMORY = "arkouda_command_memory_used_bytes_total", Counter, "Sum over a command's calls of the server's total memory in use after each call, in bytes (TOTAL_MEMORY_USED).";
    ERRORS = "arkouda_errors_total", Counter, "Failed requests per error class (NUM_ERRORS).";
    SERVER_INFO = "arkouda_server_info", Gauge, "Arkouda server version and host (SERVER_INFO); always 1.";
    LOCALES = "arkouda_locales", Gauge, "Number of locales of the Arkouda server.";
    LOCALE_MEMORY = "arkouda_locale_memory_used_bytes", Gauge, "Memory used by Arkouda per locale in bytes (SYSTEM; Arkouda reports locale 0's value for every locale).";
    LOCALE_MEMORY_RATIO = "arkouda_locale_memory_used_ratio", Gauge, "Memory used by Arkouda per locale as a share (0..1) of its memory limit (SYSTEM).";
    LOCALE_PHYSICAL = "arkouda_locale_physical_memory_bytes", Gauge, "Physical memory of each locale in bytes (SERVER_INFO).";
    LOCALE_PUS = "arkouda_locale_processing_units", Gauge, "Processing units of each locale (SERVER_INFO).";
    LOCALE_TASKS = "arkouda_locale_max_tasks", Gauge, "Maximum task parallelism of each locale (SERVER_INFO).";
    LOCALE_INFO = "arkouda_locale_info", Gauge, "Name and host of each locale; always 1.";
    JOB_INFO = "arkouda_job_info", Gauge, "The batch job's user and partition; always 1.";
    AGENT_INFO = "arkouda_agent_info", Gauge, "The push agent's version; always 1.";
    AGENT_POLL_SECONDS = "arkouda_agent_poll_duration_seconds", Gauge, "Duration of the agent's latest poll of the metrics server in seconds.";
    AGENT_LAST_SUCCESS = "arkouda_agent_last_success_timestamp_seconds", Gauge, "Unix time of the agent's latest successful poll (0: none yet).";
    AGENT_POLL_ERRORS = "arkouda_agent_poll_errors_total", Counter, "Failed polls of the metrics server since the agent started.";
    AGENT_PUSH_ERRORS = "arkouda_agent_push_errors_total", Counter, "Failed pushes since the agent started.";
    AGENT_RW_ERRORS = "arkouda_agent_remote_write_errors_total", Counter, "Failed remote-write attempts (connection error or non-2xx answer; each retry counts) since the agent started, summed over receivers.";
    AGENT_RW_DROPPED = "arkouda_agent_remote_write_dropped_total", Counter, "Remote-write requests (one per cycle and receiver) given up on since the agent started: rejected with a 4xx other than 429, pushed out of the full queue, or cleared at job end.";
    AGENT_LISTEN_ERRORS = "arkouda_agent_listen_errors_total", Counter, "Failed attempts to bind the listen address (scrape mode) since the agent started; the agent keeps pushing and tries again every cycle.";
    AGENT_SKIPPED = "arkouda_agent_skipped_records_total", Counter, "Records the agent skipped since it started (unknown category or scope, missing field, or nothing to map them to).";
    AGENT_UNKNOWN_FIELDS = "arkouda_agent_unknown_fields_total", Counter, "Unknown fields seen on metric records since the agent started (ignored).";
    AGENT_END = "arkouda_agent_end_timestamp_seconds", Gauge, "Unix time the job's agent stopped: only in the final push of an agent with `linger`, which keeps the group that long after it.";
    AGENT_LEASE = "arkouda_agent_lease_expiry_timestamp_seconds", Gauge, "Unix time until which the agent holds this group: push time + lease. Past it the agent is presumed dead; `arkouda-push-agent sweep` may delete the group.";
    AGENT_SERIES = "arkouda_agent_series", Gauge, "Series in this push of the job (this one included).";
    AGENT_SERIES_DROPPED = "arkouda_agent_series_dropped_total", Counter, "Series folded into \"other\" or dropped by the cardinality budget since the agent started.";
    // The old Python exporter's names, for --legacy-names (all gauges, as it exposed them).
    L_CONNECTIONS = "arkouda_number_of_connections", Gauge, "Number of Arkouda connections";
    L_TOTAL_REQUESTS = "arkouda_total_number_of_requests", Gauge, "Total number of Arkouda requests";
    L_REQUESTS = "arkouda_number_of_requests_per_command", Gauge, "Total number of Arkouda requests per command";
    L_RESPONSE = "arkouda_response_times_per_command", Gauge, "Response times of Arkouda commands";
    L_AVG_RESPONSE = "arkouda_avg_response_times_per_command", Gauge, "Average response times of Arkouda commands";
    L_TOTAL_RESPONSE = "arkouda_total_response_times_per_command", Gauge, "Total response times of Arkouda commands";
    L_COMMAND_MEMORY = "arkouda_total_memory_used_per_command", Gauge, "Total memory used by each Arkouda command";
    L_MEMORY = "arkouda_memory_used_per_locale", Gauge, "Memory used by Arkouda on each locale";
    L_PCT_MEMORY = "arkouda_pct_memory_used_per_locale", Gauge, "Percent of total memory used by Arkouda on each locale";
    L_PHYSICAL = "arkouda_memory_per_locale", Gauge, "System memory on each locale host";
    L_PUS = "arkouda_processing_units_per_locale", Gauge, "Processing units on each locale host";
    L_USER_TOTAL = "arkouda_per_user_total_number_of_requests", Gauge, "Total number of Arkouda requests per user";
    L_USER_REQUESTS = "arkouda_per_user_number_of_requests_per_command", Gauge, "Total number of Arkouda requests per command, per user";
    L_TOTAL_ERRORS = "arkouda_total_number_of_errors", Gauge, "Total number of Arkouda errors";
    L_ERRORS = "arkouda_number_of_errors_per_error_type", Gauge, "Number of Arkouda errors per error type";
    L_SERVER_INFO = "arkouda_server_information_info", Gauge, "Arkouda server and locales configuration information";
}

/// Every label name the series carry (besides the grouping labels): a static grouping
/// label may not take one, or it would overwrite the series' own label.
pub const SERIES_LABELS: &[&str] = &[
    "command",
    "user",
    "error_type",
    "version",
    "hostname",
    "server_name",
    "locale",
    "locale_name",
    "locale_hostname",
    "partition",
    "arkouda_server_name",
    "arkouda_server_hostname",
    "arkouda_version",
    "arkouda_number_of_locales",
    "locale_num",
];

/// The agent's own counters and timings, pushed with every cycle.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AgentStats {
    pub version: String,
    pub poll_duration_seconds: f64,
    /// Unix seconds; 0 before the first success.
    pub last_success_timestamp_seconds: f64,
    pub poll_errors_total: u64,
    pub push_errors_total: u64,
    pub skipped_records_total: u64,
    pub unknown_fields_total: u64,
    pub series_dropped_total: u64,
    /// Unix seconds until which the group is leased (push time + `lease`), computed by
    /// the agent each cycle so that this module stays free of clocks; None: not emitted.
    pub lease_expiry_timestamp_seconds: Option<f64>,
    /// Remote-write failures and drops, summed over receivers; None (not emitted) when
    /// no receiver is configured.
    pub remote_write_errors_total: Option<u64>,
    pub remote_write_dropped_total: Option<u64>,
    /// Failed binds of the `listen` address; None (not emitted) without `listen`.
    pub listen_errors_total: Option<u64>,
    /// Unix seconds the agent stopped: only in the final push of a lingering agent.
    pub end_timestamp_seconds: Option<f64>,
}

/// Fixed facts that label the output.
#[derive(Clone, Debug, Default)]
pub struct Context {
    pub server_name: String,
    pub job_user: Option<String>,
    pub partition: Option<String>,
    pub legacy_names: bool,
}

/// What one cycle knows.
pub struct Snapshot<'a> {
    /// None when the poll failed: only `arkouda_up 0` and the agent's series are emitted.
    pub records: Option<&'a [Record]>,
    pub server_info: Option<&'a ServerInfo>,
    pub agent: &'a AgentStats,
}

/// Accumulates series per metric; families come out sorted by name.
struct Builder {
    families: Vec<Family>,
}

impl Builder {
    fn new() -> Self {
        Builder {
            families: Vec::with_capacity(16),
        }
    }

    fn add(&mut self, def: &'static Def, labels: &[(&'static str, &str)], value: f64) {
        match self.families.iter_mut().find(|f| std::ptr::eq(f.def, def)) {
            Some(f) => f.push(labels, value),
            None => {
                let mut f = Family::new(def);
                f.push(labels, value);
                self.families.push(f);
            }
        }
    }

    fn finish(mut self) -> Vec<Family> {
        self.families.sort_by_key(|f| f.name());
        for f in &mut self.families {
            f.dedup_keep_last();
        }
        self.families
    }
}

/// The cardinality budget: how many distinct values of a label keep series of their own
/// (0: no limit). Off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Budget {
    pub max_commands: usize,
    pub max_users: usize,
    pub max_error_types: usize,
}

impl Budget {
    pub fn is_off(&self) -> bool {
        self.max_commands == 0 && self.max_users == 0 && self.max_error_types == 0
    }
}

/// The values admitted so far, in the order first seen. Kept by the caller across cycles,
/// so a value, once admitted, keeps its own series for the job's whole life and the sum in
/// `other` only ever grows: no counter goes backwards.
#[derive(Clone, Debug, Default)]
pub struct Admitted {
    commands: Vec<String>,
    users: Vec<String>,
    error_types: Vec<String>,
}

/// The label value a budgeted record gets.
pub const OTHER: &str = "other";

fn admit_one(list: &mut Vec<String>, cap: usize, value: &str) {
    if cap > 0 && list.len() < cap && value != TOTAL && !list.iter().any(|v| v == value) {
        list.push(value.to_string());
    }
}

fn admitted(list: &[String], cap: usize, value: &str) -> bool {
    cap == 0 || value == TOTAL || list.iter().any(|v| v == value)
}

/// Admits this cycle's new values, first come first served, up to each cap.
pub fn admit(state: &mut Admitted, budget: &Budget, records: &[Record]) {
    if budget.is_off() {
        return;
    }
    for r in records {
        match (&r.category, &r.scope) {
            (Category::NumErrors, _) => {
                admit_one(&mut state.error_types, budget.max_error_types, &r.name)
            }
            (_, Scope::User(u)) => {
                admit_one(&mut state.users, budget.max_users, u);
                admit_one(&mut state.commands, budget.max_commands, &r.name);
            }
            (_, Scope::Global) => admit_one(&mut state.commands, budget.max_commands, &r.name),
            _ => {}
        }
    }
}

/// Applies the budget: a record whose command, user or error class is not admitted gets
/// `other` in its place; counters of the same `other` series are summed, gauges (last and
/// mean response times) of non-admitted commands are dropped. Returns the records to
/// translate and how many were folded or dropped. Borrows when the budget is off.
pub fn apply_budget<'r>(
    records: &'r [Record],
    state: &Admitted,
    budget: &Budget,
) -> (std::borrow::Cow<'r, [Record]>, u64) {
    if budget.is_off() {
        return (std::borrow::Cow::Borrowed(records), 0);
    }
    let mut out: Vec<Record> = Vec::with_capacity(records.len());
    // Index in `out` of each `other` series, by (category, name, user).
    let mut others: std::collections::HashMap<(String, String, String), usize> =
        std::collections::HashMap::new();
    let mut folded = 0u64;
    for r in records {
        let (name_ok, user) = match (&r.category, &r.scope) {
            (Category::NumErrors, _) => (
                admitted(&state.error_types, budget.max_error_types, &r.name),
                None,
            ),
            (_, Scope::User(u)) => (
                admitted(&state.commands, budget.max_commands, &r.name),
                Some((u.as_str(), admitted(&state.users, budget.max_users, u))),
            ),
            (_, Scope::Global) => (
                admitted(&state.commands, budget.max_commands, &r.name),
                None,
            ),
            _ => (true, None),
        };
        let user_ok = user.is_none_or(|(_, ok)| ok);
        if name_ok && user_ok {
            out.push(r.clone());
            continue;
        }
        folded += 1;
        let summable = matches!(
            r.category,
            Category::NumRequests
                | Category::TotalResponseTime
                | Category::TotalMemoryUsed
                | Category::NumErrors
        );
        if !summable {
            continue;
        }
        let name = if name_ok {
            r.name.clone()
        } else {
            OTHER.to_string()
        };
        let user = user.map(|(u, ok)| if ok { u.to_string() } else { OTHER.to_string() });
        let key = (
            format!("{:?}", r.category),
            name.clone(),
            user.clone().unwrap_or_default(),
        );
        match others.get(&key) {
            Some(&i) => out[i].value += r.value,
            None => {
                others.insert(key, out.len());
                out.push(Record {
                    name,
                    category: r.category.clone(),
                    scope: user.map_or(Scope::Global, Scope::User),
                    value: r.value,
                });
            }
        }
    }
    (std::borrow::Cow::Owned(out), folded)
}

/// The families of one cycle, and the records nothing maps to (a known category with an
/// unknown name or scope): counted by the caller, which also logs each kind once.
pub struct Translation {
    pub families: Vec<Family>,
    pub unmapped: u64,
    /// One description per distinct kind of unmapped record.
    pub unmapped_kinds: Vec<String>,
}

/// Translates one cycle's snapshot into metric families.
pub fn families(snap: &Snapshot<'_>, ctx: &Context) -> Vec<Family> {
    translate(snap, ctx).families
}

/// Translates one cycle's snapshot; see [`Translation`].
pub fn translate(snap: &Snapshot<'_>, ctx: &Context) -> Translation {
    let mut b = Builder::new();
    let mut unmapped = 0;
    let mut unmapped_kinds: Vec<String> = Vec::new();
    let a = snap.agent;
    b.add(UP, &[], if snap.records.is_some() { 1.0 } else { 0.0 });
    b.add(AGENT_INFO, &[("version", &a.version)], 1.0);
    b.add(AGENT_POLL_SECONDS, &[], a.poll_duration_seconds);
    b.add(AGENT_LAST_SUCCESS, &[], a.last_success_timestamp_seconds);
    b.add(AGENT_POLL_ERRORS, &[], a.poll_errors_total as f64);
    b.add(AGENT_PUSH_ERRORS, &[], a.push_errors_total as f64);
    b.add(AGENT_UNKNOWN_FIELDS, &[], a.unknown_fields_total as f64);
    if let Some(expiry) = a.lease_expiry_timestamp_seconds {
        b.add(AGENT_LEASE, &[], expiry);
    }
    if let Some(end) = a.end_timestamp_seconds {
        b.add(AGENT_END, &[], end);
    }
    if let Some(n) = a.remote_write_errors_total {
        b.add(AGENT_RW_ERRORS, &[], n as f64);
    }
    if let Some(n) = a.remote_write_dropped_total {
        b.add(AGENT_RW_DROPPED, &[], n as f64);
    }
    if let Some(n) = a.listen_errors_total {
        b.add(AGENT_LISTEN_ERRORS, &[], n as f64);
    }
    if ctx.job_user.is_some() || ctx.partition.is_some() {
        b.add(
            JOB_INFO,
            &[
                ("user", ctx.job_user.as_deref().unwrap_or("")),
                ("partition", ctx.partition.as_deref().unwrap_or("")),
            ],
            1.0,
        );
    }
    if let Some(records) = snap.records {
        if let Some(info) = snap.server_info {
            server_info(&mut b, info, ctx);
        }
        // From v2024.10.02 NUM_ERRORS is its `total` record alone (always 0): it then
        // becomes the one error series, so the error panels show 0 rather than no data,
        // and `sum(arkouda_errors_total)` is the server's error total in every release.
        let error_classes = has_error_classes(records);
        for r in records {
            let mapped = if ctx.legacy_names {
                legacy_record(&mut b, r, &ctx.server_name)
            } else {
                record(&mut b, r, error_classes)
            };
            // `total` rows are dropped on purpose, not skipped.
            if !mapped && r.name != TOTAL {
                unmapped += 1;
                let kind = format!(
                    "{:?} record {:?} of scope {}",
                    r.category,
                    r.name,
                    scope_name(&r.scope)
                );
                if !unmapped_kinds.contains(&kind) {
                    unmapped_kinds.push(kind);
                }
            }
        }
    }
    b.add(
        AGENT_SKIPPED,
        &[],
        (a.skipped_records_total + unmapped) as f64,
    );
    b.add(AGENT_SERIES_DROPPED, &[], a.series_dropped_total as f64);
    let series: usize = b.families.iter().map(Family::len).sum();
    b.add(AGENT_SERIES, &[], (series + 1) as f64);
    Translation {
        families: b.finish(),
        unmapped,
        unmapped_kinds,
    }
}

fn scope_name(s: &Scope) -> &'static str {
    match s {
        Scope::Global => "GLOBAL",
        Scope::Locale(_) => "LOCALE",
        Scope::User(_) => "USER",
        Scope::Request => "REQUEST",
    }
}

fn server_info(b: &mut Builder, info: &ServerInfo, ctx: &Context) {
    if ctx.legacy_names {
        let n = info.number_of_locales.to_string();
        b.add(
            L_SERVER_INFO,
            &[
                ("arkouda_server_name", &ctx.server_name),
                ("arkouda_server_hostname", &info.hostname),
                ("arkouda_version", &info.version),
                ("arkouda_number_of_locales", &n),
            ],
            1.0,
        );
        for l in &info.locales {
            let labels = [
                ("locale_name", l.name.as_str()),
                ("locale_num", l.id.as_str()),
                ("locale_hostname", l.hostname.as_str()),
                ("arkouda_server_name", ctx.server_name.as_str()),
            ];
            if let Some(v) = l.physical_memory {
                b.add(L_PHYSICAL, &labels, v);
            }
            if let Some(v) = l.processing_units {
                b.add(L_PUS, &labels, v);
            }
        }
        return;
    }
    b.add(
        SERVER_INFO,
        &[
            ("version", &info.version),
            ("hostname", &info.hostname),
            ("server_name", &ctx.server_name),
        ],
        1.0,
    );
    b.add(LOCALES, &[], info.number_of_locales as f64);
    for l in &info.locales {
        let locale = [("locale", l.id.as_str())];
        b.add(
            LOCALE_INFO,
            &[
                ("locale", &l.id),
                ("locale_name", &l.name),
                ("locale_hostname", &l.hostname),
            ],
            1.0,
        );
        if let Some(v) = l.physical_memory {
            b.add(LOCALE_PHYSICAL, &locale, v);
        }
        if let Some(v) = l.processing_units {
            b.add(LOCALE_PUS, &locale, v);
        }
        if let Some(v) = l.max_tasks {
            b.add(LOCALE_TASKS, &locale, v);
        }
    }
}

/// The name of the records that sum a category's others.
pub const TOTAL: &str = "total";
/// SYSTEM's per-locale memory record.
pub const MEMORY_USED: &str = "arkouda_memory_used_per_locale";

/// Whether NUM_ERRORS has records per error class (else its `total` stands alone, as in
/// every release from v2024.10.02).
pub fn has_error_classes(records: &[Record]) -> bool {
    records
        .iter()
        .any(|r| r.category == Category::NumErrors && r.name != TOTAL)
}
const PERCENT_MEMORY_USED: &str = "arkouda_percent_memory_used_per_locale";

/// The `error_type` of the error series made from NUM_ERRORS' `total` record when the
/// server sends no class records (every release from v2024.10.02).
pub const ALL_ERRORS: &str = "all";

/// Adds the series of one record; false when nothing maps to it. `error_classes`: this
/// cycle's NUM_ERRORS has records per error class (so its `total` is not exported).
fn record(b: &mut Builder, r: &Record, error_classes: bool) -> bool {
    let cmd = [("command", r.name.as_str())];
    match (&r.category, &r.scope) {
        (Category::NumRequests, Scope::Global) if r.name != TOTAL => b.add(REQUESTS, &cmd, r.value),
        (Category::NumRequests, Scope::User(user)) if r.name != TOTAL => b.add(
            USER_REQUESTS,
            &[("user", user.as_str()), ("command", r.name.as_str())],
            r.value,
        ),
        (Category::ResponseTime, Scope::Global) => b.add(LAST_RESPONSE, &cmd, r.value),
        (Category::AvgResponseTime, Scope::Global) => b.add(AVG_RESPONSE, &cmd, r.value),
        (Category::TotalResponseTime, Scope::Global) => b.add(RESPONSE_SECONDS, &cmd, r.value),
        (Category::TotalMemoryUsed, Scope::Global) => {
            b.add(COMMAND_MEMORY, &cmd, (r.value * 1e9).round())
        }
        (Category::NumErrors, Scope::Global) if r.name != TOTAL => {
            b.add(ERRORS, &[("error_type", r.name.as_str())], r.value)
        }
        (Category::NumErrors, Scope::Global) if !error_classes => {
            b.add(ERRORS, &[("error_type", ALL_ERRORS)], r.value)
        }
        (Category::System, Scope::Locale(l)) if r.name == MEMORY_USED => {
            b.add(LOCALE_MEMORY, &[("locale", l.num.as_str())], r.value)
        }
        (Category::System, Scope::Locale(l)) if r.name == PERCENT_MEMORY_USED => b.add(
            LOCALE_MEMORY_RATIO,
            &[("locale", l.num.as_str())],
            r.value / 100.0,
        ),
        // `total` rows, SERVER (never filled by any release) and anything new: not exported.
        _ => return false,
    }
    true
}

fn legacy_record(b: &mut Builder, r: &Record, server: &str) -> bool {
    let s = ("arkouda_server_name", server);
    let cmd = [("command", r.name.as_str()), s];
    match (&r.category, &r.scope) {
        (Category::NumRequests, Scope::Global) if r.name == TOTAL => {
            b.add(L_TOTAL_REQUESTS, &[s], r.value)
        }
        (Category::NumRequests, Scope::Global) => b.add(L_REQUESTS, &cmd, r.value),
        (Category::NumRequests, Scope::User(user)) if r.name == TOTAL => {
            b.add(L_USER_TOTAL, &[s, ("user", user.as_str())], r.value)
        }
        (Category::NumRequests, Scope::User(user)) => b.add(
            L_USER_REQUESTS,
            &[("command", r.name.as_str()), s, ("user", user.as_str())],
            r.value,
        ),
        (Category::ResponseTime, Scope::Global) => b.add(L_RESPONSE, &cmd, r.value),
        (Category::AvgResponseTime, Scope::Global) => b.add(L_AVG_RESPONSE, &cmd, r.value),
        (Category::TotalResponseTime, Scope::Global) => b.add(L_TOTAL_RESPONSE, &cmd, r.value),
        (Category::TotalMemoryUsed, Scope::Global) => b.add(L_COMMAND_MEMORY, &cmd, r.value),
        (Category::NumErrors, Scope::Global) if r.name == TOTAL => {
            b.add(L_TOTAL_ERRORS, &[s], r.value)
        }
        (Category::NumErrors, Scope::Global) => {
            b.add(L_ERRORS, &[s, ("error_type", r.name.as_str())], r.value)
        }
        (Category::Server, Scope::Global) => b.add(L_CONNECTIONS, &[s], r.value),
        (Category::System, Scope::Locale(l)) => {
            let def = if r.name == MEMORY_USED {
                L_MEMORY
            } else {
                L_PCT_MEMORY
            };
            b.add(
                def,
                &[
                    ("locale_name", l.name.as_str()),
                    ("locale_num", l.num.as_str()),
                    ("locale_hostname", l.hostname.as_str()),
                    s,
                ],
                r.value,
            )
        }
        _ => return false,
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arkouda::{protocol, LocaleRef};
    use crate::model::encode_text;

    fn rec(name: &str, category: Category, scope: Scope, value: f64) -> Record {
        Record {
            name: name.into(),
            category,
            scope,
            value,
        }
    }

    fn locale(n: &str) -> Scope {
        Scope::Locale(LocaleRef {
            num: n.into(),
            name: format!("nid00{n}"),
            hostname: format!("nid00{n}.hpc"),
        })
    }

    fn agent() -> AgentStats {
        AgentStats {
            version: "0.1.0".into(),
            poll_duration_seconds: 0.25,
            last_success_timestamp_seconds: 1700000000.0,
            poll_errors_total: 2,
            push_errors_total: 1,
            skipped_records_total: 0,
            unknown_fields_total: 3,
            series_dropped_total: 0,
            ..AgentStats::default()
        }
    }

    /// Renders only the sample lines (no HELP/TYPE) of the families whose name starts
    /// with `prefix`, for compact expectations.
    fn samples(fams: &[Family], prefix: &str) -> Vec<String> {
        samples_with(fams, &[], prefix)
    }

    /// [`samples`] with `first` put first on every series, as the listen sink encodes.
    fn samples_with(fams: &[Family], first: &[(String, String)], prefix: &str) -> Vec<String> {
        let mut text = String::new();
        encode_text(fams, first, &mut text).unwrap();
        text.lines()
            .filter(|l| !l.starts_with('#') && l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }

    /// The record → series table: one row per kind of Arkouda record.
    #[test]
    fn record_to_series_table() {
        use Category::*;
        let g = Scope::Global;
        let u = |n: &str| Scope::User(n.into());
        let table: Vec<(Record, Option<&str>, Option<&str>)> = vec![
            (
                rec("randint", NumRequests, g.clone(), 5.0),
                Some(r#"arkouda_requests_total{command="randint"} 5"#),
                Some(
                    r#"arkouda_number_of_requests_per_command{command="randint",arkouda_server_name="srv"} 5"#,
                ),
            ),
            (
                rec("total", NumRequests, g.clone(), 9.0),
                None,
                Some(r#"arkouda_total_number_of_requests{arkouda_server_name="srv"} 9"#),
            ),
            (
                rec("connect", NumRequests, u("alice"), 2.0),
                Some(r#"arkouda_user_requests_total{user="alice",command="connect"} 2"#),
                Some(
                    r#"arkouda_per_user_number_of_requests_per_command{command="connect",arkouda_server_name="srv",user="alice"} 2"#,
                ),
            ),
            (
                rec("total", NumRequests, u("alice"), 9.0),
                None,
                Some(
                    r#"arkouda_per_user_total_number_of_requests{arkouda_server_name="srv",user="alice"} 9"#,
                ),
            ),
            (
                rec("sum", ResponseTime, g.clone(), 0.5),
                Some(r#"arkouda_command_last_response_seconds{command="sum"} 0.5"#),
                Some(
                    r#"arkouda_response_times_per_command{command="sum",arkouda_server_name="srv"} 0.5"#,
                ),
            ),
            (
                rec("sum", AvgResponseTime, g.clone(), 0.125),
                Some(r#"arkouda_command_avg_response_seconds{command="sum"} 0.125"#),
                Some(
                    r#"arkouda_avg_response_times_per_command{command="sum",arkouda_server_name="srv"} 0.125"#,
                ),
            ),
            (
                rec("sum", TotalResponseTime, g.clone(), 3.5),
                Some(r#"arkouda_command_response_seconds_total{command="sum"} 3.5"#),
                Some(
                    r#"arkouda_total_response_times_per_command{command="sum",arkouda_server_name="srv"} 3.5"#,
                ),
            ),
            (
                rec("sum", TotalMemoryUsed, g.clone(), 4.000256),
                Some(r#"arkouda_command_memory_used_bytes_total{command="sum"} 4000256000"#),
                Some(
                    r#"arkouda_total_memory_used_per_command{command="sum",arkouda_server_name="srv"} 4.000256"#,
                ),
            ),
            (
                rec("IllegalArgumentError", NumErrors, g.clone(), 1.0),
                Some(r#"arkouda_errors_total{error_type="IllegalArgumentError"} 1"#),
                Some(
                    r#"arkouda_number_of_errors_per_error_type{arkouda_server_name="srv",error_type="IllegalArgumentError"} 1"#,
                ),
            ),
            (
                // Alone (every release from v2024.10.02): the one error series.
                rec("total", NumErrors, g.clone(), 0.0),
                Some(r#"arkouda_errors_total{error_type="all"} 0"#),
                Some(r#"arkouda_total_number_of_errors{arkouda_server_name="srv"} 0"#),
            ),
            (
                rec(
                    "arkouda_memory_used_per_locale",
                    System,
                    locale("1"),
                    8.000512e8,
                ),
                Some(r#"arkouda_locale_memory_used_bytes{locale="1"} 800051200"#),
                Some(
                    r#"arkouda_memory_used_per_locale{locale_name="nid001",locale_num="1",locale_hostname="nid001.hpc",arkouda_server_name="srv"} 800051200"#,
                ),
            ),
            (
                rec(
                    "arkouda_percent_memory_used_per_locale",
                    System,
                    locale("1"),
                    25.0,
                ),
                Some(r#"arkouda_locale_memory_used_ratio{locale="1"} 0.25"#),
                Some(
                    r#"arkouda_pct_memory_used_per_locale{locale_name="nid001",locale_num="1",locale_hostname="nid001.hpc",arkouda_server_name="srv"} 25"#,
                ),
            ),
            (
                rec("connections", Server, g.clone(), 3.0),
                None,
                Some(r#"arkouda_number_of_connections{arkouda_server_name="srv"} 3"#),
            ),
            (rec("something_new", System, g.clone(), 3.0), None, None),
        ];
        for (r, new, legacy) in table {
            for (legacy_names, want) in [(false, new), (true, legacy)] {
                let ctx = Context {
                    server_name: "srv".into(),
                    legacy_names,
                    ..Context::default()
                };
                let recs = [r.clone()];
                let snap = Snapshot {
                    records: Some(&recs),
                    server_info: None,
                    agent: &agent(),
                };
                let got: Vec<String> = samples(&families(&snap, &ctx), "arkouda_")
                    .into_iter()
                    .filter(|l| !l.starts_with("arkouda_agent_") && !l.starts_with("arkouda_up"))
                    .collect();
                let want: Vec<String> = want.into_iter().map(str::to_string).collect();
                assert_eq!(got, want, "record {r:?}, legacy {legacy_names}");
            }
        }
    }

    #[test]
    fn error_total_only_without_classes() {
        use Category::NumErrors;
        let rec = |name: &str, value| Record {
            name: name.into(),
            category: NumErrors,
            scope: Scope::Global,
            value,
        };
        let ctx = Context::default();
        let errors = |recs: &[Record]| {
            let snap = Snapshot {
                records: Some(recs),
                server_info: None,
                agent: &agent(),
            };
            samples(&families(&snap, &ctx), "arkouda_errors")
        };
        // v2024.04.19 – v2024.06.21 after an error: the classes, and no `total` beside them.
        assert_eq!(
            errors(&[rec("IllegalArgumentError", 2.0), rec("total", 2.0)]),
            vec![r#"arkouda_errors_total{error_type="IllegalArgumentError"} 2"#]
        );
        // v2024.10.02 on (and v2024.04.19 before any error): `total` alone.
        assert_eq!(
            errors(&[rec("total", 0.0)]),
            vec![r#"arkouda_errors_total{error_type="all"} 0"#]
        );
        // Before v2024.04.19: no NUM_ERRORS, no error series.
        assert!(errors(&[]).is_empty());
    }

    #[test]
    fn server_info_and_agent_series() {
        let info = protocol::parse_server_info(
            r#"{"hostname":"nid001", "version":"v2024.04.19", "server_port":5555, "locales":[{"name":"nid001", "id":"0", "hostname":"nid001", "number_of_processing_units":128, "physical_memory":270174920704, "max_number_of_tasks":128}], "number_of_locales":1}"#,
        )
        .unwrap();
        let ctx = Context {
            server_name: "arkouda-metrics".into(),
            job_user: Some("alice".into()),
            partition: Some("debug".into()),
            legacy_names: false,
        };
        let snap = Snapshot {
            records: Some(&[]),
            server_info: Some(&info),
            agent: &agent(),
        };
        let mut text = String::new();
        encode_text(&families(&snap, &ctx), &[], &mut text).unwrap();
        let want = r#"# HELP arkouda_agent_info The push agent's version; always 1.
# TYPE arkouda_agent_info gauge
arkouda_agent_info{version="0.1.0"} 1
# HELP arkouda_agent_last_success_timestamp_seconds Unix time of the agent's latest successful poll (0: none yet).
# TYPE arkouda_agent_last_success_timestamp_seconds gauge
arkouda_agent_last_success_timestamp_seconds 1700000000
# HELP arkouda_agent_poll_duration_seconds Duration of the agent's latest poll of the metrics server in seconds.
# TYPE arkouda_agent_poll_duration_seconds gauge
arkouda_agent_poll_duration_seconds 0.25
# HELP arkouda_agent_poll_errors_total Failed polls of the metrics server since the agent started.
# TYPE arkouda_agent_poll_errors_total counter
arkouda_agent_poll_errors_total 2
# HELP arkouda_agent_push_errors_total Failed pushes since the agent started.
# TYPE arkouda_agent_push_errors_total counter
arkouda_agent_push_errors_total 1
# HELP arkouda_agent_series Series in this push of the job (this one included).
# TYPE arkouda_agent_series gauge
arkouda_agent_series 17
# HELP arkouda_agent_series_dropped_total Series folded into "other" or dropped by the cardinality budget since the agent started.
# TYPE arkouda_agent_series_dropped_total counter
arkouda_agent_series_dropped_total 0
# HELP arkouda_agent_skipped_records_total Records the agent skipped since it started (unknown category or scope, missing field, or nothing to map them to).
# TYPE arkouda_agent_skipped_records_total counter
arkouda_agent_skipped_records_total 0
# HELP arkouda_agent_unknown_fields_total Unknown fields seen on metric records since the agent started (ignored).
# TYPE arkouda_agent_unknown_fields_total counter
arkouda_agent_unknown_fields_total 3
# HELP arkouda_job_info The batch job's user and partition; always 1.
# TYPE arkouda_job_info gauge
arkouda_job_info{user="alice",partition="debug"} 1
# HELP arkouda_locale_info Name and host of each locale; always 1.
# TYPE arkouda_locale_info gauge
arkouda_locale_info{locale="0",locale_name="nid001",locale_hostname="nid001"} 1
# HELP arkouda_locale_max_tasks Maximum task parallelism of each locale (SERVER_INFO).
# TYPE arkouda_locale_max_tasks gauge
arkouda_locale_max_tasks{locale="0"} 128
# HELP arkouda_locale_physical_memory_bytes Physical memory of each locale in bytes (SERVER_INFO).
# TYPE arkouda_locale_physical_memory_bytes gauge
arkouda_locale_physical_memory_bytes{locale="0"} 270174920704
# HELP arkouda_locale_processing_units Processing units of each locale (SERVER_INFO).
# TYPE arkouda_locale_processing_units gauge
arkouda_locale_processing_units{locale="0"} 128
# HELP arkouda_locales Number of locales of the Arkouda server.
# TYPE arkouda_locales gauge
arkouda_locales 1
# HELP arkouda_server_info Arkouda server version and host (SERVER_INFO); always 1.
# TYPE arkouda_server_info gauge
arkouda_server_info{version="v2024.04.19",hostname="nid001",server_name="arkouda-metrics"} 1
# HELP arkouda_up 1 when the last poll of the Arkouda metrics server succeeded, else 0.
# TYPE arkouda_up gauge
arkouda_up 1
"#;
        assert_eq!(text, want);

        // Down: only up 0 and the agent's own series, no stale server data.
        let snap = Snapshot {
            records: None,
            server_info: Some(&info),
            agent: &agent(),
        };
        let names: Vec<String> = families(&snap, &ctx)
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        assert!(
            names.iter().all(|n| n.starts_with("arkouda_agent_")
                || n == "arkouda_up"
                || n == "arkouda_job_info"),
            "{names:?}"
        );
        assert_eq!(
            samples(&families(&snap, &ctx), "arkouda_up"),
            vec!["arkouda_up 0"]
        );
    }

    #[test]
    fn awkward_label_values_are_escaped_and_duplicates_dropped() {
        let recs = [
            rec(
                "q\"uote\\back\nline",
                Category::NumRequests,
                Scope::Global,
                1.0,
            ),
            rec("dup", Category::NumRequests, Scope::Global, 1.0),
            rec("dup", Category::NumRequests, Scope::Global, 2.0),
            rec("", Category::NumRequests, Scope::Global, 3.0),
        ];
        let snap = Snapshot {
            records: Some(&recs),
            server_info: None,
            agent: &agent(),
        };
        let got = samples(
            &families(&snap, &Context::default()),
            "arkouda_requests_total",
        );
        assert_eq!(
            got,
            vec![
                r#"arkouda_requests_total{command="q\"uote\\back\nline"} 1"#.to_string(),
                r#"arkouda_requests_total{command="dup"} 2"#.into(),
                r#"arkouda_requests_total{command=""} 3"#.into(),
            ]
        );
    }

    /// A known category with a name or scope nothing maps to is counted and described
    /// once; `total` rows are dropped on purpose and not counted.
    #[test]
    fn unmapped_records_are_counted() {
        let recs = [
            rec("shiny_new_gauge", Category::System, Scope::Global, 1.0),
            rec("shiny_new_gauge", Category::System, Scope::Global, 2.0),
            rec("x", Category::NumRequests, Scope::Request, 1.0),
            rec("total", Category::NumRequests, Scope::Global, 9.0),
        ];
        let snap = Snapshot {
            records: Some(&recs),
            server_info: None,
            agent: &agent(),
        };
        let t = translate(&snap, &Context::default());
        assert_eq!(t.unmapped, 3);
        assert_eq!(
            t.unmapped_kinds,
            vec![
                "System record \"shiny_new_gauge\" of scope GLOBAL".to_string(),
                "NumRequests record \"x\" of scope REQUEST".into()
            ]
        );
        assert_eq!(
            samples(&t.families, "arkouda_agent_skipped"),
            vec!["arkouda_agent_skipped_records_total 3"]
        );
    }

    /// Scrape mode: the grouping labels, put first when the families are encoded, come
    /// first on every series.
    #[test]
    fn grouping_labels_first_on_every_series() {
        let grouping = [
            ("job".to_string(), "arkouda".to_string()),
            ("slurm_job_id".to_string(), "7".to_string()),
        ];
        let recs = [rec("sum", Category::NumRequests, Scope::Global, 1.0)];
        let snap = Snapshot {
            records: Some(&recs),
            server_info: None,
            agent: &agent(),
        };
        let got = samples_with(&families(&snap, &Context::default()), &grouping, "arkouda_");
        assert!(
            got.contains(
                &r#"arkouda_requests_total{job="arkouda",slurm_job_id="7",command="sum"} 1"#
                    .to_string()
            ),
            "{got:?}"
        );
        assert!(
            got.iter()
                .all(|l| l.contains(r#"{job="arkouda",slurm_job_id="7""#)),
            "{got:?}"
        );
    }

    /// The lease is pushed as given (the agent computes it per cycle), in both naming modes,
    /// and not at all when unset.
    #[test]
    fn lease_expiry_is_pushed_when_set() {
        for legacy_names in [false, true] {
            let ctx = Context {
                legacy_names,
                ..Context::default()
            };
            let stats = AgentStats {
                lease_expiry_timestamp_seconds: Some(1700000020.5),
                ..agent()
            };
            for records in [Some(&[][..]), None] {
                let snap = Snapshot {
                    records,
                    server_info: None,
                    agent: &stats,
                };
                assert_eq!(
                    samples(&families(&snap, &ctx), "arkouda_agent_lease"),
                    vec!["arkouda_agent_lease_expiry_timestamp_seconds 1700000020.5"]
                );
            }
        }
        let snap = Snapshot {
            records: None,
            server_info: None,
            agent: &agent(),
        };
        assert!(samples(&families(&snap, &Context::default()), "arkouda_agent_lease").is_empty());
    }

    /// The remote-write counters appear only when a receiver is configured.
    #[test]
    fn remote_write_counters_only_when_configured() {
        let ctx = Context::default();
        let snap = |a: &AgentStats| {
            samples(
                &families(
                    &Snapshot {
                        records: None,
                        server_info: None,
                        agent: a,
                    },
                    &ctx,
                ),
                "arkouda_agent_remote_write",
            )
        };
        assert!(snap(&agent()).is_empty());
        let a = AgentStats {
            remote_write_errors_total: Some(3),
            remote_write_dropped_total: Some(1),
            ..agent()
        };
        assert_eq!(
            snap(&a),
            vec![
                "arkouda_agent_remote_write_dropped_total 1",
                "arkouda_agent_remote_write_errors_total 3"
            ]
        );
    }

    #[test]
    fn listen_counter_only_with_listen() {
        let ctx = Context::default();
        let snap = |a: &AgentStats| {
            samples(
                &families(
                    &Snapshot {
                        records: None,
                        server_info: None,
                        agent: a,
                    },
                    &ctx,
                ),
                "arkouda_agent_listen",
            )
        };
        assert!(snap(&agent()).is_empty());
        let a = AgentStats {
            listen_errors_total: Some(2),
            ..agent()
        };
        assert_eq!(snap(&a), vec!["arkouda_agent_listen_errors_total 2"]);
    }

    #[test]
    fn help_and_type_are_unique_per_name() {
        let mut names: Vec<&str> = DEFS.iter().map(|d| d.name).collect();
        names.sort();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
        for d in DEFS {
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total") && !d.name.starts_with("arkouda_total_"),
                "{}",
                d.name
            );
        }
    }
}
