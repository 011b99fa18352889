//! Translates the agent's config file into the settings of ha-core and pg-driver.

use crate::config::{BinNames, Config, DynamicPostgresql, MethodSection, PostgresqlConfig};
use anyhow::Context;
use ha_core::decision::NodeConfig;
use ha_core::runner::RunnerSettings;
use pg_driver::config::ToolOptions;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
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
    // Fractions of a second are fine (Patroni takes any number); at least a second.
    let pg_ctl = Duration::try_from_secs_f64(pg_ctl_timeout(cfg))
        .unwrap_or(Duration::from_secs(60))
        .max(Duration::from_secs(1));
    let ttl = cfg.bootstrap.dcs.ttl();
    let local = &cfg.postgresql;
    RunnerSettings {
        pg_ctl_timeout: pg_ctl,
        pg_ctl_timeout_is_local: local.pg_ctl_timeout.is_some(),
        promote_timeout: pg_ctl,
        // A dead or frozen peer must not hold up a leader race for long.
        probe_timeout: (ttl / 4).clamp(Duration::from_millis(300), Duration::from_secs(2)),
        remove_data_directory_on_rewind_failure: local
            .remove_data_directory_on_rewind_failure
            .unwrap_or(false),
        local_use_pg_rewind: local.use_pg_rewind,
        // Filled in from the local setting and the DCS `config` key by the runner.
        use_pg_rewind: false,
        remove_data_directory_on_diverged_timelines: local
            .remove_data_directory_on_diverged_timelines
            .unwrap_or(false),
        // Filled in from the DCS `config` key by the runner.
        primary_stop_timeout: None,
    }
}

/// `pg_ctl_timeout` in seconds: the local value, else the dynamic one, else 60.
fn pg_ctl_timeout(cfg: &Config) -> f64 {
    cfg.postgresql
        .pg_ctl_timeout
        .or(cfg.bootstrap.dcs_postgresql.pg_ctl_timeout)
        .unwrap_or(60.0)
}

