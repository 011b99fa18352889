//! Turns one log event into one line: Patroni's plain template or a JSON object with
//! Python's attribute names.

use crate::config::{Conversion, FieldSpec, JsonField, LogAttr, LogLevel, Piece};
use chrono::{DateTime, FixedOffset};
use serde_json::Value;

/// What a line is made of.
#[derive(Debug, Clone)]
pub struct Record<'a> {
    /// When the event happened, in the local time zone.
    pub time: DateTime<FixedOffset>,
    /// Level (`Critical` for an error event marked `critical = true`).
    pub level: LogLevel,
    /// The tracing target (a Rust module path).
    pub target: &'a str,
    /// Source file.
    pub file: Option<&'a str>,
    /// Source line.
    pub line: Option<u32>,
    /// The message.
    pub message: &'a str,
    /// The event's other fields, in order.
    pub fields: &'a [(String, Value)],
    /// Process id.
    pub process: u32,
    /// OS thread id.
    pub thread: u64,
    /// Thread name.
    pub thread_name: &'a str,
}

/// Python's level number.
fn level_no(level: LogLevel) -> i64 {
    match level {
        LogLevel::Critical => 50,
        LogLevel::Error => 40,
        LogLevel::Warning => 30,
        LogLevel::Info => 20,
        LogLevel::Debug => 10,
        LogLevel::Trace => 5,
    }
}

fn colour(level: LogLevel) -> &'static str {
    match level {
        LogLevel::Critical => "\x1b[1;31m",
        LogLevel::Error => "\x1b[31m",
        LogLevel::Warning => "\x1b[33m",
        LogLevel::Info => "\x1b[32m",
        LogLevel::Debug => "\x1b[34m",
        LogLevel::Trace => "\x1b[35m",
    }
}

/// `asctime`: `dateformat`, or Python's default `2024-01-31 12:00:00,123`.
pub fn asctime(time: &DateTime<FixedOffset>, dateformat: Option<&str>) -> String {
    match dateformat {
        Some(f) => time.format(f).to_string(),
        None => format!(
            "{},{:03}",
            time.format("%Y-%m-%d %H:%M:%S"),
            time.timestamp_subsec_millis()
        ),
    }
}

fn field_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The value of `attr`: text for plain lines, typed for JSON.
fn value(attr: LogAttr, r: &Record, dateformat: Option<&str>, plain: bool) -> Value {
    let file = r.file.unwrap_or("");
    let base = file.rsplit('/').next().unwrap_or(file);
    match attr {
        LogAttr::Asctime => asctime(&r.time, dateformat).into(),
        LogAttr::Created => serde_json::Number::from_f64(r.time.timestamp_micros() as f64 / 1e6)
            .map(Value::Number)
            .unwrap_or(Value::Null),
        LogAttr::Msecs => r.time.timestamp_subsec_millis().into(),
        LogAttr::Levelname => r.level.name().into(),
        LogAttr::Levelno => level_no(r.level).into(),
        LogAttr::Message if plain => {
            let mut m = r.message.to_string();
            for (k, v) in r.fields {
                m.push_str(&format!(" {k}={}", field_text(v)));
            }
            m.into()
        }
        LogAttr::Message => r.message.into(),
        LogAttr::Name => r.target.into(),
        LogAttr::FuncName => r.target.rsplit("::").next().unwrap_or(r.target).into(),
        LogAttr::Module => base.split('.').next().unwrap_or(base).into(),
        LogAttr::Filename => base.into(),
        LogAttr::Pathname => file.into(),
        LogAttr::Lineno => r.line.unwrap_or(0).into(),
        LogAttr::Process => r.process.into(),
        LogAttr::Thread => r.thread.into(),
        LogAttr::ThreadName => r.thread_name.into(),
    }
}

fn pad(text: String, f: &FieldSpec, numeric: bool) -> String {
    let len = text.chars().count();
    if len >= f.width {
        return text;
    }
    let fill = f.width - len;
    if f.left {
        format!("{text}{}", " ".repeat(fill))
    } else if f.zero && numeric {
        match text.strip_prefix('-') {
            Some(rest) => format!("-{}{rest}", "0".repeat(fill)),
            None => format!("{}{text}", "0".repeat(fill)),
        }
    } else {
        format!("{}{text}", " ".repeat(fill))
    }
}

fn field(f: &FieldSpec, r: &Record, dateformat: Option<&str>, colour_on: bool) -> String {
    let v = value(f.attr, r, dateformat, true);
    let text = match f.conversion {
        Conversion::Str => {
            let t = field_text(&v);
            match f.precision {
                Some(p) => t.chars().take(p).collect(),
                None => t,
            }
        }
        Conversion::Int => match &v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|x| x.trunc() as i64))
                .unwrap_or(0)
                .to_string(),
            other => field_text(other),
        },
        Conversion::Float => {
            let x = v.as_f64().unwrap_or(0.0);
            format!("{x:.*}", f.precision.unwrap_or(6))
        }
    };
    let padded = pad(text, f, f.conversion != Conversion::Str);
    if colour_on && f.attr == LogAttr::Levelname {
        format!("{}{padded}\x1b[0m", colour(r.level))
    } else {
        padded
    }
}

