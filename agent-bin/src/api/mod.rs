//! Patroni's REST API on axum: health checks, status JSON, cluster/history/config,
//! metrics, and the write endpoints (config, switchover/failover, restart,
//! reinitialize, reload), with Basic auth, allowlist and optional TLS.
//!
//! The API is decoupled from the HA runner through [`NodeApi`].

mod access;
pub mod ciphers;
mod client;
mod cluster_json;
mod handlers;
mod health;
pub mod listen;
mod metrics;
mod pinned;
pub mod state;
mod switchover;
mod timestamp;
mod tls;
pub mod ui;

pub use client::{build_api_client, with_api_auth, ApiClient, ClientTlsFiles, SharedClient};
pub use cluster_json::{cluster_json, history_json};
pub use handlers::{postgres_version_to_int, restart_conditions_hold};
pub use health::parse_size;
pub use metrics::version_number;
pub use state::*;
pub use timestamp::patroni_timestamp;
pub use tls::{load_server_tls, ReloadableTls, TlsError};

use crate::config::{BasicAuth, RestApiConfig, VerifyClient};
use axum::Router;
use serde_json::Value;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// How the API behaves, mostly from the `restapi` section.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// Basic auth for unsafe requests.
    pub auth: Option<BasicAuth>,
    /// Hosts/IPs/CIDRs allowed to make unsafe requests (empty: everyone).
    pub allowlist: Vec<String>,
    /// Also allow members' API hosts.
    pub allowlist_include_members: bool,
    /// Headers added to every answer.
    pub extra_headers: Vec<(String, String)>,
    /// Client certificate policy (with TLS).
    pub verify_client: VerifyClient,
    /// Whether the API is served over TLS.
    pub tls: bool,
    /// How often a switchover request re-reads the cluster while waiting.
    pub switchover_poll_interval: Duration,
    /// Overrides Patroni's `2 × max(10, loop_wait)` wait for a switchover outcome.
    pub switchover_timeout: Option<Duration>,
}

impl Default for ApiOptions {
    fn default() -> Self {
        ApiOptions {
            auth: None,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            extra_headers: Vec::new(),
            verify_client: VerifyClient::None,
            tls: false,
            switchover_poll_interval: Duration::from_millis(100),
            switchover_timeout: None,
        }
    }
}

impl ApiOptions {
    /// Options from the `restapi` section.
    pub fn from_config(c: &RestApiConfig) -> ApiOptions {
        let tls = c.is_tls();
        // `server_tokens` first, so an extra header named Server replaces it.
        let mut extra_headers: Vec<(String, String)> =
            vec![("Server".to_string(), c.server_tokens.header())];
        extra_headers.extend(
            c.http_extra_headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone())),
        );
        if tls {
            extra_headers.extend(
                c.https_extra_headers
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone())),
            );
        }
        ApiOptions {
            auth: c.authentication.clone(),
            allowlist: c.allowlist.clone(),
            allowlist_include_members: c.allowlist_include_members,
            extra_headers,
            verify_client: c.verify_client,
            tls,
            ..ApiOptions::default()
        }
    }
}

/// Per-connection facts the handlers need (set by [`serve`]).
#[derive(Debug, Clone, Default)]
pub struct ConnInfo {
    /// The client's address.
    pub peer: Option<SocketAddr>,
    /// The client presented a verified certificate.
    pub client_cert: bool,
}

/// The router: every request goes through Patroni-style dispatch.
pub fn router(node: Arc<dyn NodeApi>, opts: ApiOptions) -> Router {
    router_with_control(node, opts).0
}

/// Changes a running router's options (SIGHUP re-reads `restapi`).
#[derive(Clone)]
pub struct ApiControl {
    opts: Arc<std::sync::RwLock<ApiOptions>>,
}

impl ApiControl {
    /// A handle holding `opts`, for [`router_with`].
    pub fn new(opts: ApiOptions) -> ApiControl {
        ApiControl {
            opts: Arc::new(std::sync::RwLock::new(opts)),
        }
    }

    /// Options for requests from now on.
    pub fn set_options(&self, opts: ApiOptions) {
        match self.opts.write() {
            Ok(mut o) => *o = opts,
            Err(poisoned) => *poisoned.into_inner() = opts,
        }
    }
}

/// The router plus a handle to change its options later.
pub fn router_with_control(node: Arc<dyn NodeApi>, opts: ApiOptions) -> (Router, ApiControl) {
    let control = ApiControl::new(opts);
    (router_with(node, &control), control)
}

