//! The `log` section (Patroni 4.1's keys), parsed once: `--validate-config` reports
//! its problems and the logger (`crate::logging`) acts on the result.
//!
//! Levels are Python's names, case-insensitive. `format` is Python's `%(attr)s`
//! template (plain) or the list of record attributes (json), with the attributes
//! fullauto can fill; `loggers` names Patroni loggers (mapped to fullauto's
//! modules) or Rust module paths. Anything else is refused with its path.
//!
//! This module reads the section as a whole; `format` (templates and JSON layouts)
//! and `loggers` (per-target levels) read their keys, and their items are
//! re-exported here.

mod format;
mod loggers;

pub use format::{
    check_dateformat, parse_template, Conversion, FieldSpec, JsonField, LogAttr, LogLayout, Piece,
    DEFAULT_FORMAT,
};
pub use loggers::logger_targets;

use super::loose;
use super::report::Problem;
use serde_json::Value;
use std::collections::BTreeMap;

/// A log level, named as Python's `logging` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    /// Below DEBUG (fullauto's own: the most detailed).
    Trace,
    /// `DEBUG`.
    Debug,
    /// `INFO`.
    Info,
    /// `WARNING` (also `WARN`).
    Warning,
    /// `ERROR`.
    Error,
    /// `CRITICAL` (also `FATAL`): fullauto has no more severe messages than errors,
    /// so this shows errors only.
    Critical,
}

/// The level names the section accepts, for messages.
const LEVEL_WORDS: &str = "DEBUG, INFO, WARNING (or WARN), ERROR, CRITICAL (or FATAL), TRACE";

impl LogLevel {
    /// Reads a level name, case-insensitively; `None` for anything else.
    pub fn parse(text: &str) -> Option<LogLevel> {
        Some(match text.trim().to_ascii_uppercase().as_str() {
            "TRACE" => LogLevel::Trace,
            "DEBUG" => LogLevel::Debug,
            "INFO" => LogLevel::Info,
            "WARNING" | "WARN" => LogLevel::Warning,
            "ERROR" => LogLevel::Error,
            "CRITICAL" | "FATAL" => LogLevel::Critical,
            _ => return None,
        })
    }

    /// Python's canonical name (`WARNING`).
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "TRACE",
            LogLevel::Debug => "DEBUG",
            LogLevel::Info => "INFO",
            LogLevel::Warning => "WARNING",
            LogLevel::Error => "ERROR",
            LogLevel::Critical => "CRITICAL",
        }
    }

    /// The tracing filter directive that shows this level and more severe ones.
    pub fn directive(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warning => "warn",
            LogLevel::Error | LogLevel::Critical => "error",
        }
    }
}

/// `log`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `level` (INFO).
    pub level: LogLevel,
    /// `traceback_level` (ERROR): the level of the backtrace logged after a panic
    /// (Patroni's Python tracebacks). DEBUG: backtraces only when `level` is DEBUG.
    pub traceback_level: LogLevel,
    /// `type` and `format`.
    pub layout: LogLayout,
    /// `dateformat`: strftime for `asctime` (`None`: `%Y-%m-%d %H:%M:%S,mmm`).
    pub dateformat: Option<String>,
    /// `static_fields`: added to every JSON line.
    pub static_fields: Vec<(String, Value)>,
    /// `max_queue_size` (1000): lines waiting for a slow destination; more are
    /// dropped and counted.
    pub max_queue_size: usize,
    /// `dir`: write `<dir>/patroni.log` instead of stderr.
    pub dir: Option<String>,
    /// `mode`: permissions of the log files (umask when unset).
    pub mode: Option<u32>,
    /// `file_num` (4): rotated files kept (`patroni.log.1` …).
    pub file_num: u32,
    /// `file_size` (25000000): size in bytes that triggers a rotation.
    pub file_size: u64,
    /// `loggers`: tracing targets with their own level.
    pub loggers: Vec<(String, LogLevel)>,
    /// `deduplicate_heartbeat_logs`: skip a "no action." line identical to the
    /// previous line.
    pub deduplicate_heartbeat_logs: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: LogLevel::Info,
            traceback_level: LogLevel::Error,
            layout: LogLayout::Plain(parse_template(DEFAULT_FORMAT).unwrap_or_default()),
            dateformat: None,
            static_fields: Vec::new(),
            max_queue_size: 1000,
            dir: None,
            mode: None,
            file_num: 4,
            file_size: 25_000_000,
            loggers: Vec::new(),
            deduplicate_heartbeat_logs: false,
        }
    }
}

