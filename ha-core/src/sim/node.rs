//! One simulated node's agent: the runner's own cycle
//! ([`crate::runner::cycle::Cycle`], the real `decide()` behind the real guard, step
//! limit, watchdog and failsafe rules) driven on the simulated clock — read the cluster
//! (and observe Postgres alongside), then execute what the cycle hands out (DCS
//! requests take time and time out after `retry_timeout`, background actions run as
//! in `runner/jobs` while the loop goes on) and feed the answers back. The next
//! cycle comes `loop_wait` after this one started, earlier at `wake_at`, right away
//! after a refusal, a DCS watch event or the end of a background action.

use super::sim_pg::{PgRole, SimPg};
use super::world::{two, Ev, World};
use super::{trace, Breakage};
use crate::clock::MonoTime;
use crate::dcs::{DcsError, DcsTiming};
use crate::decision::{
    Action, Busy, LocalState, NodeConfig, Observation, Outcome, PeerReply, PeerStatus,
};
use crate::memory_dcs::MemoryDcsNode;
use crate::model::{
    Cluster, ClusterKeys, DynamicConfig, History, MemberData, Status, SyncState, Version,
};
use crate::postgres::StopMode;
use crate::runner::guard::{leadership_changed, refuse_writable, LeaderKeySeen, Refusal};
use std::collections::VecDeque;
use std::time::Duration;

mod cycle;
mod jobs;

/// The runner's peer probe timeout, scaled like the simulated ttl (the runner's
/// default is 2 s with a 30 s ttl).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(500);

/// A request to the DCS.
#[derive(Debug, Clone)]
pub(super) enum DcsOp {
    Read,
    Acquire,
    Renew(Option<Status>),
    Release,
    Claim,
    SetInitialize(String),
    CancelInitialize,
    Touch(MemberData),
    SetConfig(DynamicConfig, Option<Version>),
    ClearFailover(Version),
    WriteSync(SyncState, Option<Version>),
    DeleteSync(Version),
    Status(Status),
    History(History),
    Failsafe(crate::model::Failsafe),
}

/// A DCS answer.
#[derive(Debug, Clone)]
pub(super) enum DcsVal {
    Cluster(Box<Cluster>),
    Flag(bool),
    Done,
}

/// One HA cycle in progress: the read, then the runner's cycle on its observation.
#[derive(Debug)]
pub(super) struct Cycle {
    started: MonoTime,
    /// Postgres as observed alongside the cluster read.
    pg: Option<crate::postgres::PgObservation>,
    /// The rules of the cycle, once the read is back.
    core: Option<crate::runner::cycle::Cycle>,
}

/// A step of a background action.
#[derive(Debug, Clone)]
pub(super) enum JobStep {
    Bootstrap,
    Clone {
        source: String,
        follow: Option<String>,
    },
    Stop(StopMode),
    Release,
    /// Refused when the lease token has run out, or its leadership is gone, by the
    /// time the step starts.
    StartPrimary {
        token: crate::decision::LeaseToken,
        decided_on: MonoTime,
    },
    StartReplica {
        upstream: Option<String>,
        rewind: bool,
    },
    /// After a graceful demotion: start as a replica of `upstream` unless it may have
    /// diverged (then the next cycle starts it with a rewind check).
    StartUnlessDiverged {
        upstream: Option<String>,
    },
    Promote {
        token: crate::decision::LeaseToken,
        decided_on: MonoTime,
    },
}

/// A background action in progress.
#[derive(Debug)]
pub(super) struct Job {
    pub id: u64,
    pub kind: Busy,
    /// Done, but (as in the runner) only collected when the next cycle starts: until
    /// then observations still report the node busy.
    finished: bool,
    steps: VecDeque<JobStep>,
    current: Option<JobStep>,
}

