//! The `etcd3` section of the configuration, as Patroni spells it, and the endpoint
//! list and TLS material derived from it.

use ha_core::DcsError;
use serde::{Deserialize, Deserializer};
use std::path::{Path, PathBuf};

/// Patroni's `etcd3:` section (the subset fullauto supports).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdConfig {
    /// One endpoint, `host:port` (port defaults to 2379).
    #[serde(default)]
    pub host: Option<String>,
    /// Several endpoints: a YAML list or one comma-separated string.
    #[serde(default, deserialize_with = "list_or_comma_string")]
    pub hosts: Vec<String>,
    /// One endpoint given as a URL (`http://host:port`); wins over `host`/`hosts`.
    #[serde(default)]
    pub url: Option<String>,
    /// `http` or `https` for endpoints given without a scheme; defaults to `https`
    /// when TLS material is configured, else `http`.
    #[serde(default)]
    pub protocol: Option<String>,
    /// User for etcd authentication.
    #[serde(default)]
    pub username: Option<String>,
    /// Password for etcd authentication.
    #[serde(default)]
    pub password: Option<String>,
    /// CA bundle (PEM) that signed the etcd servers' certificates.
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM) for mutual TLS.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    #[serde(default)]
    pub key: Option<PathBuf>,
}

/// The default etcd client port, as Patroni assumes it.
const DEFAULT_PORT: u16 = 2379;

fn list_or_comma_string<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Hosts {
        One(String),
        Many(Vec<String>),
    }
    let raw = match Option::<Hosts>::deserialize(d)? {
        None => return Ok(Vec::new()),
        Some(Hosts::One(s)) => s.split(',').map(str::to_string).collect::<Vec<_>>(),
        Some(Hosts::Many(v)) => v,
    };
    Ok(raw
        .into_iter()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect())
}

/// TLS material read from the configured files.
#[derive(Debug, Clone)]
pub(crate) struct TlsMaterial {
    pub ca: Option<Vec<u8>>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl EtcdConfig {
    /// A config for plain-HTTP endpoints given as `host:port` or URLs.
    pub fn with_hosts<S: AsRef<str>>(hosts: &[S]) -> Self {
        EtcdConfig {
            hosts: hosts.iter().map(|h| h.as_ref().to_string()).collect(),
            ..Default::default()
        }
    }

    /// Whether any TLS file is configured.
    pub fn uses_tls_files(&self) -> bool {
        self.cacert.is_some() || self.cert.is_some() || self.key.is_some()
    }

    fn scheme(&self) -> Result<&'static str, DcsError> {
        match self
            .protocol
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("") => Ok(if self.uses_tls_files() {
                "https"
            } else {
                "http"
            }),
            Some("http") => Ok("http"),
            Some("https") => Ok("https"),
            Some(other) => Err(DcsError::Config(format!(
                "etcd3.protocol `{other}` is not supported: use http or https"
            ))),
        }
    }

    /// The endpoint URLs the client balances and fails over between.
    pub fn endpoints(&self) -> Result<Vec<String>, DcsError> {
        let scheme = self.scheme()?;
        let raw: Vec<String> = if let Some(url) = self.url.as_deref().filter(|u| !u.is_empty()) {
            vec![url.to_string()]
        } else if !self.hosts.is_empty() {
            self.hosts.clone()
        } else if let Some(host) = self.host.as_deref().filter(|h| !h.is_empty()) {
            vec![host.to_string()]
        } else {
            return Err(DcsError::Config(
                "etcd3: no endpoint configured: set `host`, `hosts` or `url`".to_string(),
            ));
        };
        raw.iter().map(|h| normalize_endpoint(h, scheme)).collect()
    }

    /// Reads and sanity-checks the TLS files so a wrong path or a non-PEM file is
    /// reported at start-up rather than as an obscure handshake failure later.
    pub(crate) fn tls_material(&self) -> Result<Option<TlsMaterial>, DcsError> {
        if !self.uses_tls_files() {
            return Ok(None);
        }
        let ca = match &self.cacert {
            Some(p) => Some(read_pem(p, "etcd3.cacert", &["CERTIFICATE"])?),
            None => None,
        };
        let identity = match (&self.cert, &self.key) {
            (Some(c), Some(k)) => Some((
                read_pem(c, "etcd3.cert", &["CERTIFICATE"])?,
                read_pem(k, "etcd3.key", &["PRIVATE KEY"])?,
            )),
            (None, None) => None,
            _ => {
                return Err(DcsError::Config(
                    "etcd3: `cert` and `key` must be given together for client TLS".to_string(),
                ))
            }
        };
        Ok(Some(TlsMaterial { ca, identity }))
    }

    /// Username and password, both or neither.
    pub(crate) fn credentials(&self) -> Result<Option<(String, String)>, DcsError> {
        match (&self.username, &self.password) {
            (Some(u), p) if !u.is_empty() => Ok(Some((u.clone(), p.clone().unwrap_or_default()))),
            (_, Some(p)) if !p.is_empty() => Err(DcsError::Config(
                "etcd3: `password` is set but `username` is not".to_string(),
            )),
            _ => Ok(None),
        }
    }
}

