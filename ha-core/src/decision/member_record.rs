//! The member record a node publishes about itself each cycle.

use super::input::{Busy, LocalState, NodeConfig, Observation};
use crate::clock::MonoTime;
use crate::model::{Cluster, MemberData, MemberState, Role};
use crate::postgres::{DataDirState, PgProcess};

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
        checkpoint_after_promote: None,
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
            .collect(),
    }
}
