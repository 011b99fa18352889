//! Replication on real servers: clone, streaming, promote, remaster without reclone,
//! rewind of a diverged former primary, slots and custom replica-creation methods.

use ha_core::{
    NewSlot, PgProcess, Postgres, SlotAdvance, SlotChanges, SlotKind, StartRole, StopMode,
};
use pg_driver::testing::{create_physical, observe_settled, wait_for, TestEnv, TestNode};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(60);

/// Starts `node` as a replica streaming from `upstream`.
async fn start_following(node: &TestNode, upstream: &TestNode) {
    node.driver
        .start(
            &StartRole::Replica {
                upstream: Some(upstream.upstream()),
            },
            T,
        )
        .await
        .unwrap();
}

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
        .apply_slot_changes(&create_physical(&["b".into(), "c".into()]))
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
    // The age of the last replayed commit: known once a commit was replayed, and
    // growing while replay stands still behind what was received.
    assert!(obs_b.replayed_xact_age.is_some(), "{obs_b:?}");
    c.sql("SELECT pg_wal_replay_pause()").await.unwrap();
    a.sql("INSERT INTO t VALUES ('paused')").await.unwrap();
    let behind = wait_for(Duration::from_secs(30), || async {
        let o = observe_settled(&c.driver).await;
        (o.receive_lsn > o.replay_lsn).then_some(o)
    })
    .await
    .expect("c received WAL it did not replay");
    tokio::time::sleep(Duration::from_millis(20)).await;
    let later = observe_settled(&c.driver).await;
    assert_eq!(
        later.replay_lsn, behind.replay_lsn,
        "replay moved while paused"
    );
    assert!(
        later.replayed_xact_age > behind.replayed_xact_age && behind.replayed_xact_age.is_some(),
        "{:?} then {:?}",
        behind.replayed_xact_age,
        later.replayed_xact_age
    );
    c.sql("SELECT pg_wal_replay_resume()").await.unwrap();
    a.sql("DELETE FROM t WHERE v = 'paused'").await.unwrap();
    wait_row(&c, "SELECT string_agg(v, ',' ORDER BY v) FROM t", "one").await;
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
        .apply_slot_changes(&create_physical(&["a".into(), "c".into()]))
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
    start_following(&a, &b).await;
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
        .apply_slot_changes(&create_physical(&["x".into()]))
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
    start_following(&a, &b).await;
    b.sql("INSERT INTO t VALUES (2)").await.unwrap();
    wait_row(
        &a,
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM t",
        "1,2",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_changes_create_advance_and_drop() {
    let env = TestEnv::new();
    let mut cfg = env.config("s");
    cfg.parameters
        .insert("wal_level".into(), serde_json::json!("logical"));
    let node = TestNode::new(env.driver(cfg));
    node.driver.bootstrap().await.unwrap();
    node.sql("SELECT pg_create_physical_replication_slot('stray')")
        .await
        .unwrap();
    let names = || async {
        node.scalar(
            "SELECT string_agg(slot_name || ':' || slot_type, ',' ORDER BY slot_name) FROM pg_replication_slots",
        )
        .await
        .unwrap()
        .unwrap_or_default()
    };
    let changes = SlotChanges {
        create: vec![
            NewSlot {
                name: "m2".into(),
                kind: SlotKind::Physical,
            },
            NewSlot {
                name: "cdc".into(),
                kind: cdc_kind(),
            },
        ],
        drop: vec!["stray".into()],
        ..Default::default()
    };
    node.driver.apply_slot_changes(&changes).await.unwrap();
    assert_eq!(names().await, "cdc:logical,m2:physical");
    // The observation reports both, with their positions.
    let seen = observe_settled(&node.driver).await.slots;
    let m2 = seen.iter().find(|s| s.name == "m2").expect("m2 observed");
    let before = m2.lsn.expect("a physical slot created by us reserves WAL");
    assert!(seen.iter().any(|s| s.name == "cdc" && s.kind == cdc_kind()));

    node.sql("CREATE TABLE t AS SELECT generate_series(1, 1000) AS v")
        .await
        .unwrap();
    let now = observe_settled(&node.driver).await.wal_lsn.unwrap();
    let advance = SlotChanges {
        advance: vec![
            SlotAdvance {
                name: "m2".into(),
                database: None,
                to: now,
            },
            SlotAdvance {
                name: "cdc".into(),
                database: Some("postgres".into()),
                to: now,
            },
        ],
        ..Default::default()
    };
    node.driver.apply_slot_changes(&advance).await.unwrap();
    let seen = observe_settled(&node.driver).await.slots;
    for s in &seen {
        assert!(s.lsn.unwrap() > before, "{} advanced: {seen:?}", s.name);
    }
    // One bad change does not stop the others; the error names it.
    let mixed = SlotChanges {
        create: vec![NewSlot {
            name: "nodb".into(),
            kind: SlotKind::Logical {
                database: "no_such_db".into(),
                plugin: "test_decoding".into(),
            },
        }],
        drop: vec!["m2".into()],
        ..Default::default()
    };
    let err = node.driver.apply_slot_changes(&mixed).await.unwrap_err();
    assert!(err.to_string().contains("nodb"), "{err}");
    assert_eq!(names().await, "cdc:logical");
    let bad = node
        .driver
        .apply_slot_changes(&create_physical(&["Bad-Name".into()]))
        .await;
    assert!(matches!(bad, Err(ha_core::PgError::Invalid(_))), "{bad:?}");
}

/// Before PostgreSQL 16 a standby cannot create a logical slot: it gets the primary's
/// slot state file, loads it at restart and then moves it forward itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logical_slot_is_copied_to_a_replica_and_advanced_there() {
    let env = TestEnv::new();
    let logical_cfg = |name: &str| {
        let mut cfg = env.config(name);
        cfg.parameters
            .insert("wal_level".into(), serde_json::json!("logical"));
        cfg.parameters
            .insert("hot_standby_feedback".into(), serde_json::json!("on"));
        cfg
    };
    let a = TestNode::new(env.driver(logical_cfg("la")));
    a.driver.bootstrap().await.unwrap();
    let b = env.replica_with(logical_cfg("lb"), &a).await;
    a.sql("SELECT pg_create_logical_replication_slot('cdc', 'test_decoding')")
        .await
        .unwrap();
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;

    let files = b
        .driver
        .read_logical_slot_states(&a.upstream(), &["cdc".into()])
        .await
        .unwrap();
    assert_eq!(files.len(), 1);
    let missing = b
        .driver
        .read_logical_slot_states(&a.upstream(), &["nope".into()])
        .await;
    assert!(missing.is_err());
    // Installing needs the server stopped.
    assert!(b.driver.install_logical_slot_states(&files).await.is_err());
    b.driver.stop(StopMode::Fast, T).await.unwrap();
    b.driver.install_logical_slot_states(&files).await.unwrap();
    start_following(&b, &a).await;
    let copied = wait_for(Duration::from_secs(30), || async {
        let o = observe_settled(&b.driver).await;
        o.slots.into_iter().find(|s| s.name == "cdc")
    })
    .await
    .expect("the copied slot is loaded on the replica");
    assert_eq!(copied.kind, cdc_kind());

    // The consumer reads on the primary; the replica's copy follows.
    a.sql("INSERT INTO t VALUES (2)").await.unwrap();
    a.sql("SELECT count(*) FROM pg_logical_slot_get_changes('cdc', NULL, NULL)")
        .await
        .unwrap();
    let target = observe_settled(&a.driver)
        .await
        .slots
        .into_iter()
        .find(|s| s.name == "cdc")
        .and_then(|s| s.lsn)
        .unwrap();
    assert!(target > copied.lsn.unwrap());
    wait_row(&b, "SELECT count(*) FROM t", "2").await;
    let advance = SlotChanges {
        advance: vec![SlotAdvance {
            name: "cdc".into(),
            database: Some("postgres".into()),
            to: target,
        }],
        ..Default::default()
    };
    let advanced = wait_for(Duration::from_secs(30), || async {
        b.driver.apply_slot_changes(&advance).await.ok()?;
        let o = observe_settled(&b.driver).await;
        o.slots
            .into_iter()
            .find(|s| s.name == "cdc" && s.lsn == Some(target))
    })
    .await;
    assert!(
        advanced.is_some(),
        "the replica's copy reaches the primary's position"
    );
}

