//! Builds the configured DCS backend from the agent's typed DCS section.

use crate::config::{Config, DcsConfig};
use ha_core::{ClusterKeys, Dcs, DcsError, DcsTiming};
use std::sync::Arc;

/// Connects the backend named in `cfg` for member `member` (the agent's own name, or
/// a throw-away name for read-only clients such as fullautoctl). The backend's
/// config comes from the section's typed model (`backend()`), the same one
/// `--validate-config` checks, so no key is validated here and dropped there.
pub async fn connect_dcs(
    cfg: &Config,
    member: &str,
    timing: DcsTiming,
) -> Result<Arc<dyn Dcs>, DcsError> {
    match &cfg.dcs {
        DcsConfig::Etcd3(e) => {
            let c = e
                .backend()
                .map_err(|why| DcsError::Config(format!("etcd3: {why}")))?;
            let dcs =
                dcs_etcd::EtcdDcs::connect(&c, &cfg.namespace, &cfg.scope, member, timing).await?;
            Ok(Arc::new(dcs))
        }
        DcsConfig::Zookeeper(z) => {
            let c = z.backend().map_err(|p| DcsError::Config(p.to_string()))?;
            let keys = ClusterKeys::new(&cfg.namespace, &cfg.scope);
            let dcs = dcs_zookeeper::ZooKeeperDcs::new(&c, keys, member, timing)
                .map_err(|e| DcsError::Config(e.to_string()))?;
            Ok(Arc::new(dcs))
        }
        DcsConfig::Consul(c) => {
            let dcs = dcs_consul::ConsulDcs::new(
                &c.backend(),
                &cfg.namespace,
                &cfg.scope,
                member,
                timing,
            )?;
            Ok(Arc::new(dcs))
        }
    }
}
