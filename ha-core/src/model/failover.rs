//! `failover`: a switchover or manual failover request.

use super::ParseError;
use serde::{Deserialize, Serialize};

/// `{"leader": .., "member": .., "scheduled_at": ..}`; `leader` set means switchover.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failover {
    /// The leader to switch over from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    /// The candidate to promote.
    #[serde(default, alias = "candidate", skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// ISO-8601 time with time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
}

impl Failover {
    /// Parses the JSON form or the legacy `leader:candidate` text.
    pub fn parse(raw: &str) -> Result<Failover, ParseError> {
        let raw = raw.trim();
        if raw.is_empty() {
            return Ok(Failover::default());
        }
        if raw.starts_with('{') {
            let f: Failover = serde_json::from_str(raw)?;
            return Ok(f.normalized());
        }
        let (leader, member) = raw.split_once(':').unwrap_or((raw, ""));
        Ok(Failover {
            leader: Some(leader.to_string()),
            member: Some(member.to_string()),
            scheduled_at: None,
        }
        .normalized())
    }

    fn normalized(mut self) -> Self {
        for f in [&mut self.leader, &mut self.member, &mut self.scheduled_at] {
            if f.as_deref().is_some_and(|s| s.trim().is_empty()) {
                *f = None;
            }
        }
        self
    }

    /// `{}` means "no request".
    pub fn is_empty(&self) -> bool {
        self.leader.is_none() && self.member.is_none()
    }

    /// The scheduled time as epoch milliseconds; `Err` when present but unparsable.
    pub fn scheduled_at_millis(&self) -> Result<Option<i64>, ParseError> {
        match &self.scheduled_at {
            None => Ok(None),
            Some(s) => chrono::DateTime::parse_from_rfc3339(s)
                .map(|t| Some(t.timestamp_millis()))
                .map_err(|e| ParseError::Timestamp {
                    field: "scheduled_at",
                    value: s.clone(),
                    reason: e.to_string(),
                }),
        }
    }

    /// Compact JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|_| "{}".to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_json_and_legacy_forms() {
        let f = Failover::parse(
            r#"{"leader":"a","member":"b","scheduled_at":"2026-01-01T10:00:00+00:00"}"#,
        )
        .unwrap();
        assert_eq!(f.leader.as_deref(), Some("a"));
        assert_eq!(f.member.as_deref(), Some("b"));
        assert_eq!(f.scheduled_at_millis().unwrap(), Some(1_767_261_600_000));
        let f = Failover::parse("a:b").unwrap();
        assert_eq!(
            (f.leader.as_deref(), f.member.as_deref()),
            (Some("a"), Some("b"))
        );
        let f = Failover::parse("a:").unwrap();
        assert_eq!(f.member, None);
        assert!(Failover::parse("{}").unwrap().is_empty());
        assert!(Failover::parse("{bad").is_err());
        let f = Failover::parse(r#"{"candidate":"c"}"#).unwrap();
        assert_eq!(f.member.as_deref(), Some("c"));
    }
}
