//! Where fullautoctl finds its DCS and REST API settings: a Patroni-format config
//! file (an agent's full config, or a ctl-only file with just the DCS section), the
//! `PATRONI_*` environment, and `--dcs-url`.

use super::error::{CtlError, CtlResult};
use crate::config::{
    dcs_from_document, deep_merge, overlay_from_env, process_env, yaml_to_json, BootstrapConfig,
    Config, CtlConfig, LogConfig, PostgresqlConfig, RestApiConfig, WatchdogConfig, ETCD_V2_REFUSAL,
};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};

/// patronictl's default config file, relative to the home directory.
pub const DEFAULT_CONFIG: &str = ".config/patroni/patronictl.yaml";

const DCS_SECTIONS: &[&str] = &["etcd3", "etcd", "zookeeper", "consul"];

/// The DCS named by `--dcs-url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcsUrl {
    /// `etcd3`, `zookeeper` or `consul` (`etcd://`, Patroni's etcd v2, is refused).
    pub kind: &'static str,
    /// Host name or address (without brackets).
    pub host: String,
    /// Port (the backend's default when the URL has none).
    pub port: u16,
    /// Namespace given as the URL's path.
    pub namespace: Option<String>,
}

impl DcsUrl {
    /// Parses `scheme://host[:port][/namespace]`, as patronictl does: without a scheme
    /// the port picks the backend (etcd3 by default).
    pub fn parse(text: &str) -> CtlResult<DcsUrl> {
        let bad = |why: &str| CtlError::Config(format!("invalid --dcs-url {text:?}: {why}"));
        let t = text.trim();
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) => (Some(s.to_ascii_lowercase()), r),
            None => (None, t.trim_start_matches("//")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        let authority = authority.rsplit('@').next().unwrap_or(authority);
        let (host, port) = if let Some(r) = authority.strip_prefix('[') {
            let (h, after) = r.split_once(']').ok_or_else(|| bad("unclosed '['"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(bad("garbage after ']'")),
            };
            (h.to_string(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (authority.to_string(), None),
            }
        };
        let port = match port {
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p > 0)
                    .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?,
            ),
            None => None,
        };
        let kind = match scheme.as_deref() {
            Some("etcd3") => "etcd3",
            Some("etcd") => {
                return Err(bad(&format!("etcd:// is {ETCD_V2_REFUSAL}; use etcd3://")))
            }
            Some("zookeeper") => "zookeeper",
            Some("consul") => "consul",
            Some(other) => {
                return Err(bad(&format!(
                    "unknown DCS scheme {other:?} (use etcd3, zookeeper or consul)"
                )))
            }
            None => match port {
                Some(2181) => "zookeeper",
                Some(8500) => "consul",
                _ => "etcd3",
            },
        };
        let default_port = match kind {
            "zookeeper" => 2181,
            "consul" => 8500,
            _ => 2379,
        };
        let host = if host.is_empty() {
            "localhost".to_string()
        } else {
            host
        };
        let path = path.trim();
        Ok(DcsUrl {
            kind,
            host,
            port: port.unwrap_or(default_port),
            namespace: (!path.is_empty() && path != "/").then(|| path.to_string()),
        })
    }

    fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    /// The config section this URL stands for, as Patroni writes it.
    pub fn section(&self) -> Value {
        match self.kind {
            "zookeeper" => json!({ "hosts": [self.host_port()] }),
            _ => json!({ "host": self.host_port() }),
        }
    }
}

/// Everything fullautoctl knows before it is told which cluster to act on.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The merged config document (file, environment, `--dcs-url`).
    pub doc: Value,
    /// `scope` from the config, the default cluster name.
    pub scope: Option<String>,
    /// DCS namespace.
    pub namespace: String,
    /// `-k`: skip certificate checks.
    pub insecure: bool,
}

/// The config file to read: `-c`, `PATRONICTL_CONFIG_FILE`, else patronictl's default.
pub fn config_path(explicit: Option<&Path>) -> (PathBuf, bool) {
    match explicit {
        Some(p) => (p.to_path_buf(), true),
        None => {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            (home.join(DEFAULT_CONFIG), false)
        }
    }
}

fn read_yaml_file(path: &Path) -> CtlResult<Value> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| CtlError::Config(format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let y: serde_yaml::Value = serde_yaml::from_str(&text)
        .map_err(|e| CtlError::Config(format!("{}: not valid YAML: {e}", path.display())))?;
    match yaml_to_json(&y) {
        Some(v @ Value::Object(_)) => Ok(v),
        Some(Value::Null) => Ok(Value::Object(Map::new())),
        _ => Err(CtlError::Config(format!(
            "{}: the config must be a YAML mapping",
            path.display()
        ))),
    }
}

