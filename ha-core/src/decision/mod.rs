//! The HA decision function: `decide(config, state, observation, now)` returns the
//! actions to take and the node's new memory. No I/O, no clock reads.
//!
//! # The timing rule
//! A lease acquired or renewed by a request *sent* at `t` is valid locally until
//! `t + ttl`: the DCS measures ttl from when it processed the request, which is later,
//! so the DCS cannot expire the key before the node's own idea of the lease ends.
//! A new primary can exist only after the key expired in the DCS. Therefore:
//! - the write fence (a process outside the agent) stops Postgres at
//!   `t + ttl − fence_margin`, whether or not the agent still runs;
//! - the agent itself demotes at the last decision before that point: when
//!   `now + loop_wait + retry_timeout ≥ t + ttl − fence_margin` without a renewal
//!   (the next decision can come at most `loop_wait + retry_timeout` later);
//! - actions that make Postgres writable carry a [`LeaseToken`] and the runner refuses
//!   them once the token's time has passed, so a resumed agent never acts on a view
//!   older than its lease.
//!
//! With `loop_wait + 2·retry_timeout ≤ ttl` (enforced by `DynamicConfig::validate`) a
//! leader that can still reach the DCS always renews before this point, so DCS blips
//! shorter than the remaining lease never cause a demotion.

mod action;
mod builder;
pub mod electability;
mod failsafe;
#[cfg(test)]
mod fixtures;
mod health;
mod input;
mod leader_sync;
mod lease;
mod member_record;
mod operator;
pub use crate::model::permanent_slots;
pub mod quorum;
mod recovery;
mod slot_plan;
pub mod standby;
mod switchover;
pub mod sync;
#[cfg(test)]
mod tests;

pub use action::{Action, DemoteMode, LeaseToken};
pub use electability::{explain, Blocker, Electability, MemberElectability};
pub use health::{
    answer_allows_promotion, failover_candidates, sync_allows, sync_restricts, why_not_candidate,
    NotCandidate, Verdict,
};
pub use input::{
    Busy, LocalState, NodeConfig, Observation, OperatorRequest, Outcome, PeerReply, PeerStatus,
    RequestVerdict,
};
pub use member_record::{replay_lag_seconds, REPLAY_LAG_SECONDS};

use crate::clock::MonoTime;
use crate::dcs::DcsError;
use crate::model::{Cluster, DynamicConfig, History, HistoryEntry, Member, Status};
use crate::postgres::{DataDirState, PgProcess, Upstream};
use std::time::Duration;

/// How long the leader race waits for an optional peer's answer (see
/// [`Action::ProbePeers`]) once every other asked peer has answered: a frozen former
/// leader then costs this instead of the whole probe timeout.
pub const OPTIONAL_PEER_GRACE: Duration = Duration::from_millis(50);

/// How long a replica behind the leader's timeline may take to catch the timeline
/// switch before it is stopped for a divergence check.
const BEHIND_TIMELINE_GRACE: Duration = Duration::from_secs(10);

/// The result of one decision step (more fields may come: read them, do not build it).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Decision {
    /// Actions to run, in order.
    pub actions: Vec<Action>,
    /// The node's memory after this step.
    pub state: LocalState,
    /// A query action was emitted: run the actions, add their outcomes to the
    /// observation, and decide again within the same cycle.
    pub rerun: bool,
    /// Start a new cycle right away (re-read the cluster) instead of waiting.
    pub reread: bool,
    /// Decide again no later than this, even without events.
    pub wake_at: Option<MonoTime>,
    /// The answer to `Observation::request`, once there is one.
    pub verdict: Option<RequestVerdict>,
}

/// Runs one decision step. See the module docs for the timing rule.
pub fn decide(cfg: &NodeConfig, state: &LocalState, obs: &Observation, now: MonoTime) -> Decision {
    let mut st = state.clone();
    st.started_at.get_or_insert(now);
    let mut step = Step {
        cfg,
        obs,
        now,
        st,
        actions: Vec::new(),
        rerun: false,
        reread: false,
        wake_at: None,
        publish: true,
        verdict: None,
    };
    match &obs.cluster {
        Err(e) => step.dcs_unreachable(e),
        Ok(c) => step.cycle(c),
    }
    step.finish()
}

