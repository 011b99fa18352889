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
    // The session's server answered, since the session moved there, that it left
    // recovery: while its record still says otherwise, the session may write.
    let mut confirmed = false;
    // The promoting member a session could not confirm as writable: the session
    // waits for its record (or another leader) instead of asking it again.
    let mut unconfirmed: Option<String> = None;
    let end: Option<Vec<u8>> = 'session: loop {
        let (lease_ok, ready, promoting) = {
            let r = routes.borrow();
            let name = server.as_ref().map(|s| s.target.name.as_str());
            let lease_ok = name.is_some() && r.primary_name() == name;
            (
                lease_ok,
                r.ready_for_writes() || (confirmed && lease_ok && r.awaits_promotion()),
                r.awaits_promotion(),
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
                confirmed = false;
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
            // The leader key names a member still promoting: log in there and
            // wait, asking it, until it leaves recovery, rather than for its record.
            let target = primary();
            let ask = promoting
                && target
                    .as_ref()
                    .is_ok_and(|t| unconfirmed.as_deref() != Some(t.name.as_str()));
            if let (Ok(target), true) = (&target, ready || overridden || ask) {
                let check = !ready && !overridden;
                match move_to(target, &login, &mut tracker, shared, check).await {
                    Ok((s, notices)) => {
                        to_client.extend(notices);
                        server = Some(s);
                        overridden = false;
                        confirmed = check;
                        lost_error = None;
                        continue;
                    }
                    Err(e) if check => {
                        tracing::debug!(
                            "a session waits for {}'s record: asking it whether it left recovery failed: {e}",
                            target.name
                        );
                        unconfirmed = Some(target.name.clone());
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
                confirmed = false;
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
/// With `check`, first waits (asking the server) until it has left recovery.
async fn move_to(
    target: &Target,
    login: &Login,
    tracker: &mut Tracker,
    shared: &Shared,
    check: bool,
) -> Result<(Server, Vec<u8>), String> {
    let started = Instant::now();
    let (mut server, welcome) = open(target, login, shared)
        .await
        .map_err(|e| e.to_string())?;
    let mut fresh: std::collections::BTreeMap<String, String> =
        welcome.params.into_iter().collect();
    if check {
        wait_out_of_recovery(&mut server, &mut fresh, shared).await?;
    }
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
        "moved a session to {target} in {} ms ({} prepared statements{})",
        started.elapsed().as_millis(),
        tracker.statements.len(),
        if check {
            "; it answered that it left recovery before its record said so"
        } else {
            ""
        }
    );
    Ok((server, notices))
}

/// How often a session waiting on a promoting leader asks it whether it left
/// recovery.
const RECOVERY_POLL: Duration = Duration::from_millis(10);

/// Asks `server` (the member the leader key names) `pg_is_in_recovery()` until it
/// answers false, as long as the key stays there and within `pause_deadline`;
/// parameters it reports meanwhile (`in_hot_standby` turning off) go to `fresh`.
async fn wait_out_of_recovery(
    server: &mut Server,
    fresh: &mut std::collections::BTreeMap<String, String>,
    shared: &Shared,
) -> Result<(), String> {
    let query = {
        let mut body = b"SELECT pg_is_in_recovery()".to_vec();
        body.push(0);
        wire::message_bytes(b'Q', &body)
    };
    let give_up = Instant::now() + shared.settings.pause_deadline;
    loop {
        server
            .write
            .write_all(&query)
            .await
            .map_err(|e| e.to_string())?;
        let mut in_recovery = None;
        let mut failed = None;
        loop {
            let read = wire::read_message(&mut server.read, 1 << 20);
            let (k, body) = tokio::time::timeout(shared.settings.connect_timeout, read)
                .await
                .map_err(|_| {
                    format!(
                        "{} did not answer whether it left recovery",
                        server.target.name
                    )
                })?
                .map_err(|e| e.to_string())?;
            match k {
                b'Z' => break,
                b'D' => in_recovery = first_column(&body).map(|v| v == b"t"),
                b'E' => failed = Some(wire::error_fields(&body).2),
                b'S' => {
                    let (name, rest) = wire::cstring(&body);
                    fresh.insert(name, wire::cstring(rest).0);
                }
                _ => {}
            }
        }
        if let Some(e) = failed {
            return Err(format!(
                "asking {} whether it left recovery failed: {e}",
                server.target.name
            ));
        }
        if in_recovery == Some(false) {
            return Ok(());
        }
        let still_leader =
            shared.routes.borrow().primary_name() == Some(server.target.name.as_str());
        if !still_leader {
            return Err(format!(
                "{} lost the leader key while promoting",
                server.target.name
            ));
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "{} did not leave recovery within {} ms (proxy.pause_deadline)",
                server.target.name,
                shared.settings.pause_deadline.as_millis()
            ));
        }
        tokio::time::sleep(RECOVERY_POLL).await;
    }
}

/// The first column of a `DataRow` body (`None` for NULL or a short body).
fn first_column(body: &[u8]) -> Option<&[u8]> {
    let count = i16::from_be_bytes(body.get(..2)?.try_into().ok()?);
    if count < 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    body.get(6..6 + len)
}
