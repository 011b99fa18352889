//! Replication on real servers: clone, streaming, promote, remaster without reclone,
//! rewind of a diverged former primary, slots and custom replica-creation methods.

use ha_core::{PgProcess, Postgres, StartRole, StopMode};
use pg_driver::testing::{observe_settled, wait_for, TestEnv, TestNode};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

async fn wait_row(node: &TestNode, query: &str, want: &str) {
    let got = wait_for(Duration::from_secs(30), || async {
        let v = node.scalar(query).await.ok()??;
        (v == want).then_some(v)
    })
    .await;
    if got.is_none() {
        let log = std::fs::read_to_string(node.driver.config().log_file()).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(30).collect();
        panic!(
            "{}: `{query}` never returned {want} (last: {:?}); log:\n{}",
            node.name(),
            node.scalar(query).await,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clone_stream_promote_remaster_and_rewind() {
    let env = TestEnv::new();
    let a = env.primary("a").await;
    a.driver
        .sync_replication_slots(&["b".into(), "c".into()])
        .await
        .unwrap();
    let b = env.replica("b", &a).await;
    let c = env.replica("c", &a).await;

    // A row written on the primary appears on both replicas.
    a.sql("CREATE TABLE t(v text); INSERT INTO t VALUES ('one')")
        .await
        .unwrap();
    for r in [&b, &c] {
        wait_row(r, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "one").await;
    }
    let obs_b = observe_settled(&b.driver).await;
    assert_eq!(obs_b.process, PgProcess::Running);
    assert_eq!(obs_b.in_recovery, Some(true));
    assert_eq!(obs_b.following.as_deref(), Some("a"));
    assert_eq!(obs_b.timeline, Some(1));
    assert!(obs_b.replay_lsn.unwrap_or(0) > 0);
    let streaming = wait_for(Duration::from_secs(10), || async {
        let o = observe_settled(&b.driver).await;
        (o.replication_state.as_deref() == Some("streaming")).then_some(())
    })
    .await;
    assert!(streaming.is_some(), "b reports streaming");
    let senders = wait_for(Duration::from_secs(10), || async {
        let o = observe_settled(&a.driver).await;
        let names: Vec<_> = o
            .replication
            .iter()
            .filter(|r| r.state == "streaming")
            .map(|r| r.application_name.clone())
            .collect();
        (names == ["b", "c"]).then_some(o)
    })
    .await;
    let senders = senders.expect("a lists b and c in pg_stat_replication");
    assert!(senders.replication.iter().all(|r| r.flush_lsn.is_some()));
    // Quorum commit: both listed standbys report `quorum` and a commit returns once
    // one of them flushed it.
    a.driver
        .set_synchronous_standby_names(Some(r#"ANY 1 ("b","c")"#))
        .await
        .unwrap();
    let quorum = wait_for(Duration::from_secs(10), || async {
        let o = observe_settled(&a.driver).await;
        o.replication
            .iter()
            .all(|r| r.sync_state == "quorum")
            .then_some(())
            .filter(|_| o.replication.len() == 2)
    })
    .await;
    assert!(quorum.is_some(), "b and c are quorum standbys");
    a.sql("INSERT INTO t VALUES ('quorum')").await.unwrap();
    a.sql("DELETE FROM t WHERE v = 'quorum'").await.unwrap();
    a.driver.set_synchronous_standby_names(None).await.unwrap();
    // Replicas stream through their slots.
    assert_eq!(
        a.scalar("SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots WHERE active")
            .await
            .unwrap()
            .as_deref(),
        Some("b,c")
    );

    // c stops streaming so that its position stays at or before the switchpoint.
    c.driver.follow(None).await.unwrap();
    assert_eq!(observe_settled(&c.driver).await.following, None);

    // Promote b: a new timeline.
    let t0 = Instant::now();
    b.driver.promote(T).await.unwrap();
    println!("TIMING promote: {:?}", t0.elapsed());
    let obs_b = observe_settled(&b.driver).await;
    assert_eq!(obs_b.in_recovery, Some(false));
    assert_eq!(obs_b.timeline, Some(2));
    assert_eq!(obs_b.following, None);
    b.driver
        .sync_replication_slots(&["a".into(), "c".into()])
        .await
        .unwrap();

    // Remaster c to b without reclone.
    assert!(!c.driver.needs_rewind(&b.upstream()).await.unwrap());
    c.driver.follow(Some(&b.upstream())).await.unwrap();
    b.sql("INSERT INTO t VALUES ('two')").await.unwrap();
    wait_row(&c, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "one,two").await;
    let obs_c = observe_settled(&c.driver).await;
    assert_eq!(obs_c.following.as_deref(), Some("b"));
    assert_eq!(obs_c.timeline, Some(2));

    // The old primary keeps writing: it diverges.
    a.sql("INSERT INTO t VALUES ('diverged'); SELECT pg_switch_wal()")
        .await
        .unwrap();
    a.driver.stop(StopMode::Fast, T).await.unwrap();
    assert!(a.driver.needs_rewind(&b.upstream()).await.unwrap());
    let t0 = Instant::now();
    a.driver.rewind(&b.upstream()).await.unwrap();
    println!("TIMING rewind: {:?}", t0.elapsed());
    assert!(!a.driver.needs_rewind(&b.upstream()).await.unwrap());
    a.driver
        .start(
            &StartRole::Replica {
                upstream: Some(b.upstream()),
            },
            T,
        )
        .await
        .unwrap();
    b.sql("INSERT INTO t VALUES ('three')").await.unwrap();
    wait_row(
        &a,
        "SELECT string_agg(v, ',' ORDER BY v) FROM t",
        "one,three,two",
    )
    .await;
    let obs_a = observe_settled(&a.driver).await;
    assert_eq!(obs_a.in_recovery, Some(true));
    assert_eq!(obs_a.following.as_deref(), Some("b"));
    assert_eq!(obs_a.timeline, Some(2));

    // A stopped replica that is on the source's timeline needs no rewind.
    c.driver.stop(StopMode::Fast, T).await.unwrap();
    assert!(!c.driver.needs_rewind(&b.upstream()).await.unwrap());
    c.driver.restart(T).await.unwrap();
    assert_eq!(
        observe_settled(&c.driver).await.following.as_deref(),
        Some("b")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_former_primary_is_recovered_and_rewound() {
    let env = TestEnv::new();
    let a = env.primary("x").await;
    let b = env.replica("y", &a).await;
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;
    b.driver.promote(T).await.unwrap();
    b.driver
        .sync_replication_slots(&["x".into()])
        .await
        .unwrap();
    // Divergent writes, then a crash (no shutdown checkpoint).
    a.sql("INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    a.driver.stop(StopMode::Immediate, T).await.unwrap();
    assert_eq!(
        observe_settled(&a.driver).await.cluster_state.as_deref(),
        Some("in production")
    );
    assert!(a.driver.needs_rewind(&b.upstream()).await.unwrap());
    a.driver.rewind(&b.upstream()).await.unwrap();
    a.driver
        .start(
            &StartRole::Replica {
                upstream: Some(b.upstream()),
            },
            T,
        )
        .await
        .unwrap();
    b.sql("INSERT INTO t VALUES (2)").await.unwrap();
    wait_row(
        &a,
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM t",
        "1,2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_follow_wanted_list_and_ignore_rules() {
    let env = TestEnv::new();
    let mut cfg = env.config("s");
    cfg.ignore_slots = vec![pg_driver::IgnoreSlot {
        name: Some("keep_me".into()),
        ..Default::default()
    }];
    let node = TestNode::new(env.driver(cfg));
    node.driver.bootstrap().await.unwrap();
    node.sql("SELECT pg_create_physical_replication_slot('keep_me'); SELECT pg_create_physical_replication_slot('stray')")
        .await
        .unwrap();
    let names = || async {
        node.scalar(
            "SELECT string_agg(slot_name, ',' ORDER BY slot_name) FROM pg_replication_slots",
        )
        .await
        .unwrap()
        .unwrap_or_default()
    };
    node.driver
        .sync_replication_slots(&[pg_driver::slot_name_for_member("Node-1"), "m2".into()])
        .await
        .unwrap();
    assert_eq!(names().await, "keep_me,m2,node_1");
    node.driver
        .sync_replication_slots(&["m2".into()])
        .await
        .unwrap();
    assert_eq!(names().await, "keep_me,m2");
    let bad = node
        .driver
        .sync_replication_slots(&["Bad-Name".into()])
        .await;
    assert!(matches!(bad, Err(ha_core::PgError::Invalid(_))), "{bad:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_replica_method_falls_back_in_order() {
    let env = TestEnv::new();
    let a = env.primary("ca").await;
    // A custom method that is a thin wrapper around pg_basebackup, after one that fails.
    let script = env.path().join("clone.sh");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\nfor a in \"$@\"; do case \"$a\" in --datadir=*) D=\"${{a#--datadir=}}\";; --connstring=*) C=\"${{a#--connstring=}}\";; --marker=*) M=\"${{a#--marker=}}\";; esac; done\n\
             echo \"$M\" > \"$(dirname \"$D\")/marker\"\nexec {}/pg_basebackup -D \"$D\" -X stream -c fast --no-sync -d \"$C\"\n",
            a.driver.binaries().dir().display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut cfg = env.config("cb");
    cfg.create_replica_methods = vec!["broken".into(), "wrapper".into()];
    cfg.method_sections
        .insert("broken".into(), serde_json::json!({"command": "exit 3"}));
    cfg.method_sections.insert(
        "wrapper".into(),
        serde_json::json!({"command": script.display().to_string(), "marker": "used"}),
    );
    let b = TestNode::new(env.driver(cfg));
    Postgres::clone_from(&*b.driver, &a.upstream())
        .await
        .unwrap();
    assert_eq!(
        std::fs::read_to_string(env.path().join("cb").join("marker"))
            .unwrap()
            .trim(),
        "used"
    );
    a.driver
        .sync_replication_slots(&["cb".into()])
        .await
        .unwrap();
    b.driver
        .start(
            &StartRole::Replica {
                upstream: Some(a.upstream()),
            },
            T,
        )
        .await
        .unwrap();
    a.sql("CREATE TABLE m(v int); INSERT INTO m VALUES (7)")
        .await
        .unwrap();
    wait_row(&b, "SELECT sum(v) FROM m", "7").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_switchover_demotes_without_rewind() {
    let env = TestEnv::new();
    let a = env.primary("sw-a").await;
    let b = env.replica("sw-b", &a).await;
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;

    // Graceful: fast stop, the replica receives the shutdown checkpoint, then promotes.
    let out = a.driver.stop(StopMode::Fast, T).await.unwrap();
    let ckpt = out.checkpoint_lsn.expect("shutdown checkpoint");
    let received = wait_for(Duration::from_secs(20), || async {
        let o = observe_settled(&b.driver).await;
        (o.replay_lsn.unwrap_or(0) > ckpt).then_some(())
    })
    .await;
    assert!(
        received.is_some(),
        "replica replayed the shutdown checkpoint"
    );
    b.driver.promote(T).await.unwrap();
    b.driver
        .sync_replication_slots(&["sw_a".into()])
        .await
        .unwrap();

    // The old primary holds nothing the new one lacks: no rewind, just follow.
    assert!(!a.driver.needs_rewind(&b.upstream()).await.unwrap());
    a.driver
        .start(
            &StartRole::Replica {
                upstream: Some(b.upstream()),
            },
            T,
        )
        .await
        .unwrap();
    b.sql("INSERT INTO t VALUES (2)").await.unwrap();
    wait_row(
        &a,
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM t",
        "1,2",
    )
    .await;
    let obs = observe_settled(&a.driver).await;
    assert_eq!(obs.in_recovery, Some(true));
    assert_eq!(obs.timeline, Some(2));
    assert_eq!(obs.following.as_deref(), Some("sw-b"));
}
