//! Every bad input gives a typed error that says what to fix, and nothing of an
//! existing data directory is deleted.

use ha_core::{DataDirState, PgError, PgProcess, Postgres, StartRole, StopMode, Upstream};
use pg_driver::testing::{free_port, observe_settled, TestEnv};
use pg_driver::{DriverError, PgDriver};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

const T: Duration = Duration::from_secs(60);

fn is_root() -> bool {
    unsafe { libc::geteuid() == 0 }
}

#[tokio::test]
async fn missing_binaries_name_the_package() {
    let env = TestEnv::new();
    let mut cfg = env.config("nobin");
    cfg.bin_dir = Some(PathBuf::from("/nonexistent/postgresql/15/bin"));
    let err = PgDriver::new(cfg).unwrap_err();
    assert!(matches!(err, DriverError::BinaryMissing { .. }), "{err:?}");
    let pg: PgError = err.into();
    match pg {
        PgError::BinaryMissing(msg) => assert!(msg.contains("postgresql-15"), "{msg}"),
        other => panic!("{other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_owner_and_permissions_are_reported_not_fixed() {
    let env = TestEnv::new();
    let node = env.primary("own").await;
    let pg = &node.driver;
    pg.stop(StopMode::Fast, T).await.unwrap();
    let dir = pg.data_dir().to_path_buf();

    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = pg.start(&StartRole::Primary, T).await.unwrap_err();
    match &err {
        PgError::DataDir(m) => assert!(m.contains("chmod 0700"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        observe_settled(pg).await.data_dir,
        DataDirState::Invalid(_)
    ));
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();

    if is_root() {
        // Owned by root instead of the postgres user.
        std::os::unix::fs::chown(&dir, Some(0), Some(0)).unwrap();
        let err = pg.start(&StartRole::Primary, T).await.unwrap_err();
        match &err {
            PgError::DataDir(m) => assert!(m.contains("chown -R postgres"), "{m}"),
            other => panic!("{other:?}"),
        }
        let user = env.os_user();
        std::os::unix::fs::chown(&dir, Some(user.uid), Some(user.gid)).unwrap();
    }
    assert!(dir.join("PG_VERSION").exists(), "nothing deleted");
    pg.start(&StartRole::Primary, T).await.unwrap();
    assert_eq!(observe_settled(pg).await.process, PgProcess::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_clusters_data_dir_is_detected() {
    let env = TestEnv::new();
    let a = env.primary("sys-a").await;
    let b = env.primary("sys-b").await;
    let sysid_a = match observe_settled(&a.driver).await.data_dir {
        DataDirState::Initialized { system_identifier } => system_identifier,
        other => panic!("{other:?}"),
    };
    a.driver.check_system_identifier(&sysid_a).await.unwrap();
    let err = b
        .driver
        .check_system_identifier(&sysid_a)
        .await
        .unwrap_err();
    assert!(matches!(err, DriverError::SystemIdMismatch { .. }), "{err}");
    assert!(err.to_string().contains(&sysid_a));
    // A divergence check against a member of another cluster refuses too.
    b.driver.stop(StopMode::Fast, T).await.unwrap();
    match b.driver.needs_rewind(&a.upstream()).await {
        Err(PgError::DataDir(m)) => assert!(m.contains("system identifier"), "{m}"),
        other => panic!("{other:?}"),
    }
    // Cloning over an existing cluster is refused and leaves it alone.
    match Postgres::clone_from(&*b.driver, &a.upstream()).await {
        Err(PgError::DataDir(m)) => assert!(m.contains("never overwrites"), "{m}"),
        other => panic!("{other:?}"),
    }
    match b.driver.bootstrap().await {
        Err(PgError::DataDir(m)) => assert!(m.contains("never overwrites"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(b.driver.data_dir().join("PG_VERSION").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_garbage_and_foreign_pid_files() {
    let env = TestEnv::new();
    let node = env.primary("pid").await;
    let pg = &node.driver;
    pg.stop(StopMode::Fast, T).await.unwrap();
    let pidfile = pg.data_dir().join("postmaster.pid");
    let write_pid = |text: &str| {
        std::fs::write(&pidfile, text).unwrap();
        let u = env.os_user();
        if u.switch {
            std::os::unix::fs::chown(&pidfile, Some(u.uid), Some(u.gid)).unwrap();
        }
    };

    // Garbage: refused with advice, the file is left for the operator.
    write_pid("not a pid\n");
    assert_eq!(observe_settled(pg).await.process, PgProcess::Crashed);
    match pg.start(&StartRole::Primary, T).await {
        Err(PgError::DataDir(m)) => assert!(m.contains("remove postmaster.pid"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(pidfile.exists());

    // A live process that is not postgres (pid reuse): a leftover. Nothing works in
    // the data directory, so it is removed and the server starts.
    write_pid(&format!(
        "{}\n{}\n",
        std::process::id(),
        pg.data_dir().display()
    ));
    assert_eq!(observe_settled(pg).await.process, PgProcess::Crashed);
    pg.start(&StartRole::Primary, T).await.unwrap();
    assert_eq!(observe_settled(pg).await.process, PgProcess::Running);
    pg.stop(StopMode::Fast, T).await.unwrap();

    // Stale (the pid is gone): seen as crashed; postgres replaces it on start.
    write_pid(&format!("99999999\n{}\n", pg.data_dir().display()));
    assert_eq!(observe_settled(pg).await.process, PgProcess::Crashed);
    pg.start(&StartRole::Primary, T).await.unwrap();
    assert_eq!(observe_settled(pg).await.process, PgProcess::Running);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_clone_source() {
    let env = TestEnv::new();
    let pg = env.driver(env.config("orphan"));
    let nobody = Upstream::at("ghost", "127.0.0.1", free_port());
    match Postgres::clone_from(&*pg, &nobody).await {
        Err(PgError::Tool { message, .. }) => {
            assert!(message.contains("unreachable"), "{message}");
            assert!(message.contains("ghost"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(observe_settled(&pg).await.data_dir, DataDirState::Empty);
    // Starting with nothing there is an invalid request, not a crash.
    assert!(matches!(
        pg.start(&StartRole::Primary, T).await,
        Err(PgError::Invalid(_))
    ));
}

/// A small tmpfs, unmounted on drop.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(path).unwrap();
        let ok = std::process::Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(path)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then(|| SmallDisk(path.to_path_buf()))
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disk_full_during_basebackup() {
    assert!(
        is_root(),
        "this suite runs as root (CI does): mounting a small tmpfs needs it"
    );
    let env = TestEnv::new();
    let a = env.primary("big").await;
    // ~40 MB of base backup plus a 16 MB WAL segment cannot fit in 24 MB.
    a.sql(
        "CREATE TABLE filler AS SELECT g, repeat('x', 500) AS pad FROM generate_series(1, 40000) g",
    )
    .await
    .unwrap();
    let mount = env.path().join("small");
    let disk = SmallDisk::mount(&mount, "24m").expect("mount tmpfs");
    let mut cfg = env.config("full");
    cfg.data_dir = mount.join("data");
    let pg = env.driver(cfg);
    let err = Postgres::clone_from(&*pg, &a.upstream()).await.unwrap_err();
    match &err {
        PgError::Tool { tool, message } => {
            assert_eq!(tool, "pg_basebackup");
            assert!(message.contains("disk space"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // The directory was empty before the clone: its partial content is gone, the
    // directory stays.
    assert_eq!(observe_settled(&pg).await.data_dir, DataDirState::Empty);
    drop(disk);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_carries_the_server_log_tail() {
    let env = TestEnv::new();
    let node = env.primary("badparam").await;
    node.driver.stop(StopMode::Fast, T).await.unwrap();
    let mut cfg = (*node.driver.config()).clone();
    cfg.parameters
        .insert("shared_buffers".into(), serde_json::json!("plenty"));
    let pg = PgDriver::new(cfg).unwrap();
    // A setting postgres refuses: a misconfiguration naming it.
    match pg.start(&StartRole::Primary, T).await {
        Err(PgError::Misconfigured(m)) => {
            assert!(
                m.starts_with("postgres refused its configuration: invalid value for parameter \"shared_buffers\": \"plenty\""),
                "{m}"
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(pg.observe().await.process, PgProcess::Stopped);
    // Any other reason: the server log tail.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let mut cfg = (*node.driver.config()).clone();
    cfg.listen = taken.local_addr().unwrap().to_string();
    let pg = PgDriver::new(cfg).unwrap();
    match pg.start(&StartRole::Primary, T).await {
        Err(PgError::StartFailed(m)) => {
            assert!(m.contains("Address already in use"), "{m}");
            assert!(m.contains("log tail"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    drop(taken);
    assert_eq!(pg.observe().await.process, PgProcess::Stopped);
    // The good configuration starts it again.
    node.driver.start(&StartRole::Primary, T).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_refused_when_impossible_or_unsafe() {
    let env = TestEnv::new();
    let mut cfg = env.config("nock");
    cfg.initdb = serde_json::from_value(serde_json::json!(["no-data-checksums"])).unwrap();
    cfg.parameters
        .insert("wal_log_hints".into(), serde_json::json!("off"));
    let pg = env.driver(cfg);
    pg.bootstrap().await.unwrap();
    let node = pg_driver::testing::TestNode::new(pg.clone());
    assert_eq!(
        node.scalar("SHOW data_checksums").await.unwrap().as_deref(),
        Some("off")
    );
    let source = env.primary("src").await;
    // Never under a running server.
    match pg.rewind(&source.upstream()).await {
        Err(PgError::Invalid(m)) => assert!(m.contains("stop it"), "{m}"),
        other => panic!("{other:?}"),
    }
    pg.stop(StopMode::Fast, T).await.unwrap();
    // Neither checksums nor wal_log_hints: the caller must reclone.
    match pg.rewind(&source.upstream()).await {
        Err(PgError::Invalid(m)) => assert!(m.contains("reclone"), "{m}"),
        other => panic!("{other:?}"),
    }
    assert!(pg.data_dir().join("PG_VERSION").exists());
}

/// A parameter postgres refuses and an option initdb refuses fail the bootstrap as
/// misconfigured (the HA loop then gives up instead of retrying), naming the setting,
/// and leave the data directory empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_parameters_and_initdb_options_are_misconfigurations() {
    let env = TestEnv::new();
    let mut cfg = env.config("badparam");
    cfg.dynamic_parameters
        .insert("no_such_setting".into(), serde_json::json!(1));
    let pg = env.driver(cfg);
    match pg.bootstrap().await {
        Err(PgError::Misconfigured(m)) => assert!(
            m.starts_with(
                "postgres refused its configuration: unrecognized configuration parameter \"no_such_setting\""
            ),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(observe_settled(&pg).await.data_dir, DataDirState::Empty);

    let mut cfg = env.config("badinitdb");
    cfg.initdb = serde_json::from_value(serde_json::json!([{"encoding": "NO-SUCH"}])).unwrap();
    let pg = env.driver(cfg);
    let err = pg.bootstrap().await.unwrap_err();
    match &err {
        PgError::Misconfigured(m) => {
            assert!(m.starts_with("initdb refused its configuration: initdb: error: \"NO-SUCH\" is not a valid server encoding name. Fix bootstrap.initdb"), "{m}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(observe_settled(&pg).await.data_dir, DataDirState::Empty);
}
