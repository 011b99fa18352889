//! Lenient field readers: YAML and environment variables spell booleans, numbers and
//! strings loosely (`"true"`, `"8008"`, `password: 1234`), as Patroni accepts them.

use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// A boolean from `true`, `"on"`, `"yes"`, `1`, …; `None` if it is none of those.
pub fn as_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::Number(n) => n.as_f64().map(|f| f != 0.0),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "y" | "1" => Some(true),
            "false" | "off" | "no" | "n" | "0" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// A number from a number or a numeric string.
pub fn as_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// An integer from an integral number or string.
pub fn as_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A string from any scalar (numbers and booleans are printed).
pub fn as_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A list of strings from a list or a comma-separated string.
pub fn as_string_list(v: &Value) -> Option<Vec<String>> {
    match v {
        Value::Array(items) => items.iter().map(as_string).collect(),
        Value::String(s) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
        Value::Null => Some(Vec::new()),
        _ => None,
    }
}

fn invalid<E: serde::de::Error>(what: &str, v: &Value) -> E {
    E::custom(format!("expected {what}, got {v}"))
}

/// `bool` field.
pub fn bool<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(false);
    }
    as_bool(&v).ok_or_else(|| invalid("a boolean", &v))
}

/// `Option<bool>` field.
pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_bool(&v)
        .map(Some)
        .ok_or_else(|| invalid("a boolean", &v))
}

/// `Option<i64>` field.
pub fn opt_i64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_i64(&v)
        .map(Some)
        .ok_or_else(|| invalid("an integer", &v))
}

/// `Option<u16>` field (ports).
pub fn opt_u16<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u16>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_i64(&v)
        .and_then(|i| u16::try_from(i).ok())
        .map(Some)
        .ok_or_else(|| invalid("a port number", &v))
}

/// `String` field.
pub fn string<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(String::new());
    }
    as_string(&v).ok_or_else(|| invalid("a string", &v))
}

/// `Option<String>` field.
pub fn opt_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_string(&v)
        .map(Some)
        .ok_or_else(|| invalid("a string", &v))
}

/// `Vec<String>` field from a list or a comma-separated string.
pub fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let v = Value::deserialize(d)?;
    as_string_list(&v).ok_or_else(|| invalid("a list of strings", &v))
}

/// `Option<Vec<String>>` field from a list or a comma-separated string.
pub fn opt_string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    as_string_list(&v)
        .map(Some)
        .ok_or_else(|| invalid("a list of strings", &v))
}

/// A map of strings (headers, labels); scalar values are printed.
pub fn string_map<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::collections::BTreeMap<String, String>, D::Error> {
    let v = Value::deserialize(d)?;
    match &v {
        Value::Null => Ok(Default::default()),
        Value::Object(m) => m
            .iter()
            .map(|(k, x)| {
                as_string(x)
                    .map(|s| (k.clone(), s))
                    .ok_or_else(|| invalid("a string", x))
            })
            .collect(),
        _ => Err(invalid("a mapping", &v)),
    }
}
