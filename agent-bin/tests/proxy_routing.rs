//! `fullauto-proxy` routing from the DCS alone, on a real etcd and real PostgreSQL 15
//! servers. No agents run here: the test writes the member records and the leader
//! key itself (as Patroni's layout has them), so it decides exactly when the lease
//! "moves" while every server keeps running, and the proxy alone must keep clients
//! off the node that lost it.

mod support;

use dcs_etcd::testing::EtcdCluster;
use std::time::Duration;
use support::proxy::{server_port, via, ProxyProcess};
use support::{chown_postgres, free_port, wait_until, Standalone};

const WAIT: Duration = Duration::from_secs(30);

/// etcd, the servers, and the cluster prefix the test writes.
struct Fixture {
    etcd: EtcdCluster,
    scope: String,
    servers: Vec<Standalone>,
    dir: tempfile::TempDir,
}

impl Fixture {
    /// etcd and `n` running PostgreSQL servers.
    fn start(n: usize) -> Fixture {
        let etcd = EtcdCluster::start_single().expect("etcd");
        let dir = tempfile::Builder::new()
            .prefix("fullauto-proxy-")
            .tempdir()
            .expect("tempdir");
        let servers = (0..n)
            .map(|i| {
                let d = dir.path().join(format!("pg{i}"));
                std::fs::create_dir_all(&d).expect("dir");
                chown_postgres(&d);
                Standalone::start(&d, "")
            })
            .collect();
        Fixture {
            etcd,
            scope: format!("proxy{}", std::process::id()),
            servers,
            dir,
        }
    }

    fn key(&self, rel: &str) -> String {
        format!("/service/{}/{rel}", self.scope)
    }

    fn put(&mut self, rel: &str, value: &str) {
        let key = self.key(rel);
        self.etcd
            .etcdctl(&["put", &key, value])
            .expect("etcdctl put");
    }

    fn del(&mut self, rel: &str) {
        let key = self.key(rel);
        self.etcd.etcdctl(&["del", &key]).expect("etcdctl del");
    }

    /// Publishes member `name` on server `server` with `role`, `state` and `tags`.
    fn member(&mut self, name: &str, server: usize, role: &str, state: &str, tags: &str) {
        let port = self.servers[server].port;
        let value = format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:1/patroni","state":"{state}","role":"{role}","tags":{{{tags}}}}}"#
        );
        self.put(&format!("members/{name}"), &value);
    }

    fn port(&self, server: usize) -> u16 {
        self.servers[server].port
    }

    /// Starts `fullauto-proxy` with the given `proxy:` section lines, from a
    /// proxy-only config file (as on an application host: no agent sections).
    fn proxy(&self, name: &str, proxy_lines: &str) -> ProxyProcess {
        let config = self.dir.path().join(format!("{name}.yml"));
        let text = format!(
            "scope: {scope}\netcd3:\n  hosts: {hosts}\nproxy:\n{proxy_lines}",
            scope = self.scope,
            hosts = self.etcd.hosts()[0],
        );
        std::fs::write(&config, text).expect("config");
        ProxyProcess::start(&config, &self.dir.path().join(format!("{name}.log")))
    }
}

