//! The Slurm and systemd integration, proven on real components: a single-node Slurm
//! cluster (Debian's slurmctld, slurmd and munged, started here), the repository's
//! `slurm/` scripts as its Prolog, Epilog and EpilogSlurmctld, the agent they start, the
//! simulator standing in for arkouda_server, and a real Pushgateway. Assertions are on what
//! the Pushgateway holds (exact grouping labels, every locale's series, the group gone
//! after the Epilog), the hooks' log, the job's state and the processes left.
//!
//! One cluster serves the whole file: `slurm_cluster` starts it once and runs every
//! scenario against it, a few at a time. (cargo-nextest runs each `#[test]` in its own
//! process, where a per-process `OnceLock` would start one cluster per test.) Set
//! `APA_SLURM_ONLY=name,name` to run some scenarios only, `APA_SLURM_SHOW_LOG=1` to print
//! the hooks' whole log.
//!
//! The cluster's Prolog/Epilog/EpilogSlurmctld are small wrappers that set
//! `ARKOUDA_PUSH_AGENT_BIN`/`_CONFIG` and `ARKOUDA_PUSH_AGENT_HOOK_LOG`, as a site's would,
//! plus per-job test knobs taken from the job's comment words: `apa-config=NAME` (another
//! config file), `apa-port=N` (the job's metrics port, so jobs can run side by side),
//! `apa-bin=missing`, `apa-bin=hang` (a binary that never returns), `apa-skip=HOOK` (that
//! hook does nothing: a crashed node).

mod common;
#[path = "common/slurm.rs"]
mod slurm_cluster;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use arkouda_push_agent::slurm::actions::is_agent_of;
use common::*;
use slurm_cluster::{kill9, mkdir, processes, require, write_file, Hooks, ProcInfo, SlurmCluster};

const REPO: &str = env!("CARGO_MANIFEST_DIR");
const NOBODY_UID: u32 = 65534;
/// Scenarios running at once (each runs one to four jobs; the node has 8 CPUs).
const PARALLEL: usize = 3;
const JOB_START: Duration = Duration::from_secs(60);
const HOOK_DONE: Duration = Duration::from_secs(40);

/// The agents running for `job_id` (`arkouda-push-agent run … --job-id ID`).
fn agents_of(job_id: &str) -> Vec<ProcInfo> {
    processes()
        .into_iter()
        .filter(|p| is_agent_of(&p.argv, job_id))
        .collect()
}

fn proc_field(pid: i32, n: usize) -> Option<i64> {
    // Fields after the command name: state is field 3, session id field 6.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    rest.split_whitespace().nth(n - 3)?.parse().ok()
}

/// One line of the hooks' log: `… arkouda-push-agent[JOB] HOOK: end rc=RC after MS ms`.
#[derive(Debug, Clone)]
struct HookEnd {
    rc: Option<i32>,
    ms: u64,
}

/// The file's cluster (tests/common/slurm.rs) with the repository's hooks behind test
/// wrappers, the partition `arkouda` beside `debug`, and the Pushgateways its configs name.
struct Cluster {
    /// First, so that it drops first: its teardown cancels the jobs and lets their Epilogs
    /// reach the Pushgateway before that stops.
    slurm: SlurmCluster,
    pg: Pushgateway,
    /// A Pushgateway that is down (refuses) and one that hangs (accepts, never answers);
    /// held for the configs that name them.
    _pg_down: FaultProxy,
    _pg_hang: FaultProxy,
    jobs_started: AtomicUsize,
    submit_lock: Mutex<()>,
}

impl std::ops::Deref for Cluster {
    type Target = SlurmCluster;

    fn deref(&self) -> &SlurmCluster {
        &self.slurm
    }
}

