//! Recovery of the local server: an empty, unusable or foreign data directory, a
//! stopped, crashed, hung or starting Postgres.

use super::{describe_remote, standby, upstream_of, Action, DemoteMode, Outcome, Renewal, Step};
use crate::model::Cluster;
use crate::postgres::Upstream;

impl Step<'_> {
    /// Empty data directory: bootstrap the cluster if nobody did, clone if someone leads.
    pub(super) fn empty_data_dir(&mut self, c: &Cluster) {
        if self.st.lease_until.is_some() || c.is_leader(self.me()) {
            // Nothing to lead with: let someone else take over at once.
            self.act(Action::ReleaseLease);
            self.st.lease_until = None;
        }
        if self.paused() {
            return self.say("data directory empty; paused, doing nothing");
        }
        if let Some(leader) = c.leader_member().filter(|m| m.name != self.cfg.name) {
            if let Some(source) = self.clone_source(c).or_else(|| upstream_of(leader)) {
                let follow = self.upstream_for_replica(c);
                self.say(format!("cloning a new replica from {}", source.name));
                return self.act(Action::CloneReplica { source, follow });
            }
            return self.say("waiting for the leader to publish its address");
        }
        if c.initialize.is_none() && c.is_unlocked() {
            if !self.cfg.can_bootstrap
                || self.cfg.tags.never_promote()
                || self.watchdog_blocks_leadership()
            {
                return self.say("waiting for a node that may bootstrap the cluster");
            }
            return match self.obs.outcomes.iter().rev().find_map(|o| match o {
                Outcome::InitializeWon => Some(true),
                Outcome::InitializeLost => Some(false),
                _ => None,
            }) {
                None => self.act(Action::ClaimInitialize),
                Some(true) => match standby::remote_upstream(&self.config()) {
                    // A standby cluster starts as a copy of its remote primary.
                    Some(remote) => {
                        self.say(format!(
                            "won the bootstrap race: cloning the standby cluster from {}",
                            describe_remote(&remote)
                        ));
                        self.act(Action::CloneReplica {
                            source: remote.clone(),
                            follow: Some(remote),
                        });
                    }
                    None => {
                        self.say("won the bootstrap race: initializing a new cluster");
                        self.act(Action::Bootstrap);
                    }
                },
                Some(false) => self.say("failed to acquire the initialize lock"),
            };
        }
        if c.is_unlocked() && c.system_identifier().is_some() && self.cfg.can_restore_without_leader
        {
            // The cluster exists but nobody leads: a backup can still seed a replica.
            self.say("no leader: creating a replica with a no_leader replica method");
            return self.act(Action::RestoreReplica);
        }
        self.say("waiting for the leader to bootstrap");
    }

    /// A data directory we must not touch: report it, never lead with it.
    pub(super) fn unusable_data_dir(&mut self, c: &Cluster, why: String) {
        if c.is_leader(self.me()) {
            self.act(Action::ReleaseLease);
            self.st.lease_until = None;
        }
        self.say(format!("data directory unusable: {why}"));
    }

    /// The data directory belongs to another cluster: refuse to take part.
    pub(super) fn foreign_data_dir(&mut self, c: &Cluster, recorded: String, mine: String) {
        if c.is_leader(self.me()) {
            self.act(Action::ReleaseLease);
            self.st.lease_until = None;
        }
        if self.obs.pg.may_accept_writes() && !self.paused() {
            self.act(Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
                upstream: None,
            });
        }
        self.say(format!(
            "system identifier {mine} of the data directory differs from the cluster's {recorded}: reinitialize this node"
        ));
    }

    /// Postgres is not running.
    pub(super) fn recover(&mut self, c: &Cluster) {
        if self.paused() {
            if c.is_leader(self.me()) {
                // Paused: no restart, but a stopped node must not keep the key.
                self.act(Action::ReleaseLease);
                self.st.lease_until = None;
            }
            return self.say("postgres is not running; paused, not starting it");
        }
        if c.is_leader(self.me()) {
            match self.ensure_renewed() {
                Renewal::Pending => return,
                Renewal::Renewed => {
                    if let Some(remote) = standby::remote_upstream(&self.config()) {
                        return self.start_standby_leader(remote);
                    }
                    return self.restart_crashed_primary(c);
                }
                Renewal::Lost | Renewal::Failed(_) => {}
            }
        }
        if c.is_unlocked() {
            // Start read-only; the next cycle decides the race with a live WAL position.
            self.say("starting postgres as a replica; the cluster has no leader");
            return self.act(Action::StartReplica {
                upstream: None,
                rewind: false,
            });
        }
        let upstream = self.upstream_for_replica(c);
        // Patroni checks every start against the leader: a data directory shut down
        // in recovery may still hold WAL of a primary it was before (an offline
        // demotion, then an agent restart).
        let rewind = self.st.rewind_pending
            || self.was_primary()
            || upstream.as_ref().is_some_and(Upstream::streams);
        self.st.rewind_pending = false;
        self.say(format!(
            "starting postgres as a replica of {}",
            upstream.as_ref().map_or("nobody", |u| u.name.as_str())
        ));
        self.act(Action::StartReplica { upstream, rewind });
    }

    /// The standby leader's Postgres is down (crashed, or stopped by a demote-cluster):
    /// start it following the remote, keeping the key. A former primary is checked for
    /// divergence from the remote first (pg_rewind as for a normal rejoin).
    fn start_standby_leader(&mut self, remote: Upstream) {
        self.update_fence();
        let rewind = (self.st.rewind_pending || self.was_primary()) && remote.streams();
        self.st.rewind_pending = false;
        self.say(format!(
            "starting postgres as the standby leader, following {}",
            describe_remote(&remote)
        ));
        self.act(Action::StartReplica {
            upstream: Some(remote),
            rewind,
        });
    }

    /// The leader's Postgres died: restart it in place within `primary_start_timeout`,
    /// otherwise give the lease up so a replica takes over.
    fn restart_crashed_primary(&mut self, c: &Cluster) {
        let down_since = *self.st.down_since.get_or_insert(self.now);
        let timeout = self.config().primary_start_timeout();
        if self.was_primary()
            && self.now.since(down_since) < timeout
            && !self.watchdog_blocks_leadership()
        {
            self.arm_fence();
            if let Some(token) = self.token(Some(c)) {
                self.say(
                    "postgres crashed: restarting it as primary while holding the leader lock",
                );
                return self.act(Action::StartPrimary { token });
            }
        }
        self.say("postgres is down and could not be restarted in time: releasing the leader lock");
        self.act(Action::ReleaseLease);
        self.st.lease_until = None;
        self.st.down_since = None;
        self.act(Action::StartReplica {
            upstream: None,
            rewind: false,
        });
    }

    /// Postgres does not answer. Hung backends may still commit, so stop it before the
    /// lease is released; a short stall within `hung_grace` is tolerated.
    pub(super) fn hung(&mut self, c: &Cluster) {
        let since = *self.st.hung_since.get_or_insert(self.now);
        let leader = c.is_leader(self.me());
        if leader {
            match self.ensure_renewed() {
                Renewal::Pending => return,
                Renewal::Renewed => self.update_fence(),
                Renewal::Lost | Renewal::Failed(_) => {}
            }
        }
        if self.paused() {
            return self.say("postgres is not responding; paused, doing nothing");
        }
        if self.now.since(since) < self.cfg.hung_grace {
            self.wake_no_later_than(since.plus(self.cfg.hung_grace));
            return self.say("postgres is not responding; waiting before acting");
        }
        let holds = self.st.lease_until.is_some();
        let mode = if holds {
            DemoteMode::Immediate
        } else {
            DemoteMode::ImmediateNoLock
        };
        let upstream = if leader {
            None
        } else {
            self.upstream_for_replica(c)
        };
        self.st.rewind_pending = true;
        self.st.hung_since = None;
        self.say("postgres is not responding: stopping it");
        self.act(Action::Demote { mode, upstream });
        if holds {
            self.st.lease_until = None;
        }
    }

    /// Postgres is starting: a leader keeps its lease meanwhile; a standby is pointed at
    /// the member it should follow (Patroni's "normal processing for standbys"). One
    /// started while nobody led has no upstream, and if its data directory needs WAL
    /// it does not hold to become consistent it would stay "starting up" for good.
    /// There is no divergence check while it starts; one follows once it runs and does
    /// not stream.
    pub(super) fn starting(&mut self, c: &Cluster) {
        if c.is_leader(self.me()) {
            match self.ensure_renewed() {
                Renewal::Pending => return,
                Renewal::Renewed => self.update_fence(),
                Renewal::Lost | Renewal::Failed(_) => {}
            }
        }
        if self.obs.pg.in_recovery == Some(true) && !c.is_unlocked() {
            let upstream = self.upstream_for_replica(c);
            let wanted = upstream.as_ref().map(|u| u.name.clone());
            if let Some(name) = wanted
                .as_deref()
                .filter(|_| self.obs.pg.following != wanted)
            {
                self.say(format!(
                    "postgres is starting as a replica: pointing it at {name}"
                ));
                return self.act(Action::Follow { upstream });
            }
        }
        self.say("postgres is starting");
    }
}
