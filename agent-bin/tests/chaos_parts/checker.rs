//! The checker: one writer per node inserting rows for the whole run (its insert is
//! also the node's write-capability probe), every acknowledged commit recorded with the
//! node, timeline and WAL position that acknowledged it; then the analysis: overlapping
//! write acceptance (two primaries), acknowledged commits missing on the final primary,
//! and how far past a timeline's switch point the lost ones were.

use super::timeline::Timeline;
use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::NoTls;

/// How long one insert may take before the writer gives up on it (it is then not
/// counted as acknowledged) and reconnects.
const INSERT_LIMIT: Duration = Duration::from_secs(10);

/// One acknowledged commit.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub node: usize,
    pub id: i64,
    /// Timeline and WAL insert position when the row was inserted (before its commit).
    pub tl: u32,
    pub lsn: u64,
    pub sent: Instant,
    pub acked: Instant,
}

/// What a node's writer saw last.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Unknown,
    Primary,
    Replica,
    Down,
}

pub struct Load {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub acks: Arc<Mutex<Vec<Ack>>>,
    pub roles: Arc<Mutex<Vec<Role>>>,
}

pub fn parse_lsn(s: &str) -> u64 {
    let (hi, lo) = s.split_once('/').unwrap_or(("0", "0"));
    (u64::from_str_radix(hi, 16).unwrap_or(0) << 32) | u64::from_str_radix(lo, 16).unwrap_or(0)
}

pub fn show_lsn(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)
}

impl Load {
    pub fn start(ports: Vec<u16>, timeline: Timeline) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let roles = Arc::new(Mutex::new(vec![Role::Unknown; ports.len()]));
        let (flag, log, seen) = (stop.clone(), acks.clone(), roles.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("writer runtime");
            let next = Arc::new(AtomicI64::new(1));
            rt.block_on(async move {
                let tasks: Vec<_> = ports
                    .iter()
                    .enumerate()
                    .map(|(node, &port)| {
                        tokio::spawn(write_loop(
                            node,
                            port,
                            next.clone(),
                            log.clone(),
                            seen.clone(),
                            flag.clone(),
                            timeline.clone(),
                        ))
                    })
                    .collect();
                for t in tasks {
                    let _ = t.await;
                }
            });
        });
        Load {
            stop,
            thread: Some(thread),
            acks,
            roles,
        }
    }

    pub fn primary(&self) -> Option<usize> {
        let roles = self.roles.lock().expect("roles");
        roles.iter().position(|r| *r == Role::Primary)
    }

    pub fn replicas(&self) -> Vec<usize> {
        let roles = self.roles.lock().expect("roles");
        (0..roles.len())
            .filter(|&i| roles[i] == Role::Replica)
            .collect()
    }

    pub fn acks(&self) -> Vec<Ack> {
        self.acks.lock().expect("acks").clone()
    }

    pub fn stop(mut self) -> Vec<Ack> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acks()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn connect(port: u16) -> Option<tokio_postgres::Client> {
    let dsn = format!(
        "host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=2 \
         application_name=chaos_checker"
    );
    let (client, conn) =
        tokio::time::timeout(Duration::from_secs(3), tokio_postgres::connect(&dsn, NoTls))
            .await
            .ok()?
            .ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Some(client)
}

