//! The command line: subcommands and the flags, one per non-secret setting.
//!
//! Every flag is `--foo-bar` for the setting `foo_bar` of [`crate::config::KEYS`]. Flags are
//! taken as text and typed by `config`, so a bad flag value gets the same message, naming
//! the flag, as a bad file or environment value. Secrets have no flag (they would show in
//! `ps`): only `*_file` flags.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::config::FlagValues;

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
}

impl SlurmHook {
    pub fn common(&self) -> &Common {
        match self {
            SlurmHook::Prolog(c) | SlurmHook::Epilog(c) | SlurmHook::EpilogSlurmctld(c) => c,
        }
    }

    pub fn kind(&self) -> crate::slurm::Hook {
        match self {
            SlurmHook::Prolog(_) => crate::slurm::Hook::Prolog,
            SlurmHook::Epilog(_) => crate::slurm::Hook::Epilog,
            SlurmHook::EpilogSlurmctld(_) => crate::slurm::Hook::EpilogSlurmctld,
        }
    }
}

impl Command {
    pub fn common(&self) -> &Common {
        match self {
            Command::Run(c) | Command::Delete(c) | Command::Check(c) => c,
            Command::Slurm(hook) => hook.common(),
            Command::Once { common, .. } => common,
            Command::Sweep { common, .. } => common,
        }
    }
}

