//! The one table of Patroni 4.1's configuration keys: each is honoured (with the
//! test that shows its effect) or refused (with why and what to use instead).
//! `--validate-config` and start-up refuse the keys marked [`Status::Refused`]
//! from this table; `PATCH`/`PUT /config` refuse the dynamic ones; the key-coverage
//! test (`agent-bin/tests/config_keys.rs`) checks Patroni's reference configuration
//! and variables against it, and `docs/configuration-keys.md` is generated from it.
//!
//! Paths are dotted; `<user>`, `<method>`, `<slot>` and `<tag>` stand for any name
//! chosen by the operator. Dynamic keys are listed under `bootstrap.dcs`; the same
//! keys live in the DCS `config` key.

mod table;

use super::report::Problem;
use serde_json::Value;

pub use table::KEYS;

/// What fullauto does with a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Honoured; `test` (`file::function`, or `testdata/FILE.txt::words of the
    /// scenario comment` for a decision fixture) shows its effect.
    Honoured {
        /// The test that shows the key's effect.
        test: &'static str,
    },
    /// Honoured, but some values are refused by the section's checks.
    Limited {
        /// The test that shows the key's effect.
        test: &'static str,
        /// Which values are refused, and what to use instead.
        refused: &'static str,
        /// A YAML value that is refused (checked by the key-coverage test).
        example: &'static str,
    },
    /// Refused whatever its value: why, and what to use instead.
    Refused {
        /// Why, and what to use instead.
        why: &'static str,
    },
}

/// One key of the table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Key {
    /// Dotted path; `<…>` segments match any name.
    pub path: &'static str,
    /// Honoured or refused.
    pub status: Status,
}

impl Key {
    /// Whether the key is refused whatever its value.
    pub fn is_refused(&self) -> bool {
        matches!(self.status, Status::Refused { .. })
    }
}

fn is_placeholder(segment: &str) -> bool {
    segment.starts_with('<') && segment.ends_with('>')
}

/// The entry for key `segment` below the table path `parent` ("" at the top): the
/// exact one, else the `<…>` one of that level.
fn resolve(parent: &str, segment: &str) -> Option<&'static Key> {
    let exact = if parent.is_empty() {
        segment.to_string()
    } else {
        format!("{parent}.{segment}")
    };
    KEYS.iter().find(|k| k.path == exact).or_else(|| {
        KEYS.iter().find(|k| {
            k.path
                .rsplit_once('.')
                .is_some_and(|(head, last)| head == parent && is_placeholder(last))
        })
    })
}

/// The table entry for a concrete dotted path, level by level: a name with its own
/// entry takes it, any other name the level's `<…>` entry.
pub fn lookup(path: &str) -> Option<&'static Key> {
    let mut key: Option<&'static Key> = None;
    for segment in path.split('.') {
        key = Some(resolve(key.map_or("", |k| k.path), segment)?);
    }
    key
}

/// Every key of `doc` with its table entry (`None`: not in the table), in document
/// order. Mappings are entered only where the table lists keys below them, so the
/// free keys of `parameters`, `recovery_conf`, `loggers`, … are not keys; the
/// mappings in a list are entered with the list's path; refused keys are not
/// entered.
pub fn classify(doc: &Value) -> Vec<(String, Option<&'static Key>)> {
    let mut out = Vec::new();
    walk(doc, "", &mut out);
    out
}

/// Whether the table lists keys below `key` (its mapping value is entered).
fn has_children(key: &Key) -> bool {
    let prefix = format!("{}.", key.path);
    KEYS.iter().any(|k| k.path.starts_with(&prefix))
}

fn walk(v: &Value, path: &str, out: &mut Vec<(String, Option<&'static Key>)>) {
    walk_below(v, path, "", out)
}

/// Walks mapping `v` at concrete `path`, whose table path is `pattern`.
fn walk_below(v: &Value, path: &str, pattern: &str, out: &mut Vec<(String, Option<&'static Key>)>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                let entry = resolve(pattern, k);
                out.push((p.clone(), entry));
                if let Some(e) = entry.filter(|e| !e.is_refused() && has_children(e)) {
                    walk_below(x, &p, e.path, out);
                }
            }
        }
        Value::Array(items) => {
            for x in items.iter().filter(|x| x.is_object()) {
                walk_below(x, path, pattern, out);
            }
        }
        _ => {}
    }
}

/// An error for every key of `doc` the table refuses whatever its value (`null`
/// values are not settings), its path shown without the prefix `strip`.
pub fn refusals(doc: &Value, strip: &str) -> Vec<Problem> {
    classify(doc)
        .into_iter()
        .filter_map(|(path, key)| {
            let Status::Refused { why } = key?.status else {
                return None;
            };
            let set = pointer(doc, &path).is_some_and(|v| !v.is_null());
            set.then(|| {
                let shown = path.strip_prefix(strip).unwrap_or(&path).to_string();
                Problem::error(shown, why)
            })
        })
        .collect()
}

/// The value at a dotted path (keys may not contain dots).
fn pointer<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.get(k))
}

