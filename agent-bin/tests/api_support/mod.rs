//! A settable `NodeApi` and a server on 127.0.0.1:0 for the REST layer's tests.
#![allow(dead_code)]

use agent_bin::api::{
    merge_config_patch, router_with_control, serve, AgentInfo, ApiControl, ApiOptions,
    CancelSwitchover, ConfigWrite, MemberCallError, NodeApi, NodeStatus, ReinitializeError,
    RestartOutcome, RestartRequest, Xlog,
};
use async_trait::async_trait;
use ha_core::runner::RequestError;
use ha_core::{Cluster, DcsError, DynamicConfig, Failover, RawEntry, Role, Version};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What happens after a failover key is written.
#[derive(Clone, Debug)]
pub enum FailoverEffect {
    /// Nothing: the request stays pending.
    Nothing,
    /// After a delay the named member holds the leader key and the key is cleared.
    LeaderBecomes(String, Duration),
    /// After a delay the key is cleared without a leader change.
    Cleared(Duration),
    /// The DCS write fails.
    WriteFails,
}

/// Settable node state plus a record of what the API asked for.
pub struct TestNode {
    pub status: Mutex<NodeStatus>,
    /// Keys (relative, value) the cluster views are built from.
    pub keys: Arc<Mutex<BTreeMap<String, String>>>,
    pub config_write: Mutex<Option<ConfigWrite>>,
    pub probes: Mutex<BTreeMap<String, Value>>,
    pub failover_effect: Mutex<FailoverEffect>,
    pub failovers: Mutex<Vec<Failover>>,
    pub restart_outcome: Mutex<RestartOutcome>,
    pub restarts: Mutex<Vec<RestartRequest>>,
    pub scheduled_restart: Mutex<bool>,
    pub reinit: Mutex<Vec<(bool, bool)>>,
    pub reloads: Mutex<u32>,
    pub wakes: Mutex<u32>,
    pub dcs_down: Mutex<bool>,
    /// Calls to other members' APIs: (api_url, endpoint, body).
    pub member_calls: Mutex<Vec<(String, String, Value)>>,
    /// What another member answers.
    pub member_answer: Mutex<Result<(u16, String), MemberCallError>>,
}

pub fn primary_status(name: &str) -> NodeStatus {
    NodeStatus {
        state: "running".into(),
        role: Role::Primary,
        postmaster_start_time: Some("2026-11-25 10:00:00.123456+00:00".into()),
        server_version: Some(150004),
        xlog: Some(Xlog::Primary {
            location: 50_331_648,
        }),
        timeline: Some(2),
        dcs_last_seen: Some(1_764_000_000),
        patroni: AgentInfo {
            version: "0.1.0".into(),
            scope: "batman".into(),
            name: name.into(),
            ..AgentInfo::default()
        },
        holds_leader_lease: true,
        ..NodeStatus::default()
    }
}

pub fn replica_status(name: &str) -> NodeStatus {
    NodeStatus {
        role: Role::Replica,
        xlog: Some(Xlog::Replica {
            received_location: Some(50_331_648),
            replayed_location: Some(50_331_648 - 2048),
            replayed_timestamp: Some("2026-11-25 10:05:00.5+00:00".into()),
            paused: false,
        }),
        replication_state: Some("streaming".into()),
        holds_leader_lease: false,
        ..primary_status(name)
    }
}

