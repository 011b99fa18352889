//! An in-memory DCS with real lease semantics on an injectable clock, modelled on
//! etcd v3 and Patroni's etcd3 lock contract (spec §1.4/§1.5).
//!
//! Three layers:
//! - [`MemoryStore`]: a synchronous, deterministic key-value store with leases. Every
//!   operation takes `now` and first expires overdue leases, so time only matters
//!   through the values the caller passes in (the simulator drives it with a manual
//!   clock).
//! - [`MemoryDcsNode`]: one member's synchronous view of one cluster over a store,
//!   implementing every `Dcs` operation with an explicit `now`.
//! - [`MemoryDcs`]: the async [`Dcs`] implementation over a [`SharedMemoryStore`],
//!   with a reachability switch, injected latency and change notifications.
//!
//! Leases are refreshed only by explicit calls (acquire, renew, touch_member), never in
//! the background: an HA loop that stops calling must lose its keys, as with etcd.

use crate::clock::{Clock, MonoTime};
use crate::dcs::{Dcs, DcsError, DcsTiming};
use crate::model::{
    Cluster, ClusterKeys, DynamicConfig, Failover, Failsafe, History, MemberData, RawEntry, Status,
    SyncState, Version,
};
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// A lease identifier (etcd's lease ID). Granted in increasing order from 1 so runs
/// are reproducible.
pub type LeaseId = i64;

/// A write named a lease that does not exist (never granted, revoked or expired).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("lease {0} not found; grant a new one")]
pub struct LeaseNotFound(pub LeaseId);

/// One key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    /// Full key path.
    pub key: String,
    /// The value.
    pub value: String,
    /// Store revision at which the key was created (since its last deletion).
    pub create_revision: i64,
    /// Store revision of the last write: the key's version for CAS.
    pub version: Version,
    /// The lease the key is bound to; the key is deleted when it expires.
    pub lease: Option<LeaseId>,
}

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// Its identifier.
    pub id: LeaseId,
    /// Who was granted it (member name), for diagnostics.
    pub owner: String,
    /// Lifetime granted, restarted by each keepalive.
    pub ttl: Duration,
    /// The instant from which it counts as expired.
    pub expiry: MonoTime,
}

#[derive(Debug, Clone)]
struct StoredValue {
    value: String,
    create_revision: i64,
    mod_revision: i64,
    lease: Option<LeaseId>,
}

#[derive(Debug, Clone)]
struct Lease {
    info: LeaseInfo,
    keys: BTreeSet<String>,
}

/// A synchronous, deterministic key-value store with etcd v3 semantics: a global
/// revision bumped by every write, per-key create/mod revisions, and leases whose
/// expiry deletes the keys bound to them.
///
/// Lease expiry is lazy: each operation first expires every lease whose expiry is at
/// or before its `now` (also available as [`MemoryStore::expire_now`]).
#[derive(Debug, Clone)]
pub struct MemoryStore {
    revision: i64,
    changes: u64,
    next_lease: LeaseId,
    keys: BTreeMap<String, StoredValue>,
    leases: BTreeMap<LeaseId, Lease>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    /// An empty store at revision 1, as a fresh etcd cluster.
    pub fn new() -> Self {
        MemoryStore {
            revision: 1,
            changes: 0,
            next_lease: 1,
            keys: BTreeMap::new(),
            leases: BTreeMap::new(),
        }
    }

    /// The current store revision.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// How many times the key space has changed (writes, deletions, expiries); a
    /// watcher compares it before and after an operation.
    pub fn changes(&self) -> u64 {
        self.changes
    }

    /// Expires every lease overdue at `now`, deleting the keys bound to them (one
    /// revision per expired lease that had keys). Returns how many leases expired.
    pub fn expire_now(&mut self, now: MonoTime) -> usize {
        let overdue: Vec<LeaseId> = self
            .leases
            .values()
            .filter(|l| l.info.expiry <= now)
            .map(|l| l.info.id)
            .collect();
        for id in &overdue {
            self.remove_lease(*id);
        }
        overdue.len()
    }

    /// Grants a lease of `ttl` to `owner`, expiring at `now + ttl`.
    pub fn grant_lease(&mut self, now: MonoTime, owner: &str, ttl: Duration) -> LeaseId {
        self.expire_now(now);
        let id = self.next_lease;
        self.next_lease += 1;
        self.leases.insert(
            id,
            Lease {
                info: LeaseInfo {
                    id,
                    owner: owner.to_string(),
                    ttl,
                    expiry: now.plus(ttl),
                },
                keys: BTreeSet::new(),
            },
        );
        id
    }

    /// Restarts the lease's ttl from `now`. `false` if it expired or never existed.
    pub fn keepalive(&mut self, now: MonoTime, id: LeaseId) -> bool {
        self.expire_now(now);
        match self.leases.get_mut(&id) {
            Some(l) => {
                l.info.expiry = now.plus(l.info.ttl);
                true
            }
            None => false,
        }
    }

