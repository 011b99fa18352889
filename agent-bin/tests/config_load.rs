//! Loading Patroni-shaped config files into the typed config.

use agent_bin::config::{
    validate_file_with_env, Config, DcsConfig, EnvMap, VerifyClient, WatchdogMode,
};
use ha_core::SynchronousMode;

/// The minimal sample from spec §7, as Patroni's own samples shape it.
pub const SAMPLE: &str = r#"
scope: batman
namespace: /service/
name: postgresql0

restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008

etcd3:
  host: 127.0.0.1:2379

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      pg_hba:
      - host replication replicator 127.0.0.1/32 md5
      - host all all 0.0.0.0/0 md5
      parameters:
  initdb:
  - encoding: UTF8
  - data-checksums

postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: '..'

tags:
  noloadbalance: false
  clonefrom: false
  nostream: false
"#;

fn no_env() -> EnvMap {
    EnvMap::new()
}

#[test]
fn patroni_sample_loads() {
    let (c, warnings) = Config::from_yaml_str(SAMPLE, &no_env()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(c.scope, "batman");
    assert_eq!(c.name, "postgresql0");
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.restapi.listen, "127.0.0.1:8008");
    assert_eq!(c.api_url(), "http://127.0.0.1:8008/patroni");
    assert_eq!(c.conn_url(), "postgres://127.0.0.1:5432/postgres");
    match &c.dcs {
        DcsConfig::Etcd3(e) => assert_eq!(e.endpoints().unwrap(), vec!["http://127.0.0.1:2379"]),
        other => panic!("wrong dcs {other:?}"),
    }
    assert_eq!(c.bootstrap.dcs.ttl, 30.0);
    assert_eq!(c.bootstrap.dcs.maximum_lag_on_failover, 1_048_576);
    assert!(c.bootstrap.dcs.use_pg_rewind());
    assert_eq!(
        c.bootstrap.initdb.to_args().unwrap(),
        vec!["--encoding=UTF8", "--data-checksums"]
    );
    assert_eq!(
        c.postgresql.authentication.replication.username,
        "replicator"
    );
    assert_eq!(
        c.postgresql
            .authentication
            .rewind
            .as_ref()
            .unwrap()
            .username,
        "rewind_user"
    );
    assert_eq!(c.postgresql.parameters["unix_socket_directories"], "..");
    assert_eq!(c.postgresql.create_replica_methods, None);
    assert_eq!(c.postgresql.pg_ctl_timeout, None);
    assert!(!c.tags.no_load_balance());
    assert_eq!(c.watchdog.mode, WatchdogMode::Automatic);
    assert_eq!(c.log.level, agent_bin::config::LogLevel::Info);
}

