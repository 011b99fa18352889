//! The cluster as patronictl presents it: one row per member with its display role,
//! state, address, timeline and lag behind the leader (the `/cluster` shape).

use ha_core::{Cluster, Member, SynchronousMode};
use serde_json::{Map, Value};

/// A member's role as `list` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisplayRole {
    /// Holds the leader key.
    Leader,
    /// Holds the leader key of a standby cluster.
    StandbyLeader,
    /// Listed in `sync` (synchronous_mode on).
    SyncStandby,
    /// Listed in `sync` (synchronous_mode quorum).
    QuorumStandby,
    /// Anything else.
    Replica,
}

impl DisplayRole {
    /// `/cluster`'s spelling (`sync_standby`).
    pub fn api_name(self) -> &'static str {
        match self {
            DisplayRole::Leader => "leader",
            DisplayRole::StandbyLeader => "standby_leader",
            DisplayRole::SyncStandby => "sync_standby",
            DisplayRole::QuorumStandby => "quorum_standby",
            DisplayRole::Replica => "replica",
        }
    }

    /// The table's spelling (`Sync Standby`).
    pub fn title(self) -> &'static str {
        match self {
            DisplayRole::Leader => "Leader",
            DisplayRole::StandbyLeader => "Standby Leader",
            DisplayRole::SyncStandby => "Sync Standby",
            DisplayRole::QuorumStandby => "Quorum Standby",
            DisplayRole::Replica => "Replica",
        }
    }

    /// Leader or standby leader.
    pub fn is_leader(self) -> bool {
        matches!(self, DisplayRole::Leader | DisplayRole::StandbyLeader)
    }
}

/// How far a replica is behind the leader's last reported position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lag {
    /// Bytes behind.
    Bytes(u64),
    /// The member reports no position.
    Unknown,
}

impl Lag {
    /// The `Lag in MB` cell: MiB rounded half to even (Python's `round`), or `unknown`.
    pub fn in_mb(self) -> Value {
        match self {
            Lag::Bytes(b) => {
                let mb = (b as f64 / 1024.0 / 1024.0).round_ties_even();
                Value::from(mb as u64)
            }
            Lag::Unknown => Value::from("unknown"),
        }
    }
}

/// One member row.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberRow {
    /// Member name.
    pub name: String,
    /// Display role.
    pub role: DisplayRole,
    /// `replication_state` for non-leaders when known, else `state`.
    pub state: String,
    /// Postgres host from `conn_url`.
    pub host: Option<String>,
    /// Postgres port from `conn_url`.
    pub port: Option<u16>,
    /// Timeline the member reports.
    pub timeline: Option<u64>,
    /// Lag; `None` for the leader.
    pub lag: Option<Lag>,
    /// A restart is pending.
    pub pending_restart: bool,
    /// `scheduled_restart` as the member published it.
    pub scheduled_restart: Option<Value>,
    /// Effective tags (empty when none).
    pub tags: Map<String, Value>,
    /// REST API URL.
    pub api_url: Option<String>,
}

/// The whole cluster as `list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterView {
    /// Members sorted by name.
    pub members: Vec<MemberRow>,
    /// `config.pause`.
    pub paused: bool,
    /// A scheduled switchover: at, from, to.
    pub scheduled_switchover: Option<(String, Option<String>, Option<String>)>,
    /// The header's `(…)`: the system identifier, `initializing` or `uninitialized`.
    pub initialize: String,
}

/// The role `list` shows for `m`.
pub fn display_role(cluster: &Cluster, m: &Member) -> DisplayRole {
    let config = cluster.dynamic_config();
    let standby_cluster = config.is_standby_cluster();
    if cluster.is_leader(&m.name) {
        return if standby_cluster {
            DisplayRole::StandbyLeader
        } else {
            DisplayRole::Leader
        };
    }
    let in_sync = cluster
        .sync
        .as_ref()
        .is_some_and(|s| s.value.is_standby(&m.name));
    match (standby_cluster, config.synchronous_mode, in_sync) {
        (false, SynchronousMode::On, true) => DisplayRole::SyncStandby,
        (false, SynchronousMode::Quorum, true) => DisplayRole::QuorumStandby,
        (true, _, _) | (_, SynchronousMode::Off, _) | (_, _, false) => DisplayRole::Replica,
    }
}