    /// Revokes a lease now, deleting its keys. `false` if it did not exist.
    pub fn revoke_lease(&mut self, now: MonoTime, id: LeaseId) -> bool {
        self.expire_now(now);
        self.remove_lease(id)
    }

    /// A live lease's details.
    pub fn lease(&mut self, now: MonoTime, id: LeaseId) -> Option<LeaseInfo> {
        self.expire_now(now);
        self.leases.get(&id).map(|l| l.info.clone())
    }

    /// Reads one key.
    pub fn get(&mut self, now: MonoTime, key: &str) -> Option<KvEntry> {
        self.expire_now(now);
        self.keys.get(key).map(|v| entry(key, v))
    }

    /// Every key starting with `prefix`, in key order.
    pub fn range(&mut self, now: MonoTime, prefix: &str) -> Vec<KvEntry> {
        self.expire_now(now);
        self.keys
            .range::<str, _>((
                std::ops::Bound::Included(prefix),
                std::ops::Bound::Unbounded,
            ))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| entry(k, v))
            .collect()
    }

    /// Writes `key` (bound to `lease`, or to none) whether or not it exists. Returns
    /// the new version.
    pub fn put(
        &mut self,
        now: MonoTime,
        key: &str,
        value: &str,
        lease: Option<LeaseId>,
    ) -> Result<Version, LeaseNotFound> {
        self.expire_now(now);
        self.write(key, value, lease)
    }

    /// Writes `key` only if it does not exist (etcd `create_revision == 0`). `Ok(None)`
    /// when it exists.
    pub fn create(
        &mut self,
        now: MonoTime,
        key: &str,
        value: &str,
        lease: Option<LeaseId>,
    ) -> Result<Option<Version>, LeaseNotFound> {
        self.expire_now(now);
        if self.keys.contains_key(key) {
            return Ok(None);
        }
        self.write(key, value, lease).map(Some)
    }

    /// Writes `key` (without a lease) only if its version is still `expected`
    /// (etcd `mod_revision == expected`; `Version(0)` means "absent"). Returns the new
    /// version, `None` when the comparison failed.
    pub fn put_if_version(
        &mut self,
        now: MonoTime,
        key: &str,
        value: &str,
        expected: Version,
    ) -> Option<Version> {
        self.expire_now(now);
        if self.current_version(key) != expected {
            return None;
        }
        self.write(key, value, None).ok()
    }

    /// Deletes `key` only if it holds `value`.
    pub fn delete_if_value(&mut self, now: MonoTime, key: &str, value: &str) -> bool {
        self.expire_now(now);
        if self.keys.get(key).is_some_and(|v| v.value == value) {
            self.delete_keys(&[key.to_string()]);
            true
        } else {
            false
        }
    }

    /// Deletes `key` only if it is still at `expected`.
    pub fn delete_if_version(&mut self, now: MonoTime, key: &str, expected: Version) -> bool {
        self.expire_now(now);
        if self.keys.contains_key(key) && self.current_version(key) == expected {
            self.delete_keys(&[key.to_string()]);
            true
        } else {
            false
        }
    }

    /// Deletes `key`; `false` if it did not exist.
    pub fn delete(&mut self, now: MonoTime, key: &str) -> bool {
        self.expire_now(now);
        self.delete_keys(&[key.to_string()]) > 0
    }

    /// Deletes every key starting with `prefix`, in one revision. Returns how many.
    pub fn delete_prefix(&mut self, now: MonoTime, prefix: &str) -> usize {
        self.expire_now(now);
        let doomed: Vec<String> = self.range(now, prefix).into_iter().map(|e| e.key).collect();
        self.delete_keys(&doomed)
    }

    /// The version of `key` as stored, without expiring anything first.
    pub fn peek_version(&self, key: &str) -> Option<Version> {
        self.keys.get(key).map(|v| Version(v.mod_revision))
    }

    fn current_version(&self, key: &str) -> Version {
        Version(self.keys.get(key).map_or(0, |v| v.mod_revision))
    }

    fn write(
        &mut self,
        key: &str,
        value: &str,
        lease: Option<LeaseId>,
    ) -> Result<Version, LeaseNotFound> {
        if let Some(id) = lease {
            if !self.leases.contains_key(&id) {
                return Err(LeaseNotFound(id));
            }
        }
        self.revision += 1;
        self.changes += 1;
        let revision = self.revision;
        let old = self.keys.insert(
            key.to_string(),
            StoredValue {
                value: value.to_string(),
                create_revision: revision,
                mod_revision: revision,
                lease,
            },
        );
        if let Some(old) = old {
            if let Some(stored) = self.keys.get_mut(key) {
                stored.create_revision = old.create_revision;
            }
            if let Some(old_lease) = old.lease.filter(|l| Some(*l) != lease) {
                if let Some(l) = self.leases.get_mut(&old_lease) {
                    l.keys.remove(key);
                }
            }
        }
        if let Some(l) = lease.and_then(|id| self.leases.get_mut(&id)) {
            l.keys.insert(key.to_string());
        }
        Ok(Version(revision))
    }

    /// Deletes the existing ones among `keys` in one revision; returns how many.
    fn delete_keys(&mut self, keys: &[String]) -> usize {
        let mut deleted = 0;
        for key in keys {
            if let Some(old) = self.keys.remove(key) {
                deleted += 1;
                if let Some(l) = old.lease.and_then(|id| self.leases.get_mut(&id)) {
                    l.keys.remove(key);
                }
            }
        }
        if deleted > 0 {
            self.revision += 1;
            self.changes += 1;
        }
        deleted
    }

    fn remove_lease(&mut self, id: LeaseId) -> bool {
        match self.leases.remove(&id) {
            Some(lease) => {
                let keys: Vec<String> = lease.keys.into_iter().collect();
                self.delete_keys(&keys);
                true
            }
            None => false,
        }
    }
}

