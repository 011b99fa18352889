//! End to end on real etcd and PostgreSQL 15: cluster B is a standby cluster of
//! cluster A. B's leader streams from A's primary and never promotes, B's other member
//! cascades from it; when B's standby leader dies the other B node takes over, still
//! read-only; removing `standby_cluster` from B's dynamic config promotes B's leader.
//! The section's `primary_slot_name` and recovery settings reach only the standby
//! leader; `fullautoctl promote-cluster` / `demote-cluster` turn B into a normal
//! cluster and back (its diverged primary rewound against A).

mod support;

use serde_json::json;
use std::time::Duration;
use support::{chown_postgres, wait_until, Cluster, Extra, FAST};

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

fn show(c: &Cluster, i: usize, setting: &str) -> Option<String> {
    c.sql(i, &format!("SHOW {setting}")).ok()
}

fn slot_active_on(c: &Cluster, i: usize, slot: &str) -> Option<()> {
    let q = format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{slot}'");
    (c.sql(i, &q).ok()?.trim() == "t").then_some(())
}

/// The standby leader streams through the slot named by `primary_slot_name` (kept on
/// A as a permanent slot) and runs with the section's recovery settings, which the
/// other B member does not get. Then B is promoted (`fullautoctl promote-cluster`),
/// diverges, and is demoted again (`fullautoctl demote-cluster`): its primary is
/// rewound against A and becomes the standby leader on the slot again.
#[test]
fn standby_leader_uses_the_sections_settings_and_a_promoted_cluster_can_be_demoted_again() {
    let slot = "b_leader";
    let mut a = Cluster::new(
        1,
        &FAST,
        &format!("    slots:\n      {slot}:\n        type: physical"),
        |_| String::new(),
    );
    a.start_all();
    let pa = a.wait_primary(BOOT).expect("A has a primary");
    a.sql(pa, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write on A");
    let a_port = a.nodes[pa].pg_port.to_string();

    // An archive that does not exist: recovery tries it, then streams.
    let restore = format!("cp {}/no-archive/%f %p", a.path().display());
    let section = format!(
        "    standby_cluster:\n      host: 127.0.0.1\n      port: {a_port}\n      primary_slot_name: {slot}\n      restore_command: '{restore}'\n      archive_cleanup_command: 'true'\n      recovery_min_apply_delay: 10ms"
    );
    let mut b = Cluster::new(2, &FAST, &section, |_| String::new());
    b.start(0);
    let sl = wait_until(BOOT, || standby_leader(&b)).expect("B has a standby leader");
    b.start(1);
    let other = 1 - sl;
    assert!(b.wait_replica(other, BOOT), "B's other node never streamed");

    assert!(
        wait_until(BOOT, || slot_active_on(&a, pa, slot)).is_some(),
        "slot {slot} on A never became active"
    );
    assert_eq!(show(&b, sl, "primary_slot_name").as_deref(), Some(slot));
    assert_eq!(show(&b, sl, "restore_command"), Some(restore.clone()));
    assert_eq!(
        show(&b, sl, "archive_cleanup_command").as_deref(),
        Some("true")
    );
    assert_eq!(
        show(&b, sl, "recovery_min_apply_delay").as_deref(),
        Some("10ms")
    );
    // The cascading member keeps its own settings: no archive, the slot on B's leader.
    assert_eq!(show(&b, other, "restore_command").as_deref(), Some(""));
    assert_eq!(
        show(&b, other, "primary_slot_name"),
        Some(b.nodes[other].name.clone())
    );
    a.sql(pa, "INSERT INTO t VALUES (2)").expect("write on A");
    assert!(
        wait_until(BOOT, || has_row(&b, other, 2)).is_some(),
        "B's other node lacks row 2"
    );

    // promote-cluster: B's standby leader becomes a primary and diverges from A.
    let (ok, out) = b.ctl(&["promote-cluster", "--force"]);
    assert!(ok, "promote-cluster failed: {out}");
    let p = b.wait_primary(BOOT).expect("B's leader promoted");
    assert_eq!(p, sl);
    b.sql(p, "INSERT INTO t VALUES (100)")
        .expect("B accepts writes after promotion");
    a.sql(pa, "INSERT INTO t VALUES (3)").expect("write on A");

    // demote-cluster: B's primary is rewound against A and follows it again.
    let (ok, out) = b.ctl(&[
        "demote-cluster",
        "--host",
        "127.0.0.1",
        "--port",
        &a_port,
        "--primary-slot-name",
        slot,
        "--force",
    ]);
    assert!(ok, "demote-cluster failed: {out}");
    let demoted = wait_until(BOOT, || standby_leader(&b).filter(|&i| i == sl))
        .expect("B's primary became the standby leader");
    assert!(
        wait_until(BOOT, || has_row(&b, demoted, 3)).is_some(),
        "the demoted leader lacks A's row 3"
    );
    assert_eq!(
        b.sql(demoted, "SELECT count(*) FROM t WHERE id = 100")
            .as_deref(),
        Ok("0"),
        "B's diverged write survived: not rewound"
    );
    assert!(
        wait_until(BOOT, || slot_active_on(&a, pa, slot)).is_some(),
        "the demoted leader does not stream through {slot}"
    );
    assert!(b.sql(demoted, "INSERT INTO t VALUES (99)").is_err());
    // Its replica keeps following it.
    a.sql(pa, "INSERT INTO t VALUES (4)").expect("write on A");
    assert!(
        wait_until(BOOT, || has_row(&b, other, 4)).is_some(),
        "B's other node does not follow the demoted leader"
    );
}

/// `standby_cluster` with `restore_command` alone: B's first node is created by the
/// section's `create_replica_methods` (a script restoring a base backup of A, standing
/// in for WAL-G / pgBackRest) and then recovers from A's WAL archive only, without a
/// streaming connection.
#[test]
fn restore_command_alone_makes_a_standby_cluster_that_recovers_from_the_archive() {
    let mut a = Cluster::new(1, &FAST, "", |_| String::new());
    let archive = a.path().join("archive");
    std::fs::create_dir(&archive).expect("archive dir");
    chown_postgres(&archive);
    let config = std::fs::read_to_string(&a.nodes[0].config).expect("A's config");
    let config = config.replace(
        "    fsync: 'off'\n",
        &format!(
            "    fsync: 'off'\n    archive_mode: 'on'\n    archive_command: 'cp %p {}/%f'\n",
            archive.display()
        ),
    );
    std::fs::write(&a.nodes[0].config, config).expect("rewrite A's config");
    a.start_all();
    let pa = a.wait_primary(BOOT).expect("A has a primary");
    a.sql(pa, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write on A");

    let restore = format!("cp {}/%f %p", archive.display());
    let section = format!(
        "    standby_cluster:\n      restore_command: '{restore}'\n      create_replica_methods: [from_backup]"
    );
    let mut b = Cluster::new(1, &FAST, &section, |_| String::new());
    let from_backup = b.script(
        "from_backup.sh",
        &format!(
            "echo \"$@\" >> {log}\nfor a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\";; esac; done\npg_basebackup -h 127.0.0.1 -p {port} -U postgres -D \"$d\" -X stream --no-sync\n",
            log = b.path().join("from_backup.args").display(),
            port = a.nodes[pa].pg_port
        ),
    );
    b.rewrite_node(
        0,
        Extra {
            bootstrap: String::new(),
            postgresql: format!("  from_backup:\n    command: {}\n", from_backup.display()),
            ..Extra::default()
        },
    );
    b.start(0);
    let sl = wait_until(BOOT, || standby_leader(&b)).expect("B has a standby leader");
    let args = std::fs::read_to_string(b.path().join("from_backup.args")).unwrap_or_default();
    assert!(
        args.contains("--datadir=") && !args.contains("postgres://"),
        "the method did not run, or got a connstring without a host to stream from: {args}"
    );
    assert_eq!(show(&b, sl, "primary_conninfo").as_deref(), Some(""));
    assert_eq!(show(&b, sl, "restore_command"), Some(restore));

    // A row reaches B only through the archive.
    a.sql(pa, "INSERT INTO t VALUES (2)").expect("write on A");
    a.sql(pa, "SELECT pg_switch_wal()")
        .expect("switch wal on A");
    assert!(
        wait_until(BOOT, || has_row(&b, sl, 2)).is_some(),
        "B never replayed row 2 from the archive"
    );
    assert_eq!(b.api(sl, "/primary").map(|(s, _)| s), Some(503));
    assert!(b.sql(sl, "INSERT INTO t VALUES (99)").is_err());
}
