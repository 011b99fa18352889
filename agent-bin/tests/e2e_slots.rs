//! End to end on real etcd and PostgreSQL 15: permanent slots from the dynamic config.
//! A physical one exists on the primary next to the member slots and the new primary
//! keeps it after an unplanned failover; a logical one is copied to the replica, kept
//! at the position its consumer confirmed on the primary, and after a failover the
//! consumer resumes on the new primary exactly where it stopped. A primary turned
//! replica drops the slot its old replica's hot standby feedback left an xmin on.

mod support;

use std::time::Duration;
use support::{wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn has_slot(c: &Cluster, i: usize, name: &str) -> bool {
    c.sql(
        i,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}' AND slot_type = 'physical'"),
    )
    .is_ok_and(|n| n == "1")
}

#[test]
fn permanent_physical_slot_survives_a_failover() {
    let mut c = Cluster::new(
        2,
        &FAST,
        "    slots:\n      backup_tool:\n        type: physical\n    ignore_slots:\n    - name: keep_me",
        |_| String::new(),
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "replica never streamed");
    let kept = wait_until(Duration::from_secs(30), || {
        has_slot(&c, p, "backup_tool").then_some(())
    });
    assert!(
        kept.is_some(),
        "no permanent slot on the primary\n{}",
        c.logs()
    );
    let member_slot = c.nodes[r].name.clone();
    assert!(
        has_slot(&c, p, &member_slot),
        "the member slot is gone next to the permanent one"
    );
    // Slots nobody asked for are dropped, unless an ignore_slots rule covers them.
    c.sql(
        p,
        "SELECT pg_create_physical_replication_slot('keep_me'); SELECT pg_create_physical_replication_slot('stray')",
    )
    .expect("create unmanaged slots");
    let dropped = wait_until(Duration::from_secs(30), || {
        (!has_slot(&c, p, "stray")).then_some(())
    });
    assert!(dropped.is_some(), "an unmanaged slot was kept");
    assert!(has_slot(&c, p, "keep_me"), "an ignored slot was dropped");

    c.kill_agent(p);
    c.kill_postmaster(p);
    let new = c
        .wait_primary(Duration::from_secs(60))
        .expect("the replica took over");
    assert_eq!(new, r);
    let kept = wait_until(Duration::from_secs(30), || {
        has_slot(&c, new, "backup_tool").then_some(())
    });
    assert!(
        kept.is_some(),
        "the new primary does not keep the permanent slot"
    );
}

fn slot_lsn(c: &Cluster, i: usize, name: &str) -> Option<String> {
    c.sql(
        i,
        &format!(
            "SELECT coalesce(confirmed_flush_lsn, restart_lsn)::text FROM pg_replication_slots WHERE slot_name = '{name}'"
        ),
    )
    .ok()
    .filter(|v| !v.is_empty())
}

