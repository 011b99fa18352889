//! Rolling replacement of Patroni by fullauto in a running cluster, and back (issue 22),
//! on real etcd, PostgreSQL 15 and Patroni (Debian's 3.0.2, PyPI's 4.1).
//!
//! Three Patroni members run in synchronous mode (both replicas synchronous, so either
//! may be a switchover candidate) while a client writes and records every commit the
//! server acknowledged. One replica's agent is swapped for fullauto on
//! the same config file and data directory; it rejoins without a new clone. patronictl
//! switches over to it; it is then killed with SIGKILL (agent and postmaster) and a
//! Patroni replica takes over, with the fullauto member rejoining as its replica. The
//! other Patroni agents are replaced, and Patroni is put back on one node, which
//! patronictl makes the leader again. After every step: one primary, every replica
//! streaming, both named in `sync`, no acknowledged commit missing on the primary, each
//! data directory's configuration files its agent's, nobody repaired anything.
//! The longest pause between two acknowledged commits during each step is printed: the
//! write-unavailability the README's runbook quotes (a measurement, not asserted).

mod support;

use serde_json::Value;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::patroni::Patroni;
use support::{wait_until, Cluster, Extra, Timing};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// Patroni 4 refuses a ttl under 20 s and a retry_timeout under 3 s.
const TIMING: Timing = Timing {
    ttl: 20,
    loop_wait: 1.0,
    retry_timeout: 3.0,
};
const WAIT: Duration = Duration::from_secs(90);
const MARKER: &str = "migrate-marker";

#[test]
fn patroni_3_0_cluster_replaced_by_fullauto_one_node_at_a_time_and_back() {
    rolling_replacement(Patroni::V3);
}

#[test]
fn patroni_4_1_cluster_replaced_by_fullauto_one_node_at_a_time_and_back() {
    rolling_replacement(Patroni::V4);
}

/// Who manages a node right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agent {
    Patroni,
    Fullauto,
}

/// One step of the rolling replacement and the longest wait for a commit during it.
struct Step {
    what: String,
    unavailable: Duration,
}

struct Migration {
    c: Cluster,
    kind: Patroni,
    agents: Vec<Agent>,
    load: Load,
    steps: Vec<Step>,
}

