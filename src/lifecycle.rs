//! The lifecycle: poll → translate once → hand the cycle to every sink, every interval;
//! at the stop, end every sink within the shutdown deadline.
//!
//! Cycles never overlap and do not drift (a fixed-rate ticker that skips missed ticks).
//! The ZeroMQ poll waits in the runtime's reactor (no thread of its own), so a signal is
//! handled at once even while a poll is stuck: the poll is dropped, and the session
//! reconnects should it poll again. The sinks run in tasks of their own ([`Running`]): a slow or down
//! destination delays neither the poll nor another destination. Logs are one line per
//! state change of the server (lost, back), never one per failed cycle; each sink logs its
//! own.
//!
//! This module knows no sink: it drives whatever [`Sink`]s it is given, and holds no
//! protocol, naming or HTTP detail.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::Either;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

use crate::arkouda::{Poll, PollError, Session};
use crate::config::{Resolved, Settings};
use crate::sinks::{self, Counters, Cycle, Running, Sink};
use crate::summary::Summary;
use crate::translate::{self, AgentStats};
use crate::VERSION;

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The state of the server, for logging only its changes.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ServerState {
    Unknown,
    Up,
    Down(String),
}

/// Polls the server and translates each poll into a [`Cycle`]; keeps the agent's own
/// counters and what has been logged once.
pub struct Poller {
    settings: Settings,
    ctx: translate::Context,
    admitted: translate::Admitted,
    stats: AgentStats,
    /// What the sinks count (push errors, remote-write errors, failed binds).
    counters: Arc<Counters>,
    session: Session,
    server: ServerState,
    reported_unknown: HashSet<String>,
    /// The latest poll, when it worked: the final cycle's values if the server does not
    /// answer at once at the stop.
    last: Option<Poll>,
    /// The job summary, kept when `summary_file` is set.
    summary: Option<Summary>,
}

impl Poller {
    pub fn new(settings: Settings, counters: Arc<Counters>) -> Poller {
        Poller {
            ctx: translate::Context {
                server_name: settings.series.server_name.clone(),
                job_user: settings.job.user.clone(),
                partition: settings.job.partition.clone(),
                legacy_names: settings.series.legacy_names,
            },
            admitted: translate::Admitted::default(),
            stats: AgentStats {
                version: VERSION.to_string(),
                ..AgentStats::default()
            },
            counters,
            session: Session::new(&settings.arkouda),
            summary: settings.lifecycle.summary_file.as_ref().map(|_| {
                Summary::new(
                    settings.job.id.as_deref().unwrap_or_default(),
                    settings.job.cluster.as_deref(),
                    SystemTime::now(),
                )
            }),
            settings,
            server: ServerState::Unknown,
            reported_unknown: HashSet::new(),
            last: None,
        }
    }

    /// Writes the job summary, if `summary_file` is set, ended now, on a blocking thread of
    /// its own (a slow shared file system delays neither the final delete nor the linger).
    /// A failure is logged, never fatal. The summary is taken: it is written once.
    pub fn write_summary(&mut self) -> tokio::task::JoinHandle<()> {
        let job = self
            .summary
            .take()
            .zip(self.settings.lifecycle.summary_file.as_ref());
        let path = job.as_ref().map(|(_, template)| {
            crate::summary::path_for(
                template,
                self.settings.job.id.as_deref().unwrap_or_default(),
            )
        });
        let summary = job.map(|(s, _)| s);
        let ended = SystemTime::now();
        tokio::task::spawn_blocking(move || {
            let (Some(summary), Some(path)) = (summary, path) else {
                return;
            };
            match summary.write(&path, ended) {
                Ok(()) => tracing::info!(path = %path.display(), "job summary written"),
                Err(e) => {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the job summary (the exit code is not affected)")
                }
            }
        })
    }

