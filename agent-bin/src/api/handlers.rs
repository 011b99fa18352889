//! Request dispatch: Patroni routes by method and first path segment, and every
//! unknown GET is a health check.

use super::access::{self, check_basic, check_client_cert};
use super::cluster_json::{cluster_json, history_json};
use super::health::{Query, View};
use super::state::{CancelSwitchover, ConfigWrite, FailsafeReply, RestartOutcome, RestartRequest};
use super::{merge_config_patch, metrics, switchover, ApiOptions, ConnInfo};
use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use ha_core::{DynamicConfig, Role};
use serde_json::{Map, Value};
use std::sync::Arc;

use super::state::NodeApi;

/// Shared state of the router.
pub(crate) struct App {
    pub node: Arc<dyn NodeApi>,
    /// Replaced on SIGHUP through [`super::ApiControl`].
    pub opts: Arc<std::sync::RwLock<ApiOptions>>,
}

impl App {
    /// The options in force for one request.
    pub fn opts(&self) -> ApiOptions {
        self.opts
            .read()
            .map(|o| o.clone())
            .unwrap_or_else(|poisoned| poisoned.into_inner().clone())
    }
}

const MAX_BODY: usize = 1 << 20;

/// A finished answer before extra headers are added.
pub(crate) struct Reply {
    status: u16,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    headers: Vec<(&'static str, String)>,
}

impl Reply {
    pub fn json(status: u16, v: &Value) -> Reply {
        Reply {
            status,
            content_type: Some("application/json"),
            body: serde_json::to_vec(v).unwrap_or_default(),
            headers: Vec::new(),
        }
    }

    pub fn text(status: u16, msg: impl Into<String>) -> Reply {
        Reply {
            status,
            content_type: Some("text/html"),
            body: msg.into().into_bytes(),
            headers: Vec::new(),
        }
    }

    fn status_only(status: u16) -> Reply {
        Reply {
            status,
            content_type: None,
            body: Vec::new(),
            headers: Vec::new(),
        }
    }

    fn with_header(mut self, name: &'static str, value: String) -> Reply {
        self.headers.push((name, value));
        self
    }
}

/// The single entry point.
pub(crate) async fn dispatch(State(app): State<Arc<App>>, req: Request) -> Response {
    let head_like = req.method() == Method::HEAD || req.method() == Method::OPTIONS;
    if req.method() == Method::GET && super::ui::is_events(req.uri().path()) {
        // The dashboard's event stream: a body that never ends, so no `Reply`.
        let mut response = super::ui::events(&app);
        for (k, v) in &app.opts().extra_headers {
            if let (Ok(name), Ok(value)) = (
                header::HeaderName::from_bytes(k.as_bytes()),
                HeaderValue::from_str(v),
            ) {
                response.headers_mut().insert(name, value);
            }
        }
        return response;
    }
    let reply = route(&app, req).await;
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR));
    if let Some(ct) = reply.content_type {
        builder = builder.header(header::CONTENT_TYPE, ct);
    }
    for (k, v) in &reply.headers {
        builder = builder.header(*k, v.as_str());
    }
    for (k, v) in &app.opts().extra_headers {
        if let (Ok(name), Ok(value)) = (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            builder = builder.header(name, value);
        }
    }
    let body = if head_like {
        Body::empty()
    } else {
        Body::from(reply.body)
    };
    builder
        .body(body)
        .unwrap_or_else(|_| Response::new(Body::empty()))
}