fn rolling_replacement(kind: Patroni) {
    let started = Instant::now();
    // Make the virtualenv (once per machine) before any server runs.
    let _ = kind.program("patroni");
    let mut c = Cluster::new(
        3,
        &TIMING,
        "    synchronous_mode: true\n    synchronous_node_count: 2",
        |_| String::new(),
    );
    for i in 0..3 {
        let dir = c.path().to_path_buf();
        c.rewrite_node(
            i,
            Extra {
                postgresql: format!(
                    "  bin_dir: /usr/lib/postgresql/15/bin\n  pgpass: {}/pgpass-pg{i}",
                    dir.display()
                ),
                ..Extra::default()
            },
        );
    }
    c.start_patroni(0, kind);
    assert_eq!(
        c.wait_primary(WAIT),
        Some(0),
        "Patroni never bootstrapped pg0"
    );
    c.start_patroni(1, kind);
    c.start_patroni(2, kind);
    for r in [1, 2] {
        assert!(streaming(&c, r), "pg{r} never streamed under Patroni");
    }
    c.sql(0, "CREATE TABLE w (id bigint PRIMARY KEY)")
        .expect("create table");
    let load = Load::start(&c);
    let mut m = Migration {
        c,
        kind,
        agents: vec![Agent::Patroni; 3],
        load,
        steps: Vec::new(),
    };
    m.check("Patroni cluster", 0);

    // A replica's agent is replaced: same config file, same data directory.
    m.step("pg1: Patroni replaced by fullauto", 0, |m| {
        m.mark(1);
        m.replace(1, Agent::Fullauto);
    });
    m.assert_not_recloned(1);

    // patronictl switches over to the fullauto member.
    m.step("patronictl switchover to pg1 (fullauto)", 1, |m| {
        let (ok, out) = m.c.patronictl(
            m.kind,
            0,
            &[
                "switchover",
                "--leader",
                "pg0",
                "--candidate",
                "pg1",
                "--force",
            ],
        );
        // patronictl exits 0 when the leader refuses (412): read what it says.
        assert!(
            ok && out.contains("Successfully"),
            "patronictl switchover: {out}"
        );
        m.wait_leader(1);
    });
    let (ok, list) = m.c.patronictl(m.kind, 0, &["list"]);
    assert!(ok && list.contains("pg1"), "patronictl list: {list}");
    println!("{list}");

    // The fullauto leader dies with its postmaster: a Patroni member takes over.
    let mut new_leader = 0;
    m.step("SIGKILL of the fullauto leader pg1", usize::MAX, |m| {
        m.c.kill_agent(1);
        m.c.kill_postmaster(1);
        new_leader = m.wait_new_leader(&[0, 2]);
        m.c.start(1);
    });
    assert_eq!(m.agents[new_leader], Agent::Patroni);
    // pg1 rejoined on its own (pg_rewind may have run: it drops files the new primary
    // lacks, the marker among them, so it is not looked for here).

    // The other Patroni agents are replaced; the leader's after a switchover away.
    let other = 2 - new_leader; // the remaining Patroni replica (0 or 2)
    m.step(
        &format!("pg{other}: Patroni replaced by fullauto"),
        new_leader,
        |m| {
            m.mark(other);
            m.replace(other, Agent::Fullauto);
        },
    );
    m.assert_not_recloned(other);
    m.step("fullautoctl switchover to pg1", 1, |m| {
        let leader = format!("pg{new_leader}");
        let (ok, out) = m.c.ctl(&[
            "switchover",
            "--leader",
            &leader,
            "--candidate",
            "pg1",
            "--force",
        ]);
        assert!(ok, "fullautoctl switchover: {out}");
        m.wait_leader(1);
    });
    m.step(
        &format!("pg{new_leader}: Patroni replaced by fullauto"),
        1,
        |m| {
            m.mark(new_leader);
            m.replace(new_leader, Agent::Fullauto);
        },
    );
    m.assert_not_recloned(new_leader);

    // And back: Patroni on one node, made the leader by patronictl.
    m.step("pg2: fullauto replaced by Patroni", 1, |m| {
        m.mark(2);
        m.replace(2, Agent::Patroni);
    });
    m.assert_not_recloned(2);
    m.step("patronictl switchover to pg2 (Patroni)", 2, |m| {
        let (ok, out) = m.c.patronictl(
            m.kind,
            0,
            &[
                "switchover",
                "--leader",
                "pg1",
                "--candidate",
                "pg2",
                "--force",
            ],
        );
        // patronictl exits 0 when the leader refuses (412): read what it says.
        assert!(
            ok && out.contains("Successfully"),
            "patronictl switchover: {out}"
        );
        m.wait_leader(2);
    });
    let (ok, list) = m.c.ctl(&["list"]);
    assert!(ok && list.contains("pg2"), "fullautoctl list: {list}");
    println!("{list}");

    let acks = m.load.finish();
    let leader = 2;
    let present = present_ids(&m.c, leader).expect("read the final primary");
    let lost: Vec<i64> = acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect();
    println!(
        "Patroni {:?}: write-unavailability per step (longest wait between acknowledged commits):",
        m.kind
    );
    for s in &m.steps {
        println!("  {:>6} ms  {}", s.unavailable.as_millis(), s.what);
    }
    println!(
        "{} commits acknowledged, {} missing on the final primary; test took {} s",
        acks.len(),
        lost.len(),
        started.elapsed().as_secs()
    );
    assert!(lost.is_empty(), "acknowledged commits lost: {lost:?}");
}

impl Migration {
    /// Runs `f` as a step that must end with `leader` as the one primary (usize::MAX:
    /// whichever the step found), then checks the cluster and records the longest wait
    /// for a commit while it ran.
    fn step(&mut self, what: &str, leader: usize, f: impl FnOnce(&mut Migration)) {
        println!("step: {what}");
        let from = Instant::now();
        f(self);
        let leader = if leader == usize::MAX {
            self.c.wait_primary(WAIT).expect("one primary")
        } else {
            leader
        };
        self.check(what, leader);
        let unavailable = self.load.longest_gap(from, Instant::now());
        self.steps.push(Step {
            what: what.to_string(),
            unavailable,
        });
    }