    async fn poll(&mut self) -> Result<Poll, PollError> {
        self.session.poll().await
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
                if self.server != ServerState::Up {
                    let endpoint = self.session.endpoint().to_string();
                    tracing::info!(
                        endpoint = %endpoint,
                        release = %p.release.map(|r| r.to_string()).unwrap_or_else(|| "unknown".into()),
                        locales = p.server_info.as_ref().map_or(0, |i| i.number_of_locales),
                        "Arkouda metrics server is answering"
                    );
                    self.server = ServerState::Up;
                }
            }
            Err(e) => {
                self.stats.poll_errors_total += 1;
                let state = ServerState::Down(e.kind().to_string());
                if self.server != state {
                    if self.server == ServerState::Up {
                        tracing::warn!(error = %e, "Arkouda metrics server lost; pushing arkouda_up 0 until it answers again");
                    } else {
                        tracing::warn!(error = %e, "waiting for the Arkouda metrics server; pushing arkouda_up 0 meanwhile");
                    }
                    self.server = state;
                }
            }
        }
    }

    /// One poll, translated once: the cycle every sink gets, and whether the poll worked.
    pub async fn cycle(&mut self) -> (bool, Arc<Cycle>) {
        let started = Instant::now();
        let result = self.poll().await;
        self.stats.poll_duration_seconds = started.elapsed().as_secs_f64();
        self.note_poll(&result);
        let cycle = self.render(&result, started, None);
        let ok = result.is_ok();
        // Kept only for a linger's final cycle: at 4096 locales a poll is megabytes.
        self.last = result
            .ok()
            .filter(|_| !self.settings.lifecycle.linger.is_zero());
        (ok, cycle)
    }

    /// The final cycle at the stop, carrying the end time, with the lease running to the
    /// end of the linger: a fresh poll if the server answers at once, else the last poll's
    /// values (with `arkouda_up` as it stood).
    pub async fn final_cycle(&mut self, linger: Duration) -> Arc<Cycle> {
        let started = Instant::now();
        let end = unix_now();
        self.stats.end_timestamp_seconds = Some(end);
        let fresh = match tokio::time::timeout(FINAL_POLL, self.poll()).await {
            Ok(r) => r,
            Err(_) => Err(PollError::NoConnectionInfo {
                path: Default::default(),
                reason: "no answer at once at the stop".into(),
            }),
        };
        let result = match (fresh, self.last.take()) {
            (Ok(p), _) => Ok(p),
            (Err(_), Some(last)) => Ok(last),
            (Err(e), None) => Err(e),
        };
        self.render(&result, started, Some(end + linger.as_secs_f64()))
    }

    /// Translates one poll's result (records, or `arkouda_up 0`) into a cycle, its lease
    /// running to `lease_until` (the final cycle's end + linger) or now + `lease`.
    fn render(
        &mut self,
        result: &Result<Poll, PollError>,
        started: Instant,
        lease_until: Option<f64>,
    ) -> Arc<Cycle> {
        let (records, info) = match result {
            Ok(p) => (Some(p.records.records.as_slice()), p.server_info.as_deref()),
            Err(_) => (None, None),
        };
        if let Some(s) = &mut self.summary {
            match records {
                Some(r) => s.observe(r, info),
                None => s.failed(),
            }
        }
        // The cardinality budget (off by default): admit this cycle's new values, fold the rest.
        let budget = self.settings.series.budget;
        let budgeted = records.map(|r| {
            translate::admit(&mut self.admitted, &budget, r);
            translate::apply_budget(r, &self.admitted, &budget)
        });
        if let Some((_, folded)) = &budgeted {
            self.stats.series_dropped_total += folded;
        }
        let records = budgeted.as_ref().map(|(r, _)| r.as_ref());
        // The lease is taken from the clock just before the cycle is handed on, so that
        // it reads "push time + lease"; `sweep` trusts it when Slurm cannot be asked.
        self.stats.lease_expiry_timestamp_seconds = Some(
            lease_until.unwrap_or_else(|| unix_now() + self.settings.lifecycle.lease.as_secs_f64()),
        );
        let sinks = self.counters.snapshot();
        self.stats.push_errors_total = sinks.push_errors;
        self.stats.remote_write_errors_total = sinks.remote_write.map(|(e, _)| e);
        self.stats.remote_write_dropped_total = sinks.remote_write.map(|(_, d)| d);
        self.stats.listen_errors_total = sinks.listen_errors;
        let t = translate::translate(
            &translate::Snapshot {
                records,
                server_info: info,
                agent: &self.stats,
            },
            &self.ctx,
        );
        for kind in t.unmapped_kinds {
            if self.reported_unknown.insert(kind.clone()) {
                tracing::warn!(what = %kind, "no metric maps this record; skipping it (counted in arkouda_agent_skipped_records_total)");
            }
        }
        self.stats.skipped_records_total += t.unmapped;
        let poll_ms = self.stats.poll_duration_seconds * 1e3;
        let cycle = Cycle {
            families: t.families,
            unix_ms: sinks::unix_ms(),
            started,
            poll_ms,
            render_ms: started.elapsed().as_secs_f64() * 1e3 - poll_ms,
        };
        Arc::new(cycle)
    }
}

/// How long the final poll at the stop may take: "answers at once".
const FINAL_POLL: Duration = Duration::from_millis(500);

