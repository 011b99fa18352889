//! Consul-specific behaviour of `ConsulDcs` against the emulator: unreachable and
//! hung agents, recovery on the same port, lease loss without renewals, session
//! re-binding, ttl changes, the agent's TTL minimum and ACL tokens.

use dcs_consul::emulator::{Emulator, EmulatorConfig};
use dcs_consul::{ConsulConfig, ConsulDcs};
use ha_core::{Dcs, DcsError, DcsTiming, MemberData, MemberState};
use serde_json::Value;
use std::time::Duration;
use tokio::time::Instant;

fn timing(ttl: u64, retry_timeout_ms: u64) -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(ttl),
        retry_timeout: Duration::from_millis(retry_timeout_ms),
        loop_wait: Duration::from_secs(1),
    }
}

fn short_ttls() -> EmulatorConfig {
    EmulatorConfig {
        session_ttl_min: Duration::from_secs(1),
        ..EmulatorConfig::default()
    }
}

fn member() -> MemberData {
    MemberData {
        state: Some(MemberState::Running),
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        ..MemberData::default()
    }
}

fn dcs(url: &str, scope: &str, name: &str, timing: DcsTiming) -> ConsulDcs {
    ConsulDcs::new(&ConsulConfig::with_url(url), "service", scope, name, timing).unwrap()
}

