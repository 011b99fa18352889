//! YAML and JSON text the way patronictl prints them (PyYAML `safe_dump` with sorted
//! keys, Python `json.dumps` spacing), and back from YAML.

use super::error::{CtlError, CtlResult};
use serde_json::{Map, Value};

/// Whole-number floats as integers (`ttl: 30`, not `30.0`), recursively: the typed
/// config stores seconds as floats, users wrote integers.
pub fn normalize(v: &Value) -> Value {
    match v {
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Value::from(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(normalize).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, x)| (k.clone(), normalize(x))).collect())
        }
        _ => v.clone(),
    }
}

/// Block-style YAML with sorted keys, ending in a newline (`{}` for an empty mapping).
pub fn to_block(v: &Value) -> String {
    let v = normalize(v);
    if v.as_object().is_some_and(Map::is_empty) {
        return "{}\n".to_string();
    }
    let mut s = serde_yaml::to_string(&v).unwrap_or_else(|_| "{}\n".to_string());
    if let Some(rest) = s.strip_prefix("---\n") {
        s = rest.to_string();
    }
    s
}

fn scalar(v: &Value) -> String {
    serde_yaml::to_string(v)
        .map(|s| s.trim_end().trim_start_matches("--- ").to_string())
        .unwrap_or_default()
}

/// Flow-style YAML on one line (`{clonefrom: true, zone: a}`), as `list -f tsv`
/// prints tags.
pub fn to_flow(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, x)| format!("{}: {}", scalar(&Value::String(k.clone())), to_flow(x)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!("[{}]", a.iter().map(to_flow).collect::<Vec<_>>().join(", ")),
        other => scalar(&normalize(other)),
    }
}

/// JSON with Python's `json.dumps` spacing (`{"a": 1, "b": [1, 2]}`); objects keep the
/// order given.
pub fn to_python_json(v: &Value) -> String {
    match v {
        Value::Object(o) => {
            let items: Vec<String> = o
                .iter()
                .map(|(k, x)| format!("{}: {}", Value::String(k.clone()), to_python_json(x)))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
        Value::Array(a) => format!(
            "[{}]",
            a.iter().map(to_python_json).collect::<Vec<_>>().join(", ")
        ),
        other => normalize(other).to_string(),
    }
}

/// Parses YAML text into the JSON data model; an empty document is `null`.
pub fn parse(text: &str, what: &str) -> CtlResult<Value> {
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    let y: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| CtlError::failed(format!("{what} is not valid YAML: {e}")))?;
    crate::config::yaml_to_json(&y)
        .ok_or_else(|| CtlError::failed(format!("{what} holds a value that has no JSON form")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_yaml_sorts_keys_and_prints_whole_floats_as_integers() {
        let v = json!({"ttl": 30.0, "loop_wait": 10, "postgresql": {"parameters": {"max_connections": 100}}, "retry_timeout": 2.5});
        assert_eq!(
            to_block(&v),
            "loop_wait: 10\npostgresql:\n  parameters:\n    max_connections: 100\nretry_timeout: 2.5\nttl: 30\n"
        );
        assert_eq!(to_block(&json!({})), "{}\n");
    }

    #[test]
    fn flow_yaml_for_tags() {
        assert_eq!(
            to_flow(&json!({"nofailover": true, "zone": "a", "prio": 2})),
            "{nofailover: true, prio: 2, zone: a}"
        );
        assert_eq!(to_flow(&json!([1, "x"])), "[1, x]");
    }

    #[test]
    fn python_json_spacing() {
        let mut o = Map::new();
        o.insert("Member".into(), json!("pg0"));
        o.insert("Cluster".into(), json!("b"));
        assert_eq!(
            to_python_json(&Value::Object(o)),
            r#"{"Cluster": "b", "Member": "pg0"}"#
        );
        assert_eq!(
            to_python_json(&json!([{"a": [1, 2.0]}])),
            r#"[{"a": [1, 2]}]"#
        );
    }

    #[test]
    fn parse_yaml_values() {
        assert_eq!(parse("5", "v").unwrap(), json!(5));
        assert_eq!(parse("", "v").unwrap(), Value::Null);
        assert_eq!(parse("null", "v").unwrap(), Value::Null);
        assert_eq!(parse("on", "v").unwrap(), json!("on"));
        assert_eq!(parse("true", "v").unwrap(), json!(true));
        assert_eq!(parse("{a: 1}", "v").unwrap(), json!({"a": 1}));
        assert!(parse("{a: [", "v").is_err());
    }
}
