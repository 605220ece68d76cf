//! Builds the sinks that the settings configure, for `run`, `once` and `check`: the one
//! place that knows every sink, so that the lifecycle knows none.

use std::sync::Arc;

use crate::config::Settings;
use crate::groups;
use crate::sinks::listen::ListenSink;
use crate::sinks::pushgateway::sink::PushgatewaySink;
use crate::sinks::remote_write::RemoteWriteSink;
use crate::sinks::{Counters, Sink};

/// What the sinks are built for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// A cycle every interval; `listen` served.
    Run,
    /// One cycle, flushed; nothing served.
    Once,
    /// Each destination tried once: every listed Pushgateway, not only the job's shard.
    Check,
}

/// The configured sinks, in a fixed order: Pushgateway (unless `no_push`), remote write,
/// listen. Empty when nothing is configured (the configuration refuses that for `run`).
pub fn sinks(
    settings: &Settings,
    job_id: &str,
    counters: &Arc<Counters>,
    purpose: Purpose,
) -> anyhow::Result<Vec<Box<dyn Sink>>> {
    let key = groups::grouping_key(&settings.job, job_id);
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    let pgw = &settings.pushgateway;
    if pgw.pushes() {
        let targets = match purpose {
            Purpose::Check => pgw.every()?,
            Purpose::Run | Purpose::Once => pgw.of_job(job_id)?,
        };
        out.push(Box::new(PushgatewaySink::new(
            pgw,
            targets,
            key.clone(),
            counters.clone(),
        )));
    }
    if !settings.remote_write.urls.is_empty() {
        out.push(Box::new(RemoteWriteSink::new(
            &settings.remote_write,
            key.pairs(),
            counters.clone(),
        )?));
    }
    if let (Some(addr), Purpose::Run | Purpose::Check) = (&settings.listen, purpose) {
        out.push(Box::new(ListenSink::new(
            addr.clone(),
            settings.lifecycle.interval,
            key.pairs().to_vec(),
            counters.clone(),
        )));
    }
    Ok(out)
}
