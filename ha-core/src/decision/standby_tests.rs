//! Scenario tests for a standby cluster: the leader follows the remote and never
//! promotes; the first node clones from the remote instead of running initdb.
use super::tests::{cfg, obs, pg_replica, t, without_publish, View};
use super::*;
use crate::postgres::{DataDirState, PgObservation, PgProcess};

fn standby_cfg(name: &str) -> NodeConfig {
    let mut c = cfg(name);
    c.bootstrap_config.extra.insert(
        "standby_cluster".into(),
        serde_json::json!({"host": "10.0.0.9", "port": 6000}),
    );
    c
}

#[test]
fn standby_leader_follows_the_remote_and_never_promotes() {
    let c = View::new()
        .leader("b")
        .member("b", "replica", 100)
        .cluster();
    let o = obs(
        c,
        pg_replica(100),
        vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
    );
    let d = decide(&standby_cfg("b"), &LocalState::default(), &o, t(1010));
    assert!(!d.actions.iter().any(|a| matches!(
        a,
        Action::Promote { .. } | Action::ArmFence { .. } | Action::WriteStatus(_)
    )));
    let follow = d.actions.iter().find_map(|a| match a {
        Action::Follow { upstream: Some(u) } => Some(u.clone()),
        _ => None,
    });
    let u = follow.expect("follows the remote");
    assert_eq!((u.host.as_str(), u.port), ("10.0.0.9", 6000));
    let published = d.actions.iter().find_map(|a| match a {
        Action::PublishMember(m) => m.role.clone(),
        _ => None,
    });
    assert_eq!(published, Some(crate::model::Role::StandbyLeader));
}

#[test]
fn standby_leader_already_on_the_remote_does_nothing() {
    let c = View::new()
        .leader("b")
        .member("b", "standby_leader", 100)
        .cluster();
    let mut pg = pg_replica(100);
    pg.following = Some(standby::REMOTE_NAME.into());
    let o = obs(c, pg, vec![Outcome::LeaseRenewed { sent_at: t(1000) }]);
    let d = decide(&standby_cfg("b"), &LocalState::default(), &o, t(1010));
    assert!(!without_publish(&d.actions)
        .iter()
        .any(|a| matches!(a, Action::Promote { .. } | Action::Follow { .. })));
}

#[test]
fn other_members_follow_the_standby_leader() {
    let c = View::new()
        .leader("a")
        .member("a", "standby_leader", 100)
        .member("b", "replica", 100)
        .cluster();
    let d = decide(
        &standby_cfg("b"),
        &LocalState::default(),
        &obs(c, pg_replica(100), vec![]),
        t(1000),
    );
    match &without_publish(&d.actions)[..] {
        [Action::Follow { upstream: Some(u) }] => assert_eq!(u.name, "a"),
        other => panic!("expected follow of the standby leader, got {other:?}"),
    }
}

#[test]
fn removing_standby_cluster_promotes_the_leader() {
    let c = View::new()
        .leader("b")
        .member("b", "standby_leader", 100)
        .cluster();
    let o = obs(
        c,
        pg_replica(100),
        vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
    );
    let d = decide(&cfg("b"), &LocalState::default(), &o, t(1010));
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::Promote { .. })));
    assert!(d
        .actions
        .iter()
        .any(|a| matches!(a, Action::ArmFence { .. })));
}

#[test]
fn first_node_of_a_standby_cluster_clones_from_the_remote() {
    let mut pg = PgObservation::stopped(DataDirState::Empty);
    pg.process = PgProcess::Stopped;
    let d = decide(
        &standby_cfg("a"),
        &LocalState::default(),
        &obs(Cluster::default(), pg, vec![Outcome::InitializeWon]),
        t(1000),
    );
    assert!(!d.actions.contains(&Action::Bootstrap));
    assert!(d.actions.iter().any(|a| matches!(
        a,
        Action::CloneReplica { source, follow: Some(f) }
            if source.port == 6000 && f.name == standby::REMOTE_NAME
    )));
}
