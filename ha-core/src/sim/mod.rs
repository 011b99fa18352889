//! Deterministic simulation: 3–5 nodes, each running the real [`crate::decision::decide`]
//! the way the runner drives it (cycle, guard, query outcomes, background actions),
//! over the real [`crate::memory_dcs::MemoryDcsNode`] and a simulated Postgres with a
//! real WAL history, on a fake clock, with a seeded RNG. Faults are injected in a fault
//! phase (machine crash, agent freeze, Postgres crash/hang, node↔DCS and node↔node
//! partitions, DCS outage, slow DCS, switchover/failover requests, pause and ttl
//! changes), then a quiet phase checks that the cluster converges.
//!
//! Everything that affects a run comes from the seed (BTreeMap/Vec only, no hash
//! iteration, no wall clock), so a seed replays exactly. See [`invariants`] for what is
//! checked.

pub mod client;
pub mod invariants;
pub mod network;
mod node;
pub mod rng;
pub mod sim_pg;
pub mod trace;
mod world;

pub use invariants::Violation;
pub use world::World;

use crate::model::SynchronousMode;
use std::time::Duration;

/// A deliberately broken safety rule, to prove the checks can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Breakage {
    /// `ArmFence` does nothing and the guard's lease-expiry refusal is skipped: a
    /// frozen or slow primary keeps accepting writes past its lease.
    NoFenceNoLeaseGuard,
    /// Postgres acknowledges commits without waiting for the synchronous standbys
    /// (as if `synchronous_commit` were off): failovers then lose acknowledged writes.
    AckWithoutStandbys,
    /// Quorum mode: candidates read the `sync` key's quorum one lower than published,
    /// so an election counts one vote too few.
    QuorumOneVoteShort,
    /// Members accept `POST /failsafe` without keeping the caller as their leader, so
    /// they race while a failsafe primary still counts on them.
    FailsafeCallsForgotten,
    /// The runner ignores the leader key's version in the lease token: a role change
    /// decided under a leadership that a newer read shows gone still runs while the
    /// token's time lasts.
    LeaderVersionIgnored,
}

/// What to simulate and check.
#[derive(Debug, Clone, PartialEq)]
pub struct SimConfig {
    /// Check (a), (b), (c) and (e) after every event.
    pub check_safety: bool,
    /// Within the safety checks, check the lease invariants (b) and (e); off, only
    /// (a) and (c) remain (to show a broken rule ends in an actual split brain).
    pub check_lease: bool,
    /// Run a quiet phase after the faults and check (d).
    pub check_liveness: bool,
    /// Keep readable trace lines (costly; failing seeds are re-run with it).
    pub trace: bool,
    /// Keep, per node, every action it executes as a `time action` line
    /// ([`SimResult::actions`]), to prove a refactor leaves the runs unchanged.
    pub record_actions: bool,
    /// Check (e) for every node, not only those whose Postgres may accept writes: also
    /// flags an agent that believes in a lease it is releasing while Postgres is down
    /// (harmless for safety; see the report on renew-during-demote).
    pub strict_lease_view: bool,
    /// Percentage of seeds that run with synchronous replication.
    pub synchronous_percent: u64,
    /// The synchronous modes those seeds pick from (mode, strict), uniformly.
    pub synchronous_modes: Vec<(SynchronousMode, bool)>,
    /// Percentage of seeds that run with `failsafe_mode: true` (0: never, and no random
    /// draw, so other seeds replay as before).
    pub failsafe_percent: u64,
    /// Break a safety rule on purpose.
    pub breakage: Option<Breakage>,
    /// Fewest nodes.
    pub min_nodes: usize,
    /// Most nodes.
    pub max_nodes: usize,
    /// Fault phase length range, ms.
    pub fault_phase_ms: (u64, u64),
    /// An operator deletes the leader key (as `etcdctl del` would) just after its
    /// holder started a promotion or a primary start, during the fault phase: the
    /// leadership behind that action's lease token is gone before its time is. Off by
    /// default (no random draw, so other modes replay as before).
    pub leader_key_deletions: bool,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            check_safety: true,
            check_lease: true,
            check_liveness: true,
            trace: false,
            record_actions: false,
            strict_lease_view: false,
            synchronous_percent: 30,
            synchronous_modes: vec![
                (SynchronousMode::On, false),
                (SynchronousMode::On, true),
                (SynchronousMode::Quorum, false),
                (SynchronousMode::Quorum, true),
            ],
            failsafe_percent: 0,
            breakage: None,
            min_nodes: 3,
            max_nodes: 5,
            fault_phase_ms: (5_000, 20_000),
            leader_key_deletions: false,
        }
    }
}

