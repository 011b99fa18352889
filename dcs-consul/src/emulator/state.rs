//! The emulator's replicated state: one raft-like index, the KV table with
//! tombstones, the sessions and the lock-delay table. Pure: time comes in as
//! arguments, so the rules can be read (and tested) without HTTP.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use tokio::time::Instant;

/// Longest lock-delay Consul allows.
pub(crate) const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// A failed request, as Consul reports it: status code and a plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub status: u16,
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(status: u16, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
}

/// What happens to a session's locks when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behavior {
    Release,
    Delete,
}

impl Behavior {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Behavior::Release => "release",
            Behavior::Delete => "delete",
        }
    }
}

/// One session.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    pub id: String,
    pub name: String,
    pub node: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
    pub behavior: Behavior,
    pub ttl: Option<Duration>,
    pub lock_delay: Duration,
    pub create_index: u64,
    pub modify_index: u64,
    /// When the TTL timer fires (TTL × multiplier after the last create/renew).
    pub expires_at: Option<Instant>,
}

/// A validated session-create request.
#[derive(Debug, Clone)]
pub(crate) struct NewSession {
    pub name: String,
    pub node: String,
    pub node_checks: Vec<String>,
    pub service_checks: Vec<String>,
    pub behavior: Behavior,
    pub ttl: Option<Duration>,
    pub lock_delay: Duration,
}

/// One KV entry.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub value: Vec<u8>,
    pub flags: u64,
    pub session: Option<String>,
    pub lock_index: u64,
    pub create_index: u64,
    pub modify_index: u64,
}

/// The options of a KV write.
#[derive(Debug, Clone, Default)]
pub(crate) struct PutOptions {
    pub flags: u64,
    pub cas: Option<u64>,
    pub acquire: Option<String>,
    pub release: Option<String>,
}

/// Limits and knobs of the emulated agent.
#[derive(Debug, Clone)]
pub(crate) struct Limits {
    pub session_ttl_min: Duration,
    pub session_ttl_max: Duration,
    pub ttl_multiplier: u32,
}

/// The whole store.
#[derive(Debug)]
pub(crate) struct Store {
    index: u64,
    /// Highest index at which the KV table (entries or tombstones) changed.
    kv_index: u64,
    kv: BTreeMap<String, Entry>,
    /// Index at which each deleted key was deleted (never reaped).
    tombstones: BTreeMap<String, u64>,
    sessions: BTreeMap<String, Session>,
    lock_delays: HashMap<String, Instant>,
    limits: Limits,
    node: String,
}

impl Store {
    pub(crate) fn new(limits: Limits, node: impl Into<String>) -> Self {
        // A fresh Consul cluster has already committed a few raft entries.
        Store {
            index: 10,
            kv_index: 0,
            kv: BTreeMap::new(),
            tombstones: BTreeMap::new(),
            sessions: BTreeMap::new(),
            lock_delays: HashMap::new(),
            limits,
            node: node.into(),
        }
    }

    pub(crate) fn node(&self) -> &str {
        &self.node
    }

    /// The current raft index.
    pub(crate) fn index(&self) -> u64 {
        self.index
    }

    fn next_index(&mut self) -> u64 {
        self.index += 1;
        self.index
    }

    /// Index reported for reads of the whole KV table (never 0).
    pub(crate) fn kv_table_index(&self) -> u64 {
        self.kv_index.max(1)
    }

    // ---------------------------------------------------------------- sessions

    pub(crate) fn ttl_bounds(&self) -> (Duration, Duration) {
        (self.limits.session_ttl_min, self.limits.session_ttl_max)
    }

