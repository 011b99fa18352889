//! The store: keys, revisions and leases, etcd v3 semantics, synchronous and
//! deterministic.

use crate::clock::MonoTime;
use crate::model::Version;
use std::collections::{BTreeMap, BTreeSet};
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
