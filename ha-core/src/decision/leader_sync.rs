//! The leader's side of synchronous replication: the `sync` key and
//! `synchronous_standby_names`, and whether a promotion may rely on them.

use super::{quorum, sync, Action, Outcome, Step};
use crate::model::Cluster;
use std::time::Duration;

impl Step<'_> {
    /// Quorum mode: I hold the key but still run as a replica, did not win it in this
    /// cycle's race (whose votes the promotion relies on) and am not the last primary.
    pub(super) fn quorum_votes_outdated(&self, c: &Cluster) -> bool {
        let dc = self.config();
        let acquired_now = self
            .obs
            .outcomes
            .iter()
            .any(|o| matches!(o, Outcome::LeaseAcquired { .. }));
        sync::is_active(&dc)
            && dc.synchronous_mode == crate::model::SynchronousMode::Quorum
            && self.obs.pg.is_replica()
            && !acquired_now
            && !self
                .obs
                .outcomes
                .iter()
                .any(|o| matches!(o, Outcome::SyncWritten { ok: true }))
            && !c
                .sync
                .as_ref()
                .is_some_and(|s| s.value.is_leader(self.me()))
    }

    /// Before promoting in synchronous mode the winner takes over `sync` with CAS, so
    /// the old primary's standbys are not trusted blindly; a failed CAS postpones the
    /// promotion. Returns true when the promotion may go ahead now.
    pub(super) fn sync_ready_for_promotion(&mut self, c: &Cluster) -> bool {
        let dc = self.config();
        let quorum = dc.synchronous_mode == crate::model::SynchronousMode::Quorum;
        match self.sync_write_outcome() {
            Some(true) => {
                let names = if quorum {
                    quorum::names_after_promotion(&dc)
                } else if dc.synchronous_mode_strict {
                    Some(sync::ANY_STANDBY.to_string())
                } else {
                    None
                };
                // A replica's setting is normally empty already: changing it only when
                // it differs spares the promotion a reload, which would also make
                // Postgres start a walreceiver attempt just as the promotion request
                // arrives (see `pg-driver`'s promotion for what that costs).
                let have = self.obs.pg.synchronous_standby_names.as_deref();
                if have.unwrap_or("").trim() != names.as_deref().unwrap_or("").trim() {
                    self.act(Action::SetSynchronousStandbyNames { value: names });
                }
                self.st.sync_confirm_from = None;
                true
            }
            Some(false) => {
                self.say("Postponing promotion: the sync key was updated by someone else");
                false
            }
            None => {
                let named =
                    c.failover_request().and_then(|f| f.member.as_deref()) == Some(self.me());
                let trusted = c
                    .sync
                    .as_ref()
                    .map(|s| &s.value)
                    .filter(|s| s.leader.is_some());
                if dc.synchronous_mode == crate::model::SynchronousMode::On
                    && !named
                    && trusted.is_some_and(|s| !s.contains(self.me()))
                {
                    // Won the key on an outdated view: another node has the acknowledged commits.
                    self.act(Action::ReleaseLease);
                    self.st.lease_until = None;
                    self.say(
                        "not promoting: I am not a synchronous standby; released the leader lock",
                    );
                    return false;
                }
                let wanted = sync::before_promote(self.cfg);
                let expected = c.sync.as_ref().map(|s| s.version);
                self.act(Action::WriteSync {
                    sync: wanted,
                    expected,
                });
                false
            }
        }
    }

    fn sync_write_outcome(&self) -> Option<bool> {
        self.obs.outcomes.iter().rev().find_map(|o| match o {
            Outcome::SyncWritten { ok } => Some(*ok),
            _ => None,
        })
    }

    /// One step of the leader's synchronous-replication bookkeeping per cycle; a
    /// pending CAS write makes the cycle wait for its outcome (returns true then).
    pub(super) fn manage_synchronous_replication(&mut self, c: &Cluster) -> bool {
        let dc = self.config();
        if !sync::is_active(&dc) {
            if let Some(s) = &c.sync {
                self.act(Action::DeleteSync {
                    expected: s.version,
                });
            }
            if self
                .obs
                .pg
                .synchronous_standby_names
                .as_deref()
                .is_some_and(|v| !v.trim().is_empty())
            {
                self.act(Action::SetSynchronousStandbyNames { value: None });
            }
            return false;
        }
        let names_changed = self
            .obs
            .executed
            .iter()
            .any(|a| matches!(a, Action::SetSynchronousStandbyNames { .. }));
        let quorum = dc.synchronous_mode == crate::model::SynchronousMode::Quorum;
        if let (Some(true), false, false) = (self.sync_write_outcome(), names_changed, quorum) {
            // The `sync` write of this cycle went through: the setting follows it now,
            // not a cycle later (a standby just dropped from `sync` may already be
            // stopping, and commits wait for it while the setting still lists it).
            if let Some(value) =
                sync::after_sync_written(self.cfg, &dc, c, &self.obs.pg, self.st.sync_confirm_from)
            {
                return self.set_standby_names(value, quorum);
            }
        }
        if self.sync_write_outcome().is_some() || names_changed {
            // One move per cycle; the next cycle re-reads and continues.
            self.wake_no_later_than(self.now.plus(Duration::from_millis(100)));
            return false;
        }
        let step = if quorum {
            let mark = self
                .st
                .sync_confirm_from
                .filter(|_| self.st.sync_confirm_names == self.obs.pg.synchronous_standby_names);
            quorum::next_step(self.cfg, &dc, c, &self.obs.pg, mark)
        } else {
            sync::next_step(self.cfg, &dc, c, &self.obs.pg, self.st.sync_confirm_from)
        };
        match step {
            sync::SyncStep::Settled => false,
            sync::SyncStep::WriteSync(state) => {
                let expected = c.sync.as_ref().map(|s| s.version);
                self.act(Action::WriteSync {
                    sync: state,
                    expected,
                });
                true
            }
            sync::SyncStep::MarkConfirmPoint(lsn) => {
                self.st.sync_confirm_from = Some(lsn);
                self.st.sync_confirm_names = self.obs.pg.synchronous_standby_names.clone();
                self.wake_no_later_than(self.now.plus(Duration::from_millis(100)));
                false
            }
            sync::SyncStep::SetStandbyNames(value) => self.set_standby_names(value, quorum),
        }
    }

    fn set_standby_names(&mut self, value: Option<String>, quorum: bool) -> bool {
        // Quorum mode captures the mark on the next observation, which is certain to
        // be taken after the change.
        self.st.sync_confirm_from = (!quorum).then(|| self.obs.pg.wal_position());
        self.act(Action::SetSynchronousStandbyNames { value });
        // Re-check soon whether the new standbys report `sync` and caught up.
        self.wake_no_later_than(self.now.plus(Duration::from_millis(200)));
        false
    }
}
