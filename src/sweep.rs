//! `arkouda-push-agent sweep`: reconcile the Pushgateway with Slurm, the time-to-live the
//! Pushgateway never had.
//!
//! The Pushgateway keeps a pushed group forever. A group whose agent and Epilog both failed
//! (the Pushgateway was down when the job ended, a node crashed, the controller restarted,
//! groups from before the hooks were installed) would be served as current for good. The
//! sweep lists the groups this agent made (its `job` label and a `slurm_job_id`; with
//! `cluster` set, that cluster's only), asks Slurm once which jobs it still has (`squeue
//! --all`) and what it may see (`scontrol show config`), and deletes the groups of jobs it
//! no longer has. A listed job's group is kept whatever its lease (the lease alert tells
//! the admin its agent died). An unlisted job's group goes at once only when Slurm's view
//! is complete for it: the sweep sees every job (no `PrivateData=jobs`, or it runs as root
//! or SlurmUser) and the group is of this cluster (`cluster`, else Slurm's ClusterName).
//! Otherwise, and when Slurm cannot be asked or with `no_scheduler`, the leases decide
//! (`arkouda_agent_lease_expiry_timestamp_seconds` + `grace` < now). Groups of another
//! cluster are never judged by this cluster's jobs: they are left alone.
//!
//! The decisions ([`lease_state`], [`decide`], [`ours`], [`view`], [`standing`]) are pure
//! functions, tested by table. This module must never touch a group that another exporter
//! pushed (another `job` label, or no `slurm_job_id`), and asks Slurm once per sweep (one
//! `squeue`, one `scontrol`, side by side, each bounded): sites complain about exporters
//! that flood slurmctld.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use crate::config::{JobSettings, PushgatewaySettings, SweepSettings};
use crate::sinks::pushgateway::GroupingKey;
use crate::translate::{AGENT_END, AGENT_LEASE};

/// What Slurm said, or why it was not asked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scheduler {
    /// The ids of the jobs Slurm lists (pending, running, completing…): array tasks by their
    /// own job id (`%A`) and by `ARRAYID_TASK` (`%i`). `partial`: why the list may lack
    /// running jobs (see [`view`]); None when it has every job of the cluster.
    Jobs {
        ids: HashSet<String>,
        partial: Option<String>,
    },
    /// Slurm could not be asked; the reason.
    Unavailable(String),
    /// `no_scheduler`.
    Skipped,
}

/// A group's lease at the time of the sweep.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lease {
    /// No lease series (an agent older than leases, or another program's push).
    Missing,
    /// Expires in this many seconds.
    Live(f64),
    /// Expired this many seconds ago, within the grace.
    InGrace(f64),
    /// Expired this many seconds ago, beyond the grace.
    Expired(f64),
}

/// The lease of a group whose lease series says `expiry` (Unix seconds), at `now`.
pub fn lease_state(expiry: Option<f64>, now: f64, grace: Duration) -> Lease {
    match expiry {
        None => Lease::Missing,
        Some(e) if !e.is_finite() => Lease::Missing,
        Some(e) if e >= now => Lease::Live(e - now),
        Some(e) if now - e <= grace.as_secs_f64() => Lease::InGrace(now - e),
        Some(e) => Lease::Expired(now - e),
    }
}

fn ago(secs: f64) -> String {
    humantime::format_duration(Duration::from_secs(secs.max(0.0).round() as u64)).to_string()
}

impl fmt::Display for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Lease::Missing => f.write_str("no lease"),
            Lease::Live(left) => write!(f, "lease valid for {}", ago(*left)),
            Lease::InGrace(s) => write!(f, "lease expired {} ago, within the grace", ago(*s)),
            Lease::Expired(s) => write!(f, "lease expired {} ago, beyond the grace", ago(*s)),
        }
    }
}

/// Why a group is deleted or kept.
#[derive(Clone, Debug, PartialEq)]
pub enum Reason {
    /// Slurm no longer has the job.
    JobEnded,
    /// Slurm has the job; its lease for information (an expired one: the agent died).
    JobInSlurm(Lease),
    /// The job id is no Slurm job id (a long-lived server's group): its lease decides.
    NotASlurmJob(Lease),
    /// Slurm was not asked: the lease decides.
    ByLease(Lease),
    /// Slurm does not list the job, but its answer cannot vouch for this group (why): the
    /// lease decides.
    Unconfirmed { why: String, lease: Lease },
}

/// What to do with one group.
#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub delete: bool,
    pub reason: Reason,
}

