//! The dynamic `standby_cluster` section, read into typed settings and checked
//! field by field, each problem named by its path (`standby_cluster.port: …`).

use super::describe_value;
use serde_json::{Map, Value};

/// The section's settings. A standby cluster needs a source: `host`/`port` to stream
/// from, or a `restore_command` to recover from the archive (or both).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StandbyClusterConfig {
    /// The remote primary's host (`None`: archive recovery only).
    pub host: Option<String>,
    /// The remote primary's port (default 5432).
    pub port: u16,
    /// Slot on the remote the standby leader streams through.
    pub primary_slot_name: Option<String>,
    /// The standby leader's `restore_command`.
    pub restore_command: Option<String>,
    /// The standby leader's `archive_cleanup_command`.
    pub archive_cleanup_command: Option<String>,
    /// The standby leader's `recovery_min_apply_delay` (milliseconds or with a unit).
    pub recovery_min_apply_delay: Option<String>,
    /// Replica methods the first node clones with (empty: the node's own list).
    pub create_replica_methods: Vec<String>,
}

/// Default PostgreSQL port when `standby_cluster.port` is absent.
pub const DEFAULT_PORT: u16 = 5432;

const PATH: &str = "standby_cluster";

impl StandbyClusterConfig {
    /// Reads the section. `Ok(None)`: absent, null, or without a source (not a standby
    /// cluster). Invalid fields make an error per field, named by its path.
    pub fn parse(section: Option<&Value>) -> Result<Option<Self>, Vec<String>> {
        let s = match section {
            None | Some(Value::Null) => return Ok(None),
            Some(Value::Object(s)) => s,
            Some(other) => {
                return Err(vec![format!(
                    "{PATH}: expected a mapping, got {}",
                    describe_value(other)
                )])
            }
        };
        let mut errs = Vec::new();
        let mut out = StandbyClusterConfig {
            port: DEFAULT_PORT,
            ..Default::default()
        };
        out.host = text(s, "host", &mut errs);
        if out.host.as_deref() == Some("") {
            errs.push(format!("{PATH}.host: must not be empty"));
        }
        match s.get("port") {
            None | Some(Value::Null) => {}
            Some(v) => match port(v) {
                Some(p) => out.port = p,
                None => errs.push(format!(
                    "{PATH}.port: expected a port number 1-65535, got {}",
                    describe_value(v)
                )),
            },
        }
        out.primary_slot_name = text(s, "primary_slot_name", &mut errs);
        if let Some(slot) = &out.primary_slot_name {
            if !is_slot_name(slot) {
                errs.push(format!(
                    "{PATH}.primary_slot_name: {slot:?} is not a replication slot name (lower-case letters, digits and underscores, at most 63)"
                ));
            }
        }
        out.restore_command = text(s, "restore_command", &mut errs);
        out.archive_cleanup_command = text(s, "archive_cleanup_command", &mut errs);
        match s.get("recovery_min_apply_delay") {
            None | Some(Value::Null) => {}
            Some(v) => match apply_delay(v) {
                Some(d) => out.recovery_min_apply_delay = Some(d),
                None => errs.push(format!(
                    "{PATH}.recovery_min_apply_delay: expected milliseconds or a duration such as '5min', got {}",
                    describe_value(v)
                )),
            },
        }
        match s.get("create_replica_methods") {
            None | Some(Value::Null) => {}
            Some(v) => match method_list(v) {
                Some(list) => out.create_replica_methods = list,
                None => errs.push(format!(
                    "{PATH}.create_replica_methods: expected a list of replica method names, got {}",
                    describe_value(v)
                )),
            },
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        let has_source = ["host", "port", "restore_command"]
            .iter()
            .any(|k| s.get(*k).is_some_and(|v| !v.is_null()));
        Ok(has_source.then_some(out))
    }

    /// Whether the standby leader streams from a remote host (else archive only).
    pub fn streams(&self) -> bool {
        self.host.is_some()
    }
}

/// A string field (numbers are read as text, as YAML may type them).
fn text(s: &Map<String, Value>, key: &str, errs: &mut Vec<String>) -> Option<String> {
    match s.get(key)? {
        Value::Null => None,
        Value::String(v) => Some(v.clone()),
        Value::Number(n) => Some(n.to_string()),
        other => {
            errs.push(format!(
                "{PATH}.{key}: expected a string, got {}",
                describe_value(other)
            ));
            None
        }
    }
}

fn port(v: &Value) -> Option<u16> {
    let n = match v {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => s.trim().parse().ok()?,
        _ => return None,
    };
    u16::try_from(n).ok().filter(|p| *p > 0)
}

/// Physical slot names PostgreSQL accepts.
fn is_slot_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Milliseconds as a number, or PostgreSQL's number-with-unit text.
fn apply_delay(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => n.as_u64().map(|ms| ms.to_string()),
        Value::String(s) => {
            let t = s.trim();
            let digits = t.chars().take_while(char::is_ascii_digit).count();
            let unit = t[digits..].trim();
            (digits > 0 && ["", "us", "ms", "s", "min", "h", "d"].contains(&unit))
                .then(|| t.to_string())
        }
        _ => None,
    }
}

