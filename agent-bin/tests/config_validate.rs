//! `--validate-config`: every problem reported with its path.

use agent_bin::config::{
    validate_config_output, validate_file_with_env, validate_str, Config, EnvMap, Report,
};

const GOOD: &str = r#"
scope: batman
name: postgresql0
restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}
etcd3: {host: 127.0.0.1:2379}
bootstrap:
  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {username: postgres, password: a}
    replication: {username: replicator, password: b}
"#;

fn check(yaml: &str) -> Report {
    validate_str(yaml, &EnvMap::new())
}

fn assert_has(r: &Report, line: &str) {
    assert!(
        r.render().lines().any(|l| l == line),
        "missing line {line:?} in:\n{}",
        r.render()
    );
}

#[test]
fn good_config_has_no_problems() {
    let r = check(GOOD);
    assert!(r.problems.is_empty(), "{}", r.render());
}

#[test]
fn every_error_is_reported_with_its_path() {
    let yaml = r#"
scope: batman
restapi: {listen: "127.0.0.1", connect_address: 127.0.0.1:99999}
etcd3: {host: 127.0.0.1:2379}
bootstrap:
  dcs: {ttl: abc, loop_wait: [1], synchronous_mode: sometimes}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 0.0.0.0:5432
  data_dir: /data
  use_pg_rewind: maybe
  authentication:
    superuser: {username: postgres}
    replication: {password: b}
watchdog: {mode: sometimes}
tags: {failover_priority: high}
"#;
    let r = check(yaml);
    assert_has(&r, "error: name: missing");
    assert_has(
        &r,
        "error: restapi.listen: expected host:port, got \"127.0.0.1\"",
    );
    assert_has(
        &r,
        "error: restapi.connect_address: invalid port \"99999\" in \"127.0.0.1:99999\"",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.ttl: expected a number, got \"abc\"",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.loop_wait: expected a number, got a list",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.synchronous_mode: expected a boolean or one of off, on, quorum, got \"sometimes\"",
    );
    assert_has(
        &r,
        "error: postgresql.use_pg_rewind: expected a boolean, got \"maybe\"",
    );
    assert_has(
        &r,
        "error: postgresql.authentication.replication.username: missing",
    );
    assert_has(
        &r,
        "error: postgresql.connect_address: \"0.0.0.0\" is not an address other members can reach",
    );
    assert_has(
        &r,
        "error: watchdog.mode: expected one of off, automatic, required or a boolean, got \"sometimes\"",
    );
    assert_has(
        &r,
        "error: tags.failover_priority: expected an integer, got \"high\"",
    );
    // Errors come before warnings, one line each.
    assert_eq!(r.errors().count(), 11, "{}", r.render());
    assert!(Config::from_yaml_str(yaml, &EnvMap::new()).is_err());
}

#[test]
fn unknown_keys_are_warnings_and_the_config_still_loads() {
    let yaml = format!("{GOOD}  paramters: {{x: 1}}\nrestapi_typo: 1\ntags: {{custom_zone: a}}\n");
    let r = check(&yaml);
    assert!(!r.has_errors(), "{}", r.render());
    assert_has(
        &r,
        "warning: postgresql.paramters: unknown key (ignored); did you mean parameters?",
    );
    assert_has(&r, "warning: restapi_typo: unknown key (ignored)");
    assert_eq!(
        r.warnings().count(),
        2,
        "custom tags are allowed: {}",
        r.render()
    );
    let (_, w) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
    assert_eq!(w.len(), 2);
}

