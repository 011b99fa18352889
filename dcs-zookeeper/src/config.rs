//! The `zookeeper:` configuration section, in Patroni's spelling.

use crate::error::ZkError;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use zookeeper_client::{Acl, AuthId, Permission, TlsOptions};

/// Patroni's `zookeeper:` section: where the ensemble is and how to authenticate.
///
/// TLS (`use_ssl: true`) follows Patroni (kazoo): the server certificate chain must
/// lead to `cacert` (or, without it, to the system trust store), the host name in it
/// is not checked, and `cert`/`key` are presented when the server asks for a client
/// certificate. `verify: false` and `key_password` are refused (see
/// [`ZooKeeperConfig::tls_refusal`]).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooKeeperConfig {
    /// Ensemble members as `host:port` (a YAML list or one comma-separated string);
    /// the client moves between them when one fails.
    #[serde(deserialize_with = "hosts_list")]
    pub hosts: Vec<String>,
    /// Credentials added to the session: scheme ⇒ credential, e.g.
    /// `{digest: "user:password"}`.
    #[serde(default)]
    pub auth_data: BTreeMap<String, String>,
    /// ACLs put on every znode this agent creates: principal ⇒ permissions
    /// (`READ`, `WRITE`, `CREATE`, `DELETE`, `ADMIN`, `ALL`). A principal written as
    /// `scheme:id` (e.g. `digest:user:<base64 sha1>`) uses that scheme; one without a
    /// colon is an x509 principal. Empty: world-readable and writable, as Patroni.
    #[serde(default)]
    pub set_acls: BTreeMap<String, Vec<String>>,
    /// Patroni's TLS switch: every host is reached over TLS. Without it the TLS
    /// settings below are not used (as in Patroni).
    #[serde(default)]
    pub use_ssl: bool,
    /// PEM file with the CA certificate(s) the servers' certificates must chain to.
    /// Without it, the system trust store (`SSL_CERT_FILE`, else the usual bundle
    /// paths) is used.
    #[serde(default)]
    pub cacert: Option<PathBuf>,
    /// PEM file with the client certificate (chain); needs `key`. A file holding both
    /// certificate and key can be given as both.
    #[serde(default)]
    pub cert: Option<PathBuf>,
    /// PEM file with the client certificate's unencrypted private key; needs `cert`.
    #[serde(default)]
    pub key: Option<PathBuf>,
    /// Password of an encrypted `key`: not supported, so refused when set with
    /// `use_ssl`.
    #[serde(default)]
    pub key_password: Option<String>,
    /// Whether the server certificate is verified (default `true`). `false` is
    /// refused with `use_ssl`: the chain is always checked.
    #[serde(default = "yes")]
    pub verify: bool,
}

fn yes() -> bool {
    true
}

impl Default for ZooKeeperConfig {
    fn default() -> Self {
        ZooKeeperConfig {
            hosts: Vec::new(),
            auth_data: BTreeMap::new(),
            set_acls: BTreeMap::new(),
            use_ssl: false,
            cacert: None,
            cert: None,
            key: None,
            key_password: None,
            verify: true,
        }
    }
}

/// Where the system trust store usually is (Debian/Ubuntu, RHEL/Fedora, SUSE,
/// Alpine).
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Installs rustls' process-wide crypto provider (ring, as everywhere else in the
/// agent) unless one is already installed; needed because zookeeper-client's
/// futures-rustls enables `aws-lc-rs` next to `ring`, and with two providers compiled
/// in rustls picks neither by itself.
fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing the race to another installer is fine: a provider is installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

fn read_pem(key: &str, path: &Path) -> Result<String, ZkError> {
    std::fs::read_to_string(path).map_err(|e| {
        ZkError::Config(format!(
            "`{key}`: cannot read {}: {e}; give a readable PEM file",
            path.display()
        ))
    })
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Hosts {
    One(String),
    Many(Vec<String>),
}

fn hosts_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = match Hosts::deserialize(d)? {
        Hosts::One(s) => vec![s],
        Hosts::Many(v) => v,
    };
    Ok(raw
        .iter()
        .flat_map(|h| h.split(','))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect())
}

