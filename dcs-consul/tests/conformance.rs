//! ha-core's shared DCS conformance suite against the Consul API emulator
//! (sessions expire at exactly their TTL, the earliest moment Consul may; one
//! check also runs with Consul's usual 2× slack).

use dcs_consul::emulator::{Emulator, EmulatorConfig, ServerHandle};
use dcs_consul::{ConsulConfig, ConsulDcs};
use ha_core::conformance::{lease_expiry_frees_leader_and_member, run_all, DcsHarness};
use ha_core::{Dcs, DcsTiming};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

struct ConsulHarness {
    _emulator: Emulator,
    server: ServerHandle,
    /// A loopback port nothing listens on.
    dead_port: u16,
    /// The emulator's TTL multiplier (sessions die after TTL × this).
    ttl_multiplier: u32,
}

#[async_trait::async_trait]
impl DcsHarness for ConsulHarness {
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
        let config = ConsulConfig::with_url(self.server.url());
        Arc::new(ConsulDcs::new(&config, "service", scope, member, timing).unwrap())
    }

    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs> {
        let config = ConsulConfig::with_url(format!("http://127.0.0.1:{}", self.dead_port));
        Arc::new(ConsulDcs::new(&config, "service", scope, member, timing).unwrap())
    }

    fn timing(&self) -> DcsTiming {
        DcsTiming {
            ttl: Duration::from_secs(3),
            retry_timeout: Duration::from_secs(2),
            loop_wait: Duration::from_secs(1),
        }
    }

    fn expiry_slack(&self) -> Duration {
        self.timing().ttl * (self.ttl_multiplier - 1) + Duration::from_secs(1)
    }
}

fn dead_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn harness(ttl_multiplier: u32) -> ConsulHarness {
    let (emulator, server) = Emulator::start(EmulatorConfig {
        session_ttl_min: Duration::from_secs(1),
        ttl_multiplier,
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    ConsulHarness {
        _emulator: emulator,
        server,
        dead_port: dead_port(),
        ttl_multiplier,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_backend_passes_the_dcs_conformance_suite_against_the_emulator() {
    run_all(&harness(1).await).await;
}

/// With Consul's usual 2× slack the lease still ends, just later (within 2 × ttl).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_expire_with_consuls_double_ttl_slack() {
    lease_expiry_frees_leader_and_member(&harness(2).await).await;
}
