//! `PATRONI_*` environment overrides, fed through an explicit map (no process env).

use agent_bin::config::{parse_list, Config, DcsConfig, EnvMap, VerifyClient};

const NO_DCS: &str = r#"
scope: batman
name: postgresql0
restapi: {listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {username: postgres, password: a}
    replication: {username: replicator, password: b}
"#;

fn env(pairs: &[(&str, &str)]) -> EnvMap {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn dcs_section_can_come_from_the_environment_alone() {
    assert!(Config::from_yaml_str(NO_DCS, &EnvMap::new()).is_err());
    let (c, _) = Config::from_yaml_str(
        NO_DCS,
        &env(&[("PATRONI_ETCD3_HOSTS", "127.0.0.1:2379,127.0.0.2:2379")]),
    )
    .unwrap();
    let DcsConfig::Etcd3(e) = &c.dcs else {
        panic!()
    };
    assert_eq!(e.hosts, vec!["127.0.0.1:2379", "127.0.0.2:2379"]);

    let (c, _) = Config::from_yaml_str(
        NO_DCS,
        &env(&[(
            "PATRONI_ETCD3_HOSTS",
            "['127.0.0.1:2379', '127.0.0.3:2379']",
        )]),
    )
    .unwrap();
    let DcsConfig::Etcd3(e) = &c.dcs else {
        panic!()
    };
    assert_eq!(e.hosts, vec!["127.0.0.1:2379", "127.0.0.3:2379"]);

    let (c, _) = Config::from_yaml_str(
        NO_DCS,
        &env(&[(
            "PATRONI_ZOOKEEPER_HOSTS",
            "- 127.0.0.1:2181\n- 127.0.0.2:2181",
        )]),
    )
    .unwrap();
    let DcsConfig::Zookeeper(z) = &c.dcs else {
        panic!()
    };
    assert_eq!(z.hosts, vec!["127.0.0.1:2181", "127.0.0.2:2181"]);

    let (c, _) = Config::from_yaml_str(
        NO_DCS,
        &env(&[
            ("PATRONI_CONSUL_HOST", "127.0.0.1:8500"),
            ("PATRONI_CONSUL_TOKEN", "tok"),
            ("PATRONI_CONSUL_VERIFY", "false"),
            ("PATRONI_CONSUL_DC", "dc2"),
            ("PATRONI_CONSUL_CONSISTENCY", "consistent"),
            ("PATRONI_CONSUL_REGISTER_SERVICE", "true"),
            ("PATRONI_CONSUL_SERVICE_TAGS", "a,b"),
        ]),
    )
    .unwrap();
    let DcsConfig::Consul(cs) = &c.dcs else {
        panic!()
    };
    assert_eq!(cs.base_url().unwrap(), "http://127.0.0.1:8500");
    assert_eq!(cs.token.as_deref(), Some("tok"));
    assert_eq!(cs.verify, Some(false));
    assert_eq!(cs.dc.as_deref(), Some("dc2"));
    assert!(cs.register_service);
    assert_eq!(cs.service_tags, vec!["a", "b"]);
}

#[test]
fn etcd3_variables_all_apply() {
    let (c, _) = Config::from_yaml_str(
        NO_DCS,
        &env(&[
            ("PATRONI_ETCD3_HOST", "127.0.0.1:2379"),
            ("PATRONI_ETCD3_PROTOCOL", "https"),
            ("PATRONI_ETCD3_USERNAME", "root"),
            ("PATRONI_ETCD3_PASSWORD", "pw"),
            ("PATRONI_ETCD3_CACERT", "/ca"),
            ("PATRONI_ETCD3_CERT", "/cert"),
            ("PATRONI_ETCD3_KEY", "/key"),
        ]),
    )
    .unwrap();
    let DcsConfig::Etcd3(e) = &c.dcs else {
        panic!()
    };
    assert_eq!(e.endpoints().unwrap(), vec!["https://127.0.0.1:2379"]);
    assert_eq!(e.username.as_deref(), Some("root"));
    assert_eq!(e.password.as_deref(), Some("pw"));
    assert_eq!(
        (e.cacert.as_deref(), e.cert.as_deref(), e.key.as_deref()),
        (Some("/ca"), Some("/cert"), Some("/key"))
    );
    // `etcd` (Patroni's etcd v2 section) is refused, naming the variable.
    let e = Config::from_yaml_str(
        NO_DCS,
        &env(&[("PATRONI_ETCD_URL", "http://127.0.0.1:2379")]),
    )
    .unwrap_err();
    let p = e.0.errors().next().unwrap();
    assert_eq!(p.path, "etcd");
    assert!(
        p.message
            .starts_with("Patroni's etcd v2 API section is not supported"),
        "{p}"
    );
}

#[test]
fn environment_wins_over_the_file() {
    let file = format!("{NO_DCS}etcd3: {{host: 127.0.0.1:2379}}\nlog: {{level: INFO}}\n");
    let e = env(&[
        ("PATRONI_NAME", "pg9"),
        ("PATRONI_SCOPE", "robin"),
        ("PATRONI_NAMESPACE", "/ns"),
        ("PATRONI_LOG_LEVEL", "DEBUG"),
        ("PATRONI_LOG_DIR", "/var/log/x"),
        ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:9008"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "127.0.0.2:9008"),
        ("PATRONI_RESTAPI_USERNAME", "admin"),
        ("PATRONI_RESTAPI_PASSWORD", "secret"),
        ("PATRONI_RESTAPI_CERTFILE", "/c.pem"),
        ("PATRONI_RESTAPI_KEYFILE", "/k.pem"),
        ("PATRONI_RESTAPI_CAFILE", "/ca.pem"),
        ("PATRONI_RESTAPI_VERIFY_CLIENT", "optional"),
        ("PATRONI_RESTAPI_ALLOWLIST", "127.0.0.1,10.0.0.0/8"),
        ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "on"),
        ("PATRONI_RESTAPI_HTTP_EXTRA_HEADERS", "X-A: 1, X-B: two"),
        ("PATRONI_CTL_USERNAME", "ctl"),
        ("PATRONI_CTL_PASSWORD", "ctlpw"),
        ("PATRONI_CTL_INSECURE", "true"),
        ("PATRONI_CTL_CACERT", "/ctl-ca"),
        ("PATRONI_CTL_CERTFILE", "/ctl-c"),
        ("PATRONI_CTL_KEYFILE", "/ctl-k"),
        ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:6432"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "127.0.0.9:6432"),
        ("PATRONI_POSTGRESQL_PROXY_ADDRESS", "127.0.0.9:7432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/pgdata"),
        ("PATRONI_POSTGRESQL_CONFIG_DIR", "/pgconf"),
        ("PATRONI_POSTGRESQL_BIN_DIR", "/usr/lib/postgresql/15/bin"),
        ("PATRONI_POSTGRESQL_BIN_PG_CTL", "pg_ctl15"),
        ("PATRONI_POSTGRESQL_PGPASS", "/tmp/pgpass"),
        ("PATRONI_REPLICATION_USERNAME", "rep2"),
        ("PATRONI_REPLICATION_PASSWORD", "rp2"),
        ("PATRONI_REPLICATION_SSLMODE", "verify-ca"),
        ("PATRONI_REPLICATION_SSLROOTCERT", "/root.crt"),
        ("PATRONI_SUPERUSER_USERNAME", "su2"),
        ("PATRONI_SUPERUSER_PASSWORD", "sp2"),
        ("PATRONI_SUPERUSER_SSLCERT", "/su.crt"),
        ("PATRONI_SUPERUSER_SSLKEY", "/su.key"),
        ("PATRONI_SUPERUSER_GSSENCMODE", "disable"),
        ("PATRONI_SUPERUSER_CHANNEL_BINDING", "prefer"),
        ("PATRONI_REWIND_USERNAME", "rw"),
        ("PATRONI_REWIND_PASSWORD", "rwp"),
        ("UNRELATED", "x"),
    ]);
    let (c, warnings) = Config::from_yaml_str(&file, &e).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        (c.name.as_str(), c.scope.as_str(), c.namespace.as_str()),
        ("pg9", "robin", "/ns")
    );
    assert_eq!(c.log.level, agent_bin::config::LogLevel::Debug);
    assert_eq!(c.log.dir.as_deref(), Some("/var/log/x"));
    let r = &c.restapi;
    assert_eq!(r.listen, "127.0.0.1:9008");
    assert_eq!(r.connect_address, "127.0.0.2:9008");
    assert_eq!(r.authentication.as_ref().unwrap().username, "admin");
    assert_eq!(r.authentication.as_ref().unwrap().password, "secret");
    assert_eq!(r.certfile.as_deref(), Some("/c.pem"));
    assert_eq!(r.verify_client, VerifyClient::Optional);
    assert_eq!(r.allowlist, vec!["127.0.0.1", "10.0.0.0/8"]);
    assert!(r.allowlist_include_members);
    assert_eq!(r.http_extra_headers["X-B"], "two");
    assert_eq!(c.ctl.authentication.as_ref().unwrap().password, "ctlpw");
    assert!(c.ctl.insecure);
    assert_eq!(c.ctl.keyfile.as_deref(), Some("/ctl-k"));
    let pg = &c.postgresql;
    assert_eq!(pg.listen, "127.0.0.1:6432");
    assert_eq!(pg.connect_address, "127.0.0.9:6432");
    assert_eq!(pg.proxy_address.as_deref(), Some("127.0.0.9:7432"));
    assert_eq!(pg.data_dir, "/pgdata");
    assert_eq!(pg.config_dir.as_deref(), Some("/pgconf"));
    assert_eq!(pg.bin_dir.as_deref(), Some("/usr/lib/postgresql/15/bin"));
    assert_eq!(pg.bin_name.pg_ctl.as_deref(), Some("pg_ctl15"));
    assert_eq!(pg.pgpass.as_deref(), Some("/tmp/pgpass"));
    let a = &pg.authentication;
    assert_eq!(a.replication.username, "rep2");
    assert_eq!(a.replication.password.as_deref(), Some("rp2"));
    assert_eq!(a.replication.sslmode.map(|m| m.as_str()), Some("verify-ca"));
    assert_eq!(a.replication.sslrootcert.as_deref(), Some("/root.crt"));
    assert_eq!(a.superuser.username, "su2");
    assert_eq!(a.superuser.sslkey.as_deref(), Some("/su.key"));
    assert_eq!(a.superuser.gssencmode.map(|m| m.as_str()), Some("disable"));
    assert_eq!(
        a.superuser.channel_binding.map(|m| m.as_str()),
        Some("prefer")
    );
    assert_eq!(a.rewind.as_ref().unwrap().password.as_deref(), Some("rwp"));
}