/// The leader's last known WAL position: `status.optime`, else what the leader
/// member reports.
pub fn cluster_lsn(cluster: &Cluster) -> u64 {
    cluster
        .status
        .optime
        .or_else(|| cluster.leader_member().and_then(|m| m.data.xlog_location))
        .unwrap_or(0)
}

/// Builds the rows of `cluster`.
pub fn cluster_view(cluster: &Cluster) -> ClusterView {
    let lsn = cluster_lsn(cluster);
    let mut members: Vec<MemberRow> = cluster
        .members
        .iter()
        .map(|m| {
            let role = display_role(cluster, m);
            let state = if role == DisplayRole::Leader {
                None
            } else {
                m.data.replication_state.clone().filter(|s| !s.is_empty())
            }
            .or_else(|| m.data.state.as_ref().map(|s| s.as_str().to_string()))
            .unwrap_or_default();
            let (host, port) = match m.host_port() {
                Some((h, p)) => (Some(h), Some(p)),
                None => (host_only(m), None),
            };
            let lag = (!cluster.is_leader(&m.name)).then(|| {
                let pos = m
                    .data
                    .xlog_location
                    .or_else(|| m.data.replay_lsn.max(m.data.receive_lsn));
                match pos {
                    None => Lag::Unknown,
                    Some(p) => Lag::Bytes(lsn.saturating_sub(p)),
                }
            });
            let tags = match serde_json::to_value(&m.data.tags) {
                Ok(Value::Object(o)) => o,
                _ => Map::new(),
            };
            MemberRow {
                name: m.name.clone(),
                role,
                state,
                host,
                port,
                timeline: m.data.timeline,
                lag,
                pending_restart: m.data.pending_restart.unwrap_or(false),
                scheduled_restart: m
                    .data
                    .extra
                    .get("scheduled_restart")
                    .filter(|v| !v.is_null())
                    .cloned(),
                tags,
                api_url: m.data.api_url.clone(),
            }
        })
        .collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let scheduled_switchover = cluster.failover_request().and_then(|f| {
        f.scheduled_at
            .clone()
            .map(|at| (at, f.leader.clone(), f.member.clone()))
    });
    let initialize = match cluster.initialize.as_deref() {
        None => "uninitialized".to_string(),
        Some("") => "initializing".to_string(),
        Some(s) => s.to_string(),
    };
    ClusterView {
        members,
        paused: cluster.dynamic_config().pause,
        scheduled_switchover,
        initialize,
    }
}

/// A `conn_url` without a port still names a host.
fn host_only(m: &Member) -> Option<String> {
    let url = m.data.conn_url.as_deref()?;
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?']).next()?;
    let host = authority.rsplit('@').next()?.trim_matches(['[', ']']);
    (!host.is_empty()).then(|| host.to_string())
}