/// `run`: a cycle every interval, handed to every sink, until `shutdown` fires (or the
/// watched process exits); then every sink is ended within `shutdown_timeout`. An error
/// when a sink could not end cleanly (it has logged why, and what to do).
pub async fn run(
    settings: Settings,
    sinks: Vec<Box<dyn Sink>>,
    counters: Arc<Counters>,
    mut shutdown: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let interval = settings.lifecycle.interval;
    let shutdown_timeout = settings.lifecycle.shutdown_timeout;
    let watch_pid = settings.lifecycle.watch_pid;
    let ship_timeout = interval.max(settings.push_timeout());
    let names: Vec<&str> = sinks.iter().map(|s| s.name()).collect();
    tracing::info!(
        version = VERSION,
        sinks = %names.join(","),
        interval = %humantime::format_duration(interval),
        "agent started"
    );
    let running: Vec<Running> = sinks
        .into_iter()
        .map(|s| Running::start(s, ship_timeout))
        .collect();
    let mut poller = Poller::new(settings, counters);
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
        let polled = tokio::select! {
            _ = shutdown.changed() => break,
            _ = &mut watched => break,
            c = poller.cycle() => c,
        };
        let (_, cycle) = polled;
        for r in &running {
            r.offer(cycle.clone());
        }
        if !phased {
            phased = true;
            ticker = tokio::time::interval_at(Instant::now() + phase, interval);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
        }
    }
    // The final push (with a linger) carries the end time; a lingering sink (the
    // Pushgateway) keeps the group `linger` long so that Prometheus scrapes the final
    // values, the others end at once (remote write: the final sample, then the staleness
    // markers). Without a linger every sink ends at once.
    let linger = poller.settings.lifecycle.linger;
    let last = if linger.is_zero() {
        None
    } else {
        Some(poller.final_cycle(linger).await)
    };
    // The summary is written at the stop, beside the sinks' end: before a linger, which
    // under Slurm outlives the Epilog that kills the agent (and the controller's epilog
    // waits for the summary to store it in the job's AdminComment).
    let summary = poller.write_summary();
    let now = Instant::now();
    if last.is_some() {
        tracing::info!(linger = %humantime::format_duration(linger), "final push; the job's group is kept for the linger, then deleted");
    }
    let ends = running.into_iter().map(|r| match &last {
        None => Either::Left(r.end(now + shutdown_timeout)),
        Some(last) => {
            let at = if r.lingers() { now + linger } else { now };
            Either::Right(r.end_after(last.clone(), at, shutdown_timeout))
        }
    });
    let (ended, _) =
        futures_util::future::join(futures_util::future::join_all(ends), summary).await;
    if ended.iter().all(|ok| *ok) {
        tracing::info!("every sink ended; exiting");
        Ok(())
    } else {
        anyhow::bail!("could not end every sink within {shutdown_timeout:?} (see the log for which and what to do)")
    }
}

/// `once`: one poll, handed to every sink and flushed (or printed, with `dry_run`). Ok(false)
/// when the poll or a sink failed.
pub async fn once(
    settings: Settings,
    sinks: Vec<Box<dyn Sink>>,
    counters: Arc<Counters>,
    dry_run: bool,
) -> anyhow::Result<bool> {
    let timeout = settings.push_timeout();
    let mut poller = Poller::new(settings, counters);
    let (polled, cycle) = poller.cycle().await;
    if dry_run {
        let mut text = String::new();
        crate::model::encode_text(&cycle.families, &[], &mut text)?;
        crate::console::out_raw(format_args!("{text}"));
        return Ok(polled);
    }
    let deadline = Instant::now() + timeout;
    let flushed = futures_util::future::join_all(sinks.into_iter().map(|s| {
        let r = Running::start(s, timeout);
        r.offer(cycle.clone());
        r.flush(deadline)
    }))
    .await;
    Ok(polled && flushed.iter().all(|ok| *ok))
}

