//! A custom DCS backend in one file: the cluster state in one JSON file per
//! cluster, every operation one read-modify-write under an exclusive advisory lock
//! (`flock`), and leases that expire by the wall clock.
//!
//! It is meant for one machine (several agent processes, or several nodes in one
//! orchestrator process) and as a template for a real backend: it shows what the
//! [`Dcs`] trait asks for (one lease per member, the leader key bound to it, CAS on
//! versions, create-only `initialize`, a change counter for the HA loop) and it passes
//! ha-core's conformance suite (`examples/tests/file_dcs_conformance.rs`). It is not
//! a consensus store: a shared file system that does not honour `flock`, or a wall
//! clock that jumps, breaks its leases. A production backend would also fsync.

use async_trait::async_trait;
use ha_core::{Cluster, Dcs, DcsError, DcsTiming, MemberData, RawEntry, Version};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// Keys whose change calls for a new HA decision (the [`Dcs::subscribe`] contract):
/// member records, `status`, `history` and `failsafe` are written every cycle and
/// must not wake anyone.
const WATCHED: [&str; 5] = ["leader", "config", "failover", "sync", "initialize"];

/// How often a client looks for changes made by others (there is no push channel).
const POLL: Duration = Duration::from_millis(100);

/// The whole state of one cluster, as stored in `<dir>/<scope>.json`.
#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Bumped by every write; a key's version is the revision that last wrote it.
    revision: i64,
    /// Bumped whenever one of the [`WATCHED`] keys changes.
    watched: u64,
    /// Key (relative to the cluster, e.g. `members/pg1`) ⇒ entry.
    keys: BTreeMap<String, Entry>,
    /// Lease id ⇒ expiry, in milliseconds since the Unix epoch.
    leases: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    value: String,
    version: i64,
    /// The lease the key lives and dies with (leader key and member records).
    lease: Option<String>,
}

impl State {
    /// Drops expired leases and every key bound to them.
    fn expire(&mut self, now_ms: i64) {
        let dead: Vec<String> = self
            .leases
            .iter()
            .filter(|(_, &until)| until <= now_ms)
            .map(|(id, _)| id.clone())
            .collect();
        for id in dead {
            self.leases.remove(&id);
            let bound: Vec<String> = self
                .keys
                .iter()
                .filter(|(_, e)| e.lease.as_deref() == Some(id.as_str()))
                .map(|(k, _)| k.clone())
                .collect();
            for key in bound {
                self.delete(&key);
            }
        }
    }

    fn put(&mut self, key: &str, value: &str, lease: Option<&str>) -> Version {
        self.revision += 1;
        self.touched(key);
        let entry = Entry {
            value: value.to_string(),
            version: self.revision,
            lease: lease.map(str::to_string),
        };
        self.keys.insert(key.to_string(), entry);
        Version(self.revision)
    }

    /// Writes `key` only when it is at version `expected` (`None`: unconditionally).
    fn put_if(&mut self, key: &str, value: &str, expected: Option<Version>) -> Option<Version> {
        match expected {
            Some(v) if self.keys.get(key).map(|e| e.version) != Some(v.0) => None,
            _ => Some(self.put(key, value, None)),
        }
    }

    fn delete(&mut self, key: &str) -> bool {
        let existed = self.keys.remove(key).is_some();
        if existed {
            self.revision += 1;
            self.touched(key);
        }
        existed
    }

    fn touched(&mut self, key: &str) {
        if WATCHED.contains(&key) {
            self.watched += 1;
        }
    }
}

/// One member's client of a cluster stored under a directory.
pub struct FileDcs {
    inner: Arc<Inner>,
}

struct Inner {
    /// `<dir>/<scope>.json` (state) and `<dir>/<scope>.lock` (the flock target).
    state_path: PathBuf,
    lock_path: PathBuf,
    member: String,
    timing: Mutex<DcsTiming>,
    /// The lease this member uses; `None` until the first write that needs one.
    lease: Mutex<Option<String>>,
    changes: watch::Sender<u64>,
}