/// One machine: agent, its DCS client, Postgres and the write fence.
#[derive(Debug)]
pub struct Node {
    pub(super) cfg: NodeConfig,
    pub(super) state: LocalState,
    pub(super) dcs: MemoryDcsNode,
    pub(super) pg: SimPg,
    /// Armed fence deadline (a separate process: survives an agent freeze).
    pub(super) fence: Option<MonoTime>,
    pub(super) fence_gen: u64,
    /// Bumped when the machine crashes: events of the previous agent are void.
    pub(super) epoch: u64,
    pub(super) frozen: bool,
    pub(super) freeze_gen: u64,
    pub(super) down: bool,
    pub(super) down_gen: u64,
    /// Agent events that arrived while frozen.
    pub(super) deferred: Vec<Ev>,
    pub(super) cycle: Option<Cycle>,
    pub(super) job: Option<Job>,
    pub(super) tick_gen: u64,
    next_tick: MonoTime,
    wake_pending: bool,
    /// The lease end this agent counts on (its last `lease_until`, cut short by a
    /// release): what invariant (b) and (e) hold it to.
    pub(super) horizon: Option<MonoTime>,
    /// Bootstrapped Postgres that has not yet been covered by a lease: initdb starts
    /// it as a primary before the race for the leader key (the `initialize` key keeps
    /// everyone else out meanwhile). Exempt from (b) until the first lease or a stop.
    pub(super) fresh_bootstrap: bool,
    /// The horizon was last set by a failsafe extension (not backed by the DCS key).
    pub(super) failsafe_horizon: bool,
    /// The agent's record of `POST /failsafe` calls (in memory: lost on a crash).
    pub(super) failsafe: crate::runner::failsafe::FailsafeGate,
    /// The leader key as this agent's latest successful read showed it (as the
    /// runner keeps it for its jobs' fencing check).
    pub(super) leader_seen: Option<crate::runner::guard::LeaderKeySeen>,
    /// When this agent's latest confirmed acquire or renewal was sent.
    pub(super) renewed_at: Option<MonoTime>,
    pub(super) cycles: u64,
}

impl Node {
    pub(super) fn new(
        i: usize,
        keys: &ClusterKeys,
        timing: DcsTiming,
        config: &DynamicConfig,
    ) -> Node {
        let name = format!("n{i}");
        let mut cfg = NodeConfig::named(&name);
        cfg.api_url = Some(format!("http://10.0.0.{}:8008/patroni", i + 1));
        cfg.conn_url = Some(format!("postgres://10.0.0.{}:5432/postgres", i + 1));
        cfg.bootstrap_config = config.clone();
        cfg.fence_margin = Duration::from_millis(300);
        cfg.hung_grace = Duration::from_millis(1500);
        cfg.version = "sim".into();
        Node {
            dcs: MemoryDcsNode::new(keys.clone(), name, timing),
            cfg,
            state: LocalState::default(),
            pg: SimPg::empty(),
            fence: None,
            fence_gen: 0,
            epoch: 0,
            frozen: false,
            freeze_gen: 0,
            down: false,
            down_gen: 0,
            deferred: Vec::new(),
            cycle: None,
            job: None,
            tick_gen: 0,
            next_tick: MonoTime::default(),
            wake_pending: false,
            horizon: None,
            fresh_bootstrap: false,
            failsafe_horizon: false,
            failsafe: Default::default(),
            leader_seen: None,
            renewed_at: None,
            cycles: 0,
        }
    }

    fn dynamic_config(&self) -> &DynamicConfig {
        self.state
            .config
            .as_ref()
            .unwrap_or(&self.cfg.bootstrap_config)
    }

    pub(super) fn retry_timeout(&self) -> Duration {
        self.dynamic_config().retry_timeout()
    }

    fn loop_wait(&self) -> Duration {
        self.dynamic_config().loop_wait()
    }
}

