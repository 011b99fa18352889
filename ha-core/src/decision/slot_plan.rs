//! Which replication slots a node keeps, and the changes that get it there
//! (Patroni 4.1's rules):
//! - with PostgreSQL 11+ (slots can be advanced) and `member_slots_ttl` > 0 every node
//!   keeps a physical slot for every other member that streams WAL (not `nostream`),
//!   so whoever leads next has them; a `nofailover` node only for the members naming
//!   it in `replicatefrom`. Otherwise a node keeps slots only for the members that
//!   stream from it. Slots of members gone from the DCS stay while `retain_slots`
//!   (the leader's memory of `member_slots_ttl`) lists them;
//! - a slot nobody is expected to stream from is moved forward: on the leader to the
//!   position its cascading member reports, on a replica to the position the leader
//!   publishes in `status.slots`. Such a slot holding an `xmin` (left from hot standby
//!   feedback) would hold back vacuum forever: it is dropped and recreated;
//! - permanent slots live on every node that may lead (not `nofailover`); a node whose
//!   WAL passes through a `nostream` node gets only the physical ones: no feedback
//!   reaches the primary, so a logical copy could not be trusted.

use super::permanent_slots::{self, PermanentSlot};
use super::{Action, Step};
use crate::model::{
    slot_name_for_member, Cluster, IgnoreSlotRule, Lsn, Member, ObservedSlot, SlotKind, Tags,
};
use crate::postgres::{NewSlot, SlotAdvance, SlotChanges};
use std::collections::BTreeMap;
use std::time::Duration;

/// Copying logical slots restarts Postgres: a copy that would bring the same state
/// as the last one waits this long ...
const COPY_SAME_RETRY: Duration = Duration::from_secs(300);

/// ... and any copy at least this long after the previous one.
const COPY_MIN_INTERVAL: Duration = Duration::from_secs(5);

/// `pg_replication_slot_advance` exists from PostgreSQL 11 on.
const MIN_VERSION_TO_ADVANCE_SLOTS: u32 = 110_000;

/// A slot this node should have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct WantedSlot {
    pub name: String,
    pub kind: SlotKind,
    /// Move the slot forward to here while no consumer uses it.
    pub advance_to: Option<Lsn>,
    /// Whether a standby should be streaming from this physical slot on this node
    /// (`None`: not known, e.g. a retained slot of a member gone from the DCS).
    pub expected_active: Option<bool>,
}

/// How `slot_work` may treat the observed slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SlotRules {
    /// This node can create logical slots (a primary); a replica copies them instead.
    pub may_create_logical: bool,
    /// Drop slots nobody wants (off in pause: only member and permanent slots are managed).
    pub drop_unknown: bool,
    /// Drop physical slots not expected to be active that carry an `xmin`; off while
    /// the cluster has no leader or this node leads but still runs as a standby.
    pub drop_stale_xmin: bool,
}

/// What to change, and the logical slots this node lacks but cannot create itself.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct SlotWork {
    pub changes: SlotChanges,
    pub missing_logical: Vec<String>,
}

