//! One client connection: read its first packet, pick a server from the routes and
//! relay. With `proxy.auth_file` the proxy authenticates the client itself, logs in
//! to the server with the credentials it holds and relays message by message, so
//! the session can move to a new primary (module `relay`). Without it, the startup
//! packet is passed on and bytes are relayed both ways (authentication passes
//! through to the server); such a read-write session is closed with a FATAL
//! `ErrorResponse` (SQLSTATE 57P01) the moment its server no longer holds the
//! leader key.

use crate::auth;
use crate::cancel::{Backend, CancelKeys};
use crate::metrics::Counters;
use crate::relay::{self, Login};
use crate::routes::{Routes, Target};
use crate::server_tls::{ServerStream, ServerTls};
use crate::settings::ProxySettings;
use crate::track::Tracker;
use crate::users::Users;
use crate::wire::{self, FirstPacket, Framer};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::ReadHalf;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
    /// The users clients authenticate as (`proxy.auth_file`), when the proxy logs in
    /// to servers itself.
    pub users: Option<Users>,
    /// TLS for clients (`proxy.certfile`), when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// TLS to servers (`proxy.server_tls_sslmode` and its files).
    pub server_tls: ServerTls,
}

/// The client's first packet, or `None` (logged) when it sent none in time.
async fn first_packet<S>(
    client: &mut S,
    tls: bool,
    peer: SocketAddr,
    kind: Listener,
) -> Option<FirstPacket>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(STARTUP_TIMEOUT, wire::read_first_packet(client, tls)).await {
        Ok(Ok(p)) => Some(p),
        Ok(Err(e)) => {
            tracing::debug!("client {peer} on the {kind} listener: {e}");
            None
        }
        Err(_) => {
            tracing::debug!("client {peer} sent no start-up packet within {STARTUP_TIMEOUT:?}");
            None
        }
    }
}

/// Serves one client until it or its server closes, or its server is fenced; with
/// `proxy.certfile`, over TLS when the client asks for it.
pub async fn serve(mut client: TcpStream, peer: SocketAddr, kind: Listener, shared: Arc<Shared>) {
    let _ = client.set_nodelay(true);
    let Some(first) = first_packet(&mut client, shared.tls.is_some(), peer, kind).await else {
        return;
    };
    let acceptor = match (&first, &shared.tls) {
        (FirstPacket::SslRequest, Some(a)) => a.clone(),
        _ => return serve_stream(client, first, peer, kind, shared).await,
    };
    if client.write_all(b"S").await.is_err() {
        return;
    }
    let mut tls = match tokio::time::timeout(STARTUP_TIMEOUT, acceptor.accept(client)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::info!("TLS handshake with client {peer} failed: {e}");
            return;
        }
        Err(_) => return,
    };
    let Some(first) = first_packet(&mut tls, false, peer, kind).await else {
        return;
    };
    serve_stream(tls, first, peer, kind, shared).await
}

async fn serve_stream<C>(
    mut client: C,
    first: FirstPacket,
    peer: SocketAddr,
    kind: Listener,
    shared: Arc<Shared>,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let raw = match first {
        FirstPacket::Cancel { pid, key, .. } => {
            forward_cancel(pid, key, &shared).await;
            return;
        }
        FirstPacket::SslRequest => return,
        FirstPacket::Startup { ref raw, .. } => raw.clone(),
    };
    if let Some(users) = &shared.users {
        let user = first.param("user").unwrap_or_default().to_string();
        serve_authenticated(client, peer, kind, raw, user, users, &shared).await;
        return;
    }
    let target = match route(kind, &shared).await {
        Ok(t) => t,
        Err(why) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!("refused client {peer} on the {kind} listener: {why}");
            let _ = client.write_all(&wire::fatal(REFUSED, &why)).await;
            return;
        }
    };
    let connect = shared.server_tls.connect(&target.host, target.port);
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

async fn relay<C>(client: C, server: ServerStream, target: &Target, kind: Listener, shared: &Shared)
where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let (mut sr, mut sw) = tokio::io::split(server);
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
async fn server_to_client<W: tokio::io::AsyncWrite + Unpin>(
    sr: &mut ReadHalf<ServerStream>,
    cw: &mut W,
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
            let backend = Backend {
                address: address.to_string(),
                pid,
                key,
            };
            cancel.insert(pid, key, backend);
            keys.push((pid, key));
        }
        *writing = true;
        cw.write_all(&buf[..n]).await?;
        *writing = false;
    }
}

