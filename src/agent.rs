//! The lifecycle: poll → translate → push every interval, delete the group at the end.
//!
//! Cycles never overlap and do not drift (a fixed-rate ticker that skips missed ticks).
//! The blocking ZeroMQ poll runs off the async runtime, so a signal is handled at once even
//! while a poll or push is stuck. Logs are one line per state change (server lost, server
//! back, pushes failing, pushes working again), never one per failed cycle.
//!
//! This module wires the others together; it holds no protocol, naming or HTTP detail.

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::arkouda::{ClientOptions, Location, Poll, PollError, Release, Session};
use crate::config::{Layout, Resolved, ServerLocation, Settings};
use crate::sinks::listen::Listen;
use crate::sinks::pushgateway::{GroupingKey, Payload, PushError, Pushgateway};
use crate::sinks::remote_write::{self, RemoteWrite, RemoteWriteError};
use crate::translate::{self, AgentStats};

pub use crate::groups::{delete_job, grouping_key, job_pushgateways, pushgateways};
pub use crate::VERSION;

fn session(settings: &Settings) -> Session {
    let location = match &settings.server {
        ServerLocation::Endpoint(e) => Location::Endpoint(e.clone()),
        ServerLocation::ConnectionInfo {
            path,
            port,
            fallback_host,
        } => Location::ConnectionInfo {
            path: path.clone(),
            port: *port,
            fallback_host: fallback_host.clone(),
        },
    };
    let opts = ClientOptions {
        timeout: settings.arkouda_timeout,
        user: settings.arkouda_user.clone(),
        token: settings.arkouda_token.clone(),
        max_reply_bytes: settings.max_reply_bytes,
    };
    let release = settings.arkouda_release.as_deref().and_then(Release::parse);
    Session::new(location, opts, release)
}

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One set of remote-write options per `remote_write` URL, carrying `key`'s labels.
pub fn remote_write_options(settings: &Settings, key: &GroupingKey) -> Vec<remote_write::Options> {
    let rw = &settings.remote_write;
    rw.urls
        .iter()
        .map(|url| remote_write::Options {
            url: url.clone(),
            client: crate::sinks::http::ClientOptions {
                timeout: settings.push_timeout,
                user_agent: format!("arkouda-push-agent/{VERSION}"),
                username: rw.username.clone(),
                password: rw.password.clone(),
                bearer_token: rw.bearer_token.clone(),
                ca_file: rw.ca_file.clone(),
                insecure_skip_verify: rw.insecure_skip_verify,
            },
            queue_size: rw.queue_size,
            grouping: key.pairs().to_vec(),
        })
        .collect()
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The state of one end, for logging only its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum EndState {
    Unknown,
    Up,
    Down(String),
}

/// What one cycle achieved.
pub struct Outcome {
    pub polled: bool,
    pub pushed: bool,
}

/// A Pushgateway this job pushes to, with its state for logging.
struct Target {
    pgw: Pushgateway,
    state: EndState,
}

pub struct Agent {
    settings: Settings,
    key: GroupingKey,
    targets: Vec<Target>,
    /// The groups pushed by the latest cycle (more than one with `layout = "locale"`), so
    /// that a group whose locale vanished is deleted, and all are deleted at the end.
    groups: Vec<GroupingKey>,
    /// This cycle's families, kept from translation to push.
    families: Vec<prometheus::proto::MetricFamily>,
    admitted: translate::Admitted,
    ctx: translate::Context,
    stats: AgentStats,
    /// Taken while a poll runs on the blocking pool; rebuilt if that task is lost.
    session: Option<Session>,
    body: String,
    /// Scrape mode: where the latest cycle is served, and its context (with the grouping
    /// labels as constant labels).
    listen: Option<(Listen, translate::Context)>,
    /// The `listen` address while it is not bound yet (taken by another job, say): tried
    /// again at every cycle; its state is logged only when it changes.
    listen_pending: Option<String>,
    listen_state: EndState,
    scrape_body: String,
    server: EndState,
    reported_unknown: HashSet<String>,
    /// Remote-write receivers (`remote_write`), each with its own queue and sender task.
    remote_write: Vec<RemoteWrite>,
}

impl Agent {
    pub fn new(settings: Settings, job_id: &str) -> Result<Agent, PushError> {
        let targets = job_pushgateways(&settings, job_id)?
            .into_iter()
            .map(|pgw| Target {
                pgw,
                state: EndState::Unknown,
            })
            .collect();
        let key = grouping_key(&settings, job_id);
        Ok(Agent {
            groups: vec![key.clone()],
            key,
            targets,
            families: Vec::new(),
            admitted: translate::Admitted::default(),
            ctx: translate::Context {
                server_name: settings.server_name.clone(),
                job_user: settings.job_user.clone(),
                partition: settings.partition.clone(),
                legacy_names: settings.legacy_names,
                const_labels: Vec::new(),
            },
            stats: AgentStats {
                version: VERSION.to_string(),
                ..AgentStats::default()
            },
            session: Some(session(&settings)),
            settings,
            body: String::new(),
            listen: None,
            listen_pending: None,
            listen_state: EndState::Unknown,
            scrape_body: String::new(),
            server: EndState::Unknown,
            reported_unknown: HashSet::new(),
            remote_write: Vec::new(),
        })
    }

    /// Starts a sender for every `remote_write` URL (on the current runtime). Every
    /// cycle is then also written to each, with this job's grouping labels.
    pub fn start_remote_write(&mut self) -> Result<(), RemoteWriteError> {
        for opts in remote_write_options(&self.settings, &self.key) {
            let rw = RemoteWrite::new(opts)?;
            tracing::info!(receiver = %rw.url(), "also writing every cycle by Prometheus remote write");
            self.remote_write.push(rw);
        }
        Ok(())
    }

    /// Queues the staleness markers that end every series written to each receiver
    /// (stamped now, after the last sample), and returns a future that waits for them,
    /// and for what is queued before them, until `timeout` has passed. It borrows nothing,
    /// so it runs alongside the Pushgateway delete.
    pub fn end_remote_write(
        &mut self,
        timeout: Duration,
    ) -> impl std::future::Future<Output = bool> {
        let deadline = Instant::now() + timeout;
        let now_ms = unix_ms();
        let drains: Vec<(String, remote_write::Drain)> = self
            .remote_write
            .iter_mut()
            .map(|rw| (rw.url().to_string(), rw.end(now_ms)))
            .collect();
        async move {
            let mut all = true;
            for (url, drain) in drains {
                match drain.finish(deadline).await {
                    Ok(()) => {
                        tracing::info!(receiver = %url, series = drain.markers(), "remote-written series ended (staleness markers sent)")
                    }
                    Err(e) => {
                        all = false;
                        tracing::warn!(error = %e, "could not end the remote-written series; receivers drop them from queries within five minutes by themselves");
                    }
                }
            }
            all
        }
    }

    pub fn key(&self) -> &GroupingKey {
        &self.key
    }

    /// Serves every cycle at `listen` from now on.
    pub fn serve(&mut self, listen: Listen) {
        let mut ctx = self.ctx.clone();
        ctx.const_labels = self.key.pairs().to_vec();
        self.listen = Some((listen, ctx));
    }

    /// Serves every cycle at `addr` (scrape mode). A bind that fails (the port is taken,
    /// e.g. by another job's agent on the node) is not fatal: it is logged, counted in
    /// `arkouda_agent_listen_errors_total`, and tried again at the start of every cycle
    /// while pushing goes on.
    pub fn listen_at(&mut self, addr: String) {
        self.stats.listen_errors_total = Some(0);
        self.listen_pending = Some(addr);
    }

    /// Tries to bind the pending `listen` address; logs only changes of state.
    async fn try_listen(&mut self) {
        let Some(addr) = self.listen_pending.clone() else {
            return;
        };
        match Listen::start(&addr, self.settings.interval).await {
            Ok(listen) => {
                let again = if self.listen_state == EndState::Unknown {
                    ""
                } else {
                    " (the address is free again)"
                };
                tracing::info!(address = %listen.local_addr(), "serving GET /metrics and GET /healthz{again}");
                self.listen_pending = None;
                self.listen_state = EndState::Up;
                self.serve(listen);
            }
            Err(e) => {
                *self.stats.listen_errors_total.get_or_insert(0) += 1;
                let state = EndState::Down(e.to_string());
                if self.listen_state != state {
                    tracing::warn!(error = %e, "cannot serve GET /metrics; pushing goes on, and the address is tried again every cycle (counted in arkouda_agent_listen_errors_total)");
                    self.listen_state = state;
                }
            }
        }
    }

    async fn poll(&mut self) -> Result<Poll, PollError> {
        let mut session = self
            .session
            .take()
            .unwrap_or_else(|| session(&self.settings));
        let joined = tokio::task::spawn_blocking(move || {
            let r = session.poll();
            (session, r)
        })
        .await;
        match joined {
            Ok((session, result)) => {
                self.session = Some(session);
                result
            }
            // The poll task panicked or was cancelled: start over with a fresh session.
            Err(e) => Err(PollError::NoConnectionInfo {
                path: Default::default(),
                reason: format!("internal error in the poll task: {e}"),
            }),
        }
    }

    fn note_poll(&mut self, result: &Result<Poll, PollError>) {
        match result {
            Ok(p) => {
                self.stats.last_success_timestamp_seconds = unix_now();
                self.stats.skipped_records_total += p.records.skipped;
                self.stats.unknown_fields_total += p.records.unknown_fields;
                for what in &p.records.unknown_names {
                    if self.reported_unknown.insert(what.clone()) {
                        tracing::warn!(what = %what, "skipping what this agent does not know in the metrics reply (counted in arkouda_agent_skipped_records_total or arkouda_agent_unknown_fields_total)");
                    }
                }
                if self.server != EndState::Up {
                    let endpoint = self
                        .session
                        .as_ref()
                        .map(|s| s.endpoint().to_string())
                        .unwrap_or_default();
                    tracing::info!(
                        endpoint = %endpoint,
                        release = %p.release.map(|r| r.to_string()).unwrap_or_else(|| "unknown".into()),
                        locales = p.server_info.as_ref().map_or(0, |i| i.number_of_locales),
                        "Arkouda metrics server is answering"
                    );
                    self.server = EndState::Up;
                }
            }
            Err(e) => {
                self.stats.poll_errors_total += 1;
                let state = EndState::Down(e.kind().to_string());
                if self.server != state {
                    if self.server == EndState::Up {
                        tracing::warn!(error = %e, "Arkouda metrics server lost; pushing arkouda_up 0 until it answers again");
                    } else {
                        tracing::warn!(error = %e, "waiting for the Arkouda metrics server; pushing arkouda_up 0 meanwhile");
                    }
                    self.server = state;
                }
            }
        }
    }

    fn note_push(&mut self, target: usize, result: &Result<(), PushError>) {
        let Some(t) = self.targets.get_mut(target) else {
            return;
        };
        match result {
            Ok(()) => {
                if t.state != EndState::Up {
                    tracing::info!(pushgateway = %t.pgw.url(), group = %self.key.path(), "pushing to the Pushgateway");
                    t.state = EndState::Up;
                }
            }
            Err(e) => {
                self.stats.push_errors_total += 1;
                let state = EndState::Down(e.kind());
                if t.state != state {
                    tracing::warn!(error = %e, "cannot push to the Pushgateway; trying again every cycle");
                    t.state = state;
                }
            }
        }
    }

    /// Polls and renders the exposition text into `self.body`.
    async fn poll_and_render(&mut self) -> bool {
        let started = Instant::now();
        let result = self.poll().await;
        self.stats.poll_duration_seconds = started.elapsed().as_secs_f64();
        self.note_poll(&result);
        let ok = result.is_ok();
        let (records, info) = match &result {
            Ok(p) => (Some(p.records.records.as_slice()), p.server_info.as_deref()),
            Err(_) => (None, None),
        };
        // The cardinality budget (off by default): admit this cycle's new values, fold the rest.
        let budget = self.settings.budget;
        let budgeted = records.map(|r| {
            translate::admit(&mut self.admitted, &budget, r);
            translate::apply_budget(r, &self.admitted, &budget)
        });
        if let Some((_, folded)) = &budgeted {
            self.stats.series_dropped_total += folded;
        }
        let records = budgeted.as_ref().map(|(r, _)| r.as_ref());
        // The lease is taken from the clock just before the push, so that it reads "push
        // time + lease"; `sweep` trusts it only when Slurm cannot be asked.
        self.stats.lease_expiry_timestamp_seconds =
            Some(unix_now() + self.settings.lease.as_secs_f64());
        if !self.remote_write.is_empty() {
            self.stats.remote_write_errors_total = Some(
                self.remote_write
                    .iter()
                    .map(RemoteWrite::errors_total)
                    .sum(),
            );
            self.stats.remote_write_dropped_total = Some(
                self.remote_write
                    .iter()
                    .map(RemoteWrite::dropped_total)
                    .sum(),
            );
        }
        let t = translate::translate(
            &translate::Snapshot {
                records,
                server_info: info,
                agent: &self.stats,
            },
            &self.ctx,
        );
        let unmapped = t.unmapped;
        for kind in t.unmapped_kinds {
            if self.reported_unknown.insert(kind.clone()) {
                tracing::warn!(what = %kind, "no metric maps this record; skipping it (counted in arkouda_agent_skipped_records_total)");
            }
        }
        self.families = t.families;
        // Remote write gets the same families, stamped with this cycle's time; queuing
        // never waits for a receiver, so a slow one cannot hold up the cycle.
        let now_ms = unix_ms();
        for rw in &mut self.remote_write {
            rw.write(&self.families, now_ms);
        }
        if let Err(e) = translate::encode_text(&self.families, &mut self.body) {
            // Only a bug in the fixed metric table can get here.
            tracing::error!(error = %e, "cannot encode metrics");
        }
        if let Some((listen, ctx)) = &self.listen {
            let snap = translate::Snapshot {
                records,
                server_info: info,
                agent: &self.stats,
            };
            let families = translate::families(&snap, ctx);
            if translate::encode_text(&families, &mut self.scrape_body).is_ok() {
                listen.update(Bytes::from(self.scrape_body.clone().into_bytes()));
            }
        }
        // Only now: both translations above count this cycle's unmapped records themselves.
        self.stats.skipped_records_total += unmapped;
        ok
    }

    /// One cycle: poll, translate, push (retrying until `deadline`).
    pub async fn cycle(&mut self, deadline: Instant) -> Outcome {
        let started = Instant::now();
        self.try_listen().await;
        let polled = self.poll_and_render().await;
        let rendered = Instant::now();
        if self.settings.no_push {
            return Outcome {
                polled,
                pushed: false,
            };
        }
        let deadline = deadline.max(Instant::now() + self.settings.push_timeout);
        let payloads = self.payloads();
        let bytes: usize = payloads.iter().map(|(_, p)| p.len()).sum();
        // Groups of the previous cycle that are gone (a locale that vanished) are deleted.
        let gone: Vec<GroupingKey> = self
            .groups
            .iter()
            .filter(|k| !payloads.iter().any(|(p, _)| p == *k))
            .cloned()
            .collect();
        // Remember every group before pushing it: a SIGTERM can end this cycle half-way,
        // and the final delete must still find each group that may exist.
        for (k, _) in &payloads {
            if !self.groups.contains(k) {
                self.groups.push(k.clone());
            }
        }
        let results = futures_util::future::join_all(self.targets.iter().map(|t| {
            let (payloads, gone) = (&payloads, &gone);
            async move {
                for (key, body) in payloads {
                    t.pgw.push(key, body.clone(), deadline).await?;
                }
                for key in gone {
                    t.pgw.delete(key, deadline).await?;
                }
                Ok(())
            }
        }))
        .await;
        let pushed = results.iter().all(Result::is_ok);
        for (i, r) in results.iter().enumerate() {
            self.note_push(i, r);
        }
        if pushed {
            // The vanished groups were deleted everywhere: forget them.
            self.groups = payloads.into_iter().map(|(k, _)| k).collect();
        }
        // One line per cycle, at debug level only: what benches/compare.sh reads.
        tracing::debug!(
            poll_ms = self.stats.poll_duration_seconds * 1e3,
            render_ms =
                (rendered - started).as_secs_f64() * 1e3 - self.stats.poll_duration_seconds * 1e3,
            push_ms = rendered.elapsed().as_secs_f64() * 1e3,
            cycle_ms = started.elapsed().as_secs_f64() * 1e3,
            bytes,
            "cycle done"
        );
        Outcome { polled, pushed }
    }

    /// This cycle's request bodies, one per group: the whole text in the job's group, or
    /// with `layout = "locale"` the server-wide series there and each locale's in its own.
    fn payloads(&mut self) -> Vec<(GroupingKey, Payload)> {
        let threshold = self.settings.gzip_threshold;
        let payload = |text: &str| Payload::new(Bytes::from(text.to_string()), threshold);
        match self.settings.layout {
            Layout::Job => vec![(self.key.clone(), payload(&self.body))],
            Layout::Locale => {
                let (server, locales) = translate::split_by_locale(&self.families);
                let mut text = String::new();
                let mut out = Vec::with_capacity(locales.len() + 1);
                if translate::encode_text(&server, &mut text).is_ok() {
                    out.push((self.key.clone(), payload(&text)));
                }
                for (locale, families) in locales {
                    if translate::encode_text(&families, &mut text).is_ok() {
                        let mut labels = self.key.pairs()[1..].to_vec();
                        labels.push(("locale".to_string(), locale));
                        let key = GroupingKey::new(&self.settings.job, labels);
                        out.push((key, payload(&text)));
                    }
                }
                out
            }
        }
    }

    /// The exposition text of one poll, without pushing.
    pub async fn render_once(&mut self) -> (bool, &str) {
        let ok = self.poll_and_render().await;
        (ok, &self.body)
    }

    /// Deletes every group this job pushed, on every Pushgateway it pushed to, retrying
    /// until `timeout` has passed; one that is down does not hold up the others.
    pub async fn delete_groups(&self, timeout: Duration) -> Result<(), PushError> {
        let deadline = Instant::now() + timeout;
        let results = futures_util::future::join_all(self.targets.iter().map(|t| async move {
            for key in &self.groups {
                t.pgw.delete(key, deadline).await?;
            }
            Ok::<(), PushError>(())
        }))
        .await;
        results.into_iter().collect()
    }
}

/// `run`: cycles until `shutdown` fires, then deletes the group within the deadline.
///
/// With `--daemonize`, `readiness` tells the waiting caller: ready once everything that can
/// fail at start (the HTTP clients) is up, or why not. The listen address is not among
/// them: a bind failure is retried every cycle (see [`Agent::listen_at`]).
pub async fn run(
    settings: Settings,
    mut shutdown: watch::Receiver<bool>,
    mut readiness: Option<crate::process::Readiness>,
) -> anyhow::Result<()> {
    let job_id = settings.require_job_id()?.to_string();
    let interval = settings.interval;
    let shutdown_timeout = settings.shutdown_timeout;
    let watch_pid = settings.watch_pid;
    let listen_addr = settings.listen.clone();
    let no_push = settings.no_push;
    let started = async {
        let mut agent = Agent::new(settings, &job_id)?;
        agent.start_remote_write()?;
        if let Some(addr) = listen_addr {
            agent.listen_at(addr);
        }
        Ok::<Agent, anyhow::Error>(agent)
    }
    .await;
    let mut agent = match (started, readiness.as_mut()) {
        (Ok(agent), Some(r)) => {
            r.ready();
            agent
        }
        (Ok(agent), None) => agent,
        (Err(e), Some(r)) => {
            r.fail(&format!("{e:#}"));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    tracing::info!(
        version = VERSION,
        group = %agent.key().path(),
        interval = %humantime::format_duration(interval),
        "agent started"
    );
    // The first cycle at once (data within moments of the start), the following ones at a
    // random phase, so that jobs started together do not push in lock-step.
    let phase = interval.mul_f64(fastrand::f64());
    let mut ticker = tokio::time::interval_at(Instant::now(), interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut phased = false;
    // With --watch-pid the agent ends with the process it serves (arkouda_server).
    let watched = async {
        match watch_pid {
            Some(pid) => {
                crate::process::gone(pid, Duration::from_millis(250)).await;
                tracing::info!(pid, "the watched process has exited");
            }
            None => std::future::pending().await,
        }
    };
    tokio::pin!(watched);
    while !*shutdown.borrow() {
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = &mut watched => break,
            _ = ticker.tick() => {}
        }
        let deadline = Instant::now() + interval;
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = &mut watched => break,
            _ = agent.cycle(deadline) => {}
        }
        if !phased {
            phased = true;
            ticker = tokio::time::interval_at(Instant::now() + phase, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        }
    }
    // The remote-write staleness markers go out alongside the delete, in the same time.
    let ended = agent.end_remote_write(shutdown_timeout);
    if no_push {
        tracing::info!("stopping (nothing was pushed, so nothing to delete)");
        ended.await;
        return Ok(());
    }
    tracing::info!(group = %agent.key().path(), "stopping: deleting the job's group");
    let (_, deleted) = tokio::join!(ended, agent.delete_groups(shutdown_timeout));
    deleted
        .with_context(|| format!("could not delete group {} within {shutdown_timeout:?}; `arkouda-push-agent delete --job-id {job_id}` removes it", agent.key().path()))?;
    tracing::info!("group deleted; exiting");
    Ok(())
}

/// `once`: one poll and push (or print, with `dry_run`). Ok(false) when either end failed.
pub async fn once(settings: Settings, dry_run: bool) -> anyhow::Result<bool> {
    // A dry run pushes nothing, so it needs no job id.
    let job_id = match (settings.require_job_id(), dry_run) {
        (Ok(id), _) => id.to_string(),
        (Err(_), true) => String::new(),
        (Err(e), false) => return Err(e.into()),
    };
    let timeout = settings.push_timeout;
    let mut agent = Agent::new(settings, &job_id)?;
    if dry_run {
        let (ok, body) = agent.render_once().await;
        crate::console::out_raw(format_args!("{body}"));
        return Ok(ok);
    }
    agent.start_remote_write()?;
    let deadline = Instant::now() + timeout;
    let outcome = agent.cycle(deadline).await;
    // One cycle's remote write is sent before exiting (no staleness markers: a one-shot
    // sample ends by itself, as a scrape that stops would).
    let mut written = true;
    for rw in &agent.remote_write {
        if !rw
            .drain()
            .wait(deadline.max(Instant::now() + timeout))
            .await
        {
            tracing::warn!(receiver = %rw.url(), "remote write not done before the timeout");
            written = false;
        }
    }
    let pushed = outcome.pushed || (agent.settings.no_push && !agent.remote_write.is_empty());
    Ok(outcome.polled && pushed && written)
}

/// `check`: prints the resolved configuration, then tries both ends.
pub async fn check(settings: Settings, resolved: &Resolved) -> bool {
    for line in resolved.describe() {
        crate::outln!("{line}");
    }
    match &settings.job_id {
        Some(id) => crate::outln!("grouping key: {}", grouping_key(&settings, id).path()),
        None => {
            crate::outln!("grouping key: none yet (no job id: give --job-id or set SLURM_JOB_ID)")
        }
    }

    let mut s = session(&settings);
    let polled = tokio::task::spawn_blocking(move || {
        let r = s.poll();
        (s.endpoint().to_string(), r)
    })
    .await;
    let arkouda_ok = match polled {
        Ok((endpoint, Ok(p))) => {
            crate::outln!(
                "arkouda: OK {endpoint}, release {}, {} locales, {} records",
                p.release
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "unknown".into()),
                p.server_info.as_ref().map_or(0, |i| i.number_of_locales),
                p.records.records.len()
            );
            true
        }
        Ok((_, Err(e))) => {
            crate::outln!("arkouda: FAILED: {e}");
            false
        }
        Err(e) => {
            crate::outln!("arkouda: FAILED: {e}");
            false
        }
    };
    let pushgateway_ok = match pushgateways(&settings) {
        Ok(all) => {
            let mut ok = true;
            for pgw in all {
                match pgw.ready(Instant::now() + settings.push_timeout).await {
                    Ok(()) => crate::outln!("pushgateway: OK {}", pgw.url()),
                    Err(e) => {
                        crate::outln!("pushgateway: FAILED: {e}");
                        ok = false;
                    }
                }
            }
            ok
        }
        Err(e) => {
            crate::outln!("pushgateway: FAILED: {e}");
            false
        }
    };
    // Each remote-write receiver gets an empty WriteRequest: it writes nothing but
    // passes auth, TLS and the protocol.
    let mut remote_write_ok = true;
    let key = grouping_key(&settings, settings.job_id.as_deref().unwrap_or_default());
    for opts in remote_write_options(&settings, &key) {
        match RemoteWrite::probe(&opts, Instant::now() + settings.push_timeout).await {
            Ok(()) => crate::outln!("remote_write: OK {}", opts.url),
            Err(e) => {
                crate::outln!("remote_write: FAILED: {e}");
                remote_write_ok = false;
            }
        }
    }
    arkouda_ok && pushgateway_ok && remote_write_ok
}

/// What a signal asks of `run`, given how many stop requests came before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignalAction {
    /// The first SIGTERM, SIGINT or SIGHUP: stop cleanly (delete the group, exit 0).
    Stop,
    /// SIGTERM or SIGHUP again while stopping: the same request again, ignored, so that
    /// `systemctl stop` plus the Epilog's own SIGTERM (or a terminal that closes while the
    /// agent stops) never abandon the delete. The delete is bounded by `shutdown_timeout`.
    Again,
    /// SIGINT while stopping (Ctrl-C twice): exit at once, without the delete.
    Abort,
}

/// The signal rule of `run`: the first SIGTERM, SIGINT or SIGHUP stops cleanly; only a
/// second SIGINT aborts the cleanup (SIGKILL always does).
pub fn signal_action(sig: i32, stopping: bool) -> SignalAction {
    match (stopping, sig) {
        (false, _) => SignalAction::Stop,
        (true, signal_hook::consts::SIGINT) => SignalAction::Abort,
        (true, _) => SignalAction::Again,
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        signal_hook::consts::SIGTERM => "SIGTERM",
        signal_hook::consts::SIGINT => "SIGINT",
        signal_hook::consts::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// SIGTERM, SIGINT or SIGHUP (a terminal that closes: an agent started by hand in an
/// `salloc` shell) once: `shutdown` becomes true (clean stop). Then [`signal_action`].
pub fn shutdown_signal() -> std::io::Result<watch::Receiver<bool>> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let (tx, rx) = watch::channel(false);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut stopping = false;
            let mut told_again = false;
            for sig in signals.forever() {
                match signal_action(sig, stopping) {
                    SignalAction::Stop => {
                        tracing::info!(signal = signal_name(sig), "stop requested");
                        stopping = true;
                        let _ = tx.send(true);
                    }
                    SignalAction::Again => {
                        if !told_again {
                            told_again = true;
                            tracing::info!(signal = signal_name(sig), "already stopping: the delete goes on (a second SIGINT or SIGKILL abandons it)");
                        }
                    }
                    SignalAction::Abort => {
                        crate::console::err(format_args!(
                            "arkouda-push-agent: second SIGINT, exiting at once without cleanup"
                        ));
                        std::process::exit(128 + sig);
                    }
                }
            }
        })?;
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

    /// The first signal of any kind stops cleanly; while stopping only SIGINT aborts.
    #[test]
    fn signal_rule() {
        use SignalAction::*;
        for sig in [SIGTERM, SIGINT, SIGHUP] {
            assert_eq!(signal_action(sig, false), Stop, "{sig}");
        }
        assert_eq!(signal_action(SIGTERM, true), Again);
        assert_eq!(signal_action(SIGHUP, true), Again);
        assert_eq!(signal_action(SIGINT, true), Abort);
    }
}