#[test]
fn exactly_one_dcs() {
    let none = GOOD.replace("etcd3: {host: 127.0.0.1:2379}\n", "");
    let r = check(&none);
    assert!(
        r.render().starts_with("error: no DCS configured"),
        "{}",
        r.render()
    );
    let two = format!("{GOOD}consul: {{host: 127.0.0.1:8500}}\n");
    assert_has(
        &check(&two),
        "error: more than one DCS configured (etcd3, consul): keep exactly one",
    );
    let k8s = format!("{none}kubernetes: {{namespace: x}}\n");
    assert!(check(&k8s)
        .find("kubernetes", "not supported")
        .is_some_and(|p| p.is_error()));
    let empty_etcd = none.clone() + "etcd3: {protocol: http}\n";
    assert_has(
        &check(&empty_etcd),
        "error: etcd3: one of host, hosts, url or proxy is required",
    );
    let encrypted = none.clone() + "etcd3: {host: 127.0.0.1:2379, key_password: x}\n";
    assert_has(
        &check(&encrypted),
        "error: etcd3.key_password: encrypted client keys are not supported: decrypt the key (openssl pkey -in KEY -out PLAIN_KEY), point key at it and remove key_password",
    );
    let bad_hosts = none + "zookeeper: {hosts: ['127.0.0.1:2181', 'zk:port']}\n";
    assert_has(
        &check(&bad_hosts),
        "error: zookeeper.hosts[1]: invalid port \"port\" in \"zk:port\"",
    );
}

#[test]
fn timing_that_breaks_the_rule_is_shortened_with_a_warning() {
    let yaml = GOOD.replace(
        "{ttl: 30, loop_wait: 10, retry_timeout: 10}",
        "{ttl: 20, loop_wait: 10, retry_timeout: 10}",
    );
    assert_has(
        &check(&yaml),
        "warning: bootstrap.dcs.ttl: loop_wait + 2*retry_timeout (30) exceeds ttl (20): using loop_wait 1 and retry_timeout 9.5 (as Patroni does); set them so the rule holds to silence this",
    );
    let yaml = GOOD.replace(
        "{ttl: 30, loop_wait: 10, retry_timeout: 10}",
        "{ttl: 30, loop_wait: 0}",
    );
    assert_has(
        &check(&yaml),
        "error: bootstrap.dcs.loop_wait: must be >= 0.1, got 0",
    );
}

#[test]
fn slot_entries_are_checked() {
    let yaml = GOOD.replace(
        "{ttl: 30, loop_wait: 10, retry_timeout: 10}",
        "{ttl: 30, loop_wait: 10, retry_timeout: 10, slots: {cdc: {type: logical, database: app}, Bad-Name: {type: physical}}}",
    );
    let r = check(&yaml);
    assert_has(
        &r,
        "error: bootstrap.dcs.slots.cdc: type must be physical or logical, and a logical slot needs database and plugin",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.slots.Bad-Name: not a valid slot name (lowercase letters, digits and _, at most 63)",
    );
}

#[test]
fn standby_cluster_fields_are_checked_with_their_paths() {
    let yaml = GOOD.replace(
        "{ttl: 30, loop_wait: 10, retry_timeout: 10}",
        "{ttl: 30, loop_wait: 10, retry_timeout: 10, standby_cluster: {host: h, primary_slot_name: Bad-Slot, recovery_min_apply_delay: soon}}",
    );
    let r = check(&yaml);
    assert_has(
        &r,
        "error: bootstrap.dcs.standby_cluster.primary_slot_name: \"Bad-Slot\" is not a replication slot name (lower-case letters, digits and underscores, at most 63)",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.standby_cluster.recovery_min_apply_delay: expected milliseconds or a duration such as '5min', got \"soon\"",
    );
    let good = GOOD.replace(
        "{ttl: 30, loop_wait: 10, retry_timeout: 10}",
        "{ttl: 30, loop_wait: 10, retry_timeout: 10, standby_cluster: {host: h, port: 6000, primary_slot_name: b_leader, restore_command: 'cp /a/%f %p', create_replica_methods: [basebackup]}}",
    );
    let r = check(&good);
    assert!(r.problems.is_empty(), "{}", r.render());
}

#[test]
fn tag_conflicts_warn() {
    let yaml = format!(
        "{GOOD}tags: {{nofailover: true, failover_priority: 2, nosync: true, sync_priority: 1}}\n"
    );
    let r = check(&yaml);
    assert!(!r.has_errors());
    assert_has(
        &r,
        "warning: tags.failover_priority: Conflicting configuration between nofailover: True and failover_priority: 2. Defaulting to nofailover: True",
    );
    assert_has(
        &r,
        "warning: tags.sync_priority: Conflicting configuration between nosync: True and sync_priority: 1. Defaulting to nosync: True",
    );
    // An explicit false against a priority that says never: the boolean wins too.
    let r = check(&format!(
        "{GOOD}tags: {{nofailover: false, failover_priority: '0', nosync: false, sync_priority: 3}}\n"
    ));
    assert_eq!(
        r.warnings().map(|p| p.to_string()).collect::<Vec<_>>(),
        vec!["warning: tags.failover_priority: Conflicting configuration between nofailover: False and failover_priority: 0. Defaulting to nofailover: False"],
    );
}

