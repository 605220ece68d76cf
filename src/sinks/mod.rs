//! Where a cycle's metric families go, and how the lifecycle drives them.
//!
//! A sink owns everything of its destination: the Pushgateway sink its grouping key, group
//! layout, gzip, shards and the final delete; the remote-write sink its one encoding per
//! cycle, its receivers' queues and the staleness markers; the listen sink its socket and
//! the grouping labels it adds when it encodes. The lifecycle hands each sink the same
//! [`Cycle`] and knows none of them.
//!
//! Each sink runs in a task of its own ([`Running`]), fed the newest cycle through a slot
//! it takes it from: a stuck or down sink delays neither the poll nor another sink, and a
//! newer cycle supersedes one still waiting. At the stop, a cycle being shipped gets a
//! grace to be answered before the sink ends (a PUT answered before the final DELETE
//! cannot land after it); one cut short leaves the sink to make sure in its end.
//!
//! A sink never imports `arkouda` and knows nothing of ZeroMQ.

pub mod http;
pub mod listen;
pub mod pushgateway;
pub mod remote_write;
pub mod retry;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::model::Family;

/// Now, in Unix milliseconds (0 before 1970).
pub fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A boxed future, so that [`Sink`] can be a trait object.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// One cycle's result, translated once and shared by every sink.
#[derive(Debug)]
pub struct Cycle {
    /// The families of the cycle, without grouping labels (each sink adds them its way).
    pub families: Vec<Family>,
    /// When the cycle was taken, in Unix milliseconds (remote write stamps it).
    pub unix_ms: i64,
    /// When its poll started, and how long the poll and the translation took: a sink
    /// that delivers logs the whole cycle's timing (what `benches/compare.sh` reads).
    pub started: Instant,
    pub poll_ms: f64,
    pub render_ms: f64,
}

impl Cycle {
    /// A cycle of `families` taken now (no poll timing).
    pub fn now(families: Vec<Family>) -> Cycle {
        Cycle {
            families,
            unix_ms: unix_ms(),
            started: Instant::now(),
            poll_ms: 0.0,
            render_ms: 0.0,
        }
    }
}

/// One line of `check`: what was tried, and whether it worked.
pub type CheckLine = Result<String, String>;

/// A destination of cycles. Every method is bounded by its `deadline`.
pub trait Sink: Send {
    /// A short name for logs and `check`: `pushgateway`, `remote_write`, `listen`.
    fn name(&self) -> &'static str;

    /// Delivers one cycle (or queues it, for a sink with its own sender), retrying until
    /// `deadline`. True when delivered. The sink logs its own state changes and counts
    /// its own errors.
    fn ship(&mut self, cycle: Arc<Cycle>, deadline: Instant) -> BoxFuture<'_, bool>;

    /// Waits until what was shipped so far has left (a sink that queues); true at once for
    /// the others. `once` flushes instead of ending.
    fn flush(&mut self, _deadline: Instant) -> BoxFuture<'_, bool> {
        Box::pin(std::future::ready(true))
    }

    /// At stop: removes what the sink holds of the job (deletes groups, sends staleness
    /// markers, stops serving). True when all of it is done.
    fn end(&mut self, deadline: Instant) -> BoxFuture<'_, bool>;

    /// Whether what it holds should outlive the job by `linger` (a Pushgateway group that a
    /// Prometheus has yet to scrape); the others end right after the final cycle.
    fn lingers(&self) -> bool {
        false
    }

    /// For `check`: tries the destination once, one line per endpoint.
    fn check(&self, deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>>;
}

/// The agent's counters that sinks keep, read by the lifecycle into every cycle's
/// `arkouda_agent_*` series. A counter that belongs to no configured sink stays absent.
#[derive(Debug, Default)]
pub struct Counters {
    pub push_errors: AtomicU64,
    remote_write: AtomicBool,
    pub remote_write_errors: AtomicU64,
    pub remote_write_dropped: AtomicU64,
    listen: AtomicBool,
    pub listen_errors: AtomicU64,
}

