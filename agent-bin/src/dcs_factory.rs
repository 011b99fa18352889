//! Builds the configured DCS backend from the agent's config file.

use crate::config::{Config, DcsConfig};
use ha_core::{ClusterKeys, Dcs, DcsError, DcsTiming};
use serde_json::{Map, Value};
use std::sync::Arc;

/// The keys of a Patroni DCS section that a backend understands; the rest (`srv`,
/// `use_proxies`, `register_service` …) are validated by the config loader and
/// ignored here.
fn section(raw: &Value, names: &[&str], keys: &[&str]) -> Value {
    let found = names
        .iter()
        .find_map(|n| raw.get(*n))
        .and_then(Value::as_object);
    let mut out = Map::new();
    if let Some(s) = found {
        for k in keys {
            if let Some(v) = s.get(*k).filter(|v| !v.is_null()) {
                out.insert((*k).to_string(), v.clone());
            }
        }
    }
    Value::Object(out)
}

fn parse<T: serde::de::DeserializeOwned>(what: &str, v: Value) -> Result<T, DcsError> {
    serde_json::from_value(v).map_err(|e| DcsError::Config(format!("{what}: {e}")))
}

/// Connects the backend named in `cfg` for member `member` (the agent's own name, or
/// a throw-away name for read-only clients such as fullautoctl).
pub async fn connect_dcs(
    cfg: &Config,
    member: &str,
    timing: DcsTiming,
) -> Result<Arc<dyn Dcs>, DcsError> {
    match &cfg.dcs {
        DcsConfig::Etcd3(_) => {
            let keys = [
                "host", "hosts", "url", "protocol", "username", "password", "cacert", "cert", "key",
            ];
            let c: dcs_etcd::EtcdConfig =
                parse("etcd3", section(&cfg.raw, &["etcd3", "etcd"], &keys))?;
            let dcs =
                dcs_etcd::EtcdDcs::connect(&c, &cfg.namespace, &cfg.scope, member, timing).await?;
            Ok(Arc::new(dcs))
        }
        DcsConfig::Zookeeper(_) => {
            let c: dcs_zookeeper::ZooKeeperConfig = parse(
                "zookeeper",
                section(
                    &cfg.raw,
                    &["zookeeper"],
                    &["hosts", "auth_data", "set_acls"],
                ),
            )?;
            let keys = ClusterKeys::new(&cfg.namespace, &cfg.scope);
            let dcs = dcs_zookeeper::ZooKeeperDcs::new(&c, keys, member, timing)
                .map_err(|e| DcsError::Config(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        DcsConfig::Consul(_) => {
            let keys = [
                "host",
                "url",
                "port",
                "scheme",
                "token",
                "verify",
                "cacert",
                "cert",
                "key",
                "dc",
                "consistency",
                "checks",
            ];
            let c: dcs_consul::ConsulConfig =
                parse("consul", section(&cfg.raw, &["consul"], &keys))?;
            let dcs = dcs_consul::ConsulDcs::new(&c, &cfg.namespace, &cfg.scope, member, timing)?;
            Ok(Arc::new(dcs))
        }
    }
}
