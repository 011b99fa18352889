//! Scenario tests of the slot rules (`slot_plan`): which slots each role keeps, how
//! replicas follow the leader's published positions and get logical slots.

use super::tests::{assert_actions, cfg, member_with_tags, obs, pg_primary, pg_replica, t, View};
use super::*;
use crate::model::{MemberData, ObservedSlot, SlotKind, Tags};
use crate::postgres::{PgObservation, SlotChanges};

fn renewed(at: u64) -> Vec<Outcome> {
    vec![Outcome::LeaseRenewed { sent_at: t(at) }]
}

fn slot_changes(d: &Decision) -> Option<SlotChanges> {
    d.actions.iter().find_map(|a| match a {
        Action::ManageSlots(c) => Some(c.clone()),
        _ => None,
    })
}

/// The `ManageSlots` action as the logs show it.
fn slot_line(d: &Decision) -> Option<String> {
    d.actions
        .iter()
        .find(|a| matches!(a, Action::ManageSlots(_)))
        .map(|a| a.to_string())
}

fn created(d: &Decision) -> Vec<String> {
    slot_changes(d)
        .map(|c| c.create.into_iter().map(|s| s.name).collect())
        .unwrap_or_default()
}

fn physical(name: &str, lsn: u64) -> ObservedSlot {
    ObservedSlot {
        name: name.into(),
        kind: SlotKind::Physical,
        lsn: Some(lsn),
        active: false,
        xmin: None,
    }
}

fn cdc_kind() -> SlotKind {
    SlotKind::Logical {
        database: "postgres".into(),
        plugin: "test_decoding".into(),
    }
}

/// A primary of PostgreSQL 15 (logical slots and advancing slots need 11+).
fn pg15_primary(wal: u64, slots: Vec<ObservedSlot>) -> PgObservation {
    PgObservation {
        server_version: Some(150_004),
        slots,
        ..pg_primary(wal)
    }
}

/// A replica of PostgreSQL 15 (slots on replicas need 11+).
fn pg15_replica(wal: u64, slots: Vec<ObservedSlot>) -> PgObservation {
    PgObservation {
        server_version: Some(150_004),
        slots,
        ..streaming_from_a(wal)
    }
}

/// A replica already streaming from the leader `a`.
fn streaming_from_a(wal: u64) -> PgObservation {
    PgObservation {
        following: Some("a".into()),
        ..pg_replica(wal)
    }
}

const PERMANENT: &str = r#"{"slots": {"backup": {"type": "physical"},
    "cdc": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}}"#;

