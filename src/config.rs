//! Settings: one definition per setting, resolved from four layers and remembered with
//! the layer each value came from.
//!
//! Precedence, lowest to highest: built-in default < TOML file (`--config PATH`, else
//! `/etc/arkouda-push-agent/config.toml` when it exists) < environment < flags. Every flag
//! `--foo-bar` is the file key `foo_bar` and the variable `ARKOUDA_PUSH_AGENT_FOO_BAR`; some
//! keys also honour the names the old exporter, Arkouda and Slurm use ([`KEYS`] lists them).
//!
//! Secrets (tokens, passwords) are never flags and never plain keys of the file: they come
//! from a `*_file` key or from the environment, and are held as [`Secret`].
//!
//! This module only reads and validates; it never connects anywhere. A bad value is a
//! [`ConfigError`] that names the key and its source; the binary turns it into exit code 2.

pub mod reference;

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::secret::Secret;

/// Environment prefix of every key.
pub const ENV_PREFIX: &str = "ARKOUDA_PUSH_AGENT_";
/// The config file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/arkouda-push-agent/config.toml";

/// Where a value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(p) => write!(f, "file {}", p.display()),
            Source::Env(name) => write!(f, "environment {name}"),
            Source::Flag(name) => write!(f, "flag {name}"),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Str,
    Bool,
    Port,
    Bytes,
    Duration,
    Path,
    Labels,
    List,
    Int,
}

/// Who reads a setting: the sections of the reference, the example file and `--help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Group {
    Arkouda,
    Series,
    Job,
    Pushgateway,
    RemoteWrite,
    Listen,
    Run,
    Sweep,
    Slurm,
}

impl Group {
    /// Every group, in the order of the reference and the example file.
    pub const ALL: [Group; 9] = [
        Group::Arkouda,
        Group::Series,
        Group::Job,
        Group::Pushgateway,
        Group::RemoteWrite,
        Group::Listen,
        Group::Run,
        Group::Sweep,
        Group::Slurm,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Group::Arkouda => "Arkouda server",
            Group::Series => "Series and names",
            Group::Job => "Job and grouping labels",
            Group::Pushgateway => "Pushgateway",
            Group::RemoteWrite => "Remote write",
            Group::Listen => "Scrape mode",
            Group::Run => "The agent's run",
            Group::Sweep => "sweep",
            Group::Slurm => "[slurm]: the Slurm hooks",
        }
    }

    /// What the group is for, one or two sentences.
    pub fn about(self) -> &'static str {
        match self {
            Group::Arkouda => "Where the metrics server is and how to talk to it.",
            Group::Series => "What the series are called and how many distinct values a label may take.",
            Group::Job => "The labels that name the job's group (and every series), and the job's links.",
            Group::Pushgateway => "Pushing to one or more Prometheus Pushgateways: one group per job, deleted when the job ends.",
            Group::RemoteWrite => "Writing every cycle by Prometheus remote write (1.0), beside or instead of the Pushgateway.",
            Group::Listen => "Serving the latest cycle for a Prometheus that scrapes the agent.",
            Group::Run => "How `run` cycles, stops, logs and detaches.",
            Group::Sweep => "`sweep`: deleting the groups whose job is gone.",
            Group::Slurm => "How the Slurm hooks (`arkouda-push-agent slurm prolog|epilog|epilog-slurmctld`) decide; keys of the `[slurm]` table.",
        }
    }
}

/// One setting: its key, the extra environment names it honours, its default and its doc.
/// Defined once here; the flags (so `--help` and the man pages), the reference table of
/// `docs/configuration.md` and `config/arkouda-push-agent.toml` are made from it.
#[derive(Debug)]
pub struct KeyDef {
    pub key: &'static str,
    pub kind: Kind,
    /// Who reads it.
    pub group: Group,
    /// The placeholder of its flag's value (`--interval <DURATION>`).
    pub value_name: &'static str,
    /// A value for the example file when it has no default (TOML).
    pub example: Option<&'static str>,
    /// The default in words when it is computed (`4 × interval`).
    pub default_note: Option<&'static str>,
    /// Other environment variables that set it, in precedence order, after
    /// `ARKOUDA_PUSH_AGENT_<KEY>`.
    pub env_aliases: &'static [&'static str],
    pub default: Option<&'static str>,
    /// Only from the environment (`ARKOUDA_PUSH_AGENT_<KEY>`), never a flag or a file key.
    pub secret: bool,
    pub doc: &'static str,
}

const fn key(
    key: &'static str,
    kind: Kind,
    default: Option<&'static str>,
    env_aliases: &'static [&'static str],
    doc: &'static str,
) -> KeyDef {
    KeyDef {
        key,
        kind,
        group: Group::Run,
        value_name: "VALUE",
        example: None,
        default_note: None,
        env_aliases,
        default,
        secret: false,
        doc,
    }
}

impl KeyDef {
    const fn group(self, group: Group) -> KeyDef {
        KeyDef { group, ..self }
    }

    const fn value(self, value_name: &'static str) -> KeyDef {
        KeyDef { value_name, ..self }
    }

    const fn example(self, toml: &'static str) -> KeyDef {
        KeyDef {
            example: Some(toml),
            ..self
        }
    }

    const fn default_note(self, words: &'static str) -> KeyDef {
        KeyDef {
            default_note: Some(words),
            ..self
        }
    }

    /// Its flag, `--foo-bar`: every key but the secrets and the `[slurm]` table's.
    pub fn flag(&self) -> Option<String> {
        (!self.secret && !self.key.contains('.'))
            .then(|| format!("--{}", self.key.replace('_', "-")))
    }

    /// Its environment variables, `ARKOUDA_PUSH_AGENT_<KEY>` first.
    pub fn env_names(&self) -> Vec<String> {
        let mut v = vec![env_name(self.key)];
        v.extend(self.env_aliases.iter().map(|a| a.to_string()));
        v
    }
}

const fn secret(key: &'static str, doc: &'static str) -> KeyDef {
    KeyDef {
        key,
        kind: Kind::Str,
        group: Group::Run,
        value_name: "VALUE",
        example: None,
        default_note: None,
        env_aliases: &[],
        default: None,
        secret: true,
        doc,
    }
}

