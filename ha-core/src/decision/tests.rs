//! Scenario tests: given this cluster view and this local Postgres, the node does that.

use super::*;
use crate::model::{MemberData, MemberState, RawEntry, Role, SyncState, Tags, Version};
use crate::postgres::{DataDirState, PgObservation, PgProcess};

const SYSID: &str = "7300000000000000001";

pub(super) fn t(ms: u64) -> MonoTime {
    MonoTime::from_millis(ms)
}

pub(super) fn member(name: &str, role: &str, wal: u64) -> (String, String) {
    let d = MemberData {
        conn_url: Some(format!(
            "postgres://127.0.0.1:{}/postgres",
            5432 + name.len()
        )),
        api_url: Some(format!("http://127.0.0.1:8008/{name}")),
        state: Some(MemberState::Running),
        role: Some(Role::from(role.to_string())),
        xlog_location: Some(wal),
        ..Default::default()
    };
    (format!("members/{name}"), d.to_json())
}

pub(super) struct View(pub(super) Vec<RawEntry>);

impl View {
    pub(super) fn new() -> View {
        View(vec![RawEntry {
            key: "initialize".into(),
            value: SYSID.into(),
            version: Version(1),
            session: None,
        }])
    }
    pub(super) fn key(mut self, k: &str, v: &str) -> View {
        self.0.push(RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(self.0.len() as i64 + 10),
            session: None,
        });
        self
    }
    pub(super) fn leader(self, name: &str) -> View {
        self.key("leader", name)
    }
    pub(super) fn member(self, name: &str, role: &str, wal: u64) -> View {
        let (k, v) = member(name, role, wal);
        self.key(&k, &v)
    }
    pub(super) fn cluster(self) -> Cluster {
        Cluster::from_entries(self.0)
    }
}

pub(super) fn pg_primary(wal: u64) -> PgObservation {
    PgObservation {
        process: PgProcess::Running,
        in_recovery: Some(false),
        timeline: Some(1),
        wal_lsn: Some(wal),
        cluster_state: Some("in production".into()),
        ..PgObservation::stopped(DataDirState::Initialized {
            system_identifier: SYSID.into(),
        })
    }
}

pub(super) fn pg_replica(wal: u64) -> PgObservation {
    PgObservation {
        process: PgProcess::Running,
        in_recovery: Some(true),
        timeline: Some(1),
        receive_lsn: Some(wal),
        replay_lsn: Some(wal),
        replication_state: Some("streaming".into()),
        cluster_state: Some("in archive recovery".into()),
        ..PgObservation::stopped(DataDirState::Initialized {
            system_identifier: SYSID.into(),
        })
    }
}

pub(super) fn obs(c: Cluster, pg: PgObservation, outcomes: Vec<Outcome>) -> Observation {
    Observation {
        cluster: Ok(c),
        read_at: t(1000),
        pg,
        busy: None,
        outcomes,
        executed: Vec::new(),
        wall_millis: 1_700_000_000_000,
        request: None,
        watchdog_failed: false,
        failsafe_leader: None,
        failsafe_slots: Default::default(),
    }
}

pub(super) fn cfg(name: &str) -> NodeConfig {
    NodeConfig::named(name)
}

/// `me` decides with a fresh local state on view `c`, Postgres `pg` and the query
/// `outcomes` of this cycle, at 1 s (the view was read at 1 s).
pub(super) fn step(me: &str, c: Cluster, pg: PgObservation, outcomes: Vec<Outcome>) -> Decision {
    step_at(me, c, pg, outcomes, 1000)
}

/// [`step`] at `ms`.
pub(super) fn step_at(
    me: &str,
    c: Cluster,
    pg: PgObservation,
    outcomes: Vec<Outcome>,
    ms: u64,
) -> Decision {
    decide(
        &cfg(me),
        &LocalState::default(),
        &obs(c, pg, outcomes),
        t(ms),
    )
}

/// Asserts that `actions` are exactly `expected`, one [`Action`] line each (its
/// `Display`); on a mismatch it prints what was emitted, ready to paste.
#[track_caller]
pub(super) fn assert_actions(actions: &[Action], expected: &[&str]) {
    let got: Vec<String> = actions.iter().map(Action::to_string).collect();
    if got != expected {
        let pasted: Vec<String> = got.iter().map(|l| format!("        {l:?},")).collect();
        panic!(
            "emitted actions differ\n  expected: {expected:#?}\n  emitted:\n{}",
            pasted.join("\n")
        );
    }
}

pub(super) fn without_publish(actions: &[Action]) -> Vec<Action> {
    actions
        .iter()
        .filter(|a| !matches!(a, Action::PublishMember(_)))
        .cloned()
        .collect()
}

fn peer(name: &str, wal: u64) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        reply: Some(PeerReply {
            is_primary: false,
            wal_position: wal,
            timeline: Some(1),
            tags: Tags::default(),
            watchdog_failed: false,
        }),
    }
}

#[test]
fn leader_whose_status_is_current_renews_alone() {
    let view = || View::new().leader("a").member("a", "primary", 100);
    let first = step("a", view().cluster(), pg_primary(100), vec![]);
    let Some(Action::RenewLease {
        status: Some(published),
    }) = first.actions.first()
    else {
        panic!("expected a renewal with the status: {:?}", first.actions);
    };
    let c = view().key("status", &published.to_json()).cluster();
    let d = step("a", c, pg_primary(100), vec![]);
    assert_actions(&d.actions, &["RenewLease"]);
}

fn repl(name: &str, state: &str, flush: u64) -> crate::postgres::ReplicationConnection {
    crate::postgres::ReplicationConnection {
        application_name: name.into(),
        state: "streaming".into(),
        sync_state: state.into(),
        flush_lsn: Some(flush),
        ..Default::default()
    }
}