fn entry(key: &str, v: &StoredValue) -> KvEntry {
    KvEntry {
        key: key.to_string(),
        value: v.value.clone(),
        create_revision: v.create_revision,
        version: Version(v.mod_revision),
        lease: v.lease,
    }
}

/// One member's synchronous DCS client for one cluster over a [`MemoryStore`],
/// following Patroni's etcd3 contract: one lease per member with TTL = `ttl`, granted
/// lazily and re-granted when it has expired.
#[derive(Debug, Clone)]
pub struct MemoryDcsNode {
    keys: ClusterKeys,
    name: String,
    timing: DcsTiming,
    lease: Option<LeaseId>,
}

impl MemoryDcsNode {
    /// A client for member `name` of the cluster under `keys`.
    pub fn new(keys: ClusterKeys, name: impl Into<String>, timing: DcsTiming) -> Self {
        MemoryDcsNode {
            keys,
            name: name.into(),
            timing,
            lease: None,
        }
    }

    /// My member name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The cluster's key layout.
    pub fn keys(&self) -> &ClusterKeys {
        &self.keys
    }

    /// The current timing.
    pub fn timing(&self) -> DcsTiming {
        self.timing
    }

    /// The lease I last used (it may have expired since).
    pub fn lease_id(&self) -> Option<LeaseId> {
        self.lease
    }

    /// New timing; a changed ttl drops my lease so the next call grants one with the
    /// new ttl (the old one runs out on its own, its keys get re-bound on the way).
    pub fn set_timing(&mut self, timing: DcsTiming) {
        if timing.ttl != self.timing.ttl {
            self.lease = None;
        }
        self.timing = timing;
    }

    /// Keeps my lease alive, or grants a new one if it is gone.
    fn live_lease(&mut self, store: &mut MemoryStore, now: MonoTime) -> LeaseId {
        if let Some(id) = self.lease {
            if store.keepalive(now, id) {
                return id;
            }
        }
        let id = store.grant_lease(now, &self.name, self.timing.ttl);
        self.lease = Some(id);
        id
    }

    /// Writes with my lease, granting a fresh one if the store lost it (etcd's
    /// `LeaseNotFound` ⇒ grant and retry once). Fails only with a zero ttl, whose
    /// leases are dead on arrival.
    fn with_lease<T>(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        mut op: impl FnMut(&mut MemoryStore, LeaseId) -> Result<T, LeaseNotFound>,
    ) -> Result<T, LeaseNotFound> {
        let id = self.live_lease(store, now);
        match op(store, id) {
            Err(LeaseNotFound(_)) => {
                let id = store.grant_lease(now, &self.name, self.timing.ttl);
                self.lease = Some(id);
                op(store, id)
            }
            done => done,
        }
    }

    /// The whole cluster, from one prefix range.
    pub fn get_cluster(&mut self, store: &mut MemoryStore, now: MonoTime) -> Cluster {
        let entries = store.range(now, self.keys.prefix());
        Cluster::from_full_paths(
            &self.keys,
            entries.into_iter().map(|e| RawEntry {
                key: e.key,
                value: e.value,
                version: e.version,
                session: e.lease.map(|l| l.to_string()),
            }),
        )
    }

    /// Creates the leader key with my name bound to my (refreshed) lease if absent.
    ///
    /// The lease is kept alive here too: the caller counts its leadership from this
    /// call, so the key must not expire earlier than `now + ttl`.
    pub fn acquire_leader(&mut self, store: &mut MemoryStore, now: MonoTime) -> bool {
        let key = self.keys.leader();
        let name = self.name.clone();
        matches!(
            self.with_lease(store, now, |s, l| s.create(now, &key, &name, Some(l))),
            Ok(Some(_))
        )
    }

    /// Refreshes my lease; `true` if the leader key holds my name, re-binding it to my
    /// lease when it carries another one. `false` when it is someone else's or gone.
    pub fn renew_leader(&mut self, store: &mut MemoryStore, now: MonoTime) -> bool {
        let lease = self.live_lease(store, now);
        let key = self.keys.leader();
        match store.get(now, &key) {
            Some(e) if e.value == self.name => {
                if e.lease == Some(lease) {
                    return true;
                }
                let name = self.name.clone();
                self.with_lease(store, now, |s, l| s.put(now, &key, &name, Some(l)))
                    .is_ok()
            }
            _ => false,
        }
    }

