//! The `log` section and systemd notifications, on the real binary with one node (real
//! etcd and PostgreSQL 15): a rotating `patroni.log` with a custom template, JSON lines
//! at WARNING with static fields, no colours in files, and READY=1 / STOPPING=1 on
//! `NOTIFY_SOCKET` (a path and an abstract address).

mod support;

use serde_json::Value;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::time::Duration;
use support::{Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// Waits for the next datagram and returns it as text.
fn recv(sock: &UnixDatagram, within: Duration) -> Option<String> {
    sock.set_read_timeout(Some(within)).expect("timeout");
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).ok()?;
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

/// Waits for a datagram equal to `want` (others, such as RELOADING, are skipped).
fn expect_state(sock: &UnixDatagram, want: &str, within: Duration) {
    let end = std::time::Instant::now() + within;
    let mut seen = Vec::new();
    while std::time::Instant::now() < end {
        match recv(sock, Duration::from_secs(1)) {
            Some(m) if m == want => return,
            Some(m) => seen.push(m),
            None => {}
        }
    }
    panic!("no {want} on the notify socket; got {seen:?}");
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// The log directory's files with their sizes, and the current file, for a failure.
fn listing(dir: &Path) -> String {
    let mut out = String::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let len = e.metadata().map(|m| m.len()).unwrap_or(0);
        out.push_str(&format!("{} {len}\n", e.file_name().to_string_lossy()));
    }
    out + &read(&dir.join("patroni.log"))
}

/// `2024-01-31T12:00:00 [LEVEL] target: message`
fn matches_template(line: &str) -> bool {
    let b = line.as_bytes();
    let digits = |r: std::ops::Range<usize>| r.into_iter().all(|i| b[i].is_ascii_digit());
    if b.len() < 22 || !(digits(0..4) && b[4] == b'-' && b[10] == b'T' && b[19] == b' ') {
        return false;
    }
    let Some(rest) = line[20..].strip_prefix('[') else {
        return false;
    };
    let Some((level, rest)) = rest.split_once("] ") else {
        return false;
    };
    let Some((target, _)) = rest.split_once(": ") else {
        return false;
    };
    ["TRACE", "DEBUG", "INFO", "WARNING", "ERROR"].contains(&level)
        && !target.is_empty()
        && target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

#[test]
fn plain_file_rotates_and_systemd_hears_ready_and_stopping() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("log dir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    let top = format!(
        "log:\n  level: DEBUG\n  format: '%(asctime)s [%(levelname)s] %(name)s: %(message)s'\n  \
         dateformat: '%Y-%m-%dT%H:%M:%S'\n  dir: {}\n  file_size: 300\n  file_num: 2\n  mode: 0640\n",
        logs.display()
    );
    let mut c = Cluster::new_with(
        1,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            top: top.clone(),
            ..Extra::default()
        },
    );
    c.start_with_env(0, &[("NOTIFY_SOCKET", sock_path.to_str().unwrap())]);
    expect_state(&sock, "READY=1", BOOT);

    // The agent logs a few dozen lines from start to exit: 300-byte files rotate
    // many times.
    c.wait_primary(BOOT).expect("a primary");
    c.signal_agent(0, libc::SIGTERM);
    expect_state(&sock, "STOPPING=1", Duration::from_secs(30));
    assert!(c.wait_agent_exit(0, Duration::from_secs(60)));

    let base = logs.join("patroni.log");
    let backup = |i: u32| logs.join(format!("patroni.log.{i}"));
    let files = [base.clone(), backup(1), backup(2)];
    for p in &files {
        assert!(p.exists(), "{} missing: {}", p.display(), listing(&logs));
    }
    assert!(
        !backup(3).exists(),
        "file_num 2 keeps two old files: {}",
        listing(&logs)
    );
    let mut lines = 0;
    let mut all = String::new();
    for p in &files {
        let text = read(p);
        assert!(!text.contains('\x1b'), "{}: ANSI escapes", p.display());
        let size = text.len();
        assert!(
            size < 300 || text.lines().count() == 1,
            "{}: {size} bytes over file_size",
            p.display()
        );
        for l in text.lines().filter(|l| l.starts_with("20")) {
            assert!(matches_template(l), "{}: {l:?}", p.display());
            lines += 1;
        }
        all.push_str(&text);
    }
    assert!(lines >= 3, "{lines} log lines");
    // The first lines went with the files rotated away.
    assert!(!all.contains("told systemd READY=1"), "{all}");
    assert!(all.contains("shutting down"), "{all}");
    let mode = std::fs::metadata(&base)
        .expect("patroni.log")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn json_lines_at_warning_level_with_static_fields() {
    let dir = tempfile::tempdir().expect("tempdir");
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).expect("log dir");
    let name = format!("fullauto-e2e-log-{}", std::process::id());
    let abstract_addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
        .expect("abstract address");
    let sock = UnixDatagram::bind_addr(&abstract_addr).expect("bind notify socket");
    // An unknown key makes the agent warn at start.
    let top = format!(
        "log:\n  type: json\n  static_fields: {{app: fullauto-e2e}}\n  dir: {}\n\
         unknown_setting: 1\n",
        logs.display()
    );
    let mut c = Cluster::new_with(
        1,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            top: top.clone(),
            ..Extra::default()
        },
    );
    // Patroni's usual spelling, through the environment.
    c.start_with_env(
        0,
        &[
            ("PATRONI_LOG_LEVEL", "WARNING"),
            ("NOTIFY_SOCKET", &format!("@{name}")),
        ],
    );
    expect_state(&sock, "READY=1", BOOT);
    // Bootstrapping and starting Postgres log at INFO: none of it may show.
    c.wait_primary(BOOT).expect("a primary");
    c.signal_agent(0, libc::SIGTERM);
    expect_state(&sock, "STOPPING=1", Duration::from_secs(30));
    assert!(c.wait_agent_exit(0, Duration::from_secs(60)));

    let text = read(&logs.join("patroni.log"));
    assert!(!text.contains('\x1b'), "ANSI escapes in {text}");
    let mut warned = false;
    for line in text.lines() {
        assert!(line.starts_with(r#"{"asctime": "#), "key order: {line}");
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let level = v["levelname"].as_str().expect("levelname");
        assert!(["WARNING", "ERROR"].contains(&level), "{line}");
        assert_eq!(v["app"], "fullauto-e2e", "{line}");
        assert!(
            v["asctime"].as_str().is_some_and(|t| t.len() == 23),
            "{line}"
        );
        let message = v["message"].as_str().expect("message");
        warned |= level == "WARNING" && message.contains("unknown_setting");
    }
    assert!(warned, "the config warning is logged: {text}");
}

/// A config the validator accepts, with `log` lines appended (no server is started).
fn config_with_log(dir: &Path, log: &str) -> std::path::PathBuf {
    let path = dir.join("patroni.yml");
    let text = format!(
        "scope: s\nname: n\nrestapi: {{listen: 127.0.0.1:18100, connect_address: 127.0.0.1:18100}}\n\
         etcd3: {{host: 127.0.0.1:12379}}\npostgresql:\n  listen: 127.0.0.1:15432\n  \
         connect_address: 127.0.0.1:15432\n  data_dir: {}/data\n  authentication:\n    \
         superuser: {{username: postgres}}\n    replication: {{username: postgres}}\n{log}",
        dir.display()
    );
    std::fs::write(&path, text).expect("config");
    path
}

fn fullauto(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fullauto"))
        .args(args)
        .envs(env.iter().copied())
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run fullauto");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn unknown_levels_are_refused_by_validation_and_at_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let validate = std::ffi::OsStr::new("--validate-config");
    let good = config_with_log(dir.path(), "log: {level: fatal, traceback_level: DEBUG}\n");
    let (code, out) = fullauto(&[validate, good.as_os_str()], &[]);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.starts_with(&format!("{}: the configuration is valid\n", good.display())),
        "{out}"
    );
    let (code, out) = fullauto(
        &[validate, good.as_os_str()],
        &[("PATRONI_LOG_LEVEL", "NOTICE")],
    );
    assert_eq!(code, 1);
    assert_eq!(
        out,
        "error: log.level: unknown level \"NOTICE\": use DEBUG, INFO, WARNING (or WARN), ERROR, \
         CRITICAL (or FATAL), TRACE (set by PATRONI_LOG_LEVEL)\n"
    );
    let bad = config_with_log(
        dir.path(),
        "log:\n  level: WARNING\n  format: '%(asctime)s %(funcname)s'\n",
    );
    let (code, out) = fullauto(&[bad.as_os_str()], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.starts_with("error: log.format: %(funcname)s is not an attribute fullauto fills"),
        "{out}"
    );
}
