//! `POST /switchover` and `/failover`: spec §4.4's checks, the failover key, and the
//! wait for the outcome.

mod api_support;

use agent_bin::api::ApiOptions;
use api_support::{cluster_keys, primary_status, start, FailoverEffect, TestNode};
use reqwest::Method;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

fn healthy(node: &TestNode) {
    for i in 0..3 {
        node.probe_answers(
            &format!("http://127.0.0.1:{}/patroni", 8008 + i),
            json!({"state":"running","role":"replica"}),
        );
    }
}

fn node() -> Arc<TestNode> {
    let n = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    healthy(&n);
    n
}

#[tokio::test]
async fn requests_missing_names_are_refused() {
    let s = start(node(), ApiOptions::default()).await;
    assert_eq!(
        s.post("/failover", r#"{"leader":"pg0"}"#).await,
        (
            400,
            "Failover could be performed only to a specific candidate".into()
        )
    );
    assert_eq!(
        s.post("/switchover", r#"{"candidate":"pg1"}"#).await,
        (
            400,
            "Switchover could be performed only from a specific leader".into()
        )
    );
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg0"}"#)
            .await,
        (400, "Switchover target and source are the same".into())
    );
    assert_eq!(
        s.post(
            "/failover",
            r#"{"candidate":"pg1","scheduled_at":"2099-01-01T00:00:00+00:00"}"#
        )
        .await,
        (400, "Failover can't be scheduled".into())
    );
    // Naming the leader makes it a switchover, but still not a scheduled one.
    assert_eq!(
        s.post(
            "/failover",
            r#"{"leader":"pg0","candidate":"pg1","scheduled_at":"2099-01-01T00:00:00+00:00"}"#
        )
        .await,
        (400, "Failover can't be scheduled".into())
    );
}

#[tokio::test]
async fn prechecks_answer_412() {
    let n = node();
    let s = start(n.clone(), ApiOptions::default()).await;
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg1","candidate":"pg2"}"#)
            .await,
        (412, "leader name does not match".into())
    );
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg9"}"#)
            .await,
        (412, "candidate does not exists".into())
    );
    // Candidate that does not answer, or must not be promoted.
    n.probes.lock().unwrap().clear();
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (
            412,
            "switchover is not possible: no good candidates have been found".into()
        )
    );
    n.probe_answers(
        "http://127.0.0.1:8009/patroni",
        json!({"state":"running","tags":{"nofailover":true}}),
    );
    n.probe_answers(
        "http://127.0.0.1:8010/patroni",
        json!({"state":"running","watchdog_failed":true}),
    );
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0"}"#).await,
        (
            412,
            "switchover is not possible: no good candidates have been found".into()
        )
    );
    assert_eq!(
        s.post("/failover", r#"{"candidate":"pg2"}"#).await,
        (
            412,
            "failover is not possible: no good candidates have been found".into()
        )
    );
    // Synchronous mode: the candidate must be a sync standby.
    healthy(&n);
    n.set_key(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":true}"#,
    );
    n.set_key("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#);
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg2"}"#)
            .await,
        (
            412,
            "candidate name does not match with sync_standby".into()
        )
    );
    n.set_key("sync", r#"{"leader":"pg0"}"#);
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0"}"#).await,
        (
            412,
            "switchover is not possible: can not find sync_standby".into()
        )
    );
    // A cluster of one.
    n.set_key("config", r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#);
    n.remove_key("members/pg1");
    n.remove_key("members/pg2");
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0"}"#).await,
        (
            412,
            "switchover is not possible: cluster does not have members except leader".into()
        )
    );
    assert!(
        n.failovers.lock().unwrap().is_empty(),
        "no key written on 412"
    );
}

#[tokio::test]
async fn successful_switchover_and_failover() {
    let n = node();
    let s = start(n.clone(), ApiOptions::default()).await;
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg1".into(), Duration::from_millis(300));
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (200, "Successfully switched over to \"pg1\"".into())
    );
    let f = n.failovers.lock().unwrap()[0].clone();
    assert_eq!(
        (f.leader.as_deref(), f.member.as_deref()),
        (Some("pg0"), Some("pg1"))
    );
    assert!(*n.wakes.lock().unwrap() >= 1);
    // `member` is accepted as the candidate's name; another member may win.
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg2".into(), Duration::from_millis(200));
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg1","member":"pg0"}"#)
            .await,
        (200, "Switched over to \"pg2\" instead of \"pg0\"".into())
    );
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg0".into(), Duration::from_millis(200));
    assert_eq!(
        s.post("/failover", r#"{"candidate":"pg0"}"#).await,
        (200, "Successfully failed over to \"pg0\"".into())
    );
    // A failover naming the leader is a switchover.
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg1".into(), Duration::from_millis(100));
    assert_eq!(
        s.post("/failover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (200, "Successfully switched over to \"pg1\"".into())
    );
}

