//! The simulated world: an event queue on a fake clock, the DCS store, the nodes, the
//! network, the client, the fault schedule and the invariant checks.

use super::client::{Client, Pending};
use super::invariants::Violation;
use super::network::{pair, Fault, Network, SLOW_STREAM_EVERY};
use super::node::{DcsOp, DcsVal, Node};
use super::rng::SimRng;
use super::sim_pg::{PgRole, WAL_BASE, WAL_UNIT};
use super::trace::Trace;
use super::{liveness_bound, Breakage, SimConfig, SimResult, SimStats};
use crate::clock::MonoTime;
use crate::dcs::DcsError;
use crate::decision::sync::StandbyNames;
use crate::decision::PeerStatus;
use crate::memory_dcs::{MemoryDcsNode, MemoryStore};
use crate::model::{ClusterKeys, DynamicConfig, Failover, SynchronousMode, Version};
use crate::postgres::{PgObservation, ReplicationConnection};
use crate::runner::guard::Refusal;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

mod dcs_side;
mod faults;
mod pg_side;
mod phases;

/// Wall-clock time at simulated instant 0 (2026-01-01T00:00:00Z), for scheduled
/// switchovers.
pub const WALL_BASE_MS: i64 = 1_767_225_600_000;
/// `loop_wait` of every simulated cluster.
pub const LOOP_WAIT_S: u64 = 1;
/// `retry_timeout` of every simulated cluster.
pub const RETRY_TIMEOUT_S: u64 = 1;
/// ttl values a run starts with or switches between (all satisfy
/// `loop_wait + 2·retry_timeout ≤ ttl`).
pub const TTL_CHOICES_S: [u64; 4] = [3, 4, 5, 6];
/// Longest background action (bootstrap, clone, start, promote, stop).
pub const MAX_BACKGROUND_MS: u64 = 2000;
/// How long the converged state must hold before a quiet phase counts as done; a
/// flapping cluster never gets there.
pub const STABLE_MS: u64 = 3000;
/// Replication rounds (a replica's lag is up to this).
const REPLICATE_EVERY_MS: u64 = 100;
/// Phase bookkeeping and convergence checks.
const PHASE_EVERY_MS: u64 = 250;
/// How long a fresh cluster may take to form before the faults start anyway.
pub const SETUP_DEADLINE_MS: u64 = 30_000;

/// One thing that happens at an instant.
#[derive(Debug, Clone)]
pub(super) enum Ev {
    /// Agent: start a cycle (stale when `gen` is not the node's latest).
    Tick { node: usize, epoch: u64, gen: u64 },
    /// DCS side: a request reaches the DCS.
    DcsApply { op: u64 },
    /// Agent: the answer to a request arrives.
    DcsReply { op: u64 },
    /// Agent: peer probes answered (or timed out).
    ProbeReply {
        node: usize,
        epoch: u64,
        replies: Vec<PeerStatus>,
    },
    /// Agent: `POST /failsafe` calls answered (or timed out).
    FailsafeReply {
        node: usize,
        epoch: u64,
        sent_at: MonoTime,
        accepted: Vec<String>,
    },
    /// Postgres side: a background step's effect happens.
    BgEffect { node: usize, epoch: u64, job: u64 },
    /// Agent: continue a background job after a step.
    BgNext { node: usize, epoch: u64, job: u64 },
    /// Agent: a DCS watch notification.
    Wake { node: usize, epoch: u64 },
    /// The write fence's deadline.
    Fence { node: usize, gen: u64 },
    /// A point in time worth an invariant check (a lease end).
    Check,
    /// The leader lease may expire now.
    DcsExpiry,
    /// Replication round.
    Replicate,
    /// The client writes.
    ClientWrite,
    /// Time to inject the next fault.
    FaultTick,
    /// A fault ends.
    Heal(Heal),
    /// A frozen agent resumes.
    Unfreeze { node: usize, gen: u64 },
    /// A crashed machine boots.
    Reboot { node: usize, gen: u64 },
    /// Phase bookkeeping (setup → faults → quiet → done).
    Phase,
    /// An operator deletes the leader key.
    DeleteLeaderKey,
}

/// The end of a fault.
#[derive(Debug, Clone)]
pub(super) enum Heal {
    Dcs(usize),
    Link(usize, usize),
    Outage,
    Slow,
    Unhang(usize),
    Stream(usize),
}

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Setup,
    Faults {
        until: MonoTime,
    },
    Quiet {
        started: MonoTime,
        deadline: MonoTime,
        stable_since: Option<MonoTime>,
    },
    Done,
}

