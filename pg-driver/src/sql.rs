//! SQL connections: always fresh, with short timeouts, so a hung server cannot stall
//! the caller.

use crate::config::{Credentials, Endpoint, Host};
use crate::credentials::{Preference, SslMode};
use crate::error::{DriverError, Result};
use crate::tls;
use std::path::Path;
use std::time::Duration;
use tokio_postgres::config::{ChannelBinding, SslMode as WireSsl};
use tokio_postgres::{Client, NoTls};

/// Opens a connection as `creds` to `to`; the whole handshake must finish within
/// `timeout`. TCP connections use TLS as the role's `sslmode` asks (libpq's meaning;
/// `home` holds libpq's `~/.postgresql` defaults); the unix socket never does.
pub async fn connect(
    to: &Endpoint,
    creds: &Credentials,
    dbname: &str,
    timeout: Duration,
    home: Option<&Path>,
) -> Result<Client> {
    let mut cfg = tokio_postgres::Config::new();
    match &to.host {
        Host::Tcp(h) => cfg.host(h),
        Host::Socket(d) => cfg.host_path(d),
    };
    cfg.port(to.port)
        .user(&creds.username)
        .dbname(dbname)
        .application_name("fullauto")
        .connect_timeout(timeout);
    if let Some(p) = &creds.password {
        cfg.password(p);
    }
    cfg.channel_binding(match creds.channel_binding {
        None | Some(Preference::Prefer) => ChannelBinding::Prefer,
        Some(Preference::Disable) => ChannelBinding::Disable,
        Some(Preference::Require) => ChannelBinding::Require,
    });
    let target = format!("{}:{}", to.host_text(), to.port);
    let started = std::time::Instant::now();
    let attempt = |wire: Option<WireSsl>| {
        let mut cfg = cfg.clone();
        let target = target.clone();
        async move {
            let left = timeout.saturating_sub(started.elapsed());
            let res = match wire {
                None => tokio::time::timeout(left, cfg.ssl_mode(WireSsl::Disable).connect(NoTls))
                    .await
                    .map(|r| r.map(|(c, conn)| (c, spawn(conn)))),
                // TLS only if the server offers it: the TLS files are read only then.
                Some(w @ WireSsl::Prefer) => {
                    let tls = tls::LazyTls::new(creds, home);
                    tokio::time::timeout(left, cfg.ssl_mode(w).connect(tls))
                        .await
                        .map(|r| r.map(|(c, conn)| (c, spawn(conn))))
                }
                Some(w) => {
                    let tls = tls::connector(creds, home)?;
                    tokio::time::timeout(left, cfg.ssl_mode(w).connect(tls))
                        .await
                        .map(|r| r.map(|(c, conn)| (c, spawn(conn))))
                }
            };
            match res {
                Err(_) => Err(DriverError::Timeout(format!(
                    "connecting to {target} took longer than {}ms",
                    timeout.as_millis()
                ))),
                Ok(Err(e)) => Err(DriverError::Query(format!("connect to {target}: {e}"))),
                Ok(Ok((c, ()))) => Ok(c),
            }
        }
    };
    if matches!(to.host, Host::Socket(_)) {
        return attempt(None).await;
    }
    match creds.ssl_mode() {
        SslMode::Disable => attempt(None).await,
        // libpq: plain first, TLS when the server refuses the plain connection.
        SslMode::Allow => match attempt(None).await {
            Err(DriverError::Query(_)) => attempt(Some(WireSsl::Require)).await,
            other => other,
        },
        SslMode::Prefer => attempt(Some(WireSsl::Prefer)).await,
        SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
            attempt(Some(WireSsl::Require)).await
        }
    }
}

/// Drives a connection in the background; it ends when the client is dropped, and
/// its error is the query's.
fn spawn<F>(conn: F)
where
    F: std::future::Future<Output = std::result::Result<(), tokio_postgres::Error>>
        + Send
        + 'static,
{
    tokio::spawn(async move {
        let _ = conn.await;
    });
}

/// Runs a statement batch within `timeout`.
pub async fn batch(client: &Client, sql: &str, timeout: Duration) -> Result<()> {
    match tokio::time::timeout(timeout, client.batch_execute(sql)).await {
        Err(_) => Err(DriverError::Timeout(format!(
            "statement did not finish within {}ms",
            timeout.as_millis()
        ))),
        Ok(Err(e)) => Err(query_error(e)),
        Ok(Ok(())) => Ok(()),
    }
}

/// Turns a tokio-postgres error into ours with the server's message.
pub fn query_error(e: tokio_postgres::Error) -> DriverError {
    match e.as_db_error() {
        Some(db) => DriverError::Query(format!("{}: {}", db.code().code(), db.message())),
        None => DriverError::Query(e.to_string()),
    }
}

/// Quotes an SQL string literal.
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Quotes an SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}