/// A plain line (no newline); `colour` paints the level name for a terminal.
pub fn plain(pieces: &[Piece], r: &Record, dateformat: Option<&str>, colour: bool) -> String {
    let mut out = String::new();
    for p in pieces {
        match p {
            Piece::Text(t) => out.push_str(t),
            Piece::Field(f) => out.push_str(&field(f, r, dateformat, colour)),
        }
    }
    out
}

/// A JSON line (no newline): the format's keys in order, then `static_fields`, then
/// the event's own fields (as python-json-logger adds a record's extras). A later key
/// replaces an earlier one in place.
pub fn json(
    fields: &[JsonField],
    static_fields: &[(String, Value)],
    r: &Record,
    dateformat: Option<&str>,
) -> String {
    let mut out: Vec<(String, Value)> = Vec::new();
    let mut put = |k: &str, v: Value| match out.iter_mut().find(|(key, _)| key == k) {
        Some(slot) => slot.1 = v,
        None => out.push((k.to_string(), v)),
    };
    for f in fields {
        put(&f.key, value(f.attr, r, dateformat, false));
    }
    for (k, v) in static_fields {
        put(k, v.clone());
    }
    for (k, v) in r.fields {
        put(k, v.clone());
    }
    let body: Vec<String> = out
        .iter()
        .map(|(k, v)| format!("{}: {}", Value::from(k.as_str()), v))
        .collect();
    format!("{{{}}}", body.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{parse_template, LogConfig, LogLayout, DEFAULT_FORMAT};
    use serde_json::json;

    fn record<'a>(fields: &'a [(String, Value)]) -> Record<'a> {
        Record {
            time: DateTime::parse_from_rfc3339("2024-01-31T12:34:56.789+01:00").unwrap(),
            level: LogLevel::Warning,
            target: "ha_core::runner",
            file: Some("ha-core/src/runner.rs"),
            line: Some(42),
            message: "no action. I am (pg0), the leader with the lock",
            fields,
            process: 4242,
            thread: 77,
            thread_name: "tokio-runtime-worker",
        }
    }

    #[test]
    fn default_plain_line() {
        let p = parse_template(DEFAULT_FORMAT).unwrap();
        assert_eq!(
            plain(&p, &record(&[]), None, false),
            "2024-01-31 12:34:56,789 WARNING: no action. I am (pg0), the leader with the lock"
        );
        assert_eq!(
            plain(&p, &record(&[]), None, true),
            "2024-01-31 12:34:56,789 \x1b[33mWARNING\x1b[0m: no action. I am (pg0), the leader \
             with the lock"
        );
    }

    #[test]
    fn template_fields() {
        let fields = vec![
            ("error".to_string(), json!("timeout")),
            ("n".into(), json!(3)),
        ];
        let p = parse_template(
            "%(asctime)s|%(levelname)-8s|%(levelno)d|%(name)s|%(module)s|%(filename)s:%(lineno)d\
             |%(process)08d|%(thread)d|%(threadName)s|%(msecs)03d|%(created).2f|%(message).9s",
        )
        .unwrap();
        assert_eq!(
            plain(&p, &record(&fields), Some("%d/%m/%Y %H.%M"), false),
            "31/01/2024 12.34|WARNING |30|ha_core::runner|runner|runner.rs:42|00004242|77\
             |tokio-runtime-worker|789|1706700896.79|no action"
        );
        let p = parse_template("%(message)s").unwrap();
        assert_eq!(
            plain(&p, &record(&fields), None, false),
            "no action. I am (pg0), the leader with the lock error=timeout n=3"
        );
    }

    #[test]
    fn json_line() {
        let c = LogConfig::from_value(&json!({
            "type": "json",
            "format": ["message", {"asctime": "@timestamp", "levelname": "level"}, "process"],
            "static_fields": {"app": "patroni", "level": "overridden"},
            "dateformat": "%Y-%m-%dT%H:%M:%S%z",
        }))
        .unwrap();
        let LogLayout::Json(fields) = &c.layout else {
            panic!("json layout");
        };
        let extra = vec![("error".to_string(), json!("timeout"))];
        assert_eq!(
            json(
                fields,
                &c.static_fields,
                &record(&extra),
                c.dateformat.as_deref()
            ),
            r#"{"message": "no action. I am (pg0), the leader with the lock", "@timestamp": "2024-01-31T12:34:56+0100", "level": "overridden", "process": 4242, "app": "patroni", "error": "timeout"}"#
        );
    }
}
