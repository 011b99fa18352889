//! Which replication slots a node keeps, and the changes that get it there
//! (Patroni's rules for PostgreSQL 11+):
//! - the leader keeps a physical slot for each member streaming from it, for
//!   `member_slots_ttl` after the member disappears, and every permanent slot;
//! - a replica that may be promoted keeps the slots a leader would keep — the other
//!   members' and the permanent ones, logical included — moved forward to the
//!   positions the leader publishes in `status.slots`, so after a failover no replica
//!   has to re-clone and no consumer finds its slot missing or behind;
//! - every node keeps a slot for each member cascading from it (`replicatefrom`).

use super::permanent_slots::{self, PermanentSlot};
use super::{is_running, Action, Step};
use crate::model::{slot_name_for_member, Cluster, IgnoreSlotRule, Lsn, ObservedSlot, SlotKind};
use crate::postgres::{NewSlot, SlotAdvance, SlotChanges};
use std::collections::BTreeMap;
use std::time::Duration;

/// Copying logical slots restarts Postgres: a copy that would bring the same state
/// as the last one waits this long ...
const COPY_SAME_RETRY: Duration = Duration::from_secs(300);

/// ... and any copy at least this long after the previous one.
const COPY_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// Logical slots on a standby need PostgreSQL 11 (`pg_replication_slot_advance`).
const MIN_VERSION_FOR_REPLICA_SLOTS: u32 = 110_000;

/// A slot this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WantedSlot {
    pub name: String,
    pub kind: SlotKind,
    /// Move the slot forward to here while no consumer uses it.
    pub advance_to: Option<Lsn>,
}

/// What to change, and the logical slots this node lacks but cannot create itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SlotWork {
    pub changes: SlotChanges,
    pub missing_logical: Vec<String>,
}

/// The changes that turn `observed` into `wanted`. Slots matching an ignore rule are
/// never touched; a slot in use is never dropped (the next cycle tries again);
/// `drop_unknown` is off in pause, where only member and permanent slots are managed.
pub(super) fn slot_work(
    wanted: &[WantedSlot],
    observed: &[ObservedSlot],
    ignore: &[IgnoreSlotRule],
    may_create_logical: bool,
    drop_unknown: bool,
) -> SlotWork {
    let mut work = SlotWork::default();
    let ignored = |o: &ObservedSlot| ignore.iter().any(|r| r.matches(o));
    for w in wanted {
        let existing = observed.iter().find(|o| o.name == w.name);
        if existing.is_some_and(|o| ignored(o) || (o.kind != w.kind && o.active)) {
            continue;
        }
        match existing {
            Some(o) if o.kind == w.kind => {
                if let (Some(to), Some(at)) = (w.advance_to, o.lsn) {
                    if to > at && !o.active {
                        work.changes.advance.push(SlotAdvance {
                            name: w.name.clone(),
                            database: w.kind.database().map(str::to_string),
                            to,
                        });
                    }
                }
                continue;
            }
            // Wrong type, database or plugin: it cannot serve the consumer, replace it.
            Some(o) => work.changes.drop.push(o.name.clone()),
            None => {}
        }
        if matches!(w.kind, SlotKind::Logical { .. }) && !may_create_logical {
            work.missing_logical.push(w.name.clone());
        } else {
            work.changes.create.push(NewSlot {
                name: w.name.clone(),
                kind: w.kind.clone(),
            });
        }
    }
    if drop_unknown {
        for o in observed {
            if !o.active && !ignored(o) && !wanted.iter().any(|w| w.name == o.name) {
                work.changes.drop.push(o.name.clone());
            }
        }
    }
    work
}