/// Where the node's lease stands after this cycle's renew attempt.
enum Renewal {
    /// A renew was emitted; decide again with its outcome.
    Pending,
    /// Renewed (or acquired) this cycle.
    Renewed,
    /// The DCS says the key is not mine.
    Lost,
    /// The DCS could not be reached.
    Failed(DcsError),
}

struct Step<'a> {
    cfg: &'a NodeConfig,
    obs: &'a Observation,
    now: MonoTime,
    st: LocalState,
    actions: Vec<Action>,
    rerun: bool,
    reread: bool,
    wake_at: Option<MonoTime>,
    publish: bool,
    verdict: Option<RequestVerdict>,
}

impl<'a> Step<'a> {
    fn finish(mut self) -> Decision {
        // Every final step of a cycle publishes the member record (it keeps the member
        // key's lease alive too); query steps publish after their outcome arrives.
        if self.publish && !self.rerun {
            if let Ok(c) = &self.obs.cluster {
                let data = member_record::build(self.cfg, &self.st, self.obs, c, self.now);
                self.actions.push(Action::PublishMember(data));
            }
        }
        Decision {
            actions: self.actions,
            state: self.st,
            rerun: self.rerun,
            reread: self.reread,
            wake_at: self.wake_at,
            verdict: self.verdict,
        }
    }

    fn say(&mut self, message: impl Into<String>) {
        self.st.message = message.into();
    }

    fn act(&mut self, a: Action) {
        if self.obs.executed.contains(&a) {
            return;
        }
        if a.is_query() {
            self.rerun = true;
        }
        self.actions.push(a);
    }

    fn wake_no_later_than(&mut self, t: MonoTime) {
        self.wake_at = Some(self.wake_at.map_or(t, |w| w.min(t)));
    }

    fn config(&self) -> DynamicConfig {
        self.st
            .config
            .clone()
            .unwrap_or_else(|| self.cfg.bootstrap_config.clone())
    }

    fn paused(&self) -> bool {
        self.config().pause
    }

    fn me(&self) -> &str {
        &self.cfg.name
    }

    fn ttl(&self) -> Duration {
        self.config().ttl()
    }

    // ----- the cycle ---------------------------------------------------------------

    fn cycle(&mut self, c: &Cluster) {
        self.st.dcs_last_seen = Some(self.obs.read_at);
        self.st.failsafe_active = false;
        if let Some(cfg) = &c.config {
            self.st.config = Some(cfg.value.clone());
        }
        self.note_members_seen(c);
        if c.leader.is_some() {
            self.st.last_leader_view = Some(c.clone());
        }
        self.apply_lease_outcomes(Some(c));
        if self.obs.pg.process != PgProcess::Hung {
            self.st.hung_since = None;
        }

        if let Some(busy) = self.obs.busy {
            self.while_busy(c, busy);
        } else {
            self.dispatch(c);
        }
        self.disarm_fence_if_safe();
    }

    fn dispatch(&mut self, c: &Cluster) {
        if let Some(request) = self.obs.request {
            if self.answer_request(c, request) {
                return;
            }
        }
        let sysid = match &self.obs.pg.data_dir {
            DataDirState::Empty => return self.empty_data_dir(c),
            DataDirState::Invalid(why) => return self.unusable_data_dir(c, why.clone()),
            DataDirState::Initialized { system_identifier } => system_identifier.clone(),
        };
        if let Some(recorded) = c.system_identifier() {
            if recorded != sysid {
                return self.foreign_data_dir(c, recorded.to_string(), sysid);
            }
        }
        match self.obs.pg.process {
            PgProcess::Stopped | PgProcess::Crashed => return self.recover(c),
            PgProcess::Hung => return self.hung(c),
            PgProcess::Starting => return self.starting(c),
            PgProcess::Running => {}
        }
        self.st.down_since = None;
        let acquired_now = self
            .obs
            .outcomes
            .iter()
            .any(|o| matches!(o, Outcome::LeaseAcquired { .. }));
        if c.is_leader(self.me()) || acquired_now {
            self.leader_cycle(c, &sysid);
        } else if c.is_unlocked() {
            self.unlocked_cluster(c, &sysid);
        } else {
            self.follower_cycle(c);
        }
    }

