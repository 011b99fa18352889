//! Replication slot names (Patroni's rules) and the `ignore_slots` matcher.

use crate::config::IgnoreSlot;

/// The physical slot name for a member (Patroni's rule, shared with the HA engine).
pub use ha_core::slot_name_for_member;

/// Whether `name` is a valid physical slot name as PostgreSQL accepts it.
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// A slot as `pg_replication_slots` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    /// Name.
    pub name: String,
    /// `physical` / `logical`.
    pub slot_type: String,
    /// Database (logical).
    pub database: Option<String>,
    /// Plugin (logical).
    pub plugin: Option<String>,
    /// A walsender uses it.
    pub active: bool,
}

/// Whether any matcher covers `slot` (every attribute a matcher gives must be equal).
pub fn is_ignored(slot: &SlotInfo, rules: &[IgnoreSlot]) -> bool {
    rules.iter().any(|r| {
        attr_matches(&r.name, Some(&slot.name))
            && attr_matches(&r.slot_type, Some(&slot.slot_type))
            && attr_matches(&r.database, slot.database.as_ref())
            && attr_matches(&r.plugin, slot.plugin.as_ref())
    })
}

/// A matcher attribute that is not given matches anything.
fn attr_matches(rule: &Option<String>, value: Option<&String>) -> bool {
    match rule {
        None => true,
        Some(want) => Some(want) == value,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_names_map_to_patroni_slot_names() {
        assert_eq!(slot_name_for_member("Node-1.dc"), "node_1_dc");
        assert_eq!(slot_name_for_member("a b"), "au0032b");
        assert_eq!(slot_name_for_member("ü"), "u0252");
        assert_eq!(slot_name_for_member(&"x".repeat(80)).len(), 63);
        assert!(is_valid_slot_name(&slot_name_for_member("Any-Thing!")));
    }

    #[test]
    fn ignore_rules_match_on_every_given_attribute() {
        let slot = SlotInfo {
            name: "cdc".into(),
            slot_type: "logical".into(),
            database: Some("app".into()),
            plugin: Some("pgoutput".into()),
            active: false,
        };
        let by_name = IgnoreSlot {
            name: Some("cdc".into()),
            ..Default::default()
        };
        let wrong_db = IgnoreSlot {
            name: Some("cdc".into()),
            database: Some("other".into()),
            ..Default::default()
        };
        let by_type = IgnoreSlot {
            slot_type: Some("logical".into()),
            ..Default::default()
        };
        assert!(is_ignored(&slot, &[by_name]));
        assert!(!is_ignored(&slot, &[wrong_db]));
        assert!(is_ignored(&slot, &[by_type]));
        assert!(!is_ignored(&slot, &[]));
    }
}
