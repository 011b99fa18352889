//! End to end on real etcd and PostgreSQL 15: bootstrap, unplanned failover, rejoin
//! with pg_rewind, crash restart in place, switchover without losing acknowledged
//! writes, and `/primary` answering 200 on a busy primary whose health query stalls.

mod support;

use serde_json::json;
use std::time::{Duration, Instant};
use support::{wait_until, Cluster, Timing, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn others(c: &Cluster, p: usize) -> Vec<usize> {
    (0..c.nodes.len()).filter(|&i| i != p).collect()
}

#[test]
fn bootstrap_failover_and_rejoin() {
    let mut c = Cluster::new(3, &FAST, "", |_| String::new());
    c.start_all();
    // 1. bootstrap: one initdb, two clones, replication works.
    let p = c.wait_primary(BOOT).expect("a primary");
    for &r in &others(&c, p) {
        assert!(
            c.wait_replica(r, BOOT),
            "{} never streamed",
            c.nodes[r].name
        );
    }
    c.sql(
        p,
        "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)",
    )
    .expect("write on primary");
    for &r in &others(&c, p) {
        let seen = wait_until(Duration::from_secs(20), || {
            c.sql(r, "SELECT count(*) FROM t").ok().filter(|n| n == "1")
        });
        assert!(seen.is_some(), "row not replicated to {}", c.nodes[r].name);
    }
    let cluster = c.api(p, "/cluster").expect("/cluster").1;
    assert_eq!(
        cluster["members"].as_array().map(Vec::len),
        Some(3),
        "{cluster}"
    );

    // 2. node death: kill -9 agent and postmaster of the primary.
    let old = c.nodes[p].name.clone();
    let pm = c.postmaster_pid(p);
    c.kill_agent(p);
    c.kill_postmaster(p);
    assert!(pm.is_some());
    let survivors = others(&c, p);
    let new = wait_until(Duration::from_secs(60), || {
        let primaries: Vec<usize> = survivors
            .iter()
            .copied()
            .filter(|&i| c.api(i, "/primary").is_some_and(|(s, _)| s == 200))
            .collect();
        (primaries.len() == 1).then(|| primaries[0])
    })
    .expect("a replica took over");
    assert_ne!(c.nodes[new].name, old);
    let follower = *survivors.iter().find(|&&i| i != new).expect("follower");
    assert_eq!(c.api(follower, "/primary").map(|r| r.0), Some(503));
    assert!(
        c.wait_replica(follower, Duration::from_secs(60)),
        "the other replica did not follow the new leader"
    );
    c.sql(new, "INSERT INTO t VALUES (2)")
        .expect("write on new primary");
    let history = wait_until(Duration::from_secs(20), || {
        c.key("history").filter(|h| h.contains(&c.nodes[new].name))
    })
    .expect("history entry");
    assert!(history.starts_with("[["), "{history}");

    // Callbacks ran as Patroni runs them: `<script> <action> <role> <scope>`.
    let role_change = format!("on_role_change primary {}", c.scope);
    let fired = wait_until(Duration::from_secs(20), || {
        c.callbacks().contains(&role_change).then_some(())
    });
    assert!(
        fired.is_some(),
        "no on_role_change callback: {:?}",
        c.callbacks()
    );
    assert!(c
        .callbacks()
        .contains(&format!("on_start primary {}", c.scope)));

    // 3. rejoin: the old primary comes back as a replica of the new one.
    c.start(p);
    assert!(
        c.wait_replica(p, Duration::from_secs(90)),
        "old primary did not rejoin"
    );
    let seen = wait_until(Duration::from_secs(30), || {
        c.sql(p, "SELECT count(*) FROM t").ok().filter(|n| n == "2")
    });
    assert!(
        seen.is_some(),
        "rejoined node does not have the new primary's writes"
    );
    assert_eq!(c.api(p, "/primary").map(|r| r.0), Some(503));
}

#[test]
fn postgres_crash_restarts_in_place_and_switchover_keeps_acknowledged_writes() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT));
    c.sql(p, "CREATE TABLE w (id int primary key)")
        .expect("create");

    // 5. kill -9 of the postmaster only: restarted in place, no failover.
    let leader = c.nodes[p].name.clone();
    let old_pm = c.postmaster_pid(p).expect("postmaster pid");
    c.kill_postmaster(p);
    // The health check agrees with Postgres as soon as clients get in (Patroni's
    // suite checks GET / right after its first successful query).
    let answered = wait_until(Duration::from_secs(60), || {
        let new_pm = c.postmaster_pid(p)?;
        (new_pm != old_pm).then_some(())?;
        c.sql(p, "SELECT 1").ok()
    });
    assert!(answered.is_some(), "primary not restarted in place");
    let health = c.api(p, "/primary");
    assert_eq!(
        health.as_ref().map(|r| r.0),
        Some(200),
        "Postgres takes queries again but the agent still says it is down: {health:?}"
    );
    let back = wait_until(Duration::from_secs(60), || {
        c.api(p, "/primary")
            .is_some_and(|(s, _)| s == 200)
            .then_some(())
    });
    assert!(back.is_some(), "primary not restarted in place");
    assert_eq!(
        c.leader().as_deref(),
        Some(leader.as_str()),
        "leadership moved on a crash restart"
    );
    assert_eq!(
        c.sql(p, "SELECT timeline_id FROM pg_control_checkpoint()")
            .ok()
            .as_deref(),
        Some("1")
    );
    assert!(c.wait_replica(r, Duration::from_secs(60)));
    // The replica's walreceiver reconnects after the crash on its own schedule
    // (wal_retrieve_retry_interval); the primary's own view is the ground truth.
    let streaming = wait_until(Duration::from_secs(60), || {
        c.sql(
            p,
            "SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'",
        )
        .ok()
        .filter(|n| n == "1")
    });
    assert!(
        streaming.is_some(),
        "replica did not reconnect after the crash restart"
    );

    // 4. switchover while a client writes: every acknowledged write survives.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ports = (c.nodes[0].pg_port, c.nodes[1].pg_port);
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let mut id = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                id += 1;
                for port in [ports.0, ports.1] {
                    let ok = std::process::Command::new("psql")
                        .args([
                            "-h",
                            "127.0.0.1",
                            "-p",
                            &port.to_string(),
                            "-U",
                            "postgres",
                            "-XAtq",
                            "-v",
                            "ON_ERROR_STOP=1",
                            "-c",
                            &format!("INSERT INTO w VALUES ({id})"),
                        ])
                        .env("PGCONNECT_TIMEOUT", "1")
                        .output()
                        .is_ok_and(|o| o.status.success());
                    if ok {
                        acked.push(id);
                        break;
                    }
                }
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_millis(500));
    let candidate = c.nodes[r].name.clone();
    let (status, body) = c
        .api_post(
            p,
            "/switchover",
            &json!({"leader": leader, "candidate": candidate}),
        )
        .expect("switchover call");
    assert_eq!(status, 200, "{body}");
    let new = c
        .wait_primary(Duration::from_secs(30))
        .expect("new primary");
    assert_eq!(c.nodes[new].name, candidate);
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked = writer.join().expect("writer");
    assert!(!acked.is_empty());
    let rows = c.sql(new, "SELECT id FROM w ORDER BY id").expect("read");
    let present: std::collections::BTreeSet<i64> =
        rows.lines().filter_map(|l| l.parse().ok()).collect();
    let lost: Vec<_> = acked
        .iter()
        .filter(|id| !present.contains(&(**id as i64)))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost in switchover: {lost:?}"
    );
    assert!(
        c.wait_replica(p, Duration::from_secs(60)),
        "old primary did not follow the new one"
    );

    // 6. a crashed primary that cannot start again (a parameter Postgres refuses)
    //    gives the lease up at once, the replica takes over, and the callback says
    //    "demoted" (Patroni 4's role for a primary that stopped being one).
    std::fs::write(
        c.nodes[new].data_dir.join("postgresql.auto.conf"),
        "foo=bar\n",
    )
    .expect("spoil postgresql.auto.conf");
    c.kill_postmaster(new);
    let taken = wait_until(Duration::from_secs(60), || {
        c.api(p, "/primary")
            .is_some_and(|(s, _)| s == 200)
            .then_some(())
    });
    assert!(taken.is_some(), "the replica did not take over");
    let demoted = format!("on_role_change demoted {}", c.scope);
    assert!(
        wait_until(Duration::from_secs(20), || c
            .callbacks()
            .contains(&demoted)
            .then_some(()))
        .is_some(),
        "no '{demoted}' callback: {:?}",
        c.callbacks()
    );
}

