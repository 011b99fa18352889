//! Lease bookkeeping: what this cycle's outcomes say about the lease, renewals, the
//! fencing token and the write fence that follows the lease.

use super::{standby, Action, LeaseToken, Outcome, Renewal, Step};
use crate::model::{Cluster, Status};

impl Step<'_> {
    /// Folds this cycle's outcomes into the lease: a lease is only as old as the send
    /// time of the last request that confirmed it.
    pub(super) fn apply_lease_outcomes(&mut self, c: Option<&Cluster>) {
        let confirmed_this_cycle = self.obs.outcomes.iter().any(|o| {
            matches!(
                o,
                Outcome::LeaseAcquired { .. } | Outcome::LeaseRenewed { .. }
            )
        });
        // Trust the DCS over memory: if the key names someone else (or nobody), my lease
        // is gone, unless a request after that read confirmed it.
        if let Some(c) = c {
            if !c.is_leader(self.me()) && !confirmed_this_cycle {
                self.st.lease_until = None;
            }
        }
        let ttl = self.ttl();
        for o in &self.obs.outcomes {
            match o {
                Outcome::LeaseAcquired { sent_at } | Outcome::LeaseRenewed { sent_at } => {
                    self.st.lease_until = Some(sent_at.plus(ttl));
                }
                Outcome::LeaseLost | Outcome::LeaseTaken => self.st.lease_until = None,
                // An error proves nothing either way; a failsafe round extends the
                // lease in its own rule; the rest are not about the lease.
                Outcome::LeaseError(_)
                | Outcome::FailsafeChecked { .. }
                | Outcome::PeersProbed(_)
                | Outcome::InitializeWon
                | Outcome::InitializeLost
                | Outcome::SyncWritten { .. } => {}
            }
        }
        if !self.st.holds_lease(self.now) {
            self.st.lease_until = None;
        }
    }

    fn renewal(&self) -> Option<Renewal> {
        self.obs.outcomes.iter().rev().find_map(|o| match o {
            Outcome::LeaseAcquired { .. } | Outcome::LeaseRenewed { .. } => Some(Renewal::Renewed),
            Outcome::LeaseLost | Outcome::LeaseTaken => Some(Renewal::Lost),
            Outcome::LeaseError(e) => Some(Renewal::Failed(e.clone())),
            Outcome::FailsafeChecked { .. }
            | Outcome::PeersProbed(_)
            | Outcome::InitializeWon
            | Outcome::InitializeLost
            | Outcome::SyncWritten { .. } => None,
        })
    }

    /// Renews the lease once per cycle before anything that relies on it.
    pub(super) fn ensure_renewed(&mut self) -> Renewal {
        self.ensure_renewed_publishing(None)
    }

    /// [`Self::ensure_renewed`], publishing `status` with the renewal: the leader's
    /// position then costs no request of its own.
    pub(super) fn ensure_renewed_publishing(&mut self, status: Option<Status>) -> Renewal {
        match self.renewal() {
            Some(r) => r,
            None => {
                // A renewal the DCS applies but whose answer never arrives still sets
                // the lease to (its arrival + the current ttl): after a ttl decrease
                // that can end before the lease I counted on, so count on no more.
                // The write fence follows the shorter lease before the request leaves.
                let in_flight_floor = self.now.plus(self.ttl());
                if self.st.lease_until.is_some_and(|t| t > in_flight_floor) {
                    self.st.lease_until = Some(in_flight_floor);
                    if self.st.fence_armed {
                        self.arm_fence();
                    }
                }
                self.st.status_sent_with_renewal = status.is_some().then_some(self.obs.read_at);
                self.act(Action::RenewLease { status });
                Renewal::Pending
            }
        }
    }

    /// The `status` a running primary publishes, when it differs from the view's.
    pub(super) fn changed_leader_status(&self, c: &Cluster) -> Option<Status> {
        if !self.obs.pg.is_primary() {
            return None;
        }
        let status = Status {
            optime: Some(self.obs.pg.wal_position()),
            slots: self.published_slots(c),
            retain_slots: self.retained_member_slots(),
        };
        (c.status != status).then_some(status)
    }

    /// The fence deadline and the token for writable-making actions.
    pub(super) fn token(&self, c: Option<&Cluster>) -> Option<LeaseToken> {
        let until = self.st.lease_until?;
        Some(LeaseToken {
            valid_until: until.minus(self.cfg.fence_margin),
            // The key's version only when the view shows it as mine: a lease acquired
            // after the read has no version in this view (the key was someone else's
            // or nobody's when read).
            leader_version: c
                .and_then(|c| c.leader.as_ref())
                .filter(|l| l.name == self.cfg.name)
                .map(|l| l.version),
        })
    }

    /// Extends the write fence to just before the lease ends. The watchdog is kicked
    /// with it, except in pause, which disables the watchdog as Patroni does (the
    /// write fence stays: it is what keeps a frozen agent's primary from writing past
    /// its lease).
    pub(super) fn arm_fence(&mut self) {
        if let Some(t) = self.token(None) {
            self.actions.push(Action::ArmFence {
                deadline: t.valid_until,
                watchdog: !self.paused(),
            });
            self.st.fence_armed = true;
        }
    }

    /// A lease holder keeps the fence armed, except while it leads a standby cluster
    /// read-only (there is no write to fence).
    pub(super) fn update_fence(&mut self) {
        let read_only_standby_leader =
            standby::leader_stays_replica(&self.config()) && !self.obs.pg.may_accept_writes();
        if !read_only_standby_leader {
            return self.arm_fence();
        }
        if self.st.fence_armed {
            self.act(Action::DisarmFence);
            self.st.fence_armed = false;
        }
    }

    /// Once Postgres cannot accept writes and I hold no lease, the fence has nothing
    /// to guard.
    pub(super) fn disarm_fence_if_safe(&mut self) {
        if self.st.fence_armed && self.st.lease_until.is_none() && !self.obs.pg.may_accept_writes()
        {
            self.act(Action::DisarmFence);
            self.st.fence_armed = false;
        }
    }
}
