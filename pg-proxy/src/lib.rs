//! pg-proxy is fullauto's PostgreSQL proxy. It knows the cluster from the DCS alone
//! (the leader key and the member records, through the `ha_core::Dcs` trait; never
//! the REST API), so routing changes the moment the lease changes. Its read-write
//! listener sends clients to the member the leader key names; its read-only listener
//! sends them round robin to running replicas that accept load. It fences at the
//! routing layer: once the leader key no longer names a node, new read-write
//! connections do not reach it and the open ones are closed with a PostgreSQL error.
//! While there is no primary or a switchover is under way, new read-write
//! connections wait (up to `pause_deadline`) instead of failing.
//!
//! Without `auth_file`, clients authenticate to the server through the proxy (the
//! bytes pass through) and a session ends with its server. With `auth_file`,
//! clients authenticate to the proxy (SCRAM-SHA-256 or md5, module `auth`), the
//! proxy logs in to servers itself, and read-write sessions move to the new primary
//! at a transaction boundary (module `relay`, state tracked by module `track`).
//!
//! # Example
//!
//! A proxy over a DCS (here the in-memory one, empty: no leader yet, so read-write
//! clients would wait up to `pause_deadline`, then be refused):
//!
//! ```
//! use ha_core::memory_dcs::{MemoryDcs, SharedMemoryStore};
//! use ha_core::{ClusterKeys, DcsTiming, SystemClock};
//! use pg_proxy::{Proxy, ProxySettings};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), pg_proxy::ProxyError> {
//! let store = SharedMemoryStore::new();
//! let keys = ClusterKeys::new("service", "demo");
//! let dcs = MemoryDcs::new(&store, Arc::new(SystemClock), keys, "proxy", DcsTiming::default());
//! let settings = ProxySettings {
//!     listen_rw: Some("127.0.0.1:0".into()), // clients for the primary
//!     listen_ro: Some("127.0.0.1:0".into()), // clients for the replicas
//!     ..ProxySettings::default()
//! };
//! let proxy = Proxy::start(settings, Arc::new(dcs)).await?;
//! println!("read-write clients connect to {:?}", proxy.rw_address);
//! assert!(proxy.rw_address.is_some() && proxy.ro_address.is_some());
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod auth;
pub mod cancel;
pub mod metrics;
pub mod relay;
pub mod routes;
pub mod server_tls;
pub mod session;
pub mod settings;
pub mod tls;
pub mod track;
pub mod users;
pub mod watcher;
pub mod wire;

pub use metrics::Counters;
pub use routes::{NoPrimary, Routes, Target};
pub use session::{Listener, FENCED, REFUSED};
pub use settings::{ProxySettings, SettingsError};

use ha_core::Dcs;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Why the proxy could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// A listen address could not be bound.
    #[error("cannot listen on {address} (proxy.{key}): {source}; is another process using the port? choose another address")]
    Bind {
        /// The settings key.
        key: &'static str,
        /// The address as configured.
        address: String,
        /// The system's answer.
        source: std::io::Error,
    },
    /// `proxy.auth_file` cannot be used.
    #[error("proxy.auth_file: {0}")]
    AuthFile(#[from] users::UsersError),
    /// `proxy.certfile`/`keyfile` cannot be used.
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    /// The `proxy.server_tls_*` settings cannot be used (the message names the key).
    #[error("{0}")]
    ServerTls(String),
}

/// A running proxy: its listeners and the DCS watcher. Dropping it stops accepting
/// new clients; relayed sessions end with their sockets.
pub struct Proxy {
    /// Bound address of the read-write listener.
    pub rw_address: Option<SocketAddr>,
    /// Bound address of the read-only listener.
    pub ro_address: Option<SocketAddr>,
    /// Bound address of the metrics listener.
    pub metrics_address: Option<SocketAddr>,
    shared: Arc<session::Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Proxy {
    /// Binds the configured listeners and starts watching `dcs`.
    pub async fn start(settings: ProxySettings, dcs: Arc<dyn Dcs>) -> Result<Proxy, ProxyError> {
        let bind = |key: &'static str, address: Option<String>| async move {
            match address {
                None => Ok(None),
                Some(a) => {
                    TcpListener::bind(&a)
                        .await
                        .map(Some)
                        .map_err(|source| ProxyError::Bind {
                            key,
                            address: a,
                            source,
                        })
                }
            }
        };
        let users = match &settings.auth_file {
            Some(path) => Some(users::Users::load(path, settings.auth_type)?),
            None => None,
        };
        let tls = match &settings.certfile {
            Some(cert) => {
                let key = settings.keyfile.as_deref().unwrap_or(cert);
                Some(tls::acceptor(cert, key)?)
            }
            None => None,
        };
        let server_tls = server_tls::ServerTls::new(
            settings.server_tls_sslmode,
            settings.server_tls_ca_file.as_deref(),
            settings.server_tls_cert_file.as_deref(),
            settings.server_tls_key_file.as_deref(),
        )
        .map_err(ProxyError::ServerTls)?;
        let rw = bind("listen_rw", settings.listen_rw.clone()).await?;
        let ro = bind("listen_ro", settings.listen_ro.clone()).await?;
        let metrics = bind("metrics_listen", settings.metrics_listen.clone()).await?;
        let listener = |l: &Option<TcpListener>| {
            l.as_ref()
                .and_then(|l| l.local_addr().ok())
                .map(|a| a.to_string())
        };
        let record = serde_json::json!({
            "listen_rw": listener(&rw),
            "listen_ro": listener(&ro),
            "metrics": listener(&metrics),
            "moves_sessions": users.is_some(),
            "version": env!("CARGO_PKG_VERSION"),
        })
        .to_string();
        let routes = watcher::spawn(dcs, settings.max_replica_lag, record);
        let shared = Arc::new(session::Shared {
            settings,
            routes,
            cancel: Default::default(),
            next_replica: AtomicUsize::new(0),
            counters: Default::default(),
            users,
            tls,
            server_tls,
        });
        let mut proxy = Proxy {
            rw_address: rw.as_ref().and_then(|l| l.local_addr().ok()),
            ro_address: ro.as_ref().and_then(|l| l.local_addr().ok()),
            metrics_address: metrics.as_ref().and_then(|l| l.local_addr().ok()),
            shared: shared.clone(),
            tasks: Vec::new(),
        };
        for (listener, kind) in [(rw, Listener::ReadWrite), (ro, Listener::ReadOnly)] {
            if let Some(l) = listener {
                if let Ok(a) = l.local_addr() {
                    tracing::info!("{kind} listener on {a}");
                }
                proxy
                    .tasks
                    .push(tokio::spawn(accept(l, kind, shared.clone())));
            }
        }
        if let Some(l) = metrics {
            if let Ok(a) = l.local_addr() {
                tracing::info!("metrics on http://{a}/metrics");
            }
            proxy
                .tasks
                .push(tokio::spawn(metrics::serve(l, shared.clone())));
        }
        Ok(proxy)
    }

    /// The routes the proxy currently uses.
    pub fn routes(&self) -> watch::Receiver<Routes> {
        self.shared.routes.clone()
    }

    /// What the proxy did so far.
    pub fn counters(&self) -> &Counters {
        &self.shared.counters
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn accept(listener: TcpListener, kind: Listener, shared: Arc<session::Shared>) {
    loop {
        match listener.accept().await {
            Ok((socket, peer)) => {
                tokio::spawn(session::serve(socket, peer, kind, shared.clone()));
            }
            Err(e) => {
                // Out of file descriptors and the like: wait a moment, keep serving.
                tracing::warn!("{kind} listener cannot accept a connection: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }
}

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