impl Step<'_> {
    /// Remembers when each member was last seen: its slot outlives it by
    /// `member_slots_ttl`, on the leader and on the replicas that may succeed it.
    pub(super) fn note_members_seen(&mut self, c: &Cluster) {
        for m in &c.members {
            self.st.members_seen.insert(m.name.clone(), self.now);
        }
        let keep_for = Duration::from_secs_f64(self.config().member_slots_ttl.max(0.0));
        let now = self.now;
        self.st
            .members_seen
            .retain(|_, seen| now.since(*seen) <= keep_for);
    }

    /// The leader's (or standby leader's) slots: member slots for the members streaming
    /// from it and the permanent slots (a standby cluster has no logical ones: its
    /// leader cannot decode).
    pub(super) fn leader_slots(&self, c: &Cluster) -> Vec<WantedSlot> {
        let me = self.me();
        let streams_from_me = |name: &str| {
            c.member(name).is_none_or(|m| {
                !m.data.tags.no_stream()
                    && m.data
                        .tags
                        .replicatefrom
                        .as_deref()
                        .is_none_or(|f| f == me || c.member(f).is_none_or(|u| !is_running(u)))
            })
        };
        let mut wanted: Vec<WantedSlot> = self
            .st
            .members_seen
            .keys()
            .filter(|name| name.as_str() != me && streams_from_me(name))
            .map(|name| physical(slot_name_for_member(name), None))
            .collect();
        let standby = self.config().is_standby_cluster();
        for p in self.permanent_slots() {
            if standby && p.kind != SlotKind::Physical {
                continue;
            }
            wanted.push(WantedSlot {
                name: p.name,
                kind: p.kind,
                advance_to: None,
            });
        }
        self.without_own_and_duplicates(wanted)
    }

    /// A replica's slots: one per member cascading from it and, if it may be promoted
    /// in a normal cluster, the leader's slots at the positions the leader published.
    fn replica_slots(&self, c: &Cluster) -> Vec<WantedSlot> {
        let me = self.me();
        let mut wanted: Vec<WantedSlot> = c
            .members
            .iter()
            .filter(|m| m.name != me && !m.data.tags.no_stream())
            .filter(|m| m.data.tags.replicatefrom.as_deref() == Some(me))
            .map(|m| physical(slot_name_for_member(&m.name), None))
            .collect();
        let version_ok = self
            .obs
            .pg
            .server_version
            .is_some_and(|v| v >= MIN_VERSION_FOR_REPLICA_SLOTS);
        let tags = &self.cfg.tags;
        // A node that can never lead needs no slots for after a failover.
        if tags.never_promote()
            || tags.no_stream()
            || !version_ok
            || self.config().is_standby_cluster()
        {
            return self.without_own_and_duplicates(wanted);
        }
        let published = &c.status.slots;
        for name in self.st.members_seen.keys() {
            if name == me || c.member(name).is_some_and(|m| m.data.tags.no_stream()) {
                continue;
            }
            let slot = slot_name_for_member(name);
            let at = published.get(&slot).copied();
            wanted.push(physical(slot, at));
        }
        for p in self.permanent_slots() {
            let at = published.get(&p.name).copied();
            // A logical slot comes from the leader's copy: wait until the leader has one.
            if p.kind != SlotKind::Physical && at.is_none() {
                continue;
            }
            wanted.push(WantedSlot {
                name: p.name,
                kind: p.kind,
                advance_to: at,
            });
        }
        self.without_own_and_duplicates(wanted)
    }

    /// Brings this node's slots in line with its role. A replica missing logical slots
    /// copies them from the leader (a background restart): returns true then.
    pub(super) fn manage_slots(&mut self, c: &Cluster, as_leader: bool) -> bool {
        if !self.use_slots() {
            return false;
        }
        let wanted = if as_leader {
            self.leader_slots(c)
        } else {
            self.replica_slots(c)
        };
        let dc = self.config();
        let work = slot_work(
            &wanted,
            &self.obs.pg.slots,
            &permanent_slots::ignore_rules(&dc),
            as_leader && !dc.is_standby_cluster(),
            !self.paused(),
        );
        if !as_leader && self.copy_logical_slots(c, &work.missing_logical) {
            return true;
        }
        if !work.changes.is_empty() {
            self.act(Action::ManageSlots(work.changes));
        }
        false
    }

    /// With the DCS gone, a replica the failsafe leader calls advances its slots by the
    /// positions that leader sent; nothing is created, dropped or copied on a stale view.
    pub(super) fn advance_slots_from_failsafe_leader(&mut self) {
        if self.obs.failsafe_slots.is_empty() || !self.obs.pg.is_replica() || !self.use_slots() {
            return;
        }
        let Some(mut view) = self.st.last_leader_view.clone() else {
            return;
        };
        view.status.slots = self.obs.failsafe_slots.clone();
        let wanted = self.replica_slots(&view);
        let work = slot_work(&wanted, &self.obs.pg.slots, &[], false, false);
        if !work.changes.advance.is_empty() {
            self.act(Action::ManageSlots(SlotChanges {
                advance: work.changes.advance,
                ..SlotChanges::default()
            }));
        }
    }

    /// The leader's `status` slot positions: its slots' positions, and its own member
    /// slot name at its WAL position (replicas keep a slot for the leader too).
    pub(super) fn published_slots(&self, c: &Cluster) -> BTreeMap<String, Lsn> {
        if !self.use_slots() {
            return BTreeMap::new();
        }
        let wanted = self.leader_slots(c);
        let mut out: BTreeMap<String, Lsn> = self
            .obs
            .pg
            .slots
            .iter()
            .filter(|o| wanted.iter().any(|w| w.name == o.name && w.kind == o.kind))
            .filter_map(|o| Some((o.name.clone(), o.lsn?)))
            .collect();
        out.insert(slot_name_for_member(self.me()), self.obs.pg.wal_position());
        out
    }

    /// `status.retain_slots`: the member slots kept for members seen within
    /// `member_slots_ttl` (the leader's own included), minus permanent ones.
    pub(super) fn retained_member_slots(&self) -> Vec<String> {
        if !self.use_slots() {
            return Vec::new();
        }
        let permanent: Vec<String> = self.permanent_slots().into_iter().map(|p| p.name).collect();
        let mut out: Vec<String> = self
            .st
            .members_seen
            .keys()
            .map(|m| slot_name_for_member(m))
            .filter(|s| !permanent.contains(s))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Starts copying `missing` logical slots from the leader once this replica has
    /// replayed up to where the leader's copies are. A copy restarts Postgres: the
    /// same state (same slots at the same published positions) is copied again only
    /// after `COPY_SAME_RETRY`, a changed one after `COPY_MIN_INTERVAL`.
    fn copy_logical_slots(&mut self, c: &Cluster, missing: &[String]) -> bool {
        let replayed = self.obs.pg.replay_lsn.unwrap_or(0);
        let ready: BTreeMap<String, Lsn> = missing
            .iter()
            .filter_map(|n| Some((n.clone(), *c.status.slots.get(n)?)))
            .filter(|(_, at)| *at <= replayed)
            .collect();
        let Some(source) = c
            .leader_member()
            .filter(|m| m.name != self.me())
            .and_then(super::upstream_of)
        else {
            return false;
        };
        if ready.is_empty() {
            return false;
        }
        if let Some((last, at)) = &self.st.slot_copy_attempt {
            let wait = if *last == ready {
                COPY_SAME_RETRY
            } else {
                COPY_MIN_INTERVAL
            };
            if self.now.since(*at) < wait {
                return false;
            }
        }
        self.st.slot_copy_attempt = Some((ready.clone(), self.now));
        let names: Vec<String> = ready.into_keys().collect();
        let follow = self.upstream_for_replica(c);
        self.say(format!(
            "copying logical slots {} from the leader (restarts postgres)",
            names.join(", ")
        ));
        self.act(Action::CopyLogicalSlots {
            source,
            names,
            follow,
        });
        true
    }

    fn permanent_slots(&self) -> Vec<PermanentSlot> {
        permanent_slots::permanent_slots(&self.config())
    }

    /// My own member slot is never mine to keep; the first entry of a name wins
    /// (cascade slots, then member slots, then permanent ones).
    fn without_own_and_duplicates(&self, wanted: Vec<WantedSlot>) -> Vec<WantedSlot> {
        let own = slot_name_for_member(self.me());
        let mut out: Vec<WantedSlot> = Vec::new();
        for w in wanted {
            if w.name != own && !out.iter().any(|o| o.name == w.name) {
                out.push(w);
            }
        }
        out
    }
}