    /// [`MemoryDcsNode::renew_leader`], writing `status` only when the key is mine.
    pub fn renew_leader_with_status(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        status: &Status,
    ) -> bool {
        let mine = self.renew_leader(store, now);
        if mine {
            self.set_status(store, now, status);
        }
        mine
    }

    /// Deletes the leader key only if it holds my name.
    pub fn release_leader(&mut self, store: &mut MemoryStore, now: MonoTime) -> bool {
        store.delete_if_value(now, &self.keys.leader(), &self.name)
    }

    /// Writes my member record bound to my (refreshed) lease.
    pub fn touch_member(&mut self, store: &mut MemoryStore, now: MonoTime, data: &MemberData) {
        let key = self.keys.member(&self.name);
        let json = data.to_json();
        // Only a zero ttl can fail here; the record then simply does not appear,
        // exactly as if it had expired at once.
        let _ = self.with_lease(store, now, |s, l| s.put(now, &key, &json, Some(l)));
    }

    /// Creates `initialize` only if absent.
    pub fn initialize(&mut self, store: &mut MemoryStore, now: MonoTime, value: &str) -> bool {
        matches!(
            store.create(now, &self.keys.initialize(), value, None),
            Ok(Some(_))
        )
    }

    /// Overwrites `initialize`.
    pub fn set_initialize(&mut self, store: &mut MemoryStore, now: MonoTime, value: &str) {
        self.put_plain(store, now, &self.keys.initialize(), value);
    }

    /// Deletes `initialize`.
    pub fn cancel_initialization(&mut self, store: &mut MemoryStore, now: MonoTime) {
        store.delete(now, &self.keys.initialize());
    }

