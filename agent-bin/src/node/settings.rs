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
        proxy_url: cfg
            .postgresql
            .proxy_address
            .as_ref()
            .map(|a| format!("postgres://{a}/postgres")),
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
    // Fractions of a second are fine (Patroni takes any number); at least a second.
    let pg_ctl = Duration::try_from_secs_f64(pg_ctl_timeout(cfg))
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    let ttl = cfg.bootstrap.dcs.ttl();
    RunnerSettings {
        pg_ctl_timeout: pg_ctl,
        pg_ctl_timeout_is_local: cfg.raw.pointer("/postgresql/pg_ctl_timeout").is_some(),
        promote_timeout: pg_ctl,
        // A dead or frozen peer must not hold up a leader race for long.
        probe_timeout: (ttl / 4).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        remove_data_directory_on_rewind_failure: flag("remove_data_directory_on_rewind_failure"),
        local_use_pg_rewind: cfg.postgresql.use_pg_rewind,
        // Filled in from the local setting and the DCS `config` key by the runner.
        use_pg_rewind: false,
        remove_data_directory_on_diverged_timelines: cfg
            .postgresql
            .remove_data_directory_on_diverged_timelines,
        // Filled in from the DCS `config` key by the runner.
        primary_stop_timeout: None,
    }
}

/// `pg_ctl_timeout` in seconds: the local value, else the dynamic one, else 60.
fn pg_ctl_timeout(cfg: &Config) -> f64 {
    let number = |v: &Value| match v {
        Value::String(s) => s.trim().parse().ok(),
        v => v.as_f64(),
    };
    [
        "/postgresql/pg_ctl_timeout",
        "/bootstrap/dcs/postgresql/pg_ctl_timeout",
    ]
    .iter()
    .find_map(|p| cfg.raw.pointer(p).and_then(number))
    .unwrap_or(60.0)
}

/// `postgresql.bin_name` as tool ⇒ file name.
fn bin_names(cfg: &Config) -> Map<String, Value> {
    let b = &cfg.postgresql.bin_name;
    [
        ("pg_ctl", &b.pg_ctl),
        ("initdb", &b.initdb),
        ("pg_controldata", &b.pg_controldata),
        ("pg_basebackup", &b.pg_basebackup),
        ("postgres", &b.postgres),
        ("pg_isready", &b.pg_isready),
        ("pg_rewind", &b.pg_rewind),
    ]
    .into_iter()
    .filter_map(|(tool, name)| Some((tool.to_string(), Value::from(name.clone()?))))
    .collect()
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
    // pg_hba, pg_ident and recovery_conf: the local ones, else the dynamic ones
    // (replaced at run time by the DCS `config` key; `bootstrap.pg_hba` stands in for
    // absent dynamic lines).
    for (key, empty) in [
        ("pg_hba", Value::Array(Vec::new())),
        ("pg_ident", Value::Array(Vec::new())),
        ("recovery_conf", Value::Object(Map::new())),
    ] {
        let local = cfg.raw.pointer(&format!("/postgresql/{key}")).cloned();
        let dynamic = cfg
            .raw
            .pointer(&format!("/bootstrap/dcs/postgresql/{key}"))
            .or_else(|| {
                (key == "pg_hba")
                    .then(|| cfg.raw.pointer("/bootstrap/pg_hba"))
                    .flatten()
            })
            .cloned();
        merged.insert(key.into(), local.unwrap_or_else(|| empty.clone()));
        merged.insert(format!("dynamic_{key}"), dynamic.unwrap_or(empty));
    }
    merged.insert("pg_ctl_timeout".into(), Value::from(pg_ctl_timeout(cfg)));
    merged.insert("bin_name".into(), Value::Object(bin_names(cfg)));
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
    for k in ["callbacks", "proxy_address", "rewind"] {
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

    #[test]
    fn postgresql_keys_reach_the_driver_runner_and_member_record() {
        let yaml = YAML
            .replace(
                "  post_init: /bin/post.sh\n",
                "  post_init: /bin/post.sh\n  dcs: {postgresql: {pg_hba: [host all all 10.0.0.0/8 md5], pg_ident: [m a b]}}\n",
            )
            .replace(
                "  data_dir: /data\n",
                "  data_dir: /data\n  pg_ctl_timeout: 2.5\n  bin_name: {pg_ctl: pg_ctl15}\n  pg_ident: [ops alice postgres]\n  pre_promote: /bin/fence.sh --check 'a b'\n  before_stop: /bin/drain.sh\n  recovery_conf: {recovery_min_apply_delay: 5min}\n  proxy_address: 10.0.0.1:6432\n  remove_data_directory_on_diverged_timelines: true\n",
            );
        let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
        let pg = pg_config(&cfg).unwrap();
        assert_eq!(pg.pg_ctl_timeout, 2.5);
        assert_eq!(
            pg.bin_name.get("pg_ctl").map(String::as_str),
            Some("pg_ctl15")
        );
        assert_eq!(pg.bin_name.len(), 1);
        assert!(pg.pg_hba.is_empty());
        assert_eq!(pg.dynamic_pg_hba, ["host all all 10.0.0.0/8 md5"]);
        assert_eq!(pg.pg_ident, ["ops alice postgres"]);
        assert_eq!(pg.dynamic_pg_ident, ["m a b"]);
        assert_eq!(pg.effective_pg_ident(), ["ops alice postgres"]);
        assert_eq!(
            pg.pre_promote.as_deref(),
            Some("/bin/fence.sh --check 'a b'")
        );
        assert_eq!(pg.before_stop.as_deref(), Some("/bin/drain.sh"));
        assert_eq!(
            pg.recovery_conf.get("recovery_min_apply_delay"),
            Some(&serde_json::json!("5min"))
        );
        assert!(pg.dynamic_recovery_conf.is_empty());
        let run = runner_settings(&cfg);
        assert_eq!(run.pg_ctl_timeout, Duration::from_millis(2500));
        assert!(run.pg_ctl_timeout_is_local);
        assert!(run.remove_data_directory_on_diverged_timelines);
        assert_eq!(
            node_config(&cfg).proxy_url.as_deref(),
            Some("postgres://10.0.0.1:6432/postgres")
        );
    }
}
