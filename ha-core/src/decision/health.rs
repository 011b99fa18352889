//! Who may lead: the healthiest-node rules of the leader race (Patroni §2.4) and the
//! candidate checks of a switchover (§2.7).

use super::electability::Blocker;
use super::input::{NodeConfig, PeerStatus};
use super::quorum;
use crate::model::{Cluster, DynamicConfig, Lsn, Member, SynchronousMode, Tags};
use crate::postgres::PgObservation;

/// The answer of the leader-race rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Take the leader lock.
    Yes,
    /// Do not; the reason.
    No(String),
    /// Ask these peers for their status first.
    NeedPeers {
        /// The peers to ask.
        names: Vec<String>,
        /// Those of `names` the race can be decided without if they do not answer
        /// at once (see `optional_peers`).
        optional: Vec<String>,
    },
}

/// Whether sync mode restricts who may be promoted (a `sync` key naming a leader).
fn sync_restriction(dc: &DynamicConfig, c: &Cluster) -> Option<crate::model::SyncState> {
    if dc.synchronous_mode == SynchronousMode::Off {
        return None;
    }
    c.sync
        .as_ref()
        .map(|s| s.value.clone())
        .filter(|s| s.leader.is_some())
}

/// The `sync` key when quorum mode decides who may be elected.
pub(super) fn quorum_restriction(
    dc: &DynamicConfig,
    c: &Cluster,
) -> Option<crate::model::SyncState> {
    sync_restriction(dc, c).filter(|_| dc.synchronous_mode == SynchronousMode::Quorum)
}

