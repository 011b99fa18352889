//! Measures promote, rewind and a ~100 MB clone on real servers in a temp dir and
//! prints the timings (run through `bench/pg_driver_times.sh`).

use ha_core::{Postgres, StartRole, StopMode};
use pg_driver::testing::{wait_for, TestEnv};
use std::time::{Duration, Instant};

const T: Duration = Duration::from_secs(120);

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let megabytes: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100);
    let env = TestEnv::durable();
    let a = env.primary("bench-a").await;
    a.driver
        .apply_slot_changes(&pg_driver::testing::create_physical(&["bench_b".into()]))
        .await
        .expect("slot");
    // ~250 bytes per row on disk.
    let rows = megabytes * 1024 * 1024 / 250;
    let t0 = Instant::now();
    a.sql(&format!(
        "CREATE TABLE big AS SELECT g, repeat('x', 200) AS pad FROM generate_series(1, {rows}) g; CHECKPOINT"
    ))
    .await
    .expect("fill");
    let size = a
        .scalar("SELECT pg_size_pretty(pg_database_size('postgres'))")
        .await
        .expect("size")
        .unwrap_or_default();
    println!(
        "data: {rows} rows, database size {size} (filled in {:.2?})",
        t0.elapsed()
    );

    let b = env.driver(env.config("bench-b"));
    let t0 = Instant::now();
    Postgres::clone_from(&*b, &a.upstream())
        .await
        .expect("clone");
    let clone = t0.elapsed();
    println!("clone (pg_basebackup -X stream, {size}): {clone:.2?}");
    b.start(
        &StartRole::Replica {
            upstream: Some(a.upstream()),
        },
        T,
    )
    .await
    .expect("start replica");
    let b = pg_driver::testing::TestNode::new(b);
    a.sql("CREATE TABLE marker(v int); INSERT INTO marker VALUES (1)")
        .await
        .expect("marker");
    wait_for(Duration::from_secs(60), || async {
        b.scalar("SELECT count(*) FROM marker").await.ok().flatten()
    })
    .await
    .expect("replica caught up");

    let t0 = Instant::now();
    b.driver.promote(T).await.expect("promote");
    let promote = t0.elapsed();
    println!("promote (pg_promote wait=true): {promote:.2?}");
    b.driver
        .apply_slot_changes(&pg_driver::testing::create_physical(&["bench_a".into()]))
        .await
        .expect("slot on new primary");

    // The old primary diverges: 10 MB of writes it alone has.
    a.sql("CREATE TABLE diverged AS SELECT g, repeat('y', 200) AS pad FROM generate_series(1, 40000) g")
        .await
        .expect("diverge");
    a.driver
        .stop(StopMode::Fast, T)
        .await
        .expect("stop old primary");
    let t0 = Instant::now();
    let needs = a.driver.needs_rewind(&b.upstream()).await.expect("check");
    let check = t0.elapsed();
    assert!(needs, "old primary must need a rewind");
    let t0 = Instant::now();
    a.driver.rewind(&b.upstream()).await.expect("rewind");
    let rewind = t0.elapsed();
    println!("divergence check: {check:.2?}");
    println!("rewind (CHECKPOINT on source + pg_rewind): {rewind:.2?}");
    let t0 = Instant::now();
    a.driver
        .start(
            &StartRole::Replica {
                upstream: Some(b.upstream()),
            },
            T,
        )
        .await
        .expect("start rewound");
    println!(
        "start of the rewound member as replica: {:.2?}",
        t0.elapsed()
    );
    println!(
        "RESULT clone_ms={} promote_ms={} rewind_ms={} size=\"{size}\"",
        clone.as_millis(),
        promote.as_millis(),
        rewind.as_millis()
    );
}
