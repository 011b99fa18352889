//! The emulator's HTTP surface: Consul's routes, parameters, status codes,
//! headers and JSON field names, on top of [`super::state::Store`].

// Helpers fail with the finished error response, built once per failed request;
// boxing it would only add an allocation.
#![allow(clippy::result_large_err)]

use super::duration;
use super::state::{ApiError, Behavior, Entry, NewSession, PutOptions, Session};
use super::Shared;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::Router;
use base64::Engine as _;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Largest value Consul accepts by default (`kv_max_value_size`).
const MAX_VALUE_SIZE: usize = 512 * 1024;
/// Blocking-query wait when none is given, and the longest allowed.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Default session lock-delay.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

type AppState = State<Arc<Shared>>;
type Params = Query<Vec<(String, String)>>;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/session/create", put(session_create))
        .route("/v1/session/renew/{id}", put(session_renew))
        .route("/v1/session/destroy/{id}", put(session_destroy))
        .route("/v1/session/info/{id}", get(session_info))
        .route("/v1/session/list", get(session_list))
        .route("/v1/status/leader", get(status_leader))
        .route("/v1/agent/service/register", put(service_register))
        .route(
            "/v1/agent/service/deregister/{*id}",
            put(service_deregister),
        )
        .route("/v1/agent/services", get(agent_services))
        .route(
            "/v1/kv/{*key}",
            get(kv_get_path).put(kv_put_path).delete(kv_delete_path),
        )
        .route("/v1/kv/", get(kv_get_root).delete(kv_delete_root))
        .route("/v1/kv", get(kv_get_root).delete(kv_delete_root))
        .with_state(shared)
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn has(params: &[(String, String)], name: &str) -> bool {
    params.iter().any(|(k, _)| k == name)
}

fn error(status: u16, message: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        message.into(),
    )
        .into_response()
}

fn api_error(e: ApiError) -> Response {
    error(e.status, e.message)
}

/// JSON answer with the headers Consul puts on every read.
fn json_with_index(status: StatusCode, body: Value, index: u64) -> Response {
    let mut response = (status, axum::Json(body)).into_response();
    add_index_headers(response.headers_mut(), index);
    response
}

fn add_index_headers(headers: &mut HeaderMap, index: u64) {
    headers.insert("X-Consul-Index", HeaderValue::from(index));
    headers.insert("X-Consul-KnownLeader", HeaderValue::from_static("true"));
    headers.insert("X-Consul-LastContact", HeaderValue::from_static("0"));
}

fn json_bool(ok: bool) -> Response {
    axum::Json(Value::Bool(ok)).into_response()
}

/// Checks the frozen flag, ACL token and datacenter common to every endpoint.
async fn admit(
    shared: &Shared,
    headers: &HeaderMap,
    params: &[(String, String)],
) -> Result<(), Response> {
    shared.wait_unfrozen().await;
    let config = shared.config();
    if let Some(dc) = param(params, "dc") {
        if !dc.is_empty() && dc != config.datacenter {
            return Err(error(500, "No path to datacenter"));
        }
    }
    let Some(required) = config.acl_token.as_deref() else {
        return Ok(());
    };
    let presented = headers
        .get("X-Consul-Token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| {
            headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(|v| v.trim().to_string())
        })
        .or_else(|| param(params, "token").map(str::to_string))
        .filter(|t| !t.is_empty());
    match presented {
        None => Err(error(403, "Permission denied")),
        Some(t) if t == required => Ok(()),
        Some(_) => Err(error(403, "ACL not found")),
    }
}

// ------------------------------------------------------------------- sessions

fn session_json(s: &Session) -> Value {
    json!({
        "ID": s.id,
        "Name": s.name,
        "Node": s.node,
        "LockDelay": s.lock_delay.as_nanos() as u64,
        "Behavior": s.behavior.as_str(),
        "TTL": s.ttl.map(duration::format).unwrap_or_default(),
        "NodeChecks": s.node_checks,
        "ServiceChecks": if s.service_checks.is_empty() { Value::Null } else { json!(s.service_checks) },
        "CreateIndex": s.create_index,
        "ModifyIndex": s.modify_index,
    })
}

fn string_list(value: Option<&Value>, field: &str) -> Result<Option<Vec<String>>, Response> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| match item {
                Value::String(s) => Ok(s.clone()),
                // ServiceChecks entries are objects with an ID.
                Value::Object(o) => o
                    .get("ID")
                    .and_then(Value::as_str)
                    .map(str::to_string)
                    .ok_or_else(|| error(400, format!("Request decode failed: bad {field}"))),
                _ => Err(error(400, format!("Request decode failed: bad {field}"))),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(error(400, format!("Request decode failed: bad {field}"))),
    }
}