#[test]
fn graceful_shutdown_hands_over_and_nofailover_never_promotes() {
    let mut c = Cluster::new(3, &FAST, "", |i| {
        if i == 2 {
            "  nofailover: true\n".into()
        } else {
            String::new()
        }
    });
    c.start(0);
    let p = c.wait_primary(BOOT).expect("pg0 bootstraps");
    assert_eq!(p, 0);
    c.start(1);
    c.start(2);
    assert!(c.wait_replica(1, BOOT) && c.wait_replica(2, BOOT));

    // 9. SIGTERM of the primary's agent: Postgres stops and the lease is released,
    // so the other replica takes over without waiting for the ttl.
    let t0 = Instant::now();
    c.signal_agent(0, libc::SIGTERM);
    let new = wait_until(Duration::from_secs(30), || {
        c.wait_primary(Duration::from_millis(100))
            .filter(|&n| n != 0)
    })
    .expect("takeover");
    let took = t0.elapsed();
    assert_eq!(new, 1, "the nofailover node must not take over");
    assert!(
        c.wait_agent_exit(0, Duration::from_secs(30)),
        "agent did not exit on SIGTERM"
    );
    assert!(
        took < Duration::from_secs(FAST.ttl),
        "takeover waited for the lease to expire ({took:?})"
    );

    // 8. the nofailover replica is never promoted, even as the only survivor.
    c.kill_agent(1);
    c.kill_postmaster(1);
    std::thread::sleep(Duration::from_secs(2 * FAST.ttl + 2));
    assert_eq!(c.api(2, "/primary").map(|r| r.0), Some(503));
    assert_eq!(
        c.api(2, "/health").map(|r| r.0),
        Some(200),
        "nofailover node should keep running"
    );
    assert_eq!(c.leader(), None);
}

