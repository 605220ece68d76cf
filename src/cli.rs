//! The command line: subcommands and the flags, one per non-secret setting.
//!
//! Every flag is `--foo-bar` for the setting `foo_bar` of [`crate::config::KEYS`], made from
//! that table. Flags are taken as text and typed by `config`, so a bad flag value gets the
//! same message, naming the flag, as a bad file or environment value. Secrets have no flag
//! (they would show in `ps`): only `*_file` flags.

use std::path::PathBuf;

use clap::{Arg, ArgAction, Args, Parser, Subcommand};

use crate::config::{FlagValues, KeyDef, Kind, KEYS};

#[derive(Parser, Debug)]
#[command(
    name = "arkouda-push-agent",
    version,
    about = "Polls an Arkouda metrics server and pushes its metrics to a Prometheus Pushgateway, grouped by job; deletes the group when the job ends.",
    after_help = "Every flag --foo-bar is also the config-file key foo_bar and the environment variable ARKOUDA_PUSH_AGENT_FOO_BAR.\nPrecedence: default < config file < environment < flag. Exit codes: 0 ok, 1 failure, 2 configuration error."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Poll and push every interval until SIGTERM/SIGINT, then delete the job's group.
    Run(Common),
    /// One poll and push, then exit (1 when either end failed).
    Once {
        #[command(flatten)]
        common: Common,
        /// Print the exposition text instead of pushing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Delete every group of a job (--job-id) from the Pushgateway, including groups left by
    /// a killed agent. Exit 0 when there is nothing to delete.
    Delete(Common),
    /// Print the resolved configuration with the source of each value, then try both ends.
    Check(Common),
    /// Delete the Pushgateway groups this agent made whose Slurm job no longer runs (one
    /// squeue call); when Slurm cannot be asked (or --no-scheduler), those whose lease
    /// expired more than --grace ago. Other exporters' groups are never touched.
    Sweep {
        #[command(flatten)]
        common: Common,
        /// Print what would be deleted and delete nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Print the job's dashboard link (dashboard_url with {job_id} and {cluster} filled in),
    /// or nothing when no dashboard_url is set: what arkouda-srun shows its user.
    DashboardUrl(Common),
    /// Print one setting's resolved value, for scripts (a duration in seconds; nothing
    /// when unset; secrets refused): `arkouda-push-agent get linger`.
    Get {
        /// The setting's key, e.g. linger or metrics_port.
        key: String,
        #[command(flatten)]
        common: Common,
    },
    /// Slurm hooks, run as root by slurm/prolog.sh, epilog.sh and epilog-slurmctld.sh:
    /// decide from the job's SLURM_* variables and the [slurm] settings, then act.
    #[command(subcommand)]
    Slurm(SlurmHook),
}

/// The Slurm hooks (see docs/slurm.md).
#[derive(Subcommand, Debug)]
pub enum SlurmHook {
    /// Start the job's agent when the job is selected and this is its first node.
    Prolog(Common),
    /// Stop the job's agent (it deletes its group), then delete the job's groups as a backstop.
    Epilog(Common),
    /// On the controller: delete the job's groups (for a node whose Epilog never ran).
    EpilogSlurmctld(Common),
    /// As the job's user before each task (slurm/task-prolog.sh): print the job's
    /// dashboard link into its output, for jobs whose agent the Prolog started.
    TaskProlog(Common),
}

impl SlurmHook {
    pub fn common(&self) -> &Common {
        match self {
            SlurmHook::Prolog(c)
            | SlurmHook::Epilog(c)
            | SlurmHook::EpilogSlurmctld(c)
            | SlurmHook::TaskProlog(c) => c,
        }
    }

    pub fn kind(&self) -> crate::slurm::Hook {
        match self {
            SlurmHook::Prolog(_) => crate::slurm::Hook::Prolog,
            SlurmHook::Epilog(_) => crate::slurm::Hook::Epilog,
            SlurmHook::EpilogSlurmctld(_) => crate::slurm::Hook::EpilogSlurmctld,
            SlurmHook::TaskProlog(_) => crate::slurm::Hook::TaskProlog,
        }
    }
}

impl Command {
    pub fn common(&self) -> &Common {
        match self {
            Command::Run(c) | Command::Delete(c) | Command::Check(c) | Command::DashboardUrl(c) => {
                c
            }
            Command::Slurm(hook) => hook.common(),
            Command::Once { common, .. } | Command::Get { common, .. } => common,
            Command::Sweep { common, .. } => common,
        }
    }
}

/// The settings as flags: one per key of [`crate::config::KEYS`] but the secrets and the
/// `[slurm]` table's, made from that table (name, value placeholder, help with the default),
/// so `--help` and the man pages never disagree with the settings. Values are taken as
/// text and typed by `config`.
#[derive(Debug, Default, Clone)]
pub struct Common {
    /// `--config`: the config file.
    pub config: Option<PathBuf>,
    /// The flags given, by key, in the table's order (a list key's flag may repeat).
    values: Vec<(&'static str, Vec<String>)>,
}

/// Every key that has a flag.
fn flagged() -> impl Iterator<Item = &'static KeyDef> {
    KEYS.iter().filter(|d| d.flag().is_some())
}

/// The help of a key's flag: its doc, then where else it comes from.
fn flag_help(def: &KeyDef) -> String {
    let mut help = crate::config::reference::plain(def.doc);
    match (
        def.default.filter(|_| def.kind != Kind::Bool),
        def.default_note,
    ) {
        (Some(d), _) => help.push_str(&format!(" [default: {d}]")),
        (None, Some(n)) => help.push_str(&format!(" [default: {}]", n.replace('`', ""))),
        _ => {}
    }
    if let Some(alias) = def.env_aliases.first() {
        help.push_str(&format!(" [env: {alias}]"));
    }
    help
}

impl clap::FromArgMatches for Common {
    fn from_arg_matches(m: &clap::ArgMatches) -> Result<Self, clap::Error> {
        let mut values = Vec::new();
        for def in flagged() {
            let v: Vec<String> = if def.kind == Kind::Bool {
                m.get_flag(def.key)
                    .then(|| "true".to_string())
                    .into_iter()
                    .collect()
            } else {
                m.get_many::<String>(def.key)
                    .map(|vs| vs.cloned().collect())
                    .unwrap_or_default()
            };
            if !v.is_empty() {
                values.push((def.key, v));
            }
        }
        Ok(Common {
            config: m.get_one::<PathBuf>("config").cloned(),
            values,
        })
    }

    fn update_from_arg_matches(&mut self, m: &clap::ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for Common {
    fn augment_args(cmd: clap::Command) -> clap::Command {
        let mut cmd = cmd.arg(
            Arg::new("config")
                .long("config")
                .value_name("PATH")
                .value_parser(clap::value_parser!(PathBuf))
                .help("Config file (TOML). Default: /etc/arkouda-push-agent/config.toml if it exists [env: ARKOUDA_PUSH_AGENT_CONFIG]"),
        );
        for def in flagged() {
            let long = def.key.replace('_', "-");
            let arg = Arg::new(def.key).long(long).help(flag_help(def));
            let arg = match def.kind {
                Kind::Bool => arg.action(ArgAction::SetTrue),
                // Repeatable, or comma-separated.
                Kind::List => arg.value_name(def.value_name).action(ArgAction::Append),
                _ => arg.value_name(def.value_name).action(ArgAction::Set),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }

    fn augment_args_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_args(cmd)
    }
}

impl Common {
    /// The flags given, keyed by setting.
    pub fn flag_values(&self) -> FlagValues {
        let mut f = FlagValues {
            config: self.config.clone(),
            values: Vec::new(),
        };
        for (key, v) in &self.values {
            match v.as_slice() {
                [one] => f.set(key, Some(one.clone())),
                many => f.set_list(key, many.to_vec()),
            }
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    /// Every non-secret key has its flag, and no flag lacks a key.
    #[test]
    fn one_flag_per_key() {
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").unwrap();
        let mut flags: Vec<String> = run
            .get_arguments()
            .filter_map(|a| a.get_long().map(str::to_string))
            .filter(|l| l != "config" && l != "help")
            .collect();
        flags.sort();
        let mut keys: Vec<String> = KEYS
            .iter()
            .filter(|k| !k.secret && !k.key.contains('.'))
            .map(|k| k.key.replace('_', "-"))
            .collect();
        keys.sort();
        assert_eq!(flags, keys);
    }

    #[test]
    fn flag_values_map_to_keys() {
        let cli = Cli::try_parse_from([
            "x",
            "run",
            "--job-id",
            "7",
            "--legacy-names",
            "--interval",
            "1s",
        ])
        .unwrap();
        let f = cli.command.common().flag_values();
        let got: Vec<(&str, String)> = f.values.iter().map(|(k, v)| (*k, v.to_string())).collect();
        // In the table's order.
        assert_eq!(
            got,
            vec![
                ("legacy_names", "\"true\"".to_string()),
                ("job_id", "\"7\"".to_string()),
                ("interval", "\"1s\"".to_string())
            ]
        );
    }

    #[test]
    fn no_secret_flags() {
        for bad in [
            "--arkouda-token",
            "--pushgateway-password",
            "--pushgateway-bearer-token",
        ] {
            assert!(
                Cli::try_parse_from(["x", "run", bad, "s"]).is_err(),
                "{bad}"
            );
        }
    }
}