impl Verdict {
    /// The reason as printed after the group: `job 42 …`.
    pub fn describe(&self, job_id: &str) -> String {
        match &self.reason {
            Reason::JobEnded => format!("Slurm no longer runs job {job_id}"),
            Reason::JobInSlurm(l @ (Lease::InGrace(_) | Lease::Expired(_))) => {
                format!("job {job_id} is still in Slurm ({l}: its agent may have died)")
            }
            Reason::JobInSlurm(l) => format!("job {job_id} is still in Slurm ({l})"),
            Reason::NotASlurmJob(l) => {
                format!("job id `{job_id}` is not a Slurm job id, so its lease decides: {l}")
            }
            Reason::ByLease(l) => format!("job {job_id}: {l}"),
            Reason::Unconfirmed { why, lease } => format!(
                "job {job_id} is not in Slurm's answer, but {why}, so its lease decides: {lease}"
            ),
        }
    }
}

/// Slurm job ids are numbers; array tasks may show as `ARRAY_TASK`, heterogeneous job
/// components as `JOB+OFFSET`. Any other id (a long-lived server's `job_id`) is not
/// Slurm's to judge.
pub fn is_slurm_job_id(id: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    match id.split_once(['_', '+']) {
        Some((a, b)) => digits(a) && digits(b),
        None => digits(id),
    }
}

/// The decision for a group of job `job_id`, whose lease is `lease`. `doubt`: why Slurm's
/// answer cannot vouch for this group in particular ([`standing`]), besides a partial view.
pub fn decide(job_id: &str, lease: Lease, scheduler: &Scheduler, doubt: Option<&str>) -> Verdict {
    let by_lease = |reason: Reason| Verdict {
        delete: matches!(lease, Lease::Expired(_)),
        reason,
    };
    match scheduler {
        Scheduler::Jobs { .. } if !is_slurm_job_id(job_id) => by_lease(Reason::NotASlurmJob(lease)),
        Scheduler::Jobs { ids, .. } if ids.contains(job_id) => Verdict {
            delete: false,
            reason: Reason::JobInSlurm(lease),
        },
        Scheduler::Jobs { partial, .. } => match doubt.or(partial.as_deref()) {
            Some(why) => by_lease(Reason::Unconfirmed {
                why: why.to_string(),
                lease,
            }),
            None => Verdict {
                delete: true,
                reason: Reason::JobEnded,
            },
        },
        Scheduler::Unavailable(_) | Scheduler::Skipped => by_lease(Reason::ByLease(lease)),
    }
}

/// Where a group stands with respect to this sweep's cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// This cluster's group (or any group, while leases decide without a known cluster).
    Judge,
    /// Judged, but Slurm's job list cannot vouch for it (why): its lease decides.
    Doubt(String),
    /// Another cluster's group: left alone.
    OtherCluster(String),
}

/// A group whose `cluster` label is `group`, in a sweep of cluster `this` (configured, or
/// Slurm's ClusterName; None: unknown).
pub fn standing(group: Option<&str>, this: Option<&str>) -> Standing {
    match (group, this) {
        (Some(g), Some(t)) if g == t => Standing::Judge,
        (Some(g), Some(_)) => Standing::OtherCluster(g.to_string()),
        (None, Some(t)) => Standing::Doubt(format!(
            "the group has no cluster label (cluster `{t}`'s job list cannot vouch for it)"
        )),
        (_, None) => Standing::Doubt(
            "this cluster's name is unknown (no `cluster` set, and Slurm's ClusterName could not be read) and a shared Pushgateway may hold other clusters' jobs".to_string(),
        ),
    }
}

/// What the sweep needs of `scontrol show config`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SlurmConfig {
    pub cluster: Option<String>,
    /// `PrivateData`, lower-cased words (`jobs`, `usage`…); empty for `none`.
    pub private_data: Vec<String>,
    /// `SlurmUser`, e.g. `slurm(64030)`: the name and the uid.
    pub slurm_user: Option<(String, Option<u32>)>,
    /// `MCSPlugin` other than `mcs/none` whose `MCSParameters` carry `privatedata`.
    pub mcs_private: bool,
}

/// Parses `scontrol show config` (`Key = value` lines).
pub fn parse_scontrol_config(out: &str) -> SlurmConfig {
    let mut c = SlurmConfig::default();
    let mut mcs_plugin = String::new();
    let mut mcs_params = String::new();
    let unset = |v: &str| v.is_empty() || v == "(null)" || v.eq_ignore_ascii_case("none");
    for line in out.lines() {
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "ClusterName" if !unset(value) => c.cluster = Some(value.to_string()),
            "PrivateData" if !unset(value) => {
                c.private_data = value
                    .split(',')
                    .map(|w| w.trim().to_ascii_lowercase())
                    .filter(|w| !w.is_empty())
                    .collect();
            }
            "SlurmUser" if !unset(value) => {
                let (name, uid) = match value.split_once('(') {
                    Some((n, rest)) => (n, rest.trim_end_matches(')').trim().parse().ok()),
                    None => (value, None),
                };
                c.slurm_user = Some((name.trim().to_string(), uid));
            }
            "MCSPlugin" => mcs_plugin = value.to_string(),
            "MCSParameters" => mcs_params = value.to_ascii_lowercase(),
            _ => {}
        }
    }
    c.mcs_private = !unset(&mcs_plugin)
        && mcs_plugin != "mcs/none"
        && mcs_params
            .split([',', ':'])
            .any(|w| w.trim() == "privatedata");
    c
}