async fn route(app: &App, req: Request) -> Reply {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or("")
        .to_ascii_lowercase();
    let conn = req
        .extensions()
        .get::<ConnInfo>()
        .cloned()
        .unwrap_or_default();
    let node = &app.node;

    if method == Method::GET || method == Method::HEAD || method == Method::OPTIONS {
        let status_only = method != Method::GET;
        let view = || View {
            status: node.status(),
            cluster: node.cached_cluster(),
            config: node.config(),
        };
        return match first.as_str() {
            "patroni" => {
                let live = View {
                    status: node.live_status().await,
                    ..view()
                };
                Reply::json(200, &live.status_json())
            }
            "liveness" => Reply::status_only(if view().liveness_ok() { 200 } else { 503 }),
            "readiness" => {
                let q = Query::parse(query.as_deref());
                Reply::status_only(if view().readiness_ok(&q) { 200 } else { 503 })
            }
            "cluster" => match fresh_cluster(app).await {
                Some(c) => Reply::json(200, &cluster_json(&c, &node.status().patroni.scope)),
                None => Reply::text(502, "cluster state is not available"),
            },
            "history" => match fresh_cluster(app).await {
                Some(c) => Reply::json(200, &history_json(&c)),
                None => Reply::text(502, "cluster state is not available"),
            },
            "config" => match current_config(app) {
                Some(c) => Reply::json(200, &c.to_value()),
                None => Reply::status_only(502),
            },
            "metrics" => {
                let mut r = Reply::text(200, metrics::render(&view()));
                r.content_type = Some("text/plain");
                r
            }
            "ui" => match super::ui::asset(&path) {
                Some((body, content_type)) => {
                    let mut r = Reply::text(200, body);
                    r.content_type = Some(content_type);
                    r.with_header("Cache-Control", "no-cache".to_string())
                }
                None => Reply::text(404, "no such page of the dashboard"),
            },
            "failsafe" => match node.last_known_cluster().and_then(|c| c.failsafe) {
                Some(f) => Reply::json(200, &serde_json::to_value(f).unwrap_or(Value::Null)),
                None => Reply::text(502, "failsafe is not available"),
            },
            // Every other GET path is a health check (Patroni's generic handler).
            _ => {
                let mut v = view();
                if v.status.state != "running" {
                    // The HA loop learns that Postgres is up again a moment after
                    // clients do; a check arriving in between asks Postgres itself.
                    v.status = node.checked_status().await;
                }
                let q = Query::parse(query.as_deref());
                let code = v.health_status(&path, &q);
                if status_only {
                    Reply::status_only(code)
                } else {
                    Reply::json(code, &v.status_json())
                }
            }
        };
    }

    // Every other method changes something: access control first.
    let unsafe_method = matches!(
        method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    if !unsafe_method {
        return Reply::text(501, format!("Unsupported method ({method})"));
    }
    let auth_header = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string);
    // The dashboard asks for credentials itself: a browser seeing `WWW-Authenticate`
    // would open its own login box over the page.
    let from_dashboard = req
        .headers()
        .get("x-requested-with")
        .is_some_and(|v| v.as_bytes() == b"fullauto-ui");
    if let Some(denied) =
        check_access(app, auth_header.as_deref(), &conn, first == "failsafe").await
    {
        let mut r = Reply::text(denied.status, denied.message);
        if denied.status == 401 && !from_dashboard {
            r = r.with_header("WWW-Authenticate", "Basic realm=\"Patroni\"".to_string());
        }
        return r;
    }
    let has_length = req.headers().contains_key(header::CONTENT_LENGTH)
        || req.headers().contains_key(header::TRANSFER_ENCODING);
    let bytes = match to_bytes(req.into_body(), MAX_BODY).await {
        Ok(b) => b,
        Err(_) => return Reply::text(413, "request body too large"),
    };
    let body = Body_ {
        bytes: &bytes,
        has_length,
    };
    match (method, first.as_str()) {
        (Method::POST, "switchover") => match body.json(false) {
            Ok(req) => switchover::handle(app, req, false).await,
            Err(r) => r,
        },
        (Method::POST, "failover") => match body.json(false) {
            Ok(req) => switchover::handle(app, req, true).await,
            Err(r) => r,
        },
        (Method::DELETE, "switchover") => match node.cancel_scheduled_switchover().await {
            CancelSwitchover::Deleted => Reply::text(200, "scheduled switchover deleted"),
            CancelSwitchover::NotScheduled => Reply::text(404, "no switchover is scheduled"),
            CancelSwitchover::Conflict => Reply::text(409, "Failed to delete scheduled switchover"),
        },
        (Method::POST, "restart") => match body.json(true) {
            Ok(req) => restart(app, req).await,
            Err(r) => r,
        },
        (Method::DELETE, "restart") => {
            if node.cancel_scheduled_restart().await {
                Reply::text(200, "scheduled restart deleted")
            } else {
                Reply::text(404, "no restarts are scheduled")
            }
        }
        (Method::POST, "reinitialize") => match body.json(true) {
            Ok(req) => reinitialize(app, req).await,
            Err(r) => r,
        },
        // The dashboard restarting or reinitializing any member.
        (Method::POST, "ui") => match body.json(false) {
            Ok(req) => super::ui::act(app, &path, req).await,
            Err(r) => r,
        },
        (Method::POST, "reload") => {
            node.reload().await;
            Reply::text(202, "reload scheduled")
        }
        (Method::PATCH, "config") => match body.json(false) {
            Ok(req) => patch_config(app, req).await,
            Err(r) => r,
        },
        (Method::PUT, "config") => match body.json(false) {
            Ok(req) => put_config(app, req).await,
            Err(r) => r,
        },
        (Method::POST, "failsafe") => match body.json(false) {
            Ok(req) => match node.failsafe_heartbeat(Value::Object(req)).await {
                FailsafeReply::Disabled => Reply::text(502, "failsafe mode is not enabled"),
                FailsafeReply::RunningAsLeader => Reply::text(500, "Running as a leader"),
                FailsafeReply::Accepted(lsn) => {
                    let r = Reply::text(200, "Accepted");
                    match lsn {
                        Some(l) => r.with_header("lsn", l.to_string()),
                        None => r,
                    }
                }
            },
            Err(r) => r,
        },
        (m, _) => Reply::text(501, format!("Unsupported method ({m})")),
    }
}

