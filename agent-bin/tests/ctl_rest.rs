//! fullautoctl's REST-driven commands against stub member APIs (axum servers that
//! record each request and answer like Patroni), with the cluster view in a real etcd.
//! This checks the requests the ctl sends and how it reports the answers; the real
//! handlers are exercised end to end with running agents elsewhere.

mod ctl_support;

use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use ctl_support::{run_ctl, seed, Env, Out};
use ha_core::{Dcs, Failover};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// One request a stub received.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    body: String,
    auth: Option<String>,
}

impl Seen {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct StubState {
    seen: Mutex<Vec<Seen>>,
    answers: Mutex<HashMap<(String, String), (u16, String)>>,
}

/// A member API on 127.0.0.1 that records requests.
struct Stub {
    port: u16,
    state: Arc<StubState>,
    task: tokio::task::JoinHandle<()>,
}

async fn handle(
    State(s): State<Arc<StubState>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: String,
) -> (StatusCode, String) {
    s.seen.lock().unwrap().push(Seen {
        method: method.to_string(),
        path: uri.path().to_string(),
        body,
        auth: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
    });
    let key = (method.to_string(), uri.path().to_string());
    let (code, text) = s.answers.lock().unwrap().get(&key).cloned().unwrap_or_else(|| {
        if uri.path() == "/patroni" {
            (200, json!({"state": "running", "server_version": 150004, "patroni": {"version": "0.1.0", "scope": "arkham"}}).to_string())
        } else {
            (200, "OK".to_string())
        }
    });
    (StatusCode::from_u16(code).unwrap(), text)
}

impl Stub {
    /// An HTTPS stub served by the agent's own TLS stack.
    async fn start_tls(tls: Arc<rustls::ServerConfig>) -> Stub {
        let state = Arc::new(StubState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = agent_bin::api::serve(listener, app, Some(tls), std::future::pending()).await;
        });
        Stub { port, state, task }
    }