    /// A background action runs: only keep the lease alive (and the fence armed) so a
    /// long clone or promote does not cost the leadership.
    fn while_busy(&mut self, c: &Cluster, busy: Busy) {
        // A demotion gives the lease up; renewing it meanwhile would re-arm the fence
        // past the release.
        if busy != Busy::Demote && (c.is_leader(self.me()) || self.st.lease_until.is_some()) {
            match self.ensure_renewed() {
                Renewal::Pending => return,
                Renewal::Renewed => self.update_fence(),
                Renewal::Lost | Renewal::Failed(_) => {}
            }
        }
        if let Some(OperatorRequest::Reinitialize {
            from_leader,
            force: true,
        }) = self.obs.request
        {
            if self.cancel_for_reinitialize(c, busy, from_leader) {
                return;
            }
        }
        if self.obs.request.is_some() {
            self.verdict = Some(RequestVerdict::Refused(format!(
                "{} already in progress",
                busy.describe()
            )));
        }
        self.say(format!("{} in progress", busy.describe()));
    }

    /// Nobody holds the leader key: race if I am the healthiest, else follow.
    fn unlocked_cluster(&mut self, c: &Cluster, sysid: &str) {
        if self
            .obs
            .outcomes
            .iter()
            .any(|o| matches!(o, Outcome::LeaseTaken | Outcome::LeaseError(_)))
        {
            self.reread = true;
            return self.say("lost the leader race");
        }
        if let Some(leader) = self
            .obs
            .failsafe_leader
            .as_deref()
            .filter(|l| *l != self.me())
        {
            // That primary lives on in failsafe mode, counting on this node not to race.
            self.st.failsafe_active = true;
            return self.say(format!(
                "failsafe: {leader} called POST /failsafe within ttl and is still the leader; not racing"
            ));
        }
        if self.config().failsafe_mode
            && !self.cfg.failsafe_record_durable
            && !self.obs.pg.is_primary()
        {
            // Accepted failsafe calls are not remembered across an agent restart.
            let since = self.st.started_at.unwrap_or(self.now).plus(self.ttl());
            if self.now < since {
                self.wake_no_later_than(since);
                return self.say(
                    "failsafe: started less than ttl ago and may have accepted a leader's call before; not racing",
                );
            }
        }
        let peers = self.obs.outcomes.iter().rev().find_map(|o| match o {
            Outcome::PeersProbed(p) => Some(p.as_slice()),
            _ => None,
        });
        let verdict = if self.watchdog_blocks_leadership() {
            Verdict::No("the required watchdog is not working".into())
        } else {
            health::race_verdict(
                self.cfg,
                &self.config(),
                c,
                self.st.last_leader_view.as_ref(),
                &self.obs.pg,
                peers,
                sysid,
                self.obs.wall_millis,
            )
        };
        match verdict {
            Verdict::NeedPeers { names, optional } => {
                self.act(Action::ProbePeers { names, optional })
            }
            Verdict::Yes => {
                self.say("I am the healthiest node: taking the leader lock");
                self.act(Action::AcquireLease);
            }
            Verdict::No(why) => {
                if self.obs.pg.may_accept_writes() && !self.obs.pg.is_replica() && !self.paused() {
                    // A primary that may not lead must stop accepting writes now.
                    self.st.rewind_pending = true;
                    self.act(Action::Demote {
                        mode: DemoteMode::ImmediateNoLock,
                        upstream: None,
                    });
                    return self.say(format!("demoting: the cluster has no leader and {why}"));
                }
                if self.cfg.tags.never_promote() {
                    // Patroni's words: operators (and its acceptance suite) grep for them.
                    return self
                        .say("following a different leader because I am not allowed to promote");
                }
                self.say(format!("following nobody: {why}"));
            }
        }
    }

