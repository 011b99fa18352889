//! Scenario tests for a standby cluster: the leader follows the remote with the
//! section's recovery settings and never promotes; the first node clones from the
//! remote instead of running initdb; adding the section to a running cluster demotes
//! its primary (demote-cluster).
use super::tests::{assert_actions, cfg, obs, pg_primary, pg_replica, t, without_publish, View};
use super::*;
use crate::postgres::{DataDirState, PgObservation, PgProcess, Upstream};

fn standby_cfg(name: &str) -> NodeConfig {
    with_section(name, serde_json::json!({"host": "10.0.0.9", "port": 6000}))
}

fn with_section(name: &str, section: serde_json::Value) -> NodeConfig {
    let mut c = cfg(name);
    c.bootstrap_config
        .extra
        .insert("standby_cluster".into(), section);
    c
}

fn renewed() -> Vec<Outcome> {
    vec![Outcome::LeaseRenewed { sent_at: t(1000) }]
}

fn followed(d: &Decision) -> Option<Upstream> {
    d.actions.iter().find_map(|a| match a {
        Action::Follow { upstream } => upstream.clone(),
        _ => None,
    })
}

fn standby_leader_view() -> Cluster {
    View::new()
        .leader("b")
        .member("b", "standby_leader", 100)
        .cluster()
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
    assert_actions(
        &d.actions,
        &[
            "WriteConfig new",
            "Follow standby_cluster",
            "PublishMember role=standby_leader state=running",
        ],
    );
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
    pg.upstream = standby::remote_upstream(&standby_cfg("b").bootstrap_config);
    let o = obs(c, pg, vec![Outcome::LeaseRenewed { sent_at: t(1000) }]);
    let d = decide(&standby_cfg("b"), &LocalState::default(), &o, t(1010));
    assert_actions(
        &d.actions,
        &[
            "WriteConfig new",
            "PublishMember role=standby_leader state=running",
        ],
    );
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
    assert_actions(
        &d.actions,
        &["Follow a", "PublishMember role=replica state=running"],
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
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteConfig new",
            "Promote token=30.500s",
            "PublishMember role=replica state=running",
        ],
    );
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
    // No initdb: a copy of the remote (port 6000), then streaming from it.
    assert_actions(
        &d.actions,
        &[
            "CloneReplica from=standby_cluster follow=standby_cluster",
            "PublishMember role=uninitialized state=stopped",
        ],
    );
    let source = d.actions.iter().find_map(|a| match a {
        Action::CloneReplica { source, .. } => Some(source.port),
        _ => None,
    });
    assert_eq!(source, Some(6000));
}

#[test]
fn standby_leader_streams_with_the_sections_slot_and_recovery_settings() {
    let node = with_section(
        "b",
        serde_json::json!({
            "host": "10.0.0.9", "port": 6000, "primary_slot_name": "b_leader",
            "restore_command": "cp /arch/%f %p", "archive_cleanup_command": "true",
            "recovery_min_apply_delay": "1s",
        }),
    );
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(standby_leader_view(), pg_replica(100), renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "WriteConfig new",
            "Follow standby_cluster",
            "PublishMember role=standby_leader state=running",
        ],
    );
    let remote = followed(&d)
        .and_then(|u| u.remote)
        .expect("follows the remote with its settings");
    assert_eq!(remote.primary_slot_name.as_deref(), Some("b_leader"));
    assert_eq!(remote.restore_command.as_deref(), Some("cp /arch/%f %p"));
    assert_eq!(remote.archive_cleanup_command.as_deref(), Some("true"));
    assert_eq!(remote.recovery_min_apply_delay.as_deref(), Some("1s"));
}

