//! `slurm.admin_comment`: the controller's epilog stores the job summary (`summary_file`)
//! in the job's AdminComment in Slurm's accounting, as Princeton's jobstats does, so that
//! `sacct -j ID -o AdminComment` still tells what the job did long after its series are
//! gone.
//!
//! How, and why so (read in Slurm 22.05's source, what runs here, and checked on it):
//!
//! - Not `scontrol update JobId=ID AdminComment=…`: slurmctld refuses any update of a job
//!   that has finished (`_update_job` in src/slurmctld/job_mgr.c answers
//!   ESLURM_JOB_FINISHED, "Job has already finished"), and EpilogSlurmctld only runs once
//!   it has (`_job_complete` sets the end state, then `deallocate_nodes` starts the hook).
//!   Newer releases keep that check.
//! - `sacctmgr -i modify job where jobid=ID cluster=C set AdminComment=…` changes the job's
//!   record in slurmdbd (what jobstats runs): it needs accounting through slurmdbd, and
//!   root or SlurmUser (an admin there), which this hook is.
//! - sacctmgr turns every `"` and `'` of the value into a backquote (`strip_quotes` in
//!   src/sacctmgr/common.c), and 22.05 lowercases it too (fixed in 23.02); slurmdbd then
//!   puts the value between single quotes in its SQL unescaped (`as_mysql_modify_job`).
//!   JSON cannot pass as it is. So the value is `apa1:` and the gzipped compact JSON in
//!   lowercase base32 with padding (RFC 4648): letters, digits 2–7 and `=`, which every
//!   one of those steps leaves alone (jobstats stores base64 for the same reason).
//!   [`decode`] reads it back, as does `tr a-z A-Z | base32 -d | gunzip` after the prefix.
//! - Length: neither slurmctld nor sacctmgr bounds it; slurmdbd's job table holds it in a
//!   MySQL `text` column (65,535 bytes), so a longer value is not sent ([`MAX_LEN`]).
//!
//! Which summary is this run's. The agent writes it when the node's Epilog stops it, at
//! about the time slurmctld runs this hook, so the hook waits for it (bounded). A file at
//! that path may also be an older one: the previous run of a requeued job (same id, same
//! path), or another cluster's job of the same id in a shared directory. What
//! EpilogSlurmctld is given to tell them apart (`job_common_env_vars` in job_mgr.c):
//! `SLURM_JOB_ID`, `SLURM_CLUSTER_NAME`, `SLURM_JOB_RESTART_COUNT`, and from Slurm 23.02
//! on `SLURM_JOB_START_TIME`; 22.05 gives no start or end time. So a summary is taken
//! when ([`accept`]) its `job_id` is the job's, its `cluster` (when both are known) the
//! cluster's, it `ended` at most [`FRESHNESS`] before this hook started, and, where Slurm
//! gives the run's start, its agent `started` no earlier than that start (less
//! [`CLOCK_SLACK`] for the node's clock). What this relies on under 22.05: a requeued job
//! is held for `cred_expire` + 1 s (121 s by default, `batch_requeue_fini`) before its next
//! run, so the previous run's summary ended longer than [`FRESHNESS`] before this run's end
//! unless a site sets `AuthInfo=cred_expire` below it and the next run is shorter.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use super::actions::run_bounded;

/// What the stored AdminComment starts with: the format and its version.
pub const PREFIX: &str = "apa1:";
/// The longest value stored: slurmdbd's `admin_comment` is a MySQL `text` column.
pub const MAX_LEN: usize = 65_535;
/// The largest summary file read (a summary of 4096 locales is about 100 kB).
const MAX_FILE: u64 = 4 << 20;
/// A summary that ended longer than this before the hook started is an earlier run's.
pub const FRESHNESS: Duration = Duration::from_secs(30);
/// How much earlier than the run's start (controller's clock) its agent may have started
/// by the node's clock.
pub const CLOCK_SLACK: Duration = Duration::from_secs(10);
/// How often the hook looks for the summary while it waits.
const LOOK_EVERY: Duration = Duration::from_millis(100);

