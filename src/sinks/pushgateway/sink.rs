//! The Pushgateway as a [`Sink`]: everything of the job's groups on the Pushgateways it
//! pushes to: the grouping key, the group layout (one group per job, or one per locale
//! beside the server-wide one), gzip, the Pushgateways of the job (its shard, or all),
//! the groups that vanished, and the final delete.
//!
//! Ordering at the end: a cycle in flight at the stop gets a grace to be answered before
//! the final DELETE goes out, and the Pushgateway answers a PUT only once the group is
//! written (it checks the push against its other groups first), so an answered PUT cannot
//! land after the DELETE. A PUT whose answer never came (cut at the stop, or timed out:
//! the Pushgateway may still hold it) leaves the sink "unsettled": the final delete is
//! then sent a second time a moment later, so that such a PUT cannot leave the group
//! behind.
//!
//! It never sees Arkouda data: only metric families, encoded here.

use std::sync::Arc;
use std::time::Duration;

use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt as _;
use tokio::time::Instant;

use std::path::PathBuf;

use super::{keys_file, GroupingKey, Payload, PushError, Pushgateway, PushgatewaySettings};
use crate::model::{self, Family};
use crate::sinks::{BoxFuture, CheckLine, Counters, Cycle, Sink};

/// Requests one Pushgateway gets at once from this job (per-locale groups are many).
const CONCURRENCY: usize = 8;

/// How long after the final delete a second one follows when a PUT's answer never came.
const SECOND_DELETE_AFTER: Duration = Duration::from_millis(500);

/// How the job's series are grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One group per job (the default).
    Job,
    /// Server-wide series in the job's group, each locale's series in a group of its own.
    Locale,
}

/// The state of one Pushgateway, for logging only its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Unknown,
    Up,
    Down(String),
}

struct Target {
    pgw: Pushgateway,
    state: State,
}

pub struct PushgatewaySink {
    targets: Vec<Target>,
    key: GroupingKey,
    layout: Layout,
    gzip_threshold: u64,
    /// Every group that may exist: those of the latest cycle, and those of an earlier one
    /// whose delete has not succeeded everywhere yet.
    groups: Vec<GroupingKey>,
    /// A PUT or DELETE was sent and its answer never came.
    unsettled: bool,
    /// Where `groups` is recorded for the Slurm Epilog (`keys_file`).
    keys_file: Option<PathBuf>,
    counters: Arc<Counters>,
    text: String,
}

impl PushgatewaySink {
    /// `targets`: the Pushgateways of `settings` it pushes to (the job's shard, or every
    /// one); `key`: the job's group.
    pub fn new(
        settings: &PushgatewaySettings,
        targets: Vec<Pushgateway>,
        key: GroupingKey,
        counters: Arc<Counters>,
    ) -> PushgatewaySink {
        PushgatewaySink {
            targets: targets
                .into_iter()
                .map(|pgw| Target {
                    pgw,
                    state: State::Unknown,
                })
                .collect(),
            groups: vec![key.clone()],
            key,
            layout: settings.layout,
            gzip_threshold: settings.gzip_threshold,
            unsettled: false,
            keys_file: settings.keys_file.clone(),
            counters,
            text: String::new(),
        }
    }

    /// This cycle's request bodies, one per group: the whole text in the job's group, or
    /// with [`Layout::Locale`] the server-wide series there and each locale's in its own.
    fn payloads(&mut self, families: &[Family]) -> Vec<(GroupingKey, Payload)> {
        let threshold = self.gzip_threshold;
        let encode = |families: &[Family], text: &mut String| {
            model::encode_text(families, &[], text)
                .ok()
                .map(|()| Payload::from_text(text.as_bytes(), threshold))
        };
        match self.layout {
            Layout::Job => encode(families, &mut self.text)
                .map(|p| vec![(self.key.clone(), p)])
                .unwrap_or_default(),
            Layout::Locale => {
                let (server, locales) = model::split_by_locale(families);
                let mut out = Vec::with_capacity(locales.len() + 1);
                if let Some(p) = encode(&server, &mut self.text) {
                    out.push((self.key.clone(), p));
                }
                for (locale, families) in locales {
                    if let Some(p) = encode(&families, &mut self.text) {
                        let mut labels = self.key.pairs()[1..].to_vec();
                        labels.push(("locale".to_string(), locale));
                        let job = self.key.get("job").unwrap_or_default().to_string();
                        out.push((GroupingKey::new(&job, labels), p));
                    }
                }
                out
            }
        }
    }

    /// Records the groups that may exist in the keys file, if any (best effort: the Epilog
    /// also computes the job's own key).
    fn record(&self) {
        if let Some(path) = &self.keys_file {
            if let Err(e) = keys_file::record_keys(path, &self.groups) {
                tracing::debug!(path = %path.display(), error = %e, "cannot record the group keys");
            }
        }
    }

