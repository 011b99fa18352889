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
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

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
            | Ev::Phase => None,
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
        }
    }

    // ----- DCS side ----------------------------------------------------------------

    /// Expires leases due now, wakes watchers when a decision key changed, keeps the
    /// expiry tick of the leader lease scheduled.
    fn sync_dcs(&mut self) {
        // Nothing to do unless the key space changed or the leader lease may be due:
        // this runs after every event, so it must be cheap.
        let due = self.leader_expiry.is_some_and(|e| self.now >= e);
        if !due && self.store.changes() == self.store_changes {
            self.last_writer = None;
            return;
        }
        self.store.expire_now(self.now);
        if self.store.changes() != self.store_changes {
            self.store_changes = self.store.changes();
            let versions: Vec<Option<Version>> = self
                .decision_keys
                .iter()
                .map(|k| self.store.peek_version(k))
                .collect();
            if versions != self.decision_versions {
                self.decision_versions = versions;
                self.notify_watchers();
            }
        }
        self.last_writer = None;
        let entry = self.store.get(self.now, &self.leader_key);
        self.leader_expiry = entry
            .as_ref()
            .and_then(|e| e.lease)
            .and_then(|l| self.store.lease(self.now, l))
            .map(|l| l.expiry);
        self.leader_holder = entry.map(|e| e.value);
        if let Some(e) = self.leader_expiry {
            if self.expiry_tick.is_none_or(|t| t != e) {
                self.expiry_tick = Some(e);
                self.push(e, Ev::DcsExpiry);
            }
        }
    }

    fn notify_watchers(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if Some(i) == self.last_writer || n.down || !self.net.dcs_reachable(i) {
                continue;
            }
            let epoch = n.epoch;
            let d = self.rng.millis(5, 20);
            self.after(d, Ev::Wake { node: i, epoch });
        }
    }

    /// Sends a request from node `i`; its answer comes back as `DcsReply`.
    pub(super) fn send_dcs(&mut self, i: usize, op: DcsOp, job: Option<u64>) {
        let id = self.next_op;
        self.next_op += 1;
        let retry = self.nodes[i].retry_timeout();
        let retry_ms = retry.as_millis() as u64;
        let mut p = PendingOp {
            node: i,
            epoch: self.nodes[i].epoch,
            op: Some(op),
            sent_at: self.now,
            latency: Duration::ZERO,
            job,
            result: None,
        };
        if !self.net.dcs_reachable(i) {
            p.result = Some(Err(DcsError::Unreachable("no route to the DCS".into())));
            let d = self.rng.millis(retry_ms / 4, retry_ms);
            self.ops.insert(id, p);
            self.after(d, Ev::DcsReply { op: id });
            return;
        }
        p.latency = if self.net.dcs_slow {
            self.rng.millis(retry_ms / 5, retry_ms * 3 / 2)
        } else {
            self.rng.millis(1, 8)
        };
        let apply_in = p.latency / 2;
        self.ops.insert(id, p);
        self.after(apply_in, Ev::DcsApply { op: id });
    }

    fn dcs_apply(&mut self, id: u64) {
        let Some(p) = self.ops.get_mut(&id) else {
            return;
        };
        let (i, epoch) = (p.node, p.epoch);
        let retry = self.nodes[i].retry_timeout();
        if self.nodes[i].epoch != epoch {
            self.ops.remove(&id);
            return;
        }
        let timed_out_at = p.sent_at.plus(retry);
        if !self.net.dcs_reachable(i) {
            p.result = Some(Err(DcsError::Unreachable("request lost".into())));
            self.push(timed_out_at, Ev::DcsReply { op: id });
            return;
        }
        let op = p.op.take();
        let (latency, sent_at) = (p.latency, p.sent_at);
        let Some(op) = op else { return };
        let val = self.apply_op(i, op);
        self.last_writer = Some(i);
        let (result, at) = if latency > retry {
            (
                Err(DcsError::Unreachable("request timed out".into())),
                timed_out_at,
            )
        } else {
            (Ok(val), sent_at.plus(latency))
        };
        if let Some(p) = self.ops.get_mut(&id) {
            p.result = Some(result);
        }
        self.push(at, Ev::DcsReply { op: id });
    }

    fn apply_op(&mut self, i: usize, op: DcsOp) -> DcsVal {
        let now = self.now;
        let s = &mut self.store;
        let d = &mut self.nodes[i].dcs;
        match op {
            DcsOp::Read => {
                // Parsing the prefix dominates the run time in debug builds; a read at
                // the same store revision (nothing written or expired since) returns
                // the same view, so it is parsed once.
                s.expire_now(now);
                let rev = s.revision();
                match &self.read_cache {
                    Some((r, c)) if *r == rev => DcsVal::Cluster(Box::new(c.clone())),
                    _ => {
                        let c = d.get_cluster(s, now);
                        self.read_cache = Some((rev, c.clone()));
                        DcsVal::Cluster(Box::new(c))
                    }
                }
            }
            DcsOp::Acquire => DcsVal::Flag(d.acquire_leader(s, now)),
            DcsOp::Renew(None) => DcsVal::Flag(d.renew_leader(s, now)),
            DcsOp::Renew(Some(st)) => DcsVal::Flag(d.renew_leader_with_status(s, now, &st)),
            DcsOp::Release => DcsVal::Flag(d.release_leader(s, now)),
            DcsOp::Claim => DcsVal::Flag(d.initialize(s, now, "")),
            DcsOp::SetInitialize(v) => {
                d.set_initialize(s, now, &v);
                DcsVal::Done
            }
            DcsOp::CancelInitialize => {
                d.cancel_initialization(s, now);
                DcsVal::Done
            }
            DcsOp::Touch(m) => {
                d.touch_member(s, now, &m);
                DcsVal::Done
            }
            DcsOp::SetConfig(c, v) => DcsVal::Flag(d.set_config(s, now, &c, v)),
            DcsOp::ClearFailover(v) => {
                DcsVal::Flag(d.set_failover(s, now, &Failover::default(), Some(v)))
            }
            DcsOp::WriteSync(sync, v) => DcsVal::Flag(d.set_sync(s, now, &sync, v).is_some()),
            DcsOp::DeleteSync(v) => DcsVal::Flag(d.delete_sync(s, now, Some(v))),
            DcsOp::Status(st) => {
                d.set_status(s, now, &st);
                DcsVal::Done
            }
            DcsOp::History(h) => {
                d.set_history(s, now, &h);
                DcsVal::Done
            }
            DcsOp::Failsafe(f) => {
                d.set_failsafe(s, now, &f);
                DcsVal::Done
            }
        }
    }

    // ----- Postgres side -----------------------------------------------------------

    fn replicate(&mut self) {
        self.replicate_rounds += 1;
        let slow_round = self.replicate_rounds.is_multiple_of(SLOW_STREAM_EVERY);
        for i in 0..self.nodes.len() {
            let pg = &self.nodes[i].pg;
            if !pg.running || pg.hung || pg.role != PgRole::Replica || pg.data.is_none() {
                continue;
            }
            if self.net.slow_stream.contains(&i) && !slow_round {
                continue;
            }
            let source = pg
                .upstream
                .as_deref()
                .and_then(|u| self.index_of(u))
                .filter(|&j| j != i && self.net.link_up(i, j) && self.nodes[j].pg.serves());
            let was = self.nodes[i].pg.streaming;
            match source {
                Some(j) => {
                    let (a, b) = two(&mut self.nodes, i, j);
                    a.pg.replicate_from(b.pg.data.as_ref());
                }
                None => self.nodes[i].pg.replicate_from(None),
            }
            if was != self.nodes[i].pg.streaming {
                let now_streaming = self.nodes[i].pg.streaming;
                let up = self.nodes[i].pg.upstream.clone().unwrap_or_default();
                self.trace
                    .note(self.now, Some(i), 10 + now_streaming as u64, || {
                        if now_streaming {
                            format!("pg: streaming from {up}")
                        } else {
                            format!(
                                "pg: cannot stream from {up:?} (unreachable or diverged history)"
                            )
                        }
                    });
            }
        }
    }

    fn client_write(&mut self) {
        for i in 0..self.nodes.len() {
            // The application is pointed at the cluster once it has a leader.
            if self.nodes[i].pg.accepts_writes() && !self.nodes[i].fresh_bootstrap {
                let id = self.new_record_id();
                let pg = &mut self.nodes[i].pg;
                pg.append(id);
                let skip_standbys = self.cfg.breakage == Some(Breakage::AckWithoutStandbys);
                if pg.synchronous_standby_names.is_some() && !skip_standbys {
                    let index = pg.data.as_ref().map_or(0, |d| d.wal.len() - 1);
                    self.client.pending.push(Pending { id, node: i, index });
                } else {
                    self.client.acknowledge(id, i, self.now.as_millis(), false);
                }
            }
        }
    }

    /// Releases the commits whose synchronous standbys have flushed them; drops those
    /// whose primary is gone.
    fn acknowledge_synchronous(&mut self) {
        if self.client.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.client.pending);
        for p in pending {
            let pg = &self.nodes[p.node].pg;
            let still_there = pg.may_be_writable()
                && pg
                    .data
                    .as_ref()
                    .and_then(|d| d.wal.get(p.index))
                    .is_some_and(|e| e.id == p.id);
            if !still_there {
                continue;
            }
            let Some(names) = pg.synchronous_standby_names.clone() else {
                // Cleared (fallback to asynchronous): waiting commits are released.
                self.client
                    .acknowledge(p.id, p.node, self.now.as_millis(), false);
                continue;
            };
            let rule = StandbyNames::parse(Some(&names));
            let needed = WAL_BASE + (p.index as u64 + 1) * WAL_UNIT;
            let rows = self.replication_rows(p.node);
            let flushed = !pg.hung
                && if rule.any {
                    // ANY k: any k of the listed standbys.
                    rows.iter()
                        .filter(|r| r.sync_state == "quorum")
                        .filter(|r| r.flush_lsn.unwrap_or(0) >= needed)
                        .count()
                        >= rule.count.max(1)
                } else {
                    let sync: Vec<&ReplicationConnection> =
                        rows.iter().filter(|r| r.sync_state == "sync").collect();
                    sync.len() >= rule.count.max(1)
                        && sync.iter().all(|r| r.flush_lsn.unwrap_or(0) >= needed)
                };
            if flushed {
                self.client
                    .acknowledge(p.id, p.node, self.now.as_millis(), true);
            } else {
                self.client.pending.push(p);
            }
        }
    }

    /// `pg_stat_replication` of node `i`: its connected streaming standbys, with
    /// `sync_state` from its `synchronous_standby_names` (FIRST n by list order; `*`
    /// matches everyone, in node order).
    pub(super) fn replication_rows(&self, i: usize) -> Vec<ReplicationConnection> {
        let me = &self.nodes[i];
        if !me.pg.may_be_writable() {
            return Vec::new();
        }
        let rule = StandbyNames::parse(me.pg.synchronous_standby_names.as_deref());
        let (count, listed) = (rule.count, rule.names);
        let any = listed.iter().any(|n| n == "*");
        let mut rows: Vec<(Option<usize>, usize, u64)> = Vec::new();
        for (j, n) in self.nodes.iter().enumerate() {
            let r = &n.pg;
            if j != i
                && r.running
                && !r.hung
                && r.streaming
                && r.upstream.as_deref() == Some(me.cfg.name.as_str())
                && self.net.link_up(i, j)
            {
                let priority = if any {
                    Some(0)
                } else {
                    listed
                        .iter()
                        .position(|l| l.eq_ignore_ascii_case(&n.cfg.name))
                };
                rows.push((priority, j, r.data.as_ref().map_or(0, |d| d.lsn())));
            }
        }
        rows.sort_by_key(|(p, j, _)| (p.is_none(), *p, *j));
        let mut synced = 0;
        let mut out: Vec<(usize, ReplicationConnection)> = rows
            .into_iter()
            .map(|(priority, j, lsn)| {
                let sync_state = match priority {
                    None => "async",
                    Some(_) if rule.any => "quorum",
                    Some(_) if synced < count => {
                        synced += 1;
                        "sync"
                    }
                    Some(_) => "potential",
                };
                (
                    j,
                    ReplicationConnection {
                        application_name: self.nodes[j].cfg.name.clone(),
                        state: "streaming".into(),
                        sync_state: sync_state.into(),
                        flush_lsn: Some(lsn),
                        write_lsn: Some(lsn),
                        replay_lsn: Some(lsn),
                        client_addr: None,
                        usename: None,
                        sync_priority: 0,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(j, _)| *j);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// What the agent's queries see of node `i`'s Postgres.
    pub(super) fn observe_pg(&self, i: usize) -> PgObservation {
        let mut o = self.nodes[i].pg.observe();
        if o.in_recovery == Some(false) {
            o.replication = self.replication_rows(i);
        }
        o
    }

    /// (c): a node just promoted must have every write acknowledged after synchronous
    /// standbys had it (in a synchronous-mode run).
    pub(super) fn check_no_acknowledged_write_lost(&mut self, i: usize) {
        if !self.cfg.check_safety || !self.synchronous || self.violation.is_some() {
            return;
        }
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        let have: BTreeSet<u64> = d.wal.iter().map(|e| e.id).collect();
        let lost: Vec<u64> = self
            .client
            .acked
            .iter()
            .filter(|a| !have.contains(&a.id))
            .map(|a| a.id)
            .collect();
        if let Some(first) = lost.first() {
            self.violation = Some(Violation::AcknowledgedWriteLost {
                at_ms: self.now.as_millis(),
                node: i,
                lost: lost.len(),
                first_id: *first,
            });
        }
    }

    /// Whether node `i`'s fence deadline has passed (it keeps Postgres from becoming
    /// writable until re-armed or disarmed).
    pub(super) fn fence_expired(&self, i: usize) -> bool {
        self.nodes[i].fence.is_some_and(|d| self.now >= d)
    }

    fn fence_fires(&mut self, i: usize, gen: u64) {
        let n = &mut self.nodes[i];
        if n.fence_gen != gen || n.fence.is_none_or(|d| d > self.now) {
            return;
        }
        if n.pg.kill() {
            self.trace.note(self.now, Some(i), 20, || {
                "fence: deadline passed, postgres killed".into()
            });
        }
    }

    /// Kills Postgres if it just became writable past its fence deadline.
    pub(super) fn fence_on_writable(&mut self, i: usize) {
        if self.fence_expired(i) && self.nodes[i].pg.may_be_writable() {
            self.nodes[i].pg.kill();
            self.trace.note(self.now, Some(i), 21, || {
                "fence: postgres became writable after the deadline, killed".into()
            });
        }
    }

    // ----- faults ------------------------------------------------------------------

    fn fault_tick(&mut self) {
        if !matches!(self.phase, Phase::Faults { .. }) {
            return;
        }
        let f = self.pick_fault();
        self.inject(f);
        let d = self.rng.millis(200, 2500);
        self.after(d, Ev::FaultTick);
    }

    fn pick_fault(&mut self) -> Fault {
        let n = self.nodes.len();
        let node = self.rng.index(n);
        let ttl_ms = self.current_ttl_s() * 1000;
        match self.rng.below(100) {
            0..=9 => Fault::NodeCrash {
                node,
                down: self.rng.millis(300, 8000),
            },
            10..=24 => Fault::AgentFreeze {
                node,
                duration: self.rng.millis(100, 2 * ttl_ms),
            },
            25..=31 => Fault::PgCrash { node },
            32..=36 => Fault::PgHang {
                node,
                duration: self.rng.millis(100, 4000),
            },
            37..=46 => Fault::PartitionFromDcs {
                node,
                duration: self.rng.millis(200, 8000),
            },
            47..=51 => Fault::SlowReplica {
                node,
                duration: self.rng.millis(500, 8000),
            },
            52..=63 => {
                let other = (node + 1 + self.rng.index(n - 1)) % n;
                Fault::PartitionNodes {
                    a: node,
                    b: other,
                    duration: self.rng.millis(200, 8000),
                }
            }
            64..=69 => Fault::DcsOutage {
                duration: self.rng.millis(200, 6000),
            },
            70..=77 => Fault::SlowDcs {
                duration: self.rng.millis(500, 6000),
            },
            78..=91 => Fault::Switchover {
                candidate: self.rng.chance(60).then_some(node),
                with_leader: self.rng.chance(80),
                scheduled_in: self.rng.chance(20).then(|| self.rng.millis(0, 3000)),
            },
            92..=95 => Fault::TogglePause,
            _ => Fault::SetTtl {
                ttl: TTL_CHOICES_S[self.rng.index(TTL_CHOICES_S.len())],
            },
        }
    }

    fn current_ttl_s(&mut self) -> u64 {
        self.current_config().0.ttl as u64
    }

    fn current_config(&mut self) -> (DynamicConfig, Option<Version>) {
        match self.store.get(self.now, &self.keys.config()) {
            Some(e) => (
                DynamicConfig::parse(&e.value).unwrap_or_else(|_| self.bootstrap_config.clone()),
                Some(e.version),
            ),
            None => (self.bootstrap_config.clone(), None),
        }
    }

    fn inject(&mut self, f: Fault) {
        self.faults += 1;
        let text = format!("{f:?}");
        self.trace.note(
            self.now,
            None,
            30 + crate::sim::trace::code_of(&text),
            || format!("FAULT {text}"),
        );
        match f {
            Fault::NodeCrash { node, down } => {
                if !self.nodes[node].down {
                    self.crash_node(node);
                    let gen = self.nodes[node].down_gen;
                    self.after(down, Ev::Reboot { node, gen });
                }
            }
            Fault::AgentFreeze { node, duration } => {
                let n = &mut self.nodes[node];
                if !n.down && !n.frozen {
                    n.frozen = true;
                    n.freeze_gen += 1;
                    let gen = n.freeze_gen;
                    self.after(duration, Ev::Unfreeze { node, gen });
                }
            }
            Fault::PgCrash { node } => {
                self.nodes[node].pg.kill();
            }
            Fault::PgHang { node, duration } => {
                let pg = &mut self.nodes[node].pg;
                if pg.running {
                    pg.hung = true;
                    pg.streaming = false;
                    self.after(duration, Ev::Heal(Heal::Unhang(node)));
                }
            }
            Fault::PartitionFromDcs { node, duration } => {
                self.net.cut_from_dcs.insert(node);
                self.after(duration, Ev::Heal(Heal::Dcs(node)));
            }
            Fault::PartitionNodes { a, b, duration } => {
                self.net.cut_links.insert(pair(a, b));
                self.after(duration, Ev::Heal(Heal::Link(a, b)));
            }
            Fault::DcsOutage { duration } => {
                self.net.dcs_down = true;
                self.after(duration, Ev::Heal(Heal::Outage));
            }
            Fault::SlowDcs { duration } => {
                self.net.dcs_slow = true;
                self.after(duration, Ev::Heal(Heal::Slow));
            }
            Fault::SlowReplica { node, duration } => {
                self.net.slow_stream.insert(node);
                self.after(duration, Ev::Heal(Heal::Stream(node)));
            }
            Fault::Switchover {
                candidate,
                with_leader,
                scheduled_in,
            } => self.request_switchover(candidate, with_leader, scheduled_in),
            Fault::TogglePause => {
                let (mut c, v) = self.current_config();
                c.pause = !c.pause;
                self.write_config(c, v);
            }
            Fault::SetTtl { ttl } => {
                let (mut c, v) = self.current_config();
                c.ttl = ttl as f64;
                if c.validate().is_empty() {
                    self.write_config(c, v);
                }
            }
        }
    }

    /// What `patronictl` does through the REST API: a CAS write of `config`.
    fn write_config(&mut self, c: DynamicConfig, v: Option<Version>) {
        if self.net.dcs_down {
            return;
        }
        let ok = self.ctl.set_config(&mut self.store, self.now, &c, v);
        let (ttl, pause) = (c.ttl, c.pause);
        self.trace.note(self.now, None, 40 + ok as u64, || {
            format!("ctl: config ttl={ttl} pause={pause} written={ok}")
        });
    }

    fn request_switchover(
        &mut self,
        candidate: Option<usize>,
        with_leader: bool,
        scheduled_in: Option<Duration>,
    ) {
        if self.net.dcs_down {
            return;
        }
        let leader = self.leader_name();
        if with_leader && leader.is_none() {
            return;
        }
        let member = candidate.map(|c| self.nodes[c].cfg.name.clone());
        if member.is_none() && !with_leader {
            return;
        }
        // The REST API refuses a candidate that is not a synchronous standby (in quorum
        // mode any candidate may be named: it still needs the votes).
        let on_mode = self.bootstrap_config.synchronous_mode == SynchronousMode::On;
        if let (true, Some(m)) = (on_mode, member.as_deref()) {
            let sync = self
                .store
                .get(self.now, &self.keys.sync())
                .and_then(|e| crate::model::SyncState::parse(&e.value).ok());
            if !sync.is_some_and(|s| s.is_standby(m)) {
                return;
            }
        }
        let scheduled_at = scheduled_in.and_then(|d| {
            chrono::DateTime::from_timestamp_millis(self.wall_millis() + d.as_millis() as i64)
                .map(|t| t.to_rfc3339())
        });
        let f = Failover {
            leader: if with_leader { leader } else { None },
            member,
            scheduled_at,
        };
        let json = f.to_json();
        self.ctl.set_failover(&mut self.store, self.now, &f, None);
        self.trace
            .note(self.now, None, 50, || format!("ctl: failover key {json}"));
    }

    fn heal(&mut self, h: Heal) {
        match h {
            Heal::Dcs(i) => {
                self.net.cut_from_dcs.remove(&i);
            }
            Heal::Link(a, b) => {
                self.net.cut_links.remove(&pair(a, b));
            }
            Heal::Outage => self.net.dcs_down = false,
            Heal::Slow => self.net.dcs_slow = false,
            Heal::Unhang(i) => self.nodes[i].pg.hung = false,
            Heal::Stream(i) => {
                self.net.slow_stream.remove(&i);
            }
        }
    }

    fn crash_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.pg.kill();
        n.down = true;
        n.down_gen += 1;
        n.epoch += 1;
        n.frozen = false;
        n.deferred.clear();
        n.cycle = None;
        n.job = None;
        n.fence = None;
        n.horizon = None;
        n.failsafe_horizon = false;
        n.state = Default::default();
        n.failsafe = Default::default();
    }

    fn reboot(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.down = false;
        n.dcs = MemoryDcsNode::new(self.keys.clone(), n.cfg.name.clone(), n.dcs.timing());
        self.trace.note(self.now, Some(i), 60, || {
            "machine boots; agent starts".into()
        });
        let at = self.now.plus(Duration::from_millis(100));
        self.schedule_tick(i, at);
    }

    fn unfreeze(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.frozen = false;
        let deferred = std::mem::take(&mut n.deferred);
        self.trace
            .note(self.now, Some(i), 61, || "agent resumes".into());
        for ev in deferred {
            self.push(self.now, ev);
        }
    }

    /// Ends every fault: the quiet phase starts from here.
    fn heal_all(&mut self) {
        self.net.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen {
                self.unfreeze(i);
            }
            if self.nodes[i].down {
                self.reboot(i);
            }
            self.nodes[i].pg.hung = false;
        }
        let (mut c, v) = self.current_config();
        if c.pause {
            c.pause = false;
            self.write_config(c, v);
        }
        self.trace
            .note(self.now, None, 70, || "QUIET: all faults healed".into());
    }

    // ----- phases and invariants ---------------------------------------------------

    fn phase_step(&mut self) {
        self.after(Duration::from_millis(PHASE_EVERY_MS), Ev::Phase);
        match self.phase {
            Phase::Setup => {
                let formed = self.converged();
                if formed.is_ok() || self.now >= MonoTime::from_millis(SETUP_DEADLINE_MS) {
                    if let (Err(e), true) = (formed, self.cfg.check_liveness) {
                        self.violation = Some(e.into_violation(self.now, "setup"));
                        return;
                    }
                    let (lo, hi) = self.cfg.fault_phase_ms;
                    let until = self.now.plus(self.rng.millis(lo, hi));
                    self.phase = Phase::Faults { until };
                    self.trace.note(self.now, None, 71, || {
                        "FAULTS: cluster formed, injecting faults".into()
                    });
                    let d = self.rng.millis(0, 1000);
                    self.after(d, Ev::FaultTick);
                }
            }
            Phase::Faults { until } => {
                if self.now >= until {
                    self.heal_all();
                    if !self.cfg.check_liveness {
                        self.phase = Phase::Done;
                        return;
                    }
                    self.phase = Phase::Quiet {
                        started: self.now,
                        deadline: self.now.plus(liveness_bound()),
                        stable_since: None,
                    };
                }
            }
            Phase::Quiet {
                started,
                deadline,
                stable_since,
            } => match self.converged() {
                Ok(()) => {
                    let since = stable_since.unwrap_or(self.now);
                    if self.now.since(since) >= Duration::from_millis(STABLE_MS) {
                        self.converged_after = Some(since.since(started));
                        self.phase = Phase::Done;
                    } else {
                        self.phase = Phase::Quiet {
                            started,
                            deadline,
                            stable_since: Some(since),
                        };
                    }
                }
                Err(e) => {
                    if self.now >= deadline {
                        self.violation = Some(e.into_violation(self.now, "quiet"));
                    }
                    self.phase = Phase::Quiet {
                        started,
                        deadline,
                        stable_since: None,
                    };
                }
            },
            Phase::Done => {}
        }
    }

    /// (d): one writable leader holding the key, every other node streaming from it.
    /// On failure, what is wrong; a replica that follows the leader but whose WAL
    /// history diverged from it is reported apart (`diverged`).
    fn converged(&mut self) -> Result<(), NotConverged> {
        let other = |why: String| NotConverged {
            why,
            diverged: Vec::new(),
            leader: None,
        };
        let leader = self
            .leader_name()
            .ok_or_else(|| other("no leader key".into()))?;
        let l = self
            .index_of(&leader)
            .ok_or_else(|| other(format!("leader key names unknown member {leader}")))?;
        let mut problems = Vec::new();
        let mut diverged = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.down || n.frozen {
                problems.push(format!("n{i}'s agent is not running"));
            } else if i == l {
                if !n.pg.accepts_writes() {
                    problems.push(format!("leader {leader} does not accept writes"));
                }
            } else if n.pg.may_be_writable() {
                problems.push(format!("n{i} is writable but {leader} leads"));
            } else if !n.pg.running || n.pg.hung {
                problems.push(format!("n{i}'s postgres is not running"));
            } else if n.pg.upstream.as_deref() != Some(leader.as_str()) {
                problems.push(format!(
                    "n{i} follows {:?} instead of {leader}",
                    n.pg.upstream
                ));
            } else if !n.pg.streaming {
                let history_forked = match (&n.pg.data, &self.nodes[l].pg.data) {
                    (Some(mine), Some(theirs)) => !mine.is_prefix_of(theirs),
                    _ => false,
                };
                if history_forked && self.net.link_up(i, l) {
                    diverged.push(i);
                } else {
                    problems.push(format!("n{i} follows {leader} but cannot stream from it"));
                }
            }
        }
        if problems.is_empty() && diverged.is_empty() {
            return Ok(());
        }
        let mut why = problems;
        why.extend(diverged.iter().map(|i| {
            format!("n{i} follows {leader} but its WAL history forked from the leader's and it was never rewound")
        }));
        Err(NotConverged {
            why: why.join("; "),
            diverged: if why_is_only_divergence(&why, &diverged) {
                diverged
            } else {
                Vec::new()
            },
            leader: Some(l),
        })
    }

    fn after_event(&mut self) {
        self.sync_dcs();
        for n in &mut self.nodes {
            if !n.pg.may_be_writable() {
                n.fresh_bootstrap = false;
            }
        }
        if !self.cfg.check_safety || self.violation.is_some() {
            return;
        }
        let at_ms = self.now.as_millis();
        let writable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pg.may_be_writable())
            .collect();
        if writable.len() > 1 {
            self.violation = Some(Violation::SplitBrain {
                at_ms,
                nodes: writable,
            });
            return;
        }
        if !self.cfg.check_lease {
            return;
        }
        for &i in &writable {
            let n = &self.nodes[i];
            if n.fresh_bootstrap && !n.down {
                continue;
            }
            {
                if n.down || n.horizon.is_none_or(|h| h <= self.now) {
                    self.violation = Some(Violation::WritableWithoutLease {
                        at_ms,
                        node: i,
                        lease_until_ms: n.horizon.map(|h| h.as_millis()),
                        agent_down: n.down,
                    });
                    return;
                }
            }
        }
        let holder = self.leader_name();
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.cfg.strict_lease_view && !n.pg.may_be_writable() {
                continue;
            }
            if let Some(h) = n.horizon.filter(|h| *h > self.now) {
                // A lease extended by failsafe mode outlives the key on purpose; (a)
                // still holds it to a single writable primary.
                if holder.as_deref() != Some(n.cfg.name.as_str()) && !n.failsafe_horizon {
                    self.violation = Some(Violation::LeaseNotInDcs {
                        at_ms,
                        node: i,
                        lease_until_ms: h.as_millis(),
                        holder,
                    });
                    return;
                }
            }
        }
    }
}

/// Why the cluster has not converged.
struct NotConverged {
    why: String,
    /// Replicas whose only problem is a forked history (set only when nothing else
    /// is wrong).
    diverged: Vec<usize>,
    leader: Option<usize>,
}

fn why_is_only_divergence(why: &[String], diverged: &[usize]) -> bool {
    !diverged.is_empty() && why.len() == diverged.len()
}

impl NotConverged {
    fn into_violation(self, now: MonoTime, phase: &'static str) -> Violation {
        match (self.diverged.first(), self.leader) {
            (Some(&node), Some(leader)) => Violation::DivergedReplicaNotRewound {
                at_ms: now.as_millis(),
                node,
                leader,
            },
            _ => Violation::NoConvergence {
                at_ms: now.as_millis(),
                phase,
                why: self.why,
            },
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