#[test]
fn patroni_configuration_replaces_file_and_other_variables() {
    let whole =
        format!("{NO_DCS}etcd3: {{host: 127.0.0.1:2379}}\n").replace("postgresql0", "fromvar");
    let (c, _) = Config::from_yaml_str(
        "scope: ignored\n",
        &env(&[("PATRONI_CONFIGURATION", &whole), ("PATRONI_NAME", "other")]),
    )
    .unwrap();
    assert_eq!(c.name, "fromvar");
    assert_eq!(c.scope, "batman");
}

#[test]
fn bad_environment_values_name_their_variable() {
    let err = Config::from_yaml_str(
        NO_DCS,
        &env(&[
            ("PATRONI_CONSUL_HOST", "127.0.0.1"),
            ("PATRONI_CONSUL_PORT", "eighty"),
            ("PATRONI_RESTAPI_VERIFY_CLIENT", "sometimes"),
        ]),
    )
    .unwrap_err();
    let text = err.0.render();
    assert!(
        text.contains(
            "error: consul.port: expected an integer, got \"eighty\" (set by PATRONI_CONSUL_PORT)"
        ),
        "{text}"
    );
    assert!(
        text.contains("(set by PATRONI_RESTAPI_VERIFY_CLIENT)"),
        "{text}"
    );
}

