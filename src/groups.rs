//! A job's groups on the Pushgateways: the grouping key, which Pushgateways the job uses
//! (shard or all), and deleting every group of a job. Shared by the agent's lifecycle, the
//! Slurm backstops and `sweep`, so they can never disagree on what "the job's groups" are.
//!
//! It knows the settings and the Pushgateway sink; it never polls Arkouda.

use tokio::time::Instant;

use crate::config::{PushgatewayMode, Settings};
use crate::sinks::pushgateway::{self, GroupingKey, PushError, Pushgateway};
use crate::VERSION;

/// The grouping key of a job: `job`, `slurm_job_id`, `cluster` when known, then the
/// configured static labels (sorted).
pub fn grouping_key(settings: &Settings, job_id: &str) -> GroupingKey {
    let mut labels = vec![("slurm_job_id".to_string(), job_id.to_string())];
    if let Some(c) = &settings.cluster {
        labels.push(("cluster".to_string(), c.clone()));
    }
    labels.extend(settings.labels.iter().cloned());
    GroupingKey::new(&settings.job, labels)
}

/// Every listed Pushgateway (`delete`, `check` and the Slurm backstops act on all).
pub fn pushgateways(settings: &Settings) -> Result<Vec<Pushgateway>, PushError> {
    settings
        .pushgateway
        .iter()
        .map(|url| pushgateway(settings, url))
        .collect()
}

/// The Pushgateways a job pushes to: in shard mode the one its job id hashes to, in `all`
/// mode every one.
pub fn job_pushgateways(settings: &Settings, job_id: &str) -> Result<Vec<Pushgateway>, PushError> {
    let mut all = pushgateways(settings)?;
    if settings.pushgateway_mode == PushgatewayMode::Shard && all.len() > 1 {
        let i = pushgateway::shard(job_id, all.len());
        return Ok(vec![all.swap_remove(i)]);
    }
    Ok(all)
}

pub fn pushgateway(settings: &Settings, url: &str) -> Result<Pushgateway, PushError> {
    Pushgateway::new(pushgateway::Options {
        url: url.to_string(),
        timeout: settings.push_timeout,
        username: settings.pushgateway_username.clone(),
        password: settings.pushgateway_password.clone(),
        bearer_token: settings.pushgateway_bearer_token.clone(),
        ca_file: settings.pushgateway_ca_file.clone(),
        insecure_skip_verify: settings.pushgateway_insecure_skip_verify,
        user_agent: format!("arkouda-push-agent/{VERSION}"),
    })
}

/// `delete --job-id`: deletes every group of this job (any other grouping labels) that the
/// Pushgateway holds. Returns how many it deleted.
pub async fn delete_job(settings: &Settings) -> anyhow::Result<usize> {
    let job_id = settings.require_job_id()?;
    let deadline = Instant::now() + settings.shutdown_timeout;
    let mut deleted = 0;
    let mut failed: Vec<String> = Vec::new();
    // Every listed Pushgateway, whatever the mode (the job's shard may have moved with a
    // changed list); one that is down does not stop the others.
    for pgw in pushgateways(settings)? {
        match delete_job_on(settings, job_id, &pgw, deadline).await {
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
    settings: &Settings,
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
        let other_cluster = settings
            .cluster
            .as_deref()
            .is_some_and(|c| label("cluster") != Some(c));
        if label("job") != Some(settings.job.as_str())
            || label("slurm_job_id") != Some(job_id)
            || other_cluster
        {
            continue;
        }
        let key = GroupingKey::new(&settings.job, g.labels.clone());
        pgw.delete(&key, deadline).await?;
        crate::outln!("deleted {}{}", pgw.url(), key.path());
        deleted += 1;
    }
    Ok(deleted)
}
