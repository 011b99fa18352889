//! Unsafe endpoints: access control, config PATCH/PUT, restart, reinitialize, reload.

mod api_support;

use agent_bin::api::{
    merge_config_patch, postgres_version_to_int, ApiOptions, ConfigWrite, MemberCallError,
    RestartOutcome,
};
use agent_bin::config::BasicAuth;
use api_support::{
    cluster_keys, primary_status, replica_status, start, start_with_control, TestNode,
};
use reqwest::Method;
use serde_json::{json, Value};

fn auth_opts() -> ApiOptions {
    ApiOptions {
        auth: Some(BasicAuth {
            username: "admin".into(),
            password: "s3cret".into(),
        }),
        ..ApiOptions::default()
    }
}

#[tokio::test]
async fn unsafe_requests_need_basic_auth_when_configured() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node.clone(), auth_opts()).await;
    let r = s
        .client
        .post(format!("{}/reload", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["www-authenticate"], "Basic realm=\"Patroni\"");
    assert_eq!(r.text().await.unwrap(), "no auth header received");
    // The dashboard asks for credentials itself: no browser login box over it.
    let r = s
        .client
        .post(format!("{}/reload", s.base))
        .header("X-Requested-With", "fullauto-ui")
        .basic_auth("admin", Some("wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().get("www-authenticate").is_none());
    let (code, body) = s
        .send(Method::POST, "/reload", None, Some(("admin", "wrong")))
        .await;
    assert_eq!((code, body.as_str()), (401, "not authenticated"));
    assert_eq!(*node.reloads.lock().unwrap(), 0);
    let (code, body) = s
        .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
        .await;
    assert_eq!((code, body.as_str()), (202, "reload scheduled"));
    assert_eq!(*node.reloads.lock().unwrap(), 1);
    // Reads never need credentials.
    assert_eq!(s.code("/patroni").await, 200);
    assert_eq!(s.code("/cluster").await, 200);
    // Every unsafe method is checked, before the body is looked at.
    for (m, p) in [
        (Method::PATCH, "/config"),
        (Method::PUT, "/config"),
        (Method::POST, "/switchover"),
        (Method::DELETE, "/switchover"),
        (Method::POST, "/restart"),
        (Method::DELETE, "/restart"),
        (Method::POST, "/reinitialize"),
    ] {
        assert_eq!(
            s.send(m.clone(), p, Some("{bad"), None).await.0,
            401,
            "{m} {p}"
        );
    }
}

#[tokio::test]
async fn allowlist_refuses_other_addresses() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let deny = start(
        node.clone(),
        ApiOptions {
            allowlist: vec!["10.0.0.0/8".into()],
            ..ApiOptions::default()
        },
    )
    .await;
    assert_eq!(
        deny.post("/reload", "").await,
        (403, "Access is denied".into())
    );
    assert_eq!(deny.code("/patroni").await, 200);
    let allow = start(
        node.clone(),
        ApiOptions {
            allowlist: vec!["10.0.0.0/8".into(), "127.0.0.1".into()],
            ..ApiOptions::default()
        },
    )
    .await;
    assert_eq!(allow.post("/reload", "").await.0, 202);
    // Members' API hosts (127.0.0.1 in the test cluster) are allowed on request.
    let members = start(
        node,
        ApiOptions {
            allowlist_include_members: true,
            ..ApiOptions::default()
        },
    )
    .await;
    assert_eq!(members.post("/reload", "").await.0, 202);
}

#[tokio::test]
async fn bad_bodies_get_4xx_not_crashes() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node, ApiOptions::default()).await;
    for (m, p) in [
        (Method::POST, "/switchover"),
        (Method::POST, "/failover"),
        (Method::PATCH, "/config"),
        (Method::PUT, "/config"),
        (Method::POST, "/restart"),
        (Method::POST, "/reinitialize"),
    ] {
        for body in ["{bad json", "[1,2]", "\"text\"", "null"] {
            let (code, msg) = s.send(m.clone(), p, Some(body), None).await;
            assert_eq!(code, 400, "{m} {p} {body:?}: {msg}");
            assert!(msg.starts_with("Bad Request"), "{msg}");
        }
    }
    // An empty object is not a switchover request.
    assert_eq!(s.post("/switchover", "{}").await.0, 400);
    // No body at all: 411 without a Content-Length, 400 with a zero one.
    let code = s.post("/switchover", "").await.0;
    assert!(matches!(code, 400 | 411), "{code}");
    let (code, _) = s.send(Method::POST, "/mpp", Some("{}"), None).await;
    assert_eq!(code, 501);
    let (code, _) = s.send(Method::DELETE, "/config", None, None).await;
    assert_eq!(code, 501);
}