async fn session_ttl(url: &str, id: &str) -> String {
    let info: Value = reqwest::get(format!("{url}/v1/session/info/{id}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info[0]["TTL"].as_str().unwrap_or_default().to_string()
}

/// Awaits `fut`, which must fail with `Unreachable` within retry_timeout (+ slack
/// for scheduling on a loaded machine).
async fn expect_unreachable<T: std::fmt::Debug>(
    what: &str,
    retry_timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, DcsError>>,
) {
    let start = Instant::now();
    let out = fut.await;
    let took = start.elapsed();
    eprintln!("{what}: {took:?} (retry_timeout {retry_timeout:?})");
    assert!(
        matches!(out, Err(DcsError::Unreachable(_))),
        "{what}: expected Unreachable, got {out:?}"
    );
    assert!(
        took <= retry_timeout + Duration::from_secs(1),
        "{what} took {took:?}, bound {retry_timeout:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_agent_gives_typed_errors_within_the_bound_then_recovers_on_the_same_port() {
    let emulator = Emulator::new(short_ttls());
    let server = emulator
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = server.addr();
    let url = server.url();
    let t = timing(10, 1000);
    let a = dcs(&url, "recover", "alpha", t);
    let mut rx = a.subscribe();
    a.touch_member(&member()).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());

    server.stop().await;
    expect_unreachable("get_cluster", t.retry_timeout, a.get_cluster()).await;
    expect_unreachable("renew_leader", t.retry_timeout, a.renew_leader()).await;
    expect_unreachable("touch_member", t.retry_timeout, a.touch_member(&member())).await;
    expect_unreachable(
        "set_config",
        t.retry_timeout,
        a.set_config(&Default::default(), None),
    )
    .await;

    // The agent comes back on the same port; the servers kept the state, and the
    // session (ttl 10s) is still alive.
    rx.borrow_and_update();
    let _server = emulator.serve(addr).await.unwrap();
    assert!(a.renew_leader().await.unwrap());
    let cluster = a.get_cluster().await.unwrap();
    assert!(cluster.is_leader("alpha"));
    assert!(cluster.member("alpha").is_some());
    // The watcher reconnected and says changes may have been missed.
    tokio::time::timeout(Duration::from_secs(10), rx.changed())
        .await
        .expect("no wake-up after the agent came back")
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hung_agent_gives_typed_errors_within_the_bound() {
    let (emulator, server) = Emulator::start(short_ttls()).await.unwrap();
    let t = timing(10, 1000);
    let a = dcs(&server.url(), "hung", "alpha", t);
    assert!(a.acquire_leader().await.unwrap());
    emulator.set_frozen(true);
    expect_unreachable("get_cluster", t.retry_timeout, a.get_cluster()).await;
    expect_unreachable("renew_leader", t.retry_timeout, a.renew_leader()).await;
    expect_unreachable("initialize", t.retry_timeout, a.initialize("")).await;
    emulator.set_frozen(false);
    assert!(a.renew_leader().await.unwrap());
}

#[tokio::test]
async fn a_stuck_loop_loses_its_lease_and_comes_back_with_a_new_session() {
    let (_emulator, server) = Emulator::start(short_ttls()).await.unwrap();
    let t = timing(2, 1000);
    let a = dcs(&server.url(), "stuck", "alpha", t);
    let observer = dcs(&server.url(), "stuck", "observer", t);
    a.touch_member(&member()).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let first = a.session_id().await.unwrap();

    // No call for longer than ttl: nothing renews the session behind our back.
    let start = Instant::now();
    loop {
        let cluster = observer.get_cluster().await.unwrap();
        if cluster.leader.is_none() && cluster.member("alpha").is_none() {
            break;
        }
        assert!(
            start.elapsed() < t.ttl + Duration::from_secs(3),
            "the lease outlived ttl without renewals"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(start.elapsed() >= t.ttl - Duration::from_millis(100));

    // The leader key is gone: renewing reports it, on a fresh session.
    assert!(!a.renew_leader().await.unwrap());
    let second = a.session_id().await.unwrap();
    assert_ne!(first, second);
    a.touch_member(&member()).await.unwrap();
    let cluster = observer.get_cluster().await.unwrap();
    assert_eq!(
        cluster.member("alpha").and_then(|m| m.session.clone()),
        Some(second)
    );
}

#[tokio::test]
async fn renew_rebinds_my_leader_key_held_by_an_old_session() {
    let (_emulator, server) = Emulator::start(short_ttls()).await.unwrap();
    let t = timing(2, 1000);
    // The agent restarts: a new process with the same name and a new session.
    let before = dcs(&server.url(), "rebind", "alpha", t);
    assert!(before.acquire_leader().await.unwrap());
    let old = before.session_id().await.unwrap();
    drop(before);
    let after = dcs(&server.url(), "rebind", "alpha", t);
    assert!(after.renew_leader().await.unwrap());
    let new = after.session_id().await.unwrap();
    assert_ne!(old, new);
    let leader = after.get_cluster().await.unwrap().leader.unwrap();
    assert_eq!(leader.session.as_deref(), Some(new.as_str()));

    // The old session expires holding nothing: the key survives it while the
    // new holder keeps renewing.
    let start = Instant::now();
    while start.elapsed() < t.ttl + Duration::from_secs(1) {
        tokio::time::sleep(t.ttl / 4).await;
        assert!(after.renew_leader().await.unwrap());
    }
    let leader = after.get_cluster().await.unwrap().leader.unwrap();
    assert_eq!(leader.name, "alpha");
    assert_eq!(leader.session.as_deref(), Some(new.as_str()));

    // Another member's renew never takes the key.
    let beta = dcs(&server.url(), "rebind", "beta", t);
    assert!(!beta.renew_leader().await.unwrap());
    assert!(!beta.acquire_leader().await.unwrap());
}

#[tokio::test]
async fn a_changed_ttl_moves_leader_and_member_to_a_new_session() {
    let (_emulator, server) = Emulator::start(short_ttls()).await.unwrap();
    let url = server.url();
    let a = dcs(&url, "ttl-change", "alpha", timing(3, 1000));
    a.touch_member(&member()).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let old = a.session_id().await.unwrap();
    assert_eq!(session_ttl(&url, &old).await, "3s");

    a.set_timing(timing(5, 1000));
    assert!(a.renew_leader().await.unwrap());
    let new = a.session_id().await.unwrap();
    assert_ne!(old, new);
    assert_eq!(session_ttl(&url, &new).await, "5s");
    a.touch_member(&member()).await.unwrap();
    let cluster = a.get_cluster().await.unwrap();
    assert_eq!(
        cluster.leader.as_ref().and_then(|l| l.session.as_deref()),
        Some(new.as_str())
    );
    assert_eq!(
        cluster.member("alpha").and_then(|m| m.session.as_deref()),
        Some(new.as_str())
    );
}

#[tokio::test]
async fn the_agents_ttl_minimum_is_used_when_ttl_is_below_it() {
    // Consul's default session_ttl_min is 10s.
    let (_emulator, server) = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let a = dcs(&server.url(), "ttl-min", "alpha", timing(3, 1000));
    assert!(a.acquire_leader().await.unwrap());
    let id = a.session_id().await.unwrap();
    assert_eq!(session_ttl(&server.url(), &id).await, "10s");
}

#[tokio::test]
async fn acl_token_is_sent_and_a_missing_one_is_a_config_error() {
    let (_emulator, server) = Emulator::start(EmulatorConfig {
        acl_token: Some("s3cret".into()),
        ..short_ttls()
    })
    .await
    .unwrap();
    let t = timing(3, 1000);
    let anonymous = dcs(&server.url(), "acl", "alpha", t);
    assert!(matches!(
        anonymous.get_cluster().await,
        Err(DcsError::Config(_))
    ));
    let config = ConsulConfig {
        token: Some("s3cret".into()),
        ..ConsulConfig::with_url(server.url())
    };
    let a = ConsulDcs::new(&config, "service", "acl", "alpha", t).unwrap();
    a.touch_member(&member()).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    assert!(a.get_cluster().await.unwrap().is_leader("alpha"));
}