#[test]
fn read_write_clients_follow_the_leader_key_and_lose_a_node_that_loses_it() {
    let mut f = Fixture::start(2);
    f.member("a", 0, "primary", "running", "");
    f.member("b", 1, "replica", "running", "");
    f.put("leader", "a");
    let (rw, metrics) = (free_port(), free_port());
    let _proxy = f.proxy(
        "rw",
        &format!(
            "  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 0\n  metrics_listen: 127.0.0.1:{metrics}\n"
        ),
    );
    let (a, b) = (f.port(0), f.port(1));

    // New connections reach the member the leader key names (SSL is declined).
    let reached = wait_until(WAIT, || server_port(rw).ok());
    assert_eq!(reached, Some(a));

    // A session held open on a, through the proxy.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dsn = format!("host=127.0.0.1 port={rw} user=postgres dbname=postgres connect_timeout=10");
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(&dsn, tokio_postgres::NoTls))
        .expect("connect through the proxy");
    let connection = rt.spawn(connection);
    let port: i32 = rt
        .block_on(client.query_one("SELECT inet_server_port()", &[]))
        .expect("query")
        .get(0);
    assert_eq!(port, i32::from(a));

    // The lease moves to b while a keeps running: the held session is closed by the
    // proxy with a FATAL error, and new connections reach b.
    f.put("leader", "b");
    let ended = rt
        .block_on(async { tokio::time::timeout(WAIT, connection).await })
        .expect("the session on the old leader was not closed")
        .expect("connection task");
    let error = ended.expect_err("the session must end with an error");
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(db.code(), &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN);
    assert!(
        db.message().contains("a no longer holds the leader key"),
        "{}",
        db.message()
    );
    assert!(
        rt.block_on(client.query_one("SELECT 1", &[])).is_err(),
        "the closed session still answers"
    );
    assert_eq!(
        wait_until(WAIT, || server_port(rw).ok().filter(|p| *p == b)),
        Some(b)
    );
    // a itself is still up: only the proxy keeps clients off it.
    assert_eq!(f.servers[0].sql("SELECT 1"), "1");

    // No leader key: new read-write connections are refused with the reason.
    f.del("leader");
    let refused = wait_until(WAIT, || via(rw, "SELECT 1").err());
    let refused = refused.expect("connections were not refused without a leader");
    assert!(
        refused.contains("no member holds the leader key"),
        "{refused}"
    );

    // The metrics count the fenced session, the refusals and the sessions by target.
    let (status, body) = support::http("GET", metrics, "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200);
    let text = body.as_str().expect("text").to_string();
    for line in [
        "fullauto_proxy_sessions_fenced_total 1",
        "fullauto_proxy_switchover_pending 0",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    let count = |prefix: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        count("fullauto_proxy_connections_refused_total ") >= 1,
        "{text}"
    );
    assert!(
        count("fullauto_proxy_sessions_routed_total{listener=\"rw\",target=\"a\"} ") >= 2,
        "{text}"
    );
    assert!(
        count("fullauto_proxy_sessions_routed_total{listener=\"rw\",target=\"b\"} ") >= 1,
        "{text}"
    );
    assert!(!text.contains("fullauto_proxy_primary{"), "{text}");
}

