//! The job summary (`summary_file`): what a job's agent saw, written once as JSON when the
//! agent exits, so that something of the job remains after its series end.
//!
//! The fields are a contract (sites' scripts and the controller's epilog read them):
//! `job_id`, `cluster` (string or null), `started` and `ended` (RFC 3339), `duration_seconds`,
//! `polls`, `failed_polls`, `server` {`version`, `locales`}, `requests` {command: count},
//! `errors` {class: count}, `peak_memory_bytes` {locale number: bytes}.
//!
//! Counts survive a server restart (Arkouda's counters then start from zero again: the
//! count before the reset is kept and added). The file is written atomically (a temporary
//! file in the same directory, then renamed), so a reader never sees half of it. Pure
//! bookkeeping over records, plus the one write: it never polls and never ships.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::Serialize;

use crate::arkouda::{Category, Record, Scope, ServerInfo};

/// A counter kept across resets: the value now, plus every value it had before a reset.
#[derive(Clone, Copy, Debug, Default)]
struct Kept {
    last: f64,
    before_resets: f64,
}

impl Kept {
    fn observe(&mut self, value: f64) {
        if value < self.last {
            self.before_resets += self.last;
        }
        self.last = value;
    }

    fn total(&self) -> u64 {
        (self.before_resets + self.last).round().max(0.0) as u64
    }
}

/// What the agent has seen of the job so far.
#[derive(Debug)]
pub struct Summary {
    job_id: String,
    cluster: Option<String>,
    started: SystemTime,
    polls: u64,
    failed_polls: u64,
    version: String,
    locales: u64,
    requests: BTreeMap<String, Kept>,
    errors: BTreeMap<String, Kept>,
    peak_memory: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Server<'a> {
    version: &'a str,
    locales: u64,
}

#[derive(Serialize)]
struct Document<'a> {
    job_id: &'a str,
    cluster: Option<&'a str>,
    started: String,
    ended: String,
    duration_seconds: f64,
    polls: u64,
    failed_polls: u64,
    server: Server<'a>,
    requests: BTreeMap<&'a str, u64>,
    errors: BTreeMap<&'a str, u64>,
    peak_memory_bytes: BTreeMap<&'a str, u64>,
}

use crate::translate::{has_error_classes, ALL_ERRORS, MEMORY_USED, TOTAL};

impl Summary {
    pub fn new(job_id: &str, cluster: Option<&str>, started: SystemTime) -> Summary {
        Summary {
            job_id: job_id.to_string(),
            cluster: cluster.map(str::to_string),
            started,
            polls: 0,
            failed_polls: 0,
            version: String::new(),
            locales: 0,
            requests: BTreeMap::new(),
            errors: BTreeMap::new(),
            peak_memory: BTreeMap::new(),
        }
    }

    /// A poll that failed.
    pub fn failed(&mut self) {
        self.polls += 1;
        self.failed_polls += 1;
    }

    /// A poll that worked, with its records and server description.
    pub fn observe(&mut self, records: &[Record], info: Option<&ServerInfo>) {
        self.polls += 1;
        if let Some(info) = info {
            self.version.clone_from(&info.version);
            self.locales = info.number_of_locales;
        }
        let classes = has_error_classes(records);
        for r in records {
            match (&r.category, &r.scope) {
                (Category::NumRequests, Scope::Global) if r.name != TOTAL => self
                    .requests
                    .entry(r.name.clone())
                    .or_default()
                    .observe(r.value),
                (Category::NumErrors, Scope::Global) if r.name != TOTAL => self
                    .errors
                    .entry(r.name.clone())
                    .or_default()
                    .observe(r.value),
                (Category::NumErrors, Scope::Global) if !classes => self
                    .errors
                    .entry(ALL_ERRORS.to_string())
                    .or_default()
                    .observe(r.value),
                (Category::System, Scope::Locale(l)) if r.name == MEMORY_USED => {
                    let peak = self.peak_memory.entry(l.num.clone()).or_insert(0.0);
                    *peak = peak.max(r.value);
                }
                _ => {}
            }
        }
    }

    /// The summary as JSON, ended at `ended`.
    pub fn to_json(&self, ended: SystemTime) -> String {
        fn counts(m: &BTreeMap<String, Kept>) -> BTreeMap<&str, u64> {
            m.iter().map(|(k, v)| (k.as_str(), v.total())).collect()
        }
        let doc = Document {
            job_id: &self.job_id,
            cluster: self.cluster.as_deref(),
            started: rfc3339(self.started),
            ended: rfc3339(ended),
            duration_seconds: ended
                .duration_since(self.started)
                .map(|d| d.as_secs_f64())
                .unwrap_or(0.0),
            polls: self.polls,
            failed_polls: self.failed_polls,
            server: Server {
                version: &self.version,
                locales: self.locales,
            },
            requests: counts(&self.requests),
            errors: counts(&self.errors),
            peak_memory_bytes: self
                .peak_memory
                .iter()
                .map(|(k, v)| (k.as_str(), v.round().max(0.0) as u64))
                .collect(),
        };
        // Plain strings and numbers: serializing cannot fail.
        let mut text = serde_json::to_string_pretty(&doc).unwrap_or_default();
        text.push('\n');
        text
    }

