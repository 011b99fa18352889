//! The in-memory DCS: store semantics, leases, the member client and the async `Dcs`.

use super::*;
use crate::clock::{Clock, ManualClock, MonoTime};
use crate::dcs::{Dcs, DcsError, DcsTiming};
use crate::model::{
    Cluster, ClusterKeys, DynamicConfig, Failover, Failsafe, History, MemberData, MemberState,
    Role, Status, SyncState, Version,
};
use std::sync::Arc;
use std::time::Duration;

const TTL: Duration = Duration::from_secs(30);

fn t(ms: u64) -> MonoTime {
    MonoTime::from_millis(ms)
}

fn timing() -> DcsTiming {
    DcsTiming {
        ttl: TTL,
        retry_timeout: Duration::from_secs(10),
        loop_wait: Duration::from_secs(10),
    }
}

fn node(name: &str) -> MemoryDcsNode {
    MemoryDcsNode::new(ClusterKeys::new("service", "batman"), name, timing())
}

fn member(lsn: u64) -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        state: Some(MemberState::Running),
        role: Some(Role::Replica),
        xlog_location: Some(lsn),
        ..Default::default()
    }
}

#[test]
fn lease_expiry_deletes_only_bound_keys_in_one_revision() {
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(t(0), "a", Duration::from_secs(10));
    s.put(t(0), "/x/bound1", "1", Some(lease)).unwrap();
    s.put(t(0), "/x/bound2", "2", Some(lease)).unwrap();
    s.put(t(0), "/x/free", "3", None).unwrap();
    let rev = s.revision();
    let changes = s.changes();
    assert_eq!(
        s.range(t(9_999), "/x/").len(),
        3,
        "alive just before expiry"
    );
    assert_eq!(s.revision(), rev);
    let left = s.range(t(10_000), "/x/");
    assert_eq!(left.len(), 1, "expired at now == expiry");
    assert_eq!(left[0].key, "/x/free");
    assert_eq!(s.revision(), rev + 1);
    assert_eq!(s.changes(), changes + 1);
    assert!(!s.keepalive(t(10_000), lease));
    assert_eq!(
        s.put(t(10_000), "/x/again", "v", Some(lease)),
        Err(LeaseNotFound(lease))
    );
    assert!(s.get(t(10_000), "/x/again").is_none());
}

#[test]
fn keepalive_restarts_the_ttl() {
    let mut s = MemoryStore::new();
    let lease = s.grant_lease(t(0), "a", Duration::from_secs(10));
    s.put(t(0), "/k", "v", Some(lease)).unwrap();
    assert!(s.keepalive(t(8_000), lease));
    assert!(s.get(t(17_999), "/k").is_some());
    assert_eq!(s.lease(t(17_999), lease).unwrap().expiry, t(18_000));
    assert!(s.get(t(18_000), "/k").is_none());
    assert_eq!(s.lease(t(18_000), lease), None);
}

#[test]
fn expire_now_forces_expiry_and_reports_it() {
    let mut s = MemoryStore::new();
    let a = s.grant_lease(t(0), "a", Duration::from_secs(1));
    let _b = s.grant_lease(t(0), "b", Duration::from_secs(5));
    s.put(t(0), "/a", "v", Some(a)).unwrap();
    assert_eq!(s.expire_now(t(999)), 0);
    assert_eq!(s.expire_now(t(1_000)), 1);
    assert_eq!(s.expire_now(t(5_000)), 1);
    assert!(s.range(t(5_000), "/").is_empty());
}

#[test]
fn put_without_lease_detaches_and_rebinding_moves_the_key() {
    let mut s = MemoryStore::new();
    let a = s.grant_lease(t(0), "a", Duration::from_secs(1));
    let b = s.grant_lease(t(0), "b", Duration::from_secs(10));
    s.put(t(0), "/free", "v", Some(a)).unwrap();
    s.put(t(0), "/free", "v", None).unwrap();
    s.put(t(0), "/moved", "v", Some(a)).unwrap();
    s.put(t(0), "/moved", "v", Some(b)).unwrap();
    let keys: Vec<_> = s.range(t(2_000), "/").into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["/free", "/moved"]);
    assert!(s.revoke_lease(t(2_000), b));
    assert_eq!(s.range(t(2_000), "/").len(), 1);
    assert!(!s.revoke_lease(t(2_000), b));
}