    /// I hold the leader key.
    fn leader_cycle(&mut self, c: &Cluster, sysid: &str) {
        let status = self.changed_leader_status(c);
        match self.ensure_renewed_publishing(status.clone()) {
            Renewal::Pending => return,
            Renewal::Lost => return self.lost_lease(c),
            Renewal::Failed(e) => return self.dcs_unreachable(&e),
            Renewal::Renewed => {}
        }
        self.update_fence();
        if self.quorum_votes_outdated(c) {
            // The votes were counted on an older view: race again with fresh ones.
            self.act(Action::ReleaseLease);
            self.st.lease_until = None;
            return self.say(
                "not promoting: the quorum must be confirmed again; released the leader lock",
            );
        }
        let pg = &self.obs.pg;
        if self.paused() && !pg.is_primary() && !pg.is_replica() {
            self.act(Action::ReleaseLease);
            self.st.lease_until = None;
            return self
                .say("paused and postgres is not running as primary: released the leader lock");
        }
        if c.system_identifier().is_none() {
            self.act(Action::WriteInitialize {
                system_identifier: sysid.to_string(),
            });
        }
        if c.config.is_none() && !c.is_malformed(crate::model::keys::CONFIG) {
            self.act(Action::WriteConfig {
                config: self.config(),
                expected: None,
            });
        }
        self.publish_failsafe_topology(c);
        if self.watchdog_blocks_leadership() {
            return self.step_down_without_watchdog(c);
        }
        // Quorum mode hands over only from a running primary: a leader that is still a
        // replica promotes first (the candidate's election needs this node's WAL).
        let not_yet_primary = self.config().synchronous_mode
            == crate::model::SynchronousMode::Quorum
            && self.obs.pg.is_replica();
        let before = self.st.message.clone();
        if !not_yet_primary && self.handle_failover_request(c) {
            return;
        }
        // A refused request is said before "no action …": keep it in the log line.
        let refusal = (self.st.message != before).then(|| self.st.message.clone());
        self.enforce_primary_role(c, status);
        if let Some(refusal) = refusal {
            let then = std::mem::take(&mut self.st.message);
            self.say(format!("{refusal}; {then}"));
        }
    }

    /// `watchdog.mode: required` and the watchdog does not work (pause switches the
    /// watchdog off, so it does not count then).
    fn watchdog_blocks_leadership(&self) -> bool {
        self.obs.watchdog_failed && !self.paused()
    }

    /// A leader whose required watchdog failed gives the lease up: nothing would reset
    /// the node if the agent froze. A primary stops first (demote `immediate`).
    fn step_down_without_watchdog(&mut self, c: &Cluster) {
        if self.obs.pg.may_accept_writes() && !self.obs.pg.is_replica() {
            self.st.rewind_pending = true;
            let upstream = self.upstream_for_replica(c);
            self.act(Action::Demote {
                mode: DemoteMode::Immediate,
                upstream,
            });
        } else {
            self.act(Action::ReleaseLease);
        }
        self.st.lease_until = None;
        self.say("the required watchdog is not working: releasing the leader lock");
    }