/// A one-word rendering of an action for the trace.
fn short(a: &Action) -> String {
    let ms = |t: MonoTime| format!("{}.{:03}s", t.as_millis() / 1000, t.as_millis() % 1000);
    let up = |u: &Option<crate::postgres::Upstream>| {
        u.as_ref().map_or("none".to_string(), |u| u.name.clone())
    };
    match a {
        Action::AcquireLease => "AcquireLease".into(),
        Action::RenewLease { .. } => "RenewLease".into(),
        Action::ReleaseLease => "ReleaseLease".into(),
        Action::ProbePeers { names, .. } => format!("ProbePeers({})", names.join(",")),
        Action::ClaimInitialize => "ClaimInitialize".into(),
        Action::WriteInitialize { .. } => "WriteInitialize".into(),
        Action::CancelInitialize => "CancelInitialize".into(),
        Action::PublishMember(_) => "PublishMember".into(),
        Action::WriteConfig { .. } => "WriteConfig".into(),
        Action::ClearFailover { .. } => "ClearFailover".into(),
        Action::WriteStatus(_) => "WriteStatus".into(),
        Action::WriteHistory(_) => "WriteHistory".into(),
        Action::WriteFailsafe(_) => "WriteFailsafe".into(),
        Action::CheckFailsafe { .. } => "CheckFailsafe".into(),
        Action::ArmFence { deadline, .. } => format!("ArmFence({})", ms(*deadline)),
        Action::DisarmFence => "DisarmFence".into(),
        Action::Bootstrap => "Bootstrap".into(),
        Action::CloneReplica { source, follow } => {
            format!("CloneReplica({}, follow {})", source.name, up(follow))
        }
        Action::RestoreReplica => "RestoreReplica".into(),
        Action::StartPrimary { token } => format!("StartPrimary(token {})", ms(token.valid_until)),
        Action::StartReplica { upstream, rewind } => {
            format!("StartReplica({}, rewind={rewind})", up(upstream))
        }
        Action::Promote { token } => format!("Promote(token {})", ms(token.valid_until)),
        Action::Demote { mode, upstream } => {
            format!("Demote({mode:?}, then follow {})", up(upstream))
        }
        Action::SwitchoverTo { candidate, .. } => format!("SwitchoverTo({})", candidate.name),
        Action::Restart { token, upstream } => match token {
            Some(t) => format!("Restart(primary, token {})", ms(t.valid_until)),
            None => format!("Restart(replica of {})", up(upstream)),
        },
        Action::Reinitialize { source, follow } => {
            format!("Reinitialize({}, follow {})", source.name, up(follow))
        }
        Action::Follow { upstream } => format!("Follow({})", up(upstream)),
        Action::StopPostgres { mode } => format!("StopPostgres({mode:?})"),
        Action::ManageSlots(_) => "ManageSlots".into(),
        Action::CancelBackground => "CancelBackground".into(),
        Action::CopyLogicalSlots { .. } => "CopyLogicalSlots".into(),
        Action::WriteSync { sync, .. } => format!("WriteSync({:?})", sync.sync_standby),
        Action::DeleteSync { .. } => "DeleteSync".into(),
        Action::SetSynchronousStandbyNames { value } => {
            format!("SetSynchronousStandbyNames({value:?})")
        }
    }
}

fn action_code(a: &Action) -> u64 {
    match a {
        Action::AcquireLease => 1,
        Action::RenewLease { .. } => 2,
        Action::ReleaseLease => 3,
        Action::ProbePeers { .. } => 4,
        Action::ClaimInitialize => 5,
        Action::WriteInitialize { .. } => 6,
        Action::CancelInitialize => 7,
        Action::PublishMember(_) => 8,
        Action::WriteConfig { .. } => 9,
        Action::ClearFailover { .. } => 10,
        Action::WriteStatus(_) => 11,
        Action::WriteHistory(_) => 12,
        Action::ArmFence { deadline, .. } => 13 ^ (deadline.0 << 8),
        Action::DisarmFence => 14,
        Action::Bootstrap => 15,
        Action::CloneReplica { .. } => 16,
        Action::StartPrimary { .. } => 17,
        Action::StartReplica { rewind, .. } => 18 + ((*rewind as u64) << 8),
        Action::Promote { .. } => 19,
        Action::Demote { mode, .. } => 20 + ((*mode as u64) << 8),
        Action::Follow { .. } => 21,
        Action::StopPostgres { .. } => 22,
        Action::ManageSlots(_) => 23,
        Action::WriteSync { .. } => 24,
        Action::DeleteSync { .. } => 25,
        Action::SetSynchronousStandbyNames { .. } => 26,
        Action::SwitchoverTo { .. } => 27,
        Action::Restart { token, .. } => 28 + ((token.is_some() as u64) << 8),
        Action::Reinitialize { .. } => 29,
        Action::WriteFailsafe(_) => 30,
        Action::CheckFailsafe { .. } => 31,
        Action::RestoreReplica => 32,
        Action::CopyLogicalSlots { .. } => 33,
        Action::CancelBackground => 34,
    }
}