/// Every setting the agent knows. The configuration table of `docs/configuration.md` and
/// `config/arkouda-push-agent.toml` follow this list.
pub static KEYS: &[KeyDef] = &[
    key("arkouda", Kind::Str, None, &[],
        "Metrics server address, `tcp://HOST:PORT` (or `HOST:PORT`, or `HOST` with `metrics_port`). Wins over `arkouda_host` and `connection_info`.")
        .group(Group::Arkouda)
        .value("URL")
        .example("\"tcp://nid001:5556\""),
    key("arkouda_host", Kind::Str, None, &["ARKOUDA_METRICS_SERVICE_HOST", "METRICS_SERVICE_NAME"],
        "Metrics server host, with `metrics_port`. Used when neither `arkouda` nor `connection_info` is set; with `connection_info`, only while that file does not exist.")
        .group(Group::Arkouda)
        .value("HOST")
        .example("\"nid001\""),
    key("metrics_port", Kind::Port, Some("5556"),
        &["METRICS_SERVER_PORT", "ARKOUDA_METRICS_SERVICE_PORT", "METRICS_SERVICE_PORT"],
        "Metrics port of `arkouda_server` (its `METRICS_SERVER_PORT`).")
        .group(Group::Arkouda)
        .value("PORT"),
    key("connection_info", Kind::Path, None, &["ARKOUDA_SERVER_CONNECTION_INFO"],
        "`arkouda_server`'s connection-info file; gives the server host when `arkouda` is unset (see [How the server is found](#how-the-server-is-found)).")
        .group(Group::Arkouda)
        .value("PATH")
        .example("\"/home/alice/.arkouda/connection-info\""),
    key("arkouda_timeout", Kind::Duration, Some("3s"), &[],
        "Send and receive timeout of one request to the metrics server (10ms to 10m).")
        .group(Group::Arkouda)
        .value("DURATION"),
    key("arkouda_release", Kind::Str, Some("auto"), &[],
        "Release to speak to: `auto` (ask `getconfig`), or a release such as `2022.08.15` or `2024.10.02`. A wrong one makes a real metrics server stop answering until it is restarted: leave it on `auto`.")
        .group(Group::Arkouda)
        .value("RELEASE"),
    key("arkouda_user", Kind::Str, Some("arkouda-push-agent"), &[],
        "User name sent in requests to the metrics server.")
        .group(Group::Arkouda)
        .value("NAME"),
    key("arkouda_token_file", Kind::Path, None, &[], "File holding the Arkouda token.")
        .group(Group::Arkouda)
        .value("PATH")
        .example("\"/etc/arkouda-push-agent/arkouda-token\""),
    secret("arkouda_token", "Arkouda token; environment only. Wins over `arkouda_token_file`.")
        .group(Group::Arkouda),
    key("max_reply_bytes", Kind::Bytes, Some("67108864"), &[],
        "Largest reply accepted from the metrics server (at least 1024); a larger one is dropped and the poll fails (it shows as a timeout).")
        .group(Group::Arkouda)
        .value("BYTES"),
    key("server_name", Kind::Str, Some("arkouda-metrics"), &["ARKOUDA_SERVER_NAME", "ARKOUDA_METRICS_SERVER_NAME"],
        "Value of the `server_name` label of `arkouda_server_info` (`arkouda_server_name` with `legacy_names`).")
        .group(Group::Series)
        .value("NAME"),
    key("legacy_names", Kind::Bool, Some("false"), &[],
        "Emit the old Python exporter's metric names instead of the `arkouda_*` names ([metrics.md](metrics.md)).")
        .group(Group::Series),
    key("max_commands", Kind::Int, Some("0"), &[],
        "Cardinality budget: the first N command names keep their series, later ones are summed into `command=\"other\"`; `0` no limit.")
        .group(Group::Series)
        .value("N"),
    key("max_users", Kind::Int, Some("0"), &[],
        "The same for user names.")
        .group(Group::Series)
        .value("N"),
    key("max_error_types", Kind::Int, Some("0"), &[],
        "The same for error classes.")
        .group(Group::Series)
        .value("N"),
    key("job", Kind::Str, Some("arkouda"), &[], "Value of the `job` grouping label.")
        .group(Group::Job)
        .value("NAME"),
    key("job_id", Kind::Str, None, &["SLURM_JOB_ID"], "The job id: the `slurm_job_id` grouping label. Needed by `run`, `once`, `delete`.")
        .group(Group::Job)
        .value("ID")
        .example("\"4242\""),
    key("cluster", Kind::Str, None, &["SLURM_CLUSTER_NAME"], "Cluster name; added to the grouping key when set.")
        .group(Group::Job)
        .value("NAME")
        .example("\"perlmutter\""),
    key("restart_count", Kind::Int, Some("0"), &["SLURM_RESTART_COUNT"],
        "Which run of a requeued job this is (Slurm's restart count): from 1 on, the grouping key adds `slurm_restart_count`, so that the cleanup of one run never deletes the next run's group (docs/slurm.md, \"Requeue\").")
        .group(Group::Job)
        .value("N"),
    key("job_user", Kind::Str, None, &["SLURM_JOB_USER"], "The job's user, reported in `arkouda_job_info`.")
        .group(Group::Job)
        .value("NAME")
        .example("\"alice\""),
    key("partition", Kind::Str, None, &["SLURM_JOB_PARTITION"], "The job's partition, reported in `arkouda_job_info`.")
        .group(Group::Job)
        .value("NAME")
        .example("\"debug\""),
    key("labels", Kind::Labels, None, &[],
        "Extra static grouping labels, `NAME=VALUE[,NAME=VALUE]` (a table in the file), e.g. `instance=second`. Not `job`, `slurm_job_id`, `cluster`, `locale` or `slurm_restart_count`.")
        .group(Group::Job)
        .value("LABELS")
        .example("{ site = \"nersc\", instance = \"second\" }"),
    key("dashboard_url", Kind::Str, None, &[],
        "The job dashboard's URL, with `{job_id}` and `{cluster}` filled in per job (URL-encoded): `arkouda-srun` prints `arkouda-srun: dashboard: <url>` on stderr when the agent starts; `arkouda-push-agent dashboard-url --job-id N` prints the link.")
        .group(Group::Job)
        .value("URL")
        .example("\"https://grafana.example.org/d/arkouda-job/arkouda-job?var-job_id={job_id}&var-cluster={cluster}\""),
    key("pushgateway", Kind::List, None, &["PUSHGATEWAY_URL"],
        "Pushgateway base URL, `http` or `https`; no password, query or fragment in it. Several: a list (see `pushgateway_mode`). No default: unset, nothing is pushed to a Pushgateway (then `remote_write` or `listen` is needed). `delete`, `sweep` and the Slurm backstops need it.")
        .group(Group::Pushgateway)
        .value("URL")
        .example("\"http://pushgateway.example.org:9091\""),
    key("pushgateway_mode", Kind::Str, Some("shard"), &[],
        "With several `pushgateway`s: `shard` (each job to one, by a stable hash of its job id) or `all` (every job to each: HA).")
        .group(Group::Pushgateway)
        .value("MODE"),
    key("layout", Kind::Str, Some("job"), &[],
        "`job`: one group per job; `locale`: each locale's series in a group of its own (grouping key adds `locale`), which costs the Pushgateway quadratically ([scaling.md](scaling.md)).")
        .group(Group::Pushgateway)
        .value("LAYOUT"),
    key("gzip_threshold", Kind::Bytes, Some("65536"), &[],
        "Gzip request bodies of at least this many bytes; `0` never.")
        .group(Group::Pushgateway)
        .value("BYTES"),
    key("pushgateway_username", Kind::Str, None, &[], "Basic-auth user for the Pushgateway.")
        .group(Group::Pushgateway)
        .value("NAME")
        .example("\"arkouda\""),
    key("pushgateway_password_file", Kind::Path, None, &[], "File holding the basic-auth password.")
        .group(Group::Pushgateway)
        .value("PATH")
        .example("\"/etc/arkouda-push-agent/pushgateway-password\""),
    secret("pushgateway_password", "Basic-auth password; environment only. Needs `pushgateway_username`.")
        .group(Group::Pushgateway),
    key("pushgateway_bearer_token_file", Kind::Path, None, &[], "File holding a bearer token for the Pushgateway.")
        .group(Group::Pushgateway)
        .value("PATH")
        .example("\"/etc/arkouda-push-agent/pushgateway-token\""),
    secret("pushgateway_bearer_token", "Bearer token for the Pushgateway; environment only. Not together with basic auth.")
        .group(Group::Pushgateway),
    key("pushgateway_ca_file", Kind::Path, None, &[], "PEM CA certificate to trust besides the system roots.")
        .group(Group::Pushgateway)
        .value("PATH")
        .example("\"/etc/ssl/certs/site-ca.pem\""),
    key("pushgateway_insecure_skip_verify", Kind::Bool, Some("false"), &[],
        "Accept any TLS certificate from the Pushgateway. Insecure: logged as a warning at every start.")
        .group(Group::Pushgateway),
    key("push_timeout", Kind::Duration, Some("3s"), &[], "Timeout of one HTTP request to the Pushgateway, and to a remote-write receiver (10ms to 10m).")
        .group(Group::Pushgateway)
        .value("DURATION"),
    key("remote_write", Kind::List, None, &[],
        "Prometheus remote-write URLs; every cycle is also written to each, and each series ends with a stale marker when the job ends.")
        .group(Group::RemoteWrite)
        .value("URL")
        .example("[\"http://prometheus:9090/api/v1/write\"]"),
    key("remote_write_username", Kind::Str, None, &[], "Basic-auth user for the receivers.")
        .group(Group::RemoteWrite)
        .value("NAME")
        .example("\"arkouda\""),
    key("remote_write_password_file", Kind::Path, None, &[], "File holding the receivers' basic-auth password.")
        .group(Group::RemoteWrite)
        .value("PATH")
        .example("\"/etc/arkouda-push-agent/remote-write-password\""),
    secret("remote_write_password", "The password itself, environment only.")
        .group(Group::RemoteWrite),
    key("remote_write_bearer_token_file", Kind::Path, None, &[], "File holding a bearer token for the receivers.")
        .group(Group::RemoteWrite)
        .value("PATH")
        .example("\"/etc/arkouda-push-agent/remote-write-token\""),
    secret("remote_write_bearer_token", "The token itself, environment only.")
        .group(Group::RemoteWrite),
    key("remote_write_ca_file", Kind::Path, None, &[], "PEM CA certificate to trust for the receivers.")
        .group(Group::RemoteWrite)
        .value("PATH")
        .example("\"/etc/ssl/certs/site-ca.pem\""),
    key("remote_write_insecure_skip_verify", Kind::Bool, Some("false"), &[],
        "Accept any certificate from the receivers (logged as a warning at start).")
        .group(Group::RemoteWrite),
    key("remote_write_queue_size", Kind::Int, Some("120"), &[],
        "Requests held per receiver while it is down (10 min at 5 s); the oldest are dropped when full, counted.")
        .group(Group::RemoteWrite)
        .value("N"),
    key("listen", Kind::Str, None, &[],
        "`run`: also serve the latest poll at `GET /metrics` (with the grouping labels) and `GET /healthz` on this address, e.g. `0.0.0.0:9808` (scrape mode).")
        .group(Group::Listen)
        .value("ADDR")
        .example("\"0.0.0.0:9808\""),
    key("no_push", Kind::Bool, Some("false"), &[], "`run`: push nothing to a Pushgateway, even a configured one (scrape mode or remote write only; needs `listen` or `remote_write`).")
        .group(Group::Listen),
    key("interval", Kind::Duration, Some("5s"), &["POLLING_INTERVAL_SECONDS", "METRICS_POLLING_INTERVAL"],
        "Time between polls (100ms to 1 day).")
        .group(Group::Run)
        .value("DURATION"),
    key("shutdown_timeout", Kind::Duration, Some("5s"), &[],
        "Deadline for deleting the group after SIGTERM or SIGINT, and for `delete` as a whole (100ms to 10m). The Slurm Prolog caps it at 3 s for the agents it starts.")
        .group(Group::Run)
        .value("DURATION"),
    key("log_level", Kind::Str, Some("info"), &[], "`error`, `warn`, `info`, `debug` or `trace` (or a tracing filter).")
        .group(Group::Run)
        .value("LEVEL"),
    key("log_file", Kind::Path, None, &[], "Append the log to this file instead of standard error.")
        .group(Group::Run)
        .value("PATH")
        .example("\"/var/log/arkouda-push-agent/agent.log\""),
    key("summary_file", Kind::Path, None, &[],
        "`run`: at exit, write the job's summary as JSON to this path (`%j`: the job id), atomically; a failure is logged and never changes the exit code. Fields: `job_id`, `cluster`, `started`, `ended`, `duration_seconds`, `polls`, `failed_polls`, `server` {`version`, `locales`}, `requests`, `errors`, `peak_memory_bytes`.")
        .group(Group::Run)
        .value("PATH")
        .example("\"/var/lib/arkouda-push-agent/summaries/%j.json\""),
    key("daemonize", Kind::Bool, Some("false"), &[],
        "`run`: detach from the caller; return only once the agent is running on its own.")
        .group(Group::Run),
    key("pid_file", Kind::Path, None, &[], "`run`: write the agent's pid here; removed at exit.")
        .group(Group::Run)
        .value("PATH")
        .example("\"/run/arkouda-push-agent/4242.pid\""),
    key("watch_pid", Kind::Int, None, &[],
        "`run`: stop (deleting the group) when this process, e.g. `arkouda_server`, is gone.")
        .group(Group::Run)
        .value("PID")
        .example("12345"),
    key("lock_dir", Kind::Path, None, &[],
        "`run`: directory of the one-agent-per-group locks (one per grouping key, named by its SHA-256, removed at exit). A directory other users can write to is not used as is: the locks go in a private `arkouda-push-agent-UID` inside it.")
        .group(Group::Run)
        .value("DIR")
        .example("\"/run/arkouda-push-agent/locks\"")
        .default_note("`/run/arkouda-push-agent/locks` when `/run/arkouda-push-agent` is this user's, else `$XDG_RUNTIME_DIR/arkouda-push-agent`, else `arkouda-push-agent-UID` in the temp directory"),
    key("keys_file", Kind::Path, None, &[],
        "`run`: record here the grouping keys of every group the agent may have pushed (the Slurm Epilog deletes those, without listing the Pushgateway; the Prolog sets it).")
        .group(Group::Run)
        .value("PATH")
        .example("\"/run/arkouda-push-agent/4242.r0.keys\""),
    key("lease", Kind::Duration, None, &[],
        "Every push carries `arkouda_agent_lease_expiry_timestamp_seconds` = push time + lease.")
        .group(Group::Run)
        .value("DURATION")
        .example("\"20s\"")
        .default_note("4 × `interval`"),
    key("grace", Kind::Duration, Some("10m"), &[],
        "`sweep`: when leases decide, delete a group whose lease expired more than this long ago.")
        .group(Group::Sweep)
        .value("DURATION"),
    key("no_scheduler", Kind::Bool, Some("false"), &[],
        "`sweep`: do not ask Slurm; leases decide.")
        .group(Group::Sweep),
    key("squeue", Kind::Path, Some("/usr/bin/squeue"), &[],
        "`sweep`: the squeue binary, called once per sweep (`squeue --all`; `SLURM_CONF` honoured); `scontrol show config` is asked of the `scontrol` beside it.")
        .group(Group::Sweep)
        .value("PATH"),
    key("squeue_timeout", Kind::Duration, Some("10s"), &[],
        "`sweep`: bound on the squeue and scontrol calls; past it the scheduler check is skipped.")
        .group(Group::Sweep)
        .value("DURATION"),
    key("slurm.select", Kind::Str, Some("comment"), &[],
        "Which jobs get an agent from the Slurm hooks: `comment` (the job's comment carries `slurm.comment_marker`), `all`, `partition`, or `none` (the Debian package's default).")
        .group(Group::Slurm),
    key("slurm.comment_marker", Kind::Str, Some("arkouda-metrics"), &[],
        "The word in a job's comment (`sbatch --comment`) that opts it in, with `select = \"comment\"`; one word, no commas.")
        .group(Group::Slurm),
    key("slurm.partitions", Kind::List, None, &[],
        "Partitions whose jobs get an agent, with `select = \"partition\"` (then required): a TOML list, or comma-separated in the environment.")
        .group(Group::Slurm)
        .example("[\"arkouda\", \"gpu\"]"),
    key("slurm.connection_info", Kind::Path, None, &[],
        "Path template of the job's connection-info file: `%j` job id, `%u` user, `%w` the job's work directory.")
        .group(Group::Slurm)
        .example("\"%w/arkouda-%j.connection-info\""),
    key("slurm.run_as", Kind::Str, Some("arkouda-push-agent"), &[],
        "User the prolog runs the agent as; never `root`.")
        .group(Group::Slurm),
    key("slurm.state_dir", Kind::Path, Some("/run/arkouda-push-agent"), &[],
        "Where the prolog keeps each job's pid, log and environment files (created owned by `slurm.run_as`).")
        .group(Group::Slurm),
];

