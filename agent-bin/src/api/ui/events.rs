//! What the dashboard shows, as one JSON document, and the operator-readable changes
//! between two of them (the live event log).

use crate::api::cluster_json::{cluster_json, history_json};
use ha_core::Cluster;
use serde_json::{json, Map, Value};

/// The page's view of the cluster: `/cluster` (with the electability fields),
/// `/history`, the dynamic config, the `sync` key, the cluster timeline and which
/// member serves the page.
pub fn snapshot(cluster: &Cluster, scope: &str, me: &str) -> Value {
    let config = cluster
        .config
        .as_ref()
        .map(|c| c.value.to_value())
        .unwrap_or(Value::Null);
    let sync = cluster.sync.as_ref().map(|s| {
        json!({
            "leader": s.value.leader,
            "sync_standby": s.value.sync_standby,
            "quorum": s.value.quorum,
        })
    });
    json!({
        "served_by": me,
        "leader": cluster.leader.as_ref().map(|l| l.name.clone()),
        "timeline": cluster.timeline(),
        "cluster": cluster_json(cluster, scope),
        "history": history_json(cluster),
        "config": config,
        "sync": sync,
    })
}

fn members(snap: &Value) -> Map<String, Value> {
    snap["cluster"]["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| Some((m["name"].as_str()?.to_string(), m.clone())))
        .collect()
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "none".to_string(),
        other => other.to_string(),
    }
}

/// The changes from `old` to `new` an operator cares about, one line each: leader,
/// members joining and leaving, role/state/timeline/electability of each member,
/// pause, the cluster timeline and every changed dynamic config key.
pub fn changes(old: &Value, new: &Value) -> Vec<String> {
    let mut out = Vec::new();
    match (old["leader"].as_str(), new["leader"].as_str()) {
        (Some(a), Some(b)) if a != b => out.push(format!("leader changed from {a} to {b}")),
        (Some(a), None) => out.push(format!("the cluster has no leader (was {a})")),
        (None, Some(b)) => out.push(format!("{b} took the leader lock")),
        _ => {}
    }
    if old["timeline"] != new["timeline"] {
        out.push(format!(
            "cluster timeline {} -> {}",
            text(&old["timeline"]),
            text(&new["timeline"])
        ));
    }
    let paused = |s: &Value| s["cluster"]["pause"].as_bool().unwrap_or(false);
    match (paused(old), paused(new)) {
        (false, true) => out.push("maintenance mode on (paused)".to_string()),
        (true, false) => out.push("maintenance mode off (resumed)".to_string()),
        _ => {}
    }
    let (before, after) = (members(old), members(new));
    for (name, m) in &after {
        let Some(o) = before.get(name) else {
            out.push(format!(
                "{name} joined ({}, {})",
                text(&m["role"]),
                text(&m["state"])
            ));
            continue;
        };
        for field in ["role", "state", "timeline"] {
            if o[field] != m[field] {
                out.push(format!(
                    "{name}: {field} {} -> {}",
                    text(&o[field]),
                    text(&m[field])
                ));
            }
        }
        if o["pending_restart"] != m["pending_restart"] && m["pending_restart"] == true {
            out.push(format!("{name}: restart pending"));
        }
        if o["electable"] != m["electable"] {
            match m["electable"].as_bool() {
                Some(true) => out.push(format!("{name}: now electable")),
                Some(false) => {
                    let why: Vec<String> = m["not_electable_because"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(|b| text(&b["reason"]))
                        .collect();
                    out.push(format!("{name}: not electable: {}", why.join("; ")));
                }
                None => {}
            }
        }
    }
    for name in before.keys() {
        if !after.contains_key(name) {
            out.push(format!("{name} left (its member key is gone)"));
        }
    }
    let (oc, nc) = (
        old["config"].as_object().cloned().unwrap_or_default(),
        new["config"].as_object().cloned().unwrap_or_default(),
    );
    let mut keys: Vec<&String> = oc.keys().chain(nc.keys()).collect();
    keys.sort();
    keys.dedup();
    for k in keys {
        // Pause has its own line.
        if k != "pause" && oc.get(k) != nc.get(k) {
            let show = |v: Option<&Value>| v.map_or_else(|| "unset".to_string(), text);
            out.push(format!(
                "config: {k} {} -> {}",
                show(oc.get(k)),
                show(nc.get(k))
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn cluster(entries: &[(&str, &str)]) -> Cluster {
        Cluster::from_entries(entries.iter().map(|(k, v)| RawEntry {
            key: (*k).to_string(),
            value: (*v).to_string(),
            version: Version(1),
            session: None,
        }))
    }

    const A: &str = r#"{"api_url":"http://a/patroni","state":"running","role":"primary","xlog_location":100,"timeline":1}"#;
    const B: &str = r#"{"api_url":"http://b/patroni","state":"running","role":"replica","xlog_location":100,"timeline":1}"#;

    #[test]
    fn a_failover_reads_as_operators_would_say_it() {
        let before = snapshot(
            &cluster(&[
                ("leader", "a"),
                ("members/a", A),
                ("members/b", B),
                ("config", r#"{"ttl":30}"#),
            ]),
            "s",
            "b",
        );
        let b_primary = B
            .replace("replica", "primary")
            .replace(r#""timeline":1"#, r#""timeline":2"#);
        let after = snapshot(
            &cluster(&[
                ("leader", "b"),
                ("members/b", &b_primary),
                ("history", r#"[[1,100,"no recovery target specified"]]"#),
                ("config", r#"{"ttl":20,"pause":true}"#),
            ]),
            "s",
            "b",
        );
        assert_eq!(
            changes(&before, &after),
            [
                "leader changed from a to b",
                "cluster timeline 0 -> 2",
                "maintenance mode on (paused)",
                "b: role replica -> leader",
                "b: timeline 1 -> 2",
                "a left (its member key is gone)",
                "config: ttl 30 -> 20",
            ]
        );
        assert!(changes(&after, &after).is_empty());
    }
}