fn cdc_kind() -> SlotKind {
    SlotKind::Logical {
        database: "postgres".into(),
        plugin: "test_decoding".into(),
    }
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
        .apply_slot_changes(&create_physical(&["cb".into()]))
        .await
        .unwrap();
    start_following(&b, &a).await;
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
        .apply_slot_changes(&create_physical(&["sw_a".into()]))
        .await
        .unwrap();

    // The old primary holds nothing the new one lacks: no rewind, just follow.
    assert!(!a.driver.needs_rewind(&b.upstream()).await.unwrap());
    start_following(&a, &b).await;
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn same_timeline_number_on_another_history_needs_a_rewind() {
    // Two replicas promoted from the same primary at different points, neither seeing
    // the other's history file, both end up on timeline 2 (seen in a chaos run after a
    // failed pg_rewind). Equal numbers are not equal histories.
    let env = TestEnv::new();
    let a = env.primary("p").await;
    let b = env.replica("q", &a).await;
    let c = env.replica("r", &a).await;
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;
    wait_row(&c, "SELECT count(*) FROM t", "1").await;
    b.driver.promote(T).await.unwrap();
    // c keeps following the old primary past b's switch point, then is promoted too.
    a.sql("INSERT INTO t SELECT generate_series(2, 100); SELECT pg_switch_wal()")
        .await
        .unwrap();
    wait_row(&c, "SELECT count(*) FROM t", "100").await;
    a.driver.stop(StopMode::Fast, T).await.unwrap();
    c.driver.promote(T).await.unwrap();
    assert_eq!(observe_settled(&b.driver).await.timeline, Some(2));
    assert_eq!(observe_settled(&c.driver).await.timeline, Some(2));
    c.driver.stop(StopMode::Fast, T).await.unwrap();
    assert!(
        c.driver.needs_rewind(&b.upstream()).await.unwrap(),
        "timeline 2 forked at another place on each: c must be rewound to follow b"
    );
    // pg_rewind cannot repair it (it compares timeline numbers): refused, with the way
    // out named, instead of a "successful" rewind that leaves c unable to stream.
    let refused = c
        .driver
        .rewind(&b.upstream())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("reinitialize"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_promotions_from_one_point_are_two_timelines() {
    // The old primary stops cleanly, so both replicas hold all of its WAL; each is
    // promoted in turn without seeing the other's history file. Both are on timeline 2
    // with equal history files, but b wrote its own WAL there: it can neither stream
    // from c nor be repaired by pg_rewind ("no rewind required"). Seen in a ZooKeeper
    // chaos run as replicas "starting up" for good after a torn record (issue 25).
    let env = TestEnv::new();
    let a = env.primary("f").await;
    let b = env.replica("g", &a).await;
    let c = env.replica("h", &a).await;
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;
    wait_row(&c, "SELECT count(*) FROM t", "1").await;
    a.driver.stop(StopMode::Fast, T).await.unwrap();
    // Both replay up to a's shutdown checkpoint, its last record.
    let replayed = "SELECT pg_last_wal_replay_lsn()::text";
    let mut last = None;
    for _ in 0..60 {
        let now = (
            b.scalar(replayed).await.ok().flatten(),
            c.scalar(replayed).await.ok().flatten(),
        );
        if now.0.is_some() && now.0 == now.1 && last.as_ref() == Some(&now) {
            break;
        }
        last = Some(now);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let end = last.expect("positions");
    assert!(end.0.is_some() && end.0 == end.1, "{end:?}");
    b.driver.promote(T).await.unwrap();
    b.sql("INSERT INTO t SELECT generate_series(2, 50)")
        .await
        .unwrap();
    b.driver.stop(StopMode::Fast, T).await.unwrap();
    c.driver.promote(T).await.unwrap();
    assert_eq!(observe_settled(&c.driver).await.timeline, Some(2));
    assert!(
        b.driver.needs_rewind(&c.upstream()).await.unwrap(),
        "b's timeline 2 is not c's: b must not simply follow c"
    );
    let refused = b
        .driver
        .rewind(&c.upstream())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("reinitialize"), "{refused}");
    // Once b streamed from c, its walreceiver overwrote b's own timeline-2 segment with
    // c's (first record included); its last checkpoint, one of b's own, still tells
    // (the same ZooKeeper chaos run, replayed).
    c.sql(
        "INSERT INTO t SELECT generate_series(51, 3000); \
         SELECT pg_create_physical_replication_slot('g', true)",
    )
    .await
    .unwrap();
    let log = b.driver.config().log_file();
    let before = std::fs::metadata(&log).map_or(0, |m| m.len()) as usize;
    b.driver
        .start(
            &StartRole::Replica {
                upstream: Some(c.upstream()),
            },
            T,
        )
        .await
        .unwrap();
    // Its startup then stumbles on b's own records past what c sent and ends the
    // walreceiver again and again; what c sent is written by then.
    let streamed = wait_for(Duration::from_secs(30), || async {
        let text = std::fs::read(&log).ok()?;
        String::from_utf8_lossy(&text[before.min(text.len())..])
            .contains("started streaming WAL from primary")
            .then_some(())
    })
    .await;
    assert!(
        streamed.is_some(),
        "b never streamed from c: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    b.driver.stop(StopMode::Fast, T).await.unwrap();
    assert!(
        b.driver.needs_rewind(&c.upstream()).await.unwrap(),
        "b's last checkpoint is on its own timeline 2, not on c's"
    );
    let refused = b
        .driver
        .rewind(&c.upstream())
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("reinitialize"), "{refused}");
    // A fresh copy of c is on c's timeline 2: no divergence there.
    let d = env.replica("k", &c).await;
    wait_row(&d, "SELECT count(*) FROM t", "2951").await;
    d.driver.stop(StopMode::Fast, T).await.unwrap();
    assert!(!d.driver.needs_rewind(&c.upstream()).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replica_still_starting_without_an_upstream_streams_once_pointed_at_one() {
    // A replica started while nobody led has no primary_conninfo; when its data
    // directory needs WAL it does not hold to become consistent, it stays "starting
    // up" until it is pointed at an upstream, which a reload does while it starts
    // (issue 25: a chaos run's replica stayed starting for good).
    let env = TestEnv::new();
    let a = env.primary("a").await;
    a.sql("SELECT pg_create_physical_replication_slot('b', true)")
        .await
        .unwrap();
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    let b = TestNode::new(env.driver(env.config("b")));
    Postgres::clone_from(&*b.driver, &a.upstream())
        .await
        .unwrap();
    // The backup's own WAL gone, it can only become consistent from an upstream.
    let wal = b.driver.config().data_dir.join("pg_wal");
    for e in std::fs::read_dir(&wal).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().to_string();
        if name.len() == 24 && name.chars().all(|c| c.is_ascii_hexdigit()) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let started = b
        .driver
        .start(
            &StartRole::Replica { upstream: None },
            Duration::from_secs(3),
        )
        .await;
    assert!(started.is_err(), "b became consistent without its WAL");
    let obs = b.driver.observe().await;
    assert_eq!(obs.process, PgProcess::Starting);
    assert_eq!(obs.in_recovery, Some(true), "a standby.signal start");
    assert_eq!(obs.following, None);
    b.driver.follow(Some(&a.upstream())).await.unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;
    let obs = observe_settled(&b.driver).await;
    assert_eq!(obs.process, PgProcess::Running);
    assert_eq!(obs.following.as_deref(), Some("a"));
}

/// A diverged former primary `x` (stopped) of a promoted `y`.
async fn diverged_pair(env: &TestEnv) -> (TestNode, TestNode) {
    let a = env.primary("x").await;
    let b = env.replica("y", &a).await;
    a.sql("CREATE TABLE t(v int); INSERT INTO t VALUES (1)")
        .await
        .unwrap();
    wait_row(&b, "SELECT count(*) FROM t", "1").await;
    b.driver.promote(T).await.unwrap();
    b.driver
        .apply_slot_changes(&create_physical(&["x".into()]))
        .await
        .unwrap();
    a.sql("INSERT INTO t SELECT generate_series(1, 1000)")
        .await
        .unwrap();
    a.driver.stop(StopMode::Fast, T).await.unwrap();
    (a, b)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_rewound_data_directory_neither_starts_nor_rewinds_again() {
    // A pg_rewind cut short after it began copying (issue 25: its source died, or the
    // agent was killed, mid-copy) leaves a mix of both servers' files. Here it fails
    // at a file it may not remove, which pg_rewind does after copying.
    let env = TestEnv::new();
    let (a, b) = diverged_pair(&env).await;
    let data = a.driver.config().data_dir.clone();
    let blocker = data.join("fa_blocker");
    std::fs::create_dir(&blocker).unwrap();
    std::fs::write(blocker.join("f"), "x").unwrap();
    assert!(
        a.driver.rewind(&b.upstream()).await.is_err(),
        "pg_rewind removed a file of the test's user: the tools must run as the server's \
         own (unprivileged) user here"
    );
    std::fs::remove_dir_all(&blocker).unwrap();
    let mark = data.with_file_name("data.fullauto-rewind");
    assert!(mark.exists(), "the unfinished rewind is marked");
    let start = a
        .driver
        .start(&StartRole::Replica { upstream: None }, T)
        .await
        .unwrap_err()
        .to_string();
    assert!(start.contains("half-rewound"), "{start}");
    assert!(a.postmaster_pid().is_none(), "nothing started");
    // pg_control no longer says where it stands: the rewind path (and its re-clone
    // on failure) is taken, and a second pg_rewind is refused.
    assert!(a.driver.needs_rewind(&b.upstream()).await.unwrap());
    let again = a
        .driver
        .rewind(&b.upstream())
        .await
        .unwrap_err()
        .to_string();
    assert!(again.contains("reinitialize"), "{again}");
    // A re-clone repairs it.
    a.driver.remove_data_directory().await.unwrap();
    assert!(!mark.exists());
    Postgres::clone_from(&*a.driver, &b.upstream())
        .await
        .unwrap();
    start_following(&a, &b).await;
    b.sql("INSERT INTO t VALUES (2)").await.unwrap();
    wait_row(&a, "SELECT max(v) FROM t WHERE v = 2", "2").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_finished_after_its_agent_died_is_used() {
    // The agent was killed while pg_rewind ran, and pg_rewind (not the agent's child
    // in the same process group) went on to finish: its mark is still there, but
    // pg_control and backup_label show the rewind done, so the member starts.
    let env = TestEnv::new();
    let (a, b) = diverged_pair(&env).await;
    a.driver.rewind(&b.upstream()).await.unwrap();
    let mark = a
        .driver
        .config()
        .data_dir
        .with_file_name("data.fullauto-rewind");
    assert!(!mark.exists(), "a finished rewind leaves no mark");
    std::fs::write(&mark, "y\n").unwrap();
    start_following(&a, &b).await;
    assert!(!mark.exists());
    b.sql("INSERT INTO t VALUES (2)").await.unwrap();
    wait_row(
        &a,
        "SELECT string_agg(v::text, ',' ORDER BY v) FROM t",
        "1,2",
    )
    .await;
}