#[test]
fn every_section_is_typed() {
    let yaml = r#"
scope: s
name: n1
restapi:
  listen: 0.0.0.0:8008
  connect_address: 10.0.0.1:8008
  authentication: {username: admin, password: 1234}
  certfile: /c.pem
  keyfile: /k.pem
  cafile: /ca.pem
  verify_client: required
  allowlist: 127.0.0.1, 10.0.0.0/8
  allowlist_include_members: "true"
  http_extra_headers: {X-Frame-Options: SAMEORIGIN}
ctl: {insecure: yes, cacert: /ca.pem, authentication: {username: u, password: p}}
consul:
  host: 127.0.0.1
  port: "8501"
  scheme: https
  token: t
  dc: dc1
  consistency: stale
  checks: [a, b]
  register_service: true
  service_tags: master, x
bootstrap:
  method: wal_e
  wal_e: {command: /restore.sh, keep_existing_recovery_conf: true, recovery_conf: {restore_command: "cp %f %p"}}
  dcs: {ttl: 20, loop_wait: 2, retry_timeout: 5, master_start_timeout: 0, synchronous_mode: quorum, permanent_slots: {s1: {type: physical}}}
  post_init: /post.sh
  pg_hba: [host all all 0.0.0.0/0 md5]
postgresql:
  listen: "*:5432"
  connect_address: 10.0.0.1:5432
  proxy_address: 10.0.0.1:6432
  data_dir: /data
  bin_dir: /usr/lib/postgresql/15/bin
  bin_name: {pg_ctl: pg_ctl15}
  use_unix_socket: true
  use_unix_socket_repl: "on"
  pg_ctl_timeout: 30
  use_pg_rewind: true
  remove_data_directory_on_rewind_failure: true
  create_replica_methods: [clone_with_script, basebackup]
  clone_with_script: {command: /clone.sh, no_leader: true, extra: 1}
  basebackup: {max-rate: 100M, checkpoint: fast}
  recovery_conf: {recovery_min_apply_delay: 5min}
  callbacks: {on_role_change: /cb.sh arg, on_start: [/start.sh, x]}
  pre_promote: /pre.sh
  authentication:
    superuser: {username: postgres, password: s, sslmode: verify-full, sslrootcert: /root.crt}
    replication: {username: rep, password: r, channel_binding: require}
watchdog: {mode: required, device: /dev/wd1, safety_margin: -1}
tags: {nofailover: false, failover_priority: 3, zone: a}
log: {level: debug, type: json, dir: /var/log/fa}
"#;
    let (c, w) = Config::from_yaml_str(yaml, &no_env()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    let r = &c.restapi;
    assert_eq!(r.authentication.as_ref().unwrap().password, "1234");
    assert_eq!(r.verify_client, VerifyClient::Required);
    assert_eq!(r.allowlist, vec!["127.0.0.1", "10.0.0.0/8"]);
    assert!(r.allowlist_include_members);
    assert_eq!(r.http_extra_headers["X-Frame-Options"], "SAMEORIGIN");
    assert_eq!(c.api_url(), "https://10.0.0.1:8008/patroni");
    assert!(c.ctl.insecure);
    assert_eq!(c.client_auth().unwrap().username, "u");
    let DcsConfig::Consul(cs) = &c.dcs else {
        panic!("consul expected")
    };
    assert_eq!(cs.base_url().unwrap(), "https://127.0.0.1:8501");
    assert_eq!(cs.service_tags, vec!["master", "x"]);
    assert_eq!(
        cs.checks.as_deref(),
        Some(&["a".to_string(), "b".to_string()][..])
    );
    assert_eq!(c.bootstrap.method.as_deref(), Some("wal_e"));
    let m = &c.bootstrap.methods["wal_e"];
    assert_eq!(m.command.as_deref(), Some("/restore.sh"));
    assert!(m.keep_existing_recovery_conf);
    assert_eq!(c.bootstrap.post_bootstrap.as_deref(), Some("/post.sh"));
    assert_eq!(c.bootstrap.dcs.primary_start_timeout, 0.0);
    assert_eq!(c.bootstrap.dcs.synchronous_mode, SynchronousMode::Quorum);
    assert!(c.bootstrap.dcs.extra.contains_key("slots"));
    let pg = &c.postgresql;
    assert!(pg.use_unix_socket && pg.use_unix_socket_repl);
    assert_eq!(pg.bin_name.pg_ctl.as_deref(), Some("pg_ctl15"));
    assert_eq!(
        pg.create_replica_methods.as_deref(),
        Some(&["clone_with_script".to_string(), "basebackup".to_string()][..])
    );
    assert!(pg.methods.0["clone_with_script"].no_leader);
    assert_eq!(pg.methods.0["clone_with_script"].extra["extra"], 1);
    assert!(!pg.methods.0.contains_key("basebackup"));
    assert_eq!(pg.basebackup.to_args().unwrap().len(), 2);
    assert_eq!(
        pg.callbacks.on_role_change.as_ref().unwrap().argv(),
        vec!["/cb.sh", "arg"]
    );
    assert_eq!(
        pg.callbacks.on_start.as_ref().unwrap().argv(),
        vec!["/start.sh", "x"]
    );
    assert_eq!(
        pg.authentication.superuser.libpq_options(),
        vec![
            ("sslmode", "verify-full".to_string()),
            ("sslrootcert", "/root.crt".to_string())
        ]
    );
    assert_eq!(pg.remove_data_directory_on_rewind_failure, Some(true));
    assert_eq!(c.watchdog.mode, WatchdogMode::Required);
    assert_eq!(c.watchdog.safety_margin, -1.0);
    assert_eq!(c.tags.failover_priority, Some(3.into()));
    assert_eq!(c.tags.value_as_text("zone").as_deref(), Some("a"));
    assert_eq!(c.log.level, agent_bin::config::LogLevel::Debug);
    assert!(c.log.is_json());
}

#[test]
fn zookeeper_and_etcd_lists() {
    let base = SAMPLE.replace("etcd3:\n  host: 127.0.0.1:2379\n", "");
    let zk = format!("{base}\nzookeeper:\n  hosts: ['127.0.0.1:2181', 'zk2']\n  set_acls: {{'CN=x': [READ, CREATE]}}\n  auth_data: {{digest: 'u:p'}}\n");
    let (c, _) = Config::from_yaml_str(&zk, &no_env()).unwrap();
    let DcsConfig::Zookeeper(z) = &c.dcs else {
        panic!()
    };
    assert_eq!(z.hosts, vec!["127.0.0.1:2181", "zk2"]);
    assert_eq!(z.set_acls["CN=x"], vec!["READ", "CREATE"]);
    assert_eq!(z.auth_data, vec![("digest".to_string(), "u:p".to_string())]);
    let etcd =
        format!("{base}\netcd3:\n  hosts: 127.0.0.1:2379,127.0.0.2:2379\n  protocol: https\n");
    let (c, _) = Config::from_yaml_str(&etcd, &no_env()).unwrap();
    let DcsConfig::Etcd3(e) = &c.dcs else {
        panic!()
    };
    assert_eq!(
        e.endpoints().unwrap(),
        vec!["https://127.0.0.1:2379", "https://127.0.0.2:2379"]
    );
}

#[test]
fn directory_of_files_is_merged_in_name_order() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("00-base.yml"), SAMPLE).unwrap();
    std::fs::write(
        dir.path().join("10-node.yaml"),
        "name: postgresql1\npostgresql:\n  listen: 127.0.0.1:5433\n",
    )
    .unwrap();
    std::fs::write(dir.path().join("ignored.txt"), "name: nope").unwrap();
    let (c, _) = Config::load_with_env(dir.path(), &no_env()).unwrap();
    assert_eq!(c.name, "postgresql1");
    assert_eq!(c.postgresql.listen, "127.0.0.1:5433");
    assert_eq!(c.postgresql.data_dir, "data/postgresql0");
    let file = dir.path().join("00-base.yml");
    let report = validate_file_with_env(&file, &no_env());
    assert!(!report.has_errors(), "{}", report.render());
}

#[test]
fn missing_file_is_an_error_not_a_panic() {
    let report = validate_file_with_env("/nonexistent/fullauto.yml", &no_env());
    assert!(report.has_errors());
    assert!(report
        .render()
        .starts_with("error: cannot read /nonexistent/fullauto.yml"));
    assert!(Config::load_with_env("/nonexistent/x.yml", &no_env()).is_err());
}