#[test]
fn create_cas_and_conditional_deletes() {
    let mut s = MemoryStore::new();
    let v1 = s.create(t(0), "/k", "one", None).unwrap().unwrap();
    assert_eq!(s.create(t(0), "/k", "other", None), Ok(None));
    let v2 = s.put_if_version(t(0), "/k", "two", v1).unwrap();
    assert!(v2 > v1);
    assert_eq!(s.put_if_version(t(0), "/k", "stale", v1), None);
    let e = s.get(t(0), "/k").unwrap();
    assert_eq!((e.value.as_str(), e.version), ("two", v2));
    assert_eq!(e.create_revision, v1.0, "create revision survives updates");
    assert_eq!(
        s.put_if_version(t(0), "/absent", "x", Version(0)),
        Some(Version(s.revision()))
    );
    assert!(!s.delete_if_value(t(0), "/k", "one"));
    assert!(!s.delete_if_version(t(0), "/k", v1));
    assert!(s.delete_if_version(t(0), "/k", v2));
    assert!(!s.delete(t(0), "/k"));
    assert!(!s.delete_if_version(t(0), "/k", Version(0)));
    s.put(t(0), "/k", "me", None).unwrap();
    assert!(s.delete_if_value(t(0), "/k", "me"));
}

#[test]
fn prefix_operations_respect_the_boundary() {
    let mut s = MemoryStore::new();
    for k in [
        "/service/a/x",
        "/service/a/y",
        "/service/ab/x",
        "/service/b",
    ] {
        s.put(t(0), k, "v", None).unwrap();
    }
    assert_eq!(s.range(t(0), "/service/a/").len(), 2);
    let rev = s.revision();
    assert_eq!(s.delete_prefix(t(0), "/service/a/"), 2);
    assert_eq!(s.revision(), rev + 1, "one revision for the whole prefix");
    let keys: Vec<_> = s.range(t(0), "/").into_iter().map(|e| e.key).collect();
    assert_eq!(keys, vec!["/service/ab/x", "/service/b"]);
    assert_eq!(s.delete_prefix(t(0), "/nothing/"), 0);
    assert_eq!(s.revision(), rev + 1);
}

#[test]
fn leader_and_member_expire_when_nobody_renews() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    a.touch_member(&mut s, t(0), &member(1));
    assert!(a.acquire_leader(&mut s, t(1_000)));
    let c = a.get_cluster(&mut s, t(1_000));
    assert!(c.is_leader("a"));
    let lease = a.lease_id().unwrap().to_string();
    assert_eq!(c.leader.as_ref().unwrap().session.as_deref(), Some(&*lease));
    assert_eq!(c.member("a").unwrap().data, member(1));
    // The acquire refreshed the lease: it lasts ttl from the acquire.
    let c = a.get_cluster(&mut s, t(30_999));
    assert!(c.is_leader("a") && c.member("a").is_some());
    let c = a.get_cluster(&mut s, t(31_000));
    assert!(c.is_unlocked());
    assert!(c.members.is_empty());
    // A late renew finds the key gone and reports it; the lease is re-granted.
    assert!(!a.renew_leader(&mut s, t(32_000)));
    assert_ne!(a.lease_id().unwrap().to_string(), lease);
    let mut b = node("b");
    assert!(b.acquire_leader(&mut s, t(32_000)));
    assert!(!a.acquire_leader(&mut s, t(32_000)));
}

#[test]
fn renew_keeps_leader_and_member() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    a.touch_member(&mut s, t(0), &member(1));
    assert!(a.acquire_leader(&mut s, t(0)));
    for step in 1..=10 {
        assert!(a.renew_leader(&mut s, t(step * 10_000)));
    }
    let c = a.get_cluster(&mut s, t(129_999));
    assert!(c.is_leader("a"));
    assert!(
        c.member("a").is_some(),
        "one lease keeps the member key too"
    );
    assert!(a.get_cluster(&mut s, t(130_000)).is_unlocked());
}

#[test]
fn release_and_renew_only_by_the_owner() {
    let mut s = MemoryStore::new();
    let (mut a, mut b) = (node("a"), node("b"));
    assert!(a.acquire_leader(&mut s, t(0)));
    assert!(!b.acquire_leader(&mut s, t(0)));
    assert!(!b.release_leader(&mut s, t(0)));
    assert!(!b.renew_leader(&mut s, t(0)));
    assert!(b.get_cluster(&mut s, t(0)).is_leader("a"));
    assert!(a.release_leader(&mut s, t(0)));
    assert!(!a.release_leader(&mut s, t(0)));
    assert!(b.get_cluster(&mut s, t(0)).is_unlocked());
    assert!(b.acquire_leader(&mut s, t(0)));
    assert!(!a.renew_leader(&mut s, t(0)), "renew after b took the key");
    assert!(a.get_cluster(&mut s, t(0)).is_leader("b"));
}