impl LogConfig {
    /// Whether lines are JSON.
    pub fn is_json(&self) -> bool {
        matches!(self.layout, LogLayout::Json(_))
    }

    /// Reads the `log` section (`null` when absent); every problem is returned, each
    /// naming its key.
    pub fn from_value(v: &Value) -> Result<LogConfig, Vec<Problem>> {
        let mut out = Vec::new();
        let d = LogConfig::default();
        let get = |k: &str| v.get(k).filter(|x| !x.is_null());
        let level = |k: &str, default: LogLevel, out: &mut Vec<Problem>| match get(k) {
            None => default,
            Some(x) => match loose::as_string(x).as_deref().and_then(LogLevel::parse) {
                Some(l) => l,
                None => {
                    out.push(Problem::error(
                        format!("log.{k}"),
                        format!("unknown level {}: use {LEVEL_WORDS}", show(x)),
                    ));
                    default
                }
            },
        };
        let lvl = level("level", d.level, &mut out);
        let traceback_level = level("traceback_level", d.traceback_level, &mut out);
        let json = get("type")
            .and_then(loose::as_string)
            .is_some_and(|t| t.trim().eq_ignore_ascii_case("json"));
        let layout = match format::layout(get("format"), json) {
            Ok(l) => l,
            Err(why) => {
                out.push(Problem::error("log.format", why));
                d.layout.clone()
            }
        };
        let dateformat = get("dateformat")
            .and_then(loose::as_string)
            .filter(|s| !s.is_empty());
        if let Some(df) = &dateformat {
            if let Err(why) = check_dateformat(df) {
                out.push(Problem::error("log.dateformat", why));
            }
        }
        let static_fields: Vec<(String, Value)> = get("static_fields")
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        if !static_fields.is_empty() && !json {
            out.push(Problem::error(
                "log.static_fields",
                "only written with log.type json; remove it or set type: json",
            ));
        }
        let int = |k: &str, min: i64, default: i64, out: &mut Vec<Problem>| match get(k) {
            None => default,
            Some(x) => match loose::as_i64(x) {
                Some(i) if i >= min => i,
                _ => {
                    out.push(Problem::error(
                        format!("log.{k}"),
                        format!("must be an integer >= {min}, got {}", show(x)),
                    ));
                    default
                }
            },
        };
        let max_queue_size = int("max_queue_size", 1, d.max_queue_size as i64, &mut out) as usize;
        let file_num = int("file_num", 1, d.file_num as i64, &mut out) as u32;
        let file_size = int("file_size", 1, d.file_size as i64, &mut out) as u64;
        let mode = match get("mode") {
            None => None,
            Some(x) => match parse_mode(x) {
                Some(m) => Some(m),
                None => {
                    out.push(Problem::error(
                        "log.mode",
                        format!(
                            "must be file permissions from 0 to 0777 (e.g. 0640), got {}",
                            show(x)
                        ),
                    ));
                    None
                }
            },
        };
        let dir = get("dir")
            .and_then(loose::as_string)
            .filter(|s| !s.is_empty());
        for k in ["mode", "file_num", "file_size"] {
            if dir.is_none() && get(k).is_some() {
                out.push(Problem::error(
                    format!("log.{k}"),
                    "only used with log.dir (fullauto logs to stderr without it); \
                     remove it or set dir",
                ));
            }
        }
        let loggers = loggers::loggers(get("loggers"), &mut out);
        let deduplicate_heartbeat_logs = match get("deduplicate_heartbeat_logs") {
            None => false,
            Some(x) => loose::as_bool(x).unwrap_or_else(|| {
                out.push(Problem::error(
                    "log.deduplicate_heartbeat_logs",
                    format!("expected a boolean, got {}", show(x)),
                ));
                false
            }),
        };
        if !out.is_empty() {
            return Err(out);
        }
        Ok(LogConfig {
            level: lvl,
            traceback_level,
            layout,
            dateformat,
            static_fields,
            max_queue_size,
            dir,
            mode,
            file_num,
            file_size,
            loggers,
            deduplicate_heartbeat_logs,
        })
    }

    /// The tracing filter: `level`, the chatty libraries at WARNING at most, then
    /// `loggers`.
    pub fn filter_directives(&self) -> String {
        let mut targets: BTreeMap<String, LogLevel> = BTreeMap::new();
        for t in ["tokio_postgres", "hyper", "hyper_util", "h2", "tower"] {
            targets.insert(t.to_string(), self.level.max(LogLevel::Warning));
        }
        for (t, l) in &self.loggers {
            targets.insert(t.clone(), *l);
        }
        let mut s = self.level.directive().to_string();
        for (t, l) in targets {
            s.push_str(&format!(",{t}={}", l.directive()));
        }
        s
    }
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => format!("{s:?}"),
        other => other.to_string(),
    }
}

