//! End to end on real etcd and PostgreSQL 15: cluster B is a standby cluster of
//! cluster A. B's leader streams from A's primary and never promotes, B's other member
//! cascades from it; when B's standby leader dies the other B node takes over, still
//! read-only; removing `standby_cluster` from B's dynamic config promotes B's leader.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{wait_until, Cluster, FAST};

const BOOT: Duration = Duration::from_secs(120);

fn standby_leader(c: &Cluster) -> Option<usize> {
    let ok: Vec<usize> = (0..c.nodes.len())
        .filter(|&i| c.api(i, "/standby-leader").is_some_and(|(s, _)| s == 200))
        .collect();
    (ok.len() == 1).then(|| ok[0])
}

fn has_row(c: &Cluster, i: usize, id: i32) -> Option<()> {
    let q = format!("SELECT count(*) FROM t WHERE id = {id}");
    (c.sql(i, &q).ok()?.trim() == "1").then_some(())
}

#[test]
fn standby_cluster_follows_the_remote_fails_over_and_promotes_on_request() {
    let mut a = Cluster::new(2, &FAST, "", |_| String::new());
    a.start_all();
    let pa = a.wait_primary(BOOT).expect("A has a primary");
    a.sql(pa, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write on A");

    let remote = format!(
        "    standby_cluster:\n      host: 127.0.0.1\n      port: {}",
        a.nodes[pa].pg_port
    );
    let mut b = Cluster::new(2, &FAST, &remote, |_| String::new());
    b.start(0);
    let sl = wait_until(BOOT, || standby_leader(&b)).expect("B has a standby leader");
    b.start(1);
    let other = 1 - sl;
    assert!(b.wait_replica(other, BOOT), "B's other node never streamed");

    // Rows written on A reach both B nodes; B's leader is not a primary.
    a.sql(pa, "INSERT INTO t VALUES (2)").expect("write on A");
    for i in 0..2 {
        assert!(
            wait_until(BOOT, || has_row(&b, i, 2)).is_some(),
            "B node {i} lacks row 2"
        );
    }
    assert_eq!(b.api(sl, "/primary").map(|(s, _)| s), Some(503));
    let (_, patroni) = b.api(sl, "/patroni").expect("/patroni");
    assert_eq!(patroni["role"], "standby_leader", "{patroni}");
    assert!(
        b.sql(sl, "INSERT INTO t VALUES (99)").is_err(),
        "standby leader accepted a write"
    );

    // The standby leader dies: the other B node takes over, still read-only.
    b.kill_agent(sl);
    b.kill_postmaster(sl);
    let new_sl = wait_until(BOOT, || standby_leader(&b).filter(|&i| i == other))
        .expect("the other B node became standby leader");
    a.sql(pa, "INSERT INTO t VALUES (3)").expect("write on A");
    assert!(
        wait_until(BOOT, || has_row(&b, new_sl, 3)).is_some(),
        "new standby leader lacks row 3"
    );
    assert!(b.sql(new_sl, "INSERT INTO t VALUES (99)").is_err());

    // Removing standby_cluster promotes B's leader.
    let patched = b.api_patch(new_sl, "/config", &json!({"standby_cluster": null}));
    assert_eq!(patched.map(|(s, _)| s), Some(200));
    let p = b.wait_primary(BOOT).expect("B's leader promoted");
    assert_eq!(p, new_sl);
    b.sql(p, "INSERT INTO t VALUES (4)")
        .expect("B accepts writes after promotion");
}