#[test]
fn tls_and_method_rules() {
    let yaml = GOOD.replace(
        "restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}",
        "restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008, verify_client: required, keyfile: /k}",
    ) + "bootstrap_extra: 1\n";
    let r = check(&yaml);
    assert_has(&r, "error: restapi.keyfile: set without restapi.certfile");
    assert_has(
        &r,
        "error: restapi.verify_client: required needs restapi.cafile to check client certificates",
    );
    let yaml = GOOD.replace(
        "  data_dir: /data\n",
        "  data_dir: /data\n  create_replica_methods: [wal_g, basebackup]\n",
    );
    assert_has(
        &check(&yaml),
        "error: postgresql.create_replica_methods[0]: method \"wal_g\" needs a postgresql.wal_g.command",
    );
}

#[test]
fn encrypted_keys_are_refused_with_the_key_named() {
    let yaml = GOOD.replace(
        "restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}",
        "restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008, certfile: /c, keyfile_password: pw}\nctl: {certfile: /c, keyfile_password: pw}",
    );
    let r = check(&yaml);
    for key in ["restapi.keyfile_password", "ctl.keyfile_password"] {
        assert!(
            r.render().lines().any(|l| l.starts_with(&format!(
                "error: {key}: encrypted private keys are not supported"
            ))),
            "{key} not refused in:\n{}",
            r.render()
        );
    }
    // The environment form is refused the same way.
    let env = EnvMap::from([(
        "PATRONI_RESTAPI_KEYFILE_PASSWORD".to_string(),
        "pw".to_string(),
    )]);
    let r = validate_str(GOOD, &env);
    assert!(
        r.render().contains("error: restapi.keyfile_password:"),
        "{}",
        r.render()
    );
}

#[test]
fn yaml_syntax_errors_are_reported() {
    let r = check("scope: [unclosed\n");
    assert!(
        r.render().starts_with("error: not valid YAML"),
        "{}",
        r.render()
    );
    let r = check("- a list\n");
    assert_has(&r, "error: the config must be a YAML mapping");
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("p.yml");
    std::fs::write(&f, GOOD.replace("name: postgresql0\n", "")).unwrap();
    let r = validate_file_with_env(&f, &EnvMap::new());
    assert_has(&r, "error: name: missing");
    let with_env: EnvMap = [("PATRONI_NAME".to_string(), "pg1".to_string())].into();
    assert!(!validate_file_with_env(&f, &with_env).has_errors());
}

#[test]
fn watchdog_section_rules() {
    let good =
        GOOD.to_string() + "watchdog: {mode: required, driver: testing, safety_margin: -1}\n";
    let r = check(&good);
    assert!(r.problems.is_empty(), "{}", r.render());
    let (c, _) = Config::from_yaml_str(&good, &EnvMap::new()).expect("config");
    assert_eq!(
        c.watchdog.driver,
        agent_bin::config::WatchdogDriver::Testing
    );

    let r = check(&(GOOD.to_string() + "watchdog: {driver: softdog, safety_margin: -0.5}\n"));
    assert_has(
        &r,
        "error: watchdog.driver: expected one of default, testing, got \"softdog\"",
    );
    let r = check(&(GOOD.to_string() + "watchdog: {safety_margin: -0.5}\n"));
    assert_has(
        &r,
        "error: watchdog.safety_margin: must be -1 (half the ttl) or at least 0, got -0.5",
    );
    // ttl 30 − 25 = 5 s, shorter than loop_wait 10 s: the watchdog would fire between kicks.
    let r = check(&(GOOD.to_string() + "watchdog: {mode: required, safety_margin: 25}\n"));
    assert_has(
        &r,
        "error: watchdog.safety_margin: the watchdog timeout ttl − safety_margin = 5 s is shorter than loop_wait (10 s) (bootstrap.dcs.ttl 30 s)",
    );
    let r = check(&(GOOD.to_string() + "watchdog: {mode: automatic, safety_margin: 25}\n"));
    assert!(!r.has_errors(), "{}", r.render());
    assert!(
        r.render().contains("the watchdog will not be used"),
        "{}",
        r.render()
    );
    assert!(
        !check(&(GOOD.to_string() + "watchdog: {mode: off, safety_margin: 25}\n")).has_errors()
    );
}