/// Why `squeue` run by `euid` may not list every job of the cluster (None: it lists them
/// all), from Slurm's configuration, or from why that could not be read. Hidden partitions
/// and partitions of other groups (AllowGroups) are listed with `--all`; `PrivateData=jobs`
/// (and MCS with `privatedata`) hides other users' jobs from all but root, SlurmUser and
/// Slurm operators (whom the sweep cannot tell: they count as partial).
pub fn view(config: Result<&SlurmConfig, &str>, euid: u32) -> Option<String> {
    let c = match config {
        Ok(c) => c,
        Err(e) => {
            return Some(format!(
                "Slurm's configuration could not be read ({e}), so whether squeue lists every job is unknown"
            ))
        }
    };
    let slurm_uid = c.slurm_user.as_ref().and_then(|(_, uid)| *uid);
    if euid == 0 || Some(euid) == slurm_uid {
        return None;
    }
    let who = match &c.slurm_user {
        Some((name, _)) => format!("uid {euid}, neither root nor SlurmUser {name}"),
        None => format!("uid {euid}, not root"),
    };
    if c.private_data.iter().any(|w| w == "jobs") {
        return Some(format!(
            "PrivateData=jobs hides other users' jobs from this sweep ({who})"
        ));
    }
    if c.mcs_private {
        return Some(format!(
            "MCS privatedata hides jobs of other MCS labels from this sweep ({who})"
        ));
    }
    None
}

/// The job id of a group this agent made: its `job` label is `job`, it has a
/// `slurm_job_id`, and, when `cluster` is set, its `cluster` label is that cluster.
pub fn ours<'a>(
    labels: &'a [(String, String)],
    job: &str,
    cluster: Option<&str>,
) -> Option<&'a str> {
    let label = |name: &str| {
        labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if label("job") != Some(job) {
        return None;
    }
    if cluster.is_some_and(|c| label("cluster") != Some(c)) {
        return None;
    }
    label("slurm_job_id")
}

/// The labels in the agent's order (`slurm_job_id`, `cluster`, `slurm_restart_count`, then
/// the rest by name), so
/// that a printed group path reads as the agent's own; the Pushgateway lists them sorted.
pub fn agent_order(mut labels: Vec<(String, String)>) -> Vec<(String, String)> {
    let rank = |k: &str| match k {
        "slurm_job_id" => 0,
        "cluster" => 1,
        crate::groups::RESTART_LABEL => 2,
        _ => 3,
    };
    labels.sort_by(|a, b| (rank(&a.0), &a.0).cmp(&(rank(&b.0), &b.0)));
    labels
}

/// Job ids from squeue's `--format=%A %i` output, one job per line.
pub fn parse_squeue(out: &str) -> HashSet<String> {
    out.split_whitespace().map(str::to_string).collect()
}

/// One group of this agent found on a Pushgateway.
#[derive(Clone, Debug)]
pub struct Found {
    pub pushgateway: usize,
    pub labels: Vec<(String, String)>,
    pub job_id: String,
    pub lease_expiry: Option<f64>,
    /// Its agent made its final push with `linger` (the group carries the end time): it
    /// is kept until its lease (end + linger) has expired, whatever Slurm says.
    pub lingering: bool,
}

impl Found {
    /// Its `cluster` label.
    pub fn cluster(&self) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == "cluster")
            .map(|(_, v)| v.as_str())
    }
}

/// Fills in a missing lease from another group of the same job on the same Pushgateway
/// (with `layout = "locale"` only the job's main group carries the agent's series).
pub fn share_leases(found: &mut [Found]) {
    let mut best: BTreeMap<(usize, String, Option<String>), f64> = BTreeMap::new();
    let cluster = |f: &Found| {
        f.labels
            .iter()
            .find(|(k, _)| k == "cluster")
            .map(|(_, v)| v.clone())
    };
    for f in found.iter() {
        if let Some(e) = f.lease_expiry.filter(|e| e.is_finite()) {
            let slot = best
                .entry((f.pushgateway, f.job_id.clone(), cluster(f)))
                .or_insert(e);
            *slot = slot.max(e);
        }
    }
    for f in found.iter_mut() {
        if f.lease_expiry.is_none() {
            f.lease_expiry = best
                .get(&(f.pushgateway, f.job_id.clone(), cluster(f)))
                .copied();
        }
    }
}