impl FileDcs {
    /// A client for `member` of cluster `scope`, stored in directory `dir` (which
    /// must exist: a missing directory reads as an unreachable DCS). Starts a task
    /// that watches the file for changes of the keys the HA loop waits on; it ends
    /// when the client is dropped. Call it inside a tokio runtime.
    pub fn connect(dir: &Path, scope: &str, member: &str, timing: DcsTiming) -> FileDcs {
        let (changes, _) = watch::channel(0);
        let inner = Arc::new(Inner {
            state_path: dir.join(format!("{scope}.json")),
            lock_path: dir.join(format!("{scope}.lock")),
            member: member.to_string(),
            timing: Mutex::new(timing),
            lease: Mutex::new(None),
            changes,
        });
        tokio::spawn(watch_for_changes(Arc::downgrade(&inner)));
        FileDcs { inner }
    }
}

/// Polls the `watched` counter and bumps the subscribers' counter when it moved.
async fn watch_for_changes(inner: Weak<Inner>) {
    let mut seen = None;
    loop {
        let Some(strong) = inner.upgrade() else {
            return; // the client is gone
        };
        // Expiring a lease is a write, so a dead leader's key vanishes here even when
        // no member writes; a failed read is retried at the next poll.
        if let Ok(watched) = strong.transact(|s, _| s.watched).await {
            if seen.is_some_and(|w| w != watched) {
                strong.changes.send_modify(|n| *n += 1);
            }
            seen = Some(watched);
        }
        drop(strong);
        tokio::time::sleep(POLL).await;
    }
}

impl Inner {
    /// Runs `op` on the cluster state under the exclusive lock, after expiring
    /// overdue leases, and writes the state back. Bounded by `retry_timeout`.
    async fn transact<T: Send + 'static>(
        self: &Arc<Self>,
        op: impl FnOnce(&mut State, &Self) -> T + Send + 'static,
    ) -> Result<T, DcsError> {
        let bound = self.timing().retry_timeout;
        let me = self.clone();
        let work = tokio::task::spawn_blocking(move || {
            let deadline = std::time::Instant::now() + bound;
            me.locked(deadline, op)
        });
        match tokio::time::timeout(bound, work).await {
            Ok(Ok(result)) => result,
            Ok(Err(e)) => Err(DcsError::Backend(format!(
                "the DCS operation panicked: {e}"
            ))),
            Err(_) => Err(DcsError::Unreachable(format!(
                "no answer from {} within {bound:?}",
                self.state_path.display()
            ))),
        }
    }

    fn locked<T>(
        &self,
        deadline: std::time::Instant,
        op: impl FnOnce(&mut State, &Self) -> T,
    ) -> Result<T, DcsError> {
        let unreachable = |what: &str, e: std::io::Error| {
            DcsError::Unreachable(format!("{what} {}: {e}", self.state_path.display()))
        };
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.lock_path)
            .map_err(|e| unreachable("cannot open the lock file of", e))?;
        flock_until(&lock, deadline).map_err(|e| unreachable("cannot lock", e))?;
        // The lock is released when `lock` is closed at the end of this function.
        let mut file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(&self.state_path)
            .map_err(|e| unreachable("cannot open", e))?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|e| unreachable("cannot read", e))?;
        let mut state: State = if text.trim().is_empty() {
            State::default()
        } else {
            serde_json::from_str(&text).map_err(|e| {
                DcsError::Backend(format!(
                    "{} is not a cluster state file ({e}); move it away",
                    self.state_path.display()
                ))
            })?
        };
        // Every change moves the revision, so an unchanged one means nothing to write.
        let before = state.revision;
        state.expire(now_ms());
        let out = op(&mut state, self);
        if state.revision != before {
            let json =
                serde_json::to_string(&state).map_err(|e| DcsError::Backend(e.to_string()))?;
            file.set_len(0)
                .and_then(|()| file.rewind())
                .and_then(|()| file.write_all(json.as_bytes()))
                .map_err(|e| unreachable("cannot write", e))?;
        }
        Ok(out)
    }

    fn timing(&self) -> DcsTiming {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps my lease alive for another ttl, or grants a new one when it is gone
    /// (etcd's keepalive / grant). Every write of a leased key goes through here.
    fn live_lease(&self, state: &mut State) -> String {
        let ttl = i64::try_from(self.timing().ttl.as_millis()).unwrap_or(i64::MAX);
        let mut mine = self.lease.lock().unwrap_or_else(|p| p.into_inner());
        let id = match mine.as_ref() {
            Some(id) if state.leases.contains_key(id) => id.clone(),
            _ => format!("{}-{}", self.member, state.revision + 1),
        };
        // A renewal is a write: it must reach the file, so it moves the revision.
        state.revision += 1;
        state
            .leases
            .insert(id.clone(), now_ms().saturating_add(ttl));
        *mine = Some(id.clone());
        id
    }
}

