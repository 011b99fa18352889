//! End to end on real etcd and PostgreSQL 15: a replica's life cycle, on one cluster
//! of two to keep the wall time short. The replica's `pg_basebackup` (through
//! `bin_dir`) refuses its first run: the agent empties the data directory, waits 5 s
//! and runs it once more, and the replica streams. Its postmaster is then SIGKILLed:
//! the agent starts it again. Its `log.format` uses `%(funcName)s`, which renders
//! the emitting module's name.
//!
//! `replica_whose_wal_the_primary_removed_is_re_cloned`: a replica down while the
//! primary (no slots, no `wal_keep_size`) switched WAL segments and checkpointed needs
//! WAL the primary no longer has; it must be re-cloned, not started and stopped for
//! divergence checks forever (issue 25, chaos seed 348231286).

mod support;

use std::path::Path;
use std::time::Duration;
use support::{wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// A bin dir with PostgreSQL 15's tools, where `pg_basebackup` is a wrapper that
/// records each run (`<epoch seconds> <attempt>`) in `calls`, and fails the first
/// one after leaving a file in the target directory.
fn bin_dir_with_flaky_basebackup(dir: &Path, calls: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin-flaky");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "initdb",
        "postgres",
        "pg_ctl",
        "pg_controldata",
        "pg_rewind",
        "pg_isready",
        "psql",
    ] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool))
            .unwrap();
    }
    let wrapper = bin.join("pg_basebackup");
    let body = format!(
        "#!/bin/sh\n\
         n=$(( $(wc -l < {calls} 2>/dev/null || echo 0) + 1 ))\n\
         echo \"$(date +%s.%N) $n\" >> {calls}\n\
         if [ \"$n\" -eq 1 ]; then\n\
           for a in \"$@\"; do [ -n \"$d\" ] && {{ echo junk > \"$a/left-by-failed-attempt\"; d=; }}; [ \"$a\" = -D ] && d=1; done\n\
           echo 'pg_basebackup: error: refused for the test' >&2\n\
           exit 1\n\
         fi\n\
         exec /usr/lib/postgresql/15/bin/pg_basebackup \"$@\"\n",
        calls = calls.display()
    );
    std::fs::write(&wrapper, body).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn replica_clone_is_retried_a_dead_replica_is_restarted_and_func_name_renders() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    let dir = c.path().to_path_buf();
    let calls = dir.join("basebackup-calls.log");
    let bin = bin_dir_with_flaky_basebackup(&dir, &calls);
    c.rewrite_node(
        1,
        Extra {
            postgresql: format!("  bin_dir: {}\n", bin.display()),
            top: "log:\n  format: '%(levelname)s %(funcName)s: %(message)s'\n".into(),
            ..Extra::default()
        },
    );
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "{}", c.logs());
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "{}", c.logs());

    // pg_basebackup ran twice, at least 5 s apart, and the failed attempt's files
    // were removed before the second.
    let runs: Vec<f64> = std::fs::read_to_string(&calls)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}\n{}", c.logs());
    assert!(runs[1] - runs[0] >= 5.0, "{runs:?}");
    assert!(!c.nodes[1].data_dir.join("left-by-failed-attempt").exists());
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    // With `%(funcName)s` the line names the driver module that logged it.
    assert!(
        log1.lines().any(
            |l| l.starts_with("WARNING clone: pg_basebackup failed, trying again in 5 seconds")
        ),
        "{log1}"
    );

    // %(funcName)s: the module that logged the line (the agent's `node` module for
    // the reload it does on SIGHUP).
    c.signal_agent(1, libc::SIGHUP);
    let reloaded = wait_until(Duration::from_secs(20), || {
        let log = std::fs::read_to_string(&c.nodes[1].log).ok()?;
        log.lines()
            .any(|l| l == "INFO node: SIGHUP: reloading the configuration")
            .then_some(())
    });
    assert!(reloaded.is_some(), "{}", c.logs());
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(!log1.contains("%("), "{log1}");

    // A dead replica is started again by its agent.
    let first = c.postmaster_pid(1).expect("replica postmaster");
    c.kill_postmaster(1);
    let again = wait_until(BOOT, || {
        let pid = c.postmaster_pid(1).filter(|p| *p != first)?;
        (c.sql(1, "select pg_is_in_recovery()").ok()? == "t").then_some(pid)
    });
    assert!(again.is_some(), "{}", c.logs());
    assert!(c.wait_replica(1, BOOT), "{}", c.logs());
    assert_eq!(c.wait_primary(BOOT), Some(0), "{}", c.logs());
}

#[test]
fn replica_whose_wal_the_primary_removed_is_re_cloned() {
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            // Nothing keeps WAL for the replica on the primary.
            dcs_postgresql: "      use_slots: false\n      parameters:\n        wal_keep_size: 0MB"
                .into(),
            postgresql: "  remove_data_directory_on_rewind_failure: true".into(),
            ..Extra::default()
        },
    );
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "{}", c.logs());
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "{}", c.logs());
    c.sql(0, "CREATE TABLE t (id int)").unwrap();
    c.sql(0, "INSERT INTO t VALUES (1)").unwrap();
    assert!(
        wait_until(BOOT, || (c.sql(1, "SELECT count(*) FROM t").ok()? == "1")
            .then_some(()))
        .is_some(),
        "{}",
        c.logs()
    );

    // The replica is down while the primary moves on several segments and removes the
    // old ones at its checkpoints.
    c.stop_node(1);
    let first = c
        .sql(0, "SELECT pg_walfile_name(pg_current_wal_lsn())")
        .unwrap();
    for i in 2..8 {
        c.sql(0, &format!("INSERT INTO t VALUES ({i})")).unwrap();
        c.sql(0, "SELECT pg_switch_wal()").unwrap();
        c.sql(0, "CHECKPOINT").unwrap();
    }
    let kept = c
        .sql(
            0,
            &format!("SELECT count(*) FROM pg_ls_waldir() WHERE name = '{first}'"),
        )
        .unwrap();
    assert_eq!(kept, "0", "the primary still has {first}");

    c.start(1);
    let streaming = wait_until(BOOT, || {
        (c.sql(1, "SELECT count(*) FROM t").ok()? == "7"
            && c.sql(1, "SELECT status FROM pg_stat_wal_receiver").ok()? == "streaming")
            .then_some(())
    });
    assert!(streaming.is_some(), "{}", c.logs());
    let log1 = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    assert!(
        log1.contains("pg0 has already removed")
            && log1.contains("removing the data directory to re-clone from pg0"),
        "{log1}"
    );
    assert!(
        !log1.contains("stopping it for a divergence check"),
        "{log1}"
    );
}
