//! Operator requests (REST `POST /restart`, `POST /reinitialize`): accepted only when
//! they cannot cost the cluster its primary or its data, refused with Patroni's reasons
//! otherwise. Allowed in pause mode too, as in Patroni.

use super::input::{Busy, OperatorRequest, RequestVerdict};
use super::{upstream_of, Action, Renewal, Step};
use crate::model::Cluster;
use crate::postgres::{DataDirState, PgProcess};

impl Step<'_> {
    /// Answers a pending request. Returns true when it took over this step (an action
    /// carrying it out, or a lease renewal it waits for, was emitted).
    pub(super) fn answer_request(&mut self, c: &Cluster, request: OperatorRequest) -> bool {
        match request {
            OperatorRequest::Restart => self.restart(c),
            OperatorRequest::Reinitialize { from_leader, .. } => self.reinitialize(c, from_leader),
        }
    }

    fn refuse_request(&mut self, why: impl Into<String>) -> bool {
        self.verdict = Some(RequestVerdict::Refused(why.into()));
        false
    }

    fn restart(&mut self, c: &Cluster) -> bool {
        if self.obs.pg.data_dir == DataDirState::Empty {
            return self.refuse_request("postgres is not initialized");
        }
        match self.obs.pg.process {
            PgProcess::Starting => return self.refuse_request("postgres is still starting"),
            // A hung postmaster may still commit: the recovery rules stop it first.
            PgProcess::Hung => return self.refuse_request("postgres is not running"),
            // Unpaused, a leader's stopped or crashed Postgres is the recovery rules'
            // job. Otherwise a restart starts it, as Patroni's does (a stop of a stopped
            // server is a no-op): in pause nothing else would.
            PgProcess::Stopped | PgProcess::Crashed if c.is_leader(self.me()) && !self.paused() => {
                return self.refuse_request("postgres is not running")
            }
            PgProcess::Stopped | PgProcess::Crashed | PgProcess::Running => {}
        }
        if !c.is_leader(self.me()) {
            if self.obs.pg.may_accept_writes() {
                // A writable node without the lease is being demoted by the rules.
                return self.refuse_request("restart conditions are not satisfied");
            }
            let upstream = self.upstream_for_replica(c);
            self.say("restarting postgres as a replica on request");
            self.verdict = Some(RequestVerdict::Started);
            self.act(Action::Restart {
                token: None,
                upstream,
            });
            return true;
        }
        // The primary restarts under a freshly confirmed lease, so it comes back writable
        // only while it still leads.
        match self.ensure_renewed() {
            Renewal::Pending => true,
            Renewal::Lost | Renewal::Failed(_) => {
                self.refuse_request("restart failed: the leader lock could not be confirmed")
            }
            Renewal::Renewed => {
                self.arm_fence();
                let Some(token) = self.token(Some(c)) else {
                    return self.refuse_request("restart failed: no valid leader lock");
                };
                self.say("restarting postgres as primary on request");
                self.verdict = Some(RequestVerdict::Started);
                self.act(Action::Restart {
                    token: Some(token),
                    upstream: None,
                });
                true
            }
        }
    }

    /// A forced reinitialize cancels what a replica is busy with, when that is only
    /// getting its data or its server up: nothing a leader does, nothing that changes
    /// roles. Returns true when it took over this step.
    pub(super) fn cancel_for_reinitialize(
        &mut self,
        c: &Cluster,
        busy: Busy,
        from_leader: bool,
    ) -> bool {
        let cancellable = matches!(
            busy,
            Busy::Clone | Busy::Start | Busy::Restart | Busy::Reinitialize | Busy::CopySlots
        );
        if !cancellable || c.is_leader(self.me()) || self.st.lease_until.is_some() {
            return false;
        }
        let before = self.actions.len();
        self.act(Action::CancelBackground);
        if self.reinitialize(c, from_leader) {
            self.say(format!(
                "cancelled {} for a forced reinitialize",
                busy.describe()
            ));
            return true;
        }
        // Refused (no leader to clone from): leave the running action alone.
        self.actions.truncate(before);
        true
    }

    fn reinitialize(&mut self, c: &Cluster, from_leader: bool) -> bool {
        if c.is_leader(self.me()) || self.st.lease_until.is_some() {
            return self.refuse_request("I am the leader, can not reinitialize");
        }
        let Some(leader) = c.leader_member().filter(|m| m.name != self.me()) else {
            return self.refuse_request("Cluster has no leader, can not reinitialize");
        };
        let source = if from_leader {
            upstream_of(leader)
        } else {
            self.clone_source(c).or_else(|| upstream_of(leader))
        };
        let Some(source) = source else {
            return self.refuse_request("the leader has not published its address yet");
        };
        let follow = self.upstream_for_replica(c);
        self.say(format!("reinitializing: re-cloning from {}", source.name));
        self.verdict = Some(RequestVerdict::Started);
        self.st.rewind_pending = false;
        self.act(Action::Reinitialize { source, follow });
        true
    }
}

// The scenarios of this module are decision fixtures: testdata/operator.txt.
