//! The `loggers` key of the `log` section: which tracing targets a Patroni logger
//! name or a Rust module path stands for, and the per-target levels it sets.

use super::{show, LogLevel, LEVEL_WORDS};
use crate::config::loose;
use crate::config::report::Problem;
use serde_json::Value;
use std::collections::BTreeMap;

/// The crates of fullauto, whose module paths are tracing targets.
const OWN_CRATES: &[&str] = &[
    "agent_bin",
    "ha_core",
    "pg_driver",
    "dcs_etcd",
    "dcs_zookeeper",
    "dcs_consul",
];
/// Libraries whose log lines fullauto shows.
const LIBRARIES: &[&str] = &[
    "tokio_postgres",
    "reqwest",
    "hyper",
    "hyper_util",
    "h2",
    "tower",
    "rustls",
    "etcd_client",
    "tonic",
    "zookeeper_client",
];

/// The tracing targets a `loggers` key stands for: a Patroni logger name mapped to
/// the fullauto code doing that job, or a Rust module path of fullauto or a library.
pub fn logger_targets(name: &str) -> Option<Vec<&str>> {
    let patroni: &[&str] = match name {
        "patroni" => OWN_CRATES,
        "patroni.ha" => &["ha_core"],
        "patroni.postmaster" => &["pg_driver"],
        n if n == "patroni.postgresql" || n.starts_with("patroni.postgresql.") => &["pg_driver"],
        "patroni.dcs" => &["dcs_etcd", "dcs_zookeeper", "dcs_consul"],
        "patroni.dcs.etcd" | "patroni.dcs.etcd3" => &["dcs_etcd"],
        "patroni.dcs.zookeeper" => &["dcs_zookeeper"],
        "patroni.dcs.consul" => &["dcs_consul"],
        "patroni.api" => &["agent_bin::api"],
        n if n == "patroni.watchdog" || n.starts_with("patroni.watchdog.") => {
            &["agent_bin::watchdog"]
        }
        "urllib3" => &["reqwest", "hyper", "hyper_util", "h2"],
        "psycopg" | "psycopg2" => &["tokio_postgres"],
        "kazoo" => &["zookeeper_client"],
        _ => &[],
    };
    if !patroni.is_empty() {
        return Some(patroni.to_vec());
    }
    let mut parts = name.split("::");
    let first = parts.next()?;
    let ident = |s: &str| {
        !s.is_empty()
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    ((OWN_CRATES.contains(&first) || LIBRARIES.contains(&first)) && name.split("::").all(ident))
        .then(|| vec![name])
}

pub(super) fn loggers(v: Option<&Value>, out: &mut Vec<Problem>) -> Vec<(String, LogLevel)> {
    let Some(m) = v.and_then(Value::as_object) else {
        if let Some(v) = v {
            out.push(Problem::error(
                "log.loggers",
                format!("expected a mapping, got {}", show(v)),
            ));
        }
        return Vec::new();
    };
    let mut by_target: BTreeMap<String, (LogLevel, String)> = BTreeMap::new();
    for (name, lv) in m {
        let path = format!("log.loggers.{name}");
        let Some(level) = loose::as_string(lv).as_deref().and_then(LogLevel::parse) else {
            out.push(Problem::error(
                path,
                format!("unknown level {}: use {LEVEL_WORDS}", show(lv)),
            ));
            continue;
        };
        let Some(targets) = logger_targets(name) else {
            out.push(Problem::error(
                path,
                "not a logger of fullauto: use patroni, patroni.ha, patroni.postgresql, \
                 patroni.dcs[.etcd3|.zookeeper|.consul], patroni.api, patroni.watchdog, \
                 urllib3, psycopg, kazoo, or a Rust module path such as agent_bin::node, \
                 ha_core, pg_driver, tokio_postgres",
            ));
            continue;
        };
        for t in targets {
            match by_target.get(t) {
                Some((l, other)) if *l != level => out.push(Problem::error(
                    path.clone(),
                    format!(
                        "sets {t} to {} but {other} sets it to {}",
                        level.name(),
                        l.name()
                    ),
                )),
                _ => {
                    by_target.insert(t.to_string(), (level, name.clone()));
                }
            }
        }
    }
    by_target.into_iter().map(|(t, (l, _))| (t, l)).collect()
}
