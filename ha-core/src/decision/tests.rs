//! What decision tests share: a cluster view, a local Postgres, an observation and a
//! node built in a line each. The scenarios themselves are text fixtures
//! (`testdata/`, run by `fixtures.rs`).

use super::*;
use crate::model::{MemberData, MemberState, RawEntry, Role, Tags, Version};
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

pub(super) fn member_with_tags(name: &str, role: &str, tags: Tags) -> (String, String) {
    let (k, v) = member(name, role, 1);
    let mut d: MemberData = serde_json::from_str(&v).expect("member json");
    d.tags = tags;
    (k, d.to_json())
}
