//! Addresses: parsing `host:port` text and naming the server a connection goes to
//! (TCP host or unix socket directory, and port).

use crate::error::{DriverError, Result};
use std::path::PathBuf;

/// A parsed `host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPort {
    /// Host part (may be a comma-separated list for `listen`).
    pub host: String,
    /// Port.
    pub port: u16,
}

/// How a connection reaches a server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// TCP to a host name or address (TLS per the role's `sslmode`).
    Tcp(String),
    /// The unix socket in this directory (never TLS, as in libpq).
    Socket(PathBuf),
}

/// A server to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host or socket directory.
    pub host: Host,
    /// Port (also names the socket file).
    pub port: u16,
}

impl Endpoint {
    /// TCP to `host:port`.
    pub fn tcp(host: &str, port: u16) -> Self {
        Endpoint {
            host: Host::Tcp(host.into()),
            port,
        }
    }

    /// The libpq `host` value: the name, address or socket directory.
    pub fn host_text(&self) -> String {
        match &self.host {
            Host::Tcp(h) => h.clone(),
            Host::Socket(d) => d.display().to_string(),
        }
    }
}

/// Parses `host:port` (IPv6 hosts in brackets).
pub fn parse_host_port(text: &str) -> Result<HostPort> {
    let (host, port) = text
        .rsplit_once(':')
        .ok_or_else(|| DriverError::Config(format!("`{text}` is not host:port")))?;
    let port: u16 = port
        .parse()
        .map_err(|_| DriverError::Config(format!("`{text}`: bad port")))?;
    let host = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    if host.is_empty() {
        return Err(DriverError::Config(format!("`{text}`: empty host")));
    }
    Ok(HostPort { host, port })
}