fn parse_session_request(shared: &Shared, body: &[u8]) -> Result<NewSession, Response> {
    let body: Value = if body.iter().all(u8::is_ascii_whitespace) {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| error(400, format!("Request decode failed: {e}")))?
    };
    let Some(obj) = body.as_object() else {
        return Err(error(400, "Request decode failed: not an object"));
    };
    let text = |field: &str| -> Result<String, Response> {
        match obj.get(field) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(error(
                400,
                format!("Request decode failed: {field} must be a string"),
            )),
        }
    };
    let name = text("Name")?;
    let node = match text("Node")? {
        n if n.is_empty() => shared.store().node().to_string(),
        n => n,
    };
    let behavior = match text("Behavior")?.as_str() {
        "" | "release" => Behavior::Release,
        "delete" => Behavior::Delete,
        other => return Err(error(400, format!("Invalid Behavior setting '{other}'"))),
    };
    let ttl = match text("TTL")?.as_str() {
        "" => None,
        raw => {
            let ttl = duration::parse(raw)
                .ok_or_else(|| error(400, format!("Request decode failed: invalid TTL '{raw}'")))?;
            if ttl.is_zero() {
                None
            } else {
                let (min, max) = shared.store().ttl_bounds();
                if ttl < min || ttl > max {
                    return Err(error(
                        400,
                        format!(
                            "Invalid Session TTL '{}', must be between [{}={}]",
                            duration::format(ttl),
                            duration::format(min),
                            duration::format(max)
                        ),
                    ));
                }
                Some(ttl)
            }
        }
    };
    let lock_delay = match obj.get("LockDelay") {
        None | Some(Value::Null) => DEFAULT_LOCK_DELAY,
        Some(Value::String(raw)) => duration::parse(raw).ok_or_else(|| {
            error(
                400,
                format!("Request decode failed: invalid LockDelay '{raw}'"),
            )
        })?,
        // Numbers below 1000 are seconds (old clients), larger ones nanoseconds.
        Some(Value::Number(n)) => match n.as_f64() {
            Some(v) if (0.0..1000.0).contains(&v) => Duration::from_secs_f64(v),
            Some(v) if v >= 1000.0 && v.is_finite() => Duration::from_nanos(v as u64),
            _ => return Err(error(400, "Request decode failed: invalid LockDelay")),
        },
        Some(_) => return Err(error(400, "Request decode failed: invalid LockDelay")),
    };
    let checks = string_list(obj.get("Checks"), "Checks")?;
    let node_checks = string_list(obj.get("NodeChecks"), "NodeChecks")?;
    let service_checks = string_list(obj.get("ServiceChecks"), "ServiceChecks")?;
    let node_checks = match (checks, node_checks) {
        (None, None) => vec!["serfHealth".to_string()],
        (a, b) => {
            let mut all = a.unwrap_or_default();
            for c in b.unwrap_or_default() {
                if !all.contains(&c) {
                    all.push(c);
                }
            }
            all
        }
    };
    Ok(NewSession {
        name,
        node,
        node_checks,
        service_checks: service_checks.unwrap_or_default(),
        behavior,
        ttl,
        lock_delay,
    })
}

async fn session_create(
    State(shared): AppState,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let request = match parse_session_request(&shared, &body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let id = uuid::Uuid::new_v4().to_string();
    let created = shared.store().create_session(id, request, Instant::now());
    match created {
        Ok(id) => {
            shared.published();
            shared.session_created();
            axum::Json(json!({ "ID": id })).into_response()
        }
        Err(e) => api_error(e),
    }
}

async fn session_renew(
    State(shared): AppState,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let (renewed, index) = {
        let mut store = shared.store();
        (store.renew_session(&id, Instant::now()), store.index())
    };
    match renewed {
        Some(s) => json_with_index(StatusCode::OK, json!([session_json(&s)]), index),
        None => error(404, format!("Session id '{id}' not found")),
    }
}

async fn session_destroy(
    State(shared): AppState,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let existed = shared.store().invalidate_session(&id, Instant::now());
    if existed {
        shared.published();
    }
    json_bool(true)
}

async fn session_info(
    State(shared): AppState,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let store = shared.store();
    let found: Vec<Value> = store.session(&id).map(session_json).into_iter().collect();
    json_with_index(StatusCode::OK, Value::Array(found), store.index())
}

async fn session_list(
    State(shared): AppState,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let store = shared.store();
    let all: Vec<Value> = store.sessions().map(session_json).collect();
    json_with_index(StatusCode::OK, Value::Array(all), store.index())
}

async fn status_leader(State(shared): AppState) -> Response {
    shared.wait_unfrozen().await;
    axum::Json(json!("127.0.0.1:8300")).into_response()
}

// -------------------------------------------------------------- agent services

/// The registration fields the emulator knows, in Consul's spelling.
const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "Check",
    "Checks",
    "EnableTagOverride",
];