struct Body_<'a> {
    bytes: &'a [u8],
    has_length: bool,
}

impl Body_<'_> {
    /// Reads a JSON object body as Patroni does: missing length ⇒ 411 unless the
    /// body is optional; empty, invalid or non-object ⇒ 400.
    fn json(&self, optional: bool) -> Result<Map<String, Value>, Reply> {
        if self.bytes.is_empty() {
            if optional {
                return Ok(Map::new());
            }
            if !self.has_length {
                return Err(Reply::text(411, "Length Required"));
            }
            return Err(Reply::text(400, "Bad Request: empty body"));
        }
        match serde_json::from_slice::<Value>(self.bytes) {
            Ok(Value::Object(m)) if !m.is_empty() || optional => Ok(m),
            Ok(_) => Err(Reply::text(
                400,
                "Bad Request: the body must be a non-empty JSON object",
            )),
            Err(e) => Err(Reply::text(400, format!("Bad Request: invalid JSON: {e}"))),
        }
    }
}

async fn check_access(
    app: &App,
    auth_header: Option<&str>,
    conn: &ConnInfo,
    is_failsafe: bool,
) -> Option<access::Denied> {
    let o = &app.opts();
    let include_members = o.allowlist_include_members && !is_failsafe;
    if !o.allowlist.is_empty() || include_members {
        let mut entries = o.allowlist.clone();
        if include_members {
            if let Some(c) = app.node.cached_cluster() {
                entries.extend(
                    c.members
                        .iter()
                        .filter_map(|m| m.data.api_url.as_deref().and_then(access::url_host)),
                );
            }
        }
        let allowed = match conn.peer {
            Some(peer) => access::ip_allowed(peer.ip(), &entries).await,
            None => false,
        };
        if !allowed {
            return Some(access::Denied {
                status: 403,
                message: "Access is denied",
            });
        }
    }
    if let Err(d) = check_client_cert(o.tls, o.verify_client, conn.client_cert) {
        return Some(d);
    }
    check_basic(o.auth.as_ref(), auth_header).err()
}