/// The router, taking its options from `control` (made before the node, e.g. for
/// the reloader the node itself holds).
pub fn router_with(node: Arc<dyn NodeApi>, control: &ApiControl) -> Router {
    let app = Arc::new(handlers::App {
        node,
        opts: control.opts.clone(),
    });
    Router::new().fallback(handlers::dispatch).with_state(app)
}

/// Merges a `PATCH /config` body into `config` as Patroni does: `null` deletes,
/// mappings merge recursively into existing mappings (a new one is added as it is),
/// scalars are replaced when their text differs.
/// Returns whether anything changed.
pub fn merge_config_patch(config: &mut Value, patch: &Value) -> bool {
    let (Some(base), Some(patch)) = (config.as_object_mut(), patch.as_object()) else {
        return false;
    };
    let mut changed = false;
    for (k, v) in patch {
        match v {
            Value::Null => changed |= base.remove(k).is_some(),
            Value::Object(_) => match base.get_mut(k) {
                Some(existing @ Value::Object(_)) => changed |= merge_config_patch(existing, v),
                _ => {
                    // A new section goes in as written, `null`s included: Patroni
                    // reads `slots: {x: null}` as a physical slot `x`.
                    base.insert(k.clone(), v.clone());
                    changed = true;
                }
            },
            _ => {
                let differs = base.get(k).is_none_or(|old| as_text(old) != as_text(v));
                if differs {
                    base.insert(k.clone(), v.clone());
                    changed = true;
                }
            }
        }
    }
    changed
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Serves `router` on `listener` (plain HTTP, or HTTPS when `tls` is given) until
/// `shutdown` completes. Each connection's peer address and client-certificate
/// status reach the handlers as [`ConnInfo`].
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_reloadable(listener, router, tls.map(ReloadableTls::new), shutdown).await
}

/// [`serve`] with a TLS config that can be swapped while running.
pub async fn serve_reloadable(
    listener: TcpListener,
    router: Router,
    tls: Option<ReloadableTls>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    use hyper_util::rt::TokioIo;
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                // Transient accept errors (EMFILE, aborted handshakes) must not end the API.
                Err(e) => {
                    tracing::warn!(error = %e, "rest api accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let router = router.clone();
        let acceptor = tls
            .as_ref()
            .and_then(ReloadableTls::current)
            .map(tokio_rustls::TlsAcceptor::from);
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let info = ConnInfo {
                        peer: Some(peer),
                        client_cert: false,
                    };
                    serve_conn(router, TokioIo::new(stream), info).await;
                }
                Some(acceptor) => {
                    let tls_stream = match tokio::time::timeout(
                        Duration::from_secs(10),
                        acceptor.accept(stream),
                    )
                    .await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!("rest api: TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!("rest api: TLS handshake with {peer} timed out");
                            return;
                        }
                    };
                    let client_cert = tls_stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    let info = ConnInfo {
                        peer: Some(peer),
                        client_cert,
                    };
                    serve_conn(router, TokioIo::new(tls_stream), info).await;
                }
            }
        });
    }
}

async fn serve_conn<I>(router: Router, io: I, info: ConnInfo)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    use hyper_util::rt::TokioExecutor;
    use hyper_util::server::conn::auto::Builder;
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(info.clone());
        let router = router.clone();
        async move {
            use tower::ServiceExt;
            router.oneshot(req.map(axum::body::Body::new)).await
        }
    });
    let _ = Builder::new(TokioExecutor::new())
        .serve_connection(io, svc)
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerTokens;

    #[test]
    fn server_tokens_set_the_server_header() {
        let server = |t: ServerTokens| {
            let c = RestApiConfig {
                server_tokens: t,
                ..RestApiConfig::default()
            };
            ApiOptions::from_config(&c)
                .extra_headers
                .into_iter()
                .find(|(k, _)| k == "Server")
                .map(|(_, v)| v)
        };
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            server(ServerTokens::Original),
            Some(format!(
                "fullauto/{version} (Patroni/{})",
                ha_core::PATRONI_VERSION
            ))
        );
        assert_eq!(
            server(ServerTokens::ProductOnly).as_deref(),
            Some("fullauto")
        );
        assert_eq!(
            server(ServerTokens::Minimal),
            Some(format!("fullauto/{version}"))
        );
    }
}
