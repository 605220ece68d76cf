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

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::*;
use crate::slurm_cluster::{
    hook_end, kill9, mkdir, processes, require, write_file, HookEnd, Hooks, ProcInfo, Site,
    SlurmCluster,
};
use arkouda_push_agent::slurm::actions::is_agent_of;

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
        // The job summaries: written by the agent's user only, read by the controller.
        mkdir(&p("summaries"), 0o755);
        std::os::unix::fs::chown(p("summaries"), Some(NOBODY_UID), Some(NOBODY_UID)).unwrap();

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
            (
                "admincomment",
                config(
                    &pg.url,
                    &format!("summary_file = \"{}/%j.json\"", p("summaries").display()),
                    "admin_comment = true",
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
# What a controller has in its default place (sacctmgr reads it); slurmctld gives none.
export SLURM_CONF=${{SLURM_CONF:-{w}/etc/slurm.conf}}
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
        // Job accounting (slurmdbd) for `slurm.admin_comment`.
        let site = Site {
            partitions: vec![
                "PartitionName=arkouda Nodes=ALL MaxTime=INFINITE State=UP".to_string()
            ],
            accounting: true,
            ..Site::default()
        };
        let cluster = Cluster {
            slurm: SlurmCluster::start_site(w, "apatest", &hooks, site),
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
            self.hook_lines(id, hook)
                .iter()
                .find_map(|l| hook_end(l, hook))
                .ok_or_else(|| self.hook_log(id, hook))
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
        self.assert_hook(id, "prolog", rc, 5000)
    }

    fn assert_epilog(&self, id: &str, rc: Option<i32>) -> HookEnd {
        self.assert_hook(id, "epilog", rc, 10_000)
    }

    /// The hook ended with `rc` in under `within_ms`.
    fn assert_hook(&self, id: &str, hook: &str, rc: Option<i32>, within_ms: u64) -> HookEnd {
        let end = self.wait_hook_end(id, hook);
        assert_eq!(
            end.rc,
            rc,
            "{hook} of job {id}:\n{}",
            self.hook_log(id, hook)
        );
        assert!(end.ms < within_ms, "{hook} of job {id} took {} ms", end.ms);
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

fn srun_job(
    c: &Cluster,
    name: &str,
    exit: i32,
    comment: Option<&str>,
) -> (String, PathBuf, PathBuf, u16) {
    let port = free_port();
    let config = c.path(&format!("config/srun-{name}.toml"));
    // The site's config as the job sees it: its state_dir is the hooks'.
    write_file(
        &config,
        &format!(
            "pushgateway = \"{}\"\ninterval = \"300ms\"\nmetrics_port = {port}\nlock_dir = \"{}\"\n[slurm]\nstate_dir = \"{}\"\n",
            c.pg.url,
            c.path("locks").display(),
            c.path("agents").display()
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
        comment: comment.map(str::to_string),
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
    let (id, record, stop, port) = srun_job(c, "srun-exit", 7, None);
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
    let (id, _record, _stop, _port) = srun_job(c, "srun-scancel", 0, None);
    c.wait_live_group(&id, 4, &c.group_labels(&id));
    let (ok, out) = c.slurm("/usr/bin/scancel", &[&id]);
    assert!(ok, "{out}");
    c.pg.wait_gone(&id, Duration::from_secs(5));
    c.wait_state(&id, &["CANCELLED"], HOOK_DONE);
    c.assert_epilog(&id, Some(0));
    c.assert_no_agent(&id);
}

/// arkouda-srun in a job the site's Prolog already gives an agent: one agent for the job,
/// the Prolog's (as `slurm.run_as`, no `--watch-pid`), none from arkouda-srun, which says so;
/// at the job's end the Epilog stops it and the group goes.
fn arkouda_srun_beside_the_prologs_agent(c: &Cluster) {
    let (id, _record, stop, _port) = srun_job(c, "srun-prolog", 0, Some("arkouda-metrics"));
    let out = c.path("jobs/srun-prolog.out");
    let said = eventually(JOB_START, "arkouda-srun to see the Prolog's agent", || {
        let text = std::fs::read_to_string(&out).unwrap_or_default();
        if text.contains("arkouda-srun: the site's Prolog runs this job's agent") {
            Ok(text)
        } else {
            Err(text)
        }
    });
    c.prolog_agent(&id);
    c.pg.wait_group(&id, "the Prolog agent's group", |_| true);
    let agents = agents_of(&id);
    assert_eq!(agents.len(), 1, "one agent for the job: {agents:?}\n{said}");
    assert!(
        !agents[0].argv.iter().any(|a| a == "--watch-pid"),
        "the agent is the Prolog's, not arkouda-srun's: {agents:?}"
    );
    write_file(&stop, "", 0o644);
    c.wait_state(&id, &["COMPLETED"], HOOK_DONE);
    c.pg.wait_gone(&id, Duration::from_secs(5));
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

/// `slurm.admin_comment`: EpilogSlurmctld stores the job's summary in its AdminComment in
/// Slurm's accounting (slurmdbd), within its budget: `sacct` gives back exactly the
/// summary file's JSON. A job whose agent was killed (no summary this run): the hook waits
/// its bound, says where the summary would be, and still ends in time.
fn admin_comment(c: &Cluster) {
    let (p1, p2) = (free_port(), free_port());
    let job = c.sim_job(
        "admin-comment",
        marker(p1, ",apa-config=admincomment"),
        p1,
        3,
    );
    let killed = c.sim_job(
        "admin-comment-killed",
        marker(p2, ",apa-config=admincomment"),
        p2,
        2,
    );
    c.wait_live_group(&job.id, 3, &c.group_labels(&job.id));
    c.wait_live_group(&killed.id, 2, &c.group_labels(&killed.id));
    kill9(c.prolog_agent(&killed.id));
    job.finish();
    killed.finish();
    c.assert_epilog(&job.id, Some(0));

    let end = c.wait_hook_end(&job.id, "epilog-slurmctld");
    let log = c.hook_log(&job.id, "epilog-slurmctld");
    assert_eq!(end.rc, Some(0), "{log}");
    assert!(end.ms < 6000, "EpilogSlurmctld took {} ms:\n{log}", end.ms);
    assert!(
        log.contains("job summary stored in the job's AdminComment")
            && log.contains("backstop delete done (by grouping key)"),
        "{log}"
    );
    let file = c.path(&format!("summaries/{}.json", job.id));
    let text =
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}\n{log}", file.display()));
    let summary: serde_json::Value = serde_json::from_str(&text).unwrap();
    // slurmdbd has the job's record once slurmctld's queue to it has drained.
    let stored = eventually(
        Duration::from_secs(20),
        &format!("job {}'s AdminComment in sacct", job.id),
        || {
            let (_, out) = c.slurm(
                "/usr/bin/sacct",
                &["-j", &job.id, "-X", "-n", "-P", "-o", "AdminComment"],
            );
            arkouda_push_agent::slurm::admin_comment::decode(out.trim()).ok_or(out)
        },
    );
    let stored: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored, summary, "the AdminComment is the summary file");
    assert_eq!(summary["job_id"], job.id.as_str());
    assert_eq!(summary["cluster"], c.name.as_str());
    assert_eq!(summary["server"]["locales"], 3);
    assert!(summary["polls"].as_u64().unwrap() > 0, "{summary}");
    assert!(
        summary["requests"]
            .as_object()
            .is_some_and(|r| !r.is_empty()),
        "{summary}"
    );

    // No summary for this run: the bounded wait, one line, exit 0 in time.
    let none = c.wait_hook_end(&killed.id, "epilog-slurmctld");
    let log = c.hook_log(&killed.id, "epilog-slurmctld");
    assert!(none.ms >= 2500 && none.ms < 6000, "{none:?}:\n{log}");
    assert_eq!(none.rc, Some(0), "{log}");
    let path = c.path(&format!("summaries/{}.json", killed.id));
    assert!(
        log.contains(&format!(
            "this run's job summary did not appear at {} within 2.5s (the file: missing): the AdminComment was not set",
            path.display()
        )),
        "{log}"
    );
    let (_, out) = c.slurm(
        "/usr/bin/sacct",
        &["-j", &killed.id, "-X", "-n", "-P", "-o", "AdminComment"],
    );
    assert_eq!(out.trim(), "", "no AdminComment for job {}", killed.id);
    eprintln!(
        "EpilogSlurmctld with admin_comment: {} ms storing job {}'s summary ({} bytes of JSON); {} ms when none came",
        end.ms,
        job.id,
        text.len(),
        none.ms
    );
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
    (
        "arkouda_srun_beside_the_prologs_agent",
        arkouda_srun_beside_the_prologs_agent,
    ),
    ("admin_comment", admin_comment),
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

// ------------------------------------------------------------------------------------
// A cluster in the shape of a site: three compute nodes (each slurmd in a mount namespace
// of its own, with a private /run and /etc/hosts), PrivateData=jobs, a Hidden and an
// AllowGroups partition, and a second cluster on the same Pushgateway. The scenarios run
// one after another (a node crash must not hit another scenario's job) and print their
// figures. Assertions are on what the Pushgateway holds (read from its /metrics, which its
// request counter leaves out, so that the counter shows every listing of the groups) and
// on which processes run in which node's namespace.

const SITE_NODES: [&str; 3] = ["n1", "n2", "n3"];

fn key_of(cluster: &str, id: &str, run: u32) -> BTreeMap<String, String> {
    let mut k = labels(&[
        ("job", "arkouda"),
        ("slurm_job_id", id),
        ("cluster", cluster),
    ]);
    if run > 0 {
        k.insert("slurm_restart_count".into(), run.to_string());
    }
    k
}

/// Watches groups from another thread (every 50 ms) and counts the samples where one was
/// missing: "never missing while it runs".
struct Watch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<(usize, Vec<String>)>>,
}

impl Watch {
    fn start(pg_url: String, keys: Vec<BTreeMap<String, String>>) -> Watch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let pg_like = PgUrl(pg_url);
            let mut samples = 0;
            let mut missing = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let groups = pg_like.groups();
                samples += 1;
                for k in &keys {
                    if !groups.contains(k) {
                        missing.push(format!("{k:?} at sample {samples}"));
                    }
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (samples, missing)
        });
        Watch {
            stop,
            handle: Some(handle),
        }
    }

    /// Stops watching; panics if a group was ever missing.
    fn finish(mut self, what: &str) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        let (samples, missing) = self.handle.take().unwrap().join().unwrap();
        assert!(
            missing.is_empty(),
            "{what}: a running job's group was missing in {} of {samples} samples: {:?}",
            missing.len(),
            &missing[..missing.len().min(5)]
        );
        samples
    }
}

/// The shared Pushgateway by its URL, read through `GET /metrics` only: its own request
/// counter leaves that out, so the counter shows every listing (`GET /api/v1/metrics`).
struct PgUrl(String);

impl PgUrl {
    fn has(&self, key: &BTreeMap<String, String>) -> bool {
        self.groups().contains(key)
    }

    /// `GET /api/v1/metrics` requests the Pushgateway has answered (its own counter).
    fn listings(&self) -> u64 {
        let text = reqwest::blocking::get(format!("{}/metrics", self.0))
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter(|l| {
                l.starts_with("pushgateway_http_requests_total{")
                    && l.contains("handler=\"api/v1/metrics\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>() as u64
    }

    /// The groups (grouping labels, one `push_time_seconds` each) held.
    fn groups(&self) -> Vec<BTreeMap<String, String>> {
        let text = reqwest::blocking::get(format!("{}/metrics", self.0))
            .and_then(|r| r.text())
            .unwrap_or_default();
        text.lines()
            .filter_map(|l| l.strip_prefix("push_time_seconds{"))
            .filter_map(|l| l.split_once('}'))
            .map(|(labels, _)| {
                labels
                    .split("\",")
                    .filter_map(|kv| kv.split_once("=\""))
                    .map(|(k, v)| (k.to_string(), v.trim_end_matches('"').to_string()))
                    .filter(|(k, _)| k != "instance")
                    .collect()
            })
            .collect()
    }
}

/// One cluster of the site, with its hook wrappers and configs.
struct SiteCluster {
    slurm: SlurmCluster,
    pg_url: String,
}

impl std::ops::Deref for SiteCluster {
    type Target = SlurmCluster;

    fn deref(&self) -> &SlurmCluster {
        &self.slurm
    }
}

impl SiteCluster {
    /// `nodes` empty: one node in this machine's namespace, whose /run is the machine's, so
    /// the state and lock directories are the cluster's own instead of the defaults.
    fn start(name: &str, site: Site, pg: &Pushgateway) -> SiteCluster {
        let w = SlurmCluster::prepare_dir();
        let p = |s: &str| w.path(s);
        for d in ["hooks", "config", "env", "skip-once"] {
            mkdir(&p(d), 0o755);
        }
        mkdir(&p("locks"), 0o1777);
        for (from, to) in [(AGENT, "arkouda-push-agent"), (SIM, "arkouda-sim")] {
            std::fs::copy(from, p(&format!("bin/{to}"))).expect("copy binary");
            std::fs::set_permissions(
                p(&format!("bin/{to}")),
                std::fs::Permissions::from_mode(0o755),
            )
            .unwrap();
        }
        let places = if site.nodes.is_empty() {
            format!(
                "lock_dir = \"{}\"\n[slurm]\nstate_dir = \"{}\"\n",
                p("locks").display(),
                p("agents").display()
            )
        } else {
            // The defaults: /run/arkouda-push-agent (and its locks) in each node's own /run.
            "[slurm]\n".to_string()
        };
        write_file(
            &p("config/site.toml"),
            &format!(
                "pushgateway = \"{}\"\ninterval = \"300ms\"\n{places}run_as = \"nobody\"\n",
                pg.url
            ),
            0o644,
        );
        // The sweep's config: the cluster is learned from Slurm; a short grace.
        write_file(
            &p("config/sweep.toml"),
            &format!(
                "pushgateway = \"{}\"\ngrace = \"1s\"\nsqueue_timeout = \"20s\"\n",
                pg.url
            ),
            0o644,
        );
        for hook in ["prolog", "epilog", "epilog-slurmctld"] {
            let wrapper = format!(
                r#"#!/bin/bash
set -f
export ARKOUDA_PUSH_AGENT_BIN={w}/bin/arkouda-push-agent
export ARKOUDA_PUSH_AGENT_CONFIG={w}/config/site.toml
export ARKOUDA_PUSH_AGENT_HOOK_LOG={w}/hooks-${{SLURMD_NODENAME:-ctld}}.log
# What the controller has in its default place; EpilogSlurmctld's environment lacks it.
export SLURM_CONF=${{SLURM_CONF:-{w}/etc/slurm.conf}}
env >{w}/env/{hook}-$SLURM_JOB_ID-${{SLURMD_NODENAME:-ctld}}-${{SLURM_JOB_RESTART_COUNT:-0}}
# A one-shot skip: this hook of this job does nothing once (a late hook, replayed later).
once={w}/skip-once/{hook}-$SLURM_JOB_ID
if [ -e $once ]; then
    rm -f $once
    echo "test arkouda-push-agent[$SLURM_JOB_ID] {hook}: skipped once by the test wrapper" >>$ARKOUDA_PUSH_AGENT_HOOK_LOG
    exit 0
fi
for word in ${{SLURM_JOB_COMMENT//,/ }}; do
    case $word in
    apa-port=*) export ARKOUDA_PUSH_AGENT_METRICS_PORT=${{word#apa-port=}} ;;
    apa-skip={hook})
        echo "test arkouda-push-agent[$SLURM_JOB_ID] {hook}: skipped by the test wrapper" >>$ARKOUDA_PUSH_AGENT_HOOK_LOG
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
        let hook = |h: &str| Some(format!("{}/hooks/{h}", w.0.display()));
        let hooks = Hooks {
            prolog: hook("prolog"),
            epilog: hook("epilog"),
            epilog_slurmctld: hook("epilog-slurmctld"),
        };
        SiteCluster {
            slurm: SlurmCluster::start_site(w, name, &hooks, site),
            pg_url: pg.url.clone(),
        }
    }

    /// A job on `nodes` nodes whose batch script (on its first node) runs the simulator as
    /// locale 0 of a `locales`-locale server, bound to the first node's own address, until
    /// its stop file exists.
    fn sim_job(&self, name: &str, nodes: usize, extra: &str, args: &[&str]) -> SimJob {
        let port = free_port();
        let stop = self.path(&format!("jobs/{name}.stop"));
        let replies = self.path(&format!("jobs/{name}.replies"));
        let bind = if self.site.nodes.is_empty() {
            "127.0.0.1".to_string()
        } else {
            // The first node's address, as its /etc/hosts says: getent in the job.
            "$(getent hosts $SLURMD_NODENAME | cut -d' ' -f1)".to_string()
        };
        let script = format!(
            r#"#!/bin/bash
echo "$SLURMD_NODENAME $(readlink /proc/self/ns/mnt) restart=${{SLURM_RESTART_COUNT:-0}}" >>{replies}.where
{w}/bin/arkouda-sim --bind {bind} --metrics-port {port} --locales 3 --reply-log {replies} &
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
        let mut all: Vec<String> = vec![
            format!("-N{nodes}"),
            format!("--comment=arkouda-metrics,apa-port={port}{extra}"),
        ];
        all.extend(args.iter().map(|a| a.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        let id = self.slurm.submit(name, &script, &all);
        SimJob { id, stop, replies }
    }

    /// The hook log lines of job `id`'s `hook` on `node` (`ctld` for the controller's).
    fn hook_lines(&self, node: &str, id: &str, hook: &str) -> Vec<String> {
        let tag = format!("arkouda-push-agent[{id}] {hook}: ");
        std::fs::read_to_string(self.path(&format!("hooks-{node}.log")))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&tag))
            .map(str::to_string)
            .collect()
    }

    /// The `end rc=… after MS ms` lines of a hook on a node: (rc, ms) each.
    fn hook_ends(&self, node: &str, id: &str, hook: &str) -> Vec<(Option<i32>, u64)> {
        self.hook_lines(node, id, hook)
            .iter()
            .filter_map(|l| hook_end(l, hook))
            .map(|e| (e.rc, e.ms))
            .collect()
    }

    fn wait_hook_ends(
        &self,
        node: &str,
        id: &str,
        hook: &str,
        n: usize,
    ) -> Vec<(Option<i32>, u64)> {
        eventually(HOOK_DONE, &format!("{hook} of job {id} on {node}"), || {
            let ends = self.hook_ends(node, id, hook);
            if ends.len() >= n {
                Ok(ends)
            } else {
                Err(self.hook_lines(node, id, hook).join("\n"))
            }
        })
    }

    /// The agents of job `id` and the node each runs on.
    fn agents(&self, id: &str) -> Vec<(ProcInfo, Option<String>)> {
        agents_of(id)
            .into_iter()
            .map(|p| {
                let node = self.slurm.node_of(p.pid);
                (p, node)
            })
            .collect()
    }

    fn wait_group(&self, key: &BTreeMap<String, String>, limit: Duration) -> Duration {
        let t = Instant::now();
        let pg = PgUrl(self.pg_url.clone());
        eventually(limit, &format!("group {key:?}"), || {
            if pg.groups().contains(key) {
                Ok(())
            } else {
                Err(format!("{:?}", pg.groups()))
            }
        });
        t.elapsed()
    }

    fn wait_no_group(&self, key: &BTreeMap<String, String>, limit: Duration) -> Duration {
        let t = Instant::now();
        let pg = PgUrl(self.pg_url.clone());
        eventually(limit, &format!("group {key:?} to be gone"), || {
            if pg.groups().contains(key) {
                Err("still there".into())
            } else {
                Ok(())
            }
        });
        t.elapsed()
    }

    /// `arkouda-push-agent sweep` as `uid` (65534: the package's unprivileged user; 0 root).
    fn sweep(&self, uid: u32) -> String {
        let mut cmd = Command::new(self.path("bin/arkouda-push-agent"));
        cmd.args(["sweep", "--config"])
            .arg(self.path("config/sweep.toml"))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .env("SLURM_CONF", &self.conf)
            .current_dir("/");
        if uid != 0 {
            std::os::unix::process::CommandExt::uid(&mut cmd, uid);
            std::os::unix::process::CommandExt::gid(&mut cmd, uid);
        }
        let out = cmd.output().expect("sweep");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "sweep as uid {uid}: {text}");
        text
    }

    /// Runs a hook by hand on `node` (its mount namespace; `ctld`: the controller's) with
    /// the environment slurmd or slurmctld gave it for job `id`'s run `run`: what a late
    /// hook of an earlier run does when newer Slurm has already restarted the job.
    fn replay_hook(&self, node: &str, id: &str, hook: &str, run: u32) -> (bool, String) {
        let env_file = self.path(&format!("env/{hook}-{id}-{node}-{run}"));
        let env = std::fs::read_to_string(&env_file)
            .unwrap_or_else(|e| panic!("{}: {e}", env_file.display()));
        let mut cmd = if node == "ctld" {
            Command::new(self.path(&format!("hooks/{hook}")))
        } else {
            let pid = self.slurm.slurmd_pid(node).expect("the node's slurmd");
            let mut c = Command::new("/usr/bin/nsenter");
            c.args(["-t", &pid.to_string(), "-m", "--"])
                .arg(self.path(&format!("hooks/{hook}")));
            c
        };
        cmd.env_clear();
        for line in env.lines() {
            if let Some((k, v)) = line.split_once('=') {
                if k.starts_with("SLURM") {
                    cmd.env(k, v);
                }
            }
        }
        let out = cmd.output().expect("replay hook");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn wait_idle(&self) {
        eventually(Duration::from_secs(60), "every node idle", || {
            let (_, out) = self.slurm("/usr/bin/sinfo", &["-h", "-N", "-o", "%N %T"]);
            let idle = out.lines().filter(|l| l.ends_with(" idle")).count();
            if idle >= self.site.nodes.len().max(1) {
                Ok(())
            } else {
                Err(out)
            }
        });
    }
}

/// Figures of one scenario, printed at the end.
type Figures = Vec<(String, String)>;

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

/// A 3-node opted-in job: every Prolog exits 0; exactly one agent, on the first node; its
/// group with every locale; gone within 5 s of the job's end; no agent left on any node.
fn site_three_nodes(ctx: &mut SiteCtx, f: &mut Figures) {
    let (a, pg) = (&ctx.alpha, &ctx.pg);
    let job = a.sim_job("three", 3, "", &["--no-requeue"]);
    let key = key_of(&a.name, &job.id, 0);
    a.wait_group(&key, JOB_START);
    for n in SITE_NODES {
        let ends = a.wait_hook_ends(n, &job.id, "prolog", 1);
        assert_eq!(ends[0].0, Some(0), "prolog on {n}");
        assert!(ends[0].1 < 5000, "prolog on {n}: {} ms", ends[0].1);
        f.push((format!("prolog on {n}"), format!("{} ms", ends[0].1)));
    }
    let agents = eventually(Duration::from_secs(5), "one agent", || {
        match a.agents(&job.id).as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(agents.1.as_deref(), Some("n1"), "the agent's node");
    assert_eq!(agents.0.uid, NOBODY_UID);
    // The batch script, hence the server, on n1 too.
    let wh = std::fs::read_to_string(job.replies.with_extension("replies.where")).unwrap();
    assert!(wh.starts_with("n1 "), "{wh}");
    // The group with every locale (the simulator's three), read from the listing once.
    let g = eventually(Duration::from_secs(20), "3 locales", || {
        let mine: Vec<Group> = pg
            .job_groups(&job.id)
            .into_iter()
            .filter(|g| g.labels.get("cluster") == Some(&a.name))
            .collect();
        match mine.as_slice() {
            [g] if g.value("arkouda_locales", &[]) == Some(3.0)
                && g.value("arkouda_up", &[]) == Some(1.0) =>
            {
                Ok(g.clone())
            }
            other => Err(format!(
                "{:?}",
                other.iter().map(|g| &g.labels).collect::<Vec<_>>()
            )),
        }
    });
    assert_eq!(g.all("arkouda_locale_info").len(), 3);
    // The agent's lock, in its node's private /run, under the package's default path.
    let locks = std::fs::read_dir(format!(
        "/proc/{}/root/run/arkouda-push-agent/locks",
        agents.0.pid
    ))
    .map(|d| d.count())
    .unwrap_or(0);
    assert_eq!(
        locks, 1,
        "one lock file in n1's /run/arkouda-push-agent/locks"
    );
    let end = Instant::now();
    job.finish();
    let gone = a.wait_no_group(&key, Duration::from_secs(5));
    f.push((
        "group gone after the job's end".into(),
        ms(end.elapsed().min(gone)),
    ));
    for n in SITE_NODES {
        let ends = a.wait_hook_ends(n, &job.id, "epilog", 1);
        assert_eq!(ends[0].0, Some(0), "epilog on {n}");
        f.push((format!("epilog on {n}"), format!("{} ms", ends[0].1)));
    }
    let ctld = a.wait_hook_ends("ctld", &job.id, "epilog-slurmctld", 1);
    f.push(("EpilogSlurmctld".into(), format!("{} ms", ctld[0].1)));
    assert!(a.agents(&job.id).is_empty(), "no agent left on any node");
    // Nothing left behind in n1's /run: no lock, no pid, env or keys file.
    let ns_pid = a.slurmd_pid("n1").unwrap();
    let left: Vec<String> =
        std::fs::read_dir(format!("/proc/{ns_pid}/root/run/arkouda-push-agent"))
            .map(|d| {
                d.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "locks")
                    .collect()
            })
            .unwrap_or_default();
    assert!(left.is_empty(), "files left in n1's state dir: {left:?}");
    let locks_left = std::fs::read_dir(format!("/proc/{ns_pid}/root/run/arkouda-push-agent/locks"))
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(locks_left, 0, "lock files left");
}

/// The first node crashes mid-job (every process of its namespace SIGKILLed, the agent
/// and the server with it): EpilogSlurmctld deletes the group by its key.
fn site_first_node_crash(ctx: &mut SiteCtx, f: &mut Figures) {
    let a = &mut ctx.alpha;
    let job = a.sim_job("crash", 3, "", &["--no-requeue"]);
    let key = key_of(&a.name, &job.id, 0);
    a.wait_group(&key, JOB_START);
    let (agent, node) = eventually(Duration::from_secs(5), "the agent", || {
        match a.agents(&job.id).as_slice() {
            [one] => Ok(one.clone()),
            other => Err(format!("{other:?}")),
        }
    });
    assert_eq!(node.as_deref(), Some("n1"));
    let crashed = Instant::now();
    let killed = a.slurm.crash_node("n1");
    assert!(killed >= 3, "slurmd, the steps, the agent: {killed} killed");
    assert!(!crate::slurm_cluster::processes()
        .iter()
        .any(|p| p.pid == agent.pid));
    // The group stays until the controller learns the node is gone and ends the job.
    assert!(a.pg().has(&key), "a killed agent leaves its group");
    let state = a.wait_state(
        &job.id,
        &["NODE_FAIL", "FAILED", "CANCELLED"],
        Duration::from_secs(60),
    );
    let ended = crashed.elapsed();
    let gone = a.wait_no_group(&key, Duration::from_secs(10));
    let ctld = a.wait_hook_ends("ctld", &job.id, "epilog-slurmctld", 1);
    assert_eq!(ctld[0].0, Some(0));
    f.push(("job state".into(), state));
    f.push(("crash to job end (Slurm's node timeout)".into(), ms(ended)));
    f.push(("job end to group gone".into(), ms(gone)));
    f.push(("EpilogSlurmctld".into(), format!("{} ms", ctld[0].1)));
    let log = a.hook_lines("ctld", &job.id, "epilog-slurmctld").join("\n");
    assert!(
        log.contains("backstop delete done (by grouping key)"),
        "{log}"
    );
    a.slurm.restart_node("n1");
    a.wait_idle();
}

impl SiteCluster {
    fn pg(&self) -> PgUrl {
        PgUrl(self.pg_url.clone())
    }
}

/// The site: its Pushgateway, the three-node cluster `alpha` (PrivateData=jobs, Hidden and
/// AllowGroups partitions) and, once a scenario starts it, the one-node cluster `beta`.
struct SiteCtx {
    /// Declared first: dropped first, so their Epilogs reach the Pushgateway.
    alpha: SiteCluster,
    beta: Option<SiteCluster>,
    pg: Pushgateway,
}

/// Requeue while running: the job keeps its id; its second run pushes a group of its own
/// (slurm_restart_count="1"), which is never missing while it runs, even when the first
/// run's Epilog and EpilogSlurmctld come late, after the second run has started on the
/// same node, as newer Slurm's expedited requeue allows (here: both skipped once at the
/// requeue, then replayed with the environment Slurm gave them). Slurm 22.05 already shows
/// the first run's epilogs the next run's restart count.
fn site_requeue(ctx: &mut SiteCtx, f: &mut Figures) {
    let a = &ctx.alpha;
    let job = a.sim_job("requeue", 1, "", &["--requeue"]);
    let first = key_of(&a.name, &job.id, 0);
    let second = key_of(&a.name, &job.id, 1);
    a.wait_group(&first, JOB_START);
    let node = a.job_field(&job.id, "BatchHost");
    let run0_agent = eventually(Duration::from_secs(5), "the first run's agent", || match a
        .agents(&job.id)
        .as_slice()
    {
        [one] => Ok(one.0.pid),
        other => Err(format!("{other:?}")),
    });
    for hook in ["epilog", "epilog-slurmctld"] {
        write_file(&a.path(&format!("skip-once/{hook}-{}", job.id)), "", 0o644);
    }
    let t = Instant::now();
    let (ok, out) = a.slurm("/usr/bin/scontrol", &["requeue", &job.id]);
    assert!(ok, "scontrol requeue: {out}");
    // Slurm 22.05 holds a requeued job for a while (BeginTime): let it go at once, as
    // newer Slurm's expedited requeue would.
    eventually(Duration::from_secs(60), "the job to run again", || {
        let s = a.job_field(&job.id, "JobState");
        if s == "RUNNING" && a.job_field(&job.id, "Restarts") == "1" {
            return Ok(());
        }
        if s == "PENDING" {
            let _ = a.slurm(
                "/usr/bin/scontrol",
                &["update", &format!("jobid={}", job.id), "starttime=now"],
            );
        }
        Err(format!(
            "{s} reason {} begin {}",
            a.job_field(&job.id, "Reason"),
            a.job_field(&job.id, "StartTime")
        ))
    });
    a.wait_group(&second, JOB_START);
    f.push(("requeue to the second run's group".into(), ms(t.elapsed())));
    let run1_agent = eventually(Duration::from_secs(5), "the second run's agent", || {
        let agents = a.agents(&job.id);
        agents
            .iter()
            .find(|p| {
                p.0.argv
                    .windows(2)
                    .any(|w| w[0] == "--restart-count" && w[1] == "1")
            })
            .map(|p| p.0.pid)
            .ok_or(format!("{agents:?}"))
    });
    assert_eq!(a.slurm.node_of(run1_agent).as_deref(), Some(node.as_str()));
    let watch = Watch::start(a.pg_url.clone(), vec![second.clone()]);
    // The first run's hooks, late, with what Slurm gave them (restart count already 1).
    let env0 = std::fs::read_to_string(a.path(&format!("env/epilog-{}-{node}-1", job.id)))
        .unwrap_or_default();
    assert!(env0.contains("SLURM_JOB_RESTART_COUNT=1"), "{env0}");
    let (ok, err) = a.replay_hook(&node, &job.id, "epilog", 1);
    assert!(ok, "{err}");
    let (ok, err) = a.replay_hook("ctld", &job.id, "epilog-slurmctld", 1);
    assert!(ok, "{err}");
    // They ended the first run: its agent and its group.
    a.wait_no_group(&first, Duration::from_secs(5));
    assert!(
        !crate::slurm_cluster::processes()
            .iter()
            .any(|p| p.pid == run0_agent),
        "the first run's agent still runs"
    );
    let out = a.sweep(0);
    assert!(
        out.contains(&format!("job {} is still in Slurm", job.id)),
        "{out}"
    );
    let log = a.hook_lines("ctld", &job.id, "epilog-slurmctld").join("\n");
    assert!(log.contains("runs=[0] next_running=true"), "{log}");
    // A few more of the second run's pushes.
    std::thread::sleep(Duration::from_millis(1000));
    let samples = watch.finish("requeue");
    f.push((
        "samples of the second run's group, none missing".into(),
        samples.to_string(),
    ));
    assert!(
        crate::slurm_cluster::processes()
            .iter()
            .any(|p| p.pid == run1_agent),
        "the first run's hooks stopped the second run's agent"
    );
    let end = Instant::now();
    job.finish();
    a.wait_no_group(&second, Duration::from_secs(5));
    f.push((
        "second run's group gone after its end".into(),
        ms(end.elapsed()),
    ));
    eventually(Duration::from_secs(10), "no agent", || {
        if a.agents(&job.id).is_empty() {
            Ok(())
        } else {
            Err("agents".into())
        }
    });
}

/// The sweep every "minute" (here every second or so) as the package's user under
/// PrivateData=jobs, with jobs in a Hidden and an AllowGroups partition: no running job's
/// group is ever missing; an ended job's group goes once its lease is `grace` old. As root
/// (a full view) an ended job's group goes at once.
fn site_sweep_policies(ctx: &mut SiteCtx, f: &mut Figures) {
    let a = &ctx.alpha;
    let hidden = a.sim_job("sweep-hidden", 1, "", &["--partition=hidden"]);
    let restricted = a.sim_job("sweep-restricted", 1, "", &["--partition=restricted"]);
    let plain = a.sim_job("sweep-plain", 1, "", &[]);
    // Two jobs that end leaving their groups (agent killed, both Epilogs skipped).
    let orphan1 = a.sim_job(
        "sweep-orphan1",
        1,
        ",apa-skip=epilog,apa-skip=epilog-slurmctld",
        &[],
    );
    let orphan2 = a.sim_job(
        "sweep-orphan2",
        1,
        ",apa-skip=epilog,apa-skip=epilog-slurmctld",
        &[],
    );
    let running: Vec<_> = [&hidden, &restricted, &plain]
        .iter()
        .map(|j| key_of(&a.name, &j.id, 0))
        .collect();
    for k in running.iter() {
        a.wait_group(k, JOB_START);
    }
    for o in [&orphan1, &orphan2] {
        a.wait_group(&key_of(&a.name, &o.id, 0), JOB_START);
        for (p, _) in a.agents(&o.id) {
            kill9(p.pid);
        }
        o.finish();
        a.wait_state(&o.id, &["COMPLETED"], HOOK_DONE);
    }
    // What nobody sees: no job of root's (PrivateData=jobs).
    let (_, seen) = {
        let out = Command::new("/usr/bin/setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "/usr/bin/squeue",
                "-h",
                "--all",
                "-o",
                "%i",
            ])
            .env("SLURM_CONF", &a.conf)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(
        seen.trim().is_empty(),
        "nobody sees jobs under PrivateData=jobs: {seen}"
    );
    let watch = Watch::start(a.pg_url.clone(), running.clone());
    let o1 = key_of(&a.name, &orphan1.id, 0);
    let o2 = key_of(&a.name, &orphan2.id, 0);
    let t = Instant::now();
    let mut sweeps = 0;
    let mut first_out = String::new();
    // Sweeps as nobody until the ended jobs' groups are gone (lease 1.2 s + grace 1 s).
    eventually(
        Duration::from_secs(30),
        "the ended jobs' groups gone by lease",
        || {
            let out = a.sweep(NOBODY_UID);
            sweeps += 1;
            if first_out.is_empty() {
                first_out = out.clone();
            }
            if a.pg().has(&o1) || a.pg().has(&o2) {
                Err(out)
            } else {
                Ok(())
            }
        },
    );
    assert!(
        first_out.contains("a partial view: PrivateData=jobs"),
        "{first_out}"
    );
    assert!(
        first_out.contains(&format!("cluster `{}` (Slurm's ClusterName)", a.name)),
        "{first_out}"
    );
    f.push((
        "sweeps as nobody before the ended job's group went".into(),
        format!("{sweeps} in {}", ms(t.elapsed())),
    ));
    // As root: a full view; an ended job's group goes at the first sweep, the hidden and
    // restricted jobs are seen (squeue --all) and kept.
    let orphan3 = a.sim_job(
        "sweep-orphan3",
        1,
        ",apa-skip=epilog,apa-skip=epilog-slurmctld",
        &[],
    );
    let o3 = key_of(&a.name, &orphan3.id, 0);
    a.wait_group(&o3, JOB_START);
    for (p, _) in a.agents(&orphan3.id) {
        kill9(p.pid);
    }
    orphan3.finish();
    a.wait_state(&orphan3.id, &["COMPLETED"], HOOK_DONE);
    let out = a.sweep(0);
    assert!(
        out.contains(&format!("Slurm no longer runs job {}", orphan3.id)),
        "{out}"
    );
    assert!(!a.pg().has(&o3), "{out}");
    for j in [&hidden, &restricted, &plain] {
        assert!(
            out.contains(&format!("job {} is still in Slurm", j.id)),
            "{out}"
        );
    }
    let samples = watch.finish("sweep");
    f.push((
        "samples of the running jobs' groups, none missing".into(),
        samples.to_string(),
    ));
    for j in [&hidden, &restricted, &plain] {
        j.finish();
    }
    for k in &running {
        a.wait_no_group(k, Duration::from_secs(10));
    }
}

/// Two clusters on one Pushgateway, the same job id in both: neither's Epilog, backstop
/// or sweep touches the other's group.
fn site_two_clusters(ctx: &mut SiteCtx, f: &mut Figures) {
    let a = &ctx.alpha;
    let ja = a.sim_job("twin-alpha", 1, "", &[]);
    let ka = key_of(&a.name, &ja.id, 0);
    a.wait_group(&ka, JOB_START);
    // beta's first job gets alpha's running job's id.
    let t = Instant::now();
    let site = Site {
        first_job_id: Some(ja.id.parse().unwrap()),
        ..Site::default()
    };
    let b = SiteCluster::start("beta", site, &ctx.pg);
    f.push(("second cluster up".into(), ms(t.elapsed())));
    let jb = b.sim_job("twin-beta", 1, "", &[]);
    assert_eq!(jb.id, ja.id, "the same job id in both clusters");
    let kb = key_of("beta", &jb.id, 0);
    b.wait_group(&kb, JOB_START);
    let watch = Watch::start(a.pg_url.clone(), vec![ka.clone()]);
    // beta's sweep (full view, as root) with its job running, then beta's job ends.
    let out = b.sweep(0);
    assert!(out.contains("cluster `beta`"), "{out}");
    let end = Instant::now();
    jb.finish();
    b.wait_no_group(&kb, Duration::from_secs(5));
    f.push(("beta's group gone after its end".into(), ms(end.elapsed())));
    b.wait_hook_ends("ctld", &jb.id, "epilog-slurmctld", 1);
    // beta's sweep again: alpha's job of the same id is not beta's to judge.
    let out = b.sweep(0);
    assert!(!out.contains(&format!("deleted {}", a.pg_url)), "{out}");
    // alpha's sweep: beta's groups are left alone too (beta has none left; its job ended).
    let out = a.sweep(0);
    assert!(
        out.contains(&format!("job {} is still in Slurm", ja.id)),
        "{out}"
    );
    watch.finish("two clusters");
    assert!(a.pg().has(&ka));
    ja.finish();
    a.wait_no_group(&ka, Duration::from_secs(5));
    ctx.beta = Some(b);
}

/// 200 other jobs' groups held (100,000 series): the backstops never list the Pushgateway
/// (its request counter) and stay within their budgets.
fn site_many_groups(ctx: &mut SiteCtx, f: &mut Figures) {
    let a = &ctx.alpha;
    let t = Instant::now();
    let client = reqwest::blocking::Client::new();
    let mut body = String::from("# TYPE apa_other_series gauge\n");
    for i in 0..500 {
        body.push_str(&format!("apa_other_series{{series=\"{i}\"}} {i}\n"));
    }
    let others: Vec<String> = (0..200)
        .map(|i| {
            format!(
                "{}/metrics/job/arkouda/slurm_job_id/{}/cluster/elsewhere",
                ctx.pg.url,
                9_000_000 + i
            )
        })
        .collect();
    // Four at a time: each push makes the Pushgateway check every series it holds.
    std::thread::scope(|sc| {
        for chunk in others.chunks(others.len().div_ceil(4)) {
            let (client, body) = (&client, &body);
            sc.spawn(move || {
                for url in chunk {
                    let r = client.put(url).body(body.clone()).send().expect("put");
                    assert!(r.status().is_success(), "{}", r.status());
                }
            });
        }
    });
    f.push(("200 groups of 500 series pushed".into(), ms(t.elapsed())));
    let job = a.sim_job("many", 3, "", &["--no-requeue"]);
    let key = key_of(&a.name, &job.id, 0);
    a.wait_group(&key, JOB_START);
    let before = a.pg().listings();
    let end = Instant::now();
    job.finish();
    // The agent's last PUT and its DELETE queue behind the other groups' pushes: slower.
    a.wait_no_group(&key, Duration::from_secs(10));
    f.push(("group gone after the job's end".into(), ms(end.elapsed())));
    let epi = a.wait_hook_ends("n1", &job.id, "epilog", 1);
    let ctld = a.wait_hook_ends("ctld", &job.id, "epilog-slurmctld", 1);
    let after = a.pg().listings();
    assert_eq!(after, before, "the hooks listed the Pushgateway");
    assert_eq!((epi[0].0, ctld[0].0), (Some(0), Some(0)));
    assert!(
        epi[0].1 < 9000 && ctld[0].1 < 6000,
        "budgets: {epi:?} {ctld:?}"
    );
    f.push((
        "epilog on n1 with 100,000 other series".into(),
        format!("{} ms", epi[0].1),
    ));
    f.push((
        "EpilogSlurmctld with 100,000 other series".into(),
        format!("{} ms", ctld[0].1),
    ));
    f.push(("listings by the hooks".into(), (after - before).to_string()));
    for url in &others {
        let _ = client.delete(url).send();
    }
}

type SiteScenario = fn(&mut SiteCtx, &mut Figures);

const SITE_SCENARIOS: &[(&str, SiteScenario)] = &[
    ("three_nodes", site_three_nodes),
    ("requeue", site_requeue),
    ("sweep_policies", site_sweep_policies),
    ("two_clusters", site_two_clusters),
    ("many_groups", site_many_groups),
    ("first_node_crash", site_first_node_crash),
];

/// Every site scenario against one site (started once), one after another.
#[test]
fn site_cluster() {
    let only: Option<Vec<String>> = std::env::var("APA_SITE_ONLY")
        .ok()
        .map(|s| s.split(',').map(|x| x.trim().to_string()).collect());
    let started = Instant::now();
    let pg = Pushgateway::start();
    let site = Site {
        nodes: SITE_NODES.iter().map(|n| n.to_string()).collect(),
        conf: "PrivateData=jobs\nSlurmdTimeout=6\nMessageTimeout=3\n".into(),
        partitions: vec![
            "PartitionName=hidden Nodes=ALL Hidden=YES MaxTime=INFINITE State=UP".into(),
            "PartitionName=restricted Nodes=ALL AllowGroups=root MaxTime=INFINITE State=UP".into(),
        ],
        first_job_id: None,
        accounting: false,
    };
    let alpha = SiteCluster::start("alpha", site, &pg);
    eprintln!("site up in {:?}", started.elapsed());
    let mut ctx = SiteCtx {
        alpha,
        beta: None,
        pg,
    };
    let mut failed = Vec::new();
    for (name, f) in SITE_SCENARIOS {
        if only.as_ref().is_some_and(|o| !o.iter().any(|x| x == name)) {
            continue;
        }
        let t = Instant::now();
        let mut figures = Figures::new();
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| f(&mut ctx, &mut figures)));
        eprintln!(
            "site scenario {name}: {} in {:.1?}",
            if r.is_ok() { "ok" } else { "FAILED" },
            t.elapsed()
        );
        for (what, v) in &figures {
            eprintln!("    {what}: {v}");
        }
        if r.is_err() {
            failed.push(name.to_string());
            if let Ok(dir) = std::env::var("APA_SITE_KEEP_ENV") {
                let _ = Command::new("/bin/cp")
                    .arg("-r")
                    .arg(ctx.alpha.path("env"))
                    .arg(&dir)
                    .status();
            }
            for n in SITE_NODES.iter().chain(["ctld"].iter()) {
                eprintln!(
                    "----- hooks-{n}.log -----\n{}",
                    ctx.alpha.tail(&format!("hooks-{n}.log"))
                );
            }
            eprintln!(
                "----- slurmctld.log -----\n{}",
                ctx.alpha.tail("log/slurmctld.log")
            );
        }
    }
    eprintln!("site: {:.1?} in all", started.elapsed());
    assert!(failed.is_empty(), "failed site scenarios: {failed:?}");
}
