//! Helpers shared by the integration tests.
#![allow(dead_code)]

use dcs_etcd::testing::EtcdCluster;
use dcs_etcd::{EtcdConfig, EtcdDcs};
use ha_core::{DcsTiming, MemberData};
use std::time::Duration;

/// Short timing so expiry and unreachability show up within seconds.
pub fn fast_timing() -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(3),
        retry_timeout: Duration::from_secs(2),
        loop_wait: Duration::from_secs(1),
    }
}

pub async fn connect(cluster: &EtcdCluster, scope: &str, name: &str) -> EtcdDcs {
    connect_with(&cluster.config(), scope, name, fast_timing()).await
}

pub async fn connect_with(
    config: &EtcdConfig,
    scope: &str,
    name: &str,
    timing: DcsTiming,
) -> EtcdDcs {
    EtcdDcs::connect(config, "service", scope, name, timing)
        .await
        .unwrap()
}

pub fn member_data(name: &str) -> MemberData {
    MemberData::parse(&format!(
        r#"{{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":1,"timeline":1,"tags":{{"name":"{name}"}}}}"#
    ))
    .unwrap()
}