/// Peers compare WAL positions through `GET /patroni`, so it reads them from Postgres
/// when asked: with a 10 s loop_wait the HA loop's last reading can be megabytes
/// behind, and a switchover right after a burst of writes must not be refused for a
/// lag that is only the agent's cycle.
#[test]
fn switchover_right_after_a_write_burst_with_a_long_loop_wait() {
    let slow = Timing {
        ttl: 30,
        loop_wait: 10.0,
        retry_timeout: 10.0,
    };
    let c = {
        let mut c = Cluster::new(2, &slow, "", |_| String::new());
        c.start_all();
        c
    };
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(
        c.wait_replica(r, BOOT),
        "{} never streamed",
        c.nodes[r].name
    );
    let lsn = |i: usize, f: &str| -> u64 {
        c.sql(i, &format!("SELECT ({f} - '0/0'::pg_lsn)::bigint"))
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // Far more WAL than maximum_lag_on_failover (1 MiB).
    c.sql(
        p,
        "CREATE TABLE burst (id bigserial primary key, pad text);
         INSERT INTO burst (pad) SELECT repeat(md5(g::text), 40) FROM generate_series(1, 6000) g",
    )
    .expect("write burst");
    let written = lsn(p, "pg_current_wal_lsn()");
    let caught_up = wait_until(Duration::from_secs(30), || {
        (lsn(r, "pg_last_wal_replay_lsn()") >= written).then_some(())
    });
    assert!(caught_up.is_some(), "the replica did not replay the burst");

    let (_, status) = c.api(r, "/patroni").expect("/patroni of the replica");
    let shown = status["xlog"]["replayed_location"].as_u64().unwrap_or(0);
    assert!(
        shown >= written,
        "/patroni shows replayed_location {shown}, Postgres has replayed {written}: {status}"
    );

    let (leader, candidate) = (c.nodes[p].name.clone(), c.nodes[r].name.clone());
    let (code, body) = c
        .api_post(
            p,
            "/switchover",
            &json!({"leader": leader, "candidate": candidate}),
        )
        .expect("POST /switchover");
    assert_eq!(code, 200, "switchover refused: {body}");
    let promoted = wait_until(Duration::from_secs(30), || {
        c.api(r, "/primary").filter(|(s, _)| *s == 200)
    });
    assert!(promoted.is_some(), "{candidate} never became primary");
}

/// A primary whose HA loop cannot read its health (the health query waits for a lock
/// and times out, as it does on a heavily loaded server) still answers `/primary`
/// with 200 while pgbench writes to it: the check asks Postgres itself with a short
/// query on its own connection. Before, the check said 503 ("unknown") until the next
/// cycle, and HAProxy with Patroni's check (`fall 2`) marked the primary down.
#[test]
fn a_primary_whose_health_query_stalls_still_passes_the_primary_check() {
    // A long ttl: the loop tolerates a stalled Postgres for ttl / 3 before acting.
    let t = Timing {
        ttl: 30,
        loop_wait: 1.0,
        retry_timeout: 5.0,
    };
    let mut c = Cluster::new(1, &t, "", |_| String::new());
    c.start_all();
    assert_eq!(c.wait_primary(BOOT), Some(0), "no primary");
    let port = c.nodes[0].pg_port.to_string();
    let pgbench = "/usr/lib/postgresql/15/bin/pgbench";
    let init = std::process::Command::new(pgbench)
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &port,
            "-U",
            "postgres",
            "-i",
            "-q",
            "-s",
            "1",
        ])
        .arg("postgres")
        .output()
        .expect("pgbench -i");
    assert!(init.status.success(), "{init:?}");
    let mut load = std::process::Command::new(pgbench)
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-n"])
        .args(["-c", "8", "-j", "2", "-T", "8", "postgres"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("pgbench");
    // The health query reads pg_settings: holding its lock stalls the query until
    // its statement_timeout (1 s), cycle after cycle, for 4 s.
    let mut lock = std::process::Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &port, "-U", "postgres", "-d", "postgres"])
        .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c"])
        .arg("BEGIN; LOCK TABLE pg_catalog.pg_settings IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(4); COMMIT;")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("psql");
    // `/metrics` shows the HA loop's own view: it says Postgres is not running
    // while the health query stalls.
    let loop_sees_running = |c: &Cluster| {
        c.api(0, "/metrics").and_then(|(_, v)| {
            let text = v.as_str()?.to_string();
            text.lines()
                .find_map(|l| l.strip_prefix("patroni_postgres_running"))
                .map(|rest| rest.trim().ends_with(" 1"))
        })
    };
    let (mut answers, mut stalled) = (Vec::new(), false);
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(5) {
        answers.push(c.api(0, "/primary").map(|r| r.0));
        stalled |= loop_sees_running(&c) == Some(false);
        std::thread::sleep(Duration::from_millis(100));
    }
    let locked = lock.wait().expect("psql");
    let _ = load.wait();
    assert!(locked.success(), "the lock was not taken");
    assert!(
        stalled,
        "the HA loop's health query never stalled: the test proves nothing\n{}",
        c.logs()
    );
    let down: Vec<_> = answers.iter().filter(|a| **a != Some(200)).collect();
    assert!(
        down.is_empty(),
        "/primary did not answer 200 {} times of {}: {answers:?}",
        down.len(),
        answers.len()
    );
    // Still the primary, still leading.
    assert_eq!(c.sql(0, "SELECT pg_is_in_recovery()").as_deref(), Ok("f"));
}
