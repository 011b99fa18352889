//! A simulated PostgreSQL server: process state, role, and a WAL made of unique
//! write ids tagged with the timeline they were written on, so that divergence after
//! a failover and its repair by pg_rewind are real, not assumed.

use crate::model::Lsn;
use crate::postgres::{DataDirState, PgObservation, PgProcess, StopMode};

/// Bytes of WAL one simulated write stands for: large enough that a replica a few
/// seconds behind exceeds `maximum_lag_on_failover` (1 MiB by default).
pub const WAL_UNIT: u64 = 8192;
/// The LSN of an empty WAL (a fresh cluster does not start at 0 either).
pub const WAL_BASE: u64 = 0x0100_0000;

/// One WAL record: a client write or a timeline switch, unique cluster-wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalEntry {
    /// Timeline it was written on.
    pub timeline: u64,
    /// Unique id (client writes and promotion markers share one counter).
    pub id: u64,
}

/// An initialized data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataDir {
    /// pg_control's system identifier.
    pub system_identifier: String,
    /// The WAL, oldest first.
    pub wal: Vec<WalEntry>,
    /// pg_control's `Database cluster state`.
    pub cluster_state: &'static str,
}

impl DataDir {
    /// Current timeline: that of the last record.
    pub fn timeline(&self) -> u64 {
        self.wal.last().map_or(1, |e| e.timeline)
    }

    /// End of WAL as an LSN.
    pub fn lsn(&self) -> Lsn {
        WAL_BASE + self.wal.len() as u64 * WAL_UNIT
    }

    /// Whether this WAL is a prefix of `other`'s, i.e. it can stream from it.
    /// Record ids are unique and every WAL is a copy of some primary's prefix, so
    /// equal records at the same position mean equal prefixes.
    pub fn is_prefix_of(&self, other: &DataDir) -> bool {
        let n = self.wal.len();
        n <= other.wal.len() && (n == 0 || self.wal[n - 1] == other.wal[n - 1])
    }

    /// Length of the common prefix with `other` (where pg_rewind rewinds to).
    pub fn common_prefix(&self, other: &DataDir) -> usize {
        self.wal
            .iter()
            .zip(other.wal.iter())
            .take_while(|(a, b)| a == b)
            .count()
    }
}

/// The role a running server plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgRole {
    /// Not in recovery: accepts writes.
    Primary,
    /// In recovery, streaming from `upstream` when it can.
    Replica,
}

/// One simulated server.
#[derive(Debug, Clone)]
pub struct SimPg {
    /// `None` while the data directory is empty.
    pub data: Option<DataDir>,
    /// The postmaster runs.
    pub running: bool,
    /// It stopped without being asked (crash, fence kill).
    pub crashed: bool,
    /// It runs but does not answer (health queries time out, commits stall).
    pub hung: bool,
    /// Role while running.
    pub role: PgRole,
    /// Member name in `primary_conninfo`.
    pub upstream: Option<String>,
    /// The last replication attempt succeeded (connected and compatible history).
    pub streaming: bool,
    /// `synchronous_standby_names` (a setting: survives restarts).
    pub synchronous_standby_names: Option<String>,
}

impl SimPg {
    /// A node with an empty data directory.
    pub fn empty() -> SimPg {
        SimPg {
            data: None,
            running: false,
            crashed: false,
            hung: false,
            role: PgRole::Replica,
            upstream: None,
            streaming: false,
            synchronous_standby_names: None,
        }
    }

    /// Sets `synchronous_standby_names` (reload).
    pub fn set_synchronous_standby_names(&mut self, value: Option<String>) {
        self.synchronous_standby_names = value.filter(|v| !v.trim().is_empty());
    }

    /// Alive and not in recovery: may commit (a hung primary may still finish
    /// commits in flight, so it counts).
    pub fn may_be_writable(&self) -> bool {
        self.running && self.role == PgRole::Primary && self.data.is_some()
    }

    /// Commits a client write right now.
    pub fn accepts_writes(&self) -> bool {
        self.may_be_writable() && !self.hung
    }

    /// Answers queries and can serve as a replication / clone / rewind source.
    pub fn serves(&self) -> bool {
        self.running && !self.hung && self.data.is_some()
    }

    /// Appends a record with `id` on the current timeline.
    pub fn append(&mut self, id: u64) {
        if let Some(d) = &mut self.data {
            let timeline = d.timeline();
            d.wal.push(WalEntry { timeline, id });
        }
    }

    /// initdb + start as primary on timeline 1.
    pub fn bootstrap(&mut self, system_identifier: String, marker: u64) {
        self.data = Some(DataDir {
            system_identifier,
            wal: vec![WalEntry {
                timeline: 1,
                id: marker,
            }],
            cluster_state: "in production",
        });
        self.start(PgRole::Primary, None);
    }

    /// Starts the server (data directory required).
    pub fn start(&mut self, role: PgRole, upstream: Option<String>) -> bool {
        let Some(d) = &mut self.data else {
            return false;
        };
        d.cluster_state = match role {
            PgRole::Primary => "in production",
            PgRole::Replica => "in archive recovery",
        };
        self.running = true;
        self.crashed = false;
        self.hung = false;
        self.role = role;
        self.upstream = if role == PgRole::Replica {
            upstream
        } else {
            None
        };
        self.streaming = false;
        true
    }

