//! SQL connections: always fresh, with short timeouts, so a hung server cannot stall
//! the caller.

use crate::config::Credentials;
use crate::error::{DriverError, Result};
use std::time::Duration;
use tokio_postgres::{Client, NoTls};

/// Opens a connection; the whole handshake must finish within `timeout`.
pub async fn connect(
    host: &str,
    port: u16,
    creds: &Credentials,
    dbname: &str,
    timeout: Duration,
) -> Result<Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host(host)
        .port(port)
        .user(&creds.username)
        .dbname(dbname)
        .application_name("fullauto")
        .connect_timeout(timeout);
    if let Some(p) = &creds.password {
        cfg.password(p);
    }
    let (client, conn) = match tokio::time::timeout(timeout, cfg.connect(NoTls)).await {
        Err(_) => {
            return Err(DriverError::Timeout(format!(
                "connecting to {host}:{port} took longer than {}ms",
                timeout.as_millis()
            )))
        }
        Ok(Err(e)) => return Err(DriverError::Query(format!("connect to {host}:{port}: {e}"))),
        Ok(Ok(c)) => c,
    };
    tokio::spawn(async move {
        // The connection ends when the client is dropped; its error is the query's.
        let _ = conn.await;
    });
    Ok(client)
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
