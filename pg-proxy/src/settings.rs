//! The `proxy:` section of the config file, read from its JSON form (the agent's
//! config loader has already checked the types; this reads them the same loose way).

use crate::server_tls::SslMode;
use crate::users::AuthType;
use serde_json::Value;
use std::path::PathBuf;
use std::time::Duration;

/// What the proxy serves and how it routes.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxySettings {
    /// Read-write listener (`host:port`): clients reach the current primary.
    pub listen_rw: Option<String>,
    /// Read-only listener (`host:port`): clients reach a replica, round robin.
    pub listen_ro: Option<String>,
    /// Read-only clients reach the primary when no replica qualifies.
    pub ro_fallback_to_primary: bool,
    /// Replicas further behind the leader's last known WAL position than this many
    /// bytes get no read-only clients (`None`: no limit).
    pub max_replica_lag: Option<u64>,
    /// How long a new read-write connection waits for a primary while none is
    /// usable (no leader, or a switchover under way) before it is refused.
    pub pause_deadline: Duration,
    /// Where `GET /metrics` is served (`host:port`; `None`: not served).
    pub metrics_listen: Option<String>,
    /// How long connecting to a server may take (not a config key: 5 s).
    pub connect_timeout: Duration,
    /// Users clients authenticate as, in pgbouncer's `auth_file` format; when set, the
    /// proxy logs in to servers itself and sessions can move to a new primary.
    pub auth_file: Option<PathBuf>,
    /// How clients authenticate to the proxy (`scram-sha-256` or `md5`).
    pub auth_type: AuthType,
    /// The proxy's name in the DCS (`proxies/<name>`); `None`: the caller picks one.
    pub name: Option<String>,
    /// PEM certificate chain for TLS with clients.
    pub certfile: Option<String>,
    /// PEM private key for it (default: `certfile`).
    pub keyfile: Option<String>,
    /// TLS to servers (`server_tls_sslmode`, libpq's modes; default `prefer`).
    pub server_tls_sslmode: SslMode,
    /// CA that signed the servers' certificates (PEM; for `verify-ca`/`verify-full`).
    pub server_tls_ca_file: Option<String>,
    /// Client certificate the proxy presents to servers that ask (PEM chain).
    pub server_tls_cert_file: Option<String>,
    /// Its unencrypted PEM private key (default: `server_tls_cert_file`).
    pub server_tls_key_file: Option<String>,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            listen_rw: None,
            listen_ro: None,
            ro_fallback_to_primary: false,
            max_replica_lag: None,
            pause_deadline: Duration::from_secs(5),
            metrics_listen: None,
            connect_timeout: Duration::from_secs(5),
            auth_file: None,
            auth_type: AuthType::ScramSha256,
            name: None,
            certfile: None,
            keyfile: None,
            server_tls_sslmode: SslMode::Prefer,
            server_tls_ca_file: None,
            server_tls_cert_file: None,
            server_tls_key_file: None,
        }
    }
}

/// A `proxy:` section that cannot be used, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("proxy.{key}: {why}")]
pub struct SettingsError {
    /// The key below `proxy`.
    pub key: String,
    /// What is wrong and what to write instead.
    pub why: String,
}

