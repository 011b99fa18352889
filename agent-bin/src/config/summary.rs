//! What `--validate-config` says about a usable file: the settings it checked and
//! will use, one line each.

use super::{Config, DcsConfig};

/// The lines printed after a successful check.
pub fn summary(path: &std::path::Path, cfg: &Config) -> String {
    let dcs = match &cfg.dcs {
        DcsConfig::Etcd3(e) => format!("etcd3 at {}", e.endpoints().join(", ")),
        DcsConfig::Zookeeper(z) => format!("zookeeper at {}", z.hosts.join(", ")),
        DcsConfig::Consul(c) => format!("consul at {}", c.base_url()),
    };
    let dc = &cfg.bootstrap.dcs;
    let (loop_wait, retry) = dc.effective_timing();
    let pg = &cfg.postgresql;
    let lines = [
        format!("{}: the configuration is valid", path.display()),
        format!(
            "  cluster {} (namespace {}), member {}",
            cfg.scope, cfg.namespace, cfg.name
        ),
        format!("  DCS: {dcs}"),
        format!(
            "  REST API: listen {}, connect_address {}",
            cfg.restapi.listen, cfg.restapi.connect_address
        ),
        format!(
            "  PostgreSQL: listen {}, connect_address {}, data_dir {}",
            pg.listen, pg.connect_address, pg.data_dir
        ),
        format!(
            "  bootstrap.dcs timing: ttl {}, loop_wait {loop_wait}, retry_timeout {retry}",
            dc.ttl
        ),
    ];
    lines.iter().map(|l| format!("{l}\n")).collect()
}