/// Lines printed under the pretty table: maintenance mode and a scheduled switchover.
pub fn service_info(view: &ClusterView) -> Vec<String> {
    let mut out = Vec::new();
    if view.paused {
        out.push("Maintenance mode: on".to_string());
    }
    if let Some((at, from, to)) = &view.scheduled_switchover {
        let mut info = format!("Switchover scheduled at: {at}");
        if let Some(f) = from {
            info.push_str(&format!("\n{:>24}: {f}", "from"));
        }
        if let Some(t) = to {
            info.push_str(&format!("\n{:>24}: {t}", "to"));
        }
        out.push(info);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn entry(key: &str, value: &str) -> RawEntry {
        RawEntry {
            key: key.into(),
            value: value.into(),
            version: Version(1),
            session: None,
        }
    }

    fn cluster(extra: &[(&str, &str)]) -> Cluster {
        let mut entries = vec![
            entry("initialize", "7311111111111111111"),
            entry("leader", "pg0"),
            entry("status", r#"{"optime":10485760}"#),
            entry(
                "members/pg0",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"primary","xlog_location":10485760,"timeline":2}"#,
            ),
            entry(
                "members/pg1",
                r#"{"conn_url":"postgres://127.0.0.2:5432/postgres","state":"running","role":"replica","replication_state":"streaming","xlog_location":8388608,"timeline":2,"tags":{"nofailover":true}}"#,
            ),
            entry(
                "members/pg2",
                r#"{"conn_url":"postgres://127.0.0.3:5432/postgres","state":"starting","role":"replica","pending_restart":true}"#,
            ),
        ];
        entries.extend(extra.iter().map(|(k, v)| entry(k, v)));
        Cluster::from_entries(entries)
    }

    #[test]
    fn roles_states_and_lag() {
        let v = cluster_view(&cluster(&[]));
        let pg0 = &v.members[0];
        assert_eq!(pg0.role, DisplayRole::Leader);
        assert_eq!(pg0.state, "running");
        assert_eq!(pg0.lag, None);
        let pg1 = &v.members[1];
        assert_eq!(pg1.role, DisplayRole::Replica);
        assert_eq!(pg1.state, "streaming");
        assert_eq!(pg1.lag, Some(Lag::Bytes(2 * 1024 * 1024)));
        assert_eq!(pg1.lag.unwrap().in_mb(), Value::from(2));
        assert_eq!(pg1.tags.get("nofailover"), Some(&Value::Bool(true)));
        let pg2 = &v.members[2];
        assert_eq!(pg2.state, "starting");
        assert_eq!(pg2.lag, Some(Lag::Unknown));
        assert_eq!(pg2.lag.unwrap().in_mb(), Value::from("unknown"));
        assert!(pg2.pending_restart);
        assert_eq!(v.initialize, "7311111111111111111");
        assert!(!v.paused);
    }

    #[test]
    fn sync_and_quorum_and_standby_leader_roles() {
        let c = cluster(&[
            ("config", r#"{"synchronous_mode":true}"#),
            ("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#),
        ]);
        let v = cluster_view(&c);
        assert_eq!(v.members[1].role, DisplayRole::SyncStandby);
        assert_eq!(v.members[2].role, DisplayRole::Replica);
        let c = cluster(&[
            ("config", r#"{"synchronous_mode":"quorum"}"#),
            (
                "sync",
                r#"{"leader":"pg0","sync_standby":"pg1,pg2","quorum":1}"#,
            ),
        ]);
        let v = cluster_view(&c);
        assert_eq!(v.members[1].role.title(), "Quorum Standby");
        assert_eq!(v.members[2].role.title(), "Quorum Standby");
        let c = cluster(&[(
            "config",
            r#"{"standby_cluster":{"host":"10.0.0.9","port":5432}}"#,
        )]);
        let v = cluster_view(&c);
        assert_eq!(v.members[0].role.title(), "Standby Leader");
        assert_eq!(v.members[0].state, "running");
        // sync listed but synchronous_mode off: plain replica.
        let c = cluster(&[("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#)]);
        assert_eq!(cluster_view(&c).members[1].role.title(), "Replica");
    }

    #[test]
    fn lag_rounds_half_to_even_like_python() {
        let mib = 1024 * 1024;
        assert_eq!(Lag::Bytes(mib / 2).in_mb(), Value::from(0));
        assert_eq!(Lag::Bytes(mib + mib / 2).in_mb(), Value::from(2));
        assert_eq!(Lag::Bytes(2 * mib + mib / 2).in_mb(), Value::from(2));
        assert_eq!(Lag::Bytes(mib / 2 + 1).in_mb(), Value::from(1));
        assert_eq!(Lag::Bytes(0).in_mb(), Value::from(0));
    }

    #[test]
    fn header_state_pause_and_scheduled_switchover() {
        let c = Cluster::from_entries(vec![
            entry("initialize", ""),
            entry("config", r#"{"pause":true}"#),
            entry(
                "failover",
                r#"{"leader":"pg0","member":"pg1","scheduled_at":"2030-01-01T10:00:00+00:00"}"#,
            ),
        ]);
        let v = cluster_view(&c);
        assert_eq!(v.initialize, "initializing");
        assert!(v.paused);
        let info = service_info(&v);
        assert_eq!(info[0], "Maintenance mode: on");
        assert_eq!(
            info[1],
            "Switchover scheduled at: 2030-01-01T10:00:00+00:00\n                    from: pg0\n                      to: pg1"
        );
        assert_eq!(
            cluster_view(&Cluster::default()).initialize,
            "uninitialized"
        );
    }
}