/// `check`: prints the resolved configuration, then tries the server and every sink.
pub async fn check(
    settings: Settings,
    resolved: &Resolved,
    grouping_key: Option<String>,
    sinks: Vec<Box<dyn Sink>>,
) -> bool {
    for line in resolved.describe() {
        crate::outln!("{line}");
    }
    match grouping_key {
        Some(path) => crate::outln!("grouping key: {path}"),
        None => {
            crate::outln!("grouping key: none yet (no job id: give --job-id or set SLURM_JOB_ID)")
        }
    }
    let deadline = Instant::now() + settings.push_timeout();
    let mut s = Session::new(&settings.arkouda);
    let polled = s.poll().await;
    let endpoint = s.endpoint();
    let mut ok = match polled {
        Ok(p) => {
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
        Err(e) => {
            crate::outln!("arkouda: FAILED: {e}");
            false
        }
    };
    for sink in &sinks {
        for line in sink.check(deadline).await {
            match line {
                Ok(l) => crate::outln!("{}: {l}", sink.name()),
                Err(e) => {
                    crate::outln!("{}: FAILED: {e}", sink.name());
                    ok = false;
                }
            }
        }
    }
    ok
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::{BoxFuture, CheckLine};
    use std::sync::Mutex;

    /// A sink that records the `arkouda_up` value of each cycle it ships, and its end.
    struct Recorder {
        log: Arc<Mutex<Vec<String>>>,
        fail: bool,
    }

    impl Sink for Recorder {
        fn name(&self) -> &'static str {
            "recorder"
        }

        fn ship(&mut self, cycle: Arc<Cycle>, _deadline: Instant) -> BoxFuture<'_, bool> {
            let up = cycle
                .families
                .iter()
                .find(|f| f.name() == "arkouda_up")
                .and_then(|f| f.series().next())
                .map(|s| s.value());
            self.log.lock().unwrap().push(format!("ship up={up:?}"));
            Box::pin(std::future::ready(!self.fail))
        }

        fn end(&mut self, _deadline: Instant) -> BoxFuture<'_, bool> {
            self.log.lock().unwrap().push("end".into());
            Box::pin(std::future::ready(!self.fail))
        }

        fn check(&self, _deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>> {
            Box::pin(std::future::ready(Vec::new()))
        }
    }

    /// Settings of an agent whose server never answers (nothing listens on the port).
    fn settings() -> Settings {
        let env = std::collections::BTreeMap::from([
            (
                "ARKOUDA_PUSH_AGENT_ARKOUDA".to_string(),
                "tcp://127.0.0.1:1".to_string(),
            ),
            (
                "ARKOUDA_PUSH_AGENT_ARKOUDA_TIMEOUT".to_string(),
                "50ms".to_string(),
            ),
            (
                "ARKOUDA_PUSH_AGENT_INTERVAL".to_string(),
                "100ms".to_string(),
            ),
            ("ARKOUDA_PUSH_AGENT_JOB_ID".to_string(), "1".to_string()),
            (
                "ARKOUDA_PUSH_AGENT_PUSHGATEWAY".to_string(),
                "http://pgw.test:9091".to_string(),
            ),
            (
                "ARKOUDA_PUSH_AGENT_CONFIG".to_string(),
                "/dev/null".to_string(),
            ),
        ]);
        let resolved = crate::config::resolve(&Default::default(), &env).unwrap();
        Settings::from_resolved(&resolved).unwrap()
    }

    fn recorder(fail: bool) -> (Box<dyn Sink>, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        (
            Box::new(Recorder {
                log: log.clone(),
                fail,
            }),
            log,
        )
    }

    /// Every sink gets every cycle (here `arkouda_up 0`: the server never answers), and
    /// is ended once at the stop; the run is Ok only when every sink ended cleanly.
    #[tokio::test]
    async fn every_sink_gets_each_cycle_and_is_ended() {
        let (a, log_a) = recorder(false);
        let (b, log_b) = recorder(false);
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(run(settings(), vec![a, b], Arc::default(), rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_a.lock().unwrap().len() < 3 || log_b.lock().unwrap().len() < 3 {
            assert!(
                Instant::now() < deadline,
                "no three cycles: {log_a:?} {log_b:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.send(true).unwrap();
        run.await.unwrap().unwrap();
        for log in [log_a, log_b] {
            let log = log.lock().unwrap();
            assert!(
                log[..log.len() - 1]
                    .iter()
                    .all(|l| l == "ship up=Some(0.0)"),
                "{log:?}"
            );
            assert_eq!(log.last().map(String::as_str), Some("end"));
        }
    }

    /// A sink that cannot end makes the run an error; the other is ended all the same.
    #[tokio::test]
    async fn a_sink_that_cannot_end_is_an_error() {
        let (good, log_good) = recorder(false);
        let (bad, _) = recorder(true);
        let (tx, rx) = watch::channel(false);
        let run = tokio::spawn(run(settings(), vec![bad, good], Arc::default(), rx));
        let deadline = Instant::now() + Duration::from_secs(10);
        while log_good.lock().unwrap().is_empty() {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tx.send(true).unwrap();
        assert!(run.await.unwrap().is_err());
        assert_eq!(
            log_good.lock().unwrap().last().map(String::as_str),
            Some("end")
        );
    }

    /// The sinks' counters reach the next cycle's series.
    #[tokio::test]
    async fn sink_counters_reach_the_cycle() {
        let counters = Arc::new(Counters::default());
        counters.with_remote_write();
        Counters::add(&counters.push_errors, 3);
        Counters::add(&counters.remote_write_dropped, 2);
        let mut p = Poller::new(settings(), counters);
        let (polled, cycle) = p.cycle().await;
        assert!(!polled);
        let value = |name: &str| {
            cycle
                .families
                .iter()
                .find(|f| f.name() == name)
                .and_then(|f| f.series().next())
                .map(|s| s.value())
        };
        assert_eq!(value("arkouda_agent_push_errors_total"), Some(3.0));
        assert_eq!(value("arkouda_agent_remote_write_dropped_total"), Some(2.0));
        assert_eq!(value("arkouda_agent_remote_write_errors_total"), Some(0.0));
        assert_eq!(value("arkouda_agent_listen_errors_total"), None);
    }
}
