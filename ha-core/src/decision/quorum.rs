//! Quorum commit (`synchronous_mode: quorum`, Patroni §5.4).
//!
//! Postgres acknowledges a commit once `count` of the standbys listed in
//! `synchronous_standby_names = ANY count (S)` flushed it: an *ack group*. The `sync`
//! key lists voters V and a quorum q: a candidate may promote once it and q voters
//! (q + 1 voters when it is not one itself) confirm that nobody of them is ahead of it:
//! a *promotion group*. No acknowledged commit is lost as long as every promotion group
//! shares a member with every ack group: that member has the commit, and the winner has
//! at least its WAL.
//!
//! The leader moves Postgres and `sync` towards the target one step per cycle, each
//! step keeping that overlap:
//! - `sync` changes only to a value whose promotion groups overlap the ack groups of the
//!   setting in force, and only once that setting is *confirmed* (enough listed standbys
//!   flushed past the point it took effect, so commits acknowledged under an older
//!   setting are covered too) or when the new value is at least as strict as the old;
//! - `synchronous_standby_names` changes only to a setting whose ack groups the
//!   published `sync` already overlaps;
//! - when neither is possible (one member swapped for another), `sync` first widens to
//!   the members of both settings with a quorum large enough for both.
//!
//! This gives Patroni's orders: a new member and a higher quorum are published before
//! Postgres waits for them; a member leaves Postgres before it leaves `sync`; `numsync`
//! goes up before the quorum goes down and the quorum goes up before `numsync` goes down.

use super::input::NodeConfig;
use super::sync::{eligible_standbys, StandbyNames, SyncStep, ANY_STANDBY};
use crate::model::{Cluster, DynamicConfig, Lsn, SyncState};
use crate::postgres::PgObservation;
use std::collections::BTreeSet;

/// Who may elect a new primary: the voters and the quorum of the `sync` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voters {
    /// Voter names, sorted.
    pub names: Vec<String>,
    /// Votes a voting candidate needs besides its own.
    pub quorum: usize,
}

fn lowered<'a>(names: impl IntoIterator<Item = &'a String>) -> BTreeSet<String> {
    names
        .into_iter()
        .filter(|n| n.as_str() != ANY_STANDBY)
        .map(|n| n.to_ascii_lowercase())
        .collect()
}

impl Voters {
    /// The voters a `sync` value publishes.
    pub fn of(s: &SyncState) -> Voters {
        let mut names = s.sync_standby.clone();
        names.sort();
        Voters {
            names,
            quorum: s.quorum as usize,
        }
    }

    /// Nobody but the last primary may be elected.
    pub fn nobody() -> Voters {
        Voters {
            names: Vec::new(),
            quorum: 0,
        }
    }

    fn set(&self) -> BTreeSet<String> {
        lowered(&self.names)
    }

    /// Whether any promotion group exists at all (q + 1 voters).
    pub fn can_elect(&self) -> bool {
        self.quorum < self.set().len()
    }

    /// Whether every promotion group shares a member with every group of standbys
    /// that can acknowledge a commit under `acks`.
    pub fn overlaps(&self, acks: &StandbyNames) -> bool {
        if !self.can_elect() {
            return true;
        }
        // Without standbys (or with `*`) a commit may be acknowledged by nobody known.
        if acks.is_empty() || acks.lists_every_standby() {
            return false;
        }
        let s = lowered(&acks.names);
        if acks.count > s.len() {
            // Postgres waits for more standbys than are listed: nothing is acknowledged.
            return true;
        }
        let v = self.set();
        let acks_only = s.difference(&v).count();
        let voters_only = v.difference(&s).count();
        let both = s.intersection(&v).count();
        // The most disjoint pair takes outsiders first; it must run out of room.
        acks.count.saturating_sub(acks_only) + (self.quorum + 1).saturating_sub(voters_only) > both
    }

    /// Whether every promotion group of `self` contains one of `old`, so `self` is
    /// safe wherever `old` was.
    pub fn at_least_as_strict_as(&self, old: &Voters) -> bool {
        if !self.can_elect() {
            return true;
        }
        if !old.can_elect() {
            return false;
        }
        let new_only = self.set().difference(&old.set()).count();
        (self.quorum + 1).saturating_sub(new_only) > old.quorum
    }