async fn service_register(
    State(shared): AppState,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let Ok(Value::Object(raw)) = serde_json::from_slice::<Value>(&body) else {
        return error(400, "Request decode failed: expected a JSON object");
    };
    // Consul decodes field names case-insensitively.
    let mut service = serde_json::Map::new();
    for (k, v) in raw {
        match SERVICE_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(&k)) {
            Some(f) => service.insert(f.to_string(), v),
            None => return error(400, format!("Request decode failed: unknown field {k:?}")),
        };
    }
    let Some(name) = service
        .get("Name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .map(str::to_string)
    else {
        return error(400, "Missing service name");
    };
    if let Some(Value::Object(check)) = service.get("Check") {
        let field = |f: &str| check.iter().find(|(k, _)| k.eq_ignore_ascii_case(f));
        let probes = field("HTTP").is_some() || field("TCP").is_some();
        let interval = field("Interval")
            .and_then(|(_, v)| v.as_str())
            .and_then(duration::parse)
            .filter(|d| !d.is_zero());
        if probes && interval.is_none() {
            return error(
                400,
                "Invalid check: Interval must be > 0 for Script, HTTP, H2PING, or TCP checks",
            );
        }
    }
    let id = service
        .get("ID")
        .and_then(Value::as_str)
        .filter(|i| !i.is_empty())
        .map(str::to_string)
        .unwrap_or_else(|| name.clone());
    service.insert("ID".into(), Value::String(id.clone()));
    shared.services().insert(id, Value::Object(service));
    StatusCode::OK.into_response()
}

async fn service_deregister(
    State(shared): AppState,
    Path(id): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    if shared.services().remove(&id).is_none() {
        return error(
            404,
            format!(
                "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
            ),
        );
    }
    StatusCode::OK.into_response()
}

async fn agent_services(
    State(shared): AppState,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let datacenter = shared.config().datacenter.clone();
    let listed: serde_json::Map<String, Value> = shared
        .services()
        .iter()
        .map(|(id, s)| {
            let field = |f: &str| s.get(f).cloned();
            (
                id.clone(),
                json!({
                    "ID": id,
                    "Service": field("Name").unwrap_or(Value::Null),
                    "Tags": field("Tags").unwrap_or(json!([])),
                    "Address": field("Address").unwrap_or(json!("")),
                    "Port": field("Port").unwrap_or(json!(0)),
                    "EnableTagOverride": field("EnableTagOverride").unwrap_or(json!(false)),
                    "Datacenter": datacenter,
                }),
            )
        })
        .collect();
    axum::Json(Value::Object(listed)).into_response()
}

// ------------------------------------------------------------------------- kv

fn entry_json(key: &str, e: &Entry) -> Value {
    let mut v = json!({
        "LockIndex": e.lock_index,
        "Key": key,
        "Flags": e.flags,
        "Value": if e.value.is_empty() {
            Value::Null
        } else {
            Value::String(base64::engine::general_purpose::STANDARD.encode(&e.value))
        },
        "CreateIndex": e.create_index,
        "ModifyIndex": e.modify_index,
    });
    if let (Some(session), Some(obj)) = (&e.session, v.as_object_mut()) {
        obj.insert("Session".to_string(), Value::String(session.clone()));
    }
    v
}

fn parse_u64(params: &[(String, String)], name: &str, what: &str) -> Result<Option<u64>, Response> {
    match param(params, name) {
        None => Ok(None),
        Some(raw) => raw
            .parse::<u64>()
            .map(Some)
            .map_err(|_| error(400, format!("Invalid {what}"))),
    }
}

