//! The configuration's tests: precedence, every error message, secrets, the files.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::read::*;
use super::*;
use crate::arkouda::Location;

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
    assert!(rw.pushgateway.urls.is_empty());
    assert!(rw.require_sink().is_ok());
    assert!(rw.require_pushgateway().is_err());
    let listen = only(&[("listen", "127.0.0.1:9808")]).unwrap();
    assert!(listen.pushgateway.urls.is_empty());
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
        dash.job.dashboard_link("42").unwrap(),
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
        settings(&f, &none).unwrap().lifecycle.interval,
        Duration::from_secs(7)
    );
    assert_eq!(
        source_of(&f, &none, "interval"),
        Source::File(toml.0.clone())
    );
    assert_eq!(source_of(&f, &none, "push_timeout"), Source::Default);

    let e = env(&[("ARKOUDA_PUSH_AGENT_INTERVAL", "9s")]);
    assert_eq!(
        settings(&f, &e).unwrap().lifecycle.interval,
        Duration::from_secs(9)
    );
    assert_eq!(
        source_of(&f, &e, "interval"),
        Source::Env("ARKOUDA_PUSH_AGENT_INTERVAL".into())
    );

    f.set("interval", Some("250ms".into()));
    let s = settings(&f, &e).unwrap();
    assert_eq!(s.lifecycle.interval, Duration::from_millis(250));
    assert_eq!(s.job.name, "from-file");
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
    assert_eq!(
        s.arkouda.location,
        Location::Endpoint("tcp://nid7:6000".into())
    );
    assert_eq!(s.lifecycle.interval, Duration::from_secs(12));
    assert_eq!(s.series.server_name, "srv");
    assert_eq!(s.job.id.as_deref(), Some("4242"));
    assert_eq!(s.job.cluster.as_deref(), Some("perlmutter"));
    assert_eq!(s.pushgateway.urls, vec!["http://pgw:9091".to_string()]);
    // The canonical name beats the alias.
    let mut e2 = e.clone();
    e2.insert("ARKOUDA_PUSH_AGENT_JOB_ID".into(), "7".into());
    assert_eq!(
        settings(&flags(&[]), &e2).unwrap().job.id.as_deref(),
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
        settings(&flags(&[]), &e).unwrap().arkouda.location,
        Location::ConnectionInfo {
            path: "/tmp/ci".into(),
            port: 5600,
            fallback_host: None,
        }
    );
    // A host with the file: the host is the fallback while the file is missing.
    let f = flags(&[("arkouda_host", "nid001")]);
    assert_eq!(
        settings(&f, &e).unwrap().arkouda.location,
        Location::ConnectionInfo {
            path: "/tmp/ci".into(),
            port: 5600,
            fallback_host: Some("nid001".into()),
        }
    );
    let f = flags(&[("arkouda", "tcp://nid001:5556")]);
    assert_eq!(
        settings(&f, &e).unwrap().arkouda.location,
        Location::Endpoint("tcp://nid001:5556".into())
    );
    assert_eq!(
        settings(&flags(&[("arkouda", "nid9")]), &env(&[]))
            .unwrap()
            .arkouda
            .location,
        Location::Endpoint("tcp://nid9:5556".into())
    );
    assert_eq!(
        settings(&flags(&[("arkouda_host", "nid8")]), &env(&[]))
            .unwrap()
            .arkouda
            .location,
        Location::Endpoint("tcp://nid8:5556".into())
    );
    assert_eq!(
        settings(&flags(&[]), &env(&[])).unwrap().arkouda.location,
        Location::Endpoint("tcp://localhost:5556".into())
    );
}

#[test]
fn labels_from_each_layer() {
    let toml = file("[labels]\ninstance = \"second\"\nsite = \"x\"\n");
    let mut f = flags(&[]);
    f.config = Some(toml.0.clone());
    let s = settings(&f, &env(&[])).unwrap();
    assert_eq!(
        s.job.labels,
        vec![
            ("instance".into(), "second".into()),
            ("site".into(), "x".into())
        ]
    );
    let s = settings(&flags(&[("labels", "b=2, a=1")]), &env(&[])).unwrap();
    assert_eq!(
        s.job.labels,
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
    assert_eq!(
        s.arkouda.client.token.as_ref().unwrap().expose(),
        "s3cret-token"
    );
    assert_eq!(
        s.pushgateway.client.password.as_ref().unwrap().expose(),
        "hunter2"
    );
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
    let err = s.job.require_id().unwrap_err().to_string();
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

    // admin_comment stores the summary file: without one it is an error naming both keys.
    assert!(!d.admin_comment);
    let toml = file("[slurm]\nadmin_comment = true\n");
    f.config = Some(toml.0.clone());
    let err = settings(&f, &env(&[])).unwrap_err().to_string();
    assert!(
        err.starts_with(&format!(
            "invalid value for `slurm.admin_comment` = true (from file {}): storing the job summary in the job's AdminComment needs `summary_file`",
            toml.0.display()
        )),
        "{err}"
    );
    let e = env(&[("ARKOUDA_PUSH_AGENT_SUMMARY_FILE", "/shared/s/%j.json")]);
    assert!(settings(&f, &e).unwrap().slurm.admin_comment);
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
    assert!(settings(&f, &env(&[])).unwrap().pushgateway.no_push);
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
        s.remote_write.client.password.as_ref().unwrap().expose(),
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
    assert_eq!(s.lifecycle.lease, Duration::from_secs(20));
    assert_eq!(s.sweep.grace, Duration::from_secs(600));
    assert!(!s.sweep.no_scheduler);
    assert_eq!(s.sweep.squeue, PathBuf::from("/usr/bin/squeue"));
    assert_eq!(s.sweep.squeue_timeout, Duration::from_secs(10));
    let s = settings(&flags(&[("interval", "2s")]), &env(&[])).unwrap();
    assert_eq!(s.lifecycle.lease, Duration::from_secs(8));
    let s = settings(&flags(&[("lease", "1m")]), &env(&[])).unwrap();
    assert_eq!(s.lifecycle.lease, Duration::from_secs(60));
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    let s = settings(&flags(&[("lease", "1s"), ("interval", "5s")]), &env(&[])).unwrap();
    assert_eq!(s.lifecycle.lease, Duration::from_secs(1));
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
    assert!(s.sweep.no_scheduler);
    assert_eq!(s.sweep.grace, Duration::ZERO);
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
