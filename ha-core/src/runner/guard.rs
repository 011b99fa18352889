//! The runner's last check before executing an action: a decision is only as good as
//! the view and the lease it was made on. An agent that stalled between deciding and
//! acting (SIGSTOP, a paused VM, a slow disk) must not act on what it saw before.

use crate::clock::MonoTime;
use crate::decision::{Action, LeaseToken};
use crate::model::Version;
use std::time::Duration;

/// Why an action was not executed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The lease that justified making Postgres writable has run out.
    #[error("lease token expired")]
    LeaseExpired,
    /// The action is for the lease holder, and I no longer hold the lease.
    #[error("not the lease holder")]
    NotLeader,
    /// The cluster view the action was decided on is too old.
    #[error("cluster view too old")]
    ViewTooOld,
    /// A read newer than the decision's shows the leader key no longer at the version
    /// the action was decided on: another member holds it, nobody does, or it was
    /// created again (a new leadership, even if mine).
    #[error("leader key changed since the decision")]
    LeaderChanged,
}

/// The leader key as one successful cluster read showed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderKeySeen {
    /// When that read was sent.
    pub read_at: MonoTime,
    /// The key's version when it named this node; `None` when it named another member
    /// or nobody.
    pub mine_at: Option<Version>,
    /// When this node's latest confirmed acquire or renewal before that read was sent:
    /// a renewal may rebind the key to a new lease, which gives it a new version
    /// under the same leadership.
    pub renewed_at: Option<MonoTime>,
}

/// Whether the leadership behind `token`, decided on the read sent at `decided_on`, is
/// gone according to the latest read (`seen`): only a newer read can say so. A token
/// without a version (the lease was acquired after the read) only needs the key to
/// still name me; another version of my key counts unless a renewal of mine since the
/// decision may have rebound it (seen in the simulator after an agent restart).
pub fn leadership_changed(
    token: &LeaseToken,
    decided_on: MonoTime,
    seen: Option<&LeaderKeySeen>,
) -> bool {
    let Some(seen) = seen.filter(|s| s.read_at > decided_on) else {
        return false;
    };
    match (seen.mine_at, token.leader_version) {
        (None, _) => true,
        (Some(now), Some(then)) => now != then && seen.renewed_at.is_none_or(|r| r < decided_on),
        (Some(_), None) => false,
    }
}

/// Why a role-changing step that makes Postgres writable must not run now: the
/// token's lease ended, or its leadership is gone (see [`leadership_changed`]).
/// Checked when the action is executed and again by the background job right before
/// its writable step (a job can outlive the view it was decided on).
pub fn refuse_writable(
    token: &LeaseToken,
    now: MonoTime,
    decided_on: MonoTime,
    seen: Option<&LeaderKeySeen>,
) -> Option<Refusal> {
    if now >= token.valid_until {
        return Some(Refusal::LeaseExpired);
    }
    leadership_changed(token, decided_on, seen).then_some(Refusal::LeaderChanged)
}

/// What the guard needs to know at execution time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardContext {
    /// The time right before executing.
    pub now: MonoTime,
    /// When the cluster read behind the decision was sent.
    pub read_at: MonoTime,
    /// The node's lease end after the decision.
    pub lease_until: Option<MonoTime>,
    /// How old a view may be for ordinary actions (the runner uses `retry_timeout`:
    /// a read can take that long, anything older means the agent stalled).
    pub max_view_age: Duration,
    /// The leader key as the latest successful read showed it.
    pub leader_key: Option<LeaderKeySeen>,
}

