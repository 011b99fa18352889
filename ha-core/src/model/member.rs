//! `members/<name>`: what each node publishes about itself.

use super::ParseError;
use super::{Lsn, Tags, Version};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The role a member reports. Reads accept Patroni 3.x's `master`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Writable primary holding the leader key.
    Primary,
    /// Streaming or archive-recovering replica.
    Replica,
    /// Leader of a standby cluster.
    StandbyLeader,
    /// Former primary that was stopped or demoted.
    Demoted,
    /// Promotion in progress.
    Promoted,
    /// No data directory yet.
    Uninitialized,
    /// Anything else, kept verbatim.
    Other(String),
}

impl Role {
    /// Patroni 4.x spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Demoted => "demoted",
            Role::Promoted => "promoted",
            Role::Uninitialized => "uninitialized",
            Role::Other(s) => s,
        }
    }
}

impl From<String> for Role {
    fn from(s: String) -> Self {
        match s.as_str() {
            "primary" | "master" => Role::Primary,
            "replica" => Role::Replica,
            "standby_leader" | "standby-leader" => Role::StandbyLeader,
            "demoted" => Role::Demoted,
            "promoted" => Role::Promoted,
            "uninitialized" => Role::Uninitialized,
            _ => Role::Other(s),
        }
    }
}

impl Serialize for Role {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Role {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Role::from(String::deserialize(d)?))
    }
}

/// The Postgres state a member reports (`state` field).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum MemberState {
    /// Postgres accepts connections.
    Running,
    /// Postgres is starting.
    Starting,
    /// Postgres is stopped.
    Stopped,
    /// Postgres is stopping.
    Stopping,
    /// Postgres died without being asked to.
    Crashed,
    /// Start was attempted and failed.
    StartFailed,
    /// Restart in progress.
    Restarting,
    /// initdb or a custom bootstrap is running.
    InitializingNewCluster,
    /// A replica is being cloned.
    CreatingReplica,
    /// Anything else, kept verbatim (`stop failed`, `initdb failed`, …).
    Other(String),
}

impl MemberState {
    /// Patroni's spelling.
    pub fn as_str(&self) -> &str {
        match self {
            MemberState::Running => "running",
            MemberState::Starting => "starting",
            MemberState::Stopped => "stopped",
            MemberState::Stopping => "stopping",
            MemberState::Crashed => "crashed",
            MemberState::StartFailed => "start failed",
            MemberState::Restarting => "restarting",
            MemberState::InitializingNewCluster => "initializing new cluster",
            MemberState::CreatingReplica => "creating replica",
            MemberState::Other(s) => s,
        }
    }
}

impl From<String> for MemberState {
    fn from(s: String) -> Self {
        match s.as_str() {
            "running" => MemberState::Running,
            "starting" => MemberState::Starting,
            "stopped" => MemberState::Stopped,
            "stopping" => MemberState::Stopping,
            "crashed" => MemberState::Crashed,
            "start failed" => MemberState::StartFailed,
            "restarting" => MemberState::Restarting,
            "initializing new cluster" => MemberState::InitializingNewCluster,
            "creating replica" => MemberState::CreatingReplica,
            _ => MemberState::Other(s),
        }
    }
}

impl Serialize for MemberState {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for MemberState {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(MemberState::from(String::deserialize(d)?))
    }
}

/// The JSON body of `members/<name>` (Patroni 4.x field names; unknown fields kept).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    /// `postgres://host:port/postgres`
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conn_url: Option<String>,
    /// `http://host:port/patroni`, probed by peers in a leader race.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_url: Option<String>,
    /// Postgres state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<MemberState>,
    /// Role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    /// Agent version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Primary: current WAL LSN; replica: max(receive, replay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<Lsn>,
    /// Replica: last received LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<Lsn>,
    /// Replica: last replayed LSN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<Lsn>,
    /// Replica: `streaming` or `in archive recovery`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    /// Current timeline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u64>,
    /// Effective tags.
    #[serde(default, skip_serializing_if = "is_default_tags")]
    pub tags: Tags,
    /// A postmaster-context parameter changed and needs a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<bool>,
    /// Set while the cluster is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// Present (false) on a new leader until its post-promote checkpoint is done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_after_promote: Option<bool>,
    /// Fields this version does not interpret, kept for round-trips.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn is_default_tags(t: &Tags) -> bool {
    *t == Tags::default()
}

impl MemberData {
    /// Parses a member value. Reads the legacy `postgres://…?application_name=<api_url>`
    /// form; anything unparsable becomes an empty record, as Patroni does.
    pub fn parse(raw: &str) -> Result<MemberData, ParseError> {
        let raw = raw.trim();
        if raw.starts_with("postgres") {
            let api_url = raw
                .split_once("application_name=")
                .map(|(_, rest)| rest.split('&').next().unwrap_or("").to_string());
            let conn_url = raw.split('?').next().map(str::to_string);
            return Ok(MemberData {
                conn_url,
                api_url,
                ..Default::default()
            });
        }
        Ok(serde_json::from_str(raw)?)
    }

    /// Compact JSON, as Patroni writes it.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// The furthest WAL position the member reports.
    pub fn wal_position(&self) -> Lsn {
        self.xlog_location
            .unwrap_or(0)
            .max(self.receive_lsn.unwrap_or(0))
            .max(self.replay_lsn.unwrap_or(0))
    }
}

/// One member of the cluster as read from the DCS.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// Member name (the key suffix).
    pub name: String,
    /// The record.
    pub data: MemberData,
    /// Backend version of the key.
    pub version: Version,
    /// Lease / session owning the key, if the backend reports it.
    pub session: Option<String>,
}

impl Member {
    /// `host:port` from `conn_url`, if parsable.
    pub fn host_port(&self) -> Option<(String, u16)> {
        let url = self.data.conn_url.as_deref()?;
        let rest = url.split_once("://")?.1;
        let authority = rest.split(['/', '?']).next()?;
        let authority = authority.rsplit('@').next()?;
        let (host, port) = authority.rsplit_once(':')?;
        Some((
            host.trim_matches(['[', ']']).to_string(),
            port.parse().ok()?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_patroni_3_master_role_and_writes_primary() {
        let m = MemberData::parse(
            r#"{"conn_url":"postgres://10.0.0.2:5432/postgres","api_url":"http://10.0.0.2:8008/patroni","state":"running","role":"master","xlog_location":67419744,"timeline":3,"tags":{"clonefrom":true},"future":1}"#,
        )
        .unwrap();
        assert_eq!(m.role, Some(Role::Primary));
        assert_eq!(m.state, Some(MemberState::Running));
        assert!(m.tags.clone_from());
        let out = m.to_json();
        assert!(out.contains(r#""role":"primary""#));
        assert!(out.contains(r#""future":1"#));
    }

    #[test]
    fn legacy_connection_string_form() {
        let m = MemberData::parse(
            "postgres://u:p@10.0.0.1:5432/postgres?application_name=http://10.0.0.1:8008/patroni",
        )
        .unwrap();
        assert_eq!(m.api_url.as_deref(), Some("http://10.0.0.1:8008/patroni"));
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(MemberData::parse("{not json").is_err());
        assert!(MemberData::parse(r#"{"xlog_location":"abc"}"#).is_err());
    }

    #[test]
    fn host_port_from_conn_url() {
        let m = Member {
            name: "a".into(),
            data: MemberData {
                conn_url: Some("postgres://127.0.0.1:5433/postgres".into()),
                ..Default::default()
            },
            version: Version(1),
            session: None,
        };
        assert_eq!(m.host_port(), Some(("127.0.0.1".to_string(), 5433)));
    }
}
