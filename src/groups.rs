//! A job's groups on the Pushgateways: the grouping key and deleting every group of a job
//! (which Pushgateways a job uses, shard or all, is [`PushgatewaySettings::of_job`]).
//! Shared by the agent's lifecycle, the Slurm backstops and `sweep`, so they can never
//! disagree on what "the job's groups" are.
//!
//! It knows the job's and the Pushgateways' settings and the Pushgateway sink; it never
//! polls Arkouda.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{JobSettings, PushgatewaySettings};
use crate::sinks::pushgateway::{GroupingKey, PushError, Pushgateway};

/// The grouping label that tells the runs of a requeued job apart (Slurm's restart count;
/// absent on a job's first run).
pub const RESTART_LABEL: &str = "slurm_restart_count";

/// The grouping key of a job: `job`, `slurm_job_id`, `cluster` when known,
/// `slurm_restart_count` from the job's second run on, then the configured static labels
/// (sorted).
///
/// A requeued job keeps its id, and newer Slurm restarts it at once, possibly before the
/// first run's Epilog has run: the restart count makes each run's group its own, so that
/// one run's cleanup (its agent, Epilog, EpilogSlurmctld) never deletes the next run's.
pub fn grouping_key(job: &JobSettings, job_id: &str) -> GroupingKey {
    let mut labels = vec![("slurm_job_id".to_string(), job_id.to_string())];
    if let Some(c) = &job.cluster {
        labels.push(("cluster".to_string(), c.clone()));
    }
    if job.restart_count > 0 {
        labels.push((RESTART_LABEL.to_string(), job.restart_count.to_string()));
    }
    labels.extend(job.labels.iter().cloned());
    GroupingKey::new(&job.name, labels)
}

pub use crate::sinks::pushgateway::keys_file::{read_keys, record_keys, KEYS_FILE_LIMIT};

/// Whether `recorded` (read from a keys file, which the agent's unprivileged user can
/// write) is a group of the run whose own key is `own`: every label of `own` with the same
/// value (job, job id, cluster, static labels), the same run (`slurm_restart_count`
/// present exactly when `own` has it), plus at most a `locale`. Anything else is refused,
/// so a tampered file cannot make root delete another job's groups.
pub fn is_run_group(own: &GroupingKey, recorded: &GroupingKey) -> bool {
    let same = own.pairs().iter().all(|(k, v)| recorded.get(k) == Some(v));
    let extra_ok = recorded
        .pairs()
        .iter()
        .all(|(k, _)| own.get(k).is_some() || k == "locale");
    same && extra_ok
}

/// Deletes each of `keys` on every listed Pushgateway (a few requests at a time) by
/// grouping key, never listing, until `deadline`. Returns how many deletes were sent
/// and the failures.
pub async fn delete_keys(
    pushgateway: &PushgatewaySettings,
    keys: &[GroupingKey],
    deadline: Instant,
) -> Result<usize, Vec<String>> {
    use futures_util::StreamExt;
    let pgws = pushgateway.every().map_err(|e| vec![e.to_string()])?;
    let jobs: Vec<(&Pushgateway, &GroupingKey)> = pgws
        .iter()
        .flat_map(|p| keys.iter().map(move |k| (p, k)))
        .collect();
    let results: Vec<Result<(), String>> = futures_util::stream::iter(jobs)
        .map(|(p, k)| async move {
            p.delete(k, deadline)
                .await
                .map_err(|e| format!("{}{}: {e}", p.url(), k.path()))
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let n = results.len();
    let failed: Vec<String> = results.into_iter().filter_map(Result::err).collect();
    if failed.is_empty() {
        Ok(n)
    } else {
        Err(failed)
    }
}

/// `delete --job-id`: deletes every group of this job (any other grouping labels) that the
/// Pushgateways hold, within `timeout` (`shutdown_timeout`). Returns how many it deleted.
pub async fn delete_job(
    pushgateway: &PushgatewaySettings,
    job: &JobSettings,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let job_id = job.require_id()?;
    let deadline = Instant::now() + timeout;
    let mut deleted = 0;
    let mut failed: Vec<String> = Vec::new();
    // Every listed Pushgateway, whatever the mode (the job's shard may have moved with a
    // changed list); one that is down does not stop the others.
    for pgw in pushgateway.every()? {
        match delete_job_on(job, job_id, &pgw, deadline).await {
            Ok(0) => crate::outln!("no group of job {job_id} in {}", pgw.url()),
            Ok(n) => deleted += n,
            Err(e) => {
                crate::errln!("arkouda-push-agent: {e}");
                failed.push(pgw.url().to_string());
            }
        }
    }
    if !failed.is_empty() {
        anyhow::bail!("could not clean job {job_id} on {}", failed.join(", "));
    }
    Ok(deleted)
}

async fn delete_job_on(
    job: &JobSettings,
    job_id: &str,
    pgw: &Pushgateway,
    deadline: Instant,
) -> Result<usize, PushError> {
    let groups = pgw.groups(deadline).await?;
    let mut deleted = 0;
    for g in groups {
        let label = |name: &str| {
            g.labels
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        // Another cluster's job of the same id on a shared Pushgateway is not ours.
        let other_cluster = job
            .cluster
            .as_deref()
            .is_some_and(|c| label("cluster") != Some(c));
        if label("job") != Some(job.name.as_str())
            || label("slurm_job_id") != Some(job_id)
            || other_cluster
        {
            continue;
        }
        let key = GroupingKey::new(&job.name, g.labels.clone());
        pgw.delete(&key, deadline).await?;
        crate::outln!("deleted {}{}", pgw.url(), key.path());
        deleted += 1;
    }
    Ok(deleted)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pairs: &[(&str, &str)]) -> GroupingKey {
        GroupingKey::new(
            "arkouda",
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn keys_file_round_trip_and_filter() {
        let dir = std::env::temp_dir().join(format!("apa-keys-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("42.keys");
        let own = key(&[("slurm_job_id", "42"), ("cluster", "c/1")]);
        let locale = key(&[("slurm_job_id", "42"), ("cluster", "c/1"), ("locale", "3")]);
        record_keys(&path, &[own.clone(), locale.clone()]).unwrap();
        // A last line cut short is skipped.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("[[\"job\",\"ark");
        std::fs::write(&path, text).unwrap();
        assert_eq!(read_keys(&path).unwrap(), vec![own.clone(), locale.clone()]);
        // Replaced, not appended.
        record_keys(&path, std::slice::from_ref(&own)).unwrap();
        assert_eq!(read_keys(&path).unwrap(), vec![own.clone()]);
        assert!(is_run_group(&own, &own));
        assert!(is_run_group(&own, &locale));
        for other in [
            key(&[("slurm_job_id", "43"), ("cluster", "c/1")]),
            key(&[("slurm_job_id", "42"), ("cluster", "c2")]),
            key(&[("slurm_job_id", "42")]),
            key(&[
                ("slurm_job_id", "42"),
                ("cluster", "c/1"),
                (RESTART_LABEL, "1"),
            ]),
            key(&[
                ("slurm_job_id", "42"),
                ("cluster", "c/1"),
                ("instance", "x"),
            ]),
            GroupingKey::new("other", own.pairs()[1..].to_vec()),
        ] {
            assert!(!is_run_group(&own, &other), "{other:?}");
        }
        // A symlink is not followed.
        let link = dir.join("43.keys");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(read_keys(&link).is_err());
        assert!(record_keys(&link, &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
