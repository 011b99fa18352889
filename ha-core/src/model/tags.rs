//! Member tags (`tags:` in the config file, `tags` in the member record).

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

/// A member's tags, with Patroni's conflict rules applied by the accessors.
///
/// The boolean tags remember whether they were written at all: an explicit
/// `nofailover: false` overrides `failover_priority: 0` (Patroni's rule), an absent one
/// does not. The member record shows tags as Patroni does: a boolean tag only when
/// true, or when its priority tag is also given (so readers see the conflict), and
/// priorities as they were written.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Tags {
    /// Never promote this member (`None`: not written).
    #[serde(default, deserialize_with = "loose_bool")]
    pub nofailover: Option<bool>,
    /// Higher wins a leader race on equal WAL; `0` means never promote.
    #[serde(default, deserialize_with = "loose_int")]
    pub failover_priority: Option<TagInt>,
    /// `/replica` answers 503 on this member.
    #[serde(default, deserialize_with = "loose_bool")]
    pub noloadbalance: Option<bool>,
    /// Preferred source for cloning new replicas.
    #[serde(default, deserialize_with = "loose_bool")]
    pub clonefrom: Option<bool>,
    /// Stream from this member instead of the leader (cascading replication).
    #[serde(default)]
    pub replicatefrom: Option<String>,
    /// Never a synchronous standby (`None`: not written).
    #[serde(default, deserialize_with = "loose_bool")]
    pub nosync: Option<bool>,
    /// Higher is preferred as synchronous standby; `0` means never.
    #[serde(default, deserialize_with = "loose_int")]
    pub sync_priority: Option<TagInt>,
    /// Archive recovery only, no streaming.
    #[serde(default, deserialize_with = "loose_bool")]
    pub nostream: Option<bool>,
    /// User-defined tags, kept as they are.
    #[serde(flatten)]
    pub custom: Map<String, Value>,
}

/// An integer tag and how it was written (`2` or `"2"`), so the member record shows it
/// as the operator wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TagInt {
    /// The number.
    pub value: i64,
    /// Written as a string.
    pub quoted: bool,
}

impl From<i64> for TagInt {
    fn from(value: i64) -> TagInt {
        TagInt {
            value,
            quoted: false,
        }
    }
}

impl Serialize for TagInt {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.quoted {
            s.serialize_str(&self.value.to_string())
        } else {
            s.serialize_i64(self.value)
        }
    }
}

impl Serialize for Tags {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = Map::new();
        let flag = |m: &mut Map<String, Value>, key: &str, v: Option<bool>, shown: bool| {
            if let Some(b) = v.filter(|b| *b || shown) {
                m.insert(key.into(), Value::Bool(b));
            }
        };
        let int = |m: &mut Map<String, Value>, key: &str, v: &Option<TagInt>| {
            if let Some(t) = v {
                m.insert(key.into(), serde_json::to_value(t).unwrap_or(Value::Null));
            }
        };
        flag(
            &mut m,
            "nofailover",
            self.nofailover,
            self.failover_priority.is_some(),
        );
        int(&mut m, "failover_priority", &self.failover_priority);
        flag(&mut m, "noloadbalance", self.noloadbalance, false);
        flag(&mut m, "clonefrom", self.clonefrom, false);
        if let Some(r) = &self.replicatefrom {
            m.insert("replicatefrom".into(), Value::String(r.clone()));
        }
        flag(&mut m, "nosync", self.nosync, self.sync_priority.is_some());
        int(&mut m, "sync_priority", &self.sync_priority);
        flag(&mut m, "nostream", self.nostream, false);
        for (k, v) in &self.custom {
            m.insert(k.clone(), v.clone());
        }
        m.serialize(s)
    }
}

