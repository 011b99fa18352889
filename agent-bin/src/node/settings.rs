//! Translates the agent's config file into the settings of ha-core and pg-driver.

use crate::config::Config;
use anyhow::Context;
use ha_core::decision::NodeConfig;
use ha_core::runner::RunnerSettings;
use serde_json::{Map, Value};
use std::time::Duration;

/// The node's static settings for the decision function.
pub fn node_config(cfg: &Config) -> NodeConfig {
    let ttl = cfg.bootstrap.dcs.ttl();
    NodeConfig {
        name: cfg.name.clone(),
        tags: cfg.tags.clone(),
        api_url: Some(cfg.api_url()),
        conn_url: Some(cfg.conn_url()),
        can_bootstrap: cfg.raw.get("bootstrap").is_some(),
        bootstrap_config: cfg.bootstrap.dcs.clone(),
        // The fence fires this long before the lease ends: covers the keeper's wake-up
        // and kill, and clock-rate differences between this host and the DCS.
        fence_margin: (ttl / 10).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        // Short stalls of a busy server are normal; a third of the lease is not.
        hung_grace: (ttl / 3).max(Duration::from_secs(1)),
        version: env!("CARGO_PKG_VERSION").to_string(),
    }
}

/// Runner timeouts from the config.
pub fn runner_settings(cfg: &Config) -> RunnerSettings {
    let pg = cfg.raw.get("postgresql");
    let flag = |k: &str| {
        pg.and_then(|p| p.get(k))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let pg_ctl = pg
        .and_then(|p| p.get("pg_ctl_timeout"))
        .and_then(Value::as_u64)
        .unwrap_or(60);
    let ttl = cfg.bootstrap.dcs.ttl();
    RunnerSettings {
        pg_ctl_timeout: Duration::from_secs(pg_ctl),
        promote_timeout: Duration::from_secs(pg_ctl),
        // A dead or frozen peer must not hold up a leader race for long.
        probe_timeout: (ttl / 4).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        remove_data_directory_on_rewind_failure: flag("remove_data_directory_on_rewind_failure"),
    }
}

/// pg-driver's configuration: the local `postgresql` section with member name and
/// scope, over the dynamic `bootstrap.dcs.postgresql` settings (local wins, as in
/// Patroni), plus `bootstrap.initdb` and `bootstrap.pg_hba`.
pub fn pg_config(cfg: &Config) -> anyhow::Result<pg_driver::PgConfig> {
    let mut merged = Map::new();
    if let Some(dynamic) = cfg
        .raw
        .pointer("/bootstrap/dcs/postgresql")
        .and_then(Value::as_object)
    {
        for (k, v) in dynamic {
            if k != "use_slots" || !merged.contains_key(k) {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(local) = cfg.raw.get("postgresql").and_then(Value::as_object) {
        for (k, v) in local {
            if let (Some(Value::Object(base)), Value::Object(over)) = (merged.get_mut(k), v) {
                for (kk, vv) in over {
                    base.insert(kk.clone(), vv.clone());
                }
            } else {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    merged.insert("name".into(), Value::from(cfg.name.clone()));
    merged.insert("scope".into(), Value::from(cfg.scope.clone()));
    if !merged.contains_key("initdb") {
        if let Some(initdb) = cfg.raw.pointer("/bootstrap/initdb") {
            merged.insert("initdb".into(), initdb.clone());
        }
    }
    let hba_empty = merged
        .get("pg_hba")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty());
    if hba_empty {
        if let Some(hba) = cfg.raw.pointer("/bootstrap/pg_hba") {
            merged.insert("pg_hba".into(), hba.clone());
        }
    }
    // Sections only the agent interprets.
    for k in [
        "callbacks",
        "pre_promote",
        "before_stop",
        "recovery_conf",
        "proxy_address",
        "pgpass",
        "use_unix_socket",
        "use_unix_socket_repl",
        "config_dir",
        "bin_name",
        "pg_ident",
        "custom_conf",
        "rewind",
    ] {
        merged.remove(k);
    }
    serde_json::from_value(Value::Object(merged)).context("postgresql section")
}
