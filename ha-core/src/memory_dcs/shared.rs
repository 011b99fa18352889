//! The async `Dcs` over a store shared by many clients: reachability, latency and
//! change notifications.

use super::node::MemoryDcsNode;
use super::store::{LeaseId, MemoryStore};
use crate::clock::{Clock, MonoTime};
use crate::dcs::{Dcs, DcsError, DcsTiming};
use crate::model::{Cluster, ClusterKeys, MemberData, Status, Version};
use async_trait::async_trait;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A [`MemoryStore`] shared by many [`MemoryDcs`] clients, with one change counter per
/// cluster for [`Dcs::subscribe`].
#[derive(Clone, Default)]
pub struct SharedMemoryStore {
    store: Arc<Mutex<MemoryStore>>,
    watches: Arc<Mutex<BTreeMap<String, ClusterWatch>>>,
}

/// The notifier of one cluster: bumped when one of its decision keys changes.
struct ClusterWatch {
    keys: ClusterKeys,
    seen: Vec<Option<Version>>,
    tx: tokio::sync::watch::Sender<u64>,
}

impl ClusterWatch {
    /// The keys whose changes call for a new HA decision (see [`Dcs::subscribe`]):
    /// every member writes `members/*`, `status`, `history` and `failsafe` each
    /// cycle, so waking on those would make the loop spin.
    fn decision_keys(keys: &ClusterKeys) -> [String; 5] {
        [
            keys.leader(),
            keys.config(),
            keys.failover(),
            keys.sync(),
            keys.initialize(),
        ]
    }

    fn versions(keys: &ClusterKeys, store: &MemoryStore) -> Vec<Option<Version>> {
        Self::decision_keys(keys)
            .iter()
            .map(|k| store.peek_version(k))
            .collect()
    }
}

impl std::fmt::Debug for SharedMemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedMemoryStore")
            .field("revision", &self.lock().revision())
            .finish()
    }
}

impl SharedMemoryStore {
    /// An empty shared store.
    pub fn new() -> Self {
        SharedMemoryStore::default()
    }

    /// Runs `f` on the store under its lock, then wakes the subscribers of every
    /// cluster whose decision keys changed (including deletions by lease expiries `f`
    /// noticed).
    pub fn with<T>(&self, f: impl FnOnce(&mut MemoryStore) -> T) -> T {
        let mut store = self.lock();
        let before = store.changes();
        let out = f(&mut store);
        if store.changes() != before {
            let mut watches = self.lock_watches();
            for w in watches.values_mut() {
                let now = ClusterWatch::versions(&w.keys, &store);
                if now != w.seen {
                    w.seen = now;
                    w.tx.send_modify(|c| *c += 1);
                }
            }
        }
        out
    }

    /// Expires overdue leases now (waking subscribers if that deleted a leader key).
    pub fn expire_now(&self, now: MonoTime) -> usize {
        self.with(|s| s.expire_now(now))
    }

    /// A receiver of the change counter of the cluster under `keys`.
    pub fn subscribe(&self, keys: &ClusterKeys) -> tokio::sync::watch::Receiver<u64> {
        let store = self.lock();
        let mut watches = self.lock_watches();
        watches
            .entry(keys.prefix().to_string())
            .or_insert_with(|| ClusterWatch {
                keys: keys.clone(),
                seen: ClusterWatch::versions(keys, &store),
                tx: tokio::sync::watch::channel(0).0,
            })
            .tx
            .subscribe()
    }

