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
        // The driver's view, so methods listed only in bootstrap.dcs count too.
        can_restore_without_leader: pg_config(cfg)
            .is_ok_and(|p| p.can_create_replica_without_leader()),
        // The fence fires this long before the lease ends: covers the keeper's wake-up
        // and kill, and clock-rate differences between this host and the DCS.
        fence_margin: (ttl / 10).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        // Short stalls of a busy server are normal; a third of the lease is not.
        hung_grace: (ttl / 3).max(Duration::from_secs(1)),
        version: ha_core::PATRONI_VERSION.to_string(),
        // Set by the runner once the record file is known to be writable.
        failsafe_record_durable: false,
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

/// Parameters that must be equal on the primary and the replicas: only the dynamic
/// configuration sets them (Patroni's list).
const CLUSTER_WIDE_PARAMETERS: [&str; 10] = [
    "max_connections",
    "max_locks_per_transaction",
    "max_worker_processes",
    "max_prepared_transactions",
    "wal_level",
    "track_commit_timestamp",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_segments",
    "wal_keep_size",
];

/// pg-driver's configuration: the local `postgresql` section with member name and
/// scope, over the dynamic `bootstrap.dcs.postgresql` settings (local wins, as in
/// Patroni), plus `bootstrap.initdb`, `bootstrap.pg_hba`, the custom
/// `bootstrap.method` and `bootstrap.post_bootstrap`.
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
    // Cluster-wide parameters come from the dynamic config (replaced at run time by
    // the DCS `config` key); local ones win, except those every node must share.
    let dynamic = cfg
        .raw
        .pointer("/bootstrap/dcs/postgresql/parameters")
        .cloned()
        .unwrap_or_else(|| Value::Object(Map::new()));
    merged.insert("dynamic_parameters".into(), dynamic);
    let mut local = cfg
        .raw
        .pointer("/postgresql/parameters")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for k in CLUSTER_WIDE_PARAMETERS {
        if local.remove(k).is_some() {
            tracing::warn!(
                parameter = k,
                "postgresql.parameters.{k} is ignored: it must be equal on every node, set it in the dynamic configuration"
            );
        }
    }
    merged.insert("parameters".into(), Value::Object(local));
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
    // Replica method sections with their flags read the lenient way (`on`, "true").
    for (name, section) in &cfg.postgresql.methods {
        if let Some(command) = &section.command {
            let mut m = section.extra.clone();
            m.insert("command".into(), Value::from(command.clone()));
            m.insert("no_leader".into(), Value::from(section.no_leader));
            m.insert("keep_data".into(), Value::from(section.keep_data));
            m.insert("no_params".into(), Value::from(section.no_params));
            merged.insert(name.clone(), Value::Object(m));
        }
    }
    if let Some(m) = bootstrap_method(cfg) {
        merged.insert("bootstrap_method".into(), m);
    }
    if let Some(script) = &cfg.bootstrap.post_bootstrap {
        merged.insert("post_bootstrap".into(), Value::from(script.clone()));
    }
    // Read the lenient way (`on`, "true"); the password file as an absolute path,
    // relative ones from the agent's working directory, as Patroni does.
    merged.insert(
        "use_unix_socket".into(),
        Value::from(cfg.postgresql.use_unix_socket),
    );
    merged.insert(
        "use_unix_socket_repl".into(),
        Value::from(cfg.postgresql.use_unix_socket_repl),
    );
    merged.remove("pgpass");
    if let Some(p) = cfg.postgresql.pgpass.as_deref().filter(|p| !p.is_empty()) {
        let abs = std::path::absolute(p)
            .with_context(|| format!("postgresql.pgpass {p}: cannot make it absolute"))?;
        merged.insert("pgpass".into(), Value::from(abs.display().to_string()));
    }
    // Sections only the agent interprets.
    for k in [
        "callbacks",
        "pre_promote",
        "before_stop",
        "recovery_conf",
        "proxy_address",
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

/// The custom `bootstrap.method` section in pg-driver's form (`None` for initdb).
fn bootstrap_method(cfg: &Config) -> Option<Value> {
    let name = cfg.bootstrap.method.as_deref().filter(|m| *m != "initdb")?;
    let section = cfg.bootstrap.methods.get(name)?;
    let mut m = section.extra.clone();
    m.insert("name".into(), Value::from(name));
    m.insert("command".into(), Value::from(section.command.clone()?));
    m.insert("no_params".into(), Value::from(section.no_params));
    m.insert(
        "keep_existing_recovery_conf".into(),
        Value::from(section.keep_existing_recovery_conf),
    );
    if !section.recovery_conf.is_empty() {
        m.insert(
            "recovery_conf".into(),
            Value::Object(section.recovery_conf.clone()),
        );
    }
    Some(Value::Object(m))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::EnvMap;

    const YAML: &str = r#"
scope: batman
name: pg0
restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}
etcd3: {host: 127.0.0.1:2379}
bootstrap:
  method: restore
  restore:
    command: /bin/restore.sh
    keep_existing_recovery_conf: 'on'
    recovery_conf: {restore_command: 'cp /a/%f %p'}
    backup_id: 7
  post_init: /bin/post.sh
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  create_replica_methods: [walg, basebackup]
  walg: {command: walg.sh, no_leader: 'yes', threads: 4}
  authentication:
    superuser: {username: postgres}
    replication: {username: rep}
"#;

    #[test]
    fn cluster_wide_parameters_come_only_from_the_dynamic_config() {
        let yaml = YAML
            .replace(
                "  post_init: /bin/post.sh\n",
                "  post_init: /bin/post.sh\n  dcs: {postgresql: {parameters: {max_connections: 300, work_mem: 4MB}}}\n",
            )
            .replace(
                "  data_dir: /data\n",
                "  data_dir: /data\n  parameters: {max_connections: 50, work_mem: 8MB}\n",
            );
        let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
        let pg = pg_config(&cfg).unwrap();
        assert_eq!(
            pg.dynamic_parameters["max_connections"],
            serde_json::json!(300)
        );
        // A local value wins, except for what every node must share.
        assert_eq!(
            pg.parameters.get("work_mem"),
            Some(&serde_json::json!("8MB"))
        );
        assert!(!pg.parameters.contains_key("max_connections"));
    }

    #[test]
    fn bootstrap_and_replica_methods_reach_the_driver_and_the_decision() {
        let (cfg, _) = Config::from_yaml_str(YAML, &EnvMap::new()).unwrap();
        let pg = pg_config(&cfg).unwrap();
        let m = pg
            .bootstrap_method
            .clone()
            .expect("custom bootstrap method");
        assert_eq!(m.name, "restore");
        assert_eq!(m.command, "/bin/restore.sh");
        assert!(m.keep_existing_recovery_conf && !m.no_params);
        assert_eq!(m.extra.get("backup_id"), Some(&serde_json::json!(7)));
        assert!(m
            .recovery_conf
            .is_some_and(|r| r.contains_key("restore_command")));
        assert_eq!(pg.post_bootstrap.as_deref(), Some("/bin/post.sh"));
        let walg = pg.replica_method("walg").unwrap();
        assert!(walg.no_leader);
        assert!(pg.can_create_replica_without_leader());
        assert!(node_config(&cfg).can_restore_without_leader);

        let initdb = YAML.replace("method: restore", "method: initdb");
        let (cfg, _) = Config::from_yaml_str(&initdb, &EnvMap::new()).unwrap();
        assert!(pg_config(&cfg).unwrap().bootstrap_method.is_none());
        // Methods listed only in the dynamic configuration count too.
        let dynamic = YAML
            .replace("  create_replica_methods: [walg, basebackup]\n", "")
            .replace(
                "bootstrap:\n",
                "bootstrap:\n  dcs: {postgresql: {create_replica_methods: [walg]}}\n",
            );
        let (cfg, _) = Config::from_yaml_str(&dynamic, &EnvMap::new()).unwrap();
        assert!(node_config(&cfg).can_restore_without_leader);
        let leader_only = YAML.replace("no_leader: 'yes', ", "");
        let (cfg, _) = Config::from_yaml_str(&leader_only, &EnvMap::new()).unwrap();
        assert!(!node_config(&cfg).can_restore_without_leader);
    }
}
