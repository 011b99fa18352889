//! Every accepted form of the `etcd3` section connects to a real etcd through the
//! agent's own path (config file ⇒ typed section ⇒ `connect_dcs`), and they all
//! see the same keys.

use agent_bin::config::{Config, EnvMap};
use agent_bin::dcs_factory::connect_dcs;
use dcs_etcd::testing::EtcdCluster;
use ha_core::DcsTiming;
use std::time::Duration;

const BASE: &str = r#"
scope: forms
name: pg0
restapi: {listen: 127.0.0.1:18008, connect_address: 127.0.0.1:18008}
postgresql:
  listen: 127.0.0.1:15432
  connect_address: 127.0.0.1:15432
  data_dir: /data
  authentication:
    superuser: {username: postgres, password: a}
    replication: {username: replicator, password: b}
"#;

fn timing() -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(10),
        retry_timeout: Duration::from_secs(5),
        loop_wait: Duration::from_secs(1),
    }
}

async fn initialize_value(section: &str, env: &EnvMap) -> Option<String> {
    let (cfg, warnings) = Config::from_yaml_str(&format!("{BASE}{section}"), env)
        .unwrap_or_else(|e| panic!("{section}: {e}"));
    assert!(warnings.is_empty(), "{section}: {warnings:?}");
    let dcs = connect_dcs(&cfg, "pg0", timing())
        .await
        .unwrap_or_else(|e| panic!("{section}: {e}"));
    dcs.get_cluster()
        .await
        .unwrap_or_else(|e| panic!("{section}: {e}"))
        .initialize
}

#[tokio::test]
async fn host_hosts_url_and_proxy_forms_reach_the_same_etcd() {
    let mut etcd = EtcdCluster::start_single().unwrap();
    let host = etcd.hosts()[0].clone();
    let url = etcd.endpoint(0);
    let none = EnvMap::new();

    // Written through the `host` form...
    let (cfg, _) =
        Config::from_yaml_str(&format!("{BASE}etcd3: {{host: '{host}'}}\n"), &none).unwrap();
    let dcs = connect_dcs(&cfg, "pg0", timing()).await.unwrap();
    assert!(dcs.initialize("7000000000000000001").await.unwrap());
    drop(dcs);

    // ...and read through every other form.
    let want = Some("7000000000000000001".to_string());
    for section in [
        format!("etcd3: {{hosts: ['{host}']}}\n"),
        format!("etcd3: {{hosts: '{host},{host}'}}\n"),
        format!("etcd3: {{url: '{url}'}}\n"),
        format!("etcd3: {{proxy: '{url}', use_proxies: true}}\n"),
        format!("etcd3: {{host: '127.0.0.1:1', url: '{url}'}}\n"),
    ] {
        assert_eq!(initialize_value(&section, &none).await, want, "{section}");
    }
    // The same from the environment alone.
    let env: EnvMap = [("PATRONI_ETCD3_URL".to_string(), url.clone())]
        .into_iter()
        .collect();
    assert_eq!(initialize_value("", &env).await, want);

    // Credentials: in the URL, or as username/password.
    etcd.enable_auth("s3cret").unwrap();
    let with_creds = url.replace("://", "://root:s3cret@");
    assert_eq!(
        initialize_value(&format!("etcd3: {{url: '{with_creds}'}}\n"), &none).await,
        want
    );
    assert_eq!(
        initialize_value(
            &format!("etcd3: {{hosts: '{host}', username: root, password: s3cret}}\n"),
            &none
        )
        .await,
        want
    );
}
