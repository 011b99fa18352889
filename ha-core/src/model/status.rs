//! `status` and `failsafe`.

use super::Lsn;
use super::ParseError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// `{"optime": lsn, "slots": {...}, "retain_slots": [...]}` written by the leader.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    /// The leader's last reported WAL position.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub optime: Option<Lsn>,
    /// Permanent slot positions.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub slots: BTreeMap<String, Lsn>,
    /// Member slots kept for absent members.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retain_slots: Vec<String>,
}

impl Status {
    /// Parses the key; the legacy plain-integer `optime/leader` form is accepted too.
    pub fn parse(raw: &str) -> Result<Status, ParseError> {
        if let Ok(n) = raw.trim().parse::<Lsn>() {
            return Ok(Status {
                optime: Some(n),
                ..Default::default()
            });
        }
        Ok(serde_json::from_str(raw)?)
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

/// `failsafe`: member name ⇒ api_url, including the leader.
pub type Failsafe = BTreeMap<String, String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_forms() {
        let s = Status::parse(r#"{"optime":100,"slots":{"a":5}}"#).unwrap();
        assert_eq!(s.optime, Some(100));
        assert_eq!(Status::parse("42").unwrap().optime, Some(42));
        assert!(Status::parse("[").is_err());
        assert_eq!(Status::parse(&s.to_json()).unwrap(), s);
    }
}