    fn same_as(&self, other: &Voters) -> bool {
        self.set() == other.set() && self.quorum == other.quorum
    }

    fn into_sync(self, current: &SyncState) -> SyncState {
        SyncState {
            sync_standby: self.names,
            quorum: self.quorum as u32,
            ..current.clone()
        }
    }
}

fn same_names(a: &StandbyNames, b: &StandbyNames) -> bool {
    if a.is_empty() || b.is_empty() {
        return a.is_empty() && b.is_empty();
    }
    a.any == b.any && a.count == b.count && lowered(&a.names) == lowered(&b.names)
}

fn any_of(names: Vec<String>, count: usize) -> StandbyNames {
    StandbyNames {
        any: true,
        count: count.clamp(1, names.len().max(1)),
        names,
    }
}

fn render(acks: &StandbyNames) -> Option<String> {
    StandbyNames::render_any(&acks.names, acks.count)
}

/// Where the leader heads: `ANY min(W, |A|) (A)` over the active standbys A with all
/// of them voting and `quorum = |A| − numsync`. With no active standby, strict mode
/// keeps waiting for the last voters (or, with none, for any standby: `ANY 1 (*)`, as
/// Patroni does; safe because nobody but the leader is electable then); otherwise
/// commits stop waiting and only the leader stays electable.
pub fn target(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
    current: &Voters,
) -> (StandbyNames, Voters) {
    let mut active = eligible_standbys(cfg, dc, c, pg);
    active.sort();
    if !active.is_empty() {
        let numsync = (dc.synchronous_node_count.max(1) as usize).min(active.len());
        let quorum = active.len() - numsync;
        return (
            any_of(active.clone(), numsync),
            Voters {
                names: active,
                quorum,
            },
        );
    }
    if !dc.synchronous_mode_strict {
        return (StandbyNames::default(), Voters::nobody());
    }
    if current.can_elect() {
        let numsync = current.set().len() - current.quorum;
        return (any_of(current.names.clone(), numsync), current.clone());
    }
    (any_of(vec![ANY_STANDBY.to_string()], 1), Voters::nobody())
}

/// Whether `count` listed standbys flushed up to `mark`: then every commit
/// acknowledged before the setting took effect is on an ack group of it too.
fn confirmed(acks: &StandbyNames, pg: &PgObservation, mark: Lsn) -> bool {
    if acks.is_empty() {
        return true;
    }
    if acks.lists_every_standby() {
        return false;
    }
    let listed = lowered(&acks.names);
    let flushed = pg
        .replication
        .iter()
        .filter(|r| listed.contains(&r.application_name.to_ascii_lowercase()))
        .filter(|r| r.flush_lsn.is_some_and(|f| f >= mark))
        .count();
    flushed >= acks.count
}

/// `sync` over the members of both settings, with the smallest quorum that overlaps
/// both: the bridge when a member is swapped for another.
fn widened(voters: &Voters, have: &StandbyNames, want: &StandbyNames) -> Option<Voters> {
    let mut names: Vec<String> = voters.names.clone();
    for n in &want.names {
        if n != ANY_STANDBY && !names.iter().any(|m| m.eq_ignore_ascii_case(n)) {
            names.push(n.clone());
        }
    }
    names.sort();
    (0..names.len())
        .map(|quorum| Voters {
            names: names.clone(),
            quorum,
        })
        .find(|v| v.overlaps(have) && v.overlaps(want))
}

