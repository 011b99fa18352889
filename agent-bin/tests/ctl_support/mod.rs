//! Shared by the fullautoctl tests: a real etcd, a cluster seeded through the Dcs
//! trait (one backend connection per member name, as agents would write), and a
//! runner for the real `fullautoctl` binary.
#![allow(dead_code)]

use dcs_etcd::testing::EtcdCluster;
use dcs_etcd::EtcdDcs;
use ha_core::{Dcs, DcsTiming, DynamicConfig, History, MemberData, Status};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// Timing of the seeding connections: a long ttl so member keys outlive the test.
pub fn timing() -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(600),
        retry_timeout: Duration::from_secs(5),
        loop_wait: Duration::from_secs(10),
    }
}

/// A started etcd plus what the ctl needs to reach it.
pub struct Env {
    pub etcd: EtcdCluster,
    /// `etcd3://127.0.0.1:port`
    pub dcs_url: String,
    /// `127.0.0.1:port`
    pub host: String,
    /// An empty HOME, so no default patronictl.yaml is picked up.
    pub home: tempfile::TempDir,
}

impl Env {
    pub fn start() -> Env {
        let etcd = EtcdCluster::start_single().expect("etcd starts");
        let host = etcd.hosts()[0].clone();
        Env {
            dcs_url: format!("etcd3://{host}"),
            host,
            etcd,
            home: tempfile::tempdir().unwrap(),
        }
    }

    /// A Dcs connection acting as member `name` of `scope`.
    pub async fn member(&self, scope: &str, name: &str) -> EtcdDcs {
        EtcdDcs::connect(&self.etcd.config(), "/service", scope, name, timing())
            .await
            .expect("etcd connects")
    }

    /// Writes a file in the temp HOME and returns its path.
    pub fn file(&self, name: &str, text: &str) -> String {
        let p = self.home.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.to_string_lossy().into_owned()
    }

    /// Runs fullautoctl with `-d <this etcd>` prepended.
    pub async fn ctl(&self, args: &[&str], stdin: &str) -> Out {
        let mut all = vec!["-d", self.dcs_url.as_str()];
        all.extend_from_slice(args);
        run_ctl(&all, stdin, self.home.path(), &[]).await
    }
}

/// What one run printed.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "fullautoctl failed:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts exit code 1 with one `Error: …` line containing `needle` on stderr.
    pub fn fails_with(&self, needle: &str) -> &Self {
        assert_eq!(
            self.code, 1,
            "expected failure:\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        let errors: Vec<&str> = self
            .stderr
            .lines()
            .filter(|l| l.starts_with("Error: "))
            .collect();
        assert_eq!(errors.len(), 1, "one error line expected:\n{}", self.stderr);
        assert!(
            errors[0].contains(needle),
            "{needle:?} not in {:?}",
            errors[0]
        );
        assert!(!self.stderr.contains("panicked"), "{}", self.stderr);
        self
    }
}

/// Runs the real binary with `args`, feeding `stdin` and closing it, with HOME set to
/// `home` and the ctl's environment variables cleared.
pub async fn run_ctl(
    args: &[&str],
    stdin: &str,
    home: &std::path::Path,
    env: &[(&str, &str)],
) -> Out {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_fullautoctl"));
    cmd.args(args)
        .env("HOME", home)
        .env_remove("PATRONICTL_CONFIG_FILE")
        .env_remove("DCS_URL")
        .env_remove("EDITOR")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, _) in std::env::vars() {
        if k.starts_with("PATRONI_") {
            cmd.env_remove(k);
        }
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("fullautoctl runs");
    let mut input = child.stdin.take().unwrap();
    let _ = input.write_all(stdin.as_bytes()).await;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("fullautoctl finishes within 90 s")
        .unwrap();
    Out {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A member record.
pub fn member_data(json: &str) -> MemberData {
    MemberData::parse(json).unwrap()
}

/// The system identifier the seeded clusters carry.
pub const SYSID: &str = "7311111111111111111";

/// Seeds a three-member cluster: pg0 leader (127.0.0.1:5432), pg1 streaming replica
/// 3 MiB behind (5433), pg2 replica cascading from pg1 with nofailover (5434);
/// `api` gives each member's api_url. Returns the members' connections (keep them:
/// dropping ends nothing, but they own the leases).
pub async fn seed(env: &Env, scope: &str, api: [&str; 3], config: &str) -> Vec<EtcdDcs> {
    let pg0 = env.member(scope, "pg0").await;
    let pg1 = env.member(scope, "pg1").await;
    let pg2 = env.member(scope, "pg2").await;
    assert!(pg0.initialize(SYSID).await.unwrap());
    let cfg = DynamicConfig::parse(config).unwrap();
    assert!(pg0.set_config(&cfg, None).await.unwrap());
    let top = 50_331_648u64;
    pg0.touch_member(&member_data(&format!(
        r#"{{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"{}","state":"running","role":"primary","version":"0.1.0","xlog_location":{top},"timeline":2}}"#,
        api[0]
    )))
    .await
    .unwrap();
    pg1.touch_member(&member_data(&format!(
        r#"{{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"{}","state":"running","role":"replica","replication_state":"streaming","xlog_location":{},"timeline":2}}"#,
        api[1],
        top - 3 * 1024 * 1024
    )))
    .await
    .unwrap();
    pg2.touch_member(&member_data(&format!(
        r#"{{"conn_url":"postgres://127.0.0.1:5434/postgres","api_url":"{}","state":"running","role":"replica","xlog_location":{top},"timeline":2,"tags":{{"nofailover":true,"replicatefrom":"pg1"}}}}"#,
        api[2]
    )))
    .await
    .unwrap();
    assert!(pg0.acquire_leader().await.unwrap());
    pg0.set_status(&Status::parse(&format!(r#"{{"optime":{top}}}"#)).unwrap())
        .await
        .unwrap();
    pg0.set_history(
        &History::parse(
            r#"[[1,25165984,"no recovery target specified","2026-11-25T10:00:00+00:00","pg0"]]"#,
        )
        .unwrap(),
    )
    .await
    .unwrap();
    vec![pg0, pg1, pg2]
}

/// An address nothing listens on (a port that was free a moment ago).
pub fn dead_api_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}/patroni")
}
