//! Measures how long after a ZooKeeper session expires another agent is woken by
//! its leader watch. Starts its own standalone server (Debian's `zookeeper`
//! package), makes `alpha` leader through a TCP proxy, cuts the proxy (alpha's
//! session is not closed, it just stops heartbeating) and timestamps `beta`'s
//! wake-up against the server's "Expiring session" log line.
//!
//! `cargo run -p dcs-zookeeper --example expiry_watch_latency -- [samples] [ttl_ms]`

use dcs_zookeeper::testing::{TcpProxy, ZkCluster};
use dcs_zookeeper::{ZooKeeperConfig, ZooKeeperDcs};
use ha_core::{ClusterKeys, Dcs, DcsTiming};
use std::time::{Duration, SystemTime};
use tokio::time::Instant;

type Error = Box<dyn std::error::Error>;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let samples: usize = args.next().map_or(Ok(5), |a| a.parse())?;
    let ttl_ms: u64 = args.next().map_or(Ok(3000), |a| a.parse())?;
    let timing = DcsTiming {
        ttl: Duration::from_millis(ttl_ms),
        retry_timeout: Duration::from_millis(1500),
        loop_wait: Duration::from_secs(1),
    };
    let zk = ZkCluster::standalone().await?;
    let log = zk.servers()[0].log_path();
    println!("session timeout {ttl_ms} ms, server tick 200 ms, {samples} samples");
    let mut after_expiry = Vec::new();
    let mut after_cut = Vec::new();
    for i in 0..samples {
        let keys = ClusterKeys::new("service", &format!("latency-{i}"));
        let proxy = TcpProxy::start(&zk.hosts()[0]).await?;
        let a = ZooKeeperDcs::new(
            &ZooKeeperConfig::with_hosts([proxy.address()]),
            keys.clone(),
            "alpha",
            timing,
        )?;
        let b = ZooKeeperDcs::new(&zk.config(), keys, "beta", timing)?;
        if !a.acquire_leader().await? {
            return Err("alpha could not acquire the leader key".into());
        }
        let session = a.session_id().ok_or("alpha has no session")?;
        b.get_cluster().await?;
        let mut rx = b.subscribe();
        rx.borrow_and_update();

        let cut = Instant::now();
        proxy.cut().await;
        let (woke, woke_wall) = loop {
            tokio::time::timeout(timing.ttl * 4, rx.changed()).await??;
            let at = (cut.elapsed(), SystemTime::now());
            if b.get_cluster().await?.is_unlocked() {
                break at;
            }
        };
        let expired = expiry_time(&log, session)?;
        let latency = woke_wall.duration_since(expired).unwrap_or(Duration::ZERO);
        println!(
            "sample {i}: cut→wake {:>5} ms, server expiry→wake {:>4} ms",
            woke.as_millis(),
            latency.as_millis()
        );
        after_cut.push(woke);
        after_expiry.push(latency);
        drop(a);
    }
    after_expiry.sort();
    after_cut.sort();
    let median = |v: &[Duration]| v[v.len() / 2].as_millis();
    println!(
        "server expiry → other client's watch wake-up: min {} ms, median {} ms, max {} ms",
        after_expiry[0].as_millis(),
        median(&after_expiry),
        after_expiry[after_expiry.len() - 1].as_millis()
    );
    println!(
        "owner cut off → other client's wake-up: min {} ms, median {} ms, max {} ms (ttl {ttl_ms} ms)",
        after_cut[0].as_millis(),
        median(&after_cut),
        after_cut[after_cut.len() - 1].as_millis()
    );
    Ok(())
}

/// When the server logged the expiry of `session` (its log is UTC-timestamped).
fn expiry_time(log: &std::path::Path, session: i64) -> Result<SystemTime, Error> {
    let needle = format!("Expiring session {session:#x}");
    let text = std::fs::read_to_string(log)?;
    let line = text
        .lines()
        .find(|l| l.contains(&needle))
        .ok_or_else(|| format!("no `{needle}` in {}", log.display()))?;
    let stamp = line.split_whitespace().next().ok_or("empty log line")?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y-%m-%dT%H:%M:%S%.3f")?;
    let ms = t.and_utc().timestamp_millis();
    Ok(SystemTime::UNIX_EPOCH + Duration::from_millis(u64::try_from(ms)?))
}