/// How long after the last fault the cluster must have converged (invariant d):
/// `3·ttl_max + 4·loop_wait + 2·retry_timeout + 2·max_background`. Reasoning: the
/// leader key of a dead or demoted leader can outlive the faults by one ttl; a leader
/// that restarts or is replaced needs one ttl for a new lease round-trip plus the race
/// (a loop_wait to notice, a retry_timeout for peer probes) and a promote (one
/// background action); a replica then needs a loop_wait to notice the new leader and a
/// background action (rewind + restart) to stream from it; the third ttl covers a
/// ttl change and lease re-grant racing with all of that.
pub fn liveness_bound() -> Duration {
    let ttl_max = *world::TTL_CHOICES_S.iter().max().unwrap_or(&6);
    Duration::from_secs(3 * ttl_max + 4 * world::LOOP_WAIT_S + 2 * world::RETRY_TIMEOUT_S)
        + Duration::from_millis(2 * world::MAX_BACKGROUND_MS)
}

/// Numbers from one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimStats {
    /// Simulated time at the end, ms.
    pub sim_ms: u64,
    /// Events processed.
    pub events: u64,
    /// HA cycles run (all nodes).
    pub cycles: u64,
    /// Faults injected.
    pub faults: u64,
    /// The run used synchronous replication.
    pub synchronous: bool,
    /// Writes the client got acknowledged.
    pub acked_writes: usize,
    /// Of those, acknowledged after synchronous standbys had them.
    pub synchronous_acks: usize,
    /// Acknowledged writes missing from the final leader (async mode: allowed).
    pub lost_acked_writes: usize,
    /// Time from the end of the faults until the converged state held, ms.
    pub converged_after_ms: Option<u64>,
    /// Decisions where failsafe mode kept a primary running without the DCS.
    pub failsafe_keeps: u64,
}

/// The outcome of one seed.
#[derive(Debug, Clone)]
pub struct SimResult {
    /// The seed.
    pub seed: u64,
    /// Cluster size.
    pub nodes: usize,
    /// The first broken invariant, if any.
    pub violation: Option<Violation>,
    /// Numbers.
    pub stats: SimStats,
    /// Hash of every event (equal for equal runs).
    pub trace_hash: u64,
    /// Readable trace (only with `SimConfig::trace`).
    pub trace: Vec<String>,
    /// Per node, the actions it executed, one `time action` line each (only with
    /// `SimConfig::record_actions`).
    pub actions: Vec<Vec<String>>,
}

/// Runs one seed.
pub fn run_seed(seed: u64, cfg: &SimConfig) -> SimResult {
    World::new(seed, cfg.clone()).run()
}

/// Runs `seeds` on `threads` threads; returns every result with a violation (sorted
/// by seed) and the number of seeds run.
pub fn run_seeds(
    seeds: std::ops::Range<u64>,
    cfg: &SimConfig,
    threads: usize,
) -> (Vec<SimResult>, SeedTotals) {
    let threads = threads.max(1) as u64;
    let mut failures = Vec::new();
    let mut totals = SeedTotals::default();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let seeds = seeds.clone();
                s.spawn(move || {
                    let mut fails = Vec::new();
                    let mut totals = SeedTotals::default();
                    let mut seed = seeds.start + t;
                    while seed < seeds.end {
                        let r = run_seed(seed, cfg);
                        totals.add(&r);
                        if r.violation.is_some() {
                            fails.push(r);
                        }
                        seed += threads;
                    }
                    (fails, totals)
                })
            })
            .collect();
        for h in handles {
            if let Ok((f, t)) = h.join() {
                failures.extend(f);
                totals.merge(&t);
            }
        }
    });
    failures.sort_by_key(|r| r.seed);
    (failures, totals)
}

/// Aggregates over many seeds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SeedTotals {
    /// Seeds run.
    pub seeds: u64,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Events.
    pub events: u64,
    /// Faults.
    pub faults: u64,
    /// Acknowledged writes.
    pub acked_writes: u64,
    /// Of those, acknowledged after synchronous standbys had them.
    pub synchronous_acks: u64,
    /// Acknowledged writes lost (async runs only; sync runs fail on any).
    pub lost_acked_writes: u64,
    /// Seeds that ran in synchronous mode.
    pub synchronous_seeds: u64,
    /// Longest convergence after the faults, ms.
    pub max_converged_after_ms: u64,
    /// Decisions where failsafe mode kept a primary running without the DCS.
    pub failsafe_keeps: u64,
}

