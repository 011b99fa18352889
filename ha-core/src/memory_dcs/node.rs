//! One member's synchronous DCS client over a store (Patroni's etcd3 contract).

use super::store::{LeaseId, LeaseNotFound, MemoryStore};
use crate::clock::MonoTime;
use crate::dcs::DcsTiming;
use crate::model::{
    keys, Cluster, ClusterKeys, DynamicConfig, Failover, Failsafe, History, MemberData, RawEntry,
    Status, SyncState, Version,
};

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

    /// Writes `proxies/<name>` on my lease.
    pub fn touch_proxy(&mut self, store: &mut MemoryStore, now: MonoTime, record: &str) {
        let key = self.keys.proxy(&self.name);
        let _ = self.with_lease(store, now, |s, l| s.put(now, &key, record, Some(l)));
    }

    /// Creates `initialize` only if absent.
    pub fn initialize(&mut self, store: &mut MemoryStore, now: MonoTime, value: &str) -> bool {
        matches!(
            store.create(now, &self.keys.initialize(), value, None),
            Ok(Some(_))
        )
    }

    /// Writes the cluster key `relative` (no lease), by CAS when `expected` is
    /// given; the new version or `None` (see [`crate::Dcs::cas_key`]).
    pub fn cas_key(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        relative: &str,
        value: &str,
        expected: Option<Version>,
    ) -> Option<Version> {
        let key = self.keys.key(relative);
        match expected {
            Some(v) => store.put_if_version(now, &key, value, v),
            None => store.put(now, &key, value, None).ok(),
        }
    }

    /// Deletes the cluster key `relative`, by CAS when `expected` is given. Without
    /// `expected` it always succeeds (an absent key is already deleted).
    pub fn delete_key(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        relative: &str,
        expected: Option<Version>,
    ) -> bool {
        let key = self.keys.key(relative);
        match expected {
            Some(v) => store.delete_if_version(now, &key, v),
            None => {
                store.delete(now, &key);
                true
            }
        }
    }

    /// Overwrites `initialize` (the simulator's typed writes follow; the async
    /// [`crate::Dcs`] has them as provided methods over the two above).
    pub fn set_initialize(&mut self, store: &mut MemoryStore, now: MonoTime, value: &str) {
        self.cas_key(store, now, keys::INITIALIZE, value, None);
    }

    /// Deletes `initialize`.
    pub fn cancel_initialization(&mut self, store: &mut MemoryStore, now: MonoTime) {
        self.delete_key(store, now, keys::INITIALIZE, None);
    }

    /// Writes `config`, by CAS when `expected` is given.
    pub fn set_config(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> bool {
        let value = config.to_json();
        self.cas_key(store, now, keys::CONFIG, &value, expected)
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
        let value = failover.to_json();
        self.cas_key(store, now, keys::FAILOVER, &value, expected)
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
        self.cas_key(store, now, keys::SYNC, &sync.to_json(), expected)
    }

    /// Deletes `sync`, by CAS when `expected` is given.
    pub fn delete_sync(
        &mut self,
        store: &mut MemoryStore,
        now: MonoTime,
        expected: Option<Version>,
    ) -> bool {
        self.delete_key(store, now, keys::SYNC, expected)
    }

    /// Writes `history`.
    pub fn set_history(&mut self, store: &mut MemoryStore, now: MonoTime, history: &History) {
        self.cas_key(store, now, keys::HISTORY, &history.to_json(), None);
    }

    /// Writes `status`.
    pub fn set_status(&mut self, store: &mut MemoryStore, now: MonoTime, status: &Status) {
        self.cas_key(store, now, keys::STATUS, &status.to_json(), None);
    }

    /// Writes `failsafe`.
    pub fn set_failsafe(&mut self, store: &mut MemoryStore, now: MonoTime, failsafe: &Failsafe) {
        let json = serde_json::to_string(failsafe).unwrap_or_else(|_| "{}".to_string());
        self.cas_key(store, now, keys::FAILSAFE, &json, None);
    }

    /// Deletes every key of the cluster.
    pub fn delete_cluster(&mut self, store: &mut MemoryStore, now: MonoTime) {
        store.delete_prefix(now, self.keys.prefix());
    }
}