/// Runs the ordered leader-race rules; the first decisive rule wins.
#[allow(clippy::too_many_arguments)]
pub(super) fn race_verdict(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    old: Option<&Cluster>,
    pg: &PgObservation,
    peers: Option<&[PeerStatus]>,
    sysid: &str,
    wall_millis: i64,
) -> Verdict {
    let me = cfg.name.as_str();
    // A running primary that lost its key may take it back, unless someone promoted
    // meanwhile (a newer cluster timeline): a frozen old primary must not win.
    if pg.is_primary() {
        if dc.pause {
            return if c.initialize.as_deref().is_none_or(|i| i == sysid) {
                Verdict::Yes
            } else {
                Verdict::No("the cluster belongs to another system identifier".into())
            };
        }
        let cluster_tl = c.timeline();
        return if pg.timeline.unwrap_or(0) >= cluster_tl {
            Verdict::Yes
        } else {
            Verdict::No(format!(
                "my timeline is behind the cluster's ({cluster_tl})"
            ))
        };
    }
    if !pg.is_replica() {
        return Verdict::No("postgres is not running as a replica".into());
    }
    let request = c.failover_request().filter(|f| {
        f.scheduled_at_millis()
            .ok()
            .flatten()
            .is_none_or(|at| at <= wall_millis)
    });
    // Pause: only a manual failover to a named candidate moves leadership.
    if dc.pause {
        return match request.and_then(|f| f.member.as_deref()) {
            Some(m) if m == me => match quorum_restriction(dc, c) {
                // Even a manual failover needs the quorum to keep acknowledged commits.
                Some(s) => {
                    let Some(peers) = peers else {
                        return Verdict::NeedPeers {
                            names: c
                                .members
                                .iter()
                                .filter(|m| m.name != me && m.data.api_url.is_some())
                                .map(|m| m.name.clone())
                                .collect(),
                            optional: Vec::new(),
                        };
                    };
                    match quorum::may_be_elected(&s, me, wal_end_of(pg), &answers(peers)) {
                        Ok(()) => Verdict::Yes,
                        Err(why) => Verdict::No(why.to_string()),
                    }
                }
                None => Verdict::Yes,
            },
            _ => Verdict::No("paused: no automatic promotion".into()),
        };
    }
    if let Some(b) = standing_blockers(dc, c, me, &cfg.tags).into_iter().next() {
        return Verdict::No(in_first_person(&b));
    }
    let sync = sync_restriction(dc, c);
    let my_wal = pg.wal_position();
    // Quorum mode: electing anyone but the last primary needs the voters' confirmation.
    let quorum = quorum_restriction(dc, c);
    let quorum = quorum.as_ref();
    // Candidate set: members now and in the last view with a leader, without me.
    let mut others: Vec<&Member> = Vec::new();
    for m in c
        .members
        .iter()
        .chain(old.map(|o| o.members.iter()).into_iter().flatten())
    {
        if m.name != me && m.data.api_url.is_some() && !others.iter().any(|o| o.name == m.name) {
            others.push(m);
        }
    }
    if let Some(s) = &sync {
        if dc.synchronous_mode == SynchronousMode::On {
            others.retain(|m| s.contains(&m.name));
        }
    }
    let former_leader = old.and_then(|o| o.leader.as_ref()).map(|l| l.name.clone());
    let mut manual = false;
    if let Some(f) = request {
        match f.member.as_deref() {
            // The named candidate still needs the quorum: the request picks who, not
            // whether acknowledged commits may be lost.
            Some(m) if m == me => {
                let Some(s) = quorum else {
                    return Verdict::Yes;
                };
                let Some(peers) = peers else {
                    return need(&others);
                };
                return match quorum::may_be_elected(s, me, wal_end_of(pg), &answers(peers)) {
                    Ok(()) => Verdict::Yes,
                    Err(why) => Verdict::No(why.to_string()),
                };
            }
            Some(candidate) => {
                let Some(peers) = peers else {
                    return need(&others);
                };
                let alive = peers
                    .iter()
                    .find(|p| p.name == candidate)
                    .and_then(|p| p.reply.as_ref())
                    .is_some_and(|r| {
                        !r.is_primary
                            && !r.tags.never_promote()
                            && !r.watchdog_failed
                            && quorum.is_none_or(|s| {
                                let mut answers = answers(peers);
                                answers.push(my_answer(me, pg));
                                quorum::may_be_elected(s, candidate, reply_end(r), &answers).is_ok()
                            })
                    })
                    && !outside_failsafe_topology(dc, c, candidate);
                if alive {
                    return Verdict::No(format!(
                        "the requested candidate {candidate} will take over"
                    ));
                }
                manual = true;
            }
            None => {
                manual = true;
                // Quorum mode: the leader being switched away from leaves the race to
                // anyone the voters (and its own answer) can elect.
                if let (Some(s), Some(peers)) = (quorum, peers) {
                    if f.leader.as_deref() == Some(me) {
                        let mut all = answers(peers);
                        all.push(my_answer(me, pg));
                        let heir = peers.iter().find(|p| {
                            p.reply.as_ref().is_some_and(|r| {
                                // Not behind me, or it would wait for me in turn.
                                !r.is_primary
                                    && wal_end_of(pg).not_ahead_of(&reply_end(r))
                                    && !r.tags.never_promote()
                                    && !r.watchdog_failed
                                    && quorum::may_be_elected(s, &p.name, reply_end(r), &all)
                                        .is_ok()
                            })
                        });
                        if let Some(h) = heir {
                            return Verdict::No(format!(
                                "switchover away from me: {} can be elected",
                                h.name
                            ));
                        }
                    }
                }
            }
        }
    }
    if let Some(b) = position_blockers(dc, c, my_wal, pg.timeline.unwrap_or(0), manual)
        .into_iter()
        .next()
    {
        return Verdict::No(in_first_person(&b));
    }
    if others.is_empty() {
        return match quorum.map(|s| quorum::may_be_elected(s, me, wal_end_of(pg), &[])) {
            Some(Err(why)) => Verdict::No(why.to_string()),
            _ => Verdict::Yes,
        };
    }
    let Some(peers) = peers else {
        return Verdict::NeedPeers {
            names: others.iter().map(|m| m.name.clone()).collect(),
            optional: match quorum {
                Some(_) => Vec::new(),
                None => optional_peers(&others, former_leader.as_deref(), c, my_wal),
            },
        };
    };
    if let Some(Err(why)) =
        quorum.map(|s| quorum::may_be_elected(s, me, wal_end_of(pg), &answers(peers)))
    {
        return Verdict::No(why.to_string());
    }
    let my_priority = cfg.tags.effective_failover_priority();
    for p in peers {
        if !others.iter().any(|m| m.name == p.name) {
            continue;
        }
        let Some(r) = &p.reply else { continue };
        if r.watchdog_failed {
            continue;
        }
        if r.is_primary {
            return Verdict::No(format!("primary ({}) is still alive", p.name));
        }
        // A peer that may never lead is no rival: deferring to it would leave the cluster
        // without a leader (its WAL is rewound if it is ahead).
        if r.tags.never_promote() || outside_failsafe_topology(dc, c, &p.name) {
            continue;
        }
        let is_sync_leader = sync.as_ref().is_some_and(|s| s.is_leader(&p.name));
        // Quorum mode compares timelines first: a larger position on an older,
        // forked timeline is not ahead.
        let ahead = match quorum {
            Some(_) => !reply_end(r).not_ahead_of(&wal_end_of(pg)),
            None => r.wal_position > my_wal,
        };
        if ahead && !is_sync_leader {
            // Patroni's words: operators (and its acceptance suite) grep for them.
            return Verdict::No(format!(
                "Wal position of {} is ahead of my wal position",
                p.name
            ));
        }
        let is_former = former_leader.as_deref() == Some(p.name.as_str()) || is_sync_leader;
        if r.wal_position == my_wal
            && r.tags.effective_failover_priority() > my_priority
            && !is_former
        {
            return Verdict::No(format!(
                "{} has equally tolerable WAL position and priority {}, while this node has priority {my_priority}",
                p.name,
                r.tags.effective_failover_priority()
            ));
        }
    }
    Verdict::Yes
}