/// `postgresql.bin_name` as tool ⇒ file name.
fn bin_names(cfg: &Config) -> BTreeMap<String, String> {
    let BinNames {
        pg_ctl,
        initdb,
        pg_controldata,
        pg_basebackup,
        postgres,
        pg_isready,
        pg_rewind,
    } = &cfg.postgresql.bin_name;
    [
        ("pg_ctl", pg_ctl),
        ("initdb", initdb),
        ("pg_controldata", pg_controldata),
        ("pg_basebackup", pg_basebackup),
        ("postgres", postgres),
        ("pg_isready", pg_isready),
        ("pg_rewind", pg_rewind),
    ]
    .into_iter()
    .filter_map(|(tool, name)| Some((tool.to_string(), name.clone()?)))
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

fn btree(m: &Map<String, Value>) -> BTreeMap<String, Value> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// The local tool options, else the dynamic ones (local wins, as in Patroni).
fn options(local: &ToolOptions, dynamic: &ToolOptions) -> ToolOptions {
    match local {
        ToolOptions::None => dynamic.clone(),
        l => l.clone(),
    }
}

/// A replica method section in the driver's form.
fn replica_method(section: &MethodSection) -> Option<Value> {
    let mut m = section.extra.clone();
    m.insert("command".into(), Value::from(section.command.clone()?));
    m.insert("no_leader".into(), Value::from(section.no_leader));
    m.insert("keep_data".into(), Value::from(section.keep_data));
    m.insert("no_params".into(), Value::from(section.no_params));
    Some(Value::Object(m))
}

/// pg-driver's configuration, built from the typed `postgresql` section with
/// member name and scope, over the typed `bootstrap.dcs.postgresql` settings (local
/// wins, as in Patroni), plus `bootstrap.initdb`, `bootstrap.pg_hba`, the custom
/// `bootstrap.method` and `bootstrap.post_bootstrap`. Every field of the local
/// section is named below (the destructuring is exhaustive), so a key the
/// validation reads cannot be left out here.
pub fn pg_config(cfg: &Config) -> anyhow::Result<pg_driver::PgConfig> {
    let PostgresqlConfig {
        listen,
        connect_address,
        // The member record's `proxy_url` (`node_config`).
        proxy_address: _,
        data_dir,
        config_dir,
        bin_dir,
        // `bin_names`.
        bin_name: _,
        pgpass,
        authentication,
        parameters,
        pg_hba,
        pg_ident,
        custom_conf,
        use_unix_socket,
        use_unix_socket_repl,
        // `pg_ctl_timeout`.
        pg_ctl_timeout: _,
        use_pg_rewind,
        use_slots,
        rewind,
        basebackup,
        remove_data_directory_on_rewind_failure,
        remove_data_directory_on_diverged_timelines,
        create_replica_methods,
        recovery_conf,
        // The agent runs them (`node::callbacks`).
        callbacks: _,
        pre_promote,
        before_stop,
        methods,
    } = &cfg.postgresql;
    let DynamicPostgresql {
        parameters: dynamic_parameters,
        pg_hba: dynamic_pg_hba,
        pg_ident: dynamic_pg_ident,
        recovery_conf: dynamic_recovery_conf,
        // `pg_ctl_timeout`.
        pg_ctl_timeout: _,
        use_pg_rewind: dynamic_use_pg_rewind,
        use_slots: dynamic_use_slots,
        rewind: dynamic_rewind,
        basebackup: dynamic_basebackup,
        remove_data_directory_on_rewind_failure: dynamic_remove_on_rewind_failure,
        remove_data_directory_on_diverged_timelines: dynamic_remove_on_diverged,
        create_replica_methods: dynamic_create_replica_methods,
        methods: dynamic_methods,
    } = &cfg.bootstrap.dcs_postgresql;

    // Cluster-wide parameters come from the dynamic config (replaced at run time by
    // the DCS `config` key); local ones win, except those every node must share.
    let mut local_parameters = btree(parameters);
    for k in CLUSTER_WIDE_PARAMETERS {
        if local_parameters.remove(k).is_some() {
            tracing::warn!(
                parameter = k,
                "postgresql.parameters.{k} is ignored: it must be equal on every node, set it in the dynamic configuration"
            );
        }
    }
    // Replica method sections, the local one of a name winning over the dynamic one.
    let mut method_sections = BTreeMap::new();
    for (name, section) in dynamic_methods.0.iter().chain(&methods.0) {
        if let Some(m) = replica_method(section) {
            method_sections.insert(name.clone(), m);
        }
    }
    // The password file as an absolute path, relative ones from the agent's working
    // directory, as Patroni does.
    let pgpass = match pgpass.as_deref() {
        Some(p) => Some(
            std::path::absolute(p)
                .with_context(|| format!("postgresql.pgpass {p}: cannot make it absolute"))?,
        ),
        None => None,
    };
    let pg = pg_driver::PgConfig {
        name: cfg.name.clone(),
        scope: Some(cfg.scope.clone()),
        listen: listen.clone(),
        connect_address: Some(connect_address.clone()).filter(|c| !c.is_empty()),
        data_dir: data_dir.into(),
        config_dir: config_dir.as_ref().map(Into::into),
        bin_dir: bin_dir.as_ref().map(Into::into),
        bin_name: bin_names(cfg),
        authentication: authentication.clone(),
        use_unix_socket: *use_unix_socket,
        use_unix_socket_repl: *use_unix_socket_repl,
        pgpass,
        parameters: local_parameters,
        dynamic_parameters: btree(dynamic_parameters),
        // pg_hba, pg_ident and recovery_conf: the local ones, else the dynamic ones
        // (replaced at run time by the DCS `config` key; `bootstrap.pg_hba` stands
        // in for absent dynamic lines).
        pg_hba: pg_hba.clone().unwrap_or_default(),
        dynamic_pg_hba: dynamic_pg_hba
            .clone()
            .unwrap_or_else(|| cfg.bootstrap.pg_hba.clone()),
        pg_ident: pg_ident.clone().unwrap_or_default(),
        dynamic_pg_ident: dynamic_pg_ident.clone().unwrap_or_default(),
        custom_conf: custom_conf.clone(),
        recovery_conf: btree(recovery_conf),
        dynamic_recovery_conf: dynamic_recovery_conf
            .as_ref()
            .map(btree)
            .unwrap_or_default(),
        use_pg_rewind: use_pg_rewind.or(*dynamic_use_pg_rewind).unwrap_or(false),
        use_slots: use_slots.or(*dynamic_use_slots).unwrap_or(true),
        remove_data_directory_on_rewind_failure: remove_data_directory_on_rewind_failure
            .or(*dynamic_remove_on_rewind_failure)
            .unwrap_or(false),
        remove_data_directory_on_diverged_timelines: remove_data_directory_on_diverged_timelines
            .or(*dynamic_remove_on_diverged)
            .unwrap_or(false),
        create_replica_methods: create_replica_methods
            .clone()
            .or_else(|| dynamic_create_replica_methods.clone())
            .unwrap_or_default(),
        basebackup: options(basebackup, dynamic_basebackup),
        rewind: options(rewind, dynamic_rewind),
        initdb: cfg.bootstrap.initdb.clone(),
        pg_ctl_timeout: pg_ctl_timeout(cfg),
        pre_promote: pre_promote.clone(),
        before_stop: before_stop.clone(),
        os_user: None,
        log_file: None,
        bootstrap_method: bootstrap_method(cfg),
        post_bootstrap: cfg.bootstrap.post_bootstrap.clone(),
        bootstrap_users: cfg.bootstrap.users.clone(),
        method_sections,
    };
    Ok(pg)
}

/// The custom `bootstrap.method` section in pg-driver's form (`None` for initdb).
fn bootstrap_method(cfg: &Config) -> Option<pg_driver::config::BootstrapMethod> {
    let name = cfg.bootstrap.method.as_deref().filter(|m| *m != "initdb")?;
    let section = cfg.bootstrap.methods.get(name)?;
    Some(pg_driver::config::BootstrapMethod {
        name: name.to_string(),
        command: section.command.clone()?,
        no_params: section.no_params,
        keep_existing_recovery_conf: section.keep_existing_recovery_conf,
        recovery_conf: Some(btree(&section.recovery_conf)).filter(|r| !r.is_empty()),
        extra: btree(&section.extra),
    })
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

    #[test]
    fn rewind_and_basebackup_options_reach_the_driver_local_over_dynamic() {
        let yaml = YAML
            .replace(
                "  post_init: /bin/post.sh\n",
                "  post_init: /bin/post.sh\n  dcs: {postgresql: {rewind: [progress], basebackup: [{max-rate: 1M}]}}\n",
            );
        let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
        let pg = pg_config(&cfg).unwrap();
        assert_eq!(pg.rewind_args().unwrap(), ["--progress"]);
        assert_eq!(pg.basebackup.to_args().unwrap(), ["--max-rate=1M"]);
        let local = yaml.replace(
            "  data_dir: /data\n",
            "  data_dir: /data\n  rewind: [debug]\n  basebackup: {checkpoint: spread}\n",
        );
        let (cfg, _) = Config::from_yaml_str(&local, &EnvMap::new()).unwrap();
        let pg = pg_config(&cfg).unwrap();
        assert_eq!(pg.rewind_args().unwrap(), ["--debug"]);
        assert_eq!(pg.basebackup.to_args().unwrap(), ["--checkpoint=spread"]);
        pg.validate().unwrap();
    }
}