#[test]
fn custom_bootstrap_and_replica_method_sections_are_checked() {
    let good = GOOD.replace(
        "  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10}\n",
        "  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10}\n  method: restore\n  restore:\n    command: /usr/local/bin/restore.sh\n    keep_existing_recovery_conf: false\n    recovery_conf: {restore_command: 'cp /a/%f %p', recovery_target_timeline: latest}\n    backup_id: 20\n  post_init: /usr/local/bin/post.sh\n",
    )
    .replace(
        "  data_dir: /data\n",
        "  data_dir: /data\n  create_replica_methods: [walg, basebackup]\n  walg: {command: walg.sh, no_leader: 'on', keep_data: false, threads: 4}\n",
    );
    let r = check(&good);
    assert!(r.problems.is_empty(), "{}", r.render());
    let (cfg, _) = Config::from_yaml_str(&good, &EnvMap::new()).unwrap();
    assert_eq!(
        cfg.bootstrap.post_bootstrap.as_deref(),
        Some("/usr/local/bin/post.sh")
    );

    let bad = good
        .replace(
            "keep_existing_recovery_conf: false",
            "keep_existing_recovery_conf: perhaps",
        )
        .replace("backup_id: 20", "backup_id: [1, 2]")
        .replace(
            "recovery_target_timeline: latest}",
            "recovery_target_timeline: {x: 1}}",
        )
        .replace("no_leader: 'on'", "no_leader: sometimes")
        .replace("post_init: /usr/local/bin/post.sh", "post_init: [a]");
    let r = check(&bad);
    assert_has(
        &r,
        "error: bootstrap.restore.keep_existing_recovery_conf: expected a boolean, got \"perhaps\"",
    );
    assert_has(
        &r,
        "error: bootstrap.restore.backup_id: expected a string, got a list",
    );
    assert_has(
        &r,
        "error: bootstrap.restore.recovery_conf.recovery_target_timeline: expected a string, got a mapping",
    );
    assert_has(
        &r,
        "error: postgresql.walg.no_leader: expected a boolean, got \"sometimes\"",
    );
    assert_has(
        &r,
        "error: bootstrap.post_bootstrap: expected a string, got a list",
    );
    let missing = good.replace("  method: restore\n", "  method: pitr\n");
    assert_has(
        &check(&missing),
        "error: bootstrap.method: method \"pitr\" needs a bootstrap.pitr.command",
    );
}

/// GOOD without its DCS section, plus `section`.
fn with_dcs(section: &str) -> String {
    GOOD.replace("etcd3: {host: 127.0.0.1:2379}\n", section)
}

fn assert_refused_at_start(yaml: &str, line: &str) {
    let e = Config::from_yaml_str(yaml, &EnvMap::new()).unwrap_err();
    assert!(
        e.0.render().lines().any(|l| l == line),
        "missing line {line:?} in:\n{}",
        e.0.render()
    );
}

#[test]
fn etcd_v2_section_is_refused_naming_etcd3() {
    let yaml = with_dcs("etcd: {host: 127.0.0.1:2379}\n");
    let line = "error: etcd: Patroni's etcd v2 API section is not supported: fullauto speaks \
                only the etcd v3 API, whose keyspace is separate (a cluster that Patroni runs \
                with `etcd:` is invisible to v3 clients); rename the section to etcd3 \
                (variables PATRONI_ETCD3_*) and switch every member of the cluster to etcd3 \
                together";
    assert_has(&check(&yaml), line);
    assert_refused_at_start(&yaml, line);
    // From the environment too.
    let env: EnvMap = [(
        "PATRONI_ETCD_HOSTS".to_string(),
        "127.0.0.1:2379".to_string(),
    )]
    .into_iter()
    .collect();
    let r = validate_str(&with_dcs(""), &env);
    assert!(
        r.find("etcd", "etcd v2 API section is not supported")
            .is_some(),
        "{}",
        r.render()
    );
}