async fn kv_get_path(
    state: AppState,
    Path(key): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Response {
    kv_get(state, key, params, headers).await
}

async fn kv_get_root(state: AppState, params: Params, headers: HeaderMap) -> Response {
    kv_get(state, String::new(), params, headers).await
}

/// What one evaluation of a KV read produced.
struct ReadResult {
    /// `X-Consul-Index` to report.
    index: u64,
    /// The index that must pass the client's to end a blocking wait.
    wake_index: u64,
    response: Response,
}

fn kv_read(shared: &Shared, key: &str, params: &[(String, String)]) -> ReadResult {
    let store = shared.store();
    let recurse = has(params, "recurse");
    let keys_only = has(params, "keys");
    if keys_only {
        let separator = param(params, "separator").filter(|s| !s.is_empty());
        let mut names: Vec<String> = Vec::new();
        for (k, _) in store.list(key) {
            let name = match separator {
                Some(sep) => match k[key.len()..].find(sep) {
                    Some(pos) => k[..key.len() + pos + sep.len()].to_string(),
                    None => k.clone(),
                },
                None => k.clone(),
            };
            if names.last() != Some(&name) {
                names.push(name);
            }
        }
        let index = store.prefix_index(key);
        let response = if names.is_empty() {
            let mut r = StatusCode::NOT_FOUND.into_response();
            add_index_headers(r.headers_mut(), index);
            r
        } else {
            json_with_index(StatusCode::OK, json!(names), index)
        };
        return ReadResult {
            index,
            wake_index: index,
            response,
        };
    }
    if recurse {
        let entries: Vec<Value> = store
            .list(key)
            .into_iter()
            .map(|(k, e)| entry_json(k, e))
            .collect();
        let index = store.prefix_index(key);
        let response = if entries.is_empty() {
            let mut r = StatusCode::NOT_FOUND.into_response();
            add_index_headers(r.headers_mut(), index);
            r
        } else {
            json_with_index(StatusCode::OK, Value::Array(entries), index)
        };
        return ReadResult {
            index,
            wake_index: index,
            response,
        };
    }
    let index = store.kv_table_index();
    let wake_index = store.key_change_index(key);
    let response = match store.get(key) {
        None => {
            let mut r = StatusCode::NOT_FOUND.into_response();
            add_index_headers(r.headers_mut(), index);
            r
        }
        Some(e) if has(params, "raw") => {
            let mut r = (StatusCode::OK, e.value.clone()).into_response();
            add_index_headers(r.headers_mut(), index);
            r
        }
        Some(e) => json_with_index(StatusCode::OK, json!([entry_json(key, e)]), index),
    };
    ReadResult {
        index,
        wake_index,
        response,
    }
}

async fn kv_get(
    State(shared): AppState,
    key: String,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    if has(&params, "consistent") && has(&params, "stale") {
        return error(
            400,
            "Cannot specify ?stale with ?consistent, conflicting semantics.",
        );
    }
    let min_index = match parse_u64(&params, "index", "index") {
        Ok(i) => i.unwrap_or(0),
        Err(r) => return r,
    };
    let wait = match param(&params, "wait") {
        None => DEFAULT_WAIT,
        Some(raw) => match duration::parse(raw) {
            Some(d) => d.min(MAX_WAIT),
            None => return error(400, "Invalid wait time"),
        },
    };
    let mut changes = shared.subscribe_changes();
    let first = kv_read(&shared, &key, &params);
    if min_index == 0 || first.index > min_index {
        return first.response;
    }
    let deadline = Instant::now() + wait;
    loop {
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return kv_read(&shared, &key, &params).response;
                }
            }
            _ = tokio::time::sleep_until(deadline) => {
                return kv_read(&shared, &key, &params).response;
            }
        }
        let now = kv_read(&shared, &key, &params);
        if now.wake_index > min_index {
            return now.response;
        }
    }
}

async fn kv_put_path(
    State(shared): AppState,
    Path(key): Path<String>,
    Query(params): Params,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    if key.is_empty() {
        return error(400, "Missing key name");
    }
    if body.len() > MAX_VALUE_SIZE {
        return error(
            413,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE_SIZE} bytes.",
                body.len()
            ),
        );
    }
    let flags = match parse_u64(&params, "flags", "flags") {
        Ok(f) => f.unwrap_or(0),
        Err(r) => return r,
    };
    let cas = match parse_u64(&params, "cas", "cas index") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let opts = PutOptions {
        flags,
        cas,
        acquire: param(&params, "acquire").map(str::to_string),
        release: param(&params, "release").map(str::to_string),
    };
    let result = shared
        .store()
        .put(&key, body.to_vec(), opts, Instant::now());
    match result {
        Ok(ok) => {
            if ok {
                shared.published();
            }
            json_bool(ok)
        }
        Err(e) => api_error(e),
    }
}

async fn kv_delete_path(
    state: AppState,
    Path(key): Path<String>,
    params: Params,
    headers: HeaderMap,
) -> Response {
    kv_delete(state, key, params, headers).await
}

async fn kv_delete_root(state: AppState, params: Params, headers: HeaderMap) -> Response {
    kv_delete(state, String::new(), params, headers).await
}

async fn kv_delete(
    State(shared): AppState,
    key: String,
    Query(params): Params,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = admit(&shared, &headers, &params).await {
        return r;
    }
    let recurse = has(&params, "recurse");
    if key.is_empty() && !recurse {
        return error(400, "Missing key name");
    }
    let cas = match parse_u64(&params, "cas", "cas index") {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ok = shared.store().delete(&key, recurse, cas);
    if ok {
        shared.published();
    }
    json_bool(ok)
}
