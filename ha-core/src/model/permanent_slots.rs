//! Permanent replication slots and `ignore_slots` from the dynamic config.
//!
//! `slots` (or its older names `permanent_slots` / `permanent_replication_slots`) maps a
//! slot name to `{type: physical}` or `{type: logical, database, plugin}`. Such slots
//! outlive members and failovers: an external consumer (a backup tool, a CDC reader)
//! finds its slot, at the position it reached, on whichever node leads.

use super::{is_valid_slot_name, DynamicConfig, IgnoreSlotRule, SlotKind};
use serde_json::Value;

/// The config keys Patroni accepts for permanent slots, newest first.
const KEYS: [&str; 3] = ["slots", "permanent_slots", "permanent_replication_slots"];

/// One permanent slot from the config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermanentSlot {
    /// Slot name.
    pub name: String,
    /// Physical, or logical with database and plugin.
    pub kind: SlotKind,
}

/// The permanent slots in `dc`, by name. An entry is physical when its `type` says
/// so, or when it has no type and names no plugin (`name: 0` or `name: {}` included);
/// a logical entry needs both `database` and `plugin`. Entries PostgreSQL would
/// reject are left out: one bad entry must not stop the other slots from being kept.
pub fn permanent_slots(dc: &DynamicConfig) -> Vec<PermanentSlot> {
    let Some(slots) = KEYS
        .iter()
        .find_map(|k| dc.extra.get(*k))
        .and_then(Value::as_object)
    else {
        return Vec::new();
    };
    let standby = dc.is_standby_cluster();
    let mut out: Vec<PermanentSlot> = slots
        .iter()
        .filter(|(name, _)| is_valid_slot_name(name))
        .filter_map(|(name, spec)| {
            kind_of(spec).map(|kind| PermanentSlot {
                name: name.clone(),
                kind,
            })
        })
        // `cluster_type` keeps a physical slot to primary or standby clusters, as
        // Patroni reads it (other values: every cluster).
        .filter(|p| {
            p.kind != SlotKind::Physical
                || match slots[&p.name].get("cluster_type").and_then(Value::as_str) {
                    Some("primary") => !standby,
                    Some("standby") => standby,
                    _ => true,
                }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Names of the permanent physical slots in `dc`.
pub fn permanent_physical_slots(dc: &DynamicConfig) -> Vec<String> {
    permanent_slots(dc)
        .into_iter()
        .filter(|s| s.kind == SlotKind::Physical)
        .map(|s| s.name)
        .collect()
}

/// Whether `dc` asks for any permanent logical slot.
pub fn has_logical_slots(dc: &DynamicConfig) -> bool {
    permanent_slots(dc)
        .iter()
        .any(|s| s.kind != SlotKind::Physical)
}

/// The `ignore_slots` matchers; malformed entries are skipped.
pub fn ignore_rules(dc: &DynamicConfig) -> Vec<IgnoreSlotRule> {
    dc.extra
        .get("ignore_slots")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| serde_json::from_value(r.clone()).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What is wrong with the `slots` and `ignore_slots` entries, each message naming its
/// path (`slots.cdc: …`). Such entries are skipped at run time; the config writers
/// (REST API, CLI, config file check) refuse them.
pub fn problems(dc: &DynamicConfig) -> Vec<String> {
    let mut out = Vec::new();
    for key in KEYS {
        let Some(v) = dc.extra.get(key) else { continue };
        let Some(slots) = v.as_object() else {
            out.push(format!(
                "{key}: expected a map of slot name to slot settings"
            ));
            continue;
        };
        for (name, spec) in slots {
            if !is_valid_slot_name(name) {
                out.push(format!(
                    "{key}.{name}: not a valid slot name (lowercase letters, digits and _, at most 63)"
                ));
            } else if kind_of(spec).is_none() {
                out.push(format!(
                    "{key}.{name}: type must be physical or logical, and a logical slot needs database and plugin"
                ));
            }
        }
    }
    match dc.extra.get("ignore_slots") {
        None | Some(Value::Null) => {}
        Some(Value::Array(rules)) => {
            for (i, r) in rules.iter().enumerate() {
                if serde_json::from_value::<IgnoreSlotRule>(r.clone()).is_err() {
                    out.push(format!(
                        "ignore_slots[{i}]: expected {{name, type, database, plugin}} strings"
                    ));
                }
            }
        }
        Some(_) => out.push("ignore_slots: expected a list of matchers".into()),
    }
    out
}

fn kind_of(spec: &Value) -> Option<SlotKind> {
    let text = |k: &str| spec.get(k).and_then(Value::as_str).map(str::to_string);
    let logical = match text("type").as_deref() {
        Some("physical") => false,
        Some("logical") => true,
        Some(_) => return None,
        None => spec.get("plugin").is_some(),
    };
    if !logical {
        return Some(SlotKind::Physical);
    }
    Some(SlotKind::Logical {
        database: text("database").filter(|d| !d.is_empty())?,
        plugin: text("plugin").filter(|p| !p.is_empty())?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(json: &str) -> DynamicConfig {
        serde_json::from_str(json).expect("config")
    }

    #[test]
    fn physical_and_logical_entries_are_read_and_bad_ones_are_not() {
        let dc = config(
            r#"{"slots": {
                "backup_tool": {"type": "physical"},
                "untyped": {},
                "zero": 0,
                "nothing": null,
                "cdc": {"type": "logical", "database": "app", "plugin": "pgoutput"},
                "plugin_only": {"plugin": "test_decoding", "database": "app"},
                "no_db": {"type": "logical", "plugin": "pgoutput"},
                "odd_type": {"type": "wal"},
                "Bad-Name": {"type": "physical"}
            }}"#,
        );
        assert_eq!(
            permanent_physical_slots(&dc),
            vec!["backup_tool", "nothing", "untyped", "zero"]
        );
        let logical: Vec<_> = permanent_slots(&dc)
            .into_iter()
            .filter(|s| s.kind != SlotKind::Physical)
            .collect();
        assert_eq!(logical.len(), 2);
        assert_eq!(logical[0].name, "cdc");
        assert_eq!(
            logical[1].kind,
            SlotKind::Logical {
                database: "app".into(),
                plugin: "test_decoding".into()
            }
        );
        assert!(has_logical_slots(&dc));
    }

    #[test]
    fn cluster_type_keeps_a_physical_slot_to_its_kind_of_cluster() {
        let slots = r#""slots": {
            "everywhere": {"type": "physical"},
            "any": {"type": "physical", "cluster_type": "any"},
            "on_primary": {"type": "physical", "cluster_type": "primary"},
            "on_standby": {"type": "physical", "cluster_type": "standby"}
        }"#;
        let primary = config(&format!("{{{slots}}}"));
        assert_eq!(
            permanent_physical_slots(&primary),
            vec!["any", "everywhere", "on_primary"]
        );
        let standby = config(&format!(
            r#"{{{slots}, "standby_cluster": {{"host": "10.0.0.9", "port": 5432}}}}"#
        ));
        assert_eq!(
            permanent_physical_slots(&standby),
            vec!["any", "everywhere", "on_standby"]
        );
    }

    #[test]
    fn older_key_names_are_read_too() {
        let dc = config(r#"{"permanent_replication_slots": {"archiver": {"type": "physical"}}}"#);
        assert_eq!(permanent_physical_slots(&dc), vec!["archiver"]);
        assert!(permanent_physical_slots(&config("{}")).is_empty());
        assert!(!has_logical_slots(&dc));
    }

    #[test]
    fn problems_name_the_entry() {
        let dc = config(
            r#"{"slots": {"ok": {"type": "physical"}, "Bad": {}, "cdc": {"type": "logical"}},
                "ignore_slots": [{"name": "x"}, {"name": 5}]}"#,
        );
        let p = problems(&dc);
        assert_eq!(p.len(), 3, "{p:?}");
        assert!(p[0].starts_with("slots.Bad: not a valid slot name"));
        assert!(p[1].starts_with("slots.cdc: "));
        assert!(p[2].starts_with("ignore_slots[1]: "));
        assert!(problems(&config(r#"{"slots": {"a": 0}}"#)).is_empty());
    }

    #[test]
    fn ignore_rules_skip_malformed_entries() {
        let dc = config(r#"{"ignore_slots": [{"name": "a"}, 5, {"type": "logical"}]}"#);
        let rules = ignore_rules(&dc);
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[1].slot_type.as_deref(), Some("logical"));
    }
}
