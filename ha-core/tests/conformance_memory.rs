//! The DCS conformance suite against the in-memory DCS on the real clock, and proof
//! that each check catches the fault it is about: a deliberately broken wrapper must
//! make the matching check fail.

use async_trait::async_trait;
use ha_core::conformance::{self, DcsHarness};
use ha_core::memory_dcs::{MemoryDcs, SharedMemoryStore};
use ha_core::{
    Cluster, ClusterKeys, Dcs, DcsError, DcsTiming, MemberData, Status, SystemClock, Version,
};
use std::sync::Arc;
use std::time::Duration;

/// A way of breaking the contract, to check that the suite notices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    None,
    /// Check-then-set instead of an atomic create.
    NonAtomicAcquire,
    /// Deletes the leader key whoever holds it.
    ReleaseIgnoresOwner,
    /// A renewal carrying `status` writes it whoever holds the key.
    StatusIgnoresOwner,
    /// Writes config/failover/sync without comparing versions.
    IgnoresCasVersion,
    /// `initialize` overwrites.
    InitializeOverwrites,
    /// Loses fields it does not know from member records.
    DropsUnknownMemberFields,
    /// Renew only reads the key, never refreshes the lease.
    RenewWithoutKeepalive,
    /// The subscription never fires.
    SilentWatch,
    /// The subscription fires on every write, member records included.
    NoisyWatch,
    /// An unreachable DCS reports a backend error.
    WrongUnreachableVariant,
    /// `delete_cluster` does nothing.
    DeleteClusterNoop,
    /// The client keeps renewing after it is abandoned (a background heartbeat).
    AbandonKeepsRenewing,
}

struct MemoryHarness {
    store: SharedMemoryStore,
    fault: Fault,
    /// Bumped by every write of every client (for `Fault::NoisyWatch`).
    any_write: Arc<tokio::sync::watch::Sender<u64>>,
}

impl MemoryHarness {
    fn new(fault: Fault) -> Self {
        MemoryHarness {
            store: SharedMemoryStore::new(),
            fault,
            any_write: Arc::new(tokio::sync::watch::channel(0).0),
        }
    }

    fn client(&self, scope: &str, member: &str, timing: DcsTiming) -> Faulty {
        let keys = ClusterKeys::new("service", scope);
        let (dead_watch, _) = tokio::sync::watch::channel(0);
        Faulty {
            inner: MemoryDcs::new(
                &self.store,
                Arc::new(SystemClock),
                keys.clone(),
                member,
                timing,
            ),
            keys,
            name: member.to_string(),
            fault: self.fault,
            dead_watch,
            any_write: self.any_write.clone(),
        }
    }
}

#[async_trait]
impl DcsHarness for MemoryHarness {
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
        Arc::new(self.client(scope, member, timing))
    }

    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs> {
        let dcs = self.client(scope, member, timing);
        dcs.inner.set_reachable(false);
        Arc::new(dcs)
    }

    async fn abandon(&self, dcs: Arc<dyn Dcs>) {
        if self.fault == Fault::AbandonKeepsRenewing {
            tokio::spawn(async move {
                loop {
                    let _ = dcs.renew_leader().await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            });
        }
    }

    fn timing(&self) -> DcsTiming {
        DcsTiming {
            ttl: Duration::from_secs(2),
            retry_timeout: Duration::from_secs(1),
            loop_wait: Duration::from_secs(1),
        }
    }

    fn expiry_slack(&self) -> Duration {
        // Expiry is exact on the store; this only covers scheduling delays.
        Duration::from_millis(250)
    }
}

/// `MemoryDcs` with one optional contract violation.
struct Faulty {
    inner: MemoryDcs,
    keys: ClusterKeys,
    name: String,
    fault: Fault,
    dead_watch: tokio::sync::watch::Sender<u64>,
    any_write: Arc<tokio::sync::watch::Sender<u64>>,
}

impl Faulty {
    fn wrote<T>(&self, result: Result<T, DcsError>) -> Result<T, DcsError> {
        self.any_write.send_modify(|c| *c += 1);
        result
    }