/// Takes an exclusive `flock` on `file`, retrying until `deadline`.
fn flock_until(file: &File, deadline: std::time::Instant) -> std::io::Result<()> {
    loop {
        // SAFETY: flock on a file descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::WouldBlock || std::time::Instant::now() > deadline {
            return Err(err);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[async_trait]
impl Dcs for FileDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        self.inner
            .transact(|s, _| {
                Cluster::from_entries(s.keys.iter().map(|(k, e)| RawEntry {
                    key: k.clone(),
                    value: e.value.clone(),
                    version: Version(e.version),
                    session: e.lease.clone(),
                }))
            })
            .await
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        self.inner
            .transact(|s, me| {
                let lease = me.live_lease(s);
                if s.keys.contains_key("leader") {
                    return false;
                }
                s.put("leader", &me.member, Some(&lease));
                true
            })
            .await
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        self.inner
            .transact(|s, me| {
                let lease = me.live_lease(s);
                match s.keys.get("leader") {
                    Some(e) if e.value == me.member => {
                        if e.lease.as_deref() != Some(lease.as_str()) {
                            // My name under an older lease: bind it to my live one.
                            s.put("leader", &me.member, Some(&lease));
                        }
                        true
                    }
                    _ => false,
                }
            })
            .await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        self.inner
            .transact(|s, me| match s.keys.get("leader") {
                Some(e) if e.value == me.member => s.delete("leader"),
                _ => false,
            })
            .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let json = data.to_json();
        self.inner
            .transact(move |s, me| {
                let lease = me.live_lease(s);
                s.put(&format!("members/{}", me.member), &json, Some(&lease));
            })
            .await
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        let record = record.to_string();
        self.inner
            .transact(move |s, me| {
                let lease = me.live_lease(s);
                s.put(&format!("proxies/{}", me.member), &record, Some(&lease));
            })
            .await
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        let value = value.to_string();
        self.inner
            .transact(move |s, _| {
                if s.keys.contains_key("initialize") {
                    return false;
                }
                s.put("initialize", &value, None);
                true
            })
            .await
    }

    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        let key = key.to_string();
        self.inner
            .transact(move |s, _| s.put_if(&key, &value, expected))
            .await
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        let key = key.to_string();
        self.inner
            .transact(move |s, _| match expected {
                Some(v) if s.keys.get(&key).map(|e| e.version) != Some(v.0) => false,
                _ => {
                    s.delete(&key);
                    true
                }
            })
            .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        self.inner
            .transact(|s, _| {
                let keys: Vec<String> = s.keys.keys().cloned().collect();
                for key in keys {
                    s.delete(&key);
                }
            })
            .await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.inner.changes.subscribe()
    }

    fn set_timing(&self, timing: DcsTiming) {
        let mut current = self.inner.timing.lock().unwrap_or_else(|p| p.into_inner());
        if current.ttl != timing.ttl {
            // The next write grants a lease with the new ttl (the old one runs out).
            *self.inner.lease.lock().unwrap_or_else(|p| p.into_inner()) = None;
        }
        *current = timing;
    }
}