    /// Stops node `i`'s agent as an operator would (SIGTERM: it stops PostgreSQL too)
    /// and starts `to` on the same config file and data directory.
    fn replace(&mut self, i: usize, to: Agent) {
        self.c.signal_agent(i, libc::SIGTERM);
        assert!(
            self.c.wait_agent_exit(i, Duration::from_secs(60)),
            "pg{i}'s agent did not stop on SIGTERM"
        );
        assert!(
            wait_until(Duration::from_secs(30), || self
                .c
                .postmaster_pid(i)
                .is_none_or(|pid| unsafe { libc::kill(pid, 0) } != 0)
                .then_some(()))
            .is_some(),
            "pg{i}'s PostgreSQL still runs after its agent stopped"
        );
        match to {
            Agent::Fullauto => self.c.start(i),
            Agent::Patroni => self.c.start_patroni(i, self.kind),
        }
        self.agents[i] = to;
    }

    /// Puts a file into node `i`'s data directory: a new clone would not have it.
    fn mark(&self, i: usize) {
        let path = self.c.nodes[i].data_dir.join(MARKER);
        std::fs::write(&path, "kept\n").expect("marker");
        support::chown_postgres(&path);
    }

    fn assert_not_recloned(&self, i: usize) {
        assert!(
            self.c.nodes[i].data_dir.join(MARKER).exists(),
            "pg{i}'s data directory was made anew (re-clone)"
        );
    }

    fn wait_leader(&mut self, i: usize) {
        let name = format!("pg{i}");
        let c = &mut self.c;
        assert!(
            wait_until(WAIT, || (c.leader().as_deref() == Some(name.as_str())
                && c.api(i, "/primary").is_some_and(|(s, _)| s == 200))
            .then_some(()))
            .is_some(),
            "{name} never became the leader: leader key {:?}",
            c.leader()
        );
    }

    /// The one of `candidates` that became primary.
    fn wait_new_leader(&self, candidates: &[usize]) -> usize {
        wait_until(WAIT, || {
            let up: Vec<usize> = candidates
                .iter()
                .copied()
                .filter(|&i| self.c.api(i, "/primary").is_some_and(|(s, _)| s == 200))
                .collect();
            (up.len() == 1).then(|| up[0])
        })
        .expect("no member took over")
    }

