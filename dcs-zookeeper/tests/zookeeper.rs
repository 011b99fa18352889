//! The ZooKeeper backend against real ZooKeeper servers: Patroni's znode layout,
//! session loss, an ensemble losing a server, and a server restart.

use dcs_zookeeper::testing::{TcpProxy, ZkCluster};
use dcs_zookeeper::{ZooKeeperConfig, ZooKeeperDcs};
use ha_core::{
    ClusterKeys, Dcs, DcsError, DcsTiming, DynamicConfig, MemberData, MemberState, Role,
};
use std::time::Duration;
use tokio::time::Instant;
use zookeeper_client::Client;

fn timing(ttl_ms: u64, retry_ms: u64) -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_millis(ttl_ms),
        retry_timeout: Duration::from_millis(retry_ms),
        loop_wait: Duration::from_secs(1),
    }
}

fn dcs(config: &ZooKeeperConfig, scope: &str, name: &str, t: DcsTiming) -> ZooKeeperDcs {
    ZooKeeperDcs::new(config, ClusterKeys::new("service", scope), name, t).unwrap()
}

fn member(state: MemberState, lsn: u64) -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        api_url: Some("http://127.0.0.1:8008/patroni".into()),
        state: Some(state),
        role: Some(Role::Primary),
        xlog_location: Some(lsn),
        ..Default::default()
    }
}