pub(crate) async fn fresh_cluster(app: &App) -> Option<ha_core::Cluster> {
    match app.node.read_cluster().await {
        Ok(c) => Some(c),
        Err(_) => app.node.cached_cluster(),
    }
}

fn current_config(app: &App) -> Option<DynamicConfig> {
    app.node.config().or_else(|| {
        app.node
            .cached_cluster()
            .and_then(|c| c.config.map(|v| v.value))
    })
}

/// Checks a whole dynamic config before it is written: it must parse and its
/// timing must be safe.
fn validate_dynamic(v: &Value) -> Result<(), String> {
    let c: DynamicConfig = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
    let problems = c.validate();
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// `400` naming every key of a `PATCH`/`PUT /config` body that fullauto refuses
/// (the key table's dynamic refusals), so it is never stored and ignored.
fn refused_keys(body: &Value) -> Option<Reply> {
    let refused = crate::config::keys::dynamic_refusals(body);
    (!refused.is_empty()).then(|| {
        let lines: Vec<String> = refused
            .iter()
            .map(|p| format!("{}: {}", p.path, p.message))
            .collect();
        Reply::text(400, format!("invalid configuration: {}", lines.join("; ")))
    })
}

async fn patch_config(app: &App, patch: Map<String, Value>) -> Reply {
    let patch = Value::Object(patch);
    if let Some(r) = refused_keys(&patch) {
        return r;
    }
    if let Some(current) = current_config(app) {
        let mut merged = serde_json::to_value(current).unwrap_or(Value::Null);
        merge_config_patch(&mut merged, &patch);
        if let Err(e) = validate_dynamic(&merged) {
            return Reply::text(400, format!("invalid configuration: {e}"));
        }
    }
    let out = app.node.patch_config(patch).await;
    app.node.wake();
    match out {
        ConfigWrite::Ok(v) => Reply::json(200, &v),
        ConfigWrite::Conflict => Reply::text(409, "Conflict"),
        ConfigWrite::Missing => Reply::text(503, "Service Unavailable: config is not in the DCS"),
        ConfigWrite::WriteFailed(e) => Reply::text(503, format!("failed to write config: {e}")),
    }
}

async fn put_config(app: &App, config: Map<String, Value>) -> Reply {
    let config = Value::Object(config);
    if let Some(r) = refused_keys(&config) {
        return r;
    }
    if let Err(e) = validate_dynamic(&config) {
        return Reply::text(400, format!("invalid configuration: {e}"));
    }
    let out = app.node.put_config(config.clone()).await;
    app.node.wake();
    match out {
        ConfigWrite::Ok(_) => Reply::json(200, &config),
        ConfigWrite::Conflict | ConfigWrite::Missing => Reply::status_only(502),
        ConfigWrite::WriteFailed(e) => Reply::text(502, format!("failed to write config: {e}")),
    }
}

/// `15.2` ⇒ 150002, `9.6.3` ⇒ 90603, as Postgres numbers versions.
pub fn postgres_version_to_int(text: &str) -> Option<u32> {
    let parts: Vec<u32> = text
        .trim()
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<_>>()?;
    match parts.as_slice() {
        [major, minor] if *major >= 10 => Some(major * 10000 + minor),
        [major, mid, minor] if *major < 10 => Some(major * 10000 + mid * 100 + minor),
        [major, mid] if *major < 10 => Some(major * 10000 + mid * 100),
        _ => None,
    }
}

/// `POST /restart` on this member.
pub(crate) async fn restart(app: &App, req: Map<String, Value>) -> Reply {
    let mut r = RestartRequest::default();
    for (k, v) in &req {
        match k.as_str() {
            "schedule" => {
                let Some(s) = v.as_str() else {
                    return Reply::text(422, "Unable to parse scheduled timestamp");
                };
                match switchover::parse_schedule(s, "restart") {
                    Ok(t) => r.schedule = Some(t.to_rfc3339()),
                    Err((code, msg)) => return Reply::text(code, msg),
                }
            }
            "role" => {
                let role = v.as_str().unwrap_or("");
                let role = if role == "master" { "primary" } else { role };
                if !matches!(role, "primary" | "standby_leader" | "replica") {
                    return Reply::text(
                        400,
                        "PostgreSQL role should be either primary, standby_leader, or replica",
                    );
                }
                r.role = Some(role.to_string());
            }
            "postgres_version" => {
                let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                if postgres_version_to_int(&text).is_none() {
                    return Reply::text(
                        400,
                        format!(
                            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"
                        ),
                    );
                }
                r.postgres_version = Some(text);
            }
            "timeout" => {
                let secs = match v {
                    Value::Number(n) => n.as_f64(),
                    Value::String(s) => s.trim().trim_end_matches('s').trim().parse().ok(),
                    _ => None,
                };
                match secs {
                    Some(s) if s > 0.0 => r.timeout = Some(s.ceil() as u64),
                    _ => return Reply::text(400, "Timeout should be a positive number of seconds"),
                }
            }
            "restart_pending" => {
                r.restart_pending = matches!(v, Value::Bool(true))
                    || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
            }
            other => {
                return Reply::text(
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                )
            }
        }
    }
    let status = app.node.status();
    if r.schedule.is_some() {
        if status.pause {
            return Reply::text(500, "Can't schedule restart in the paused state");
        }
        return match app.node.restart(r).await {
            RestartOutcome::Scheduled | RestartOutcome::Restarted => {
                Reply::text(202, "Restart scheduled")
            }
            RestartOutcome::AlreadyScheduled => {
                Reply::text(409, "Another restart is already scheduled")
            }
            RestartOutcome::Failed(m) => Reply::text(503, m),
        };
    }
    if !restart_conditions_hold(&status, &r) {
        return Reply::text(503, "restart conditions are not satisfied");
    }
    match app.node.restart(r).await {
        RestartOutcome::Restarted => Reply::text(200, "restarted successfully"),
        RestartOutcome::Failed(m) => Reply::text(503, m),
        RestartOutcome::Scheduled => Reply::text(202, "Restart scheduled"),
        RestartOutcome::AlreadyScheduled => {
            Reply::text(409, "Another restart is already scheduled")
        }
    }
}

/// Patroni's restart filters: role must match, the requested version must be newer
/// than the running one, and `restart_pending` needs a pending restart.
pub fn restart_conditions_hold(status: &super::NodeStatus, r: &RestartRequest) -> bool {
    if let Some(role) = &r.role {
        let mine = match &status.role {
            Role::Primary => "primary",
            Role::StandbyLeader => "standby_leader",
            Role::Replica if status.is_standby_cluster && status.holds_leader_lease => {
                "standby_leader"
            }
            Role::Replica => "replica",
            other => other.as_str(),
        };
        if mine != role {
            return false;
        }
    }
    if let Some(v) = r
        .postgres_version
        .as_deref()
        .and_then(postgres_version_to_int)
    {
        if v <= status.server_version.unwrap_or(0) {
            return false;
        }
    }
    if r.restart_pending && !status.pending_restart {
        return false;
    }
    true
}

/// `POST /reinitialize` on this member.
pub(crate) async fn reinitialize(app: &App, req: Map<String, Value>) -> Reply {
    let flag = |k: &str| {
        req.get(k).is_some_and(|v| {
            matches!(v, Value::Bool(true))
                || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true"))
        })
    };
    let status = app.node.status();
    let cluster = app.node.cached_cluster();
    if cluster.as_ref().is_none_or(|c| c.is_unlocked()) {
        return Reply::text(503, "Cluster has no leader, can not reinitialize");
    }
    if status.holds_leader_lease
        || cluster
            .as_ref()
            .is_some_and(|c| c.is_leader(&status.patroni.name))
    {
        return Reply::text(503, "I am the leader, can not reinitialize");
    }
    match app
        .node
        .reinitialize(flag("force"), flag("from_leader"))
        .await
    {
        Ok(()) => Reply::text(200, "reinitialize started"),
        Err(m) => Reply::text(503, m),
    }
}
