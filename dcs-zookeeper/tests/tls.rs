//! `use_ssl: true` against a real ZooKeeper with a TLS client port that needs a
//! client certificate: the server is checked against `cacert`, the client
//! certificate is presented (and is the x509 identity of `set_acls`), and clients
//! without a certificate, with the wrong CA or in plain text get no session.

use dcs_zookeeper::testing::{ClientAuth, ZkCluster};
use dcs_zookeeper::{ZooKeeperConfig, ZooKeeperDcs};
use ha_core::{ClusterKeys, Dcs, DcsError, DcsTiming, DynamicConfig, MemberData, MemberState};
use std::collections::BTreeMap;
use std::time::Duration;
use zookeeper_client::{Client, Error as ZkClientError};

fn timing() -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(4),
        retry_timeout: Duration::from_secs(2),
        loop_wait: Duration::from_secs(1),
    }
}

fn dcs(config: &ZooKeeperConfig, scope: &str, name: &str) -> ZooKeeperDcs {
    ZooKeeperDcs::new(config, ClusterKeys::new("service", scope), name, timing()).unwrap()
}

fn member() -> MemberData {
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        state: Some(MemberState::Running),
        ..Default::default()
    }
}

/// A call on a client that cannot get a session fails as unreachable.
async fn assert_no_session(config: &ZooKeeperConfig, what: &str) {
    let d = dcs(config, "batman", "outsider");
    match d.get_cluster().await {
        // Over TLS the message says what to check.
        Err(DcsError::Unreachable(m)) => {
            assert_eq!(m.contains("TLS: "), config.use_ssl, "{what}: {m}")
        }
        other => panic!("{what}: expected no session (Unreachable), got {other:?}"),
    }
    assert_eq!(d.session_id(), None, "{what}: no session was opened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_checks_the_server_and_presents_the_client_certificate() {
    let zk = ZkCluster::standalone_tls(ClientAuth::Need).await.unwrap();
    let files = zk.tls_files().expect("a TLS cluster");

    // With cacert and the client certificate: reads, writes and the leader lease.
    let config = zk.config();
    assert!(config.use_ssl && config.cert.is_some());
    let a = dcs(&config, "batman", "pg0");
    a.touch_member(&member()).await.unwrap();
    assert!(a.acquire_leader().await.unwrap());
    assert!(a.renew_leader().await.unwrap());
    a.set_config(&DynamicConfig::default(), None).await.unwrap();
    let b = dcs(&config, "batman", "pg1");
    assert!(
        !b.acquire_leader().await.unwrap(),
        "the lease is held by pg0"
    );
    let cluster = b.get_cluster().await.unwrap();
    assert_eq!(
        cluster.leader.as_ref().map(|l| l.name.as_str()),
        Some("pg0")
    );
    assert!(cluster.member("pg0").is_some());
    assert!(a.release_leader().await.unwrap());
    assert!(b.acquire_leader().await.unwrap());

    // The client certificate is the session's x509 identity: znodes created with
    // `set_acls: {CN=fullauto-client: [ALL]}` are usable by it and closed to others.
    let acl_config = ZooKeeperConfig {
        set_acls: BTreeMap::from([("CN=fullauto-client".to_string(), vec!["ALL".to_string()])]),
        ..zk.config()
    };
    let c = dcs(&acl_config, "robin", "pg0");
    c.touch_member(&member()).await.unwrap();
    assert!(c.acquire_leader().await.unwrap());
    assert_eq!(
        c.get_cluster().await.unwrap().leader.map(|l| l.name),
        Some("pg0".to_string())
    );
    let tls = zk.config().tls_options().unwrap().expect("use_ssl");
    let certified = Client::connector()
        .with_tls(tls)
        .secure_connect(&zk.secure_hosts()[0])
        .await
        .unwrap();
    let (acls, _) = certified.get_acl("/service/robin/leader").await.unwrap();
    assert_eq!(
        (acls[0].scheme(), acls[0].id()),
        ("x509", "CN=fullauto-client")
    );
    let anonymous = Client::connect(&zk.hosts()[0]).await.unwrap();
    assert!(matches!(
        anonymous.get_data("/service/robin/leader").await,
        Err(ZkClientError::NoAuth)
    ));

    // Without a client certificate the server (ssl.clientAuth=need) refuses.
    assert_no_session(
        &ZooKeeperConfig {
            cert: None,
            key: None,
            ..zk.config()
        },
        "no client certificate",
    )
    .await;
    // A server whose certificate does not chain to cacert is refused.
    assert_no_session(
        &ZooKeeperConfig {
            cacert: Some(files.other_ca.clone()),
            ..zk.config()
        },
        "server certificate from another CA",
    )
    .await;
    // Plain text on the TLS port gets nowhere either.
    assert_no_session(
        &ZooKeeperConfig::with_hosts(zk.secure_hosts()),
        "plain text to the TLS port",
    )
    .await;
    // The TLS client still works after all that.
    assert!(a.get_cluster().await.unwrap().leader.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unusable_tls_settings_fail_at_construction_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let files = dcs_zookeeper::testing::TlsFiles::create(dir.path()).unwrap();
    let base = ZooKeeperConfig {
        use_ssl: true,
        cacert: Some(files.ca.clone()),
        cert: Some(files.client_cert.clone()),
        key: Some(files.client_key.clone()),
        ..ZooKeeperConfig::with_hosts(["127.0.0.1:1"])
    };
    let new = |c: &ZooKeeperConfig| {
        ZooKeeperDcs::new(c, ClusterKeys::new("service", "s"), "pg0", timing())
            .err()
            .map(|e| e.to_string())
    };
    assert_eq!(new(&base), None, "readable files are accepted");
    let missing = dir.path().join("missing.pem");
    let plain = ZooKeeperConfig {
        use_ssl: false,
        cacert: Some(missing.clone()),
        key_password: Some("unused".into()),
        verify: false,
        ..base.clone()
    };
    assert_eq!(plain.tls_options().unwrap().map(|_| ()), None);
    assert_eq!(
        new(&plain),
        None,
        "without use_ssl the TLS keys are not used"
    );
    let encrypted = dir.path().join("encrypted-key.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .unwrap();
    let traditional = dir.path().join("traditional-key.pem");
    std::fs::write(
        &traditional,
        "-----BEGIN EC PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: AES-256-CBC,00\n\n\
         AAAA\n-----END EC PRIVATE KEY-----\n",
    )
    .unwrap();
    for (key, config) in [
        (
            "cacert",
            ZooKeeperConfig {
                cacert: Some(missing.clone()),
                ..base.clone()
            },
        ),
        (
            "cacert",
            ZooKeeperConfig {
                cacert: Some(files.client_key.clone()),
                ..base.clone()
            },
        ),
        (
            "key",
            ZooKeeperConfig {
                key: Some(missing.clone()),
                ..base.clone()
            },
        ),
        (
            "key",
            ZooKeeperConfig {
                key: Some(encrypted.clone()),
                ..base.clone()
            },
        ),
        (
            "key",
            ZooKeeperConfig {
                key: Some(traditional.clone()),
                ..base.clone()
            },
        ),
        (
            "key_password",
            ZooKeeperConfig {
                key_password: Some("secret".into()),
                ..base.clone()
            },
        ),
        (
            "verify",
            ZooKeeperConfig {
                verify: false,
                ..base.clone()
            },
        ),
        (
            "cert",
            ZooKeeperConfig {
                key: None,
                ..base.clone()
            },
        ),
    ] {
        let e = new(&config).unwrap_or_else(|| panic!("{key}: refused"));
        assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
    }
}
