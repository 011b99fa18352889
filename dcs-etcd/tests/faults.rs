//! etcd failures: a dead member of three, a stopped and restarted etcd, wrong
//! credentials and bad TLS set-ups.

mod common;

use common::{connect, connect_with, fast_timing, member_data};
use dcs_etcd::testing::{EtcdCluster, TestCerts};
use dcs_etcd::{EtcdConfig, EtcdDcs};
use ha_core::{Dcs, DcsError, DcsTiming, DynamicConfig};
use std::time::{Duration, Instant};

/// How much longer than `retry_timeout` a failing call may take (scheduling slack).
const CALL_SLACK: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_continue_when_one_of_three_members_dies() {
    let mut etcd = EtcdCluster::start(3).unwrap();
    let timing = DcsTiming {
        ttl: Duration::from_secs(10),
        retry_timeout: Duration::from_secs(4),
        loop_wait: Duration::from_secs(2),
    };
    let a = connect_with(&etcd.config(), "batman", "pg0", timing).await;
    let b = connect_with(&etcd.config(), "batman", "pg1", timing).await;
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let mut wake = b.subscribe();

    // Kill the raft leader: the hardest member to lose (an election follows).
    let status = etcd
        .etcdctl(&["endpoint", "status", "--cluster", "-w", "fields"])
        .unwrap();
    let raft_leader = status
        .split("\n\n")
        .find_map(|block| {
            let field = |name: &str| {
                block
                    .lines()
                    .find(|l| l.starts_with(&format!("\"{name}\"")))
                    .and_then(|l| l.split(" : ").nth(1))
                    .map(str::trim)
                    .map(str::to_string)
            };
            let member = field("MemberID")?;
            let leader = field("Leader")?;
            let endpoint = field("Endpoint")?;
            (member == leader).then_some(endpoint)
        })
        .expect("endpoint status names the raft leader");
    let victim = etcd
        .endpoints()
        .iter()
        .position(|e| raft_leader.contains(e.trim_start_matches("http://")))
        .unwrap();
    etcd.kill(victim);

    for round in 0..10 {
        assert!(a.renew_leader().await.unwrap(), "round {round}: renew");
        a.touch_member(&member_data("pg0")).await.unwrap();
        let view = b.get_cluster().await.unwrap();
        assert!(view.is_leader("pg0"), "round {round}: {:?}", view.leader);
        assert!(view.member("pg0").is_some());
        assert!(b
            .set_config(&DynamicConfig::default(), view.config.map(|c| c.version))
            .await
            .unwrap());
    }
    // A new agent configured with all three endpoints starts and works too.
    let c = connect_with(&etcd.config(), "batman", "pg2", timing).await;
    assert!(!c.acquire_leader().await.unwrap());

    // pg1's watch survived the loss (or reconnected): the release wakes it.
    wake.borrow_and_update();
    assert!(a.release_leader().await.unwrap());
    let woke = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            wake.changed().await.unwrap();
            if b.get_cluster().await.unwrap().is_unlocked() {
                break;
            }
        }
    })
    .await;
    assert!(
        woke.is_ok(),
        "no wake-up for the release after a member died"
    );
}

