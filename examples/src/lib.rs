//! Examples of embedding the fullauto crates as a library: the HA decision function is
//! a plain function, so a custom orchestrator can ask it what a node would do without
//! running an agent.

use ha_core::decision::{decide, Action, LocalState, NodeConfig, Observation};
use ha_core::{Cluster, DataDirState, MonoTime, PgObservation, PgProcess, Role};

/// What the engine would do next for `member`, judged from its published record alone
/// (a dry run: no lease outcomes, no peer probes).
pub fn advise(cluster: &Cluster, member: &str, now: MonoTime, wall_millis: i64) -> Vec<Action> {
    let Some(m) = cluster.member(member) else {
        return Vec::new();
    };
    let running = m
        .data
        .state
        .as_ref()
        .is_some_and(|s| s.as_str() == "running");
    let primary = m.data.role == Some(Role::Primary);
    let sysid = cluster.system_identifier().unwrap_or("0").to_string();
    let pg = PgObservation {
        process: if running {
            PgProcess::Running
        } else {
            PgProcess::Stopped
        },
        in_recovery: running.then_some(!primary),
        timeline: m.data.timeline,
        wal_lsn: m.data.xlog_location.filter(|_| primary),
        receive_lsn: m.data.receive_lsn,
        replay_lsn: m.data.replay_lsn,
        replication_state: m.data.replication_state.clone(),
        ..PgObservation::stopped(DataDirState::Initialized {
            system_identifier: sysid,
        })
    };
    let mut cfg = NodeConfig::named(member);
    cfg.tags = m.data.tags.clone();
    let obs = Observation {
        cluster: Ok(cluster.clone()),
        read_at: now,
        pg,
        busy: None,
        outcomes: Vec::new(),
        executed: Vec::new(),
        wall_millis,
        request: None,
        watchdog_failed: false,
        failsafe_leader: None,
        failsafe_slots: Default::default(),
    };
    decide(&cfg, &LocalState::default(), &obs, now)
        .actions
        .into_iter()
        .filter(|a| !matches!(a, Action::PublishMember(_)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    #[test]
    fn replica_of_a_dead_leader_would_race() {
        let c = Cluster::from_entries(vec![
            RawEntry { key: "initialize".into(), value: "7".into(), version: Version(1), session: None },
            RawEntry {
                key: "members/b".into(),
                value: r#"{"state":"running","role":"replica","xlog_location":5,"api_url":"http://x/patroni"}"#.into(),
                version: Version(2),
                session: None,
            },
        ]);
        let actions = advise(&c, "b", MonoTime::from_millis(1), 0);
        assert_eq!(actions, vec![Action::AcquireLease]);
    }
}