fn find_key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.key == name)
}

/// A configuration mistake. Its message names the key and where the value came from.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for `{key}`{shown} (from {origin}): {reason}")]
    Invalid {
        key: String,
        /// ` = "value"`, or empty for a secret.
        shown: String,
        origin: Source,
        reason: String,
    },
    #[error("unknown key `{key}` in {origin}{hint}")]
    UnknownKey {
        key: String,
        origin: Source,
        hint: String,
    },
    #[error("cannot read config file {path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("`{key}` is a secret and cannot be set in {origin}: use `{key}_file` or the environment variable {ENV_PREFIX}{upper}", upper = key.to_uppercase())]
    SecretInFile { key: String, origin: Source },
    #[error("cannot read `{key}` from {path} (from {origin}): {reason}")]
    SecretFile {
        key: String,
        path: PathBuf,
        origin: Source,
        reason: String,
    },
    #[error("missing `{key}`: {hint}")]
    Missing { key: String, hint: String },
}

/// A value as a layer gave it, before typing.
#[derive(Clone, Debug, PartialEq)]
pub enum Raw {
    Str(String),
    Bool(bool),
    Int(i128),
    Float(f64),
    List(Vec<Raw>),
    Table(Vec<(String, Raw)>),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Str(s) => write!(f, "{s:?}"),
            Raw::Bool(b) => write!(f, "{b}"),
            Raw::Int(i) => write!(f, "{i}"),
            Raw::Float(x) => write!(f, "{x}"),
            Raw::List(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Raw::Table(entries) => {
                f.write_str("{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{k} = {v}")?;
                }
                f.write_str("}")
            }
        }
    }
}

fn from_config_value(v: config::Value) -> Raw {
    use config::ValueKind as K;
    match v.kind {
        K::Nil => Raw::Str(String::new()),
        K::Boolean(b) => Raw::Bool(b),
        K::I64(i) => Raw::Int(i.into()),
        K::I128(i) => Raw::Int(i),
        K::U64(u) => Raw::Int(u.into()),
        K::U128(u) => Raw::Int(i128::try_from(u).unwrap_or(i128::MAX)),
        K::Float(x) => Raw::Float(x),
        K::String(s) => Raw::Str(s),
        K::Array(a) => Raw::List(a.into_iter().map(from_config_value).collect()),
        K::Table(t) => {
            let mut entries: Vec<(String, Raw)> = t
                .into_iter()
                .map(|(k, v)| (k, from_config_value(v)))
                .collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Raw::Table(entries)
        }
    }
}

/// The flags' view of the settings: every non-secret key, as the user typed it.
#[derive(Clone, Debug, Default)]
pub struct FlagValues {
    pub config: Option<PathBuf>,
    pub values: Vec<(&'static str, Raw)>,
}

impl FlagValues {
    pub fn set(&mut self, key: &'static str, value: Option<String>) {
        if let Some(v) = value {
            self.values.push((key, Raw::Str(v)));
        }
    }

    /// A repeatable flag: every value given, as a list (nothing when none was given).
    pub fn set_list(&mut self, key: &'static str, values: Vec<String>) {
        if !values.is_empty() {
            self.values
                .push((key, Raw::List(values.into_iter().map(Raw::Str).collect())));
        }
    }
}

/// A resolved key: the winning value and its source (None: unset).
#[derive(Clone, Debug)]
pub struct Entry {
    pub def: &'static KeyDef,
    pub value: Option<(Raw, Source)>,
}

/// Every key with its winning value and source; the input of [`Settings::from_resolved`]
/// and of `check`'s listing.
#[derive(Clone, Debug)]
pub struct Resolved {
    pub entries: Vec<Entry>,
    pub config_file: Option<PathBuf>,
}

impl Resolved {
    fn get(&self, key: &str) -> Option<&(Raw, Source)> {
        self.entries
            .iter()
            .find(|e| e.def.key == key)
            .and_then(|e| e.value.as_ref())
    }

    /// Lines `key = value  (source)` with secrets masked, for `check`.
    pub fn describe(&self) -> Vec<String> {
        let mut lines = Vec::new();
        if let Some(p) = &self.config_file {
            lines.push(format!("config file: {}", p.display()));
        } else {
            lines.push("config file: none".to_string());
        }
        for e in &self.entries {
            let line = match &e.value {
                None => format!("{} = (unset)", e.def.key),
                Some((_, src)) if e.def.secret => format!("{} = *** ({src})", e.def.key),
                Some((v, src)) => format!("{} = {v} ({src})", e.def.key),
            };
            lines.push(line);
        }
        lines
    }
}

/// Resolve the four layers. `env` is the process environment (passed in so tests need not
/// change the real one).
pub fn resolve(
    flags: &FlagValues,
    env: &BTreeMap<String, String>,
) -> Result<Resolved, ConfigError> {
    // Which file: the flag, else ARKOUDA_PUSH_AGENT_CONFIG, else the default path if present.
    let config_file = match (&flags.config, env.get("ARKOUDA_PUSH_AGENT_CONFIG")) {
        (Some(p), _) => Some(p.clone()),
        (None, Some(p)) if !p.is_empty() => Some(PathBuf::from(p)),
        _ => {
            let p = Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_path_buf())
        }
    };
    let file_values = match &config_file {
        Some(p) => read_file(p)?,
        None => Vec::new(),
    };

    let mut entries = Vec::with_capacity(KEYS.len());
    for def in KEYS {
        let mut value = def
            .default
            .map(|d| (Raw::Str(d.to_string()), Source::Default));
        if let Some((_, v)) = file_values.iter().find(|(k, _)| k == def.key) {
            let origin = Source::File(config_file.clone().unwrap_or_default());
            if def.secret {
                return Err(ConfigError::SecretInFile {
                    key: def.key.to_string(),
                    origin,
                });
            }
            value = Some((v.clone(), origin));
        }
        if let Some((name, v)) = env_value(def, env) {
            value = Some((Raw::Str(v), Source::Env(name)));
        }
        if let Some((_, v)) = flags.values.iter().rev().find(|(k, _)| *k == def.key) {
            let flag = format!("--{}", def.key.replace('_', "-"));
            value = Some((v.clone(), Source::Flag(flag)));
        }
        entries.push(Entry { def, value });
    }
    Ok(Resolved {
        entries,
        config_file,
    })
}

/// `ARKOUDA_PUSH_AGENT_<KEY>`; a table key `slurm.select` is `ARKOUDA_PUSH_AGENT_SLURM_SELECT`.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.replace('.', "_").to_uppercase())
}

fn env_value(def: &KeyDef, env: &BTreeMap<String, String>) -> Option<(String, String)> {
    let canonical = env_name(def.key);
    std::iter::once(canonical.as_str())
        .chain(def.env_aliases.iter().copied())
        .find_map(|name| {
            env.get(name)
                .filter(|v| !v.is_empty())
                .map(|v| (name.to_string(), v.clone()))
        })
}

/// Environment variables with our prefix that name no key, for a warning (scripts use a
/// few of their own, such as ARKOUDA_PUSH_AGENT_BIN).
pub fn unknown_env_keys(env: &BTreeMap<String, String>) -> Vec<String> {
    const SCRIPT_VARS: &[&str] = &["BIN", "CONFIG"];
    env.keys()
        .filter_map(|k| k.strip_prefix(ENV_PREFIX))
        .filter(|rest| !SCRIPT_VARS.contains(rest))
        .filter(|rest| {
            !KEYS
                .iter()
                .any(|k| env_name(k.key) == format!("{ENV_PREFIX}{rest}"))
        })
        .map(|rest| format!("{ENV_PREFIX}{rest}"))
        .collect()
}

fn read_file(path: &Path) -> Result<Vec<(String, Raw)>, ConfigError> {
    let file_err = |reason: String| ConfigError::File {
        path: path.to_path_buf(),
        reason,
    };
    // Read it ourselves: the config crate's message for a missing file is vague, and it
    // refuses /dev/null, which admins use for "no file".
    let text = std::fs::read_to_string(path).map_err(|e| file_err(e.to_string()))?;
    let built = config::Config::builder()
        .add_source(config::File::from_str(&text, config::FileFormat::Toml))
        .build()
        .map_err(|e| file_err(e.to_string()))?;
    let map = config::Source::collect(&built).map_err(|e| file_err(e.to_string()))?;
    let mut out = Vec::new();
    flatten(path, "", map, &mut out)?;
    Ok(out)
}

/// Keys of the file as `key` or `table.key` (a `[slurm]` table holds the `slurm.*` keys);
/// a table-valued key such as `labels` stays whole.
fn flatten(
    path: &Path,
    prefix: &str,
    map: config::Map<String, config::Value>,
    out: &mut Vec<(String, Raw)>,
) -> Result<(), ConfigError> {
    for (k, v) in map {
        let full = format!("{prefix}{k}");
        let is_table = matches!(v.kind, config::ValueKind::Table(_));
        if find_key(&full).is_some() {
            out.push((full, from_config_value(v)));
        } else if let (true, config::ValueKind::Table(t)) = (
            KEYS.iter().any(|d| d.key.starts_with(&format!("{full}."))),
            v.kind,
        ) {
            flatten(path, &format!("{full}."), t, out)?;
        } else {
            return Err(ConfigError::UnknownKey {
                hint: suggestion(&full),
                key: if is_table { format!("[{full}]") } else { full },
                origin: Source::File(path.to_path_buf()),
            });
        }
    }
    Ok(())
}