/// A snapshot of [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CountersSnapshot {
    pub push_errors: u64,
    /// With remote write configured: (errors, dropped).
    pub remote_write: Option<(u64, u64)>,
    /// With `listen` configured: failed binds.
    pub listen_errors: Option<u64>,
}

impl Counters {
    /// Remote write is configured: its counters are pushed (from 0).
    pub fn with_remote_write(&self) {
        self.remote_write.store(true, Ordering::Relaxed);
    }

    /// `listen` is configured: its counter is pushed (from 0).
    pub fn with_listen(&self) {
        self.listen.store(true, Ordering::Relaxed);
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CountersSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        CountersSnapshot {
            push_errors: get(&self.push_errors),
            remote_write: self.remote_write.load(Ordering::Relaxed).then(|| {
                (
                    get(&self.remote_write_errors),
                    get(&self.remote_write_dropped),
                )
            }),
            listen_errors: self
                .listen
                .load(Ordering::Relaxed)
                .then(|| get(&self.listen_errors)),
        }
    }
}

/// The newest cycle offered to a sink and not yet taken. The sink's task takes it, so a
/// shipped cycle is freed as soon as it is shipped (not kept until the next one: at 4096
/// locales a cycle is some 10 MB of series); a newer offer replaces one still waiting.
#[derive(Default)]
struct Slot {
    cycle: std::sync::Mutex<Option<Arc<Cycle>>>,
    ready: tokio::sync::Notify,
}

