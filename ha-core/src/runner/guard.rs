//! The runner's last check before executing an action: a decision is only as good as
//! the view and the lease it was made on. An agent that stalled between deciding and
//! acting (SIGSTOP, a paused VM, a slow disk) must not act on what it saw before.

use crate::clock::MonoTime;
use crate::decision::Action;
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
}

/// Returns why `action` must not run now, or `None` when it may.
pub fn refuse(action: &Action, ctx: &GuardContext) -> Option<Refusal> {
    match action {
        // Making Postgres writable needs a lease that is still valid right now.
        Action::Promote { token } | Action::StartPrimary { token } => {
            (ctx.now >= token.valid_until).then_some(Refusal::LeaseExpired)
        }
        // A primary's restart ends writable again: same rule as a start.
        Action::Restart {
            token: Some(token), ..
        } => (ctx.now >= token.valid_until).then_some(Refusal::LeaseExpired),
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
    use crate::decision::LeaseToken;

    fn ctx(now_ms: u64) -> GuardContext {
        GuardContext {
            now: MonoTime::from_millis(now_ms),
            read_at: MonoTime::from_millis(1000),
            lease_until: Some(MonoTime::from_millis(31_000)),
            max_view_age: Duration::from_secs(10),
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
}