    fn put_raw(&self, key: &str, value: &str) {
        let now = ha_core::clock::monotonic_now();
        self.inner
            .store()
            .with(|s| s.put(now, key, value, None))
            .ok();
    }
}

#[async_trait]
impl Dcs for Faulty {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        self.inner.get_cluster().await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        if self.fault != Fault::NonAtomicAcquire {
            return self.inner.acquire_leader().await;
        }
        let free = self.inner.get_cluster().await?.is_unlocked();
        tokio::time::sleep(Duration::from_millis(20)).await;
        if free {
            self.put_raw(&self.keys.leader(), &self.name);
        }
        Ok(free)
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        if self.fault == Fault::RenewWithoutKeepalive {
            return Ok(self.inner.get_cluster().await?.is_leader(&self.name));
        }
        self.inner.renew_leader().await
    }

    async fn renew_leader_with_status(&self, status: &Status) -> Result<bool, DcsError> {
        if self.fault == Fault::StatusIgnoresOwner {
            self.inner.set_status(status).await?;
            return self.inner.renew_leader().await;
        }
        self.inner.renew_leader_with_status(status).await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        if self.fault == Fault::ReleaseIgnoresOwner {
            let now = ha_core::clock::monotonic_now();
            let leader = self.keys.leader();
            return Ok(self.inner.store().with(|s| s.delete(now, &leader)));
        }
        self.inner.release_leader().await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let result = if self.fault == Fault::DropsUnknownMemberFields {
            let mut data = data.clone();
            data.extra.clear();
            self.inner.touch_member(&data).await
        } else {
            self.inner.touch_member(data).await
        };
        match self.wrote(result) {
            Err(DcsError::Unreachable(e)) if self.fault == Fault::WrongUnreachableVariant => {
                Err(DcsError::Backend(e))
            }
            other => other,
        }
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        self.inner.touch_proxy(record).await
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        if self.fault == Fault::InitializeOverwrites {
            self.inner.set_initialize(value).await?;
            return Ok(true);
        }
        self.inner.initialize(value).await
    }

    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        let expected = expected.filter(|_| self.fault != Fault::IgnoresCasVersion);
        self.wrote(self.inner.cas_key(key, value, expected).await)
    }

    async fn write_key(&self, key: &str, value: String) -> Result<(), DcsError> {
        self.wrote(self.inner.write_key(key, value).await)
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        self.inner.delete_key(key, expected).await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        if self.fault == Fault::DeleteClusterNoop {
            return Ok(());
        }
        self.inner.delete_cluster().await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        if self.fault == Fault::SilentWatch {
            return self.dead_watch.subscribe();
        }
        if self.fault == Fault::NoisyWatch {
            return self.any_write.subscribe();
        }
        self.inner.subscribe()
    }

    fn set_timing(&self, timing: DcsTiming) {
        self.inner.set_timing(timing)
    }
}

fn correct() -> MemoryHarness {
    MemoryHarness::new(Fault::None)
}

#[tokio::test]
async fn run_all_passes() {
    conformance::run_all(&correct()).await;
}

