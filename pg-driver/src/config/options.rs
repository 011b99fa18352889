//! Tool command-line options in Patroni's list form (`initdb`, `basebackup`,
//! `rewind` sections): parsing either the list or the map form and rendering them as
//! `--name[=value]` arguments, plus [`json_scalar`], which renders one scalar value
//! the way a command line or postgresql.conf wants it.

use crate::error::{DriverError, Result};
use serde::Deserialize;
use std::collections::BTreeMap;

/// One command-line option in Patroni's list form: `- data-checksums` or
/// `- encoding: UTF8`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ToolOption {
    /// A flag without value.
    Flag(String),
    /// A single-key map `{name: value}`.
    Value(BTreeMap<String, serde_json::Value>),
}

/// A list of tool options, accepted either as Patroni's list or as a plain map.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ToolOptions {
    /// `- flag` / `- key: value` entries.
    List(Vec<ToolOption>),
    /// `key: value` entries.
    Map(BTreeMap<String, serde_json::Value>),
    /// Not given.
    #[default]
    #[serde(skip)]
    None,
}

impl ToolOptions {
    /// The options as `--name[=value]` arguments, in order.
    pub fn to_args(&self) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let mut push = |k: &str, v: Option<&serde_json::Value>| -> Result<()> {
            let k = k.trim_start_matches('-');
            if k.is_empty() {
                return Err(DriverError::Config("empty option name".into()));
            }
            match v {
                None => out.push(format!("--{k}")),
                Some(v) => out.push(format!("--{k}={}", json_scalar(v)?)),
            }
            Ok(())
        };
        match self {
            ToolOptions::None => {}
            ToolOptions::Map(m) => {
                for (k, v) in m {
                    push(k, Some(v))?;
                }
            }
            ToolOptions::List(items) => {
                for item in items {
                    match item {
                        ToolOption::Flag(f) => push(f, None)?,
                        ToolOption::Value(m) => {
                            if m.len() != 1 {
                                return Err(DriverError::Config(format!(
                                    "option entry {m:?} must have exactly one key"
                                )));
                            }
                            for (k, v) in m {
                                push(k, Some(v))?;
                            }
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Whether an option with this name (without dashes) is present.
    pub fn contains(&self, name: &str) -> bool {
        match self {
            ToolOptions::None => false,
            ToolOptions::Map(m) => m.contains_key(name),
            ToolOptions::List(items) => items.iter().any(|i| match i {
                ToolOption::Flag(f) => f.trim_start_matches('-') == name,
                ToolOption::Value(m) => m.contains_key(name),
            }),
        }
    }
}

/// Renders a scalar JSON/YAML value the way a command line or postgresql.conf wants it.
pub fn json_scalar(v: &serde_json::Value) -> Result<String> {
    match v {
        serde_json::Value::String(s) => Ok(s.clone()),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        serde_json::Value::Bool(b) => Ok(if *b { "on".into() } else { "off".into() }),
        other => Err(DriverError::Config(format!(
            "value {other} is not a string, number or boolean"
        ))),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_options_accept_patroni_list_and_map_forms() {
        let list: ToolOptions =
            serde_json::from_str(r#"["data-checksums", {"encoding": "UTF8"}, {"max-rate": 100}]"#)
                .unwrap();
        assert_eq!(
            list.to_args().unwrap(),
            vec!["--data-checksums", "--encoding=UTF8", "--max-rate=100"]
        );
        assert!(list.contains("data-checksums"));
        assert!(!list.contains("locale"));
        let map: ToolOptions = serde_json::from_str(r#"{"checkpoint": "fast"}"#).unwrap();
        assert_eq!(map.to_args().unwrap(), vec!["--checkpoint=fast"]);
        let bad: ToolOptions = serde_json::from_str(r#"[{"a": 1, "b": 2}]"#).unwrap();
        assert!(bad.to_args().is_err());
    }
}