#[test]
fn read_only_clients_go_round_robin_to_replicas_that_accept_load() {
    let mut f = Fixture::start(3);
    f.member("a", 0, "primary", "running", "");
    f.member("b", 1, "replica", "running", "");
    f.member("c", 2, "replica", "running", "");
    // Tagged noloadbalance: never chosen (it points at the primary's server, so a
    // read-only session there would show).
    f.member("d", 0, "replica", "running", r#""noloadbalance":true"#);
    f.put("leader", "a");
    let ro = free_port();
    let _proxy = f.proxy(
        "ro",
        &format!("  listen_ro: 127.0.0.1:{ro}\n  ro_fallback_to_primary: true\n"),
    );
    let (a, b, c) = (f.port(0), f.port(1), f.port(2));
    wait_until(WAIT, || server_port(ro).ok().filter(|p| *p == b || *p == c))
        .expect("read-only clients never reached a replica");
    let seen: Vec<u16> = (0..6)
        .map(|_| server_port(ro).expect("read-only"))
        .collect();
    for pair in seen.windows(2) {
        assert_ne!(pair[0], pair[1], "not round robin: {seen:?}");
    }
    assert!(
        seen.iter().all(|p| *p == b || *p == c),
        "a read-only client reached the primary or a noloadbalance member: {seen:?}"
    );

    // No replica left running: read-only clients fall back to the primary.
    f.member("b", 1, "replica", "stopped", "");
    f.member("c", 2, "replica", "stopped", "");
    assert_eq!(
        wait_until(WAIT, || server_port(ro).ok().filter(|p| *p == a)),
        Some(a),
        "read-only clients did not fall back to the primary"
    );
}

#[test]
fn new_read_write_connections_wait_for_a_primary_up_to_the_pause_deadline() {
    let mut f = Fixture::start(2);
    f.member("a", 0, "primary", "running", "");
    f.member("b", 1, "replica", "running", "");
    f.put("leader", "a");
    let rw = free_port();
    let proxy = f.proxy(
        "pause",
        &format!("  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 60\n"),
    );
    let (a, b) = (f.port(0), f.port(1));
    assert_eq!(wait_until(WAIT, || server_port(rw).ok()), Some(a));

    // A switchover is requested: a new connection waits instead of reaching a...
    f.put("failover", r#"{"leader":"a","member":"b"}"#);
    wait_until(WAIT, || proxy.logged("switchover requested").then_some(()))
        .expect("the proxy never saw the switchover request");
    let waiting = std::thread::spawn(move || server_port(rw));
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !waiting.is_finished(),
        "a new read-write connection went through during the switchover: {:?}",
        waiting.join()
    );
    // ...b takes the key and the request is done, but b's record does not say it
    // runs as primary yet: still waiting...
    f.put("leader", "b");
    f.del("failover");
    wait_until(WAIT, || {
        proxy
            .logged("b holds the leader key but does not run as primary yet")
            .then_some(())
    })
    .expect("the proxy never saw b take the key");
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        !waiting.is_finished(),
        "a new read-write connection went to b before it ran as primary: {:?}",
        waiting.join()
    );
    // ...and once it does, the connection lands on b.
    f.member("b", 1, "primary", "running", "");
    let landed = waiting.join().expect("client thread");
    assert_eq!(landed, Ok(b));

    // With no leader and a short deadline, a connection is refused once it passes.
    let rw2 = free_port();
    let _short = f.proxy(
        "short",
        &format!("  listen_rw: 127.0.0.1:{rw2}\n  pause_deadline: 0.5\n"),
    );
    assert_eq!(wait_until(WAIT, || server_port(rw2).ok()), Some(b));
    f.del("leader");
    let refused = wait_until(WAIT, || via(rw2, "SELECT 1").err()).expect("never refused");
    assert!(refused.contains("pause_deadline"), "{refused}");
}