fn normalize_endpoint(raw: &str, scheme: &str) -> Result<String, DcsError> {
    let raw = raw.trim().trim_end_matches('/');
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, rest)) if s.eq_ignore_ascii_case("http") || s.eq_ignore_ascii_case("https") => {
            (s.to_ascii_lowercase(), rest)
        }
        Some((s, _)) => {
            return Err(DcsError::Config(format!(
                "etcd3 endpoint `{raw}`: scheme `{s}` is not supported: use http or https"
            )))
        }
        None => (scheme.to_string(), raw),
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(DcsError::Config(format!(
            "etcd3 endpoint `{raw}` is not `host:port`"
        )));
    }
    // A bare IPv6 address has colons but no brackets; `[::1]:2379` and `host:2379` have a port.
    let has_port = match rest.rsplit_once(':') {
        Some((host, port)) => {
            if !host.starts_with('[') && host.contains(':') {
                false
            } else if port.parse::<u16>().is_ok() {
                true
            } else {
                return Err(DcsError::Config(format!(
                    "etcd3 endpoint `{raw}`: `{port}` is not a port number"
                )));
            }
        }
        None => false,
    };
    Ok(if has_port {
        format!("{scheme}://{rest}")
    } else {
        format!("{scheme}://{rest}:{DEFAULT_PORT}")
    })
}

fn read_pem(path: &Path, what: &str, labels: &[&str]) -> Result<Vec<u8>, DcsError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DcsError::Config(format!("{what}: cannot read `{}`: {e}", path.display())))?;
    let text = String::from_utf8_lossy(&bytes);
    let ok = labels
        .iter()
        .any(|l| text.contains("-----BEGIN ") && text.contains(&format!("{l}-----")));
    if !ok {
        return Err(DcsError::Config(format!(
            "{what}: `{}` is not a PEM file with a {} block",
            path.display(),
            labels.join(" or ")
        )));
    }
    if text.contains("ENCRYPTED") {
        return Err(DcsError::Config(format!(
            "{what}: `{}` is encrypted, which is not supported: decrypt it \
             (openssl pkey -in KEY -out PLAIN_KEY) and point {what} at the result",
            path.display()
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_from_patroni_forms() {
        let c: EtcdConfig =
            serde_json::from_str(r#"{"hosts":"127.0.0.1:2379, 10.0.0.2"}"#).unwrap();
        assert_eq!(
            c.endpoints().unwrap(),
            vec!["http://127.0.0.1:2379", "http://10.0.0.2:2379"]
        );
        let c: EtcdConfig =
            serde_json::from_str(r#"{"hosts":["a:1","b:2"],"protocol":"https"}"#).unwrap();
        assert_eq!(c.endpoints().unwrap(), vec!["https://a:1", "https://b:2"]);
        let c: EtcdConfig = serde_json::from_str(r#"{"host":"[::1]:2380"}"#).unwrap();
        assert_eq!(c.endpoints().unwrap(), vec!["http://[::1]:2380"]);
        let c: EtcdConfig =
            serde_json::from_str(r#"{"url":"https://e:2379/","host":"ignored:1"}"#).unwrap();
        assert_eq!(c.endpoints().unwrap(), vec!["https://e:2379"]);
    }

    #[test]
    fn bad_configs_are_config_errors() {
        for raw in [
            r#"{}"#,
            r#"{"host":"a:notaport"}"#,
            r#"{"host":"a:1","protocol":"gopher"}"#,
            r#"{"url":"unix:///x"}"#,
        ] {
            let c: EtcdConfig = serde_json::from_str(raw).unwrap();
            assert!(
                matches!(c.endpoints(), Err(DcsError::Config(_))),
                "{raw} should be rejected"
            );
        }
        let c = EtcdConfig {
            host: Some("a:1".into()),
            password: Some("x".into()),
            ..Default::default()
        };
        assert!(matches!(c.credentials(), Err(DcsError::Config(_))));
    }

    #[test]
    fn tls_files_are_checked_up_front() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("ca.txt");
        std::fs::write(&not_pem, "hello").unwrap();
        let c = EtcdConfig {
            host: Some("a:1".into()),
            cacert: Some(not_pem),
            ..Default::default()
        };
        let err = c.tls_material().unwrap_err();
        assert!(err.to_string().contains("not a PEM file"), "{err}");
        assert_eq!(c.endpoints().unwrap(), vec!["https://a:1"]);
        let c = EtcdConfig {
            host: Some("a:1".into()),
            cacert: Some(dir.path().join("missing.pem")),
            ..Default::default()
        };
        let err = c.tls_material().unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
        let encrypted = dir.path().join("enc.key");
        std::fs::write(
            &encrypted,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let cert = dir.path().join("c.pem");
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let c = EtcdConfig {
            host: Some("a:1".into()),
            cert: Some(cert),
            key: Some(encrypted),
            ..Default::default()
        };
        let err = c.tls_material().unwrap_err();
        assert!(err.to_string().contains("etcd3.key: "), "{err}");
        assert!(err.to_string().contains("is encrypted"), "{err}");
        let c = EtcdConfig {
            host: Some("a:1".into()),
            cert: Some(dir.path().join("c.pem")),
            ..Default::default()
        };
        assert!(c
            .tls_material()
            .unwrap_err()
            .to_string()
            .contains("together"));
    }
}
