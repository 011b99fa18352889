//! `register_service`: the member registers, re-registers and deregisters its
//! Consul service as Patroni does, against the emulator's agent endpoints.

use dcs_consul::emulator::{Emulator, EmulatorConfig};
use dcs_consul::{ConsulConfig, ConsulDcs};
use ha_core::{Dcs, DcsTiming, MemberData, MemberState, Role};
use serde_json::{json, Value};
use std::time::Duration;

fn timing() -> DcsTiming {
    DcsTiming {
        ttl: Duration::from_secs(20),
        retry_timeout: Duration::from_secs(5),
        loop_wait: Duration::from_secs(1),
    }
}

fn member(role: Role, state: MemberState) -> MemberData {
    MemberData {
        role: Some(role),
        state: Some(state),
        api_url: Some("http://127.0.0.1:8108/patroni".into()),
        conn_url: Some("postgres://127.0.0.1:5532/postgres".into()),
        ..MemberData::default()
    }
}

fn config(url: &str) -> ConsulConfig {
    ConsulConfig {
        register_service: true,
        service_tags: vec!["zone-b".into(), "app".into()],
        service_check_interval: Some("2s".into()),
        service_check_tls_server_name: Some("pg0.example".into()),
        ..ConsulConfig::with_url(url)
    }
}

#[tokio::test]
async fn the_member_service_follows_role_and_state() {
    let (emulator, server) = Emulator::start(EmulatorConfig {
        session_ttl_min: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dcs = ConsulDcs::new(
        &config(&server.url()),
        "/service",
        "My.Cluster",
        "pg0",
        timing(),
    )
    .unwrap();

    dcs.touch_member(&member(Role::Replica, MemberState::Running))
        .await
        .unwrap();
    let services = emulator.services();
    let s = &services["My.Cluster/pg0"];
    assert_eq!(
        *s,
        json!({
            "ID": "My.Cluster/pg0",
            "Name": "my-cluster",
            "Address": "127.0.0.1",
            "Port": 5532,
            "Tags": ["app", "zone-b", "replica"],
            "Check": {
                "HTTP": "http://127.0.0.1:8108/replica",
                "Interval": "2s",
                "DeregisterCriticalServiceAfter": "100s",
                "TLSServerName": "pg0.example",
            },
            "EnableTagOverride": true,
        })
    );
    // As a real agent lists it.
    let listed: Value = reqwest::get(format!("{}/v1/agent/services", server.url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["My.Cluster/pg0"]["Service"], "my-cluster");

    // Promotion re-registers with the primary tags and check.
    dcs.touch_member(&member(Role::Primary, MemberState::Running))
        .await
        .unwrap();
    let s = &emulator.services()["My.Cluster/pg0"];
    assert_eq!(s["Tags"], json!(["app", "zone-b", "primary", "master"]));
    assert_eq!(s["Check"]["HTTP"], "http://127.0.0.1:8108/primary");

    // A registration removed behind our back is not restored while nothing
    // changes (Patroni's behaviour), but is by the next change.
    reqwest::Client::new()
        .put(format!(
            "{}/v1/agent/service/deregister/My.Cluster/pg0",
            server.url()
        ))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    dcs.touch_member(&member(Role::Primary, MemberState::Stopping))
        .await
        .unwrap();
    assert!(emulator.services().is_empty());

    // Stopped: deregistered.
    dcs.touch_member(&member(Role::Primary, MemberState::Running))
        .await
        .unwrap();
    assert_eq!(emulator.services().len(), 1);
    dcs.touch_member(&member(Role::Primary, MemberState::Stopped))
        .await
        .unwrap();
    assert!(emulator.services().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn without_register_service_nothing_is_registered() {
    let (emulator, server) = Emulator::start(EmulatorConfig {
        session_ttl_min: Duration::from_secs(1),
        ..EmulatorConfig::default()
    })
    .await
    .unwrap();
    let dcs = ConsulDcs::new(
        &ConsulConfig::with_url(server.url()),
        "/service",
        "b",
        "pg0",
        timing(),
    )
    .unwrap();
    dcs.touch_member(&member(Role::Primary, MemberState::Running))
        .await
        .unwrap();
    assert!(emulator.services().is_empty());
    server.stop().await;
}

#[tokio::test]
async fn a_bad_check_interval_is_a_config_error() {
    let mut c = config("http://127.0.0.1:1");
    c.service_check_interval = Some("often".into());
    let e = ConsulDcs::new(&c, "/service", "b", "pg0", timing())
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("consul.service_check_interval `often` is not a duration"),
        "{e}"
    );
}

#[tokio::test]
async fn the_emulator_checks_registrations_like_consul() {
    let (emulator, server) = Emulator::start(EmulatorConfig::default()).await.unwrap();
    let client = reqwest::Client::new();
    let put = |path: &str, body: Value| {
        client
            .put(format!("{}{path}", server.url()))
            .body(body.to_string())
            .send()
    };
    let r = put("/v1/agent/service/register", json!({"id": "x"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(r.text().await.unwrap(), "Missing service name");
    let r = put(
        "/v1/agent/service/register",
        json!({"name": "s", "check": {"http": "http://h/"}}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    let r = put("/v1/agent/service/register", json!({"name": "s"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(emulator.services()["s"]["Name"], "s");
    let r = put("/v1/agent/service/deregister/nope", json!(null))
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    server.stop().await;
}