/// `mode`: an integer (YAML's `0o640` is read by the YAML parser), or text as C's
/// `strtol` base 0 reads it: `0640` octal (as Patroni's YAML 1.1 reader takes an
/// unquoted `0640`), `0x1a0` hexadecimal, else decimal.
pub fn parse_mode(v: &Value) -> Option<u32> {
    let n: i64 = match v {
        Value::Number(n) => n.as_i64()?,
        Value::String(s) => {
            let s = s.trim();
            if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
                i64::from_str_radix(h, 16).ok()?
            } else if let Some(o) = s.strip_prefix("0o").or_else(|| s.strip_prefix("0O")) {
                i64::from_str_radix(o, 8).ok()?
            } else if s.len() > 1 && s.starts_with('0') {
                i64::from_str_radix(&s[1..], 8).ok()?
            } else {
                s.parse().ok()?
            }
        }
        _ => return None,
    };
    (0..=0o777).contains(&n).then_some(n as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(v: Value) -> Vec<String> {
        match LogConfig::from_value(&v) {
            Ok(_) => Vec::new(),
            Err(p) => p.iter().map(|p| p.to_string().trim().to_string()).collect(),
        }
    }

    #[test]
    fn levels() {
        for (text, want) in [
            ("DEBUG", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("WARNING", LogLevel::Warning),
            ("Warn", LogLevel::Warning),
            ("error", LogLevel::Error),
            ("CRITICAL", LogLevel::Critical),
            ("fatal", LogLevel::Critical),
            ("trace", LogLevel::Trace),
        ] {
            assert_eq!(LogLevel::parse(text), Some(want), "{text}");
        }
        assert_eq!(LogLevel::parse("NOTICE"), None);
        assert_eq!(LogLevel::Warning.directive(), "warn");
        assert_eq!(LogLevel::Critical.directive(), "error");
        let c = LogConfig::from_value(&json!({"level": "WARNING", "traceback_level": "debug"}))
            .unwrap();
        assert_eq!(c.level, LogLevel::Warning);
        assert_eq!(c.traceback_level, LogLevel::Debug);
        assert_eq!(
            c.filter_directives(),
            "warn,h2=warn,hyper=warn,hyper_util=warn,tokio_postgres=warn,tower=warn"
        );
        assert_eq!(
            problems(json!({"level": "LOUD", "traceback_level": 3})),
            [
                "error: log.level: unknown level \"LOUD\": use DEBUG, INFO, WARNING (or WARN), \
                 ERROR, CRITICAL (or FATAL), TRACE",
                "error: log.traceback_level: unknown level 3: use DEBUG, INFO, WARNING (or WARN), \
                 ERROR, CRITICAL (or FATAL), TRACE",
            ]
        );
    }

    #[test]
    fn critical_keeps_libraries_at_errors() {
        let c = LogConfig::from_value(&json!({"level": "critical"})).unwrap();
        assert_eq!(
            c.filter_directives(),
            "error,h2=error,hyper=error,hyper_util=error,tokio_postgres=error,tower=error"
        );
    }

    #[test]
    fn template_translation() {
        let t = parse_template("%(asctime)s [%(levelname)-8s] %(process)05d %%: %(message).3s")
            .unwrap();
        let f = |attr, left, zero, width, precision, conversion| {
            Piece::Field(FieldSpec {
                attr,
                left,
                zero,
                width,
                precision,
                conversion,
            })
        };
        assert_eq!(
            t,
            vec![
                f(LogAttr::Asctime, false, false, 0, None, Conversion::Str),
                Piece::Text(" [".into()),
                f(LogAttr::Levelname, true, false, 8, None, Conversion::Str),
                Piece::Text("] ".into()),
                f(LogAttr::Process, false, true, 5, None, Conversion::Int),
                Piece::Text(" %: ".into()),
                f(LogAttr::Message, false, false, 0, Some(3), Conversion::Str),
            ]
        );
        // Patroni 4's acceptance suite logs `%(funcName)s`.
        assert_eq!(
            parse_template("%(funcName)s %(message)s").unwrap(),
            vec![
                f(LogAttr::FuncName, false, false, 0, None, Conversion::Str),
                Piece::Text(" ".into()),
                f(LogAttr::Message, false, false, 0, None, Conversion::Str),
            ]
        );
        assert_eq!(
            parse_template("%(funcname)s %(message)s").unwrap_err(),
            "%(funcname)s is not an attribute fullauto fills; use asctime, created, msecs, \
             levelname, levelno, message, name, module, filename, pathname, lineno, process, \
             thread, threadName, funcName"
        );
        assert_eq!(
            parse_template("%s: %(message)s").unwrap_err(),
            "\"%s: %(message)s\": only %(attribute)s fields and %% are supported (at offset 0)"
        );
        assert_eq!(
            parse_template("%(message)d").unwrap_err(),
            "%(message)d: message is text, use %(message)s"
        );
        assert_eq!(
            parse_template("%(message)").unwrap_err(),
            "%(message) needs the conversion s, d or f, got the end"
        );
        assert_eq!(
            parse_template("hello").unwrap_err(),
            "\"hello\" has no %(attribute)s field (Python refuses it too)"
        );
    }

    #[test]
    fn json_layouts() {
        let c = LogConfig::from_value(&json!({
            "type": "json",
            "format": ["message", {"asctime": "@timestamp", "levelname": "level"}],
            "static_fields": {"app": "patroni"},
        }))
        .unwrap();
        let keys = |c: &LogConfig| match &c.layout {
            LogLayout::Json(f) => f
                .iter()
                .map(|f| format!("{}={}", f.attr.name(), f.key))
                .collect::<Vec<_>>(),
            LogLayout::Plain(_) => vec![],
        };
        assert_eq!(
            keys(&c),
            ["message=message", "asctime=@timestamp", "levelname=level"]
        );
        let c = LogConfig::from_value(&json!({"type": "json"})).unwrap();
        assert_eq!(
            keys(&c),
            ["asctime=asctime", "levelname=levelname", "message=message"]
        );
        assert_eq!(
            problems(json!({"format": ["message"]})),
            [
                "error: log.format: a list of attributes needs log.type json; plain lines take a \
              template such as %(asctime)s %(message)s"
            ]
        );
        assert_eq!(
            problems(json!({"static_fields": {"a": 1}})),
            ["error: log.static_fields: only written with log.type json; remove it or set type: json"]
        );
    }

    #[test]
    fn files_mode_dateformat_loggers() {
        let c =
            LogConfig::from_value(&json!({"dir": "/x", "mode": "0640", "file_num": 2})).unwrap();
        assert_eq!(
            (c.mode, c.file_num, c.file_size),
            (Some(0o640), 2, 25_000_000)
        );
        assert_eq!(parse_mode(&json!(420)), Some(0o644));
        assert_eq!(parse_mode(&json!("0x1a0")), Some(0o640));
        assert_eq!(parse_mode(&json!("0o600")), Some(0o600));
        assert_eq!(parse_mode(&json!("0999")), None);
        assert_eq!(parse_mode(&json!(512)), None);
        assert_eq!(
            problems(json!({"file_size": 10, "dateformat": "%Y %Q"})),
            [
                "error: log.dateformat: \"%Y %Q\" is not a strftime format fullauto can render \
                 (e.g. %Y-%m-%d %H:%M:%S)",
                "error: log.file_size: only used with log.dir (fullauto logs to stderr without \
                 it); remove it or set dir",
            ]
        );
        let c = LogConfig::from_value(&json!({"level": "DEBUG", "loggers": {
            "patroni.postmaster": "WARNING", "urllib3": "debug", "agent_bin::node": "ERROR"}}))
        .unwrap();
        assert_eq!(
            c.filter_directives(),
            "debug,agent_bin::node=error,h2=debug,hyper=debug,hyper_util=debug,pg_driver=warn,\
             reqwest=debug,tokio_postgres=warn,tower=warn"
        );
        assert_eq!(
            problems(json!({"loggers": {"requests": "INFO", "ha_core": "LOUD"}})),
            [
                "error: log.loggers.ha_core: unknown level \"LOUD\": use DEBUG, INFO, WARNING \
                 (or WARN), ERROR, CRITICAL (or FATAL), TRACE",
                "error: log.loggers.requests: not a logger of fullauto: use patroni, patroni.ha, \
                 patroni.postgresql, patroni.dcs[.etcd3|.zookeeper|.consul], patroni.api, \
                 patroni.watchdog, urllib3, psycopg, kazoo, or a Rust module path such as \
                 agent_bin::node, ha_core, pg_driver, tokio_postgres",
            ]
        );
        assert_eq!(
            problems(json!({"loggers": {"patroni.postmaster": "INFO", "pg_driver": "ERROR"}})),
            ["error: log.loggers.pg_driver: sets pg_driver to ERROR but patroni.postmaster sets \
              it to INFO"]
        );
    }
}
