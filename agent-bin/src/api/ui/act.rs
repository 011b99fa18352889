//! `POST /ui/restart` and `POST /ui/reinitialize`: the dashboard restarting or
//! reinitializing any member, not only the one serving the page.
//!
//! The request has already passed this agent's access checks (credentials, allowlist,
//! client certificate) like every write. For this member it is the member's own
//! endpoint; for another one it is forwarded to that member's endpoint with the `ctl`
//! credentials and TLS settings, as `fullautoctl restart` / `reinit` call it.

use crate::api::handlers::{fresh_cluster, reinitialize, restart, App, Reply};
use serde_json::{Map, Value};
use std::time::Duration;

/// How long a forwarded request may take: a restart waits for Postgres to come back
/// (`fullautoctl`'s deadline for requests that wait for an outcome).
const FORWARD_TIMEOUT: Duration = crate::ctl::rest::LONG_TIMEOUT;

/// The endpoint an action path names, if it is one the dashboard may act through.
fn endpoint(path: &str) -> Option<&'static str> {
    match path.trim_end_matches('/') {
        "/ui/restart" => Some("restart"),
        "/ui/reinitialize" => Some("reinitialize"),
        _ => None,
    }
}

/// `body` is the endpoint's own body plus `"member": NAME`.
pub(crate) async fn act(app: &App, path: &str, mut body: Map<String, Value>) -> Reply {
    let Some(endpoint) = endpoint(path) else {
        return Reply::text(404, "no such action of the dashboard");
    };
    let member = match body.remove("member") {
        Some(Value::String(m)) if !m.is_empty() => m,
        _ => {
            return Reply::text(
                400,
                "name the member to act on: {\"member\": \"NAME\"} in the body",
            )
        }
    };
    if member == app.node.status().patroni.name {
        return match endpoint {
            "restart" => restart(app, body).await,
            _ => reinitialize(app, body).await,
        };
    }
    let Some(cluster) = fresh_cluster(app).await else {
        return Reply::text(502, "cluster state is not available");
    };
    let Some(target) = cluster.member(&member) else {
        return Reply::text(404, format!("no member named {member} in the cluster"));
    };
    let Some(api_url) = target.data.api_url.clone() else {
        return Reply::text(
            502,
            format!("{member} publishes no api_url: its REST API cannot be reached"),
        );
    };
    match app
        .node
        .call_member(&api_url, endpoint, Value::Object(body), FORWARD_TIMEOUT)
        .await
    {
        Ok((401, text)) => Reply::text(
            401,
            format!(
                "{member} refused this agent's credentials (ctl.authentication, else \
                 restapi.authentication): {text}"
            ),
        ),
        Ok((status, text)) => Reply::text(status, text),
        Err(e) => Reply::text(502, format!("{member} could not be asked: {e}")),
    }
}