fn suggestion(unknown: &str) -> String {
    KEYS.iter()
        .map(|k| (strsim::levenshtein(unknown, k.key), k.key))
        .filter(|(d, k)| *d <= 3.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}

/// Where the metrics server is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerLocation {
    /// A fixed `tcp://host:port`.
    Endpoint(String),
    /// Read the host from arkouda_server's connection-info file; the port is `port`.
    ConnectionInfo {
        path: PathBuf,
        port: u16,
        /// Used while the file does not exist (the Slurm prolog gives the first node).
        fallback_host: Option<String>,
    },
}

/// Validated, ready-to-use settings.
#[derive(Clone, Debug)]
pub struct Settings {
    pub server: ServerLocation,
    pub arkouda_timeout: Duration,
    pub arkouda_release: Option<String>,
    pub arkouda_user: String,
    pub arkouda_token: Option<Secret>,
    pub max_reply_bytes: u64,
    /// One or more Pushgateway base URLs.
    pub pushgateway: Vec<String>,
    pub pushgateway_mode: PushgatewayMode,
    pub layout: Layout,
    pub gzip_threshold: u64,
    pub budget: crate::translate::Budget,
    pub pushgateway_username: Option<String>,
    pub pushgateway_password: Option<Secret>,
    pub pushgateway_bearer_token: Option<Secret>,
    pub pushgateway_ca_file: Option<PathBuf>,
    pub pushgateway_insecure_skip_verify: bool,
    pub push_timeout: Duration,
    pub remote_write: RemoteWriteSettings,
    pub job: String,
    pub job_id: Option<String>,
    pub cluster: Option<String>,
    /// Slurm's restart count of the job (0: its first run).
    pub restart_count: u32,
    pub job_user: Option<String>,
    pub partition: Option<String>,
    pub labels: Vec<(String, String)>,
    pub server_name: String,
    pub interval: Duration,
    pub shutdown_timeout: Duration,
    pub legacy_names: bool,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
    /// run: where the job summary goes at exit (`%j`: the job id).
    pub summary_file: Option<PathBuf>,
    /// The job dashboard's URL template (`{job_id}`, `{cluster}`).
    pub dashboard_url: Option<String>,
    pub listen: Option<String>,
    pub no_push: bool,
    pub daemonize: bool,
    pub pid_file: Option<PathBuf>,
    pub watch_pid: Option<i32>,
    pub lock_dir: Option<PathBuf>,
    /// run: where the agent records its groups' keys for the Slurm Epilog.
    pub keys_file: Option<PathBuf>,
    /// Every push carries push time + lease (`lease`, default 4 × interval).
    pub lease: Duration,
    /// sweep: how long after its lease expired a group may be deleted when leases decide.
    pub grace: Duration,
    /// sweep: never ask Slurm.
    pub no_scheduler: bool,
    /// sweep: the squeue binary and the bound on its run time.
    pub squeue: PathBuf,
    pub squeue_timeout: Duration,
    pub slurm: SlurmSettings,
    /// Problems that are not errors (a secret file others can read), to log at start.
    pub warnings: Vec<String>,
}

/// How a job's groups are spread over several Pushgateways.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PushgatewayMode {
    /// Each job to one Pushgateway, chosen by a stable hash of its job id.
    Shard,
    /// Each job to every Pushgateway (high availability).
    All,
}

/// How a job's series are grouped (the Pushgateway sink's own vocabulary).
pub use crate::sinks::pushgateway::sink::Layout;

/// Which jobs the Slurm prolog starts an agent for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SlurmSelect {
    /// Jobs whose comment carries the marker as one of its words.
    Comment(String),
    All,
    Partitions(Vec<String>),
    /// No job (the packaged default, until the site opts jobs in).
    None,
}

/// The `[slurm]` table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SlurmSettings {
    pub select: SlurmSelect,
    pub connection_info: Option<String>,
    pub run_as: String,
    pub state_dir: PathBuf,
}

/// The remote-write receivers and how to reach them (one set of auth/TLS options for
/// all of them, as for the Pushgateways).
#[derive(Clone, Debug)]
pub struct RemoteWriteSettings {
    /// Write endpoints; empty: no remote write.
    pub urls: Vec<String>,
    pub username: Option<String>,
    pub password: Option<Secret>,
    pub bearer_token: Option<Secret>,
    pub ca_file: Option<PathBuf>,
    pub insecure_skip_verify: bool,
    pub queue_size: usize,
}

/// Labels the agent sets itself; a static label may not take these names.
pub const RESERVED_LABELS: &[&str] = &[
    "job",
    "slurm_job_id",
    "cluster",
    "locale",
    "slurm_restart_count",
];

/// The auth keys of one HTTP endpoint.
struct HttpAuth {
    username: Option<String>,
    password: Option<Secret>,
    bearer: Option<Secret>,
}

struct Reader<'a> {
    resolved: &'a Resolved,
    /// Warnings found while reading, logged once logging is up.
    warnings: std::cell::RefCell<Vec<String>>,
}

impl Reader<'_> {
    fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        let (raw, origin) = self
            .resolved
            .get(key)
            .cloned()
            .unwrap_or((Raw::Str(String::new()), Source::Default));
        let secret = find_key(key).is_some_and(|d| d.secret);
        ConfigError::Invalid {
            key: key.to_string(),
            shown: if secret {
                String::new()
            } else {
                format!(" = {raw}")
            },
            origin,
            reason: reason.into(),
        }
    }

    fn raw(&self, key: &str) -> Option<&Raw> {
        self.resolved.get(key).map(|(r, _)| r)
    }

    fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Raw::Str(s)) => Ok(Some(s.clone())),
            Some(Raw::Int(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.invalid(key, "expected a string")),
        }
    }

    fn nonempty(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be empty")),
            other => Ok(other),
        }
    }

    fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.nonempty(key)?
            .ok_or_else(|| self.invalid(key, "must be set"))
    }

    fn bool(&self, key: &str) -> Result<bool, ConfigError> {
        match self.raw(key) {
            None => Ok(false),
            Some(Raw::Bool(b)) => Ok(*b),
            Some(Raw::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" | "1" => Ok(true),
                "false" | "no" | "off" | "0" => Ok(false),
                _ => Err(self.invalid(key, "expected true or false")),
            },
            Some(_) => Err(self.invalid(key, "expected true or false")),
        }
    }

    fn integer(&self, key: &str, min: i128, max: i128) -> Result<Option<i128>, ConfigError> {
        let expected = format!("expected a whole number from {min} to {max}");
        let n = match self.raw(key) {
            None => return Ok(None),
            Some(Raw::Int(i)) => *i,
            Some(Raw::Str(s)) => s
                .trim()
                .parse::<i128>()
                .map_err(|_| self.invalid(key, expected.clone()))?,
            Some(_) => return Err(self.invalid(key, expected)),
        };
        if n < min || n > max {
            return Err(self.invalid(key, expected));
        }
        Ok(Some(n))
    }

    fn duration(&self, key: &str, min: Duration, max: Duration) -> Result<Duration, ConfigError> {
        let expected = || {
            format!(
                "expected a duration from {} to {}, such as 5s, 500ms or 2m (a bare number is seconds)",
                humantime::format_duration(min),
                humantime::format_duration(max)
            )
        };
        let d = match self.raw(key) {
            None => return Err(self.invalid(key, "must be set")),
            Some(Raw::Int(i)) if *i >= 0 => {
                Duration::from_secs(u64::try_from(*i).unwrap_or(u64::MAX))
            }
            Some(Raw::Float(x)) if x.is_finite() && *x >= 0.0 => {
                Duration::try_from_secs_f64(*x).map_err(|_| self.invalid(key, expected()))?
            }
            Some(Raw::Str(s)) => parse_duration(s).ok_or_else(|| self.invalid(key, expected()))?,
            Some(_) => return Err(self.invalid(key, expected())),
        };
        if d < min || d > max {
            return Err(self.invalid(key, expected()));
        }
        Ok(d)
    }

    fn dashboard_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(url) = self.nonempty("dashboard_url")? else {
            return Ok(None);
        };
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(self.invalid("dashboard_url", "expected an http:// or https:// URL"));
        }
        let unknown = url
            .match_indices('{')
            .filter_map(|(i, _)| url[i..].find('}').map(|j| &url[i..=i + j]))
            .find(|p| *p != "{job_id}" && *p != "{cluster}");
        if let Some(p) = unknown {
            return Err(self.invalid(
                "dashboard_url",
                format!("unknown placeholder {p}: use {{job_id}} and {{cluster}}"),
            ));
        }
        Ok(Some(url))
    }

    fn listen(&self) -> Result<Option<String>, ConfigError> {
        let Some(addr) = self.nonempty("listen")? else {
            return Ok(None);
        };
        addr.parse::<std::net::SocketAddr>().map_err(|_| {
            self.invalid(
                "listen",
                "expected HOST:PORT with an IP address, such as 0.0.0.0:9808 or 127.0.0.1:9808",
            )
        })?;
        Ok(Some(addr))
    }

    fn remote_write(&self) -> Result<RemoteWriteSettings, ConfigError> {
        let urls = self
            .list("remote_write")?
            .iter()
            .map(|u| {
                check_http_url(u, "remote_write", true).map_err(|e| self.invalid("remote_write", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let HttpAuth {
            username,
            password,
            bearer: bearer_token,
        } = self.http_auth("remote_write", "remote-write")?;
        Ok(RemoteWriteSettings {
            urls,
            username,
            password,
            bearer_token,
            ca_file: self.path("remote_write_ca_file")?,
            insecure_skip_verify: self.bool("remote_write_insecure_skip_verify")?,
            queue_size: self
                .integer("remote_write_queue_size", 1, 1_000_000)?
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(120),
        })
    }

    /// `<prefix>_username`, `<prefix>_password` and `<prefix>_bearer_token` of one HTTP
    /// endpoint: basic auth or a bearer token, not both, and no password without a user.
    fn http_auth(&self, prefix: &str, what: &str) -> Result<HttpAuth, ConfigError> {
        let user_key = format!("{prefix}_username");
        let bearer = self.secret(&format!("{prefix}_bearer_token"))?;
        let password = self.secret(&format!("{prefix}_password"))?;
        let username = self.nonempty(&user_key)?;
        if password.is_some() && username.is_none() {
            return Err(ConfigError::Missing {
                key: user_key,
                hint: format!("a {what} password is set but no user name"),
            });
        }
        if bearer.is_some() && username.is_some() {
            return Err(self.invalid(
                &user_key,
                "set either basic auth or a bearer token, not both",
            ));
        }
        Ok(HttpAuth {
            username,
            password,
            bearer,
        })
    }

    fn slurm(&self) -> Result<SlurmSettings, ConfigError> {
        let select = match self.required("slurm.select")?.trim() {
            "comment" => {
                let marker = self.required("slurm.comment_marker")?;
                if marker.contains(|c: char| c.is_whitespace() || c == ',') {
                    return Err(self.invalid(
                        "slurm.comment_marker",
                        "must be one word (no spaces or commas)",
                    ));
                }
                SlurmSelect::Comment(marker)
            }
            "all" => SlurmSelect::All,
            // What the Debian package ships: installed, but no job gets an agent yet.
            "none" => SlurmSelect::None,
            "partition" => {
                let parts = self.list("slurm.partitions")?;
                if parts.is_empty() {
                    return Err(ConfigError::Missing {
                        key: "slurm.partitions".to_string(),
                        hint: "select = \"partition\" needs the list of partitions".to_string(),
                    });
                }
                SlurmSelect::Partitions(parts)
            }
            _ => {
                return Err(self.invalid("slurm.select", "expected comment, all, partition or none"))
            }
        };
        let run_as = self.required("slurm.run_as")?;
        if run_as == "root" || run_as == "0" {
            return Err(self.invalid(
                "slurm.run_as",
                "the agent never runs as root; use a dedicated user",
            ));
        }
        Ok(SlurmSettings {
            select,
            connection_info: self.nonempty("slurm.connection_info")?,
            run_as,
            state_dir: self
                .path("slurm.state_dir")?
                .ok_or_else(|| self.invalid("slurm.state_dir", "must be set"))?,
        })
    }

    /// A TOML array of strings, or a comma-separated string (environment, flags).
    fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(Vec::new()),
            Some(Raw::Str(s)) => Ok(s
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect()),
            Some(Raw::List(items)) => items
                .iter()
                .map(|i| match i {
                    Raw::Str(s) => Ok(s.clone()),
                    Raw::Int(n) => Ok(n.to_string()),
                    _ => Err(self.invalid(key, "expected a list of strings")),
                })
                .collect(),
            Some(_) => Err(self.invalid(key, "expected a list of strings")),
        }
    }

    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.nonempty(key)?.map(PathBuf::from))
    }

    fn labels(&self, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
        let pairs: Vec<(String, String)> = match self.raw(key) {
            None => Vec::new(),
            Some(Raw::Str(s)) => {
                let mut out = Vec::new();
                for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (k, v) = part
                        .split_once('=')
                        .ok_or_else(|| self.invalid(key, format!("`{part}` is not NAME=VALUE")))?;
                    out.push((k.trim().to_string(), v.to_string()));
                }
                out
            }
            Some(Raw::Table(entries)) => {
                let mut out = Vec::new();
                for (k, v) in entries {
                    match v {
                        Raw::Str(s) => out.push((k.clone(), s.clone())),
                        Raw::Int(i) => out.push((k.clone(), i.to_string())),
                        _ => return Err(self.invalid(key, format!("label `{k}` must be a string"))),
                    }
                }
                out
            }
            Some(_) => return Err(self.invalid(key, "expected NAME=VALUE pairs or a table")),
        };
        let mut seen = Vec::new();
        for (k, _) in &pairs {
            if !is_label_name(k) {
                return Err(
                    self.invalid(key, format!("`{k}` is not a valid Prometheus label name"))
                );
            }
            if RESERVED_LABELS.contains(&k.as_str())
                || crate::translate::SERIES_LABELS.contains(&k.as_str())
            {
                return Err(self.invalid(
                    key,
                    format!("`{k}` is set by the agent itself; use its own key"),
                ));
            }
            if seen.contains(k) {
                return Err(self.invalid(key, format!("label `{k}` is given twice")));
            }
            seen.push(k.clone());
        }
        let mut pairs = pairs;
        pairs.sort();
        Ok(pairs)
    }

    /// A secret from `<key>` (environment) or `<key>_file`.
    fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
        let file_key = format!("{key}_file");
        if let Some(v) = self.nonempty(key)? {
            return Ok(Some(Secret::new(v.trim_end_matches(['\r', '\n']))));
        }
        let Some(path) = self.path(&file_key)? else {
            return Ok(None);
        };
        let origin = self
            .resolved
            .get(&file_key)
            .map(|(_, s)| s.clone())
            .unwrap_or(Source::Default);
        let text = std::fs::read_to_string(&path).map_err(|e| ConfigError::SecretFile {
            key: file_key.clone(),
            path: path.clone(),
            origin: origin.clone(),
            reason: e.to_string(),
        })?;
        let value = text.lines().next().unwrap_or("").trim().to_string();
        if value.is_empty() {
            return Err(ConfigError::SecretFile {
                key: file_key,
                path,
                origin,
                reason: "the file is empty".to_string(),
            });
        }
        if world_readable(&path) {
            self.warnings.borrow_mut().push(format!(
                "secret file {} (`{file_key}`) is readable by every user; chmod o-r it",
                path.display()
            ));
        }
        Ok(Some(Secret::new(value)))
    }
}

