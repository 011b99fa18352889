//! The dashboard at `/ui`: static HTML, CSS and JavaScript compiled into the binary,
//! and `/ui/events`, a server-sent event stream of the agent's cluster view.
//!
//! Reading is open like every other `GET` of the API; the page acts through the
//! existing write endpoints, which check the REST credentials the user types in, and
//! through `POST /ui/restart` / `/ui/reinitialize`, which act on any member.
//! The stream works only while a client is connected, and then only once per HA
//! cycle: it reuses the cycle's cluster view and reads nothing from the DCS itself.

mod act;
mod events;

pub(crate) use act::act;
pub use events::{changes, snapshot};

use super::handlers::App;
use super::state::NodeApi;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const INDEX: &str = include_str!("assets/index.html");
const SCRIPT: &str = include_str!("assets/app.js");
const STYLE: &str = include_str!("assets/style.css");

/// How long the stream waits for a new cycle before looking again anyway.
const MAX_WAIT: Duration = Duration::from_secs(15);

/// A static asset of the page: body and content type, or `None` for an unknown path.
pub(crate) fn asset(path: &str) -> Option<(&'static str, &'static str)> {
    match path.trim_end_matches('/') {
        "/ui" | "/ui/index.html" => Some((INDEX, "text/html; charset=utf-8")),
        "/ui/app.js" => Some((SCRIPT, "text/javascript; charset=utf-8")),
        "/ui/style.css" => Some((STYLE, "text/css; charset=utf-8")),
        _ => None,
    }
}

/// Whether `path` is the event stream.
pub(crate) fn is_events(path: &str) -> bool {
    path.trim_end_matches('/') == "/ui/events"
}

struct Watch {
    node: Arc<dyn NodeApi>,
    last: Option<Value>,
}

/// `GET /ui/events`: an `update` event with the whole view when a client connects,
/// then one whenever the agent's view changes, carrying the changes as log lines.
pub(crate) fn events(app: &App) -> Response {
    let start = Watch {
        node: app.node.clone(),
        last: None,
    };
    let stream = futures::stream::unfold(start, |mut w| async move {
        loop {
            if w.last.is_some() {
                w.node.wait_cluster_change(MAX_WAIT).await;
            }
            let Some(cluster) = w.node.last_known_cluster() else {
                if w.last.is_none() {
                    // Nothing read yet: say so once, then wait for the first view.
                    w.last = Some(Value::Null);
                    let ev = Event::default().event("update").data(
                        r#"{"snapshot":null,"changes":["the agent has not read the cluster yet"]}"#,
                    );
                    return Some((Ok::<Event, std::convert::Infallible>(ev), w));
                }
                continue;
            };
            let status = w.node.status();
            let snap = snapshot(&cluster, &status.patroni.scope, &status.patroni.name);
            let lines = match &w.last {
                Some(old) if old == &snap => continue,
                Some(Value::Null) | None => Vec::new(),
                Some(old) => changes(old, &snap),
            };
            w.last = Some(snap.clone());
            let mut body = serde_json::json!({"snapshot": snap, "changes": lines});
            body["at"] = Value::from(chrono::Utc::now().to_rfc3339());
            let ev = Event::default().event("update").data(body.to_string());
            return Some((Ok(ev), w));
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(MAX_WAIT))
        .into_response()
}
