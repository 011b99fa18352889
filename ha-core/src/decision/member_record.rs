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
    let state = match (obs.busy, pg.process) {
        (Some(Busy::Bootstrap), _) => MemberState::InitializingNewCluster,
        (Some(Busy::Clone | Busy::Reinitialize), _) => MemberState::CreatingReplica,
        (Some(Busy::Restart), PgProcess::Stopped | PgProcess::Starting) => MemberState::Restarting,
        (_, PgProcess::Running) => MemberState::Running,
        (_, PgProcess::Starting) => MemberState::Starting,
        (Some(Busy::Start), _) => MemberState::Starting,
        (Some(Busy::Demote), _) => MemberState::Stopping,
        (_, PgProcess::Stopped) => MemberState::Stopped,
        (_, PgProcess::Crashed) => MemberState::Crashed,
        (_, PgProcess::Hung) => MemberState::Other("unknown".to_string()),
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
            .collect(),
    }
}
