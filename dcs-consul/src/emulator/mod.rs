//! An emulator of the parts of Consul's HTTP API that fullauto uses: sessions and
//! the KV store. No Consul server can be installed on the project's machines, so
//! the Consul backend is tested against this. It was written from Consul's public
//! API documentation (the `/v1/session` and `/v1/kv` endpoint pages and the
//! "sessions" and "blocking queries" guides); it shares no code with Consul.
//!
//! # What it models
//!
//! * **One raft-like index** for the whole store, incremented by every write
//!   (session create, invalidation, KV put/delete). A fresh emulator starts at 10.
//! * **Sessions**: `PUT /v1/session/create` with `Name`, `Node` (must be the
//!   emulator's own node, default `consul-emulator`), `Checks` / `NodeChecks`
//!   (only `serfHealth` exists, and it is always passing; any other check ID is
//!   rejected with 500 "Missing check ... registration"; `Checks` defaults to
//!   `["serfHealth"]` when neither list is given), `ServiceChecks` (any entry is
//!   rejected the same way), `Behavior` (`release`, the default, or `delete`; other
//!   values ⇒ 400), `TTL` (Go duration string; outside `[session_ttl_min,
//!   session_ttl_max]` ⇒ 400 `Invalid Session TTL '<ttl>', must be between
//!   [<min>=<max>]`; default bounds 10s and 24h as in Consul), `LockDelay` (Go
//!   duration string, or a JSON number: below 1000 it is seconds, otherwise
//!   nanoseconds, as Consul's HTTP layer reads it; default 15s; capped at 60s).
//!   Answers `{"ID": "<uuid>"}`.
//! * `PUT /v1/session/renew/<id>`: resets the TTL timer and answers a one-element
//!   array with the session; **404** with `Session id '<id>' not found` for an
//!   unknown, destroyed or expired session.
//! * `PUT /v1/session/destroy/<id>`: invalidates; answers `true` (also for an
//!   unknown ID, as Consul does). `GET /v1/session/info/<id>` (`[]` when unknown)
//!   and `GET /v1/session/list`. Session JSON uses Consul's field names (`ID`,
//!   `Name`, `Node`, `LockDelay` in nanoseconds, `Behavior`, `TTL` as a duration
//!   string, `NodeChecks`, `ServiceChecks`, `CreateIndex`, `ModifyIndex`).
//! * **TTL expiry**: a session not renewed for `TTL × ttl_multiplier` is
//!   invalidated. Consul documents the TTL as a *lower bound* and in practice
//!   waits up to 2×TTL; the emulator's default multiplier is 1 (expire at exactly
//!   the TTL, the earliest moment Consul may), so tests exercise the case a client
//!   must survive; `ttl_multiplier: 2` reproduces Consul's usual slack. Expiry
//!   never happens before the deadline; it may happen a few milliseconds after.
//! * **Invalidation** (expiry or destroy) in one index: with `release` the held
//!   keys lose their `Session` (ModifyIndex moves); with `delete` they are
//!   deleted. Each such key then enters the session's **lock-delay**, during which
//!   `?acquire` on it answers `false`.
//! * **KV reads** `GET /v1/kv/<key>`: 404 when missing; `?recurse` (prefix, 404
//!   when nothing matches), `?keys` with optional `?separator`, `?raw`. Entries use
//!   `Key`, `Value` (base64; `null` for an empty value), `Flags`, `Session`
//!   (omitted when unlocked), `LockIndex`, `CreateIndex`, `ModifyIndex`. Every
//!   answer carries `X-Consul-Index`, `X-Consul-KnownLeader: true` and
//!   `X-Consul-LastContact: 0`. The index of a single-key read is the KV table's
//!   index; of a prefix read, the highest ModifyIndex or deletion index under the
//!   prefix (tombstones), falling back to the table index.
//! * **Blocking queries** `?index=N&wait=D` (default wait 5m, capped at 10m):
//!   a prefix read returns as soon as the prefix's index exceeds N; a single-key
//!   read returns at once when the table index already exceeds N (Consul's
//!   documented "may return without a change"), otherwise when that key changes;
//!   both return after `wait` with the current data and index.
//! * `?consistent` and `?stale` are accepted (both at once ⇒ 400); every read
//!   is consistent here since there is a single copy.
//! * **KV writes** `PUT /v1/kv/<key>` (body = value, at most 512 KiB, else 413)
//!   answer `true`/`false`: `?flags=`; `?cas=0` creates only; `?cas=N` writes only
//!   at ModifyIndex N; `?acquire=<session>` takes the lock when it is free (and
//!   not in lock-delay) or already the caller's, incrementing `LockIndex` only on
//!   a new acquisition, answers `false` when another session holds it, and is
//!   **rejected with 500 `invalid session "<id>"`** when the session does not
//!   exist (never created, destroyed or expired); `?release=<session>` unlocks
//!   (and writes the body) only when that session holds the key, else `false`. A
//!   plain write to a locked key keeps its lock. When `acquire` and `cas` or
//!   `release` are combined, `acquire` wins.
//! * **KV deletes** `DELETE /v1/kv/<key>`: `?recurse` deletes the prefix;
//!   `?cas=N` deletes only at ModifyIndex N (`false` otherwise); deleting a key
//!   that does not exist answers `true`.
//! * **ACL**: with `acl_token` set, every request must present that token in
//!   `X-Consul-Token`, `Authorization: Bearer` or `?token=`; none ⇒ 403
//!   `Permission denied`, another ⇒ 403 `ACL not found`. Without it, tokens are
//!   accepted and ignored.
//! * `?dc=` other than the emulator's datacenter (`dc1`) ⇒ 500
//!   `No path to datacenter`. `GET /v1/status/leader` answers a fixed address.
//! * **Agent services** (what `register_service` needs):
//!   `PUT /v1/agent/service/register` with a JSON body whose field names are
//!   matched case-insensitively, as Consul does (`Name` required, else 400
//!   `Missing service name`; `ID` defaults to the name; a `Check` with `HTTP` or
//!   `TCP` needs an `Interval`, else 400); registering an ID again replaces it.
//!   `PUT /v1/agent/service/deregister/<id>` (404 `Unknown service ID` when not
//!   registered) and `GET /v1/agent/services` (ID ⇒ `ID`, `Service`, `Tags`,
//!   `Address`, `Port`, `EnableTagOverride`, `Datacenter`). Checks are stored, not
//!   run; [`Emulator::services`] shows each registration as sent.
//! * Test controls that a real agent lacks: stop the HTTP server and serve the
//!   same state again on the same port (an agent restart while the servers keep
//!   the state; TTL timers keep running meanwhile), and *freeze* it (requests are
//!   accepted but never answered, like a hung agent).
//!
//! # What it does not model
//!
//! Multiple servers, raft, leader elections and their effects (no `No cluster
//! leader` errors, stale reads are never stale, renewals are never lost, session
//! timers are not reset by a leader failover); gossip and node failure (the
//! `serfHealth` check never fails, so sessions die only by TTL or destroy);
//! running health checks (service checks are stored only), health
//! checks other than `serfHealth` for sessions; catalog and health endpoints,
//! other agent endpoints, transactions (`/v1/txn`), events, prepared queries, namespaces,
//! partitions and multiple datacenters; ACL policies (one all-powerful token
//! or none); tombstone garbage collection (tombstones are kept forever); the
//! random jitter of up to wait/16 Consul adds to blocking queries; the
//! `X-Consul-Effective-Consistency` and `X-Consul-Default-ACL-Policy` headers;
//! agent caching (`?cached`); session TTLs raised by a loaded server; blocking
//! queries on session endpoints; HTTP/2, TLS and Unix sockets (plain HTTP/1.1 on
//! TCP only); request rate limits. Some corner cases were not pinned down by the
//! documentation and follow our reading of it: `acquire` winning over `cas`, a CAS
//! delete of a missing key answering `true`, the lock-delay cap of 60s (clamped,
//! not rejected), and the exact wording of error bodies.

