//! arkouda-push-agent: parse, load the configuration, start logging, run one subcommand,
//! turn the result into an exit code (0 ok, 1 failure, 2 configuration error).

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use arkouda_push_agent::agent;
use arkouda_push_agent::cli::{Cli, Command};
use arkouda_push_agent::config::{self, ConfigError, Resolved, Settings};

const CONFIG_ERROR: u8 = 2;

fn environment() -> BTreeMap<String, String> {
    // vars() would panic on a variable that is not UTF-8; such a variable is none of ours.
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

fn load(cli: &Cli, env: &BTreeMap<String, String>) -> Result<(Settings, Resolved), ConfigError> {
    let resolved = config::resolve(&cli.command.common().flag_values(), env)?;
    let settings = Settings::from_resolved(&resolved)?;
    if matches!(
        cli.command,
        Command::Run(_) | Command::Once { .. } | Command::Delete(_)
    ) {
        settings.require_job_id()?;
    }
    Ok((settings, resolved))
}

fn init_logging(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn fail(e: &anyhow::Error) -> ExitCode {
    eprintln!("arkouda-push-agent: error: {e:#}");
    ExitCode::FAILURE
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let env = environment();
    let (settings, resolved) = match load(&cli, &env) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("arkouda-push-agent: configuration error: {e}");
            return ExitCode::from(CONFIG_ERROR);
        }
    };
    init_logging(&settings.log_level);
    for name in config::unknown_env_keys(&env) {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no setting");
    }

    // Install the handler before anything can block, so a signal is never lost.
    let shutdown = match &cli.command {
        Command::Run(_) => match agent::shutdown_signal() {
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
        match (cli.command, shutdown) {
            (Command::Run(_), Some(rx)) => match agent::run(settings, rx).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            (Command::Once { dry_run, .. }, _) => match agent::once(settings, dry_run).await {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => fail(&e),
            },
            (Command::Delete(_), _) => match agent::delete_job(&settings).await {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => fail(&e),
            },
            (Command::Check(_), _) => {
                if agent::check(settings, &resolved).await {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                }
            }
            (Command::Run(_), None) => ExitCode::FAILURE,
        }
    });
    // A poll stuck in a blocking ZeroMQ call must not hold the exit.
    runtime.shutdown_timeout(Duration::from_millis(100));
    code
}
