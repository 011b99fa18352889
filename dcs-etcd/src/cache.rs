//! The watch-fed copy of the cluster prefix that `get_cluster` serves from.
//!
//! Each watch session fills it with one range read and then applies the watch's
//! events; the agent's own writes are applied as soon as etcd acknowledged them, so
//! the next read never shows an older value of a key this agent just wrote.
//!
//! Staleness rule: `get_cluster` serves the copy only when the watch stream answered
//! a progress request sent for that very call (within `retry_timeout / 4`). Answers
//! carry no request id, so they are counted: etcd answers a stream's progress requests
//! in order, and the n-th answer of a session confirms the n-th request, never a later
//! one (a late answer to an earlier call that gave up must not vouch for a call made
//! after etcd froze). etcd sends a watch's events and progress answers in order on one
//! stream, so the copy then
//! holds every change etcd had sent before answering, including other clients'
//! writes acknowledged before the call (as a read from that etcd member would). No
//! answer (dead, frozen or partitioned connection, session down) means a real range
//! read, which fails when etcd is unreachable, as the primary's DCS-loss rule needs;
//! the unanswered stream is reconnected.

use crate::backend::lock;
use etcd_client::{EventType, KeyValue};
use ha_core::{RawEntry, Version};
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use tokio::sync::{watch, Notify};

/// One call's progress request: confirmed by the session's `number`-th answer, or by a
/// later session's fresh read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ticket {
    session: u64,
    number: u64,
}

#[derive(Default)]
struct State {
    /// Whether a watch session filled the copy and is still open.
    synced: bool,
    entries: BTreeMap<String, RawEntry>,
    /// Deletion revision of keys deleted while synced, so a late acknowledgement of an
    /// older own write does not bring a deleted key back.
    deleted: HashMap<String, i64>,
    /// The revision of the session's range read: older events are in it already.
    base: i64,
    /// The highest revision applied: the session's range read, events, own writes.
    revision: i64,
    /// Progress requests asked for, sent and answered in this session.
    asks: u64,
    sent: u64,
    answers: u64,
    /// Counts watch sessions, so a restart request is not held against the next one.
    session: u64,
    /// The session a restart was asked for.
    restart_of: Option<u64>,
}

/// The cached cluster prefix, shared by the watch task and the backend.
pub(crate) struct ClusterCache {
    state: Mutex<State>,
    /// Bumped whenever the watch connection delivers a message or the copy is filled.
    heard_tx: watch::Sender<u64>,
    /// Asks the watch session to request a progress answer.
    pub(crate) progress_wanted: Notify,
    /// Asks the watch session to give up its (apparently dead) stream; see
    /// [`ClusterCache::should_restart`].
    pub(crate) restart_wanted: Notify,
}

/// An entry as `get_cluster` reports it: the lease id is the session.
pub(crate) fn raw_entry(kv: &KeyValue) -> RawEntry {
    RawEntry {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        version: Version(kv.mod_revision()),
        session: (kv.lease() != 0).then(|| kv.lease().to_string()),
    }
}

impl ClusterCache {
    pub fn new() -> Self {
        ClusterCache {
            state: Mutex::new(State::default()),
            heard_tx: watch::channel(0).0,
            progress_wanted: Notify::new(),
            restart_wanted: Notify::new(),
        }
    }

    /// A new watch session read `entries` at `revision` and its watch is open; returns
    /// the session's number.
    pub fn reset(&self, entries: Vec<RawEntry>, revision: i64) -> u64 {
        let mut s = lock(&self.state);
        s.session += 1;
        let session = s.session;
        s.entries = entries.into_iter().map(|e| (e.key.clone(), e)).collect();
        s.deleted.clear();
        s.base = revision;
        s.revision = revision;
        s.synced = true;
        (s.asks, s.sent, s.answers) = (0, 0, 0);
        drop(s);
        self.heard_tx.send_modify(|n| *n = n.wrapping_add(1));
        session
    }

    /// Asks the watch session for a progress answer; the ticket says which answer
    /// confirms the copy for this caller.
    pub fn ask_progress(&self) -> Ticket {
        let mut s = lock(&self.state);
        s.asks += 1;
        let ticket = Ticket {
            session: s.session,
            number: s.asks,
        };
        drop(s);
        self.progress_wanted.notify_one();
        ticket
    }