mod duration;
mod http;
mod state;

use state::{Limits, Store};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// How the emulated agent behaves.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Shortest session TTL accepted (Consul's `session_ttl_min`, default 10s).
    pub session_ttl_min: Duration,
    /// Longest session TTL accepted (Consul: 24h).
    pub session_ttl_max: Duration,
    /// Sessions expire `TTL × ttl_multiplier` after their last renewal
    /// (1: the earliest moment Consul may expire them; 2: Consul's usual slack).
    pub ttl_multiplier: u32,
    /// When set, every request must carry this ACL token.
    pub acl_token: Option<String>,
    /// The agent's node name (sessions are bound to it).
    pub node_name: String,
    /// The agent's datacenter.
    pub datacenter: String,
}

impl Default for EmulatorConfig {
    fn default() -> Self {
        EmulatorConfig {
            session_ttl_min: Duration::from_secs(10),
            session_ttl_max: Duration::from_secs(86400),
            ttl_multiplier: 1,
            acl_token: None,
            node_name: "consul-emulator".to_string(),
            datacenter: "dc1".to_string(),
        }
    }
}

/// State shared by the HTTP handlers and the expiry timer.
pub(crate) struct Shared {
    store: Mutex<Store>,
    changes: watch::Sender<u64>,
    expiry_wake: Notify,
    frozen: watch::Sender<bool>,
    config: EmulatorConfig,
    /// Registered services by ID: the registration as sent, keys normalised.
    services: Mutex<std::collections::BTreeMap<String, serde_json::Value>>,
}

