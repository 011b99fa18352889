//! Split-brain and availability scenarios on real etcd and PostgreSQL 15: a frozen
//! primary agent (SIGSTOP) without any hardware watchdog and a primary that loses the
//! DCS (both also on ZooKeeper), and pause mode.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{ack_span, wait_until, Cluster, DcsKind, Writer, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn two_nodes() -> (Cluster, usize, usize) {
    two_nodes_on(DcsKind::Etcd)
}

fn two_nodes_on(dcs: DcsKind) -> (Cluster, usize, usize) {
    let mut c = Cluster::on(dcs, 2, &FAST, "", |_| String::new());
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
    (c, 0, 1)
}

/// The mission's headline case: the primary's agent freezes while its Postgres keeps
/// running. The write fence (a separate process) must stop Postgres before the lease
/// can expire, so the two sides never accept writes at the same time, and the agent,
/// once resumed, must not act on its stale view.
#[test]
fn frozen_primary_agent_never_yields_two_writable_primaries() {
    frozen_primary_agent_is_fenced(DcsKind::Etcd);
}

#[test]
fn on_zookeeper_frozen_primary_agent_never_yields_two_writable_primaries() {
    frozen_primary_agent_is_fenced(DcsKind::ZooKeeper);
}

fn frozen_primary_agent_is_fenced(dcs: DcsKind) {
    let (mut c, p, r) = two_nodes_on(dcs);
    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let frozen_at = Instant::now();
    c.signal_agent(p, libc::SIGSTOP);
    let took_over = wait_until(Duration::from_secs(60), || {
        c.api(r, "/primary").filter(|(s, _)| *s == 200)
    });
    assert!(took_over.is_some(), "the replica never took over");
    std::thread::sleep(Duration::from_secs(2));
    // Resume the frozen agent: it must notice it lost the lease and not fight back.
    c.signal_agent(p, libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(FAST.ttl));
    let acks = writer.finish();

    let last_old = acks
        .iter()
        .filter(|a| a.node == p && a.at > frozen_at)
        .map(|a| a.at)
        .max();
    let first_new = ack_span(&acks, r)
        .map(|s| s.0)
        .expect("new primary accepted writes");
    if let Some(last_old) = last_old {
        assert!(
            last_old < first_new,
            "split brain: the frozen primary acknowledged a write after the new primary did"
        );
    }
    assert!(acks
        .iter()
        .filter(|a| a.node == p)
        .all(|a| a.at < first_new));
    assert_eq!(
        c.leader().as_deref(),
        Some(c.nodes[r].name.as_str()),
        "the resumed agent took the leader key back"
    );
    assert_eq!(c.api(p, "/primary").map(|x| x.0), Some(503));
    // Every write the new primary acknowledged is still there.
    let rows = c.sql(r, "SELECT id FROM w").expect("read");
    let present: std::collections::BTreeSet<i64> =
        rows.lines().filter_map(|l| l.parse().ok()).collect();
    assert!(acks
        .iter()
        .filter(|a| a.node == r)
        .all(|a| present.contains(&a.id)));
    // The old primary rejoins as a replica of the new one.
    assert!(
        c.wait_replica(p, Duration::from_secs(90)),
        "the resumed node did not rejoin as a replica"
    );
}

/// A primary that cannot reach the DCS stops accepting writes before its lease can
/// expire anywhere; when the DCS returns the cluster heals to one primary.
#[test]
fn primary_that_loses_the_dcs_stops_writes_before_the_lease_ends_then_heals() {
    losing_the_dcs_stops_writes_then_heals(DcsKind::Etcd);
}

#[test]
fn on_zookeeper_primary_that_loses_the_dcs_stops_writes_before_the_lease_ends_then_heals() {
    losing_the_dcs_stops_writes_then_heals(DcsKind::ZooKeeper);
}

fn losing_the_dcs_stops_writes_then_heals(dcs: DcsKind) {
    let (mut c, p, _r) = two_nodes_on(dcs);
    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let lost_at = Instant::now();
    c.dcs.pause();
    // Give the lease time to run out everywhere, then bring the DCS back.
    std::thread::sleep(Duration::from_secs(FAST.ttl + 3));
    let acks_during = writer.finish();
    let last_write = ack_span(&acks_during, p)
        .map(|s| s.1)
        .expect("writes before the outage");
    assert!(
        last_write < lost_at + Duration::from_secs(FAST.ttl),
        "the primary kept accepting writes {:?} after losing the DCS (ttl {} s)",
        last_write - lost_at,
        FAST.ttl
    );
    assert!(
        c.sql(p, "INSERT INTO w VALUES (-1)").is_err(),
        "primary still writable without the DCS"
    );
    c.dcs.resume();
    let healed = c.wait_primary(Duration::from_secs(90));
    assert!(healed.is_some(), "no primary after the DCS returned");
    let other = 1 - healed.unwrap_or(0);
    assert!(
        c.wait_replica(other, Duration::from_secs(90)),
        "the other node did not follow after healing"
    );
}

/// Pause: a dead primary is not replaced; resume restores automation.
#[test]
fn pause_blocks_automatic_failover_and_resume_restores_it() {
    let (mut c, p, r) = two_nodes();
    let (status, body) = c
        .api_patch(p, "/config", &json!({"pause": true}))
        .expect("patch");
    assert_eq!(status, 200, "{body}");
    assert!(wait_until(Duration::from_secs(20), || c
        .api(r, "/patroni")
        .filter(|(_, v)| v["pause"] == true))
    .is_some());
    // A health check right after the postmaster died must not answer from the last
    // cycle's observation (Patroni's acceptance suite asks at once).
    let postmaster = c.postmaster_pid(p).expect("postmaster pid");
    c.kill_postmaster(p);
    let dead = wait_until(Duration::from_secs(2), || {
        let stat = std::fs::read_to_string(format!("/proc/{postmaster}/stat")).unwrap_or_default();
        let state = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.trim_start().chars().next());
        matches!(state, None | Some(Some('Z'))).then_some(())
    });
    assert!(dead.is_some(), "the postmaster did not die");
    assert_eq!(
        c.api(p, "/primary").map(|x| x.0),
        Some(503),
        "dead postmaster, /primary 200"
    );
    let (_, status) = c.api(p, "/patroni").expect("status");
    assert_eq!(status["state"], "unknown", "{status}");
    c.kill_agent(p);
    std::thread::sleep(Duration::from_secs(2 * FAST.ttl));
    assert_eq!(
        c.api(r, "/primary").map(|x| x.0),
        Some(503),
        "promoted while paused"
    );
    assert_eq!(c.api(r, "/health").map(|x| x.0), Some(200));
    let (status, body) = c
        .api_patch(r, "/config", &json!({"pause": null}))
        .expect("patch");
    assert_eq!(status, 200, "{body}");
    assert!(
        c.wait_primary(Duration::from_secs(60)) == Some(r),
        "no promotion after resume"
    );
}
