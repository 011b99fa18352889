//! ha-core's shared DCS conformance suite against a real single-member etcd, over
//! plain HTTP and over TLS with client certificates.

use dcs_etcd::testing::{EtcdCluster, TestCerts};
use dcs_etcd::{EtcdConfig, EtcdDcs};
use ha_core::conformance::{run_all, DcsHarness};
use ha_core::{Dcs, DcsTiming};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

struct EtcdHarness {
    etcd: EtcdCluster,
    /// A loopback port nothing listens on.
    dead_port: u16,
}

#[async_trait::async_trait]
impl DcsHarness for EtcdHarness {
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
        Arc::new(
            EtcdDcs::connect(&self.etcd.config(), "service", scope, member, timing)
                .await
                .unwrap(),
        )
    }

    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs> {
        let config = EtcdConfig::with_hosts(&[format!("127.0.0.1:{}", self.dead_port)]);
        Arc::new(
            EtcdDcs::connect(&config, "service", scope, member, timing)
                .await
                .unwrap(),
        )
    }

    fn timing(&self) -> DcsTiming {
        DcsTiming {
            ttl: Duration::from_secs(3),
            retry_timeout: Duration::from_secs(2),
            loop_wait: Duration::from_secs(1),
        }
    }

    fn expiry_slack(&self) -> Duration {
        Duration::from_secs(1)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_dcs_conformance_suite() {
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let harness = EtcdHarness {
        etcd: EtcdCluster::start_single().unwrap(),
        dead_port,
    };
    run_all(&harness).await;
}

/// etcd serving clients only over TLS and requiring a client certificate
/// (`--client-cert-auth`): the backend connects with `cacert`, `cert` and `key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates_passes_the_conformance_suite() {
    let dead_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let certs_dir = tempfile::tempdir().unwrap();
    let certs = TestCerts::generate(certs_dir.path()).unwrap();
    let harness = EtcdHarness {
        etcd: EtcdCluster::start_tls(1, certs).unwrap(),
        dead_port,
    };
    assert!(harness.etcd.endpoint(0).starts_with("https://"));
    run_all(&harness).await;
}