#[test]
fn a_changed_section_setting_is_applied_to_the_running_standby_leader() {
    let old = standby_cfg("b");
    let mut pg = pg_replica(100);
    pg.following = Some(standby::REMOTE_NAME.into());
    pg.upstream = standby::remote_upstream(&old.bootstrap_config);
    let node = with_section(
        "b",
        serde_json::json!({"host": "10.0.0.9", "port": 6000, "restore_command": "cp /new/%f %p"}),
    );
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(standby_leader_view(), pg, renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "WriteConfig new",
            "Follow standby_cluster",
            "PublishMember role=standby_leader state=running",
        ],
    );
    let remote = followed(&d).and_then(|u| u.remote).expect("re-follows");
    assert_eq!(remote.restore_command.as_deref(), Some("cp /new/%f %p"));
}

#[test]
fn restore_command_alone_makes_an_archive_only_standby_leader() {
    let node = with_section(
        "b",
        serde_json::json!({"restore_command": "cp /arch/%f %p"}),
    );
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(standby_leader_view(), pg_replica(100), renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "WriteConfig new",
            "Follow standby_cluster",
            "PublishMember role=standby_leader state=running",
        ],
    );
    let u = followed(&d).expect("follows the archive");
    assert!(!u.streams(), "no host to stream from: {u:?}");
    assert_eq!(
        u.remote.and_then(|r| r.restore_command).as_deref(),
        Some("cp /arch/%f %p")
    );
}

#[test]
fn first_node_clones_with_the_sections_replica_methods() {
    let node = with_section(
        "a",
        serde_json::json!({"host": "10.0.0.9", "create_replica_methods": ["walg", "basebackup"]}),
    );
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(
            Cluster::default(),
            PgObservation::stopped(DataDirState::Empty),
            vec![Outcome::InitializeWon],
        ),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "CloneReplica from=standby_cluster follow=standby_cluster",
            "PublishMember role=uninitialized state=stopped",
        ],
    );
    let methods = d.actions.iter().find_map(|a| match a {
        Action::CloneReplica { source, .. } => source
            .remote
            .as_ref()
            .map(|r| r.create_replica_methods.clone()),
        _ => None,
    });
    assert_eq!(
        methods,
        Some(vec!["walg".to_string(), "basebackup".to_string()])
    );
}

#[test]
fn other_members_cascade_with_their_own_settings() {
    let c = View::new()
        .leader("a")
        .member("a", "standby_leader", 100)
        .member("b", "replica", 100)
        .cluster();
    let node = with_section(
        "b",
        serde_json::json!({"host": "10.0.0.9", "primary_slot_name": "x", "restore_command": "cp"}),
    );
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(c, pg_replica(100), vec![]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &["Follow a", "PublishMember role=replica state=running"],
    );
    let u = followed(&d).expect("follows the standby leader");
    assert_eq!((u.name.as_str(), u.remote), ("a", None));
}

// ----- demote-cluster ------------------------------------------------------------

fn primary_view() -> Cluster {
    View::new()
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .cluster()
}

#[test]
fn adding_standby_cluster_demotes_the_primary_keeping_the_key() {
    let d = decide(
        &standby_cfg("a"),
        &LocalState::default(),
        &obs(primary_view(), pg_primary(100), renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteConfig new",
            "Demote DemoteCluster upstream=standby_cluster",
            "PublishMember role=primary state=running",
        ],
    );
    let demote = d.actions.iter().find_map(|a| match a {
        Action::Demote { mode, upstream } => Some((*mode, upstream.clone())),
        _ => None,
    });
    let (mode, upstream) = demote.expect("demote-cluster");
    assert_eq!(mode, DemoteMode::DemoteCluster);
    assert!(!mode.releases_lease());
    assert_eq!(mode.stop_mode(), crate::postgres::StopMode::Fast);
    assert_eq!(upstream.map(|u| u.port), Some(6000));
    assert!(
        d.state.rewind_pending,
        "the next start checks for divergence"
    );
}

