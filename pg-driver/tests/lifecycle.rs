//! initdb, start and stop in every mode, configuration reloads, and crash / hang
//! detection on a real server.

use ha_core::{DataDirState, PgProcess, Postgres, StartRole, StopMode};
use pg_driver::testing::{observe_settled, wait_for, TestEnv};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_start_stop_in_every_mode() {
    let env = TestEnv::new();
    let node = env.primary("p1").await;
    let pg = &node.driver;

    let obs = observe_settled(pg).await;
    assert_eq!(obs.process, PgProcess::Running);
    assert_eq!(obs.in_recovery, Some(false));
    assert_eq!(obs.timeline, Some(1));
    assert!(obs.wal_lsn.unwrap_or(0) > 0);
    assert!(obs.server_version.unwrap_or(0) >= 150000);
    assert_eq!(obs.cluster_state.as_deref(), Some("in production"));
    let sysid = match &obs.data_dir {
        DataDirState::Initialized { system_identifier } => system_identifier.clone(),
        other => panic!("data dir {other:?}"),
    };
    pg.check_system_identifier(&sysid).await.unwrap();
    assert!(obs.following.is_none());

    // Server runs as the postgres OS user, with checksums (needed for pg_rewind).
    let pid = node.postmaster_pid().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(
        uid_line.contains(&env.os_user().uid.to_string()),
        "{uid_line}"
    );
    assert_eq!(
        node.scalar("SHOW data_checksums").await.unwrap().as_deref(),
        Some("on")
    );
    assert_eq!(
        node.scalar("SHOW wal_log_hints").await.unwrap().as_deref(),
        Some("on")
    );
    assert_eq!(
        node.scalar("SHOW cluster_name").await.unwrap().as_deref(),
        Some("fullauto-test")
    );
    // Roles for replication and pg_rewind were created.
    assert_eq!(
        node.scalar("SELECT count(*) FROM pg_roles WHERE rolname IN ('replicator','rewinder') AND rolcanlogin")
            .await
            .unwrap()
            .as_deref(),
        Some("2")
    );

    // The switchover's drain before its fast stop: an open transaction counts until
    // it ends; idle sessions (this one after COMMIT) do not.
    assert_eq!(pg.clients_in_transaction().await.unwrap(), 0);
    let client = pg.connect_local(T).await.unwrap();
    client.batch_execute("BEGIN; SELECT 1").await.unwrap();
    assert_eq!(pg.clients_in_transaction().await.unwrap(), 1);
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(pg.clients_in_transaction().await.unwrap(), 0);
    drop(client);

    for mode in [StopMode::Smart, StopMode::Fast, StopMode::Immediate] {
        let out = pg.stop(mode, T).await.unwrap();
        let obs = observe_settled(pg).await;
        assert_eq!(obs.process, PgProcess::Stopped, "after {mode:?} stop");
        assert!(node.postmaster_pid().is_none());
        if mode == StopMode::Immediate {
            assert_eq!(obs.cluster_state.as_deref(), Some("in production"));
            assert_eq!(out.checkpoint_lsn, None);
        } else {
            assert_eq!(obs.cluster_state.as_deref(), Some("shut down"));
            assert!(out.checkpoint_lsn.unwrap() > 0);
        }
        // Stopping a stopped server is fine.
        pg.stop(mode, T).await.unwrap();
        pg.start(&StartRole::Primary, T).await.unwrap();
        assert_eq!(
            observe_settled(pg).await.process,
            PgProcess::Running,
            "restart after {mode:?}"
        );
    }

    // restart keeps the role and changes the postmaster.
    let before = node.postmaster_pid().unwrap();
    pg.restart(T).await.unwrap();
    let after = node.postmaster_pid().unwrap();
    assert_ne!(before, after);
    assert_eq!(observe_settled(pg).await.in_recovery, Some(false));

    // The data directory is removed only on request, never under a running server.
    assert!(matches!(
        pg.remove_data_directory().await,
        Err(ha_core::PgError::Invalid(_))
    ));
    pg.stop(StopMode::Fast, T).await.unwrap();
    pg.remove_data_directory().await.unwrap();
    assert_eq!(pg.observe().await.data_dir, DataDirState::Empty);
    assert!(pg.data_dir().is_dir(), "the directory itself stays");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_changes_reload_or_report_pending_restart() {
    let env = TestEnv::new();
    let node = env.primary("p2").await;
    // New parameters arrive (e.g. from the DCS): the same driver takes them.
    let mut cfg = (*node.driver.config()).clone();
    cfg.parameters
        .insert("work_mem".into(), serde_json::json!("7MB"));
    cfg.parameters
        .insert("max_connections".into(), serde_json::json!(31));
    let mut moved = cfg.clone();
    moved.data_dir = env.path().join("elsewhere");
    assert!(
        node.driver.update_config(moved).is_err(),
        "data_dir is fixed"
    );
    node.driver.update_config(cfg).unwrap();
    let changed = &node.driver;
    changed.reload().await.unwrap();
    let reloaded = wait_for(Duration::from_secs(10), || async {
        (node.scalar("SHOW work_mem").await.ok()?.as_deref() == Some("7MB")).then_some(())
    })
    .await;
    assert!(reloaded.is_some(), "work_mem reloaded");
    let pending = wait_for(Duration::from_secs(10), || async {
        observe_settled(changed).await.pending_restart.then_some(())
    })
    .await;
    assert!(
        pending.is_some(),
        "max_connections change reported as pending restart"
    );
    changed.restart(T).await.unwrap();
    assert!(!observe_settled(changed).await.pending_restart);
    assert_eq!(
        node.scalar("SHOW max_connections")
            .await
            .unwrap()
            .as_deref(),
        Some("31")
    );

    // synchronous_standby_names goes through the managed file and a reload.
    changed
        .set_synchronous_standby_names(Some("\"r1\""))
        .await
        .unwrap();
    let sync = wait_for(Duration::from_secs(10), || async {
        let v = observe_settled(changed).await.synchronous_standby_names?;
        (v == "\"r1\"").then_some(v)
    })
    .await;
    assert!(sync.is_some());
    // Quorum commit (synchronous_mode: quorum) uses the ANY form.
    let quorum = r#"ANY 2 ("r1","r2","r3")"#;
    changed
        .set_synchronous_standby_names(Some(quorum))
        .await
        .unwrap();
    let any = wait_for(Duration::from_secs(10), || async {
        let v = observe_settled(changed).await.synchronous_standby_names?;
        (v == quorum).then_some(v)
    })
    .await;
    assert!(any.is_some(), "ANY form accepted by postgres");
    changed.set_synchronous_standby_names(None).await.unwrap();
    let cleared = wait_for(Duration::from_secs(10), || async {
        (observe_settled(changed)
            .await
            .synchronous_standby_names
            .as_deref()
            == Some(""))
        .then_some(())
    })
    .await;
    assert!(cleared.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_is_crashed_and_sigstop_is_hung() {
    let env = TestEnv::new();
    let node = env.primary("p3").await;
    let pg = &node.driver;

    // SIGSTOP: the health query cannot finish; Hung within a bound.
    let pid = node.postmaster_pid().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let t0 = Instant::now();
    let obs = pg.observe().await;
    let took = t0.elapsed();
    assert_eq!(obs.process, PgProcess::Hung);
    assert!(obs.is_alive() && obs.may_accept_writes());
    assert!(took < Duration::from_secs(5), "observe took {took:?}");
    println!("hung detected in {took:?}");
    // The health query itself (not only the process state) gives up within its budget.
    let t0 = Instant::now();
    let probe = pg.probe().await;
    let took = t0.elapsed();
    assert!(
        matches!(probe, Err(pg_driver::DriverError::Timeout(_))),
        "{probe:?}"
    );
    assert!(took < Duration::from_secs(3), "probe took {took:?}");
    println!("health query gave up after {took:?}");
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let back = wait_for(Duration::from_secs(10), || async {
        (observe_settled(pg).await.process == PgProcess::Running).then_some(())
    })
    .await;
    assert!(back.is_some(), "running again after SIGCONT");

    // kill -9: postmaster.pid stays, the process is gone.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let crashed = wait_for(Duration::from_secs(10), || async {
        (observe_settled(pg).await.process == PgProcess::Crashed).then_some(())
    })
    .await;
    assert!(crashed.is_some(), "kill -9 detected as crashed");
    // Orphaned backends exit on their own; then the server starts again (crash
    // recovery) with the stale pid file.
    let started = wait_for(Duration::from_secs(20), || async {
        pg.start(&StartRole::Primary, T).await.ok()
    })
    .await;
    assert!(started.is_some(), "restart after crash");
    assert_eq!(observe_settled(pg).await.process, PgProcess::Running);

    // A frozen postmaster cannot honour a stop; an immediate stop still ends it.
    let pid = node.postmaster_pid().unwrap();
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let fast = pg.stop(StopMode::Fast, Duration::from_secs(2)).await;
    assert!(
        matches!(fast, Err(ha_core::PgError::StopFailed(_))),
        "{fast:?}"
    );
    pg.stop(StopMode::Immediate, Duration::from_secs(2))
        .await
        .unwrap();
    assert!(!pg_driver::pidfile::process_exists(pid));
    let started = wait_for(Duration::from_secs(20), || async {
        pg.start(&StartRole::Primary, T).await.ok()
    })
    .await;
    assert!(started.is_some(), "start after killing a frozen postmaster");
}

/// The agent may run as the postgres user itself: the same lifecycle, without
/// switching users, by re-running this test binary as that user.
#[test]
fn lifecycle_also_runs_as_the_postgres_user() {
    if unsafe { libc::geteuid() } != 0 {
        // Already unprivileged: the other tests of this binary are that run.
        return;
    }
    // The build directory may not be reachable for postgres (e.g. under /root): run a
    // copy from a world-readable temp dir.
    let dir = tempfile::Builder::new()
        .prefix("fa-pg-exe-")
        .tempdir()
        .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("lifecycle");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(&exe)
        .args([
            "--exact",
            "bootstrap_start_stop_in_every_mode",
            "--test-threads=1",
        ])
        .current_dir("/")
        .env("TMPDIR", "/tmp")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "as postgres: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Patroni's sample configuration keeps `wal_keep_segments: 100` in the dynamic
/// parameters; PostgreSQL 13+ only knows `wal_keep_size` and refuses to start on the
/// old name, so the driver renders 100 segments × 16MB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wal_keep_segments_starts_postgres_15_with_wal_keep_size() {
    let env = TestEnv::new();
    let mut cfg = env.config("keep");
    cfg.parameters.remove("wal_keep_size");
    cfg.dynamic_parameters
        .insert("wal_keep_segments".into(), serde_json::json!(100));
    let driver = env.driver(cfg);
    driver
        .bootstrap()
        .await
        .expect("bootstrap with wal_keep_segments");
    let node = pg_driver::testing::TestNode::new(driver);
    assert_eq!(
        node.scalar("SHOW wal_keep_size").await.unwrap().as_deref(),
        Some("1600MB")
    );
}