#[test]
fn renew_rebinds_my_name_on_a_foreign_lease() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    let keys = a.keys().clone();
    let foreign = s.grant_lease(t(0), "a-previous-process", Duration::from_secs(5));
    s.put(t(0), &keys.leader(), "a", Some(foreign)).unwrap();
    let version = s.get(t(0), &keys.leader()).unwrap().version;
    assert!(a.renew_leader(&mut s, t(1_000)));
    let e = s.get(t(1_000), &keys.leader()).unwrap();
    assert_eq!(e.lease, a.lease_id());
    assert!(e.version > version);
    // The foreign lease's expiry no longer takes the key with it.
    assert!(s.get(t(6_000), &keys.leader()).is_some());
    // With my own lease already on it, renew writes nothing.
    let rev = s.revision();
    assert!(a.renew_leader(&mut s, t(7_000)));
    assert_eq!(s.revision(), rev);
}

#[test]
fn ttl_change_takes_effect_with_the_next_lease() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    assert!(a.acquire_leader(&mut s, t(0)));
    let old = a.lease_id().unwrap();
    a.set_timing(DcsTiming {
        ttl: Duration::from_secs(10),
        ..timing()
    });
    assert!(a.renew_leader(&mut s, t(1_000)));
    let new = a.lease_id().unwrap();
    assert_ne!(new, old);
    assert_eq!(s.lease(t(1_000), new).unwrap().ttl, Duration::from_secs(10));
    assert!(a.get_cluster(&mut s, t(10_999)).is_leader("a"));
    assert!(a.get_cluster(&mut s, t(11_000)).is_unlocked());
}

#[test]
fn versioned_keys_reject_stale_writes() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    let cfg = |ttl: f64| DynamicConfig {
        ttl,
        ..Default::default()
    };
    assert!(a.set_config(&mut s, t(0), &cfg(30.0), None));
    let v1 = a.get_cluster(&mut s, t(0)).config.unwrap().version;
    assert!(a.set_config(&mut s, t(0), &cfg(40.0), Some(v1)));
    assert!(!a.set_config(&mut s, t(0), &cfg(50.0), Some(v1)));
    assert_eq!(a.get_cluster(&mut s, t(0)).config.unwrap().value.ttl, 40.0);

    let fo = Failover {
        leader: Some("a".into()),
        member: Some("b".into()),
        scheduled_at: None,
    };
    assert!(a.set_failover(&mut s, t(0), &fo, None));
    let v = a.get_cluster(&mut s, t(0)).failover.unwrap().version;
    assert!(a.set_failover(&mut s, t(0), &Failover::default(), Some(v)));
    assert!(!a.set_failover(&mut s, t(0), &fo, Some(v)));
    assert!(a.get_cluster(&mut s, t(0)).failover_request().is_none());

    let sync = SyncState {
        leader: Some("a".into()),
        sync_standby: vec!["b".into()],
        quorum: 0,
    };
    let v1 = a.set_sync(&mut s, t(0), &sync, None).unwrap();
    let read = a.get_cluster(&mut s, t(0)).sync.unwrap();
    assert_eq!((read.value, read.version), (sync.clone(), v1));
    assert_eq!(
        a.set_sync(&mut s, t(0), &SyncState::default(), Some(Version(v1.0 - 1))),
        None
    );
    assert!(!a.delete_sync(&mut s, t(0), Some(Version(v1.0 - 1))));
    assert!(a.delete_sync(&mut s, t(0), Some(v1)));
    assert!(a.get_cluster(&mut s, t(0)).sync.is_none());
    assert!(a.delete_sync(&mut s, t(0), None));
}

#[test]
fn initialize_is_create_only_and_delete_cluster_clears_the_prefix() {
    let mut s = MemoryStore::new();
    let mut a = node("a");
    let mut other = MemoryDcsNode::new(ClusterKeys::new("service", "robin"), "x", timing());
    assert!(other.initialize(&mut s, t(0), "1"));
    assert!(a.initialize(&mut s, t(0), ""));
    assert!(!a.initialize(&mut s, t(0), "7"));
    assert_eq!(a.get_cluster(&mut s, t(0)).initialize.as_deref(), Some(""));
    a.set_initialize(&mut s, t(0), "7311111111111111111");
    assert_eq!(
        a.get_cluster(&mut s, t(0)).system_identifier(),
        Some("7311111111111111111")
    );
    a.cancel_initialization(&mut s, t(0));
    assert!(a.get_cluster(&mut s, t(0)).initialize.is_none());
    a.set_status(
        &mut s,
        t(0),
        &Status {
            optime: Some(5),
            ..Default::default()
        },
    );
    a.set_history(&mut s, t(0), &History::default());
    a.set_failsafe(&mut s, t(0), &Failsafe::from([("a".into(), "u".into())]));
    a.touch_member(&mut s, t(0), &member(5));
    let c = a.get_cluster(&mut s, t(0));
    assert_eq!(c.status.optime, Some(5));
    assert!(c.history.is_some() && c.failsafe.is_some());
    a.delete_cluster(&mut s, t(0));
    assert_eq!(a.get_cluster(&mut s, t(0)), Cluster::default());
    assert_eq!(
        other.get_cluster(&mut s, t(0)).initialize.as_deref(),
        Some("1"),
        "another cluster's keys survive"
    );
}