impl Shared {
    pub(crate) fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave the store half-written in a
        // way the emulator could repair; keep serving what is there.
        self.store.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wakes blocking queries after a write.
    pub(crate) fn published(&self) {
        let index = self.store().index();
        self.changes.send_replace(index);
    }

    pub(crate) fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    pub(crate) fn session_created(&self) {
        self.expiry_wake.notify_one();
    }

    pub(crate) fn services(
        &self,
    ) -> MutexGuard<'_, std::collections::BTreeMap<String, serde_json::Value>> {
        self.services.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn config(&self) -> &EmulatorConfig {
        &self.config
    }

    /// Waits while the emulator is frozen.
    pub(crate) async fn wait_unfrozen(&self) {
        let mut rx = self.frozen.subscribe();
        while *rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    expiry: JoinHandle<()>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.expiry.abort();
    }
}

/// The emulated Consul cluster: its state and session timers. Serve it over HTTP
/// with [`Emulator::serve`]; the state outlives any one server.
#[derive(Clone)]
pub struct Emulator {
    inner: Arc<Inner>,
}

impl Emulator {
    /// A fresh, empty cluster. Must be called inside a tokio runtime (the session
    /// timers run on it).
    pub fn new(config: EmulatorConfig) -> Emulator {
        let limits = Limits {
            session_ttl_min: config.session_ttl_min,
            session_ttl_max: config.session_ttl_max,
            ttl_multiplier: config.ttl_multiplier.max(1),
        };
        let store = Store::new(limits, config.node_name.clone());
        let (changes, _) = watch::channel(store.index());
        let (frozen, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            store: Mutex::new(store),
            changes,
            expiry_wake: Notify::new(),
            frozen,
            config,
            services: Mutex::new(Default::default()),
        });
        let expiry = tokio::spawn(expire_sessions(shared.clone()));
        Emulator {
            inner: Arc::new(Inner { shared, expiry }),
        }
    }

    /// Starts a fresh cluster served on an ephemeral 127.0.0.1 port.
    pub async fn start(config: EmulatorConfig) -> std::io::Result<(Emulator, ServerHandle)> {
        let emulator = Emulator::new(config);
        let server = emulator
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await?;
        Ok((emulator, server))
    }

    /// Serves the HTTP API on `addr` (port 0: any free port) until the returned
    /// handle is stopped or dropped.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<ServerHandle> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let router = http::router(self.inner.shared.clone());
        let task = tokio::spawn(accept_loop(listener, router));
        Ok(ServerHandle {
            addr,
            task: Some(task),
        })
    }

    /// Freezes (`true`) or thaws the agent: while frozen, requests are accepted
    /// but not answered, like a hung agent.
    pub fn set_frozen(&self, frozen: bool) {
        self.inner.shared.frozen.send_replace(frozen);
    }

    /// The current raft index.
    pub fn index(&self) -> u64 {
        self.inner.shared.store().index()
    }

    /// Registered agent services by ID, each as registered (top-level field
    /// names in Consul's spelling: `ID`, `Name`, `Tags`, `Address`, `Port`,
    /// `Check`, `EnableTagOverride`).
    pub fn services(&self) -> std::collections::BTreeMap<String, serde_json::Value> {
        self.inner.shared.services().clone()
    }

    /// Number of live sessions.
    pub fn session_count(&self) -> usize {
        self.inner.shared.store().sessions().count()
    }
}

/// A running HTTP server of an [`Emulator`]; dropping it stops the server
/// (listener and every open connection). Keep the [`Emulator`] alive as long as
/// its servers: dropping the last `Emulator` handle stops the session timers.
pub struct ServerHandle {
    addr: SocketAddr,
    task: Option<JoinHandle<()>>,
}

impl ServerHandle {
    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for a client's agent URL.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server and waits until its port and connections are closed.
    pub async fn stop(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn accept_loop(listener: TcpListener, router: axum::Router) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else {
                    // Out of file descriptors and the like: back off briefly.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                };
                let service = hyper_util::service::TowerToHyperService::new(router.clone());
                connections.spawn(async move {
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(io, service)
                        .await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Invalidates sessions whose TTL timer fired, sleeping until the next deadline.
async fn expire_sessions(shared: Arc<Shared>) {
    loop {
        let now = Instant::now();
        let (changed, next) = shared.store().expire_sessions(now);
        if changed {
            shared.published();
        }
        // Wake at the next deadline, on a new session, and at least once a second
        // to drop finished lock-delays.
        let until = next
            .unwrap_or(now + Duration::from_secs(1))
            .min(now + Duration::from_secs(1));
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = shared.expiry_wake.notified() => {}
        }
    }
}
