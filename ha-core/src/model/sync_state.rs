//! `sync`: who may accept writes and which standbys hold every acknowledged commit.

use super::ParseError;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `{"leader": .., "sync_standby": "a,b", "quorum": n}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyncState {
    /// The node allowed to accept writes.
    pub leader: Option<String>,
    /// Standbys guaranteed to have every acknowledged commit (sorted).
    pub sync_standby: Vec<String>,
    /// Quorum mode: votes needed besides the candidate's own.
    pub quorum: u32,
}

#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(default)]
    leader: Option<String>,
    #[serde(default)]
    sync_standby: Option<String>,
    #[serde(default)]
    quorum: Option<Value>,
}

impl SyncState {
    /// Parses the `sync` key; `{}` and empty values give an empty state.
    pub fn parse(raw: &str) -> Result<SyncState, ParseError> {
        if raw.trim().is_empty() {
            return Ok(SyncState::default());
        }
        if !raw.trim_start().starts_with('{') {
            return Err(ParseError::Shape("sync must be a JSON object"));
        }
        let w: Wire = serde_json::from_str(raw)?;
        let mut sync_standby: Vec<String> = w
            .sync_standby
            .unwrap_or_default()
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        sync_standby.sort();
        let quorum = match w.quorum {
            Some(Value::Number(n)) => n.as_u64().unwrap_or(0) as u32,
            Some(Value::String(s)) => s.parse().unwrap_or(0),
            _ => 0,
        };
        Ok(SyncState {
            leader: w.leader.filter(|l| !l.is_empty()),
            sync_standby,
            quorum,
        })
    }

    /// Compact JSON in Patroni 4.x form.
    pub fn to_json(&self) -> String {
        let mut names = self.sync_standby.clone();
        names.sort();
        let w = Wire {
            leader: self.leader.clone(),
            sync_standby: if names.is_empty() {
                None
            } else {
                Some(names.join(","))
            },
            quorum: Some(Value::from(self.quorum)),
        };
        serde_json::to_string(&w).unwrap_or_else(|_| "{}".to_string())
    }

    /// Whether `name` is the sync leader or a listed standby (case-insensitive).
    pub fn contains(&self, name: &str) -> bool {
        self.is_leader(name) || self.is_standby(name)
    }

    /// Whether `name` is the sync leader.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader
            .as_deref()
            .is_some_and(|l| l.eq_ignore_ascii_case(name))
    }

    /// Whether `name` is a listed standby.
    pub fn is_standby(&self, name: &str) -> bool {
        self.sync_standby
            .iter()
            .any(|s| s.eq_ignore_ascii_case(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_membership() {
        let s = SyncState::parse(r#"{"leader":"node0","sync_standby":"node2,node1","quorum":1}"#)
            .unwrap();
        assert_eq!(s.sync_standby, vec!["node1", "node2"]);
        assert!(s.contains("NODE1"));
        assert!(s.is_leader("node0"));
        assert_eq!(
            s.to_json(),
            r#"{"leader":"node0","sync_standby":"node1,node2","quorum":1}"#
        );
        assert_eq!(SyncState::parse("{}").unwrap(), SyncState::default());
        assert!(SyncState::parse("nope").is_err());
    }
}
