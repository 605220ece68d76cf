//! The decisions of the Slurm hooks, as pure functions from (settings, the job's `SLURM_*`
//! environment) to a plan: is the job selected, is this its first node, which user runs the
//! agent, where its server is, and what the Prolog, Epilog and EpilogSlurmctld must do.
//!
//! Everything here is data in, data out, so it is tested as tables. Carrying a plan out
//! (spawning, signalling, deleting) is `super::actions`; nothing here touches the system.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::hostlist::{self, HostlistError};
use crate::config::{Settings, SlurmSelect};

// The hook budgets. docs/slurm.md ("Hook budgets") is the table of these numbers, and
// `tests::hook_budgets_add_up` checks them against each other, the scripts' `limit=` and
// that table. Each script gives the binary `limit` seconds (`timeout -k 1`: SIGKILL 1 s
// later) and always exits 0.

/// slurm/prolog.sh's `limit`: the binary's time in the Prolog (the hook ends within 5 s).
pub const PROLOG_LIMIT: Duration = Duration::from_secs(3);
/// slurm/epilog.sh's `limit` (the hook ends within 10 s).
pub const EPILOG_LIMIT: Duration = Duration::from_secs(8);
/// slurm/epilog-slurmctld.sh's `limit` (the hook ends within 6 s).
pub const CTLD_LIMIT: Duration = Duration::from_secs(5);
/// How long the Prolog waits for `run --daemonize` (or `systemctl start`) to report that
/// the agent runs: inside [`PROLOG_LIMIT`], with room to read the config before and log after.
pub const PROLOG_START_WAIT: Duration = Duration::from_millis(2500);
/// The longest `shutdown_timeout` the Prolog gives the agent it starts (less when the
/// config says less): the agent's final delete fits the Epilog's wait for it. The default
/// `shutdown_timeout` (5 s, for agents started by hand) would not.
pub const HOOK_AGENT_SHUTDOWN_MAX: Duration = Duration::from_secs(3);
/// What a stopped agent needs besides its delete: leaving its runtime, removing its files.
pub const STOP_MARGIN: Duration = Duration::from_millis(500);
/// The longest the Epilog waits, in all (`systemctl stop` and SIGTERM share it), for a
/// stopped agent to delete its group and exit before it SIGKILLs it.
pub const EPILOG_STOP_WAIT_MAX: Duration = Duration::from_millis(3500);
/// The Epilog's wait for SIGKILLed agents to be gone.
pub const EPILOG_KILL_WAIT: Duration = Duration::from_millis(500);
/// Deadline of the Epilog's backstop `delete`.
pub const EPILOG_BACKSTOP: Duration = Duration::from_millis(2500);
/// A backstop delete is abandoned this long after its deadline (a hung Pushgateway).
pub const BACKSTOP_MARGIN: Duration = Duration::from_millis(500);
/// Deadline of the controller's delete.
pub const CTLD_DELETE: Duration = Duration::from_millis(3500);
/// The controller's one question to Slurm, for a requeued job only (is its next run
/// already running?), inside [`CTLD_LIMIT`] beside [`CTLD_DELETE`].
pub const CTLD_SQUEUE: Duration = Duration::from_millis(800);
/// With `slurm.admin_comment`, beside the squeue and the delete: how long the controller
/// waits for this run's summary (the node's Epilog makes the agent write it, at about the
/// time this hook starts) ...
pub const CTLD_SUMMARY_WAIT: Duration = Duration::from_millis(2500);
/// ... then the bound on `sacctmgr modify job`, which stores it in the AdminComment.
pub const CTLD_SACCTMGR: Duration = Duration::from_millis(1500);

/// Environment variables of ours that are for the scripts, never passed to an agent.
const SCRIPT_ONLY_VARS: &[&str] = &[
    "ARKOUDA_PUSH_AGENT_BIN",
    "ARKOUDA_PUSH_AGENT_CONFIG",
    "ARKOUDA_PUSH_AGENT_HOOK_LOG",
];

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    #[error("SLURM_JOB_ID is not set: this runs as a Slurm Prolog, Epilog or EpilogSlurmctld")]
    NoJobId,
    #[error("SLURM_JOB_ID `{0}` is not a job id (expected digits)")]
    BadJobId(String),
    #[error(
        "the job's node list is unknown (neither SLURM_JOB_NODELIST nor SLURM_NODELIST is set)"
    )]
    NoNodelist,
    #[error("cannot read the job's node list `{list}`: {error}")]
    Hostlist { list: String, error: HostlistError },
    #[error("this node's name is unknown (no SLURMD_NODENAME and no host name)")]
    NoNodeName,
    #[error("slurm.connection_info = `{template}`: {reason}")]
    Template { template: String, reason: String },
    #[error("{name} holds a newline or NUL; refusing to pass it to the agent")]
    BadValue { name: String },
}

/// What the hooks know about the job, from the variables slurmd and slurmctld set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Job {
    pub id: String,
    pub user: Option<String>,
    pub uid: Option<u32>,
    pub partition: Option<String>,
    /// `SLURM_JOB_COMMENT`, absent when the job has none.
    pub comment: Option<String>,
    /// `SLURM_JOB_NODELIST` (every hook context), else `SLURM_NODELIST` (Prolog, Epilog).
    pub nodelist: Option<String>,
    /// `SLURMD_NODENAME`: the node this Prolog or Epilog runs on (absent on the controller).
    pub node_name: Option<String>,
    pub work_dir: Option<String>,
    pub cluster: Option<String>,
    /// The job's restart count as the hook sees it: `SLURM_JOB_RESTART_COUNT` (what Slurm
    /// 22.05 gives its hooks), else `SLURM_RESTART_COUNT`; 0 when neither is set. In a
    /// Prolog it is the run that starts. In an Epilog it is that run's, or, when the job
    /// was requeued, already the next run's (Slurm counts the restart before the epilogs
    /// run): see [`run_to_end`] and [`ctld_runs`].
    pub restart_count: u32,
    /// `SLURM_JOB_START_TIME` (unix seconds): the run's start. EpilogSlurmctld gets it
    /// from Slurm 23.02 on; 22.05 sets it for no hook.
    pub start_time: Option<u64>,
}