/// Why squeue or scontrol gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum SqueueError {
    #[error("cannot run {path}: {reason}")]
    Spawn { path: PathBuf, reason: String },
    #[error("{path} did not answer within {timeout}")]
    Timeout { path: PathBuf, timeout: String },
    #[error("{path} failed ({status}): {stderr}")]
    Failed {
        path: PathBuf,
        status: String,
        stderr: String,
    },
}

/// Runs squeue once for every job, in every partition (`--all`: Hidden ones and those
/// of other groups too), killed after `timeout` (with slurmctld down it would take ~9 s to
/// fail, with a wrong SLURM_CONF a minute). SLURM_CONF passes through from the
/// environment. Blocking: call it off the async runtime.
pub fn ask_squeue(path: &Path, timeout: Duration) -> Result<HashSet<String>, SqueueError> {
    let out = run_slurm(
        path,
        &["--all", "--noheader", "--array", "--format=%A %i"],
        timeout,
    )?;
    Ok(parse_squeue(&out))
}

/// `scontrol show config`, bounded as [`ask_squeue`].
pub fn ask_scontrol(path: &Path, timeout: Duration) -> Result<SlurmConfig, SqueueError> {
    let out = run_slurm(path, &["show", "config"], timeout)?;
    Ok(parse_scontrol_config(&out))
}

/// scontrol beside the configured squeue (a site with Slurm under /opt has both there).
pub fn scontrol_path(squeue: &Path) -> PathBuf {
    squeue.with_file_name("scontrol")
}