async fn write_loop(
    node: usize,
    port: u16,
    next: Arc<AtomicI64>,
    acks: Arc<Mutex<Vec<Ack>>>,
    roles: Arc<Mutex<Vec<Role>>>,
    stop: Arc<AtomicBool>,
    timeline: Timeline,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    let mut last = (Role::Unknown, 0u32);
    let mut set = |role: Role, tl: u32, why: &str| {
        roles.lock().expect("roles")[node] = role;
        if (role, tl) != last {
            let text = match role {
                Role::Primary => format!("pg{node} accepts writes on timeline {tl}"),
                Role::Replica => format!("pg{node} refuses writes (read-only)"),
                Role::Down => format!("pg{node} unreachable: {why}"),
                Role::Unknown => String::new(),
            };
            timeline.note("checker", text);
            last = (role, tl);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let c = match client.take() {
            Some(c) => c,
            None => match connect(port).await {
                Some(c) => c,
                None => {
                    set(Role::Down, 0, "no connection");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    continue;
                }
            },
        };
        let id = next.fetch_add(1, Ordering::Relaxed);
        let me = node as i32;
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&id, &me];
        let sent = Instant::now();
        let insert = c.query_one(
            "INSERT INTO chaos (id, node) VALUES ($1, $2) RETURNING \
             pg_current_wal_insert_lsn()::text, \
             substr(pg_walfile_name(pg_current_wal_insert_lsn()), 1, 8)",
            &params,
        );
        match tokio::time::timeout(INSERT_LIMIT, insert).await {
            Ok(Ok(row)) => {
                let acked = Instant::now();
                let lsn = parse_lsn(row.get::<_, &str>(0));
                let tl = u32::from_str_radix(row.get::<_, &str>(1), 16).unwrap_or(0);
                acks.lock().expect("acks").push(Ack {
                    node,
                    id,
                    tl,
                    lsn,
                    sent,
                    acked,
                });
                set(Role::Primary, tl, "");
                client = Some(c);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Ok(Err(e)) => {
                let read_only = e.code().is_some_and(|c| {
                    *c == tokio_postgres::error::SqlState::READ_ONLY_SQL_TRANSACTION
                });
                if read_only {
                    set(Role::Replica, 0, "");
                    client = Some(c);
                } else {
                    let why = e
                        .as_db_error()
                        .map(|d| d.message().to_string())
                        .unwrap_or_else(|| e.to_string());
                    set(Role::Down, 0, &why);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => set(Role::Down, 0, "insert got no answer in 10 s"),
        }
    }
}

/// Two nodes (or one node on two timelines) that accepted writes at the same time.
///
/// A node on one timeline accepted writes without a break from its first
/// acknowledgement to the sending of its last acknowledged insert (a node leaving the
/// primary role never comes back on the same timeline). Another node (or timeline)
/// whose insert was sent and acknowledged inside that span accepted a write while the
/// first one did too.
#[derive(Debug)]
pub struct Overlap {
    pub a: (usize, u32),
    pub b: (usize, u32),
    /// From the first such insert's sending to the last one's acknowledgement.
    pub length: Duration,
    /// How many of b's inserts fell inside a's span.
    pub writes: usize,
}

pub fn overlaps(acks: &[Ack]) -> Vec<Overlap> {
    let mut groups: BTreeMap<(usize, u32), Vec<&Ack>> = BTreeMap::new();
    for a in acks {
        groups.entry((a.node, a.tl)).or_default().push(a);
    }
    let spans: BTreeMap<(usize, u32), (Instant, Instant)> = groups
        .iter()
        .map(|(k, v)| {
            let first = v.iter().map(|a| a.acked).min().expect("one ack");
            let last = v.iter().map(|a| a.sent).max().expect("one ack");
            (*k, (first, last))
        })
        .collect();
    let mut out = Vec::new();
    for (ka, (first, last)) in &spans {
        for (kb, writes) in groups.iter().filter(|(kb, _)| *kb != ka) {
            let inside: Vec<&&Ack> = writes
                .iter()
                .filter(|w| w.sent >= *first && w.acked <= *last)
                .collect();
            if let (Some(from), Some(to)) = (
                inside.iter().map(|w| w.sent).min(),
                inside.iter().map(|w| w.acked).max(),
            ) {
                out.push(Overlap {
                    a: *ka,
                    b: *kb,
                    length: to - from,
                    writes: inside.len(),
                });
            }
        }
    }
    out
}

/// An entry of a timeline history file: timeline `tl` ended at `switch`.
#[derive(Debug, Clone, Copy)]
pub struct Fork {
    pub tl: u32,
    pub switch: u64,
}

/// Parses a `.history` file's text.
pub fn parse_history(text: &str) -> Vec<Fork> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tl = f.next()?.parse().ok()?;
            let switch = parse_lsn(f.next()?);
            Some(Fork { tl, switch })
        })
        .collect()
}

/// Acknowledged commits missing on the final primary.
#[derive(Debug, Default)]
pub struct Losses {
    /// Missing, and inserted past the switch point of a timeline the final primary
    /// left, or on a branch the final primary's history does not hold (a timeline
    /// another node promoted to, possibly under the same number): explained by a
    /// failover.
    pub forked: Vec<Ack>,
    /// Missing although the final primary's history holds the place they were
    /// written at: lost for no reason a failover gives.
    pub unexplained: Vec<Ack>,
    /// The largest distance in WAL bytes from where a lost commit's branch left the
    /// final history to the lost commit.
    pub max_past_switch: u64,
}

/// Which node wrote each timeline of the final history, from the commits it still
/// holds. Timeline numbers are not unique across a run: a node that promotes without
/// having seen another node's timeline `n` also names its new timeline `n`, so a
/// timeline is known by its number and the node that wrote on it.
fn history_writers(acks: &[Ack], present: &HashSet<i64>) -> BTreeMap<u32, usize> {
    acks.iter()
        .filter(|a| present.contains(&a.id))
        .map(|a| (a.tl, a.node))
        .collect()
}