    /// Stops the server; an immediate stop leaves pg_control as a crash would.
    pub fn stop(&mut self, mode: StopMode) {
        if !self.running {
            return;
        }
        if let Some(d) = &mut self.data {
            if mode != StopMode::Immediate {
                d.cluster_state = match self.role {
                    PgRole::Primary => "shut down",
                    PgRole::Replica => "shut down in recovery",
                };
            }
        }
        self.running = false;
        self.crashed = false;
        self.hung = false;
        self.streaming = false;
    }

    /// Dies (crash, OOM kill, the fence): pg_control keeps its running state.
    pub fn kill(&mut self) -> bool {
        let was = self.running;
        self.running = false;
        self.hung = false;
        self.streaming = false;
        if was {
            self.crashed = true;
        }
        was
    }

    /// Ends recovery: a new timeline starts with a marker record.
    pub fn promote(&mut self, marker: u64) -> bool {
        if !self.running || self.hung || self.role != PgRole::Replica {
            return false;
        }
        let Some(d) = &mut self.data else {
            return false;
        };
        let timeline = d.timeline() + 1;
        d.wal.push(WalEntry {
            timeline,
            id: marker,
        });
        d.cluster_state = "in production";
        self.role = PgRole::Primary;
        self.upstream = None;
        self.streaming = false;
        true
    }

    /// pg_rewind against `source`: keep only the common prefix. Returns how many
    /// records were thrown away.
    pub fn rewind_to(&mut self, source: &DataDir) -> usize {
        let Some(d) = &mut self.data else {
            return 0;
        };
        let keep = d.common_prefix(source);
        let dropped = d.wal.len() - keep;
        d.wal.truncate(keep);
        dropped
    }

    /// One replication round from `upstream` (None: unreachable): copy what it has
    /// if our history is a prefix of its own, else streaming fails.
    pub fn replicate_from(&mut self, upstream: Option<&DataDir>) {
        let Some(d) = &mut self.data else {
            return;
        };
        self.streaming = match upstream {
            Some(u) if d.system_identifier == u.system_identifier && d.is_prefix_of(u) => {
                let have = d.wal.len();
                d.wal.extend_from_slice(&u.wal[have..]);
                true
            }
            _ => false,
        };
    }

    /// What the agent's health query sees.
    pub fn observe(&self) -> PgObservation {
        let Some(d) = &self.data else {
            return PgObservation::stopped(DataDirState::Empty);
        };
        let mut o = PgObservation::stopped(DataDirState::Initialized {
            system_identifier: d.system_identifier.clone(),
        });
        o.cluster_state = Some(d.cluster_state.to_string());
        if !self.running {
            o.process = if self.crashed {
                PgProcess::Crashed
            } else {
                PgProcess::Stopped
            };
            return o;
        }
        if self.hung {
            o.process = PgProcess::Hung;
            return o;
        }
        o.process = PgProcess::Running;
        o.timeline = Some(d.timeline());
        o.synchronous_standby_names = self.synchronous_standby_names.clone();
        match self.role {
            PgRole::Primary => {
                o.in_recovery = Some(false);
                o.wal_lsn = Some(d.lsn());
            }
            PgRole::Replica => {
                o.in_recovery = Some(true);
                o.receive_lsn = Some(d.lsn());
                o.replay_lsn = Some(d.lsn());
                o.replication_state = self.streaming.then(|| "streaming".to_string());
                o.following = self.upstream.clone();
            }
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn primary() -> SimPg {
        let mut p = SimPg::empty();
        p.bootstrap("1".into(), 1);
        p
    }

    #[test]
    fn a_former_primary_that_wrote_past_the_switch_cannot_stream_until_rewound() {
        let mut a = primary();
        a.append(2);
        let mut b = SimPg::empty();
        b.data = a.data.clone();
        b.start(PgRole::Replica, Some("a".into()));
        b.replicate_from(a.data.as_ref());
        assert!(b.streaming);
        // a writes 3 that b never gets; b is promoted and writes 5.
        a.append(3);
        assert!(b.promote(4));
        b.append(5);
        assert_eq!(b.data.as_ref().unwrap().timeline(), 2);
        a.stop(StopMode::Immediate);
        assert_eq!(a.observe().cluster_state.as_deref(), Some("in production"));
        a.start(PgRole::Replica, Some("b".into()));
        a.replicate_from(b.data.as_ref());
        assert!(!a.streaming, "diverged history must not stream");
        assert_eq!(a.data.as_ref().unwrap().wal.len(), 3);
        a.stop(StopMode::Fast);
        assert_eq!(a.rewind_to(b.data.as_ref().unwrap()), 1);
        a.start(PgRole::Replica, Some("b".into()));
        a.replicate_from(b.data.as_ref());
        assert!(a.streaming);
        assert_eq!(
            a.data,
            b.data.clone().map(|mut d| {
                d.cluster_state = "in archive recovery";
                d
            })
        );
    }

    #[test]
    fn a_replica_at_the_switch_point_follows_the_new_timeline() {
        let a = primary();
        let mut b = SimPg::empty();
        b.data = a.data.clone();
        b.start(PgRole::Replica, None);
        let mut c = b.clone();
        assert!(b.promote(9));
        c.replicate_from(b.data.as_ref());
        assert!(c.streaming);
        assert_eq!(c.observe().timeline, Some(2));
        assert!(!c.may_be_writable() && b.accepts_writes());
    }
}