impl Job {
    pub fn from_env(env: &BTreeMap<String, String>) -> Result<Job, HookError> {
        let get = |name: &str| env.get(name).filter(|v| !v.trim().is_empty()).cloned();
        let id = get("SLURM_JOB_ID").ok_or(HookError::NoJobId)?;
        // The id names files and a systemd unit: digits only, nothing that could walk a path.
        if id.len() > 20 || !id.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HookError::BadJobId(id));
        }
        Ok(Job {
            id,
            user: get("SLURM_JOB_USER"),
            uid: get("SLURM_JOB_UID").and_then(|u| u.trim().parse().ok()),
            partition: get("SLURM_JOB_PARTITION"),
            comment: get("SLURM_JOB_COMMENT"),
            nodelist: get("SLURM_JOB_NODELIST").or_else(|| get("SLURM_NODELIST")),
            node_name: get("SLURMD_NODENAME"),
            work_dir: get("SLURM_JOB_WORK_DIR"),
            cluster: get("SLURM_CLUSTER_NAME"),
            restart_count: get("SLURM_JOB_RESTART_COUNT")
                .or_else(|| get("SLURM_RESTART_COUNT"))
                .and_then(|n| n.trim().parse().ok())
                .unwrap_or(0),
            start_time: get("SLURM_JOB_START_TIME")
                .and_then(|t| t.trim().parse().ok())
                .filter(|t| *t > 0),
        })
    }

    /// The name of this run of the job: the job id on its first run, `ID.rN` on restart N.
    /// It names the run's files and systemd unit, so that a requeued job's next run, which
    /// newer Slurm may start before this run's Epilog, never shares them.
    pub fn run_id(&self) -> String {
        run_id(&self.id, self.restart_count)
    }
}

/// See [`Job::run_id`].
pub fn run_id(job_id: &str, restart_count: u32) -> String {
    if restart_count == 0 {
        job_id.to_string()
    } else {
        format!("{job_id}.r{restart_count}")
    }
}

/// Whether the site's `[slurm] select` gives the job an agent, with the reason for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    Yes(String),
    No(String),
}

impl Selection {
    pub fn is_yes(&self) -> bool {
        matches!(self, Selection::Yes(_))
    }
}

/// The words of a job comment: split on whitespace and commas (`--comment "a,b c"`).
pub fn comment_words(comment: &str) -> impl Iterator<Item = &str> {
    comment
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|w| !w.is_empty())
}

pub fn selection(select: &SlurmSelect, job: &Job) -> Selection {
    match select {
        SlurmSelect::All => Selection::Yes("select = all".to_string()),
        SlurmSelect::None => Selection::No(
            "select = none: no job gets an agent until the site sets [slurm] select".to_string(),
        ),
        SlurmSelect::Comment(marker) => match &job.comment {
            None => Selection::No(format!(
                "the job has no comment (select = comment, marker `{marker}`)"
            )),
            Some(c) if comment_words(c).any(|w| w == marker) => {
                Selection::Yes(format!("its comment carries `{marker}`"))
            }
            Some(_) => Selection::No(format!(
                "its comment does not carry `{marker}` as a word (select = comment)"
            )),
        },
        SlurmSelect::Partitions(parts) => match &job.partition {
            None => Selection::No("the job's partition is unknown (select = partition)".into()),
            Some(p) if parts.iter().any(|x| x == p) => {
                Selection::Yes(format!("partition `{p}` is selected"))
            }
            Some(p) => Selection::No(format!(
                "partition `{p}` is not one of {parts:?} (select = partition)"
            )),
        },
    }
}

/// The job's first node (where locale 0, hence the metrics server, runs) and whether this
/// node is it. `hostname` is this machine's name, used only when slurmd did not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub first: String,
    pub this: String,
    pub is_first: bool,
}

pub fn placement(job: &Job, hostname: Option<&str>) -> Result<Placement, HookError> {
    let list = job.nodelist.as_deref().ok_or(HookError::NoNodelist)?;
    let first = hostlist::first(list).map_err(|error| HookError::Hostlist {
        list: list.to_string(),
        error,
    })?;
    let (this, is_first) = match (&job.node_name, hostname) {
        (Some(n), _) => (n.clone(), *n == first),
        // Without SLURMD_NODENAME compare host names, ignoring a domain on either side.
        (None, Some(h)) => {
            let short = |s: &str| s.split('.').next().unwrap_or(s).to_string();
            (h.to_string(), short(h) == short(&first))
        }
        (None, None) => return Err(HookError::NoNodeName),
    };
    Ok(Placement {
        first,
        this,
        is_first,
    })
}

/// Where the prolog-started agent finds the metrics server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServerPlace {
    /// The job's connection-info file (the agent reads the host from it once it appears).
    ConnectionInfo(PathBuf),
    /// The first node of the allocation.
    Host(String),
}

/// `%j` job id, `%u` user, `%w` work directory, `%%` a percent sign. The result must be
/// an absolute path: a relative one would depend on the agent's working directory (`/`).
pub fn expand_template(template: &str, job: &Job) -> Result<PathBuf, HookError> {
    let bad = |reason: String| HookError::Template {
        template: template.to_string(),
        reason,
    };
    let mut out = String::new();
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('j') => out.push_str(&job.id),
            Some('u') => out.push_str(
                job.user
                    .as_deref()
                    .ok_or_else(|| bad("%u, but SLURM_JOB_USER is not set".into()))?,
            ),
            Some('w') => out.push_str(
                job.work_dir
                    .as_deref()
                    .ok_or_else(|| bad("%w, but SLURM_JOB_WORK_DIR is not set".into()))?,
            ),
            Some('%') => out.push('%'),
            Some(other) => return Err(bad(format!("unknown %{other} (use %j, %u, %w or %%)"))),
            None => return Err(bad("ends in a lone %".into())),
        }
    }
    if !out.starts_with('/') {
        return Err(bad(format!("`{out}` is not an absolute path")));
    }
    Ok(PathBuf::from(out))
}

pub fn server_place(
    template: Option<&str>,
    job: &Job,
    first_node: &str,
) -> Result<ServerPlace, HookError> {
    match template {
        Some(t) => expand_template(t, job).map(ServerPlace::ConnectionInfo),
        None => Ok(ServerPlace::Host(first_node.to_string())),
    }
}

/// The runs of job `job_id` the Prolog recorded in the state directory, from the names of
/// its files there (`ID.keys`, `ID.rN.keys`).
pub fn recorded_runs<'a>(job_id: &str, names: impl IntoIterator<Item = &'a str>) -> Vec<u32> {
    let mut runs: Vec<u32> = names
        .into_iter()
        .filter_map(|n| n.strip_suffix(".keys"))
        .filter_map(|stem| {
            let rest = stem.strip_prefix(job_id)?;
            if rest.is_empty() {
                Some(0)
            } else {
                rest.strip_prefix(".r")?.parse().ok()
            }
        })
        .collect();
    runs.sort_unstable();
    runs.dedup();
    runs
}

/// Which run a node's Epilog ends, given the runs the Prolog recorded on this node and the
/// restart count the Epilog sees (`count`): the oldest recorded run up to `count`. Each
/// run's Prolog and Epilog come in order on a node, so the oldest run still recorded is
/// the one ending: its own count on a normal end, or the previous run's when the job was
/// requeued (the Epilog already sees the next run's count) — even when newer Slurm has
/// started the next run here first. None: no run recorded here.
pub fn run_to_end(recorded: &[u32], count: u32) -> Option<u32> {
    recorded.iter().copied().filter(|r| *r <= count).min()
}

