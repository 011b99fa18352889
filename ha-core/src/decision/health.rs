//! Who may lead: the healthiest-node rules of the leader race (Patroni §2.4) and the
//! candidate checks of a switchover (§2.7).

use super::input::{NodeConfig, PeerStatus};
use crate::model::{Cluster, DynamicConfig, Member, SynchronousMode};
use crate::postgres::PgObservation;

/// The answer of the leader-race rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Take the leader lock.
    Yes,
    /// Do not; the reason.
    No(String),
    /// Ask these peers for their status first.
    NeedPeers(Vec<String>),
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
            Some(m) if m == me => Verdict::Yes,
            _ => Verdict::No("paused: no automatic promotion".into()),
        };
    }
    if cfg.tags.never_promote() {
        return Verdict::No("I am not allowed to promote".into());
    }
    if outside_failsafe_topology(dc, c, me) {
        return Verdict::No("failsafe mode: I am not in the failsafe topology".into());
    }
    let sync = sync_restriction(dc, c);
    if let Some(s) = &sync {
        if dc.synchronous_mode == SynchronousMode::On && !s.contains(me) {
            return Verdict::No("I am not a synchronous standby".into());
        }
    }
    if sync.is_none()
        && dc.synchronous_mode != SynchronousMode::Off
        && c.is_malformed(crate::model::keys::SYNC)
    {
        // An unreadable sync key could hide who has every acknowledged commit.
        return Verdict::No("the sync key is malformed; refusing an automatic promotion".into());
    }
    let my_wal = pg.wal_position();
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
            Some(m) if m == me => return Verdict::Yes,
            Some(candidate) => {
                let Some(peers) = peers else {
                    return need(&others);
                };
                let alive = peers
                    .iter()
                    .find(|p| p.name == candidate)
                    .and_then(|p| p.reply.as_ref())
                    .is_some_and(|r| {
                        !r.is_primary && !r.tags.never_promote() && !r.watchdog_failed
                    })
                    && !outside_failsafe_topology(dc, c, candidate);
                if alive {
                    return Verdict::No(format!(
                        "the requested candidate {candidate} will take over"
                    ));
                }
                manual = true;
            }
            None => manual = true,
        }
    }
    // Too far behind the last known leader position: promoting would lose data.
    if !manual {
        if let Some(optime) = c.status.optime {
            let lag = optime.saturating_sub(my_wal);
            if dc.maximum_lag_on_failover >= 0 && lag > dc.maximum_lag_on_failover as u64 {
                return Verdict::No(format!(
                    "my WAL is {lag} bytes behind the last leader position"
                ));
            }
        }
    }
    if dc.check_timeline && pg.timeline.unwrap_or(0) < c.timeline() {
        return Verdict::No("my timeline is behind the cluster's".into());
    }
    if others.is_empty() {
        return Verdict::Yes;
    }
    let Some(peers) = peers else {
        return need(&others);
    };
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
        if r.tags.never_promote() {
            continue;
        }
        let is_sync_leader = sync.as_ref().is_some_and(|s| s.is_leader(&p.name));
        if r.wal_position > my_wal && !is_sync_leader {
            return Verdict::No(format!("{} has more WAL than me", p.name));
        }
        let is_former = former_leader.as_deref() == Some(p.name.as_str()) || is_sync_leader;
        if r.wal_position == my_wal
            && r.tags.effective_failover_priority() > my_priority
            && !is_former
        {
            return Verdict::No(format!(
                "{} has the same WAL and a higher failover priority",
                p.name
            ));
        }
    }
    Verdict::Yes
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
    Verdict::NeedPeers(others.iter().map(|m| m.name.clone()).collect())
}

/// Members a switchover or manual failover may hand leadership to: not me, with an
/// `api_url`, allowed to promote, the requested one if named, and in sync mode only
/// synchronous standbys.
pub fn failover_candidates<'c>(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &'c Cluster,
    wanted: Option<&str>,
) -> Vec<&'c Member> {
    let sync = sync_restriction(dc, c);
    c.members
        .iter()
        .filter(|m| m.name != cfg.name && m.data.api_url.is_some() && !m.data.tags.never_promote())
        .filter(|m| wanted.is_none_or(|w| w == m.name))
        .filter(|m| match &sync {
            Some(s) if dc.synchronous_mode == SynchronousMode::On => s.is_standby(&m.name),
            _ => true,
        })
        .collect()
}
