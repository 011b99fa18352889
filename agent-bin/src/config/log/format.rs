//! The line layout of the `log` section: the LogRecord attributes fullauto fills,
//! Python's `%(attr)s` templates read into pieces, the JSON key lists of
//! `type: json`, and the check that a `dateformat` is a strftime format chrono can
//! render.

use super::show;
use crate::config::loose;
use serde_json::Value;

/// A LogRecord attribute fullauto fills (Python's names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogAttr {
    /// Local time, `dateformat` or `2024-01-31 12:00:00,123`.
    Asctime,
    /// Seconds since the epoch (float).
    Created,
    /// Millisecond part of the time.
    Msecs,
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`.
    Levelname,
    /// 10, 20, 30, 40 (5 for TRACE).
    Levelno,
    /// The message, with the event's fields appended as `key=value` (plain).
    Message,
    /// The logger: the Rust module path of the code that logged (`ha_core::runner`).
    Name,
    /// Source file name without extension.
    Module,
    /// Source file name.
    Filename,
    /// Source file path.
    Pathname,
    /// Source line.
    Lineno,
    /// Process id.
    Process,
    /// OS thread id.
    Thread,
    /// Thread name.
    ThreadName,
    /// Python's function name. Rust log events carry none: the nearest is the last
    /// segment of the logging module's path (`ha_core::runner` gives `runner`).
    FuncName,
}

const ATTRS: &[(&str, LogAttr)] = &[
    ("asctime", LogAttr::Asctime),
    ("created", LogAttr::Created),
    ("msecs", LogAttr::Msecs),
    ("levelname", LogAttr::Levelname),
    ("levelno", LogAttr::Levelno),
    ("message", LogAttr::Message),
    ("name", LogAttr::Name),
    ("module", LogAttr::Module),
    ("filename", LogAttr::Filename),
    ("pathname", LogAttr::Pathname),
    ("lineno", LogAttr::Lineno),
    ("process", LogAttr::Process),
    ("thread", LogAttr::Thread),
    ("threadName", LogAttr::ThreadName),
    ("funcName", LogAttr::FuncName),
];

impl LogAttr {
    /// Reads a Python attribute name (case-sensitive, as Python's).
    pub fn parse(name: &str) -> Option<LogAttr> {
        ATTRS.iter().find(|(n, _)| *n == name).map(|(_, a)| *a)
    }

    /// The Python attribute name.
    pub fn name(self) -> &'static str {
        ATTRS
            .iter()
            .find(|(_, a)| *a == self)
            .map(|(n, _)| *n)
            .unwrap_or("?")
    }

    /// Whether the value is a number (accepts `%d` and `%f`).
    pub fn numeric(self) -> bool {
        matches!(
            self,
            LogAttr::Created
                | LogAttr::Msecs
                | LogAttr::Levelno
                | LogAttr::Lineno
                | LogAttr::Process
                | LogAttr::Thread
        )
    }
}

/// How a template field is converted: `s`, `d`/`i` or `f`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Conversion {
    /// `%s`: text.
    Str,
    /// `%d`/`%i`: integer.
    Int,
    /// `%f`: decimal number (precision 6 unless given).
    Float,
}

/// One `%(attr)…` field of a plain template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSpec {
    /// The attribute.
    pub attr: LogAttr,
    /// `-` flag: pad on the right.
    pub left: bool,
    /// `0` flag: pad numbers with zeros.
    pub zero: bool,
    /// Minimum width.
    pub width: usize,
    /// `.N`: digits after the point (`f`) or maximum length (`s`).
    pub precision: Option<usize>,
    /// Conversion.
    pub conversion: Conversion,
}

/// A piece of a plain template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Literal text (`%%` already read as `%`).
    Text(String),
    /// A record attribute.
    Field(FieldSpec),
}

/// One key of a JSON line: the attribute and the key it is written under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonField {
    /// The attribute.
    pub attr: LogAttr,
    /// The key (the attribute's name unless renamed).
    pub key: String,
}

/// The line layout: `type` with its `format`.
#[derive(Debug, Clone, PartialEq)]
pub enum LogLayout {
    /// `type: plain`: a template.
    Plain(Vec<Piece>),
    /// `type: json`: the record's keys in order, then `static_fields`.
    Json(Vec<JsonField>),
}

/// Patroni's default format.
pub const DEFAULT_FORMAT: &str = "%(asctime)s %(levelname)s: %(message)s";

/// Reads a Python `%`-style logging template (`%(asctime)s %(levelname)-8s: %(message)s`).
pub fn parse_template(text: &str) -> Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut lit = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if c != '%' {
            lit.push(c);
            continue;
        }
        match chars.next() {
            Some((_, '%')) => {
                lit.push('%');
                continue;
            }
            Some((_, '(')) => {}
            _ => {
                return Err(format!(
                    "{text:?}: only %(attribute)s fields and %% are supported (at offset {at})"
                ))
            }
        }
        let mut name = String::new();
        loop {
            match chars.next() {
                Some((_, ')')) => break,
                Some((_, ch)) => name.push(ch),
                None => return Err(format!("{text:?}: unclosed %( at offset {at}")),
            }
        }
        let attr = LogAttr::parse(&name).ok_or_else(|| {
            let known: Vec<&str> = ATTRS.iter().map(|(n, _)| *n).collect();
            format!(
                "%({name})s is not an attribute fullauto fills; use {}",
                known.join(", ")
            )
        })?;
        let (mut left, mut zero) = (false, false);
        while let Some((_, f @ ('-' | '0'))) = chars.peek().copied() {
            if f == '-' {
                left = true;
            } else {
                zero = true;
            }
            chars.next();
        }
        let digits = |chars: &mut std::iter::Peekable<std::str::CharIndices>| {
            let mut s = String::new();
            while let Some((_, d)) = chars.peek().copied().filter(|(_, d)| d.is_ascii_digit()) {
                s.push(d);
                chars.next();
            }
            s
        };
        let width = digits(&mut chars).parse().unwrap_or(0);
        let precision = if chars.peek().is_some_and(|(_, c)| *c == '.') {
            chars.next();
            Some(digits(&mut chars).parse().unwrap_or(0))
        } else {
            None
        };
        let conversion = match chars.next().map(|(_, c)| c) {
            Some('s') => Conversion::Str,
            Some('d' | 'i') if attr.numeric() => Conversion::Int,
            Some('f') if attr.numeric() => Conversion::Float,
            Some(c @ ('d' | 'i' | 'f')) => {
                return Err(format!("%({name}){c}: {name} is text, use %({name})s"))
            }
            other => {
                return Err(format!(
                    "%({name}) needs the conversion s, d or f, got {}",
                    other.map(|c| format!("{c:?}")).unwrap_or("the end".into())
                ))
            }
        };
        if !lit.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut lit)));
        }
        pieces.push(Piece::Field(FieldSpec {
            attr,
            left,
            zero,
            width,
            precision,
            conversion,
        }));
    }
    if !lit.is_empty() {
        pieces.push(Piece::Text(lit));
    }
    if !pieces.iter().any(|p| matches!(p, Piece::Field(_))) {
        return Err(format!(
            "{text:?} has no %(attribute)s field (Python refuses it too)"
        ));
    }
    Ok(pieces)
}

/// `format` with `type`: a template for plain; for json a template (its fields, in
/// order) or a list of attribute names and `{attribute: key}` renames.
pub(super) fn layout(format: Option<&Value>, json: bool) -> Result<LogLayout, String> {
    let fields_of = |pieces: &[Piece]| {
        let mut fields: Vec<JsonField> = Vec::new();
        for p in pieces {
            if let Piece::Field(f) = p {
                if !fields.iter().any(|j| j.attr == f.attr) {
                    fields.push(JsonField {
                        attr: f.attr,
                        key: f.attr.name().to_string(),
                    });
                }
            }
        }
        fields
    };
    let text = match format {
        None => DEFAULT_FORMAT.to_string(),
        Some(Value::Array(items)) => {
            if !json {
                return Err("a list of attributes needs log.type json; \
                            plain lines take a template such as %(asctime)s %(message)s"
                    .into());
            }
            if items.is_empty() {
                return Err("should contain at least one attribute".into());
            }
            let mut fields = Vec::new();
            for item in items {
                let pairs: Vec<(String, String)> = match item {
                    Value::String(s) => vec![(s.clone(), s.clone())],
                    Value::Object(m) => {
                        let mut v = Vec::new();
                        for (k, r) in m {
                            let Value::String(r) = r else {
                                return Err(format!(
                                    "the new name of {k} must be a string, got {}",
                                    show(r)
                                ));
                            };
                            v.push((k.clone(), r.clone()));
                        }
                        v
                    }
                    other => {
                        return Err(format!(
                            "each item should be an attribute name or {{attribute: key}}, got {}",
                            show(other)
                        ))
                    }
                };
                for (name, key) in pairs {
                    let attr = LogAttr::parse(&name)
                        .ok_or_else(|| format!("{name:?} is not an attribute fullauto fills"))?;
                    fields.push(JsonField { attr, key });
                }
            }
            return Ok(LogLayout::Json(fields));
        }
        Some(v) => match loose::as_string(v) {
            Some(s) => s,
            None => return Err(format!("expected a string or a list, got {}", show(v))),
        },
    };
    let pieces = parse_template(&text)?;
    Ok(if json {
        LogLayout::Json(fields_of(&pieces))
    } else {
        LogLayout::Plain(pieces)
    })
}

/// A strftime format chrono can render (an unknown `%x` would fail at each line).
pub fn check_dateformat(text: &str) -> Result<(), String> {
    use chrono::format::{Item, StrftimeItems};
    if StrftimeItems::new(text).any(|i| matches!(i, Item::Error)) {
        return Err(format!(
            "{text:?} is not a strftime format fullauto can render (e.g. %Y-%m-%d %H:%M:%S)"
        ));
    }
    Ok(())
}
