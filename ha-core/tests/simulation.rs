//! The deterministic simulation (issue 3): many seeds of faults against the real
//! decision function and runner logic, checked for split brain, writes without a
//! lease, lease/DCS disagreement and convergence after the faults stop.

use ha_core::sim::{
    failure_report, forced_modes, replay_command, run_seed, run_seeds, Breakage, SimConfig,
    Violation,
};
use ha_core::SynchronousMode;
use std::time::Instant;

/// Seeds kept out of the CI range because they expose a known decision bug; each
/// entry must name the bug. Empty: the strict-sync `before_promote` bug and the
/// unrewound diverged replica found by this simulator are fixed.
const KNOWN_BAD_SEEDS: &[u64] = &[];

/// Whether a running replica that can never replicate from the new leader (diverged,
/// not rewound) is tolerated. `false`: `decide` stops such a replica for a divergence
/// check and pg_rewind.
const TOLERATE_UNREWOUND_DIVERGED_REPLICA: bool = false;

fn env_seed() -> Option<u64> {
    std::env::var("SIM_SEED")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

#[test]
fn ten_thousand_seeds_keep_safety_and_converge() {
    ten_thousand_seeds(SimConfig::default(), "mixed (mostly asynchronous)");
}

/// Every seed in one synchronous mode: (c) is checked at every promotion of every run.
fn only(mode: SynchronousMode, strict: bool) -> SimConfig {
    SimConfig {
        synchronous_percent: 100,
        synchronous_modes: vec![(mode, strict)],
        ..SimConfig::default()
    }
}

#[test]
fn ten_thousand_seeds_synchronous_mode_on() {
    ten_thousand_seeds(only(SynchronousMode::On, false), "synchronous_mode on");
}

#[test]
fn ten_thousand_seeds_synchronous_mode_strict() {
    ten_thousand_seeds(
        only(SynchronousMode::On, true),
        "synchronous_mode on, strict",
    );
}

#[test]
fn ten_thousand_seeds_synchronous_mode_quorum() {
    let cfg = SimConfig {
        synchronous_percent: 100,
        synchronous_modes: vec![
            (SynchronousMode::Quorum, false),
            (SynchronousMode::Quorum, true),
        ],
        ..SimConfig::default()
    };
    ten_thousand_seeds(cfg, "synchronous_mode quorum (half strict)");
}

/// Seeds per mode: 10,000 unless `SIM_SEEDS` asks for fewer or more locally.
fn seed_count() -> u64 {
    std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10_000)
}

fn ten_thousand_seeds(cfg: SimConfig, label: &str) {
    let seeds = seed_count();
    let began = Instant::now();
    let (failures, totals) = run_seeds(0..seeds, &cfg, 2);
    let secs = began.elapsed().as_secs_f64();
    println!(
        "{label}: {} seeds in {secs:.1}s ({:.0} seeds/s): {} faults, {} acknowledged writes ({} lost in \
         async runs; {} synchronous runs with {} writes acknowledged by standbys, (c) checked at every promotion), \
         longest convergence after faults {:.1}s",
        totals.seeds,
        totals.seeds as f64 / secs,
        totals.faults,
        totals.acked_writes,
        totals.lost_acked_writes,
        totals.synchronous_seeds,
        totals.synchronous_acks,
        totals.max_converged_after_ms as f64 / 1000.0
    );
    assert_eq!(totals.seeds, seeds);
    let expected_sync = cfg.synchronous_percent * seeds / 100;
    assert!(
        totals.synchronous_seeds * 10 >= expected_sync * 9 && totals.synchronous_acks > 0,
        "{} synchronous seeds, {} writes acknowledged by standbys",
        totals.synchronous_seeds,
        totals.synchronous_acks
    );
    assert!(totals.faults > seeds, "the fault phase must inject faults");
    assert!(
        totals.acked_writes > 0,
        "the client must get writes through"
    );
    let diverged: Vec<u64> = failures
        .iter()
        .filter(|f| {
            matches!(
                f.violation,
                Some(Violation::DivergedReplicaNotRewound { .. })
            )
        })
        .map(|f| f.seed)
        .collect();
    if !diverged.is_empty() {
        println!(
            "KNOWN DECIDE GAP: {} seeds end with a diverged replica never rewound (first: {:?}); \
             e.g. {}",
            diverged.len(),
            &diverged[..diverged.len().min(10)],
            replay_command(diverged[0], &cfg)
        );
    }
    let unexpected: Vec<_> = failures
        .iter()
        .filter(|f| !KNOWN_BAD_SEEDS.contains(&f.seed))
        .filter(|f| !(TOLERATE_UNREWOUND_DIVERGED_REPLICA && diverged.contains(&f.seed)))
        .collect();
    if let Some(first) = unexpected.first() {
        for f in &unexpected {
            if let Some(v) = &f.violation {
                println!("seed {}: {v}\n  {}", f.seed, replay_command(f.seed, &cfg));
            }
        }
        println!("{}", failure_report(first.seed, &cfg, 300));
        panic!("{} of {seeds} seeds broke an invariant", unexpected.len());
    }
}

