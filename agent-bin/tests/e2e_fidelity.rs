//! What a Patroni user sees of a running cluster on real etcd and PostgreSQL 15:
//! `GET /patroni`'s `replication[]` rows and `postmaster_start_time` in Patroni's
//! format, the version fields Patroni's tools read, and the member record a clean
//! shutdown (SIGTERM) leaves behind: `state: stopped`, as Patroni writes it.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::{wait_until, Cluster, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// The member record of `name` as stored in the DCS.
fn member(c: &mut Cluster, name: &str) -> Option<Value> {
    serde_json::from_str(&c.key(&format!("members/{name}"))?).ok()
}

/// SIGTERM of node `i`'s agent; the member record it leaves (read while the agent
/// shuts down and before its lease runs out).
fn stop_cleanly(c: &mut Cluster, i: usize) -> Value {
    let name = c.nodes[i].name.clone();
    c.signal_agent(i, libc::SIGTERM);
    let stopped = wait_until(Duration::from_secs(60), || {
        member(c, &name).filter(|m| m["state"] == "stopped")
    });
    assert!(
        c.wait_agent_exit(i, Duration::from_secs(60)),
        "agent of {name} did not exit on SIGTERM"
    );
    stopped.unwrap_or_else(|| panic!("{name}'s member record never said stopped\n{}", c.logs()))
}

#[test]
fn status_fields_look_like_patronis_and_a_clean_shutdown_leaves_stopped_members() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(
        c.wait_replica(r, BOOT),
        "{} never streamed",
        c.nodes[r].name
    );
    let (primary, replica) = (c.nodes[p].name.clone(), c.nodes[r].name.clone());

    // replication[]: the real user, the address as Postgres prints an inet, priority.
    let rows = wait_until(Duration::from_secs(30), || {
        let (_, status) = c.api(p, "/patroni")?;
        let rows = status["replication"].as_array()?.clone();
        (rows.len() == 1 && rows[0]["state"] == "streaming").then_some(rows)
    })
    .unwrap_or_else(|| panic!("no replication row on the primary\n{}", c.logs()));
    assert_eq!(
        rows[0],
        json!({
            "usename": "postgres",
            "application_name": replica,
            "client_addr": "127.0.0.1",
            "state": "streaming",
            "sync_state": "async",
            "sync_priority": 0,
        })
    );

    // postmaster_start_time as Patroni prints psycopg's datetime.
    let (_, status) = c.api(p, "/patroni").expect("/patroni");
    let started = c
        .sql(p, "SELECT pg_postmaster_start_time()::text")
        .expect("start time");
    assert_eq!(
        status["postmaster_start_time"],
        agent_bin::api::patroni_timestamp(&started)
    );
    let shown = status["postmaster_start_time"].as_str().expect("a string");
    assert!(
        chrono::DateTime::parse_from_str(shown, "%Y-%m-%d %H:%M:%S%.f%:z").is_ok(),
        "{shown}"
    );

    // Versions: Patroni's tools read `version`; fullauto's own sits next to it.
    assert_eq!(status["patroni"]["version"], ha_core::PATRONI_VERSION);
    assert_eq!(
        status["patroni"]["fullauto_version"],
        env!("CARGO_PKG_VERSION")
    );
    let record = wait_until(Duration::from_secs(10), || {
        member(&mut c, &primary).filter(|m| m.get("fullauto_version").is_some())
    })
    .expect("member record with fullauto_version");
    assert_eq!(record["version"], ha_core::PATRONI_VERSION);
    assert_eq!(record["fullauto_version"], env!("CARGO_PKG_VERSION"));

    // query: the leader by default, as a table of Python-like values; SQL errors
    // are a row, not a failure; -r replica checks pg_is_in_recovery() itself.
    let scope = c.scope.clone();
    let (ok, out) = c.ctl(&[
        "query",
        &scope,
        "-U",
        "postgres",
        "-c",
        "SELECT 1 AS one, NULL::int AS n, pg_is_in_recovery() AS b",
    ]);
    assert!(ok, "{out}");
    assert_eq!(out, "one\tn\tb\n1\tNone\tFalse\n");
    let (ok, out) = c.ctl(&[
        "query",
        &scope,
        "-U",
        "postgres",
        "-r",
        "replica",
        "--format",
        "json",
        "-c",
        "SELECT pg_is_in_recovery() AS r, current_setting('port')::int AS port",
    ]);
    assert!(ok, "{out}");
    assert_eq!(
        out,
        format!("[{{\"r\": true, \"port\": {}}}]\n", c.nodes[r].pg_port)
    );
    let (ok, out) = c.ctl(&[
        "query",
        &scope,
        "-U",
        "postgres",
        "-m",
        &replica,
        "-d",
        "template1",
        "-c",
        "SELECT * FROM no_such_table",
    ]);
    assert!(ok, "{out}");
    assert!(out.ends_with("\tERROR, SQLSTATE: 42P01\n"), "{out}");
    let (ok, out) = c.ctl(&["query", &scope, "-U", "postgres"]);
    assert!(
        !ok && out.contains("You need to specify either --command or --file"),
        "{out}"
    );

    // A clean shutdown rewrites the member record as stopped, keeping the role and
    // dropping the WAL positions; the leader also gives up the leader key.
    let stopped = stop_cleanly(&mut c, r);
    assert_eq!(stopped["role"], "replica", "{stopped}");
    for gone in ["xlog_location", "receive_lsn", "replay_lsn", "timeline"] {
        assert!(stopped.get(gone).is_none(), "{gone} in {stopped}");
    }
    assert!(stopped["api_url"].is_string() && stopped["conn_url"].is_string());
    let stopped = stop_cleanly(&mut c, p);
    assert_eq!(stopped["role"], "primary", "{stopped}");
    assert!(stopped.get("xlog_location").is_none(), "{stopped}");
    assert_eq!(c.leader(), None, "the leader key outlived a clean shutdown");
}