/// The leader's next quorum-commit move. `mark` is the WAL position by which the
/// current `synchronous_standby_names` was known to be in force (`None`: not yet
/// captured since the last change).
pub fn next_step(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
    mark: Option<Lsn>,
) -> SyncStep {
    let me = cfg.name.as_str();
    let Some(current) = c
        .sync
        .as_ref()
        .map(|s| &s.value)
        .filter(|s| s.is_leader(me))
        .cloned()
    else {
        // Take the key over first: nobody else may be elected while I lead.
        return SyncStep::WriteSync(SyncState {
            leader: Some(me.to_string()),
            sync_standby: Vec::new(),
            quorum: 0,
        });
    };
    let Some(mark) = mark else {
        // This observation was made after the setting last changed.
        return SyncStep::MarkConfirmPoint(pg.wal_position());
    };
    let voters = Voters::of(&current);
    let have = StandbyNames::parse(pg.synchronous_standby_names.as_deref());
    let (want, want_voters) = target(cfg, dc, c, pg, &voters);
    let settled = confirmed(&have, pg, mark);
    let may_publish =
        |v: &Voters| v.overlaps(&have) && (settled || v.at_least_as_strict_as(&voters));
    // 1. `sync` to the target when that is safe for the setting in force.
    if !want_voters.same_as(&voters) && may_publish(&want_voters) {
        return SyncStep::WriteSync(want_voters.into_sync(&current));
    }
    if same_names(&have, &want) {
        return SyncStep::Settled;
    }
    // 2. Postgres to the target once `sync` already overlaps it.
    if voters.overlaps(&want) {
        return SyncStep::SetStandbyNames(render(&want));
    }
    // 3. Neither: widen `sync` to cover both settings first.
    match widened(&voters, &have, &want) {
        Some(wide) if !wide.same_as(&voters) && may_publish(&wide) => {
            SyncStep::WriteSync(wide.into_sync(&current))
        }
        _ => SyncStep::Settled,
    }
}

/// The `synchronous_standby_names` a new quorum-mode primary starts with: strict
/// mode waits for any standby (`ANY 1 (*)`; none is a voter yet, so nobody else is
/// electable), otherwise commits wait for nobody.
pub fn names_after_promotion(dc: &DynamicConfig) -> Option<String> {
    dc.synchronous_mode_strict
        .then(|| render(&any_of(vec![ANY_STANDBY.to_string()], 1)))
        .flatten()
}

/// Where a node's WAL ends: timeline and position on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalEnd {
    /// Timeline (0 when unknown: behind everyone).
    pub timeline: u64,
    /// Position.
    pub lsn: Lsn,
}

impl WalEnd {
    /// Whether `self` cannot hold a commit of the current leader's time that `other`
    /// lacks: an older timeline (it forked before the last promotion) or the same
    /// timeline and no further. Positions on different timelines do not compare by
    /// number.
    pub fn not_ahead_of(&self, other: &WalEnd) -> bool {
        self.timeline < other.timeline || (self.timeline == other.timeline && self.lsn <= other.lsn)
    }
}

/// A peer's answer as the quorum rule needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// Member name.
    pub name: String,
    /// Its WAL end; `None` when it runs no Postgres that reports one.
    pub wal: Option<WalEnd>,
    /// It runs as a primary.
    pub is_primary: bool,
}

/// Too few synchronous standbys answered not ahead of a candidate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("quorum not reached: {votes} of {needed} votes from the synchronous standbys {}", voters.join(","))]
pub struct QuorumNotReached {
    /// Votes the candidate got.
    pub votes: usize,
    /// Votes it needed.
    pub needed: usize,
    /// The synchronous standbys that vote.
    pub voters: Vec<String>,
}