    /// For the watch session: whether one more progress request is due (it is then
    /// counted as sent). One request per ask keeps answers and asks in step.
    pub fn next_unsent(&self) -> bool {
        let mut s = lock(&self.state);
        if s.sent < s.asks {
            s.sent += 1;
            true
        } else {
            false
        }
    }

    /// Asks the current watch session to end (its connection stopped answering).
    pub fn request_restart(&self) {
        let mut s = lock(&self.state);
        if s.synced {
            s.restart_of = Some(s.session);
            drop(s);
            self.restart_wanted.notify_one();
        }
    }

    /// Whether a restart was asked for watch session `session`.
    pub fn should_restart(&self, session: u64) -> bool {
        lock(&self.state).restart_of == Some(session)
    }

    /// Whether a watch session filled the copy and is still open.
    pub fn synced(&self) -> bool {
        lock(&self.state).synced
    }

    /// The watch session ended: serve nothing until the next one is filled.
    pub fn unsync(&self) {
        let mut s = lock(&self.state);
        s.synced = false;
        s.entries.clear();
        s.deleted.clear();
    }

    /// The watch connection delivered `events`, or none: the answer to a progress
    /// request.
    pub fn apply_events(&self, events: &[etcd_client::Event]) {
        let mut s = lock(&self.state);
        if s.synced {
            for event in events {
                let Some(kv) = event.kv() else { continue };
                match event.event_type() {
                    EventType::Put => apply_put(&mut s, raw_entry(kv)),
                    EventType::Delete => apply_delete(
                        &mut s,
                        String::from_utf8_lossy(kv.key()).into_owned(),
                        kv.mod_revision(),
                    ),
                }
            }
            // Only a progress answer (no events) proves that etcd has sent
            // everything before it: an event batch may have been on its way for a while.
            if events.is_empty() {
                s.answers += 1;
            }
        }
        drop(s);
        self.heard_tx.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// This agent's put of `key` was acknowledged at `revision`.
    pub fn own_put(&self, key: &str, value: &str, revision: i64, lease: Option<i64>) {
        let mut s = lock(&self.state);
        if s.synced {
            apply_put(
                &mut s,
                RawEntry {
                    key: key.to_string(),
                    value: value.to_string(),
                    version: Version(revision),
                    session: lease.filter(|l| *l != 0).map(|l| l.to_string()),
                },
            );
        }
    }

    /// This agent's delete of `key` was acknowledged at `revision`.
    pub fn own_delete(&self, key: &str, revision: i64) {
        let mut s = lock(&self.state);
        if s.synced {
            apply_delete(&mut s, key.to_string(), revision);
        }
    }

    /// This agent deleted every key of the prefix at `revision`.
    pub fn own_delete_all(&self, revision: i64) {
        let mut s = lock(&self.state);
        if s.synced {
            let keys: Vec<String> = s.entries.keys().cloned().collect();
            for key in keys {
                apply_delete(&mut s, key, revision);
            }
        }
    }

    /// The cached entries, if the copy is synced, holds every own write up to
    /// `own_writes` and `ticket`'s progress request was answered (or a session filled
    /// the copy after it was asked).
    pub fn view(&self, own_writes: i64, ticket: Ticket) -> Option<Vec<RawEntry>> {
        let s = lock(&self.state);
        let confirmed = s.session > ticket.session
            || (s.session == ticket.session && s.answers >= ticket.number);
        (s.synced && confirmed && s.revision >= own_writes)
            .then(|| s.entries.values().cloned().collect())
    }

    /// Whether the copy is synced, holds own writes up to `own_writes` (freshness not
    /// required): good enough to tell whether my member key is still as I wrote it.
    pub fn entry(&self, key: &str, own_writes: i64) -> Option<Option<RawEntry>> {
        let s = lock(&self.state);
        (s.synced && s.revision >= own_writes).then(|| s.entries.get(key).cloned())
    }

    /// A receiver that changes whenever the watch connection delivers a message.
    pub fn heard(&self) -> watch::Receiver<u64> {
        self.heard_tx.subscribe()
    }
}

fn apply_put(s: &mut State, entry: RawEntry) {
    let revision = entry.version.0;
    if revision <= s.base {
        return;
    }
    s.revision = s.revision.max(revision);
    if s.deleted.get(&entry.key).is_some_and(|d| *d > revision) {
        return;
    }
    if s.entries
        .get(&entry.key)
        .is_some_and(|e| e.version.0 >= revision)
    {
        return;
    }
    s.deleted.remove(&entry.key);
    s.entries.insert(entry.key.clone(), entry);
}

fn apply_delete(s: &mut State, key: String, revision: i64) {
    if revision <= s.base {
        return;
    }
    s.revision = s.revision.max(revision);
    if s.entries.get(&key).is_some_and(|e| e.version.0 > revision) {
        return;
    }
    s.entries.remove(&key);
    s.deleted.insert(key, revision);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str, revision: i64) -> RawEntry {
        RawEntry {
            key: key.to_string(),
            value: value.to_string(),
            version: Version(revision),
            session: None,
        }
    }

