//! Member tags (`tags:` in the config file, `tags` in the member record).

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// A member's tags, with Patroni's conflict rules applied by the accessors.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Tags {
    /// Never promote this member.
    #[serde(
        default,
        deserialize_with = "loose_bool",
        skip_serializing_if = "is_false"
    )]
    pub nofailover: bool,
    /// Higher wins a leader race on equal WAL; `0` means never promote.
    #[serde(
        default,
        deserialize_with = "loose_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub failover_priority: Option<i64>,
    /// `/replica` answers 503 on this member.
    #[serde(
        default,
        deserialize_with = "loose_bool",
        skip_serializing_if = "is_false"
    )]
    pub noloadbalance: bool,
    /// Preferred source for cloning new replicas.
    #[serde(
        default,
        deserialize_with = "loose_bool",
        skip_serializing_if = "is_false"
    )]
    pub clonefrom: bool,
    /// Stream from this member instead of the leader (cascading replication).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicatefrom: Option<String>,
    /// Never a synchronous standby.
    #[serde(
        default,
        deserialize_with = "loose_bool",
        skip_serializing_if = "is_false"
    )]
    pub nosync: bool,
    /// Higher is preferred as synchronous standby; `0` means never.
    #[serde(
        default,
        deserialize_with = "loose_int",
        skip_serializing_if = "Option::is_none"
    )]
    pub sync_priority: Option<i64>,
    /// Archive recovery only, no streaming.
    #[serde(
        default,
        deserialize_with = "loose_bool",
        skip_serializing_if = "is_false"
    )]
    pub nostream: bool,
    /// User-defined tags, kept as they are.
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

impl Tags {
    /// Whether automatic or manual promotion is forbidden: `nofailover` wins over
    /// `failover_priority`, and a priority ≤ 0 also forbids it.
    pub fn never_promote(&self) -> bool {
        self.nofailover || self.failover_priority.is_some_and(|p| p <= 0)
    }

    /// The priority used to break ties on equal WAL (default 1).
    pub fn effective_failover_priority(&self) -> i64 {
        if self.nofailover {
            0
        } else {
            self.failover_priority.unwrap_or(1)
        }
    }

    /// Whether this member must never be a synchronous standby.
    pub fn never_sync(&self) -> bool {
        self.nosync || self.sync_priority.is_some_and(|p| p <= 0)
    }

    /// The synchronous standby preference (default 1).
    pub fn effective_sync_priority(&self) -> i64 {
        if self.nosync {
            0
        } else {
            self.sync_priority.unwrap_or(1)
        }
    }

    /// A tag's value as REST `?tag_key=value` filters compare it: strings as they are,
    /// other values lower-cased.
    pub fn value_as_text(&self, key: &str) -> Option<String> {
        let v = serde_json::to_value(self).ok()?;
        match v.get(key)? {
            Value::String(s) => Some(s.clone()),
            Value::Null => None,
            other => Some(other.to_string().to_lowercase()),
        }
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Accepts `true`, `"true"`, `"on"`, `1` and so on, as YAML users write booleans.
fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Bool(b) => b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "on" | "yes" | "1" | "y"
        ),
        _ => false,
    })
}

/// Accepts integers written as numbers or strings.
fn loose_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        Value::Bool(b) => Some(b as i64),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nofailover_wins_over_priority() {
        let t: Tags = serde_json::from_str(r#"{"nofailover":true,"failover_priority":5}"#).unwrap();
        assert!(t.never_promote());
        let t: Tags = serde_json::from_str(r#"{"failover_priority":"0"}"#).unwrap();
        assert!(t.never_promote());
        let t: Tags = serde_json::from_str(r#"{"nofailover":"false","zone":"a"}"#).unwrap();
        assert!(!t.never_promote());
        assert_eq!(t.value_as_text("zone").as_deref(), Some("a"));
        assert_eq!(t.effective_failover_priority(), 1);
    }
}
