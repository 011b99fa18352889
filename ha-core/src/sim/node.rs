//! One simulated node's agent: the real `decide()` driven exactly the way
//! `crate::runner::Runner::cycle` drives it, step by step on the simulated clock —
//! read the cluster (and observe Postgres alongside), decide, check each action with
//! the runner's guard (a refusal ends the cycle and re-reads at once), execute it (DCS
//! requests take time and time out after `retry_timeout`, background actions run as
//! in `runner/jobs.rs` while the loop goes on), feed query outcomes and executed
//! actions back, decide again while `rerun` (at most 8 steps). The next cycle comes
//! `loop_wait` after this one started, earlier at `wake_at`, right away after a
//! refusal, a DCS watch event or the end of a background action.

use super::sim_pg::{PgRole, SimPg};
use super::world::{two, Ev, World};
use crate::clock::MonoTime;
use crate::dcs::{DcsError, DcsTiming};
use crate::decision::{
    decide, Action, Busy, LocalState, NodeConfig, Observation, Outcome, PeerReply, PeerStatus,
};
use crate::memory_dcs::MemoryDcsNode;
use crate::model::{
    Cluster, ClusterKeys, DynamicConfig, History, MemberData, Status, SyncState, Version,
};
use crate::postgres::StopMode;
use crate::runner::guard::{refuse, GuardContext, Refusal};
use std::collections::VecDeque;
use std::time::Duration;

/// Decision steps per cycle at most, as in the runner.
pub const MAX_STEPS: u32 = 8;
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