    /// A ticket asked before any session: every filled session is newer.
    fn long_ago() -> Ticket {
        Ticket {
            session: 0,
            number: 0,
        }
    }

    #[test]
    fn nothing_is_served_before_a_session_filled_it_or_after_it_ended() {
        let cache = ClusterCache::new();
        assert!(cache.view(0, long_ago()).is_none());
        cache.reset(vec![entry("/s/c/leader", "a", 5)], 7);
        assert_eq!(cache.view(0, long_ago()).unwrap().len(), 1);
        cache.unsync();
        assert!(cache.view(0, long_ago()).is_none());
    }

    #[test]
    fn own_writes_are_visible_and_older_acknowledgements_never_undo_newer_state() {
        let cache = ClusterCache::new();
        cache.reset(vec![entry("/s/c/members/b", "x", 4)], 10);
        // My write at 12 must be in any view that claims to hold own writes up to 12.
        assert!(cache.view(12, long_ago()).is_none());
        cache.own_put("/s/c/members/a", "v2", 12, Some(9));
        let view = cache.view(12, long_ago()).unwrap();
        assert_eq!(view[0].value, "v2");
        assert_eq!(view[0].session.as_deref(), Some("9"));
        // Someone deletes it at 13; a late acknowledgement of my write at 12 does not
        // bring it back.
        let mut s = lock(&cache.state);
        apply_delete(&mut s, "/s/c/members/a".to_string(), 13);
        drop(s);
        cache.own_put("/s/c/members/a", "v2", 12, Some(9));
        assert_eq!(cache.view(13, long_ago()).unwrap().len(), 1);
        cache.own_put("/s/c/members/a", "v3", 14, Some(9));
        assert_eq!(cache.view(14, long_ago()).unwrap()[0].value, "v3");
        // Changes the session's read already holds are not applied again.
        let mut s = lock(&cache.state);
        apply_delete(&mut s, "/s/c/members/b".to_string(), 9);
        drop(s);
        assert_eq!(cache.view(14, long_ago()).unwrap().len(), 2);
    }

    #[test]
    fn only_the_answer_to_my_own_request_confirms_the_copy() {
        let cache = ClusterCache::new();
        cache.reset(vec![], 1);
        let first = cache.ask_progress();
        assert!(cache.view(0, first).is_none());
        assert!(cache.next_unsent());
        // A second call asks before the first one's answer arrived ...
        let second = cache.ask_progress();
        assert!(cache.next_unsent());
        assert!(!cache.next_unsent());
        // ... so that late answer confirms the first call only.
        cache.apply_events(&[]);
        assert!(cache.view(0, first).is_some());
        assert!(cache.view(0, second).is_none());
        cache.apply_events(&[]);
        assert!(cache.view(0, second).is_some());
        // A session filled after the ask is a fresh read: it confirms too.
        let third = cache.ask_progress();
        cache.unsync();
        cache.reset(vec![], 2);
        assert!(cache.view(0, third).is_some());
    }
}