#[test]
fn patch_merge_semantics() {
    let mut c = json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": "x"}, "use_pg_rewind": true}, "x": 1});
    let changed = merge_config_patch(
        &mut c,
        &json!({"ttl": "30", "postgresql": {"parameters": {"a": null, "c": "on"}}, "x": null, "new": {"k": 1, "gone": null}}),
    );
    assert!(changed);
    assert_eq!(
        c,
        json!({"ttl": 30, "postgresql": {"parameters": {"b": "x", "c": "on"}, "use_pg_rewind": true}, "new": {"k": 1, "gone": null}})
    );
    // A new section keeps its nulls (Patroni: `slots: {x: null}` is a physical slot).
    let mut d = json!({"ttl": 30});
    assert!(merge_config_patch(&mut d, &json!({"slots": {"s1": null}})));
    assert_eq!(d, json!({"ttl": 30, "slots": {"s1": null}}));
    // Same text is no change ("30" vs 30).
    assert!(!merge_config_patch(
        &mut c,
        &json!({"ttl": "30", "absent": null})
    ));
}

#[tokio::test]
async fn patch_and_put_config() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    let (code, body) = s
        .send(
            Method::PATCH,
            "/config",
            Some(r#"{"loop_wait": 5, "postgresql": {"parameters": {"max_connections": null, "work_mem": "8MB"}}}"#),
            None,
        )
        .await;
    assert_eq!(code, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["loop_wait"], 5);
    assert_eq!(v["ttl"], 30);
    assert_eq!(v["postgresql"]["parameters"], json!({"work_mem": "8MB"}));
    assert_eq!(v["postgresql"]["use_pg_rewind"], true);
    assert!(*node.wakes.lock().unwrap() >= 1);
    let (_, cfg) = s.get_json("/config").await;
    assert_eq!(cfg["loop_wait"], 5.0);
    // Timing that breaks the rule is accepted, as Patroni does (the timeouts in force
    // are shortened); a ttl that leaves no room for any retry is refused.
    let (code, body) = s
        .send(Method::PATCH, "/config", Some(r#"{"ttl": 10}"#), None)
        .await;
    assert_eq!(code, 200, "{body}");
    let (code, msg) = s
        .send(
            Method::PATCH,
            "/config",
            Some(r#"{"ttl": 0.5, "loop_wait": 1}"#),
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert!(msg.contains("leaves no time for loop_wait"), "{msg}");
    let (code, _) = s
        .send(Method::PATCH, "/config", Some(r#"{"ttl": "abc"}"#), None)
        .await;
    assert_eq!(code, 400);
    // A bad standby_cluster field is refused, named by its path.
    let (code, msg) = s
        .send(
            Method::PATCH,
            "/config",
            Some(r#"{"standby_cluster": {"host": "h", "port": 70000}}"#),
            None,
        )
        .await;
    assert_eq!(code, 400);
    assert!(msg.contains("standby_cluster.port"), "{msg}");
    // Keys fullauto refuses are refused here too, named, and nothing is written;
    // null (removing the key) is fine.
    for body in [
        r#"{"postgresql": {"parameters_primary": {"work_mem": "1MB"}}}"#,
        r#"{"standby_cluster": {"host": "h", "leader_tags": {"a": 1}}}"#,
    ] {
        let (code, msg) = s.send(Method::PATCH, "/config", Some(body), None).await;
        assert_eq!(code, 400, "{body}: {msg}");
        assert!(
            msg.contains("postgresql.parameters_primary")
                || msg.contains("standby_cluster.leader_tags"),
            "{msg}"
        );
        let (code, msg) = s.send(Method::PUT, "/config", Some(body), None).await;
        assert_eq!(code, 400, "{body}: {msg}");
    }
    let (_, cfg) = s.get_json("/config").await;
    assert!(
        cfg["postgresql"].get("parameters_primary").is_none(),
        "{cfg}"
    );
    let (code, msg) = s
        .send(
            Method::PATCH,
            "/config",
            Some(r#"{"postgresql": {"parameters_primary": null}}"#),
            None,
        )
        .await;
    assert_eq!(code, 200, "{msg}");
    *node.config_write.lock().unwrap() = Some(ConfigWrite::Conflict);
    assert_eq!(
        s.send(Method::PATCH, "/config", Some(r#"{"pause": true}"#), None)
            .await
            .0,
        409
    );
    *node.config_write.lock().unwrap() = None;
    node.remove_key("config");
    assert_eq!(
        s.send(Method::PATCH, "/config", Some(r#"{"pause": true}"#), None)
            .await
            .0,
        503
    );
    // PUT writes the whole document and echoes it.
    let full = r#"{"ttl":20,"loop_wait":4,"retry_timeout":8,"postgresql":{"use_slots":true}}"#;
    let (code, body) = s.send(Method::PUT, "/config", Some(full), None).await;
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        serde_json::from_str::<Value>(full).unwrap()
    );
    let (_, cfg) = s.get_json("/config").await;
    assert_eq!(cfg["ttl"], 20.0);
    let (code, _) = s
        .send(
            Method::PUT,
            "/config",
            Some(r#"{"ttl":1,"loop_wait":10}"#),
            None,
        )
        .await;
    assert_eq!(code, 400);
    *node.config_write.lock().unwrap() = Some(ConfigWrite::WriteFailed("down".into()));
    assert_eq!(
        s.send(Method::PUT, "/config", Some(full), None).await.0,
        502
    );
}

#[tokio::test]
async fn restart_filters_and_schedules() {
    let node = TestNode::new(replica_status("pg1"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    assert_eq!(
        s.post("/restart", "").await,
        (200, "restarted successfully".into())
    );
    assert_eq!(
        s.post("/restart", r#"{"role":"replica","timeout":30}"#)
            .await,
        (200, "restarted successfully".into())
    );
    assert_eq!(node.restarts.lock().unwrap()[1].timeout, Some(30));
    let unsatisfied = (503, "restart conditions are not satisfied".to_string());
    assert_eq!(
        s.post("/restart", r#"{"role":"primary"}"#).await,
        unsatisfied
    );
    assert_eq!(
        s.post("/restart", r#"{"restart_pending":true}"#).await,
        unsatisfied
    );
    assert_eq!(
        s.post("/restart", r#"{"postgres_version":"15.4"}"#).await,
        unsatisfied
    );
    assert_eq!(
        s.post("/restart", r#"{"postgres_version":"15.5"}"#).await.0,
        200
    );
    node.update_status(|st| st.pending_restart = true);
    assert_eq!(
        s.post("/restart", r#"{"restart_pending":true}"#).await.0,
        200
    );
    assert_eq!(
        s.post("/restart", r#"{"role":"leader"}"#).await,
        (
            400,
            "PostgreSQL role should be either primary, standby_leader, or replica".into()
        )
    );
    assert_eq!(
        s.post("/restart", r#"{"timeout":0}"#).await,
        (400, "Timeout should be a positive number of seconds".into())
    );
    assert_eq!(
        s.post("/restart", r#"{"colour":"blue"}"#).await,
        (
            400,
            "Unknown filter for the scheduled restart: colour".into()
        )
    );
    assert_eq!(
        s.post("/restart", r#"{"postgres_version":"fifteen"}"#)
            .await
            .0,
        400
    );
    *node.restart_outcome.lock().unwrap() =
        RestartOutcome::Failed("restart already in progress".into());
    assert_eq!(
        s.post("/restart", "{}").await,
        (503, "restart already in progress".into())
    );
    // Scheduling.
    assert_eq!(
        s.post("/restart", r#"{"schedule":"2099-01-01T00:00:00+00:00"}"#)
            .await,
        (202, "Restart scheduled".into())
    );
    assert_eq!(
        s.post("/restart", r#"{"schedule":"2099-01-02T00:00:00+00:00"}"#)
            .await,
        (409, "Another restart is already scheduled".into())
    );
    assert_eq!(
        s.post("/restart", r#"{"schedule":"2001-01-01T00:00:00+00:00"}"#)
            .await,
        (422, "Cannot schedule restart in the past".into())
    );
    assert_eq!(
        s.post("/restart", r#"{"schedule":"2099-01-01T00:00:00"}"#)
            .await,
        (
            400,
            "Timezone information is mandatory for the scheduled restart".into()
        )
    );
    assert_eq!(
        s.post("/restart", r#"{"schedule":"soon"}"#).await,
        (422, "Unable to parse scheduled timestamp".into())
    );
    let (code, msg) = s.send(Method::DELETE, "/restart", None, None).await;
    assert_eq!((code, msg.as_str()), (200, "scheduled restart deleted"));
    let (code, msg) = s.send(Method::DELETE, "/restart", None, None).await;
    assert_eq!((code, msg.as_str()), (404, "no restarts are scheduled"));
    node.update_status(|st| st.pause = true);
    assert_eq!(
        s.post("/restart", r#"{"schedule":"2099-01-01T00:00:00+00:00"}"#)
            .await,
        (500, "Can't schedule restart in the paused state".into())
    );
}

#[test]
fn postgres_versions() {
    assert_eq!(postgres_version_to_int("15.2"), Some(150002));
    assert_eq!(postgres_version_to_int("9.6.3"), Some(90603));
    assert_eq!(postgres_version_to_int("15"), None);
    assert_eq!(postgres_version_to_int("x.1"), None);
}

#[tokio::test]
async fn reinitialize_rules() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let s = start(node.clone(), ApiOptions::default()).await;
    assert_eq!(
        s.post("/reinitialize", "").await,
        (503, "I am the leader, can not reinitialize".into())
    );
    node.update_status(|st| *st = replica_status("pg1"));
    assert_eq!(
        s.post("/reinitialize", "").await,
        (200, "reinitialize started".into())
    );
    assert_eq!(
        s.post("/reinitialize", "{}").await,
        (503, "reinitialize already in progress".into())
    );
    assert_eq!(
        s.post("/reinitialize", r#"{"force":true,"from_leader":true}"#)
            .await
            .0,
        200
    );
    assert_eq!(node.reinit.lock().unwrap().last(), Some(&(true, true)));
    node.remove_key("leader");
    assert_eq!(
        s.post("/reinitialize", "").await,
        (503, "Cluster has no leader, can not reinitialize".into())
    );
}

/// The dashboard restarts or reinitializes any member: this one through its own
/// endpoint, another through that member's API (named by its member key), always after
/// this agent checked the credentials.
#[tokio::test]
async fn dashboard_actions_reach_any_member() {
    let node = TestNode::new(replica_status("pg1"), cluster_keys("pg0"));
    let s = start(node.clone(), auth_opts()).await;
    let ok = Some(("admin", "s3cret"));
    let post =
        |path: &'static str, body: &'static str, auth: Option<(&'static str, &'static str)>| {
            s.send(Method::POST, path, Some(body), auth)
        };
    assert_eq!(
        post(
            "/ui/restart",
            r#"{"member":"pg2"}"#,
            Some(("admin", "wrong"))
        )
        .await
        .0,
        401
    );
    assert!(node.member_calls.lock().unwrap().is_empty());
    // This member: its own /reinitialize, with the rest of the body.
    assert_eq!(
        post("/ui/reinitialize", r#"{"member":"pg1","force":true}"#, ok).await,
        (200, "reinitialize started".into())
    );
    assert_eq!(node.reinit.lock().unwrap().as_slice(), [(true, false)]);
    assert!(node.member_calls.lock().unwrap().is_empty());
    // Another member: forwarded without the `member` field, its answer passed back.
    assert_eq!(
        post(
            "/ui/restart",
            r#"{"member":"pg2","restart_pending":true}"#,
            ok
        )
        .await,
        (200, "restarted successfully".into())
    );
    assert_eq!(
        node.member_calls.lock().unwrap().as_slice(),
        [(
            "http://127.0.0.1:8010/patroni".to_string(),
            "restart".to_string(),
            json!({"restart_pending": true})
        )]
    );
    assert!(node.restarts.lock().unwrap().is_empty(), "restarted itself");
    // The other member refusing this agent's credentials says which ones it used.
    *node.member_answer.lock().unwrap() = Ok((401, "not authenticated".into()));
    let (code, body) = post("/ui/reinitialize", r#"{"member":"pg0"}"#, ok).await;
    assert_eq!(code, 401);
    assert!(
        body.contains("pg0 refused this agent's credentials"),
        "{body}"
    );
    *node.member_answer.lock().unwrap() = Err(MemberCallError::Unreachable {
        url: "http://127.0.0.1:1/restart".into(),
        cause: "connection refused".into(),
    });
    let (code, body) = post("/ui/restart", r#"{"member":"pg0"}"#, ok).await;
    assert_eq!(
        (code, body.as_str()),
        (
            502,
            "pg0 could not be asked: http://127.0.0.1:1/restart: connection refused"
        )
    );
    // Unknown members and actions, and a body naming none.
    assert_eq!(post("/ui/restart", r#"{"member":"pg9"}"#, ok).await.0, 404);
    assert_eq!(post("/ui/stop", r#"{"member":"pg2"}"#, ok).await.0, 404);
    assert_eq!(post("/ui/restart", r#"{"force":true}"#, ok).await.0, 400);
}

#[tokio::test]
async fn failsafe_post_is_refused_when_disabled_and_extra_headers_are_sent() {
    let node = TestNode::new(replica_status("pg1"), cluster_keys("pg0"));
    let s = start(
        node,
        ApiOptions {
            extra_headers: vec![("X-Frame-Options".into(), "SAMEORIGIN".into())],
            ..ApiOptions::default()
        },
    )
    .await;
    assert_eq!(
        s.post("/failsafe", r#"{"name":"pg0"}"#).await,
        (502, "failsafe mode is not enabled".into())
    );
    let r = s
        .client
        .get(format!("{}/patroni", s.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["x-frame-options"], "SAMEORIGIN");
    assert_eq!(r.headers()["content-type"], "application/json");
}

#[tokio::test]
async fn options_can_change_while_serving() {
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let (s, control) = start_with_control(node, ApiOptions::default()).await;
    assert_eq!(s.post("/reload", "").await.0, 202);
    control.set_options(auth_opts());
    assert_eq!(s.post("/reload", "").await.0, 401);
    let (code, _) = s
        .send(Method::POST, "/reload", None, Some(("admin", "s3cret")))
        .await;
    assert_eq!(code, 202);
}
