//! Permanent replication slots from the dynamic config (`slots`, or its older names
//! `permanent_slots` / `permanent_replication_slots`): `name: {type: physical}` entries
//! the leader keeps next to the member slots, so an external consumer (a backup tool, a
//! standby outside the cluster) finds its slot on whichever node leads.

use crate::model::DynamicConfig;
use serde_json::Value;

/// The config keys Patroni accepts for permanent slots, newest first.
const KEYS: [&str; 3] = ["slots", "permanent_slots", "permanent_replication_slots"];

/// Names of the permanent physical slots in `dc`. An entry is physical when its `type`
/// says so, or when it has no type and names no logical decoding plugin. Logical slots
/// and names PostgreSQL would reject are left out (a bad name must not stop the other
/// slots from being kept).
pub fn permanent_physical_slots(dc: &DynamicConfig) -> Vec<String> {
    let Some(slots) = KEYS
        .iter()
        .find_map(|k| dc.extra.get(*k))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let mut names: Vec<String> = slots
        .iter()
        .filter(|(_, spec)| is_physical(spec))
        .map(|(name, _)| name.clone())
        .filter(|name| is_valid_slot_name(name))
        .collect();
    names.sort();
    names
}

fn is_physical(spec: &Value) -> bool {
    match spec.get("type").and_then(Value::as_str) {
        Some(t) => t == "physical",
        None => spec.get("plugin").is_none(),
    }
}

/// PostgreSQL's rule: lower-case letters, digits and `_`, at most 63 characters.
fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DynamicConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn physical_entries_are_kept_logical_and_bad_names_are_not() {
        let dc = config(
            r#"{"slots": {
                "backup_tool": {"type": "physical"},
                "untyped": {},
                "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"},
                "plugin_only": {"plugin": "test_decoding", "database": "app"},
                "Bad-Name": {"type": "physical"}
            }}"#,
        );
        assert_eq!(
            permanent_physical_slots(&dc),
            vec!["backup_tool", "untyped"]
        );
    }

    #[test]
    fn older_key_names_are_read_too() {
        let dc = config(r#"{"permanent_replication_slots": {"archiver": {"type": "physical"}}}"#);
        assert_eq!(permanent_physical_slots(&dc), vec!["archiver"]);
        assert!(permanent_physical_slots(&config("{}")).is_empty());
    }
}