#[test]
fn a_dcs_silent_for_longer_than_the_ttl_withdraws_the_primary() {
    let mut f = Fixture::start(1);
    f.member("a", 0, "primary", "running", "");
    f.put("leader", "a");
    f.put("config", r#"{"ttl":6,"loop_wait":1,"retry_timeout":2}"#);
    let rw = free_port();
    let _proxy = f.proxy(
        "silent",
        &format!("  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 0\n"),
    );
    let a = f.port(0);
    assert_eq!(wait_until(WAIT, || server_port(rw).ok()), Some(a));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dsn = format!("host=127.0.0.1 port={rw} user=postgres dbname=postgres connect_timeout=10");
    let (client, connection) = rt
        .block_on(tokio_postgres::connect(&dsn, tokio_postgres::NoTls))
        .expect("connect through the proxy");
    let connection = rt.spawn(connection);
    rt.block_on(client.query_one("SELECT 1", &[]))
        .expect("query");

    // etcd freezes: the proxy cannot know whether a still holds the lease once a
    // ttl has passed, so it closes the session and refuses new ones.
    f.etcd.pause(0);
    let ended = rt
        .block_on(async { tokio::time::timeout(WAIT, connection).await })
        .map(|joined| joined.expect("connection task"));
    let refused = via(rw, "SELECT 1");
    f.etcd.resume(0);
    let error = ended
        .expect("the session stayed open while the DCS was silent")
        .expect_err("the session must end with an error");
    let db = error.as_db_error().unwrap_or_else(|| panic!("{error}"));
    assert_eq!(db.code(), &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN);
    assert!(
        db.message().contains("the DCS has not answered"),
        "{}",
        db.message()
    );
    let refused = refused.expect_err("a new connection went through while the DCS was silent");
    assert!(refused.contains("the DCS has not answered"), "{refused}");

    // etcd answers again: routing resumes.
    assert_eq!(
        wait_until(WAIT, || server_port(rw).ok()),
        Some(a),
        "routing did not resume with the DCS"
    );
}

/// Runs `fullauto-proxy` on a config text until it exits: success and its output.
fn run_proxy_on(dir: &std::path::Path, text: &str) -> (bool, String) {
    let config = dir.join("refused.yml");
    std::fs::write(&config, text).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fullauto-proxy"))
        .arg(&config)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run fullauto-proxy");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

#[test]
fn the_proxy_refuses_a_config_without_a_listener_or_with_a_bad_proxy_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let dcs = "scope: x\netcd3:\n  hosts: 127.0.0.1:1\n";
    let (ok, out) = run_proxy_on(dir.path(), dcs);
    assert!(!ok && out.contains("has no proxy section"), "{out}");
    let (ok, out) = run_proxy_on(dir.path(), &format!("{dcs}proxy:\n  pause_deadline: 1\n"));
    assert!(!ok && out.contains("proxy.listen_rw"), "{out}");
    // An agent's config is checked as the agent checks it, proxy section included.
    let agent = format!(
        "{dcs}name: n\nrestapi:\n  listen: 127.0.0.1:1\n  connect_address: 127.0.0.1:1\n\
         postgresql:\n  listen: 127.0.0.1:1\n  connect_address: 127.0.0.1:1\n  data_dir: /x\n\
         \x20 authentication:\n    superuser: {{username: postgres}}\n\
         \x20   replication: {{username: postgres}}\n\
         proxy:\n  listen_rw: 127.0.0.1:1\n  pause_deadline: -1\n"
    );
    let (ok, out) = run_proxy_on(dir.path(), &agent);
    assert!(!ok && out.contains("proxy.pause_deadline"), "{out}");
}

/// Gives server `i` a login role `app` with password `pw` (stored as `encryption`
/// says) and makes TCP logins of `app` use `method`; `postgres` stays trusted.
fn app_role(f: &Fixture, i: usize, encryption: &str, method: &str) {
    let s = &f.servers[i];
    s.sql(&format!(
        "SET password_encryption = '{encryption}'; CREATE ROLE app LOGIN PASSWORD 'pw'"
    ));
    let hba = format!(
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all app 127.0.0.1/32 {method}\n"
    );
    std::fs::write(s.data_dir.join("pg_hba.conf"), hba).expect("pg_hba.conf");
    s.sql("SELECT pg_reload_conf()");
}

#[test]
fn sessions_log_in_through_the_proxy_and_move_to_the_new_primary_at_a_transaction_boundary() {
    let mut f = Fixture::start(2);
    // The proxy logs in to a with SCRAM and to b with md5, as app, with the password
    // it holds; clients log in to the proxy with SCRAM.
    app_role(&f, 0, "scram-sha-256", "scram-sha-256");
    app_role(&f, 1, "md5", "md5");
    f.member("a", 0, "primary", "running", "");
    f.member("b", 1, "replica", "running", "");
    f.put("leader", "a");
    let users = f.dir.path().join("users.txt");
    std::fs::write(&users, "# proxy users\n\"app\" \"pw\"\n").expect("auth file");
    let (rw, metrics) = (free_port(), free_port());
    let proxy = f.proxy(
        "move",
        &format!(
            "  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 30\n  metrics_listen: 127.0.0.1:{metrics}\n  auth_file: {}\n  auth_type: scram-sha-256\n",
            users.display()
        ),
    );
    let (a, b) = (f.port(0), f.port(1));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let connect = |password: &str| {
        let dsn = format!(
            "host=127.0.0.1 port={rw} user=app password={password} dbname=postgres connect_timeout=10"
        );
        rt.block_on(tokio_postgres::connect(&dsn, tokio_postgres::NoTls))
            .map(|(client, connection)| (client, rt.spawn(connection)))
    };
    wait_until(WAIT, || connect("pw").ok()).expect("no login through the proxy");

    // A wrong password is refused by the proxy itself.
    let e = match connect("wrong") {
        Ok(_) => panic!("a wrong password was let in"),
        Err(e) => e,
    };
    let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
    assert_eq!(
        db.code(),
        &tokio_postgres::error::SqlState::INVALID_PASSWORD
    );

    // An idle session with a changed parameter and a named prepared statement.
    let (idle, _c1) = connect("pw").expect("connect");
    let idle = std::sync::Arc::new(idle);
    rt.block_on(idle.simple_query("SET application_name = 'mover'"))
        .expect("set");
    let probe = rt
        .block_on(idle.prepare("SELECT inet_server_port(), current_setting('application_name')"))
        .expect("prepare");
    let where_ = |client: &tokio_postgres::Client| -> (i32, String) {
        let row = rt.block_on(client.query_one(&probe, &[])).expect("probe");
        (row.get(0), row.get(1))
    };
    assert_eq!(where_(&idle), (i32::from(a), "mover".to_string()));
    // A session inside a transaction, and one holding a temporary table.
    let (in_tx, c2) = connect("pw").expect("connect");
    rt.block_on(in_tx.simple_query("BEGIN; SELECT 1"))
        .expect("begin");
    let (temp, c3) = connect("pw").expect("connect");
    rt.block_on(temp.simple_query("CREATE TEMP TABLE scratch (x int)"))
        .expect("temp table");

    // A switchover is requested: the idle session's next query waits...
    f.put("failover", r#"{"leader":"a","member":"b"}"#);
    wait_until(WAIT, || proxy.logged("switchover requested").then_some(()))
        .expect("the proxy never saw the switchover request");
    let waiting = {
        let idle = idle.clone();
        rt.spawn(async move {
            idle.simple_query("SELECT inet_server_port()::text")
                .await
                .map(|m| {
                    m.iter().find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                        _ => None,
                    })
                })
        })
    };
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !waiting.is_finished(),
        "a query went through during the switchover"
    );
    // ...the lease moves to b, whose record does not say primary yet but whose
    // server answers that it is not in recovery: the waiting query runs on b without
    // waiting for the record, the session's prepared statement and parameter came
    // along, and the sessions that could not move were closed with the reason.
    f.member("a", 0, "replica", "running", "");
    f.put("leader", "b");
    f.del("failover");
    let landed = rt
        .block_on(async { tokio::time::timeout(WAIT, waiting).await })
        .expect("the held query never ran")
        .expect("task")
        .expect("the held query failed");
    assert_eq!(landed, Some(b.to_string()));
    assert!(
        proxy.logged("it answered that it left recovery before its record said so"),
        "{}",
        proxy.log()
    );
    f.member("b", 1, "primary", "running", "");
    assert_eq!(where_(&idle), (i32::from(b), "mover".to_string()));
    for (connection, why) in [(c2, "a transaction was open"), (c3, "temporary table")] {
        let ended = rt
            .block_on(async { tokio::time::timeout(WAIT, connection).await })
            .expect("an unmovable session stayed open")
            .expect("task");
        let e = ended.expect_err("closed without an error");
        let db = e.as_db_error().unwrap_or_else(|| panic!("{e}"));
        assert_eq!(db.code(), &tokio_postgres::error::SqlState::ADMIN_SHUTDOWN);
        assert!(db.message().contains(why), "{}", db.message());
    }
    // New sessions log in to b (md5 there) through the proxy.
    let (fresh, _c4) = connect("pw").expect("connect after the move");
    let port: i32 = rt
        .block_on(fresh.query_one("SELECT inet_server_port()", &[]))
        .expect("query")
        .get(0);
    assert_eq!(port, i32::from(b));

    let (status, body) = support::http("GET", metrics, "/metrics", None).expect("GET /metrics");
    assert_eq!(status, 200);
    let text = body.as_str().expect("text").to_string();
    for line in [
        "fullauto_proxy_sessions_moved_total 1",
        "fullauto_proxy_sessions_fenced_total 2",
        "fullauto_proxy_auth_failures_total 1",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}:\n{text}");
    }
    assert!(
        text.contains("fullauto_proxy_queries_total{target=\"b\"}"),
        "{text}"
    );
    // The held query's wait counts as a pause of at least the 2 s it was held before
    // the lease moved; the gauge names the new primary.
    let value = |prefix: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value("fullauto_proxy_pauses_total ") >= 1.0, "{text}");
    assert!(
        value("fullauto_proxy_pause_seconds_total ") >= 1.5,
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l == "fullauto_proxy_primary{member=\"b\"} 1"),
        "{text}"
    );
}