#[test]
fn unsupported_sections_from_env_are_refused_naming_the_variable() {
    for (var, path) in [
        ("PATRONI_KUBERNETES_NAMESPACE", "kubernetes"),
        ("PATRONI_CITUS_GROUP", "citus"),
        ("PATRONI_THREAD_POOL_SIZE", "thread_pool_size"),
    ] {
        let e = Config::from_yaml_str(
            NO_DCS,
            &env(&[("PATRONI_ETCD3_HOST", "127.0.0.1:2379"), (var, "1")]),
        )
        .unwrap_err();
        let p = e.0.errors().next().unwrap();
        assert_eq!(p.path, path, "{var}: {p}");
        assert!(p.message.contains(var), "{var}: {p}");
    }
}

#[test]
fn list_formats() {
    assert_eq!(parse_list("a:1, b:2"), serde_json::json!(["a:1", "b:2"]));
    assert_eq!(
        parse_list("[a:1, 'b:2']"),
        serde_json::json!(["a:1", "b:2"])
    );
    assert_eq!(parse_list("- a\n- b"), serde_json::json!(["a", "b"]));
    // Patroni's documented form for PATRONI_ZOOKEEPER_HOSTS.
    assert_eq!(
        parse_list("'zk1:2181','zk2:2181'"),
        serde_json::json!(["zk1:2181", "zk2:2181"])
    );
}