#[tokio::test]
async fn failed_unknown_and_unwritable() {
    let n = node();
    let s = start(
        n.clone(),
        ApiOptions {
            switchover_timeout: Some(Duration::from_millis(600)),
            ..ApiOptions::default()
        },
    )
    .await;
    *n.failover_effect.lock().unwrap() = FailoverEffect::Cleared(Duration::from_millis(200));
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (503, "Switchover failed".into())
    );
    *n.failover_effect.lock().unwrap() = FailoverEffect::Nothing;
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (503, "Switchover status unknown".into())
    );
    n.remove_key("failover");
    *n.failover_effect.lock().unwrap() = FailoverEffect::WriteFails;
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0","candidate":"pg1"}"#)
            .await,
        (503, "failed to write failover key into DCS".into())
    );
}

#[tokio::test]
async fn scheduled_switchover_and_cancel() {
    let n = node();
    let s = start(n.clone(), ApiOptions::default()).await;
    assert_eq!(
        s.post(
            "/switchover",
            r#"{"leader":"pg0","candidate":"pg1","scheduled_at":"2099-06-01T12:00:00+02:00"}"#
        )
        .await,
        (202, "Switchover scheduled".into())
    );
    let f = n.failovers.lock().unwrap()[0].clone();
    assert_eq!(f.scheduled_at.as_deref(), Some("2099-06-01T12:00:00+02:00"));
    let (_, c) = s.get_json("/cluster").await;
    assert_eq!(c["scheduled_switchover"]["to"], "pg1");
    let (code, msg) = s.send(Method::DELETE, "/switchover", None, None).await;
    assert_eq!((code, msg.as_str()), (200, "scheduled switchover deleted"));
    let (code, msg) = s.send(Method::DELETE, "/switchover", None, None).await;
    assert_eq!((code, msg.as_str()), (404, "no switchover is scheduled"));
    assert_eq!(
        s.post(
            "/switchover",
            r#"{"leader":"pg0","scheduled_at":"2001-01-01T00:00:00+00:00"}"#
        )
        .await,
        (422, "Cannot schedule switchover in the past".into())
    );
    assert_eq!(
        s.post(
            "/switchover",
            r#"{"leader":"pg0","scheduled_at":"2099-01-01T00:00:00"}"#
        )
        .await,
        (
            400,
            "Timezone information is mandatory for the scheduled switchover".into()
        )
    );
    assert_eq!(
        s.post(
            "/switchover",
            r#"{"leader":"pg0","scheduled_at":"tomorrow"}"#
        )
        .await,
        (422, "Unable to parse scheduled timestamp".into())
    );
    // Paused cluster.
    n.update_status(|st| st.pause = true);
    assert_eq!(
        s.post(
            "/switchover",
            r#"{"leader":"pg0","candidate":"pg1","scheduled_at":"2099-01-01T00:00:00+00:00"}"#
        )
        .await,
        (400, "Can't schedule switchover in the paused state".into())
    );
    assert_eq!(
        s.post("/switchover", r#"{"leader":"pg0"}"#).await,
        (
            400,
            "Switchover is possible only to a specific candidate in a paused state".into()
        )
    );
}

#[tokio::test]
async fn failover_to_a_member_outside_sync_is_refused_unless_forced() {
    let n = node();
    let s = start(n.clone(), ApiOptions::default()).await;
    n.set_key(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":"on"}"#,
    );
    n.set_key(
        "sync",
        r#"{"leader":"pg0","sync_standby":"pg1","quorum":0}"#,
    );
    let (code, text) = s.post("/failover", r#"{"candidate":"pg2"}"#).await;
    assert_eq!(code, 412, "{text}");
    assert!(
        text.contains("not a synchronous standby") && text.contains("data loss"),
        "{text}"
    );
    assert!(n.failovers.lock().unwrap().is_empty(), "no key on refusal");
    // A synchronous standby needs no force.
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg1".into(), Duration::from_millis(100));
    assert_eq!(
        s.post("/failover", r#"{"candidate":"pg1"}"#).await,
        (200, "Successfully failed over to \"pg1\"".into())
    );
    // Forced: the operator accepted the risk.
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg2".into(), Duration::from_millis(100));
    assert_eq!(
        s.post("/failover", r#"{"candidate":"pg2","force":true}"#)
            .await,
        (200, "Successfully failed over to \"pg2\"".into())
    );
    // Quorum mode: the candidate still needs the votes, so the request passes.
    n.set_key("leader", "pg0");
    n.set_key(
        "config",
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"synchronous_mode":"quorum"}"#,
    );
    n.set_key(
        "sync",
        r#"{"leader":"pg0","sync_standby":"pg1","quorum":0}"#,
    );
    *n.failover_effect.lock().unwrap() =
        FailoverEffect::LeaderBecomes("pg2".into(), Duration::from_millis(100));
    assert_eq!(
        s.post("/failover", r#"{"candidate":"pg2"}"#).await,
        (200, "Successfully failed over to \"pg2\"".into())
    );
}
