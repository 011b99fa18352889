//! Constructors for [`Observation`] and [`PgObservation`], for programs that call
//! [`decide`](super::decide) themselves (dry runs, tools, tests) instead of through
//! the [`Runner`](crate::runner::Runner), which fills every field on its own.
//!
//! ```
//! use ha_core::decision::{decide, Action, LocalState, NodeConfig, Observation};
//! use ha_core::{Cluster, MonoTime, PgObservation};
//!
//! // A replica of system 7311 on timeline 1, with no leader in the cluster.
//! let cluster = Cluster {
//!     initialize: Some("7311".into()),
//!     ..Cluster::default()
//! };
//! let pg = PgObservation::running_replica("7311", 1, 0x300_0000);
//! let now = MonoTime::from_millis(1_000);
//! let obs = Observation::new(cluster, pg, now);
//! let decision = decide(&NodeConfig::named("b"), &LocalState::default(), &obs, now);
//! // Each action renders as one line, as the logs show it.
//! let actions: Vec<String> = decision.actions.iter().map(Action::to_string).collect();
//! assert_eq!(actions, ["AcquireLease"]);
//! ```

use super::{Busy, Observation, OperatorRequest, Outcome};
use crate::clock::MonoTime;
use crate::dcs::DcsError;
use crate::model::{Cluster, Lsn, MemberData, MemberState, Role};
use crate::postgres::{DataDirState, PgObservation, PgProcess};

impl Observation {
    /// An observation of `cluster`, read at `read_at`, with the local Postgres as
    /// `pg`: no background action, no outcomes yet, no operator request, a working
    /// watchdog, no failsafe call, wall clock at the epoch (set it with
    /// [`Observation::with_wall_millis`] when scheduled switchovers matter).
    pub fn new(cluster: Cluster, pg: PgObservation, read_at: MonoTime) -> Self {
        Self::with_cluster_read(Ok(cluster), pg, read_at)
    }

    /// Like [`Observation::new`], but the cluster read failed with `error` (a node
    /// cut off from its DCS).
    pub fn dcs_failed(error: DcsError, pg: PgObservation, read_at: MonoTime) -> Self {
        Self::with_cluster_read(Err(error), pg, read_at)
    }

    fn with_cluster_read(
        cluster: Result<Cluster, DcsError>,
        pg: PgObservation,
        read_at: MonoTime,
    ) -> Self {
        Observation {
            cluster,
            read_at,
            pg,
            busy: None,
            outcomes: Vec::new(),
            executed: Vec::new(),
            wall_millis: 0,
            watchdog_failed: false,
            failsafe_leader: None,
            failsafe_slots: Default::default(),
            request: None,
        }
    }

    /// Wall-clock time in milliseconds since the Unix epoch.
    pub fn with_wall_millis(mut self, wall_millis: i64) -> Self {
        self.wall_millis = wall_millis;
        self
    }

    /// Wall-clock time taken from the system clock now.
    pub fn with_wall_clock_now(self) -> Self {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        self.with_wall_millis(millis)
    }

    /// A background action is in progress.
    pub fn with_busy(mut self, busy: Busy) -> Self {
        self.busy = Some(busy);
        self
    }

    /// An operator request waits for an answer.
    pub fn with_request(mut self, request: OperatorRequest) -> Self {
        self.request = Some(request);
        self
    }

    /// The results of query actions already run this cycle (see [`Outcome`]).
    pub fn with_outcomes(mut self, outcomes: Vec<Outcome>) -> Self {
        self.outcomes = outcomes;
        self
    }

    /// A required watchdog does not work: the node must not lead.
    pub fn with_watchdog_failed(mut self) -> Self {
        self.watchdog_failed = true;
        self
    }

    /// `leader` called this node's `POST /failsafe` within the last ttl.
    pub fn with_failsafe_leader(mut self, leader: impl Into<String>) -> Self {
        self.failsafe_leader = Some(leader.into());
        self
    }
}

impl PgObservation {
    /// A running, writable primary of system `system_identifier` on `timeline`, at
    /// WAL position `wal_lsn`.
    pub fn running_primary(system_identifier: &str, timeline: u64, wal_lsn: Lsn) -> Self {
        PgObservation {
            process: PgProcess::Running,
            in_recovery: Some(false),
            timeline: Some(timeline),
            wal_lsn: Some(wal_lsn),
            ..PgObservation::stopped(initialized(system_identifier))
        }
    }

    /// A running replica of system `system_identifier` on `timeline` that has
    /// received and replayed WAL up to `lsn`, following no one yet.
    pub fn running_replica(system_identifier: &str, timeline: u64, lsn: Lsn) -> Self {
        PgObservation {
            process: PgProcess::Running,
            in_recovery: Some(true),
            timeline: Some(timeline),
            receive_lsn: Some(lsn),
            replay_lsn: Some(lsn),
            ..PgObservation::stopped(initialized(system_identifier))
        }
    }

    /// A best guess of a member's Postgres from its published member record alone
    /// (its `state`, `role`, `timeline` and WAL positions), for dry runs and tools
    /// that see the DCS but not the server. `system_identifier` is the cluster's
    /// (its `initialize` key). A member that is not `running` reads as stopped.
    pub fn from_member_record(data: &MemberData, system_identifier: &str) -> Self {
        let running = data.state == Some(MemberState::Running);
        let primary = data.role == Some(Role::Primary);
        PgObservation {
            process: if running {
                PgProcess::Running
            } else {
                PgProcess::Stopped
            },
            in_recovery: running.then_some(!primary),
            timeline: data.timeline,
            wal_lsn: data.xlog_location.filter(|_| primary),
            receive_lsn: data.receive_lsn.or(data.xlog_location.filter(|_| !primary)),
            replay_lsn: data.replay_lsn,
            replication_state: data.replication_state.clone(),
            ..PgObservation::stopped(initialized(system_identifier))
        }
    }
}

fn initialized(system_identifier: &str) -> DataDirState {
    DataDirState::Initialized {
        system_identifier: system_identifier.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::{decide, Action, LocalState, NodeConfig};

    #[test]
    fn a_primary_record_reads_as_a_writable_primary() {
        let data = MemberData {
            state: Some(MemberState::Running),
            role: Some(Role::Primary),
            timeline: Some(2),
            xlog_location: Some(77),
            ..Default::default()
        };
        let pg = PgObservation::from_member_record(&data, "9");
        assert_eq!(pg, PgObservation::running_primary("9", 2, 77));
    }

    #[test]
    fn a_stopped_record_reads_as_stopped() {
        let data = MemberData {
            state: Some(MemberState::Stopped),
            role: Some(Role::Replica),
            ..Default::default()
        };
        let pg = PgObservation::from_member_record(&data, "9");
        assert_eq!(pg.process, PgProcess::Stopped);
        assert_eq!(pg.in_recovery, None);
    }

    #[test]
    fn an_unreachable_dcs_makes_a_replica_wait() {
        let pg = PgObservation::running_replica("9", 1, 5);
        let now = MonoTime::from_millis(10);
        let obs = Observation::dcs_failed(DcsError::Unreachable("down".into()), pg, now);
        let d = decide(&NodeConfig::named("b"), &LocalState::default(), &obs, now);
        // No race without a view, and nothing to publish where nobody can read it.
        let actions: Vec<String> = d.actions.iter().map(Action::to_string).collect();
        assert_eq!(actions, Vec::<String>::new());
    }
}
