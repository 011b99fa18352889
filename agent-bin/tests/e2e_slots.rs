//! End to end on real etcd and PostgreSQL 15: a permanent physical slot from the
//! dynamic config exists on the primary next to the member slots, and the new primary
//! keeps it after an unplanned failover.

mod support;

use std::time::Duration;
use support::{wait_until, Cluster, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn has_slot(c: &Cluster, i: usize, name: &str) -> bool {
    c.sql(
        i,
        &format!("SELECT count(*) FROM pg_replication_slots WHERE slot_name = '{name}' AND slot_type = 'physical'"),
    )
    .is_ok_and(|n| n == "1")
}

#[test]
fn permanent_physical_slot_survives_a_failover() {
    let mut c = Cluster::new(
        2,
        &FAST,
        "    slots:\n      backup_tool:\n        type: physical",
        |_| String::new(),
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "replica never streamed");
    let kept = wait_until(Duration::from_secs(30), || {
        has_slot(&c, p, "backup_tool").then_some(())
    });
    assert!(
        kept.is_some(),
        "no permanent slot on the primary\n{}",
        c.logs()
    );
    let member_slot = c.nodes[r].name.clone();
    assert!(
        has_slot(&c, p, &member_slot),
        "the member slot is gone next to the permanent one"
    );

    c.kill_agent(p);
    c.kill_postmaster(p);
    let new = c
        .wait_primary(Duration::from_secs(60))
        .expect("the replica took over");
    assert_eq!(new, r);
    let kept = wait_until(Duration::from_secs(30), || {
        has_slot(&c, new, "backup_tool").then_some(())
    });
    assert!(
        kept.is_some(),
        "the new primary does not keep the permanent slot"
    );
}