impl ZooKeeperConfig {
    /// A config for these hosts without auth or ACLs.
    pub fn with_hosts<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        ZooKeeperConfig {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// The TLS setting that cannot be used, as `(key, what to do)`, or `None`.
    /// Without `use_ssl` nothing is checked (Patroni ignores the TLS keys then).
    pub fn tls_refusal(&self) -> Option<(&'static str, String)> {
        if !self.use_ssl {
            return None;
        }
        if self.key_password.is_some() {
            return Some((
                "key_password",
                "encrypted client keys are not supported; decrypt the key (for example \
                 `openssl pkey -in key.pem -out plain-key.pem`), point `key` at the \
                 result and remove key_password"
                    .to_string(),
            ));
        }
        if !self.verify {
            return Some((
                "verify",
                "`verify: false` (no server certificate check) is not supported; give \
                 the CA that signed the ZooKeeper servers' certificates as cacert and \
                 remove verify (the host name in the certificate is not checked, as in \
                 Patroni)"
                    .to_string(),
            ));
        }
        match (&self.cert, &self.key) {
            (Some(_), None) => Some((
                "cert",
                "set without key: a client certificate needs its key (for a file holding \
                 both, give it as cert and key)"
                    .to_string(),
            )),
            (None, Some(_)) => Some((
                "key",
                "set without cert: a client key needs its certificate (for a file \
                 holding both, give it as cert and key)"
                    .to_string(),
            )),
            _ => None,
        }
    }

    /// The client's TLS settings, with the PEM files read, or `None` without
    /// `use_ssl`. An error names the key to fix.
    pub fn tls_options(&self) -> Result<Option<TlsOptions>, ZkError> {
        if !self.use_ssl {
            return Ok(None);
        }
        if let Some((key, why)) = self.tls_refusal() {
            return Err(ZkError::Config(format!("`{key}`: {why}")));
        }
        ensure_crypto_provider();
        let ca = match &self.cacert {
            Some(path) => read_pem("cacert", path)?,
            None => system_trust_store()?,
        };
        let mut options = TlsOptions::new().with_pem_ca(&ca).map_err(|e| {
            let what = match &self.cacert {
                Some(path) => format!("`cacert` {}", path.display()),
                None => "the system trust store".to_string(),
            };
            ZkError::Config(format!(
                "{what} holds no usable CA certificate ({e}); give a PEM file as cacert"
            ))
        })?;
        // Patroni's client (kazoo) checks the chain but not the host name; so does
        // this one, so that certificates that work with Patroni work here.
        // Safety: not memory safety; the API marks the weaker check this way.
        options = unsafe { options.with_no_hostname_verification() };
        if let (Some(cert), Some(key)) = (&self.cert, &self.key) {
            let cert_pem = read_pem("cert", cert)?;
            let key_pem = read_pem("key", key)?;
            // PKCS#8 encrypted, or OpenSSL's traditional encrypted PEM.
            if key_pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----")
                || key_pem.contains("Proc-Type: 4,ENCRYPTED")
            {
                return Err(ZkError::Config(format!(
                    "`key`: {} is encrypted, which is not supported; decrypt it (for \
                     example `openssl pkey -in key.pem -out plain-key.pem`) and point key \
                     at the result",
                    key.display()
                )));
            }
            options = options
                .with_pem_identity(&cert_pem, &key_pem)
                .map_err(|e| {
                    ZkError::Config(format!(
                        "`cert` {} / `key` {}: not a PEM certificate and private key ({e})",
                        cert.display(),
                        key.display()
                    ))
                })?;
        }
        Ok(Some(options))
    }

    /// Checks the section and returns the connect string (`h1:p1,h2:p2`).
    pub fn connect_string(&self) -> Result<String, ZkError> {
        if self.hosts.is_empty() {
            return Err(ZkError::Config(
                "`hosts` is empty; list the ensemble as host:port".to_string(),
            ));
        }
        for h in &self.hosts {
            if h.contains('/') || h.contains(char::is_whitespace) {
                return Err(ZkError::Config(format!(
                    "host `{h}` is not host:port (chroot paths are not supported; use namespace)"
                )));
            }
        }
        Ok(self.hosts.join(","))
    }

    /// The ACLs to create znodes with; empty means world-open.
    pub fn acls(&self) -> Result<Vec<Acl>, ZkError> {
        let mut acls = Vec::new();
        for (principal, perms) in &self.set_acls {
            let (scheme, id) = match principal.split_once(':') {
                Some((scheme, id)) => (scheme, id),
                None => ("x509", principal.as_str()),
            };
            if scheme.is_empty() || id.is_empty() {
                return Err(ZkError::Config(format!(
                    "set_acls principal `{principal}` must be `scheme:id` or an x509 name"
                )));
            }
            let mut permission = Permission::NONE;
            for p in perms {
                permission = permission
                    | match p.to_ascii_uppercase().as_str() {
                        "READ" => Permission::READ,
                        "WRITE" => Permission::WRITE,
                        "CREATE" => Permission::CREATE,
                        "DELETE" => Permission::DELETE,
                        "ADMIN" => Permission::ADMIN,
                        "ALL" => Permission::ALL,
                        other => {
                            return Err(ZkError::Config(format!(
                                "set_acls `{principal}`: unknown permission `{other}` \
                                 (use READ, WRITE, CREATE, DELETE, ADMIN or ALL)"
                            )))
                        }
                    };
            }
            if permission == Permission::NONE {
                return Err(ZkError::Config(format!(
                    "set_acls `{principal}` grants no permission"
                )));
            }
            acls.push(Acl::new(permission, AuthId::new(scheme, id)));
        }
        Ok(acls)
    }
}

/// The system's CA bundle: `SSL_CERT_FILE` if set, else the first usual path found.
fn system_trust_store() -> Result<String, ZkError> {
    if let Some(path) = std::env::var_os("SSL_CERT_FILE") {
        return read_pem("cacert", Path::new(&path)).map_err(|e| {
            ZkError::Config(format!(
                "no cacert given and SSL_CERT_FILE is unusable: {e}"
            ))
        });
    }
    SYSTEM_CA_BUNDLES
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())
        .ok_or_else(|| {
            ZkError::Config(format!(
                "`cacert` is not set and no system trust store was found (looked at \
                 SSL_CERT_FILE and {}); give the CA of the ZooKeeper servers as cacert",
                SYSTEM_CA_BUNDLES.join(", ")
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_accept_list_or_comma_string() {
        let a: ZooKeeperConfig = serde_json::from_str(r#"{"hosts": "a:1, b:2,c:3"}"#).unwrap();
        let b: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": ["a:1", "b:2", "c:3"]}"#).unwrap();
        assert_eq!(a.hosts, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(a, b);
        assert_eq!(a.connect_string().unwrap(), "a:1,b:2,c:3");
        let empty: ZooKeeperConfig = serde_json::from_str(r#"{"hosts": ""}"#).unwrap();
        assert!(empty.connect_string().is_err());
        let tls: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": "a:1", "use_ssl": true}"#).unwrap();
        assert_eq!(tls.connect_string().unwrap(), "a:1");
        let typo = serde_json::from_str::<ZooKeeperConfig>(r#"{"hosts": "a:1", "host": "b"}"#);
        assert!(typo.is_err(), "unknown fields are rejected");
    }

    #[test]
    fn acls_parse_schemes_and_permissions() {
        let c: ZooKeeperConfig = serde_json::from_str(
            r#"{"hosts": "a:1", "set_acls": {"CN=node1": ["READ", "create"], "digest:u:h": ["ALL"]}}"#,
        )
        .unwrap();
        let acls = c.acls().unwrap();
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[0].scheme(), "x509");
        assert_eq!(acls[0].id(), "CN=node1");
        assert!(acls[0].permission().has(Permission::READ));
        assert!(acls[0].permission().has(Permission::CREATE));
        assert!(!acls[0].permission().has(Permission::WRITE));
        assert_eq!(acls[1].scheme(), "digest");
        assert_eq!(acls[1].id(), "u:h");
        assert_eq!(acls[1].permission(), Permission::ALL);

        let bad: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": "a:1", "set_acls": {"x": ["FLY"]}}"#).unwrap();
        assert!(matches!(bad.acls(), Err(ZkError::Config(_))));
    }
}
