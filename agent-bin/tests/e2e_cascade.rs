//! End to end on real etcd and PostgreSQL 15: a `clonefrom` member is the clone
//! source of a new node, a `replicatefrom` member streams from that replica (through
//! a slot kept on the replica; the primary's slot for it follows its position) and
//! falls back to the primary when the replica is gone;
//! a `nostream` member replays the WAL archive only.

mod support;

use std::time::Duration;
use support::{wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// Port of the server node `i` receives WAL from.
fn sender_port(c: &Cluster, i: usize) -> Option<u16> {
    c.sql(
        i,
        "SELECT sender_port FROM pg_stat_wal_receiver WHERE status = 'streaming'",
    )
    .ok()
    .and_then(|s| s.parse().ok())
}

#[test]
fn cascading_replica_streams_from_its_replicatefrom_member_and_falls_back_to_the_primary() {
    let mut c = Cluster::new(3, &FAST, "", |i| match i {
        1 => "  clonefrom: true".into(),
        2 => "  replicatefrom: pg1".into(),
        _ => String::new(),
    });
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "pg1 never streamed");
    c.sql(0, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write");

    // The new node clones from the clonefrom member, not from the leader.
    c.start(2);
    assert!(c.wait_replica(2, BOOT), "pg2 never streamed");
    let log = std::fs::read_to_string(&c.nodes[2].log).unwrap_or_default();
    assert!(log.contains("cloning a new replica from pg1"), "{log}");
    assert!(!log.contains("cloning a new replica from pg0"), "{log}");

    // pg2 streams from pg1, through a slot pg1 keeps for it; the primary has none.
    let (p0, p1) = (c.nodes[0].pg_port, c.nodes[1].pg_port);
    let cascading = wait_until(Duration::from_secs(30), || {
        (sender_port(&c, 2) == Some(p1)).then_some(())
    });
    assert!(cascading.is_some(), "pg2 does not stream from pg1");
    let slot_on_replica = wait_until(Duration::from_secs(20), || {
        c.sql(
            1,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg2' AND active",
        )
        .ok()
        .filter(|n| n == "1")
    });
    assert!(
        slot_on_replica.is_some(),
        "pg1 keeps no active slot for pg2"
    );
    assert_eq!(
        c.sql(1, "SELECT application_name FROM pg_stat_replication")
            .as_deref(),
        Ok("pg2")
    );
    c.sql(0, "INSERT INTO t VALUES (2)").expect("write");
    let seen = wait_until(Duration::from_secs(20), || {
        c.sql(2, "SELECT count(*) FROM t").ok().filter(|n| n == "2")
    });
    assert!(seen.is_some(), "cascaded replica misses rows");
    // The primary keeps a slot for pg2 too (for after a failover); nobody streams from
    // it, so it follows the position pg2 reports, and /status publishes it.
    let written = c.sql(0, "SELECT pg_current_wal_lsn()").expect("lsn");
    let followed = wait_until(Duration::from_secs(30), || {
        c.sql(
            0,
            &format!(
                "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg2' \
                 AND NOT active AND restart_lsn >= '{written}'"
            ),
        )
        .ok()
        .filter(|n| n == "1")
    });
    assert!(
        followed.is_some(),
        "the primary's slot for pg2 does not follow pg2: {:?}\n{}",
        c.sql(
            0,
            "SELECT slot_name, active, restart_lsn FROM pg_replication_slots"
        ),
        c.logs()
    );
    let status = c.key("status").unwrap_or_default();
    assert!(status.contains("\"pg2\""), "{status}");

    // pg1 is gone (agent and postgres): pg2 streams from the primary instead.
    c.stop_node(1);
    let direct = wait_until(Duration::from_secs(60), || {
        (sender_port(&c, 2) == Some(p0)).then_some(())
    });
    assert!(direct.is_some(), "pg2 did not fall back to the primary");
    c.sql(0, "INSERT INTO t VALUES (3)").expect("write");
    let seen = wait_until(Duration::from_secs(20), || {
        c.sql(2, "SELECT count(*) FROM t").ok().filter(|n| n == "3")
    });
    assert!(seen.is_some(), "pg2 misses rows after the fallback");
    assert_eq!(c.api(0, "/primary").map(|r| r.0), Some(200));
    // No failover happened: pg2 had no reason to be stopped for a divergence check
    // (it once was, when its not-streaming count ran against the leader since pg1 died).
    let log = std::fs::read_to_string(&c.nodes[2].log).unwrap_or_default();
    assert!(
        !log.contains("stopping it for a divergence check"),
        "pg2 was stopped for a divergence check without a failover\n{log}"
    );
}

#[test]
fn nostream_replica_replays_the_archive_without_streaming_or_a_slot() {
    let archive = tempfile::Builder::new()
        .prefix("fullauto-archive-")
        .tempdir()
        .expect("archive dir");
    support::chown_postgres(archive.path());
    let a = archive.path().display();
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "",
        |i| {
            if i == 1 {
                "  nostream: true".into()
            } else {
                String::new()
            }
        },
        |_| {
            Extra {
            dcs_postgresql: format!(
                "      parameters:\n        archive_mode: 'on'\n        archive_command: 'test ! -f {a}/%f && cp %p {a}/%f'\n        restore_command: 'cp {a}/%f %p'"
            ),
            ..Extra::default()
        }
        },
    );
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.start(1);
    let state = wait_until(BOOT, || {
        c.api(1, "/patroni")
            .filter(|(_, v)| v["replication_state"] == "in archive recovery")
    });
    assert!(
        state.is_some(),
        "pg1 never reported archive recovery\n{}",
        c.logs()
    );
    c.sql(0, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write");
    // After the commit (one psql call is one transaction): archive the segment.
    c.sql(0, "SELECT pg_switch_wal()").expect("switch WAL");
    let replayed = wait_until(Duration::from_secs(60), || {
        c.sql(1, "SELECT count(*) FROM t").ok().filter(|n| n == "1")
    });
    let archived: Vec<String> = std::fs::read_dir(archive.path())
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        replayed.is_some(),
        "pg1 never replayed the archived WAL (archive: {archived:?})\n{}\n{}",
        std::fs::read_to_string(c.nodes[1].data_dir.join("log/postmaster.log")).unwrap_or_default(),
        c.logs()
    );
    // It never connected for streaming, and the primary keeps no slot for it.
    assert_eq!(
        c.sql(0, "SELECT count(*) FROM pg_stat_replication")
            .as_deref(),
        Ok("0")
    );
    assert_eq!(
        c.sql(1, "SELECT count(*) FROM pg_stat_wal_receiver")
            .as_deref(),
        Ok("0")
    );
    assert_eq!(
        c.sql(
            0,
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name = 'pg1'"
        )
        .as_deref(),
        Ok("0")
    );
}