/// The changes that turn `observed` into `wanted`. Slots matching an ignore rule are
/// never touched; a slot in use is never dropped (the next cycle tries again).
pub(super) fn slot_work(
    wanted: &[WantedSlot],
    observed: &[ObservedSlot],
    ignore: &[IgnoreSlotRule],
    rules: SlotRules,
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
                let physical = o.kind == SlotKind::Physical;
                let maybe_inactive = w.expected_active != Some(true);
                // Nobody streams from it, so its xmin never moves: it would hold back
                // vacuum; a fresh slot (next cycle) has none.
                if physical
                    && rules.drop_stale_xmin
                    && w.expected_active == Some(false)
                    && o.xmin.is_some()
                    && !o.active
                {
                    work.changes.drop.push(o.name.clone());
                    continue;
                }
                // An inactive slot with an xmin is never moved: that would not clear it.
                let advanceable = !o.active && !(physical && (o.xmin.is_some() || !maybe_inactive));
                if let (Some(to), Some(at)) = (w.advance_to, o.lsn) {
                    if to > at && advanceable {
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
        if matches!(w.kind, SlotKind::Logical { .. }) && !rules.may_create_logical {
            work.missing_logical.push(w.name.clone());
        } else {
            work.changes.create.push(NewSlot {
                name: w.name.clone(),
                kind: w.kind.clone(),
            });
        }
    }
    if rules.drop_unknown {
        for o in observed {
            if !o.active && !ignored(o) && !wanted.iter().any(|w| w.name == o.name) {
                work.changes.drop.push(o.name.clone());
            }
        }
    }
    work
}

/// Whether this node's WAL reaches it from the primary without passing a `nostream`
/// node (Patroni's `get_slot_name_on_primary` is not None): only then do its logical
/// slots get the feedback that keeps them usable. A `replicatefrom` loop counts as no.
fn streams_from_primary(c: &Cluster, me: &str, my_tags: &Tags) -> bool {
    let mut seen: Vec<&str> = Vec::new();
    let (mut name, mut tags) = (me, my_tags);
    loop {
        seen.push(name);
        if tags.no_stream() {
            return false;
        }
        let upstream: Option<&Member> = tags
            .replicatefrom
            .as_deref()
            .filter(|f| *f != name)
            .and_then(|f| c.member(f));
        let Some(up) = upstream else {
            return true;
        };
        if seen.contains(&up.name.as_str()) {
            return false;
        }
        name = &up.name;
        tags = &up.data.tags;
    }
}

impl Step<'_> {
    /// Remembers when each member streaming WAL was last seen: its slot outlives it by
    /// `member_slots_ttl` (a `nostream` member has no slot to keep).
    pub(super) fn note_members_seen(&mut self, c: &Cluster) {
        for m in c.members.iter().filter(|m| !m.data.tags.no_stream()) {
            self.st.members_seen.insert(m.name.clone(), self.now);
        }
        let keep_for = Duration::from_secs_f64(self.config().member_slots_ttl.max(0.0));
        let now = self.now;
        self.st
            .members_seen
            .retain(|_, seen| now.since(*seen) <= keep_for);
    }

    /// `pg_replication_slot_advance` is available (PostgreSQL 11+).
    fn can_advance_slots(&self) -> bool {
        self.obs
            .pg
            .server_version
            .is_some_and(|v| v >= MIN_VERSION_TO_ADVANCE_SLOTS)
    }

    /// The leader's (or standby leader's) slots.
    pub(super) fn leader_slots(&self, c: &Cluster) -> Vec<WantedSlot> {
        self.wanted_slots(c, true)
    }

    /// A replica's slots.
    fn replica_slots(&self, c: &Cluster) -> Vec<WantedSlot> {
        self.wanted_slots(c, false)
    }

    /// Member slots first, then permanent ones; never one for myself.
    fn wanted_slots(&self, c: &Cluster, as_leader: bool) -> Vec<WantedSlot> {
        let mut wanted = self.member_slots(c, as_leader);
        let permanent = self.permanent_wanted(c, as_leader, &wanted);
        wanted.extend(permanent);
        self.without_own_and_duplicates(wanted)
    }

    /// Physical slots for the other members (Patroni's `_get_members_slots`).
    fn member_slots(&self, c: &Cluster, as_leader: bool) -> Vec<WantedSlot> {
        let me = self.me();
        let never_leads = self.cfg.tags.never_promote();
        let leader = c.leader.as_ref().map(|l| l.name.as_str());
        // Who streams from this node: on the leader every member not cascading from
        // another member; on a replica the members naming it (never the leader).
        let streams_from_me = |m: &Member| {
            let from = m.data.tags.replicatefrom.as_deref();
            if as_leader {
                from.is_none_or(|f| f == me || c.member(f).is_none())
            } else {
                from == Some(me) && leader != Some(m.name.as_str())
            }
        };
        let can_advance = self.can_advance_slots();
        // Slots can follow their members everywhere: keep them all for after a failover.
        let keep_all = can_advance && self.config().member_slots_ttl > 0.0;
        let mut wanted = Vec::new();
        for m in c.members.iter().filter(|m| m.name != me) {
            // `nostream` members take WAL from the archive only.
            if m.data.tags.no_stream() {
                continue;
            }
            let expected_active = streams_from_me(m);
            let cascades_from_me = m.data.tags.replicatefrom.as_deref() == Some(me);
            // A node that never leads keeps only the slots members may connect to.
            let keep = if keep_all {
                !never_leads || cascades_from_me
            } else {
                expected_active
            };
            if !keep {
                continue;
            }
            let name = slot_name_for_member(&m.name);
            let mut at = c.status.slots.get(&name).copied().unwrap_or(0);
            // A member streaming from elsewhere leaves its slot here unused: its own
            // reported position tells how far it got.
            if m.data.tags.replicatefrom.is_some() {
                at = at.max(m.data.xlog_location.unwrap_or(0));
            }
            wanted.push(WantedSlot {
                name,
                kind: SlotKind::Physical,
                advance_to: (can_advance && at > 0).then_some(at),
                expected_active: Some(expected_active),
            });
        }
        if never_leads {
            return wanted;
        }
        // Slots of members gone from the DCS, kept for `member_slots_ttl`: the leader
        // remembers them itself and publishes them as `retain_slots`.
        let retained: Vec<String> = if as_leader {
            self.leader_retained_slots()
        } else {
            c.status.retain_slots.clone()
        };
        for name in retained {
            if !wanted.iter().any(|w| w.name == name) {
                wanted.push(WantedSlot {
                    name,
                    kind: SlotKind::Physical,
                    advance_to: None,
                    expected_active: None,
                });
            }
        }
        wanted
    }

    /// The permanent slots this node keeps, besides `members` (Patroni's
    /// `_get_permanent_slots` and `_merge_permanent_slots`).
    fn permanent_wanted(
        &self,
        c: &Cluster,
        as_leader: bool,
        members: &[WantedSlot],
    ) -> Vec<WantedSlot> {
        // A node that never leads needs no slot for after a failover.
        if self.cfg.tags.never_promote() {
            return Vec::new();
        }
        let standby_cluster = self.config().is_standby_cluster();
        // A standby cluster's leader cannot decode; nor can a node fed through a
        // `nostream` node keep a logical slot safely.
        let physical_only = standby_cluster || !streams_from_primary(c, self.me(), &self.cfg.tags);
        // Before PostgreSQL 11 only the leader keeps them: replicas could not advance them.
        let can_advance = self.can_advance_slots();
        if !(can_advance || as_leader) {
            return Vec::new();
        }
        let mut wanted = Vec::new();
        for p in self.permanent_slots() {
            if members.iter().any(|w| w.name == p.name) {
                // A member's slot of the same name already covers a physical one; a
                // logical one conflicts with it and is left out.
                continue;
            }
            let published = c.status.slots.get(&p.name).copied();
            match p.kind {
                SlotKind::Physical => {
                    // A permanent slot named after a member cascading elsewhere is not
                    // streamed from here: it follows that member's reported position.
                    let cascading = c.members.iter().find(|m| {
                        slot_name_for_member(&m.name) == p.name
                            && m.data.tags.replicatefrom.is_some()
                    });
                    let at = published
                        .unwrap_or(0)
                        .max(cascading.and_then(|m| m.data.xlog_location).unwrap_or(0));
                    wanted.push(WantedSlot {
                        name: p.name,
                        kind: p.kind,
                        advance_to: (can_advance && at > 0).then_some(at),
                        expected_active: Some(as_leader && cascading.is_none()),
                    });
                }
                SlotKind::Logical { .. } => {
                    // Logical slots need PostgreSQL 11; a replica copies the leader's
                    // once the leader has one.
                    if physical_only || !can_advance || (!as_leader && published.is_none()) {
                        continue;
                    }
                    wanted.push(WantedSlot {
                        name: p.name,
                        kind: p.kind,
                        advance_to: published,
                        expected_active: None,
                    });
                }
            }
        }
        wanted
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
        let leader = c.leader.as_ref().map(|l| l.name.as_str());
        let rules = SlotRules {
            may_create_logical: as_leader && !dc.is_standby_cluster(),
            drop_unknown: !self.paused(),
            // Without a leader, or as a leader not yet promoted, the xmin may still be
            // needed by a standby that will stream from here.
            drop_stale_xmin: leader.is_some_and(|l| l != self.me() || self.obs.pg.is_primary()),
        };
        let work = slot_work(
            &wanted,
            &self.obs.pg.slots,
            &permanent_slots::ignore_rules(&dc),
            rules,
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
        self.advance_only(&wanted);
    }

    /// Failsafe mode, as the leader: a member cascading from a replica reports its
    /// WAL position in its answer to `POST /failsafe`, and its slot here advances to
    /// it, as from its member record while the DCS answers (advances only: the view
    /// is from before the outage).
    pub(super) fn advance_cascading_slots_in_failsafe(
        &mut self,
        positions: &BTreeMap<String, Lsn>,
    ) {
        if positions.is_empty() || !self.obs.pg.is_primary() || !self.use_slots() {
            return;
        }
        let Some(mut view) = self.st.last_leader_view.clone() else {
            return;
        };
        for m in &mut view.members {
            if let (Some(_), Some(lsn)) = (&m.data.tags.replicatefrom, positions.get(&m.name)) {
                m.data.xlog_location = Some(*lsn);
            }
        }
        let wanted = self.leader_slots(&view);
        self.advance_only(&wanted);
    }

    /// Moves the slots of `wanted` forward where they lag, creating and dropping
    /// nothing: during a DCS outage the view is from before it, good enough to
    /// advance by but not to decide which slots exist.
    fn advance_only(&mut self, wanted: &[WantedSlot]) {
        let rules = SlotRules {
            may_create_logical: false,
            drop_unknown: false,
            drop_stale_xmin: false,
        };
        let work = slot_work(wanted, &self.obs.pg.slots, &[], rules);
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

    /// The member slots the leader keeps for members seen within `member_slots_ttl`:
    /// those it has (a member it kept no slot for leaves none behind).
    fn leader_retained_slots(&self) -> Vec<String> {
        self.st
            .members_seen
            .keys()
            .map(|m| slot_name_for_member(m))
            .filter(|s| self.obs.pg.slots.iter().any(|o| o.name == *s))
            .collect()
    }

    /// `status.retain_slots`: the slots of members seen within `member_slots_ttl` (the
    /// leader's own included: its replicas keep one), minus permanent physical ones
    /// (those stay anyway).
    pub(super) fn retained_member_slots(&self) -> Vec<String> {
        if !self.use_slots() {
            return Vec::new();
        }
        let permanent = permanent_slots::permanent_physical_slots(&self.config());
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

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(name: &str, kind: SlotKind, lsn: u64, active: bool) -> ObservedSlot {
        ObservedSlot {
            name: name.into(),
            kind,
            lsn: Some(lsn),
            active,
            xmin: None,
        }
    }

    fn with_xmin(slot: ObservedSlot) -> ObservedSlot {
        ObservedSlot {
            xmin: Some(750),
            ..slot
        }
    }

    fn logical() -> SlotKind {
        SlotKind::Logical {
            database: "postgres".into(),
            plugin: "test_decoding".into(),
        }
    }

    /// A physical slot nobody is expected to stream from on this node.
    fn inactive(name: &str, advance_to: Option<Lsn>) -> WantedSlot {
        WantedSlot {
            name: name.into(),
            kind: SlotKind::Physical,
            advance_to,
            expected_active: Some(false),
        }
    }

    const ALL: SlotRules = SlotRules {
        may_create_logical: true,
        drop_unknown: true,
        drop_stale_xmin: true,
    };

    const REPLICA: SlotRules = SlotRules {
        may_create_logical: false,
        ..ALL
    };

    fn names<'a>(i: impl IntoIterator<Item = &'a String>) -> Vec<&'a str> {
        i.into_iter().map(String::as_str).collect()
    }

    #[test]
    fn missing_slots_are_created_behind_ones_advanced_unknown_ones_dropped() {
        let wanted = vec![
            inactive("a", Some(200)),
            inactive("b", None),
            inactive("c", Some(100)),
        ];
        let observed = vec![
            seen("a", SlotKind::Physical, 100, false),
            seen("c", SlotKind::Physical, 150, false),
            seen("old", SlotKind::Physical, 1, false),
            seen("busy", SlotKind::Physical, 1, true),
        ];
        let work = slot_work(&wanted, &observed, &[], ALL);
        assert_eq!(
            work.changes.create,
            vec![NewSlot {
                name: "b".into(),
                kind: SlotKind::Physical
            }]
        );
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
    fn a_slot_expected_to_be_streamed_from_is_never_advanced() {
        let wanted = vec![WantedSlot {
            expected_active: Some(true),
            ..inactive("a", Some(200))
        }];
        let work = slot_work(
            &wanted,
            &[seen("a", SlotKind::Physical, 100, false)],
            &[],
            ALL,
        );
        assert_eq!(work, SlotWork::default());
    }

    #[test]
    fn an_inactive_physical_slot_with_an_xmin_is_dropped_not_advanced() {
        let wanted = vec![inactive("a", Some(200)), inactive("b", Some(200))];
        let observed = vec![
            with_xmin(seen("a", SlotKind::Physical, 100, false)),
            seen("b", SlotKind::Physical, 100, false),
        ];
        let work = slot_work(&wanted, &observed, &[], REPLICA);
        assert_eq!(names(&work.changes.drop), vec!["a"]);
        assert_eq!(
            work.changes.advance,
            vec![SlotAdvance {
                name: "b".into(),
                database: None,
                to: 200
            }]
        );
        assert!(work.changes.create.is_empty());
        // Without a leader (or as a leader not promoted yet) it stays, unmoved.
        let kept = slot_work(
            &wanted,
            &observed,
            &[],
            SlotRules {
                drop_stale_xmin: false,
                ..REPLICA
            },
        );
        assert!(kept.changes.drop.is_empty());
        assert_eq!(
            kept.changes.advance,
            vec![SlotAdvance {
                name: "b".into(),
                database: None,
                to: 200
            }]
        );
        // A slot whose activity is unknown (a retained one) keeps its xmin too.
        let retained = vec![WantedSlot {
            expected_active: None,
            ..inactive("a", None)
        }];
        assert_eq!(
            slot_work(&retained, &observed[..1], &[], REPLICA),
            SlotWork::default()
        );
    }

    #[test]
    fn replicas_report_missing_logical_slots_instead_of_creating_them() {
        let wanted = vec![WantedSlot {
            name: "cdc".into(),
            kind: logical(),
            advance_to: Some(10),
            expected_active: None,
        }];
        let work = slot_work(&wanted, &[], &[], REPLICA);
        assert!(work.changes.is_empty());
        assert_eq!(work.missing_logical, vec!["cdc".to_string()]);
        let on_primary = slot_work(&wanted, &[], &[], ALL);
        assert_eq!(
            names(on_primary.changes.create.iter().map(|s| &s.name)),
            vec!["cdc"]
        );
        assert!(on_primary.missing_logical.is_empty());
    }

    #[test]
    fn logical_slots_advance_in_their_database() {
        let wanted = vec![WantedSlot {
            name: "cdc".into(),
            kind: logical(),
            advance_to: Some(500),
            expected_active: None,
        }];
        let work = slot_work(&wanted, &[seen("cdc", logical(), 300, false)], &[], REPLICA);
        assert_eq!(
            work.changes.advance,
            vec![SlotAdvance {
                name: "cdc".into(),
                database: Some("postgres".into()),
                to: 500
            }]
        );
        // In use (a consumer reads it on this node): leave it to the consumer.
        let work = slot_work(&wanted, &[seen("cdc", logical(), 300, true)], &[], REPLICA);
        assert!(work.changes.is_empty());
    }

    #[test]
    fn a_slot_of_the_wrong_kind_is_replaced() {
        let wanted = vec![inactive("x", None)];
        let work = slot_work(&wanted, &[seen("x", logical(), 1, false)], &[], ALL);
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
        let wanted = vec![inactive("x", None)];
        let work = slot_work(&wanted, &observed, std::slice::from_ref(&rule), ALL);
        assert_eq!(work.changes.drop, vec!["stray".to_string()]);
        assert!(work.changes.create.is_empty());
        let paused = slot_work(
            &[],
            &observed,
            &[rule],
            SlotRules {
                drop_unknown: false,
                ..ALL
            },
        );
        assert!(paused.changes.is_empty());
    }
}
