//! Health checks, status JSON and read-only endpoints, as primary and as replica.

mod api_support;

use agent_bin::api::{parse_size, ApiOptions};
use api_support::{cluster_keys, primary_status, replica_status, start, TestNode};
use ha_core::Role;
use reqwest::Method;
use std::time::Duration;

const PRIMARY_PATHS: &[&str] = &["/", "/primary", "/master", "/read-write", "/leader"];

#[tokio::test]
async fn primary_answers_leader_checks_and_refuses_replica_checks() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node, ApiOptions::default()).await;
    for p in PRIMARY_PATHS {
        assert_eq!(s.code(p).await, 200, "{p}");
    }
    for p in [
        "/read-only",
        "/health",
        "/read-only-sync",
        "/read-only-quorum",
    ] {
        assert_eq!(s.code(p).await, 200, "{p}");
    }
    for p in [
        "/replica",
        "/standby-leader",
        "/standby_leader",
        "/sync",
        "/synchronous",
        "/async",
        "/asynchronous",
        "/quorum",
        "/nonexistent",
    ] {
        assert_eq!(s.code(p).await, 503, "{p}");
    }
    let (code, body) = s.get_json("/primary").await;
    assert_eq!(code, 200);
    assert_eq!(body["state"], "running");
    assert_eq!(body["role"], "primary");
    assert_eq!(body["xlog"]["location"], 50_331_648);
    assert_eq!(body["timeline"], 2);
    assert_eq!(body["server_version"], 150004);
    assert_eq!(
        body["postmaster_start_time"],
        "2026-11-25 10:00:00.123456+00:00"
    );
    assert_eq!(body["dcs_last_seen"], 1_764_000_000);
    assert_eq!(body["patroni"]["name"], "pg0");
    assert_eq!(body["patroni"]["scope"], "batman");
    assert!(body.get("cluster_unlocked").is_none());
    // A 503 health answer still carries the status JSON.
    let (code, body) = s.get_json("/replica").await;
    assert_eq!((code, body["role"].as_str()), (503, Some("primary")));
}

#[tokio::test]
async fn primary_check_needs_lease_and_a_confirmed_primary() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    // Postgres runs as primary but the lease is gone: never 200.
    node.update_status(|st| st.holds_leader_lease = false);
    for p in PRIMARY_PATHS {
        assert_eq!(s.code(p).await, 503, "{p} without lease");
    }
    // Lease held but Postgres still in recovery (about to promote).
    node.update_status(|st| {
        st.holds_leader_lease = true;
        st.role = Role::Replica;
    });
    assert_eq!(s.code("/primary").await, 503);
    // Lease held, role unknown because the status query failed.
    node.update_status(|st| {
        st.role = Role::Primary;
        st.state = "unknown".into();
    });
    assert_eq!(s.code("/primary").await, 503);
    assert_eq!(s.code("/health").await, 503);
    node.update_status(|st| st.state = "running".into());
    assert_eq!(s.code("/primary").await, 200);
}