impl Tags {
    /// Whether automatic or manual promotion is forbidden: a written `nofailover` wins
    /// over `failover_priority`; without it a priority ≤ 0 forbids it.
    pub fn never_promote(&self) -> bool {
        match self.nofailover {
            Some(b) => b,
            None => self
                .failover_priority
                .as_ref()
                .is_some_and(|p| p.value <= 0),
        }
    }

    /// The priority used to break ties on equal WAL (default 1; 0 with `nofailover`).
    pub fn effective_failover_priority(&self) -> i64 {
        if self.nofailover == Some(true) {
            0
        } else {
            self.failover_priority.as_ref().map_or(1, |p| p.value)
        }
    }

    /// Whether this member must never be a synchronous standby: a written `nosync`
    /// wins over `sync_priority`; without it a priority ≤ 0 forbids it.
    pub fn never_sync(&self) -> bool {
        match self.nosync {
            Some(b) => b,
            None => self.sync_priority.as_ref().is_some_and(|p| p.value <= 0),
        }
    }

    /// The synchronous standby preference (default 1; 0 with `nosync`).
    pub fn effective_sync_priority(&self) -> i64 {
        if self.nosync == Some(true) {
            0
        } else {
            self.sync_priority.as_ref().map_or(1, |p| p.value)
        }
    }

    /// `noloadbalance` is set.
    pub fn no_load_balance(&self) -> bool {
        self.noloadbalance == Some(true)
    }

    /// `clonefrom` is set.
    pub fn clone_from(&self) -> bool {
        self.clonefrom == Some(true)
    }

    /// `nostream` is set.
    pub fn no_stream(&self) -> bool {
        self.nostream == Some(true)
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

/// Accepts `true`, `"true"`, `"on"`, `1` and so on, as YAML users write booleans;
/// `null` is "not written".
fn loose_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Null => None,
        Value::Bool(b) => Some(b),
        Value::Number(n) => Some(n.as_f64().is_some_and(|f| f != 0.0)),
        Value::String(s) => Some(matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "on" | "yes" | "1" | "y"
        )),
        _ => Some(false),
    })
}

/// Accepts integers written as numbers or strings, remembering which.
fn loose_int<'de, D: Deserializer<'de>>(d: D) -> Result<Option<TagInt>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .map(TagInt::from),
        Value::String(s) => s.trim().parse().ok().map(|value| TagInt {
            value,
            quoted: true,
        }),
        Value::Bool(b) => Some(TagInt::from(b as i64)),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn tags(v: Value) -> Tags {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_written_boolean_wins_over_its_priority() {
        let t = tags(json!({"nofailover": true, "failover_priority": 5}));
        assert!(t.never_promote());
        assert_eq!(t.effective_failover_priority(), 0);
        let t = tags(json!({"failover_priority": "0"}));
        assert!(t.never_promote());
        // Explicitly false: may promote although the priority says never (Patroni).
        let t = tags(json!({"nofailover": false, "failover_priority": "0"}));
        assert!(!t.never_promote());
        assert_eq!(t.effective_failover_priority(), 0);
        let t = tags(json!({"nofailover": "false", "zone": "a"}));
        assert!(!t.never_promote());
        assert_eq!(t.value_as_text("zone").as_deref(), Some("a"));
        assert_eq!(t.effective_failover_priority(), 1);
        let t = tags(json!({"nosync": false, "sync_priority": 0}));
        assert!(!t.never_sync());
        assert!(tags(json!({"sync_priority": 0})).never_sync());
    }

    #[test]
    fn the_member_record_shows_tags_as_patroni_does() {
        // False booleans only next to their priority; priorities as written.
        let t = tags(json!({"nofailover": false, "failover_priority": "0", "nosync": false}));
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"nofailover": false, "failover_priority": "0"})
        );
        let t = tags(
            json!({"nofailover": true, "noloadbalance": false, "sync_priority": 2, "zone": "a"}),
        );
        assert_eq!(
            serde_json::to_value(&t).unwrap(),
            json!({"nofailover": true, "sync_priority": 2, "zone": "a"})
        );
    }
}