#[test]
fn etcd3_keys_fullauto_cannot_honour_are_refused() {
    let srv = with_dcs("etcd3: {srv: example.com, srv_suffix: pg}\n");
    let r = check(&srv);
    let why = "DNS SRV discovery is not supported by fullauto; list the etcd endpoints in \
               etcd3.hosts (or etcd3.url)";
    assert_has(&r, &format!("error: etcd3.srv: {why}"));
    assert_has(&r, &format!("error: etcd3.srv_suffix: {why}"));
    assert_has(
        &r,
        "error: etcd3: one of host, hosts, url or proxy is required",
    );
    assert_refused_at_start(&srv, &format!("error: etcd3.srv: {why}"));
    let r = check(&with_dcs(
        "etcd3: {host: 127.0.0.1:2379, cert: /c.pem, password: x, retry_timeout: 5}\n",
    ));
    assert_has(
        &r,
        "error: etcd3.cert: set without etcd3.key: client TLS needs both (for a file holding \
         certificate and key, give it as both cert and key)",
    );
    assert_has(
        &r,
        "error: etcd3: password is set but username is not: set etcd3.username",
    );
    assert_has(
        &r,
        "warning: etcd3.retry_timeout: ignored (as by Patroni): the DCS retry timeout is the \
         dynamic setting retry_timeout (bootstrap.dcs.retry_timeout)",
    );
    let r = check(&with_dcs("etcd3: {url: 'unix:///run/etcd.sock'}\n"));
    assert_has(
        &r,
        "error: etcd3: etcd3 endpoint `unix:///run/etcd.sock`: scheme `unix` is not supported: use http or https",
    );
    let r = check(&with_dcs(
        "etcd3: {hots: [127.0.0.1:2379], host: 127.0.0.1:2379}\n",
    ));
    assert_has(
        &r,
        "warning: etcd3.hots: unknown key (ignored); did you mean host?",
    );
}

#[test]
fn etcd3_url_and_proxy_forms_are_honoured() {
    for section in [
        "etcd3: {url: 'http://127.0.0.1:2379'}\n",
        "etcd3: {proxy: 'http://127.0.0.1:2379', use_proxies: true}\n",
        "etcd3: {url: 'http://root:pw@127.0.0.1:2379'}\n",
    ] {
        let r = check(&with_dcs(section));
        assert!(r.problems.is_empty(), "{section}: {}", r.render());
    }
    let r = check(&with_dcs(
        "etcd3: {proxy: 'http://127.0.0.1:2379', url: 'http://127.0.0.2:2379'}\n",
    ));
    assert_has(
        &r,
        "warning: etcd3.url: ignored because etcd3.proxy is set (proxy wins, as in Patroni)",
    );
}

