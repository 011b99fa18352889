//! The example file backend proven the way the shipped backends are: ha-core's DCS
//! conformance suite (feature `conformance`) against a real directory.

use ha_core::conformance::{run_all, DcsHarness};
use ha_core::{Dcs, DcsTiming};
use std::sync::Arc;
use std::time::Duration;

/// What the suite needs from a backend: clients of a shared store, one that cannot
/// reach it, the timing to test with and how late leases may expire.
struct FileHarness {
    dir: tempfile::TempDir,
}

#[async_trait::async_trait]
impl DcsHarness for FileHarness {
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
        Arc::new(examples::FileDcs::connect(
            self.dir.path(),
            scope,
            member,
            timing,
        ))
    }

    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs> {
        // A directory that does not exist stands for an unmounted share.
        let gone = self.dir.path().join("not-mounted");
        Arc::new(examples::FileDcs::connect(&gone, scope, member, timing))
    }

    fn timing(&self) -> DcsTiming {
        DcsTiming {
            ttl: Duration::from_secs(2),
            retry_timeout: Duration::from_secs(1),
            loop_wait: Duration::from_secs(1),
        }
    }

    fn expiry_slack(&self) -> Duration {
        // Leases end exactly at their expiry; a reader sees it at its next call.
        Duration::from_millis(500)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_backend_passes_the_dcs_conformance_suite() {
    let harness = FileHarness {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    run_all(&harness).await;
}