/// The race rules on who a member is, whatever its WAL: its tags, the failsafe
/// topology and the synchronous standby set. Each rule that forbids `name` to lead,
/// in the order the race checks them.
pub(super) fn standing_blockers(
    dc: &DynamicConfig,
    c: &Cluster,
    name: &str,
    tags: &Tags,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    if tags.never_promote() {
        out.push(Blocker::NoFailover);
    }
    if outside_failsafe_topology(dc, c, name) {
        out.push(Blocker::OutsideFailsafeTopology);
    }
    let sync = sync_restriction(dc, c);
    if let Some(s) = &sync {
        if dc.synchronous_mode == SynchronousMode::On && !s.contains(name) {
            out.push(Blocker::NotSynchronous);
        }
    }
    if sync.is_none()
        && dc.synchronous_mode != SynchronousMode::Off
        && c.is_malformed(crate::model::keys::SYNC)
    {
        // An unreadable sync key could hide who has every acknowledged commit.
        out.push(Blocker::SyncKeyMalformed);
    }
    out
}

/// The race rules on a member's WAL: too far behind the last known leader position
/// (promoting would lose data; not checked for a manual failover), or on an older
/// timeline than the cluster's when `check_timeline` is set.
pub(super) fn position_blockers(
    dc: &DynamicConfig,
    c: &Cluster,
    wal: Lsn,
    timeline: u64,
    manual: bool,
) -> Vec<Blocker> {
    let mut out = Vec::new();
    if !manual && dc.maximum_lag_on_failover >= 0 {
        if let Some(optime) = c.status.optime {
            let lag = optime.saturating_sub(wal);
            let max = dc.maximum_lag_on_failover as u64;
            if lag > max {
                out.push(Blocker::Lag { lag, max });
            }
        }
    }
    if dc.check_timeline && timeline < c.timeline() {
        out.push(Blocker::TimelineBehind {
            timeline,
            cluster: c.timeline(),
        });
    }
    out
}

/// How the race logs a rule that stops this node itself.
fn in_first_person(b: &Blocker) -> String {
    match b {
        Blocker::NoFailover => "I am not allowed to promote".into(),
        Blocker::OutsideFailsafeTopology => {
            "failsafe mode: I am not in the failsafe topology".into()
        }
        Blocker::NotSynchronous => "I am not a synchronous standby".into(),
        Blocker::SyncKeyMalformed => {
            "the sync key is malformed; refusing an automatic promotion".into()
        }
        Blocker::Lag { lag, .. } => {
            format!("my WAL is {lag} bytes behind the last leader position")
        }
        Blocker::TimelineBehind { .. } => "my timeline is behind the cluster's".into(),
        Blocker::Paused
        | Blocker::NoMemberKey
        | Blocker::NoApiUrl
        | Blocker::NotRunning { .. }
        | Blocker::Quorum(_) => b.to_string(),
    }
}

