//! Replication slots: Patroni's slot names for members, slots as the server reports
//! them, and the `ignore_slots` matchers.

use super::Lsn;
use serde::Deserialize;

/// The physical slot name for a member: lowercased, `-` and `.` become `_`, any other
/// character outside `[a-z0-9_]` becomes `u` + its code point as four decimal digits,
/// cut at 63 bytes.
pub fn slot_name_for_member(member: &str) -> String {
    let mut out = String::new();
    for c in member.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '_' => out.push(c),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.truncate(63);
    out
}

/// What a replication slot streams.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SlotKind {
    /// WAL for a standby or a backup tool.
    Physical,
    /// Decoded changes of one database through an output plugin.
    Logical {
        /// Database the slot decodes.
        database: String,
        /// Output plugin (e.g. `pgoutput`, `test_decoding`).
        plugin: String,
    },
}

impl SlotKind {
    /// `physical` or `logical`, as `pg_replication_slots.slot_type` says.
    pub fn type_name(&self) -> &'static str {
        match self {
            SlotKind::Physical => "physical",
            SlotKind::Logical { .. } => "logical",
        }
    }

    /// The database of a logical slot.
    pub fn database(&self) -> Option<&str> {
        match self {
            SlotKind::Physical => None,
            SlotKind::Logical { database, .. } => Some(database),
        }
    }
}

/// A slot as the server reports it in `pg_replication_slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSlot {
    /// Slot name.
    pub name: String,
    /// Physical, or logical with its database and plugin.
    pub kind: SlotKind,
    /// How far the consumer got: `confirmed_flush_lsn` of a logical slot,
    /// `restart_lsn` of a physical one (`None` if it never reserved WAL).
    pub lsn: Option<Lsn>,
    /// A walsender (or a backend) uses it now.
    pub active: bool,
    /// The oldest transaction a physical slot holds back for hot standby feedback
    /// (`None`: none).
    pub xmin: Option<u64>,
}

/// One `ignore_slots` matcher from the dynamic config: a slot that matches every
/// attribute the matcher gives is never created, advanced or dropped by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct IgnoreSlotRule {
    /// Slot name.
    #[serde(default)]
    pub name: Option<String>,
    /// `physical` or `logical`.
    #[serde(default, rename = "type")]
    pub slot_type: Option<String>,
    /// Database (logical slots).
    #[serde(default)]
    pub database: Option<String>,
    /// Output plugin (logical slots).
    #[serde(default)]
    pub plugin: Option<String>,
}

impl IgnoreSlotRule {
    /// Whether `slot` matches every attribute this rule gives (an empty rule matches all).
    pub fn matches(&self, slot: &ObservedSlot) -> bool {
        let plugin = match &slot.kind {
            SlotKind::Logical { plugin, .. } => Some(plugin.as_str()),
            SlotKind::Physical => None,
        };
        given_equals(&self.name, Some(&slot.name))
            && given_equals(&self.slot_type, Some(slot.kind.type_name()))
            && given_equals(&self.database, slot.kind.database())
            && given_equals(&self.plugin, plugin)
    }
}

fn given_equals(rule: &Option<String>, value: Option<&str>) -> bool {
    rule.as_deref().is_none_or(|want| Some(want) == value)
}

/// PostgreSQL's rule for slot names: lower-case letters, digits and `_`, at most 63
/// bytes.
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patroni_slot_names() {
        assert_eq!(slot_name_for_member("Node-1.b"), "node_1_b");
        assert_eq!(slot_name_for_member("a b"), "au0032b");
        assert_eq!(slot_name_for_member(&"x".repeat(80)).len(), 63);
    }

    fn logical(name: &str) -> ObservedSlot {
        ObservedSlot {
            name: name.into(),
            kind: SlotKind::Logical {
                database: "postgres".into(),
                plugin: "test_decoding".into(),
            },
            lsn: None,
            active: false,
            xmin: None,
        }
    }

    #[test]
    fn ignore_rules_match_on_every_given_attribute() {
        let rule = |json: &str| serde_json::from_str::<IgnoreSlotRule>(json).unwrap();
        let s = logical("keep");
        assert!(rule(r#"{"name": "keep"}"#).matches(&s));
        assert!(rule(r#"{"database": "postgres", "type": "logical"}"#).matches(&s));
        assert!(rule(r#"{}"#).matches(&s));
        assert!(!rule(r#"{"name": "keep", "plugin": "pgoutput"}"#).matches(&s));
        assert!(!rule(r#"{"type": "physical"}"#).matches(&s));
        let physical = ObservedSlot {
            kind: SlotKind::Physical,
            ..logical("keep")
        };
        assert!(!rule(r#"{"database": "postgres"}"#).matches(&physical));
    }

    #[test]
    fn slot_name_validity() {
        assert!(is_valid_slot_name("abc_1"));
        assert!(!is_valid_slot_name("Abc"));
        assert!(!is_valid_slot_name(""));
        assert!(!is_valid_slot_name(&"a".repeat(64)));
    }
}