impl Cluster {
    fn start() -> Cluster {
        require("/usr/bin/logger", "bsdutils");
        let started = Instant::now();
        let w = SlurmCluster::prepare_dir();
        let p = |s: &str| w.path(s);
        // Every directory on the way must be traversable by `nobody`, who runs the agent.
        for d in ["hooks", "config"] {
            mkdir(&p(d), 0o755);
        }
        mkdir(&p("locks"), 0o1777);

        // The agent binary where `nobody` can run it; the simulator beside it, so that
        // every process this file starts has a path under `w` (the teardown finds them).
        for (from, to) in [(AGENT, "arkouda-push-agent"), (SIM, "arkouda-sim")] {
            std::fs::copy(from, p(&format!("bin/{to}"))).expect("copy binary");
            std::fs::set_permissions(
                p(&format!("bin/{to}")),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }

        let pg = Pushgateway::start();
        let pg_down = FaultProxy::start(pg.port(), ProxyMode::Refuse);
        let pg_hang = FaultProxy::start(pg.port(), ProxyMode::Stall);

        let config = |pushgateway: &str, top: &str, slurm: &str| {
            format!(
                "pushgateway = \"{pushgateway}\"\ninterval = \"300ms\"\nlock_dir = \"{}\"\n{top}\n\
                 [slurm]\nrun_as = \"nobody\"\nstate_dir = \"{}\"\n{slurm}\n",
                p("locks").display(),
                p("agents").display()
            )
        };
        let configs = [
            ("default", config(&pg.url, "", "")),
            ("all", config(&pg.url, "", "select = \"all\"")),
            (
                "partition",
                config(
                    &pg.url,
                    "",
                    "select = \"partition\"\npartitions = [\"arkouda\"]",
                ),
            ),
            (
                "conninfo",
                config(
                    &pg.url,
                    "",
                    "connection_info = \"%w/arkouda-%j.connection-info\"",
                ),
            ),
            ("pgdown", config(&pg_down.url(), "", "")),
            ("pghang", config(&pg_hang.url(), "", "")),
            ("broken", "interval = \n[slurm\n".to_string()),
        ];
        for (n, text) in &configs {
            write_file(&p(&format!("config/{n}.toml")), text, 0o644);
        }

        for hook in ["prolog", "epilog", "epilog-slurmctld"] {
            let wrapper = format!(
                r#"#!/bin/bash
# Test wrapper for {hook}: what a site's wrapper would set, plus per-job test knobs.
set -f
export ARKOUDA_PUSH_AGENT_BIN={w}/bin/arkouda-push-agent
export ARKOUDA_PUSH_AGENT_CONFIG={w}/config/default.toml
export ARKOUDA_PUSH_AGENT_HOOK_LOG={w}/hooks.log
for word in ${{SLURM_JOB_COMMENT//,/ }}; do
    case $word in
    apa-config=*) export ARKOUDA_PUSH_AGENT_CONFIG={w}/config/${{word#apa-config=}}.toml ;;
    apa-port=*) export ARKOUDA_PUSH_AGENT_METRICS_PORT=${{word#apa-port=}} ;;
    apa-bin=missing) export ARKOUDA_PUSH_AGENT_BIN={w}/bin/no-such-binary ;;
    apa-bin=hang) export ARKOUDA_PUSH_AGENT_BIN={w}/bin/hanging-agent ;;
    apa-skip={hook})
        echo "test arkouda-push-agent[$SLURM_JOB_ID] {hook}: skipped by the test wrapper" >>{w}/hooks.log
        exit 0 ;;
    esac
done
exec {repo}/slurm/{hook}.sh
"#,
                w = w.0.display(),
                repo = REPO,
            );
            write_file(&p(&format!("hooks/{hook}")), &wrapper, 0o755);
        }

        // An "agent binary" that never returns, to prove the scripts' time bounds. It is
        // the simulator, which ignores the arguments and ends on SIGTERM.
        write_file(
            &p("bin/hanging-agent"),
            &format!(
                "#!/bin/bash\nexec {}/bin/arkouda-sim --metrics-port 0\n",
                w.0.display()
            ),
            0o755,
        );

        // A fake arkouda_server for arkouda-srun: records its arguments and environment,
        // runs the simulator on METRICS_SERVER_PORT, exits $FAKE_EXIT once $FAKE_STOP exists.
        write_file(
            &p("bin/fake-arkouda-server"),
            &format!(
                r#"#!/bin/bash
printf '%s\n' "$@" >"$FAKE_RECORD.args"
echo "$METRICS_SERVER_PORT" >"$FAKE_RECORD.port"
{w}/bin/arkouda-sim --metrics-port "$METRICS_SERVER_PORT" --server-hostname 127.0.0.1 --locales 4 &
sim=$!
trap 'kill -TERM $sim; wait $sim; exit 143' TERM
while [ ! -e "$FAKE_STOP" ]; do sleep 0.1; done
kill -TERM $sim
wait $sim
exit "${{FAKE_EXIT:-0}}"
"#,
                w = w.0.display()
            ),
            0o755,
        );

        let hook = |h: &str| Some(format!("{}/hooks/{h}", w.0.display()));
        let hooks = Hooks {
            prolog: hook("prolog"),
            epilog: hook("epilog"),
            epilog_slurmctld: hook("epilog-slurmctld"),
        };
        let cluster = Cluster {
            slurm: SlurmCluster::start_in(w, "apatest", &hooks, &["arkouda"]),
            pg,
            _pg_down: pg_down,
            _pg_hang: pg_hang,
            jobs_started: AtomicUsize::new(0),
            submit_lock: Mutex::new(()),
        };
        eprintln!("slurm cluster and its hooks up in {:?}", started.elapsed());
        cluster
    }

    fn submit(&self, job: &JobSpec) -> String {
        let _serial = self.submit_lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut args = Vec::new();
        if let Some(c) = &job.comment {
            args.push(format!("--comment={c}"));
        }
        if let Some(part) = job.partition {
            args.push(format!("--partition={part}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let id = self
            .slurm
            .submit_env(&job.name, &job.script, &args, &job.env);
        self.jobs_started.fetch_add(1, Ordering::SeqCst);
        id
    }

    fn hook_lines(&self, id: &str, hook: &str) -> Vec<String> {
        let tag = format!("arkouda-push-agent[{id}] {hook}: ");
        std::fs::read_to_string(self.path("hooks.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    }

    fn hook_log(&self, id: &str, hook: &str) -> String {
        self.hook_lines(id, hook).join("\n")
    }

    /// Waits for the hook's `end` line; returns its exit code and duration.
    fn wait_hook_end(&self, id: &str, hook: &str) -> HookEnd {
        eventually(HOOK_DONE, &format!("the {hook} of job {id} to end"), || {
            for line in self.hook_lines(id, hook) {
                let Some(rest) = line.split(&format!("{hook}: end rc=")).nth(1) else {
                    continue;
                };
                let mut words = rest.split_whitespace();
                let rc = words.next().and_then(|r| r.parse().ok());
                let ms = words
                    .nth(1)
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(u64::MAX);
                return Ok(HookEnd { rc, ms });
            }
            Err(self.hook_log(id, hook))
        })
    }

    fn wait_hook_line(&self, id: &str, hook: &str, needle: &str) -> String {
        eventually(
            HOOK_DONE,
            &format!("`{needle}` in the {hook} log of job {id}"),
            || {
                self.hook_lines(id, hook)
                    .into_iter()
                    .find(|l| l.contains(needle))
                    .ok_or_else(|| self.hook_log(id, hook))
            },
        )
    }

    /// The prolog ended with `rc` in under 5 s and the job ran.
    fn assert_prolog(&self, id: &str, rc: Option<i32>) -> HookEnd {
        let end = self.wait_hook_end(id, "prolog");
        assert_eq!(
            end.rc,
            rc,
            "prolog of job {id}:\n{}",
            self.hook_log(id, "prolog")
        );
        assert!(end.ms < 5000, "prolog of job {id} took {} ms", end.ms);
        end
    }

    fn assert_epilog(&self, id: &str, rc: Option<i32>) -> HookEnd {
        let end = self.wait_hook_end(id, "epilog");
        assert_eq!(
            end.rc,
            rc,
            "epilog of job {id}:\n{}",
            self.hook_log(id, "epilog")
        );
        assert!(end.ms < 10_000, "epilog of job {id} took {} ms", end.ms);
        end
    }

    fn assert_node_not_drained(&self) {
        let (_, state) = self.slurm("/usr/bin/sinfo", &["-h", "-o", "%T"]);
        assert!(
            !state.contains("drain") && !state.contains("down"),
            "node state `{}`; slurmd log:\n{}",
            state.trim(),
            self.tail(&format!("log/slurmd-{}.log", self.node))
        );
    }

    /// The group every prolog-started agent pushes: exactly these grouping labels.
    fn group_labels(&self, id: &str) -> BTreeMap<String, String> {
        labels(&[
            ("job", "arkouda"),
            ("slurm_job_id", id),
            ("cluster", &self.name),
        ])
    }

    /// Waits for the job's one group to show a live server with `locales` locales, then
    /// checks its grouping labels and that every locale has its series.
    fn wait_live_group(&self, id: &str, locales: usize, want_labels: &BTreeMap<String, String>) {
        let n = locales.to_string();
        let deadline = JOB_START + Duration::from_secs(20);
        let g = eventually(
            deadline,
            &format!("job {id}'s group with {n} locales"),
            || {
                let groups = self.pg.job_groups(id);
                match groups.as_slice() {
                    [g] if g.value("arkouda_up", &[]) == Some(1.0)
                        && g.value("arkouda_locales", &[]) == Some(locales as f64) =>
                    {
                        Ok(g.clone())
                    }
                    other => Err(format!(
                        "{:?}; job state {}",
                        other.iter().map(|g| &g.labels).collect::<Vec<_>>(),
                        self.job_field(id, "JobState")
                    )),
                }
            },
        );
        assert_eq!(&g.labels, want_labels, "grouping labels of job {id}");
        for l in 0..locales {
            let l = l.to_string();
            for name in [
                "arkouda_locale_memory_used_bytes",
                "arkouda_locale_info",
                "arkouda_locale_physical_memory_bytes",
            ] {
                assert!(
                    g.value(name, &[("locale", &l)]).is_some(),
                    "job {id}: no {name}{{locale=\"{l}\"}}; series: {:?}",
                    g.all(name)
                );
            }
        }
        assert_eq!(
            g.all("arkouda_locale_info").len(),
            locales,
            "job {id}: one arkouda_locale_info per locale"
        );
    }

    /// The one agent of a job, started by the Prolog: unprivileged, detached, no pipes.
    fn prolog_agent(&self, id: &str) -> i32 {
        let agents =
            eventually(
                Duration::from_secs(5),
                &format!("job {id}'s agent"),
                || match agents_of(id).as_slice() {
                    [a] => Ok(a.clone()),
                    other => Err(format!("{other:?}")),
                },
            );
        let ProcInfo { pid, uid, argv, .. } = agents;
        assert_eq!(uid, NOBODY_UID, "the agent runs as slurm.run_as: {argv:?}");
        assert_eq!(
            proc_field(pid, 6),
            Some(i64::from(pid)),
            "the agent leads its own session (it survives the Prolog's process group)"
        );
        for fd in [0, 1, 2] {
            let target = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
            assert_eq!(
                target,
                PathBuf::from("/dev/null"),
                "the agent's fd {fd} (it must hold none of the Prolog's pipes)"
            );
        }
        let pid_file = self.path(&format!("agents/{id}.pid"));
        let recorded = std::fs::read_to_string(&pid_file).unwrap_or_default();
        assert_eq!(recorded.trim(), pid.to_string(), "{}", pid_file.display());
        pid
    }

    fn assert_no_agent(&self, id: &str) {
        let left = agents_of(id);
        assert!(left.is_empty(), "agents of job {id} left: {left:?}");
    }

    /// A job whose script runs the simulator as its Arkouda server until `stop` exists.
    fn sim_job(&self, name: &str, comment: Option<String>, port: u16, locales: usize) -> SimJob {
        self.sim_job_in(name, comment, None, port, locales, "")
    }

    fn sim_job_in(
        &self,
        name: &str,
        comment: Option<String>,
        partition: Option<&'static str>,
        port: u16,
        locales: usize,
        sim_args: &str,
    ) -> SimJob {
        let stop = self.path(&format!("jobs/{name}.stop"));
        let replies = self.path(&format!("jobs/{name}.replies"));
        let script = format!(
            r#"#!/bin/bash
{w}/bin/arkouda-sim --metrics-port {port} --locales {locales} --reply-log {replies} {sim_args} &
sim=$!
trap 'kill -TERM $sim 2>/dev/null; wait $sim; exit 143' TERM
while [ ! -e {stop} ]; do sleep 0.1; done
kill -TERM $sim
wait $sim
exit 0
"#,
            w = self.w.0.display(),
            replies = replies.display(),
            stop = stop.display(),
        );
        let id = self.submit(&JobSpec {
            name: name.to_string(),
            comment,
            partition,
            script,
            env: Vec::new(),
        });
        SimJob { id, stop, replies }
    }
}

struct JobSpec {
    name: String,
    comment: Option<String>,
    partition: Option<&'static str>,
    script: String,
    env: Vec<(String, String)>,
}

struct SimJob {
    id: String,
    stop: PathBuf,
    replies: PathBuf,
}

impl SimJob {
    fn finish(&self) {
        write_file(&self.stop, "", 0o644);
    }

    fn replies(&self) -> usize {
        std::fs::read_to_string(&self.replies)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

fn marker(port: u16, extra: &str) -> Option<String> {
    Some(format!("arkouda-metrics,apa-port={port}{extra}"))
}

// ------------------------------------------------------------------------------------
// Scenarios

/// An opted-in job: while it runs, its group with every locale's series; within 5 s of
/// the Epilog the group is gone and no agent is left.
fn opted_in_job(c: &Cluster) {
    let port = free_port();
    let job = c.sim_job("opted-in", marker(port, " a-word"), port, 3);
    c.assert_prolog(&job.id, Some(0));
    c.wait_live_group(&job.id, 3, &c.group_labels(&job.id));
    c.prolog_agent(&job.id);
    job.finish();
    c.assert_epilog(&job.id, Some(0));
    c.pg.wait_gone(&job.id, Duration::from_secs(5));
    c.assert_no_agent(&job.id);
    let log = c.hook_log(&job.id, "epilog");
    assert!(
        log.contains("agent log: ") && log.contains("group deleted"),
        "{log}"
    );
    assert!(!c.path(&format!("agents/{}.pid", job.id)).exists());
    assert_eq!(
        c.wait_state(&job.id, &["COMPLETED"], HOOK_DONE),
        "COMPLETED"
    );
    c.wait_hook_end(&job.id, "epilog-slurmctld");
}

/// scancel of a running job: the same outcome.
fn scancel_job(c: &Cluster) {
    let port = free_port();
    let job = c.sim_job("scancel", marker(port, ""), port, 2);
    c.wait_live_group(&job.id, 2, &c.group_labels(&job.id));
    c.prolog_agent(&job.id);
    let (ok, out) = c.slurm("/usr/bin/scancel", &[&job.id]);
    assert!(ok, "scancel: {out}");
    c.assert_epilog(&job.id, Some(0));
    c.pg.wait_gone(&job.id, Duration::from_secs(5));
    c.assert_no_agent(&job.id);
    assert_eq!(
        c.wait_state(&job.id, &["CANCELLED"], HOOK_DONE),
        "CANCELLED"
    );
}

/// The agent SIGKILLed mid-job leaves its group; the Epilog's backstop removes it (the
/// controller's backstop is off for this job, to prove it is the node's).
fn agent_killed_epilog_backstop(c: &Cluster) {
    let port = free_port();
    let job = c.sim_job(
        "killed",
        marker(port, ",apa-skip=epilog-slurmctld"),
        port,
        2,
    );
    c.wait_live_group(&job.id, 2, &c.group_labels(&job.id));
    let pid = c.prolog_agent(&job.id);
    kill9(pid);
    eventually(Duration::from_secs(5), "the agent to die", || {
        if agents_of(&job.id).is_empty() {
            Ok(())
        } else {
            Err("alive".into())
        }
    });
    assert_eq!(
        c.pg.job_groups(&job.id).len(),
        1,
        "a killed agent leaves its group"
    );
    job.finish();
    c.assert_epilog(&job.id, Some(0));
    c.pg.wait_gone(&job.id, Duration::from_secs(5));
    let log = c.hook_log(&job.id, "epilog");
    assert!(log.contains("the pid file names no running agent"), "{log}");
    assert!(
        log.contains("backstop delete done (by grouping key)"),
        "{log}"
    );
    c.wait_hook_line(&job.id, "epilog-slurmctld", "skipped by the test wrapper");
    c.assert_no_agent(&job.id);
}

/// A node whose Epilog never runs (crashed, agent gone with it): the controller's
/// EpilogSlurmctld removes the group.
fn node_epilog_missing_ctld_backstop(c: &Cluster) {
    let port = free_port();
    let job = c.sim_job("ctld", marker(port, ",apa-skip=epilog"), port, 2);
    c.wait_live_group(&job.id, 2, &c.group_labels(&job.id));
    kill9(c.prolog_agent(&job.id));
    job.finish();
    c.wait_hook_line(&job.id, "epilog", "skipped by the test wrapper");
    let end = c.wait_hook_end(&job.id, "epilog-slurmctld");
    let log = c.hook_log(&job.id, "epilog-slurmctld");
    assert_eq!(end.rc, Some(0), "{log}");
    assert!(end.ms < 6000, "EpilogSlurmctld took {} ms", end.ms);
    c.pg.wait_gone(&job.id, Duration::from_secs(5));
    assert!(
        log.contains("backstop delete done (by grouping key)"),
        "{log}"
    );
}

/// Jobs the site's rule does not select: no agent, nothing pushed, the server never polled.
fn assert_not_selected(c: &Cluster, job: &SimJob, why: &str) {
    c.assert_prolog(&job.id, Some(0));
    let line = c.wait_hook_line(&job.id, "prolog", "no agent for this job");
    assert!(line.contains(why), "{line}");
    c.wait_state(&job.id, &["RUNNING"], JOB_START);
    c.assert_no_agent(&job.id);
    assert!(c.pg.job_groups(&job.id).is_empty());
    job.finish();
    c.assert_epilog(&job.id, Some(0));
    let end = c.wait_hook_end(&job.id, "epilog-slurmctld");
    assert_eq!(end.rc, Some(0));
    assert!(c
        .hook_log(&job.id, "epilog-slurmctld")
        .contains("nothing to delete: not selected"));
    c.assert_no_agent(&job.id);
    assert!(c.pg.job_groups(&job.id).is_empty());
    assert_eq!(job.replies(), 0, "nothing polled the job's server");
}

fn not_opted_in(c: &Cluster) {
    let port = free_port();
    // The marker must be a whole word: neither a longer word nor a substring counts.
    let comment = format!("arkouda-metrics-later,apa-port={port} no-arkouda-metrics");
    let job = c.sim_job("not-opted-in", Some(comment), port, 2);
    assert_not_selected(
        c,
        &job,
        "its comment does not carry `arkouda-metrics` as a word",
    );
    let port = free_port();
    let bare = c.sim_job("no-comment", None, port, 1);
    assert_not_selected(c, &bare, "the job has no comment");
}

/// select = "all": a job without the marker gets an agent.
fn select_all(c: &Cluster) {
    let port = free_port();
    let job = c.sim_job(
        "select-all",
        Some(format!("apa-config=all,apa-port={port}")),
        port,
        2,
    );
    c.wait_live_group(&job.id, 2, &c.group_labels(&job.id));
    assert!(c.hook_log(&job.id, "prolog").contains("select = all"));
    job.finish();
    c.assert_epilog(&job.id, Some(0));
    c.pg.wait_gone(&job.id, Duration::from_secs(5));
    c.assert_no_agent(&job.id);
}

/// select = "partition": a job in a listed partition gets an agent, one elsewhere none,
/// whatever their comments.
fn select_partition(c: &Cluster) {
    let (p1, p2) = (free_port(), free_port());
    let inside = c.sim_job_in(
        "partition-in",
        Some(format!("apa-config=partition,apa-port={p1}")),
        Some("arkouda"),
        p1,
        2,
        "",
    );
    let outside = c.sim_job_in(
        "partition-out",
        Some(format!(
            "apa-config=partition,apa-port={p2},arkouda-metrics"
        )),
        Some("debug"),
        p2,
        2,
        "",
    );
    c.wait_live_group(&inside.id, 2, &c.group_labels(&inside.id));
    assert!(c
        .hook_log(&inside.id, "prolog")
        .contains("partition `arkouda` is selected"));
    assert_not_selected(c, &outside, "partition `debug` is not one of [\"arkouda\"]");
    inside.finish();
    c.assert_epilog(&inside.id, Some(0));
    c.pg.wait_gone(&inside.id, Duration::from_secs(5));
    c.assert_no_agent(&inside.id);
}

/// Two jobs at once, their servers found through the connection-info template: each has
/// its own group; ending one leaves the other's intact and still updated.
fn two_jobs_at_once(c: &Cluster) {
    let (p1, p2) = (free_port(), free_port());
    let conn = "--server-hostname 127.0.0.1 --connection-info \"$PWD/arkouda-$SLURM_JOB_ID.connection-info\"";
    let a = c.sim_job_in(
        "two-a",
        Some(format!("arkouda-metrics,apa-config=conninfo,apa-port={p1}")),
        None,
        p1,
        2,
        conn,
    );
    let b = c.sim_job_in(
        "two-b",
        Some(format!("arkouda-metrics,apa-config=conninfo,apa-port={p2}")),
        None,
        p2,
        4,
        conn,
    );
    c.wait_live_group(&a.id, 2, &c.group_labels(&a.id));
    c.wait_live_group(&b.id, 4, &c.group_labels(&b.id));
    for (j, name) in [(&a, "two-a"), (&b, "two-b")] {
        let argv = &agents_of(&j.id)[0].argv;
        let want = c.path(&format!("work/{name}/arkouda-{}.connection-info", j.id));
        assert!(
            argv.windows(2)
                .any(|w| w[0] == "--connection-info" && Path::new(&w[1]) == want),
            "the agent reads the job's connection-info file: {argv:?}"
        );
    }
    a.finish();
    c.assert_epilog(&a.id, Some(0));
    c.pg.wait_gone(&a.id, Duration::from_secs(5));
    // b is untouched and still being pushed.
    let before = b.replies();
    eventually(Duration::from_secs(10), "job b to be polled on", || {
        if b.replies() > before {
            Ok(())
        } else {
            Err(format!("{} replies", b.replies()))
        }
    });
    c.wait_live_group(&b.id, 4, &c.group_labels(&b.id));
    assert_eq!(agents_of(&b.id).len(), 1);
    b.finish();
    c.assert_epilog(&b.id, Some(0));
    c.pg.wait_gone(&b.id, Duration::from_secs(5));
    c.assert_no_agent(&a.id);
    c.assert_no_agent(&b.id);
}

fn srun_job(c: &Cluster, name: &str, exit: i32) -> (String, PathBuf, PathBuf, u16) {
    let port = free_port();
    let config = c.path(&format!("config/srun-{name}.toml"));
    write_file(
        &config,
        &format!(
            "pushgateway = \"{}\"\ninterval = \"300ms\"\nmetrics_port = {port}\nlock_dir = \"{}\"\n",
            c.pg.url,
            c.path("locks").display()
        ),
        0o644,
    );
    let record = c.path(&format!("jobs/{name}.fake"));
    let stop = c.path(&format!("jobs/{name}.stop"));
    let script = format!(
        "#!/bin/bash\nexec {REPO}/slurm/arkouda-srun -nl 4 --ServerDaemon.daemonTypes=ServerDaemonType.DEFAULT,ServerDaemonType.METRICS\n"
    );
    let w = |p: &Path| p.display().to_string();
    let id = c.submit(&JobSpec {
        name: name.to_string(),
        comment: None,
        partition: None,
        script,
        env: vec![
            (
                "ARKOUDA_PUSH_AGENT_BIN".into(),
                w(&c.path("bin/arkouda-push-agent")),
            ),
            ("ARKOUDA_PUSH_AGENT_CONFIG".into(), w(&config)),
            (
                "ARKOUDA_SERVER".into(),
                w(&c.path("bin/fake-arkouda-server")),
            ),
            ("FAKE_RECORD".into(), w(&record)),
            ("FAKE_STOP".into(), w(&stop)),
            ("FAKE_EXIT".into(), exit.to_string()),
        ],
    });
    (id, record, stop, port)
}

/// arkouda-srun in a batch job: the group while the server runs, none after; the
/// server's arguments unchanged, METRICS_SERVER_PORT from the config, its exit code
/// passed through.
fn arkouda_srun_exit_code(c: &Cluster) {
    let (id, record, stop, port) = srun_job(c, "srun-exit", 7);
    c.wait_live_group(&id, 4, &c.group_labels(&id));
    let args = std::fs::read_to_string(record.with_extension("fake.args")).unwrap();
    assert_eq!(
        args,
        "-nl\n4\n--ServerDaemon.daemonTypes=ServerDaemonType.DEFAULT,ServerDaemonType.METRICS\n"
    );
    let seen_port = std::fs::read_to_string(record.with_extension("fake.port")).unwrap();
    assert_eq!(seen_port.trim(), port.to_string());
    let agents = agents_of(&id);
    assert_eq!(agents.len(), 1, "{agents:?}");
    assert!(
        agents[0].argv.iter().any(|a| a == "--watch-pid"),
        "{agents:?}"
    );
    // Not selected by the site's rule: the Prolog started nothing, arkouda-srun did.
    assert!(c.hook_log(&id, "prolog").contains("no agent for this job"));
    write_file(&stop, "", 0o644);
    c.pg.wait_gone(&id, Duration::from_secs(5));
    c.wait_state(&id, &["FAILED", "COMPLETED"], HOOK_DONE);
    assert_eq!(
        c.job_field(&id, "ExitCode"),
        "7:0",
        "the server's exit code"
    );
    c.assert_epilog(&id, Some(0));
    c.assert_no_agent(&id);
}

/// scancel of an arkouda-srun job removes the group.
fn arkouda_srun_scancel(c: &Cluster) {
    let (id, _record, _stop, _port) = srun_job(c, "srun-scancel", 0);
    c.wait_live_group(&id, 4, &c.group_labels(&id));
    let (ok, out) = c.slurm("/usr/bin/scancel", &[&id]);
    assert!(ok, "{out}");
    c.pg.wait_gone(&id, Duration::from_secs(5));
    c.wait_state(&id, &["CANCELLED"], HOOK_DONE);
    c.assert_epilog(&id, Some(0));
    c.assert_no_agent(&id);
}

/// The Prolog and Epilog exit 0, in time, and say why, when the binary is missing or
/// hangs, the config is broken, or the Pushgateway is down or hangs; the node is never
/// drained.
fn hooks_survive_failures(c: &Cluster) {
    let job = |name: &str, knob: &str| {
        let port = free_port();
        c.sim_job(
            name,
            Some(format!("arkouda-metrics,apa-port={port},{knob}")),
            port,
            1,
        )
    };
    let missing = job("fail-bin", "apa-bin=missing");
    let stuck = job("fail-stuck", "apa-bin=hang");
    let broken = job("fail-config", "apa-config=broken");
    let down = job("fail-pgdown", "apa-config=pgdown");
    let hang = job("fail-pghang", "apa-config=pghang");

    c.assert_prolog(&missing.id, None);
    c.wait_hook_line(
        &missing.id,
        "prolog",
        "no-such-binary is missing or not executable",
    );
    // A binary that never returns is killed by the script's own timeout, inside the budget.
    let end = c.assert_prolog(&stuck.id, Some(124));
    assert!(end.ms >= 2900, "the prolog's bound is 3 s: {} ms", end.ms);
    c.wait_hook_line(
        &stuck.id,
        "prolog",
        "did not finish within 3s and was killed",
    );
    c.assert_prolog(&broken.id, Some(2));
    c.wait_hook_line(&broken.id, "prolog", "cannot read config file");
    c.wait_hook_line(&broken.id, "prolog", "configuration error");
    for j in [&down, &hang] {
        c.assert_prolog(&j.id, Some(0));
        c.prolog_agent(&j.id);
    }
    // The agents cannot push, but they do poll their servers.
    for j in [&down, &hang] {
        eventually(Duration::from_secs(20), "the agent to poll", || {
            if j.replies() > 0 {
                Ok(())
            } else {
                Err("no replies".into())
            }
        });
    }
    for j in [&missing, &stuck, &broken, &down, &hang] {
        c.wait_state(&j.id, &["RUNNING"], JOB_START);
        j.finish();
    }
    c.assert_epilog(&missing.id, None);
    let end = c.assert_epilog(&stuck.id, Some(124));
    assert!(end.ms >= 7900, "the epilog's bound is 8 s: {} ms", end.ms);
    c.wait_hook_line(
        &stuck.id,
        "epilog",
        "did not finish within 8s and was killed",
    );
    let end = c.wait_hook_end(&stuck.id, "epilog-slurmctld");
    // 137: slurmctld's hooks inherit a signal mask that blocks SIGTERM, so `timeout`'s
    // SIGKILL one second later is what ends it; the bound holds either way.
    assert!(
        matches!(end.rc, Some(124 | 137)) && end.ms < 6500,
        "EpilogSlurmctld with a stuck binary: {end:?}"
    );
    c.assert_epilog(&broken.id, Some(2));
    for j in [&down, &hang] {
        let end = c.wait_hook_end(&j.id, "epilog");
        let log = c.hook_log(&j.id, "epilog");
        assert!(
            end.ms < 10_000,
            "epilog of {} took {} ms:\n{log}",
            j.id,
            end.ms
        );
        assert_eq!(end.rc, Some(1), "{log}");
        assert!(log.contains("backstop delete"), "{log}");
        c.assert_no_agent(&j.id);
    }
    for j in [&missing, &stuck, &broken, &down, &hang] {
        assert_eq!(
            c.wait_state(&j.id, &["COMPLETED"], HOOK_DONE),
            "COMPLETED",
            "job {}",
            j.id
        );
        assert!(c.pg.job_groups(&j.id).is_empty());
    }
    c.assert_node_not_drained();
}

type Scenario = fn(&Cluster);
/// A scenario's name, how long it took, and its panic message if it failed.
type Outcome = (String, Duration, Result<(), String>);

const SCENARIOS: &[(&str, Scenario)] = &[
    ("hooks_survive_failures", hooks_survive_failures),
    ("opted_in_job", opted_in_job),
    ("scancel_job", scancel_job),
    ("agent_killed_epilog_backstop", agent_killed_epilog_backstop),
    (
        "node_epilog_missing_ctld_backstop",
        node_epilog_missing_ctld_backstop,
    ),
    ("not_opted_in", not_opted_in),
    ("select_all", select_all),
    ("select_partition", select_partition),
    ("two_jobs_at_once", two_jobs_at_once),
    ("arkouda_srun_exit_code", arkouda_srun_exit_code),
    ("arkouda_srun_scancel", arkouda_srun_scancel),
];

/// Every scenario against one real Slurm cluster.
#[test]
fn slurm_cluster() {
    let only: Option<Vec<String>> = std::env::var("APA_SLURM_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let chosen: Vec<&(&str, Scenario)> = SCENARIOS
        .iter()
        .filter(|(n, _)| only.as_ref().is_none_or(|o| o.iter().any(|x| x == n)))
        .collect();
    assert!(!chosen.is_empty(), "APA_SLURM_ONLY names no scenario");
    let started = Instant::now();
    let cluster = Cluster::start();
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Outcome>> = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some((name, f)) = chosen.get(i) else {
                    break;
                };
                let t = Instant::now();
                let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&cluster))).map_err(|e| {
                    e.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "panic".into())
                });
                eprintln!(
                    "scenario {name}: {} in {:.1?}",
                    if r.is_ok() { "ok" } else { "FAILED" },
                    t.elapsed()
                );
                results.lock().unwrap_or_else(|e| e.into_inner()).push((
                    name.to_string(),
                    t.elapsed(),
                    r,
                ));
            });
        }
    });
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let failed: Vec<&Outcome> = results.iter().filter(|r| r.2.is_err()).collect();
    eprintln!(
        "{} scenarios, {} jobs, {} failed, {:.1?} in all",
        results.len(),
        cluster.jobs_started.load(Ordering::SeqCst),
        failed.len(),
        started.elapsed()
    );
    if std::env::var_os("APA_SLURM_SHOW_LOG").is_some() {
        let log = std::fs::read_to_string(cluster.path("hooks.log")).unwrap_or_default();
        eprintln!("----- hooks.log -----\n{log}");
    }
    if !failed.is_empty() {
        eprintln!("----- hooks.log -----\n{}", cluster.tail("hooks.log"));
        eprintln!(
            "----- slurmctld.log -----\n{}",
            cluster.tail("log/slurmctld.log")
        );
        eprintln!(
            "----- slurmd.log -----\n{}",
            cluster.tail(&format!("log/slurmd-{}.log", cluster.node))
        );
        let msgs: Vec<String> = failed
            .iter()
            .map(|(n, _, r)| format!("{n}: {}", r.as_ref().err().cloned().unwrap_or_default()))
            .collect();
        panic!("failed scenarios:\n{}", msgs.join("\n"));
    }
    // Orderly end: nothing of the cluster's jobs is left running.
    drop(cluster);
}

// ------------------------------------------------------------------------------------
// systemd units

fn systemd_analyze() -> &'static str {
    let bin = "/usr/bin/systemd-analyze";
    require(bin, "systemd");
    bin
}

/// The units as shipped, in a directory of their own, with ExecStart= pointing at the
/// built binary: `verify` fails when the ExecStart= binary does not exist, and the real
/// path /usr/bin/arkouda-push-agent exists only once the package is installed.
fn unit_dir() -> TempDir {
    let dir = TempDir::new("units");
    for name in [
        "arkouda-push-agent@.service",
        "arkouda-push-agent.service",
        "arkouda-push-agent-sweep.service",
        "arkouda-push-agent-sweep.timer",
    ] {
        let text = std::fs::read_to_string(format!("{REPO}/systemd/{name}")).unwrap();
        let exec = if name.contains("sweep") {
            "ExecStart=/usr/bin/arkouda-push-agent sweep"
        } else {
            "ExecStart=/usr/bin/arkouda-push-agent run"
        };
        assert!(name.ends_with(".timer") || text.contains(exec), "{name}");
        std::fs::write(
            dir.path(name),
            text.replace("/usr/bin/arkouda-push-agent", AGENT),
        )
        .unwrap();
    }
    dir
}

#[test]
fn systemd_units_verify_without_output() {
    let bin = systemd_analyze();
    let dir = unit_dir();
    let template = std::fs::read_to_string(dir.path("arkouda-push-agent@.service")).unwrap();
    assert!(template.contains("EnvironmentFile=/run/arkouda-push-agent/%i.env"));
    // The instance is the run id (`42`, `42.r1`): the job id and run come from the file.
    assert!(template.contains(
        "--job-id ${ARKOUDA_PUSH_AGENT_JOB_ID} --restart-count ${ARKOUDA_PUSH_AGENT_RESTART_COUNT}"
    ));
    // /run read-only but for the agent's locks and its own keys file.
    assert!(template.contains("ReadOnlyPaths=/run\n"));
    assert!(template.contains(
        "ReadWritePaths=-/run/arkouda-push-agent/locks -/run/arkouda-push-agent/%i.keys\n"
    ));
    assert!(!template.contains("/run/lock"));
    // A template is checked as one of its instances.
    for unit in [
        "arkouda-push-agent@4242.service",
        "arkouda-push-agent@4242.r1.service",
        "arkouda-push-agent.service",
        "arkouda-push-agent-sweep.service",
        "arkouda-push-agent-sweep.timer",
    ] {
        let out = Command::new(bin)
            .arg("verify")
            .arg(dir.path(unit))
            .current_dir(&dir.0)
            .output()
            .expect("systemd-analyze verify");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.trim().is_empty(),
            "systemd-analyze verify {unit} printed:\n{text}"
        );
    }
}

#[test]
fn systemd_units_exposure_at_most_2() {
    let bin = systemd_analyze();
    let dir = unit_dir();
    for unit in [
        "arkouda-push-agent@4242.service",
        "arkouda-push-agent.service",
        "arkouda-push-agent-sweep.service",
    ] {
        let out = Command::new(bin)
            .args(["security", "--offline=yes"])
            .arg(dir.path(unit))
            .current_dir(&dir.0)
            .output()
            .expect("systemd-analyze security");
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| {
                panic!(
                    "no exposure level for {unit}:\n{text}{}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        assert!(score <= 2.0, "{unit}: exposure {score} > 2.0\n{text}");
    }
}