fn async_pair(clock: &Arc<ManualClock>) -> (SharedMemoryStore, MemoryDcs, MemoryDcs) {
    let shared = SharedMemoryStore::new();
    let keys = ClusterKeys::new("service", "batman");
    let mk = |name: &str| {
        MemoryDcs::new(
            &shared,
            clock.clone() as Arc<dyn Clock>,
            keys.clone(),
            name,
            timing(),
        )
    };
    let (a, b) = (mk("a"), mk("b"));
    (shared, a, b)
}

#[tokio::test]
async fn watch_wakes_on_decision_keys_and_noticed_expiry_only() {
    let clock = Arc::new(ManualClock::new(t(1_000), 0));
    let (shared, a, b) = async_pair(&clock);
    let mut rx = b.subscribe();
    let other_cluster = MemoryDcs::new(
        &shared,
        clock.clone() as Arc<dyn Clock>,
        ClusterKeys::new("service", "robin"),
        "x",
        timing(),
    );
    a.touch_member(&member(1)).await.unwrap();
    a.set_status(&Status::default()).await.unwrap();
    a.set_history(&History::default()).await.unwrap();
    a.set_failsafe(&Failsafe::new()).await.unwrap();
    assert!(other_cluster.acquire_leader().await.unwrap());
    assert!(
        !rx.has_changed().unwrap(),
        "member/status/history/failsafe writes and other clusters do not wake"
    );
    assert!(a.acquire_leader().await.unwrap());
    assert!(rx.has_changed().unwrap(), "acquire wakes other members");
    rx.borrow_and_update();
    assert!(a.renew_leader().await.unwrap());
    assert!(!rx.has_changed().unwrap(), "a keepalive changes no key");
    for write in 0..4 {
        match write {
            0 => assert!(a.set_config(&DynamicConfig::default(), None).await.unwrap()),
            1 => assert!(a.set_failover(&Failover::default(), None).await.unwrap()),
            2 => assert!(a
                .set_sync(&SyncState::default(), None)
                .await
                .unwrap()
                .is_some()),
            _ => assert!(a.initialize("").await.unwrap()),
        }
        assert!(
            rx.has_changed().unwrap(),
            "decision key write {write} wakes"
        );
        rx.borrow_and_update();
    }
    clock.advance(TTL);
    assert!(!rx.has_changed().unwrap(), "expiry is noticed lazily");
    assert_eq!(shared.expire_now(clock.now()), 2, "a's and x's leases");
    assert!(
        rx.has_changed().unwrap(),
        "noticed expiry of the leader wakes"
    );
    rx.borrow_and_update();
    b.touch_member(&member(2)).await.unwrap();
    clock.advance(TTL);
    assert!(b.get_cluster().await.unwrap().members.is_empty());
    assert!(
        !rx.has_changed().unwrap(),
        "a member's expiry does not wake"
    );
    assert!(b.acquire_leader().await.unwrap());
    rx.borrow_and_update();
    clock.advance(TTL);
    assert!(b.get_cluster().await.unwrap().is_unlocked());
    assert!(
        rx.has_changed().unwrap(),
        "expiry noticed by a read wakes too"
    );
}

#[tokio::test]
async fn unreachable_client_fails_fast_with_the_typed_error() {
    let clock = Arc::new(ManualClock::new(t(1_000), 0));
    let (_shared, a, b) = async_pair(&clock);
    a.set_reachable(false);
    assert!(matches!(
        a.acquire_leader().await,
        Err(DcsError::Unreachable(_))
    ));
    assert!(matches!(
        a.get_cluster().await,
        Err(DcsError::Unreachable(_))
    ));
    assert!(
        b.acquire_leader().await.unwrap(),
        "a's attempt never landed"
    );
    a.set_reachable(true);
    assert!(a.get_cluster().await.unwrap().is_leader("b"));
}

#[tokio::test(start_paused = true)]
async fn latency_delays_calls_and_beyond_retry_timeout_is_unreachable() {
    let clock = Arc::new(ManualClock::new(t(1_000), 0));
    let (_shared, a, b) = async_pair(&clock);
    a.set_latency(Duration::from_secs(3));
    let start = tokio::time::Instant::now();
    assert!(a.acquire_leader().await.unwrap());
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    a.set_latency(Duration::from_secs(11));
    let start = tokio::time::Instant::now();
    assert!(matches!(
        a.release_leader().await,
        Err(DcsError::Unreachable(_))
    ));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(
        b.get_cluster().await.unwrap().is_leader("a"),
        "never applied"
    );
}
