//! Measures how long after a leader's lease runs out another agent's watch wakes up
//! (etcd's lease expiry check, the revoke through raft, the watch event, our
//! wake-up counter), on a real single-member etcd started by the test harness.
//!
//! Run: `cargo run -p dcs-etcd --example lease_expiry_watch [trials]`

use dcs_etcd::testing::EtcdCluster;
use dcs_etcd::EtcdDcs;
use ha_core::{Dcs, DcsTiming};
use std::time::Duration;
use tokio::time::Instant;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let trials: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(10);
    let etcd = EtcdCluster::start_single()?;
    let timing = DcsTiming {
        ttl: Duration::from_secs(3),
        retry_timeout: Duration::from_secs(2),
        loop_wait: Duration::from_secs(1),
    };
    let mut delays = Vec::new();
    for trial in 0..trials {
        let scope = format!("bench-{trial}");
        let leader = EtcdDcs::connect(&etcd.config(), "service", &scope, "pg0", timing).await?;
        let observer = EtcdDcs::connect(&etcd.config(), "service", &scope, "pg1", timing).await?;
        let mut wake = observer.subscribe();
        if !leader.acquire_leader().await? {
            return Err("could not acquire the leader key".into());
        }
        // Let the observer's watch deliver the acquire, and spread the renewals over
        // etcd's 500 ms expiry-check period so trials do not all hit the same phase.
        tokio::time::sleep(Duration::from_millis(300 + (trial as u64 * 137) % 500)).await;
        if !leader.renew_leader().await? {
            return Err("could not renew the leader key".into());
        }
        // The lease runs out ttl after this keepalive was answered (the round trip
        // on loopback is well under a millisecond).
        let expiry = Instant::now() + timing.ttl;
        drop(leader);
        wake.borrow_and_update();
        loop {
            tokio::time::timeout(timing.ttl * 3, wake.changed()).await??;
            if observer.get_cluster().await?.is_unlocked() {
                break;
            }
        }
        let woke = Instant::now();
        let delay = woke.saturating_duration_since(expiry);
        let early = expiry.saturating_duration_since(woke);
        if !early.is_zero() {
            println!("trial {trial}: woke {early:?} BEFORE the computed expiry");
        } else {
            println!("trial {trial}: watch woke {delay:?} after lease expiry");
        }
        delays.push(delay);
        observer.delete_cluster().await?;
    }
    delays.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "lease expiry -> watch wake-up over {} trials (ttl {:?}): min {:.0} ms, median {:.0} ms, max {:.0} ms",
        delays.len(),
        timing.ttl,
        ms(delays[0]),
        ms(delays[delays.len() / 2]),
        ms(delays[delays.len() - 1])
    );
    Ok(())
}