/// Sends a client's `CancelRequest` to the backend its key stands for (unknown keys
/// are dropped, as a server drops a wrong key: without an answer).
async fn forward_cancel(pid: i32, key: i32, shared: &Shared) {
    let Some(backend) = shared.cancel.backend(pid, key) else {
        tracing::debug!("cancel request for an unknown backend {pid} dropped");
        return;
    };
    let server = backend.address.clone();
    let sent = async {
        let mut s = TcpStream::connect(&server).await?;
        s.write_all(&wire::cancel_request(backend.pid, backend.key))
            .await?;
        // The server closes the connection once it has read the request.
        let mut sink = [0u8; 1];
        let _ = s.read(&mut sink).await;
        Ok::<(), std::io::Error>(())
    };
    match tokio::time::timeout(shared.settings.connect_timeout, sent).await {
        Ok(Ok(())) => tracing::debug!(
            "cancel request for backend {} sent to {server}",
            backend.pid
        ),
        Ok(Err(e)) => tracing::warn!("cannot send a cancel request to {server}: {e}"),
        Err(_) => tracing::warn!("cannot send a cancel request to {server}: no answer"),
    }
}

/// A cancel key for a client, unused so far.
fn new_client_key(cancel: &CancelKeys) -> (i32, i32) {
    use rand::Rng;
    loop {
        let mut b = [0u8; 8];
        rand::rng().fill_bytes(&mut b);
        let pid = i32::from_be_bytes([b[0], b[1], b[2], b[3]]) & 0x3fff_ffff;
        let key = i32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        if pid != 0 && !cancel.contains(pid, key) {
            return (pid, key);
        }
    }
}

/// A session the proxy authenticates and logs in to the server for.
async fn serve_authenticated<C>(
    mut client: C,
    peer: SocketAddr,
    kind: Listener,
    startup: Vec<u8>,
    user: String,
    users: &Users,
    shared: &Shared,
) where
    C: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let checked = auth::authenticate_client(&mut client, &user, users, shared.settings.auth_type);
    let creds = match tokio::time::timeout(STARTUP_TIMEOUT, checked).await {
        Ok(Ok(c)) => c,
        Ok(Err(why)) => {
            shared.counters.auth_failed.fetch_add(1, Ordering::Relaxed);
            tracing::info!("client {peer} on the {kind} listener not let in: {why}");
            let _ = client
                .write_all(&wire::fatal(auth::INVALID_PASSWORD, &why.to_string()))
                .await;
            return;
        }
        Err(_) => return,
    };
    let target = match route(kind, shared).await {
        Ok(t) => t,
        Err(why) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::info!("refused client {peer} on the {kind} listener: {why}");
            let _ = client.write_all(&wire::fatal(REFUSED, &why)).await;
            return;
        }
    };
    let login = Login {
        startup,
        user,
        creds,
        client_key: new_client_key(&shared.cancel),
    };
    let (server, welcome) = match relay::open(&target, &login, shared).await {
        Ok(x) => x,
        Err(e) => {
            shared.counters.refused.fetch_add(1, Ordering::Relaxed);
            let error = match e {
                auth::LoginError::Server { code, message } => wire::fatal(&code, &message),
                other => wire::fatal(
                    REFUSED,
                    &format!("the proxy cannot log in to {target}: {other}"),
                ),
            };
            tracing::info!(
                "refused client {peer} on the {kind} listener: cannot log in to {target}"
            );
            let _ = client.write_all(&error).await;
            return;
        }
    };
    let mut tracker = Tracker::default();
    let mut hello = wire::authentication(0, &[]);
    for (name, value) in &welcome.params {
        hello.extend(wire::parameter_status(name, value));
        tracker.server_message(b'S', &wire::parameter_status(name, value)[5..]);
    }
    hello.extend(wire::backend_key_data(
        login.client_key.0,
        login.client_key.1,
    ));
    hello.extend(wire::message_bytes(b'Z', b"I"));
    if client.write_all(&hello).await.is_err() {
        shared.cancel.remove(login.client_key.0, login.client_key.1);
        return;
    }
    shared.counters.routed(kind, &target.name);
    tracing::debug!(
        "client {peer} on the {kind} listener (user {}) goes to {target}",
        login.user
    );
    shared.counters.active.fetch_add(1, Ordering::Relaxed);
    relay::relay(client, server, login, tracker, kind, shared).await;
    shared.counters.active.fetch_sub(1, Ordering::Relaxed);
}
