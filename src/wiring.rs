//! Builds the sinks that the settings configure, for `run`, `once` and `check`: the one
//! place that knows every sink, so that the lifecycle knows none.

use std::sync::Arc;

use crate::config::Settings;
use crate::groups;
use crate::sinks::http::ClientOptions;
use crate::sinks::listen::ListenSink;
use crate::sinks::pushgateway::sink::PushgatewaySink;
use crate::sinks::remote_write::{self, RemoteWriteSink};
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
    let key = groups::grouping_key(settings, job_id);
    let mut out: Vec<Box<dyn Sink>> = Vec::new();
    if pushes_to_pushgateway(settings) {
        let targets = match purpose {
            Purpose::Check => groups::pushgateways(settings)?,
            Purpose::Run | Purpose::Once => groups::job_pushgateways(settings, job_id)?,
        };
        out.push(Box::new(PushgatewaySink::new(
            targets,
            key.clone(),
            settings.layout,
            settings.gzip_threshold,
            settings.keys_file.clone(),
            counters.clone(),
        )));
    }
    if !settings.remote_write.urls.is_empty() {
        out.push(Box::new(RemoteWriteSink::new(
            remote_write_options(settings),
            key.pairs(),
            counters.clone(),
        )?));
    }
    if let (Some(addr), Purpose::Run | Purpose::Check) = (&settings.listen, purpose) {
        out.push(Box::new(ListenSink::new(
            addr.clone(),
            settings.interval,
            key.pairs().to_vec(),
            counters.clone(),
        )));
    }
    Ok(out)
}

/// Whether the agent pushes to a Pushgateway at all (and so takes the group's lock).
pub fn pushes_to_pushgateway(settings: &Settings) -> bool {
    !settings.no_push && !settings.pushgateway.is_empty()
}

/// One set of options per `remote_write` URL.
fn remote_write_options(settings: &Settings) -> Vec<remote_write::Options> {
    let rw = &settings.remote_write;
    rw.urls
        .iter()
        .map(|url| remote_write::Options {
            url: url.clone(),
            client: ClientOptions {
                timeout: settings.push_timeout,
                user_agent: crate::sinks::http::user_agent(),
                username: rw.username.clone(),
                password: rw.password.clone(),
                bearer_token: rw.bearer_token.clone(),
                ca_file: rw.ca_file.clone(),
                insecure_skip_verify: rw.insecure_skip_verify,
            },
            queue_size: rw.queue_size,
        })
        .collect()
}