/// A DCS request in flight.
pub(super) struct PendingOp {
    pub node: usize,
    pub epoch: u64,
    pub op: Option<DcsOp>,
    pub sent_at: MonoTime,
    pub latency: Duration,
    pub job: Option<u64>,
    pub result: Option<Result<DcsVal, DcsError>>,
}

/// The whole simulation state of one seed.
pub struct World {
    pub(super) cfg: SimConfig,
    pub(super) seed: u64,
    pub(super) now: MonoTime,
    pub(super) rng: SimRng,
    queue: BTreeMap<(MonoTime, u64), Ev>,
    seq: u64,
    pub(super) store: MemoryStore,
    pub(super) keys: ClusterKeys,
    leader_key: String,
    decision_keys: Vec<String>,
    read_cache: Option<(i64, crate::model::Cluster)>,
    leader_holder: Option<String>,
    leader_expiry: Option<MonoTime>,
    ctl: MemoryDcsNode,
    pub(super) nodes: Vec<Node>,
    pub(super) net: Network,
    pub(super) client: Client,
    pub(super) trace: Trace,
    next_record: u64,
    replicate_rounds: u64,
    pub(super) ops: BTreeMap<u64, PendingOp>,
    pub(super) next_op: u64,
    pub(super) next_job: u64,
    phase: Phase,
    store_changes: u64,
    decision_versions: Vec<Option<Version>>,
    expiry_tick: Option<MonoTime>,
    pub(super) last_writer: Option<usize>,
    pub(super) system_identifier: String,
    pub(super) bootstrap_config: DynamicConfig,
    /// This run uses synchronous replication (fixed for the run, so invariant (c)
    /// applies to every acknowledged write).
    synchronous: bool,
    violation: Option<Violation>,
    events: u64,
    converged_after: Option<Duration>,
    faults: u64,
    pub(super) failsafe_keeps: u64,
    /// Per node, the executed actions (only with `SimConfig::record_actions`).
    pub(super) executed: Vec<Vec<String>>,
}

impl World {
    /// A world for `seed`.
    pub fn new(seed: u64, cfg: SimConfig) -> World {
        let mut rng = SimRng::new(seed);
        let n = rng.between(cfg.min_nodes as u64, cfg.max_nodes as u64) as usize;
        let ttl = TTL_CHOICES_S[rng.index(TTL_CHOICES_S.len())];
        let synchronous = rng.chance(cfg.synchronous_percent) && !cfg.synchronous_modes.is_empty();
        let (mode, strict) = if synchronous {
            cfg.synchronous_modes[rng.index(cfg.synchronous_modes.len())]
        } else {
            (SynchronousMode::Off, false)
        };
        let failsafe = cfg.failsafe_percent > 0 && rng.chance(cfg.failsafe_percent);
        let bootstrap_config = DynamicConfig {
            synchronous_mode: mode,
            synchronous_mode_strict: strict,
            synchronous_node_count: if mode == SynchronousMode::Off {
                1
            } else {
                rng.between(1, 2) as i64
            },
            ttl: ttl as f64,
            loop_wait: LOOP_WAIT_S as f64,
            retry_timeout: RETRY_TIMEOUT_S as f64,
            primary_start_timeout: 10.0,
            failsafe_mode: failsafe,
            ..DynamicConfig::default()
        };
        let keys = ClusterKeys::new("service", "sim");
        let timing = bootstrap_config.timing();
        let nodes = (0..n)
            .map(|i| Node::new(i, &keys, timing, &bootstrap_config))
            .collect();
        let trace = Trace::new(cfg.trace);
        World {
            seed,
            now: MonoTime::from_millis(0),
            rng,
            queue: BTreeMap::new(),
            seq: 0,
            store: MemoryStore::new(),
            leader_key: keys.leader(),
            decision_keys: vec![
                keys.leader(),
                keys.config(),
                keys.failover(),
                keys.sync(),
                keys.initialize(),
            ],
            read_cache: None,
            leader_holder: None,
            leader_expiry: None,
            ctl: MemoryDcsNode::new(keys.clone(), "ctl", timing),
            keys,
            nodes,
            net: Network::default(),
            client: Client::default(),
            trace,
            next_record: 1,
            replicate_rounds: 0,
            ops: BTreeMap::new(),
            next_op: 1,
            next_job: 1,
            phase: Phase::Setup,
            store_changes: 0,
            decision_versions: Vec::new(),
            expiry_tick: None,
            last_writer: None,
            system_identifier: format!("73{:017}", seed % 100_000_000_000_000_000),
            bootstrap_config,
            synchronous,
            violation: None,
            events: 0,
            converged_after: None,
            faults: 0,
            failsafe_keeps: 0,
            executed: vec![Vec::new(); n],
            cfg,
        }
    }