fn sync_actions(d: &Decision) -> Vec<Action> {
    d.actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::WriteSync { .. } | Action::SetSynchronousStandbyNames { .. }
            )
        })
        .cloned()
        .collect()
}

#[test]
fn strict_mode_without_standbys_blocks_writes() {
    let sync = SyncState {
        leader: Some("a".into()),
        sync_standby: vec![],
        quorum: 0,
    };
    let c = View::new()
        .key(
            "config",
            r#"{"synchronous_mode":"on","synchronous_mode_strict":true}"#,
        )
        .key("sync", &sync.to_json())
        .leader("a")
        .member("a", "primary", 100)
        .cluster();
    let d = decide(
        &cfg("a"),
        &LocalState::default(),
        &obs(
            c,
            pg_primary(100),
            vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
        ),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a",
            "SetSynchronousStandbyNames '*'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(
        sync_actions(&d),
        vec![Action::SetSynchronousStandbyNames {
            value: Some("*".into())
        }]
    );
}

#[test]
fn sync_winner_writes_sync_key_before_promoting_and_postpones_on_cas_failure() {
    let sync = SyncState {
        leader: Some("a".into()),
        sync_standby: vec!["b".into()],
        quorum: 0,
    };
    let c = View::new()
        .key("config", r#"{"synchronous_mode":"on"}"#)
        .key("sync", &sync.to_json())
        .leader("b")
        .member("b", "replica", 100)
        .cluster();
    let acquired = Outcome::LeaseAcquired { sent_at: t(1000) };
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(c.clone(), pg_replica(100), vec![acquired.clone()]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteSync leader=b standbys= quorum=0 v12",
        ],
    );
    let failed = vec![acquired.clone(), Outcome::SyncWritten { ok: false }];
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(c.clone(), pg_replica(100), failed),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "PublishMember role=replica state=running",
        ],
    );
    let ok = vec![acquired, Outcome::SyncWritten { ok: true }];
    // The replica's synchronous_standby_names is empty already: no reload before the
    // promotion.
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(c.clone(), pg_replica(100), ok.clone()),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "Promote token=30.500s",
            "PublishMember role=replica state=running",
        ],
    );
    // One left over from an earlier term as primary is cleared first.
    let mut leftover = pg_replica(100);
    leftover.synchronous_standby_names = Some("\"c\"".into());
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(c, leftover, ok),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "SetSynchronousStandbyNames -",
            "Promote token=30.500s",
            "PublishMember role=replica state=running",
        ],
    );
}

#[test]
fn rerun_step_does_not_repeat_executed_actions() {
    let c = View::new()
        .leader("a")
        .member("a", "primary", 100)
        .cluster();
    let mut o = obs(
        c,
        pg_primary(100),
        vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
    );
    let d = decide(&cfg("a"), &LocalState::default(), &o, t(1000));
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteConfig new",
            "WriteStatus optime=100 slots=a:100 retain=a",
            "PublishMember role=primary state=running",
        ],
    );
    let status = d
        .actions
        .iter()
        .find(|a| matches!(a, Action::WriteStatus(_)))
        .cloned()
        .expect("status");
    o.executed.push(status);
    let d = decide(&cfg("a"), &LocalState::default(), &o, t(1000));
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteConfig new",
            "PublishMember role=primary state=running",
        ],
    );
}

// ----- synchronous replication: swaps and quorum commit ------------------------------

/// One leader step of synchronous-replication bookkeeping for `a`, lease renewed.
fn leader_step(c: Cluster, pg: PgObservation, st: &LocalState, at: u64) -> Decision {
    decide(
        &cfg("a"),
        st,
        &obs(c, pg, vec![Outcome::LeaseRenewed { sent_at: t(at) }]),
        t(at),
    )
}

fn sync_of(leader: &str, standbys: &[&str], quorum: u32) -> String {
    SyncState {
        leader: Some(leader.into()),
        sync_standby: standbys.iter().map(|s| s.to_string()).collect(),
        quorum,
    }
    .to_json()
}

fn with_tags(view: View, name: &str, tags: Tags) -> View {
    let d = MemberData {
        conn_url: Some(format!(
            "postgres://127.0.0.1:{}/postgres",
            5432 + name.len()
        )),
        api_url: Some(format!("http://127.0.0.1:8008/{name}")),
        state: Some(MemberState::Running),
        role: Some(Role::from("replica".to_string())),
        xlog_location: Some(100),
        tags,
        ..Default::default()
    };
    view.key(&format!("members/{name}"), &d.to_json())
}

fn written_sync(d: &Decision) -> Option<SyncState> {
    sync_actions(d).into_iter().find_map(|a| match a {
        Action::WriteSync { sync, .. } => Some(sync),
        _ => None,
    })
}

fn names_set(d: &Decision) -> Option<Option<String>> {
    sync_actions(d).into_iter().find_map(|a| match a {
        Action::SetSynchronousStandbyNames { value } => Some(value),
        _ => None,
    })
}