/// The runs whose groups the controller's epilog deletes, seeing restart count `count`:
/// this run's, and for a requeued job (count > 0) the previous one's, since the controller
/// cannot tell a normal end of run `count` from the requeue of run `count - 1` by its
/// environment. `next_running`: Slurm says the job runs again (a requeued job that newer
/// Slurm restarted at once), so run `count` is live and not to be deleted.
pub fn ctld_runs(count: u32, next_running: bool) -> Vec<u32> {
    match (count, next_running) {
        (0, _) => vec![0],
        (c, true) => vec![c - 1],
        (c, false) => vec![c - 1, c],
    }
}

/// The files of one run's agent under `slurm.state_dir` (named by [`Job::run_id`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFiles {
    pub pid_file: PathBuf,
    pub log_file: PathBuf,
    /// The systemd template unit's `EnvironmentFile=`.
    pub env_file: PathBuf,
    /// The grouping keys the agent records (`keys_file`), which the Epilog deletes.
    pub keys_file: PathBuf,
}

pub fn job_files(state_dir: &Path, run_id: &str) -> JobFiles {
    JobFiles {
        pid_file: state_dir.join(format!("{run_id}.pid")),
        log_file: state_dir.join(format!("{run_id}.log")),
        env_file: state_dir.join(format!("{run_id}.env")),
        keys_file: state_dir.join(format!("{run_id}.keys")),
    }
}

/// The TaskProlog's word for the job's output: `print arkouda-srun: dashboard: <url>`
/// (Slurm writes what follows `print ` to the task's standard output), once per step (task
/// 0) on the node where the Prolog started the run's agent (its pid or environment file
/// is there), when the site sets `dashboard_url`. None: say nothing.
pub fn task_prolog_line(
    settings: &Settings,
    job: &Job,
    procid: Option<&str>,
    started_here: bool,
) -> Option<String> {
    if procid.is_some_and(|p| p.trim() != "0") || !started_here {
        return None;
    }
    let url = settings.job.dashboard_link(&job.id)?;
    Some(format!("print arkouda-srun: dashboard: {url}"))
}

/// The lock directory of the agents the Prolog starts, inside the state directory.
pub fn lock_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("locks")
}

/// The systemd unit of one run: `arkouda-push-agent@<run id>.service`.
pub fn unit_name(run_id: &str) -> String {
    format!("arkouda-push-agent@{run_id}.service")
}

/// How the Prolog starts the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// `systemctl start arkouda-push-agent@JOB` after writing the unit's environment file.
    Systemd { unit: String },
    /// `run --daemonize` as `run_as`, which returns once the agent is detached.
    Daemon,
}

/// One agent to start: everything the Prolog needs, decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub job_id: String,
    pub run_as: String,
    pub state_dir: PathBuf,
    pub files: JobFiles,
    pub mode: Mode,
    /// The agent's arguments after the binary (daemon mode; the unit has its own).
    pub args: Vec<String>,
    /// The agent's environment (daemon mode) or the unit's environment file (systemd).
    pub env: Vec<(String, String)>,
    pub why: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrologPlan {
    Nothing(String),
    Start(Box<Launch>),
}

/// What the Prolog knows besides the settings.
pub struct Context<'a> {
    pub env: &'a BTreeMap<String, String>,
    /// This machine's host name, when slurmd gives no SLURMD_NODENAME.
    pub hostname: Option<&'a str>,
    /// systemd runs this machine (`/run/systemd/system` exists).
    pub systemd: bool,
    /// The config file the hook read, passed on to the agent.
    pub config_file: Option<&'a Path>,
}

/// The `shutdown_timeout` of an agent the Prolog starts: the configured one, at most
/// [`HOOK_AGENT_SHUTDOWN_MAX`], so that its delete fits the Epilog's wait.
pub fn agent_shutdown_timeout(settings: &Settings) -> Duration {
    settings
        .lifecycle
        .shutdown_timeout
        .min(HOOK_AGENT_SHUTDOWN_MAX)
}

/// The `ARKOUDA_PUSH_AGENT_*` settings of the hook's own environment, passed on to the
/// agent so that it resolves the same configuration (a site's wrapper may set some).
fn passthrough(env: &BTreeMap<String, String>) -> Vec<(String, String)> {
    env.iter()
        .filter(|(k, _)| k.starts_with(crate::config::ENV_PREFIX))
        .filter(|(k, _)| !SCRIPT_ONLY_VARS.contains(&k.as_str()))
        // The Prolog says which job and run the agent is for, never its environment.
        .filter(|(k, _)| k.as_str() != "ARKOUDA_PUSH_AGENT_JOB_ID")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

fn check_value(name: &str, value: &str) -> Result<(), HookError> {
    if value.contains(['\n', '\r', '\0']) {
        return Err(HookError::BadValue {
            name: name.to_string(),
        });
    }
    Ok(())
}

pub fn prolog_plan(
    settings: &Settings,
    job: &Job,
    ctx: &Context<'_>,
) -> Result<PrologPlan, HookError> {
    let selected = selection(&settings.slurm.select, job);
    let why = match selected {
        Selection::No(why) => return Ok(PrologPlan::Nothing(format!("not selected: {why}"))),
        Selection::Yes(why) => why,
    };
    let place = placement(job, ctx.hostname)?;
    if !place.is_first {
        return Ok(PrologPlan::Nothing(format!(
            "selected ({why}), but this node ({}) is not the job's first node ({}), where its agent runs",
            place.this, place.first
        )));
    }
    let server = server_place(settings.slurm.connection_info.as_deref(), job, &place.first)?;
    let files = job_files(&settings.slurm.state_dir, &job.run_id());

    // The job's identity and server, as (flag, key) pairs: flags in daemon mode, the
    // environment file in systemd mode (the unit passes --job-id %i itself).
    let mut settings_given: Vec<(&str, String)> = Vec::new();
    if let Some(c) = &job.cluster {
        settings_given.push(("cluster", c.clone()));
    }
    if let Some(u) = &job.user {
        settings_given.push(("job_user", u.clone()));
    }
    if let Some(p) = &job.partition {
        settings_given.push(("partition", p.clone()));
    }
    settings_given.push(("restart_count", job.restart_count.to_string()));
    settings_given.push(("keys_file", files.keys_file.display().to_string()));
    settings_given.push((
        "shutdown_timeout",
        format!("{}ms", agent_shutdown_timeout(settings).as_millis()),
    ));
    match &server {
        ServerPlace::Host(h) => settings_given.push(("arkouda_host", h.clone())),
        // The file once it appears, the first node until then.
        ServerPlace::ConnectionInfo(p) => {
            settings_given.push(("connection_info", p.display().to_string()));
            settings_given.push(("arkouda_host", place.first.clone()));
        }
    }
    // What the Prolog decides replaces the same setting of its own environment.
    let mut env: Vec<(String, String)> = passthrough(ctx.env)
        .into_iter()
        .filter(|(k, _)| {
            !settings_given
                .iter()
                .any(|(key, _)| crate::config::env_name(key) == *k)
        })
        .collect();
    for (k, v) in &env {
        check_value(k, v)?;
    }
    for (k, v) in &settings_given {
        check_value(k, v)?;
    }

    let (mode, args) = if ctx.systemd {
        if let Some(c) = ctx.config_file {
            env.push((
                "ARKOUDA_PUSH_AGENT_CONFIG".to_string(),
                c.display().to_string(),
            ));
        }
        // The unit's ExecStart takes the job id and the run from here (its instance is
        // the run id).
        env.push(("ARKOUDA_PUSH_AGENT_JOB_ID".to_string(), job.id.clone()));
        for (k, v) in &settings_given {
            env.push((crate::config::env_name(k), v.clone()));
        }
        (
            Mode::Systemd {
                unit: unit_name(&job.run_id()),
            },
            Vec::new(),
        )
    } else {
        let mut args: Vec<String> = vec!["run".into(), "--daemonize".into()];
        if let Some(c) = ctx.config_file {
            args.push("--config".into());
            args.push(c.display().to_string());
        }
        args.extend(["--job-id".to_string(), job.id.clone()]);
        for (k, v) in &settings_given {
            args.push(format!("--{}", k.replace('_', "-")));
            args.push(v.clone());
        }
        args.extend([
            "--pid-file".to_string(),
            files.pid_file.display().to_string(),
            "--log-file".to_string(),
            files.log_file.display().to_string(),
        ]);
        (Mode::Daemon, args)
    };
    Ok(PrologPlan::Start(Box::new(Launch {
        job_id: job.id.clone(),
        run_as: settings.slurm.run_as.clone(),
        state_dir: settings.slurm.state_dir.clone(),
        files,
        mode,
        args,
        env,
        why,
    })))
}

/// A systemd `EnvironmentFile=`: one `KEY=value` a line, values quoted when needed.
pub fn env_file_text(env: &[(String, String)]) -> String {
    let plain = |v: &str| {
        !v.is_empty()
            && v.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_./:@%+,=-".contains(c))
    };
    let mut out =
        String::from("# Written by the arkouda-push-agent Slurm Prolog; removed by the Epilog.\n");
    for (k, v) in env {
        if plain(v) {
            out.push_str(&format!("{k}={v}\n"));
        } else {
            let escaped = v.replace('\\', "\\\\").replace('"', "\\\"");
            out.push_str(&format!("{k}=\"{escaped}\"\n"));
        }
    }
    out
}

/// What the Epilog stops and cleans up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stop {
    pub job_id: String,
    /// The run this Epilog ends: only its agent is stopped, only its groups deleted.
    pub restart_count: u32,
    /// `SLURM_CLUSTER_NAME`, for the run's grouping key.
    pub cluster: Option<String>,
    /// The job's user id: an agent the user started (arkouda-srun) may be stopped too.
    pub job_uid: Option<u32>,
    pub run_as: String,
    pub files: JobFiles,
    pub unit: Option<String>,
    /// How long a stopped agent gets to delete its group before it is SIGKILLed.
    pub wait: Duration,
    /// Deadline of the backstop delete (by grouping key: the run's own, and those its agent
    /// recorded); None for a job that has no agent by the site's rule (its comment or
    /// partition), where deleting would only cost time.
    pub backstop: Option<Duration>,
    pub why: String,
}

