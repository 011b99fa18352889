//! ha-core's shared DCS conformance suite against a real standalone ZooKeeper, over
//! plain text and over TLS with a client certificate.

use dcs_zookeeper::testing::{Blackhole, ClientAuth, TcpProxy, ZkCluster};
use dcs_zookeeper::{ZooKeeperConfig, ZooKeeperDcs};
use ha_core::conformance::{run_all, DcsHarness};
use ha_core::{ClusterKeys, Dcs, DcsTiming};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Each client talks to ZooKeeper through its own proxy, so `abandon` can sever it
/// without the clean close that would delete its ephemeral znodes at once.
struct Harness {
    zk: ZkCluster,
    blackhole: Blackhole,
    proxies: Mutex<HashMap<usize, TcpProxy>>,
}

impl Harness {
    /// The cluster's client config (TLS settings included) with other hosts.
    fn config<const N: usize>(&self, hosts: [String; N]) -> ZooKeeperConfig {
        ZooKeeperConfig {
            hosts: hosts.to_vec(),
            ..self.zk.config()
        }
    }
}

fn key_of(dcs: &Arc<dyn Dcs>) -> usize {
    Arc::as_ptr(dcs) as *const () as usize
}

#[async_trait::async_trait]
impl DcsHarness for Harness {
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
        let upstream = match self.zk.secure_hosts().first() {
            Some(tls) => tls.clone(),
            None => self.zk.hosts()[0].clone(),
        };
        let proxy = TcpProxy::start(&upstream).await.unwrap();
        let config = self.config([proxy.address()]);
        let dcs: Arc<dyn Dcs> = Arc::new(
            ZooKeeperDcs::new(&config, ClusterKeys::new("service", scope), member, timing).unwrap(),
        );
        self.proxies.lock().unwrap().insert(key_of(&dcs), proxy);
        dcs
    }

    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs> {
        // A server that accepts connections and never answers: the harder case
        // (a refused connection fails fast on its own).
        let config = self.config([self.blackhole.address()]);
        Arc::new(
            ZooKeeperDcs::new(&config, ClusterKeys::new("service", scope), member, timing).unwrap(),
        )
    }

    async fn abandon(&self, dcs: Arc<dyn Dcs>) {
        let proxy = self.proxies.lock().unwrap().remove(&key_of(&dcs));
        let proxy = proxy.expect("abandon: client not made by this harness");
        proxy.cut().await;
        drop(dcs);
        // Keep the port closed until the session is surely gone on the server.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(proxy);
        });
    }

    fn timing(&self) -> DcsTiming {
        DcsTiming {
            ttl: Duration::from_secs(3),
            retry_timeout: Duration::from_millis(1500),
            loop_wait: Duration::from_secs(1),
        }
    }

    fn expiry_slack(&self) -> Duration {
        // Sessions expire on the server's tick (200 ms) after the timeout; leave
        // room for a loaded machine.
        Duration::from_secs(2)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_against_real_zookeeper() {
    let h = Harness {
        zk: ZkCluster::standalone().await.unwrap(),
        blackhole: Blackhole::start().await.unwrap(),
        proxies: Mutex::new(HashMap::new()),
    };
    run_all(&h).await;
}

/// The same suite with every client on the server's TLS port (`use_ssl`, `cacert`,
/// client certificate required by the server).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_passes_over_tls() {
    let h = Harness {
        zk: ZkCluster::standalone_tls(ClientAuth::Need).await.unwrap(),
        blackhole: Blackhole::start().await.unwrap(),
        proxies: Mutex::new(HashMap::new()),
    };
    assert!(h.zk.config().use_ssl);
    run_all(&h).await;
}