#[tokio::test]
async fn replica_checks_with_lag_tag_and_state_filters() {
    let mut st = replica_status("pg1");
    st.tags = serde_json::from_str(r#"{"zone":"a","nofailover":true}"#).unwrap();
    let node = TestNode::new(st, cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    for p in PRIMARY_PATHS {
        assert_eq!(s.code(p).await, 503, "{p}");
    }
    for p in [
        "/replica",
        "/read-only",
        "/async",
        "/asynchronous",
        "/health",
    ] {
        assert_eq!(s.code(p).await, 200, "{p}");
    }
    assert_eq!(s.code("/sync").await, 503);
    assert_eq!(s.code("/read-only-sync").await, 503);
    // Replay is 2048 bytes behind status.optime.
    assert_eq!(s.code("/replica?lag=1kB").await, 503);
    assert_eq!(s.code("/replica?lag=2048").await, 200);
    assert_eq!(s.code("/replica?lag=2047").await, 503);
    assert_eq!(s.code("/replica?lag=16kB").await, 200);
    assert_eq!(s.code("/async?lag=1MB").await, 200);
    assert_eq!(s.code("/async?lag=1kB").await, 503);
    assert_eq!(s.code("/replica?tag_zone=a").await, 200);
    assert_eq!(s.code("/replica?tag_zone=b").await, 503);
    assert_eq!(s.code("/replica?tag_rack=1").await, 503);
    assert_eq!(s.code("/replica?tag_nofailover=true").await, 200);
    assert_eq!(s.code("/replica?replication_state=streaming").await, 200);
    assert_eq!(
        s.code("/replica?replication_state=in%20archive%20recovery")
            .await,
        503
    );
    let (_, body) = s.get_json("/patroni").await;
    assert_eq!(body["role"], "replica");
    assert_eq!(body["replication_state"], "streaming");
    assert_eq!(body["xlog"]["received_location"], 50_331_648);
    assert_eq!(body["xlog"]["replayed_location"], 50_331_648 - 2048);
    assert_eq!(body["xlog"]["paused"], false);
    assert_eq!(body["tags"]["zone"], "a");
    // noloadbalance takes the node out of /replica.
    node.update_status(|st| st.tags.noloadbalance = Some(true));
    assert_eq!(s.code("/replica").await, 503);
    assert_eq!(s.code("/read-only").await, 503);
    node.update_status(|st| {
        st.tags.noloadbalance = Some(false);
        st.state = "starting".into();
    });
    assert_eq!(s.code("/replica").await, 503);
}

#[tokio::test]
async fn sync_and_quorum_standbys() {
    let mut keys = cluster_keys("pg0");
    keys.insert(
        "config".into(),
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":"on"}"#.into(),
    );
    keys.insert(
        "sync".into(),
        r#"{"leader":"pg0","sync_standby":"pg1"}"#.into(),
    );
    let node = TestNode::new(replica_status("pg1"), keys);
    let s = start(node.clone(), ApiOptions::default()).await;
    for p in ["/sync", "/synchronous", "/read-only-sync", "/replica"] {
        assert_eq!(s.code(p).await, 200, "{p}");
    }
    for p in ["/async", "/quorum", "/read-only-quorum"] {
        assert_eq!(s.code(p).await, 503, "{p}");
    }
    let (_, body) = s.get_json("/patroni").await;
    assert_eq!(body["sync_standby"], true);
    assert!(body.get("quorum_standby").is_none());
    let role_of_pg1 = |c: &serde_json::Value| {
        c["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == "pg1"))
            .map(|m| m["role"].clone())
    };
    let (_, c) = s.get_json("/cluster").await;
    assert_eq!(role_of_pg1(&c), Some(serde_json::json!("sync_standby")));
    node.set_key(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":"quorum"}"#,
    );
    assert_eq!(s.code("/quorum").await, 200);
    assert_eq!(s.code("/read-only-quorum").await, 200);
    assert_eq!(s.code("/sync").await, 503);
    assert_eq!(s.code("/async").await, 503);
    let (_, body) = s.get_json("/patroni").await;
    assert_eq!(body["quorum_standby"], true);
    let (_, c) = s.get_json("/cluster").await;
    assert_eq!(role_of_pg1(&c), Some(serde_json::json!("quorum_standby")));
    let l = r#"{scope="batman",name="pg1"}"#;
    let (_, text) = s.get("/metrics").await;
    assert!(
        text.contains(&format!("patroni_quorum_standby{l} 1")),
        "{text}"
    );
    assert!(
        text.contains(&format!("patroni_sync_standby{l} 0")),
        "{text}"
    );
    // Out of the voters (e.g. tagged nosync): an asynchronous standby.
    node.set_key(
        "sync",
        r#"{"leader":"pg0","sync_standby":"pg2","quorum":0}"#,
    );
    assert_eq!(s.code("/quorum").await, 503);
    assert_eq!(s.code("/async").await, 200);
    let (_, text) = s.get("/metrics").await;
    assert!(
        text.contains(&format!("patroni_quorum_standby{l} 0")),
        "{text}"
    );
    node.set_key(
        "sync",
        r#"{"leader":"pg0","sync_standby":"pg1","quorum":0}"#,
    );
    // Without a cached DCS view, the DCS-dependent checks answer 503.
    node.keys.lock().unwrap().clear();
    assert_eq!(s.code("/async").await, 503);
    assert_eq!(s.code("/replica").await, 200);
    let (_, body) = s.get_json("/patroni").await;
    assert_eq!(body["cluster_unlocked"], true);
}

#[tokio::test]
async fn standby_cluster_leader() {
    let mut st = replica_status("pg0");
    st.holds_leader_lease = true;
    st.is_standby_cluster = true;
    let node = TestNode::new(st, cluster_keys("pg0"));
    let s = start(node, ApiOptions::default()).await;
    for p in [
        "/standby-leader",
        "/standby_leader",
        "/leader",
        "/read-only",
    ] {
        assert_eq!(s.code(p).await, 200, "{p}");
    }
    for p in ["/primary", "/", "/read-write", "/replica"] {
        assert_eq!(s.code(p).await, 503, "{p}");
    }
    let (_, body) = s.get_json("/patroni").await;
    assert_eq!(body["role"], "standby_leader");
}

#[tokio::test]
async fn head_and_options_return_only_the_status() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node, ApiOptions::default()).await;
    for (method, path, want) in [
        (Method::HEAD, "/primary", 200),
        (Method::HEAD, "/replica", 503),
        (Method::OPTIONS, "/primary", 200),
        (Method::OPTIONS, "/replica", 503),
        (Method::OPTIONS, "/", 200),
        (Method::HEAD, "/health", 200),
    ] {
        let (code, body) = s.send(method.clone(), path, None, None).await;
        assert_eq!(code, want, "{method} {path}");
        assert!(body.is_empty(), "{method} {path} has a body");
    }
}

#[tokio::test]
async fn liveness_and_readiness() {
    let node = TestNode::new(replica_status("pg1"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    let (code, body) = s.get("/liveness").await;
    assert_eq!((code, body.as_str()), (200, ""));
    assert_eq!(s.code("/readiness").await, 200);
    assert_eq!(s.code("/readiness?lag=1kB").await, 503);
    // A replica may be late up to 2×ttl.
    node.update_status(|st| st.loop_late_by = Duration::from_secs(45));
    assert_eq!(s.code("/liveness").await, 200);
    node.update_status(|st| st.loop_late_by = Duration::from_secs(61));
    assert_eq!(s.code("/liveness").await, 503);
    node.update_status(|st| st.pause = true);
    assert_eq!(s.code("/liveness").await, 200);
    node.update_status(|st| st.replication_state = None);
    assert_eq!(s.code("/readiness").await, 503);
    // A leader is ready; its liveness limit is ttl.
    node.update_status(|st| {
        *st = primary_status("pg0");
        st.loop_late_by = Duration::from_secs(31);
    });
    assert_eq!(s.code("/readiness").await, 200);
    assert_eq!(s.code("/liveness").await, 503);
}

#[tokio::test]
async fn cluster_history_config_failsafe() {
    let mut keys = cluster_keys("pg0");
    keys.insert(
        "failover".into(),
        r#"{"leader":"pg0","member":"pg2","scheduled_at":"2030-01-01T00:00:00+00:00"}"#.into(),
    );
    let node = TestNode::new(primary_status("pg0"), keys);
    let s = start(node.clone(), ApiOptions::default()).await;
    let (code, c) = s.get_json("/cluster").await;
    assert_eq!(code, 200);
    assert_eq!(c["scope"], "batman");
    let m = c["members"].as_array().unwrap();
    assert_eq!(m.len(), 3);
    assert_eq!(m[0]["name"], "pg0");
    assert_eq!(m[0]["role"], "leader");
    assert_eq!(m[0]["state"], "running");
    assert_eq!(m[0]["host"], "127.0.0.1");
    assert_eq!(m[0]["port"], 5432);
    assert_eq!(m[0]["api_url"], "http://127.0.0.1:8008/patroni");
    // As Patroni 4.1: positions and lags for non-leaders only.
    assert!(m[0].get("lsn").is_none());
    assert!(m[0].get("lag").is_none());
    assert!(m[0].get("receive_lsn").is_none());
    assert_eq!(m[1]["role"], "replica");
    assert_eq!(m[1]["state"], "streaming");
    assert_eq!(m[1]["lag"], 1024);
    assert_eq!(m[1]["lsn"], "0/2FFFC00");
    assert_eq!(m[1]["receive_lsn"], "0/2FFFC00");
    assert_eq!(m[1]["receive_lag"], 1024);
    assert_eq!(m[1]["replay_lsn"], "0/2FFF800");
    assert_eq!(m[1]["replay_lag"], 2048);
    assert_eq!(m[2]["lag"], 2048);
    assert_eq!(m[2]["replay_lag"], 4096);
    assert_eq!(m[2]["timeline"], 2);
    // fullauto's replay lag in seconds, from the member key; none where a member
    // publishes none (as Patroni's members do).
    assert!(m[1].get("replay_lag_seconds").is_none());
    let pg1 = node.keys.lock().unwrap()["members/pg1"].clone();
    let pg1 = format!(
        r#"{},"replay_lag_seconds":0.25}}"#,
        pg1.strip_suffix('}').expect("a JSON object")
    );
    node.set_key("members/pg1", &pg1);
    let (_, c2) = s.get_json("/cluster").await;
    assert_eq!(c2["members"][1]["replay_lag_seconds"], 0.25);
    assert_eq!(c["scheduled_switchover"]["from"], "pg0");
    assert_eq!(c["scheduled_switchover"]["to"], "pg2");
    let (code, h) = s.get_json("/history").await;
    assert_eq!(code, 200);
    assert_eq!(h[0][0], 1);
    assert_eq!(h[0][4], "pg0");
    let (code, cfg) = s.get_json("/config").await;
    assert_eq!(code, 200);
    assert_eq!(cfg["ttl"], 30.0);
    assert_eq!(cfg["postgresql"]["use_pg_rewind"], true);
    assert_eq!(s.code("/failsafe").await, 502);
    node.set_key("failsafe", r#"{"pg0":"http://127.0.0.1:8008/patroni"}"#);
    let (code, f) = s.get_json("/failsafe").await;
    assert_eq!(
        (code, f["pg0"].as_str()),
        (200, Some("http://127.0.0.1:8008/patroni"))
    );
    // Added fields: the electability rule, for non-leaders only.
    assert!(m[0].get("electable").is_none());
    assert_eq!(m[1]["electable"], true);
    assert!(m[1].get("not_electable_because").is_none());
    node.set_key(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1500}"#,
    );
    let (_, c) = s.get_json("/cluster").await;
    let m = c["members"].as_array().unwrap();
    assert_eq!(m[1]["electable"], true);
    assert_eq!(m[2]["electable"], false);
    assert_eq!(
        m[2]["not_electable_because"],
        serde_json::json!([{"code": "lag", "reason": "lag 2048 bytes is over maximum_lag_on_failover (1500)"}])
    );
    node.remove_key("config");
    assert_eq!(s.code("/config").await, 502);
    // /cluster falls back to the cached view when the DCS read fails.
    *node.dcs_down.lock().unwrap() = true;
    assert_eq!(s.code("/cluster").await, 200);
    node.keys.lock().unwrap().clear();
    assert_eq!(s.code("/cluster").await, 502);
}

#[tokio::test]
async fn metrics_use_patroni_names_and_labels() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    let r = s
        .client
        .get(format!("{}/metrics", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let l = r#"{scope="batman",name="pg0"}"#;
    for line in [
        format!("patroni_version{l} 000100"),
        format!("patroni_postgres_running{l} 1"),
        format!("patroni_primary{l} 1"),
        format!("patroni_master{l} 1"),
        format!("patroni_replica{l} 0"),
        format!("patroni_postgres_state{l} 5"),
        format!("patroni_xlog_location{l} 50331648"),
        format!("patroni_postgres_server_version{l} 150004"),
        format!("patroni_postgres_timeline{l} 2"),
        format!("patroni_cluster_unlocked{l} 0"),
        format!("patroni_dcs_last_seen{l} 1764000000"),
        format!("patroni_pending_restart{l} 0"),
        format!("patroni_is_paused{l} 0"),
        format!("patroni_postmaster_start_time{l} 1795600800.123456"),
    ] {
        assert!(
            text.lines().any(|x| x == line),
            "missing {line:?} in\n{text}"
        );
    }
    for name in [
        "patroni_standby_leader",
        "patroni_sync_standby",
        "patroni_quorum_standby",
        "patroni_xlog_replayed_timestamp",
        "patroni_xlog_paused",
        "patroni_postgres_streaming",
        "patroni_postgres_in_archive_recovery",
        "patroni_failsafe_mode_is_active",
        "patroni_postgres_state",
    ] {
        assert!(text.contains(&format!("# TYPE {name} gauge")), "{name}");
    }
    // WAL positions only grow: Patroni types them as counters.
    for name in [
        "patroni_xlog_location",
        "patroni_xlog_received_location",
        "patroni_xlog_replayed_location",
    ] {
        assert!(text.contains(&format!("# TYPE {name} counter")), "{name}");
    }
    assert!(text.contains(
        "# Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, \
         4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, \
         9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed\n"
    ));
    node.update_status(|st| {
        *st = replica_status("pg0");
    });
    let (_, text) = s.get("/metrics").await;
    assert!(text.contains(&format!("patroni_primary{l} 0")));
    assert!(text.contains(&format!("patroni_replica{l} 1")));
    assert!(text.contains(&format!("patroni_xlog_replayed_location{l} 50329600")));
    assert!(text.contains(&format!("patroni_postgres_streaming{l} 1")));
    assert!(text.contains(&format!("patroni_master{l} 0")));
    // Postgres down: no server version, so no streaming/archive gauges (as Patroni).
    node.update_status(|st| {
        st.state = "stopped".into();
        st.server_version = None;
        st.replication_state = None;
    });
    let (_, text) = s.get("/metrics").await;
    assert!(text.contains(&format!("patroni_postgres_state{l} 12")));
    assert!(!text.contains("patroni_postgres_streaming"), "{text}");
    assert!(!text.contains("patroni_postgres_in_archive_recovery"));
}

#[test]
fn sizes_parse_like_postgres() {
    assert_eq!(parse_size("1024"), Some(1024));
    assert_eq!(parse_size("16kB"), Some(16 * 1024));
    assert_eq!(parse_size("64MB"), Some(64 << 20));
    assert_eq!(parse_size("1GB"), Some(1 << 30));
    assert_eq!(parse_size("abc"), None);
    assert_eq!(parse_size("5 parsecs"), None);
}

#[tokio::test]
async fn dashboard_pages_and_event_stream() {
    let node = TestNode::new(replica_status("pg1"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    for (path, kind, marker) in [
        ("/ui", "text/html", "<title>fullauto dashboard</title>"),
        ("/ui/", "text/html", "<title>fullauto dashboard</title>"),
        (
            "/ui/app.js",
            "text/javascript",
            "new EventSource(\"/ui/events\")",
        ),
        ("/ui/style.css", "text/css", ".member"),
    ] {
        let r = s
            .client
            .get(format!("{}{path}", s.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(r.text().await.unwrap().contains(marker), "{path}");
    }
    assert_eq!(s.code("/ui/nothing-here").await, 404);
    // The stream starts with the whole view: members with their electability.
    let mut r = s
        .client
        .get(format!("{}/ui/events", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/event-stream");
    let mut text = String::new();
    while !text.contains("\n\n") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), r.chunk())
            .await
            .expect("an event within 10 s")
            .unwrap()
            .expect("stream open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let data = text
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .expect("data line");
    assert!(text.starts_with("event: update\n"), "{text}");
    let update: serde_json::Value = serde_json::from_str(data).unwrap();
    let snap = &update["snapshot"];
    assert_eq!(snap["leader"], "pg0");
    assert_eq!(snap["served_by"], "pg1");
    assert_eq!(snap["timeline"], 2);
    let members = snap["cluster"]["members"].as_array().unwrap();
    assert_eq!(members.len(), 3);
    assert_eq!(members[1]["electable"], true);
    assert_eq!(update["changes"], serde_json::json!([]));
}