/// What a summary must match to be this run's.
#[derive(Debug, Clone)]
pub struct Expect {
    pub job_id: String,
    /// `SLURM_CLUSTER_NAME`.
    pub cluster: Option<String>,
    /// `SLURM_JOB_START_TIME` (Slurm 23.02 and later).
    pub run_start: Option<SystemTime>,
    /// When this hook started (the controller's clock).
    pub hook_start: SystemTime,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// The summary `text` as compact JSON when it is this run's (see the module's doc), else
/// why not, for the log.
pub fn accept(text: &str, e: &Expect) -> Result<String, String> {
    let v: Value = serde_json::from_str(text)
        .map_err(|err| format!("not a job summary (invalid JSON: {err})"))?;
    let field = |k: &str| v.get(k).and_then(Value::as_str);
    let job_id = field("job_id").ok_or("not a job summary (no `job_id`)")?;
    if job_id != e.job_id {
        return Err(format!(
            "the summary of job {job_id}, not of job {}",
            e.job_id
        ));
    }
    if let (Some(theirs), Some(ours)) = (field("cluster"), e.cluster.as_deref()) {
        if theirs != ours {
            return Err(format!(
                "the summary of cluster {theirs}'s job {job_id}, not of cluster {ours}'s"
            ));
        }
    }
    let time = |k: &str| {
        field(k)
            .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            .ok_or_else(|| format!("not a job summary (no `{k}` time)"))
    };
    let (started, ended) = (time("started")?, time("ended")?);
    if ended + FRESHNESS < e.hook_start {
        return Err(format!(
            "an earlier run's: it ended at {}, more than {}s before this hook started ({})",
            rfc3339(ended),
            FRESHNESS.as_secs(),
            rfc3339(e.hook_start)
        ));
    }
    if let Some(start) = e.run_start {
        if started + CLOCK_SLACK < start {
            return Err(format!(
                "an earlier run's: its agent started at {}, before this run started ({})",
                rfc3339(started),
                rfc3339(start)
            ));
        }
    }
    // Value has no failing Serialize.
    Ok(serde_json::to_string(&v).unwrap_or_default())
}

const BASE32: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// `apa1:` and the gzipped `json` in lowercase base32 with padding.
pub fn encode(json: &str) -> String {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing into a Vec does not fail.
    let _ = gz.write_all(json.as_bytes());
    let bytes = gz.finish().unwrap_or_default();
    let mut out = String::with_capacity(PREFIX.len() + bytes.len().div_ceil(5) * 8);
    out.push_str(PREFIX);
    for chunk in bytes.chunks(5) {
        let mut block = [0u8; 5];
        block[..chunk.len()].copy_from_slice(chunk);
        let bits = block.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        // 5 bytes make 8 symbols; a short last chunk fewer, then `=`.
        let symbols = (chunk.len() * 8).div_ceil(5);
        for i in 0..8 {
            if i < symbols {
                out.push(BASE32[((bits >> (35 - 5 * i)) & 31) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The JSON of a stored AdminComment ([`encode`]'s form, in either case); None when it is
/// not one.
pub fn decode(stored: &str) -> Option<String> {
    let stored = stored.trim();
    let body = stored
        .get(..PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(PREFIX))
        .map(|_| &stored[PREFIX.len()..])?;
    let mut bytes = Vec::with_capacity(body.len() * 5 / 8);
    let (mut acc, mut n) = (0u64, 0u32);
    for c in body.trim_end_matches('=').bytes() {
        let v = BASE32.iter().position(|b| *b == c.to_ascii_lowercase())? as u64;
        acc = (acc << 5) | v;
        n += 5;
        if n >= 8 {
            n -= 8;
            bytes.push((acc >> n) as u8);
        }
    }
    let mut json = String::new();
    flate2::read::GzDecoder::new(&bytes[..])
        .read_to_string(&mut json)
        .ok()?;
    Some(json)
}

/// Reads the summary at `path`: a regular file (a symlink is not followed: this runs as
/// root, the directory is the agent's), at most [`MAX_FILE`] bytes.
fn read_summary(path: &Path) -> std::io::Result<String> {
    crate::text::read_plain_file(path, MAX_FILE)
}

/// One job's AdminComment to store.
#[derive(Debug, Clone)]
pub struct Store {
    /// `summary_file` with the job id.
    pub path: PathBuf,
    pub expect: Expect,
    /// The sacctmgr binary (beside the configured `squeue`).
    pub sacctmgr: PathBuf,
    /// How long to wait for this run's summary, then for sacctmgr.
    pub wait: Duration,
    pub limit: Duration,
}

/// What became of a job's AdminComment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// No summary of this run in time (none written: the agent was killed, the node
    /// crashed; or written later): nothing the hook can mend.
    NoSummary,
    /// Longer than [`MAX_LEN`] once encoded: left in the file.
    TooLarge,
    /// sacctmgr did not store it: accounting to mend (no slurmdbd, no rights, the job not
    /// there).
    Failed,
}

/// Waits (at most `wait`) for this run's summary, then stores it with sacctmgr (bounded by
/// `limit`). Blocking; logs one line on every outcome.
pub fn store(s: &Store) -> Outcome {
    let path = s.path.display();
    let deadline = Instant::now() + s.wait;
    // The summary appears when the node's Epilog stops the agent; until then the file is
    // missing, or an older one is there.
    let json = loop {
        let why = match read_summary(&s.path) {
            Ok(text) => match accept(&text, &s.expect) {
                Ok(json) => break json,
                Err(why) => why,
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => "missing".to_string(),
            Err(e) => format!("unreadable: {e}"),
        };
        if Instant::now() >= deadline {
            tracing::warn!(
                "this run's job summary did not appear at {path} within {:?} (the file: {why}): the AdminComment was not set; the summary, once written, stays in that file",
                s.wait
            );
            return Outcome::NoSummary;
        }
        std::thread::sleep(LOOK_EVERY);
    };
    let value = encode(&json);
    if value.len() > MAX_LEN {
        tracing::warn!(
            bytes = value.len(),
            "the job summary at {path} takes {} bytes in the AdminComment, more than the {MAX_LEN} slurmdbd stores: the AdminComment was not set; the summary stays in that file",
            value.len()
        );
        return Outcome::TooLarge;
    }
    let mut cmd = Command::new(&s.sacctmgr);
    cmd.args(["-i", "modify", "job", "where"])
        .arg(format!("jobid={}", s.expect.job_id));
    if let Some(c) = &s.expect.cluster {
        cmd.arg(format!("cluster={c}"));
    }
    cmd.arg("set").arg(format!("AdminComment={value}"));
    let tool = s.sacctmgr.display();
    match run_bounded(&mut cmd, s.limit) {
        Ok(done) if done.status.success() && !done.output.contains("Nothing modified") => {
            tracing::info!(
                bytes = value.len(),
                "job summary stored in the job's AdminComment (from {path}; read it with `sacct -j {} -X -n -P -o AdminComment`)",
                s.expect.job_id
            );
            Outcome::Stored
        }
        Ok(done) => {
            tracing::warn!(
                "`{tool} modify job` did not set the AdminComment ({}): {}; the summary stays in {path} (accounting through slurmdbd, and the job's record there, are needed)",
                done.status,
                done.output.replace('\n', " | ")
            );
            Outcome::Failed
        }
        Err(e) => {
            tracing::warn!(error = %e, "the AdminComment was not set; the summary stays in {path}");
            Outcome::Failed
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn summary(job_id: &str, cluster: Option<&str>, started: u64, ended: u64) -> String {
        serde_json::json!({
            "job_id": job_id,
            "cluster": cluster,
            "started": rfc3339(at(started)),
            "ended": rfc3339(at(ended)),
            "duration_seconds": (ended - started) as f64,
            "polls": 12,
            "failed_polls": 1,
            "server": {"version": "v2025.07.03", "locales": 4},
            "requests": {"create": 5, "it's \"odd\"": 1},
            "errors": {"all": 0},
            "peak_memory_bytes": {"0": 400000000u64},
        })
        .to_string()
    }

    fn expect(run_start: Option<u64>, hook_start: u64) -> Expect {
        Expect {
            job_id: "4242".into(),
            cluster: Some("alpha".into()),
            run_start: run_start.map(at),
            hook_start: at(hook_start),
        }
    }

    /// This run's summary is taken, whole; another job's, another cluster's, an earlier
    /// run's (by its end, or by its start where Slurm gives the run's start) are not.
    #[test]
    fn only_this_runs_summary_is_accepted() {
        let end = T0 + 600;
        let ok = summary("4242", Some("alpha"), T0 + 5, end);
        let got = accept(&ok, &expect(None, end)).unwrap();
        let v: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(v, serde_json::from_str::<Value>(&ok).unwrap());
        assert!(!got.contains('\n') && !got.contains(": "), "compact: {got}");
        // Written a little after the hook started, or a little before; clocks a bit apart.
        for hook in [end - 3, end, end + 29] {
            assert!(accept(&ok, &expect(Some(T0 + 8), hook)).is_ok(), "{hook}");
        }
        // A summary without a cluster (an agent given none) is taken.
        assert!(accept(&summary("4242", None, T0, end), &expect(None, end)).is_ok());

        let cases: &[(String, Expect, &str)] = &[
            (summary("4243", Some("alpha"), T0, end), expect(None, end), "the summary of job 4243, not of job 4242"),
            (summary("4242", Some("beta"), T0, end), expect(None, end), "the summary of cluster beta's job 4242, not of cluster alpha's"),
            // The previous run of a requeued job: it ended long before this hook.
            (summary("4242", Some("alpha"), T0 - 900, T0 - 300), expect(None, end), "an earlier run's: it ended at 2025-12-31T23:55:00Z, more than 30s before this hook started (2026-01-01T00:10:00Z)"),
            // Slurm 23.02+ gives the run's start: an agent older than it is an earlier run's.
            (summary("4242", Some("alpha"), T0 - 60, end - 20), expect(Some(T0), end), "an earlier run's: its agent started at 2025-12-31T23:59:00Z, before this run started (2026-01-01T00:00:00Z)"),
            ("{\"job_id\": 4242}".into(), expect(None, end), "not a job summary (no `job_id`)"),
            ("{\"job_id\": \"4242\", \"started\": \"yesterday\", \"ended\": \"x\"}".into(), expect(None, end), "not a job summary (no `started` time)"),
            ("not json".into(), expect(None, end), "not a job summary (invalid JSON"),
        ];
        for (text, e, want) in cases {
            let why = accept(text, e).unwrap_err();
            assert!(why.starts_with(want), "{why}\nwanted: {want}");
        }
    }

    /// The stored form passes sacctmgr and slurmdbd unchanged (no quote, backslash or
    /// capital letter) and reads back, in either case, as the JSON.
    #[test]
    fn encoded_for_sacctmgr_and_back() {
        let json = accept(
            &summary("4242", Some("alpha"), T0, T0 + 60),
            &expect(None, T0 + 60),
        )
        .unwrap();
        let stored = encode(&json);
        assert!(stored.starts_with(PREFIX), "{stored}");
        assert!(
            stored[PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b) || b == b'='),
            "{stored}"
        );
        assert_eq!(stored[PREFIX.len()..].len() % 8, 0, "padded: {stored}");
        assert_eq!(decode(&stored).as_deref(), Some(json.as_str()));
        // What 22.05's sacctmgr does to a value (lowercase) and 23.02's (nothing here).
        assert_eq!(
            decode(&stored.to_ascii_uppercase()).as_deref(),
            Some(json.as_str())
        );
        // Every length of the last base32 block.
        for n in 0..12 {
            let s = "x".repeat(n);
            assert_eq!(decode(&encode(&s)).as_deref(), Some(s.as_str()), "{n}");
        }
        for bad in ["", "apa1", "js1:abc", "apa1:!!!!", "apa1:aaaaaaaa"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }

    /// The file is read as a regular file only (no symlink followed as root), and the
    /// wait gives up with its bound when no summary of this run comes.
    #[test]
    fn waits_within_its_bound() {
        let dir = std::env::temp_dir().join(format!("apa-admin-comment-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("elsewhere.json");
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        std::fs::write(
            &target,
            summary("4242", Some("alpha"), now - 7200, now - 3600),
        )
        .unwrap();
        let link = dir.join("4242.json");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert!(read_summary(&link).is_err());
        assert!(read_summary(&target).is_ok());
        std::fs::remove_file(&link).unwrap();
        // An earlier run's summary stays there: the wait ends at its bound, nothing run.
        std::fs::rename(&target, &link).unwrap();
        let s = Store {
            path: link.clone(),
            expect: expect(None, now),
            sacctmgr: PathBuf::from("/nonexistent/sacctmgr"),
            wait: Duration::from_millis(300),
            limit: Duration::from_millis(300),
        };
        let t = Instant::now();
        assert_eq!(store(&s), Outcome::NoSummary);
        assert!(t.elapsed() >= Duration::from_millis(300));
        assert!(t.elapsed() < Duration::from_secs(2));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