#[test]
fn paused_primary_is_not_demoted_by_standby_cluster() {
    let mut node = standby_cfg("a");
    node.bootstrap_config.pause = true;
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(primary_view(), pg_primary(100), renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s",
            "WriteConfig new",
            "WriteStatus optime=100 slots=a:100 retain=a,b",
            "ManageSlots create=[b] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
}

#[test]
fn stopped_former_primary_starts_as_standby_leader_with_a_divergence_check() {
    let mut pg = pg_primary(100);
    pg.process = PgProcess::Stopped;
    pg.in_recovery = None;
    pg.cluster_state = Some("shut down".into());
    let st = LocalState {
        fence_armed: true,
        ..Default::default()
    };
    let d = decide(
        &standby_cfg("a"),
        &st,
        &obs(primary_view(), pg, renewed()),
        t(1010),
    );
    // It keeps the key (no ReleaseLease) and has nothing left to fence.
    assert_actions(
        &d.actions,
        &[
            "DisarmFence",
            "StartReplica upstream=standby_cluster rewind",
            "PublishMember role=standby_leader state=stopped",
        ],
    );
    let start = d.actions.iter().find_map(|a| match a {
        Action::StartReplica { upstream, rewind } => Some((upstream.clone(), *rewind)),
        _ => None,
    });
    let (upstream, rewind) = start.expect("starts following the remote");
    assert_eq!(upstream.map(|u| u.name), Some(standby::REMOTE_NAME.into()));
    assert!(rewind);
}

#[test]
fn crashed_standby_leader_restarts_on_the_remote_without_rewind() {
    let mut pg = pg_replica(100);
    pg.process = PgProcess::Crashed;
    pg.in_recovery = None;
    let d = decide(
        &standby_cfg("b"),
        &LocalState::default(),
        &obs(standby_leader_view(), pg, renewed()),
        t(1010),
    );
    assert_actions(
        &d.actions,
        &[
            "StartReplica upstream=standby_cluster",
            "PublishMember role=standby_leader state=crashed",
        ],
    );
}

/// Patroni's standby_cluster feature: after a switchover the old standby leader follows
/// its successor; when that successor dies before it streamed, the old standby leader
/// waits for the key to expire and takes over without a restart. It replays the
/// remote's WAL as its successor does, so there is no history of its own to rewind.
#[test]
fn standby_leader_handing_over_needs_no_divergence_check() {
    let view = |leader: &str| {
        View::new()
            .leader(leader)
            .member("b", "standby_leader", 100)
            .member("c", "replica", 100)
            .key("failover", r#"{"leader":"b","member":"c"}"#)
            .cluster()
    };
    let mut pg = pg_replica(100);
    pg.following = Some(standby::REMOTE_NAME.into());
    pg.upstream = standby::remote_upstream(&standby_cfg("b").bootstrap_config);
    pg.replication = vec![crate::postgres::ReplicationConnection {
        application_name: "c".into(),
        state: "streaming".into(),
        sync_state: "async".into(),
        flush_lsn: Some(100),
        ..Default::default()
    }];
    let probed = PeerStatus {
        name: "c".into(),
        reply: Some(PeerReply {
            is_primary: false,
            wal_position: 100,
            timeline: Some(1),
            tags: crate::model::Tags::default(),
            watchdog_failed: false,
        }),
    };
    let mut o = obs(view("b"), pg, renewed());
    o.outcomes.push(Outcome::PeersProbed(vec![probed]));
    let handed = decide(&standby_cfg("b"), &LocalState::default(), &o, t(1010));
    assert_actions(
        &handed.actions,
        &[
            "WriteConfig new",
            "SwitchoverTo c token=30.500s",
            "PublishMember role=standby_leader state=running",
        ],
    );

    // Now a replica of c, which died before b streamed from it: c's member key still
    // says running until the key expires. b is not streaming for longer than loop_wait.
    let c_leads = View::new()
        .leader("c")
        .member("b", "replica", 100)
        .member("c", "standby_leader", 100)
        .cluster();
    let mut pg = pg_replica(100);
    pg.following = Some("c".into());
    pg.replication_state = None;
    let mut st = handed.state;
    for at in [2_000, 14_000] {
        let d = decide(
            &standby_cfg("b"),
            &st,
            &obs(c_leads.clone(), pg.clone(), vec![]),
            t(at),
        );
        assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
        st = d.state;
    }
}