/// Peer answers as the quorum rule reads them: a WAL position only from a running
/// Postgres that reports one.
fn answers(peers: &[PeerStatus]) -> Vec<quorum::Answer> {
    peers
        .iter()
        .filter_map(|p| {
            let r = p.reply.as_ref()?;
            Some(quorum::Answer {
                name: p.name.clone(),
                wal: (r.timeline.is_some() && r.wal_position > 0).then(|| reply_end(r)),
                is_primary: r.is_primary,
            })
        })
        .collect()
}

fn my_answer(me: &str, pg: &PgObservation) -> quorum::Answer {
    quorum::Answer {
        name: me.to_string(),
        wal: pg.is_replica().then(|| wal_end_of(pg)),
        is_primary: pg.is_primary(),
    }
}

fn wal_end_of(pg: &PgObservation) -> quorum::WalEnd {
    quorum::WalEnd {
        timeline: pg.timeline.unwrap_or(0),
        lsn: pg.wal_position(),
    }
}

fn reply_end(r: &super::input::PeerReply) -> quorum::WalEnd {
    quorum::WalEnd {
        timeline: r.timeline.unwrap_or(0),
        lsn: r.wal_position,
    }
}

/// A primary in failsafe mode calls only the members of the `failsafe` map: one
/// outside a non-empty map could take over unnoticed, so it may not lead.
fn outside_failsafe_topology(dc: &DynamicConfig, c: &Cluster, name: &str) -> bool {
    dc.failsafe_mode
        && c.failsafe
            .as_ref()
            .is_some_and(|f| !f.is_empty() && !f.contains_key(name))
}

fn need(others: &[&Member]) -> Verdict {
    Verdict::NeedPeers {
        names: others.iter().map(|m| m.name.clone()).collect(),
        optional: Vec::new(),
    }
}

/// The peers the race can be decided without when they do not answer at once: the
/// former leader, whose key is gone (the race runs only then), when the last WAL
/// position it published (its member record, and the `status` it wrote as leader)
/// is not ahead of mine. Its possible answers change nothing then that its silence
/// does not: "still primary" comes only from an agent that has not run since its
/// lease ended (a running one demotes when it cannot renew, and its write fence
/// closed at the end of its lease), and a position ahead of mine would be WAL it
/// wrote after it last published, which waiting for a frozen agent would not
/// recover either. Quorum mode counts answers and keeps waiting for everyone.
fn optional_peers(
    others: &[&Member],
    former_leader: Option<&str>,
    c: &Cluster,
    my_wal: crate::model::Lsn,
) -> Vec<String> {
    let Some(former) = former_leader else {
        return Vec::new();
    };
    others
        .iter()
        .filter(|m| m.name == former)
        .filter(|m| m.data.wal_position().max(c.status.optime.unwrap_or(0)) <= my_wal)
        .map(|m| m.name.clone())
        .collect()
}

/// Why a member may not take over in a switchover or manual failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotCandidate {
    /// It is the leader (or the node deciding, which is the leader).
    Leader,
    /// Its member record says `nofailover` (or `failover_priority` 0).
    NoFailover,
    /// `synchronous_mode: on` and the `sync` key does not list it: promoting it may
    /// lose transactions acknowledged to clients.
    NotSyncStandby,
    /// It publishes no `api_url`: nobody can ask it how it is.
    NoApiUrl,
}

/// Whether the synchronous mode lets `name` take over: in `synchronous_mode: on`
/// with a `sync` key naming a leader, only the synchronous standbys it lists (quorum
/// mode elects by votes instead).
pub fn sync_allows(dc: &DynamicConfig, c: &Cluster, name: &str) -> bool {
    match sync_restriction(dc, c) {
        Some(s) if dc.synchronous_mode == SynchronousMode::On => s.is_standby(name),
        _ => true,
    }
}

/// Whether the synchronous mode restricts candidates to the `sync` key's standbys.
pub fn sync_restricts(dc: &DynamicConfig, c: &Cluster) -> bool {
    dc.synchronous_mode == SynchronousMode::On && sync_restriction(dc, c).is_some()
}

