//! Carrying out the hooks' plans: start the agent as `slurm.run_as` (systemd unit or
//! `run --daemonize`), stop it from its pid file, and the backstop `delete`.
//!
//! These run as root inside slurmd or slurmctld, so every step is bounded in time (a child
//! that does not answer is killed), never signals a process it cannot prove is this job's
//! agent owned by the agent's user or the job's user, and never follows a symlink in the
//! state directory, which an unprivileged user owns.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::admin_comment;
use super::hooks::{self, Context, CtldPlan, EpilogPlan, Job, Launch, Mode, PrologPlan, Stop};
use crate::config::{Resolved, Settings};

/// The only PATH a started agent or systemctl sees (slurmd gives the hooks none).
const SAFE_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";
/// Most of an agent's log file the Epilog copies into its own log.
const AGENT_LOG_TAIL: u64 = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ActionError {
    #[error("user `{0}` (slurm.run_as) does not exist")]
    NoSuchUser(String),
    #[error("user `{0}` (slurm.run_as) is root; the agent never runs as root")]
    RootUser(String),
    #[error("cannot look up user `{user}`: {reason}")]
    UserLookup { user: String, reason: String },
    #[error("cannot {what} {path}: {reason}")]
    Io {
        what: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("`{command}` did not finish within {limit:?}; killed it")]
    Timeout { command: String, limit: Duration },
    #[error("`{command}` failed ({status}): {output}")]
    Failed {
        command: String,
        status: String,
        output: String,
    },
}

fn io_err(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ActionError {
    let path = path.to_path_buf();
    move |e| ActionError::Io {
        what,
        path,
        reason: e.to_string(),
    }
}

/// This machine's host name, for when slurmd does not set SLURMD_NODENAME.
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// systemd's own test for "booted with systemd" (sd_booted).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

fn systemctl() -> &'static str {
    if Path::new("/usr/bin/systemctl").exists() {
        "/usr/bin/systemctl"
    } else {
        "/bin/systemctl"
    }
}

struct RunAs {
    name: String,
    uid: u32,
    gid: u32,
}

fn lookup_user(name: &str) -> Result<RunAs, ActionError> {
    let user = nix::unistd::User::from_name(name)
        .map_err(|e| ActionError::UserLookup {
            user: name.to_string(),
            reason: e.to_string(),
        })?
        .ok_or_else(|| ActionError::NoSuchUser(name.to_string()))?;
    if user.uid.is_root() {
        return Err(ActionError::RootUser(name.to_string()));
    }
    Ok(RunAs {
        name: name.to_string(),
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

/// What a bounded child printed, and how it ended.
#[derive(Debug)]
pub(super) struct Finished {
    pub(super) status: ExitStatus,
    pub(super) output: String,
}

/// Runs `cmd` (stdout and stderr captured) for at most `limit`; kills it after that. The
/// pipes are read on their own threads and abandoned at the deadline, so a grandchild
/// that keeps them open cannot hold the hook.
pub(super) fn run_bounded(cmd: &mut Command, limit: Duration) -> Result<Finished, ActionError> {
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| ActionError::Failed {
            command: shown.clone(),
            status: "not started".into(),
            output: e.to_string(),
        })?;
    let (tx, rx) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = { pipe }.read_to_string(&mut text);
            let _ = tx.send(text);
        });
    }
    drop(tx);
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) | Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(ActionError::Timeout {
                    command: shown,
                    limit,
                });
            }
        }
    };
    let mut output = String::new();
    let grace = Instant::now() + Duration::from_millis(300);
    for _ in 0..2 {
        match rx.recv_timeout(grace.saturating_duration_since(Instant::now())) {
            Ok(text) => output.push_str(&text),
            Err(_) => break,
        }
    }
    Ok(Finished {
        status,
        output: output.trim().to_string(),
    })
}

/// Creates the state directory (mode 0755, owned by the agent's user, who writes pid and
/// log files there). Refuses a symlink in its place.
fn prepare_state_dir(dir: &Path, user: &RunAs) -> Result<(), ActionError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
        .map_err(io_err("create the state directory", dir))?;
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() {
        return Err(ActionError::Io {
            what: "use",
            path: dir.to_path_buf(),
            reason: "not a directory (a symlink?)".into(),
        });
    }
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid))
        .map_err(io_err("chown the state directory", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))
        .map_err(io_err("chmod the state directory", dir))?;
    Ok(())
}

