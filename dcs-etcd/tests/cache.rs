//! The watch-fed cluster cache: what `get_cluster` shows after my writes and other
//! clients' writes, that an unreachable etcd still fails it, and how few requests a
//! steady-state HA cycle makes.

mod common;

use common::{connect, connect_with, fast_timing, member_data};
use dcs_etcd::testing::EtcdCluster;
use ha_core::{Dcs, DcsError, DcsTiming, DynamicConfig, MemberData, Status};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// How much longer than `retry_timeout` a failing call may take (scheduling slack).
const CALL_SLACK: Duration = Duration::from_secs(2);

fn member_at(name: &str, xlog: u64) -> MemberData {
    MemberData {
        xlog_location: Some(xlog),
        ..member_data(name)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn my_own_writes_are_in_my_very_next_read() {
    let etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    a.get_cluster().await.unwrap();
    for round in 0..20u64 {
        let mine = member_at("pg0", round);
        a.touch_member(&mine).await.unwrap();
        let view = a.get_cluster().await.unwrap();
        assert_eq!(
            view.member("pg0").map(|m| &m.data),
            Some(&mine),
            "round {round}"
        );

        assert!(a.acquire_leader().await.unwrap(), "round {round}");
        assert!(
            a.get_cluster().await.unwrap().is_leader("pg0"),
            "round {round}"
        );
        a.set_status(&Status {
            optime: Some(round),
            ..Status::default()
        })
        .await
        .unwrap();
        let config = DynamicConfig {
            ttl: 30.0 + round as f64,
            ..DynamicConfig::default()
        };
        let expected = a.get_cluster().await.unwrap().config.map(|c| c.version);
        assert!(a.set_config(&config, expected).await.unwrap());
        let view = a.get_cluster().await.unwrap();
        assert_eq!(view.status.optime, Some(round), "round {round}");
        assert_eq!(view.config.map(|c| c.value.ttl), Some(30.0 + round as f64));

        assert!(a.release_leader().await.unwrap(), "round {round}");
        assert!(
            a.get_cluster().await.unwrap().is_unlocked(),
            "round {round}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_clients_acknowledged_writes_are_in_my_next_read() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    let b = connect(&etcd, "batman", "pg1").await;
    b.get_cluster().await.unwrap();
    // Another agent: its write was acknowledged before my read started.
    for round in 0..20u64 {
        assert!(a.acquire_leader().await.unwrap(), "round {round}");
        let view = b.get_cluster().await.unwrap();
        assert!(view.is_leader("pg0"), "round {round}: {:?}", view.leader);
        a.touch_member(&member_at("pg0", round)).await.unwrap();
        let view = b.get_cluster().await.unwrap();
        assert_eq!(
            view.member("pg0").and_then(|m| m.data.xlog_location),
            Some(round),
            "round {round}"
        );
        assert!(a.release_leader().await.unwrap(), "round {round}");
        assert!(
            b.get_cluster().await.unwrap().is_unlocked(),
            "round {round}"
        );
    }
    // A client that is not an agent (etcdctl): put, then delete.
    etcd.etcdctl(&["put", "/service/batman/failover", r#"{"leader":"pg0"}"#])
        .unwrap();
    let view = b.get_cluster().await.unwrap();
    assert_eq!(
        view.failover.map(|f| f.value.leader),
        Some(Some("pg0".to_string()))
    );
    etcd.etcdctl(&["del", "/service/batman/failover"]).unwrap();
    assert!(b.get_cluster().await.unwrap().failover.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_key_deleted_behind_my_back_is_written_again() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let a = connect(&etcd, "batman", "pg0").await;
    let mine = member_data("pg0");
    a.touch_member(&mine).await.unwrap();
    a.get_cluster().await.unwrap();
    etcd.etcdctl(&["del", "/service/batman/members/pg0"])
        .unwrap();
    // As the HA loop does: read, then touch with unchanged data.
    assert!(a.get_cluster().await.unwrap().member("pg0").is_none());
    a.touch_member(&mine).await.unwrap();
    assert!(etcd.get("/service/batman/members/pg0").unwrap().is_some());
    assert!(a.get_cluster().await.unwrap().member("pg0").is_some());
}

async fn expect_unreachable(what: &str, retry_timeout: Duration, dcs: &dyn Dcs) {
    let started = Instant::now();
    let out = tokio::time::timeout(retry_timeout + CALL_SLACK, dcs.get_cluster()).await;
    match out {
        Ok(Err(DcsError::Unreachable(msg))) => assert!(!msg.is_empty()),
        Ok(Ok(view)) => panic!(
            "{what}: get_cluster served {:?} after {:?} instead of failing",
            view.leader,
            started.elapsed()
        ),
        other => panic!(
            "{what}: expected Unreachable, got {other:?} after {:?}",
            started.elapsed()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_etcd_fails_get_cluster_instead_of_serving_the_cache() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let timing = fast_timing();
    let a = connect(&etcd, "batman", "pg0").await;
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    assert!(a.get_cluster().await.unwrap().is_leader("pg0"));

    // Frozen: the watch connection stays open but answers nothing.
    etcd.pause(0);
    expect_unreachable("frozen etcd", timing.retry_timeout, &a).await;
    etcd.resume(0);
    let deadline = Instant::now() + Duration::from_secs(15);
    while a.get_cluster().await.is_err() {
        assert!(Instant::now() < deadline, "no recovery after thawing etcd");
    }

    // Stopped: the connection is gone.
    etcd.stop(0);
    expect_unreachable("stopped etcd", timing.retry_timeout, &a).await;
}

/// The sum of the etcd counter `metric` over all its label sets.
fn etcd_counter(etcd: &EtcdCluster, metric: &str) -> f64 {
    etcd_method_counter(etcd, metric, "")
}

/// The sum of the etcd counter `metric` over the label sets that contain `labels`.
fn etcd_method_counter(etcd: &EtcdCluster, metric: &str, labels: &str) -> f64 {
    let address = etcd.hosts()[0].clone();
    let mut stream = TcpStream::connect(&address).unwrap();
    write!(
        stream,
        "GET /metrics HTTP/1.0\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).unwrap();
    body.lines()
        .filter(|l| l.starts_with(&format!("{metric}{{")) && l.contains(labels))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// gRPC calls etcd completed while `cycles` ran (a short settle first, so calls
/// that end with a stream close are counted).
async fn calls_during<F, Fut>(etcd: &EtcdCluster, cycles: F) -> f64
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = etcd_counter(etcd, "grpc_server_handled_total");
    cycles().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    etcd_counter(etcd, "grpc_server_handled_total") - before
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_state_cycles_make_at_most_a_lease_refresh_and_the_leader_txn() {
    let etcd = EtcdCluster::start_single().unwrap();
    // A long ttl: the member lease is refreshed only when it is due
    // (ttl - loop_wait - 2 * retry_timeout = 25 s), not every cycle.
    let timing = DcsTiming {
        ttl: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(2),
        loop_wait: Duration::from_secs(1),
    };
    let leader = connect_with(&etcd.config(), "batman", "pg0", timing).await;
    let replica = connect_with(&etcd.config(), "batman", "pg1", timing).await;
    leader.touch_member(&member_data("pg0")).await.unwrap();
    replica.touch_member(&member_data("pg1")).await.unwrap();
    assert!(leader.acquire_leader().await.unwrap());
    const CYCLES: u32 = 10;

    let replica_calls = calls_during(&etcd, || async {
        for _ in 0..CYCLES {
            let view = replica.get_cluster().await.unwrap();
            assert!(view.is_leader("pg0"));
            replica.touch_member(&member_data("pg1")).await.unwrap();
        }
    })
    .await;
    eprintln!("{CYCLES} replica cycles: {replica_calls} gRPC calls");
    // Before the cache: a range read and a member put every cycle.
    assert!(
        replica_calls <= 1.0,
        "{CYCLES} replica cycles with unchanged data made {replica_calls} gRPC calls"
    );

    let leader_calls = calls_during(&etcd, || async {
        for _ in 0..CYCLES {
            let view = leader.get_cluster().await.unwrap();
            assert!(view.is_leader("pg0"));
            assert!(leader.renew_leader().await.unwrap());
            leader.touch_member(&member_data("pg0")).await.unwrap();
        }
    })
    .await;
    eprintln!("{CYCLES} leader cycles: {leader_calls} gRPC calls");
    // renew_leader: one lease keepalive and one txn; nothing else.
    assert!(
        leader_calls <= f64::from(2 * CYCLES),
        "{CYCLES} leader cycles made {leader_calls} gRPC calls"
    );

    // A changed member record is still written at once.
    let changed = calls_during(&etcd, || async {
        replica.touch_member(&member_at("pg1", 7)).await.unwrap();
    })
    .await;
    assert!(changed >= 1.0, "a changed member record was not written");
    let view = leader.get_cluster().await.unwrap();
    assert_eq!(
        view.member("pg1").and_then(|m| m.data.xlog_location),
        Some(7)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lease_with_no_slack_is_refreshed_every_cycle_even_when_nothing_is_written() {
    let etcd = EtcdCluster::start_single().unwrap();
    // ttl - loop_wait - 2 * retry_timeout < 0: refresh every cycle.
    let timing = fast_timing();
    let replica = connect_with(&etcd.config(), "batman", "pg1", timing).await;
    let other = connect_with(&etcd.config(), "batman", "pg0", timing).await;
    replica.touch_member(&member_data("pg1")).await.unwrap();
    let lease = replica.lease_id().expect("a lease after the first write");
    // Longer than the ttl in all: only the refreshes keep the member key.
    const CYCLES: u32 = 12;
    const KEEPALIVE: &str = r#"grpc_method="LeaseKeepAlive""#;
    // Refreshes are messages on one keepalive stream, counted as they arrive.
    let received = || etcd_method_counter(&etcd, "grpc_server_msg_received_total", KEEPALIVE);
    let streams = || etcd_method_counter(&etcd, "grpc_server_started_total", KEEPALIVE);
    let (received_before, streams_before) = (received(), streams());
    for _ in 0..CYCLES {
        // Cycles are at least loop_wait apart; a third of it is enough here.
        tokio::time::sleep(timing.loop_wait / 3).await;
        replica.get_cluster().await.unwrap();
        replica.touch_member(&member_data("pg1")).await.unwrap();
    }
    let refreshes = received() - received_before;
    let opened = streams() - streams_before;
    assert!(
        refreshes >= f64::from(CYCLES),
        "{CYCLES} cycles refreshed the lease only {refreshes} times"
    );
    // One stream for them all, not one per refresh.
    assert!(
        opened <= 1.0,
        "{CYCLES} refreshes opened {opened} keepalive streams"
    );
    // The refreshes reached etcd: the key written first is still there, on the
    // same lease, after more than a ttl.
    assert_eq!(replica.lease_id(), Some(lease));
    let view = other.get_cluster().await.unwrap();
    let record = view.member("pg1").expect("pg1's member key expired");
    assert_eq!(record.session, Some(lease.to_string()));
}