    /// The key is not mine any more: stop accepting writes unless paused.
    fn lost_lease(&mut self, c: &Cluster) {
        self.st.lease_until = None;
        if self.obs.pg.may_accept_writes() && !self.obs.pg.is_replica() && !self.paused() {
            self.st.rewind_pending = true;
            let upstream = self.upstream_for_replica(c);
            self.act(Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
                upstream,
            });
            return self.say("demoted self because failed to update leader lock in DCS");
        }
        self.say("not promoting because failed to update leader lock in DCS");
    }

    /// Make sure the lock holder runs as primary, and keep `status`/`history` current
    /// (`changed_status`: this cycle's status when it differs from the view's).
    fn enforce_primary_role(&mut self, c: &Cluster, changed_status: Option<Status>) {
        let pg = &self.obs.pg;
        if pg.is_primary() && !self.paused() {
            if let Some(remote) = standby::remote_upstream(&self.config()) {
                return self.demote_cluster(remote);
            }
        }
        if pg.is_primary() {
            if let Some(f) = c.failover.as_ref().filter(|f| {
                f.value.member.as_deref() == Some(self.me()) && f.value.scheduled_at.is_none()
            }) {
                // The request that made me leader is done.
                self.act(Action::ClearFailover {
                    expected: f.version,
                });
            }
            // Written with this cycle's renewal unless that did not carry it.
            let sent_with_renewal = self.st.status_sent_with_renewal == Some(self.obs.read_at);
            if let Some(status) = changed_status.filter(|_| !sent_with_renewal) {
                self.act(Action::WriteStatus(status));
            }
            if let Some(h) = self.history_update(c) {
                self.act(Action::WriteHistory(h));
            }
            self.manage_slots(c, true);
            if self.manage_synchronous_replication(c) {
                return;
            }
            let me = self.me().to_string();
            return self.say(format!("no action. I am ({me}), the leader with the lock"));
        }
        if pg.is_replica() && standby::leader_stays_replica(&self.config()) {
            return self.lead_standby_cluster(c);
        }
        if pg.is_replica() {
            if let Some(token) = self.token(Some(c)) {
                if sync::is_active(&self.config()) && !self.sync_ready_for_promotion(c) {
                    return;
                }
                self.say("promoted self to leader by acquiring session lock");
                return self.act(Action::Promote { token });
            }
        }
        self.say("waiting for postgres to report its role");
    }

    /// `standby_cluster` was added to a running cluster (Patroni's `demote-cluster`):
    /// the primary stops (fast) keeping the key, and the next cycle starts it as the
    /// standby leader following the remote. Its replicas keep following it.
    fn demote_cluster(&mut self, remote: Upstream) {
        self.st.rewind_pending = true;
        self.say(format!(
            "demoting the cluster: standby_cluster names {}; becoming the standby leader",
            describe_remote(&remote)
        ));
        self.act(Action::Demote {
            mode: DemoteMode::DemoteCluster,
            upstream: Some(remote),
        });
    }

    /// The standby leader never promotes: it streams from the remote primary and keeps
    /// slots for the members that cascade from it.
    fn lead_standby_cluster(&mut self, c: &Cluster) {
        self.manage_slots(c, true);
        let remote = standby::remote_upstream(&self.config());
        // Also when only a setting of the section changed (slot, restore_command, …).
        if remote.is_some() && self.obs.pg.upstream != remote {
            self.say("standby leader: following the remote primary");
            return self.act(Action::Follow { upstream: remote });
        }
        let me = self.me().to_string();
        self.say(format!(
            "no action. I am ({me}), the standby leader with the lock"
        ))
    }

    /// `postgresql.use_slots` of the dynamic config (default on).
    fn use_slots(&self) -> bool {
        self.config()
            .extra
            .get("postgresql")
            .and_then(|p| p.get("use_slots"))
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(true)
    }

    /// Adds the new timeline to `history` once after a promotion.
    fn history_update(&self, c: &Cluster) -> Option<History> {
        let tl = self.obs.pg.timeline?;
        if tl <= 1 || c.is_malformed(crate::model::keys::HISTORY) {
            return None;
        }
        let mut h = c.history.clone().unwrap_or_default();
        if h.0.last().is_some_and(|e| e.timeline >= tl - 1) {
            return None;
        }
        let at =
            chrono::DateTime::from_timestamp_millis(self.obs.wall_millis).map(|t| t.to_rfc3339());
        h.0.push(HistoryEntry {
            timeline: tl - 1,
            switch_lsn: c.status.optime.unwrap_or(0),
            reason: "no recovery target specified".to_string(),
            timestamp: at,
            new_leader: Some(self.me().to_string()),
        });
        let keep = self.config().max_timelines_history;
        if keep > 0 && h.0.len() > keep as usize {
            let drop = h.0.len() - keep as usize;
            h.0.drain(..drop);
        }
        Some(h)
    }

    /// Someone else leads: a primary steps down, a replica follows.
    fn follower_cycle(&mut self, c: &Cluster) {
        let pg = &self.obs.pg;
        let leader = c
            .leader
            .as_ref()
            .map(|l| l.name.clone())
            .unwrap_or_default();
        if pg.may_accept_writes() && !pg.is_replica() {
            if self.paused() {
                return self.say("continue to run as primary without lock (paused)");
            }
            self.st.rewind_pending = true;
            let upstream = self.upstream_for_replica(c);
            self.act(Action::Demote {
                mode: DemoteMode::ImmediateNoLock,
                upstream,
            });
            return self.say(format!("demoting: {leader} holds the leader lock"));
        }
        let upstream = self.upstream_for_replica(c);
        let wanted = upstream.as_ref().map(|u| u.name.clone());
        if self.replica_needs_rewind_check(c, wanted.as_deref()) {
            // Stop now; recover() restarts it with a divergence check and pg_rewind.
            self.st.rewind_pending = true;
            self.st.stuck_since = None;
            self.say("replica cannot follow the new timeline: stopping it for a divergence check");
            return self.act(Action::StopPostgres {
                mode: crate::postgres::StopMode::Fast,
            });
        }
        if pg.following != wanted && upstream.is_some() {
            self.say(format!(
                "following new leader {}",
                wanted.clone().unwrap_or_default()
            ));
            return self.act(Action::Follow { upstream });
        }
        if self.manage_slots(c, false) {
            return;
        }
        let me = self.me().to_string();
        self.say(format!(
            "no action. I am ({me}), a secondary, and following a leader ({leader})"
        ));
    }

    /// A running replica that may have diverged from the leader and so can never catch
    /// up by itself: it is not streaming although the leader runs, and either it was
    /// demoted without a rewind check, is behind the leader's timeline (after a loop),
    /// or has not streamed for a whole ttl (its history may have forked on the same
    /// timeline, e.g. it received WAL the new leader never had).
    ///
    /// The count runs against the upstream the replica is pointed at (`wanted`): a
    /// replica about to be pointed elsewhere (its `replicatefrom` member died, a new
    /// leader) starts counting when it follows the new one, which takes a walreceiver
    /// reconnect. Counting from the leader alone stopped a cascading replica whose
    /// upstream died, right after it had been pointed at the leader (e2e_cascade).
    fn replica_needs_rewind_check(&mut self, c: &Cluster, wanted: Option<&str>) -> bool {
        let pg = &self.obs.pg;
        // A `nostream` replica never streams: not streaming proves nothing there.
        if !pg.is_replica() || self.cfg.tags.no_stream() {
            return false;
        }
        if pg.replication_state.as_deref() == Some("streaming") {
            // Streaming from the leader proves the histories are compatible.
            self.st.rewind_pending = false;
            self.st.stuck_since = None;
            return false;
        }
        let Some(leader) = c
            .leader_member()
            .filter(|m| is_running(m) && m.name != self.cfg.name)
        else {
            self.st.stuck_since = None;
            return false;
        };
        let behind = leader
            .data
            .timeline
            .is_some_and(|tl| pg.timeline.is_some_and(|mine| mine < tl));
        let dc = self.config();
        let grace = if self.st.rewind_pending {
            dc.loop_wait().max(Duration::from_secs(1))
        } else if behind {
            // After a failover the walreceiver reconnects to the new leader only on its
            // retry interval (wal_retrieve_retry_interval, 5 s): give it two tries.
            dc.loop_wait().max(BEHIND_TIMELINE_GRACE.min(dc.ttl()))
        } else {
            dc.ttl()
        };
        // Not pointed at the wanted upstream yet: the Follow comes first, and the count
        // starts once the replica follows it.
        if pg.following.as_deref() != wanted && wanted.is_some() {
            self.st.stuck_on_leader = None;
            self.st.stuck_since = None;
            return false;
        }
        // A new upstream restarts the count: following it takes a reconnect.
        let upstream = wanted.unwrap_or(leader.name.as_str());
        if self.st.stuck_on_leader.as_deref() != Some(upstream) {
            self.st.stuck_on_leader = Some(upstream.to_string());
            self.st.stuck_since = None;
        }
        let since = *self.st.stuck_since.get_or_insert(self.now);
        if self.now.since(since) < grace {
            self.wake_no_later_than(since.plus(grace));
            return false;
        }
        true
    }

    // ----- helpers -----------------------------------------------------------------

    /// Whether pg_control says this data directory was last a primary.
    fn was_primary(&self) -> bool {
        self.obs.pg.was_primary()
    }

    /// Where a replica should stream from: `replicatefrom` if that member runs, else the leader.
    fn upstream_for_replica(&self, c: &Cluster) -> Option<Upstream> {
        // `nostream`: recovery from the WAL archive only (restore_command).
        if self.cfg.tags.no_stream() {
            return None;
        }
        if let Some(from) = self
            .cfg
            .tags
            .replicatefrom
            .as_deref()
            .filter(|f| *f != self.me())
        {
            if let Some(m) = c.member(from).filter(|m| is_running(m)) {
                return upstream_of(m);
            }
        }
        c.leader_member()
            .filter(|m| m.name != self.cfg.name)
            .and_then(upstream_of)
    }

    /// A running `clonefrom` member, else none (the caller falls back to the leader).
    fn clone_source(&self, c: &Cluster) -> Option<Upstream> {
        c.members
            .iter()
            .filter(|m| m.name != self.cfg.name && m.data.tags.clone_from() && is_running(m))
            .find_map(upstream_of)
    }
}

/// `host:port` of a standby cluster's remote, or "the archive" without a host.
fn describe_remote(remote: &Upstream) -> String {
    if remote.streams() {
        format!("{}:{}", remote.host, remote.port)
    } else {
        "the archive (restore_command)".to_string()
    }
}

fn is_running(m: &Member) -> bool {
    m.data.state == Some(crate::model::MemberState::Running)
}

/// The streaming source described by a member record.
pub fn upstream_of(m: &Member) -> Option<Upstream> {
    let (host, port) = m.host_port()?;
    Some(Upstream::at(m.name.clone(), host, port))
}