/// The settings as flags.
#[derive(Args, Debug, Default, Clone)]
pub struct Common {
    /// Config file (TOML). Default: /etc/arkouda-push-agent/config.toml if it exists.
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Metrics server, tcp://HOST:PORT.
    #[arg(long, value_name = "URL")]
    pub arkouda: Option<String>,
    /// Metrics server host (with --metrics-port).
    #[arg(long, value_name = "HOST")]
    pub arkouda_host: Option<String>,
    /// Metrics port of arkouda_server [default: 5556].
    #[arg(long, value_name = "PORT")]
    pub metrics_port: Option<String>,
    /// arkouda_server's connection-info file, read for the server host.
    #[arg(long, value_name = "PATH")]
    pub connection_info: Option<String>,
    /// Timeout of one request to the metrics server [default: 3s].
    #[arg(long, value_name = "DURATION")]
    pub arkouda_timeout: Option<String>,
    /// Arkouda release to speak to, or auto [default: auto].
    #[arg(long, value_name = "RELEASE")]
    pub arkouda_release: Option<String>,
    /// User name sent to the metrics server [default: arkouda-push-agent].
    #[arg(long, value_name = "NAME")]
    pub arkouda_user: Option<String>,
    /// File holding the Arkouda token.
    #[arg(long, value_name = "PATH")]
    pub arkouda_token_file: Option<String>,
    /// Largest reply accepted from the metrics server [default: 67108864].
    #[arg(long, value_name = "BYTES")]
    pub max_reply_bytes: Option<String>,
    /// Pushgateway base URL, or several, comma-separated [default: http://127.0.0.1:9091].
    #[arg(long, value_name = "URL[,URL]")]
    pub pushgateway: Option<String>,
    /// With several Pushgateways: shard (one per job, by hash) or all (HA) [default: shard].
    #[arg(long, value_name = "MODE")]
    pub pushgateway_mode: Option<String>,
    /// job: one group per job; locale: a group per locale too [default: job].
    #[arg(long, value_name = "LAYOUT")]
    pub layout: Option<String>,
    /// Gzip request bodies of at least this many bytes, 0: never [default: 65536].
    #[arg(long, value_name = "BYTES")]
    pub gzip_threshold: Option<String>,
    /// Keep at most N distinct command names, the rest summed into "other" [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub max_commands: Option<String>,
    /// Keep at most N distinct user names [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub max_users: Option<String>,
    /// Keep at most N distinct error classes [default: 0, no limit].
    #[arg(long, value_name = "N")]
    pub max_error_types: Option<String>,
    /// Basic-auth user for the Pushgateway.
    #[arg(long, value_name = "NAME")]
    pub pushgateway_username: Option<String>,
    /// File holding the Pushgateway basic-auth password.
    #[arg(long, value_name = "PATH")]
    pub pushgateway_password_file: Option<String>,
    /// File holding a bearer token for the Pushgateway.
    #[arg(long, value_name = "PATH")]
    pub pushgateway_bearer_token_file: Option<String>,
    /// PEM CA certificate to trust for the Pushgateway.
    #[arg(long, value_name = "PATH")]
    pub pushgateway_ca_file: Option<String>,
    /// Accept any TLS certificate from the Pushgateway (insecure; logged at start).
    #[arg(long)]
    pub pushgateway_insecure_skip_verify: bool,
    /// Timeout of one HTTP request to the Pushgateway [default: 3s].
    #[arg(long, value_name = "DURATION")]
    pub push_timeout: Option<String>,
    /// Also write every cycle to this Prometheus remote-write URL (repeatable).
    #[arg(long, value_name = "URL")]
    pub remote_write: Vec<String>,
    /// Basic-auth user for the remote-write receivers.
    #[arg(long, value_name = "NAME")]
    pub remote_write_username: Option<String>,
    /// File holding the remote-write basic-auth password.
    #[arg(long, value_name = "PATH")]
    pub remote_write_password_file: Option<String>,
    /// File holding a bearer token for the remote-write receivers.
    #[arg(long, value_name = "PATH")]
    pub remote_write_bearer_token_file: Option<String>,
    /// PEM CA certificate to trust for the remote-write receivers.
    #[arg(long, value_name = "PATH")]
    pub remote_write_ca_file: Option<String>,
    /// Accept any TLS certificate from the remote-write receivers (insecure; logged at start).
    #[arg(long)]
    pub remote_write_insecure_skip_verify: bool,
    /// Requests held per remote-write receiver while it is down [default: 120].
    #[arg(long, value_name = "N")]
    pub remote_write_queue_size: Option<String>,
    /// Value of the job grouping label [default: arkouda].
    #[arg(long, value_name = "NAME")]
    pub job: Option<String>,
    /// Job id: the slurm_job_id grouping label [default: $SLURM_JOB_ID].
    #[arg(long, value_name = "ID")]
    pub job_id: Option<String>,
    /// Cluster name, added to the grouping key [default: $SLURM_CLUSTER_NAME].
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,
    /// Which run of a requeued job this is [default: $SLURM_RESTART_COUNT, else 0].
    #[arg(long, value_name = "N")]
    pub restart_count: Option<String>,
    /// The job's user, for arkouda_job_info [default: $SLURM_JOB_USER].
    #[arg(long, value_name = "NAME")]
    pub job_user: Option<String>,
    /// The job's partition, for arkouda_job_info [default: $SLURM_JOB_PARTITION].
    #[arg(long, value_name = "NAME")]
    pub partition: Option<String>,
    /// Extra static grouping labels, NAME=VALUE[,NAME=VALUE].
    #[arg(long, value_name = "LABELS")]
    pub labels: Option<String>,
    /// Value of arkouda_server_info's server_name label [default: arkouda-metrics].
    #[arg(long, value_name = "NAME")]
    pub server_name: Option<String>,
    /// Time between polls [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub interval: Option<String>,
    /// Deadline for deleting the group at exit [default: 5s].
    #[arg(long, value_name = "DURATION")]
    pub shutdown_timeout: Option<String>,
    /// Emit the old Python exporter's metric names.
    #[arg(long)]
    pub legacy_names: bool,
    /// Log level: error, warn, info, debug, trace [default: info].
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// run: also serve the latest poll at GET /metrics and GET /healthz on ADDR (scrape mode).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// run: push nothing, only serve --listen.
    #[arg(long)]
    pub no_push: bool,
    /// Append the log to this file instead of standard error.
    #[arg(long, value_name = "PATH")]
    pub log_file: Option<String>,
    /// run: detach; return once the agent runs on its own (for a Slurm Prolog).
    #[arg(long)]
    pub daemonize: bool,
    /// run: write the agent's pid to this file (removed at exit).
    #[arg(long, value_name = "PATH")]
    pub pid_file: Option<String>,
    /// run: stop, deleting the group, when this process is gone.
    #[arg(long, value_name = "PID")]
    pub watch_pid: Option<String>,
    /// Directory of the one-agent-per-group locks [default: /run/arkouda-push-agent/locks].
    #[arg(long, value_name = "DIR")]
    pub lock_dir: Option<String>,
    /// run: record the keys of the groups pushed in this file (for the Slurm Epilog).
    #[arg(long, value_name = "PATH")]
    pub keys_file: Option<String>,
    /// Lease of the group: each push carries push time + lease [default: 4 x interval].
    #[arg(long, value_name = "DURATION")]
    pub lease: Option<String>,
    /// sweep: with leases deciding, delete groups whose lease expired this long ago [default: 10m].
    #[arg(long, value_name = "DURATION")]
    pub grace: Option<String>,
    /// sweep: do not ask Slurm; leases decide.
    #[arg(long)]
    pub no_scheduler: bool,
    /// sweep: the squeue binary [default: /usr/bin/squeue].
    #[arg(long, value_name = "PATH")]
    pub squeue: Option<String>,
    /// sweep: bound on the squeue and scontrol calls [default: 10s].
    #[arg(long, value_name = "DURATION")]
    pub squeue_timeout: Option<String>,
}