/// Reads a config that lacks what an agent needs (patronictl.yaml holds little more
/// than the DCS section), with the `PATRONI_*` environment applied.
fn lenient_document(path: &Path) -> CtlResult<Value> {
    let mut doc = Value::Object(Map::new());
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| CtlError::Config(format!("cannot read {}: {e}", path.display())))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        for f in files {
            deep_merge(&mut doc, read_yaml_file(&f)?);
        }
    } else {
        doc = read_yaml_file(path)?;
    }
    let overlay = overlay_from_env(&process_env());
    deep_merge(&mut doc, Value::Object(overlay.overlay));
    Ok(doc)
}

fn env_only_document() -> Value {
    let mut doc = Value::Object(Map::new());
    deep_merge(
        &mut doc,
        Value::Object(overlay_from_env(&process_env()).overlay),
    );
    doc
}

fn text(doc: &Value, key: &str) -> Option<String> {
    match doc.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

impl Settings {
    /// Loads the config file (if any) and applies `--dcs-url`. A missing default file
    /// is fine; a missing file named with `-c` is reported on stderr and skipped, as
    /// patronictl does.
    pub fn load(
        explicit: Option<&Path>,
        dcs_url: Option<&str>,
        insecure: bool,
    ) -> CtlResult<Settings> {
        let (path, named) = config_path(explicit);
        let mut doc = if path.exists() {
            match Config::load(&path) {
                Ok((cfg, _warnings)) => cfg.raw,
                Err(_) => lenient_document(&path)?,
            }
        } else {
            if named {
                eprintln!(
                    "Warning: ignoring configuration file \"{}\": it does not exist",
                    path.display()
                );
            }
            env_only_document()
        };
        if let Some(url) = dcs_url.filter(|u| !u.trim().is_empty()) {
            let url = DcsUrl::parse(url)?;
            apply_dcs_url(&mut doc, &url);
        }
        Settings::from_document(doc, insecure)
    }

    /// Settings from an already merged document.
    pub fn from_document(doc: Value, insecure: bool) -> CtlResult<Settings> {
        let scope = text(&doc, "scope");
        let namespace = text(&doc, "namespace").unwrap_or_else(|| "/service".to_string());
        let insecure = insecure
            || doc
                .get("ctl")
                .and_then(|c| c.get("insecure"))
                .is_some_and(|v| matches!(v, Value::Bool(true)) || v.as_str() == Some("true"));
        Ok(Settings {
            doc,
            scope,
            namespace,
            insecure,
        })
    }

    /// The cluster to act on: the argument, else `scope` of the config.
    pub fn cluster_name(&self, arg: Option<&str>) -> CtlResult<String> {
        arg.map(str::to_string)
            .or_else(|| self.scope.clone())
            .filter(|s| !s.trim().is_empty())
            .ok_or_else(|| {
                CtlError::Config(
                    "no cluster name given and no scope in the config file".to_string(),
                )
            })
    }

    /// A config for `connect_dcs` bound to `cluster`: the DCS section of the document,
    /// the namespace, and the REST client settings (`ctl`, `restapi`).
    pub fn config_for(&self, cluster: &str) -> CtlResult<Config> {
        let doc = &self.doc;
        let typed = |key: &str| doc.get(key).filter(|v| !v.is_null()).cloned();
        fn parse<T: serde::de::DeserializeOwned + Default>(
            v: Option<Value>,
            what: &str,
        ) -> CtlResult<T> {
            match v {
                None => Ok(T::default()),
                Some(v) => serde_json::from_value(v)
                    .map_err(|e| CtlError::Config(format!("config section {what}: {e}"))),
            }
        }
        let present = DCS_SECTIONS
            .iter()
            .any(|s| doc.get(*s).is_some_and(|v| !v.is_null()));
        if !present {
            return Err(CtlError::Config(
                "no DCS configured: give --dcs-url (e.g. etcd3://127.0.0.1:2379) or a config \
                 file (-c) with an etcd3, zookeeper or consul section"
                    .to_string(),
            ));
        }
        // The agent's own model and refusals.
        let dcs =
            dcs_from_document(doc).map_err(|p| CtlError::Config(format!("config section {p}")))?;
        Ok(Config {
            scope: cluster.to_string(),
            namespace: self.namespace.clone(),
            name: format!("fullautoctl-{}", std::process::id()),
            restapi: parse::<RestApiConfig>(typed("restapi"), "restapi").unwrap_or_default(),
            ctl: parse::<CtlConfig>(typed("ctl"), "ctl")?,
            dcs,
            bootstrap: BootstrapConfig::default(),
            postgresql: PostgresqlConfig::default(),
            watchdog: WatchdogConfig::default(),
            tags: Default::default(),
            log: LogConfig::default(),
            raw: doc.clone(),
        })
    }
}

/// Replaces every DCS section of `doc` with the one `url` names.
pub fn apply_dcs_url(doc: &mut Value, url: &DcsUrl) {
    if !doc.is_object() {
        *doc = Value::Object(Map::new());
    }
    if let Some(m) = doc.as_object_mut() {
        for s in DCS_SECTIONS {
            m.remove(*s);
        }
        m.insert(url.kind.to_string(), url.section());
        if let Some(ns) = &url.namespace {
            m.insert("namespace".to_string(), Value::String(ns.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dcs_url_schemes_and_default_ports() {
        let u = DcsUrl::parse("etcd3://127.0.0.1:23790").unwrap();
        assert_eq!(
            (u.kind, u.host.as_str(), u.port),
            ("etcd3", "127.0.0.1", 23790)
        );
        assert_eq!(u.section(), json!({"host": "127.0.0.1:23790"}));
        let e = DcsUrl::parse("etcd://db1").unwrap_err().to_string();
        assert!(e.contains("use etcd3://"), "{e}");
        let u = DcsUrl::parse("zookeeper://zk:2182").unwrap();
        assert_eq!(u.kind, "zookeeper");
        assert_eq!(u.section(), json!({"hosts": ["zk:2182"]}));
        let u = DcsUrl::parse("consul://c").unwrap();
        assert_eq!((u.kind, u.port), ("consul", 8500));
        assert_eq!(u.section(), json!({"host": "c:8500"}));
    }

    #[test]
    fn dcs_url_without_scheme_guesses_by_port() {
        assert_eq!(DcsUrl::parse("h:2181").unwrap().kind, "zookeeper");
        assert_eq!(DcsUrl::parse("h:8500").unwrap().kind, "consul");
        assert_eq!(DcsUrl::parse("h").unwrap().kind, "etcd3");
        assert_eq!(DcsUrl::parse("//h:1234").unwrap().port, 1234);
    }

    #[test]
    fn dcs_url_path_is_namespace_and_ipv6_works() {
        let u = DcsUrl::parse("etcd3://[::1]:2379/custom").unwrap();
        assert_eq!(u.host, "::1");
        assert_eq!(u.namespace.as_deref(), Some("/custom"));
        assert_eq!(u.section(), json!({"host": "[::1]:2379"}));
        assert_eq!(DcsUrl::parse("etcd3://h:1/").unwrap().namespace, None);
        assert_eq!(DcsUrl::parse("etcd3://").unwrap().host, "localhost");
    }

    #[test]
    fn dcs_url_errors_name_the_problem() {
        let e = DcsUrl::parse("redis://h:1").unwrap_err().to_string();
        assert!(e.contains("unknown DCS scheme \"redis\""), "{e}");
        let e = DcsUrl::parse("etcd3://h:notaport").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        assert!(DcsUrl::parse("etcd3://h:0").is_err());
        assert!(DcsUrl::parse("etcd3://h:70000").is_err());
        assert!(DcsUrl::parse("etcd3://[::1").is_err());
    }

    #[test]
    fn dcs_url_replaces_the_file_section_and_keeps_the_rest() {
        let mut doc =
            json!({"scope": "b", "zookeeper": {"hosts": ["x"]}, "ctl": {"insecure": true}});
        apply_dcs_url(
            &mut doc,
            &DcsUrl::parse("etcd3://127.0.0.1:2379/ns").unwrap(),
        );
        assert!(doc.get("zookeeper").is_none());
        assert_eq!(doc["etcd3"]["host"], "127.0.0.1:2379");
        assert_eq!(doc["namespace"], "/ns");
        let s = Settings::from_document(doc, false).unwrap();
        assert!(s.insecure);
        assert_eq!(s.namespace, "/ns");
        let cfg = s.config_for("batman").unwrap();
        assert_eq!(cfg.scope, "batman");
        assert!(matches!(cfg.dcs, crate::config::DcsConfig::Etcd3(_)));
        assert!(cfg.name.starts_with("fullautoctl-"));
    }

    #[test]
    fn cluster_name_defaults_to_scope_and_missing_dcs_is_explained() {
        let s = Settings::from_document(json!({"scope": "batman"}), false).unwrap();
        assert_eq!(s.cluster_name(None).unwrap(), "batman");
        assert_eq!(s.cluster_name(Some("robin")).unwrap(), "robin");
        let e = s.config_for("batman").unwrap_err().to_string();
        assert!(e.contains("--dcs-url"), "{e}");
        let s = Settings::from_document(json!({}), false).unwrap();
        assert!(s.cluster_name(None).is_err());
        let s = Settings::from_document(
            json!({"etcd3": {"host": "a:1"}, "consul": {"host": "b"}}),
            false,
        )
        .unwrap();
        assert!(s
            .config_for("x")
            .unwrap_err()
            .to_string()
            .contains("more than one"));
    }
}
