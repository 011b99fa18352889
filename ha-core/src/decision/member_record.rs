//! The member record a node publishes about itself each cycle.

use super::input::{Busy, LocalState, NodeConfig, Observation};
use crate::clock::MonoTime;
use crate::model::{Cluster, MemberData, MemberState, Role};
use crate::postgres::{DataDirState, PgObservation, PgProcess};

/// Builds `members/<me>` from what was observed.
pub(super) fn build(
    cfg: &NodeConfig,
    st: &LocalState,
    obs: &Observation,
    c: &Cluster,
    now: MonoTime,
) -> MemberData {
    let pg = &obs.pg;
    let leader = st.holds_lease(now) || c.is_leader(&cfg.name);
    let config = st
        .config
        .clone()
        .unwrap_or_else(|| cfg.bootstrap_config.clone());
    let (up, by_process) = match pg.process {
        PgProcess::Running => (true, MemberState::Running),
        PgProcess::Starting => (true, MemberState::Starting),
        PgProcess::Stopped => (false, MemberState::Stopped),
        PgProcess::Crashed => (false, MemberState::Crashed),
        PgProcess::Hung => (false, MemberState::Other("unknown".to_string())),
    };
    // A job that replaces the data directory names the state; otherwise a running or
    // starting server says what it is, and a down one is described by the job.
    let state = match obs.busy {
        Some(Busy::Bootstrap) => MemberState::InitializingNewCluster,
        Some(Busy::Clone | Busy::Reinitialize) => MemberState::CreatingReplica,
        Some(Busy::Restart) if matches!(pg.process, PgProcess::Stopped | PgProcess::Starting) => {
            MemberState::Restarting
        }
        Some(Busy::Start) if !up => MemberState::Starting,
        Some(Busy::Demote) if !up => MemberState::Stopping,
        Some(Busy::Restart | Busy::Start | Busy::Demote | Busy::Promote | Busy::CopySlots)
        | None => by_process,
    };
    let role = if pg.data_dir == DataDirState::Empty {
        Role::Uninitialized
    } else if pg.is_primary() {
        if leader {
            Role::Primary
        } else {
            Role::Demoted
        }
    } else if obs.busy == Some(Busy::Promote) {
        Role::Promoted
    } else if leader && super::standby::leader_stays_replica(&config) {
        Role::StandbyLeader
    } else {
        Role::Replica
    };
    let replica = pg.is_replica();
    MemberData {
        conn_url: cfg.conn_url.clone(),
        api_url: cfg.api_url.clone(),
        state: Some(state),
        role: Some(role),
        version: Some(cfg.version.clone()),
        xlog_location: Some(pg.wal_position()).filter(|l| *l > 0),
        receive_lsn: pg.receive_lsn.filter(|_| replica),
        replay_lsn: pg.replay_lsn.filter(|_| replica),
        replication_state: pg.replication_state.clone().filter(|_| replica),
        timeline: pg.timeline,
        tags: cfg.tags.clone(),
        pending_restart: pg.pending_restart.then_some(true),
        pause: st.config.as_ref().is_some_and(|c| c.pause).then_some(true),
        // Patroni's replicas rewind from a new primary only once its pg_control names
        // the new timeline (before, pg_rewind finds "no rewind required"); they wait
        // while the leader publishes `false`.
        checkpoint_after_promote: pg
            .checkpoint_timeline
            .zip(pg.timeline)
            .filter(|_| !replica && pg.may_accept_writes())
            .and_then(|(control, tl)| (control < tl).then_some(false)),
        extra: cfg
            .proxy_url
            .iter()
            .map(|u| ("proxy_url".to_string(), serde_json::Value::from(u.clone())))
            .chain(pg.pending_restart_reason_json().map(|r| {
                (
                    "pending_restart_reason".to_string(),
                    serde_json::Value::Object(r),
                )
            }))
            .chain(
                replay_lag_seconds(pg, c)
                    .filter(|_| replica)
                    .map(|s| (REPLAY_LAG_SECONDS.to_string(), serde_json::Value::from(s))),
            )
            .collect(),
    }
}

/// The member-record field with a replica's replay lag in seconds (added to Patroni's
/// fields; Patroni's tools ignore it).
pub const REPLAY_LAG_SECONDS: &str = "replay_lag_seconds";

