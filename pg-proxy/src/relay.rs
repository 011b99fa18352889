//! A session the proxy logged in to the server itself (`proxy.auth_file`), relayed
//! message by message so it can follow the primary:
//!
//! - While a switchover is pending, the primary is promoting, or the session's
//!   server no longer holds the leader key, a session at a transaction boundary
//!   (every request answered, last `ReadyForQuery` idle) holds its client's next
//!   request instead of sending it; a session inside a transaction goes on, so
//!   transactions in flight can finish.
//! - An idle session whose server lost the leader key, or whose server closed it
//!   while the cluster was changing primary (the old primary shutting down), is moved:
//!   the proxy logs in to the new primary with the client's startup parameters,
//!   sets the reported parameters the client changed, prepares its named prepared
//!   statements again, and sends the held request there.
//! - A session that cannot move (a transaction open when the lease moved, session
//!   state the proxy cannot recreate, no primary within `pause_deadline`) is closed
//!   with a FATAL `ErrorResponse` saying why.

use crate::auth::{self, Credentials, Welcome};
use crate::routes::Target;
use crate::server_tls::ServerStream;
use crate::session::{Listener, Shared, FENCED, REFUSED};
use crate::track::{Tracker, REPLAYED_PARAMETERS};
use crate::wire::{self, complete_message};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::time::Instant;

/// Buffered bytes in one direction above which the proxy stops reading that side.
const HIGH_WATER: usize = 256 * 1024;
/// How long a closed session waits for its client to read the error and close.
const LINGER: Duration = Duration::from_secs(5);

/// Who the session is, for logging in to servers.
pub struct Login {
    /// The client's `StartupMessage`, replayed to every server.
    pub startup: Vec<u8>,
    /// The user name from it.
    pub user: String,
    /// What the proxy logs in with.
    pub creds: Credentials,
    /// The cancel key the proxy gave the client.
    pub client_key: (i32, i32),
}

/// A server connection of a session.
pub struct Server {
    /// The member.
    pub target: Target,
    read: ReadHalf<ServerStream>,
    write: WriteHalf<ServerStream>,
    /// Queries routed to this member (shared counter).
    queries: Arc<AtomicU64>,
}

/// Connects to `target` and logs in as `login` says.
pub async fn open(
    target: &Target,
    login: &Login,
    shared: &Shared,
) -> Result<(Server, Welcome), auth::LoginError> {
    let connect = async {
        let mut stream = shared.server_tls.connect(&target.host, target.port).await?;
        let welcome = auth::login(&mut stream, &login.startup, &login.user, &login.creds).await?;
        Ok::<_, auth::LoginError>((stream, welcome))
    };
    let (stream, welcome) =
        match tokio::time::timeout(shared.settings.connect_timeout, connect).await {
            Ok(r) => r?,
            Err(_) => {
                return Err(auth::LoginError::Io(format!(
                    "no answer within {} ms",
                    shared.settings.connect_timeout.as_millis()
                )))
            }
        };
    shared.cancel.insert(
        login.client_key.0,
        login.client_key.1,
        crate::cancel::Backend {
            address: target.address(),
            pid: welcome.key.0,
            key: welcome.key.1,
        },
    );
    let (read, write) = tokio::io::split(stream);
    Ok((
        Server {
            target: target.clone(),
            read,
            write,
            queries: shared.counters.queries_to(&target.name),
        },
        welcome,
    ))
}

