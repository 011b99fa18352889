//! Custom bootstrap methods, `post_bootstrap` and replica methods without a leader,
//! on real servers: what succeeds leaves a running cluster, what fails leaves an
//! empty data directory and no server.

use ha_core::{PgError, Postgres};
use pg_driver::config::BootstrapMethod;
use pg_driver::testing::TestEnv;
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
        "for a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${a#--datadir=}\";; esac; done\necho x > \"$d/not-a-cluster\"\n",
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
    let out = std::process::Command::new("runuser")
        .args(["-u", "postgres", "--", &take.display().to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let args_log = env.dir("scripts").join("restore.args");
    let restore = script(
        &env,
        "restore.sh",
        &format!(
            "echo \"$@\" >> {log}\nfor a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\";; esac; done\ncp -a {b}/. \"$d\"/\n",
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