/// Failsafe mode in every seed: a primary cut off from the DCS may outlive its key
/// while every member confirms it, which must never give two writable primaries and
/// must not keep the cluster from converging.
#[test]
fn failsafe_seeds_keep_safety_and_converge() {
    let cfg = SimConfig {
        failsafe_percent: 100,
        ..SimConfig::default()
    };
    let (failures, totals) = run_seeds(0..2_000, &cfg, 2);
    assert_eq!(totals.seeds, 2_000);
    println!(
        "{} decisions kept a primary alive through failsafe mode",
        totals.failsafe_keeps
    );
    assert!(
        totals.failsafe_keeps > 100,
        "the faults must put primaries into failsafe mode"
    );
    if let Some(first) = failures.first() {
        for f in &failures {
            if let Some(v) = &f.violation {
                println!("seed {}: {v}\n  {}", f.seed, replay_command(f.seed, &cfg));
            }
        }
        println!("{}", failure_report(first.seed, &cfg, 300));
        panic!(
            "{} of 2000 failsafe seeds broke an invariant",
            failures.len()
        );
    }
}

/// Members that answer failsafe calls but do not stay out of the race: the simulator
/// must see the resulting split brain.
#[test]
fn the_simulator_catches_failsafe_calls_that_are_not_honoured() {
    let cfg = SimConfig {
        failsafe_percent: 100,
        breakage: Some(Breakage::FailsafeCallsForgotten),
        check_liveness: false,
        ..SimConfig::default()
    };
    let (failures, _) = run_seeds(0..1_000, &cfg, 2);
    let first = failures
        .iter()
        .find(|f| matches!(f.violation, Some(Violation::SplitBrain { .. })))
        .expect("forgotten failsafe calls must end in a split brain within 1000 seeds");
    println!("{}", failure_report(first.seed, &cfg, 40));
}

#[test]
fn a_seed_replays_exactly() {
    let traced = SimConfig {
        trace: true,
        ..SimConfig::default()
    };
    for seed in [1, 42, 777, 4242, 9999] {
        let a = run_seed(seed, &traced);
        let b = run_seed(seed, &traced);
        assert!(!a.trace.is_empty());
        assert_eq!(a.trace_hash, b.trace_hash, "seed {seed} hash differs");
        assert_eq!(a.trace, b.trace, "seed {seed} trace differs");
        assert_eq!(a.stats, b.stats);
        // Tracing must not change the run itself.
        let quiet = run_seed(seed, &SimConfig::default());
        assert_eq!(quiet.stats, a.stats, "seed {seed}: tracing changed the run");
        assert_eq!(quiet.violation, a.violation);
    }
    assert_ne!(
        run_seed(1, &traced).trace_hash,
        run_seed(2, &traced).trace_hash
    );
}

#[test]
fn the_simulator_catches_a_broken_fence_and_lease_guard() {
    let cfg = SimConfig {
        breakage: Some(Breakage::NoFenceNoLeaseGuard),
        check_liveness: false,
        ..SimConfig::default()
    };
    let (failures, _) = run_seeds(0..200, &cfg, 2);
    let caught: Vec<_> = failures
        .iter()
        .filter(|f| {
            matches!(
                f.violation,
                Some(Violation::SplitBrain { .. } | Violation::WritableWithoutLease { .. })
            )
        })
        .collect();
    println!(
        "broken fence + lease guard: {} of 200 seeds caught ({} split brain)",
        caught.len(),
        caught
            .iter()
            .filter(|f| matches!(f.violation, Some(Violation::SplitBrain { .. })))
            .count()
    );
    let first = caught
        .first()
        .expect("split brain must be caught within 200 seeds");
    println!("{}", failure_report(first.seed, &cfg, 60));
    // (b) fires first, at the lease end; without it the same faults end in an actual
    // second writable primary.
    let only_split_brain = SimConfig {
        check_lease: false,
        ..cfg
    };
    let (failures, _) = run_seeds(0..200, &only_split_brain, 2);
    let split: Vec<_> = failures
        .iter()
        .filter(|f| matches!(f.violation, Some(Violation::SplitBrain { .. })))
        .collect();
    println!(
        "with (b) and (e) off: {} of 200 seeds end in split brain",
        split.len()
    );
    let first = split
        .first()
        .expect("split brain (a) must be caught within 200 seeds");
    println!("{}", failure_report(first.seed, &only_split_brain, 40));
}

#[test]
fn the_simulator_catches_acknowledged_writes_lost_in_synchronous_mode() {
    let cfg = SimConfig {
        breakage: Some(Breakage::AckWithoutStandbys),
        synchronous_percent: 100,
        check_liveness: false,
        ..SimConfig::default()
    };
    let (failures, _) = run_seeds(0..300, &cfg, 2);
    let caught: Vec<_> = failures
        .iter()
        .filter(|f| matches!(f.violation, Some(Violation::AcknowledgedWriteLost { .. })))
        .collect();
    println!(
        "commits acknowledged without standbys: {} of 300 seeds caught",
        caught.len()
    );
    let first = caught
        .first()
        .expect("a lost acknowledged write must be caught within 300 seeds");
    println!("{}", failure_report(first.seed, &cfg, 40));
}

