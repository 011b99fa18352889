//! A harness for tests against real servers: a temp base directory owned by the
//! server's OS user, free loopback ports, ready-made configurations, and a Drop
//! guard that stops every server it started (`pg_ctl stop -m immediate`, then
//! SIGKILL by pid), even when the test fails.
//!
//! The harness installs nothing: when the binaries are missing it panics with a
//! message naming the Debian package.

use crate::binaries::Binaries;
use crate::config::{Credentials, PgConfig};
use crate::driver::PgDriver;
use crate::error::DriverError;
use crate::pidfile::{self, PidFileState};
use crate::runner::OsUser;
use ha_core::{Postgres, StartRole, Upstream};
use std::collections::HashSet;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Superuser password of test servers.
pub const SUPERUSER_PASSWORD: &str = "su-secret";
/// Replication password of test servers.
pub const REPLICATION_PASSWORD: &str = "repl-secret";
/// Rewind password of test servers.
pub const REWIND_PASSWORD: &str = "rewind-secret";

fn used_ports() -> &'static Mutex<HashSet<u16>> {
    static PORTS: OnceLock<Mutex<HashSet<u16>>> = OnceLock::new();
    PORTS.get_or_init(|| Mutex::new(HashSet::new()))
}

/// A loopback port nobody listens on (and this process has not handed out).
pub fn free_port() -> u16 {
    loop {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let port = l.local_addr().expect("local addr").port();
        drop(l);
        let mut used = used_ports().lock().unwrap_or_else(|p| p.into_inner());
        if used.insert(port) {
            return port;
        }
    }
}

/// Panics with an actionable message when the PostgreSQL binaries are missing.
pub fn require_binaries() -> Binaries {
    match Binaries::discover(None) {
        Ok(b) => b,
        Err(e) => panic!("PostgreSQL server binaries are needed for these tests: {e}. Run scripts/setup (it installs postgresql-15)."),
    }
}

/// A directory of test servers; everything in it is stopped and removed on drop.
pub struct TestEnv {
    durable: bool,
    base: tempfile::TempDir,
    user: OsUser,
    bins: Binaries,
    data_dirs: Mutex<Vec<PathBuf>>,
}

impl Default for TestEnv {
    fn default() -> Self {
        Self::new()
    }
}

impl TestEnv {
    /// A new empty environment under the system temp dir; its servers run with
    /// `fsync=off` (fast, not crash-safe against power loss).
    pub fn new() -> Self {
        Self::with_durability(false)
    }

    /// Like `new`, but servers and tools sync to disk as in production (for timings).
    pub fn durable() -> Self {
        Self::with_durability(true)
    }

    fn with_durability(durable: bool) -> Self {
        let bins = require_binaries();
        let user = OsUser::resolve(None).expect("resolve the postgres OS user");
        let base = tempfile::Builder::new()
            .prefix("fa-pg-")
            .tempdir()
            .expect("create temp dir");
        give_to(base.path(), &user, 0o755);
        TestEnv {
            durable,
            base,
            user,
            bins,
            data_dirs: Mutex::new(Vec::new()),
        }
    }

    /// The base directory.
    pub fn path(&self) -> &Path {
        self.base.path()
    }

    /// The OS user servers run as.
    pub fn os_user(&self) -> &OsUser {
        &self.user
    }

    /// Creates `<base>/<name>` owned by the server user, for data dirs and logs.
    pub fn dir(&self, name: &str) -> PathBuf {
        let p = self.base.path().join(name);
        std::fs::create_dir_all(&p).expect("create dir");
        give_to(&p, &self.user, 0o755);
        p
    }

    /// A configuration for member `name` on a free port, data dir
    /// `<base>/<name>/data`, password auth over loopback, rewind enabled.
    pub fn config(&self, name: &str) -> PgConfig {
        let port = free_port();
        let data_dir = self.dir(name).join("data");
        let mut cfg = PgConfig::new(name, &format!("127.0.0.1:{port}"), &data_dir);
        cfg.scope = Some("fullauto-test".into());
        cfg.bin_dir = Some(self.bins.dir().to_path_buf());
        // One password file per member: several share this host and HOME.
        cfg.pgpass = Some(self.dir(name).join("pgpass"));
        cfg.authentication.superuser = Credentials {
            password: Some(SUPERUSER_PASSWORD.into()),
            ..Credentials::user("postgres")
        };
        cfg.authentication.replication = Credentials {
            password: Some(REPLICATION_PASSWORD.into()),
            ..Credentials::user("replicator")
        };
        cfg.authentication.rewind = Some(Credentials {
            password: Some(REWIND_PASSWORD.into()),
            ..Credentials::user("rewinder")
        });
        cfg.pg_hba = vec![
            "local all all trust".into(),
            "host all all 127.0.0.1/32 scram-sha-256".into(),
            "host replication all 127.0.0.1/32 scram-sha-256".into(),
        ];
        cfg.use_pg_rewind = true;
        cfg.log_file = Some(self.base.path().join(name).join("postmaster.log"));
        if !self.durable {
            cfg.parameters
                .insert("fsync".into(), serde_json::Value::String("off".into()));
        }
        for (k, v) in [
            ("shared_buffers", "16MB"),
            ("max_connections", "30"),
            ("wal_keep_size", "64MB"),
            ("checkpoint_timeout", "30min"),
            // Replicas retry a failed or re-pointed stream after 1 s, not 5 s.
            ("wal_retrieve_retry_interval", "1s"),
        ] {
            cfg.parameters
                .insert(k.into(), serde_json::Value::String(v.into()));
        }
        cfg
    }