/// The candidate rule of a switchover or manual failover (§2.7), from the member's
/// record: every reason `m` may not take over from `leader`, none when it may.
/// `decide`, the REST API's admission of `POST /switchover` and `fullautoctl
/// switchover` all ask this one rule (each then asks the candidates themselves).
pub fn why_not_candidate(
    m: &Member,
    leader: Option<&str>,
    dc: &DynamicConfig,
    c: &Cluster,
) -> Vec<NotCandidate> {
    let mut why = Vec::new();
    if leader == Some(m.name.as_str()) {
        why.push(NotCandidate::Leader);
    }
    if m.data.tags.never_promote() {
        why.push(NotCandidate::NoFailover);
    }
    if !sync_allows(dc, c, &m.name) {
        why.push(NotCandidate::NotSyncStandby);
    }
    if m.data.api_url.is_none() {
        why.push(NotCandidate::NoApiUrl);
    }
    why
}

/// Whether a candidate's own answer (`GET /patroni`) still allows promoting it: not
/// tagged `nofailover` as it runs now, and its watchdog works.
pub fn answer_allows_promotion(tags: &crate::model::Tags, watchdog_failed: bool) -> bool {
    !tags.never_promote() && !watchdog_failed
}

/// Members a switchover or manual failover may hand leadership to: those
/// [`why_not_candidate`] finds nothing against (`cfg` being the leader), and the
/// requested one if named.
pub fn failover_candidates<'c>(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &'c Cluster,
    wanted: Option<&str>,
) -> Vec<&'c Member> {
    c.members
        .iter()
        .filter(|m| wanted.is_none_or(|w| w == m.name))
        .filter(|m| why_not_candidate(m, Some(&cfg.name), dc, c).is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::tests::{member_with_tags, View};
    use crate::model::Tags;

    fn nofailover() -> Tags {
        Tags {
            nofailover: Some(true),
            ..Tags::default()
        }
    }

    #[test]
    fn the_candidate_rule_names_every_reason_in_its_order() {
        let (k, v) = member_with_tags("c", "replica", nofailover());
        let c = View::new()
            .leader("a")
            .member("a", "primary", 100)
            .member("b", "replica", 100)
            .key(&k, &v)
            .key("config", r#"{"synchronous_mode":"on"}"#)
            .key("sync", r#"{"leader":"a","sync_standby":"b"}"#)
            .cluster();
        let dc = c.dynamic_config();
        let why = |name: &str| why_not_candidate(c.member(name).unwrap(), Some("a"), &dc, &c);
        assert_eq!(
            why("a"),
            [NotCandidate::Leader, NotCandidate::NotSyncStandby]
        );
        assert_eq!(why("b"), []);
        assert_eq!(
            why("c"),
            [NotCandidate::NoFailover, NotCandidate::NotSyncStandby]
        );
        assert!(sync_restricts(&dc, &c));
        assert!(sync_allows(&dc, &c, "b") && !sync_allows(&dc, &c, "c"));
        let names: Vec<_> = failover_candidates(&NodeConfig::named("a"), &dc, &c, None)
            .iter()
            .map(|m| m.name.as_str())
            .collect();
        assert_eq!(names, ["b"]);
        // Quorum mode elects by votes: the sync key restricts nobody here.
        let q = View::new()
            .leader("a")
            .member("a", "primary", 100)
            .member("d", "replica", 100)
            .key("config", r#"{"synchronous_mode":"quorum"}"#)
            .key("sync", r#"{"leader":"a","sync_standby":"b","quorum":1}"#)
            .cluster();
        let qdc = q.dynamic_config();
        assert!(!sync_restricts(&qdc, &q));
        assert_eq!(
            why_not_candidate(q.member("d").unwrap(), Some("a"), &qdc, &q),
            []
        );
    }

    #[test]
    fn a_candidates_answer_allows_promotion_unless_nofailover_or_watchdog_failed() {
        assert!(answer_allows_promotion(&Tags::default(), false));
        assert!(!answer_allows_promotion(&nofailover(), false));
        assert!(!answer_allows_promotion(&Tags::default(), true));
    }
}