impl Stop {
    /// Points the stop at run `run` of the job (its files and unit).
    pub fn for_run(&mut self, run: u32, state_dir: &Path) {
        self.restart_count = run;
        let id = run_id(&self.job_id, run);
        self.files = job_files(state_dir, &id);
        if self.unit.is_some() {
            self.unit = Some(unit_name(&id));
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EpilogPlan {
    Nothing(String),
    Stop(Box<Stop>),
}

pub fn epilog_plan(
    settings: &Settings,
    job: &Job,
    ctx: &Context<'_>,
) -> Result<EpilogPlan, HookError> {
    let selected = selection(&settings.slurm.select, job);
    let why = match (placement(job, ctx.hostname), &selected) {
        (Ok(p), _) if !p.is_first => {
            return Ok(EpilogPlan::Nothing(format!(
                "this node ({}) is not the job's first node ({})",
                p.this, p.first
            )))
        }
        (Ok(_), Selection::Yes(why)) => format!("first node; {why}"),
        // A job the rule does not select may still have an agent (the rule changed during
        // the job): stopping costs nothing when there is none, the backstop is skipped.
        (Ok(_), Selection::No(why)) => format!("first node; {why}: no backstop delete"),
        // Unsure whether this is the agent's node: act for a selected job, since a group
        // left behind is worse than one spare delete.
        (Err(e), Selection::Yes(why)) => format!("{e}; acting anyway, since {why}"),
        (Err(e), Selection::No(_)) => return Err(e),
    };
    Ok(EpilogPlan::Stop(Box::new(Stop {
        job_id: job.id.clone(),
        restart_count: job.restart_count,
        cluster: job.cluster.clone(),
        job_uid: job.uid,
        run_as: settings.slurm.run_as.clone(),
        files: job_files(&settings.slurm.state_dir, &job.run_id()),
        unit: ctx.systemd.then(|| unit_name(&job.run_id())),
        wait: agent_shutdown_timeout(settings) + STOP_MARGIN,
        // With `linger`, the group outlives the job on purpose: the agent's final push
        // leases it until the linger ends, and the sweep deletes it after that. The
        // Epilog stops the agent within its budget all the same (the linger happens
        // outside it) and deletes nothing.
        backstop: (selected.is_yes() && settings.lifecycle.linger.is_zero())
            .then_some(EPILOG_BACKSTOP),
        why,
    })))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CtldPlan {
    Nothing(String),
    /// Delete the run's group by its grouping key, within the deadline.
    Delete {
        job_id: String,
        restart_count: u32,
        cluster: Option<String>,
        deadline: Duration,
        why: String,
    },
}

/// The controller's backstop for a job whose node Epilog never ran. It depends on neither
/// SLURM_CONF nor SLURM_NODELIST, which the controller does not set.
pub fn ctld_plan(settings: &Settings, job: &Job) -> CtldPlan {
    match selection(&settings.slurm.select, job) {
        Selection::No(why) => CtldPlan::Nothing(format!("not selected: {why}")),
        // Never before the end time + linger: the sweep deletes a lingering group once its
        // lease (end + linger) has expired, a crashed node's included.
        Selection::Yes(_) if !settings.lifecycle.linger.is_zero() => CtldPlan::Nothing(format!(
            "linger is {}: the group is kept after the job and left to the sweep",
            humantime::format_duration(settings.lifecycle.linger)
        )),
        Selection::Yes(why) => CtldPlan::Delete {
            job_id: job.id.clone(),
            restart_count: job.restart_count,
            cluster: job.cluster.clone(),
            deadline: CTLD_DELETE,
            why,
        },
    }
}

/// Where the controller finds the run's summary to store in the job's AdminComment: the
/// job's `summary_file`, for a selected job when `slurm.admin_comment` is on (a linger
/// changes nothing: the agent writes the summary before it lingers). None: nothing to
/// store.
pub fn ctld_summary(settings: &Settings, job: &Job) -> Option<PathBuf> {
    let template = settings.lifecycle.summary_file.as_deref()?;
    (settings.slurm.admin_comment && selection(&settings.slurm.select, job).is_yes())
        .then(|| crate::summary::path_for(template, &job.id))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{resolve, FlagValues};

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// Settings from environment-style keys (no file).
    fn settings(pairs: &[(&str, &str)]) -> Settings {
        let flags = FlagValues {
            config: Some(PathBuf::from("/dev/null")),
            values: Vec::new(),
        };
        let mut e: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (crate::config::env_name(k), v.to_string()))
            .collect();
        // A site names its Pushgateway (there is no default); a test may name another.
        e.entry(crate::config::env_name("pushgateway"))
            .or_insert_with(|| "http://127.0.0.1:9091".to_string());
        Settings::from_resolved(&resolve(&flags, &e).unwrap()).unwrap()
    }

    fn job(pairs: &[(&str, &str)]) -> Job {
        let mut e = env(&[
            ("SLURM_JOB_ID", "42"),
            ("SLURM_JOB_USER", "alice"),
            ("SLURM_JOB_UID", "1000"),
            ("SLURM_JOB_PARTITION", "debug"),
            ("SLURM_NODELIST", "nid[001-004]"),
            ("SLURMD_NODENAME", "nid001"),
            ("SLURM_JOB_WORK_DIR", "/home/alice/run"),
            ("SLURM_CLUSTER_NAME", "perlmutter"),
        ]);
        for (k, v) in pairs {
            if v.is_empty() {
                e.remove(*k);
            } else {
                e.insert(k.to_string(), v.to_string());
            }
        }
        Job::from_env(&e).unwrap()
    }

    #[test]
    fn job_from_env() {
        let j = job(&[("SLURM_JOB_COMMENT", "x")]);
        assert_eq!(j.id, "42");
        assert_eq!(j.uid, Some(1000));
        assert_eq!(j.nodelist.as_deref(), Some("nid[001-004]"));
        // The controller's variable wins; it is the only one EpilogSlurmctld gets.
        let j = job(&[("SLURM_JOB_NODELIST", "c[1-2]"), ("SLURM_NODELIST", "")]);
        assert_eq!(j.nodelist.as_deref(), Some("c[1-2]"));
        for (id, want) in [
            (None, HookError::NoJobId),
            (Some(" "), HookError::NoJobId),
            (Some("../x"), HookError::BadJobId("../x".into())),
            (Some("12_3"), HookError::BadJobId("12_3".into())),
        ] {
            let mut e = env(&[]);
            if let Some(id) = id {
                e.insert("SLURM_JOB_ID".into(), id.into());
            }
            assert_eq!(Job::from_env(&e).unwrap_err(), want);
        }
    }

    #[test]
    fn selection_table() {
        let comment = SlurmSelect::Comment("arkouda-metrics".into());
        let parts = SlurmSelect::Partitions(vec!["arkouda".into(), "gpu".into()]);
        let cases: &[(&SlurmSelect, Option<&str>, Option<&str>, bool)] = &[
            (&comment, Some("arkouda-metrics"), None, true),
            (&comment, Some("run 7,arkouda-metrics"), None, true),
            (&comment, Some("a, arkouda-metrics ,b"), None, true),
            (&comment, Some("x\tarkouda-metrics\n"), None, true),
            (&comment, Some("arkouda-metrics-off"), None, false),
            (&comment, Some("no-arkouda-metrics"), None, false),
            (&comment, Some("arkouda"), None, false),
            (&comment, Some("ARKOUDA-METRICS"), None, false),
            (&comment, None, None, false),
            (&SlurmSelect::All, None, None, true),
            (&SlurmSelect::All, Some("whatever"), Some("x"), true),
            (&parts, None, Some("gpu"), true),
            (&parts, Some("arkouda-metrics"), Some("debug"), false),
            (&parts, None, Some("arkouda2"), false),
            (
                &SlurmSelect::None,
                Some("arkouda-metrics"),
                Some("arkouda"),
                false,
            ),
        ];
        for (sel, c, p, want) in cases {
            let j = Job {
                id: "1".into(),
                comment: c.map(str::to_string),
                partition: p.map(str::to_string),
                ..Job::default()
            };
            assert_eq!(selection(sel, &j).is_yes(), *want, "{sel:?} {c:?} {p:?}");
        }
        let j = Job {
            id: "1".into(),
            ..Job::default()
        };
        assert_eq!(
            selection(&parts, &j),
            Selection::No("the job's partition is unknown (select = partition)".into())
        );
    }

    #[test]
    fn placement_table() {
        // (node list, SLURMD_NODENAME, host name, Ok((first node, is first)) or an error)
        type Case<'a> = (
            &'a str,
            Option<&'a str>,
            Option<&'a str>,
            Result<(&'a str, bool), &'a str>,
        );
        let cases: &[Case] = &[
            (
                "nid[001-004,007]",
                Some("nid001"),
                None,
                Ok(("nid001", true)),
            ),
            (
                "nid[001-004,007]",
                Some("nid002"),
                None,
                Ok(("nid001", false)),
            ),
            (
                "nid[001-004,007]",
                Some("nid1"),
                None,
                Ok(("nid001", false)),
            ),
            ("a[1-2]b,c", Some("a1b"), None, Ok(("a1b", true))),
            ("vm", None, Some("vm.example.org"), Ok(("vm", true))),
            (
                "vm.example.org",
                None,
                Some("vm"),
                Ok(("vm.example.org", true)),
            ),
            ("vm", None, Some("other"), Ok(("vm", false))),
            ("vm", None, None, Err("this node's name is unknown")),
            (
                "n[1-",
                Some("n1"),
                None,
                Err("cannot read the job's node list `n[1-`"),
            ),
        ];
        for (list, node, host, want) in cases {
            let j = Job {
                id: "1".into(),
                nodelist: Some(list.to_string()),
                node_name: node.map(str::to_string),
                ..Job::default()
            };
            let got = placement(&j, *host);
            match (got, want) {
                (Ok(p), Ok((first, is_first))) => {
                    assert_eq!(
                        (p.first.as_str(), p.is_first),
                        (*first, *is_first),
                        "{list}"
                    )
                }
                (Err(e), Err(msg)) => assert!(e.to_string().starts_with(msg), "{e}"),
                (got, want) => panic!("{list}: got {got:?}, want {want:?}"),
            }
        }
        let j = Job {
            id: "1".into(),
            ..Job::default()
        };
        assert_eq!(placement(&j, Some("x")).unwrap_err(), HookError::NoNodelist);
    }

    #[test]
    fn template_table() {
        let j = job(&[]);
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("%w/arkouda-%j.conn", Ok("/home/alice/run/arkouda-%j.conn")),
            ("/scratch/%u/%j/ci", Ok("/scratch/alice/42/ci")),
            ("/tmp/100%%-%j", Ok("/tmp/100%-42")),
            ("/tmp/fixed", Ok("/tmp/fixed")),
            ("rel/%j", Err("`rel/42` is not an absolute path")),
            ("/x/%n", Err("unknown %n")),
            ("/x/%", Err("ends in a lone %")),
        ];
        for (t, want) in cases {
            match (expand_template(t, &j), want) {
                (Ok(p), Ok(w)) => {
                    let w = w.replace("%j", "42");
                    assert_eq!(p, PathBuf::from(w), "{t}")
                }
                (Err(e), Err(w)) => assert!(e.to_string().contains(w), "{t}: {e}"),
                (got, want) => panic!("{t}: got {got:?}, want {want:?}"),
            }
        }
        let no_dir = job(&[("SLURM_JOB_WORK_DIR", "")]);
        assert!(expand_template("%w/x", &no_dir)
            .unwrap_err()
            .to_string()
            .contains("SLURM_JOB_WORK_DIR is not set"));
        assert_eq!(
            server_place(None, &j, "nid001").unwrap(),
            ServerPlace::Host("nid001".into())
        );
    }

    fn ctx<'a>(e: &'a BTreeMap<String, String>, systemd: bool) -> Context<'a> {
        Context {
            env: e,
            hostname: None,
            systemd,
            config_file: Some(Path::new("/etc/apa.toml")),
        }
    }