/// A replica's replay lag in seconds, to the millisecond: zero while its replay has
/// reached every position it knows the primary has (what it received, and the
/// leader's last published position), else how long ago the last transaction it
/// replayed committed on the primary. `None` while behind with no transaction
/// replayed yet, or for a server that is not a replica.
pub fn replay_lag_seconds(pg: &PgObservation, c: &Cluster) -> Option<f64> {
    if !pg.is_replica() {
        return None;
    }
    let replayed = pg.replay_lsn?;
    let known = pg.receive_lsn.unwrap_or(0).max(
        c.leader_member()
            .and_then(|m| m.data.xlog_location)
            .unwrap_or(0),
    );
    if replayed >= known {
        return Some(0.0);
    }
    pg.replayed_xact_age
        .map(|age| (age.as_millis() as f64 / 1000.0).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RawEntry, Version};
    use std::time::Duration;

    fn cluster_with_leader_at(lsn: u64) -> Cluster {
        let leader = format!(r#"{{"state":"running","role":"primary","xlog_location":{lsn}}}"#);
        Cluster::from_entries(
            [("leader", "a"), ("members/a", leader.as_str())].map(|(k, v)| RawEntry {
                key: k.to_string(),
                value: v.to_string(),
                version: Version(1),
                session: None,
            }),
        )
    }

    fn replica(received: u64, replayed: u64, age_ms: Option<u64>) -> PgObservation {
        PgObservation {
            receive_lsn: Some(received),
            replay_lsn: Some(replayed),
            replayed_xact_age: age_ms.map(Duration::from_millis),
            ..PgObservation::running_replica("1", 1, replayed)
        }
    }

    #[test]
    fn a_replica_that_replayed_everything_known_lags_zero_seconds() {
        // The last replayed commit is an hour old: the primary was idle, not ahead.
        let pg = replica(1000, 1000, Some(3_600_000));
        assert_eq!(
            replay_lag_seconds(&pg, &cluster_with_leader_at(1000)),
            Some(0.0)
        );
    }

    #[test]
    fn replay_behind_what_was_received_or_what_the_leader_has_counts_the_commit_age() {
        let c = cluster_with_leader_at(1000);
        // Received more than it replayed (replay paused or slow).
        assert_eq!(
            replay_lag_seconds(&replica(1000, 900, Some(2_500)), &c),
            Some(2.5)
        );
        // Received nothing new (disconnected), while the leader is further on.
        assert_eq!(
            replay_lag_seconds(&replica(900, 900, Some(7_000)), &c),
            Some(7.0)
        );
        // Behind, but no transaction replayed since it started: unknown.
        assert_eq!(replay_lag_seconds(&replica(1000, 900, None), &c), None);
    }

    #[test]
    fn only_replicas_have_a_replay_lag_and_it_is_published_in_their_record() {
        use super::super::tests::{cfg, obs, pg_primary, pg_replica, t, View};
        let view = || {
            View::new()
                .leader("a")
                .member("a", "primary", 1000)
                .member("b", "replica", 900)
                .cluster()
        };
        let published = |me: &str, pg: PgObservation| {
            let record = build(
                &cfg(me),
                &LocalState::default(),
                &obs(view(), pg, Vec::new()),
                &view(),
                t(1000),
            );
            record.extra.get(REPLAY_LAG_SECONDS).cloned()
        };
        let behind = PgObservation {
            replayed_xact_age: Some(Duration::from_millis(1_250)),
            ..pg_replica(900)
        };
        assert_eq!(published("b", behind), Some(serde_json::json!(1.25)));
        assert_eq!(
            published("b", pg_replica(1000)),
            Some(serde_json::json!(0.0))
        );
        assert_eq!(published("a", pg_primary(1000)), None);
    }

    /// Patroni 3+ replicas rewind from a new primary only once it stops publishing
    /// `checkpoint_after_promote: false` (pg_rewind reads the source's timeline from
    /// pg_control and would find "no rewind required" before the checkpoint).
    #[test]
    fn a_new_primary_says_checkpoint_after_promote_false_until_pg_control_has_its_timeline() {
        use super::super::tests::{cfg, obs, pg_primary, pg_replica, t, View};
        let view = View::new()
            .leader("a")
            .member("a", "primary", 1000)
            .cluster();
        let published = |pg: PgObservation| {
            build(
                &cfg("a"),
                &LocalState::default(),
                &obs(view.clone(), pg, Vec::new()),
                &view,
                t(1000),
            )
            .checkpoint_after_promote
        };
        let promoted = |control: u64| PgObservation {
            timeline: Some(2),
            checkpoint_timeline: Some(control),
            ..pg_primary(1000)
        };
        assert_eq!(published(promoted(1)), Some(false));
        assert_eq!(published(promoted(2)), None);
        let replica = PgObservation {
            checkpoint_timeline: Some(1),
            timeline: Some(2),
            ..pg_replica(1000)
        };
        assert_eq!(published(replica), None);
    }
}