    fn note(&mut self, results: &[Result<(), PushError>]) {
        for (t, r) in self.targets.iter_mut().zip(results) {
            match r {
                Ok(()) => {
                    if t.state != State::Up {
                        tracing::info!(pushgateway = %t.pgw.url(), group = %self.key.path(), "pushing to the Pushgateway");
                        t.state = State::Up;
                    }
                }
                Err(e) => {
                    Counters::add(&self.counters.push_errors, 1);
                    let state = State::Down(e.kind());
                    if t.state != state {
                        tracing::warn!(error = %e, "cannot push to the Pushgateway; trying again every cycle");
                        t.state = state;
                    }
                }
            }
        }
    }

    /// Deletes every group that may exist, on every Pushgateway of the job, all at once
    /// (bounded); one that fails holds up neither the others nor the other groups.
    async fn delete_all(&self, deadline: Instant) -> Result<(), PushError> {
        let mut each = Vec::with_capacity(self.targets.len());
        for t in &self.targets {
            each.push(replace_groups(&t.pgw, &[], &self.groups, deadline));
        }
        futures_util::future::join_all(each)
            .await
            .into_iter()
            .collect()
    }
}

/// On one Pushgateway: PUTs `payloads` and DELETEs `gone`, at most [`CONCURRENCY`]
/// requests at a time, every one of them whatever the others' outcome; the first error.
async fn replace_groups(
    pgw: &Pushgateway,
    payloads: &[(GroupingKey, Payload)],
    gone: &[GroupingKey],
    deadline: Instant,
) -> Result<(), PushError> {
    let mut requests: Vec<BoxFuture<'_, Result<(), PushError>>> =
        Vec::with_capacity(payloads.len() + gone.len());
    for (key, body) in payloads {
        requests.push(Box::pin(pgw.push(key, body.clone(), deadline)));
    }
    for key in gone {
        requests.push(Box::pin(pgw.delete(key, deadline)));
    }
    let mut waiting = requests.into_iter();
    let mut running = FuturesUnordered::new();
    running.extend(waiting.by_ref().take(CONCURRENCY));
    let mut result = Ok(());
    while let Some(r) = running.next().await {
        if let (Err(e), Ok(())) = (r, &result) {
            result = Err(e);
        }
        if let Some(next) = waiting.next() {
            running.push(next);
        }
    }
    result
}

impl Sink for PushgatewaySink {
    fn name(&self) -> &'static str {
        "pushgateway"
    }

    fn ship(&mut self, cycle: Arc<Cycle>, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            let shipping = Instant::now();
            let payloads = self.payloads(&cycle.families);
            let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
            // Groups of an earlier cycle that are gone (a locale that vanished) are deleted.
            let gone: Vec<GroupingKey> = self
                .groups
                .iter()
                .filter(|k| !payloads.iter().any(|(p, _)| p == *k))
                .cloned()
                .collect();
            // Remembered before they are pushed: the final delete must find each group
            // that may exist, whatever happens to this cycle.
            let mut new = false;
            for (k, _) in &payloads {
                if !self.groups.contains(k) {
                    self.groups.push(k.clone());
                    new = true;
                }
            }
            if new {
                self.record();
            }
            self.unsettled = true;
            let mut each = Vec::with_capacity(self.targets.len());
            for t in &self.targets {
                each.push(replace_groups(&t.pgw, &payloads, &gone, deadline));
            }
            let results = futures_util::future::join_all(each).await;
            self.unsettled = false;
            // One line per cycle, at debug level only: what benches/compare.sh reads.
            tracing::debug!(
                poll_ms = cycle.poll_ms,
                render_ms = cycle.render_ms,
                push_ms = shipping.elapsed().as_secs_f64() * 1e3,
                cycle_ms = cycle.started.elapsed().as_secs_f64() * 1e3,
                bytes,
                "cycle done"
            );
            self.note(&results);
            let pushed = results.iter().all(Result::is_ok);
            if pushed && !gone.is_empty() {
                // The vanished groups were deleted everywhere: forget them.
                self.groups = payloads.into_iter().map(|(k, _)| k).collect();
                self.record();
            }
            pushed
        })
    }

    fn end(&mut self, deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(async move {
            tracing::info!(group = %self.key.path(), "stopping: deleting the job's group");
            let mut result = self.delete_all(deadline).await;
            if self.unsettled && result.is_ok() {
                // A PUT of the cycle cut short by the stop may still be applied after the
                // delete: delete once more when it has had time to land.
                let again = (Instant::now() + SECOND_DELETE_AFTER).min(deadline);
                tokio::time::sleep_until(again).await;
                result = self.delete_all(deadline).await;
            }
            match result {
                Ok(()) => {
                    tracing::info!("group deleted");
                    true
                }
                Err(e) => {
                    let job_id = self.key.get("slurm_job_id").unwrap_or("<job id>");
                    tracing::error!(error = %e, "could not delete group {} before the shutdown deadline; `arkouda-push-agent delete --job-id {job_id}` removes it", self.key.path());
                    false
                }
            }
        })
    }

    fn lingers(&self) -> bool {
        true
    }

    fn check(&self, deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>> {
        Box::pin(async move {
            let mut lines = Vec::with_capacity(self.targets.len());
            for t in &self.targets {
                lines.push(match t.pgw.ready(deadline).await {
                    Ok(()) => Ok(format!("OK {}", t.pgw.url())),
                    Err(e) => Err(e.to_string()),
                });
            }
            lines
        })
    }
}
