//! arkouda-push-agent: parse, load the configuration, start logging, run one subcommand,
//! turn the result into an exit code (0 ok, 1 failure, 2 configuration error).

use std::collections::BTreeMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use clap::Parser;

use arkouda_push_agent::cli::{Cli, Command};
use arkouda_push_agent::config::{self, ConfigError, Resolved, Settings};
use arkouda_push_agent::sinks::Counters;
use arkouda_push_agent::wiring::{self, Purpose};
use arkouda_push_agent::{groups, lifecycle, process, signals};

const CONFIG_ERROR: u8 = 2;

fn environment() -> BTreeMap<String, String> {
    // vars() would panic on a variable that is not UTF-8; such a variable is none of ours.
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn load(cli: &Cli, env: &BTreeMap<String, String>) -> Result<(Settings, Resolved), ConfigError> {
    let resolved = config::resolve(&cli.command.common().flag_values(), env)?;
    let mut settings = Settings::from_resolved(&resolved)?;
    if let Ok(cwd) = std::env::current_dir() {
        settings.absolutize(&cwd);
    }
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Once { dry_run: false, .. }
            | Command::Delete(_)
            | Command::DashboardUrl(_)
    ) {
        settings.job.require_id()?;
    }
    if matches!(
        cli.command,
        Command::Run(_) | Command::Once { dry_run: false, .. }
    ) {
        settings.require_sink()?;
    }
    if matches!(cli.command, Command::Delete(_) | Command::Sweep { .. }) {
        settings.require_pushgateway()?;
    }
    Ok((settings, resolved))
}

/// Logs to `file` or stderr. Without time stamps for the Slurm hooks: their scripts stamp
/// every line themselves (syslog or the hook log).
fn init_logging(level: &str, file: Option<&Path>, stamped: bool) -> Result<(), String> {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // A log line that cannot be written is dropped, never reported on stderr: that
    // report would panic when stderr is a closed pipe (`sweep 2>&1 | head -1`).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .log_internal_errors(false);
    let writer: tracing_subscriber::fmt::writer::BoxMakeWriter = match file {
        Some(path) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open the log file {}: {e}", path.display()))?;
            tracing_subscriber::fmt::writer::BoxMakeWriter::new(Mutex::new(f))
        }
        None => tracing_subscriber::fmt::writer::BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = builder.with_ansi(ansi).with_writer(writer);
    if stamped {
        builder.init();
    } else {
        builder.without_time().init();
    }
    Ok(())
}

/// What `run` holds for its whole life: the group lock (when it pushes to a Pushgateway)
/// and the pid file; and, with --daemonize, the pipe to the waiting caller, answered once
/// the agent is up.
struct RunGuards {
    _lock: Option<process::GroupLock>,
    _pid_file: Option<process::PidFile>,
    readiness: Option<process::Readiness>,
}

/// The steps of `run` that must happen before any thread exists: detach, lock the group,
/// write the pid file, open the log. A failure here is told to a --daemonize caller at
/// once; success only once the sinks are up.
fn prepare_run(settings: &Settings) -> Result<RunGuards, String> {
    let mut readiness = if settings.process.daemonize {
        Some(process::daemonize().map_err(|e| e.to_string())?)
    } else {
        None
    };
    let result = (|| -> Result<RunGuards, String> {
        let job_id = settings.job.require_id().map_err(|e| e.to_string())?;
        // One writer per Pushgateway group; an agent that pushes to none (scrape mode,
        // remote write only) may run beside the one that does.
        let lock = if settings.pushgateway.pushes() {
            let group = groups::grouping_key(&settings.job, job_id).path();
            let dir = process::lock_dir(settings.process.lock_dir.as_deref())
                .map_err(|e| e.to_string())?;
            let lock = process::GroupLock::acquire(&dir, &group).map_err(|e| e.to_string())?;
            // The Epilog deletes the groups recorded here: the job's own from the start
            // (the Pushgateway sink records per-locale groups as it pushes them). Best
            // effort: the Epilog also computes the job's own key.
            if let Some(path) = &settings.pushgateway.keys_file {
                let _ = groups::record_keys(path, &[groups::grouping_key(&settings.job, job_id)]);
            }
            Some(lock)
        } else {
            None
        };
        let pid_file = match &settings.process.pid_file {
            Some(p) => Some(process::PidFile::write(p).map_err(|e| e.to_string())?),
            None => None,
        };
        init_logging(
            &settings.process.log_level,
            settings.process.log_file.as_deref(),
            true,
        )?;
        Ok(RunGuards {
            _lock: lock,
            _pid_file: pid_file,
            readiness: None,
        })
    })();
    match result {
        Ok(mut guards) => {
            guards.readiness = readiness;
            Ok(guards)
        }
        Err(e) => {
            if let Some(r) = readiness.as_mut() {
                r.fail(&e);
            }
            Err(e)
        }
    }
}

fn fail(e: &anyhow::Error) -> ExitCode {
    arkouda_push_agent::errln!("arkouda-push-agent: error: {e:#}");
    ExitCode::FAILURE
}