#[test]
fn primary_keeps_slots_for_members_streaming_from_it() {
    let c = View::new()
        .leader("a")
        .member("a", "primary", 1)
        .member("b-1", "replica", 1)
        .member("c", "replica", 1)
        .cluster();
    let d = decide(
        &cfg("a"),
        &LocalState::default(),
        &obs(c, pg_primary(1), renewed(1000)),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteConfig new",
            "WriteStatus optime=1 slots=a:1 retain=a,b_1,c",
            "ManageSlots create=[b_1,c] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(created(&d), vec!["b_1", "c"], "{:?}", d.actions);
    // c disappears: its slot stays while member_slots_ttl lasts.
    let c2 = View::new()
        .leader("a")
        .member("a", "primary", 1)
        .member("b-1", "replica", 1)
        .cluster();
    let has_both = PgObservation {
        slots: vec![physical("b_1", 1), physical("c", 1)],
        ..pg_primary(1)
    };
    let d2 = decide(
        &cfg("a"),
        &d.state,
        &obs(c2.clone(), has_both.clone(), renewed(2000)),
        t(2000),
    );
    assert_actions(
        &d2.actions,
        &[
            "ArmFence until=31.500s watchdog",
            "WriteConfig new",
            "WriteStatus optime=1 slots=a:1,b_1:1,c:1 retain=a,b_1,c",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(slot_changes(&d2), None, "{:?}", d2.actions);
    let later = 2000 + 1_801_000;
    let d3 = decide(
        &cfg("a"),
        &d2.state,
        &obs(c2, has_both, renewed(later)),
        t(later),
    );
    assert_actions(
        &d3.actions,
        &[
            "ArmFence until=1832.500s watchdog",
            "WriteConfig new",
            "WriteStatus optime=1 slots=a:1,b_1:1 retain=a,b_1",
            "ManageSlots create=[] advance=[] drop=[c]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(
        slot_changes(&d3).map(|c| c.drop),
        Some(vec!["c".to_string()])
    );
}

#[test]
fn cascade_slots_live_on_the_replica_streamed_from() {
    let cascading = Tags {
        replicatefrom: Some("b".into()),
        ..Tags::default()
    };
    let (ck, cv) = member_with_tags("c", "replica", cascading);
    let view = || {
        View::new()
            .leader("a")
            .member("a", "primary", 1)
            .member("b", "replica", 1)
            .key(&ck, &cv)
    };
    // The replica c streams from keeps c's slot (an old server keeps only that one).
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(view().cluster(), streaming_from_a(1), vec![]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ManageSlots create=[c] advance=[] drop=[]",
            "PublishMember role=replica state=running",
        ],
    );
    assert_eq!(created(&d), vec!["c"], "{:?}", d.actions);
    // Once c is gone its slot is dropped; with no slot left, nothing to do.
    let alone = || {
        View::new()
            .leader("a")
            .member("a", "primary", 1)
            .member("b", "replica", 1)
            .cluster()
    };
    let with_c = PgObservation {
        slots: vec![physical("c", 1)],
        ..streaming_from_a(1)
    };
    let d2 = decide(&cfg("b"), &d.state, &obs(alone(), with_c, vec![]), t(2000));
    assert_actions(
        &d2.actions,
        &[
            "ManageSlots create=[] advance=[] drop=[c]",
            "PublishMember role=replica state=running",
        ],
    );
    assert_eq!(
        slot_changes(&d2).map(|c| c.drop),
        Some(vec!["c".to_string()])
    );
    let d3 = decide(
        &cfg("b"),
        &d2.state,
        &obs(alone(), streaming_from_a(1), vec![]),
        t(3000),
    );
    assert_actions(&d3.actions, &["PublishMember role=replica state=running"]);
    assert_eq!(slot_changes(&d3), None);
    // The primary keeps no slot for c while b runs.
    let primary_slots = |c: Cluster| {
        created(&decide(
            &cfg("a"),
            &LocalState::default(),
            &obs(c, pg_primary(1), renewed(1000)),
            t(1000),
        ))
    };
    assert_eq!(primary_slots(view().cluster()), vec!["b"]);
    // Once b is gone, c streams from the primary and gets its slot there.
    let without_b = View::new()
        .leader("a")
        .member("a", "primary", 1)
        .key(&ck, &cv)
        .cluster();
    assert_eq!(primary_slots(without_b), vec!["c"]);
}

#[test]
fn leader_creates_permanent_slots_and_publishes_every_slot_position() {
    let c = View::new()
        .key("config", PERMANENT)
        .leader("a")
        .member("a", "primary", 900)
        .member("b", "replica", 800)
        .cluster();
    let d = decide(
        &cfg("a"),
        &LocalState::default(),
        &obs(c.clone(), pg15_primary(900, vec![]), renewed(1000)),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=900 slots=a:900 retain=a,b",
            "ManageSlots create=[b,backup,cdc] advance=[] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    assert_eq!(created(&d), vec!["b", "backup", "cdc"]);
    let with_slots = PgObservation {
        slots: vec![
            physical("b", 800),
            physical("backup", 100),
            ObservedSlot {
                name: "cdc".into(),
                kind: cdc_kind(),
                lsn: Some(700),
                active: true,
                xmin: None,
            },
            physical("stray", 5),
        ],
        ..pg15_primary(900, vec![])
    };
    let d2 = decide(
        &cfg("a"),
        &d.state,
        &obs(c, with_slots, renewed(2000)),
        t(2000),
    );
    assert_actions(
        &d2.actions,
        &[
            "ArmFence until=31.500s watchdog",
            "WriteStatus optime=900 slots=a:900,b:800,backup:100,cdc:700 retain=a,b",
            "ManageSlots create=[] advance=[] drop=[stray]",
            "PublishMember role=primary state=running",
        ],
    );
    let status = d2
        .actions
        .iter()
        .find_map(|a| match a {
            Action::WriteStatus(s) => Some(s.clone()),
            _ => None,
        })
        .expect("status written");
    assert_eq!(status.optime, Some(900));
    let slots: Vec<(&str, u64)> = status.slots.iter().map(|(k, v)| (k.as_str(), *v)).collect();
    // Unmanaged slots are not published; the leader's own name carries its WAL position.
    assert_eq!(
        slots,
        vec![("a", 900), ("b", 800), ("backup", 100), ("cdc", 700)]
    );
    assert_eq!(status.retain_slots, vec!["a", "b"]);
    assert_eq!(
        slot_changes(&d2).map(|c| c.drop),
        Some(vec!["stray".to_string()])
    );
}

#[test]
fn replicas_keep_the_leaders_slots_at_its_published_positions() {
    let status = r#"{"optime": 900, "slots": {"a": 900, "b": 850, "c": 800, "backup": 300}}"#;
    let c = View::new()
        .key("config", PERMANENT)
        .key("status", status)
        .leader("a")
        .member("a", "primary", 900)
        .member("b", "replica", 850)
        .member("c", "replica", 800)
        .cluster();
    let pg = pg15_replica(
        850,
        vec![
            physical("a", 500),
            physical("backup", 400),
            physical("c", 100),
        ],
    );
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(c, pg, vec![]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ManageSlots create=[] advance=[a:900,c:800] drop=[]",
            "PublishMember role=replica state=running",
        ],
    );
    let changes = slot_changes(&d).expect("slot changes");
    // b keeps no slot for itself; `cdc` waits for a copy (not replayed up to it yet is
    // irrelevant: a logical slot is never created on a replica).
    assert!(changes.create.is_empty(), "{changes:?}");
    let advanced: Vec<(&str, u64)> = changes
        .advance
        .iter()
        .map(|a| (a.name.as_str(), a.to))
        .collect();
    // `backup` is ahead of the published position: slots never move back.
    assert_eq!(advanced, vec![("a", 900), ("c", 800)]);
}

#[test]
fn replicas_copy_logical_slots_from_the_leader_once_replayed_past_them() {
    let view = |cdc_at: u64| {
        View::new()
            .key("config", PERMANENT)
            .key(
                "status",
                &format!(
                    r#"{{"optime": 900, "slots": {{"a": 900, "backup": 300, "cdc": {cdc_at}}}}}"#
                ),
            )
            .leader("a")
            .member("a", "primary", 900)
            .member("b", "replica", 850)
            .cluster()
    };
    let have = || vec![physical("a", 900), physical("backup", 300)];
    let copy = |d: &Decision| {
        d.actions.iter().find_map(|a| match a {
            Action::CopyLogicalSlots { source, names, .. } => {
                Some((source.name.clone(), names.clone()))
            }
            _ => None,
        })
    };
    // The leader's slot is ahead of what b replayed: copying now would give b a slot
    // from its future.
    let early = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(view(860), pg15_replica(850, have()), vec![]),
        t(1000),
    );
    assert_actions(
        &early.actions,
        &["PublishMember role=replica state=running"],
    );
    assert_eq!(copy(&early), None);
    let d = decide(
        &cfg("b"),
        &early.state,
        &obs(view(800), pg15_replica(850, have()), vec![]),
        t(2000),
    );
    assert_actions(
        &d.actions,
        &[
            "CopyLogicalSlots cdc from=a follow=a",
            "PublishMember role=replica state=running",
        ],
    );
    assert_eq!(copy(&d), Some(("a".to_string(), vec!["cdc".to_string()])));
    assert_eq!(d.actions.iter().filter_map(Action::busy).count(), 1);
    // The copy failed (the slot is still missing): the same state is not copied again
    // soon ...
    let again = decide(
        &cfg("b"),
        &d.state,
        &obs(view(800), pg15_replica(850, have()), vec![]),
        t(30_000),
    );
    assert_actions(
        &again.actions,
        &["PublishMember role=replica state=running"],
    );
    assert_eq!(copy(&again), None);
    // ... but once the consumer moved on, the leader's newer state is worth a copy.
    let moved = decide(
        &cfg("b"),
        &again.state,
        &obs(view(820), pg15_replica(850, have()), vec![]),
        t(31_000),
    );
    assert_actions(
        &moved.actions,
        &[
            "CopyLogicalSlots cdc from=a follow=a",
            "PublishMember role=replica state=running",
        ],
    );
    assert!(copy(&moved).is_some());
    let retry = decide(
        &cfg("b"),
        &moved.state,
        &obs(view(820), pg15_replica(850, have()), vec![]),
        t(31_000 + 301_000),
    );
    assert_actions(
        &retry.actions,
        &[
            "CopyLogicalSlots cdc from=a follow=a",
            "PublishMember role=replica state=running",
        ],
    );
    assert!(copy(&retry).is_some());
}

#[test]
fn nofailover_replicas_and_standby_leaders_keep_fewer_slots() {
    let status = r#"{"optime": 900, "slots": {"a": 900, "backup": 300, "cdc": 100}}"#;
    let c = View::new()
        .key("config", PERMANENT)
        .key("status", status)
        .leader("a")
        .member("a", "primary", 900)
        .member("b", "replica", 850)
        .cluster();
    let mut never_leads = cfg("b");
    never_leads.tags.nofailover = Some(true);
    let d = decide(
        &never_leads,
        &LocalState::default(),
        &obs(c, pg15_replica(850, vec![physical("a", 1)]), vec![]),
        t(1000),
    );
    assert_actions(
        &d.actions,
        &[
            "ManageSlots create=[] advance=[] drop=[a]",
            "PublishMember role=replica state=running",
        ],
    );
    // It can never be promoted: no slot kept for after a failover.
    assert_eq!(
        slot_changes(&d).map(|c| c.drop),
        Some(vec!["a".to_string()])
    );
}

#[test]
fn without_the_dcs_replicas_advance_slots_by_the_failsafe_leaders_positions() {
    let view = View::new()
        .leader("a")
        .member("a", "primary", 900)
        .member("b", "replica", 850)
        .member("c", "replica", 850)
        .cluster();
    let before_outage = LocalState {
        last_leader_view: Some(view),
        members_seen: ["a", "b", "c"].map(|m| (m.to_string(), t(500))).into(),
        ..Default::default()
    };
    let mut o = obs(
        View::new().cluster(),
        pg15_replica(850, vec![physical("a", 500), physical("c", 400)]),
        vec![],
    );
    o.cluster = Err(crate::dcs::DcsError::Unreachable("down".into()));
    o.failsafe_leader = Some("a".into());
    o.failsafe_slots = [("a".to_string(), 900u64), ("c".to_string(), 850)].into();
    let d = decide(&cfg("b"), &before_outage, &o, t(1000));
    assert_actions(
        &d.actions,
        &["ManageSlots create=[] advance=[a:900,c:850] drop=[]"],
    );
    let changes = slot_changes(&d).expect("advances");
    // Only moves forward: nothing is created or dropped on a view from before the outage.
    assert!(
        changes.create.is_empty() && changes.drop.is_empty(),
        "{changes:?}"
    );
    let advanced: Vec<(&str, u64)> = changes
        .advance
        .iter()
        .map(|a| (a.name.as_str(), a.to))
        .collect();
    assert_eq!(advanced, vec![("a", 900), ("c", 850)]);
    // No leader called: nothing to go by.
    o.failsafe_leader = None;
    o.failsafe_slots.clear();
    assert_eq!(
        slot_changes(&decide(&cfg("b"), &before_outage, &o, t(1000))),
        None
    );
}

/// A member record at `wal` with `tags`.
fn tagged(name: &str, role: &str, wal: u64, tags: Tags) -> (String, String) {
    let d = MemberData {
        conn_url: Some(format!("postgres://127.0.0.1:{}/postgres", 5432 + wal % 7)),
        api_url: Some(format!("http://127.0.0.1:8008/{name}")),
        state: Some(crate::model::MemberState::Running),
        role: Some(crate::model::Role::from(role.to_string())),
        xlog_location: Some(wal),
        tags,
        ..Default::default()
    };
    (format!("members/{name}"), d.to_json())
}

fn replicating_from(upstream: &str) -> Tags {
    Tags {
        replicatefrom: Some(upstream.into()),
        ..Tags::default()
    }
}

fn with_xmin(slot: ObservedSlot) -> ObservedSlot {
    ObservedSlot {
        xmin: Some(750),
        ..slot
    }
}

fn active(slot: ObservedSlot) -> ObservedSlot {
    ObservedSlot {
        active: true,
        ..slot
    }
}

/// Patroni's permanent_slots feature: a leads, b replicates, c never fails over, d
/// cascades from c; `test_physical` and `d` (a member's slot name) are permanent.
fn permanent_slots_cluster() -> Cluster {
    let (ck, cv) = tagged(
        "c",
        "replica",
        800,
        Tags {
            nofailover: Some(true),
            ..Tags::default()
        },
    );
    let (dk, dv) = tagged("d", "replica", 820, replicating_from("c"));
    View::new()
        .key("config", r#"{"slots": {"test_physical": 0, "d": 0}}"#)
        .key(
            "status",
            r#"{"optime": 900, "slots": {"a": 900, "b": 850, "c": 800, "d": 700, "test_physical": 600},
                "retain_slots": ["a", "b", "c"]}"#,
        )
        .leader("a")
        .member("a", "primary", 900)
        .member("b", "replica", 850)
        .key(&ck, &cv)
        .key(&dk, &dv)
        .cluster()
}

#[test]
fn with_postgres_11_the_leader_keeps_a_slot_for_every_member_cascading_ones_included() {
    let c = permanent_slots_cluster();
    let fresh = decide(
        &cfg("a"),
        &LocalState::default(),
        &obs(c.clone(), pg15_primary(900, vec![]), renewed(1000)),
        t(1000),
    );
    // d streams from c, yet the leader keeps d's slot too: whoever leads next needs it.
    assert_eq!(
        slot_line(&fresh).as_deref(),
        Some("ManageSlots create=[b,c,d,test_physical] advance=[] drop=[]")
    );
    let slots = vec![
        active(physical("b", 850)),
        active(physical("c", 800)),
        physical("d", 700),
        physical("test_physical", 600),
    ];
    let d = decide(
        &cfg("a"),
        &fresh.state,
        &obs(c, pg15_primary(900, slots), renewed(2000)),
        t(2000),
    );
    // d's slot here is unused: it moves to where d reports to be. The status in the
    // view is what a publishes (no WriteStatus): every slot with its position, and in
    // retain_slots no `d`: a permanent slot is no member slot to retain.
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=31.500s watchdog",
            "ManageSlots create=[] advance=[d:820] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
}

#[test]
fn a_replica_keeps_every_members_slot_at_the_published_positions_and_drops_one_holding_an_xmin() {
    let slots = vec![
        physical("a", 500),
        physical("c", 800),
        with_xmin(physical("d", 100)),
        physical("test_physical", 300),
    ];
    let d = decide(
        &cfg("b"),
        &LocalState::default(),
        &obs(permanent_slots_cluster(), pg15_replica(850, slots), vec![]),
        t(1000),
    );
    // Nobody streams from b: d's xmin would never move and hold back vacuum, so the
    // slot goes (the next cycle creates it afresh); the others follow the leader.
    assert_actions(
        &d.actions,
        &[
            "ManageSlots create=[] advance=[a:900,test_physical:600] drop=[d]",
            "PublishMember role=replica state=running",
        ],
    );
}

#[test]
fn a_nofailover_replica_keeps_only_the_slots_of_members_cascading_from_it() {
    let mut c_cfg = cfg("c");
    c_cfg.tags.nofailover = Some(true);
    let d = decide(
        &c_cfg,
        &LocalState::default(),
        &obs(
            permanent_slots_cluster(),
            pg15_replica(800, vec![physical("a", 1)]),
            vec![],
        ),
        t(1000),
    );
    // No permanent slot either: c never leads.
    assert_actions(
        &d.actions,
        &[
            "ManageSlots create=[d] advance=[] drop=[a]",
            "PublishMember role=replica state=running",
        ],
    );
    // The cascading member d keeps the others' slots and the permanent ones.
    let mut d_cfg = cfg("d");
    d_cfg.tags.replicatefrom = Some("c".into());
    let at_d = decide(
        &d_cfg,
        &LocalState::default(),
        &obs(
            permanent_slots_cluster(),
            PgObservation {
                following: Some("c".into()),
                ..pg15_replica(820, vec![])
            },
            vec![],
        ),
        t(1000),
    );
    assert_eq!(
        slot_line(&at_d).as_deref(),
        Some("ManageSlots create=[a,b,c,test_physical] advance=[] drop=[]")
    );
}

/// Patroni's nostream_node feature: a leads, b takes WAL from the archive only
/// (`nostream`), c cascades from b; `test_logical` is a permanent logical slot.
fn nostream_cluster() -> Cluster {
    let (bk, bv) = tagged(
        "b",
        "replica",
        850,
        Tags {
            nostream: Some(true),
            ..Tags::default()
        },
    );
    let (ck, cv) = tagged("c", "replica", 820, replicating_from("b"));
    View::new()
        .key(
            "config",
            r#"{"slots": {"test_logical": {"type": "logical", "database": "postgres", "plugin": "test_decoding"}}}"#,
        )
        .key(
            "status",
            r#"{"optime": 900, "slots": {"a": 900, "c": 700, "test_logical": 500}}"#,
        )
        .leader("a")
        .member("a", "primary", 900)
        .key(&bk, &bv)
        .key(&ck, &cv)
        .cluster()
}

#[test]
fn no_slot_for_a_nostream_member_and_no_logical_slot_behind_one() {
    let leader = decide(
        &cfg("a"),
        &LocalState::default(),
        &obs(
            nostream_cluster(),
            pg15_primary(900, vec![physical("c", 700)]),
            renewed(1000),
        ),
        t(1000),
    );
    // b streams nothing: no slot for it, not even in status.
    assert_actions(
        &leader.actions,
        &[
            "ArmFence until=30.500s watchdog",
            "WriteStatus optime=900 slots=a:900,c:700 retain=a,c",
            "ManageSlots create=[test_logical] advance=[c:820] drop=[]",
            "PublishMember role=primary state=running",
        ],
    );
    let mut b_cfg = cfg("b");
    b_cfg.tags.nostream = Some(true);
    let at_b = decide(
        &b_cfg,
        &LocalState::default(),
        &obs(nostream_cluster(), pg15_replica(850, vec![]), vec![]),
        t(1000),
    );
    // No feedback reaches the primary from b or c: no logical slot (nor copy) there.
    assert_actions(
        &at_b.actions,
        &[
            "ManageSlots create=[a,c] advance=[] drop=[]",
            "PublishMember role=replica state=running",
        ],
    );
    let mut c_cfg = cfg("c");
    c_cfg.tags.replicatefrom = Some("b".into());
    let at_c = decide(
        &c_cfg,
        &LocalState::default(),
        &obs(
            nostream_cluster(),
            PgObservation {
                following: Some("b".into()),
                ..pg15_replica(820, vec![])
            },
            vec![],
        ),
        t(1000),
    );
    assert_eq!(
        slot_line(&at_c).as_deref(),
        Some("ManageSlots create=[a] advance=[] drop=[]")
    );
    assert!(
        !at_c
            .actions
            .iter()
            .any(|a| matches!(a, Action::CopyLogicalSlots { .. })),
        "{:?}",
        at_c.actions
    );
}

#[test]
fn without_the_dcs_the_failsafe_leader_advances_a_cascading_members_slot_to_its_reported_position()
{
    // Patroni's dcs_failsafe_mode feature: c cascades from b; while the DCS is gone the
    // leader learns c's position only from c's answer to POST /failsafe.
    let (ck, cv) = tagged("c", "replica", 40, replicating_from("b"));
    let view = View::new()
        .leader("a")
        .member("a", "primary", 100)
        .member("b", "replica", 100)
        .key(&ck, &cv)
        .key(
            "config",
            r#"{"failsafe_mode": true, "ttl": 30, "loop_wait": 10, "retry_timeout": 10}"#,
        )
        .key(
            "failsafe",
            r#"{"a": "http://127.0.0.1:8008/a", "b": "http://127.0.0.1:8008/b", "c": "http://127.0.0.1:8008/c"}"#,
        )
        .cluster();
    let st = LocalState {
        lease_until: Some(t(31_000)),
        config: view.config.as_ref().map(|c| c.value.clone()),
        last_leader_view: Some(view),
        ..Default::default()
    };
    let slots = vec![active(physical("b", 100)), physical("c", 40)];
    let mut o = obs(Cluster::default(), pg15_primary(100, slots), vec![]);
    o.cluster = Err(crate::dcs::DcsError::Unreachable("down".into()));
    o.outcomes.push(Outcome::FailsafeChecked {
        sent_at: t(11_000),
        accepted: vec!["b".into(), "c".into()],
        positions: [("b".to_string(), 100), ("c".to_string(), 90)]
            .into_iter()
            .collect(),
    });
    let d = decide(&cfg("a"), &st, &o, t(11_050));
    assert_actions(
        &d.actions,
        &[
            "ArmFence until=40.500s watchdog",
            "ManageSlots create=[] advance=[c:90] drop=[]",
        ],
    );
}