    /// Runs to the end (or the first violation).
    pub fn run(mut self) -> SimResult {
        let n = self.nodes.len();
        let ttl = self.bootstrap_config.ttl;
        let c = &self.bootstrap_config;
        let mode = format!(
            "synchronous_mode {:?}{} (node count {})",
            c.synchronous_mode,
            if c.synchronous_mode_strict {
                " strict"
            } else {
                ""
            },
            c.synchronous_node_count
        );
        self.trace.note(self.now, None, 1, || {
            format!("start: {n} nodes, {mode}, ttl {ttl}s, loop_wait {LOOP_WAIT_S}s, retry_timeout {RETRY_TIMEOUT_S}s")
        });
        for i in 0..n {
            let at = self.now.plus(self.rng.millis(0, LOOP_WAIT_S * 1000));
            self.schedule_tick(i, at);
        }
        self.push(self.now.plus(Duration::from_millis(50)), Ev::Replicate);
        self.push(self.now.plus(Duration::from_millis(20)), Ev::ClientWrite);
        self.push(self.now.plus(Duration::from_millis(100)), Ev::Phase);
        let hard_end = MonoTime::from_millis(
            SETUP_DEADLINE_MS
                + self.cfg.fault_phase_ms.1
                + liveness_bound().as_millis() as u64
                + 10_000,
        );
        while let Some(((t, _), ev)) = self.queue.pop_first() {
            if t > hard_end {
                self.violation = Some(Violation::NoConvergence {
                    at_ms: t.as_millis(),
                    phase: "any",
                    why: "the run did not finish in time".into(),
                });
                break;
            }
            self.now = t;
            self.events += 1;
            self.handle(ev);
            self.after_event();
            if self.violation.is_some() || self.phase == Phase::Done {
                break;
            }
        }
        self.finish()
    }

    fn finish(mut self) -> SimResult {
        let leader = self.leader_name().and_then(|l| self.index_of(&l));
        let lost = match leader.and_then(|l| self.nodes[l].pg.data.as_ref()) {
            Some(d) => {
                let have: BTreeSet<u64> = d.wal.iter().map(|e| e.id).collect();
                self.client
                    .acked
                    .iter()
                    .filter(|a| !have.contains(&a.id))
                    .count()
            }
            None => 0,
        };
        if let Some(v) = &self.violation {
            let text = v.to_string();
            self.trace
                .note(self.now, None, 2, || format!("VIOLATION {text}"));
        }
        SimResult {
            seed: self.seed,
            nodes: self.nodes.len(),
            violation: self.violation,
            stats: SimStats {
                sim_ms: self.now.as_millis(),
                events: self.events,
                cycles: self.nodes.iter().map(|n| n.cycles).sum(),
                faults: self.faults,
                acked_writes: self.client.acked.len(),
                synchronous_acks: self.client.acked.iter().filter(|a| a.synchronous).count(),
                synchronous: self.synchronous,
                lost_acked_writes: lost,
                converged_after_ms: self.converged_after.map(|d| d.as_millis() as u64),
                failsafe_keeps: self.failsafe_keeps,
            },
            trace_hash: self.trace.hash(),
            trace: self.trace.into_lines(),
            actions: self.executed,
        }
    }

    // ----- queue -------------------------------------------------------------------

    pub(super) fn push(&mut self, at: MonoTime, ev: Ev) {
        self.seq += 1;
        self.queue.insert((at.max(self.now), self.seq), ev);
    }

    pub(super) fn after(&mut self, d: Duration, ev: Ev) {
        self.push(self.now.plus(d), ev);
    }

    pub(super) fn new_record_id(&mut self) -> u64 {
        self.next_record += 1;
        self.next_record
    }

    pub(super) fn wall_millis(&self) -> i64 {
        WALL_BASE_MS + self.now.as_millis() as i64
    }

    pub(super) fn broken(&self) -> bool {
        self.cfg.breakage == Some(Breakage::NoFenceNoLeaseGuard)
    }

    /// Whether faults are being injected now.
    pub(super) fn in_fault_phase(&self) -> bool {
        matches!(self.phase, Phase::Faults { .. })
    }

