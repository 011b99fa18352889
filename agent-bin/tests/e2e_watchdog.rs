//! `watchdog.mode: required` on real etcd (the frozen primary also on ZooKeeper) and
//! PostgreSQL 15, with the software `testing` driver (a keeper process that resets the
//! node: SIGKILLs the agent and Postgres when it is not kicked in time) and with a
//! device that cannot be opened; pause switches the watchdog off and resume on again;
//! the `testing` driver on a named pipe speaks Patroni's test-harness protocol.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};
use support::{ack_span, wait_until, Cluster, DcsKind, Writer, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// Top-level YAML for a node (the harness appends it after the tags).
const TESTING_WATCHDOG: &str = "watchdog: {mode: required, driver: testing, safety_margin: 2}";
const MISSING_WATCHDOG: &str = "watchdog: {mode: required, device: /nonexistent/watchdog}";

fn process_gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        // A zombie no longer runs anything.
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// The primary's agent freezes; its testing watchdog (timeout ttl − 2 s from the last
/// kick) resets the node, agent and Postgres, before the lease can expire and the
/// replica take over. The two never accept writes at the same time.
#[test]
fn frozen_primary_with_a_required_watchdog_is_reset_before_the_lease_expires() {
    frozen_primary_is_reset_before_the_lease_expires(DcsKind::Etcd);
}

#[test]
fn on_zookeeper_frozen_primary_with_a_required_watchdog_is_reset_before_the_lease_expires() {
    frozen_primary_is_reset_before_the_lease_expires(DcsKind::ZooKeeper);
}

fn frozen_primary_is_reset_before_the_lease_expires(dcs: DcsKind) {
    let mut c = Cluster::on(dcs, 2, &FAST, "", |i| {
        if i == 0 {
            TESTING_WATCHDOG.to_string()
        } else {
            String::new()
        }
    });
    let (p, r) = (0, 1);
    c.start(p);
    assert_eq!(c.wait_primary(BOOT), Some(p), "pg0 did not bootstrap");
    c.start(r);
    assert!(c.wait_replica(r, BOOT), "pg1 did not stream");
    let status = c.api(p, "/patroni").expect("status").1;
    assert!(status.get("watchdog_failed").is_none(), "{status}");
    c.sql(p, "CREATE TABLE w (id bigint primary key)")
        .expect("create table");
    assert!(wait_until(Duration::from_secs(20), || c
        .sql(r, "SELECT count(*) FROM w")
        .ok())
    .is_some());
    let postmaster = c.postmaster_pid(p).expect("postmaster pid");

    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let frozen_at = Instant::now();
    c.signal_agent(p, libc::SIGSTOP);
    let (mut agent_dead, mut pg_dead, mut new_leader) = (None, None, None);
    let end = Instant::now() + Duration::from_secs(60);
    while Instant::now() < end
        && (agent_dead.is_none() || pg_dead.is_none() || new_leader.is_none())
    {
        if agent_dead.is_none() {
            if let Some(st) = c.nodes[p]
                .child
                .as_mut()
                .and_then(|ch| ch.try_wait().ok().flatten())
            {
                agent_dead = Some((Instant::now(), st));
            }
        }
        if pg_dead.is_none() && process_gone(postmaster) {
            pg_dead = Some(Instant::now());
        }
        if new_leader.is_none() && c.leader().as_deref() == Some(c.nodes[r].name.as_str()) {
            new_leader = Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let (agent_dead_at, exit) = agent_dead.expect("the frozen agent was never reset");
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "agent exit: {exit:?}");
    let pg_dead_at = pg_dead.expect("postgres survived the reset");
    let new_leader_at = new_leader.expect("the replica never took the lease");
    assert!(
        agent_dead_at < new_leader_at && pg_dead_at < new_leader_at,
        "the node was reset {:?}/{:?} after freezing, the lease taken over after {:?}",
        agent_dead_at - frozen_at,
        pg_dead_at - frozen_at,
        new_leader_at - frozen_at
    );
    assert!(
        wait_until(Duration::from_secs(30), || c
            .api(r, "/primary")
            .filter(|(s, _)| *s == 200))
        .is_some(),
        "the replica did not become primary"
    );
    std::thread::sleep(Duration::from_secs(1));
    let acks = writer.finish();
    let first_new = ack_span(&acks, r)
        .map(|s| s.0)
        .expect("the new primary accepted writes");
    assert!(
        acks.iter()
            .filter(|a| a.node == p)
            .all(|a| a.at < first_new),
        "split brain: the reset node acknowledged a write after the new primary did"
    );
    // The reset node comes back (as after a reboot) and rejoins as a replica.
    c.nodes[p].child = None;
    c.start(p);
    assert!(
        c.wait_replica(p, BOOT),
        "the reset node did not rejoin as a replica"
    );
}

/// A node whose required watchdog cannot be opened reports `watchdog_failed` and
/// never becomes primary, not even when it is the only one left.
#[test]
fn node_whose_required_watchdog_cannot_be_opened_never_becomes_primary() {
    let mut c = Cluster::new(2, &FAST, "", |i| {
        if i == 1 {
            MISSING_WATCHDOG.to_string()
        } else {
            String::new()
        }
    });
    let (p, r) = (0, 1);
    c.start(p);
    assert_eq!(c.wait_primary(BOOT), Some(p), "pg0 did not bootstrap");
    c.start(r);
    assert!(c.wait_replica(r, BOOT), "pg1 did not stream");
    let status = c.api(r, "/patroni").expect("status").1;
    assert_eq!(status["watchdog_failed"], true, "{status}");

    c.kill_agent(p);
    c.kill_postmaster(p);
    let until = Instant::now() + Duration::from_secs(3 * FAST.ttl);
    while Instant::now() < until {
        assert_ne!(
            c.api(r, "/primary").map(|x| x.0),
            Some(200),
            "promoted without its required watchdog"
        );
        assert_ne!(
            c.leader().as_deref(),
            Some(c.nodes[r].name.as_str()),
            "took the leader lease without its required watchdog"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        c.sql(r, "SELECT pg_is_in_recovery()").as_deref() == Ok("t"),
        "pg1 is not a read-only replica"
    );
}

/// Whether the agent of node `i` has exited, and how.
fn agent_exit(c: &mut Cluster, i: usize) -> Option<std::process::ExitStatus> {
    c.nodes[i]
        .child
        .as_mut()
        .and_then(|ch| ch.try_wait().ok().flatten())
}

/// Pause disables the watchdog (Patroni §2.15): a frozen paused agent is not reset
/// although its watchdog timeout passes many times. After resume the watchdog is
/// armed again: a frozen agent is reset.
#[test]
fn pause_disables_the_watchdog_and_resume_enables_it_again() {
    let mut c = Cluster::new(1, &FAST, "", |_| TESTING_WATCHDOG.to_string());
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    let scope = c.scope.clone();
    let (ok, out) = c.ctl(&["pause", &scope, "--wait"]);
    assert!(ok, "pause failed: {out}");
    // A few cycles, so the paused leader has switched the watchdog off.
    std::thread::sleep(Duration::from_secs(3));

    c.signal_agent(0, libc::SIGSTOP);
    // The watchdog timeout is ttl − 2 = 4 s from the last kick.
    std::thread::sleep(Duration::from_secs(12));
    let exit = agent_exit(&mut c, 0);
    c.signal_agent(0, libc::SIGCONT);
    assert_eq!(exit, None, "the paused node's watchdog reset the agent");

    let (ok, out) = c.ctl(&["resume", &scope, "--wait"]);
    assert!(ok, "resume failed: {out}");
    assert_eq!(
        c.wait_primary(BOOT),
        Some(0),
        "pg0 did not lead again after resume"
    );
    std::thread::sleep(Duration::from_secs(2));
    c.signal_agent(0, libc::SIGSTOP);
    let reset = wait_until(Duration::from_secs(20), || agent_exit(&mut c, 0));
    let exit = reset.expect("after resume the watchdog did not reset the frozen agent");
    assert_eq!(exit.signal(), Some(libc::SIGKILL), "agent exit: {exit:?}");
}

/// Patroni's watchdog test harness: `driver: testing` with `device` naming a named
/// pipe gets Patroni's protocol (`Ctimeout=N\n`, `1` per kick, `V` on close), as its
/// acceptance suite reads it. The leader opens it with timeout ttl − safety_margin,
/// kicks it, and closes it when paused.
#[test]
fn testing_driver_on_a_named_pipe_speaks_patronis_harness_protocol() {
    use std::io::Read;
    use std::sync::{Arc, Mutex};
    let dir = tempfile::tempdir().expect("tempdir");
    let fifo = dir.path().join("watchdog.fifo");
    let c_path = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: creating a FIFO at a path we own as a C string.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    {
        // The harness's reader: reopen after each close, record every byte.
        let (fifo, seen) = (fifo.clone(), seen.clone());
        std::thread::spawn(move || loop {
            let Ok(mut f) = std::fs::File::open(&fifo) else {
                return;
            };
            let mut buf = [0u8; 64];
            while let Ok(n) = f.read(&mut buf) {
                if n == 0 {
                    break;
                }
                seen.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
    }
    let watchdog = format!(
        "watchdog: {{mode: required, driver: testing, device: {}, safety_margin: 2}}",
        fifo.display()
    );
    let mut c = Cluster::new(1, &FAST, "", |_| watchdog.clone());
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    let text = || String::from_utf8_lossy(&seen.lock().unwrap()).to_string();
    let expected_open = format!("Ctimeout={}\n1", FAST.ttl - 2);
    assert!(
        wait_until(Duration::from_secs(10), || text()
            .starts_with(&format!("{expected_open}1"))
            .then_some(()))
        .is_some(),
        "no timeout and kicks on the pipe: {:?}",
        text()
    );
    let scope = c.scope.clone();
    let (ok, out) = c.ctl(&["pause", &scope, "--wait"]);
    assert!(ok, "pause failed: {out}");
    assert!(
        wait_until(Duration::from_secs(10), || text()
            .ends_with('V')
            .then_some(()))
        .is_some(),
        "the paused leader did not close the watchdog: {:?}",
        text()
    );
    let (ok, out) = c.ctl(&["resume", &scope, "--wait"]);
    assert!(ok, "resume failed: {out}");
    assert!(
        wait_until(Duration::from_secs(10), || {
            let t = text();
            t.rsplit_once('V')
                .is_some_and(|(_, after)| after.starts_with(&expected_open))
                .then_some(())
        })
        .is_some(),
        "after resume the watchdog was not opened and kicked again: {:?}",
        text()
    );
}