    /// Writes the summary to `path` atomically: a temporary file beside it, then a rename.
    pub fn write(&self, path: &Path, ended: SystemTime) -> std::io::Result<()> {
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty());
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = dir
            .unwrap_or(Path::new("."))
            .join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(self.to_json(ended).as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }
}

/// `summary_file` with `%j` replaced by the job id.
pub fn path_for(template: &Path, job_id: &str) -> PathBuf {
    PathBuf::from(template.to_string_lossy().replace("%j", job_id))
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arkouda::LocaleRef;
    use std::time::Duration;

    fn rec(name: &str, category: Category, scope: Scope, value: f64) -> Record {
        Record {
            name: name.into(),
            category,
            scope,
            value,
        }
    }

    fn mem(locale: &str, value: f64) -> Record {
        rec(
            MEMORY_USED,
            Category::System,
            Scope::Locale(LocaleRef {
                num: locale.into(),
                name: format!("nid{locale}"),
                hostname: format!("nid{locale}"),
            }),
            value,
        )
    }

    #[test]
    fn the_document_has_exactly_the_contract_fields() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
        let mut s = Summary::new("4242", Some("c1"), t0);
        let info = ServerInfo {
            hostname: "nid0".into(),
            version: "v2024.04.19".into(),
            server_port: Some(5555),
            number_of_locales: 2,
            locales: Vec::new(),
        };
        s.failed();
        s.observe(
            &[
                rec("create", Category::NumRequests, Scope::Global, 4.0),
                rec("total", Category::NumRequests, Scope::Global, 4.0),
                rec(
                    "IllegalArgumentError",
                    Category::NumErrors,
                    Scope::Global,
                    1.0,
                ),
                rec("total", Category::NumErrors, Scope::Global, 1.0),
                mem("0", 3e8),
                mem("1", 5e8),
            ],
            Some(&info),
        );
        // The server restarted: counters from zero again, memory lower.
        s.observe(
            &[
                rec("create", Category::NumRequests, Scope::Global, 1.0),
                rec("sum", Category::NumRequests, Scope::Global, 2.0),
                mem("0", 4e8),
                mem("1", 1e8),
            ],
            None,
        );
        let v: serde_json::Value =
            serde_json::from_str(&s.to_json(t0 + Duration::from_millis(90_500))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "job_id": "4242",
                "cluster": "c1",
                "started": "2026-01-01T00:00:00Z",
                "ended": "2026-01-01T00:01:30Z",
                "duration_seconds": 90.5,
                "polls": 3,
                "failed_polls": 1,
                "server": {"version": "v2024.04.19", "locales": 2},
                "requests": {"create": 5, "sum": 2},
                "errors": {"IllegalArgumentError": 1},
                "peak_memory_bytes": {"0": 400000000u64, "1": 500000000u64},
            })
        );
    }

    #[test]
    fn a_server_without_error_classes_and_no_cluster() {
        let t0 = SystemTime::UNIX_EPOCH;
        let mut s = Summary::new("7", None, t0);
        s.observe(
            &[rec("total", Category::NumErrors, Scope::Global, 0.0)],
            None,
        );
        let v: serde_json::Value = serde_json::from_str(&s.to_json(t0)).unwrap();
        assert_eq!(v["cluster"], serde_json::Value::Null);
        assert_eq!(v["errors"], serde_json::json!({"all": 0}));
        assert_eq!(
            v["server"],
            serde_json::json!({"version": "", "locales": 0})
        );
    }

    #[test]
    fn written_atomically_and_path_template() {
        let dir = std::env::temp_dir().join(format!("apa-summary-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = path_for(&dir.join("job-%j.json"), "99");
        assert_eq!(path, dir.join("job-99.json"));
        let s = Summary::new("99", None, SystemTime::now());
        s.write(&path, SystemTime::now()).unwrap();
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(v["job_id"], "99");
        // Nothing but the summary is left in the directory.
        let names: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("job-99.json")]);
        // A directory that does not exist: an error, and nothing written.
        assert!(s
            .write(&dir.join("missing/x.json"), SystemTime::now())
            .is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
