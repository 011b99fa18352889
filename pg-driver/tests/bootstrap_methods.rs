//! Custom bootstrap methods, `post_bootstrap` and replica methods without a leader,
//! on real servers: what succeeds leaves a running cluster, what fails leaves an
//! empty data directory and no server.

use ha_core::{PgError, Postgres};
use pg_driver::config::BootstrapMethod;
use pg_driver::testing::{TestEnv, TestNode};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

fn script(env: &TestEnv, name: &str, body: &str) -> PathBuf {
    let path = env.dir("scripts").join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

fn method(command: &Path) -> BootstrapMethod {
    BootstrapMethod {
        name: "custom".into(),
        command: command.display().to_string(),
        ..BootstrapMethod::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_post_bootstrap_fails_the_bootstrap_and_cleans_up() {
    let env = TestEnv::new();
    let log = env.dir("scripts").join("post.args");
    let post = script(
        &env,
        "post.sh",
        &format!("echo \"$@\" >> {}\nexit 4\n", log.display()),
    );
    let mut cfg = env.config("post");
    cfg.post_bootstrap = Some(post.display().to_string());
    let port = cfg.local_host_port().unwrap().port;
    let pg = env.driver(cfg);
    let err = pg.bootstrap().await.unwrap_err();
    assert!(
        matches!(&err, PgError::Tool { tool, .. } if tool == "post_bootstrap"),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read_to_string(&log).unwrap().trim(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    assert!(is_empty(pg.data_dir()), "data dir not cleaned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn method_that_leaves_no_cluster_fails_and_the_junk_is_removed() {
    let env = TestEnv::new();
    let junk = script(
        &env,
        "junk.sh",
        // Like Patroni's scripts it finds no data directory and makes one.
        "for a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${a#--datadir=}\";; esac; done\nmkdir -p \"$d\"\necho x > \"$d/not-a-cluster\"\n",
    );
    let mut cfg = env.config("junk");
    cfg.bootstrap_method = Some(method(&junk));
    let pg = env.driver(cfg);
    let err = pg.bootstrap().await.unwrap_err();
    assert!(err.to_string().contains("left no cluster"), "{err}");
    assert!(is_empty(pg.data_dir()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_without_leader_uses_only_no_leader_methods() {
    let env = TestEnv::new();
    let primary = env.primary("src").await;
    primary
        .sql("CREATE TABLE r (x int); INSERT INTO r VALUES (1)")
        .await
        .unwrap();
    // The "backup store": a pg_basebackup taken while the primary still ran.
    let store = env.dir("store").join("backup");
    let src = primary.upstream();
    let take = script(
        &env,
        "take.sh",
        &format!(
            "PGPASSWORD={pw} exec pg_basebackup -h {h} -p {p} -U replicator -D {d} -X stream --no-sync\n",
            pw = pg_driver::testing::REPLICATION_PASSWORD,
            h = src.host,
            p = src.port,
            d = store.display()
        ),
    );
    run_as_postgres(&take);
    let args_log = env.dir("scripts").join("restore.args");
    let restore = script(
        &env,
        "restore.sh",
        &format!(
            // Copies the whole tree into place, as Patroni's harness does
            // (shutil.copytree): the data directory must not exist yet.
            "echo \"$@\" >> {log}\nfor a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\";; esac; done\n[ -e \"$d\" ] && {{ echo \"$d exists\" >&2; exit 1; }}\ncp -a {b} \"$d\"\n",
            log = args_log.display(),
            b = store.display()
        ),
    );
    let mut cfg = env.config("restored");
    cfg.create_replica_methods = vec!["leaderonly".into(), "restore".into(), "basebackup".into()];
    cfg.method_sections.insert(
        "leaderonly".into(),
        serde_json::json!({"command": "exit 1"}),
    );
    cfg.method_sections.insert(
        "restore".into(),
        serde_json::json!({"command": restore.display().to_string(), "no_leader": true}),
    );
    assert!(cfg.can_create_replica_without_leader());
    let pg = env.driver(cfg);
    pg.create_replica_without_leader().await.expect("restore");
    assert!(pg.data_dir().join("PG_VERSION").exists());
    let args = std::fs::read_to_string(&args_log).unwrap();
    assert!(
        args.trim_end().ends_with("--connstring="),
        "no leader, empty connstring: {args}"
    );

    // Without a no_leader method nothing is tried.
    let mut cfg = env.config("none");
    cfg.create_replica_methods = vec!["basebackup".into()];
    let pg = env.driver(cfg);
    let err = pg.create_replica_without_leader().await.unwrap_err();
    assert!(err.to_string().contains("no_leader"), "{err}");
    assert!(is_empty(pg.data_dir()));
}

/// A primary that archives its WAL, a backup of it with 10 rows, and 5 more rows
/// that only the archive holds. Returns (backup dir, archive dir).
async fn backup_with_archive(env: &TestEnv) -> (PathBuf, PathBuf) {
    let archive = env.dir("archive");
    let mut cfg = env.config("arch");
    cfg.parameters.insert("archive_mode".into(), "on".into());
    cfg.parameters.insert(
        "archive_command".into(),
        format!("cp %p {}/%f", archive.display()).into(),
    );
    let src = TestNode::new(env.driver(cfg));
    src.driver.bootstrap().await.expect("bootstrap source");
    src.sql("CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 10)")
        .await
        .unwrap();
    let backup = env.dir("store").join("backup");
    let up = src.upstream();
    let take = script(
        env,
        "take.sh",
        &format!(
            "PGPASSWORD={pw} exec pg_basebackup -h {h} -p {p} -U replicator -D {d} -X stream --no-sync\n",
            pw = pg_driver::testing::REPLICATION_PASSWORD,
            h = up.host,
            p = up.port,
            d = backup.display()
        ),
    );
    run_as_postgres(&take);
    src.sql("INSERT INTO t SELECT generate_series(11, 15)")
        .await
        .unwrap();
    let seg = src
        .scalar("SELECT pg_walfile_name(pg_switch_wal())")
        .await
        .unwrap()
        .unwrap();
    let archived = pg_driver::testing::wait_for(std::time::Duration::from_secs(30), || async {
        let last = src
            .scalar("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        (last >= seg).then_some(())
    })
    .await;
    assert!(archived.is_some(), "{seg} not archived");
    (backup, archive)
}

fn run_as_postgres(script: &Path) {
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", &script.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_existing_recovery_conf_keeps_the_methods_recovery_setup() {
    let env = TestEnv::new();
    let (backup, archive) = backup_with_archive(&env).await;
    // The method sets up archive recovery itself, as backup tools do.
    let restore = script(
        &env,
        "restore.sh",
        &format!(
            "for a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\";; esac; done\n\
             cp -a {b}/. \"$d\"/\n\
             touch \"$d/recovery.signal\"\n\
             echo \"restore_command = 'cp {a}/%f %p'\" >> \"$d/postgresql.auto.conf\"\n",
            b = backup.display(),
            a = archive.display()
        ),
    );
    let restored = |name: &str, keep: bool| {
        let mut cfg = env.config(name);
        cfg.bootstrap_method = Some(BootstrapMethod {
            keep_existing_recovery_conf: keep,
            ..method(&restore)
        });
        TestNode::new(env.driver(cfg))
    };
    let timeline = "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)";

    // Kept: the archive is replayed, recovery ends on a new timeline.
    let kept = restored("kept", true);
    kept.driver.bootstrap().await.expect("bootstrap kept");
    assert_eq!(
        kept.scalar("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("15")
    );
    assert_eq!(
        kept.scalar(timeline).await.unwrap().as_deref(),
        Some("00000002")
    );

    // Not kept (the default): the backup alone, the method's recovery settings gone.
    let plain = restored("plain", false);
    plain.driver.bootstrap().await.expect("bootstrap plain");
    assert_eq!(
        plain
            .scalar("SELECT count(*) FROM t")
            .await
            .unwrap()
            .as_deref(),
        Some("10")
    );
    assert_eq!(
        plain.scalar(timeline).await.unwrap().as_deref(),
        Some("00000001")
    );
    let auto =
        std::fs::read_to_string(plain.driver.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("restore_command"), "{auto}");
}
