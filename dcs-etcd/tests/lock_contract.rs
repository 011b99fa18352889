//! Patroni's etcd3 lock contract against a real single-member etcd.

mod common;

use common::{connect, member_data};
use dcs_etcd::testing::EtcdCluster;
use ha_core::Dcs;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_key_is_plain_name_at_patroni_path() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    let b = connect(&etcd, "batman", "pg1").await;
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    assert!(!b.acquire_leader().await.unwrap());
    assert!(
        !a.acquire_leader().await.unwrap(),
        "create-only: a second acquire fails"
    );

    assert_eq!(
        etcd.get("/service/batman/leader").unwrap().as_deref(),
        Some("pg0")
    );
    let member = etcd.get("/service/batman/members/pg0").unwrap().unwrap();
    assert!(member.contains(r#""state":"running""#), "{member}");
    // Both keys are bound to pg0's one lease.
    let lease_hex = format!("{:x}", a.lease_id().unwrap());
    let ttl = etcd
        .etcdctl(&["lease", "timetolive", "--keys", &lease_hex])
        .unwrap();
    assert!(ttl.contains("/service/batman/leader"), "{ttl}");
    assert!(ttl.contains("/service/batman/members/pg0"), "{ttl}");

    let view = b.get_cluster().await.unwrap();
    let leader = view.leader.clone().unwrap();
    assert_eq!(leader.name, "pg0");
    assert_eq!(leader.session, Some(a.lease_id().unwrap().to_string()));
    assert_eq!(view.members.len(), 1);

    assert!(a.renew_leader().await.unwrap());
    assert!(
        !b.renew_leader().await.unwrap(),
        "pg1 cannot renew pg0's key"
    );
    assert!(!b.release_leader().await.unwrap());
    assert_eq!(
        etcd.get("/service/batman/leader").unwrap().as_deref(),
        Some("pg0")
    );
    assert!(a.release_leader().await.unwrap());
    assert_eq!(etcd.get("/service/batman/leader").unwrap(), None);
    assert!(b.acquire_leader().await.unwrap());
    assert!(!a.renew_leader().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_rebinds_my_name_on_a_foreign_lease() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    // The key carries my name but another lease (e.g. written by my previous process).
    let grant = etcd.etcdctl(&["lease", "grant", "60"]).unwrap();
    let foreign = grant.split_whitespace().nth(1).unwrap().to_string();
    etcd.etcdctl(&["put", "--lease", &foreign, "/service/batman/leader", "pg0"])
        .unwrap();
    assert!(!a.acquire_leader().await.unwrap());
    assert!(a.renew_leader().await.unwrap());
    let view = a.get_cluster().await.unwrap();
    assert_eq!(
        view.leader.unwrap().session,
        Some(a.lease_id().unwrap().to_string()),
        "re-bound to my lease"
    );
    // The key gone (expired or released): renew reports the loss and does not take the
    // key back; that is a new leader race for the HA engine to decide.
    etcd.etcdctl(&["del", "/service/batman/leader"]).unwrap();
    assert!(!a.renew_leader().await.unwrap());
    assert_eq!(etcd.get("/service/batman/leader").unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_agent_loses_leader_and_member_keys_within_ttl() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    let observer = connect(&etcd, "batman", "pg1").await;
    let mut wake = observer.subscribe();
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    assert!(a.renew_leader().await.unwrap());
    let last_renewal = Instant::now();
    drop(a); // no background keepalive: nothing refreshes the lease any more
    wake.borrow_and_update();

    let ttl = common::fast_timing().ttl;
    let gone_at = loop {
        let view = observer.get_cluster().await.unwrap();
        if view.leader.is_none() && view.members.is_empty() {
            break last_renewal.elapsed();
        }
        assert!(
            last_renewal.elapsed() < ttl + Duration::from_secs(5),
            "keys still present long after ttl"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        gone_at <= ttl + Duration::from_secs(1),
        "keys vanished {gone_at:?} after the last renewal (ttl {ttl:?})"
    );
    // The deletions reached the other client's watch.
    tokio::time::timeout(Duration::from_secs(2), wake.changed())
        .await
        .unwrap()
        .unwrap();
    assert!(etcd.get("/service/batman/leader").unwrap().is_none());
}