/// Writes a file as root into the user-owned state directory: removes what is there and
/// creates a new file exclusively, so a planted symlink is never followed.
fn write_new_file(path: &Path, text: &str) -> Result<(), ActionError> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("remove the old", path)(e)),
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        // The job's environment may hold secrets a site wrapper set (a Pushgateway
        // password); systemd reads EnvironmentFile= as root.
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(text.as_bytes()).map_err(io_err("write", path))
}

/// Opens a regular file in the state directory for reading, without following a symlink.
fn open_plain(path: &Path) -> Option<std::fs::File> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    f.metadata().ok().filter(|m| m.is_file()).map(|_| f)
}

fn remove_if_present(path: &Path) {
    if let Err(e) = std::fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "cannot remove");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Processes

/// Alive and not a zombie (a zombie has exited; it only waits for its parent to reap it).
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.trim_start().chars().next());
            !matches!(state, Some('Z' | 'X') | None)
        }
        Err(_) => false,
    }
}

fn cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// The command line of an agent running for `job_id`, any run (`arkouda-push-agent run …
/// --job-id ID`).
pub fn is_agent_of(argv: &[String], job_id: &str) -> bool {
    let is_agent = argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n.to_string_lossy().starts_with("arkouda-push-agent"));
    let runs = argv.iter().skip(1).any(|a| a == "run");
    let names_job = argv
        .windows(2)
        .any(|w| w[0] == "--job-id" && w[1] == job_id)
        || argv
            .iter()
            .any(|a| a.strip_prefix("--job-id=") == Some(job_id));
    is_agent && runs && names_job
}

/// The value of `--NAME V` or `--NAME=V` in a command line.
fn flag_value<'a>(argv: &'a [String], name: &str) -> Option<&'a str> {
    let long = format!("--{name}");
    let eq = format!("--{name}=");
    argv.windows(2)
        .find(|w| w[0] == long)
        .map(|w| w[1].as_str())
        .or_else(|| argv.iter().find_map(|a| a.strip_prefix(eq.as_str())))
}

/// Whether an agent's command line is of cluster `cluster`: an agent that names another
/// cluster (`--cluster`) is another cluster's job of the same id (one machine running the
/// slurmd of two clusters).
pub fn of_cluster(argv: &[String], cluster: Option<&str>) -> bool {
    match (flag_value(argv, "cluster"), cluster) {
        (Some(theirs), Some(ours)) => theirs == ours,
        _ => true,
    }
}

