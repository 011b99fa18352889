//! One client connection: read its first packet, pick a server from the routes,
//! pass the startup packet on and relay bytes both ways (authentication passes
//! through to the server). A read-write session is closed with a FATAL
//! `ErrorResponse` (SQLSTATE 57P01) the moment its server no longer holds the
//! leader key.

use crate::cancel::CancelKeys;
use crate::metrics::Counters;
use crate::routes::{Routes, Target};
use crate::settings::ProxySettings;
use crate::wire::{self, FirstPacket, Framer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// How long a client may take to send its first packet.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a fenced session waits for its client to close after the error.
const LINGER: Duration = Duration::from_secs(5);

/// SQLSTATE `connection_failure`: no server to route a new connection to.
pub const REFUSED: &str = "08006";
/// SQLSTATE `admin_shutdown`: a session closed because its server lost the lease.
pub const FENCED: &str = "57P01";

/// Which listener a client came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// Sessions go to the primary.
    ReadWrite,
    /// Sessions go to a replica.
    ReadOnly,
}

impl std::fmt::Display for Listener {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Listener::ReadWrite => "read-write",
            Listener::ReadOnly => "read-only",
        })
    }
}

/// What every session shares.
pub struct Shared {
    /// Listener and routing settings.
    pub settings: ProxySettings,
    /// The current routes.
    pub routes: watch::Receiver<Routes>,
    /// Cancel keys of relayed sessions.
    pub cancel: CancelKeys,
    /// Round-robin position among replicas.
    pub next_replica: AtomicUsize,
    /// Counters.
    pub counters: Counters,
}

/// Serves one client until it or its server closes, or its server is fenced.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, kind: Listener, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let first =
        match tokio::time::timeout(STARTUP_TIMEOUT, wire::read_first_packet(&mut client)).await {
            Ok(Ok(p)) => p,
            Ok(Err(e)) => {
                tracing::debug!("client {peer} on the {kind} listener: {e}");
                return;
            }
            Err(_) => {
                tracing::debug!("client {peer} sent no start-up packet within {STARTUP_TIMEOUT:?}");
                return;
            }
        };
    let raw = match first {
        FirstPacket::Cancel { raw, pid, key } => {
            forward_cancel(&raw, pid, key, &shared).await;
            return;
        }
        FirstPacket::Startup { ref raw, .. } => raw.clone(),
    };
    let target = match route(kind, &shared).await {
        Ok(t) => t,
        Err(why) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!("refused client {peer} on the {kind} listener: {why}");
            let _ = client.write_all(&wire::fatal(REFUSED, &why)).await;
            return;
        }
    };
    let connect = TcpStream::connect(target.address());
    let mut server = match tokio::time::timeout(shared.settings.connect_timeout, connect).await {
        Ok(Ok(s)) => s,
        outcome => {
            let e = match outcome {
                Ok(Err(e)) => e.to_string(),
                _ => format!(
                    "no answer within {} ms",
                    shared.settings.connect_timeout.as_millis()
                ),
            };
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let why = format!("the proxy cannot reach {target}: {e}");
            tracing::warn!("refused client {peer} on the {kind} listener: {why}");
            let _ = client.write_all(&wire::fatal(REFUSED, &why)).await;
            return;
        }
    };
    let _ = server.set_nodelay(true);
    if let Err(e) = server.write_all(&raw).await {
        let why = format!("{target} closed the connection at start-up: {e}");
        let _ = client.write_all(&wire::fatal(REFUSED, &why)).await;
        return;
    }
    shared.counters.routed(kind, &target.name);
    tracing::debug!(
        "client {peer} on the {kind} listener (user {}, database {}) goes to {target}",
        first.param("user").unwrap_or("?"),
        first.param("database").unwrap_or("(user's)")
    );
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    relay(client, server, &target, kind, &shared).await;
    shared.counters.active.fetch_sub(1, Ordering::Relaxed);
}

/// The server for a new session on `kind`'s listener, or why there is none.
async fn route(kind: Listener, shared: &Shared) -> Result<Target, String> {
    match kind {
        Listener::ReadWrite => primary(shared).await,
        Listener::ReadOnly => {
            let routes = shared.routes.borrow().clone();
            if !routes.replicas.is_empty() {
                let i = shared.next_replica.fetch_add(1, Ordering::Relaxed);
                return Ok(routes.replicas[i % routes.replicas.len()].clone());
            }
            if shared.settings.ro_fallback_to_primary {
                if let Ok(t) = routes.primary {
                    return Ok(t);
                }
            }
            Err(
                "no replica takes read-only clients (running, not tagged noloadbalance, \
                 within proxy.max_replica_lag); set proxy.ro_fallback_to_primary to send them \
                 to the primary instead"
                    .to_string(),
            )
        }
    }
}