    /// A driver for `cfg`, registered for cleanup.
    pub fn driver(&self, cfg: PgConfig) -> Arc<PgDriver> {
        self.track(&cfg.data_dir);
        Arc::new(PgDriver::new(cfg).expect("create driver"))
    }

    /// Registers a data directory whose server must be stopped on drop.
    pub fn track(&self, data_dir: &Path) {
        self.data_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(data_dir.to_path_buf());
    }

    /// A bootstrapped, running primary named `name`.
    pub async fn primary(&self, name: &str) -> TestNode {
        let driver = self.driver(self.config(name));
        driver.bootstrap().await.expect("bootstrap primary");
        TestNode::new(driver)
    }

    /// A replica of `upstream`, cloned with pg_basebackup and started; its slot is
    /// created on the upstream first.
    pub async fn replica(&self, name: &str, upstream: &TestNode) -> TestNode {
        self.replica_with(self.config(name), upstream).await
    }

    /// A replica of `upstream` with the configuration `cfg` (see [`TestEnv::replica`]).
    pub async fn replica_with(&self, cfg: PgConfig, upstream: &TestNode) -> TestNode {
        let slot = crate::slots::slot_name_for_member(&cfg.name);
        let driver = self.driver(cfg);
        upstream
            .sql(&format!(
                "SELECT pg_create_physical_replication_slot('{slot}', true) \
                 WHERE NOT EXISTS (SELECT 1 FROM pg_replication_slots WHERE slot_name = '{slot}')"
            ))
            .await
            .expect("create the replica's slot on its upstream");
        Postgres::clone_from(&*driver, &upstream.upstream())
            .await
            .expect("clone replica");
        driver
            .start(
                &StartRole::Replica {
                    upstream: Some(upstream.upstream()),
                },
                Duration::from_secs(60),
            )
            .await
            .expect("start replica");
        TestNode::new(driver)
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        let dirs = self
            .data_dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        for dir in dirs {
            stop_leftover(&self.bins, &self.user, &dir);
        }
    }
}

fn give_to(path: &Path, user: &OsUser, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    if user.switch {
        std::os::unix::fs::chown(path, Some(user.uid), Some(user.gid)).expect("chown test dir");
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod test dir");
}

/// Stops whatever postmaster runs on `dir`: resume it if stopped, immediate stop,
/// then SIGKILL by pid.
fn stop_leftover(bins: &Binaries, user: &OsUser, dir: &Path) {
    let pid = match pidfile::read(dir) {
        PidFileState::Alive { pid, .. } => pid,
        _ => return,
    };
    pidfile::signal(pid, libc::SIGCONT);
    if let Ok(pg_ctl) = bins.tool("pg_ctl") {
        let mut cmd = std::process::Command::new(pg_ctl);
        cmd.args(["stop", "-m", "immediate", "-w", "-t", "5", "-D"])
            .arg(dir)
            .current_dir("/")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        if user.switch {
            cmd.uid(user.uid).gid(user.gid);
        }
        let _ = cmd.status();
    }
    if pidfile::process_exists(pid) {
        pidfile::signal(pid, libc::SIGKILL);
    }
}

/// One test server and helpers to query it.
#[derive(Clone)]
pub struct TestNode {
    /// The driver.
    pub driver: Arc<PgDriver>,
}

impl TestNode {
    /// Wraps a driver.
    pub fn new(driver: Arc<PgDriver>) -> Self {
        TestNode { driver }
    }

    /// Member name.
    pub fn name(&self) -> String {
        self.driver.config().name.clone()
    }

    /// This server as an upstream for others.
    pub fn upstream(&self) -> Upstream {
        let hp = self
            .driver
            .config()
            .local_host_port()
            .expect("valid listen address");
        Upstream::at(self.name(), hp.host, hp.port)
    }

    /// Runs SQL (simple protocol) as superuser; rows as text.
    pub async fn sql(&self, q: &str) -> Result<Vec<Vec<Option<String>>>, DriverError> {
        let client = self.driver.connect_local(Duration::from_secs(5)).await?;
        let msgs = client
            .simple_query(q)
            .await
            .map_err(|e| DriverError::Query(e.to_string()))?;
        Ok(msgs
            .iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => {
                    Some((0..r.len()).map(|i| r.get(i).map(str::to_string)).collect())
                }
                _ => None,
            })
            .collect())
    }

    /// The first column of the first row.
    pub async fn scalar(&self, q: &str) -> Result<Option<String>, DriverError> {
        Ok(self
            .sql(q)
            .await?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next().flatten()))
    }

    /// The postmaster's pid, if one runs.
    pub fn postmaster_pid(&self) -> Option<i32> {
        match pidfile::read(self.driver.data_dir()) {
            PidFileState::Alive { pid, .. } => Some(pid),
            _ => None,
        }
    }
}

/// Observes `pg`, retrying for up to 15 s while it looks hung or starting: on a
/// loaded machine a healthy server can miss the 1 s health budget once.
pub async fn observe_settled(pg: &PgDriver) -> ha_core::PgObservation {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let obs = pg.observe().await;
        let unsettled = matches!(
            obs.process,
            ha_core::PgProcess::Hung | ha_core::PgProcess::Starting
        );
        if !unsettled || Instant::now() >= deadline {
            return obs;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls `check` every 100 ms until it returns `Some` or `timeout` passes.
pub async fn wait_for<T, F, Fut>(timeout: Duration, mut check: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Slot changes that create the physical slots `names`.
pub fn create_physical(names: &[String]) -> ha_core::SlotChanges {
    ha_core::SlotChanges {
        create: names
            .iter()
            .map(|n| ha_core::NewSlot {
                name: n.clone(),
                kind: ha_core::SlotKind::Physical,
            })
            .collect(),
        ..Default::default()
    }
}