/// The command line of the agent of one run of a job (`… run … --job-id ID
/// [--restart-count N]`, no count: the first run): the contract that lets the Epilog find
/// it without trusting the pid file, and never stop the agent of the job's next run.
pub fn is_agent_of_run(argv: &[String], job_id: &str, restart_count: u32) -> bool {
    let run = flag_value(argv, "restart-count")
        .map(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(Some(0));
    is_agent_of(argv, job_id) && run == Some(restart_count)
}

fn proc_uid(pid: i32) -> Option<u32> {
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

fn read_pid_file(path: &Path) -> Option<i32> {
    let mut text = String::new();
    open_plain(path)?.take(64).read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|p: &i32| *p > 1)
}

/// The job's agents: the pid file's process if it is one, and any other process whose
/// command line names the job (an agent whose pid file is gone, or one arkouda-srun
/// started). Only processes of the agent's user or the job's user count.
fn job_agents(stop: &Stop, run_as_uid: Option<u32>) -> BTreeSet<i32> {
    let me = std::process::id() as i32;
    let allowed =
        |pid: i32| proc_uid(pid).is_some_and(|u| Some(u) == run_as_uid || Some(u) == stop.job_uid);
    let candidate = |pid: i32| {
        pid != me
            && alive(pid)
            && cmdline(pid).is_some_and(|a| {
                is_agent_of_run(&a, &stop.job_id, stop.restart_count)
                    && of_cluster(&a, stop.cluster.as_deref())
            })
            && allowed(pid)
    };
    let mut pids = BTreeSet::new();
    if let Some(pid) = read_pid_file(&stop.files.pid_file) {
        if candidate(pid) {
            pids.insert(pid);
        } else {
            tracing::info!(pid, file = %stop.files.pid_file.display(), "the pid file names no running agent of this job (the agent was killed?)");
        }
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for entry in dir.flatten() {
            if let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            {
                if !pids.contains(&pid) && candidate(pid) {
                    pids.insert(pid);
                }
            }
        }
    }
    pids
}

fn signal(pid: i32, sig: Signal) {
    if let Err(e) = kill(Pid::from_raw(pid), sig) {
        if e != nix::errno::Errno::ESRCH {
            tracing::warn!(pid, signal = %sig, error = %e, "cannot signal the agent");
        }
    }
}

/// SIGTERM, wait until `deadline` for each to exit (the agent deletes its group first),
/// then SIGKILL what is left. True when every one exited on its own. An agent that
/// `systemctl stop` already signalled ignores this second SIGTERM (see
/// `signals::signal_action`): it goes on with its delete.
fn stop_processes(pids: &BTreeSet<i32>, deadline: Instant) -> bool {
    for &pid in pids {
        tracing::info!(pid, "stopping the agent (SIGTERM); it deletes its group");
        signal(pid, Signal::SIGTERM);
    }
    while Instant::now() < deadline && pids.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(25));
    }
    let left: Vec<i32> = pids.iter().copied().filter(|&p| alive(p)).collect();
    for &pid in &left {
        tracing::warn!(
            pid,
            "the agent did not exit in time; SIGKILL (the backstop delete follows)"
        );
        signal(pid, Signal::SIGKILL);
    }
    let deadline = Instant::now() + hooks::EPILOG_KILL_WAIT;
    while Instant::now() < deadline && left.iter().any(|&p| alive(p)) {
        std::thread::sleep(Duration::from_millis(10));
    }
    left.is_empty()
}

