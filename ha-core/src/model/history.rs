//! `history`: one line per timeline switch.

use super::Lsn;
use super::ParseError;
use serde_json::Value;

/// `[timeline, switch_lsn, reason, timestamp, new_leader]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// The timeline that ended.
    pub timeline: u64,
    /// Where it ended.
    pub switch_lsn: Lsn,
    /// Reason from the `.history` file.
    pub reason: String,
    /// ISO time of the promotion.
    pub timestamp: Option<String>,
    /// Who was promoted.
    pub new_leader: Option<String>,
}

/// The whole history list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct History(pub Vec<HistoryEntry>);

impl History {
    /// Parses the JSON list; malformed lines are an error for the whole key.
    pub fn parse(raw: &str) -> Result<History, ParseError> {
        let v: Value = serde_json::from_str(raw)?;
        let lines = v
            .as_array()
            .ok_or(ParseError::Shape("history must be a JSON list"))?;
        let mut out = Vec::with_capacity(lines.len());
        for line in lines {
            let a = line
                .as_array()
                .ok_or(ParseError::Shape("history line must be a list"))?;
            let int = |i: usize| {
                a.get(i)
                    .and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()))
            };
            let text = |i: usize| a.get(i).and_then(|x| x.as_str().map(str::to_string));
            out.push(HistoryEntry {
                timeline: int(0).ok_or(ParseError::Shape("history line lacks a timeline"))?,
                switch_lsn: int(1).ok_or(ParseError::Shape("history line lacks an LSN"))?,
                reason: text(2).unwrap_or_default(),
                timestamp: text(3),
                new_leader: text(4),
            });
        }
        Ok(History(out))
    }

    /// JSON list.
    pub fn to_json(&self) -> String {
        let lines: Vec<Value> = self
            .0
            .iter()
            .map(|e| {
                let mut l = vec![
                    Value::from(e.timeline),
                    Value::from(e.switch_lsn),
                    Value::from(e.reason.clone()),
                ];
                if let Some(t) = &e.timestamp {
                    l.push(Value::from(t.clone()));
                    if let Some(n) = &e.new_leader {
                        l.push(Value::from(n.clone()));
                    }
                }
                Value::Array(l)
            })
            .collect();
        Value::Array(lines).to_string()
    }

    /// The cluster timeline: last entry + 1, or 1 for an empty history.
    pub fn cluster_timeline(&self) -> u64 {
        self.0.last().map_or(1, |e| e.timeline + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeline_from_history() {
        let h = History::parse(
            r#"[[1,25165984,"no recovery target specified","2026-01-01T00:00:00+00:00","pg1"]]"#,
        )
        .unwrap();
        assert_eq!(h.cluster_timeline(), 2);
        assert_eq!(History::parse("[]").unwrap().cluster_timeline(), 1);
        assert_eq!(History::parse(&h.to_json()).unwrap(), h);
        assert!(History::parse("[[\"x\"]]").is_err());
    }
}