#[test]
fn permanent_logical_slot_follows_its_consumer_across_a_failover() {
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "    slots:\n      cdc:\n        type: logical\n        database: postgres\n        plugin: test_decoding",
        |_| String::new(),
        |_| Extra {
            dcs_postgresql: "      parameters:\n        wal_level: logical\n        hot_standby_feedback: 'on'"
                .into(),
            ..Extra::default()
        },
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "replica never streamed");
    let created = wait_until(Duration::from_secs(30), || slot_lsn(&c, p, "cdc"));
    assert!(
        created.is_some(),
        "no logical slot on the primary\n{}",
        c.logs()
    );
    // The replica gets a copy (it restarts to load it) and a slot for the primary.
    let copied = wait_until(Duration::from_secs(90), || slot_lsn(&c, r, "cdc"));
    assert!(
        copied.is_some(),
        "the slot never reached the replica\n{}",
        c.logs()
    );
    let primary_slot = c.nodes[p].name.clone();
    let kept = wait_until(Duration::from_secs(30), || slot_lsn(&c, r, &primary_slot));
    assert!(kept.is_some(), "the replica keeps no slot for the primary");
    assert!(
        c.wait_replica(r, BOOT),
        "replica did not stream again after the copy"
    );

    // The consumer reads everything up to here on the primary ...
    c.sql(
        p,
        "CREATE TABLE events(v text); INSERT INTO events VALUES ('consumed')",
    )
    .expect("write");
    let read = c
        .sql(
            p,
            "SELECT string_agg(data, ' ') FROM pg_logical_slot_get_changes('cdc', NULL, NULL)",
        )
        .expect("consume");
    assert!(read.contains("consumed"), "{read}");
    let confirmed = slot_lsn(&c, p, "cdc").expect("slot position");
    // ... and the replica's copy moves to the confirmed position.
    let synced = wait_until(Duration::from_secs(60), || {
        (slot_lsn(&c, r, "cdc").as_deref() == Some(confirmed.as_str())).then_some(())
    });
    assert!(
        synced.is_some(),
        "replica slot at {:?}, primary confirmed {confirmed}\n{}",
        slot_lsn(&c, r, "cdc"),
        c.logs()
    );
    c.sql(p, "INSERT INTO events VALUES ('pending')")
        .expect("write");
    let replicated = wait_until(Duration::from_secs(30), || {
        c.sql(r, "SELECT count(*) FROM events")
            .ok()
            .filter(|n| n == "2")
    });
    assert!(replicated.is_some(), "the replica never got the second row");

    c.kill_agent(p);
    c.kill_postmaster(p);
    let new = c
        .wait_primary(Duration::from_secs(60))
        .expect("the replica took over");
    assert_eq!(new, r);
    // The consumer resumes on the new primary: the unread change is there, the
    // consumed one is not delivered again.
    let resumed = c
        .sql(
            new,
            "SELECT string_agg(data, ' ') FROM pg_logical_slot_get_changes('cdc', NULL, NULL)",
        )
        .expect("consume on the new primary");
    assert!(resumed.contains("pending"), "{resumed}");
    assert!(!resumed.contains("consumed"), "{resumed}");
}

fn slot_xmin(c: &Cluster, i: usize, name: &str) -> Option<String> {
    c.sql(
        i,
        &format!("SELECT coalesce(xmin::text, 'none') FROM pg_replication_slots WHERE slot_name = '{name}'"),
    )
    .ok()
    .filter(|v| !v.is_empty())
}

#[test]
fn a_demoted_primary_replaces_the_slot_holding_its_old_replicas_xmin() {
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            dcs_postgresql: "      parameters:\n        hot_standby_feedback: 'on'".into(),
            ..Extra::default()
        },
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "replica never streamed");
    let replica_slot = c.nodes[r].name.clone();
    let held = wait_until(Duration::from_secs(30), || {
        slot_xmin(&c, p, &replica_slot).filter(|x| x != "none")
    });
    assert!(
        held.is_some(),
        "hot standby feedback set no xmin\n{}",
        c.logs()
    );

    let scope = c.scope.clone();
    let (ok, out) = c.ctl(&[
        "switchover",
        &scope,
        "--leader",
        &c.nodes[p].name,
        "--candidate",
        &c.nodes[r].name,
        "--force",
    ]);
    assert!(ok, "switchover failed: {out}");
    assert_eq!(c.wait_primary(Duration::from_secs(30)), Some(r));
    assert!(c.wait_replica(p, BOOT), "the old primary never streamed");
    // Nobody streams from that slot now: its xmin would hold back vacuum for good.
    let cleared = wait_until(Duration::from_secs(30), || {
        slot_xmin(&c, p, &replica_slot).filter(|x| x == "none")
    });
    assert!(
        cleared.is_some(),
        "slot {replica_slot} on the old primary: xmin {:?}\n{}",
        slot_xmin(&c, p, &replica_slot),
        c.logs()
    );
}