async fn expect_unreachable<T: std::fmt::Debug>(
    what: &str,
    retry_timeout: Duration,
    fut: impl std::future::Future<Output = Result<T, DcsError>>,
) {
    let started = Instant::now();
    let out = tokio::time::timeout(retry_timeout + CALL_SLACK, fut).await;
    match out {
        Ok(Err(DcsError::Unreachable(msg))) => assert!(!msg.is_empty()),
        other => panic!(
            "{what} with etcd down: expected Unreachable, got {other:?} after {:?}",
            started.elapsed()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_etcd_gives_unreachable_then_recovers_with_a_new_lease() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let timing = fast_timing();
    let a = connect(&etcd, "batman", "pg0").await;
    let b = connect(&etcd, "batman", "pg1").await;
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let mut wake = b.subscribe();

    etcd.stop(0);
    expect_unreachable("get_cluster", timing.retry_timeout, a.get_cluster()).await;
    expect_unreachable("renew_leader", timing.retry_timeout, a.renew_leader()).await;
    expect_unreachable(
        "touch_member",
        timing.retry_timeout,
        a.touch_member(&member_data("pg0")),
    )
    .await;
    expect_unreachable(
        "set_config",
        timing.retry_timeout,
        a.set_config(&DynamicConfig::default(), None),
    )
    .await;
    wake.borrow_and_update();

    etcd.restart(0).unwrap();
    let recovered_by = Instant::now() + Duration::from_secs(15);
    let view = loop {
        match a.get_cluster().await {
            Ok(v) => break v,
            Err(e) => {
                assert!(e.is_unreachable(), "{e}");
                assert!(Instant::now() < recovered_by, "no recovery: {e}");
            }
        }
    };
    assert!(view.is_leader("pg0"), "{:?}", view.leader);
    assert!(a.renew_leader().await.unwrap());
    // The watch came back and said so (events may have been missed meanwhile).
    tokio::time::timeout(Duration::from_secs(10), wake.changed())
        .await
        .expect("no wake-up after etcd came back")
        .unwrap();

    // A lease that is gone (expired or revoked while we were away): renew reports the
    // loss (the key is not taken back silently), and a new acquire gets a new lease.
    let old = a.lease_id().unwrap();
    etcd.revoke_lease(old).unwrap();
    assert_eq!(etcd.get("/service/batman/leader").unwrap(), None);
    assert!(!a.renew_leader().await.unwrap());
    assert!(a.acquire_leader().await.unwrap());
    let new = a.lease_id().unwrap();
    assert_ne!(new, old);
    a.touch_member(&member_data("pg0")).await.unwrap();
    let view = b.get_cluster().await.unwrap();
    let leader = view.leader.clone().unwrap();
    assert_eq!(
        (leader.name.as_str(), leader.session),
        ("pg0", Some(new.to_string()))
    );
    assert_eq!(view.member("pg0").unwrap().session, Some(new.to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_a_config_error_at_start_up() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    etcd.enable_auth("s3cret").unwrap();
    let with_user = |user: Option<&str>, password: &str| EtcdConfig {
        username: user.map(str::to_string),
        password: Some(password.to_string()).filter(|p| !p.is_empty()),
        ..etcd.config()
    };
    for (user, password, why) in [
        (Some("root"), "wrong", "wrong password"),
        (Some("nobody"), "s3cret", "unknown user"),
        (None, "", "no credentials"),
    ] {
        let err = EtcdDcs::connect(
            &with_user(user, password),
            "service",
            "batman",
            "pg0",
            fast_timing(),
        )
        .await
        .expect_err(why);
        match &err {
            DcsError::Config(msg) => assert!(
                msg.contains("credentials") || msg.contains("permission"),
                "{why}: {msg}"
            ),
            other => panic!("{why}: expected a config error, got {other:?}"),
        }
    }
    let good = connect_with(
        &with_user(Some("root"), "s3cret"),
        "batman",
        "pg0",
        fast_timing(),
    )
    .await;
    assert!(good.acquire_leader().await.unwrap());
    assert_eq!(
        etcd.get("/service/batman/leader").unwrap().as_deref(),
        Some("pg0")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_works_and_bad_tls_set_ups_are_config_errors() {
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(certs_dir.path()).unwrap();
    let mut etcd = EtcdCluster::start_tls(1, certs.clone()).unwrap();

    let good = connect(&etcd, "batman", "pg0").await;
    assert!(good.acquire_leader().await.unwrap());
    assert_eq!(
        etcd.get("/service/batman/leader").unwrap().as_deref(),
        Some("pg0")
    );

    let port = etcd.endpoint(0).rsplit(':').next().unwrap().to_string();
    let base = etcd.config();
    let cases = [
        (
            "CA that did not sign the server certificate",
            EtcdConfig {
                cacert: Some(certs.other_ca.clone()),
                ..base.clone()
            },
        ),
        (
            "plain http to a TLS port",
            EtcdConfig::with_hosts(&[format!("http://127.0.0.1:{port}")]),
        ),
        (
            "TLS files with an http:// endpoint",
            EtcdConfig {
                hosts: vec![format!("http://127.0.0.1:{port}")],
                ..base.clone()
            },
        ),
        (
            "missing key file",
            EtcdConfig {
                key: Some(certs_dir.path().join("nope.key")),
                ..base.clone()
            },
        ),
        (
            "certificate given as the key",
            EtcdConfig {
                key: Some(certs.client_cert.clone()),
                ..base.clone()
            },
        ),
        (
            "no client certificate for a server that requires one",
            EtcdConfig {
                cert: None,
                key: None,
                ..base.clone()
            },
        ),
    ];
    for (why, config) in cases {
        let started = Instant::now();
        let out = EtcdDcs::connect(&config, "service", "batman", "pg1", fast_timing()).await;
        match out {
            Err(DcsError::Config(msg)) => eprintln!("{why}: {msg}"),
            Err(other) => panic!("{why}: expected a config error, got {other:?}"),
            Ok(_) => panic!(
                "{why}: connect succeeded after {:?}; expected a config error",
                started.elapsed()
            ),
        }
    }

    // Username and password on top of the client certificate.
    etcd.enable_auth("s3cret").unwrap();
    let with_user = |password: &str| EtcdConfig {
        username: Some("root".into()),
        password: Some(password.into()),
        ..base.clone()
    };
    let authed = connect_with(&with_user("s3cret"), "batman", "pg2", fast_timing()).await;
    authed.touch_member(&member_data("pg2")).await.unwrap();
    assert!(authed.get_cluster().await.unwrap().member("pg2").is_some());
    match EtcdDcs::connect(
        &with_user("wrong"),
        "service",
        "batman",
        "pg3",
        fast_timing(),
    )
    .await
    {
        Err(DcsError::Config(msg)) => assert!(msg.contains("credentials"), "{msg}"),
        Err(other) => panic!("wrong password over TLS: expected a config error, got {other:?}"),
        Ok(_) => panic!("wrong password over TLS: connect succeeded"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_continue_when_one_of_three_members_freezes() {
    let mut etcd = EtcdCluster::start(3).unwrap();
    let timing = DcsTiming {
        ttl: Duration::from_secs(10),
        retry_timeout: Duration::from_secs(4),
        loop_wait: Duration::from_secs(2),
    };
    let a = connect_with(&etcd.config(), "batman", "pg0", timing).await;
    a.touch_member(&member_data("pg0")).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    // A frozen member keeps its connections open and answers nothing: requests sent
    // to it time out and must be retried on the others.
    etcd.pause(0);
    for round in 0..10 {
        let started = Instant::now();
        let renewed = a.renew_leader().await;
        assert!(
            matches!(renewed, Ok(true)),
            "round {round}: renew gave {renewed:?} after {:?}",
            started.elapsed()
        );
        a.touch_member(&member_data("pg0")).await.unwrap();
        assert!(a.get_cluster().await.unwrap().is_leader("pg0"));
    }
    etcd.resume(0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_etcd_gives_unreachable_within_the_bound_then_recovers() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let timing = fast_timing();
    let a = connect(&etcd, "batman", "pg0").await;
    assert!(a.acquire_leader().await.unwrap());
    // Open connections, no answers: the case a plain "connection refused" test misses.
    etcd.pause(0);
    expect_unreachable("renew_leader", timing.retry_timeout, a.renew_leader()).await;
    expect_unreachable("get_cluster", timing.retry_timeout, a.get_cluster()).await;
    expect_unreachable("release_leader", timing.retry_timeout, a.release_leader()).await;
    etcd.resume(0);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match a.renew_leader().await {
            Ok(renewed) => {
                // Renewed if the lease survived the freeze; otherwise the key expired
                // and must be acquired again (renew never re-creates it).
                if !renewed {
                    assert!(
                        a.acquire_leader().await.unwrap(),
                        "cannot re-acquire after thawing"
                    );
                }
                break;
            }
            Err(e) => assert!(
                e.is_unreachable() && Instant::now() < deadline,
                "no recovery after thawing etcd: {e}"
            ),
        }
    }
}
