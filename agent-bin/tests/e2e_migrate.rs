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
//!
//! A leaner run in asynchronous mode (Patroni 3.0.2, whose shorter ttl keeps it cheap)
//! kills a leader of each kind: the fullauto leader, taken over by a Patroni member,
//! then that Patroni leader, taken over by a fullauto member. The acknowledged commits
//! missing on the new primary are reported per step; only those two steps may lose any,
//! and only commits acknowledged before the kill.

mod migrate_parts;
mod support;

use migrate_parts::load::Load;
use serde_json::Value;
use std::collections::BTreeSet;
use std::time::{Duration, Instant};
use support::patroni::Patroni;
use support::{wait_until, Cluster, Extra, Timing};

/// Patroni 4 refuses a ttl under 20 s and a retry_timeout under 3 s.
const TIMING: Timing = Timing {
    ttl: 20,
    loop_wait: 1.0,
    retry_timeout: 3.0,
};
/// Patroni 3.0.2 takes a shorter ttl: the asynchronous run's two kills cost less.
const TIMING_V3: Timing = Timing {
    ttl: 10,
    loop_wait: 1.0,
    retry_timeout: 3.0,
};
const WAIT: Duration = Duration::from_secs(90);
const MARKER: &str = "migrate-marker";
/// A backend busy with a commit when its postmaster was killed still finishes it (it
/// notices the death at its next wait): that commit may be acknowledged this long after.
const ORPHAN_GRACE: Duration = Duration::from_millis(200);

#[test]
fn patroni_3_0_cluster_replaced_by_fullauto_one_node_at_a_time_and_back() {
    rolling_replacement(Patroni::V3);
}

#[test]
fn patroni_4_1_cluster_replaced_by_fullauto_one_node_at_a_time_and_back() {
    rolling_replacement(Patroni::V4);
}

#[test]
fn asynchronous_patroni_3_0_cluster_losses_when_leaders_of_either_kind_die() {
    asynchronous_takeovers(Patroni::V3);
}

/// The cluster's replication mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Replication {
    /// `synchronous_mode: true`, `synchronous_node_count: 2`: nothing acknowledged is
    /// ever lost.
    Synchronous,
    /// No synchronous standby: a dead primary may take its last commits with it.
    Asynchronous,
}

/// Who manages a node right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Agent {
    Patroni,
    Fullauto,
}

/// One step of the rolling replacement, the longest wait for a commit during it and
/// the acknowledged commits it lost (asynchronous mode only).
struct Step {
    what: String,
    unavailable: Duration,
    lost: usize,
}

struct Migration {
    c: Cluster,
    kind: Patroni,
    mode: Replication,
    agents: Vec<Agent>,
    load: Load,
    steps: Vec<Step>,
    /// Acknowledged commits a step was allowed to lose and did (asynchronous mode).
    lost: BTreeSet<i64>,
    /// When the last leader killed was dead (its postmaster gone).
    killed_at: Option<Instant>,
    started: Instant,
}

/// Three Patroni members of `kind` in `mode`, a client writing, pg0 the leader.
fn patroni_cluster(kind: Patroni, mode: Replication) -> Migration {
    let started = Instant::now();
    // Make the virtualenv (once per machine) before any server runs.
    let _ = kind.program("patroni");
    let (timing, dcs) = match (kind, mode) {
        (_, Replication::Synchronous) => (
            &TIMING,
            "    synchronous_mode: true\n    synchronous_node_count: 2",
        ),
        (Patroni::V3, Replication::Asynchronous) => (&TIMING_V3, ""),
        (Patroni::V4, Replication::Asynchronous) => (&TIMING, ""),
    };
    let mut c = Cluster::new(3, timing, dcs, |_| String::new());
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
    let load = Load::start(c.nodes.iter().map(|n| n.pg_port).collect());
    let mut m = Migration {
        c,
        kind,
        mode,
        agents: vec![Agent::Patroni; 3],
        load,
        steps: Vec::new(),
        lost: BTreeSet::new(),
        killed_at: None,
        started,
    };
    m.check("Patroni cluster", 0);
    m
}

fn rolling_replacement(kind: Patroni) {
    let mut m = patroni_cluster(kind, Replication::Synchronous);

    // A replica's agent is replaced: same config file, same data directory.
    m.step("pg1: Patroni replaced by fullauto", 0, |m| {
        m.mark(1);
        m.replace(1, Agent::Fullauto);
    });
    m.assert_not_recloned(1);

    // patronictl switches over to the fullauto member.
    m.step("patronictl switchover to pg1 (fullauto)", 1, |m| {
        m.patronictl_switchover(0, 1);
    });
    let (ok, list) = m.c.patronictl(m.kind, 0, &["list"]);
    assert!(ok && list.contains("pg1"), "patronictl list: {list}");
    println!("{list}");

    // The fullauto leader dies with its postmaster: a Patroni member takes over.
    let mut new_leader = 0;
    m.step("SIGKILL of the fullauto leader pg1", usize::MAX, |m| {
        new_leader = m.kill_leader(1, &[0, 2]);
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
        m.patronictl_switchover(1, 2);
    });
    let (ok, list) = m.c.ctl(&["list"]);
    assert!(ok && list.contains("pg2"), "fullautoctl list: {list}");
    println!("{list}");

    m.finish(2);
}