    /// Whether a breakage switches off the runner's refusal `r`.
    /// The guard refusals the broken rules disregard, for the cycle.
    pub(super) fn ignored_refusals(&self) -> &'static [Refusal] {
        match self.cfg.breakage {
            Some(Breakage::NoFenceNoLeaseGuard) => &[Refusal::LeaseExpired],
            Some(Breakage::LeaderVersionIgnored) => &[Refusal::LeaderChanged],
            Some(
                Breakage::AckWithoutStandbys
                | Breakage::QuorumOneVoteShort
                | Breakage::FailsafeCallsForgotten,
            )
            | None => &[],
        }
    }

    pub(super) fn ignores(&self, r: Refusal) -> bool {
        self.ignored_refusals().contains(&r)
    }

    pub(super) fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.cfg.name == name)
    }

    /// Who holds the leader key right now.
    fn leader_name(&mut self) -> Option<String> {
        self.sync_dcs();
        self.leader_holder.clone()
    }

    // ----- dispatch ----------------------------------------------------------------

    /// The node and epoch of events the agent process handles itself (they wait while
    /// it is frozen and vanish when it crashed).
    fn agent_of(&self, ev: &Ev) -> Option<(usize, u64)> {
        match ev {
            Ev::Tick { node, epoch, .. }
            | Ev::ProbeReply { node, epoch, .. }
            | Ev::FailsafeReply { node, epoch, .. }
            | Ev::BgNext { node, epoch, .. }
            | Ev::Wake { node, epoch } => Some((*node, *epoch)),
            Ev::DcsReply { op } => self.ops.get(op).map(|p| (p.node, p.epoch)),
            Ev::DcsApply { .. }
            | Ev::BgEffect { .. }
            | Ev::Fence { .. }
            | Ev::Check
            | Ev::DcsExpiry
            | Ev::Replicate
            | Ev::ClientWrite
            | Ev::FaultTick
            | Ev::Heal(_)
            | Ev::Unfreeze { .. }
            | Ev::Reboot { .. }
            | Ev::Phase
            | Ev::DeleteLeaderKey => None,
        }
    }

    fn handle(&mut self, ev: Ev) {
        if let Some((i, epoch)) = self.agent_of(&ev) {
            let n = &mut self.nodes[i];
            if n.down || n.epoch != epoch {
                if let Ev::DcsReply { op } = ev {
                    self.ops.remove(&op);
                }
                return;
            }
            if n.frozen {
                n.deferred.push(ev);
                return;
            }
        }
        match ev {
            Ev::Tick { node, gen, .. } => {
                if self.nodes[node].tick_gen == gen {
                    self.start_cycle(node);
                }
            }
            Ev::DcsApply { op } => self.dcs_apply(op),
            Ev::DcsReply { op } => self.dcs_reply(op),
            Ev::ProbeReply { node, replies, .. } => self.probe_reply(node, replies),
            Ev::FailsafeReply {
                node,
                sent_at,
                accepted,
                ..
            } => self.failsafe_reply(node, sent_at, accepted),
            Ev::BgEffect { node, epoch, job } => self.bg_effect(node, epoch, job),
            Ev::BgNext { node, job, .. } => {
                if self.nodes[node].job.as_ref().is_some_and(|j| j.id == job) {
                    self.job_next(node);
                }
            }
            Ev::Wake { node, .. } => self.wake(node),
            Ev::Fence { node, gen } => self.fence_fires(node, gen),
            Ev::Check => {}
            Ev::DcsExpiry => {
                self.expiry_tick = None;
            }
            Ev::Replicate => {
                self.replicate();
                self.acknowledge_synchronous();
                self.after(Duration::from_millis(REPLICATE_EVERY_MS), Ev::Replicate);
            }
            Ev::ClientWrite => {
                self.client_write();
                let d = self.rng.millis(40, 120);
                self.after(d, Ev::ClientWrite);
            }
            Ev::FaultTick => self.fault_tick(),
            Ev::Heal(h) => self.heal(h),
            Ev::Unfreeze { node, gen } => {
                if self.nodes[node].frozen && self.nodes[node].freeze_gen == gen {
                    self.unfreeze(node);
                }
            }
            Ev::Reboot { node, gen } => {
                if self.nodes[node].down && self.nodes[node].down_gen == gen {
                    self.reboot(node);
                }
            }
            Ev::Phase => self.phase_step(),
            Ev::DeleteLeaderKey => {
                let key = self.leader_key.clone();
                if self.store.delete(self.now, &key) {
                    self.trace.note(self.now, None, 130, || {
                        "operator deleted the leader key".into()
                    });
                }
            }
        }
    }
}

/// `&mut nodes[i]` and `&nodes[j]` at once (`i != j`).
pub(super) fn two(nodes: &mut [Node], i: usize, j: usize) -> (&mut Node, &Node) {
    if i < j {
        let (l, r) = nodes.split_at_mut(j);
        (&mut l[i], &r[0])
    } else {
        let (l, r) = nodes.split_at_mut(i);
        (&mut r[0], &l[j])
    }
}