/// Runs a Slurm command, killed after `timeout`; its standard output.
fn run_slurm(path: &Path, args: &[&str], timeout: Duration) -> Result<String, SqueueError> {
    let mut child = Command::new(path)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| SqueueError::Spawn {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
    // Read both pipes while waiting: a large queue would fill a pipe and stall squeue.
    let reader = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = reader(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let err = reader(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(SqueueError::Timeout {
                    path: path.to_path_buf(),
                    timeout: humantime::format_duration(timeout).to_string(),
                });
            }
        }
    };
    let stdout = out.join().unwrap_or_default();
    let stderr = err.join().unwrap_or_default();
    if !status.success() {
        let mut stderr = stderr.trim().replace('\n', "; ");
        crate::text::truncate_chars(&mut stderr, 300);
        return Err(SqueueError::Failed {
            path: path.to_path_buf(),
            status: status.to_string(),
            stderr,
        });
    }
    Ok(stdout)
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `sweep`: prints one line per group of this agent (deleted or kept, with the reason)
/// and a summary. Ok(false) when a Pushgateway could not be listed or a delete failed.
/// The groups are those of `job`'s name and cluster on every Pushgateway of `pushgateway`,
/// each listed within `list_timeout` (`shutdown_timeout`).
pub async fn sweep(
    settings: &SweepSettings,
    pushgateway: &PushgatewaySettings,
    job: &JobSettings,
    list_timeout: Duration,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let pgws = pushgateway.every()?;
    // Under systemd the report below and the log share the journal: log only what the
    // report does not already say there.
    let log_too = !crate::console::stdout_is_journal();
    let mut ok = true;
    let mut found = Vec::new();
    let mut others = 0usize;
    // The groups first, Slurm second: a job that starts in between is in Slurm's answer
    // (pending jobs are listed), so its new group is never taken for an ended job's.
    for (i, pgw) in pgws.iter().enumerate() {
        let deadline = Instant::now() + list_timeout;
        match pgw
            .groups_with_values(&[AGENT_LEASE.name, AGENT_END.name], deadline)
            .await
        {
            Ok(groups) => {
                for (g, values) in groups {
                    let lease = values.first().copied().flatten();
                    let ended = values.get(1).copied().flatten();
                    match ours(&g.labels, &job.name, job.cluster.as_deref()) {
                        Some(id) => found.push(Found {
                            pushgateway: i,
                            job_id: id.to_string(),
                            labels: g.labels.clone(),
                            lease_expiry: lease,
                            lingering: ended.is_some(),
                        }),
                        None => others += 1,
                    }
                }
            }
            Err(e) => {
                crate::outln!("cannot list the groups of {}: {e}", pgw.url());
                if log_too {
                    tracing::error!(error = %e, "cannot list the Pushgateway's groups");
                }
                ok = false;
            }
        }
    }
    share_leases(&mut found);
    let grace = humantime::format_duration(settings.grace);

    // This sweep's cluster: the configured one, else Slurm's ClusterName (learned below).
    let mut cluster = job.cluster.clone();
    let scheduler = if settings.no_scheduler {
        crate::outln!("scheduler check skipped (no_scheduler): leases decide, grace {grace}");
        Scheduler::Skipped
    } else if found.is_empty() {
        // Nothing to judge: spare slurmctld the query.
        Scheduler::Skipped
    } else {
        let (squeue, timeout) = (settings.squeue.clone(), settings.squeue_timeout);
        let scontrol = scontrol_path(&squeue);
        // Side by side: the sweep waits one timeout at most.
        let (jobs, config) = tokio::join!(
            tokio::task::spawn_blocking(move || ask_squeue(&squeue, timeout)),
            tokio::task::spawn_blocking(move || ask_scontrol(&scontrol, timeout)),
        );
        let config = match config {
            Ok(Ok(c)) => Ok(c),
            Ok(Err(e)) => Err(e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let (None, Ok(c)) = (&cluster, &config) {
            if let Some(name) = &c.cluster {
                crate::outln!("cluster `{name}` (Slurm's ClusterName): groups of other clusters are left alone");
                cluster = Some(name.clone());
            }
        }
        let jobs = match jobs {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        match jobs {
            Ok(ids) => {
                let euid = nix::unistd::geteuid().as_raw();
                let partial = view(config.as_ref().map_err(String::as_str), euid);
                match &partial {
                    None => crate::outln!("scheduler check: squeue lists {} jobs", ids.len()),
                    Some(why) => {
                        crate::outln!("scheduler check: squeue lists {} jobs, a partial view: {why}; the groups of jobs it does not list are judged by their leases, grace {grace}", ids.len());
                        if log_too {
                            tracing::info!(reason = %why, "Slurm's view is partial; leases decide for the jobs squeue does not list");
                        }
                    }
                }
                Scheduler::Jobs { ids, partial }
            }
            Err(e) => {
                crate::outln!("scheduler check skipped: {e}; leases decide, grace {grace}");
                if log_too {
                    tracing::warn!(error = %e, "cannot ask Slurm; the groups' leases decide");
                }
                Scheduler::Unavailable(e)
            }
        }
    };

    let now = unix_now();
    let (mut deleted, mut kept) = (0usize, 0usize);
    for f in &found {
        let Some(pgw) = pgws.get(f.pushgateway) else {
            continue;
        };
        // With Slurm's answer, or a known cluster, a group stands by its cluster label;
        // leases alone without a known cluster judge every group, as they always did.
        let doubt = match (&scheduler, &cluster) {
            (Scheduler::Jobs { .. }, _) | (_, Some(_)) => {
                match standing(f.cluster(), cluster.as_deref()) {
                    Standing::Judge => None,
                    Standing::Doubt(_) if !matches!(scheduler, Scheduler::Jobs { .. }) => None,
                    Standing::Doubt(why) => Some(why),
                    Standing::OtherCluster(_) => {
                        others += 1;
                        continue;
                    }
                }
            }
            _ => None,
        };
        let lease = lease_state(f.lease_expiry, now, settings.grace);
        let doubt = match (f.lingering, doubt) {
            (true, _) => Some("its agent ended the job with a linger".to_string()),
            (false, d) => d,
        };
        let verdict = decide(&f.job_id, lease, &scheduler, doubt.as_deref());
        let key = GroupingKey::new(&job.name, agent_order(f.labels.clone()));
        let place = format!("{}{}", pgw.url(), key.path());
        let why = verdict.describe(&f.job_id);
        if !verdict.delete {
            crate::outln!("kept {place}: {why}");
            kept += 1;
        } else if dry_run {
            crate::outln!("would delete {place}: {why}");
            deleted += 1;
        } else {
            match pgw
                .delete(&key, Instant::now() + pushgateway.client.timeout)
                .await
            {
                Ok(()) => {
                    crate::outln!("deleted {place}: {why}");
                    if log_too {
                        tracing::info!(group = %place, reason = %why, "deleted a group");
                    }
                    deleted += 1;
                }
                Err(e) => {
                    crate::outln!("FAILED to delete {place} ({why}): {e}");
                    ok = false;
                }
            }
        }
    }
    crate::outln!(
        "sweep: {deleted} {}, {kept} kept, {others} groups of other exporters untouched",
        if dry_run { "to delete" } else { "deleted" }
    );
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACE: Duration = Duration::from_secs(600);
    const NOW: f64 = 1_700_000_000.0;

    #[test]
    fn lease_states() {
        let cases: &[(Option<f64>, Lease)] = &[
            (None, Lease::Missing),
            (Some(f64::NAN), Lease::Missing),
            (Some(NOW + 20.0), Lease::Live(20.0)),
            (Some(NOW), Lease::Live(0.0)),
            (Some(NOW - 1.0), Lease::InGrace(1.0)),
            (Some(NOW - 600.0), Lease::InGrace(600.0)),
            (Some(NOW - 601.0), Lease::Expired(601.0)),
            (Some(0.0), Lease::Expired(NOW)),
        ];
        for (expiry, want) in cases {
            assert_eq!(lease_state(*expiry, NOW, GRACE), *want, "{expiry:?}");
        }
        assert_eq!(
            lease_state(Some(NOW - 0.5), NOW, Duration::ZERO),
            Lease::Expired(0.5)
        );
    }

    /// The decision table: with a full view Slurm's answer wins for Slurm job ids; the
    /// lease decides when Slurm was not asked, for ids that are not Slurm's, and for jobs
    /// a partial view (or a doubtful group) does not list. A listed job is always kept.
    #[test]
    fn decision_table() {
        let ids: HashSet<String> = ["42", "43", "100_3", "7"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let jobs = Scheduler::Jobs {
            ids: ids.clone(),
            partial: None,
        };
        let part = Scheduler::Jobs {
            ids,
            partial: Some("PrivateData=jobs hides other users' jobs".into()),
        };
        let down = Scheduler::Unavailable("squeue timed out".into());
        let skip = Scheduler::Skipped;
        let live = Lease::Live(30.0);
        let grace = Lease::InGrace(30.0);
        let old = Lease::Expired(7200.0);
        let none = Lease::Missing;
        #[rustfmt::skip]
        let table: &[(&str, Lease, &Scheduler, bool, &str)] = &[
            // Slurm asked: the job's presence decides, whatever the lease.
            ("42", live, &jobs, false, "job 42 is still in Slurm (lease valid for 30s)"),
            ("42", old, &jobs, false, "job 42 is still in Slurm (lease expired 2h ago, beyond the grace: its agent may have died)"),
            ("42", none, &jobs, false, "job 42 is still in Slurm (no lease)"),
            ("44", live, &jobs, true, "Slurm no longer runs job 44"),
            ("44", none, &jobs, true, "Slurm no longer runs job 44"),
            // An array task by its own job id (%A) or as ARRAY_TASK (%i).
            ("7", old, &jobs, false, "job 7 is still in Slurm (lease expired 2h ago, beyond the grace: its agent may have died)"),
            ("100_3", live, &jobs, false, "job 100_3 is still in Slurm (lease valid for 30s)"),
            ("100_4", live, &jobs, true, "Slurm no longer runs job 100_4"),
            // Not a Slurm job id: the lease decides even with Slurm's answer.
            ("shared-server", live, &jobs, false, "job id `shared-server` is not a Slurm job id, so its lease decides: lease valid for 30s"),
            ("shared-server", old, &jobs, true, "job id `shared-server` is not a Slurm job id, so its lease decides: lease expired 2h ago, beyond the grace"),
            // Slurm not asked: leases decide; no lease means keep.
            ("42", live, &down, false, "job 42: lease valid for 30s"),
            ("42", grace, &down, false, "job 42: lease expired 30s ago, within the grace"),
            ("42", old, &down, true, "job 42: lease expired 2h ago, beyond the grace"),
            ("42", none, &down, false, "job 42: no lease"),
            ("44", old, &skip, true, "job 44: lease expired 2h ago, beyond the grace"),
            ("44", live, &skip, false, "job 44: lease valid for 30s"),
            // A partial view: a listed job is kept, an unlisted one goes by its lease.
            ("42", old, &part, false, "job 42 is still in Slurm (lease expired 2h ago, beyond the grace: its agent may have died)"),
            ("44", live, &part, false, "job 44 is not in Slurm's answer, but PrivateData=jobs hides other users' jobs, so its lease decides: lease valid for 30s"),
            ("44", grace, &part, false, "job 44 is not in Slurm's answer, but PrivateData=jobs hides other users' jobs, so its lease decides: lease expired 30s ago, within the grace"),
            ("44", none, &part, false, "job 44 is not in Slurm's answer, but PrivateData=jobs hides other users' jobs, so its lease decides: no lease"),
            ("44", old, &part, true, "job 44 is not in Slurm's answer, but PrivateData=jobs hides other users' jobs, so its lease decides: lease expired 2h ago, beyond the grace"),
        ];
        for (id, lease, sched, delete, why) in table {
            let v = decide(id, *lease, sched, None);
            assert_eq!(
                (v.delete, v.describe(id).as_str()),
                (*delete, *why),
                "{id} {lease:?} {sched:?}"
            );
        }
        // A doubtful group (no cluster label, say) with a full view: its lease decides
        // unless Slurm lists the job.
        let doubt = Some("the group has no cluster label");
        let v = decide("44", live, &jobs, doubt);
        assert!(!v.delete);
        assert_eq!(v.describe("44"), "job 44 is not in Slurm's answer, but the group has no cluster label, so its lease decides: lease valid for 30s");
        assert!(decide("44", old, &jobs, doubt).delete);
        assert!(!decide("42", old, &jobs, doubt).delete);
        // Doubt changes nothing when Slurm was not asked.
        assert_eq!(
            decide("44", old, &down, doubt),
            decide("44", old, &down, None)
        );
    }

    /// A group's standing by its cluster label and this sweep's cluster.
    #[test]
    fn standing_by_cluster() {
        assert_eq!(standing(Some("a"), Some("a")), Standing::Judge);
        assert_eq!(
            standing(Some("b"), Some("a")),
            Standing::OtherCluster("b".into())
        );
        let Standing::Doubt(why) = standing(None, Some("a")) else {
            panic!()
        };
        assert!(why.contains("no cluster label"), "{why}");
        for group in [Some("a"), None] {
            let Standing::Doubt(why) = standing(group, None) else {
                panic!()
            };
            assert!(why.contains("this cluster's name is unknown"), "{why}");
        }
    }

    const SCONTROL: &str = "Configuration data as of 2026-01-01T00:00:00\n\
        AccountingStorageBackupHost = (null)\n\
        ClusterName             = alpha\n\
        MCSPlugin               = mcs/none\n\
        MCSParameters           = (null)\n\
        PrivateData             = jobs,usage\n\
        SlurmUser               = slurm(64030)\n\
        SLURM_CONF              = /etc/slurm/slurm.conf\n";

    #[test]
    fn scontrol_config_is_read() {
        let c = parse_scontrol_config(SCONTROL);
        assert_eq!(c.cluster.as_deref(), Some("alpha"));
        assert_eq!(c.private_data, vec!["jobs", "usage"]);
        assert_eq!(c.slurm_user, Some(("slurm".into(), Some(64030))));
        assert!(!c.mcs_private);
        let c = parse_scontrol_config(
            "PrivateData = none\nClusterName = (null)\nMCSPlugin = mcs/user\nMCSParameters = ondemand,select,privatedata\nSlurmUser = root(0)\n",
        );
        assert_eq!(c.cluster, None);
        assert!(c.private_data.is_empty());
        assert!(c.mcs_private);
        assert_eq!(c.slurm_user, Some(("root".into(), Some(0))));
        assert_eq!(parse_scontrol_config(""), SlurmConfig::default());
    }

    /// Whether squeue run by a user lists every job, by Slurm's policies.
    #[test]
    fn view_table() {
        let cfg = |text: &str| parse_scontrol_config(text);
        let private = cfg("PrivateData = jobs\nSlurmUser = slurm(64030)\n");
        let open = cfg("PrivateData = usage,users\nSlurmUser = slurm(64030)\n");
        let mcs = cfg("MCSPlugin = mcs/group\nMCSParameters = enforced:privatedata\nSlurmUser = slurm(64030)\n");
        // (config, euid, partial: Some(start of the reason))
        #[rustfmt::skip]
        let table: &[(Result<&SlurmConfig, &str>, u32, Option<&str>)] = &[
            (Ok(&open), 998, None),
            (Ok(&private), 0, None),
            (Ok(&private), 64030, None),
            (Ok(&private), 998, Some("PrivateData=jobs hides other users' jobs from this sweep (uid 998, neither root nor SlurmUser slurm)")),
            (Ok(&mcs), 998, Some("MCS privatedata hides jobs of other MCS labels")),
            (Ok(&mcs), 0, None),
            (Err("scontrol did not answer within 10s"), 0, Some("Slurm's configuration could not be read (scontrol did not answer within 10s)")),
        ];
        for (config, euid, want) in table {
            let got = view(*config, *euid);
            match (want, &got) {
                (None, None) => {}
                (Some(w), Some(g)) if g.starts_with(w) => {}
                _ => panic!("{config:?} uid {euid}: {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn slurm_job_ids() {
        for (id, want) in [
            ("42", true),
            ("4242_7", true),
            ("4242+1", true),
            ("", false),
            ("_7", false),
            ("42_", false),
            ("demo", false),
            ("42a", false),
            ("4_2_3", false),
        ] {
            assert_eq!(is_slurm_job_id(id), want, "{id:?}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Only this agent's groups: its `job` label and a `slurm_job_id`, and the configured
    /// cluster's when one is set.
    #[test]
    fn which_groups_are_ours() {
        // (grouping labels, configured cluster, the job id when the group is ours)
        type Case<'a> = (&'a [(&'a str, &'a str)], Option<&'a str>, Option<&'a str>);
        let cases: &[Case] = &[
            (
                &[("job", "arkouda"), ("slurm_job_id", "42")],
                None,
                Some("42"),
            ),
            (
                &[
                    ("cluster", "c1"),
                    ("job", "arkouda"),
                    ("slurm_job_id", "42"),
                ],
                None,
                Some("42"),
            ),
            (
                &[
                    ("cluster", "c1"),
                    ("job", "arkouda"),
                    ("slurm_job_id", "42"),
                ],
                Some("c1"),
                Some("42"),
            ),
            (
                &[
                    ("cluster", "c2"),
                    ("job", "arkouda"),
                    ("slurm_job_id", "42"),
                ],
                Some("c1"),
                None,
            ),
            (
                &[("job", "arkouda"), ("slurm_job_id", "42")],
                Some("c1"),
                None,
            ),
            (&[("job", "arkouda")], None, None),
            (&[("job", "node"), ("slurm_job_id", "42")], None, None),
            (&[("instance", "db1"), ("job", "backup")], None, None),
        ];
        for (l, cluster, want) in cases {
            let l = labels(l);
            assert_eq!(ours(&l, "arkouda", *cluster), *want, "{l:?} {cluster:?}");
        }
    }

    #[test]
    fn printed_paths_follow_the_agents_label_order() {
        let sorted = labels(&[
            ("cluster", "c"),
            ("job", "arkouda"),
            ("site", "x"),
            ("slurm_job_id", "4"),
            ("a", "1"),
        ]);
        let key = GroupingKey::new("arkouda", agent_order(sorted));
        assert_eq!(
            key.path(),
            "/metrics/job/arkouda/slurm_job_id/4/cluster/c/a/1/site/x"
        );
    }

    #[test]
    fn squeue_output() {
        let out = "101 101\n200 199_1\n201 199_2\n  \n";
        let ids = parse_squeue(out);
        for id in ["101", "200", "199_1", "201", "199_2"] {
            assert!(ids.contains(id), "{id}");
        }
        assert_eq!(ids.len(), 5);
        assert!(parse_squeue("").is_empty());
    }

    /// A locale group without the agent's series takes its job's lease.
    #[test]
    fn leases_are_shared_within_a_job() {
        let f = |pg: usize, id: &str, extra: &[(&str, &str)], lease: Option<f64>| Found {
            pushgateway: pg,
            job_id: id.to_string(),
            labels: labels(&[&[("job", "arkouda"), ("slurm_job_id", id)][..], extra].concat()),
            lease_expiry: lease,
            lingering: false,
        };
        let mut found = vec![
            f(0, "1", &[], Some(100.0)),
            f(0, "1", &[("locale", "3")], None),
            f(1, "1", &[("locale", "3")], None),
            f(0, "2", &[("locale", "0")], None),
        ];
        share_leases(&mut found);
        let leases: Vec<Option<f64>> = found.iter().map(|f| f.lease_expiry).collect();
        assert_eq!(leases, vec![Some(100.0), Some(100.0), None, None]);
    }

    #[test]
    fn squeue_is_bounded_and_its_failures_are_reported() {
        let dir = std::env::temp_dir().join(format!("apa-sweep-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let script = |name: &str, body: &str| {
            use std::os::unix::fs::PermissionsExt;
            let p = dir.join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        // squeue must be asked with --all (Hidden partitions, those of other groups).
        let ok = script(
            "ok",
            "case \" $* \" in *' --all '*) ;; *) echo \"no --all: $*\" >&2; exit 1;; esac; printf '5 5\\n6 4_1\\n'",
        );
        assert_eq!(
            ask_squeue(&ok, Duration::from_secs(5)).unwrap(),
            parse_squeue("5 5 6 4_1")
        );
        let hang = script("hang", "exec sleep 30");
        let t = std::time::Instant::now();
        let e = ask_squeue(&hang, Duration::from_millis(300)).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        assert!(
            e.to_string().ends_with("did not answer within 300ms"),
            "{e}"
        );
        let fail = script(
            "fail",
            "echo 'slurm_load_jobs error: Unable to contact slurm controller' >&2; exit 1",
        );
        let e = ask_squeue(&fail, Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unable to contact slurm controller"), "{e}");
        let e = ask_squeue(&dir.join("missing"), Duration::from_secs(5))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("cannot run "), "{e}");

        // scontrol, found beside squeue, bounded the same way.
        let squeue = dir.join("squeue");
        let scontrol = scontrol_path(&squeue);
        assert_eq!(scontrol, dir.join("scontrol"));
        std::fs::write(
            &scontrol,
            format!(
                "#!/bin/sh\n[ \"$*\" = 'show config' ] || exit 1\ncat <<'EOF'\n{SCONTROL}EOF\n"
            ),
        )
        .unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&scontrol, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let c = ask_scontrol(&scontrol, Duration::from_secs(5)).unwrap();
        assert_eq!(c, parse_scontrol_config(SCONTROL));
        let t = std::time::Instant::now();
        assert!(ask_scontrol(&hang, Duration::from_millis(300)).is_err());
        assert!(t.elapsed() < Duration::from_secs(5));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