/// Asynchronous mode: the fullauto leader dies and a Patroni member takes over, then
/// that Patroni leader dies and a fullauto member takes over; each dead node rejoins
/// under its own agent. Losses are reported, and allowed only at the two kills.
fn asynchronous_takeovers(kind: Patroni) {
    let mut m = patroni_cluster(kind, Replication::Asynchronous);
    m.step("pg1: Patroni replaced by fullauto", 0, |m| {
        m.mark(1);
        m.replace(1, Agent::Fullauto);
    });
    m.assert_not_recloned(1);
    m.step("patronictl switchover to pg1 (fullauto)", 1, |m| {
        m.patronictl_switchover(0, 1);
    });
    let mut patroni_leader = 0;
    m.step("SIGKILL of the fullauto leader pg1", usize::MAX, |m| {
        patroni_leader = m.kill_leader(1, &[0, 2]);
    });
    assert_eq!(m.agents[patroni_leader], Agent::Patroni);
    let other = 2 - patroni_leader;
    m.step(
        &format!("pg{other}: Patroni replaced by fullauto"),
        patroni_leader,
        |m| {
            m.mark(other);
            m.replace(other, Agent::Fullauto);
        },
    );
    m.assert_not_recloned(other);
    let mut fullauto_leader = 1;
    m.step(
        &format!("SIGKILL of the Patroni leader pg{patroni_leader}"),
        usize::MAX,
        |m| {
            fullauto_leader = m.kill_leader(patroni_leader, &[1, other]);
        },
    );
    assert_eq!(m.agents[fullauto_leader], Agent::Fullauto);
    m.finish(fullauto_leader);
}

impl Migration {
    /// Runs `f` as a step that must end with `leader` as the one primary (usize::MAX:
    /// whichever the step found), then checks the cluster and records the longest wait
    /// for a commit while it ran.
    /// In asynchronous mode a step that killed the leader (`leader` usize::MAX, through
    /// `kill_leader`) may lose commits acknowledged before the kill; they are reported.
    fn step(&mut self, what: &str, leader: usize, f: impl FnOnce(&mut Migration)) {
        println!("step: {what}");
        let from = Instant::now();
        let lost_before = self.lost.len();
        f(self);
        let unplanned = leader == usize::MAX;
        let leader = if unplanned {
            self.c.wait_primary(WAIT).expect("one primary")
        } else {
            leader
        };
        let killed_at = self.killed_at.take();
        let may_lose = killed_at.filter(|_| unplanned && self.mode == Replication::Asynchronous);
        self.check_losing(what, leader, may_lose);
        let unavailable = self.load.longest_gap(from, Instant::now());
        self.steps.push(Step {
            what: what.to_string(),
            unavailable,
            lost: self.lost.len() - lost_before,
        });
    }

    /// SIGKILL of leader `dead`'s agent and postmaster; returns the one of `candidates`
    /// that took over, once `dead` was started again under its agent.
    fn kill_leader(&mut self, dead: usize, candidates: &[usize]) -> usize {
        self.c.kill_agent(dead);
        self.c.kill_postmaster(dead);
        self.killed_at = Some(Instant::now());
        let new_leader = self.wait_new_leader(candidates);
        match self.agents[dead] {
            Agent::Fullauto => self.c.start(dead),
            Agent::Patroni => self.c.start_patroni(dead, self.kind),
        }
        new_leader
    }

    fn patronictl_switchover(&mut self, from: usize, to: usize) {
        let (leader, candidate) = (format!("pg{from}"), format!("pg{to}"));
        let (ok, out) = self.c.patronictl(
            self.kind,
            0,
            &[
                "switchover",
                "--leader",
                &leader,
                "--candidate",
                &candidate,
                "--force",
            ],
        );
        // patronictl exits 0 when the leader refuses (412): read what it says.
        assert!(
            ok && out.contains("Successfully"),
            "patronictl switchover: {out}"
        );
        self.wait_leader(to);
    }

    /// Stops the client and checks the final primary `leader` has every acknowledged
    /// commit but those reported lost; prints the steps' write-unavailability.
    fn finish(self, leader: usize) {
        let acks = self.load.finish();
        let present = present_ids(&self.c, leader).expect("read the final primary");
        let missing: Vec<i64> = acks
            .iter()
            .copied()
            .filter(|id| !present.contains(id) && !self.lost.contains(id))
            .collect();
        println!(
            "Patroni {:?}, {:?}: write-unavailability per step (longest wait between acknowledged commits):",
            self.kind, self.mode
        );
        for s in &self.steps {
            let lost = match self.mode {
                Replication::Synchronous => String::new(),
                Replication::Asynchronous => format!("  {:>3} lost", s.lost),
            };
            println!("  {:>6} ms{lost}  {}", s.unavailable.as_millis(), s.what);
        }
        println!(
            "{} commits acknowledged, {} lost where allowed, {} missing elsewhere on the final primary; test took {} s",
            acks.len(),
            self.lost.len(),
            missing.len(),
            self.started.elapsed().as_secs()
        );
        assert!(missing.is_empty(), "acknowledged commits lost: {missing:?}");
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
        self.check_losing(what, leader, None);
    }

    /// `check`, where commits acknowledged before `may_lose_before` and missing on the
    /// primary are recorded as lost instead of failing (asynchronous mode, a kill).
    fn check_losing(&mut self, what: &str, leader: usize, may_lose_before: Option<Instant>) {
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
            if self.mode == Replication::Asynchronous {
                return Some("none (asynchronous)".to_string());
            }
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
        let (lost, missing): (Vec<_>, Vec<_>) = acked
            .iter()
            .filter(|(id, _)| !present.contains(id) && !self.lost.contains(id))
            .partition(|(_, at)| may_lose_before.is_some_and(|t| *at <= t + ORPHAN_GRACE));
        assert!(
            missing.is_empty(),
            "{what}: acknowledged commits missing: {:?}",
            missing.iter().map(|(id, _)| id).collect::<Vec<_>>()
        );
        self.lost.extend(lost.iter().map(|(id, _)| *id));
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