#[test]
fn zookeeper_tls_is_honoured_its_unsupported_keys_refused_and_ignored_without_use_ssl() {
    let yaml = with_dcs(
        "zookeeper: {hosts: '127.0.0.1:2281', use_ssl: true, cacert: /ca.pem, cert: /c.pem, \
         key: /k.pem, verify: true}\n",
    );
    let r = check(&yaml);
    assert!(r.problems.is_empty(), "{}", r.render());
    let password = with_dcs(
        "zookeeper: {hosts: '127.0.0.1:2281', use_ssl: true, cert: /c.pem, key: /k.pem, \
         key_password: pw}\n",
    );
    let line = "error: zookeeper.key_password: encrypted client keys are not supported; \
                decrypt the key (for example `openssl pkey -in key.pem -out plain-key.pem`), \
                point `key` at the result and remove key_password";
    assert_has(&check(&password), line);
    assert_refused_at_start(&password, line);
    let env: EnvMap = [
        (
            "PATRONI_ZOOKEEPER_HOSTS".to_string(),
            "127.0.0.1:2281".to_string(),
        ),
        ("PATRONI_ZOOKEEPER_USE_SSL".to_string(), "true".to_string()),
        ("PATRONI_ZOOKEEPER_VERIFY".to_string(), "false".to_string()),
    ]
    .into_iter()
    .collect();
    let r = validate_str(&with_dcs(""), &env);
    assert!(
        r.render().lines().any(|l| l.starts_with(
            "error: zookeeper.verify: `verify: false` (no server certificate check) is not \
             supported; give the CA"
        ) && l.ends_with("(set by PATRONI_ZOOKEEPER_VERIFY)")),
        "{}",
        r.render()
    );
    let r = check(&with_dcs(
        "zookeeper: {hosts: '127.0.0.1:2281', use_ssl: true, cert: /c.pem}\n",
    ));
    assert_has(
        &r,
        "error: zookeeper.cert: set without key: a client certificate needs its key (for a \
         file holding both, give it as cert and key)",
    );
    let r = check(&with_dcs(
        "zookeeper: {hosts: '127.0.0.1:2181', use_ssl: false, verify: true, cert: /c.pem}\n",
    ));
    assert!(!r.has_errors(), "{}", r.render());
    assert_has(
        &r,
        "warning: zookeeper.verify: ignored because zookeeper.use_ssl is not set (as in Patroni)",
    );
    assert_has(
        &r,
        "warning: zookeeper.cert: ignored because zookeeper.use_ssl is not set (as in Patroni)",
    );
    let r = check(&with_dcs(
        "zookeeper: {hosts: '127.0.0.1:2181', set_acls: {'CN=x': [FLY]}}\n",
    ));
    assert_has(
        &r,
        "error: zookeeper.set_acls: set_acls `CN=x`: unknown permission `FLY` (use READ, WRITE, CREATE, DELETE, ADMIN or ALL)",
    );
}

#[test]
fn consul_service_settings_are_checked() {
    let r = check(&with_dcs(
        "consul: {host: 127.0.0.1:8500, register_service: true, service_check_interval: often}\n",
    ));
    assert_has(
        &r,
        "error: consul.service_check_interval: consul.service_check_interval `often` is not a duration: use e.g. 5s, 500ms or 1m30s",
    );
    let r = check(&with_dcs(
        "consul: {host: 127.0.0.1:8500, service_tags: [a], service_check_interval: 5s}\n",
    ));
    assert!(!r.has_errors(), "{}", r.render());
    assert_has(
        &r,
        "warning: consul.service_tags: ignored because consul.register_service is not set",
    );
    let r = check(&with_dcs(
        "consul: {host: 127.0.0.1:8500, register_service: true, service_tags: [a], \
         service_check_interval: 10s, service_check_tls_server_name: pg}\n",
    ));
    assert!(r.problems.is_empty(), "{}", r.render());
}

#[test]
fn misspelt_keys_come_first_with_the_nearest_known_key() {
    let yaml = GOOD
        .replace(
            "connect_address: 127.0.0.1:8008",
            "conect_address: 127.0.0.1:8008",
        )
        .replace("loop_wait: 10,", "loop_wiat: 10,");
    let r = check(&yaml);
    let lines: Vec<String> = r.render().lines().map(str::to_string).collect();
    assert_eq!(
        lines[..3],
        [
            "warning: restapi.conect_address: unknown key (ignored); did you mean connect_address?",
            "warning: bootstrap.dcs.loop_wiat: unknown key (ignored); did you mean loop_wait?",
            "error: restapi.connect_address: missing",
        ],
        "{}",
        r.render()
    );
    // Nothing close: no guess.
    let r = check(&format!("{GOOD}zzzz: 1\n"));
    assert_has(&r, "warning: zzzz: unknown key (ignored)");
}

#[test]
fn a_timing_problem_says_which_values_were_defaults() {
    let yaml = GOOD.replace("{ttl: 30, loop_wait: 10, retry_timeout: 10}", "{ttl: 20}");
    assert_has(
        &check(&yaml),
        "warning: bootstrap.dcs.ttl: loop_wait + 2*retry_timeout (30) exceeds ttl (20): using \
         loop_wait 1 and retry_timeout 9.5 (as Patroni does); set them so the rule holds to \
         silence this (not set, so the default was used: loop_wait 10, retry_timeout 10)",
    );
}