/// Whether `candidate` (WAL ending at `wal`) may be elected under `sync`, given the answers of
/// its peers. It may when it is the last primary (it has every commit it
/// acknowledged); when the last primary answers as a replica not ahead of it; or when
/// enough voters answer not ahead of it: `quorum` besides itself if it votes, one more
/// if it does not. A voter with `nofailover` still votes.
pub fn may_be_elected(
    sync: &SyncState,
    candidate: &str,
    wal: WalEnd,
    answers: &[Answer],
) -> Result<(), QuorumNotReached> {
    if sync.is_leader(candidate) {
        return Ok(());
    }
    let not_ahead = |a: &&Answer| {
        !a.is_primary
            && !a.name.eq_ignore_ascii_case(candidate)
            && a.wal.is_some_and(|w| w.not_ahead_of(&wal))
    };
    if answers
        .iter()
        .filter(not_ahead)
        .any(|a| sync.is_leader(&a.name))
    {
        return Ok(());
    }
    let voters = Voters::of(sync);
    let needed = voters.quorum + usize::from(!sync.is_standby(candidate));
    let votes = answers
        .iter()
        .filter(not_ahead)
        .filter(|a| sync.is_standby(&a.name))
        .count();
    if voters.names.is_empty() || votes < needed {
        return Err(QuorumNotReached {
            votes,
            needed,
            voters: voters.names,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(names: &[&str], quorum: usize) -> Voters {
        Voters {
            names: names.iter().map(|n| n.to_string()).collect(),
            quorum,
        }
    }

    fn any(count: usize, names: &[&str]) -> StandbyNames {
        any_of(names.iter().map(|n| n.to_string()).collect(), count)
    }

    #[test]
    fn promotion_groups_must_overlap_ack_groups() {
        // ANY 1 (b,c) with quorum 1: any two voters include the one that acknowledged.
        assert!(v(&["b", "c"], 1).overlaps(&any(1, &["b", "c"])));
        // ... with quorum 0, b alone could win while only c had the commit.
        assert!(!v(&["b", "c"], 0).overlaps(&any(1, &["b", "c"])));
        assert!(v(&["b", "c"], 0).overlaps(&any(2, &["b", "c"])));
        // Adding d as a voter before it is listed is safe with a higher quorum.
        assert!(v(&["b", "c", "d"], 2).overlaps(&any(1, &["b", "c"])));
        // Dropping c from the voters while Postgres still lists it is not.
        assert!(!v(&["b", "d"], 1).overlaps(&any(1, &["b", "c", "d"])));
        // Asynchronous commits: only the leader may be elected.
        assert!(!v(&["b"], 0).overlaps(&StandbyNames::default()));
        assert!(Voters::nobody().overlaps(&StandbyNames::default()));
        // `*` is anybody: only electing nobody but the leader is safe under it.
        assert!(!v(&["b"], 0).overlaps(&StandbyNames::parse(Some("ANY 1 (*)"))));
        assert!(Voters::nobody().overlaps(&StandbyNames::parse(Some("ANY 1 (*)"))));
    }

    #[test]
    fn strictness_compares_promotion_groups() {
        assert!(v(&["b", "c", "d"], 2).at_least_as_strict_as(&v(&["b", "c"], 1)));
        assert!(!v(&["b", "c", "d"], 1).at_least_as_strict_as(&v(&["b", "c"], 1)));
        assert!(Voters::nobody().at_least_as_strict_as(&v(&["b"], 0)));
        assert!(!v(&["b"], 0).at_least_as_strict_as(&Voters::nobody()));
    }

    #[test]
    fn swapping_a_member_widens_sync_first() {
        let wide = widened(
            &v(&["b", "c"], 1),
            &any(1, &["b", "c"]),
            &any(1, &["b", "d"]),
        );
        assert_eq!(wide, Some(v(&["b", "c", "d"], 2)));
    }

    #[test]
    fn election_needs_the_votes() {
        let sync = SyncState {
            leader: Some("a".into()),
            sync_standby: vec!["b".into(), "c".into(), "d".into()],
            quorum: 1,
        };
        let at = |lsn: Lsn| WalEnd { timeline: 2, lsn };
        let ans = |name: &str, lsn: Option<Lsn>| Answer {
            name: name.into(),
            wal: lsn.map(at),
            is_primary: false,
        };
        assert!(may_be_elected(&sync, "b", at(100), &[ans("c", Some(90))]).is_ok());
        // A voter ahead of me, or without a WAL position, does not vote for me.
        assert!(may_be_elected(&sync, "b", at(100), &[ans("c", Some(110))]).is_err());
        assert!(may_be_elected(&sync, "b", at(100), &[ans("c", None)]).is_err());
        // A non-voter needs one vote more.
        assert!(may_be_elected(&sync, "e", at(100), &[ans("c", Some(90))]).is_err());
        assert!(may_be_elected(
            &sync,
            "e",
            at(100),
            &[ans("c", Some(90)), ans("d", Some(80))]
        )
        .is_ok());
        // The last primary confirming it is not ahead is enough; it needs nobody itself.
        assert!(may_be_elected(&sync, "e", at(100), &[ans("a", Some(100))]).is_ok());
        assert!(may_be_elected(&sync, "a", at(100), &[]).is_ok());
        // A bigger number on an older timeline is not ahead; any number on a newer one is.
        let old_tl = Answer {
            wal: Some(WalEnd {
                timeline: 1,
                lsn: 500,
            }),
            ..ans("c", None)
        };
        assert!(may_be_elected(&sync, "b", at(100), &[old_tl]).is_ok());
        let new_tl = Answer {
            wal: Some(WalEnd {
                timeline: 3,
                lsn: 50,
            }),
            ..ans("a", None)
        };
        assert!(may_be_elected(&sync, "e", at(100), &[new_tl]).is_err());
    }
}