enum Flow {
    Continue,
    Wait,
}

impl World {
    // ----- actions -----------------------------------------------------------------

    fn wait_on_dcs(&mut self, i: usize, op: DcsOp) -> Flow {
        self.send_dcs(i, op, None);
        Flow::Wait
    }

    /// Runs `action`; `Flow::Wait` when its answer comes back as an event.
    fn execute(&mut self, i: usize, action: &Action) -> Flow {
        match action {
            Action::AcquireLease => self.wait_on_dcs(i, DcsOp::Acquire),
            Action::RenewLease { status } => {
                let op = DcsOp::Renew(status.clone());
                self.wait_on_dcs(i, op)
            }
            Action::ClaimInitialize => self.wait_on_dcs(i, DcsOp::Claim),
            Action::ReleaseLease => {
                self.cut_horizon(i);
                self.wait_on_dcs(i, DcsOp::Release)
            }
            Action::WriteInitialize { system_identifier } => {
                let op = DcsOp::SetInitialize(system_identifier.clone());
                self.wait_on_dcs(i, op)
            }
            Action::CancelInitialize => self.wait_on_dcs(i, DcsOp::CancelInitialize),
            Action::PublishMember(m) => {
                let op = DcsOp::Touch(m.clone());
                self.wait_on_dcs(i, op)
            }
            Action::WriteConfig { config, expected } => {
                let op = DcsOp::SetConfig(config.clone(), *expected);
                self.wait_on_dcs(i, op)
            }
            Action::ClearFailover { expected } => {
                let op = DcsOp::ClearFailover(*expected);
                self.wait_on_dcs(i, op)
            }
            Action::WriteStatus(s) => {
                let op = DcsOp::Status(s.clone());
                self.wait_on_dcs(i, op)
            }
            Action::WriteHistory(h) => {
                let op = DcsOp::History(h.clone());
                self.wait_on_dcs(i, op)
            }
            Action::WriteSync { sync, expected } => {
                let op = DcsOp::WriteSync(sync.clone(), *expected);
                self.wait_on_dcs(i, op)
            }
            Action::DeleteSync { expected } => {
                let op = DcsOp::DeleteSync(*expected);
                self.wait_on_dcs(i, op)
            }
            Action::SetSynchronousStandbyNames { value } => {
                self.nodes[i]
                    .pg
                    .set_synchronous_standby_names(value.clone());
                Flow::Continue
            }
            Action::ProbePeers { names, optional } => {
                let (replies, delay) = self.probe(i, names, optional);
                let epoch = self.nodes[i].epoch;
                self.after(
                    delay,
                    Ev::ProbeReply {
                        node: i,
                        epoch,
                        replies,
                    },
                );
                Flow::Wait
            }
            Action::ArmFence { deadline, .. } => {
                if !self.broken() {
                    let n = &mut self.nodes[i];
                    n.fence = Some(*deadline);
                    n.fence_gen += 1;
                    let gen = n.fence_gen;
                    self.push(*deadline, Ev::Fence { node: i, gen });
                }
                Flow::Continue
            }
            Action::DisarmFence => {
                let n = &mut self.nodes[i];
                n.fence = None;
                n.fence_gen += 1;
                Flow::Continue
            }
            Action::Follow { upstream } => {
                let pg = &mut self.nodes[i].pg;
                if pg.running && pg.role == PgRole::Replica {
                    pg.upstream = upstream.as_ref().map(|u| u.name.clone());
                    pg.streaming = false;
                }
                Flow::Continue
            }
            Action::StopPostgres { mode } => {
                self.stop_pg(i, *mode);
                Flow::Continue
            }
            // Simulated servers have no slots, so nothing is ever copied.
            Action::ManageSlots(_) | Action::CopyLogicalSlots { .. } => Flow::Continue,
            // Operator requests are not simulated.
            Action::CancelBackground => Flow::Continue,
            Action::WriteFailsafe(f) => {
                let op = DcsOp::Failsafe(f.clone());
                self.wait_on_dcs(i, op)
            }
            Action::CheckFailsafe { members, ttl, .. } => {
                let (accepted, delay) = self.failsafe_calls(i, members, *ttl);
                let epoch = self.nodes[i].epoch;
                let sent_at = self.now;
                self.after(
                    delay,
                    Ev::FailsafeReply {
                        node: i,
                        epoch,
                        sent_at,
                        accepted,
                    },
                );
                Flow::Wait
            }
            Action::Bootstrap
            | Action::CloneReplica { .. }
            | Action::RestoreReplica
            | Action::StartPrimary { .. }
            | Action::StartReplica { .. }
            | Action::Promote { .. }
            | Action::Demote { .. }
            | Action::SwitchoverTo { .. }
            | Action::Restart { .. }
            | Action::Reinitialize { .. } => {
                self.start_job(i, action);
                Flow::Continue
            }
        }
    }