#[test]
fn a_valid_file_is_reported_with_what_was_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yml");
    std::fs::write(&path, GOOD).unwrap();
    let (out, ok) = validate_config_output(&path);
    assert!(ok);
    assert_eq!(
        out,
        format!(
            "{}: the configuration is valid\n  cluster batman (namespace /service), member \
             postgresql0\n  DCS: etcd3 at http://127.0.0.1:2379\n  REST API: listen \
             127.0.0.1:8008, connect_address 127.0.0.1:8008\n  PostgreSQL: listen \
             127.0.0.1:5432, connect_address 127.0.0.1:5432, data_dir /data\n  \
             bootstrap.dcs timing: ttl 30, loop_wait 10, retry_timeout 10\n",
            path.display()
        )
    );
}

#[test]
fn config_dir_must_be_absolute() {
    let yaml = GOOD.replace(
        "  data_dir: /data\n",
        "  data_dir: /data\n  config_dir: etc/pg\n  custom_conf: base.conf\n",
    );
    let r = check(&yaml);
    assert_has(
        &r,
        "error: postgresql.config_dir: \"etc/pg\" must be an absolute path",
    );
    assert_eq!(r.problems.len(), 1, "{}", r.render());
    let fine = GOOD.replace(
        "  data_dir: /data\n",
        "  data_dir: /data\n  config_dir: /etc/pg\n",
    );
    assert!(
        check(&fine).problems.is_empty(),
        "{}",
        check(&fine).render()
    );
}

#[test]
fn role_specific_parameters_are_refused() {
    let yaml = GOOD
        .replace(
            "  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10}\n",
            "  dcs: {ttl: 30, loop_wait: 10, retry_timeout: 10, postgresql: {parameters_replica: {work_mem: 8MB}}}\n",
        )
        .replace(
            "  data_dir: /data\n",
            "  data_dir: /data\n  parameters_primary: {work_mem: 4MB}\n",
        );
    let r = check(&yaml);
    assert_has(
        &r,
        "error: postgresql.parameters_primary: role-specific parameters are not part of Patroni 4.1 and not supported; put the settings in parameters (the same on every role) and remove this key",
    );
    assert_has(
        &r,
        "error: bootstrap.dcs.postgresql.parameters_replica: role-specific parameters are not part of Patroni 4.1 and not supported; put the settings in parameters (the same on every role) and remove this key",
    );
    assert_eq!(r.problems.len(), 2, "{}", r.render());
}

/// `fullauto --validate-config FILE` itself: misspelt keys first with the nearest
/// known one, a timing warning naming the defaults it used, then what was checked;
/// exit 0. An error: exit 1 and no summary.
#[test]
fn the_binary_reports_what_it_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.yml");
    let yaml = GOOD
        .replace("{ttl: 30, loop_wait: 10, retry_timeout: 10}", "{ttl: 20}")
        .replace(
            "  data_dir: /data\n",
            "  data_dir: /data\n  paramters: {}\n",
        );
    std::fs::write(&path, yaml).unwrap();
    let run = |path: &std::path::Path| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_fullauto"));
        for (k, _) in std::env::vars() {
            if k.starts_with("PATRONI_") {
                cmd.env_remove(k);
            }
        }
        cmd.arg("--validate-config").arg(path).output().unwrap()
    };
    let out = run(&path);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines[0], "warning: postgresql.paramters: unknown key (ignored); did you mean parameters?",
        "{stdout}"
    );
    assert!(
        lines[1].starts_with(
            "warning: bootstrap.dcs.ttl: loop_wait + 2*retry_timeout (30) exceeds ttl (20)"
        ) && lines[1]
            .ends_with("(not set, so the default was used: loop_wait 10, retry_timeout 10)"),
        "{stdout}"
    );
    assert_eq!(
        lines[2],
        format!("{}: the configuration is valid", path.display()),
        "{stdout}"
    );
    assert!(
        stdout.contains("  bootstrap.dcs timing: ttl 20, loop_wait 1, retry_timeout 9.5\n"),
        "{stdout}"
    );
    std::fs::write(&path, GOOD.replace("  data_dir: /data\n", "")).unwrap();
    let out = run(&path);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("error: postgresql.data_dir: missing"),
        "{stdout}"
    );
    assert!(!stdout.contains("the configuration is valid"), "{stdout}");
}