/// glibc keeps freed memory in per-thread arenas and raises its mmap threshold after a big
/// block is freed, so each cycle's transient buffers (a 4096-locale reply is ~2 MB, its
/// exposition text as much) would stay resident for good. One arena and a fixed 256 KiB
/// mmap threshold give them back after every cycle: steady RSS at 4096 locales went from
/// 31 to 19 MiB (BENCHMARKS.md). The agent runs on nodes that belong to a user's job.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    // SAFETY: mallopt only sets allocator parameters; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    let env = environment();
    let (settings, resolved) = match load(&cli, &env) {
        Ok(v) => v,
        Err(e) => {
            arkouda_push_agent::errln!("arkouda-push-agent: configuration error: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    let mut guards = if matches!(cli.command, Command::Run(_)) {
        match prepare_run(&settings) {
            Ok(g) => Some(g),
            Err(e) => return fail(&anyhow::anyhow!(e)),
        }
    } else {
        let stamped = !matches!(cli.command, Command::Slurm(_));
        let process = &settings.process;
        if let Err(e) = init_logging(&process.log_level, process.log_file.as_deref(), stamped) {
            return fail(&anyhow::anyhow!(e));
        }
        None
    };
    for w in &settings.warnings {
        tracing::warn!("{w}");
    }
    for name in config::unknown_env_keys(&env) {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no setting");
    }

    // Install the handler before anything can block, so a signal is never lost.
    let shutdown = match &cli.command {
        Command::Run(_) => match signals::shutdown_signal() {
            Ok(rx) => Some(rx),
            Err(e) => return fail(&anyhow::anyhow!("cannot install signal handlers: {e}")),
        },
        _ => None,
    };

    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&anyhow::anyhow!("cannot start the async runtime: {e}")),
    };
    let code = runtime.block_on(async {
        let counters = Arc::new(Counters::default());
        let job_id = settings.job.id.clone().unwrap_or_default();
        let sinks = |purpose| wiring::sinks(&settings, &job_id, &counters, purpose);
        match (cli.command, shutdown) {
            (Command::Run(_), Some(rx)) => {
                // A daemon's stderr is /dev/null: its last word must reach its log file too.
                let logs_to_file = settings.process.log_file.is_some();
                let mut readiness = guards.as_mut().and_then(|g| g.readiness.take());
                let built = sinks(Purpose::Run);
                // Everything that can fail at start is up (or not): tell a --daemonize caller.
                match (&built, readiness.as_mut()) {
                    (Ok(_), Some(r)) => r.ready(),
                    (Err(e), Some(r)) => r.fail(&format!("{e:#}")),
                    _ => {}
                }
                let result = match built {
                    Ok(sinks) => lifecycle::run(settings, sinks, counters.clone(), rx).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        if logs_to_file {
                            tracing::error!(error = %format!("{e:#}"), "the agent stops with an error");
                        }
                        fail(&e)
                    }
                }
            }
            (Command::Once { dry_run, .. }, _) => {
                let built = if dry_run {
                    Ok(Vec::new())
                } else {
                    sinks(Purpose::Once)
                };
                let result = match built {
                    Ok(sinks) => lifecycle::once(settings, sinks, counters.clone(), dry_run).await,
                    Err(e) => Err(e),
                };
                match result {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => fail(&e),
                }
            }
            (Command::Get { key, .. }, _) => {
                if let Some(v) = resolved.plain_value(&key) {
                    arkouda_push_agent::outln!("{v}");
                }
                ExitCode::SUCCESS
            }
            (Command::DashboardUrl(_), _) => {
                if let Some(url) = settings.job.dashboard_link(&job_id) {
                    arkouda_push_agent::outln!("{url}");
                }
                ExitCode::SUCCESS
            }
            (Command::Delete(_), _) => match groups::delete_job(
                &settings.pushgateway,
                &settings.job,
                settings.lifecycle.shutdown_timeout,
            )
            .await
            {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            (Command::Sweep { dry_run, .. }, _) => {
                let result = arkouda_push_agent::sweep::sweep(
                    &settings.sweep,
                    &settings.pushgateway,
                    &settings.job,
                    settings.lifecycle.shutdown_timeout,
                    dry_run,
                )
                .await;
                match result {
                    Ok(true) => ExitCode::SUCCESS,
                    Ok(false) => ExitCode::FAILURE,
                    Err(e) => fail(&e),
                }
            }
            (Command::Check(_), _) => {
                let key = settings
                    .job
                    .id
                    .as_deref()
                    .map(|id| groups::grouping_key(&settings.job, id).path());
                let ok = match sinks(Purpose::Check) {
                    Ok(sinks) => lifecycle::check(settings.clone(), &resolved, key, sinks).await,
                    Err(e) => {
                        arkouda_push_agent::outln!("sinks: FAILED: {e:#}");
                        false
                    }
                };
                if ok {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            (Command::Slurm(hook), _) => {
                let hook = hook.kind();
                if arkouda_push_agent::slurm::run_hook(hook, &settings, &resolved, &env).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            (Command::Run(_), None) => ExitCode::FAILURE,
        }
    });
    // Nothing left on the blocking pool (a name lookup of the HTTP client) may hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}