/// The refusals in a dynamic configuration (`PATCH`/`PUT /config` bodies): paths as
/// in the body (`postgresql.parameters_primary`).
pub fn dynamic_refusals(config: &Value) -> Vec<Problem> {
    let doc = serde_json::json!({ "bootstrap": { "dcs": config } });
    refusals(&doc, "bootstrap.dcs.")
}

/// `docs/configuration-keys.md`, generated from the table.
pub fn markdown() -> String {
    let mut out = String::from(
        "# Configuration keys\n\n\
         Every key of Patroni 4.1's configuration file (and of its dynamic configuration, \
         listed under `bootstrap.dcs`; the same keys live in the DCS `config` key and \
         are refused by `PATCH /config` the same way), and what fullauto does with it. \
         A key is either honoured, shown by the named test, or refused by \
         `fullauto --validate-config` and at start with the reason below. \
         `<user>` is superuser, replication or rewind; `<method>`, `<slot>`, \
         `<option>` and `<tag>` stand for names you choose. \
         This page is generated from `agent-bin/src/config/keys/table.rs`; the test \
         `config_keys` fails when they differ (regenerate with \
         `FULLAUTO_BLESS=1 cargo test -p agent-bin --test config_keys`).\n\n\
         | key | fullauto | shown by / reason |\n|---|---|---|\n",
    );
    for k in KEYS {
        let (what, detail) = match k.status {
            Status::Honoured { test } => ("honoured", format!("`{test}`")),
            Status::Limited { test, refused, .. } => (
                "honoured, some values refused",
                format!("`{test}`; refused: {refused}"),
            ),
            Status::Refused { why } => ("**refused**", why.to_string()),
        };
        out.push_str(&format!(
            "| `{}` | {what} | {} |\n",
            k.path,
            detail.replace('|', "\\|")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::schema::{config_kind, join, method_section_kind, Extra, Kind};
    use super::*;

    #[test]
    fn patterns_match_names_the_operator_chooses() {
        assert_eq!(
            lookup("bootstrap.dcs.slots.s1.type").map(|k| k.path),
            Some("bootstrap.dcs.slots.<slot>.type")
        );
        assert_eq!(
            lookup("postgresql.parameters").map(|k| k.path),
            Some("postgresql.parameters")
        );
        assert_eq!(lookup("postgresql.parameters.work_mem"), None);
        assert_eq!(
            lookup("postgresql.authentication.rewind.sslmode").map(|k| k.path),
            Some("postgresql.authentication.<user>.sslmode")
        );
    }

    /// Every key the schema accepts, with `<x>` for names the operator chooses.
    fn schema_paths(kind: &Kind, path: &str, out: &mut Vec<String>) {
        match kind {
            Kind::Map(fields, extra) => {
                for f in fields {
                    let p = join(path, f.name);
                    out.push(p.clone());
                    schema_paths(&f.kind, &p, out);
                }
                match extra {
                    Extra::Allow => out.push(join(path, "<x>")),
                    Extra::MethodSections => {
                        let p = join(path, "<x>");
                        out.push(p.clone());
                        schema_paths(&method_section_kind(), &p, out);
                    }
                    Extra::Warn | Extra::Scalars => {}
                }
            }
            Kind::MapOf(item) if matches!(**item, Kind::Map(..) | Kind::Either(_)) => {
                schema_paths(item, &join(path, "<x>"), out)
            }
            Kind::Either(alts) => alts.iter().for_each(|a| schema_paths(a, path, out)),
            Kind::List(item) if matches!(**item, Kind::Map(..)) => schema_paths(item, path, out),
            _ => {}
        }
    }

    /// Nothing the schema accepts is missing from the table: a key accepted by
    /// validation is either honoured or refused.
    #[test]
    fn every_key_the_schema_accepts_is_in_the_table() {
        let mut paths = Vec::new();
        schema_paths(&config_kind(), "", &mut paths);
        assert!(paths.len() > 150, "the walk found {} keys", paths.len());
        let missing: Vec<&String> = paths.iter().filter(|p| lookup(p).is_none()).collect();
        assert!(
            missing.is_empty(),
            "accepted but not in the key table: {missing:?}"
        );
    }

    #[test]
    fn every_path_is_listed_once() {
        let mut seen = std::collections::BTreeSet::new();
        for k in KEYS {
            assert!(seen.insert(k.path), "{} listed twice", k.path);
        }
    }

    #[test]
    fn refused_keys_are_found_below_placeholders() {
        let doc = serde_json::json!({"bootstrap": {"method": "restore", "restore": {
            "command": "restore.sh", "keep_data": true}}, "citus": {"group": 0}});
        let paths: Vec<String> = refusals(&doc, "").into_iter().map(|p| p.path).collect();
        assert_eq!(paths, ["bootstrap.restore.keep_data", "citus"], "{paths:?}");
        let patch = serde_json::json!({"postgresql": {"parameters_primary": {"a": 1}}});
        let p = dynamic_refusals(&patch);
        assert_eq!(p[0].path, "postgresql.parameters_primary");
    }
}