#[tokio::test]
async fn one_winner_among_concurrent_acquirers() {
    conformance::one_winner_among_concurrent_acquirers(&correct()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_winner_among_concurrent_acquirers_multi_thread() {
    conformance::one_winner_among_concurrent_acquirers(&correct()).await;
}

#[tokio::test]
async fn leader_read_back() {
    conformance::leader_read_back(&correct()).await;
}

#[tokio::test]
async fn lease_expiry_frees_leader_and_member() {
    conformance::lease_expiry_frees_leader_and_member(&correct()).await;
}

#[tokio::test]
async fn renew_keeps_leader_and_member() {
    conformance::renew_keeps_leader_and_member(&correct()).await;
}

#[tokio::test]
async fn release_only_by_owner() {
    conformance::release_only_by_owner(&correct()).await;
}

#[tokio::test]
async fn status_with_renewal_only_by_owner() {
    conformance::status_with_renewal_only_by_owner(&correct()).await;
}

#[tokio::test]
async fn cas_rejects_stale_versions() {
    conformance::cas_rejects_stale_versions(&correct()).await;
}

#[tokio::test]
async fn initialize_is_create_only() {
    conformance::initialize_is_create_only(&correct()).await;
}

#[tokio::test]
async fn watch_fires_on_leader_change() {
    conformance::watch_fires_on_leader_change(&correct()).await;
}

#[tokio::test]
async fn watch_ignores_member_and_status_writes() {
    conformance::watch_ignores_member_and_status_writes(&correct()).await;
}

#[tokio::test]
async fn unreachable_is_typed_and_bounded() {
    conformance::unreachable_is_typed_and_bounded(&correct()).await;
}

#[tokio::test]
async fn plain_writes_and_delete_cluster() {
    conformance::plain_writes_and_delete_cluster(&correct()).await;
}

// Each fault must trip the check that is about it.

#[tokio::test]
#[should_panic(expected = "check `one_winner_among_concurrent_acquirers` failed")]
async fn non_atomic_acquire_is_caught() {
    let h = MemoryHarness::new(Fault::NonAtomicAcquire);
    conformance::one_winner_among_concurrent_acquirers(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `release_only_by_owner` failed")]
async fn release_by_non_owner_is_caught() {
    let h = MemoryHarness::new(Fault::ReleaseIgnoresOwner);
    conformance::release_only_by_owner(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `status_with_renewal_only_by_owner` failed")]
async fn status_written_by_a_non_owner_is_caught() {
    let h = MemoryHarness::new(Fault::StatusIgnoresOwner);
    conformance::status_with_renewal_only_by_owner(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `cas_rejects_stale_versions` failed")]
async fn ignored_cas_version_is_caught() {
    let h = MemoryHarness::new(Fault::IgnoresCasVersion);
    conformance::cas_rejects_stale_versions(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `initialize_is_create_only` failed")]
async fn overwriting_initialize_is_caught() {
    let h = MemoryHarness::new(Fault::InitializeOverwrites);
    conformance::initialize_is_create_only(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `leader_read_back` failed")]
async fn lossy_member_record_is_caught() {
    let h = MemoryHarness::new(Fault::DropsUnknownMemberFields);
    conformance::leader_read_back(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `renew_keeps_leader_and_member` failed")]
async fn renew_without_keepalive_is_caught() {
    let h = MemoryHarness::new(Fault::RenewWithoutKeepalive);
    conformance::renew_keeps_leader_and_member(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `watch_fires_on_leader_change` failed")]
async fn silent_watch_is_caught() {
    let h = MemoryHarness::new(Fault::SilentWatch);
    conformance::watch_fires_on_leader_change(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `watch_ignores_member_and_status_writes` failed")]
async fn noisy_watch_is_caught() {
    let h = MemoryHarness::new(Fault::NoisyWatch);
    conformance::watch_ignores_member_and_status_writes(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `watch_ignores_member_and_status_writes` failed")]
async fn silent_watch_is_caught_by_the_config_control() {
    let h = MemoryHarness::new(Fault::SilentWatch);
    conformance::watch_ignores_member_and_status_writes(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `unreachable_is_typed_and_bounded` failed")]
async fn wrong_unreachable_variant_is_caught() {
    let h = MemoryHarness::new(Fault::WrongUnreachableVariant);
    conformance::unreachable_is_typed_and_bounded(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `plain_writes_and_delete_cluster` failed")]
async fn noop_delete_cluster_is_caught() {
    let h = MemoryHarness::new(Fault::DeleteClusterNoop);
    conformance::plain_writes_and_delete_cluster(&h).await;
}

#[tokio::test]
#[should_panic(expected = "check `lease_expiry_frees_leader_and_member` failed")]
async fn lease_kept_alive_after_abandon_is_caught() {
    let h = MemoryHarness::new(Fault::AbandonKeepsRenewing);
    conformance::lease_expiry_frees_leader_and_member(&h).await;
}
