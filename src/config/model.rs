//! The settings as the program uses them: [`Settings`] and the types of its fields,
//! built from a [`super::Resolved`] by [`Settings::from_resolved`].

use super::*;
use crate::arkouda::Location;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Validated, ready-to-use settings, grouped by the module that reads them: each group is
/// handed to its module as it is. The Arkouda client's and the sinks' are those modules'
/// own types (imported here, never the other way round); the others are defined here.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The Arkouda client ([`crate::arkouda::Session`]).
    pub arkouda: ArkoudaSettings,
    /// The translation of each poll (names, `server_name`, the cardinality budget).
    pub series: SeriesSettings,
    /// The job: its grouping labels ([`crate::groups`]), what `arkouda_job_info` reports,
    /// its dashboard link.
    pub job: JobSettings,
    /// The Pushgateway sink, and `delete`, `sweep` and the Slurm backstops.
    pub pushgateway: PushgatewaySettings,
    /// The remote-write sink (`urls` empty: none).
    pub remote_write: RemoteWriteSettings,
    /// The listen sink's address (scrape mode).
    pub listen: Option<String>,
    /// How `run` cycles and stops ([`crate::lifecycle`]).
    pub lifecycle: LifecycleSettings,
    /// The process: detaching, pid file, lock, log (the binary).
    pub process: ProcessSettings,
    /// `sweep`.
    pub sweep: SweepSettings,
    /// The `[slurm]` table (the Slurm hooks).
    pub slurm: SlurmSettings,
    /// Problems that are not errors (a secret file others can read), to log at start.
    pub warnings: Vec<String>,
}

pub use crate::arkouda::ArkoudaSettings;
/// How a job's series are grouped (the Pushgateway sink's own vocabulary).
pub use crate::sinks::pushgateway::sink::Layout;
pub use crate::sinks::pushgateway::{PushgatewayMode, PushgatewaySettings};
pub use crate::sinks::remote_write::RemoteWriteSettings;

/// What each poll's series are called and how many distinct values a label may take.
#[derive(Clone, Debug)]
pub struct SeriesSettings {
    pub server_name: String,
    pub legacy_names: bool,
    pub budget: crate::translate::Budget,
}

/// The job the agent serves: its grouping labels and what is reported about it.
#[derive(Clone, Debug)]
pub struct JobSettings {
    /// The `job` grouping label.
    pub name: String,
    pub id: Option<String>,
    pub cluster: Option<String>,
    /// Slurm's restart count of the job (0: its first run).
    pub restart_count: u32,
    pub user: Option<String>,
    pub partition: Option<String>,
    /// Static grouping labels, sorted.
    pub labels: Vec<(String, String)>,
    /// The job dashboard's URL template (`{job_id}`, `{cluster}`).
    pub dashboard_url: Option<String>,
}

/// How `run` cycles and stops.
#[derive(Clone, Debug)]
pub struct LifecycleSettings {
    pub interval: Duration,
    pub shutdown_timeout: Duration,
    /// How long the group is kept after the final push at the stop (0: not at all).
    pub linger: Duration,
    /// Every push carries push time + lease (`lease`, default 4 × interval).
    pub lease: Duration,
    /// Where the job summary goes at exit (`%j`: the job id).
    pub summary_file: Option<PathBuf>,
    /// Stop when this process is gone.
    pub watch_pid: Option<i32>,
}

/// The agent as a process: how it detaches, where it logs.
#[derive(Clone, Debug)]
pub struct ProcessSettings {
    pub daemonize: bool,
    pub pid_file: Option<PathBuf>,
    pub lock_dir: Option<PathBuf>,
    pub log_level: String,
    pub log_file: Option<PathBuf>,
}

/// `sweep`.
#[derive(Clone, Debug)]
pub struct SweepSettings {
    /// How long after its lease expired a group may be deleted when leases decide.
    pub grace: Duration,
    /// Never ask Slurm.
    pub no_scheduler: bool,
    /// The squeue binary and the bound on its run time.
    pub squeue: PathBuf,
    pub squeue_timeout: Duration,
}

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
    /// EpilogSlurmctld stores the job summary (`summary_file`) in the job's AdminComment.
    pub admin_comment: bool,
}

/// Labels the agent sets itself; a static label may not take these names.
pub const RESERVED_LABELS: &[&str] = &[
    "job",
    "slurm_job_id",
    "cluster",
    "locale",
    "slurm_restart_count",
];

impl Settings {
    /// Type and validate every key. The keys are read in a fixed order (the first bad one
    /// is the error), then handed to the groups.
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
        let location = if let Some(a) = r.nonempty("arkouda")? {
            Location::Endpoint(
                parse_endpoint(&a, metrics_port).map_err(|e| r.invalid("arkouda", e))?,
            )
        } else if let Some(path) = r.path("connection_info")? {
            Location::ConnectionInfo {
                path,
                port: metrics_port,
                fallback_host: host,
            }
        } else if let Some(h) = host {
            Location::Endpoint(
                parse_endpoint(&h, metrics_port).map_err(|e| r.invalid("arkouda_host", e))?,
            )
        } else {
            Location::Endpoint(format!("tcp://localhost:{metrics_port}"))
        };

        let release = match r.required("arkouda_release")?.trim() {
            "auto" => None,
            rel => Some(crate::arkouda::Release::parse(rel).ok_or_else(|| {
                r.invalid(
                    "arkouda_release",
                    "expected auto or a release date such as 2022.08.15, 2023.04.07 or 2024.10.02",
                )
            })?),
        };

