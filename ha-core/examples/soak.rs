//! Soak the deterministic simulation over many seeds.
//!
//! `cargo run --release -p ha-core --example soak -- --seeds 1000000 [--start N] [--threads 2]
//! [--safety-only] [--broken] [--strict-lease] [--show N]`
//!
//! Prints seeds per second as it goes, and every failing seed with its violation and the
//! command that replays it; `--show N` prints the traces of the first N failures.

use ha_core::sim::{failure_report, replay_command, run_seeds, Breakage, SimConfig};
use std::time::Instant;

fn main() {
    let mut seeds: u64 = 10_000;
    let mut start: u64 = 0;
    let mut threads: usize = 2;
    let mut show: usize = 0;
    let mut cfg = SimConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            match args.next().and_then(|v| v.parse().ok()) {
                Some(v) => v,
                None => {
                    eprintln!("{what} needs a number");
                    std::process::exit(2);
                }
            }
        };
        match a.as_str() {
            "--seeds" => seeds = num("--seeds"),
            "--start" => start = num("--start"),
            "--threads" => threads = num("--threads") as usize,
            "--show" => show = num("--show") as usize,
            "--safety-only" => cfg.check_liveness = false,
            "--broken" => cfg.breakage = Some(Breakage::NoFenceNoLeaseGuard),
            "--strict-lease" => cfg.strict_lease_view = true,
            other => {
                eprintln!("unknown argument {other}; see the file header for usage");
                std::process::exit(2);
            }
        }
    }
    let began = Instant::now();
    let chunk = 10_000u64.min(seeds.max(1));
    let mut done = 0u64;
    let mut failures = Vec::new();
    let mut max_converge = 0u64;
    while done < seeds {
        let n = chunk.min(seeds - done);
        let (fails, totals) = run_seeds(start + done..start + done + n, &cfg, threads);
        done += n;
        max_converge = max_converge.max(totals.max_converged_after_ms);
        for f in &fails {
            let v = f
                .violation
                .as_ref()
                .map(|v| v.to_string())
                .unwrap_or_default();
            println!(
                "FAIL seed {}: {v}\n  replay: {}",
                f.seed,
                replay_command(f.seed, &cfg)
            );
        }
        failures.extend(fails.into_iter().map(|f| f.seed));
        let secs = began.elapsed().as_secs_f64();
        println!(
            "{done}/{seeds} seeds, {} failing, {:.0} seeds/s, longest convergence after faults {:.1}s",
            failures.len(),
            done as f64 / secs,
            max_converge as f64 / 1000.0
        );
    }
    for seed in failures.iter().take(show) {
        println!("{}", failure_report(*seed, &cfg, 400));
    }
    if !failures.is_empty() {
        std::process::exit(1);
    }
}
