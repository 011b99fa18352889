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

/// One WAL position a replica reports (`xlog_location`, `receive_lsn` or
/// `replay_lsn`) against the leader's last reported position, as patronictl's
/// `cluster_as_json` computes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Position {
    /// The member reports it: the LSN and how many bytes it is behind (0 when ahead).
    Known {
        /// The position.
        lsn: u64,
        /// Bytes behind the leader.
        lag: u64,
    },
    /// The member reports none.
    Unknown,
}

impl Position {
    /// `lsn` against the leader's position `cluster_lsn`.
    pub fn of(lsn: Option<u64>, cluster_lsn: u64) -> Position {
        match lsn.filter(|l| *l > 0) {
            Some(lsn) => Position::Known {
                lsn,
                lag: cluster_lsn.saturating_sub(lsn),
            },
            None => Position::Unknown,
        }
    }

    /// An LSN cell: `0/3000000`, or `unknown`.
    pub fn lsn_cell(self) -> Value {
        match self {
            Position::Known { lsn, .. } => Value::from(ha_core::format_lsn(lsn)),
            Position::Unknown => Value::from("unknown"),
        }
    }

    /// A lag cell: MiB rounded half to even (Python's `round`), or empty when unknown.
    pub fn lag_cell(self) -> Value {
        match self {
            Position::Known { lag, .. } => {
                let mb = (lag as f64 / 1024.0 / 1024.0).round_ties_even();
                Value::from(mb as u64)
            }
            Position::Unknown => Value::from(""),
        }
    }
}

/// A replica's positions: `xlog_location`, received and replayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Positions {
    /// `xlog_location` (what Patroni before 3.1 reported alone).
    pub current: Position,
    /// `receive_lsn`.
    pub receive: Position,
    /// `replay_lsn`.
    pub replay: Position,
}

impl Positions {
    /// The `(Receive, Replay)` positions `list` shows. A member reporting neither
    /// (an old Patroni) shows its `xlog_location` as received while streaming and as
    /// replayed otherwise, as patronictl does.
    pub fn shown(self, state: &str) -> (Position, Position) {
        match (self.receive, self.replay, self.current) {
            (Position::Unknown, Position::Unknown, Position::Known { .. }) => {
                if state == "streaming" {
                    (self.current, Position::Unknown)
                } else {
                    (Position::Unknown, self.current)
                }
            }
            _ => (self.receive, self.replay),
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
    /// WAL positions and lags; `None` for the leader.
    pub positions: Option<Positions>,
    /// A restart is pending.
    pub pending_restart: bool,
    /// Why: setting name ⇒ `{old_value, new_value}` (empty when unknown).
    pub pending_restart_reason: Map<String, Value>,
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
            let positions = (!cluster.is_leader(&m.name)).then(|| Positions {
                current: Position::of(m.data.xlog_location, lsn),
                receive: Position::of(m.data.receive_lsn, lsn),
                replay: Position::of(m.data.replay_lsn, lsn),
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
                positions,
                pending_restart: m.data.pending_restart.unwrap_or(false),
                pending_restart_reason: match m.data.extra.get("pending_restart_reason") {
                    Some(Value::Object(o)) => o.clone(),
                    _ => Map::new(),
                },
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
        assert_eq!(pg0.positions, None);
        let pg1 = &v.members[1];
        assert_eq!(pg1.role, DisplayRole::Replica);
        assert_eq!(pg1.state, "streaming");
        let p1 = pg1.positions.unwrap();
        assert_eq!(
            p1.current,
            Position::Known {
                lsn: 8388608,
                lag: 2 * 1024 * 1024
            }
        );
        assert_eq!(p1.current.lag_cell(), Value::from(2));
        assert_eq!(p1.current.lsn_cell(), Value::from("0/800000"));
        // Only xlog_location: shown as received while streaming.
        assert_eq!(p1.shown("streaming"), (p1.current, Position::Unknown));
        assert_eq!(p1.shown("running"), (Position::Unknown, p1.current));
        assert_eq!(pg1.tags.get("nofailover"), Some(&Value::Bool(true)));
        let pg2 = &v.members[2];
        assert_eq!(pg2.state, "starting");
        let p2 = pg2.positions.unwrap();
        assert_eq!(p2.receive, Position::Unknown);
        assert_eq!(p2.receive.lsn_cell(), Value::from("unknown"));
        assert_eq!(p2.receive.lag_cell(), Value::from(""));
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
        let cell = |lag: u64| Position::Known { lsn: 1, lag }.lag_cell();
        assert_eq!(cell(mib / 2), Value::from(0));
        assert_eq!(cell(mib + mib / 2), Value::from(2));
        assert_eq!(cell(2 * mib + mib / 2), Value::from(2));
        assert_eq!(cell(mib / 2 + 1), Value::from(1));
        assert_eq!(cell(0), Value::from(0));
        // Ahead of the leader's last report: no lag.
        assert_eq!(
            Position::of(Some(10), 5),
            Position::Known { lsn: 10, lag: 0 }
        );
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
