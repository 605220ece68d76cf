//! The settings table: every key once, with its kind, who reads it, its flag's
//! placeholder, its default, its environment names and its doc. Everything else (flags,
//! `--help`, man pages, the reference tables, the example file) is made from it.

use super::*;

/// Environment prefix of every key.
pub const ENV_PREFIX: &str = "ARKOUDA_PUSH_AGENT_";
/// The config file read when no `--config` is given, if it exists.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/arkouda-push-agent/config.toml";

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

pub(super) const fn key(
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

pub(super) const fn secret(key: &'static str, doc: &'static str) -> KeyDef {
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
    key("linger", Kind::Duration, Some("0s"), &[],
        "`run`: at the stop, a final push (a fresh poll if the server answers at once, else the last values) carrying `arkouda_agent_end_timestamp_seconds`, then the group kept this long before it is deleted, so that a Prometheus scraping the Pushgateway gets the job's final values; set it to at least the scrape interval. 0: delete at once (the default: a site that wants the final values sets its own scrape interval here). Remote write needs none: the final sample, then the staleness markers.")
        .group(Group::Run)
        .value("DURATION"),
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
        "`sweep`: the squeue binary, called once per sweep (`squeue --all`; `SLURM_CONF` honoured); `scontrol show config` is asked of the `scontrol` beside it. EpilogSlurmctld uses it for a requeued job, and the `sacctmgr` beside it for `slurm.admin_comment`.")
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
    key("slurm.admin_comment", Kind::Bool, Some("false"), &[],
        "EpilogSlurmctld: store the job summary in the job's AdminComment in Slurm's accounting (`sacctmgr modify job`, as jobstats does; read with `sacct -o AdminComment`). Needs `summary_file` on a file system the controller sees, and slurmdbd ([slurm.md](slurm.md), \"The job summary\").")
        .group(Group::Slurm),
];

pub(super) fn find_key(name: &str) -> Option<&'static KeyDef> {
    KEYS.iter().find(|k| k.key == name)
}