    async fn start() -> Stub {
        let state = Arc::new(StubState::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Stub { port, state, task }
    }

    fn api_url(&self) -> String {
        format!("http://127.0.0.1:{}/patroni", self.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/patroni", self.port)
    }

    fn answer(&self, method: &str, path: &str, code: u16, body: &str) {
        self.state.answers.lock().unwrap().insert(
            (method.to_string(), path.to_string()),
            (code, body.to_string()),
        );
    }

    /// The requests received since the last call (GET /patroni probes included).
    fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut *self.state.seen.lock().unwrap())
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

const BASIC: &str = "Basic YWRtaW46c2VjcmV0"; // admin:secret

struct Fixture {
    env: Env,
    stubs: Vec<Stub>,
    members: Vec<dcs_etcd::EtcdDcs>,
    config: String,
}

impl Fixture {
    async fn new() -> Fixture {
        let env = Env::start();
        let stubs = vec![
            Stub::start().await,
            Stub::start().await,
            Stub::start().await,
        ];
        let urls: Vec<String> = stubs.iter().map(Stub::api_url).collect();
        let members = seed(
            &env,
            "arkham",
            [&urls[0], &urls[1], &urls[2]],
            r#"{"ttl":30,"loop_wait":10,"retry_timeout":10}"#,
        )
        .await;
        // The ctl's config: scope, DCS and the credentials for unsafe requests.
        let config = env.file(
            "patronictl.yaml",
            &format!(
                "scope: arkham\netcd3:\n  hosts: [{}]\nrestapi:\n  authentication:\n    username: nobody\n    password: wrong\nctl:\n  authentication:\n    username: admin\n    password: secret\n",
                env.host
            ),
        );
        Fixture {
            env,
            stubs,
            members,
            config,
        }
    }

    async fn ctl(&self, args: &[&str], stdin: &str) -> Out {
        let mut all = vec!["-c", self.config.as_str()];
        all.extend_from_slice(args);
        run_ctl(&all, stdin, self.env.home.path(), &[]).await
    }

    /// The non-GET requests each stub received since the last call.
    fn actions(&self) -> Vec<Vec<Seen>> {
        self.stubs
            .iter()
            .map(|s| s.take().into_iter().filter(|r| r.method != "GET").collect())
            .collect()
    }
}

fn only<'a>(reqs: &'a [Seen], method: &str, path: &str) -> &'a Seen {
    assert_eq!(reqs.len(), 1, "one request expected: {reqs:?}");
    assert_eq!(
        (reqs[0].method.as_str(), reqs[0].path.as_str()),
        (method, path)
    );
    assert_eq!(
        reqs[0].auth.as_deref(),
        Some(BASIC),
        "ctl.authentication is sent"
    );
    &reqs[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_failover_requests() {
    let f = Fixture::new().await;
    f.stubs[0].answer(
        "POST",
        "/switchover",
        200,
        "Successfully switched over to \"pg1\"",
    );

    // Forced: no questions, POST /switchover to the leader's API.
    let out = f
        .ctl(&["switchover", "--candidate", "pg1", "--force"], "")
        .await;
    out.ok();
    assert!(
        out.stdout
            .starts_with("Current cluster topology\n+ Cluster: arkham ("),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains(" Successfully switched over to \"pg1\"\n"),
        "{}",
        out.stdout
    );
    let a = f.actions();
    assert_eq!(
        only(&a[0], "POST", "/switchover").json(),
        json!({"leader": "pg0", "candidate": "pg1"})
    );
    assert!(a[1].is_empty() && a[2].is_empty());

    // Interactive, with piped answers: primary (default), candidate, when, confirm.
    let out = f.ctl(&["switchover", "arkham"], "\npg1\nnow\ny\n").await;
    out.ok();
    assert!(out.stdout.contains("Primary [pg0]: "), "{}", out.stdout);
    assert!(
        out.stdout.contains("Candidate ['pg1']: "),
        "pg2 is nofailover: {}",
        out.stdout
    );
    assert!(out.stdout.contains("Are you sure you want to switchover cluster arkham, demoting current leader pg0? [y/N]: "), "{}", out.stdout);
    assert_eq!(
        only(&f.actions()[0], "POST", "/switchover").json(),
        json!({"leader": "pg0", "candidate": "pg1"})
    );
    // Declined, or no answers at all: nothing is sent.
    f.ctl(&["switchover"], "\npg1\nnow\nn\n")
        .await
        .fails_with("Aborting switchover");
    f.ctl(&["switchover"], "")
        .await
        .fails_with("no answer to \"Primary\"");
    assert!(f.actions()[0].is_empty());
    f.ctl(&["switchover", "--candidate", "pg2", "--force"], "")
        .await
        .fails_with("Member pg2 does not exist in cluster arkham or is tagged as nofailover");

    // Scheduled.
    f.stubs[0].answer("POST", "/switchover", 202, "Switchover scheduled");
    let out = f
        .ctl(
            &[
                "switchover",
                "--candidate",
                "pg1",
                "--scheduled",
                "2030-01-01T10:00+00:00",
                "--force",
            ],
            "",
        )
        .await;
    out.ok();
    assert!(out.stdout.contains(" Switchover scheduled\n"));
    assert_eq!(
        only(&f.actions()[0], "POST", "/switchover").json(),
        json!({"leader": "pg0", "candidate": "pg1", "scheduled_at": "2030-01-01T10:00:00+00:00"})
    );

    // Refused by the member: reported with the status, non-zero exit.
    f.stubs[0].answer(
        "POST",
        "/switchover",
        412,
        "candidate name does not match with sync_standby",
    );
    f.ctl(&["switchover", "--candidate", "pg1", "--force"], "")
        .await
        .fails_with(
            "Switchover failed, details: 412, candidate name does not match with sync_standby",
        );
    f.actions();

    // failover: POST /failover with the candidate only.
    f.stubs[0].answer(
        "POST",
        "/failover",
        200,
        "Successfully failed over to \"pg1\"",
    );
    let out = f
        .ctl(&["failover", "--candidate", "pg1", "--force"], "")
        .await;
    out.ok();
    assert!(out.stdout.contains("Successfully failed over to \"pg1\""));
    assert_eq!(
        only(&f.actions()[0], "POST", "/failover").json(),
        json!({"candidate": "pg1"})
    );
    f.ctl(&["failover", "--force"], "")
        .await
        .fails_with("Failover could be performed only to a specific candidate");

    // The leader's API is gone: the request is written into the failover key.
    let leader_stub = &f.stubs[0];
    leader_stub.task.abort();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let out = f
        .ctl(&["switchover", "--candidate", "pg1", "--force"], "")
        .await;
    out.ok();
    assert!(
        out.stdout
            .contains("Could not switchover using Patroni api, falling back to DCS"),
        "{}",
        out.stdout
    );
    let fo = f.members[0]
        .get_cluster()
        .await
        .unwrap()
        .failover
        .unwrap()
        .value;
    assert_eq!(
        fo,
        Failover {
            leader: Some("pg0".into()),
            member: Some("pg1".into()),
            scheduled_at: None
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_action_requests() {
    let f = Fixture::new().await;

    // restart one member with conditions.
    f.stubs[1].answer("POST", "/restart", 200, "restarted successfully");
    let out = f
        .ctl(
            &[
                "restart",
                "arkham",
                "pg1",
                "--force",
                "--pending",
                "--pg-version",
                "15.4",
                "--timeout",
                "30",
            ],
            "",
        )
        .await;
    out.ok();
    assert!(
        out.stdout.ends_with("Success: restart on member pg1\n"),
        "{}",
        out.stdout
    );
    let a = f.actions();
    assert_eq!(
        only(&a[1], "POST", "/restart").json(),
        json!({"restart_pending": true, "postgres_version": "15.4", "timeout": "30"})
    );
    assert!(a[0].is_empty() && a[2].is_empty());

    // restart interactively: member, time, version, confirmation.
    let out = f.ctl(&["restart", "arkham"], "pg1\nnow\n\ny\n").await;
    out.ok();
    assert!(
        out.stdout
            .contains("Which member do you want to restart [pg0, pg1, pg2]?"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("Are you sure you want to restart members pg1? [y/N]: "),
        "{}",
        out.stdout
    );
    assert_eq!(only(&f.actions()[1], "POST", "/restart").json(), json!({}));

    // Scheduled restart of every replica.
    for s in &f.stubs[1..] {
        s.answer("POST", "/restart", 202, "Restart scheduled");
    }
    let out = f
        .ctl(
            &[
                "restart",
                "arkham",
                "--role",
                "replica",
                "--scheduled",
                "2030-01-01T10:00:00+00:00",
                "--force",
            ],
            "",
        )
        .await;
    out.ok();
    assert!(
        out.stdout.contains(
            "Success: restart scheduled on member pg1\nSuccess: restart scheduled on member pg2\n"
        ),
        "{}",
        out.stdout
    );
    let a = f.actions();
    assert!(a[0].is_empty());
    for r in &a[1..] {
        assert_eq!(
            only(r, "POST", "/restart").json(),
            json!({"schedule": "2030-01-01T10:00:00+00:00"})
        );
    }

    // A refused restart: the member's answer, and a failing exit.
    f.stubs[2].answer(
        "POST",
        "/restart",
        503,
        "restart conditions are not satisfied",
    );
    let out = f.ctl(&["restart", "arkham", "pg2", "--force"], "").await;
    out.fails_with("restart failed on 1 of 1 members");
    assert!(out.stdout.contains("Failed: restart for member pg2, status code=503, (restart conditions are not satisfied)"), "{}", out.stdout);
    f.actions();

    // reinit: replicas only.
    f.stubs[1].answer("POST", "/reinitialize", 200, "reinitialize started");
    let out = f.ctl(&["reinit", "arkham", "pg1", "--force"], "").await;
    out.ok();
    assert!(
        out.stdout
            .ends_with("Success: reinitialize for member pg1\n"),
        "{}",
        out.stdout
    );
    assert_eq!(
        only(&f.actions()[1], "POST", "/reinitialize").json(),
        json!({"force": true, "from_leader": false})
    );
    // --from-leader: the base backup comes from the leader.
    let out = f
        .ctl(&["reinit", "arkham", "pg1", "--force", "--from-leader"], "")
        .await;
    out.ok();
    assert_eq!(
        only(&f.actions()[1], "POST", "/reinitialize").json(),
        json!({"force": true, "from_leader": true})
    );
    f.ctl(&["reinit", "arkham", "pg0", "--force"], "")
        .await
        .fails_with("pg0 is not a member of cluster");
    // Already running: asked whether to cancel it, then sent again with force.
    f.stubs[1].answer(
        "POST",
        "/reinitialize",
        503,
        "reinitialize already in progress",
    );
    let out = f.ctl(&["reinit", "arkham", "pg1"], "y\ny\n").await;
    assert!(
        out.stdout
            .contains("Do you want to cancel it and reinitialize anyway? [y/N]: "),
        "{}",
        out.stdout
    );
    let a = f.actions();
    assert_eq!(a[1].len(), 2, "{:?}", a[1]);
    assert_eq!(
        a[1][0].json(),
        json!({"force": false, "from_leader": false})
    );
    assert_eq!(a[1][1].json(), json!({"force": true, "from_leader": false}));

    // reload.
    f.stubs[2].answer("POST", "/reload", 202, "reload scheduled");
    let out = f.ctl(&["reload", "arkham", "pg2", "--force"], "").await;
    out.ok();
    assert!(
        out.stdout.ends_with(
            "Reload request received for member pg2 and will be processed within 10 seconds\n"
        ),
        "{}",
        out.stdout
    );
    only(&f.actions()[2], "POST", "/reload");

    // flush a scheduled switchover: DELETE /switchover on the leader.
    let scheduled = Failover {
        leader: Some("pg0".into()),
        member: Some("pg1".into()),
        scheduled_at: Some("2030-01-01T10:00:00+00:00".into()),
    };
    assert!(f.members[0].set_failover(&scheduled, None).await.unwrap());
    let out = f.ctl(&["list"], "").await;
    assert!(
        out.stdout
            .contains(" Switchover scheduled at: 2030-01-01T10:00:00+00:00\n"),
        "{}",
        out.stdout
    );
    f.stubs[0].answer("DELETE", "/switchover", 200, "scheduled switchover deleted");
    let out = f.ctl(&["flush", "arkham", "switchover"], "").await;
    out.ok();
    assert_eq!(out.stdout, "Success: scheduled switchover deleted\n");
    only(&f.actions()[0], "DELETE", "/switchover");
    let out = f
        .ctl(&["flush", "arkham", "pg1", "restart", "--force"], "")
        .await;
    out.ok();
    assert!(
        out.stdout
            .ends_with("No scheduled restart for member pg1\n"),
        "{}",
        out.stdout
    );
    f.ctl(&["flush", "arkham", "later"], "")
        .await
        .fails_with("invalid flush target \"later\"");

    // pause through the leader's API: PATCH /config; the ctl itself writes nothing.
    let version = f.members[0]
        .get_cluster()
        .await
        .unwrap()
        .config
        .unwrap()
        .version;
    let out = f.ctl(&["pause"], "").await;
    out.ok();
    assert_eq!(out.stdout, "Success: cluster management is paused\n");
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    assert_eq!(
        only(&f.actions()[0], "PATCH", "/config").json(),
        json!({"pause": true})
    );
    assert_eq!(
        f.members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .version,
        version
    );
    f.stubs[0].answer("PATCH", "/config", 503, "config is not available");
    f.ctl(&["pause"], "")
        .await
        .fails_with("Failed: pause cluster management status code=503, (config is not available)");

    // version of every member.
    let out = f.ctl(&["version", "arkham"], "").await;
    out.ok();
    assert!(
        out.stdout.contains("pg0: Patroni 0.1.0 PostgreSQL 15.4\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("pg2: Patroni 0.1.0 PostgreSQL 15.4\n"),
        "{}",
        out.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_apis_over_tls_with_client_certificates() {
    let env = Env::start();
    let certs = dcs_etcd::testing::TestCerts::generate(&env.home.path().join("certs")).unwrap();
    let p = |x: &std::path::Path| x.to_string_lossy().into_owned();
    let server = agent_bin::config::RestApiConfig {
        certfile: Some(p(&certs.server_cert)),
        keyfile: Some(p(&certs.server_key)),
        cafile: Some(p(&certs.ca)),
        verify_client: agent_bin::config::VerifyClient::Required,
        ..Default::default()
    };
    let tls = agent_bin::api::load_server_tls(&server).unwrap().unwrap();
    let stubs = [
        Stub::start_tls(tls.clone()).await,
        Stub::start_tls(tls.clone()).await,
        Stub::start_tls(tls).await,
    ];
    let urls: Vec<String> = stubs.iter().map(Stub::https_url).collect();
    let _members = seed(&env, "tls", [&urls[0], &urls[1], &urls[2]], r#"{"ttl":30}"#).await;
    let config = |ctl: &str| {
        env.file(
            "tls.yaml",
            &format!("scope: tls\netcd3:\n  host: {}\nctl:\n{ctl}", env.host),
        )
    };
    let run = |file: String, args: Vec<&'static str>| {
        let home = env.home.path().to_path_buf();
        async move {
            let mut all = vec!["-c".to_string(), file];
            all.extend(args.iter().map(|a| a.to_string()));
            let all: Vec<&str> = all.iter().map(String::as_str).collect();
            run_ctl(&all, "", &home, &[]).await
        }
    };

    // CA and client certificate from `ctl`: GET and PATCH over HTTPS work.
    let full = config(&format!(
        "  cacert: {}\n  certfile: {}\n  keyfile: {}\n  authentication:\n    username: admin\n    password: secret\n",
        p(&certs.ca),
        p(&certs.client_cert),
        p(&certs.client_key)
    ));
    let out = run(full.clone(), vec!["version", "tls"]).await;
    out.ok();
    assert!(
        out.stdout.contains("pg0: Patroni 0.1.0 PostgreSQL 15.4\n"),
        "{}",
        out.stdout
    );
    let out = run(full, vec!["pause"]).await;
    out.ok();
    let seen: Vec<Seen> = stubs[0]
        .take()
        .into_iter()
        .filter(|r| r.method == "PATCH")
        .collect();
    only(&seen, "PATCH", "/config");

    // Without the CA the server certificate is refused.
    let no_ca = config(&format!(
        "  certfile: {}\n  keyfile: {}\n",
        p(&certs.client_cert),
        p(&certs.client_key)
    ));
    let out = run(no_ca, vec!["version", "tls"]).await;
    out.ok();
    assert!(
        out.stdout.contains("pg0: failed to get version:"),
        "{}",
        out.stdout
    );

    // -k skips the server check, but the member still demands a client certificate.
    let no_client = config("  insecure: false\n");
    let out = run(no_client.clone(), vec!["-k", "version", "tls"]).await;
    assert!(
        out.stdout.contains("pg0: failed to get version:"),
        "{}",
        out.stdout
    );
    // A CA that signed nothing here: refused too.
    let wrong_ca = config(&format!(
        "  cacert: {}\n  certfile: {}\n  keyfile: {}\n",
        p(&certs.other_ca),
        p(&certs.client_cert),
        p(&certs.client_key)
    ));
    let out = run(wrong_ca, vec!["version", "tls"]).await;
    assert!(
        out.stdout.contains("pg1: failed to get version:"),
        "{}",
        out.stdout
    );
    // An unreadable client certificate is a config error, said once.
    let missing = config("  certfile: /nonexistent/client.pem\n");
    run(missing, vec!["pause"])
        .await
        .fails_with("cannot read client certificate /nonexistent/client.pem");
}