impl Common {
    /// The flags given, keyed by setting.
    pub fn flag_values(&self) -> FlagValues {
        let mut f = FlagValues {
            config: self.config.clone(),
            values: Vec::new(),
        };
        let c = self.clone();
        f.set("arkouda", c.arkouda);
        f.set("arkouda_host", c.arkouda_host);
        f.set("metrics_port", c.metrics_port);
        f.set("connection_info", c.connection_info);
        f.set("arkouda_timeout", c.arkouda_timeout);
        f.set("arkouda_release", c.arkouda_release);
        f.set("arkouda_user", c.arkouda_user);
        f.set("arkouda_token_file", c.arkouda_token_file);
        f.set("max_reply_bytes", c.max_reply_bytes);
        f.set("pushgateway", c.pushgateway);
        f.set("pushgateway_mode", c.pushgateway_mode);
        f.set("layout", c.layout);
        f.set("gzip_threshold", c.gzip_threshold);
        f.set("max_commands", c.max_commands);
        f.set("max_users", c.max_users);
        f.set("max_error_types", c.max_error_types);
        f.set("pushgateway_username", c.pushgateway_username);
        f.set("pushgateway_password_file", c.pushgateway_password_file);
        f.set(
            "pushgateway_bearer_token_file",
            c.pushgateway_bearer_token_file,
        );
        f.set("pushgateway_ca_file", c.pushgateway_ca_file);
        f.set(
            "pushgateway_insecure_skip_verify",
            c.pushgateway_insecure_skip_verify
                .then(|| "true".to_string()),
        );
        f.set("push_timeout", c.push_timeout);
        f.set_list("remote_write", c.remote_write);
        f.set("remote_write_username", c.remote_write_username);
        f.set("remote_write_password_file", c.remote_write_password_file);
        f.set(
            "remote_write_bearer_token_file",
            c.remote_write_bearer_token_file,
        );
        f.set("remote_write_ca_file", c.remote_write_ca_file);
        f.set(
            "remote_write_insecure_skip_verify",
            c.remote_write_insecure_skip_verify
                .then(|| "true".to_string()),
        );
        f.set("remote_write_queue_size", c.remote_write_queue_size);
        f.set("job", c.job);
        f.set("job_id", c.job_id);
        f.set("cluster", c.cluster);
        f.set("restart_count", c.restart_count);
        f.set("job_user", c.job_user);
        f.set("partition", c.partition);
        f.set("labels", c.labels);
        f.set("server_name", c.server_name);
        f.set("interval", c.interval);
        f.set("shutdown_timeout", c.shutdown_timeout);
        f.set("legacy_names", c.legacy_names.then(|| "true".to_string()));
        f.set("log_level", c.log_level);
        f.set("log_file", c.log_file);
        f.set("listen", c.listen);
        f.set("no_push", c.no_push.then(|| "true".to_string()));
        f.set("daemonize", c.daemonize.then(|| "true".to_string()));
        f.set("pid_file", c.pid_file);
        f.set("watch_pid", c.watch_pid);
        f.set("lock_dir", c.lock_dir);
        f.set("keys_file", c.keys_file);
        f.set("lease", c.lease);
        f.set("grace", c.grace);
        f.set("no_scheduler", c.no_scheduler.then(|| "true".to_string()));
        f.set("squeue", c.squeue);
        f.set("squeue_timeout", c.squeue_timeout);
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::KEYS;
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
        let keys: Vec<&str> = f.values.iter().map(|(k, _)| *k).collect();
        assert_eq!(keys, vec!["job_id", "interval", "legacy_names"]);
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