impl Reader<'_> {
    /// `lease`, or 4 × interval when unset: long enough that one or two slow or failed
    /// pushes do not make a live agent's group look abandoned.
    fn lease(&self, interval: Duration) -> Result<Duration, ConfigError> {
        if self.raw("lease").is_none() {
            return Ok(interval.saturating_mul(4));
        }
        let lease = self.duration(
            "lease",
            Duration::from_millis(100),
            Duration::from_secs(365 * 24 * 3600),
        )?;
        if lease < interval {
            // A warning, not an error: a job may set a longer interval than the site's lease.
            self.warnings.borrow_mut().push(format!(
                "lease ({}) is shorter than interval ({}): the group looks abandoned between pushes",
                humantime::format_duration(lease),
                humantime::format_duration(interval)
            ));
        }
        Ok(lease)
    }
}

fn world_readable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.permissions().mode() & 0o004 != 0)
}

/// `5s`, `500ms`, `2m`, `1h 30m`; a bare number is seconds (the old exporter's variables are).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).ok())
            .flatten();
    }
    humantime::parse_duration(s).ok()
}

/// Prometheus label name: `[a-zA-Z_][a-zA-Z0-9_]*`, not starting with `__`.
pub fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !s.starts_with("__")
}

fn parse_endpoint(s: &str, default_port: u16) -> Result<String, String> {
    let rest = s.trim().strip_prefix("tcp://").unwrap_or(s.trim());
    if rest.is_empty() || rest.contains('/') || rest.contains(char::is_whitespace) {
        return Err("expected tcp://HOST:PORT, HOST:PORT or HOST".to_string());
    }
    // A bracketed IPv6 literal keeps its colons inside the brackets.
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !p.contains(']') => {
            let port: u16 = p
                .parse()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| format!("`{p}` is not a port number from 1 to 65535"))?;
            (h, port)
        }
        _ => (rest, default_port),
    };
    Ok(format!("tcp://{host}:{port}"))
}

/// An http(s) URL with a host and no password in it (it would show in `ps` and logs; the
/// password goes in `<prefix>_password_file` or the environment). A Pushgateway URL takes
/// no query (its paths are grouping keys); a remote-write URL may (receivers take options
/// there, e.g. VictoriaMetrics' `extra_label`).
fn check_http_url(s: &str, prefix: &str, allow_query: bool) -> Result<String, String> {
    let url = reqwest::Url::parse(s.trim()).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("expected an http:// or https:// URL".to_string());
    }
    if url.host_str().is_none() {
        return Err("the URL has no host".to_string());
    }
    if url.password().is_some() {
        return Err(format!(
            "a password in the URL would show in `ps` and logs; use {prefix}_password_file or ARKOUDA_PUSH_AGENT_{}_PASSWORD",
            prefix.to_uppercase()
        ));
    }
    if url.fragment().is_some() || (!allow_query && url.query().is_some()) {
        let what = if allow_query {
            "a fragment"
        } else {
            "a query or fragment"
        };
        return Err(format!("the URL must not have {what}"));
    }
    Ok(if allow_query {
        url.to_string()
    } else {
        url.as_str().trim_end_matches('/').to_string()
    })
}

