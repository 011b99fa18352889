//! Pins the emulator's Consul semantics over plain HTTP: what the backend relies
//! on must behave as Consul documents it.

use base64::Engine as _;
use dcs_consul::emulator::{Emulator, EmulatorConfig, ServerHandle};
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

struct Api {
    http: reqwest::Client,
    base: String,
    _emulator: Emulator,
    _server: ServerHandle,
}

async fn start(config: EmulatorConfig) -> Api {
    let (emulator, server) = Emulator::start(config).await.unwrap();
    Api {
        http: reqwest::Client::new(),
        base: server.url(),
        _emulator: emulator,
        _server: server,
    }
}

fn short_ttls() -> EmulatorConfig {
    EmulatorConfig {
        session_ttl_min: Duration::from_millis(500),
        ..EmulatorConfig::default()
    }
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<String>,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let mut req = self.http.request(method, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.body(b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.unwrap())
    }

    async fn put(&self, path: &str, body: &str) -> (StatusCode, String) {
        let (s, _, b) = self
            .call(reqwest::Method::PUT, path, Some(body.to_string()))
            .await;
        (s, b)
    }

    async fn get(&self, path: &str) -> (StatusCode, u64, String) {
        let (s, h, b) = self.call(reqwest::Method::GET, path, None).await;
        let index = h
            .get("X-Consul-Index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        (s, index, b)
    }

    async fn delete(&self, path: &str) -> (StatusCode, String) {
        let (s, _, b) = self.call(reqwest::Method::DELETE, path, None).await;
        (s, b)
    }

    async fn session(&self, ttl: &str, behavior: &str, lock_delay: &str) -> String {
        let body = json!({"Name": "t", "TTL": ttl, "Behavior": behavior, "LockDelay": lock_delay, "Checks": []});
        let (status, text) = self.put("/v1/session/create", &body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        v["ID"].as_str().unwrap().to_string()
    }

    async fn entry(&self, key: &str) -> Option<Value> {
        let (status, _, body) = self.get(&format!("/v1/kv/{key}")).await;
        match status {
            StatusCode::NOT_FOUND => None,
            StatusCode::OK => {
                let v: Value = serde_json::from_str(&body).unwrap();
                Some(v[0].clone())
            }
            other => panic!("GET {key}: {other} {body}"),
        }
    }
}

/// Polls until `key` is gone; panics after `bound`.
async fn wait_until_gone(api: &Api, key: &str, bound: Duration) {
    let start = Instant::now();
    while api.entry(key).await.is_some() {
        assert!(
            start.elapsed() < bound,
            "{key} still present after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn decoded(entry: &Value) -> String {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(entry["Value"].as_str().unwrap_or(""))
        .unwrap();
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn session_expiry_deletes_held_keys_with_behavior_delete() {
    let api = start(short_ttls()).await;
    let sid = api.session("2s", "delete", "0s").await;
    let created = Instant::now();
    assert_eq!(
        api.put(&format!("/v1/kv/svc/leader?acquire={sid}"), "pg0")
            .await,
        (StatusCode::OK, "true".into())
    );
    let entry = api.entry("svc/leader").await.unwrap();
    assert_eq!(entry["Session"], json!(sid));
    assert_eq!(entry["LockIndex"], json!(1));
    assert_eq!(decoded(&entry), "pg0");

    // Present well before the TTL, gone after it.
    tokio::time::sleep_until(created + Duration::from_millis(800)).await;
    assert!(api.entry("svc/leader").await.is_some());
    tokio::time::sleep_until(created + Duration::from_secs(2)).await;
    wait_until_gone(&api, "svc/leader", Duration::from_secs(3)).await;

    let (status, body) = api.put(&format!("/v1/session/renew/{sid}"), "").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    let (_, _, info) = api.get(&format!("/v1/session/info/{sid}")).await;
    assert_eq!(info.trim(), "[]");
}

#[tokio::test]
async fn session_expiry_releases_held_keys_with_behavior_release() {
    let api = start(short_ttls()).await;
    let sid = api.session("500ms", "release", "0s").await;
    api.put(&format!("/v1/kv/k?acquire={sid}"), "v").await;
    let before = api.entry("k").await.unwrap();
    let start = Instant::now();
    let after = loop {
        let e = api.entry("k").await.unwrap();
        if e.get("Session").is_none() {
            break e;
        }
        assert!(start.elapsed() < Duration::from_secs(4), "never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(after.get("Session").is_none(), "{after}");
    assert_eq!(decoded(&after), "v");
    assert!(after["ModifyIndex"].as_u64() > before["ModifyIndex"].as_u64());
}

#[tokio::test]
async fn renew_pushes_expiry_and_ttl_multiplier_doubles_it() {
    let api = start(EmulatorConfig {
        ttl_multiplier: 2,
        ..short_ttls()
    })
    .await;
    let sid = api.session("1s", "delete", "0s").await;
    api.put(&format!("/v1/kv/k?acquire={sid}"), "v").await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(600)).await;
        let (status, body) = api.put(&format!("/v1/session/renew/{sid}"), "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let renewed: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(renewed[0]["ID"], json!(sid));
        assert_eq!(renewed[0]["TTL"], json!("1s"));
    }
    let last_renewal = Instant::now();
    // Multiplier 2: still alive at 1.4×TTL, gone after 2×TTL.
    tokio::time::sleep_until(last_renewal + Duration::from_millis(1400)).await;
    assert!(api.entry("k").await.is_some());
    tokio::time::sleep_until(last_renewal + Duration::from_secs(2)).await;
    wait_until_gone(&api, "k", Duration::from_secs(3)).await;
}

#[tokio::test]
async fn blocking_query_wakes_on_change_of_the_prefix_only() {
    let api = start(EmulatorConfig::default()).await;
    api.put("/v1/kv/p/a", "1").await;
    let (status, index, _) = api.get("/v1/kv/p/?recurse").await;
    assert_eq!(status, StatusCode::OK);

    let http = api.http.clone();
    let url = format!("{}/v1/kv/p/?recurse&index={index}&wait=20s", api.base);
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let resp = http.get(url).send().await.unwrap();
        let idx: u64 = resp.headers()["X-Consul-Index"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        (idx, resp.text().await.unwrap(), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A write outside the prefix does not end the wait.
    api.put("/v1/kv/q/other", "x").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "an unrelated write woke the query");
    api.put("/v1/kv/p/b", "2").await;
    let (new_index, body, elapsed) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the blocking query did not wake on a change")
        .unwrap();
    assert!(new_index > index);
    assert!(elapsed < Duration::from_secs(20));
    assert!(body.contains("p/b"), "{body}");
}

#[tokio::test]
async fn blocking_query_returns_after_wait_without_change() {
    let api = start(EmulatorConfig::default()).await;
    api.put("/v1/kv/p/a", "1").await;
    let (_, index, _) = api.get("/v1/kv/p/?recurse").await;
    let started = Instant::now();
    let (status, again, body) = api
        .get(&format!("/v1/kv/p/?recurse&index={index}&wait=600ms"))
        .await;
    assert!(started.elapsed() >= Duration::from_millis(600));
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, index);
    assert!(body.contains("p/a"));

    // A missing key blocks too, then answers 404 with an index.
    let (status, idx, _) = api.get("/v1/kv/none").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(idx > 0);
    let started = Instant::now();
    let (status, _, _) = api
        .get(&format!("/v1/kv/none?index={idx}&wait=300ms"))
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn blocking_query_on_a_deleted_prefix_key_wakes() {
    let api = start(EmulatorConfig::default()).await;
    api.put("/v1/kv/p/a", "1").await;
    let (_, index, _) = api.get("/v1/kv/p/?recurse").await;
    let http = api.http.clone();
    let url = format!("{}/v1/kv/p/?recurse&index={index}&wait=20s", api.base);
    let waiter = tokio::spawn(async move { http.get(url).send().await.unwrap().status() });
    tokio::time::sleep(Duration::from_millis(200)).await;
    api.delete("/v1/kv/p/a").await;
    let status = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("a delete did not wake the prefix query")
        .unwrap();
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn cas_writes_and_deletes() {
    let api = start(EmulatorConfig::default()).await;
    assert_eq!(api.put("/v1/kv/k?cas=0", "a").await.1, "true");
    assert_eq!(api.put("/v1/kv/k?cas=0", "b").await.1, "false");
    let index = api.entry("k").await.unwrap()["ModifyIndex"]
        .as_u64()
        .unwrap();
    assert_eq!(
        api.put(&format!("/v1/kv/k?cas={}", index + 100), "c")
            .await
            .1,
        "false"
    );
    assert_eq!(decoded(&api.entry("k").await.unwrap()), "a");
    assert_eq!(
        api.put(&format!("/v1/kv/k?cas={index}"), "d").await.1,
        "true"
    );
    let entry = api.entry("k").await.unwrap();
    assert_eq!(decoded(&entry), "d");
    assert_eq!(entry["CreateIndex"].as_u64(), Some(index));
    let current = entry["ModifyIndex"].as_u64().unwrap();
    assert!(current > index);
    // A stale index neither writes nor deletes.
    assert_eq!(
        api.put(&format!("/v1/kv/k?cas={index}"), "e").await.1,
        "false"
    );
    assert_eq!(
        api.delete(&format!("/v1/kv/k?cas={index}")).await.1,
        "false"
    );
    assert!(api.entry("k").await.is_some());
    assert_eq!(
        api.delete(&format!("/v1/kv/k?cas={current}")).await.1,
        "true"
    );
    assert!(api.entry("k").await.is_none());
    // Flags round-trip.
    api.put("/v1/kv/f?flags=42", "x").await;
    assert_eq!(api.entry("f").await.unwrap()["Flags"], json!(42));
}

#[tokio::test]
async fn acquire_is_exclusive_and_strict_about_sessions() {
    let api = start(EmulatorConfig::default()).await;
    let a = api.session("30s", "delete", "0s").await;
    let b = api.session("30s", "delete", "0s").await;
    assert_eq!(
        api.put(&format!("/v1/kv/l?acquire={a}"), "a").await.1,
        "true"
    );
    // Held by another session: false, and nothing changes.
    assert_eq!(
        api.put(&format!("/v1/kv/l?acquire={b}"), "b").await.1,
        "false"
    );
    let entry = api.entry("l").await.unwrap();
    assert_eq!(entry["Session"], json!(a));
    assert_eq!(decoded(&entry), "a");
    // Release by a non-holder: false.
    assert_eq!(
        api.put(&format!("/v1/kv/l?release={b}"), "").await.1,
        "false"
    );
    // A session that never existed, and a destroyed one, are rejected.
    let (status, body) = api
        .put(
            "/v1/kv/l2?acquire=00000000-0000-0000-0000-000000000000",
            "x",
        )
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(body.contains("invalid session"), "{body}");
    let (status, body) = api.put(&format!("/v1/session/destroy/{b}"), "").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "true"));
    let (status, _) = api.put(&format!("/v1/kv/l2?acquire={b}"), "x").await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(api.entry("l2").await.is_none());
    // Destroying the holder deletes its key (Behavior delete).
    api.put(&format!("/v1/session/destroy/{a}"), "").await;
    assert!(api.entry("l").await.is_none());
}

#[tokio::test]
async fn lock_delay_blocks_acquire_after_invalidation() {
    let api = start(EmulatorConfig::default()).await;
    let a = api.session("30s", "release", "3s").await;
    let b = api.session("30s", "release", "0s").await;
    api.put(&format!("/v1/kv/l?acquire={a}"), "a").await;
    api.put(&format!("/v1/session/destroy/{a}"), "").await;
    let destroyed = Instant::now();
    assert_eq!(
        api.put(&format!("/v1/kv/l?acquire={b}"), "b").await.1,
        "false"
    );
    tokio::time::sleep_until(destroyed + Duration::from_millis(3200)).await;
    assert_eq!(
        api.put(&format!("/v1/kv/l?acquire={b}"), "b").await.1,
        "true"
    );
    assert_eq!(api.entry("l").await.unwrap()["LockIndex"], json!(2));
}

#[tokio::test]
async fn session_create_validates_like_consul() {
    let api = start(EmulatorConfig::default()).await;
    let (status, body) = api
        .put("/v1/session/create", r#"{"TTL":"5s","Checks":[]}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body.contains("Invalid Session TTL") && body.contains("[10s=24h0m0s]"),
        "{body}"
    );
    let (status, _) = api
        .put("/v1/session/create", r#"{"Behavior":"explode"}"#)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = api
        .put("/v1/session/create", r#"{"Checks":["service:web"]}"#)
        .await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR, "{body}");
    // Defaults: release, 15s lock-delay, the serfHealth check.
    let (status, body) = api.put("/v1/session/create", "").await;
    assert_eq!(status, StatusCode::OK);
    let id = serde_json::from_str::<Value>(&body).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, info) = api.get(&format!("/v1/session/info/{id}")).await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["Behavior"], json!("release"));
    assert_eq!(info[0]["LockDelay"], json!(15_000_000_000u64));
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    // Patroni's numeric lock-delay below 1000 is seconds.
    let (_, body) = api
        .put(
            "/v1/session/create",
            r#"{"LockDelay":0.001,"TTL":"10s","Checks":[]}"#,
        )
        .await;
    let id = serde_json::from_str::<Value>(&body).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, _, info) = api.get(&format!("/v1/session/info/{id}")).await;
    let info: Value = serde_json::from_str(&info).unwrap();
    assert_eq!(info[0]["LockDelay"], json!(1_000_000u64));
    assert_eq!(info[0]["TTL"], json!("10s"));
    // Renewing an unknown session is a 404.
    let (status, _) = api.put("/v1/session/renew/nope", "").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn reads_listing_and_flags() {
    let api = start(EmulatorConfig::default()).await;
    api.put("/v1/kv/s/b/leader", "pg0").await;
    api.put("/v1/kv/s/b/members/pg0", "{}").await;
    api.put("/v1/kv/s/b2/leader", "other").await;
    let (status, _, body) = api.get("/v1/kv/s/b/?recurse").await;
    assert_eq!(status, StatusCode::OK);
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap();
    let keys: Vec<&str> = entries.iter().map(|e| e["Key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["s/b/leader", "s/b/members/pg0"]);
    let (_, _, body) = api.get("/v1/kv/s/?keys&separator=/").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!(["s/b/", "s/b2/"])
    );
    let (status, _, _) = api.get("/v1/kv/nothing/?recurse").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _, body) = api.get("/v1/kv/s/b/leader?raw").await;
    assert_eq!((status, body.as_str()), (StatusCode::OK, "pg0"));
    assert_eq!(
        api.get("/v1/kv/s/b/leader?consistent").await.0,
        StatusCode::OK
    );
    assert_eq!(api.get("/v1/kv/s/b/leader?stale").await.0, StatusCode::OK);
    assert_eq!(
        api.get("/v1/kv/s/b/leader?stale&consistent").await.0,
        StatusCode::BAD_REQUEST
    );
    // Empty values read back as null.
    api.put("/v1/kv/s/b/initialize", "").await;
    assert_eq!(
        api.entry("s/b/initialize").await.unwrap()["Value"],
        Value::Null
    );
    // Recursive delete stays inside the prefix.
    assert_eq!(api.delete("/v1/kv/s/b/?recurse").await.1, "true");
    assert!(api.entry("s/b/leader").await.is_none());
    assert!(api.entry("s/b2/leader").await.is_some());
}

#[tokio::test]
async fn acl_token_is_enforced_when_configured() {
    let api = start(EmulatorConfig {
        acl_token: Some("s3cret".into()),
        ..EmulatorConfig::default()
    })
    .await;
    let (status, body) = api.put("/v1/kv/k", "v").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = api.put("/v1/kv/k?token=wrong", "v").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let resp = api
        .http
        .put(format!("{}/v1/kv/k", api.base))
        .header("X-Consul-Token", "s3cret")
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let (status, _, _) = api.get("/v1/kv/k?token=s3cret").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn single_key_blocking_query_wakes_on_that_key() {
    let api = start(EmulatorConfig::default()).await;
    api.put("/v1/kv/a", "1").await;
    let (_, index, _) = api.get("/v1/kv/a").await;
    let http = api.http.clone();
    let url = format!("{}/v1/kv/a?index={index}&wait=20s", api.base);
    let waiter = tokio::spawn(async move {
        let resp = http.get(url).send().await.unwrap();
        resp.text().await.unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    api.put("/v1/kv/b", "x").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "a write to another key woke the query"
    );
    api.put("/v1/kv/a", "2").await;
    let body = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the query did not wake when its key changed")
        .unwrap();
    let entries: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(decoded(&entries[0]), "2");

    // The index of a single-key read is the KV table's: once anything was written
    // since, an old index answers at once (Consul: "may return without a change").
    api.put("/v1/kv/b", "y").await;
    let started = Instant::now();
    let (status, newer, _) = api.get(&format!("/v1/kv/a?index={index}&wait=20s")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(newer > index);
    assert!(started.elapsed() < Duration::from_secs(20));
}
