//! End to end on real etcd and PostgreSQL 15: `postgresql.parameters` of the dynamic
//! configuration reach every node at run time. A reloadable one is live after a
//! reload; a postmaster one shows `pending_restart` until the node restarts. Every
//! node keeps the configuration in `patroni.dynamic.json`, as Patroni does.

mod support;

use serde_json::json;
use std::time::Duration;
use support::{wait_until, Cluster, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn show(c: &Cluster, i: usize, name: &str) -> Option<String> {
    c.sql(i, &format!("SHOW {name}")).ok()
}

#[test]
fn dynamic_parameters_reload_everywhere_and_postmaster_ones_wait_for_a_restart() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "replica never streamed");

    let patched = c.api_patch(
        p,
        "/config",
        &json!({"postgresql": {"parameters": {"work_mem": "7MB"}}}),
    );
    assert!(patched.is_some_and(|(s, _)| s == 200));
    for i in [p, r] {
        let live = wait_until(Duration::from_secs(30), || {
            (show(&c, i, "work_mem").as_deref() == Some("7MB")).then_some(())
        });
        assert!(
            live.is_some(),
            "work_mem on {} is {:?}",
            c.nodes[i].name,
            show(&c, i, "work_mem")
        );
    }

    let patched = c.api_patch(
        p,
        "/config",
        &json!({"postgresql": {"parameters": {"max_connections": 120}}}),
    );
    assert!(patched.is_some_and(|(s, _)| s == 200));
    for i in [p, r] {
        let pending = wait_until(Duration::from_secs(30), || {
            c.api(i, "/patroni")
                .filter(|(_, v)| v["pending_restart"] == true)
        });
        let (_, status) =
            pending.unwrap_or_else(|| panic!("{} shows no pending restart", c.nodes[i].name));
        // Patroni 4's reason: the running value and the configured one.
        let why = json!({"max_connections": {"old_value": "100", "new_value": "120"}});
        assert_eq!(status["pending_restart_reason"], why, "{status}");
        assert_eq!(show(&c, i, "max_connections").as_deref(), Some("100"));
        // The same in the member key, which patronictl and fullautoctl read.
        let name = c.nodes[i].name.clone();
        let member = wait_until(Duration::from_secs(30), || {
            let v: serde_json::Value =
                serde_json::from_str(&c.key(&format!("members/{name}"))?).ok()?;
            (v["pending_restart_reason"] == why).then_some(v)
        });
        assert!(member.is_some(), "member key of {name} has no reason");
        // Every node keeps the cluster's last dynamic configuration where Patroni
        // keeps it (tools written for Patroni read and delete this file).
        let cached = wait_until(Duration::from_secs(30), || {
            let text =
                std::fs::read_to_string(c.nodes[i].data_dir.join("patroni.dynamic.json")).ok()?;
            let v: serde_json::Value = serde_json::from_str(&text).ok()?;
            (v["postgresql"]["parameters"]["max_connections"] == 120).then_some(v)
        });
        assert!(
            cached.is_some(),
            "{} has no patroni.dynamic.json with the new configuration",
            c.nodes[i].name
        );
    }
    let (ok, out) = c.ctl(&["list", "-f", "json"]);
    assert!(ok, "{out}");
    let rows: serde_json::Value = serde_json::from_str(&out).expect("list json");
    for row in rows.as_array().expect("rows") {
        assert_eq!(row["Pending restart"], "*", "{out}");
        assert_eq!(
            row["Pending restart reason"], "max_connections: 100->120",
            "{out}"
        );
    }
    // A replica restarts first, as an operator would.
    for i in [r, p] {
        let restarted = c.api_post(i, "/restart", &json!({}));
        assert!(
            restarted.as_ref().is_some_and(|(s, _)| *s == 200),
            "restart of {}: {restarted:?}",
            c.nodes[i].name
        );
        let live = wait_until(Duration::from_secs(60), || {
            (show(&c, i, "max_connections").as_deref() == Some("120")).then_some(())
        });
        assert!(
            live.is_some(),
            "max_connections not live on {}",
            c.nodes[i].name
        );
        let cleared = wait_until(Duration::from_secs(30), || {
            c.api(i, "/patroni")
                .filter(|(_, v)| v.get("pending_restart").is_none_or(|f| f != true))
        });
        assert!(
            cleared.is_some(),
            "{} still shows a pending restart",
            c.nodes[i].name
        );
    }
}