#[test]
fn a_sync_standby_lagging_beyond_the_limit_is_swapped_for_a_healthy_one_in_safe_order() {
    let view = |sync: &str| {
        View::new()
            .key(
                "config",
                r#"{"synchronous_mode":"on","maximum_lag_on_syncnode":1000}"#,
            )
            .key("sync", sync)
            .leader("a")
            .member("a", "primary", 10_000)
            .member("b", "replica", 5_000)
            .member("c", "replica", 10_000)
            .cluster()
    };
    let mut pg = pg_primary(10_000);
    pg.synchronous_standby_names = Some("\"b\"".into());
    // b is 5000 bytes behind c: over the 1000-byte limit.
    pg.replication = vec![repl("b", "sync", 5_000), repl("c", "async", 10_000)];
    let st = LocalState::default();
    // 1. b leaves `sync` while Postgres still waits for it.
    let d1 = leader_step(view(&sync_of("a", &["b"], 0)), pg.clone(), &st, 1000);
    assert_actions(
        &d1.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=10000 slots=a:10000 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "WriteSync leader=a standbys= quorum=0 v12",
        ],
    );
    assert_eq!(written_sync(&d1).map(|s| s.sync_standby), Some(vec![]));
    assert_eq!(
        names_set(&d1),
        None,
        "names changed with the key: {:?}",
        d1.actions
    );
    // 2. Postgres waits for c instead.
    let d2 = leader_step(view(&sync_of("a", &[], 0)), pg.clone(), &d1.state, 1100);
    assert_actions(
        &d2.actions,
        &[
            "ArmFence until=30.600s watchdog",
            "WriteStatus optime=10000 slots=a:10000 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "SetSynchronousStandbyNames '\"c\"'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(names_set(&d2), Some(Some("\"c\"".into())));
    assert_eq!(written_sync(&d2), None);
    // 3. c is published once it reports sync and confirmed the mark.
    pg.synchronous_standby_names = Some("\"c\"".into());
    pg.replication = vec![repl("b", "async", 5_000), repl("c", "sync", 10_000)];
    let d3 = leader_step(view(&sync_of("a", &[], 0)), pg, &d2.state, 1200);
    assert_actions(
        &d3.actions,
        &[
            "ArmFence until=30.700s watchdog",
            "WriteStatus optime=10000 slots=a:10000 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "WriteSync leader=a standbys=c quorum=0 v12",
        ],
    );
    assert_eq!(
        written_sync(&d3).map(|s| s.sync_standby),
        Some(vec!["c".to_string()])
    );
}

#[test]
fn under_remote_apply_a_standby_that_stopped_replaying_is_lagging_though_it_flushes() {
    // Patroni's acceptance suite: `synchronous_commit: remote_apply`, replay paused
    // on the sync standby b while it still receives and flushes everything.
    let c = View::new()
        .key(
            "config",
            r#"{"synchronous_mode":"on","maximum_lag_on_syncnode":1000}"#,
        )
        .key("sync", &sync_of("a", &["b"], 0))
        .leader("a")
        .member("a", "primary", 10_000)
        .member("b", "replica", 10_000)
        .member("c", "replica", 10_000)
        .cluster();
    let mut pg = pg_primary(10_000);
    pg.synchronous_standby_names = Some("\"b\"".into());
    let replayed = |name: &str, state: &str, replay: u64| crate::postgres::ReplicationConnection {
        replay_lsn: Some(replay),
        ..repl(name, state, 10_000)
    };
    pg.replication = vec![replayed("b", "sync", 5_000), replayed("c", "async", 10_000)];
    // Judged by flush, b is as good as c and stays.
    let d = leader_step(c.clone(), pg.clone(), &LocalState::default(), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=10000 slots=a:10000 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(written_sync(&d), None);
    assert_eq!(names_set(&d), None);
    // Judged by replay, b is 5000 bytes behind: it leaves `sync` first.
    pg.synchronous_commit = Some("remote_apply".into());
    let d = leader_step(c, pg, &LocalState::default(), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=10000 slots=a:10000 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "WriteSync leader=a standbys= quorum=0 v12",
        ],
    );
    assert_eq!(written_sync(&d).map(|s| s.sync_standby), Some(vec![]));
    assert_eq!(names_set(&d), None);
}

#[test]
fn a_nosync_tag_takes_a_standby_out_of_sync_before_postgres_stops_waiting_for_it() {
    let nosync = Tags {
        nosync: Some(true),
        ..Tags::default()
    };
    let c = with_tags(
        View::new()
            .key("config", r#"{"synchronous_mode":"on"}"#)
            .key("sync", &sync_of("a", &["b"], 0))
            .leader("a")
            .member("a", "primary", 100)
            .member("c", "replica", 100),
        "b",
        nosync,
    )
    .cluster();
    let mut pg = pg_primary(100);
    pg.synchronous_standby_names = Some("\"b\"".into());
    pg.replication = vec![repl("b", "sync", 100), repl("c", "async", 100)];
    let d = leader_step(c, pg, &LocalState::default(), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "WriteSync leader=a standbys= quorum=0 v12",
        ],
    );
    assert_eq!(written_sync(&d).map(|s| s.sync_standby), Some(vec![]));
    assert_eq!(names_set(&d), None);
}

fn quorum_view(sync: &str) -> View {
    View::new()
        .key("config", r#"{"synchronous_mode":"quorum"}"#)
        .key("sync", sync)
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .member("c", "replica", 100)
        .member("d", "replica", 100)
}

/// A leader whose confirm point was taken under the names it now observes.
fn confirmed_state(names: &str, mark: u64) -> LocalState {
    LocalState {
        sync_confirm_from: Some(mark),
        sync_confirm_names: Some(names.into()),
        ..LocalState::default()
    }
}

#[test]
fn quorum_mode_publishes_a_new_voter_with_a_higher_quorum_before_postgres_lists_it() {
    let names = r#"ANY 1 ("b","c")"#;
    let mut pg = pg_primary(100);
    pg.synchronous_standby_names = Some(names.into());
    pg.replication = vec![
        repl("b", "quorum", 100),
        repl("c", "quorum", 100),
        repl("d", "async", 100),
    ];
    let c = quorum_view(&sync_of("a", &["b", "c"], 1)).cluster();
    let d = leader_step(c, pg.clone(), &confirmed_state(names, 100), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "WriteSync leader=a standbys=b,c,d quorum=2 v12",
        ],
    );
    let s = written_sync(&d).expect("sync first");
    assert_eq!(s.sync_standby, vec!["b", "c", "d"]);
    assert_eq!(s.quorum, 2);
    assert_eq!(names_set(&d), None);
    // Then Postgres waits for any one of the three.
    let c = quorum_view(&sync_of("a", &["b", "c", "d"], 2)).cluster();
    let d2 = leader_step(c, pg, &d.state, 1100);
    assert_actions(
        &d2.actions,
        &[
            "ArmFence until=30.600s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "SetSynchronousStandbyNames 'ANY 1 (\"b\",\"c\",\"d\")'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(names_set(&d2), Some(Some(r#"ANY 1 ("b","c","d")"#.into())));
    assert_eq!(written_sync(&d2), None);
}

#[test]
fn quorum_mode_removes_a_gone_voter_from_postgres_first_and_from_sync_once_confirmed() {
    let names = r#"ANY 1 ("b","c","d")"#;
    let mut pg = pg_primary(200);
    pg.synchronous_standby_names = Some(names.into());
    // d disconnected.
    pg.replication = vec![repl("b", "quorum", 200), repl("c", "quorum", 200)];
    let c = quorum_view(&sync_of("a", &["b", "c", "d"], 2)).cluster();
    let d = leader_step(c.clone(), pg.clone(), &confirmed_state(names, 100), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=200 slots=a:200 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "SetSynchronousStandbyNames 'ANY 1 (\"b\",\"c\")'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(names_set(&d), Some(Some(r#"ANY 1 ("b","c")"#.into())));
    assert_eq!(
        written_sync(&d),
        None,
        "sync shrank too early: {:?}",
        d.actions
    );
    // Next observation: the new names are in force; the point they hold by is taken first.
    pg.synchronous_standby_names = Some(r#"ANY 1 ("b","c")"#.into());
    pg.wal_lsn = Some(300);
    let d2 = leader_step(c.clone(), pg.clone(), &d.state, 1100);
    assert_actions(
        &d2.actions,
        &[
            "ArmFence until=30.600s watchdog",
            "WriteStatus optime=300 slots=a:300 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(sync_actions(&d2), vec![]);
    assert_eq!(d2.state.sync_confirm_from, Some(300));
    // Not confirmed yet (b and c flushed only to 200): sync stays as it is.
    let d3 = leader_step(c.clone(), pg.clone(), &d2.state, 1200);
    assert_actions(
        &d3.actions,
        &[
            "ArmFence until=30.700s watchdog",
            "WriteStatus optime=300 slots=a:300 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(sync_actions(&d3), vec![]);
    // One of them confirmed past the point: sync drops d and lowers the quorum.
    pg.replication = vec![repl("b", "quorum", 300), repl("c", "quorum", 250)];
    let d4 = leader_step(c, pg, &d3.state, 1300);
    assert_actions(
        &d4.actions,
        &[
            "ArmFence until=30.800s watchdog",
            "WriteStatus optime=300 slots=a:300 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "WriteSync leader=a standbys=b,c quorum=1 v12",
        ],
    );
    let s = written_sync(&d4).expect("sync shrinks");
    assert_eq!(
        (s.sync_standby, s.quorum),
        (vec!["b".into(), "c".into()], 1)
    );
}

#[test]
fn quorum_mode_raises_numsync_before_lowering_the_quorum() {
    let names = r#"ANY 1 ("b","c","d")"#;
    let mut pg = pg_primary(100);
    pg.synchronous_standby_names = Some(names.into());
    pg.replication = vec![
        repl("b", "quorum", 100),
        repl("c", "quorum", 100),
        repl("d", "quorum", 100),
    ];
    let c = View::new()
        .key(
            "config",
            r#"{"synchronous_mode":"quorum","synchronous_node_count":2}"#,
        )
        .key("sync", &sync_of("a", &["b", "c", "d"], 2))
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .member("c", "replica", 100)
        .member("d", "replica", 100)
        .cluster();
    let d = leader_step(c, pg, &confirmed_state(names, 100), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "SetSynchronousStandbyNames 'ANY 2 (\"b\",\"c\",\"d\")'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(names_set(&d), Some(Some(r#"ANY 2 ("b","c","d")"#.into())));
    assert_eq!(written_sync(&d), None);
}

#[test]
fn quorum_mode_swaps_a_voter_by_widening_sync_first() {
    // b stays, c leaves (nosync), d joins; one synchronous standby wanted.
    let names = r#"ANY 1 ("b","c")"#;
    let mut pg = pg_primary(100);
    pg.synchronous_standby_names = Some(names.into());
    pg.replication = vec![
        repl("b", "quorum", 100),
        repl("c", "quorum", 100),
        repl("d", "async", 100),
    ];
    let nosync = Tags {
        nosync: Some(true),
        ..Tags::default()
    };
    let c = with_tags(
        View::new()
            .key("config", r#"{"synchronous_mode":"quorum"}"#)
            .key("sync", &sync_of("a", &["b", "c"], 1))
            .leader("a")
            .member("a", "primary", 100)
            .member("b", "replica", 100)
            .member("d", "replica", 100),
        "c",
        nosync,
    )
    .cluster();
    let d = leader_step(c, pg, &confirmed_state(names, 100), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c,d",
            "ManageSlots create=[b,c,d] advance=[] drop=[]",
            "WriteSync leader=a standbys=b,c,d quorum=2 v12",
        ],
    );
    let s = written_sync(&d).expect("sync widens first");
    assert_eq!(s.sync_standby, vec!["b", "c", "d"]);
    assert_eq!(
        s.quorum, 2,
        "two of b,c,d must vote while c may hold commits"
    );
}

#[test]
fn quorum_mode_strict_without_standbys_waits_for_any_standby() {
    let c = View::new()
        .key(
            "config",
            r#"{"synchronous_mode":"quorum","synchronous_mode_strict":true}"#,
        )
        .key("sync", &sync_of("a", &[], 0))
        .leader("a")
        .member("a", "primary", 100)
        .cluster();
    let no_names = LocalState {
        sync_confirm_from: Some(100),
        ..LocalState::default()
    };
    let d = leader_step(c, pg_primary(100), &no_names, 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a",
            "SetSynchronousStandbyNames 'ANY 1 (*)'",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(names_set(&d), Some(Some("ANY 1 (*)".to_string())));
}

fn quorum_race(me: &str, my_wal: u64, peers: Vec<PeerStatus>) -> Decision {
    let c = View::new()
        .key("config", r#"{"synchronous_mode":"quorum"}"#)
        .key("sync", &sync_of("a", &["b", "c", "d"], 1))
        .member("b", "replica", 100)
        .member("c", "replica", 100)
        .member("d", "replica", 100)
        .member("e", "replica", 100)
        .cluster();
    decide(
        &cfg(me),
        &LocalState::default(),
        &obs(c, pg_replica(my_wal), vec![Outcome::PeersProbed(peers)]),
        t(1000),
    )
}

fn silent(name: &str) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        reply: None,
    }
}

#[test]
fn quorum_promotion_needs_the_votes() {
    // b is a voter; quorum 1: one more voter must confirm b is not behind it.
    let alone = quorum_race(
        "b",
        100,
        vec![silent("a"), silent("c"), silent("d"), silent("e")],
    );
    assert_actions(
        &alone.actions,
        &["PublishMember role=replica state=running"],
    );
    assert!(
        alone.state.message.contains("quorum"),
        "{}",
        alone.state.message
    );
    let voted = quorum_race(
        "b",
        100,
        vec![silent("a"), peer("c", 90), silent("d"), silent("e")],
    );
    assert_actions(&voted.actions, &["AcquireLease"]);
    // The async replica e needs one vote more than a voter.
    let e_one = quorum_race(
        "e",
        100,
        vec![silent("a"), peer("b", 90), silent("c"), silent("d")],
    );
    assert_actions(
        &e_one.actions,
        &["PublishMember role=replica state=running"],
    );
    let e_two = quorum_race(
        "e",
        100,
        vec![silent("a"), peer("b", 90), peer("c", 90), silent("d")],
    );
    assert_actions(&e_two.actions, &["AcquireLease"]);
    // The last primary, running as a replica and not ahead, vouches on its own.
    let by_leader = quorum_race(
        "e",
        100,
        vec![peer("a", 100), silent("b"), silent("c"), silent("d")],
    );
    assert_actions(&by_leader.actions, &["AcquireLease"]);
}

#[test]
fn quorum_winner_rewrites_sync_with_cas_before_promoting() {
    let c = View::new()
        .key("config", r#"{"synchronous_mode":"quorum"}"#)
        .key("sync", &sync_of("a", &["b", "c"], 1))
        .leader("b")
        .member("b", "replica", 100)
        .cluster();
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(
            c.clone(),
            pg_replica(100),
            vec![Outcome::LeaseAcquired { sent_at: t(1000) }],
        ),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteSync leader=b standbys= quorum=0 v12",
        ],
    );
    match &sync_actions(&d)[..] {
        [Action::WriteSync { sync, expected }] => {
            assert_eq!(sync.leader.as_deref(), Some("b"));
            assert!(sync.sync_standby.is_empty() && sync.quorum == 0);
            assert_eq!(*expected, c.sync.as_ref().map(|s| s.version));
        }
        other => panic!("{other:?}"),
    }
    // Holding the key in a later cycle without having won it then: race again.
    let later = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(
            c,
            pg_replica(100),
            vec![Outcome::LeaseRenewed { sent_at: t(2000) }],
        ),
        t(2000),
    );
    assert_actions(
        &later.actions,
        &[
            "ArmFence until=31.500s watchdog",
            "ReleaseLease",
            "DisarmFence",
            "PublishMember role=replica state=running",
        ],
    );
}

#[test]
fn switching_from_quorum_to_on_trusts_no_voter_until_confirmed() {
    let c = View::new()
        .key("config", r#"{"synchronous_mode":"on"}"#)
        .key("sync", &sync_of("a", &["b", "c"], 1))
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .member("c", "replica", 100)
        .cluster();
    let mut pg = pg_primary(100);
    pg.synchronous_standby_names = Some(r#"ANY 1 ("b","c")"#.into());
    pg.replication = vec![repl("b", "quorum", 100), repl("c", "quorum", 100)];
    let d = leader_step(c, pg, &LocalState::default(), 1000);
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b,c",
            "ManageSlots create=[b,c] advance=[] drop=[]",
            "WriteSync leader=a standbys= quorum=0 v12",
        ],
    );
    let s = written_sync(&d).expect("sync reset first");
    assert!(s.sync_standby.is_empty() && s.quorum == 0);
}

// The watchdog scenarios are decision fixtures: testdata/watchdog.txt.

// ----- failsafe mode ------------------------------------------------------------

const FAILSAFE_ON: &str = r#"{"failsafe_mode":true}"#;

fn topology(names: &[&str]) -> crate::model::Failsafe {
    names
        .iter()
        .map(|n| (n.to_string(), format!("http://127.0.0.1:8008/{n}")))
        .collect()
}

/// Node `a`, primary, whose last successful read showed `failsafe` = `map`, with a
/// lease until 31 s, and the DCS now unreachable.
fn failsafe_primary(map: &[&str]) -> (LocalState, Observation) {
    let view = View::new()
        .leader("a")
        .member("a", "primary", 1)
        .member("b", "replica", 1)
        .key("config", FAILSAFE_ON)
        .key(
            "failsafe",
            &serde_json::to_string(&topology(map)).expect("json"),
        )
        .cluster();
    let st = LocalState {
        lease_until: Some(t(31_000)),
        config: view.config.as_ref().map(|c| c.value.clone()),
        last_leader_view: Some(view),
        ..Default::default()
    };
    let mut o = obs(Cluster::default(), pg_primary(1), vec![]);
    o.cluster = Err(DcsError::Unreachable("down".into()));
    (st, o)
}

fn checked(sent_at: u64, accepted: &[&str]) -> Outcome {
    Outcome::FailsafeChecked {
        sent_at: t(sent_at),
        accepted: accepted.iter().map(|s| s.to_string()).collect(),
        positions: Default::default(),
    }
}

#[test]
fn leader_publishes_the_failsafe_topology_when_it_changed() {
    let c = View::new()
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .cluster();
    let mut node = cfg("a");
    node.api_url = Some("http://127.0.0.1:8008/a".into());
    let o = obs(
        c,
        pg_primary(100),
        vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
    );
    let d = decide(&node, &LocalState::default(), &o, t(1010));
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteFailsafe a,b",
            "WriteStatus optime=100 slots=a:100 retain=a,b",
            "ManageSlots create=[b] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(d.state.failsafe_written, Some(topology(&["a", "b"])));

    // Already there: nothing to write.
    let c = View::new()
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .key(
            "failsafe",
            &serde_json::to_string(&topology(&["a", "b"])).expect("json"),
        )
        .cluster();
    let o = obs(
        c,
        pg_primary(100),
        vec![Outcome::LeaseRenewed { sent_at: t(1000) }],
    );
    let d = decide(&node, &LocalState::default(), &o, t(1010));
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=100 slots=a:100 retain=a,b",
            "ManageSlots create=[b] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
}

#[test]
fn failsafe_primary_without_the_dcs_calls_every_other_member() {
    let (st, o) = failsafe_primary(&["a", "b"]);
    let d = decide(&cfg("a"), &st, &o, t(11_000));
    assert_actions(&d.actions, &["CheckFailsafe b ttl=30s"]);
    let [Action::CheckFailsafe {
        members,
        ttl,
        slots,
    }] = d.actions.as_slice()
    else {
        panic!("{:?}", d.actions)
    };
    assert_eq!(*members, topology(&["b"]));
    assert_eq!(*ttl, Duration::from_secs(30));
    // The members get my slot positions to advance theirs by, my own name included.
    assert_eq!(slots.get("a"), Some(&o.pg.wal_position()));
    assert!(d.rerun);
}

#[test]
fn failsafe_primary_keeps_running_while_every_member_confirms() {
    let node = cfg("a");
    let (st, mut o) = failsafe_primary(&["a", "b"]);
    o.outcomes.push(checked(11_000, &["b"]));
    // Without failsafe this would demote (11 + 20 > 30.5 s, see the test above).
    let d = decide(&node, &st, &o, t(11_050));
    assert_actions(&d.actions, &["ArmFence until=40.500s watchdog"]);
    // The lease (and the fence) move to the calls' send time + ttl.
    assert_eq!(d.state.lease_until, Some(t(41_000)));
    assert!(d.state.failsafe_active);
}

#[test]
fn failsafe_primary_demotes_as_without_failsafe_when_a_member_does_not_confirm() {
    let (st, mut o) = failsafe_primary(&["a", "b", "c"]);
    o.outcomes.push(checked(11_000, &["b"]));
    let d = decide(&cfg("a"), &st, &o, t(11_050));
    assert_actions(&d.actions, &["Demote Offline upstream=-"]);
    assert_eq!(d.state.lease_until, Some(t(31_000)));
    assert!(!d.state.failsafe_active);
}

#[test]
fn failsafe_primary_demotes_at_once_when_a_member_does_not_confirm_though_the_lease_runs_on() {
    // Patroni's rule (and its acceptance suite): in failsafe mode an unconfirmed
    // primary stops now, not when the lease is about to end.
    let (st, mut o) = failsafe_primary(&["a", "b", "c"]);
    o.outcomes.push(checked(2_000, &["b"]));
    let d = decide(&cfg("a"), &st, &o, t(2_050));
    assert_actions(&d.actions, &["Demote Offline upstream=-"]);
    assert!(!d.state.failsafe_active);
}

#[test]
fn failsafe_never_revives_a_lease_that_ended_before_the_calls() {
    let (mut st, mut o) = failsafe_primary(&["a", "b"]);
    st.lease_until = Some(t(10_000));
    o.outcomes.push(checked(11_000, &["b"]));
    let d = decide(&cfg("a"), &st, &o, t(11_050));
    assert_actions(&d.actions, &["Demote Offline upstream=-"]);
    assert_eq!(d.state.lease_until, None);
}

#[test]
fn failsafe_needs_a_topology_naming_me() {
    let (st, o) = failsafe_primary(&["b", "c"]);
    let d = decide(&cfg("a"), &st, &o, t(11_000));
    assert_actions(&d.actions, &["Demote Offline upstream=-"]);
}

#[test]
fn failsafe_single_member_topology_keeps_the_primary_without_calls() {
    let (st, o) = failsafe_primary(&["a"]);
    let d = decide(&cfg("a"), &st, &o, t(11_000));
    assert_actions(&d.actions, &["ArmFence until=40.500s watchdog"]);
    assert_eq!(d.state.lease_until, Some(t(41_000)));
}

#[test]
fn failsafe_also_calls_members_of_a_topology_written_but_not_read_back() {
    let (mut st, o) = failsafe_primary(&["a", "b"]);
    st.failsafe_written = Some(topology(&["a", "b", "c"]));
    let d = decide(&cfg("a"), &st, &o, t(11_000));
    assert_actions(&d.actions, &["CheckFailsafe b,c ttl=30s"]);
}

#[test]
fn replica_called_by_a_failsafe_leader_does_not_race() {
    let c = View::new()
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .cluster();
    let mut o = obs(c, pg_replica(100), vec![]);
    o.failsafe_leader = Some("a".into());
    let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    assert!(d.state.failsafe_active);
}

#[test]
fn member_outside_a_failsafe_topology_does_not_race() {
    let c = View::new()
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .key(
            "failsafe",
            &serde_json::to_string(&topology(&["a", "c"])).expect("json"),
        )
        .cluster();
    let long_running = LocalState {
        started_at: Some(t(0)),
        ..Default::default()
    };
    let d = decide(
        &cfg("b"),
        &long_running,
        &obs(c, pg_replica(100), vec![]),
        t(100_000),
    );
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    assert!(
        d.state.message.contains("not in the failsafe topology"),
        "{}",
        d.state.message
    );
}

#[test]
fn freshly_started_replica_waits_a_ttl_before_racing_in_failsafe_mode() {
    let c = View::new()
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .cluster();
    let o = obs(c, pg_replica(100), vec![]);
    let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    assert_eq!(d.state.started_at, Some(t(1000)));
    assert_eq!(d.wake_at, Some(t(31_000)));
    let d = decide(&cfg("b"), &d.state, &o, t(31_000));
    assert_actions(&d.actions, &["AcquireLease"]);
}

#[test]
fn with_a_durable_failsafe_record_a_freshly_started_replica_races_at_once() {
    // The runner restored any call this node accepted before it restarted; none is
    // valid (no failsafe leader in the observation), so there is nothing to wait for.
    let c = View::new()
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .cluster();
    let o = obs(c, pg_replica(100), vec![]);
    let durable = NodeConfig {
        failsafe_record_durable: true,
        ..cfg("b")
    };
    let d = decide(&durable, &LocalState::default(), &o, t(1000));
    assert_actions(&d.actions, &["AcquireLease"]);
    assert!(
        !d.state.message.contains("started less than ttl ago"),
        "{}",
        d.state.message
    );
}

#[test]
fn requested_candidate_outside_the_failsafe_topology_does_not_hold_up_the_others() {
    let c = View::new()
        .member("a", "replica", 100)
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .key(
            "failsafe",
            &serde_json::to_string(&topology(&["b", "c"])).expect("json"),
        )
        .key("failover", r#"{"member":"a"}"#)
        .cluster();
    let long_running = LocalState {
        started_at: Some(t(0)),
        ..Default::default()
    };
    let o = obs(
        c,
        pg_replica(100),
        vec![Outcome::PeersProbed(vec![peer("a", 100)])],
    );
    let d = decide(&cfg("b"), &long_running, &o, t(100_000));
    assert_actions(&d.actions, &["AcquireLease"]);
    assert!(
        !d.state.message.contains("will take over"),
        "{}",
        d.state.message
    );
}

pub(super) fn member_with_tags(name: &str, role: &str, tags: Tags) -> (String, String) {
    let (k, v) = member(name, role, 1);
    let mut d: MemberData = serde_json::from_str(&v).expect("member json");
    d.tags = tags;
    (k, d.to_json())
}

#[test]
fn empty_node_restores_without_leader_only_with_a_no_leader_method() {
    let empty = || PgObservation::stopped(DataDirState::Empty);
    let run = |cfg: &NodeConfig, c: Cluster| {
        decide(
            cfg,
            &LocalState::default(),
            &obs(c, empty(), vec![]),
            t(1000),
        )
        .actions
    };
    let mut restorer = cfg("b");
    restorer.can_restore_without_leader = true;
    // Bootstrapped cluster, nobody leads: only a node with a no_leader method restores.
    let leaderless = || View::new().member("c", "replica", 1).cluster();
    assert_actions(
        &run(&restorer, leaderless()),
        &[
            "RestoreReplica",
            "PublishMember role=uninitialized state=stopped",
        ],
    );
    assert_actions(
        &run(&cfg("b"), leaderless()),
        &["PublishMember role=uninitialized state=stopped"],
    );
    // A leader exists: clone from it as usual.
    let led = View::new().leader("a").member("a", "primary", 1).cluster();
    assert_actions(
        &run(&restorer, led),
        &[
            "CloneReplica from=a follow=a",
            "PublishMember role=uninitialized state=stopped",
        ],
    );
    // Bootstrap still in progress (initialize claimed, no system identifier yet): wait.
    let bootstrapping = Cluster::from_entries(vec![RawEntry {
        key: "initialize".into(),
        value: String::new(),
        version: Version(1),
        session: None,
    }]);
    assert_actions(
        &run(&restorer, bootstrapping),
        &["PublishMember role=uninitialized state=stopped"],
    );
}

fn behind_timeline_view(leader: &str) -> Cluster {
    let (k, v) = member(leader, "primary", 500);
    let mut data = MemberData::parse(&v).expect("member json");
    data.timeline = Some(2);
    View::new()
        .key("config", r#"{"ttl":30,"loop_wait":1,"retry_timeout":2}"#)
        .leader(leader)
        .key(&k, &data.to_json())
        .member("b", "replica", 400)
        .cluster()
}

fn stops_for_divergence_check(d: &Decision) -> bool {
    d.actions
        .iter()
        .any(|a| matches!(a, Action::StopPostgres { .. }))
}

#[test]
fn replica_behind_a_new_timeline_gets_time_to_reconnect_and_a_new_leader_restarts_the_count() {
    let mut pg = pg_replica(400);
    pg.replication_state = None;
    let node = cfg("b");
    let c = behind_timeline_view("a");
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(c.clone(), pg.clone(), vec![]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &["Follow a", "PublishMember role=replica state=running"],
    );
    assert!(!stops_for_divergence_check(&d));
    // It follows a now; several loop_waits later the walreceiver may still be waiting
    // for its retry.
    pg.following = Some("a".into());
    let d = decide(
        &node,
        &d.state,
        &obs(c.clone(), pg.clone(), vec![]),
        t(1500),
    );
    assert!(!stops_for_divergence_check(&d), "{:?}", d.actions);
    let d = decide(
        &node,
        &d.state,
        &obs(c.clone(), pg.clone(), vec![]),
        t(6000),
    );
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    // Another failover meanwhile: the count starts again for the new leader.
    let c2 = behind_timeline_view("c");
    let d = decide(
        &node,
        &d.state,
        &obs(c2.clone(), pg.clone(), vec![]),
        t(10_500),
    );
    assert_actions(
        &d.actions,
        &["Follow c", "PublishMember role=replica state=running"],
    );
    assert!(!stops_for_divergence_check(&d), "{:?}", d.actions);
    pg.following = Some("c".into());
    let d = decide(
        &node,
        &d.state,
        &obs(c2.clone(), pg.clone(), vec![]),
        t(11_000),
    );
    assert!(!stops_for_divergence_check(&d), "{:?}", d.actions);
    // Still not streaming long after: stopped for the divergence check.
    let d = decide(&node, &d.state, &obs(c2, pg, vec![]), t(21_000));
    assert_actions(
        &d.actions,
        &[
            "StopPostgres Fast",
            "PublishMember role=replica state=running",
        ],
    );
    assert!(stops_for_divergence_check(&d), "{:?}", d.actions);
}

#[test]
fn cascading_replica_whose_upstream_died_is_not_stopped_for_a_divergence_check_after_following_the_leader(
) {
    // e2e_cascade on a fresh machine: b streamed from its replicatefrom member r, r
    // died; b stopped streaming at once but r's member key lived on for most of a ttl.
    // When it expired b followed the leader, whose walreceiver connects only on its
    // retry interval, and b was stopped "for a divergence check" with no failover: the
    // count had run against the leader since r died.
    let view = |with_r: bool| {
        let v = View::new()
            .key("config", r#"{"ttl":30,"loop_wait":1,"retry_timeout":2}"#)
            .leader("a")
            .member("a", "primary", 500)
            .member("b", "replica", 400);
        if with_r {
            v.member("r", "replica", 450).cluster()
        } else {
            v.cluster()
        }
    };
    let mut node = cfg("b");
    node.tags.replicatefrom = Some("r".into());
    let mut pg = pg_replica(400);
    pg.replication_state = None;
    pg.following = Some("r".into());
    // r is gone but its key is not: b waits.
    let mut state = LocalState::default();
    for ms in [1000, 10_000, 25_000] {
        let d = decide(&node, &state, &obs(view(true), pg.clone(), vec![]), t(ms));
        assert!(!stops_for_divergence_check(&d), "{:?}", d.actions);
        state = d.state;
    }
    // r's key expired: b follows the leader.
    let d = decide(
        &node,
        &state,
        &obs(view(false), pg.clone(), vec![]),
        t(28_000),
    );
    assert_actions(
        &d.actions,
        &["Follow a", "PublishMember role=replica state=running"],
    );
    pg.following = Some("a".into());
    let mut state = d.state;
    // More than a ttl after r died, a few seconds after the follow: no stop.
    for ms in [29_000, 33_000, 40_000] {
        let d = decide(&node, &state, &obs(view(false), pg.clone(), vec![]), t(ms));
        assert!(
            !stops_for_divergence_check(&d),
            "at {ms} ms: {:?}",
            d.actions
        );
        state = d.state;
    }
    // Not streaming from the leader for a whole ttl: now it is checked.
    let d = decide(&node, &state, &obs(view(false), pg, vec![]), t(60_000));
    assert!(stops_for_divergence_check(&d), "{:?}", d.actions);
}

#[test]
fn a_peer_outside_the_failsafe_topology_is_no_rival_in_the_race() {
    // n0 has more WAL but is not in the topology, so it may not lead; deferring to it
    // would leave the cluster without a leader (simulator seed 910).
    let c = View::new()
        .member("a", "replica", 100)
        .member("b", "replica", 100)
        .key("config", FAILSAFE_ON)
        .key(
            "failsafe",
            &serde_json::to_string(&topology(&["b", "c"])).expect("json"),
        )
        .cluster();
    let long_running = LocalState {
        started_at: Some(t(0)),
        ..Default::default()
    };
    let o = obs(
        c,
        pg_replica(100),
        vec![Outcome::PeersProbed(vec![peer("a", 500)])],
    );
    let d = decide(&cfg("b"), &long_running, &o, t(100_000));
    assert_actions(&d.actions, &["AcquireLease"]);
}

#[test]
fn nostream_replica_recovers_from_the_archive_only() {
    let c = || {
        View::new()
            .leader("a")
            .member("a", "primary", 100)
            .member("b", "replica", 90)
            .cluster()
    };
    let mut node = cfg("b");
    node.tags.nostream = Some(true);
    let archive_recovery = PgObservation {
        replication_state: Some("in archive recovery".into()),
        ..pg_replica(90)
    };
    let d = decide(
        &node,
        &LocalState::default(),
        &obs(c(), archive_recovery.clone(), vec![]),
        t(1000),
    );
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    // It never follows anyone, and not streaming is no sign of divergence here.
    let later = decide(
        &node,
        &d.state,
        &obs(c(), archive_recovery, vec![]),
        t(1000 + 120_000),
    );
    assert_actions(
        &later.actions,
        &["PublishMember role=replica state=running"],
    );
}

#[test]
fn check_timeline_keeps_a_replica_on_an_old_timeline_out_of_the_race() {
    // The cluster is on timeline 2 (one history entry); b is still on timeline 1.
    let view = |config: &str| {
        View::new()
            .member("b", "replica", 100)
            .key("history", r#"[[1,50,"r"]]"#)
            .key("config", config)
            .cluster()
    };
    let mut pg = pg_replica(100);
    pg.timeline = Some(1);
    let d = step("b", view(r#"{"check_timeline": true}"#), pg.clone(), vec![]);
    assert_actions(&d.actions, &["PublishMember role=replica state=running"]);
    assert!(d.state.message.contains("timeline"), "{}", d.state.message);
    let d = step("b", view("{}"), pg, vec![]);
    assert_actions(&d.actions, &["AcquireLease"]);
}