impl Slot {
    fn put(&self, cycle: Arc<Cycle>) {
        *self.cycle.lock().unwrap_or_else(|p| p.into_inner()) = Some(cycle);
        // A permit is kept when the task is busy: no offer is missed.
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Arc<Cycle>> {
        self.cycle.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// A sink running in its own task.
pub struct Running {
    name: &'static str,
    lingers: bool,
    slot: Arc<Slot>,
    stop: Option<oneshot::Sender<Stop>>,
    task: tokio::task::JoinHandle<bool>,
}

/// How a sink's task stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stop {
    /// Flush what was shipped (`once`).
    Flush(Instant),
    /// End: remove what the sink holds of the job (`run`).
    End(Instant),
    /// Ship the final cycle (offered just before), keep what it holds until `at`, then
    /// end within `budget` (`run` with `linger`).
    FinalThenEnd { at: Instant, budget: Duration },
}

impl Running {
    /// Starts `sink` in a task on the current runtime. Each cycle gets `ship_timeout` to
    /// be delivered; a newer cycle waits for the one in flight, then supersedes any
    /// older one still waiting.
    pub fn start(sink: Box<dyn Sink>, ship_timeout: Duration) -> Running {
        let slot = Arc::new(Slot::default());
        let (stop, stop_rx) = oneshot::channel();
        let name = sink.name();
        let lingers = sink.lingers();
        let task = tokio::spawn(drive(sink, slot.clone(), stop_rx, ship_timeout));
        Running {
            name,
            lingers,
            slot,
            stop: Some(stop),
            task,
        }
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    /// See [`Sink::lingers`].
    pub fn lingers(&self) -> bool {
        self.lingers
    }

    /// Hands the sink the newest cycle; never waits.
    pub fn offer(&self, cycle: Arc<Cycle>) {
        self.slot.put(cycle);
    }

    /// Lets the cycle in flight finish, ships the newest one offered if it is still
    /// waiting, then flushes; true when everything offered left before `deadline`.
    pub async fn flush(self, deadline: Instant) -> bool {
        self.stop_with(Stop::Flush(deadline), deadline).await
    }

    /// Lets the cycle in flight finish, then ends the sink (a cycle still waiting is not
    /// shipped: the end supersedes it); true when it ended cleanly before `deadline`.
    pub async fn end(self, deadline: Instant) -> bool {
        self.stop_with(Stop::End(deadline), deadline).await
    }

    /// Ships `last` (the final cycle, with the end time), keeps what the sink holds until
    /// `at` (now for a sink that does not linger), then ends it within `budget`.
    pub async fn end_after(self, last: Arc<Cycle>, at: Instant, budget: Duration) -> bool {
        self.offer(last);
        self.stop_with(Stop::FinalThenEnd { at, budget }, at + budget)
            .await
    }

    async fn stop_with(mut self, how: Stop, deadline: Instant) -> bool {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        // The task bounds itself by `deadline`; a little slack for its last words.
        match tokio::time::timeout_at(deadline + Duration::from_millis(200), &mut self.task).await {
            Ok(Ok(done)) => done,
            Ok(Err(_)) => false,
            Err(_) => {
                self.task.abort();
                false
            }
        }
    }
}

/// The most a cycle in flight at the stop may still take: a second, or a third of the
/// time left, whichever is less, so that the end keeps most of its budget.
const STOP_GRACE: Duration = Duration::from_secs(1);

fn stop_grace(deadline: Instant) -> Instant {
    let now = Instant::now();
    now + STOP_GRACE.min(deadline.saturating_duration_since(now) / 3)
}

/// Ships the cycle still waiting in `slot`, if any; true when there was none.
async fn ship_waiting(sink: &mut Box<dyn Sink>, slot: &Slot, deadline: Instant) -> bool {
    match slot.take() {
        Some(cycle) => sink.ship(cycle, deadline).await,
        None => true,
    }
}

/// The task of one sink: ship each newest cycle; at the stop, let the one in flight be
/// answered (within [`STOP_GRACE`]: a PUT answered before the final DELETE cannot land
/// after it), then flush or end.
async fn drive(
    mut sink: Box<dyn Sink>,
    slot: Arc<Slot>,
    mut stop: oneshot::Receiver<Stop>,
    ship_timeout: Duration,
) -> bool {
    let how = loop {
        tokio::select! {
            biased;
            how = &mut stop => break how.ok(),
            _ = slot.ready.notified() => {
                if let Some(cycle) = slot.take() {
                    let deadline = Instant::now() + ship_timeout;
                    let mut ship = sink.ship(cycle, deadline);
                    tokio::select! {
                        _ = &mut ship => {}
                        how = &mut stop => {
                            // Stopping: the ship in flight gets a grace to be answered
                            // (a healthy destination answers in milliseconds); one still
                            // stuck after it is cut, which the sink's end accounts for.
                            let limit = match how {
                                Ok(Stop::End(d) | Stop::Flush(d)) => deadline.min(stop_grace(d)),
                                Ok(Stop::FinalThenEnd { budget, .. }) => {
                                    deadline.min(stop_grace(Instant::now() + budget))
                                }
                                Err(_) => deadline,
                            };
                            let _ = tokio::time::timeout_at(limit, ship).await;
                            break how.ok();
                        }
                    }
                }
            }
        }
    };
    match how {
        Some(Stop::Flush(deadline)) => {
            // `once`: a cycle offered and not yet shipped goes out first.
            let ok = ship_waiting(&mut sink, &slot, deadline).await;
            sink.flush(deadline).await && ok
        }
        Some(Stop::End(deadline)) => sink.end(deadline).await,
        Some(Stop::FinalThenEnd { at, budget }) => {
            let shipped = ship_waiting(&mut sink, &slot, Instant::now() + budget / 2).await;
            tokio::time::sleep_until(at).await;
            sink.end(Instant::now().max(at) + budget).await && shipped
        }
        // The lifecycle went away without a word: nothing is left to do cleanly.
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A sink that records what it is asked to do, taking `delay` per ship.
    struct Fake {
        log: Arc<Mutex<Vec<String>>>,
        delay: Duration,
    }

    impl Sink for Fake {
        fn name(&self) -> &'static str {
            "fake"
        }

        fn ship(&mut self, cycle: Arc<Cycle>, _deadline: Instant) -> BoxFuture<'_, bool> {
            Box::pin(async move {
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("start {}", cycle.unix_ms));
                tokio::time::sleep(self.delay).await;
                self.log
                    .lock()
                    .unwrap()
                    .push(format!("done {}", cycle.unix_ms));
                true
            })
        }

        fn end(&mut self, _deadline: Instant) -> BoxFuture<'_, bool> {
            Box::pin(async move {
                self.log.lock().unwrap().push("end".into());
                true
            })
        }

        fn check(&self, _deadline: Instant) -> BoxFuture<'_, Vec<CheckLine>> {
            Box::pin(std::future::ready(vec![Ok("fake".into())]))
        }
    }

    fn cycle(n: i64) -> Arc<Cycle> {
        Arc::new(Cycle {
            unix_ms: n,
            ..Cycle::now(Vec::new())
        })
    }

    fn fake(delay_ms: u64) -> (Box<dyn Sink>, Arc<Mutex<Vec<String>>>) {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = Fake {
            log: log.clone(),
            delay: Duration::from_millis(delay_ms),
        };
        (Box::new(sink), log)
    }

    /// A slow sink gets the newest cycle when it is free again (older ones superseded),
    /// and the one in flight at the stop is finished before the end.
    #[tokio::test(start_paused = true)]
    async fn newest_cycle_wins_and_the_one_in_flight_finishes_before_the_end() {
        let (sink, log) = fake(1000);
        let running = Running::start(sink, Duration::from_secs(5));
        running.offer(cycle(1));
        tokio::time::sleep(Duration::from_millis(10)).await;
        for n in 2..=5 {
            running.offer(cycle(n));
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        running.offer(cycle(6));
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(running.end(Instant::now() + Duration::from_secs(5)).await);
        // Cycle 6 was still waiting when the stop came: the end supersedes it.
        assert_eq!(
            *log.lock().unwrap(),
            ["start 1", "done 1", "start 5", "done 5", "end"]
        );
    }

    /// A stuck sink does not hold up another: each is offered every cycle at once.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_sink_holds_up_no_other() {
        let (stuck, stuck_log) = fake(3_600_000);
        let (quick, log) = fake(0);
        let stuck = Running::start(stuck, Duration::from_secs(3600));
        let quick = Running::start(quick, Duration::from_secs(5));
        for n in 1..=3 {
            stuck.offer(cycle(n));
            quick.offer(cycle(n));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(
            *log.lock().unwrap(),
            ["start 1", "done 1", "start 2", "done 2", "start 3", "done 3"]
        );
        // The stuck one's ship is cut at the stop's deadline, then it is ended.
        let deadline = Instant::now() + Duration::from_secs(2);
        stuck.end(deadline).await;
        assert!(Instant::now() <= deadline + Duration::from_millis(200));
        assert_eq!(*stuck_log.lock().unwrap(), ["start 1", "end"]);
    }

    /// `flush` ships a cycle that was offered but not yet taken.
    #[tokio::test(start_paused = true)]
    async fn flush_ships_the_waiting_cycle() {
        let (sink, log) = fake(0);
        let running = Running::start(sink, Duration::from_secs(5));
        running.offer(cycle(7));
        assert!(running.flush(Instant::now() + Duration::from_secs(1)).await);
        assert_eq!(*log.lock().unwrap(), ["start 7", "done 7"]);
    }

    #[test]
    fn counters_of_unconfigured_sinks_are_absent() {
        let c = Counters::default();
        Counters::add(&c.push_errors, 2);
        assert_eq!(
            c.snapshot(),
            CountersSnapshot {
                push_errors: 2,
                remote_write: None,
                listen_errors: None
            }
        );
        c.with_remote_write();
        c.with_listen();
        Counters::add(&c.remote_write_dropped, 1);
        assert_eq!(c.snapshot().remote_write, Some((0, 1)));
        assert_eq!(c.snapshot().listen_errors, Some(0));
    }
}