    #[test]
    fn prolog_plans() {
        let s = settings(&[("slurm.run_as", "nobody"), ("slurm.state_dir", "/run/apa")]);
        let opted = job(&[("SLURM_JOB_COMMENT", "arkouda-metrics")]);
        let e = env(&[
            ("ARKOUDA_PUSH_AGENT_METRICS_PORT", "6000"),
            ("ARKOUDA_PUSH_AGENT_BIN", "/x"),
            ("ARKOUDA_PUSH_AGENT_HOOK_LOG", "/y"),
            ("SLURM_JOB_ID", "42"),
        ]);
        let PrologPlan::Start(l) = prolog_plan(&s, &opted, &ctx(&e, false)).unwrap() else {
            panic!("expected a start");
        };
        assert_eq!(l.mode, Mode::Daemon);
        assert_eq!(l.run_as, "nobody");
        assert_eq!(
            l.args.join(" "),
            "run --daemonize --config /etc/apa.toml --job-id 42 --cluster perlmutter \
             --job-user alice --partition debug --restart-count 0 --keys-file /run/apa/42.keys \
             --shutdown-timeout 3000ms --arkouda-host nid001 \
             --pid-file /run/apa/42.pid --log-file /run/apa/42.log"
        );
        assert_eq!(
            l.env,
            vec![(
                "ARKOUDA_PUSH_AGENT_METRICS_PORT".to_string(),
                "6000".to_string()
            )]
        );

        // systemd: the same decisions, as the unit's environment file.
        let PrologPlan::Start(l) = prolog_plan(&s, &opted, &ctx(&e, true)).unwrap() else {
            panic!("expected a start");
        };
        assert_eq!(
            l.mode,
            Mode::Systemd {
                unit: "arkouda-push-agent@42.service".into()
            }
        );
        assert!(l.args.is_empty());
        assert_eq!(l.files.env_file, PathBuf::from("/run/apa/42.env"));
        assert_eq!(
            env_file_text(&l.env),
            "# Written by the arkouda-push-agent Slurm Prolog; removed by the Epilog.\n\
             ARKOUDA_PUSH_AGENT_METRICS_PORT=6000\n\
             ARKOUDA_PUSH_AGENT_CONFIG=/etc/apa.toml\n\
             ARKOUDA_PUSH_AGENT_JOB_ID=42\n\
             ARKOUDA_PUSH_AGENT_CLUSTER=perlmutter\n\
             ARKOUDA_PUSH_AGENT_JOB_USER=alice\n\
             ARKOUDA_PUSH_AGENT_PARTITION=debug\n\
             ARKOUDA_PUSH_AGENT_RESTART_COUNT=0\n\
             ARKOUDA_PUSH_AGENT_KEYS_FILE=/run/apa/42.keys\n\
             ARKOUDA_PUSH_AGENT_SHUTDOWN_TIMEOUT=3000ms\n\
             ARKOUDA_PUSH_AGENT_ARKOUDA_HOST=nid001\n"
        );

        // A requeued job's second run: files and unit of its own, its run on the command line.
        let rerun = job(&[
            ("SLURM_JOB_COMMENT", "arkouda-metrics"),
            ("SLURM_RESTART_COUNT", "1"),
        ]);
        assert_eq!(rerun.run_id(), "42.r1");
        let PrologPlan::Start(l) = prolog_plan(&s, &rerun, &ctx(&e, false)).unwrap() else {
            panic!("expected a start");
        };
        assert!(l
            .args
            .join(" ")
            .contains("--restart-count 1 --keys-file /run/apa/42.r1.keys"));
        assert_eq!(l.files.pid_file, PathBuf::from("/run/apa/42.r1.pid"));
        let PrologPlan::Start(l) = prolog_plan(&s, &rerun, &ctx(&e, true)).unwrap() else {
            panic!("expected a start");
        };
        assert_eq!(
            l.mode,
            Mode::Systemd {
                unit: "arkouda-push-agent@42.r1.service".into()
            }
        );
        let text = env_file_text(&l.env);
        assert!(text.contains("ARKOUDA_PUSH_AGENT_JOB_ID=42\n"), "{text}");
        assert!(
            text.contains("ARKOUDA_PUSH_AGENT_RESTART_COUNT=1\n"),
            "{text}"
        );
        let newer = job(&[("SLURM_JOB_RESTART_COUNT", "3")]);
        assert_eq!(newer.restart_count, 3);

        // The connection-info template replaces the first node.
        let s2 = settings(&[("slurm.connection_info", "%w/ak %j.conn")]);
        let PrologPlan::Start(l) = prolog_plan(&s2, &opted, &ctx(&e, true)).unwrap() else {
            panic!("expected a start");
        };
        assert!(env_file_text(&l.env)
            .contains("ARKOUDA_PUSH_AGENT_CONNECTION_INFO=\"/home/alice/run/ak 42.conn\"\n"));
        let PrologPlan::Start(l) = prolog_plan(&s2, &opted, &ctx(&e, false)).unwrap() else {
            panic!("expected a start");
        };
        assert!(l
            .args
            .windows(2)
            .any(|w| w[0] == "--connection-info" && w[1] == "/home/alice/run/ak 42.conn"));

        // Nothing to do: not selected, or not the first node.
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "not selected: the job has no comment"),
            (&[("SLURM_JOB_COMMENT", "other")], "not selected: its comment does not carry"),
            (
                &[("SLURM_JOB_COMMENT", "arkouda-metrics"), ("SLURMD_NODENAME", "nid002")],
                "selected (its comment carries `arkouda-metrics`), but this node (nid002) is not the job's first node (nid001)",
            ),
        ];
        for (pairs, want) in cases {
            match prolog_plan(&s, &job(pairs), &ctx(&e, false)).unwrap() {
                PrologPlan::Nothing(why) => assert!(why.starts_with(want), "{why}"),
                other => panic!("{pairs:?}: {other:?}"),
            }
        }
        // A shorter shutdown_timeout is kept; the hook's own variable for it is replaced.
        let quick = settings(&[("shutdown_timeout", "1.5s")]);
        let e2 = env(&[("ARKOUDA_PUSH_AGENT_SHUTDOWN_TIMEOUT", "1.5s")]);
        let PrologPlan::Start(l) = prolog_plan(&quick, &opted, &ctx(&e2, true)).unwrap() else {
            panic!("expected a start");
        };
        let text = env_file_text(&l.env);
        assert_eq!(text.matches("SHUTDOWN_TIMEOUT").count(), 1, "{text}");
        assert!(
            text.contains("ARKOUDA_PUSH_AGENT_SHUTDOWN_TIMEOUT=1500ms\n"),
            "{text}"
        );
        // The value given reads back as the same duration.
        let back = settings(&[("shutdown_timeout", "1500ms")]);
        assert_eq!(back.lifecycle.shutdown_timeout, Duration::from_millis(1500));

        // A value that would break the environment file is refused.
        let bad = env(&[("ARKOUDA_PUSH_AGENT_JOB", "a\nb")]);
        assert!(matches!(
            prolog_plan(&s, &opted, &ctx(&bad, true)),
            Err(HookError::BadValue { .. })
        ));
    }

    /// `limit=N` of a hook script.
    fn script_limit(script: &str) -> Duration {
        let n = script
            .lines()
            .find_map(|l| l.strip_prefix("limit="))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .expect("limit=N in the script");
        Duration::from_secs(n)
    }

    fn secs(d: Duration) -> String {
        let s = d.as_secs_f64();
        if s.fract() == 0.0 {
            format!("{s:.0} s")
        } else {
            format!("{s} s")
        }
    }

    /// The hook budgets add up: every wait fits its script's limit, the agent's delete fits
    /// the Epilog's wait, and docs/slurm.md's table shows these very numbers.
    #[test]
    fn hook_budgets_add_up() {
        let prolog = script_limit(include_str!("../../slurm/prolog.sh"));
        let epilog = script_limit(include_str!("../../slurm/epilog.sh"));
        let ctld = script_limit(include_str!("../../slurm/epilog-slurmctld.sh"));
        assert_eq!(
            (prolog, epilog, ctld),
            (PROLOG_LIMIT, EPILOG_LIMIT, CTLD_LIMIT)
        );
        // Slurm's own budgets: Prolog 5 s, Epilog 10 s (the scripts' SIGKILL comes 1 s late).
        let kill = Duration::from_secs(1);
        assert!(PROLOG_LIMIT + kill <= Duration::from_secs(5));
        assert!(EPILOG_LIMIT + kill <= Duration::from_secs(10));
        assert!(PROLOG_START_WAIT < PROLOG_LIMIT);
        // The agent's delete, then its exit, within the Epilog's wait.
        assert!(HOOK_AGENT_SHUTDOWN_MAX + STOP_MARGIN <= EPILOG_STOP_WAIT_MAX);
        let s = settings(&[]);
        assert!(
            s.lifecycle.shutdown_timeout > HOOK_AGENT_SHUTDOWN_MAX,
            "the default is capped"
        );
        assert_eq!(agent_shutdown_timeout(&s), HOOK_AGENT_SHUTDOWN_MAX);
        // The whole Epilog: stop, SIGKILL, backstop, with time left to start and log.
        let epilog_worst =
            EPILOG_STOP_WAIT_MAX + EPILOG_KILL_WAIT + EPILOG_BACKSTOP + BACKSTOP_MARGIN;
        assert!(
            epilog_worst + Duration::from_millis(500) <= EPILOG_LIMIT,
            "{epilog_worst:?}"
        );
        assert!(CTLD_SQUEUE + CTLD_DELETE + BACKSTOP_MARGIN < CTLD_LIMIT);
        // Beside them, the AdminComment: the wait for the summary, then sacctmgr, with the
        // same margin for the thread that does it.
        let comment = CTLD_SUMMARY_WAIT + CTLD_SACCTMGR + BACKSTOP_MARGIN;
        assert!(comment < CTLD_LIMIT, "{comment:?}");
        // One request never outlives its deadline (push_timeout is capped by it), so the
        // default push_timeout needs no place of its own in the sums.
        assert!(s.push_timeout() <= HOOK_AGENT_SHUTDOWN_MAX);

        let doc = include_str!("../../docs/slurm.md");
        let rows = [
            format!("| Prolog | `limit={}` in prolog.sh: {} | waits {} for the agent to start |", PROLOG_LIMIT.as_secs(), secs(PROLOG_LIMIT + kill), secs(PROLOG_START_WAIT)),
            format!("| the agent started by the Prolog | `shutdown_timeout`, at most {} | its final delete |", secs(HOOK_AGENT_SHUTDOWN_MAX)),
            format!("| Epilog | `limit={}` in epilog.sh: {} | stop the agent {} (its delete + {}), SIGKILL + {}, backstop delete {} + {}: at most {} |", EPILOG_LIMIT.as_secs(), secs(EPILOG_LIMIT + kill), secs(EPILOG_STOP_WAIT_MAX), secs(STOP_MARGIN), secs(EPILOG_KILL_WAIT), secs(EPILOG_BACKSTOP), secs(BACKSTOP_MARGIN), secs(epilog_worst)),
            format!("| EpilogSlurmctld | `limit={}` in epilog-slurmctld.sh: {} | a requeued job only: `squeue` {}; delete by key {} + {}; beside them, with `admin_comment`: wait for the summary {}, `sacctmgr` {} (+ {}) |", CTLD_LIMIT.as_secs(), secs(CTLD_LIMIT + kill), secs(CTLD_SQUEUE), secs(CTLD_DELETE), secs(BACKSTOP_MARGIN), secs(CTLD_SUMMARY_WAIT), secs(CTLD_SACCTMGR), secs(BACKSTOP_MARGIN)),
            format!("| any request to the Pushgateway | `push_timeout` ({}) | cut short by the deadline of what it is part of |", secs(s.push_timeout())),
        ];
        for row in rows {
            assert!(doc.contains(&row), "docs/slurm.md lacks the row\n{row}");
        }
    }

    #[test]
    fn epilog_plans() {
        let s = settings(&[("slurm.state_dir", "/run/apa"), ("shutdown_timeout", "2s")]);
        let e = env(&[]);
        let opted = job(&[("SLURM_JOB_COMMENT", "arkouda-metrics")]);
        let EpilogPlan::Stop(stop) = epilog_plan(&s, &opted, &ctx(&e, false)).unwrap() else {
            panic!("expected a stop");
        };
        assert_eq!(stop.files.pid_file, PathBuf::from("/run/apa/42.pid"));
        assert_eq!(stop.wait, Duration::from_millis(2500));
        assert_eq!(stop.backstop, Some(EPILOG_BACKSTOP));
        assert_eq!(stop.unit, None);
        assert_eq!(stop.job_uid, Some(1000));
        // The wait is capped so that the Epilog fits its budget.
        let slow = settings(&[("shutdown_timeout", "60s")]);
        let EpilogPlan::Stop(stop) = epilog_plan(&slow, &opted, &ctx(&e, true)).unwrap() else {
            panic!("expected a stop");
        };
        assert_eq!(stop.wait, EPILOG_STOP_WAIT_MAX);
        assert_eq!(stop.unit.as_deref(), Some("arkouda-push-agent@42.service"));
        assert!(stop.wait + stop.backstop.unwrap() < Duration::from_secs(8));

        // Not selected: stop whatever runs, but no backstop delete.
        let EpilogPlan::Stop(stop) = epilog_plan(&s, &job(&[]), &ctx(&e, false)).unwrap() else {
            panic!("expected a stop");
        };
        assert_eq!(stop.backstop, None);
        // Another node of the job: nothing.
        let other = job(&[
            ("SLURM_JOB_COMMENT", "arkouda-metrics"),
            ("SLURMD_NODENAME", "nid003"),
        ]);
        assert!(matches!(
            epilog_plan(&s, &other, &ctx(&e, false)).unwrap(),
            EpilogPlan::Nothing(_)
        ));
        // Unknown node list: act for a selected job, report an unselected one.
        let lost = job(&[
            ("SLURM_JOB_COMMENT", "arkouda-metrics"),
            ("SLURM_NODELIST", ""),
        ]);
        match epilog_plan(&s, &lost, &ctx(&e, false)).unwrap() {
            EpilogPlan::Stop(stop) => assert!(stop.backstop.is_some()),
            other => panic!("{other:?}"),
        }
        let lost = job(&[("SLURM_NODELIST", "")]);
        assert_eq!(
            epilog_plan(&s, &lost, &ctx(&e, false)).unwrap_err(),
            HookError::NoNodelist
        );
    }

    #[test]
    fn which_run_ends() {
        let names = [
            "42.keys",
            "42.r1.keys",
            "42.r1.pid",
            "421.keys",
            "42.rx.keys",
            "4.keys",
            "42.r12.keys",
        ];
        assert_eq!(recorded_runs("42", names), vec![0, 1, 12]);
        // (recorded, count seen by the Epilog) -> the run it ends
        let cases: &[(&[u32], u32, Option<u32>)] = &[
            (&[0], 0, Some(0)),    // a normal end
            (&[0], 1, Some(0)),    // requeued (Slurm 22.05: the next run not started)
            (&[0, 1], 1, Some(0)), // requeued, the next run already started here
            (&[1], 1, Some(1)),    // the second run's normal end
            (&[], 1, None),        // nothing recorded here
            (&[2], 1, None),       // only a newer run: not this Epilog's
        ];
        for (rec, count, want) in cases {
            assert_eq!(run_to_end(rec, *count), *want, "{rec:?} {count}");
        }
        assert_eq!(ctld_runs(0, false), vec![0]);
        assert_eq!(ctld_runs(0, true), vec![0]);
        assert_eq!(ctld_runs(2, false), vec![1, 2]);
        assert_eq!(ctld_runs(2, true), vec![1]);
    }

    #[test]
    fn ctld_plans() {
        let controller = |pairs: &[(&str, &str)]| {
            let mut j = job(pairs);
            j.node_name = None;
            j
        };
        let s = settings(&[]);
        assert!(matches!(
            ctld_plan(&s, &controller(&[("SLURM_JOB_COMMENT", "arkouda-metrics")])),
            CtldPlan::Delete {
                deadline: CTLD_DELETE,
                ..
            }
        ));
        assert!(matches!(
            ctld_plan(&s, &controller(&[])),
            CtldPlan::Nothing(_)
        ));
        let all = settings(&[("slurm.select", "all")]);
        assert!(matches!(
            ctld_plan(&all, &controller(&[])),
            CtldPlan::Delete { .. }
        ));
        let parts = settings(&[("slurm.select", "partition"), ("slurm.partitions", "debug")]);
        assert!(matches!(
            ctld_plan(&parts, &controller(&[])),
            CtldPlan::Delete { .. }
        ));

        // The summary to store in the AdminComment: a selected job's, with the option on,
        // with a linger too.
        let opted = controller(&[
            ("SLURM_JOB_COMMENT", "arkouda-metrics"),
            ("SLURM_JOB_START_TIME", "1767225600"),
        ]);
        assert_eq!(opted.start_time, Some(1_767_225_600));
        assert_eq!(
            controller(&[("SLURM_JOB_START_TIME", "0")]).start_time,
            None
        );
        let on = [
            ("slurm.admin_comment", "true"),
            ("summary_file", "/shared/s/%j.json"),
        ];
        let want = Some(PathBuf::from("/shared/s/42.json"));
        assert_eq!(ctld_summary(&settings(&on), &opted), want);
        let lingering = settings(&[on[0], on[1], ("linger", "30s")]);
        assert_eq!(ctld_summary(&lingering, &opted), want);
        assert_eq!(ctld_summary(&settings(&on), &controller(&[])), None);
        assert_eq!(
            ctld_summary(&settings(&[on[1]]), &opted),
            None,
            "the option is off by default"
        );
    }

    /// The TaskProlog prints the dashboard link once per step (task 0), only where the
    /// Prolog started the run's agent, only with dashboard_url set.
    #[test]
    fn task_prolog_lines() {
        let with = settings(&[
            (
                "dashboard_url",
                "https://g.example/d/arkouda-job?var-job_id={job_id}&var-cluster={cluster}",
            ),
            ("cluster", "alpha"),
        ]);
        let without = settings(&[]);
        let j = job(&[]);
        let line = "print arkouda-srun: dashboard: https://g.example/d/arkouda-job?var-job_id=42&var-cluster=alpha";
        for (s, procid, here, want) in [
            (&with, Some("0"), true, Some(line)),
            (&with, None, true, Some(line)),
            (&with, Some("1"), true, None),
            (&with, Some("0"), false, None),
            (&without, Some("0"), true, None),
        ] {
            assert_eq!(
                task_prolog_line(s, &j, procid, here).as_deref(),
                want,
                "{procid:?} {here}"
            );
        }
    }

    /// With `linger`, neither backstop deletes at the job's end: the group outlives the
    /// job on purpose and the sweep deletes it once its lease (end + linger) expired.
    #[test]
    fn linger_defers_the_backstops_to_the_sweep() {
        let j = job(&[("SLURM_JOB_COMMENT", "arkouda-metrics")]);
        let plain = settings(&[]);
        let lingering = settings(&[("linger", "30s")]);
        assert!(matches!(ctld_plan(&plain, &j), CtldPlan::Delete { .. }));
        match ctld_plan(&lingering, &j) {
            CtldPlan::Nothing(why) => assert!(why.starts_with("linger is 30s"), "{why}"),
            other => panic!("{other:?}"),
        }
    }
}
