//! The DCS sections of the config file (`etcd3`, `zookeeper`, `consul`, and the
//! refused `etcd`): one typed model per section, with the section's schema (known
//! keys), its refusals and its conversion into the backend's own config. The same
//! model serves `--validate-config`, the agent's start-up and fullautoctl, so a key
//! cannot be accepted by one and dropped by another: every key of a section is
//! either a field of its model, handed to the backend, or refused (or, where
//! Patroni ignores it too, reported as ignored).

mod consul;
mod etcd;
mod zookeeper;

pub use consul::ConsulConfig;
pub use etcd::Etcd3Config;
pub use zookeeper::ZookeeperConfig;

use super::report::Problem;
use super::schema::Kind;
use serde_json::{Map, Value};

/// The one DCS this node uses.
#[derive(Debug, Clone, PartialEq)]
pub enum DcsConfig {
    /// `etcd3:`.
    Etcd3(Etcd3Config),
    /// `zookeeper:`.
    Zookeeper(ZookeeperConfig),
    /// `consul:`.
    Consul(ConsulConfig),
}

/// Every section naming a DCS, supported or not (exactly one may be present).
pub(crate) const SECTIONS: &[&str] = &["etcd3", "etcd", "zookeeper", "consul"];

/// Why `etcd:` is refused.
pub const ETCD_V2_REFUSAL: &str = "Patroni's etcd v2 API section is not supported: fullauto \
     speaks only the etcd v3 API, whose keyspace is separate (a cluster that Patroni runs \
     with `etcd:` is invisible to v3 clients); rename the section to etcd3 (variables \
     PATRONI_ETCD3_*) and switch every member of the cluster to etcd3 together";

/// The schema of section `name` (one of [`SECTIONS`]).
pub(crate) fn section_kind(name: &str) -> Kind {
    match name {
        "etcd3" => etcd::kind(),
        "zookeeper" => zookeeper::kind(),
        "consul" => consul::kind(),
        // Refused as a whole: its keys are not checked one by one.
        _ => Kind::Any,
    }
}

/// The keys the schema of section `name` knows (for the environment overlay).
#[cfg(test)]
pub(crate) fn section_keys(name: &str) -> Vec<&'static str> {
    match section_kind(name) {
        Kind::Map(fields, _) => fields.iter().map(|f| f.name).collect(),
        _ => Vec::new(),
    }
}

/// Refusals and cross-key rules of the DCS sections present in `top`. Sections
/// with type errors (already reported with their paths) are skipped.
pub(crate) fn check(top: &Map<String, Value>, out: &mut Vec<Problem>) {
    for name in SECTIONS {
        let Some(section) = top.get(*name).filter(|v| !v.is_null()) else {
            continue;
        };
        let typed_ok = !out
            .iter()
            .any(|p| p.is_error() && (p.path == *name || p.path.starts_with(&format!("{name}."))));
        let Some(m) = section.as_object().filter(|_| typed_ok) else {
            if *name == "etcd" {
                out.push(Problem::error("etcd", ETCD_V2_REFUSAL));
            }
            continue;
        };
        match *name {
            "etcd3" => etcd::check(m, out),
            "zookeeper" => zookeeper::check(m, out),
            "consul" => consul::check(m, out),
            _ => out.push(Problem::error("etcd", ETCD_V2_REFUSAL)),
        }
    }
}

/// The typed DCS section of a document, refusals applied: the first error when the
/// section is refused or malformed, or when there is not exactly one DCS.
pub fn from_document(doc: &Value) -> Result<DcsConfig, Problem> {
    let empty = Map::new();
    let top = doc.as_object().unwrap_or(&empty);
    let present: Vec<&str> = SECTIONS
        .iter()
        .copied()
        .filter(|s| top.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    let name = match present.as_slice() {
        [one] => *one,
        [] => return Err(Problem::error("", "no DCS configured")),
        many => {
            return Err(Problem::error(
                "",
                format!(
                    "more than one DCS configured ({}): keep exactly one",
                    many.join(", ")
                ),
            ))
        }
    };
    let section = &top[name];
    let mut problems = Vec::new();
    super::schema::check(&section_kind(name), section, name, &mut problems);
    check(top, &mut problems);
    if let Some(p) = problems.into_iter().find(Problem::is_error) {
        return Err(p);
    }
    let typed = |what: &str| Problem::error(name, what);
    match name {
        "etcd3" => serde_json::from_value(section.clone())
            .map(DcsConfig::Etcd3)
            .map_err(|e| typed(&e.to_string())),
        "zookeeper" => serde_json::from_value(section.clone())
            .map(DcsConfig::Zookeeper)
            .map_err(|e| typed(&e.to_string())),
        "consul" => serde_json::from_value(section.clone())
            .map(DcsConfig::Consul)
            .map_err(|e| typed(&e.to_string())),
        _ => Err(Problem::error("etcd", ETCD_V2_REFUSAL)),
    }
}

/// Pushes an error for every key of `refused` set in `section`.
fn refuse(
    section: &Map<String, Value>,
    path: &str,
    refused: &[(&str, &str)],
    out: &mut Vec<Problem>,
) {
    for (key, why) in refused {
        if section.get(*key).is_some_and(|v| !v.is_null()) {
            out.push(Problem::error(format!("{path}.{key}"), *why));
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use serde::Serialize;
    use std::collections::BTreeSet;

    /// The model's fields plus the keys handled without a field are exactly the
    /// schema's keys: nothing validated is dropped, nothing read is unvalidated.
    pub(crate) fn assert_model_matches_schema<T: Serialize + Default>(
        name: &str,
        not_fields: &[&str],
    ) {
        let model: BTreeSet<String> = serde_json::to_value(T::default())
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .chain(not_fields.iter().map(|s| s.to_string()))
            .collect();
        let schema: BTreeSet<String> = section_keys(name).into_iter().map(String::from).collect();
        assert_eq!(model, schema, "section {name}");
    }

    #[test]
    fn etcd_is_refused_and_one_section_is_required() {
        let e = from_document(&serde_json::json!({"etcd": {"host": "a:1"}})).unwrap_err();
        assert_eq!(
            (e.path.as_str(), e.message.as_str()),
            ("etcd", ETCD_V2_REFUSAL)
        );
        let e = from_document(&serde_json::json!({"etcd3": {"host": "a:1"}, "consul": {}}))
            .unwrap_err();
        assert!(e.message.contains("more than one DCS"), "{e}");
        assert!(from_document(&serde_json::json!({})).is_err());
        assert!(matches!(
            from_document(&serde_json::json!({"etcd3": {"host": "a:1"}})),
            Ok(DcsConfig::Etcd3(_))
        ));
    }
}