    /// From the moment a release is sent, the agent no longer counts on its lease.
    fn cut_horizon(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        n.horizon = n.horizon.map(|h| h.min(now));
    }

    /// `POST /failsafe` from node `i`: answered by a running, unfrozen agent over a
    /// working link whose failsafe mode is on, whose Postgres is not writable and that
    /// is not claiming the lease itself; it records `i` as its leader at once.
    fn failsafe_calls(
        &mut self,
        i: usize,
        members: &crate::model::Failsafe,
        ttl: Duration,
    ) -> (Vec<String>, Duration) {
        let caller = self.nodes[i].cfg.name.clone();
        let now = self.now;
        let mut accepted = Vec::new();
        for name in members.keys() {
            let Some(j) = self.index_of(name) else {
                continue;
            };
            let peer = &self.nodes[j];
            if j == i || !self.net.link_up(i, j) || peer.down || peer.frozen {
                continue;
            }
            let dc = peer.dynamic_config();
            let record_for = dc.ttl().max(ttl);
            let forget = self.cfg.breakage == Some(super::Breakage::FailsafeCallsForgotten);
            if dc.failsafe_mode
                && !peer.pg.may_be_writable()
                && (forget || peer.failsafe.accept_call(&caller, now, record_for))
            {
                accepted.push(name.clone());
            }
        }
        let delay = if accepted.len() == members.len() {
            self.rng.millis(1, 10)
        } else {
            PROBE_TIMEOUT
        };
        (accepted, delay)
    }

    /// Peers' `/patroni` answers: only over a working link from a running agent whose
    /// Postgres answers; all probes run at once, a missing answer costs the timeout.
    /// Replies of `names` to node `i`, and when they arrive: at once when every peer
    /// answers, after the probe timeout when a required one does not, after the grace
    /// when only `optional` ones do not (the runner's rule).
    fn probe(
        &mut self,
        i: usize,
        names: &[String],
        optional: &[String],
    ) -> (Vec<PeerStatus>, Duration) {
        let mut all_answered = true;
        let mut required_answered = true;
        let replies = names
            .iter()
            .map(|name| {
                let reply = self.index_of(name).and_then(|j| {
                    let peer = &self.nodes[j];
                    if j == i || !self.net.link_up(i, j) || peer.down || peer.frozen || peer.pg.hung
                    {
                        return None;
                    }
                    // A stopped server reports no WAL position (as Patroni's API).
                    let data = peer.pg.data.as_ref().filter(|_| peer.pg.running);
                    Some(PeerReply {
                        is_primary: peer.pg.accepts_writes(),
                        wal_position: data.map_or(0, |d| d.lsn()),
                        timeline: data.map(|d| d.timeline()),
                        tags: peer.cfg.tags.clone(),
                        watchdog_failed: false,
                    })
                });
                all_answered &= reply.is_some();
                required_answered &= reply.is_some() || optional.contains(name);
                PeerStatus {
                    name: name.clone(),
                    reply,
                }
            })
            .collect();
        let delay = if all_answered {
            self.rng.millis(1, 10)
        } else if required_answered {
            self.rng.millis(1, 10) + crate::decision::OPTIONAL_PEER_GRACE
        } else {
            PROBE_TIMEOUT
        };
        (replies, delay)
    }
}