/// One HA cycle in progress.
#[derive(Debug)]
pub(super) struct Cycle {
    started: MonoTime,
    /// Postgres as observed alongside the cluster read.
    pg: Option<crate::postgres::PgObservation>,
    obs: Option<Observation>,
    queue: VecDeque<Action>,
    rerun: bool,
    reread: bool,
    wake_at: Option<MonoTime>,
    steps: u32,
    waiting: Option<Action>,
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
    /// Refused when the lease token has run out by the time the job starts.
    StartPrimary {
        valid_until: MonoTime,
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
        valid_until: MonoTime,
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
        Action::ProbePeers { names } => format!("ProbePeers({})", names.join(",")),
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
    // ----- scheduling --------------------------------------------------------------

    pub(super) fn schedule_tick(&mut self, i: usize, at: MonoTime) {
        let n = &mut self.nodes[i];
        n.tick_gen += 1;
        n.next_tick = at;
        let ev = Ev::Tick {
            node: i,
            epoch: n.epoch,
            gen: n.tick_gen,
        };
        self.push(at, ev);
    }

    /// A watch event or a finished background action: decide again soon.
    pub(super) fn wake(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.cycle.is_some() {
            n.wake_pending = true;
        } else if n.next_tick > self.now {
            let at = self.now.plus(Duration::from_millis(1));
            self.schedule_tick(i, at);
        }
    }

    // ----- the cycle ---------------------------------------------------------------

    pub(super) fn start_cycle(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.cycle.is_some() {
            n.wake_pending = true;
            return;
        }
        n.cycles += 1;
        if n.job.as_ref().is_some_and(|j| j.finished) {
            n.job = None;
        }
        let pg = self.observe_pg(i);
        let n = &mut self.nodes[i];
        n.cycle = Some(Cycle {
            started: self.now,
            pg: Some(pg),
            obs: None,
            queue: VecDeque::new(),
            rerun: false,
            reread: false,
            wake_at: None,
            steps: 0,
            waiting: None,
        });
        self.send_dcs(i, DcsOp::Read, None);
    }

    pub(super) fn dcs_reply(&mut self, op: u64) {
        let Some(p) = self.ops.remove(&op) else {
            return;
        };
        let i = p.node;
        let result = p
            .result
            .unwrap_or_else(|| Err(DcsError::Unreachable("no answer".into())));
        if let Some(job) = p.job {
            if self.nodes[i].job.as_ref().is_some_and(|j| j.id == job) {
                self.job_next(i);
            }
            return;
        }
        let wall_millis = self.wall_millis();
        let quorum_short = self.cfg.breakage == Some(super::Breakage::QuorumOneVoteShort);
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.as_mut() else {
            return;
        };
        if cyc.obs.is_none() {
            let cluster = match result {
                Ok(DcsVal::Cluster(mut c)) => {
                    if quorum_short {
                        // Broken on purpose: elections count one vote too few.
                        if let Some(s) = c.sync.as_mut().filter(|s| !s.value.is_leader(&n.cfg.name))
                        {
                            s.value.quorum = s.value.quorum.saturating_sub(1);
                        }
                    }
                    Ok(*c)
                }
                Ok(_) => Err(DcsError::Backend("unexpected answer".into())),
                Err(e) => Err(e),
            };
            if let Ok(c) = &cluster {
                // As the runner: a valid changed config reaches the DCS client before
                // any request made on this view, so the lease it asks for matches the
                // ttl decide counts with.
                if let Some(cfg) = c
                    .config
                    .as_ref()
                    .filter(|v| v.value.timing_problems().is_empty())
                {
                    let t = cfg.value.timing();
                    if t != n.dcs.timing() {
                        n.dcs.set_timing(t);
                    }
                }
            }
            let obs = Observation {
                cluster,
                read_at: p.sent_at,
                pg: cyc.pg.take().unwrap_or_else(|| n.pg.observe()),
                busy: n.job.as_ref().map(|j| j.kind),
                outcomes: Vec::new(),
                executed: Vec::new(),
                wall_millis,
                request: None,
                watchdog_failed: false,
                failsafe_leader: n.failsafe.called_by(p.sent_at),
                failsafe_slots: Default::default(),
            };
            cyc.obs = Some(obs);
            return self.decide_step(i);
        }
        let action = cyc.waiting.take();
        let outcome = match (&action, result) {
            (Some(Action::AcquireLease), Ok(DcsVal::Flag(true))) => {
                Some(Outcome::LeaseAcquired { sent_at: p.sent_at })
            }
            (Some(Action::AcquireLease), Ok(_)) => Some(Outcome::LeaseTaken),
            (Some(Action::RenewLease { .. }), Ok(DcsVal::Flag(true))) => {
                Some(Outcome::LeaseRenewed { sent_at: p.sent_at })
            }
            (Some(Action::RenewLease { .. }), Ok(_)) => Some(Outcome::LeaseLost),
            (Some(Action::AcquireLease | Action::RenewLease { .. }), Err(e)) => {
                Some(Outcome::LeaseError(e))
            }
            (Some(Action::ClaimInitialize), Ok(DcsVal::Flag(true))) => Some(Outcome::InitializeWon),
            (Some(Action::ClaimInitialize), _) => Some(Outcome::InitializeLost),
            (Some(Action::WriteSync { .. }), r) => Some(Outcome::SyncWritten {
                ok: matches!(r, Ok(DcsVal::Flag(true))),
            }),
            // Probes and failsafe calls answer through their own events; the rest
            // are not queries and feed nothing back.
            (
                None
                | Some(
                    Action::ProbePeers { .. }
                    | Action::CheckFailsafe { .. }
                    | Action::ReleaseLease
                    | Action::WriteInitialize { .. }
                    | Action::CancelInitialize
                    | Action::PublishMember(_)
                    | Action::WriteConfig { .. }
                    | Action::ClearFailover { .. }
                    | Action::WriteStatus(_)
                    | Action::WriteHistory(_)
                    | Action::WriteFailsafe(_)
                    | Action::DeleteSync { .. }
                    | Action::SetSynchronousStandbyNames { .. }
                    | Action::ArmFence { .. }
                    | Action::DisarmFence
                    | Action::Bootstrap
                    | Action::CloneReplica { .. }
                    | Action::RestoreReplica
                    | Action::StartPrimary { .. }
                    | Action::StartReplica { .. }
                    | Action::Promote { .. }
                    | Action::Demote { .. }
                    | Action::SwitchoverTo { .. }
                    | Action::Restart { .. }
                    | Action::Reinitialize { .. }
                    | Action::Follow { .. }
                    | Action::StopPostgres { .. }
                    | Action::CancelBackground
                    | Action::ManageSlots(_)
                    | Action::CopyLogicalSlots { .. },
                ),
                _,
            ) => None,
        };
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes.extend(outcome);
            if let Some(a) = action.filter(|a| !a.is_query()) {
                obs.executed.push(a);
            }
        }
        self.proceed(i);
    }

