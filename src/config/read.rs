//! Typed readers over a [`super::Resolved`]: each reads one key as its kind and turns a
//! bad value into a [`super::ConfigError`] naming the key and its source.

use super::*;
use crate::secret::Secret;
use crate::sinks::http::ClientOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The auth keys of one HTTP endpoint.
pub(super) struct HttpAuth {
    pub(super) username: Option<String>,
    pub(super) password: Option<Secret>,
    pub(super) bearer: Option<Secret>,
}

impl HttpAuth {
    /// The client options of an endpoint with these credentials.
    pub(super) fn client(
        self,
        ca_file: Option<PathBuf>,
        insecure_skip_verify: bool,
        timeout: Duration,
    ) -> ClientOptions {
        ClientOptions {
            timeout,
            user_agent: crate::sinks::http::user_agent(),
            username: self.username,
            password: self.password,
            bearer_token: self.bearer,
            ca_file,
            insecure_skip_verify,
        }
    }
}

/// The `remote_write*` keys, read before `push_timeout`, which completes them.
pub(super) struct RemoteWriteKeys {
    pub(super) urls: Vec<String>,
    auth: HttpAuth,
    ca_file: Option<PathBuf>,
    insecure_skip_verify: bool,
    queue_size: usize,
}

impl RemoteWriteKeys {
    pub(super) fn with_timeout(self, timeout: Duration) -> RemoteWriteSettings {
        RemoteWriteSettings {
            urls: self.urls,
            client: self
                .auth
                .client(self.ca_file, self.insecure_skip_verify, timeout),
            queue_size: self.queue_size,
        }
    }
}

pub(super) struct Reader<'a> {
    pub(super) resolved: &'a Resolved,
    /// Warnings found while reading, logged once logging is up.
    pub(super) warnings: std::cell::RefCell<Vec<String>>,
}

impl Reader<'_> {
    pub(super) fn invalid(&self, key: &str, reason: impl Into<String>) -> ConfigError {
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

    pub(super) fn raw(&self, key: &str) -> Option<&Raw> {
        self.resolved.get(key).map(|(r, _)| r)
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.raw(key) {
            None => Ok(None),
            Some(Raw::Str(s)) => Ok(Some(s.clone())),
            Some(Raw::Int(i)) => Ok(Some(i.to_string())),
            Some(_) => Err(self.invalid(key, "expected a string")),
        }
    }

    pub(super) fn nonempty(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.string(key)? {
            Some(s) if s.trim().is_empty() => Err(self.invalid(key, "must not be empty")),
            other => Ok(other),
        }
    }

    pub(super) fn required(&self, key: &str) -> Result<String, ConfigError> {
        self.nonempty(key)?
            .ok_or_else(|| self.invalid(key, "must be set"))
    }

    pub(super) fn bool(&self, key: &str) -> Result<bool, ConfigError> {
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

    pub(super) fn integer(
        &self,
        key: &str,
        min: i128,
        max: i128,
    ) -> Result<Option<i128>, ConfigError> {
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

    pub(super) fn duration(
        &self,
        key: &str,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
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

    pub(super) fn dashboard_url(&self) -> Result<Option<String>, ConfigError> {
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

    pub(super) fn listen(&self) -> Result<Option<String>, ConfigError> {
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

    pub(super) fn remote_write(&self) -> Result<RemoteWriteKeys, ConfigError> {
        let urls = self
            .list("remote_write")?
            .iter()
            .map(|u| {
                check_http_url(u, "remote_write", true).map_err(|e| self.invalid("remote_write", e))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(RemoteWriteKeys {
            urls,
            auth: self.http_auth("remote_write", "remote-write")?,
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
    pub(super) fn http_auth(&self, prefix: &str, what: &str) -> Result<HttpAuth, ConfigError> {
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

    pub(super) fn slurm(&self) -> Result<SlurmSettings, ConfigError> {
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
            admin_comment: self.bool("slurm.admin_comment")?,
        })
    }

    /// A TOML array of strings, or a comma-separated string (environment, flags).
    pub(super) fn list(&self, key: &str) -> Result<Vec<String>, ConfigError> {
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

    pub(super) fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self.nonempty(key)?.map(PathBuf::from))
    }

    pub(super) fn labels(&self, key: &str) -> Result<Vec<(String, String)>, ConfigError> {
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
    pub(super) fn secret(&self, key: &str) -> Result<Option<Secret>, ConfigError> {
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
    pub(super) fn lease(&self, interval: Duration) -> Result<Duration, ConfigError> {
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

pub(super) fn world_readable(path: &Path) -> bool {
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

pub(super) fn parse_endpoint(s: &str, default_port: u16) -> Result<String, String> {
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
pub(super) fn check_http_url(s: &str, prefix: &str, allow_query: bool) -> Result<String, String> {
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