pub fn losses(acks: &[Ack], present: &HashSet<i64>, final_tl: u32, history: &[Fork]) -> Losses {
    let writers = history_writers(acks, present);
    // Whether the branch (node, timeline) is the one the final history holds under
    // that number. A timeline none of whose commits survived is taken to be it.
    let on_history = |a: &Ack| {
        (a.tl == final_tl || history.iter().any(|f| f.tl == a.tl))
            && writers.get(&a.tl).is_none_or(|&n| n == a.node)
    };
    // Where a branch that the final history does not hold left it, at the latest: the
    // end of the newest timeline before the branch's number, or the newest surviving
    // commit acknowledged before the branch's first one, whichever is later.
    let branch_start = |a: &Ack| {
        let first = acks
            .iter()
            .filter(|b| (b.node, b.tl) == (a.node, a.tl))
            .map(|b| b.sent)
            .min()
            .unwrap_or(a.sent);
        let switch = history
            .iter()
            .filter(|f| f.tl < a.tl)
            .map(|f| f.switch)
            .max()
            .unwrap_or(0);
        let survived = acks
            .iter()
            .filter(|b| present.contains(&b.id) && b.acked <= first)
            .map(|b| b.lsn)
            .max()
            .unwrap_or(0);
        switch.max(survived)
    };
    let mut out = Losses::default();
    for a in acks.iter().filter(|a| !present.contains(&a.id)) {
        if !on_history(a) {
            out.max_past_switch = out
                .max_past_switch
                .max(a.lsn.saturating_sub(branch_start(a)));
            out.forked.push(*a);
            continue;
        }
        if a.tl == final_tl {
            out.unexplained.push(*a);
            continue;
        }
        match history.iter().find(|f| f.tl == a.tl) {
            // The commit record follows the insert position closely (one writer per
            // node): a row inserted well before the switch point was on the history.
            Some(f) if a.lsn + 1024 < f.switch => out.unexplained.push(*a),
            Some(f) => {
                out.max_past_switch = out.max_past_switch.max(a.lsn.saturating_sub(f.switch));
                out.forked.push(*a);
            }
            None => unreachable!("on_history holds only timelines of the history"),
        }
    }
    out
}

#[test]
fn overlapping_acceptance_is_found_and_a_handover_is_not() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ack = |node, tl, sent, acked| Ack {
        node,
        id: 0,
        tl,
        lsn: 0,
        sent: at(sent),
        acked: at(acked),
    };
    // pg0 on timeline 1 until 100 ms, pg1 on timeline 2 from 200 ms: a handover.
    let handover = [ack(0, 1, 0, 10), ack(0, 1, 90, 100), ack(1, 2, 190, 200)];
    assert!(overlaps(&handover).is_empty());
    // pg0 still acknowledges an insert sent after pg1's first acknowledgement.
    let split = [ack(0, 1, 0, 10), ack(1, 2, 190, 200), ack(0, 1, 250, 260)];
    let found = overlaps(&split);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!((found[0].a, found[0].b), ((0, 1), (1, 2)));
    assert_eq!(found[0].length, Duration::from_millis(10));
    assert_eq!(found[0].writes, 1);
}

#[test]
fn losses_past_a_switch_point_are_explained_and_others_are_not() {
    let t = Instant::now();
    let ack = |id, tl, lsn| Ack {
        node: 0,
        id,
        tl,
        lsn,
        sent: t,
        acked: t,
    };
    let history = parse_history("1\t0/3000000\tno recovery target specified\n2\t0/5000000\tx\n");
    let acks = [
        ack(1, 1, 0x2000000),
        ack(2, 1, 0x3000100),
        ack(3, 3, 0x6000000),
        ack(4, 2, 0x4000000),
    ];
    let present: HashSet<i64> = [1].into_iter().collect();
    let l = losses(&acks, &present, 3, &history);
    assert_eq!(l.forked.iter().map(|a| a.id).collect::<Vec<_>>(), [2]);
    assert_eq!(
        l.unexplained.iter().map(|a| a.id).collect::<Vec<_>>(),
        [3, 4]
    );
    assert_eq!(l.max_past_switch, 0x100);
}

#[test]
fn a_branch_that_reused_a_timeline_number_is_a_fork_not_a_hole() {
    let t0 = Instant::now();
    let at = |ms: u64| t0 + Duration::from_millis(ms);
    let ack = |id, node, tl, lsn, ms| Ack {
        node,
        id,
        tl,
        lsn,
        sent: at(ms),
        acked: at(ms + 1),
    };
    // pg0 writes timeline 1; pg1 promotes to timeline 2 at 0/3000000 and writes; it
    // dies unseen, and pg2 (which never saw pg1's timeline 2) promotes from timeline
    // 1 at 0/3000000 and also names its timeline 2. pg2 is the final primary.
    let history = parse_history("1\t0/3000000\tno recovery target specified\n");
    let acks = [
        ack(1, 0, 1, 0x2FFF000, 0),
        ack(2, 1, 2, 0x3000200, 100),
        ack(3, 1, 2, 0x3000400, 110),
        ack(4, 2, 2, 0x3000200, 200),
    ];
    let present: HashSet<i64> = [1, 4].into_iter().collect();
    let l = losses(&acks, &present, 2, &history);
    assert_eq!(l.forked.iter().map(|a| a.id).collect::<Vec<_>>(), [2, 3]);
    assert!(l.unexplained.is_empty(), "{:?}", l.unexplained);
    assert_eq!(l.max_past_switch, 0x400);
    // Were pg2's commit on timeline 2 missing too, pg1's branch would be taken as the
    // history's and its losses as holes on the final timeline.
    let l = losses(&acks, &[1].into_iter().collect(), 2, &history);
    assert_eq!(l.unexplained.len(), 3);
}