#[test]
fn the_simulator_catches_a_quorum_one_vote_short() {
    let cfg = SimConfig {
        breakage: Some(Breakage::QuorumOneVoteShort),
        check_liveness: false,
        // A short quorum only bites when the candidate lags and the standbys ahead of
        // it are out of its reach: give the faults time to line up.
        fault_phase_ms: (30_000, 60_000),
        ..only(SynchronousMode::Quorum, false)
    };
    let (failures, _) = run_seeds(0..1_000, &cfg, 2);
    let caught: Vec<_> = failures
        .iter()
        .filter(|f| matches!(f.violation, Some(Violation::AcknowledgedWriteLost { .. })))
        .collect();
    println!(
        "quorum counted one vote short: {} of 1000 seeds caught",
        caught.len()
    );
    let first = caught
        .first()
        .expect("a lost acknowledged write must be caught within 1000 seeds");
    println!("{}", failure_report(first.seed, &cfg, 60));
}

#[test]
fn replay() {
    let broken = match std::env::var("SIM_BROKEN").as_deref() {
        Ok("1") => Some(Breakage::NoFenceNoLeaseGuard),
        Ok("2") => Some(Breakage::AckWithoutStandbys),
        Ok("3") => Some(Breakage::QuorumOneVoteShort),
        Ok("4") => Some(Breakage::FailsafeCallsForgotten),
        Ok("5") => Some(Breakage::LeaderVersionIgnored),
        _ => None,
    };
    let forced = std::env::var("SIM_SYNC")
        .ok()
        .and_then(|v| forced_modes(&v));
    let cfg = SimConfig {
        trace: true,
        strict_lease_view: std::env::var("SIM_STRICT").is_ok_and(|v| v == "1"),
        check_lease: std::env::var("SIM_LEASE").map_or(true, |v| v != "0"),
        failsafe_percent: std::env::var("SIM_FAILSAFE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        breakage: broken,
        check_liveness: broken.is_none(),
        synchronous_percent: if broken == Some(Breakage::AckWithoutStandbys) || forced.is_some() {
            100
        } else {
            SimConfig::default().synchronous_percent
        },
        synchronous_modes: forced.unwrap_or(SimConfig::default().synchronous_modes),
        ..SimConfig::default()
    };
    let broken = broken.is_some();
    let seed = env_seed().unwrap_or(0);
    let r = run_seed(seed, &cfg);
    for line in &r.trace {
        println!("{line}");
    }
    println!("seed {seed}: {:?}", r.stats);
    println!("replay: {}", replay_command(seed, &cfg));
    if broken {
        return;
    }
    if let Some(v) = &r.violation {
        panic!("seed {seed}: {v}");
    }
    assert!(r.stats.acked_writes > 0, "the client wrote nothing");
    assert!(r.stats.converged_after_ms.is_some(), "never converged");
}

/// The leader key's version in the lease token: an operator deletes the leader key
/// just after its holder started a promotion or a primary start, and another member
/// takes it. The runner compares the token's version with its latest read right before
/// the writable step and refuses it once a newer read shows the leadership gone. With
/// the check ignored, most such runs end in two writable primaries; with it, only runs
/// where the holder had no read between the deletion and its step (the DCS was slow or
/// unreachable: nothing told it) still do (3 of 400 seeds when this was written).
#[test]
fn the_simulator_catches_a_role_change_after_its_leader_key_was_deleted() {
    let cfg = SimConfig {
        leader_key_deletions: true,
        // The deletion itself breaks the lease model (the holder believes in a lease
        // the DCS no longer has): only split brain (a) and lost writes (c) are checked.
        check_lease: false,
        check_liveness: false,
        ..SimConfig::default()
    };
    let seeds = 0..400;
    let split = |cfg: &SimConfig| {
        let (failures, _) = run_seeds(seeds.clone(), cfg, 2);
        failures
            .into_iter()
            .filter(|f| matches!(f.violation, Some(Violation::SplitBrain { .. })))
            .collect::<Vec<_>>()
    };
    let kept = split(&cfg);
    let broken = SimConfig {
        breakage: Some(Breakage::LeaderVersionIgnored),
        ..cfg.clone()
    };
    let ignored = split(&broken);
    println!(
        "leader key deleted during role changes, {} seeds: split brain with the version check {}, without {}",
        seeds.end,
        kept.len(),
        ignored.len()
    );
    let first = ignored
        .first()
        .expect("ignoring the leader version must end in split brain within 400 seeds");
    println!("{}", failure_report(first.seed, &broken, 40));
    assert!(
        kept.len() * 10 < ignored.len(),
        "the version check prevents most of these split brains: {} with it, {} without",
        kept.len(),
        ignored.len()
    );
}