fn physical(name: String, advance_to: Option<Lsn>) -> WantedSlot {
    WantedSlot {
        name,
        kind: SlotKind::Physical,
        advance_to,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, kind: SlotKind, lsn: u64, active: bool) -> ObservedSlot {
        ObservedSlot {
            name: name.into(),
            kind,
            lsn: Some(lsn),
            active,
        }
    }

    fn logical() -> SlotKind {
        SlotKind::Logical {
            database: "postgres".into(),
            plugin: "test_decoding".into(),
        }
    }

    #[test]
    fn missing_slots_are_created_behind_ones_advanced_unknown_ones_dropped() {
        let wanted = vec![
            physical("a".into(), Some(200)),
            physical("b".into(), None),
            physical("c".into(), Some(100)),
        ];
        let observed = vec![
            seen("a", SlotKind::Physical, 100, false),
            seen("c", SlotKind::Physical, 150, false),
            seen("old", SlotKind::Physical, 1, false),
            seen("busy", SlotKind::Physical, 1, true),
        ];
        let work = slot_work(&wanted, &observed, &[], true, true);
        assert_eq!(work.changes.create.len(), 1);
        assert_eq!(work.changes.create[0].name, "b");
        // `c` is ahead of the published position: slots never move back.
        assert_eq!(
            work.changes.advance,
            vec![SlotAdvance {
                name: "a".into(),
                database: None,
                to: 200
            }]
        );
        // A slot in use is left for a later cycle.
        assert_eq!(work.changes.drop, vec!["old".to_string()]);
    }

    #[test]
    fn replicas_report_missing_logical_slots_instead_of_creating_them() {
        let wanted = vec![WantedSlot {
            name: "cdc".into(),
            kind: logical(),
            advance_to: Some(10),
        }];
        let work = slot_work(&wanted, &[], &[], false, true);
        assert!(work.changes.is_empty());
        assert_eq!(work.missing_logical, vec!["cdc".to_string()]);
        let on_primary = slot_work(&wanted, &[], &[], true, true);
        assert_eq!(on_primary.changes.create.len(), 1);
        assert!(on_primary.missing_logical.is_empty());
    }

    #[test]
    fn logical_slots_advance_in_their_database() {
        let wanted = vec![WantedSlot {
            name: "cdc".into(),
            kind: logical(),
            advance_to: Some(500),
        }];
        let work = slot_work(
            &wanted,
            &[seen("cdc", logical(), 300, false)],
            &[],
            false,
            true,
        );
        assert_eq!(
            work.changes.advance[0].database.as_deref(),
            Some("postgres")
        );
        // In use (a consumer reads it on this node): leave it to the consumer.
        let work = slot_work(
            &wanted,
            &[seen("cdc", logical(), 300, true)],
            &[],
            false,
            true,
        );
        assert!(work.changes.is_empty());
    }

    #[test]
    fn a_slot_of_the_wrong_kind_is_replaced() {
        let wanted = vec![physical("x".into(), None)];
        let work = slot_work(&wanted, &[seen("x", logical(), 1, false)], &[], true, true);
        assert_eq!(work.changes.drop, vec!["x".to_string()]);
        assert_eq!(work.changes.create[0].kind, SlotKind::Physical);
    }

    #[test]
    fn ignored_slots_are_never_touched_and_pause_drops_nothing() {
        let rule: IgnoreSlotRule = serde_json::from_str(r#"{"type": "logical"}"#).unwrap();
        let observed = vec![
            seen("x", logical(), 1, false),
            seen("stray", SlotKind::Physical, 1, false),
        ];
        let wanted = vec![physical("x".into(), None)];
        let work = slot_work(&wanted, &observed, std::slice::from_ref(&rule), true, true);
        assert_eq!(work.changes.drop, vec!["stray".to_string()]);
        assert!(work.changes.create.is_empty());
        let paused = slot_work(&[], &observed, &[rule], true, false);
        assert!(paused.changes.is_empty());
    }
}