/// The primary, waiting up to the pause deadline while there is none, a
/// switchover is under way, or the leader is still promoting.
async fn primary(shared: &Shared) -> Result<Target, String> {
    let mut routes = shared.routes.clone();
    let started = tokio::time::Instant::now();
    let deadline = started + shared.settings.pause_deadline;
    let mut waited = false;
    let waited_for = |waited: bool| {
        if waited {
            shared.counters.pause_ended(started.elapsed());
        }
    };
    loop {
        {
            let r = routes.borrow_and_update();
            if let (Ok(t), true) = (&r.primary, r.ready_for_writes()) {
                waited_for(waited);
                return Ok(t.clone());
            }
        }
        if !waited {
            waited = true;
            shared.counters.paused.fetch_add(1, Ordering::Relaxed);
        }
        match tokio::time::timeout_at(deadline, routes.changed()).await {
            Ok(Ok(())) => continue,
            Ok(Err(_)) | Err(_) => break,
        }
    }
    // Past the deadline a pending switchover or promotion does not matter: whoever
    // holds the leader key now is the primary.
    waited_for(waited);
    let r = routes.borrow();
    match &r.primary {
        Ok(t) => Ok(t.clone()),
        Err(why) => Err(format!(
            "no primary to connect to: {why} (waited {} ms, proxy.pause_deadline)",
            shared.settings.pause_deadline.as_millis()
        )),
    }
}

/// How a relayed session ended.
enum End {
    Client(std::io::Result<u64>),
    Server(std::io::Result<()>),
    Fenced(String),
}

async fn relay(
    client: TcpStream,
    server: TcpStream,
    target: &Target,
    kind: Listener,
    shared: &Shared,
) {
    let (mut cr, mut cw) = client.into_split();
    let (mut sr, mut sw) = server.into_split();
    let address = target.address();
    let mut framer = Framer::default();
    let mut keys = Vec::new();
    let mut writing = false;
    let mut routes = shared.routes.clone();
    let end = {
        let fenced = async {
            if kind == Listener::ReadOnly {
                return std::future::pending().await;
            }
            let r = routes
                .wait_for(|r| r.primary_name() != Some(target.name.as_str()))
                .await;
            match r {
                Ok(r) => match &r.primary {
                    Ok(new) => format!("the primary is now {}", new.name),
                    Err(why) => why.to_string(),
                },
                Err(_) => "the proxy stopped watching the DCS".to_string(),
            }
        };
        tokio::select! {
            r = tokio::io::copy(&mut cr, &mut sw) => End::Client(r),
            r = server_to_client(&mut sr, &mut cw, &mut framer, &mut keys, &mut writing, &shared.cancel, &address) => End::Server(r),
            why = fenced => End::Fenced(why),
        }
    };
    match end {
        End::Fenced(why) => {
            shared.counters.fenced.fetch_add(1, Ordering::Relaxed);
            let message = format!(
                "terminating connection because {} no longer holds the leader key ({why}); \
                 reconnect to reach the new primary",
                target.name
            );
            tracing::info!("closed a read-write session on {target}: {message}");
            // The old primary's session ends now.
            drop(sw);
            drop(sr);
            // Only between two messages: inside one, the client could not read it.
            if framer.at_boundary() && !writing {
                let _ = cw.write_all(&wire::fatal(FENCED, &message)).await;
            }
            let _ = cw.shutdown().await;
            // Read what the client still sends until it closes: a socket closed with
            // unread data is reset, and a reset discards the error it has not read yet.
            let drain = async {
                let mut sink = [0u8; 4096];
                while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
            };
            let _ = tokio::time::timeout(LINGER, drain).await;
        }
        End::Client(r) => {
            if let Err(e) = r {
                tracing::debug!("session on {target} ended by the client: {e}");
            }
        }
        End::Server(r) => {
            if let Err(e) = r {
                tracing::debug!("session on {target} ended by the server: {e}");
            }
        }
    }
    for (pid, key) in keys {
        shared.cancel.remove(pid, key);
    }
    // Dropping both halves of both sockets closes them.
}

/// Copies the server's messages to the client, following their boundaries and
/// recording the cancel keys the server hands out.
async fn server_to_client(
    sr: &mut OwnedReadHalf,
    cw: &mut OwnedWriteHalf,
    framer: &mut Framer,
    keys: &mut Vec<(i32, i32)>,
    writing: &mut bool,
    cancel: &CancelKeys,
    address: &str,
) -> std::io::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = sr.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        for (pid, key) in framer.feed(&buf[..n]) {
            cancel.insert(pid, key, address);
            keys.push((pid, key));
        }
        *writing = true;
        cw.write_all(&buf[..n]).await?;
        *writing = false;
    }
}

/// Sends a client's `CancelRequest` to the server that issued the key (unknown keys
/// are dropped, as a server drops a wrong key: without an answer).
async fn forward_cancel(raw: &[u8], pid: i32, key: i32, shared: &Shared) {
    let Some(server) = shared.cancel.server(pid, key) else {
        tracing::debug!("cancel request for an unknown backend {pid} dropped");
        return;
    };
    let sent = async {
        let mut s = TcpStream::connect(&server).await?;
        s.write_all(raw).await?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 1];
        let _ = s.read(&mut sink).await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(shared.settings.connect_timeout, sent).await {
        Ok(Ok(())) => tracing::debug!("cancel request for backend {pid} sent to {server}"),
        Ok(Err(e)) => tracing::warn!("cannot send a cancel request to {server}: {e}"),
        Err(_) => tracing::warn!("cannot send a cancel request to {server}: no answer"),
    }
}