/// Copies the end of the agent's log into the hook's log (so it reaches syslog under the
/// job's tag), then removes the file.
fn forward_agent_log(path: &Path) {
    let Some(mut f) = open_plain(path) else {
        return;
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    if len > AGENT_LOG_TAIL {
        let _ = f.seek(SeekFrom::Start(len - AGENT_LOG_TAIL));
    }
    let mut bytes = Vec::new();
    let _ = f.take(AGENT_LOG_TAIL).read_to_end(&mut bytes);
    for line in String::from_utf8_lossy(&bytes).lines() {
        tracing::info!("agent log: {line}");
    }
    remove_if_present(path);
}

// ---------------------------------------------------------------------------------------
// The hooks

fn job_or_log(env: &BTreeMap<String, String>) -> Option<Job> {
    match Job::from_env(env) {
        Ok(j) => Some(j),
        Err(e) => {
            tracing::error!(error = %e, "nothing done");
            None
        }
    }
}

/// A directory of the agent's user, mode 0700 (its locks), never a symlink.
fn prepare_private_dir(dir: &Path, user: &RunAs) -> Result<(), ActionError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_err("create", dir)(e)),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(io_err("inspect", dir))?;
    if !meta.is_dir() {
        return Err(ActionError::Io {
            what: "use",
            path: dir.to_path_buf(),
            reason: "not a directory (a symlink?)".into(),
        });
    }
    std::os::unix::fs::chown(dir, Some(user.uid), Some(user.gid)).map_err(io_err("chown", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(io_err("chmod", dir))
}

fn start(launch: &Launch) -> Result<(), ActionError> {
    let user = lookup_user(&launch.run_as)?;
    prepare_state_dir(&launch.state_dir, &user)?;
    // The agent's locks, and the file where it records its groups: made here, so that the
    // unit's sandbox can leave the rest of /run read-only to it (ReadWritePaths= of these).
    prepare_private_dir(&hooks::lock_dir(&launch.state_dir), &user)?;
    write_new_file(&launch.files.keys_file, "")?;
    std::os::unix::fs::chown(&launch.files.keys_file, Some(user.uid), Some(user.gid))
        .map_err(io_err("chown", &launch.files.keys_file))?;
    std::fs::set_permissions(
        &launch.files.keys_file,
        std::fs::Permissions::from_mode(0o644),
    )
    .map_err(io_err("chmod", &launch.files.keys_file))?;
    match &launch.mode {
        Mode::Systemd { unit } => {
            write_new_file(&launch.files.env_file, &hooks::env_file_text(&launch.env))?;
            if user.name != "arkouda-push-agent" {
                tracing::warn!(run_as = %user.name, "the unit runs as User=arkouda-push-agent; give it your user in a drop-in (systemctl edit arkouda-push-agent@.service)");
            }
            let mut cmd = Command::new(systemctl());
            cmd.args(["start", unit]).env_clear().env("PATH", SAFE_PATH);
            let done = run_bounded(&mut cmd, hooks::PROLOG_START_WAIT)?;
            if !done.status.success() {
                return Err(ActionError::Failed {
                    command: format!("systemctl start {unit}"),
                    status: done.status.to_string(),
                    output: done.output,
                });
            }
            tracing::info!(unit = %unit, "agent started by systemd");
        }
        Mode::Daemon => {
            let exe =
                std::env::current_exe().map_err(io_err("find", Path::new("/proc/self/exe")))?;
            let mut cmd = Command::new(&exe);
            cmd.args(&launch.args)
                .env_clear()
                .env("PATH", SAFE_PATH)
                .envs(launch.env.iter().map(|(k, v)| (k, v)))
                .current_dir("/")
                .uid(user.uid)
                .gid(user.gid);
            let done = run_bounded(&mut cmd, hooks::PROLOG_START_WAIT)?;
            if !done.status.success() {
                return Err(ActionError::Failed {
                    command: format!("{} {}", exe.display(), launch.args.join(" ")),
                    status: done.status.to_string(),
                    output: done.output,
                });
            }
            let pid = read_pid_file(&launch.files.pid_file);
            tracing::info!(
                pid = pid.unwrap_or(0),
                user = %user.name,
                pid_file = %launch.files.pid_file.display(),
                log_file = %launch.files.log_file.display(),
                "agent started and detached"
            );
        }
    }
    Ok(())
}

/// The TaskProlog (as the job's user, before each task): prints the job's dashboard link
/// into the job's output (see [`hooks::task_prolog_line`]). Reads two file names in the
/// state directory, never asks Slurm; prints nothing else, since Slurm reads this hook's
/// standard output.
pub fn task_prolog(settings: &Settings, env: &BTreeMap<String, String>) -> bool {
    let Ok(job) = Job::from_env(env) else {
        return true;
    };
    let files = hooks::job_files(&settings.slurm.state_dir, &job.run_id());
    let started_here = files.pid_file.exists() || files.env_file.exists();
    let procid = env.get("SLURM_PROCID").map(String::as_str);
    if let Some(line) = hooks::task_prolog_line(settings, &job, procid, started_here) {
        crate::outln!("{line}");
    }
    true
}

pub fn prolog(settings: &Settings, resolved: &Resolved, env: &BTreeMap<String, String>) -> bool {
    let Some(job) = job_or_log(env) else {
        return false;
    };
    let host = hostname();
    let ctx = Context {
        env,
        hostname: host.as_deref(),
        systemd: systemd_running(),
        config_file: resolved.config_file.as_deref(),
    };
    match hooks::prolog_plan(settings, &job, &ctx) {
        Err(e) => {
            tracing::error!(error = %e, "no agent started");
            false
        }
        Ok(PrologPlan::Nothing(why)) => {
            tracing::info!("no agent for this job: {why}");
            true
        }
        Ok(PrologPlan::Start(launch)) => {
            tracing::info!(mode = ?launch.mode, "starting the job's agent: {}", launch.why);
            match start(&launch) {
                Ok(()) => true,
                Err(e) => {
                    tracing::error!(error = %e, "could not start the agent; the job runs without metrics");
                    false
                }
            }
        }
    }
}

/// Deletes the run's groups by grouping key within `budget`: the key computed from the
/// run's job id, cluster and restart count (what its agent pushes), and the keys its agent
/// recorded in `keys_file` that belong to this run (per-locale groups). Never lists the
/// Pushgateway: a listing costs it a walk over every series of every job, at every job end.
/// A group only a listing could find (say, a static label added to the config during the
/// job) is left to `sweep`.
async fn backstop_delete(
    settings: &Settings,
    job_id: &str,
    runs: &[u32],
    cluster: Option<&str>,
    keys_file: Option<&Path>,
    budget: Duration,
) -> bool {
    let mut job = settings.job.clone();
    // As the Prolog gave it to the agent: SLURM_CLUSTER_NAME wins over the config's.
    if let Some(c) = cluster {
        job.cluster = Some(c.to_string());
    }
    let mut pushgateway = settings.pushgateway.clone();
    pushgateway.client.timeout = pushgateway.client.timeout.min(budget);
    let mut keys = Vec::new();
    for &run in runs {
        job.restart_count = run;
        keys.push(crate::groups::grouping_key(&job, job_id));
    }
    // The recorded keys are the first run's (a node's Epilog ends one run).
    job.restart_count = runs.first().copied().unwrap_or(0);
    let own = crate::groups::grouping_key(&job, job_id);
    if let Some(path) = keys_file {
        match crate::groups::read_keys(path) {
            Ok(recorded) => {
                for k in recorded {
                    if !crate::groups::is_run_group(&own, &k) {
                        tracing::warn!(group = %k.path(), file = %path.display(), "ignoring a recorded key that is not this run's");
                    } else if !keys.contains(&k) {
                        keys.push(k);
                    }
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "cannot read the agent's recorded keys")
            }
        }
        remove_if_present(path);
    }
    let deadline = tokio::time::Instant::now() + budget;
    let hard = budget + hooks::BACKSTOP_MARGIN;
    let n = keys.len();
    match tokio::time::timeout(
        hard,
        crate::groups::delete_keys(&pushgateway, &keys, deadline),
    )
    .await
    {
        Ok(Ok(_)) => {
            tracing::info!(groups = n, group = %own.path(), job_id, "backstop delete done (by grouping key)");
            true
        }
        Ok(Err(failed)) => {
            tracing::warn!(failed = failed.join("; "), job_id, "backstop delete failed");
            false
        }
        Err(_) => {
            tracing::warn!(job_id, limit = ?hard, "backstop delete timed out (Pushgateway hanging?)");
            false
        }
    }
}

pub async fn epilog(settings: &Settings, env: &BTreeMap<String, String>) -> bool {
    let Some(job) = job_or_log(env) else {
        return false;
    };
    let host = hostname();
    let ctx = Context {
        env,
        hostname: host.as_deref(),
        systemd: systemd_running(),
        config_file: None,
    };
    let mut stop = match hooks::epilog_plan(settings, &job, &ctx) {
        Err(e) => {
            tracing::error!(error = %e, "nothing done");
            return false;
        }
        Ok(EpilogPlan::Nothing(why)) => {
            tracing::info!("nothing to stop: {why}");
            return true;
        }
        Ok(EpilogPlan::Stop(stop)) => stop,
    };
    // Which run ends here: the oldest the Prolog recorded on this node (the restart count
    // in the environment may already be the next run's: a requeue). Never Slurm's word.
    let names: Vec<String> = std::fs::read_dir(&settings.slurm.state_dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let recorded = hooks::recorded_runs(&job.id, names.iter().map(String::as_str));
    match hooks::run_to_end(&recorded, job.restart_count) {
        Some(run) => stop.for_run(run, &settings.slurm.state_dir),
        None if job.restart_count > 0 => {
            tracing::info!(
                restart_count = job.restart_count,
                "no run of this job is recorded on this node: no backstop delete here (EpilogSlurmctld and the sweep cover it)"
            );
            stop.backstop = None;
        }
        None => {}
    }
    tracing::info!(
        run = stop.restart_count,
        "stopping the run's agent: {}",
        stop.why
    );
    let mut ok = true;
    // One wait for the agent, shared by `systemctl stop` and the SIGTERM after it.
    let stop_deadline = Instant::now() + stop.wait;
    if let Some(unit) = &stop.unit {
        let mut cmd = Command::new(systemctl());
        cmd.args(["stop", unit]).env_clear().env("PATH", SAFE_PATH);
        match run_bounded(&mut cmd, stop.wait) {
            Ok(done) if done.status.success() => tracing::info!(unit = %unit, "unit stopped"),
            Ok(done) => {
                tracing::warn!(unit = %unit, status = %done.status, output = %done.output, "systemctl stop failed")
            }
            Err(e) => tracing::warn!(error = %e, "systemctl stop"),
        }
    }
    let run_as_uid = lookup_user(&stop.run_as).ok().map(|u| u.uid);
    let pids = job_agents(&stop, run_as_uid);
    if pids.is_empty() {
        tracing::info!("no agent process of this job is running");
    } else if !stop_processes(&pids, stop_deadline) {
        ok = false;
    }
    forward_agent_log(&stop.files.log_file);
    remove_if_present(&stop.files.pid_file);
    remove_if_present(&stop.files.env_file);
    match stop.backstop {
        Some(budget) => {
            ok &= backstop_delete(
                settings,
                &stop.job_id,
                &[stop.restart_count],
                stop.cluster.as_deref(),
                Some(&stop.files.keys_file),
                budget,
            )
            .await;
        }
        None => remove_if_present(&stop.files.keys_file),
    }
    ok
}

pub async fn epilog_slurmctld(settings: &Settings, env: &BTreeMap<String, String>) -> bool {
    let Some(job) = job_or_log(env) else {
        return false;
    };
    // With `slurm.admin_comment`: the summary's wait and sacctmgr on a thread of their
    // own, beside the delete (both fit the hook's budget side by side).
    let comment = hooks::ctld_summary(settings, &job).map(|path| {
        let store = admin_comment::Store {
            path,
            expect: admin_comment::Expect {
                job_id: job.id.clone(),
                cluster: job.cluster.clone(),
                run_start: job
                    .start_time
                    .map(|t| SystemTime::UNIX_EPOCH + Duration::from_secs(t)),
                hook_start: SystemTime::now(),
            },
            sacctmgr: settings.sweep.squeue.with_file_name("sacctmgr"),
            wait: hooks::CTLD_SUMMARY_WAIT,
            limit: hooks::CTLD_SACCTMGR,
        };
        let bound = hooks::CTLD_SUMMARY_WAIT + hooks::CTLD_SACCTMGR + hooks::BACKSTOP_MARGIN;
        let deadline = tokio::time::Instant::now() + bound;
        (
            tokio::task::spawn_blocking(move || admin_comment::store(&store)),
            deadline,
            bound,
        )
    });
    let deleted = match hooks::ctld_plan(settings, &job) {
        CtldPlan::Nothing(why) => {
            tracing::info!("nothing to delete: {why}");
            true
        }
        CtldPlan::Delete {
            job_id,
            restart_count,
            cluster,
            deadline,
            why,
        } => {
            // A requeued job: is its next run already running (newer Slurm restarts it at
            // once)? Then its group is live: delete the previous run's only. One bounded
            // query, for requeued jobs only.
            let running = restart_count > 0 && job_runs(settings, &job_id);
            let runs = hooks::ctld_runs(restart_count, running);
            tracing::info!(runs = ?runs, next_running = running, "deleting the run's group by its grouping key: {why}");
            backstop_delete(settings, &job_id, &runs, cluster.as_deref(), None, deadline).await
        }
    };
    let Some((comment, deadline, bound)) = comment else {
        return deleted;
    };
    // A run without a summary (a killed agent, a crashed node) is no failure of the hook;
    // accounting that refused one is.
    let stored = match tokio::time::timeout_at(deadline, comment).await {
        Ok(Ok(outcome)) => outcome != admin_comment::Outcome::Failed,
        Ok(Err(e)) => {
            tracing::error!(error = %e, "storing the job summary in the AdminComment failed");
            false
        }
        // A file system that hangs the read: given up (the thread is left behind).
        Err(_) => {
            tracing::warn!(limit = ?bound, "storing the job summary in the AdminComment did not finish in time (a hanging file system?); the AdminComment was not set");
            false
        }
    };
    deleted && stored
}

/// Whether Slurm says job `job_id` is running (`squeue -h -j ID -o %T`, bounded by
/// [`hooks::CTLD_SQUEUE`]); false when it cannot say.
fn job_runs(settings: &Settings, job_id: &str) -> bool {
    let mut cmd = Command::new(&settings.sweep.squeue);
    cmd.args(["--noheader", "--jobs", job_id, "--format=%T"]);
    match run_bounded(&mut cmd, hooks::CTLD_SQUEUE) {
        Ok(done) if done.status.success() => {
            let state = done.output.trim().to_string();
            tracing::info!(state = %state, "Slurm's state of the requeued job");
            matches!(state.as_str(), "RUNNING" | "CONFIGURING")
        }
        Ok(done) => {
            tracing::warn!(output = %done.output, "squeue failed; deleting both runs' groups");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "squeue; deleting both runs' groups");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn agent_command_lines() {
        let cases: &[(&str, bool)] = &[
            (
                "/usr/bin/arkouda-push-agent run --daemonize --job-id 42 --pid-file /run/a/42.pid",
                true,
            ),
            ("arkouda-push-agent run --job-id=42", true),
            (
                "/tmp/x/arkouda-push-agent run --watch-pid 9 --job-id 42",
                true,
            ),
            ("/usr/bin/arkouda-push-agent run --job-id 421", false),
            ("/usr/bin/arkouda-push-agent delete --job-id 42", false),
            (
                "/usr/bin/arkouda-push-agent slurm epilog --job-id 42",
                false,
            ),
            ("/bin/sleep run --job-id 42", false),
            ("/usr/bin/arkouda-push-agent run --job-id", false),
        ];
        for (line, want) in cases {
            assert_eq!(is_agent_of(&argv(line), "42"), *want, "{line}");
        }
        // One run of a requeued job: the first run's Epilog never stops the next run's agent.
        let runs: &[(&str, u32, bool)] = &[
            ("arkouda-push-agent run --job-id 42", 0, true),
            ("arkouda-push-agent run --job-id 42", 1, false),
            (
                "arkouda-push-agent run --job-id 42 --restart-count 0",
                0,
                true,
            ),
            (
                "arkouda-push-agent run --job-id 42 --restart-count 1",
                0,
                false,
            ),
            (
                "arkouda-push-agent run --job-id 42 --restart-count 1",
                1,
                true,
            ),
            (
                "arkouda-push-agent run --restart-count=2 --job-id 42",
                2,
                true,
            ),
            (
                "arkouda-push-agent run --job-id 42 --restart-count x",
                0,
                false,
            ),
        ];
        assert!(of_cluster(&argv("a run --job-id 1 --cluster x"), Some("x")));
        assert!(!of_cluster(
            &argv("a run --job-id 1 --cluster y"),
            Some("x")
        ));
        assert!(of_cluster(&argv("a run --job-id 1"), Some("x")));
        assert!(of_cluster(&argv("a run --job-id 1 --cluster y"), None));
        for (line, n, want) in runs {
            assert_eq!(
                is_agent_of_run(&argv(line), "42", *n),
                *want,
                "{line} run {n}"
            );
        }
    }

    #[test]
    fn bounded_commands() {
        let done = run_bounded(
            Command::new("/bin/sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(3));
        assert!(
            done.output.contains("out") && done.output.contains("err"),
            "{}",
            done.output
        );
        let started = Instant::now();
        let err = run_bounded(
            Command::new("/bin/sleep").arg("30"),
            Duration::from_millis(200),
        )
        .unwrap_err();
        assert!(matches!(err, ActionError::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(2));
        // A grandchild holding the pipes does not hold the caller past the child's exit.
        let pid_file = std::env::temp_dir().join(format!("apa-bounded-{}", std::process::id()));
        let script = format!("sleep 30 & echo $! > {}", pid_file.display());
        let started = Instant::now();
        let done = run_bounded(
            Command::new("/bin/sh").args(["-c", &script]),
            Duration::from_secs(3),
        )
        .unwrap();
        assert!(done.status.success());
        assert!(started.elapsed() < Duration::from_secs(2));
        let grandchild = read_pid_file(&pid_file).unwrap();
        signal(grandchild, Signal::SIGKILL);
        std::fs::remove_file(&pid_file).unwrap();
    }

    #[test]
    fn processes_and_files() {
        assert!(alive(std::process::id() as i32));
        assert!(!alive(i32::MAX));
        let dir = std::env::temp_dir().join(format!("apa-actions-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let target = dir.join("secret");
        std::fs::write(&target, "12345\n").unwrap();
        let link = dir.join("1.pid");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link).unwrap();
        // A symlink planted in the state directory is neither read nor written through.
        assert_eq!(read_pid_file(&link), None);
        assert_eq!(read_pid_file(&target), Some(12345));
        write_new_file(&link, "X=1\n").unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "12345\n");
        assert_eq!(std::fs::read_to_string(&link).unwrap(), "X=1\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
