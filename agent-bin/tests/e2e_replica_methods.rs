//! End to end on real etcd and PostgreSQL 15: replicas created by custom
//! `create_replica_methods` (standing in for WAL-G / pgBackRest), the fallback to
//! `basebackup` when a method fails, and a `no_leader` method restoring a member of a
//! cluster that has no leader.

mod support;

use std::path::Path;
use std::time::Duration;
use support::{pg_tool, wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Shell lines that set `$d` (data dir) and `$conn` (connstring) from the arguments.
const PARSE_ARGS: &str = "for a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${a#--datadir=}\";; --connstring=*) conn=\"${a#--connstring=}\";; esac; done\n";

fn methods(first: &str, script: &Path, no_leader: bool) -> Extra {
    Extra {
        bootstrap: String::new(),
        postgresql: format!(
            "  create_replica_methods: [{first}, basebackup]\n  {first}:\n    command: {}\n    no_leader: {no_leader}\n",
            script.display()
        ),
        ..Extra::default()
    }
}

#[test]
fn custom_replica_method_creates_a_replica_and_a_failing_one_falls_back_to_basebackup() {
    let mut c = Cluster::new(3, &FAST, "", |_| String::new());
    let copy = c.script(
        "copy.sh",
        &format!(
            "echo \"$@\" >> {log}\n{PARSE_ARGS}pg_basebackup -d \"$conn\" -D \"$d\" -X stream --no-sync || exit 1\ntouch \"$d/made_by_copyscript\"\n",
            log = c.path().join("copy.args").display()
        ),
    );
    let broken = c.script(
        "broken.sh",
        &format!(
            "echo \"$@\" >> {log}\n{PARSE_ARGS}echo junk > \"$d/junk\"\nexit 2\n",
            log = c.path().join("broken.args").display()
        ),
    );
    c.rewrite_node(1, methods("copyscript", &copy, false));
    c.rewrite_node(2, methods("copyscript", &broken, false));
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.sql(0, "CREATE TABLE t (id int); INSERT INTO t VALUES (1)")
        .expect("write");
    c.start(1);
    c.start(2);
    for r in [1, 2] {
        assert!(
            c.wait_replica(r, BOOT),
            "{} never streamed",
            c.nodes[r].name
        );
    }

    // pg1's data directory is the script's work, made with Patroni's arguments.
    assert!(c.nodes[1].data_dir.join("made_by_copyscript").exists());
    assert_eq!(
        lines(&c.path().join("copy.args")),
        vec![format!(
            "--scope={} --role=replica --datadir={} --connstring=postgres://postgres@127.0.0.1:{}/postgres",
            c.scope,
            c.nodes[1].data_dir.display(),
            c.nodes[0].pg_port
        )]
    );
    // pg2's method failed: basebackup took over on an emptied data directory.
    assert_eq!(lines(&c.path().join("broken.args")).len(), 1);
    assert!(!c.nodes[2].data_dir.join("junk").exists());
    assert!(!c.nodes[2].data_dir.join("made_by_copyscript").exists());
    c.sql(0, "INSERT INTO t VALUES (2)").expect("write");
    for r in [1, 2] {
        let seen = wait_until(Duration::from_secs(20), || {
            c.sql(r, "SELECT count(*) FROM t").ok().filter(|n| n == "2")
        });
        assert!(seen.is_some(), "{} misses rows", c.nodes[r].name);
    }
}

#[test]
fn no_leader_method_restores_a_member_while_the_cluster_has_no_leader() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.sql(
        0,
        "CREATE TABLE t (id int); INSERT INTO t SELECT generate_series(1, 42)",
    )
    .expect("write");
    // The "backup store".
    let backup = c.path().join("backup");
    let port = c.nodes[0].pg_port.to_string();
    pg_tool(
        "pg_basebackup",
        &[
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-D",
            &backup.to_string_lossy(),
            "-X",
            "stream",
            "--checkpoint=fast",
            "--no-sync",
        ],
    );
    // The whole cluster is lost: no leader any more, but it was initialized.
    c.stop_node(0);
    let leaderless = wait_until(Duration::from_secs(30), || {
        c.leader().is_none().then_some(())
    });
    assert!(leaderless.is_some(), "leader key did not expire");
    assert!(c.key("initialize").is_some());

    let restore = c.script(
        "restore.sh",
        &format!(
            "echo \"$@\" >> {log}\n{PARSE_ARGS}cp -a {b}/. \"$d\"/\n",
            log = c.path().join("restore.args").display(),
            b = backup.display()
        ),
    );
    c.rewrite_node(1, methods("restore", &restore, true));
    c.start(1);
    // Restored from the backup, then (alone and healthiest) it takes over.
    let p = wait_until(BOOT, || {
        c.api(1, "/primary").filter(|(s, _)| *s == 200).map(|_| 1)
    });
    assert_eq!(p, Some(1), "the restored member did not take over");
    assert_eq!(c.sql(1, "SELECT count(*) FROM t").as_deref(), Ok("42"));
    let args = lines(&c.path().join("restore.args"));
    assert_eq!(
        args,
        vec![format!(
            "--scope={} --role=replica --datadir={} --connstring=",
            c.scope,
            c.nodes[1].data_dir.display()
        )]
    );
    let log = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log.contains("no leader: creating a replica with a no_leader replica method"),
        "{log}"
    );
}

/// A replica creation that hangs (a stuck backup download) is refused as "already in
/// progress" by a plain `POST /reinitialize`, and cancelled by one with `force`: the
/// hanging command is killed and the replica is cloned again.
#[test]
fn forced_reinitialize_cancels_a_hanging_replica_creation() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    let marker = c.path().join("hung-once");
    // Hangs the first time in a process of its own (the download), copies after.
    let script = c.script(
        "hang_once.sh",
        &format!(
            "{PARSE_ARGS}if [ ! -e {m} ]; then sleep 600 & echo $! > {m}; wait; exit 1; fi\npg_basebackup -d \"$conn\" -D \"$d\" -X stream --no-sync\n",
            m = marker.display()
        ),
    );
    c.rewrite_node(1, methods("hang_once", &script, false));
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    c.start(1);
    let hanging = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&marker)
            .is_ok_and(|p| !p.trim().is_empty())
            .then_some(())
    });
    assert!(hanging.is_some(), "the replica method never ran");
    std::thread::sleep(Duration::from_secs(1));

    let plain = c.api_post(1, "/reinitialize", &serde_json::json!({}));
    assert!(
        plain.as_ref().is_some_and(|(s, _)| *s == 503),
        "plain reinitialize while cloning: {plain:?}"
    );
    let forced = c.api_post(1, "/reinitialize", &serde_json::json!({"force": true}));
    assert!(
        forced.as_ref().is_some_and(|(s, _)| *s == 200),
        "forced reinitialize: {forced:?}"
    );
    assert!(
        c.wait_replica(1, BOOT),
        "the replica was not cloned again after the cancel\n{}",
        c.logs()
    );
    // What the cancelled command had started is gone too.
    let download: i32 = std::fs::read_to_string(&marker)
        .ok()
        .and_then(|p| p.trim().parse().ok())
        .expect("the script wrote its download's pid");
    let alive = std::fs::read_to_string(format!("/proc/{download}/cmdline"))
        .is_ok_and(|cmd| cmd.starts_with("sleep"));
    assert!(
        !alive,
        "the hanging download {download} outlived the cancel"
    );
}