    pub(crate) fn create_session(
        &mut self,
        id: String,
        req: NewSession,
        now: Instant,
    ) -> Result<String, ApiError> {
        if req.node != self.node {
            return Err(ApiError::new(
                500,
                format!("Missing node registration: '{}'", req.node),
            ));
        }
        for check in req.node_checks.iter().chain(req.service_checks.iter()) {
            if check != "serfHealth" {
                return Err(ApiError::new(
                    500,
                    format!("Missing check '{check}' registration"),
                ));
            }
        }
        let idx = self.next_index();
        let expires_at = req.ttl.map(|ttl| now + ttl * self.limits.ttl_multiplier);
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name: req.name,
                node: req.node,
                node_checks: req.node_checks,
                service_checks: req.service_checks,
                behavior: req.behavior,
                ttl: req.ttl,
                lock_delay: req.lock_delay.min(MAX_LOCK_DELAY),
                create_index: idx,
                modify_index: idx,
                expires_at,
            },
        );
        Ok(id)
    }

    /// Resets the TTL timer; `None` when the session does not exist (any more).
    pub(crate) fn renew_session(&mut self, id: &str, now: Instant) -> Option<Session> {
        let multiplier = self.limits.ttl_multiplier;
        let session = self.sessions.get_mut(id)?;
        session.expires_at = session.ttl.map(|ttl| now + ttl * multiplier);
        Some(session.clone())
    }

    pub(crate) fn session(&self, id: &str) -> Option<&Session> {
        self.sessions.get(id)
    }

    pub(crate) fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.sessions.values()
    }

    /// Invalidates a session (destroy, TTL expiry): its locks are released or its
    /// keys deleted per Behavior, all in one index, and each of those keys enters
    /// the session's lock-delay. `false` when the session did not exist.
    pub(crate) fn invalidate_session(&mut self, id: &str, now: Instant) -> bool {
        let Some(session) = self.sessions.remove(id) else {
            return false;
        };
        let held: Vec<String> = self
            .kv
            .iter()
            .filter(|(_, e)| e.session.as_deref() == Some(id))
            .map(|(k, _)| k.clone())
            .collect();
        let idx = self.next_index();
        for key in held {
            match session.behavior {
                Behavior::Release => {
                    if let Some(entry) = self.kv.get_mut(&key) {
                        entry.session = None;
                        entry.modify_index = idx;
                    }
                }
                Behavior::Delete => {
                    self.kv.remove(&key);
                    self.tombstones.insert(key.clone(), idx);
                }
            }
            self.kv_index = idx;
            if !session.lock_delay.is_zero() {
                self.lock_delays.insert(key, now + session.lock_delay);
            }
        }
        true
    }

    /// Invalidates every session whose TTL timer has fired; returns the earliest
    /// pending expiry, if any.
    pub(crate) fn expire_sessions(&mut self, now: Instant) -> (bool, Option<Instant>) {
        let expired: Vec<String> = self
            .sessions
            .values()
            .filter(|s| s.expires_at.is_some_and(|t| t <= now))
            .map(|s| s.id.clone())
            .collect();
        let changed = !expired.is_empty();
        for id in expired {
            self.invalidate_session(&id, now);
        }
        self.lock_delays.retain(|_, until| *until > now);
        let next = self.sessions.values().filter_map(|s| s.expires_at).min();
        (changed, next)
    }

    // ---------------------------------------------------------------------- kv

    pub(crate) fn get(&self, key: &str) -> Option<&Entry> {
        self.kv.get(key)
    }

    /// Entries whose key starts with `prefix`, in key order.
    pub(crate) fn list(&self, prefix: &str) -> Vec<(&String, &Entry)> {
        self.kv
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .collect()
    }

    /// Index reported for a recursive read: the highest change (write or delete)
    /// under the prefix, the table index when nothing under it ever existed.
    pub(crate) fn prefix_index(&self, prefix: &str) -> u64 {
        let live = self.list(prefix).iter().map(|(_, e)| e.modify_index).max();
        let dead = self
            .tombstones
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max();
        match live.into_iter().chain(dead).max() {
            Some(i) if i > 0 => i,
            _ => self.kv_table_index(),
        }
    }

    /// The last index at which this very key changed (0 if never).
    pub(crate) fn key_change_index(&self, key: &str) -> u64 {
        self.kv
            .get(key)
            .map(|e| e.modify_index)
            .or_else(|| self.tombstones.get(key).copied())
            .unwrap_or(0)
    }

    pub(crate) fn put(
        &mut self,
        key: &str,
        value: Vec<u8>,
        opts: PutOptions,
        now: Instant,
    ) -> Result<bool, ApiError> {
        if let Some(session_id) = opts.acquire.as_deref() {
            return self.acquire(key, value, opts.flags, session_id, now);
        }
        if let Some(session_id) = opts.release.as_deref() {
            return Ok(self.release(key, value, opts.flags, session_id));
        }
        if let Some(cas) = opts.cas {
            let current = self.kv.get(key).map(|e| e.modify_index);
            let matches = match (cas, current) {
                (0, None) => true,
                (0, Some(_)) => false,
                (_, None) => false,
                (want, Some(have)) => want == have,
            };
            if !matches {
                return Ok(false);
            }
        }
        let idx = self.next_index();
        match self.kv.get_mut(key) {
            // A plain write keeps the lock (Session, LockIndex) as it is.
            Some(entry) => {
                entry.value = value;
                entry.flags = opts.flags;
                entry.modify_index = idx;
            }
            None => {
                self.kv.insert(
                    key.to_string(),
                    Entry {
                        value,
                        flags: opts.flags,
                        session: None,
                        lock_index: 0,
                        create_index: idx,
                        modify_index: idx,
                    },
                );
                self.tombstones.remove(key);
            }
        }
        self.kv_index = idx;
        Ok(true)
    }

    fn acquire(
        &mut self,
        key: &str,
        value: Vec<u8>,
        flags: u64,
        session_id: &str,
        now: Instant,
    ) -> Result<bool, ApiError> {
        if !self.sessions.contains_key(session_id) {
            return Err(ApiError::new(
                500,
                format!("invalid session \"{session_id}\""),
            ));
        }
        let holder = self.kv.get(key).and_then(|e| e.session.clone());
        match holder.as_deref() {
            Some(h) if h == session_id => {}
            Some(_) => return Ok(false),
            None => {
                if self.lock_delays.get(key).is_some_and(|until| *until > now) {
                    return Ok(false);
                }
            }
        }
        let already_mine = holder.is_some();
        let idx = self.next_index();
        match self.kv.get_mut(key) {
            Some(entry) => {
                entry.value = value;
                entry.flags = flags;
                entry.modify_index = idx;
                if !already_mine {
                    entry.session = Some(session_id.to_string());
                    entry.lock_index += 1;
                }
            }
            None => {
                self.kv.insert(
                    key.to_string(),
                    Entry {
                        value,
                        flags,
                        session: Some(session_id.to_string()),
                        lock_index: 1,
                        create_index: idx,
                        modify_index: idx,
                    },
                );
                self.tombstones.remove(key);
            }
        }
        self.kv_index = idx;
        Ok(true)
    }

    fn release(&mut self, key: &str, value: Vec<u8>, flags: u64, session_id: &str) -> bool {
        let held_by_caller = self
            .kv
            .get(key)
            .is_some_and(|e| e.session.as_deref() == Some(session_id));
        if !held_by_caller {
            return false;
        }
        let idx = self.next_index();
        if let Some(entry) = self.kv.get_mut(key) {
            entry.value = value;
            entry.flags = flags;
            entry.session = None;
            entry.modify_index = idx;
        }
        self.kv_index = idx;
        true
    }

    /// Deletes one key (optionally only at a ModifyIndex) or a whole prefix.
    pub(crate) fn delete(&mut self, key: &str, recurse: bool, cas: Option<u64>) -> bool {
        if recurse {
            let doomed: Vec<String> = self.list(key).iter().map(|(k, _)| (*k).clone()).collect();
            let idx = self.next_index();
            for k in doomed {
                self.kv.remove(&k);
                self.tombstones.insert(k, idx);
            }
            self.kv_index = idx;
            return true;
        }
        match (cas, self.kv.get(key)) {
            // Nothing to delete: Consul reports success.
            (_, None) => return true,
            (Some(want), Some(e)) if e.modify_index != want => return false,
            _ => {}
        }
        let idx = self.next_index();
        self.kv.remove(key);
        self.tombstones.insert(key.to_string(), idx);
        self.kv_index = idx;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> Store {
        Store::new(
            Limits {
                session_ttl_min: Duration::from_millis(100),
                session_ttl_max: Duration::from_secs(86400),
                ttl_multiplier: 1,
            },
            "node1",
        )
    }

    fn session(store: &mut Store, id: &str, behavior: Behavior, delay: Duration) {
        store
            .create_session(
                id.into(),
                NewSession {
                    name: id.into(),
                    node: "node1".into(),
                    node_checks: vec![],
                    service_checks: vec![],
                    behavior,
                    ttl: Some(Duration::from_secs(1)),
                    lock_delay: delay,
                },
                Instant::now(),
            )
            .unwrap();
    }

    fn acquire(id: &str) -> PutOptions {
        PutOptions {
            acquire: Some(id.into()),
            ..PutOptions::default()
        }
    }

    #[test]
    fn lock_index_counts_acquisitions_and_plain_writes_keep_the_lock() {
        let mut s = store();
        let now = Instant::now();
        session(&mut s, "a", Behavior::Release, Duration::ZERO);
        assert!(s.put("k", b"1".to_vec(), acquire("a"), now).unwrap());
        assert!(s.put("k", b"2".to_vec(), acquire("a"), now).unwrap());
        assert_eq!(s.get("k").unwrap().lock_index, 1);
        assert!(s
            .put("k", b"3".to_vec(), PutOptions::default(), now)
            .unwrap());
        assert_eq!(s.get("k").unwrap().session.as_deref(), Some("a"));
        let release = PutOptions {
            release: Some("a".into()),
            ..PutOptions::default()
        };
        assert!(s.put("k", b"4".to_vec(), release, now).unwrap());
        assert_eq!(s.get("k").unwrap().session, None);
        assert!(s.put("k", b"5".to_vec(), acquire("a"), now).unwrap());
        assert_eq!(s.get("k").unwrap().lock_index, 2);
    }

    #[test]
    fn lock_delay_blocks_reacquire_after_invalidation() {
        let mut s = store();
        let now = Instant::now();
        session(&mut s, "a", Behavior::Release, Duration::from_secs(5));
        session(&mut s, "b", Behavior::Release, Duration::ZERO);
        assert!(s.put("k", b"a".to_vec(), acquire("a"), now).unwrap());
        assert!(s.invalidate_session("a", now));
        assert!(!s.put("k", b"b".to_vec(), acquire("b"), now).unwrap());
        let later = now + Duration::from_secs(6);
        assert!(s.put("k", b"b".to_vec(), acquire("b"), later).unwrap());
    }

    #[test]
    fn prefix_index_moves_on_deletes() {
        let mut s = store();
        let now = Instant::now();
        s.put("p/a", vec![], PutOptions::default(), now).unwrap();
        let before = s.prefix_index("p/");
        s.put("q", vec![], PutOptions::default(), now).unwrap();
        assert_eq!(s.prefix_index("p/"), before);
        s.delete("p/a", false, None);
        assert!(s.prefix_index("p/") > before);
    }
}