fn err(key: &str, why: impl Into<String>) -> SettingsError {
    SettingsError {
        key: key.to_string(),
        why: why.into(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn boolean(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "yes" | "on" | "1" => Some(true),
            "false" | "no" | "off" | "0" => Some(false),
            _ => None,
        },
        Value::Number(n) => n.as_i64().map(|i| i != 0),
        _ => None,
    }
}

fn seconds(section: &Value, key: &str, default: Duration) -> Result<Duration, SettingsError> {
    match section.get(key).filter(|v| !v.is_null()) {
        None => Ok(default),
        Some(v) => match number(v) {
            Some(s) if s >= 0.0 && s.is_finite() => Ok(Duration::from_secs_f64(s)),
            _ => Err(err(key, "must be a number of seconds, 0 or more")),
        },
    }
}

impl ProxySettings {
    /// Reads the `proxy` section (`null` or absent: no proxy configured, `None`).
    pub fn from_value(section: &Value) -> Result<Option<ProxySettings>, SettingsError> {
        if section.is_null() {
            return Ok(None);
        }
        if !section.is_object() {
            return Err(err("", "must be a mapping with listen_rw and/or listen_ro"));
        }
        let get = |k: &str| section.get(k).filter(|v| !v.is_null());
        let defaults = ProxySettings::default();
        let s = ProxySettings {
            listen_rw: get("listen_rw").and_then(text),
            listen_ro: get("listen_ro").and_then(text),
            ro_fallback_to_primary: match get("ro_fallback_to_primary") {
                None => false,
                Some(v) => boolean(v)
                    .ok_or_else(|| err("ro_fallback_to_primary", "must be true or false"))?,
            },
            max_replica_lag: match get("max_replica_lag") {
                None => None,
                Some(v) => Some(
                    number(v)
                        .filter(|n| *n >= 0.0)
                        .map(|n| n as u64)
                        .ok_or_else(|| err("max_replica_lag", "must be a number of bytes"))?,
                ),
            },
            pause_deadline: seconds(section, "pause_deadline", defaults.pause_deadline)?,
            metrics_listen: get("metrics_listen").and_then(text),
            connect_timeout: defaults.connect_timeout,
            auth_file: get("auth_file").and_then(text).map(PathBuf::from),
            certfile: get("certfile").and_then(text),
            keyfile: get("keyfile").and_then(text),
            server_tls_sslmode: match get("server_tls_sslmode").and_then(text) {
                None => defaults.server_tls_sslmode,
                Some(m) => SslMode::parse(&m).ok_or_else(|| {
                    err(
                        "server_tls_sslmode",
                        format!("{m:?} is not an sslmode: write disable, prefer, require, verify-ca or verify-full"),
                    )
                })?,
            },
            server_tls_ca_file: get("server_tls_ca_file").and_then(text),
            server_tls_cert_file: get("server_tls_cert_file").and_then(text),
            server_tls_key_file: get("server_tls_key_file").and_then(text),
            name: match get("name").and_then(text) {
                Some(n) if n.contains('/') => {
                    return Err(err("name", "must not contain '/': it is a key name in the DCS"))
                }
                other => other,
            },
            auth_type: match get("auth_type").and_then(text).as_deref() {
                None | Some("scram-sha-256") => AuthType::ScramSha256,
                Some("md5") => AuthType::Md5,
                Some(other) => {
                    return Err(err(
                        "auth_type",
                        format!("{other:?} is not an authentication type the proxy speaks: write scram-sha-256 or md5"),
                    ))
                }
            },
        };
        if s.keyfile.is_some() && s.certfile.is_none() {
            return Err(err(
                "keyfile",
                "needs proxy.certfile (the certificate it belongs to)",
            ));
        }
        if s.server_tls_key_file.is_some() && s.server_tls_cert_file.is_none() {
            return Err(err(
                "server_tls_key_file",
                "needs proxy.server_tls_cert_file (the certificate it belongs to)",
            ));
        }
        if matches!(
            s.server_tls_sslmode,
            SslMode::VerifyCa | SslMode::VerifyFull
        ) && s.server_tls_ca_file.is_none()
        {
            return Err(err(
                "server_tls_ca_file",
                "needed for server_tls_sslmode verify-ca and verify-full: the CA (PEM) that \
                 signed the servers' certificates",
            ));
        }
        if s.auth_file.is_none() && get("auth_type").is_some() {
            return Err(err(
                "auth_type",
                "applies to clients of proxy.auth_file, which is not set: set auth_file or remove auth_type",
            ));
        }
        if s.listen_rw.is_none() && s.listen_ro.is_none() {
            return Err(err(
                "listen_rw",
                "the proxy needs a listener: set listen_rw (read-write, host:port) and/or \
                 listen_ro (read-only)",
            ));
        }
        Ok(Some(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn absent_section_means_no_proxy_and_loose_values_are_read() {
        assert_eq!(ProxySettings::from_value(&Value::Null), Ok(None));
        let s = ProxySettings::from_value(&json!({
            "listen_rw": "127.0.0.1:6432",
            "ro_fallback_to_primary": "on",
            "max_replica_lag": "1048576",
            "pause_deadline": 2.5,
        }))
        .unwrap()
        .unwrap();
        assert_eq!(s.listen_rw.as_deref(), Some("127.0.0.1:6432"));
        assert_eq!(s.listen_ro, None);
        assert!(s.ro_fallback_to_primary);
        assert_eq!(s.max_replica_lag, Some(1_048_576));
        assert_eq!(s.pause_deadline, Duration::from_millis(2500));
        assert_eq!(s.connect_timeout, Duration::from_secs(5));
        assert_eq!(s.auth_file, None);
        let s = ProxySettings::from_value(&json!({
            "listen_rw": "127.0.0.1:6432",
            "auth_file": "/etc/users.txt",
            "auth_type": "md5",
        }))
        .unwrap()
        .unwrap();
        assert_eq!(s.auth_file, Some(PathBuf::from("/etc/users.txt")));
        assert_eq!(s.auth_type, AuthType::Md5);
    }

    #[test]
    fn a_section_without_listeners_or_with_bad_values_names_the_key() {
        let e = ProxySettings::from_value(&json!({"pause_deadline": 1})).unwrap_err();
        assert_eq!(e.key, "listen_rw");
        let e = ProxySettings::from_value(&json!({"listen_ro": ":6433", "pause_deadline": -1}))
            .unwrap_err();
        assert_eq!(e.key, "pause_deadline");
        assert!(e.to_string().starts_with("proxy.pause_deadline: "), "{e}");
        let e = ProxySettings::from_value(
            &json!({"listen_rw": ":1", "auth_file": "/x", "auth_type": "trust"}),
        )
        .unwrap_err();
        assert_eq!(e.key, "auth_type");
        let e =
            ProxySettings::from_value(&json!({"listen_rw": ":1", "auth_type": "md5"})).unwrap_err();
        assert_eq!(e.key, "auth_type");
    }

    #[test]
    fn server_tls_keys_are_read_and_checked() {
        let s = ProxySettings::from_value(&json!({"listen_rw": ":1"}))
            .unwrap()
            .unwrap();
        assert_eq!(s.server_tls_sslmode, SslMode::Prefer);
        let s = ProxySettings::from_value(&json!({
            "listen_rw": ":1",
            "server_tls_sslmode": "verify-full",
            "server_tls_ca_file": "/etc/ca.pem",
            "server_tls_cert_file": "/etc/proxy.pem",
        }))
        .unwrap()
        .unwrap();
        assert_eq!(s.server_tls_sslmode, SslMode::VerifyFull);
        assert_eq!(s.server_tls_ca_file.as_deref(), Some("/etc/ca.pem"));
        assert_eq!(s.server_tls_cert_file.as_deref(), Some("/etc/proxy.pem"));
        for (section, key) in [
            (
                json!({"listen_rw": ":1", "server_tls_sslmode": "verify-ca"}),
                "server_tls_ca_file",
            ),
            (
                json!({"listen_rw": ":1", "server_tls_sslmode": "always"}),
                "server_tls_sslmode",
            ),
            (
                json!({"listen_rw": ":1", "server_tls_key_file": "/k"}),
                "server_tls_key_file",
            ),
        ] {
            assert_eq!(ProxySettings::from_value(&section).unwrap_err().key, key);
        }
    }
}
