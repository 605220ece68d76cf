//! The four layers a value comes from (default < file < environment < flags), merged
//! into a [`Resolved`] that remembers each value's [`Source`]; and the [`ConfigError`] that
//! names a key and its source.

use super::*;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

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

pub(super) fn from_config_value(v: config::Value) -> Raw {
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
    /// A non-secret setting's value as a script wants it: a duration in seconds, a list
    /// comma-separated, a string bare; None when unset, unknown or secret.
    pub fn plain_value(&self, key: &str) -> Option<String> {
        let def = find_key(key).filter(|d| !d.secret)?;
        let (raw, _) = self.get(key)?;
        let text = match raw {
            Raw::Str(s) => s.clone(),
            Raw::List(items) => items
                .iter()
                .map(|i| match i {
                    Raw::Str(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join(","),
            other => other.to_string(),
        };
        if def.kind == Kind::Duration {
            return parse_duration(&text).map(|d| d.as_secs_f64().to_string());
        }
        Some(text)
    }

    pub fn get(&self, key: &str) -> Option<&(Raw, Source)> {
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

pub(super) fn env_value(def: &KeyDef, env: &BTreeMap<String, String>) -> Option<(String, String)> {
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

pub(super) fn read_file(path: &Path) -> Result<Vec<(String, Raw)>, ConfigError> {
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
pub(super) fn flatten(
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

pub(super) fn suggestion(unknown: &str) -> String {
    KEYS.iter()
        .map(|k| (strsim::levenshtein(unknown, k.key), k.key))
        .filter(|(d, k)| *d <= 3.max(k.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| format!(" (did you mean `{k}`?)"))
        .unwrap_or_default()
}