        let pushgateway_urls = r
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
        let pushgateway_auth = r.http_auth("pushgateway", "Pushgateway")?;

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
        let arkouda_client = crate::arkouda::ClientOptions {
            timeout: r.duration(
                "arkouda_timeout",
                Duration::from_millis(10),
                Duration::from_secs(600),
            )?,
            user: r.required("arkouda_user")?,
            token: r.secret("arkouda_token")?,
            max_reply_bytes: r
                .integer("max_reply_bytes", 1024, i128::from(i64::MAX))?
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(64 << 20),
        };
        let pushgateway_ca_file = r.path("pushgateway_ca_file")?;
        let pushgateway_insecure_skip_verify = r.bool("pushgateway_insecure_skip_verify")?;
        // One timeout for every HTTP request of a sink: the Pushgateways' and the
        // remote-write receivers'.
        let push_timeout = r.duration(
            "push_timeout",
            Duration::from_millis(10),
            Duration::from_secs(600),
        )?;
        let cluster = r.nonempty("cluster")?;
        let restart_count = r
            .integer("restart_count", 0, i128::from(u32::MAX))?
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0);
        let job_user = r.nonempty("job_user")?;
        let partition = r.nonempty("partition")?;
        let labels = r.labels("labels")?;
        let server_name = r.required("server_name")?;
        let shutdown_timeout = r.duration(
            "shutdown_timeout",
            Duration::from_millis(100),
            Duration::from_secs(600),
        )?;
        let legacy_names = r.bool("legacy_names")?;
        let log_file = r.path("log_file")?;
        let summary_file = r.path("summary_file")?;
        let linger = r.duration("linger", Duration::ZERO, Duration::from_secs(24 * 3600))?;
        let dashboard_url = r.dashboard_url()?;
        let daemonize = r.bool("daemonize")?;
        let pid_file = r.path("pid_file")?;
        let watch_pid = r
            .integer("watch_pid", 1, i128::from(i32::MAX))?
            .and_then(|p| i32::try_from(p).ok());
        let lock_dir = r.path("lock_dir")?;
        let keys_file = r.path("keys_file")?;
        let lease = r.lease(interval)?;
        let sweep = SweepSettings {
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
        };
        let slurm = r.slurm()?;
        if slurm.admin_comment && summary_file.is_none() {
            return Err(r.invalid(
                "slurm.admin_comment",
                "storing the job summary in the job's AdminComment needs `summary_file` (a path on a file system the controller sees, e.g. \"/shared/arkouda/summaries/%j.json\")",
            ));
        }
        Ok(Settings {
            arkouda: ArkoudaSettings {
                location,
                release,
                client: arkouda_client,
            },
            series: SeriesSettings {
                server_name,
                legacy_names,
                budget,
            },
            job: JobSettings {
                name: job,
                id: job_id,
                cluster,
                restart_count,
                user: job_user,
                partition,
                labels,
                dashboard_url,
            },
            pushgateway: PushgatewaySettings {
                urls: pushgateway_urls,
                mode: pushgateway_mode,
                layout,
                gzip_threshold,
                client: pushgateway_auth.client(
                    pushgateway_ca_file,
                    pushgateway_insecure_skip_verify,
                    push_timeout,
                ),
                keys_file,
                no_push,
            },
            remote_write: remote_write.with_timeout(push_timeout),
            listen,
            lifecycle: LifecycleSettings {
                interval,
                shutdown_timeout,
                linger,
                lease,
                summary_file,
                watch_pid,
            },
            process: ProcessSettings {
                daemonize,
                pid_file,
                lock_dir,
                log_level,
                log_file,
            },
            sweep,
            slurm,
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
        if let Location::ConnectionInfo { path, .. } = &mut self.arkouda.location {
            abs(path);
        }
        for p in [
            &mut self.pushgateway.client.ca_file,
            &mut self.remote_write.client.ca_file,
            &mut self.process.log_file,
            &mut self.lifecycle.summary_file,
            &mut self.process.pid_file,
            &mut self.process.lock_dir,
            &mut self.pushgateway.keys_file,
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
        if self.pushgateway.urls.is_empty()
            && self.remote_write.urls.is_empty()
            && self.listen.is_none()
        {
            return Err(ConfigError::Missing {
                key: "pushgateway".to_string(),
                hint: "the metrics would go nowhere: set `pushgateway` (--pushgateway, ARKOUDA_PUSH_AGENT_PUSHGATEWAY or PUSHGATEWAY_URL), `remote_write` or `listen`".to_string(),
            });
        }
        Ok(())
    }

    /// The Pushgateways, which `delete`, `sweep` and the Slurm backstops need.
    pub fn require_pushgateway(&self) -> Result<&[String], ConfigError> {
        if self.pushgateway.urls.is_empty() {
            return Err(ConfigError::Missing {
                key: "pushgateway".to_string(),
                hint: "this command deletes groups from the Pushgateways: set `pushgateway` (--pushgateway, ARKOUDA_PUSH_AGENT_PUSHGATEWAY or PUSHGATEWAY_URL)".to_string(),
            });
        }
        Ok(&self.pushgateway.urls)
    }

    /// `push_timeout`: the timeout of one HTTP request of a sink, to a Pushgateway or a
    /// remote-write receiver (held in their client options).
    pub fn push_timeout(&self) -> Duration {
        self.pushgateway.client.timeout
    }
}

impl JobSettings {
    /// The job id, which `run`, `once` and `delete` need.
    pub fn require_id(&self) -> Result<&str, ConfigError> {
        self.id.as_deref().ok_or_else(|| ConfigError::Missing {
            key: "job_id".to_string(),
            hint: "give --job-id, set job_id in the config file, or run inside a Slurm job (SLURM_JOB_ID)"
                .to_string(),
        })
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
}