impl SeedTotals {
    fn add(&mut self, r: &SimResult) {
        self.seeds += 1;
        self.sim_ms += r.stats.sim_ms;
        self.events += r.stats.events;
        self.faults += r.stats.faults;
        self.acked_writes += r.stats.acked_writes as u64;
        self.synchronous_acks += r.stats.synchronous_acks as u64;
        self.lost_acked_writes += r.stats.lost_acked_writes as u64;
        self.synchronous_seeds += r.stats.synchronous as u64;
        self.failsafe_keeps += r.stats.failsafe_keeps;
        self.max_converged_after_ms = self
            .max_converged_after_ms
            .max(r.stats.converged_after_ms.unwrap_or(0));
    }

    fn merge(&mut self, o: &SeedTotals) {
        self.seeds += o.seeds;
        self.sim_ms += o.sim_ms;
        self.events += o.events;
        self.faults += o.faults;
        self.acked_writes += o.acked_writes;
        self.synchronous_acks += o.synchronous_acks;
        self.lost_acked_writes += o.lost_acked_writes;
        self.synchronous_seeds += o.synchronous_seeds;
        self.failsafe_keeps += o.failsafe_keeps;
        self.max_converged_after_ms = self.max_converged_after_ms.max(o.max_converged_after_ms);
    }
}

/// The command that replays `seed` with its trace printed.
pub fn replay_command(seed: u64, cfg: &SimConfig) -> String {
    let mut env = String::new();
    match cfg.breakage {
        Some(Breakage::NoFenceNoLeaseGuard) => env.push_str("SIM_BROKEN=1 "),
        Some(Breakage::AckWithoutStandbys) => env.push_str("SIM_BROKEN=2 "),
        Some(Breakage::QuorumOneVoteShort) => env.push_str("SIM_BROKEN=3 "),
        Some(Breakage::FailsafeCallsForgotten) => env.push_str("SIM_BROKEN=4 "),
        Some(Breakage::LeaderVersionIgnored) => env.push_str("SIM_BROKEN=5 "),
        None => {}
    }
    if cfg.strict_lease_view {
        env.push_str("SIM_STRICT=1 ");
    }
    if !cfg.check_lease {
        env.push_str("SIM_LEASE=0 ");
    }
    if cfg.synchronous_percent == 100 {
        let modes: Vec<String> = cfg
            .synchronous_modes
            .iter()
            .map(|(mode, strict)| {
                format!(
                    "{}{}",
                    mode_name(*mode),
                    if *strict { "-strict" } else { "" }
                )
            })
            .collect();
        env.push_str(&format!("SIM_SYNC={} ", modes.join(",")));
    }
    if cfg.failsafe_percent > 0 {
        env.push_str(&format!("SIM_FAILSAFE={} ", cfg.failsafe_percent));
    }
    format!("{env}SIM_SEED={seed} cargo test -p ha-core --test simulation replay -- --nocapture")
}

fn mode_name(m: SynchronousMode) -> &'static str {
    match m {
        SynchronousMode::Off => "off",
        SynchronousMode::On => "on",
        SynchronousMode::Quorum => "quorum",
    }
}

/// Reads `SIM_SYNC`, a comma-separated list of `on`, `on-strict`, `quorum`,
/// `quorum-strict`: every seed runs in one of them. `None` if any entry is unknown.
pub fn forced_modes(value: &str) -> Option<Vec<(SynchronousMode, bool)>> {
    value.split(',').map(|m| forced_mode(m.trim())).collect()
}

fn forced_mode(value: &str) -> Option<(SynchronousMode, bool)> {
    let (mode, strict) = match value.strip_suffix("-strict") {
        Some(m) => (m, true),
        None => (value, false),
    };
    let mode = match mode {
        "on" => SynchronousMode::On,
        "quorum" => SynchronousMode::Quorum,
        _ => return None,
    };
    Some((mode, strict))
}

/// A failing seed as a report: seed, invariant, replay command and the trace (re-run
/// with tracing on; the last `tail` lines).
pub fn failure_report(seed: u64, cfg: &SimConfig, tail: usize) -> String {
    let traced = run_seed(
        seed,
        &SimConfig {
            trace: true,
            ..cfg.clone()
        },
    );
    let mut out = String::new();
    let verdict = traced.violation.as_ref().map_or(
        "no violation on replay (non-deterministic?!)".to_string(),
        |v| v.to_string(),
    );
    out.push_str(&format!(
        "seed {seed} ({} nodes): {verdict}\n",
        traced.nodes
    ));
    out.push_str(&format!("replay: {}\n", replay_command(seed, cfg)));
    let skip = traced.trace.len().saturating_sub(tail);
    if skip > 0 {
        out.push_str(&format!("... {skip} earlier trace lines omitted\n"));
    }
    for l in &traced.trace[skip..] {
        out.push_str(l);
        out.push('\n');
    }
    out
}