async fn read_opt<R: AsyncRead + Unpin>(
    r: Option<&mut R>,
    buf: &mut [u8],
) -> std::io::Result<usize> {
    match r {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn write_opt<W: AsyncWrite + Unpin>(
    w: Option<&mut W>,
    data: &[u8],
) -> std::io::Result<usize> {
    match w {
        Some(w) => w.write(data).await,
        None => std::future::pending().await,
    }
}

enum Event {
    Client(std::io::Result<usize>),
    Server(std::io::Result<usize>),
    ToServer(std::io::Result<usize>),
    ToClient(std::io::Result<usize>),
    Routes,
    Deadline,
}

/// Relays `client` and `server` until either ends or the session is closed.
pub async fn relay<C>(
    client: C,
    server: Server,
    login: Login,
    mut tracker: Tracker,
    kind: Listener,
    shared: &Shared,
) where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let (mut cr, mut cw) = tokio::io::split(client);
    let rw = kind == Listener::ReadWrite;
    let mut server = Some(server);
    let mut routes = shared.routes.clone();
    let (mut cin, mut sin) = (Vec::new(), Vec::new());
    let (mut to_server, mut to_client) = (Vec::new(), Vec::new());
    let (mut cbuf, mut sbuf) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    let mut held_since: Option<Instant> = None;
    // Past the pause deadline with the lease still on the session's server, a
    // pending switchover no longer holds its requests.
    let mut overridden = false;
    // An unsolicited FATAL from a server that then closed (shut down, terminated).
    let mut lost_error: Option<Vec<u8>> = None;
    let mut client_gone = false;
    let end: Option<Vec<u8>> = 'session: loop {
        let (lease_ok, ready) = {
            let r = routes.borrow();
            let name = server.as_ref().map(|s| s.target.name.as_str());
            (
                name.is_some() && r.primary_name() == name,
                r.ready_for_writes(),
            )
        };
        // Read (cloned) only where needed: not on the path of every message.
        let primary = || routes.borrow().primary.clone();
        // The session's server lost the leader key.
        if rw && server.is_some() && !lease_ok {
            let old = server
                .as_ref()
                .map(|s| s.target.name.clone())
                .unwrap_or_default();
            let now = match &primary() {
                Ok(t) => format!("the primary is now {}", t.name),
                Err(why) => why.to_string(),
            };
            if tracker.idle() && to_server.is_empty() && tracker.pinned.is_none() {
                tracing::debug!("an idle session leaves {old}: {now}");
                server = None;
                sin.clear();
            } else {
                shared.counters.fenced.fetch_add(1, Ordering::Relaxed);
                let why = match (&tracker.pinned, tracker.idle()) {
                    (Some(p), true) => format!("this session cannot move to the new primary: {p}"),
                    _ => "a transaction was open".to_string(),
                };
                let message = format!(
                    "terminating connection because {old} no longer holds the leader key ({now}) and {why}; reconnect to reach the new primary"
                );
                tracing::info!("closed a read-write session on {old}: {message}");
                break 'session Some(wire::fatal(FENCED, &message));
            }
        }
        // Server messages to the client.
        let mut used = 0;
        while let Some((k, len)) = complete_message(&sin[used..]) {
            let m = &sin[used..used + len];
            used += len;
            if k == b'E' && !tracker.in_flight() {
                let (severity, _, _) = wire::error_fields(&m[5..]);
                if severity == "FATAL" || severity == "PANIC" {
                    lost_error = Some(m.to_vec());
                    continue;
                }
            }
            tracker.server_message(k, &m[5..]);
            to_client.extend_from_slice(m);
        }
        sin.drain(..used);
        // A session without a server moves to the primary once it is ready.
        if server.is_none() {
            if let Some(p) = &tracker.pinned {
                let message = format!(
                    "terminating connection because the primary changed and this session cannot move to the new one: {p}; reconnect"
                );
                shared.counters.fenced.fetch_add(1, Ordering::Relaxed);
                tracing::info!("closed a read-write session: {message}");
                break 'session Some(wire::fatal(FENCED, &message));
            }
            if let (Ok(target), true) = (&primary(), ready || overridden) {
                match move_to(target, &login, &mut tracker, shared).await {
                    Ok((s, notices)) => {
                        to_client.extend(notices);
                        server = Some(s);
                        overridden = false;
                        lost_error = None;
                        continue;
                    }
                    Err(e) => {
                        let message = format!(
                            "the proxy could not move this session to the new primary {target}: {e}; reconnect"
                        );
                        tracing::warn!("closed a read-write session: {message}");
                        break 'session Some(wire::fatal(REFUSED, &message));
                    }
                }
            }
        }
        // Client messages to the server, unless held at a boundary.
        let natural_hold = rw && (server.is_none() || !ready || !lease_ok);
        if !natural_hold {
            overridden = false;
        }
        let hold = natural_hold && !overridden;
        let mut used = 0;
        let mut holding = false;
        while let Some((k, len)) = complete_message(&cin[used..]) {
            if (hold && tracker.idle()) || server.is_none() {
                holding = true;
                break;
            }
            let m = &cin[used..used + len];
            used += len;
            tracker.client_message(k, m);
            if matches!(k, b'Q' | b'P') {
                if let Some(s) = &server {
                    s.queries.fetch_add(1, Ordering::Relaxed);
                }
            }
            to_server.extend_from_slice(m);
            if k == b'X' {
                client_gone = true;
            }
        }
        cin.drain(..used);
        if holding {
            if held_since.is_none() {
                held_since = Some(Instant::now());
                shared.counters.paused.fetch_add(1, Ordering::Relaxed);
            }
        } else if let Some(since) = held_since.take() {
            shared.counters.pause_ended(since.elapsed());
        }
        let deadline = held_since.map(|t| t + shared.settings.pause_deadline);
        if let Some(d) = deadline {
            if Instant::now() >= d {
                if server.is_some() && lease_ok {
                    overridden = true;
                    continue;
                }
                let why = match &primary() {
                    Ok(t) => format!("{} does not run as primary yet", t.name),
                    Err(why) => why.to_string(),
                };
                let message = format!(
                    "no primary to move this session to within {} ms (proxy.pause_deadline): {why}; reconnect",
                    shared.settings.pause_deadline.as_millis()
                );
                tracing::warn!("closed a read-write session: {message}");
                break 'session Some(wire::fatal(REFUSED, &message));
            }
        }
        if client_gone && to_server.is_empty() {
            break 'session None;
        }
        let (server_read, server_write) = match server.as_mut() {
            Some(s) => (Some(&mut s.read), Some(&mut s.write)),
            None => (None, None),
        };
        let event = tokio::select! {
            r = cr.read(&mut cbuf), if !client_gone && cin.len() < HIGH_WATER => Event::Client(r),
            r = read_opt(server_read, &mut sbuf), if sin.len() < HIGH_WATER => Event::Server(r),
            r = write_opt(server_write, &to_server), if !to_server.is_empty() => Event::ToServer(r),
            r = cw.write(&to_client), if !to_client.is_empty() => Event::ToClient(r),
            r = routes.changed() => match r {
                Ok(()) => Event::Routes,
                Err(_) => break 'session Some(wire::fatal(REFUSED, "the proxy stopped watching the DCS")),
            },
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => Event::Deadline,
        };
        match event {
            Event::Client(Ok(0)) | Event::Client(Err(_)) => {
                // The client left without Terminate: end the server session too.
                if let Some(s) = server.as_mut() {
                    let _ = s.write.write_all(&wire::message_bytes(b'X', &[])).await;
                }
                break 'session None;
            }
            Event::Client(Ok(n)) => cin.extend_from_slice(&cbuf[..n]),
            Event::Server(Ok(n)) if n > 0 => sin.extend_from_slice(&sbuf[..n]),
            Event::Server(_) | Event::ToServer(Err(_)) => {
                let name = server.take().map(|s| s.target.name).unwrap_or_default();
                let changing = !(lease_ok && ready);
                if rw && tracker.idle() && to_server.is_empty() && changing {
                    tracing::debug!("the session's server {name} closed it while the primary changes: moving it");
                    sin.clear();
                    continue;
                }
                // Tell the client what the server said, or that it went away.
                let mut rest = std::mem::take(&mut to_client);
                match lost_error.take() {
                    Some(e) => rest.extend(e),
                    None => rest.extend(wire::fatal(
                        REFUSED,
                        &format!("the server {name} closed the connection"),
                    )),
                }
                to_client = rest;
                break 'session Some(Vec::new());
            }
            Event::ToServer(Ok(n)) => {
                to_server.drain(..n);
            }
            Event::ToClient(Ok(n)) => {
                to_client.drain(..n);
            }
            Event::ToClient(Err(_)) => break 'session None,
            Event::Routes | Event::Deadline => {}
        }
    };
    if let Some(error) = end {
        if let Some(s) = server.as_mut() {
            let _ = s.write.write_all(&wire::message_bytes(b'X', &[])).await;
        }
        drop(server);
        to_client.extend(error);
        let flush = async {
            cw.write_all(&to_client).await?;
            cw.shutdown().await
        };
        let _ = tokio::time::timeout(LINGER, flush).await;
        // Read what the client still sends until it closes: a socket closed with
        // unread data is reset, and a reset discards the error it has not read yet.
        let drain = async {
            let mut sink = [0u8; 4096];
            while matches!(cr.read(&mut sink).await, Ok(n) if n > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }
    shared.cancel.remove(login.client_key.0, login.client_key.1);
}

/// Logs in to the new primary `target` and recreates what the session set: the
/// replayed parameters the client changed and its named prepared statements.
/// Returns the server and the `ParameterStatus` messages the client must see.
async fn move_to(
    target: &Target,
    login: &Login,
    tracker: &mut Tracker,
    shared: &Shared,
) -> Result<(Server, Vec<u8>), String> {
    let started = Instant::now();
    let (mut server, welcome) = open(target, login, shared)
        .await
        .map_err(|e| e.to_string())?;
    let mut fresh: std::collections::BTreeMap<String, String> =
        welcome.params.into_iter().collect();
    let mut setup = Vec::new();
    let mut answers = 0;
    let sets: String = REPLAYED_PARAMETERS
        .iter()
        .filter_map(|name| {
            let want = tracker.parameters.get(*name)?;
            (fresh.get(*name) != Some(want))
                .then(|| format!("SET {name} TO '{}';", want.replace('\'', "''")))
        })
        .collect();
    if !sets.is_empty() {
        let mut body = sets.into_bytes();
        body.push(0);
        setup.extend(wire::message_bytes(b'Q', &body));
        answers += 1;
    }
    if !tracker.statements.is_empty() {
        for raw in tracker.statements.values() {
            setup.extend_from_slice(raw);
        }
        setup.extend(wire::message_bytes(b'S', &[]));
        answers += 1;
    }
    if answers > 0 {
        let replay = async {
            server
                .write
                .write_all(&setup)
                .await
                .map_err(|e| e.to_string())?;
            let mut failed = None;
            while answers > 0 {
                let (k, body) = wire::read_message(&mut server.read, 1 << 20)
                    .await
                    .map_err(|e| e.to_string())?;
                match k {
                    b'Z' => answers -= 1,
                    b'E' => failed = Some(wire::error_fields(&body).2),
                    b'S' => {
                        let (name, rest) = wire::cstring(&body);
                        fresh.insert(name, wire::cstring(rest).0);
                    }
                    _ => {}
                }
            }
            match failed {
                Some(e) => Err(format!(
                    "recreating the session's settings and prepared statements failed: {e}"
                )),
                None => Ok(()),
            }
        };
        tokio::time::timeout(shared.settings.connect_timeout, replay)
            .await
            .map_err(|_| {
                "the new primary did not answer while the session was recreated".to_string()
            })??;
    }
    // The client hears of parameters that differ on the new server.
    let mut notices = Vec::new();
    for (name, value) in fresh {
        if tracker.parameters.get(&name) != Some(&value) {
            notices.extend(wire::parameter_status(&name, &value));
            tracker.parameters.insert(name, value);
        }
    }
    shared.counters.moved.fetch_add(1, Ordering::Relaxed);
    tracing::info!(
        "moved a session to {target} in {} ms ({} prepared statements)",
        started.elapsed().as_millis(),
        tracker.statements.len()
    );
    Ok((server, notices))
}