#[test]
fn clients_reach_the_proxy_over_tls_when_it_has_a_certificate() {
    let mut f = Fixture::start(1);
    f.member("a", 0, "primary", "running", "");
    f.put("leader", "a");
    let pki = support::tls::TestPki::new(f.dir.path());
    let (_, cert, key) = pki.issue("proxy");
    let rw = free_port();
    let _proxy = f.proxy(
        "tls",
        &format!(
            "  listen_rw: 127.0.0.1:{rw}\n  certfile: {}\n  keyfile: {}\n",
            cert.display(),
            key.display()
        ),
    );
    let psql = |mode: &str| {
        let out = std::process::Command::new("psql")
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c", "SELECT inet_server_port()"])
            .arg(format!(
                "host=127.0.0.1 port={rw} user=postgres dbname=postgres connect_timeout=10 sslmode={mode} sslrootcert={}",
                pki.ca().display()
            ))
            .output()
            .expect("psql");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (
            out.status.success(),
            text + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // libpq checks the proxy's certificate against the CA and the address.
    let a = f.port(0).to_string();
    let (ok, out) = wait_until(WAIT, || Some(psql("verify-full")).filter(|(ok, _)| *ok))
        .unwrap_or_else(|| psql("verify-full"));
    assert!(ok && out == a, "{out}");
    // Plain connections are still served.
    let (ok, out) = psql("disable");
    assert!(ok && out == a, "{out}");
}

#[test]
fn the_proxy_talks_tls_to_servers_as_server_tls_sslmode_says() {
    let mut f = Fixture::start(1);
    f.member("a", 0, "primary", "running", "");
    f.put("leader", "a");
    // The server takes TCP connections over TLS only, with a certificate for
    // 127.0.0.1 signed by the test CA.
    let pki = support::tls::TestPki::new(f.dir.path());
    let (_, cert, key) = pki.issue("server");
    let data = f.servers[0].data_dir.clone();
    for (from, to) in [(&cert, "server.crt"), (&key, "server.key")] {
        std::fs::copy(from, data.join(to)).expect("copy");
        chown_postgres(&data.join(to));
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join(to), std::fs::Permissions::from_mode(0o600))
            .expect("chmod");
    }
    // Database `certdb` needs a client certificate (CN = the user) signed by the CA.
    std::fs::copy(pki.ca(), data.join("ca.pem")).expect("copy");
    chown_postgres(&data.join("ca.pem"));
    std::fs::write(
        data.join("pg_hba.conf"),
        "local all all trust\nhostssl certdb all 127.0.0.1/32 cert\nhostssl all all 127.0.0.1/32 trust\n",
    )
    .expect("pg_hba.conf");
    let s = &f.servers[0];
    s.sql("ALTER SYSTEM SET ssl = on");
    s.sql("ALTER SYSTEM SET ssl_ca_file = 'ca.pem'");
    s.sql("CREATE DATABASE certdb");
    s.sql("SELECT pg_reload_conf()");
    // A second CA, which signed nothing the server shows.
    let other = tempfile::tempdir().expect("tempdir");
    let stranger = support::tls::TestPki::new(other.path());
    let (_, proxy_cert, proxy_key) = pki.issue("proxy");

    let users = f.dir.path().join("users.txt");
    std::fs::write(&users, "\"postgres\" \"pw\"\n").expect("auth file");
    let (full, moving, plain, wrong) = (free_port(), free_port(), free_port(), free_port());
    let (_, client_cert, client_key) = pki.issue("postgres");
    let with_cert = free_port();
    let _with_cert = f.proxy(
        "client-cert",
        &format!(
            "  listen_rw: 127.0.0.1:{with_cert}\n  server_tls_sslmode: verify-full\n  server_tls_ca_file: {}\n  server_tls_cert_file: {}\n  server_tls_key_file: {}\n",
            pki.ca().display(),
            client_cert.display(),
            client_key.display()
        ),
    );
    // Clients reach this one over TLS too; it checks the server's certificate and name.
    let _full = f.proxy(
        "verify-full",
        &format!(
            "  listen_rw: 127.0.0.1:{full}\n  certfile: {}\n  keyfile: {}\n  server_tls_sslmode: verify-full\n  server_tls_ca_file: {}\n",
            proxy_cert.display(),
            proxy_key.display(),
            pki.ca().display()
        ),
    );
    // This one logs in to the server itself (auth_file), encrypting without checks.
    let _moving = f.proxy(
        "require",
        &format!(
            "  listen_rw: 127.0.0.1:{moving}\n  auth_file: {}\n  server_tls_sslmode: require\n",
            users.display()
        ),
    );
    let _plain = f.proxy(
        "disable",
        &format!("  listen_rw: 127.0.0.1:{plain}\n  server_tls_sslmode: disable\n"),
    );
    let _wrong = f.proxy(
        "wrong-ca",
        &format!(
            "  listen_rw: 127.0.0.1:{wrong}\n  server_tls_sslmode: verify-ca\n  server_tls_ca_file: {}\n",
            stranger.ca().display()
        ),
    );
    // Whether the server sees the proxy's connection encrypted, through `port`.
    let ssl_in = |port: u16, sslmode: &str, db: &str| {
        let out = std::process::Command::new("psql")
            .args(["-XAtq", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .arg(format!(
                "host=127.0.0.1 port={port} user=postgres password=pw dbname={db} connect_timeout=10 sslmode={sslmode} sslrootcert={}",
                pki.ca().display()
            ))
            .output()
            .expect("psql");
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
        (
            out.status.success(),
            text + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let ssl = |port: u16, sslmode: &str| ssl_in(port, sslmode, "postgres");
    // TLS on both sides: client -> proxy (verify-full) and proxy -> server.
    let (ok, out) = wait_until(WAIT, || {
        Some(ssl(full, "verify-full")).filter(|(ok, _)| *ok)
    })
    .unwrap_or_else(|| ssl(full, "verify-full"));
    assert!(ok && out == "t", "{out}");
    let (ok, out) = wait_until(WAIT, || Some(ssl(moving, "disable")).filter(|(ok, _)| *ok))
        .unwrap_or_else(|| ssl(moving, "disable"));
    assert!(ok && out == "t", "{out}");
    // Without TLS the server refuses the proxy's connection, and the client hears why.
    let (ok, out) = wait_until(WAIT, || {
        Some(ssl(plain, "disable")).filter(|(_, out)| out.contains("pg_hba.conf"))
    })
    .unwrap_or_else(|| ssl(plain, "disable"));
    assert!(!ok && out.contains("no encryption"), "{out}");
    // A certificate from a CA the proxy does not trust: no connection.
    let (ok, out) = wait_until(WAIT, || {
        Some(ssl(wrong, "disable")).filter(|(_, out)| out.contains("TLS"))
    })
    .unwrap_or_else(|| ssl(wrong, "disable"));
    assert!(!ok && out.contains("TLS with the server failed"), "{out}");
    // The proxy presents its client certificate where the server asks for one; a
    // proxy without one is refused there.
    let (ok, out) = wait_until(WAIT, || {
        Some(ssl_in(with_cert, "disable", "certdb")).filter(|(ok, _)| *ok)
    })
    .unwrap_or_else(|| ssl_in(with_cert, "disable", "certdb"));
    assert!(ok && out == "t", "{out}");
    let (ok, out) = ssl_in(full, "verify-full", "certdb");
    assert!(!ok && out.contains("certificate"), "{out}");
}