/// Polls `f` every 100 ms until it returns `Some`, panicking with `what` after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_and_member_are_ephemeral_znodes_at_patronis_paths() {
    let zk = ZkCluster::standalone().await.unwrap();
    let a = dcs(&zk.config(), "batman", "pg0", timing(4000, 2000));
    a.touch_member(&member(MemberState::Running, 42))
        .await
        .unwrap();
    assert!(a.acquire_leader().await.unwrap());
    a.set_config(&DynamicConfig::default(), None).await.unwrap();
    let session = a.session_id().expect("a session is open");

    let raw = Client::connect(&zk.hosts()[0]).await.unwrap();
    let (leader, stat) = raw.get_data("/service/batman/leader").await.unwrap();
    assert_eq!(
        leader, b"pg0",
        "the leader znode holds the plain member name"
    );
    assert_ne!(stat.ephemeral_owner, 0, "the leader znode is ephemeral");
    assert_eq!(
        stat.ephemeral_owner, session,
        "owned by the agent's session"
    );

    let (data, stat) = raw.get_data("/service/batman/members/pg0").await.unwrap();
    assert_eq!(
        stat.ephemeral_owner, session,
        "the member znode is ephemeral, same session"
    );
    let parsed: serde_json::Value = serde_json::from_slice(&data).unwrap();
    assert_eq!(parsed["state"], "running");
    assert_eq!(parsed["xlog_location"], 42);

    let (_, stat) = raw.get_data("/service/batman/config").await.unwrap();
    assert_eq!(stat.ephemeral_owner, 0, "config is persistent");

    // The view carries the owner session and a per-leadership version.
    let cluster = a.get_cluster().await.unwrap();
    let l = cluster.leader.clone().unwrap();
    assert_eq!(l.session, Some(session.to_string()));
    assert_eq!(
        cluster.member("pg0").unwrap().session,
        Some(session.to_string())
    );
    assert!(a.release_leader().await.unwrap());
    assert!(a.acquire_leader().await.unwrap());
    let again = a.get_cluster().await.unwrap().leader.unwrap();
    assert_ne!(
        again.version, l.version,
        "a new leadership has a new version"
    );

    // A znode with my name but a foreign owner (say, my previous process) is taken
    // over on renew, as Patroni does.
    raw.delete("/service/batman/leader", None).await.unwrap();
    let opts =
        zookeeper_client::CreateMode::Ephemeral.with_acls(zookeeper_client::Acls::anyone_all());
    raw.create("/service/batman/leader", b"pg0", &opts)
        .await
        .unwrap();
    assert!(a.renew_leader().await.unwrap());
    let (_, stat) = raw.get_data("/service/batman/leader").await.unwrap();
    assert_eq!(
        stat.ephemeral_owner, session,
        "renew re-bound the leader znode to my session"
    );

    // A foreign name is not mine to renew.
    raw.set_data("/service/batman/leader", b"pg9", None)
        .await
        .unwrap();
    assert!(!a.renew_leader().await.unwrap());
    assert!(!a.release_leader().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_loss_removes_leader_and_member_and_is_noticed() {
    let zk = ZkCluster::standalone().await.unwrap();
    let t = timing(3000, 1500);
    let proxy = TcpProxy::start(&zk.hosts()[0]).await.unwrap();
    let a = dcs(
        &ZooKeeperConfig::with_hosts([proxy.address()]),
        "loss",
        "alpha",
        t,
    );
    let b = dcs(&zk.config(), "loss", "beta", t);
    a.touch_member(&member(MemberState::Running, 1))
        .await
        .unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let old_session = a.session_id().unwrap();
    let seen = b.get_cluster().await.unwrap();
    assert!(seen.is_leader("alpha") && seen.member("alpha").is_some());
    let mut rx = b.subscribe();
    rx.borrow_and_update();

    // alpha is cut off from ZooKeeper without closing its session.
    let cut = Instant::now();
    proxy.cut().await;
    let during = a.renew_leader().await;
    assert!(
        matches!(during, Err(DcsError::Unreachable(_))),
        "renew while cut off: {during:?}"
    );
    let took = cut.elapsed();
    assert!(
        took < t.retry_timeout + Duration::from_secs(1),
        "renew took {took:?}"
    );

    // beta is woken by its leader watch when the session expires.
    let woke = loop {
        tokio::time::timeout(t.ttl * 4, rx.changed())
            .await
            .expect("beta woken after alpha's session expired")
            .unwrap();
        if b.get_cluster().await.unwrap().is_unlocked() {
            break cut.elapsed();
        }
    };
    println!(
        "zookeeper: leader znode deletion seen by another client's watch {woke:?} after the \
         owner was cut off (session timeout {:?}): {:?} after nominal expiry",
        t.ttl,
        woke.saturating_sub(t.ttl)
    );
    eventually(
        Duration::from_secs(5),
        "alpha's member znode removed",
        || async {
            b.get_cluster()
                .await
                .unwrap()
                .member("alpha")
                .is_none()
                .then_some(())
        },
    )
    .await;

    // alpha's network comes back: it must learn that it lost the lock, never renew.
    proxy.restore().await.unwrap();
    eventually(
        Duration::from_secs(15),
        "alpha's renew reports the loss",
        || async {
            match a.renew_leader().await {
                Ok(true) => panic!("alpha renewed a leader key its expired session lost"),
                Ok(false) => Some(()),
                Err(e) => {
                    assert!(e.is_unreachable(), "renew after restore: {e}");
                    None
                }
            }
        },
    )
    .await;
    let new_session = a.session_id().unwrap();
    assert_ne!(
        new_session, old_session,
        "a new session replaced the expired one"
    );
    assert!(a.get_cluster().await.unwrap().is_unlocked());
    a.touch_member(&member(MemberState::Running, 2))
        .await
        .unwrap();
    let c = b.get_cluster().await.unwrap();
    assert_eq!(
        c.member("alpha").and_then(|m| m.session.clone()),
        Some(new_session.to_string()),
        "the member record is back, owned by the new session"
    );
    assert!(
        a.acquire_leader().await.unwrap(),
        "the free lock can be taken again"
    );
}

/// Finds which server of `zk` serves `session`, from the `cons` four-letter word.
async fn server_of(zk: &ZkCluster, session: i64) -> Option<usize> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let needle = format!("sid={session:#x}");
    for (i, host) in zk.hosts().iter().enumerate() {
        let Ok(mut s) = tokio::net::TcpStream::connect(host).await else {
            continue;
        };
        let mut out = String::new();
        if s.write_all(b"cons").await.is_ok()
            && s.read_to_string(&mut out).await.is_ok()
            && out.contains(&needle)
        {
            return Some(i);
        }
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ensemble_keeps_working_when_one_server_dies() {
    let mut zk = ZkCluster::ensemble(3).await.unwrap();
    let t = timing(6000, 2000);
    let a = dcs(&zk.config(), "ensemble", "alpha", t);
    let b = dcs(&zk.config(), "ensemble", "beta", t);
    a.touch_member(&member(MemberState::Running, 1))
        .await
        .unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let session = a.session_id().unwrap();

    // Kill the very server alpha is connected to.
    let victim = eventually(Duration::from_secs(5), "alpha's server found", || {
        server_of(&zk, session)
    })
    .await;
    zk.server(victim).kill();

    // alpha's session moves to another server: it stays leader without re-acquiring.
    eventually(
        Duration::from_secs(20),
        "alpha renews after losing its server",
        || async {
            match a.renew_leader().await {
                Ok(true) => Some(()),
                Ok(false) => panic!("alpha lost the leader key when one of three servers died"),
                Err(e) => {
                    assert!(e.is_unreachable(), "renew during failover: {e}");
                    None
                }
            }
        },
    )
    .await;
    assert_eq!(a.session_id(), Some(session), "the same session survived");
    assert!(a.set_config(&DynamicConfig::default(), None).await.unwrap());
    let c = b.get_cluster().await.unwrap();
    assert!(c.is_leader("alpha"));
    assert!(c.member("alpha").is_some());
    assert!(c.config.is_some());
    assert!(!b.acquire_leader().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_server_gives_unreachable_then_recovers() {
    let mut zk = ZkCluster::standalone().await.unwrap();
    let t = timing(3000, 1000);
    let a = dcs(&zk.config(), "restart", "alpha", t);
    assert!(a.initialize("7311111111111111111").await.unwrap());
    assert!(a.acquire_leader().await.unwrap());

    zk.server(0).kill();
    for _ in 0..2 {
        let start = Instant::now();
        let r = a.get_cluster().await;
        assert!(
            matches!(r, Err(DcsError::Unreachable(_))),
            "read with the server down: {r:?}"
        );
        let r = a.renew_leader().await;
        assert!(
            matches!(r, Err(DcsError::Unreachable(_))),
            "renew with the server down: {r:?}"
        );
        assert!(start.elapsed() < 2 * t.retry_timeout + Duration::from_secs(1));
    }

    zk.server(0).start().await.unwrap();
    let cluster = eventually(Duration::from_secs(20), "reads work again", || async {
        a.get_cluster().await.ok()
    })
    .await;
    assert_eq!(
        cluster.initialize.as_deref(),
        Some("7311111111111111111"),
        "persistent data survived"
    );
    // Whether the session survived the restart or not, the answer is definite and
    // consistent with the znode's owner.
    let renewed = eventually(Duration::from_secs(20), "renew answers", || async {
        a.renew_leader().await.ok()
    })
    .await;
    let raw = Client::connect(&zk.hosts()[0]).await.unwrap();
    match raw.get_data("/service/restart/leader").await {
        Ok((_, stat)) if renewed => assert_eq!(Some(stat.ephemeral_owner), a.session_id()),
        Ok((_, stat)) => assert_ne!(Some(stat.ephemeral_owner), a.session_id()),
        Err(e) => assert!(
            !renewed,
            "renew said true but the leader znode is gone: {e}"
        ),
    }
    if !renewed {
        eventually(
            Duration::from_secs(10),
            "the lock can be taken again",
            || async { a.acquire_leader().await.ok().filter(|won| *won) },
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digest_auth_and_acls_protect_the_cluster() {
    use base64::Engine;
    let zk = ZkCluster::standalone().await.unwrap();
    let digest = sha1_smol::Sha1::from("fullauto:secret").digest().bytes();
    let id = format!(
        "fullauto:{}",
        base64::engine::general_purpose::STANDARD.encode(digest)
    );
    let secured: ZooKeeperConfig = serde_json::from_value(serde_json::json!({
        "hosts": zk.hosts().join(","),
        "auth_data": {"digest": "fullauto:secret"},
        "set_acls": {format!("digest:{id}"): ["ALL"]},
    }))
    .unwrap();
    let t = timing(4000, 1500);
    let a = dcs(&secured, "acl", "alpha", t);
    assert!(a.initialize("1").await.unwrap());
    assert!(a.acquire_leader().await.unwrap());
    let b = dcs(&secured, "acl", "beta", t);
    assert_eq!(
        b.get_cluster().await.unwrap().initialize.as_deref(),
        Some("1")
    );

    let authed = Client::connector()
        .with_auth("digest", b"fullauto:secret")
        .connect(&zk.hosts()[0])
        .await
        .unwrap();
    let (acls, _) = authed.get_acl("/service/acl/leader").await.unwrap();
    assert_eq!(acls.len(), 1);
    assert_eq!((acls[0].scheme(), acls[0].id()), ("digest", id.as_str()));
    let raw = Client::connect(&zk.hosts()[0]).await.unwrap();
    assert_eq!(
        raw.get_data("/service/acl/initialize").await.unwrap_err(),
        zookeeper_client::Error::NoAuth
    );

    let stranger = dcs(&zk.config(), "acl", "mallory", t);
    let r = stranger.get_cluster().await;
    assert!(
        matches!(r, Err(DcsError::Config(_))),
        "unauthenticated read: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ttl_change_moves_leader_and_member_to_a_new_session() {
    let zk = ZkCluster::standalone().await.unwrap();
    let a = dcs(&zk.config(), "ttl", "alpha", timing(3000, 1500));
    let b = dcs(&zk.config(), "ttl", "beta", timing(3000, 1500));
    a.touch_member(&member(MemberState::Running, 1))
        .await
        .unwrap();
    assert!(a.acquire_leader().await.unwrap());
    let old = a.session_id().unwrap();

    a.set_timing(timing(5000, 1500));
    assert!(
        a.renew_leader().await.unwrap(),
        "renew across the session change"
    );
    let new = a.session_id().unwrap();
    assert_ne!(new, old, "a new ttl means a new session");

    // The old session is closed by now; the moved znodes must have survived it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let raw = Client::connect(&zk.hosts()[0]).await.unwrap();
    for path in ["/service/ttl/leader", "/service/ttl/members/alpha"] {
        let (_, stat) = raw.get_data(path).await.unwrap();
        assert_eq!(stat.ephemeral_owner, new, "{path} moved to the new session");
    }
    let c = b.get_cluster().await.unwrap();
    assert!(c.is_leader("alpha"));
    assert!(!b.acquire_leader().await.unwrap());
    assert!(a.renew_leader().await.unwrap());
    assert_eq!(a.session_id(), Some(new), "no further session change");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_a_cluster_laid_out_the_way_patroni_writes_it() {
    use zookeeper_client::{Acls, CreateMode};
    let zk = ZkCluster::standalone().await.unwrap();
    let raw = Client::connect(&zk.hosts()[0]).await.unwrap();
    let persistent = CreateMode::Persistent.with_acls(Acls::anyone_all());
    let ephemeral = CreateMode::Ephemeral.with_acls(Acls::anyone_all());
    for dir in [
        "/service",
        "/service/batman",
        "/service/batman/members",
        "/service/batman/optime",
    ] {
        raw.create(dir, b"", &persistent).await.unwrap();
    }
    let persistent_nodes: [(&str, &[u8]); 6] = [
        ("initialize", b"7311111111111111111"),
        ("config", br#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#),
        (
            "history",
            br#"[[1,50331808,"no recovery target specified","2026-01-02T03:04:05+00:00","pg0"]]"#,
        ),
        ("failover", b"{}"),
        ("sync", b"{}"),
        ("optime/leader", b"67108864"),
    ];
    for (key, value) in persistent_nodes {
        raw.create(&format!("/service/batman/{key}"), value, &persistent)
            .await
            .unwrap();
    }
    raw.create("/service/batman/leader", b"pg0", &ephemeral)
        .await
        .unwrap();
    raw.create(
        "/service/batman/members/pg0",
        br#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","version":"4.1.4","xlog_location":67108864,"timeline":2}"#,
        &ephemeral,
    )
    .await
    .unwrap();

    let a = dcs(&zk.config(), "batman", "pg1", timing(4000, 1500));
    let c = a.get_cluster().await.unwrap();
    assert!(c.malformed.is_empty(), "{:?}", c.malformed);
    assert_eq!(c.system_identifier(), Some("7311111111111111111"));
    assert_eq!(c.dynamic_config().ttl, 30.0);
    assert_eq!(c.timeline(), 2);
    assert!(c.failover_request().is_none());
    assert!(c.sync.is_none(), "`{{}}` is Patroni's cleared sync");
    assert_eq!(
        c.status.optime,
        Some(67108864),
        "legacy optime/leader is read"
    );
    let leader = c.leader.as_ref().unwrap();
    assert_eq!(leader.name, "pg0");
    assert_eq!(leader.session, Some(raw.session_id().0.to_string()));
    let m = c.member("pg0").unwrap();
    assert_eq!(m.data.role, Some(Role::Primary));
    assert_eq!(m.data.xlog_location, Some(67108864));
    assert!(
        !a.acquire_leader().await.unwrap(),
        "Patroni's lock is respected"
    );

    // Patroni's own session ends: its ephemerals go and the lock is free.
    drop(raw);
    eventually(
        Duration::from_secs(5),
        "Patroni's leader znode gone",
        || async { a.get_cluster().await.unwrap().is_unlocked().then_some(()) },
    )
    .await;
    assert!(a.acquire_leader().await.unwrap());
}