    /// One primary (`leader`, the leader key's holder), the others streaming from it and
    /// both named synchronous standbys in `sync`, every acknowledged commit on the
    /// primary, and the primary accepting commits again.
    fn check(&mut self, what: &str, leader: usize) {
        let name = format!("pg{leader}");
        let c = &mut self.c;
        assert_eq!(
            c.wait_primary(WAIT),
            Some(leader),
            "{what}: not one primary"
        );
        assert_eq!(
            c.leader().as_deref(),
            Some(name.as_str()),
            "{what}: leader key"
        );
        for r in (0..3).filter(|&r| r != leader) {
            assert!(
                streaming(c, r),
                "{what}: pg{r} ({:?}) does not stream",
                self.agents[r]
            );
            assert_eq!(c.sql(r, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"));
        }
        for i in 0..3 {
            files_of(c, i, self.agents[i], what);
        }
        let sync = wait_until(WAIT, || {
            let v: Value = serde_json::from_str(&c.key("sync")?).ok()?;
            let standby = v["sync_standby"].as_str()?.to_string();
            let all = (0..3)
                .filter(|&r| r != leader)
                .all(|r| standby.split(',').any(|s| s == format!("pg{r}")));
            (v["leader"] == name.as_str() && all).then_some(standby)
        });
        assert!(sync.is_some(), "{what}: sync key {:?}", c.key("sync"));
        let since = Instant::now();
        assert!(
            wait_until(WAIT, || self.load.acked_after(since).then_some(())).is_some(),
            "{what}: no commit acknowledged after the step"
        );
        // Acknowledged before the read began, so the read must see them.
        let acked = self.load.acks();
        let present = present_ids(&self.c, leader).expect("read the primary");
        let lost: Vec<i64> = acked
            .iter()
            .map(|a| a.0)
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{what}: acknowledged commits missing: {lost:?}"
        );
        println!(
            "ok: {what}: primary {name}, agents {:?}, sync standby {}",
            self.agents,
            sync.unwrap_or_default()
        );
    }
}

/// The configuration files in node `i`'s data directory are its agent's: Patroni's
/// generated postgresql.conf over postgresql.base.conf, or under fullauto the base file
/// and the include of fullauto's settings (none of Patroni's rendered settings left
/// behind). postgresql.base.conf, Patroni's base, stays in place either way.
fn files_of(c: &Cluster, i: usize, agent: Agent, what: &str) {
    let dir = &c.nodes[i].data_dir;
    let conf = std::fs::read_to_string(dir.join("postgresql.conf")).expect("postgresql.conf");
    let base = std::fs::read_to_string(dir.join("postgresql.base.conf"))
        .expect("postgresql.base.conf kept");
    assert!(
        base.contains("max_connections"),
        "{what}: pg{i} base file: {base}"
    );
    let patronis =
        conf.starts_with("# Do not edit this file manually!\n# It will be overwritten by Patroni!");
    let include = "include_if_exists 'postgresql.fullauto.conf'";
    match agent {
        Agent::Patroni => assert!(patronis, "{what}: pg{i} under Patroni: {conf}"),
        Agent::Fullauto => assert!(
            !patronis && !set_in(&conf, "primary_conninfo") && conf.trim_end().ends_with(include),
            "{what}: pg{i} under fullauto: {conf}"
        ),
    }
}

/// Whether a postgresql.conf text sets `name` (a line not commented out).
fn set_in(conf: &str, name: &str) -> bool {
    conf.lines()
        .map(str::trim_start)
        .any(|l| l.starts_with(name) && !l.starts_with('#'))
}

/// Waits until node `i` answers `/replica` with 200 and its WAL receiver streams
/// (Patroni 3.0 has no `replication_state` in its status).
fn streaming(c: &Cluster, i: usize) -> bool {
    let q = "SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'";
    wait_until(WAIT, || {
        (c.api(i, "/replica").is_some_and(|(s, _)| s == 200) && c.sql(i, q).as_deref() == Ok("1"))
            .then_some(())
    })
    .is_some()
}

fn present_ids(c: &Cluster, i: usize) -> Result<BTreeSet<i64>, String> {
    Ok(c.sql(i, "SELECT id FROM w")?
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect())
}

/// One client connection that inserts one row per autocommit statement into `w` on
/// whichever node is primary, recording the ids the server acknowledged and when.
struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(i64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    fn start(c: &Cluster) -> Load {
        let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), acks.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("writer runtime");
            rt.block_on(write_loop(ports, log, flag));
        });
        Load {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    fn acks(&self) -> Vec<(i64, Instant)> {
        self.acks.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn acked_after(&self, t: Instant) -> bool {
        self.acks().iter().any(|&(_, at)| at > t)
    }

    /// The longest time without an acknowledged commit between `from` and `to`,
    /// counted from the last commit before `from`.
    fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let acks = self.acks();
        let mut last = acks
            .iter()
            .map(|&(_, at)| at)
            .filter(|&at| at <= from)
            .max()
            .unwrap_or(from);
        let mut gap = Duration::ZERO;
        for at in acks.iter().map(|&(_, at)| at).filter(|&at| at > from) {
            gap = gap.max(at - last);
            last = at;
            if at > to {
                break;
            }
        }
        gap
    }

    fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acks().into_iter().map(|(id, _)| Ack { id }).collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

struct Ack {
    id: i64,
}

async fn write_loop(ports: Vec<u16>, acks: Arc<Mutex<Vec<(i64, Instant)>>>, stop: Arc<AtomicBool>) {
    let next = AtomicI64::new(1);
    let mut node = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(client) = connect_primary(ports[node]).await {
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if !insert(&client, id).await {
                    break;
                }
                if let Ok(mut a) = acks.lock() {
                    a.push((id, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        node = (node + 1) % ports.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_primary(port: u16) -> Option<Client> {
    let conninfo =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1");
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&conninfo, NoTls),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(conn);
    let rows = tokio::time::timeout(
        Duration::from_secs(2),
        client.simple_query("SELECT pg_is_in_recovery()"),
    )
    .await
    .ok()?
    .ok()?;
    let primary = rows.iter().any(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0) == Some("f"),
        _ => false,
    });
    primary.then_some(client)
}

/// True only when the server answered that the insert committed (the command tag comes
/// after the wait for the synchronous standby). No statement timeout and no cancel: a
/// cancelled wait for a synchronous standby returns success for a commit that was
/// never replicated.
async fn insert(client: &Client, id: i64) -> bool {
    let q = format!("INSERT INTO w (id) VALUES ({id})");
    matches!(
        tokio::time::timeout(Duration::from_secs(30), client.simple_query(&q)).await,
        Ok(Ok(msgs)) if msgs.iter().any(|m| matches!(m, SimpleQueryMessage::CommandComplete(1)))
    )
}