    pub(super) fn failsafe_reply(&mut self, i: usize, sent_at: MonoTime, accepted: Vec<String>) {
        let Some(cyc) = self.nodes[i].cycle.as_mut() else {
            return;
        };
        cyc.waiting = None;
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes
                .push(Outcome::FailsafeChecked { sent_at, accepted });
        }
        self.proceed(i);
    }

    pub(super) fn probe_reply(&mut self, i: usize, replies: Vec<PeerStatus>) {
        let Some(cyc) = self.nodes[i].cycle.as_mut() else {
            return;
        };
        cyc.waiting = None;
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes.push(Outcome::PeersProbed(replies));
        }
        self.proceed(i);
    }

    fn decide_step(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.as_mut() else {
            return;
        };
        let Some(obs) = cyc.obs.as_ref() else {
            return;
        };
        let d = decide(&n.cfg, &n.state, obs, now);
        let before = n.state.lease_until;
        n.state = d.state;
        cyc.queue = d.actions.into();
        cyc.rerun = d.rerun;
        cyc.reread |= d.reread;
        cyc.wake_at = d.wake_at;
        cyc.steps += 1;
        let lease = n.state.lease_until;
        // Only a new lease end (a successful acquire/renew) moves the horizon: a stale
        // `lease_until` kept in memory after a release does not revive it.
        if let Some(t) = lease.filter(|t| before != Some(*t)) {
            n.horizon = Some(t);
            n.fresh_bootstrap = false;
            n.failsafe_horizon = n.state.failsafe_active;
            if n.state.failsafe_active {
                self.failsafe_keeps += 1;
            }
        }
        if self.trace.enabled() {
            let text = self.describe_step(i, lease);
            self.trace.note(now, Some(i), 100, || text);
        } else {
            let n = &self.nodes[i];
            let mut code = super::trace::code_of(&n.state.message);
            if let Some(cyc) = n.cycle.as_ref() {
                for a in &cyc.queue {
                    code = code.rotate_left(7) ^ action_code(a);
                }
            }
            self.trace.note(now, Some(i), code, String::new);
        }
        if let Some(t) = lease {
            self.push(t, Ev::Check);
        }
        self.proceed(i);
    }

    fn describe_step(&self, i: usize, lease: Option<MonoTime>) -> String {
        let n = &self.nodes[i];
        let Some(cyc) = n.cycle.as_ref() else {
            return String::new();
        };
        let acts: Vec<String> = cyc.queue.iter().map(short).collect();
        let pg = cyc.obs.as_ref().map(|o| &o.pg);
        let pg_desc = match pg {
            None => String::new(),
            Some(o) => format!(
                "{:?}{}{} lsn={}",
                o.process,
                match o.in_recovery {
                    Some(true) => " replica",
                    Some(false) => " primary",
                    None => "",
                },
                o.timeline.map_or(String::new(), |t| format!(" tl{t}")),
                o.wal_position()
            ),
        };
        let dcs = match cyc.obs.as_ref().map(|o| &o.cluster) {
            Some(Ok(c)) => format!(
                "leader={}",
                c.leader.as_ref().map_or("-", |l| l.name.as_str())
            ),
            Some(Err(_)) => "dcs=ERR".to_string(),
            None => String::new(),
        };
        let lease_s = lease.map_or("-".to_string(), |t| {
            format!("{}.{:03}s", t.as_millis() / 1000, t.as_millis() % 1000)
        });
        format!(
            "decide#{} [{dcs} pg={pg_desc} lease={lease_s}] {} -> [{}]",
            cyc.steps,
            n.state.message,
            acts.join(", ")
        )
    }

    fn proceed(&mut self, i: usize) {
        loop {
            let n = &mut self.nodes[i];
            let retry = n.retry_timeout();
            let lease_until = n.state.lease_until;
            let Some(cyc) = n.cycle.as_mut() else {
                return;
            };
            let Some(action) = cyc.queue.pop_front() else {
                if cyc.rerun && cyc.steps < MAX_STEPS {
                    return self.decide_step(i);
                }
                if cyc.rerun {
                    self.trace.note(self.now, Some(i), 101, || {
                        "step limit reached; cycle ends".into()
                    });
                }
                return self.end_cycle(i, false);
            };
            let ctx = GuardContext {
                now: self.now,
                read_at: cyc.obs.as_ref().map_or(self.now, |o| o.read_at),
                lease_until,
                max_view_age: retry + Duration::from_millis(500),
            };
            let mut refusal = refuse(&action, &ctx);
            if self.broken() && refusal == Some(Refusal::LeaseExpired) {
                refusal = None;
            }
            if let Some(r) = refusal {
                let a = short(&action);
                self.trace.note(self.now, Some(i), 102 + r as u64, || {
                    format!("guard refused {a}: {r}; re-reading the cluster")
                });
                return self.end_cycle(i, true);
            }
            // As the runner: a failsafe call accepted since the read keeps the node out.
            if matches!(action, Action::AcquireLease) && !self.nodes[i].failsafe.claim(self.now) {
                self.trace.note(self.now, Some(i), 109, || {
                    "refused AcquireLease: a failsafe leader called within ttl".into()
                });
                return self.end_cycle(i, true);
            }
            if self.cfg.record_actions {
                let ms = self.now.as_millis();
                let line = format!("{}.{:03}s {action}", ms / 1000, ms % 1000);
                self.executed[i].push(line);
            }
            let record = (!action.is_query()).then(|| action.clone());
            match self.execute(i, action) {
                Flow::Wait => return,
                Flow::Continue => {
                    if let Some(obs) = self.nodes[i].cycle.as_mut().and_then(|c| c.obs.as_mut()) {
                        obs.executed.extend(record);
                    }
                }
            }
        }
    }

    fn end_cycle(&mut self, i: usize, refused: bool) {
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.take() else {
            return;
        };
        let mut next = cyc.started.plus(n.loop_wait());
        if let Some(w) = cyc.wake_at {
            next = next.min(w);
        }
        if refused || cyc.reread || n.wake_pending {
            next = self.now;
        }
        n.wake_pending = false;
        n.failsafe.settle(n.state.lease_until.is_some());
        // A cycle takes at least a millisecond, so a decision that keeps asking to run
        // again cannot stall simulated time.
        let next = next.max(self.now.plus(Duration::from_millis(1)));
        self.schedule_tick(i, next);
    }

    // ----- actions -----------------------------------------------------------------

    fn wait_on_dcs(&mut self, i: usize, op: DcsOp, action: Action) -> Flow {
        if let Some(cyc) = self.nodes[i].cycle.as_mut() {
            cyc.waiting = Some(action);
        }
        self.send_dcs(i, op, None);
        Flow::Wait
    }

    fn execute(&mut self, i: usize, action: Action) -> Flow {
        match &action {
            Action::AcquireLease => self.wait_on_dcs(i, DcsOp::Acquire, action),
            Action::RenewLease { status } => {
                let op = DcsOp::Renew(status.clone());
                self.wait_on_dcs(i, op, action)
            }
            Action::ClaimInitialize => self.wait_on_dcs(i, DcsOp::Claim, action),
            Action::ReleaseLease => {
                self.cut_horizon(i);
                self.wait_on_dcs(i, DcsOp::Release, action)
            }
            Action::WriteInitialize { system_identifier } => {
                let op = DcsOp::SetInitialize(system_identifier.clone());
                self.wait_on_dcs(i, op, action)
            }
            Action::CancelInitialize => self.wait_on_dcs(i, DcsOp::CancelInitialize, action),
            Action::PublishMember(m) => {
                let op = DcsOp::Touch(m.clone());
                self.wait_on_dcs(i, op, action)
            }
            Action::WriteConfig { config, expected } => {
                let op = DcsOp::SetConfig(config.clone(), *expected);
                self.wait_on_dcs(i, op, action)
            }
            Action::ClearFailover { expected } => {
                let op = DcsOp::ClearFailover(*expected);
                self.wait_on_dcs(i, op, action)
            }
            Action::WriteStatus(s) => {
                let op = DcsOp::Status(s.clone());
                self.wait_on_dcs(i, op, action)
            }
            Action::WriteHistory(h) => {
                let op = DcsOp::History(h.clone());
                self.wait_on_dcs(i, op, action)
            }
            Action::WriteSync { sync, expected } => {
                let op = DcsOp::WriteSync(sync.clone(), *expected);
                self.wait_on_dcs(i, op, action)
            }
            Action::DeleteSync { expected } => {
                let op = DcsOp::DeleteSync(*expected);
                self.wait_on_dcs(i, op, action)
            }
            Action::SetSynchronousStandbyNames { value } => {
                self.nodes[i]
                    .pg
                    .set_synchronous_standby_names(value.clone());
                Flow::Continue
            }
            Action::ProbePeers { names } => {
                let (replies, delay) = self.probe(i, names);
                if let Some(cyc) = self.nodes[i].cycle.as_mut() {
                    cyc.waiting = Some(action);
                }
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
                self.wait_on_dcs(i, op, action)
            }
            Action::CheckFailsafe { members, ttl, .. } => {
                let (accepted, delay) = self.failsafe_calls(i, members, *ttl);
                if let Some(cyc) = self.nodes[i].cycle.as_mut() {
                    cyc.waiting = Some(action);
                }
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
                self.start_job(i, &action);
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
    fn probe(&mut self, i: usize, names: &[String]) -> (Vec<PeerStatus>, Duration) {
        let mut all_answered = true;
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
                PeerStatus {
                    name: name.clone(),
                    reply,
                }
            })
            .collect();
        let delay = if all_answered {
            self.rng.millis(1, 10)
        } else {
            PROBE_TIMEOUT
        };
        (replies, delay)
    }

    // ----- background jobs (runner/jobs.rs) ------------------------------------------

    fn start_job(&mut self, i: usize, action: &Action) {
        if let Some(j) = &self.nodes[i].job {
            let (a, busy) = (short(action), j.kind.describe());
            self.trace.note(self.now, Some(i), 110, || {
                format!("{a} skipped: {busy} still running")
            });
            return;
        }
        let name = |u: &Option<crate::postgres::Upstream>| u.as_ref().map(|u| u.name.clone());
        let steps: Vec<JobStep> = match action {
            Action::Bootstrap => vec![JobStep::Bootstrap],
            Action::CloneReplica { source, follow } => vec![JobStep::Clone {
                source: source.name.clone(),
                follow: name(follow),
            }],
            Action::StartPrimary { token } => vec![JobStep::StartPrimary {
                valid_until: token.valid_until,
            }],
            Action::StartReplica { upstream, rewind } => vec![JobStep::StartReplica {
                upstream: name(upstream),
                rewind: *rewind,
            }],
            Action::Promote { token } => vec![JobStep::Promote {
                valid_until: token.valid_until,
            }],
            Action::Demote { mode, .. } => {
                let mut s = vec![JobStep::Stop(mode.stop_mode())];
                if mode.releases_lease() {
                    s.push(JobStep::Release);
                }
                s
            }
            // The simulated fast stop hands the remaining WAL to connected replicas.
            // The real job additionally waits for the candidate to confirm the
            // shutdown checkpoint (not modelled here).
            Action::SwitchoverTo { candidate, .. } => vec![
                JobStep::Stop(crate::postgres::StopMode::Fast),
                JobStep::Release,
                JobStep::StartUnlessDiverged {
                    upstream: Some(candidate.name.clone()),
                },
            ],
            Action::Restart { token, upstream } => vec![
                JobStep::Stop(crate::postgres::StopMode::Fast),
                match token {
                    Some(t) => JobStep::StartPrimary {
                        valid_until: t.valid_until,
                    },
                    None => JobStep::StartReplica {
                        upstream: name(upstream),
                        rewind: false,
                    },
                },
            ],
            Action::Reinitialize { source, follow } => vec![
                JobStep::Stop(crate::postgres::StopMode::Immediate),
                JobStep::Clone {
                    source: source.name.clone(),
                    follow: name(follow),
                },
            ],
            // Not emitted here: simulated nodes have no `no_leader` replica method and
            // no slots (`execute` skips CopyLogicalSlots).
            Action::RestoreReplica | Action::CopyLogicalSlots { .. } => return,
            // Not background actions: `execute` never starts a job for them.
            Action::AcquireLease
            | Action::RenewLease { .. }
            | Action::ReleaseLease
            | Action::ProbePeers { .. }
            | Action::ClaimInitialize
            | Action::WriteInitialize { .. }
            | Action::CancelInitialize
            | Action::PublishMember(_)
            | Action::WriteConfig { .. }
            | Action::ClearFailover { .. }
            | Action::WriteStatus(_)
            | Action::WriteHistory(_)
            | Action::WriteFailsafe(_)
            | Action::CheckFailsafe { .. }
            | Action::WriteSync { .. }
            | Action::DeleteSync { .. }
            | Action::SetSynchronousStandbyNames { .. }
            | Action::ArmFence { .. }
            | Action::DisarmFence
            | Action::Follow { .. }
            | Action::StopPostgres { .. }
            | Action::CancelBackground
            | Action::ManageSlots(_) => return,
        };
        let Some(kind) = action.busy() else {
            return;
        };
        let id = self.next_job;
        self.next_job += 1;
        self.nodes[i].job = Some(Job {
            id,
            kind,
            finished: false,
            steps: steps.into(),
            current: None,
        });
        self.job_next(i);
    }

    pub(super) fn job_next(&mut self, i: usize) {
        let epoch = self.nodes[i].epoch;
        let Some(job) = self.nodes[i].job.as_mut() else {
            return;
        };
        let id = job.id;
        if job.finished {
            return;
        }
        let Some(step) = job.steps.pop_front() else {
            let kind = job.kind.describe();
            job.finished = true;
            self.trace
                .note(self.now, Some(i), 111, || format!("{kind} finished"));
            return self.wake(i);
        };
        // The runner's own check before it starts a writable-making step.
        let token_end = match &step {
            JobStep::StartPrimary { valid_until } | JobStep::Promote { valid_until } => {
                Some(*valid_until)
            }
            JobStep::Bootstrap
            | JobStep::Clone { .. }
            | JobStep::Stop(_)
            | JobStep::Release
            | JobStep::StartReplica { .. }
            | JobStep::StartUnlessDiverged { .. } => None,
        };
        if token_end.is_some_and(|t| self.now >= t) && !self.broken() {
            self.trace.note(self.now, Some(i), 112, || {
                "background action refused: the lease token expired".into()
            });
            if let Some(job) = self.nodes[i].job.as_mut() {
                job.steps.clear();
            }
            return self.job_next(i);
        }
        if let JobStep::Release = step {
            self.cut_horizon(i);
            return self.send_dcs(i, DcsOp::Release, Some(id));
        }
        let d = match &step {
            JobStep::Stop(StopMode::Immediate) => self.rng.millis(20, 200),
            JobStep::Stop(_) => self.rng.millis(50, 1000),
            JobStep::Bootstrap | JobStep::Clone { .. } => self.rng.millis(200, 2000),
            JobStep::Release
            | JobStep::StartPrimary { .. }
            | JobStep::StartReplica { .. }
            | JobStep::StartUnlessDiverged { .. }
            | JobStep::Promote { .. } => self.rng.millis(50, 1500),
        };
        if let Some(job) = self.nodes[i].job.as_mut() {
            job.current = Some(step);
        }
        self.after(
            d,
            Ev::BgEffect {
                node: i,
                epoch,
                job: id,
            },
        );
    }

    /// A background step's effect on Postgres; happens even if the agent is frozen
    /// meanwhile (the server does its part on its own).
    pub(super) fn bg_effect(&mut self, i: usize, epoch: u64, id: u64) {
        let n = &mut self.nodes[i];
        if n.epoch != epoch {
            return;
        }
        let Some(step) = n
            .job
            .as_mut()
            .filter(|j| j.id == id)
            .and_then(|j| j.current.take())
        else {
            return;
        };
        let text = format!("{step:?}");
        let ok = self.apply_step(i, step);
        self.trace.note(self.now, Some(i), 120 + ok as u64, || {
            format!("pg: {text} {}", if ok { "done" } else { "FAILED" })
        });
        if !ok {
            if let Some(job) = self.nodes[i].job.as_mut() {
                job.steps.clear();
            }
        }
        self.push(
            self.now,
            Ev::BgNext {
                node: i,
                epoch,
                job: id,
            },
        );
    }

    /// Stops Postgres; a clean shutdown of a primary first sends all WAL to the
    /// replicas streaming from it (walsenders finish before the shutdown checkpoint).
    fn stop_pg(&mut self, i: usize, mode: StopMode) {
        let pg = &self.nodes[i].pg;
        if mode != StopMode::Immediate && pg.running && !pg.hung && pg.role == PgRole::Primary {
            let name = self.nodes[i].cfg.name.clone();
            for j in 0..self.nodes.len() {
                let r = &self.nodes[j].pg;
                if j != i
                    && r.running
                    && !r.hung
                    && r.streaming
                    && r.upstream.as_deref() == Some(name.as_str())
                    && self.net.link_up(i, j)
                {
                    let (a, b) = two(&mut self.nodes, j, i);
                    a.pg.replicate_from(b.pg.data.as_ref());
                }
            }
        }
        self.nodes[i].pg.stop(mode);
    }

    /// A node `i` can copy from right now (pg_basebackup, pg_rewind, needs_rewind).
    fn reachable_source(&self, i: usize, name: &str) -> Option<usize> {
        self.index_of(name)
            .filter(|&j| j != i && self.net.link_up(i, j) && self.nodes[j].pg.serves())
    }

    /// Whether node `i`'s WAL may have diverged from `source` (unknown = yes, as the
    /// runner's `needs_rewind(..).unwrap_or(true)`).
    fn needs_rewind(&self, i: usize, source: &str) -> bool {
        match self.reachable_source(i, source) {
            None => true,
            Some(j) => match (&self.nodes[i].pg.data, &self.nodes[j].pg.data) {
                (Some(mine), Some(theirs)) => !mine.is_prefix_of(theirs),
                _ => true,
            },
        }
    }

    fn apply_step(&mut self, i: usize, step: JobStep) -> bool {
        match step {
            JobStep::Bootstrap => {
                let marker = self.new_record_id();
                let sysid = self.system_identifier.clone();
                self.nodes[i].pg.bootstrap(sysid, marker);
                self.nodes[i].fresh_bootstrap = true;
                self.fence_on_writable(i);
                true
            }
            JobStep::Clone { source, follow } => {
                let Some(j) = self.reachable_source(i, &source) else {
                    return false;
                };
                let (a, b) = two(&mut self.nodes, i, j);
                a.pg.data = b.pg.data.clone();
                a.pg.start(PgRole::Replica, follow)
            }
            JobStep::Stop(mode) => {
                self.stop_pg(i, mode);
                true
            }
            JobStep::StartPrimary { .. } => {
                let ok = self.nodes[i].pg.start(PgRole::Primary, None);
                self.fence_on_writable(i);
                ok
            }
            JobStep::StartReplica { upstream, rewind } => {
                if self.nodes[i].pg.data.is_none() {
                    return false;
                }
                if let (true, Some(u)) = (rewind, upstream.as_deref()) {
                    if self.needs_rewind(i, u) {
                        let Some(j) = self.reachable_source(i, u) else {
                            return false; // pg_rewind cannot reach its source
                        };
                        let (a, b) = two(&mut self.nodes, i, j);
                        if let Some(theirs) = b.pg.data.as_ref() {
                            let dropped = a.pg.rewind_to(theirs);
                            self.trace.note(self.now, Some(i), 130, || {
                                format!("pg_rewind from {u}: {dropped} records dropped")
                            });
                        }
                    }
                }
                self.nodes[i].pg.start(PgRole::Replica, upstream)
            }
            JobStep::StartUnlessDiverged { upstream } => {
                if upstream.as_deref().is_some_and(|u| self.needs_rewind(i, u)) {
                    return true; // left stopped: the next cycle starts it with a rewind
                }
                self.nodes[i].pg.start(PgRole::Replica, upstream)
            }
            JobStep::Promote { .. } => {
                let marker = self.new_record_id();
                let ok = self.nodes[i].pg.promote(marker);
                self.fence_on_writable(i);
                if ok {
                    self.check_no_acknowledged_write_lost(i);
                }
                ok
            }
            JobStep::Release => true,
        }
    }
}