    /// Writes `config`, by CAS when `expected` is given.
    pub fn set_config(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> bool {
        self.versioned_put(store, now, &self.keys.config(), &config.to_json(), expected)
            .is_some()
    }

    /// Writes `failover`, by CAS when `expected` is given.
    pub fn set_failover(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        failover: &Failover,
        expected: Option<Version>,
    ) -> bool {
        self.versioned_put(
            store,
            now,
            &self.keys.failover(),
            &failover.to_json(),
            expected,
        )
        .is_some()
    }

    /// Writes `sync`, by CAS when `expected` is given; the new version or `None`.
    pub fn set_sync(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        sync: &SyncState,
        expected: Option<Version>,
    ) -> Option<Version> {
        self.versioned_put(store, now, &self.keys.sync(), &sync.to_json(), expected)
    }

    /// Deletes `sync`, by CAS when `expected` is given. Without `expected` it always
    /// succeeds (an absent key is already deleted).
    pub fn delete_sync(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        expected: Option<Version>,
    ) -> bool {
        let key = self.keys.sync();
        match expected {
            Some(v) => store.delete_if_version(now, &key, v),
            None => {
                store.delete(now, &key);
                true
            }
        }
    }

    /// Writes `history`.
    pub fn set_history(&mut self, store: &mut MemoryStore, now: MonoTime, history: &History) {
        self.put_plain(store, now, &self.keys.history(), &history.to_json());
    }

    /// Writes `status`.
    pub fn set_status(&mut self, store: &mut MemoryStore, now: MonoTime, status: &Status) {
        self.put_plain(store, now, &self.keys.status(), &status.to_json());
    }

    /// Writes `failsafe`.
    pub fn set_failsafe(&mut self, store: &mut MemoryStore, now: MonoTime, failsafe: &Failsafe) {
        let json = serde_json::to_string(failsafe).unwrap_or_else(|_| "{}".to_string());
        self.put_plain(store, now, &self.keys.failsafe(), &json);
    }

    /// Deletes every key of the cluster.
    pub fn delete_cluster(&mut self, store: &mut MemoryStore, now: MonoTime) {
        store.delete_prefix(now, self.keys.prefix());
    }

    fn put_plain(&self, store: &mut MemoryStore, now: MonoTime, key: &str, value: &str) {
        // Without a lease a put cannot fail.
        let _ = store.put(now, key, value, None);
    }

    fn versioned_put(
        &self,
        store: &mut MemoryStore,
        now: MonoTime,
        key: &str,
        value: &str,
        expected: Option<Version>,
    ) -> Option<Version> {
        match expected {
            Some(v) => store.put_if_version(now, key, value, v),
            None => store.put(now, key, value, None).ok(),
        }
    }
}

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

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.initialize(s, now, value)).await
    }

    async fn set_initialize(&self, value: &str) -> Result<(), DcsError> {
        self.call(|n, s, now| n.set_initialize(s, now, value)).await
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        self.call(|n, s, now| n.cancel_initialization(s, now)).await
    }

    async fn set_config(
        &self,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.set_config(s, now, config, expected))
            .await
    }

    async fn set_failover(
        &self,
        failover: &Failover,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.set_failover(s, now, failover, expected))
            .await
    }

    async fn set_sync(
        &self,
        sync: &SyncState,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        self.call(|n, s, now| n.set_sync(s, now, sync, expected))
            .await
    }

    async fn delete_sync(&self, expected: Option<Version>) -> Result<bool, DcsError> {
        self.call(|n, s, now| n.delete_sync(s, now, expected)).await
    }

    async fn set_history(&self, history: &History) -> Result<(), DcsError> {
        self.call(|n, s, now| n.set_history(s, now, history)).await
    }

    async fn set_status(&self, status: &Status) -> Result<(), DcsError> {
        self.call(|n, s, now| n.set_status(s, now, status)).await
    }

    async fn set_failsafe(&self, failsafe: &Failsafe) -> Result<(), DcsError> {
        self.call(|n, s, now| n.set_failsafe(s, now, failsafe))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::model::{MemberState, Role};

    const TTL: Duration = Duration::from_secs(30);

    fn t(ms: u64) -> MonoTime {
        MonoTime::from_millis(ms)
    }

    fn timing() -> DcsTiming {
        DcsTiming {
            ttl: TTL,
            retry_timeout: Duration::from_secs(10),
            loop_wait: Duration::from_secs(10),
        }
    }

    fn node(name: &str) -> MemoryDcsNode {
        MemoryDcsNode::new(ClusterKeys::new("service", "batman"), name, timing())
    }

    fn member(lsn: u64) -> MemberData {
        MemberData {
            conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
            state: Some(MemberState::Running),
            role: Some(Role::Replica),
            xlog_location: Some(lsn),
            ..Default::default()
        }
    }

    #[test]
    fn lease_expiry_deletes_only_bound_keys_in_one_revision() {
        let mut s = MemoryStore::new();
        let lease = s.grant_lease(t(0), "a", Duration::from_secs(10));
        s.put(t(0), "/x/bound1", "1", Some(lease)).unwrap();
        s.put(t(0), "/x/bound2", "2", Some(lease)).unwrap();
        s.put(t(0), "/x/free", "3", None).unwrap();
        let rev = s.revision();
        let changes = s.changes();
        assert_eq!(
            s.range(t(9_999), "/x/").len(),
            3,
            "alive just before expiry"
        );
        assert_eq!(s.revision(), rev);
        let left = s.range(t(10_000), "/x/");
        assert_eq!(left.len(), 1, "expired at now == expiry");
        assert_eq!(left[0].key, "/x/free");
        assert_eq!(s.revision(), rev + 1);
        assert_eq!(s.changes(), changes + 1);
        assert!(!s.keepalive(t(10_000), lease));
        assert_eq!(
            s.put(t(10_000), "/x/again", "v", Some(lease)),
            Err(LeaseNotFound(lease))
        );
        assert!(s.get(t(10_000), "/x/again").is_none());
    }

    #[test]
    fn keepalive_restarts_the_ttl() {
        let mut s = MemoryStore::new();
        let lease = s.grant_lease(t(0), "a", Duration::from_secs(10));
        s.put(t(0), "/k", "v", Some(lease)).unwrap();
        assert!(s.keepalive(t(8_000), lease));
        assert!(s.get(t(17_999), "/k").is_some());
        assert_eq!(s.lease(t(17_999), lease).unwrap().expiry, t(18_000));
        assert!(s.get(t(18_000), "/k").is_none());
        assert_eq!(s.lease(t(18_000), lease), None);
    }

    #[test]
    fn expire_now_forces_expiry_and_reports_it() {
        let mut s = MemoryStore::new();
        let a = s.grant_lease(t(0), "a", Duration::from_secs(1));
        let _b = s.grant_lease(t(0), "b", Duration::from_secs(5));
        s.put(t(0), "/a", "v", Some(a)).unwrap();
        assert_eq!(s.expire_now(t(999)), 0);
        assert_eq!(s.expire_now(t(1_000)), 1);
        assert_eq!(s.expire_now(t(5_000)), 1);
        assert!(s.range(t(5_000), "/").is_empty());
    }

    #[test]
    fn put_without_lease_detaches_and_rebinding_moves_the_key() {
        let mut s = MemoryStore::new();
        let a = s.grant_lease(t(0), "a", Duration::from_secs(1));
        let b = s.grant_lease(t(0), "b", Duration::from_secs(10));
        s.put(t(0), "/free", "v", Some(a)).unwrap();
        s.put(t(0), "/free", "v", None).unwrap();
        s.put(t(0), "/moved", "v", Some(a)).unwrap();
        s.put(t(0), "/moved", "v", Some(b)).unwrap();
        let keys: Vec<_> = s.range(t(2_000), "/").into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["/free", "/moved"]);
        assert!(s.revoke_lease(t(2_000), b));
        assert_eq!(s.range(t(2_000), "/").len(), 1);
        assert!(!s.revoke_lease(t(2_000), b));
    }

    #[test]
    fn create_cas_and_conditional_deletes() {
        let mut s = MemoryStore::new();
        let v1 = s.create(t(0), "/k", "one", None).unwrap().unwrap();
        assert_eq!(s.create(t(0), "/k", "other", None), Ok(None));
        let v2 = s.put_if_version(t(0), "/k", "two", v1).unwrap();
        assert!(v2 > v1);
        assert_eq!(s.put_if_version(t(0), "/k", "stale", v1), None);
        let e = s.get(t(0), "/k").unwrap();
        assert_eq!((e.value.as_str(), e.version), ("two", v2));
        assert_eq!(e.create_revision, v1.0, "create revision survives updates");
        assert_eq!(
            s.put_if_version(t(0), "/absent", "x", Version(0)),
            Some(Version(s.revision()))
        );
        assert!(!s.delete_if_value(t(0), "/k", "one"));
        assert!(!s.delete_if_version(t(0), "/k", v1));
        assert!(s.delete_if_version(t(0), "/k", v2));
        assert!(!s.delete(t(0), "/k"));
        assert!(!s.delete_if_version(t(0), "/k", Version(0)));
        s.put(t(0), "/k", "me", None).unwrap();
        assert!(s.delete_if_value(t(0), "/k", "me"));
    }

    #[test]
    fn prefix_operations_respect_the_boundary() {
        let mut s = MemoryStore::new();
        for k in [
            "/service/a/x",
            "/service/a/y",
            "/service/ab/x",
            "/service/b",
        ] {
            s.put(t(0), k, "v", None).unwrap();
        }
        assert_eq!(s.range(t(0), "/service/a/").len(), 2);
        let rev = s.revision();
        assert_eq!(s.delete_prefix(t(0), "/service/a/"), 2);
        assert_eq!(s.revision(), rev + 1, "one revision for the whole prefix");
        let keys: Vec<_> = s.range(t(0), "/").into_iter().map(|e| e.key).collect();
        assert_eq!(keys, vec!["/service/ab/x", "/service/b"]);
        assert_eq!(s.delete_prefix(t(0), "/nothing/"), 0);
        assert_eq!(s.revision(), rev + 1);
    }

    #[test]
    fn leader_and_member_expire_when_nobody_renews() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        a.touch_member(&mut s, t(0), &member(1));
        assert!(a.acquire_leader(&mut s, t(1_000)));
        let c = a.get_cluster(&mut s, t(1_000));
        assert!(c.is_leader("a"));
        let lease = a.lease_id().unwrap().to_string();
        assert_eq!(c.leader.as_ref().unwrap().session.as_deref(), Some(&*lease));
        assert_eq!(c.member("a").unwrap().data, member(1));
        // The acquire refreshed the lease: it lasts ttl from the acquire.
        let c = a.get_cluster(&mut s, t(30_999));
        assert!(c.is_leader("a") && c.member("a").is_some());
        let c = a.get_cluster(&mut s, t(31_000));
        assert!(c.is_unlocked());
        assert!(c.members.is_empty());
        // A late renew finds the key gone and reports it; the lease is re-granted.
        assert!(!a.renew_leader(&mut s, t(32_000)));
        assert_ne!(a.lease_id().unwrap().to_string(), lease);
        let mut b = node("b");
        assert!(b.acquire_leader(&mut s, t(32_000)));
        assert!(!a.acquire_leader(&mut s, t(32_000)));
    }

    #[test]
    fn renew_keeps_leader_and_member() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        a.touch_member(&mut s, t(0), &member(1));
        assert!(a.acquire_leader(&mut s, t(0)));
        for step in 1..=10 {
            assert!(a.renew_leader(&mut s, t(step * 10_000)));
        }
        let c = a.get_cluster(&mut s, t(129_999));
        assert!(c.is_leader("a"));
        assert!(
            c.member("a").is_some(),
            "one lease keeps the member key too"
        );
        assert!(a.get_cluster(&mut s, t(130_000)).is_unlocked());
    }

    #[test]
    fn release_and_renew_only_by_the_owner() {
        let mut s = MemoryStore::new();
        let (mut a, mut b) = (node("a"), node("b"));
        assert!(a.acquire_leader(&mut s, t(0)));
        assert!(!b.acquire_leader(&mut s, t(0)));
        assert!(!b.release_leader(&mut s, t(0)));
        assert!(!b.renew_leader(&mut s, t(0)));
        assert!(b.get_cluster(&mut s, t(0)).is_leader("a"));
        assert!(a.release_leader(&mut s, t(0)));
        assert!(!a.release_leader(&mut s, t(0)));
        assert!(b.get_cluster(&mut s, t(0)).is_unlocked());
        assert!(b.acquire_leader(&mut s, t(0)));
        assert!(!a.renew_leader(&mut s, t(0)), "renew after b took the key");
        assert!(a.get_cluster(&mut s, t(0)).is_leader("b"));
    }

    #[test]
    fn renew_rebinds_my_name_on_a_foreign_lease() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        let keys = a.keys().clone();
        let foreign = s.grant_lease(t(0), "a-previous-process", Duration::from_secs(5));
        s.put(t(0), &keys.leader(), "a", Some(foreign)).unwrap();
        let version = s.get(t(0), &keys.leader()).unwrap().version;
        assert!(a.renew_leader(&mut s, t(1_000)));
        let e = s.get(t(1_000), &keys.leader()).unwrap();
        assert_eq!(e.lease, a.lease_id());
        assert!(e.version > version);
        // The foreign lease's expiry no longer takes the key with it.
        assert!(s.get(t(6_000), &keys.leader()).is_some());
        // With my own lease already on it, renew writes nothing.
        let rev = s.revision();
        assert!(a.renew_leader(&mut s, t(7_000)));
        assert_eq!(s.revision(), rev);
    }

    #[test]
    fn ttl_change_takes_effect_with_the_next_lease() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        assert!(a.acquire_leader(&mut s, t(0)));
        let old = a.lease_id().unwrap();
        a.set_timing(DcsTiming {
            ttl: Duration::from_secs(10),
            ..timing()
        });
        assert!(a.renew_leader(&mut s, t(1_000)));
        let new = a.lease_id().unwrap();
        assert_ne!(new, old);
        assert_eq!(s.lease(t(1_000), new).unwrap().ttl, Duration::from_secs(10));
        assert!(a.get_cluster(&mut s, t(10_999)).is_leader("a"));
        assert!(a.get_cluster(&mut s, t(11_000)).is_unlocked());
    }

    #[test]
    fn versioned_keys_reject_stale_writes() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        let cfg = |ttl: f64| DynamicConfig {
            ttl,
            ..Default::default()
        };
        assert!(a.set_config(&mut s, t(0), &cfg(30.0), None));
        let v1 = a.get_cluster(&mut s, t(0)).config.unwrap().version;
        assert!(a.set_config(&mut s, t(0), &cfg(40.0), Some(v1)));
        assert!(!a.set_config(&mut s, t(0), &cfg(50.0), Some(v1)));
        assert_eq!(a.get_cluster(&mut s, t(0)).config.unwrap().value.ttl, 40.0);

        let fo = Failover {
            leader: Some("a".into()),
            member: Some("b".into()),
            scheduled_at: None,
        };
        assert!(a.set_failover(&mut s, t(0), &fo, None));
        let v = a.get_cluster(&mut s, t(0)).failover.unwrap().version;
        assert!(a.set_failover(&mut s, t(0), &Failover::default(), Some(v)));
        assert!(!a.set_failover(&mut s, t(0), &fo, Some(v)));
        assert!(a.get_cluster(&mut s, t(0)).failover_request().is_none());

        let sync = SyncState {
            leader: Some("a".into()),
            sync_standby: vec!["b".into()],
            quorum: 0,
        };
        let v1 = a.set_sync(&mut s, t(0), &sync, None).unwrap();
        let read = a.get_cluster(&mut s, t(0)).sync.unwrap();
        assert_eq!((read.value, read.version), (sync.clone(), v1));
        assert_eq!(
            a.set_sync(&mut s, t(0), &SyncState::default(), Some(Version(v1.0 - 1))),
            None
        );
        assert!(!a.delete_sync(&mut s, t(0), Some(Version(v1.0 - 1))));
        assert!(a.delete_sync(&mut s, t(0), Some(v1)));
        assert!(a.get_cluster(&mut s, t(0)).sync.is_none());
        assert!(a.delete_sync(&mut s, t(0), None));
    }

    #[test]
    fn initialize_is_create_only_and_delete_cluster_clears_the_prefix() {
        let mut s = MemoryStore::new();
        let mut a = node("a");
        let mut other = MemoryDcsNode::new(ClusterKeys::new("service", "robin"), "x", timing());
        assert!(other.initialize(&mut s, t(0), "1"));
        assert!(a.initialize(&mut s, t(0), ""));
        assert!(!a.initialize(&mut s, t(0), "7"));
        assert_eq!(a.get_cluster(&mut s, t(0)).initialize.as_deref(), Some(""));
        a.set_initialize(&mut s, t(0), "7311111111111111111");
        assert_eq!(
            a.get_cluster(&mut s, t(0)).system_identifier(),
            Some("7311111111111111111")
        );
        a.cancel_initialization(&mut s, t(0));
        assert!(a.get_cluster(&mut s, t(0)).initialize.is_none());
        a.set_status(
            &mut s,
            t(0),
            &Status {
                optime: Some(5),
                ..Default::default()
            },
        );
        a.set_history(&mut s, t(0), &History::default());
        a.set_failsafe(&mut s, t(0), &Failsafe::from([("a".into(), "u".into())]));
        a.touch_member(&mut s, t(0), &member(5));
        let c = a.get_cluster(&mut s, t(0));
        assert_eq!(c.status.optime, Some(5));
        assert!(c.history.is_some() && c.failsafe.is_some());
        a.delete_cluster(&mut s, t(0));
        assert_eq!(a.get_cluster(&mut s, t(0)), Cluster::default());
        assert_eq!(
            other.get_cluster(&mut s, t(0)).initialize.as_deref(),
            Some("1"),
            "another cluster's keys survive"
        );
    }

    fn async_pair(clock: &Arc<ManualClock>) -> (SharedMemoryStore, MemoryDcs, MemoryDcs) {
        let shared = SharedMemoryStore::new();
        let keys = ClusterKeys::new("service", "batman");
        let mk = |name: &str| {
            MemoryDcs::new(
                &shared,
                clock.clone() as Arc<dyn Clock>,
                keys.clone(),
                name,
                timing(),
            )
        };
        let (a, b) = (mk("a"), mk("b"));
        (shared, a, b)
    }

    #[tokio::test]
    async fn watch_wakes_on_decision_keys_and_noticed_expiry_only() {
        let clock = Arc::new(ManualClock::new(t(1_000), 0));
        let (shared, a, b) = async_pair(&clock);
        let mut rx = b.subscribe();
        let other_cluster = MemoryDcs::new(
            &shared,
            clock.clone() as Arc<dyn Clock>,
            ClusterKeys::new("service", "robin"),
            "x",
            timing(),
        );
        a.touch_member(&member(1)).await.unwrap();
        a.set_status(&Status::default()).await.unwrap();
        a.set_history(&History::default()).await.unwrap();
        a.set_failsafe(&Failsafe::new()).await.unwrap();
        assert!(other_cluster.acquire_leader().await.unwrap());
        assert!(
            !rx.has_changed().unwrap(),
            "member/status/history/failsafe writes and other clusters do not wake"
        );
        assert!(a.acquire_leader().await.unwrap());
        assert!(rx.has_changed().unwrap(), "acquire wakes other members");
        rx.borrow_and_update();
        assert!(a.renew_leader().await.unwrap());
        assert!(!rx.has_changed().unwrap(), "a keepalive changes no key");
        for write in 0..4 {
            match write {
                0 => assert!(a.set_config(&DynamicConfig::default(), None).await.unwrap()),
                1 => assert!(a.set_failover(&Failover::default(), None).await.unwrap()),
                2 => assert!(a
                    .set_sync(&SyncState::default(), None)
                    .await
                    .unwrap()
                    .is_some()),
                _ => assert!(a.initialize("").await.unwrap()),
            }
            assert!(
                rx.has_changed().unwrap(),
                "decision key write {write} wakes"
            );
            rx.borrow_and_update();
        }
        clock.advance(TTL);
        assert!(!rx.has_changed().unwrap(), "expiry is noticed lazily");
        assert_eq!(shared.expire_now(clock.now()), 2, "a's and x's leases");
        assert!(
            rx.has_changed().unwrap(),
            "noticed expiry of the leader wakes"
        );
        rx.borrow_and_update();
        b.touch_member(&member(2)).await.unwrap();
        clock.advance(TTL);
        assert!(b.get_cluster().await.unwrap().members.is_empty());
        assert!(
            !rx.has_changed().unwrap(),
            "a member's expiry does not wake"
        );
        assert!(b.acquire_leader().await.unwrap());
        rx.borrow_and_update();
        clock.advance(TTL);
        assert!(b.get_cluster().await.unwrap().is_unlocked());
        assert!(
            rx.has_changed().unwrap(),
            "expiry noticed by a read wakes too"
        );
    }

    #[tokio::test]
    async fn unreachable_client_fails_fast_with_the_typed_error() {
        let clock = Arc::new(ManualClock::new(t(1_000), 0));
        let (_shared, a, b) = async_pair(&clock);
        a.set_reachable(false);
        assert!(matches!(
            a.acquire_leader().await,
            Err(DcsError::Unreachable(_))
        ));
        assert!(matches!(
            a.get_cluster().await,
            Err(DcsError::Unreachable(_))
        ));
        assert!(
            b.acquire_leader().await.unwrap(),
            "a's attempt never landed"
        );
        a.set_reachable(true);
        assert!(a.get_cluster().await.unwrap().is_leader("b"));
    }

    #[tokio::test(start_paused = true)]
    async fn latency_delays_calls_and_beyond_retry_timeout_is_unreachable() {
        let clock = Arc::new(ManualClock::new(t(1_000), 0));
        let (_shared, a, b) = async_pair(&clock);
        a.set_latency(Duration::from_secs(3));
        let start = tokio::time::Instant::now();
        assert!(a.acquire_leader().await.unwrap());
        assert_eq!(start.elapsed(), Duration::from_secs(3));
        a.set_latency(Duration::from_secs(11));
        let start = tokio::time::Instant::now();
        assert!(matches!(
            a.release_leader().await,
            Err(DcsError::Unreachable(_))
        ));
        assert_eq!(start.elapsed(), Duration::from_secs(10));
        assert!(
            b.get_cluster().await.unwrap().is_leader("a"),
            "never applied"
        );
    }
}