/// A three-member cluster led by `leader` (`pg0`, `pg1`, `pg2` on 127.0.0.1).
pub fn cluster_keys(leader: &str) -> BTreeMap<String, String> {
    let mut k = BTreeMap::new();
    k.insert("leader".into(), leader.into());
    k.insert(
        "config".into(),
        r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"maximum_lag_on_failover":1048576,"postgresql":{"use_pg_rewind":true,"parameters":{"max_connections":100}}}"#.into(),
    );
    k.insert("status".into(), r#"{"optime":50331648}"#.into());
    k.insert(
        "history".into(),
        r#"[[1,25165984,"no recovery target specified","2026-11-25T09:00:00+00:00","pg0"]]"#.into(),
    );
    k.insert("initialize".into(), "7311111111111111111".into());
    for (i, name) in ["pg0", "pg1", "pg2"].iter().enumerate() {
        let role = if *name == leader {
            "primary"
        } else {
            "replica"
        };
        let extra = if *name == leader {
            r#""xlog_location":50331648"#.to_string()
        } else {
            format!(
                r#""xlog_location":{},"receive_lsn":{},"replay_lsn":{},"replication_state":"streaming""#,
                50_331_648 - 1024 * i as u64,
                50_331_648 - 1024 * i as u64,
                50_331_648 - 2048 * i as u64
            )
        };
        k.insert(
            format!("members/{name}"),
            format!(
                r#"{{"conn_url":"postgres://127.0.0.1:{}/postgres","api_url":"http://127.0.0.1:{}/patroni","state":"running","role":"{role}","timeline":2,{extra}}}"#,
                5432 + i,
                8008 + i
            ),
        );
    }
    k
}

impl TestNode {
    pub fn new(status: NodeStatus, keys: BTreeMap<String, String>) -> Arc<TestNode> {
        Arc::new(TestNode {
            status: Mutex::new(status),
            keys: Arc::new(Mutex::new(keys)),
            config_write: Mutex::new(None),
            probes: Mutex::new(BTreeMap::new()),
            failover_effect: Mutex::new(FailoverEffect::Nothing),
            failovers: Mutex::new(Vec::new()),
            restart_outcome: Mutex::new(RestartOutcome::Restarted),
            restarts: Mutex::new(Vec::new()),
            scheduled_restart: Mutex::new(false),
            reinit: Mutex::new(Vec::new()),
            reloads: Mutex::new(0),
            wakes: Mutex::new(0),
            dcs_down: Mutex::new(false),
            member_calls: Mutex::new(Vec::new()),
            member_answer: Mutex::new(Ok((200, "restarted successfully".into()))),
        })
    }

    pub fn set_key(&self, key: &str, value: &str) {
        self.keys.lock().unwrap().insert(key.into(), value.into());
    }

    pub fn remove_key(&self, key: &str) {
        self.keys.lock().unwrap().remove(key);
    }

    pub fn update_status(&self, f: impl FnOnce(&mut NodeStatus)) {
        f(&mut self.status.lock().unwrap());
    }

    pub fn probe_answers(&self, url: &str, body: Value) {
        self.probes.lock().unwrap().insert(url.into(), body);
    }

    fn cluster(&self) -> Cluster {
        Cluster::from_entries(
            self.keys
                .lock()
                .unwrap()
                .iter()
                .enumerate()
                .map(|(i, (k, v))| RawEntry {
                    key: k.clone(),
                    value: v.clone(),
                    version: Version(i as i64 + 1),
                    session: None,
                }),
        )
    }
}

#[async_trait]
impl NodeApi for TestNode {
    fn status(&self) -> NodeStatus {
        self.status.lock().unwrap().clone()
    }

    fn cached_cluster(&self) -> Option<Cluster> {
        if self.keys.lock().unwrap().is_empty() {
            None
        } else {
            Some(self.cluster())
        }
    }

    async fn read_cluster(&self) -> Result<Cluster, DcsError> {
        if *self.dcs_down.lock().unwrap() {
            return Err(DcsError::Unreachable("test: dcs down".into()));
        }
        Ok(self.cluster())
    }

    fn config(&self) -> Option<DynamicConfig> {
        self.cluster().config.map(|c| c.value)
    }

    async fn patch_config(&self, patch: Value) -> ConfigWrite {
        if let Some(forced) = self.config_write.lock().unwrap().clone() {
            return forced;
        }
        let Some(raw) = self.keys.lock().unwrap().get("config").cloned() else {
            return ConfigWrite::Missing;
        };
        let mut current: Value = serde_json::from_str(&raw).unwrap();
        merge_config_patch(&mut current, &patch);
        self.set_key("config", &current.to_string());
        ConfigWrite::Ok(current)
    }

    async fn put_config(&self, config: Value) -> ConfigWrite {
        if let Some(forced) = self.config_write.lock().unwrap().clone() {
            return forced;
        }
        self.set_key("config", &config.to_string());
        ConfigWrite::Ok(config)
    }

