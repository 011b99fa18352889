//! Failsafe mode on real etcd and on real ZooKeeper, with PostgreSQL 15: with the DCS
//! gone, a primary keeps accepting writes while every member confirms it through
//! `POST /failsafe`, and stops before its lease ends when one does not. (With failsafe
//! off, see e2e_safety.rs: writes stop before the lease ends.)

mod support;

use serde_json::Value;
use std::time::{Duration, Instant};
use support::{ack_span, wait_until, Cluster, DcsKind, Writer, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn two_nodes_in_failsafe_mode(dcs: DcsKind) -> Cluster {
    let mut c = Cluster::on(dcs, 2, &FAST, "    failsafe_mode: true", |_| String::new());
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "pg1 did not stream");
    c.sql(0, "CREATE TABLE w (id bigint primary key)")
        .expect("create table");
    assert!(wait_until(Duration::from_secs(20), || c
        .sql(1, "SELECT count(*) FROM w")
        .ok())
    .is_some());
    // The leader publishes who must confirm it: both members, with their API URLs.
    let topology = wait_until(Duration::from_secs(20), || {
        let v: Value = serde_json::from_str(&c.key("failsafe")?).ok()?;
        (v.as_object()?.len() == 2).then_some(v)
    })
    .expect("the leader did not write the failsafe key");
    for n in &c.nodes {
        assert_eq!(
            topology[&n.name],
            format!("http://127.0.0.1:{}/patroni", n.api_port),
            "{topology}"
        );
    }
    // The API answers from the cluster view of the agent's last cycle.
    let served = wait_until(Duration::from_secs(10), || {
        c.api(0, "/failsafe")
            .filter(|(s, b)| *s == 200 && *b == topology)
    });
    assert!(
        served.is_some(),
        "GET /failsafe: {:?}",
        c.api(0, "/failsafe")
    );
    c
}

/// Both members answer: the primary outlives its lease by far and keeps its writes
/// going; the replica reports failsafe as active; after the DCS returns the same node
/// leads.
#[test]
fn primary_keeps_accepting_writes_without_the_dcs_while_every_member_confirms() {
    keeps_writes_while_every_member_confirms(DcsKind::Etcd);
}

#[test]
fn on_zookeeper_primary_keeps_accepting_writes_without_the_dcs_while_every_member_confirms() {
    keeps_writes_while_every_member_confirms(DcsKind::ZooKeeper);
}

fn keeps_writes_while_every_member_confirms(dcs: DcsKind) {
    let mut c = two_nodes_in_failsafe_mode(dcs);
    let p = 0;
    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let lost_at = Instant::now();
    c.dcs.pause();
    std::thread::sleep(Duration::from_secs(3 * FAST.ttl));
    let active = c
        .api(1, "/patroni")
        .is_some_and(|(_, v)| v["failsafe_mode_is_active"] == true);
    // Long into the outage the members still show the topology they work with.
    let topology = c.api(1, "/failsafe");
    assert!(
        topology
            .as_ref()
            .is_some_and(|(s, b)| *s == 200 && b.as_object().is_some_and(|m| m.len() == 2)),
        "GET /failsafe during the outage: {topology:?}"
    );
    let acks = writer.finish();
    let last_write = ack_span(&acks, p).map(|s| s.1).expect("writes");
    assert!(
        last_write > lost_at + Duration::from_secs(2 * FAST.ttl),
        "the primary stopped accepting writes {:?} after losing the DCS although every member confirmed it",
        last_write - lost_at
    );
    assert!(
        acks.iter().all(|a| a.node == p),
        "the replica acknowledged a write"
    );
    assert!(
        active,
        "the replica does not report failsafe_mode_is_active"
    );
    c.sql(p, "INSERT INTO w VALUES (-1)")
        .expect("the primary is writable in failsafe mode");
    c.dcs.resume();
    assert!(
        wait_until(Duration::from_secs(30), || (c.leader().as_deref()
            == Some("pg0"))
        .then_some(()))
        .is_some(),
        "the failsafe primary did not take its leader key back"
    );
    assert_eq!(c.wait_primary(Duration::from_secs(30)), Some(p));
    assert!(c.wait_replica(1, Duration::from_secs(60)));
}

/// A member that does not answer (its agent is frozen) breaks failsafe: the primary
/// stops accepting writes before its lease ends, as without failsafe.
#[test]
fn primary_stops_writes_before_the_lease_ends_when_a_member_does_not_confirm() {
    stops_writes_when_a_member_does_not_confirm(DcsKind::Etcd);
}

#[test]
fn on_zookeeper_primary_stops_writes_before_the_lease_ends_when_a_member_does_not_confirm() {
    stops_writes_when_a_member_does_not_confirm(DcsKind::ZooKeeper);
}

fn stops_writes_when_a_member_does_not_confirm(dcs: DcsKind) {
    let mut c = two_nodes_in_failsafe_mode(dcs);
    let p = 0;
    c.signal_agent(1, libc::SIGSTOP);
    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let lost_at = Instant::now();
    c.dcs.pause();
    std::thread::sleep(Duration::from_secs(FAST.ttl + 3));
    let acks = writer.finish();
    let last_write = ack_span(&acks, p)
        .map(|s| s.1)
        .expect("writes before the outage");
    assert!(
        last_write < lost_at + Duration::from_secs(FAST.ttl),
        "the primary kept accepting writes {:?} after losing the DCS (ttl {} s) without every member's confirmation",
        last_write - lost_at,
        FAST.ttl
    );
    assert!(c.sql(p, "INSERT INTO w VALUES (-1)").is_err());
    // Demoted offline, it serves reads as a replica of nobody (Patroni's offline
    // demotion), instead of staying down until the DCS answers.
    let read_only = wait_until(Duration::from_secs(30), || {
        c.sql(p, "SELECT pg_is_in_recovery()")
            .ok()
            .filter(|r| r == "t")
    });
    assert!(
        read_only.is_some(),
        "the demoted primary does not run read-only while the DCS is down"
    );
    c.signal_agent(1, libc::SIGCONT);
    c.dcs.resume();
    let healed = c.wait_primary(Duration::from_secs(90));
    assert!(healed.is_some(), "no primary after the DCS returned");
}