impl Settings {
    /// Type and validate every key.
    pub fn from_resolved(resolved: &Resolved) -> Result<Settings, ConfigError> {
        let r = Reader {
            resolved,
            warnings: Default::default(),
        };
        let metrics_port = r
            .integer("metrics_port", 1, 65535)?
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(5556);

        // arkouda wins; then the connection-info file, with arkouda_host as the fallback while
        // the file is missing; then arkouda_host alone; then localhost.
        let host = r.nonempty("arkouda_host")?;
        let server = if let Some(a) = r.nonempty("arkouda")? {
            ServerLocation::Endpoint(
                parse_endpoint(&a, metrics_port).map_err(|e| r.invalid("arkouda", e))?,
            )
        } else if let Some(path) = r.path("connection_info")? {
            ServerLocation::ConnectionInfo {
                path,
                port: metrics_port,
                fallback_host: host,
            }
        } else if let Some(h) = host {
            ServerLocation::Endpoint(
                parse_endpoint(&h, metrics_port).map_err(|e| r.invalid("arkouda_host", e))?,
            )
        } else {
            ServerLocation::Endpoint(format!("tcp://localhost:{metrics_port}"))
        };

        let arkouda_release = match r.required("arkouda_release")?.trim() {
            "auto" => None,
            rel => Some(
                crate::arkouda::Release::parse(rel)
                    .map(|_| rel.to_string())
                    .ok_or_else(|| {
                        r.invalid(
                            "arkouda_release",
                            "expected auto or a release date such as 2022.08.15, 2023.04.07 or 2024.10.02",
                        )
                    })?,
            ),
        };

        let pushgateway = r
            .list("pushgateway")?
            .iter()
            .map(|u| {
                check_http_url(u, "pushgateway", false).map_err(|e| r.invalid("pushgateway", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let pushgateway_mode = match r.required("pushgateway_mode")?.trim() {
            "shard" => PushgatewayMode::Shard,
            "all" => PushgatewayMode::All,
            _ => return Err(r.invalid("pushgateway_mode", "expected shard or all")),
        };
        let layout = match r.required("layout")?.trim() {
            "job" => Layout::Job,
            "locale" => Layout::Locale,
            _ => return Err(r.invalid("layout", "expected job or locale")),
        };
        let cap = |key: &str| -> Result<usize, ConfigError> {
            Ok(r.integer(key, 0, 1_000_000)?
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0))
        };
        let budget = crate::translate::Budget {
            max_commands: cap("max_commands")?,
            max_users: cap("max_users")?,
            max_error_types: cap("max_error_types")?,
        };
        let gzip_threshold = r
            .integer("gzip_threshold", 0, i128::from(i64::MAX))?
            .and_then(|n| u64::try_from(n).ok())
            .unwrap_or(65536);

        let job = r.required("job")?;
        let job_id = r.nonempty("job_id")?;
        let log_level = r.required("log_level")?;
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(r.invalid("log_level", "expected error, warn, info, debug or trace"));
        }
        let HttpAuth {
            username,
            password,
            bearer,
        } = r.http_auth("pushgateway", "Pushgateway")?;

        let interval = r.duration(
            "interval",
            Duration::from_millis(100),
            Duration::from_secs(24 * 3600),
        )?;
        let listen = r.listen()?;
        let no_push = r.bool("no_push")?;
        let remote_write = r.remote_write()?;
        // `no_push` with nothing else is a contradiction whatever the command.
        if no_push && listen.is_none() && remote_write.urls.is_empty() {
            return Err(r.invalid(
                "no_push",
                "with no_push and neither a listen address nor remote_write the metrics would go nowhere",
            ));
        }
        Ok(Settings {
            server,
            arkouda_timeout: r.duration(
                "arkouda_timeout",
                Duration::from_millis(10),
                Duration::from_secs(600),
            )?,
            arkouda_release,
            arkouda_user: r.required("arkouda_user")?,
            arkouda_token: r.secret("arkouda_token")?,
            max_reply_bytes: r
                .integer("max_reply_bytes", 1024, i128::from(i64::MAX))?
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(64 << 20),
            pushgateway,
            pushgateway_mode,
            layout,
            gzip_threshold,
            budget,
            pushgateway_username: username,
            pushgateway_password: password,
            pushgateway_bearer_token: bearer,
            pushgateway_ca_file: r.path("pushgateway_ca_file")?,
            pushgateway_insecure_skip_verify: r.bool("pushgateway_insecure_skip_verify")?,
            push_timeout: r.duration(
                "push_timeout",
                Duration::from_millis(10),
                Duration::from_secs(600),
            )?,
            job,
            job_id,
            cluster: r.nonempty("cluster")?,
            restart_count: r
                .integer("restart_count", 0, i128::from(u32::MAX))?
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            job_user: r.nonempty("job_user")?,
            partition: r.nonempty("partition")?,
            labels: r.labels("labels")?,
            server_name: r.required("server_name")?,
            interval,
            shutdown_timeout: r.duration(
                "shutdown_timeout",
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            legacy_names: r.bool("legacy_names")?,
            log_level,
            log_file: r.path("log_file")?,
            summary_file: r.path("summary_file")?,
            dashboard_url: r.dashboard_url()?,
            listen,
            no_push,
            remote_write,
            daemonize: r.bool("daemonize")?,
            pid_file: r.path("pid_file")?,
            watch_pid: r
                .integer("watch_pid", 1, i128::from(i32::MAX))?
                .and_then(|p| i32::try_from(p).ok()),
            lock_dir: r.path("lock_dir")?,
            keys_file: r.path("keys_file")?,
            lease: r.lease(interval)?,
            grace: r.duration(
                "grace",
                Duration::ZERO,
                Duration::from_secs(365 * 24 * 3600),
            )?,
            no_scheduler: r.bool("no_scheduler")?,
            squeue: r
                .path("squeue")?
                .ok_or_else(|| r.invalid("squeue", "must be set"))?,
            squeue_timeout: r.duration(
                "squeue_timeout",
                Duration::from_millis(100),
                Duration::from_secs(600),
            )?,
            slurm: r.slurm()?,
            warnings: r.warnings.take(),
        })
    }

    /// Makes relative paths absolute against the current directory, so they keep their
    /// meaning after `--daemonize` changes it to `/`.
    pub fn absolutize(&mut self, cwd: &Path) {
        let abs = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        if let ServerLocation::ConnectionInfo { path, .. } = &mut self.server {
            abs(path);
        }
        for p in [
            &mut self.pushgateway_ca_file,
            &mut self.remote_write.ca_file,
            &mut self.log_file,
            &mut self.summary_file,
            &mut self.pid_file,
            &mut self.lock_dir,
            &mut self.keys_file,
        ]
        .into_iter()
        .flatten()
        {
            abs(p);
        }
    }

    /// At least one sink, which `run` and `once` need: no implicit Pushgateway, the sinks
    /// are what is configured, and none at all is a mistake named with the keys to fix it.
    pub fn require_sink(&self) -> Result<(), ConfigError> {
        if self.pushgateway.is_empty() && self.remote_write.urls.is_empty() && self.listen.is_none()
        {
            return Err(ConfigError::Missing {
                key: "pushgateway".to_string(),
                hint: "the metrics would go nowhere: set `pushgateway` (--pushgateway, ARKOUDA_PUSH_AGENT_PUSHGATEWAY or PUSHGATEWAY_URL), `remote_write` or `listen`".to_string(),
            });
        }
        Ok(())
    }

    /// The job's dashboard link: `dashboard_url` with `{job_id}` and `{cluster}` filled in
    /// (URL-encoded; an unknown cluster is empty). None without `dashboard_url`.
    pub fn dashboard_link(&self, job_id: &str) -> Option<String> {
        let enc = |v: &str| {
            percent_encoding::utf8_percent_encode(v, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        self.dashboard_url.as_ref().map(|t| {
            t.replace("{job_id}", &enc(job_id)).replace(
                "{cluster}",
                &enc(self.cluster.as_deref().unwrap_or_default()),
            )
        })
    }

    /// The Pushgateways, which `delete`, `sweep` and the Slurm backstops need.
    pub fn require_pushgateway(&self) -> Result<&[String], ConfigError> {
        if self.pushgateway.is_empty() {
            return Err(ConfigError::Missing {
                key: "pushgateway".to_string(),
                hint: "this command deletes groups from the Pushgateways: set `pushgateway` (--pushgateway, ARKOUDA_PUSH_AGENT_PUSHGATEWAY or PUSHGATEWAY_URL)".to_string(),
            });
        }
        Ok(&self.pushgateway)
    }

    /// The job id, which `run`, `once` and `delete` need.
    pub fn require_job_id(&self) -> Result<&str, ConfigError> {
        self.job_id.as_deref().ok_or_else(|| ConfigError::Missing {
            key: "job_id".to_string(),
            hint: "give --job-id, set job_id in the config file, or run inside a Slurm job (SLURM_JOB_ID)"
                .to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn flags(pairs: &[(&'static str, &str)]) -> FlagValues {
        let mut f = FlagValues {
            config: Some(PathBuf::from("/dev/null")),
            values: Vec::new(),
        };
        for (k, v) in pairs {
            f.set(k, Some(v.to_string()));
        }
        f
    }

    fn file(text: &str) -> tempfile_path::TempToml {
        tempfile_path::TempToml::new(text)
    }

    /// A config file in the temp dir, removed on drop.
    mod tempfile_path {
        use std::path::PathBuf;
        use std::sync::atomic::{AtomicUsize, Ordering};

        pub struct TempToml(pub PathBuf);
        static N: AtomicUsize = AtomicUsize::new(0);

        impl TempToml {
            pub fn new(text: &str) -> Self {
                let p = std::env::temp_dir().join(format!(
                    "apa-config-test-{}-{}.toml",
                    std::process::id(),
                    N.fetch_add(1, Ordering::SeqCst)
                ));
                std::fs::write(&p, text).unwrap();
                TempToml(p)
            }
        }

        impl Drop for TempToml {
            fn drop(&mut self) {
                let _ = std::fs::remove_file(&self.0);
            }
        }
    }

    /// The settings of `f` and `e`, with a Pushgateway when no layer names one (an agent
    /// with no sink at all is refused: `a_sink_is_required`).
    fn settings(f: &FlagValues, e: &BTreeMap<String, String>) -> Result<Settings, ConfigError> {
        let resolved = resolve(f, e)?;
        if resolved.get("pushgateway").is_some() {
            return Settings::from_resolved(&resolved);
        }
        let mut e = e.clone();
        e.insert(
            "ARKOUDA_PUSH_AGENT_PUSHGATEWAY".to_string(),
            "http://pgw.test:9091".to_string(),
        );
        Settings::from_resolved(&resolve(f, &e)?)
    }

    /// No implicit Pushgateway: the sinks are what is configured, and none is exit 2 naming
    /// the keys; `no_push` turns a configured Pushgateway off.
    #[test]
    fn a_sink_is_required() {
        let only = |pairs: &[(&'static str, &str)]| {
            Settings::from_resolved(&resolve(&flags(pairs), &env(&[])).unwrap())
        };
        let none = only(&[]).unwrap();
        let err = none.require_sink().unwrap_err().to_string();
        assert_eq!(err, "missing `pushgateway`: the metrics would go nowhere: set `pushgateway` (--pushgateway, ARKOUDA_PUSH_AGENT_PUSHGATEWAY or PUSHGATEWAY_URL), `remote_write` or `listen`");
        let err = only(&[("pushgateway", "http://p:9091"), ("no_push", "true")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("invalid value for `no_push` = \"true\" (from flag --no-push): with no_push and neither"), "{err}");
        let rw = only(&[("remote_write", "http://vm:8428/api/v1/write")]).unwrap();
        assert!(rw.pushgateway.is_empty());
        assert!(rw.require_sink().is_ok());
        assert!(rw.require_pushgateway().is_err());
        let listen = only(&[("listen", "127.0.0.1:9808")]).unwrap();
        assert!(listen.pushgateway.is_empty());
        assert!(listen.require_sink().is_ok());
        let dash = only(&[
            ("pushgateway", "http://p:9091"),
            (
                "dashboard_url",
                "https://grafana.example/d/arkouda-job?var-job_id={job_id}&var-cluster={cluster}",
            ),
            ("cluster", "c 1"),
        ])
        .unwrap();
        assert_eq!(
            dash.dashboard_link("42").unwrap(),
            "https://grafana.example/d/arkouda-job?var-job_id=42&var-cluster=c%201"
        );
        let err = only(&[
            ("pushgateway", "http://p:9091"),
            ("dashboard_url", "https://g/{jobid}"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            err.ends_with("unknown placeholder {jobid}: use {job_id} and {cluster}"),
            "{err}"
        );
        let pgw = only(&[("pushgateway", "http://p:9091")]).unwrap();
        assert_eq!(
            pgw.require_pushgateway().unwrap(),
            ["http://p:9091".to_string()]
        );
    }

    fn source_of(f: &FlagValues, e: &BTreeMap<String, String>, key: &str) -> Source {
        resolve(f, e).unwrap().get(key).unwrap().1.clone()
    }

    #[test]
    fn precedence_default_file_env_flag() {
        let toml = file("interval = \"7s\"\njob = \"from-file\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let none = env(&[]);
        assert_eq!(
            settings(&f, &none).unwrap().interval,
            Duration::from_secs(7)
        );
        assert_eq!(
            source_of(&f, &none, "interval"),
            Source::File(toml.0.clone())
        );
        assert_eq!(source_of(&f, &none, "push_timeout"), Source::Default);

        let e = env(&[("ARKOUDA_PUSH_AGENT_INTERVAL", "9s")]);
        assert_eq!(settings(&f, &e).unwrap().interval, Duration::from_secs(9));
        assert_eq!(
            source_of(&f, &e, "interval"),
            Source::Env("ARKOUDA_PUSH_AGENT_INTERVAL".into())
        );

        f.set("interval", Some("250ms".into()));
        let s = settings(&f, &e).unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert_eq!(s.job, "from-file");
        assert_eq!(
            source_of(&f, &e, "interval"),
            Source::Flag("--interval".into())
        );
    }

    #[test]
    fn legacy_environment_names() {
        let e = env(&[
            ("ARKOUDA_METRICS_SERVICE_HOST", "nid7"),
            ("ARKOUDA_METRICS_SERVICE_PORT", "6000"),
            ("POLLING_INTERVAL_SECONDS", "12"),
            ("ARKOUDA_SERVER_NAME", "srv"),
            ("SLURM_JOB_ID", "4242"),
            ("SLURM_CLUSTER_NAME", "perlmutter"),
            ("PUSHGATEWAY_URL", "http://pgw:9091/"),
        ]);
        let s = settings(&flags(&[]), &e).unwrap();
        assert_eq!(s.server, ServerLocation::Endpoint("tcp://nid7:6000".into()));
        assert_eq!(s.interval, Duration::from_secs(12));
        assert_eq!(s.server_name, "srv");
        assert_eq!(s.job_id.as_deref(), Some("4242"));
        assert_eq!(s.cluster.as_deref(), Some("perlmutter"));
        assert_eq!(s.pushgateway, vec!["http://pgw:9091".to_string()]);
        // The canonical name beats the alias.
        let mut e2 = e.clone();
        e2.insert("ARKOUDA_PUSH_AGENT_JOB_ID".into(), "7".into());
        assert_eq!(
            settings(&flags(&[]), &e2).unwrap().job_id.as_deref(),
            Some("7")
        );
    }

    #[test]
    fn server_location_order() {
        let e = env(&[
            ("ARKOUDA_SERVER_CONNECTION_INFO", "/tmp/ci"),
            ("METRICS_SERVER_PORT", "5600"),
        ]);
        assert_eq!(
            settings(&flags(&[]), &e).unwrap().server,
            ServerLocation::ConnectionInfo {
                path: "/tmp/ci".into(),
                port: 5600,
                fallback_host: None,
            }
        );
        // A host with the file: the host is the fallback while the file is missing.
        let f = flags(&[("arkouda_host", "nid001")]);
        assert_eq!(
            settings(&f, &e).unwrap().server,
            ServerLocation::ConnectionInfo {
                path: "/tmp/ci".into(),
                port: 5600,
                fallback_host: Some("nid001".into()),
            }
        );
        let f = flags(&[("arkouda", "tcp://nid001:5556")]);
        assert_eq!(
            settings(&f, &e).unwrap().server,
            ServerLocation::Endpoint("tcp://nid001:5556".into())
        );
        assert_eq!(
            settings(&flags(&[("arkouda", "nid9")]), &env(&[]))
                .unwrap()
                .server,
            ServerLocation::Endpoint("tcp://nid9:5556".into())
        );
        assert_eq!(
            settings(&flags(&[("arkouda_host", "nid8")]), &env(&[]))
                .unwrap()
                .server,
            ServerLocation::Endpoint("tcp://nid8:5556".into())
        );
        assert_eq!(
            settings(&flags(&[]), &env(&[])).unwrap().server,
            ServerLocation::Endpoint("tcp://localhost:5556".into())
        );
    }

    #[test]
    fn labels_from_each_layer() {
        let toml = file("[labels]\ninstance = \"second\"\nsite = \"x\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let s = settings(&f, &env(&[])).unwrap();
        assert_eq!(
            s.labels,
            vec![
                ("instance".into(), "second".into()),
                ("site".into(), "x".into())
            ]
        );
        let s = settings(&flags(&[("labels", "b=2, a=1")]), &env(&[])).unwrap();
        assert_eq!(
            s.labels,
            vec![("a".into(), "1".into()), ("b".into(), "2".into())]
        );
    }

    /// Every bad value: the message names the key, the value and the source.
    #[test]
    fn error_messages_for_bad_values() {
        let cases: &[(&str, &str, &str)] = &[
            ("interval", "soon", "invalid value for `interval` = \"soon\" (from flag --interval): expected a duration from 100ms to 1day, such as 5s, 500ms or 2m (a bare number is seconds)"),
            ("interval", "0s", "invalid value for `interval` = \"0s\" (from flag --interval): expected a duration from 100ms to 1day"),
            ("metrics_port", "70000", "invalid value for `metrics_port` = \"70000\" (from flag --metrics-port): expected a whole number from 1 to 65535"),
            ("metrics_port", "http", "invalid value for `metrics_port` = \"http\" (from flag --metrics-port): expected a whole number from 1 to 65535"),
            ("arkouda", "tcp://h:0", "invalid value for `arkouda` = \"tcp://h:0\" (from flag --arkouda): `0` is not a port number from 1 to 65535"),
            ("arkouda", "http://h/x", "invalid value for `arkouda` = \"http://h/x\" (from flag --arkouda): expected tcp://HOST:PORT, HOST:PORT or HOST"),
            ("pushgateway", "ftp://x", "invalid value for `pushgateway` = \"ftp://x\" (from flag --pushgateway): expected an http:// or https:// URL"),
            ("pushgateway", "http://u:pw@x", "invalid value for `pushgateway` = \"http://u:pw@x\" (from flag --pushgateway): a password in the URL"),
            ("pushgateway", "not a url", "invalid value for `pushgateway` = \"not a url\" (from flag --pushgateway): not a URL"),
            ("legacy_names", "maybe", "invalid value for `legacy_names` = \"maybe\" (from flag --legacy-names): expected true or false"),
            ("labels", "x", "invalid value for `labels` = \"x\" (from flag --labels): `x` is not NAME=VALUE"),
            ("labels", "job=x", "invalid value for `labels` = \"job=x\" (from flag --labels): `job` is set by the agent itself"),
            ("labels", "user=x", "invalid value for `labels` = \"user=x\" (from flag --labels): `user` is set by the agent itself"),
            ("labels", "1a=x", "invalid value for `labels` = \"1a=x\" (from flag --labels): `1a` is not a valid Prometheus label name"),
            ("labels", "a=1,a=2", "invalid value for `labels` = \"a=1,a=2\" (from flag --labels): label `a` is given twice"),
            ("job", " ", "invalid value for `job` = \" \" (from flag --job): must not be empty"),
            ("arkouda_release", "1999", "invalid value for `arkouda_release` = \"1999\" (from flag --arkouda-release): expected auto or a release date"),
            ("arkouda_timeout", "-1s", "invalid value for `arkouda_timeout` = \"-1s\" (from flag --arkouda-timeout): expected a duration"),
            ("push_timeout", "20m", "invalid value for `push_timeout` = \"20m\" (from flag --push-timeout): expected a duration from 10ms to 10m"),
            ("shutdown_timeout", "x", "invalid value for `shutdown_timeout` = \"x\" (from flag --shutdown-timeout): expected a duration"),
            ("max_reply_bytes", "10", "invalid value for `max_reply_bytes` = \"10\" (from flag --max-reply-bytes): expected a whole number from 1024"),
            ("log_level", "lo=ud=x", "invalid value for `log_level` = \"lo=ud=x\" (from flag --log-level): expected error, warn, info, debug or trace"),
            ("arkouda_token_file", "/nonexistent/token", "cannot read `arkouda_token_file` from /nonexistent/token (from flag --arkouda-token-file): No such file or directory"),
        ];
        for (k, v, want) in cases {
            let key = KEYS.iter().find(|d| d.key == *k).unwrap().key;
            let err = settings(&flags(&[(key, v)]), &env(&[]))
                .unwrap_err()
                .to_string();
            assert!(
                err.starts_with(want),
                "{k}={v:?}\n got: {err}\nwant: {want}"
            );
        }
    }

    /// Every typed key, given a value of the wrong type through its environment variable:
    /// exit-2 material naming the key, the value and the variable.
    #[test]
    fn every_typed_key_rejects_a_wrong_type() {
        let mut checked = 0;
        for def in KEYS {
            let bad = match def.kind {
                Kind::Duration => "soon",
                Kind::Port | Kind::Int | Kind::Bytes => "lots",
                Kind::Bool => "maybe",
                Kind::Labels => "novalue",
                Kind::Str | Kind::Path | Kind::List => continue,
            };
            let var = env_name(def.key);
            let err = settings(&flags(&[]), &env(&[(var.as_str(), bad)]))
                .err()
                .unwrap_or_else(|| panic!("{} accepted {bad:?}", def.key))
                .to_string();
            let want = format!(
                "invalid value for `{}` = \"{bad}\" (from environment {var}): ",
                def.key
            );
            assert!(err.starts_with(&want), "{}: {err}", def.key);
            checked += 1;
        }
        assert!(checked >= 11, "{checked}");
    }

    #[test]
    fn world_readable_secret_file_is_a_warning() {
        use std::os::unix::fs::PermissionsExt;
        let secret_file = file("tok\n");
        std::fs::set_permissions(&secret_file.0, std::fs::Permissions::from_mode(0o644)).unwrap();
        let f = flags(&[("arkouda_token_file", secret_file.0.to_str().unwrap())]);
        let s = settings(&f, &env(&[])).unwrap();
        assert_eq!(s.warnings.len(), 1);
        assert!(
            s.warnings[0].contains("(`arkouda_token_file`) is readable by every user"),
            "{:?}",
            s.warnings
        );
        std::fs::set_permissions(&secret_file.0, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(settings(&f, &env(&[])).unwrap().warnings.is_empty());
    }

    #[test]
    fn error_names_env_and_file_sources() {
        let err = settings(&flags(&[]), &env(&[("METRICS_POLLING_INTERVAL", "often")]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("(from environment METRICS_POLLING_INTERVAL)"),
            "{err}"
        );

        let toml = file("metrics_port = \"abc\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let err = settings(&f, &env(&[])).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "invalid value for `metrics_port` = \"abc\" (from file {}): expected a whole number from 1 to 65535",
                toml.0.display()
            )
        );
        let toml = file("metrics_port = 5556.5\n");
        f.config = Some(toml.0.clone());
        assert!(settings(&f, &env(&[])).is_err());
    }

    #[test]
    fn unknown_key_suggests_the_closest() {
        let toml = file("intervall = \"5s\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "unknown key `intervall` in file {} (did you mean `interval`?)",
                toml.0.display()
            )
        );
        let toml = file("zzzzzzzzzzzz = 1\n");
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.ends_with(&format!("in file {}", toml.0.display())),
            "{err}"
        );
    }

    #[test]
    fn unreadable_or_broken_file() {
        let mut f = flags(&[]);
        f.config = Some("/nonexistent/apa.toml".into());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.starts_with("cannot read config file /nonexistent/apa.toml:"),
            "{err}"
        );
        let toml = file("interval = \n");
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("cannot read config file {}:", toml.0.display())),
            "{err}"
        );
    }

    #[test]
    fn secrets_only_from_file_or_env_and_never_shown() {
        let toml = file("pushgateway_password = \"pw\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("is a secret and cannot be set in file"),
            "{err}"
        );
        assert!(!err.contains("pw\""), "{err}");

        let secret_file = file("s3cret-token\n");
        let f = flags(&[("arkouda_token_file", secret_file.0.to_str().unwrap())]);
        let e = env(&[
            ("ARKOUDA_PUSH_AGENT_PUSHGATEWAY", "http://pgw.test:9091"),
            ("ARKOUDA_PUSH_AGENT_PUSHGATEWAY_PASSWORD", "hunter2"),
            ("ARKOUDA_PUSH_AGENT_PUSHGATEWAY_USERNAME", "agent"),
        ]);
        let resolved = resolve(&f, &e).unwrap();
        let s = Settings::from_resolved(&resolved).unwrap();
        assert_eq!(s.arkouda_token.as_ref().unwrap().expose(), "s3cret-token");
        assert_eq!(s.pushgateway_password.as_ref().unwrap().expose(), "hunter2");
        let listing = resolved.describe().join("\n");
        assert!(!listing.contains("hunter2"), "{listing}");
        assert!(
            listing.contains(
                "pushgateway_password = *** (environment ARKOUDA_PUSH_AGENT_PUSHGATEWAY_PASSWORD)"
            ),
            "{listing}"
        );
        assert!(!format!("{s:?}").contains("hunter2"));

        let err = settings(
            &flags(&[]),
            &env(&[("ARKOUDA_PUSH_AGENT_PUSHGATEWAY_PASSWORD", "hunter2")]),
        )
        .unwrap_err()
        .to_string();
        assert!(!err.contains("hunter2"), "{err}");
    }

    #[test]
    fn job_id_is_required_where_needed() {
        let s = settings(&flags(&[]), &env(&[])).unwrap();
        let err = s.require_job_id().unwrap_err().to_string();
        assert!(err.starts_with("missing `job_id`"), "{err}");
    }

    #[test]
    fn unknown_environment_keys_are_reported() {
        let e = env(&[
            ("ARKOUDA_PUSH_AGENT_INTERVALL", "5s"),
            ("ARKOUDA_PUSH_AGENT_BIN", "/x"),
            ("ARKOUDA_PUSH_AGENT_JOB", "a"),
        ]);
        assert_eq!(
            unknown_env_keys(&e),
            vec!["ARKOUDA_PUSH_AGENT_INTERVALL".to_string()]
        );
    }

    #[test]
    fn slurm_table() {
        let toml = file("interval = \"2s\"\n[slurm]\nselect = \"partition\"\npartitions = [\"gpu\", \"arkouda\"]\nrun_as = \"nobody\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let s = settings(&f, &env(&[])).unwrap();
        assert_eq!(
            s.slurm.select,
            SlurmSelect::Partitions(vec!["gpu".into(), "arkouda".into()])
        );
        assert_eq!(s.slurm.run_as, "nobody");
        let e = env(&[("ARKOUDA_PUSH_AGENT_SLURM_SELECT", "all")]);
        assert_eq!(settings(&f, &e).unwrap().slurm.select, SlurmSelect::All);
        assert!(unknown_env_keys(&e).is_empty());
        let d = settings(&flags(&[]), &env(&[])).unwrap().slurm;
        assert_eq!(d.select, SlurmSelect::Comment("arkouda-metrics".into()));

        let toml = file("[slurm]\nselct = \"all\"\n");
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.starts_with("unknown key `slurm.selct`")
                && err.ends_with("(did you mean `slurm.select`?)"),
            "{err}"
        );
        let toml = file("[slurmm]\nselect = \"all\"\n");
        f.config = Some(toml.0.clone());
        let err = resolve(&f, &env(&[])).unwrap_err().to_string();
        assert!(err.starts_with("unknown key `[slurmm]`"), "{err}");
        let e = env(&[("ARKOUDA_PUSH_AGENT_SLURM_SELECT", "partition")]);
        let err = settings(&flags(&[]), &e).unwrap_err().to_string();
        assert!(err.starts_with("missing `slurm.partitions`"), "{err}");
        let e = env(&[("ARKOUDA_PUSH_AGENT_SLURM_RUN_AS", "root")]);
        let err = settings(&flags(&[]), &e).unwrap_err().to_string();
        assert!(err.contains("never runs as root"), "{err}");
    }

    /// config/arkouda-push-agent.toml documents every key (secrets by their `_file` key)
    /// and is accepted as it ships.
    #[test]
    fn example_config_is_complete_and_valid() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/config/arkouda-push-agent.toml"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let (top, slurm) = text.split_once("\n[slurm]\n").expect("a [slurm] table");
        for def in KEYS.iter().filter(|d| !d.secret) {
            let (section, name) = match def.key.split_once('.') {
                Some(("slurm", k)) => (slurm, k),
                _ => (top, def.key),
            };
            let documented = section.lines().any(|l| {
                l.trim_start_matches("# ")
                    .starts_with(&format!("{name} = "))
            });
            assert!(
                documented,
                "{} is not in config/arkouda-push-agent.toml",
                def.key
            );
        }
        let mut f = flags(&[]);
        f.config = Some(path.into());
        settings(&f, &env(&[])).unwrap();
    }

    /// `remote_write` is a list from every layer: a repeated flag, a comma-separated
    /// variable, a TOML array; with it, `no_push` needs no listen address.
    #[test]
    fn remote_write_urls_from_each_layer() {
        let mut f = flags(&[]);
        f.set_list(
            "remote_write",
            vec![
                "http://a:9090/api/v1/write".into(),
                "https://b/api/v1/write?extra_label=site=x".into(),
            ],
        );
        let s = settings(&f, &env(&[])).unwrap();
        assert_eq!(
            s.remote_write.urls,
            vec![
                "http://a:9090/api/v1/write".to_string(),
                "https://b/api/v1/write?extra_label=site=x".into()
            ]
        );
        assert_eq!(s.remote_write.queue_size, 120);
        assert_eq!(
            source_of(&f, &env(&[]), "remote_write"),
            Source::Flag("--remote-write".into())
        );

        let e = env(&[("ARKOUDA_PUSH_AGENT_REMOTE_WRITE", "http://a/w, http://b/w")]);
        let s = settings(&flags(&[]), &e).unwrap();
        assert_eq!(
            s.remote_write.urls,
            vec!["http://a/w".to_string(), "http://b/w".into()]
        );
        assert!(unknown_env_keys(&e).is_empty());

        let toml = file("remote_write = [\"http://c/w\"]\nremote_write_queue_size = 5\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        let s = settings(&f, &env(&[])).unwrap();
        assert_eq!(s.remote_write.urls, vec!["http://c/w".to_string()]);
        assert_eq!(s.remote_write.queue_size, 5);

        // Nothing configured: no receiver.
        assert!(settings(&flags(&[]), &env(&[]))
            .unwrap()
            .remote_write
            .urls
            .is_empty());

        // no_push: fine with remote write alone, an error with no sink at all.
        let mut f = flags(&[("no_push", "true")]);
        let err = settings(&f, &env(&[])).unwrap_err().to_string();
        assert!(
            err.contains("neither a listen address nor remote_write"),
            "{err}"
        );
        f.set_list("remote_write", vec!["http://a/w".into()]);
        assert!(settings(&f, &env(&[])).unwrap().no_push);
    }

    #[test]
    fn remote_write_bad_values_and_secrets() {
        let cases: &[(&str, &str)] = &[
            ("ftp://x/w", "expected an http:// or https:// URL"),
            ("http://u:pw@x/w", "a password in the URL"),
            ("not a url", "not a URL"),
        ];
        for (url, want) in cases {
            let mut f = flags(&[]);
            f.set_list("remote_write", vec![url.to_string()]);
            let err = settings(&f, &env(&[])).unwrap_err().to_string();
            assert!(
                err.starts_with("invalid value for `remote_write`") && err.contains(want),
                "{url}: {err}"
            );
        }
        let e = env(&[
            ("ARKOUDA_PUSH_AGENT_REMOTE_WRITE", "http://a/w"),
            ("ARKOUDA_PUSH_AGENT_REMOTE_WRITE_USERNAME", "agent"),
            ("ARKOUDA_PUSH_AGENT_REMOTE_WRITE_PASSWORD", "hunter2"),
        ]);
        let resolved = resolve(&flags(&[]), &e).unwrap();
        let s = Settings::from_resolved(&resolved).unwrap();
        assert_eq!(
            s.remote_write.password.as_ref().unwrap().expose(),
            "hunter2"
        );
        assert!(!resolved.describe().join("\n").contains("hunter2"));
        let toml = file("remote_write_password = \"pw\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        assert!(resolve(&f, &env(&[])).is_err(), "a secret in the file");
        let e = env(&[("ARKOUDA_PUSH_AGENT_REMOTE_WRITE_PASSWORD", "hunter2")]);
        let err = settings(&flags(&[]), &e).unwrap_err().to_string();
        assert!(err.starts_with("missing `remote_write_username`"), "{err}");
    }

    /// `lease` defaults to 4 × interval; a lease shorter than the interval is a warning;
    /// the sweep's keys have their defaults.
    #[test]
    fn lease_and_sweep_keys() {
        let s = settings(&flags(&[]), &env(&[])).unwrap();
        assert_eq!(s.lease, Duration::from_secs(20));
        assert_eq!(s.grace, Duration::from_secs(600));
        assert!(!s.no_scheduler);
        assert_eq!(s.squeue, PathBuf::from("/usr/bin/squeue"));
        assert_eq!(s.squeue_timeout, Duration::from_secs(10));
        let s = settings(&flags(&[("interval", "2s")]), &env(&[])).unwrap();
        assert_eq!(s.lease, Duration::from_secs(8));
        let s = settings(&flags(&[("lease", "1m")]), &env(&[])).unwrap();
        assert_eq!(s.lease, Duration::from_secs(60));
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let s = settings(&flags(&[("lease", "1s"), ("interval", "5s")]), &env(&[])).unwrap();
        assert_eq!(s.lease, Duration::from_secs(1));
        assert!(
            s.warnings
                .iter()
                .any(|w| w.starts_with("lease (1s) is shorter than interval (5s)")),
            "{:?}",
            s.warnings
        );
        let e = env(&[
            ("ARKOUDA_PUSH_AGENT_NO_SCHEDULER", "yes"),
            ("ARKOUDA_PUSH_AGENT_GRACE", "0"),
        ]);
        let s = settings(&flags(&[]), &e).unwrap();
        assert!(s.no_scheduler);
        assert_eq!(s.grace, Duration::ZERO);
        let err = settings(&flags(&[("lease", "10ms")]), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("invalid value for `lease` = \"10ms\" (from flag --lease)"),
            "{err}"
        );
        let toml = file("[slurm]\nselect = \"none\"\n");
        let mut f = flags(&[]);
        f.config = Some(toml.0.clone());
        assert_eq!(
            settings(&f, &env(&[])).unwrap().slurm.select,
            SlurmSelect::None
        );
    }

    /// The configuration reference, docs/configuration.md, has a row for every key.
    #[test]
    fn configuration_reference_documents_every_key() {
        let doc = std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/configuration.md"
        ))
        .unwrap();
        for def in KEYS {
            assert!(
                doc.contains(&format!("| `{}` |", def.key)),
                "docs/configuration.md has no row for `{}`",
                def.key
            );
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("5"), Some(Duration::from_secs(5)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m 30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_duration("-3"), None);
        assert_eq!(parse_duration("NaN"), None);
    }
}