    fn lock(&self) -> MutexGuard<'_, MemoryStore> {
        // A panic under the lock cannot leave the store half-written in a way that
        // matters to tests; keep serving rather than cascade panics.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_watches(&self) -> MutexGuard<'_, BTreeMap<String, ClusterWatch>> {
        self.watches.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The async [`Dcs`] for one member of one cluster over a [`SharedMemoryStore`].
pub struct MemoryDcs {
    shared: SharedMemoryStore,
    clock: Arc<dyn Clock>,
    node: Mutex<MemoryDcsNode>,
    reachable: AtomicBool,
    latency: Mutex<Duration>,
}

impl MemoryDcs {
    /// A client for member `name` of the cluster under `keys`.
    pub fn new(
        shared: &SharedMemoryStore,
        clock: Arc<dyn Clock>,
        keys: ClusterKeys,
        name: impl Into<String>,
        timing: DcsTiming,
    ) -> Self {
        MemoryDcs {
            shared: shared.clone(),
            clock,
            node: Mutex::new(MemoryDcsNode::new(keys, name, timing)),
            reachable: AtomicBool::new(true),
            latency: Mutex::new(Duration::ZERO),
        }
    }

    /// Cuts this client off the DCS (`false`: every call fails with
    /// `DcsError::Unreachable` at once) or reconnects it.
    pub fn set_reachable(&self, reachable: bool) {
        self.reachable.store(reachable, Ordering::SeqCst);
    }

    /// Whether this client currently reaches the DCS.
    pub fn is_reachable(&self) -> bool {
        self.reachable.load(Ordering::SeqCst)
    }

    /// Delay added before every call reaches the store (a slow DCS). A delay beyond
    /// `retry_timeout` makes calls fail with `Unreachable` after `retry_timeout`
    /// without touching the store, as a real client's deadline would.
    pub fn set_latency(&self, latency: Duration) {
        *self.latency.lock().unwrap_or_else(|e| e.into_inner()) = latency;
    }

    /// The shared store this client talks to.
    pub fn store(&self) -> &SharedMemoryStore {
        &self.shared
    }

    /// The lease this client last used.
    pub fn lease_id(&self) -> Option<LeaseId> {
        self.lock_node().lease_id()
    }

    fn lock_node(&self) -> MutexGuard<'_, MemoryDcsNode> {
        self.node.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits the injected latency, then runs `op` on my node and the store at the
    /// clock's current time.
    async fn call<T>(
        &self,
        op: impl FnOnce(&mut MemoryDcsNode, &mut MemoryStore, MonoTime) -> T,
    ) -> Result<T, DcsError> {
        if !self.is_reachable() {
            return Err(DcsError::Unreachable("memory dcs: cut off".to_string()));
        }
        let latency = *self.latency.lock().unwrap_or_else(|e| e.into_inner());
        let retry_timeout = self.lock_node().timing().retry_timeout;
        if latency > retry_timeout {
            tokio::time::sleep(retry_timeout).await;
            return Err(DcsError::Unreachable(format!(
                "memory dcs: no answer within retry_timeout {retry_timeout:?}"
            )));
        }
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
            if !self.is_reachable() {
                return Err(DcsError::Unreachable("memory dcs: cut off".to_string()));
            }
        }
        let mut node = self.lock_node();
        let now = self.clock.now();
        Ok(self.shared.with(|store| op(&mut node, store, now)))
    }
}

#[async_trait]
impl Dcs for MemoryDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        self.call(|n, s, now| n.get_cluster(s, now)).await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.acquire_leader(s, now)).await
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.renew_leader(s, now)).await
    }

    async fn renew_leader_with_status(&self, status: &Status) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.renew_leader_with_status(s, now, status))
            .await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.release_leader(s, now)).await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        self.call(|n, s, now| n.touch_member(s, now, data)).await
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        self.call(|n, s, now| n.touch_proxy(s, now, record)).await
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.initialize(s, now, value)).await
    }

    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        self.call(|n, s, now| n.cas_key(s, now, key, &value, expected))
            .await
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.delete_key(s, now, key, expected))
            .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        self.call(|n, s, now| n.delete_cluster(s, now)).await
    }

    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        let keys = self.lock_node().keys().clone();
        self.shared.subscribe(&keys)
    }

    fn set_timing(&self, timing: DcsTiming) {
        self.lock_node().set_timing(timing);
    }
}