/// A list of names, or one comma-separated string.
fn method_list(v: &Value) -> Option<Vec<String>> {
    let names: Vec<String> = match v {
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().map(|s| s.trim().to_string()))
            .collect::<Option<_>>()?,
        Value::String(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
        _ => return None,
    };
    (!names.iter().any(String::is_empty)).then_some(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<Option<StandbyClusterConfig>, Vec<String>> {
        StandbyClusterConfig::parse(Some(&v))
    }

    #[test]
    fn reads_every_field() {
        let c = parse(json!({
            "host": "10.0.0.1", "port": "6543", "primary_slot_name": "standby_b",
            "restore_command": "cp /a/%f %p", "archive_cleanup_command": "true",
            "recovery_min_apply_delay": "5min", "create_replica_methods": ["walg", "basebackup"],
        }))
        .unwrap()
        .unwrap();
        assert_eq!(c.host.as_deref(), Some("10.0.0.1"));
        assert_eq!(c.port, 6543);
        assert_eq!(c.primary_slot_name.as_deref(), Some("standby_b"));
        assert_eq!(c.recovery_min_apply_delay.as_deref(), Some("5min"));
        assert_eq!(c.create_replica_methods, vec!["walg", "basebackup"]);
        assert!(c.streams());
        let d = parse(json!({"host": "h", "recovery_min_apply_delay": 1000}))
            .unwrap()
            .unwrap();
        assert_eq!(d.recovery_min_apply_delay.as_deref(), Some("1000"));
        assert_eq!(d.port, DEFAULT_PORT);
    }

    #[test]
    fn restore_command_alone_is_a_standby_cluster_without_streaming() {
        let c = parse(json!({"restore_command": "cp /a/%f %p"}))
            .unwrap()
            .unwrap();
        assert!(!c.streams());
        assert_eq!(parse(json!({"primary_slot_name": "s"})), Ok(None));
        assert_eq!(StandbyClusterConfig::parse(None), Ok(None));
        assert_eq!(parse(Value::Null), Ok(None));
    }

    #[test]
    fn each_bad_field_is_named_by_its_path() {
        let errs = parse(json!({
            "host": ["a"], "port": 70000, "primary_slot_name": "Bad-Slot",
            "restore_command": {"x": 1}, "recovery_min_apply_delay": "soon",
            "create_replica_methods": [1],
        }))
        .unwrap_err();
        for path in [
            "standby_cluster.host:",
            "standby_cluster.port:",
            "standby_cluster.primary_slot_name:",
            "standby_cluster.restore_command:",
            "standby_cluster.recovery_min_apply_delay:",
            "standby_cluster.create_replica_methods:",
        ] {
            assert!(
                errs.iter().any(|e| e.starts_with(path)),
                "{path} missing in {errs:?}"
            );
        }
        assert_eq!(
            parse(json!("h:5432")).unwrap_err(),
            vec!["standby_cluster: expected a mapping, got \"h:5432\"".to_string()]
        );
    }
}