/// Returns why `action` must not run now, or `None` when it may.
pub fn refuse(action: &Action, ctx: &GuardContext) -> Option<Refusal> {
    match action {
        // Making Postgres writable needs a lease that is still valid right now.
        // A primary's restart ends writable again: same rule as a start.
        Action::Promote { token }
        | Action::StartPrimary { token }
        | Action::Restart {
            token: Some(token), ..
        } => refuse_writable(token, ctx.now, ctx.read_at, ctx.leader_key.as_ref()),
        // Writes only the lease holder may make: a stale leader must not overwrite them.
        Action::WriteStatus(_)
        | Action::WriteHistory(_)
        | Action::WriteFailsafe(_)
        | Action::WriteInitialize { .. }
        | Action::WriteConfig { .. }
        | Action::ClearFailover { .. }
        | Action::WriteSync { .. }
        | Action::DeleteSync { .. }
        | Action::SetSynchronousStandbyNames { .. } => ctx
            .lease_until
            .is_none_or(|t| ctx.now >= t)
            .then_some(Refusal::NotLeader),
        // Moving slots forward to positions a leader sent touches no role and drops
        // nothing: fine on a view from before a DCS outage.
        Action::ManageSlots(c) if c.create.is_empty() && c.drop.is_empty() => None,
        // Steps towards safety, and requests the DCS itself arbitrates (create-if-absent,
        // compare-and-set on my own name), are always allowed.
        Action::Demote { .. }
        | Action::SwitchoverTo { .. }
        | Action::ReleaseLease
        | Action::DisarmFence
        | Action::ArmFence { .. }
        | Action::StopPostgres { .. }
        | Action::RenewLease { .. }
        | Action::ProbePeers { .. }
        | Action::CheckFailsafe { .. }
        | Action::ClaimInitialize => None,
        // Everything else follows from the view: refuse if the view is stale.
        // Racing for the lease is only sound on a fresh view of who is healthiest.
        Action::AcquireLease
        | Action::PublishMember(_)
        | Action::CancelInitialize
        | Action::Bootstrap
        | Action::CloneReplica { .. }
        | Action::RestoreReplica
        | Action::ManageSlots(_)
        | Action::CopyLogicalSlots { .. }
        | Action::CancelBackground
        | Action::StartReplica { .. }
        | Action::Restart { token: None, .. }
        | Action::Reinitialize { .. }
        | Action::Follow { .. } => {
            (ctx.now.since(ctx.read_at) > ctx.max_view_age).then_some(Refusal::ViewTooOld)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(now_ms: u64) -> GuardContext {
        GuardContext {
            now: MonoTime::from_millis(now_ms),
            read_at: MonoTime::from_millis(1000),
            lease_until: Some(MonoTime::from_millis(31_000)),
            max_view_age: Duration::from_secs(10),
            leader_key: Some(LeaderKeySeen {
                read_at: MonoTime::from_millis(1000),
                mine_at: Some(Version(7)),
                renewed_at: None,
            }),
        }
    }

    #[test]
    fn promote_refused_after_token_expiry() {
        let token = LeaseToken {
            valid_until: MonoTime::from_millis(30_500),
            leader_version: None,
        };
        let a = Action::Promote { token };
        assert_eq!(refuse(&a, &ctx(2000)), None);
        assert_eq!(refuse(&a, &ctx(30_500)), Some(Refusal::LeaseExpired));
    }

    #[test]
    fn resumed_agent_does_not_act_on_old_view_but_may_step_down() {
        let follow = Action::Follow { upstream: None };
        assert_eq!(refuse(&follow, &ctx(5000)), None);
        assert_eq!(refuse(&follow, &ctx(60_000)), Some(Refusal::ViewTooOld));
        let status = Action::WriteStatus(Default::default());
        assert_eq!(refuse(&status, &ctx(60_000)), Some(Refusal::NotLeader));
        assert_eq!(refuse(&Action::ReleaseLease, &ctx(60_000)), None);
    }

    #[test]
    fn promote_refused_once_a_newer_read_shows_another_leadership() {
        let token = LeaseToken {
            valid_until: MonoTime::from_millis(30_500),
            leader_version: Some(Version(7)),
        };
        let a = Action::Promote { token };
        let seen_renewed = |read_at, mine_at, renewed_at: Option<u64>| GuardContext {
            leader_key: Some(LeaderKeySeen {
                read_at: MonoTime::from_millis(read_at),
                mine_at,
                renewed_at: renewed_at.map(MonoTime::from_millis),
            }),
            ..ctx(2000)
        };
        let seen = |read_at, mine_at| seen_renewed(read_at, mine_at, None);
        // The decision's own read, and a newer read at the same version: go ahead.
        assert_eq!(refuse(&a, &seen(1000, None)), None);
        assert_eq!(refuse(&a, &seen(1500, Some(Version(7)))), None);
        // A newer read: someone else (or nobody), or my key created again.
        assert_eq!(refuse(&a, &seen(1500, None)), Some(Refusal::LeaderChanged));
        assert_eq!(
            refuse(&a, &seen(1500, Some(Version(9)))),
            Some(Refusal::LeaderChanged)
        );
        // My own renewal since the decision may have rebound the key: same leadership.
        assert_eq!(
            refuse(&a, &seen_renewed(1500, Some(Version(9)), Some(1200))),
            None
        );
        assert_eq!(
            refuse(&a, &seen_renewed(1500, Some(Version(9)), Some(900))),
            Some(Refusal::LeaderChanged)
        );
        // Acquired after the read (no version in the token): only the holder matters.
        let fresh = LeaseToken {
            leader_version: None,
            ..token
        };
        let b = Action::StartPrimary { token: fresh };
        assert_eq!(refuse(&b, &seen(1500, Some(Version(9)))), None);
        assert_eq!(refuse(&b, &seen(1500, None)), Some(Refusal::LeaderChanged));
    }
}
