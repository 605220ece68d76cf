//! Security: TLS verified by default (a given CA, or an explicit and loudly logged
//! opt-out), basic auth, and secrets that never show in logs, `check`, error messages or
//! /proc/PID/cmdline; a secret file others can read gets a warning. Against a real
//! Pushgateway serving TLS and basic auth through its web config.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::Duration;

use crate::common::*;

const PASSWORD: &str = "pa55-w0rd-secret";

struct TlsGateway {
    pg: Pushgateway,
    ca: std::path::PathBuf,
    _dir: TempDir,
}

fn openssl(dir: &TempDir, args: &[&str]) {
    let out = Command::new("/usr/bin/openssl")
        .args(args)
        .current_dir(&dir.0)
        .output()
        .expect("openssl (Debian package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Pushgateway with TLS (a certificate for 127.0.0.1 from a throwaway CA) and basic
/// auth (user `agent`).
fn tls_gateway() -> TlsGateway {
    let dir = TempDir::new("tls");
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "1",
            "-subj",
            "/CN=test-ca",
        ],
    );
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "srv.key",
            "-out",
            "srv.csr",
            "-subj",
            "/CN=127.0.0.1",
        ],
    );
    std::fs::write(dir.path("ext.cnf"), "subjectAltName=IP:127.0.0.1\n").unwrap();
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "srv.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "srv.pem",
            "-days",
            "1",
            "-extfile",
            "ext.cnf",
        ],
    );
    let hash = Command::new("/usr/bin/htpasswd")
        .args(["-nbB", "agent", PASSWORD])
        .output()
        .expect("htpasswd (Debian package apache2-utils)");
    assert!(hash.status.success());
    let line = String::from_utf8(hash.stdout).unwrap();
    let bcrypt = line.trim().split_once(':').unwrap().1.to_string();
    let web = format!(
        "tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  agent: '{bcrypt}'\n",
        dir.path("srv.pem").display(),
        dir.path("srv.key").display()
    );
    std::fs::write(dir.path("web.yml"), web).unwrap();
    let ca = dir.path("ca.pem");
    let cert = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let http = reqwest::blocking::Client::builder()
        .add_root_certificate(cert)
        .build()
        .unwrap();
    let web_flag = format!("--web.config.file={}", dir.path("web.yml").display());
    let pg = Pushgateway::start_authed(
        free_port(),
        &[&web_flag],
        http,
        "https",
        Some(("agent".into(), PASSWORD.into())),
    );
    TlsGateway { pg, ca, _dir: dir }
}

fn agent_with_password(args: &[&str], password: &str) -> Command {
    let mut cmd = agent_command(args);
    cmd.env("ARKOUDA_PUSH_AGENT_PUSHGATEWAY_PASSWORD", password);
    cmd
}

#[test]
fn tls_and_basic_auth() {
    let tls = tls_gateway();
    let sim = Sim::start(&[]);
    let ca = tls.ca.to_str().unwrap();
    let base = [
        "--arkouda",
        &sim.endpoint(),
        "--pushgateway",
        &tls.pg.url,
        "--job-id",
        "tls",
        "--pushgateway-username",
        "agent",
        "--push-timeout",
        "2s",
    ];
    let with = |extra: &[&str]| -> Vec<String> {
        ["once"]
            .iter()
            .chain(base.iter())
            .chain(extra)
            .map(|s| s.to_string())
            .collect()
    };
    let run = |args: Vec<String>, password: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run_agent_cmd(agent_with_password(&args, password))
    };

    // The CA given: pushed, over TLS, authenticated.
    let (code, out, err) = run(with(&["--pushgateway-ca-file", ca]), PASSWORD);
    assert_eq!(code, 0, "{out}{err}");
    let g = tls.pg.wait_group("tls", "the group", |_| true);
    assert_eq!(g.value("arkouda_up", &[]), Some(1.0));
    assert!(!err.contains(PASSWORD) && !out.contains(PASSWORD));

    // No CA: the system roots do not trust it, and nothing is pushed.
    let (code, _, err) = run(with(&[]), PASSWORD);
    assert_eq!(code, 1, "{err}");
    assert!(err.to_lowercase().contains("certificate"), "{err}");

    // Verification off: works, and says loudly that it is insecure.
    let (code, _, err) = run(with(&["--pushgateway-insecure-skip-verify"]), PASSWORD);
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("WARN") && err.contains("TLS certificate verification is OFF"),
        "{err}"
    );

    // A wrong password: 401, and neither password is in the message.
    let (code, _, err) = run(with(&["--pushgateway-ca-file", ca]), "wrong-secret-value");
    assert_eq!(code, 1);
    assert!(err.contains("HTTP 401"), "{err}");
    assert!(
        !err.contains("wrong-secret-value") && !err.contains(PASSWORD),
        "{err}"
    );

    // `check` masks the password and names its source.
    let mut args = with(&["--pushgateway-ca-file", ca]);
    args[0] = "check".into();
    let (code, out, err) = run(args, PASSWORD);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "pushgateway_password = *** (environment ARKOUDA_PUSH_AGENT_PUSHGATEWAY_PASSWORD)"
        ),
        "{out}"
    );
    assert!(!out.contains(PASSWORD) && !err.contains(PASSWORD));
}

/// A password file: a warning when others can read it, none when they cannot; the
/// running agent's command line and log never hold the secret.
#[test]
fn password_file_permissions_and_cmdline() {
    let tls = tls_gateway();
    let sim = Sim::start(&[]);
    let dir = TempDir::new("pw");
    let file = dir.path("password");
    std::fs::write(&file, format!("{PASSWORD}\n")).unwrap();
    let args = |cmd: &'static str| -> Vec<String> {
        [
            cmd,
            "--arkouda",
            &sim.endpoint(),
            "--pushgateway",
            &tls.pg.url,
            "--job-id",
            "pwfile",
            "--pushgateway-username",
            "agent",
            "--pushgateway-password-file",
            file.to_str().unwrap(),
            "--pushgateway-ca-file",
            tls.ca.to_str().unwrap(),
            "--interval",
            "300ms",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let strs = |v: &[String]| -> Vec<String> { v.to_vec() };

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let a = strs(&args("once"));
    let (code, _, err) = run_agent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("(`pushgateway_password_file`) is readable by every user"),
        "{err}"
    );

    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (code, _, err) = run_agent(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("readable by every user"), "{err}");

    let r = strs(&args("run"));
    let agent = spawn_agent(&r.iter().map(String::as_str).collect::<Vec<_>>());
    tls.pg.wait_group("pwfile", "the group", |g| {
        g.value("arkouda_up", &[]) == Some(1.0)
    });
    let cmdline = std::fs::read(format!("/proc/{}/cmdline", agent.pid())).unwrap();
    assert!(!String::from_utf8_lossy(&cmdline).contains(PASSWORD));
    std::thread::sleep(Duration::from_millis(500));
    assert!(!agent.log_text().contains(PASSWORD));
}