    async fn request_failover(&self, request: Failover) -> Result<(), DcsError> {
        let effect = self.failover_effect.lock().unwrap().clone();
        if let FailoverEffect::WriteFails = effect {
            return Err(DcsError::Unreachable("test: dcs down".into()));
        }
        self.set_key("failover", &request.to_json());
        self.failovers.lock().unwrap().push(request);
        let keys = self.keys.clone();
        match effect {
            FailoverEffect::LeaderBecomes(name, after) => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    let mut k = keys.lock().unwrap();
                    k.insert("leader".into(), name);
                    k.remove("failover");
                });
            }
            FailoverEffect::Cleared(after) => {
                tokio::spawn(async move {
                    tokio::time::sleep(after).await;
                    keys.lock().unwrap().remove("failover");
                });
            }
            _ => {}
        }
        Ok(())
    }

    async fn cancel_scheduled_switchover(&self) -> CancelSwitchover {
        let scheduled = self
            .cluster()
            .failover_request()
            .is_some_and(|f| f.scheduled_at.is_some());
        if scheduled {
            self.remove_key("failover");
            CancelSwitchover::Deleted
        } else {
            CancelSwitchover::NotScheduled
        }
    }

    async fn probe_member(&self, api_url: &str) -> Option<Value> {
        self.probes.lock().unwrap().get(api_url).cloned()
    }

    async fn call_member(
        &self,
        api_url: &str,
        endpoint: &str,
        body: Value,
        _timeout: Duration,
    ) -> Result<(u16, String), MemberCallError> {
        self.member_calls
            .lock()
            .unwrap()
            .push((api_url.into(), endpoint.into(), body));
        self.member_answer.lock().unwrap().clone()
    }

    async fn restart(&self, request: RestartRequest) -> RestartOutcome {
        let scheduled = request.schedule.is_some();
        self.restarts.lock().unwrap().push(request);
        if scheduled {
            let mut s = self.scheduled_restart.lock().unwrap();
            if *s {
                return RestartOutcome::AlreadyScheduled;
            }
            *s = true;
            return RestartOutcome::Scheduled;
        }
        self.restart_outcome.lock().unwrap().clone()
    }

    async fn cancel_scheduled_restart(&self) -> bool {
        std::mem::replace(&mut *self.scheduled_restart.lock().unwrap(), false)
    }

    async fn reinitialize(&self, force: bool, from_leader: bool) -> Result<(), ReinitializeError> {
        let mut r = self.reinit.lock().unwrap();
        if !r.is_empty() && !force {
            return Err(RequestError::Refused("reinitialize already in progress".into()).into());
        }
        r.push((force, from_leader));
        Ok(())
    }

    async fn reload(&self) {
        *self.reloads.lock().unwrap() += 1;
    }

    fn wake(&self) {
        *self.wakes.lock().unwrap() += 1;
    }
}

/// A running API server.
pub struct Server {
    pub base: String,
    pub client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

pub async fn start(node: Arc<TestNode>, opts: ApiOptions) -> Server {
    start_with_control(node, opts).await.0
}

pub async fn start_with_control(node: Arc<TestNode>, opts: ApiOptions) -> (Server, ApiControl) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let (app, control) = router_with_control(node, opts);
    tokio::spawn(serve(listener, app, None, async move {
        let _ = rx.await;
    }));
    let server = Server {
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        _stop: tx,
    };
    (server, control)
}

impl Server {
    pub async fn get(&self, path: &str) -> (u16, String) {
        let r = self
            .client
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let (code, body) = self.get(path).await;
        (code, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    pub async fn code(&self, path: &str) -> u16 {
        self.get(path).await.0
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
        auth: Option<(&str, &str)>,
    ) -> (u16, String) {
        let mut rb = self.client.request(method, format!("{}{path}", self.base));
        if let Some(b) = body {
            rb = rb
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        if let Some((u, p)) = auth {
            rb = rb.basic_auth(u, Some(p));
        }
        let r = rb.send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, body: &str) -> (u16, String) {
        self.send(reqwest::Method::POST, path, Some(body), None)
            .await
    }
}
