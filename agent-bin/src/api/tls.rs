//! HTTPS for the REST API: server certificate, and client certificates checked
//! against `cafile` per `verify_client`.

use super::pinned::PinnedClientVerifier;
use crate::config::{RestApiConfig, VerifyClient};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::{Arc, RwLock};

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("cannot read {what} {file}: {reason}")]
    File {
        /// What the file is for, e.g. `restapi certificate`.
        what: &'static str,
        /// Which file.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("TLS settings: {0}")]
    Config(String),
}

pub(crate) fn file_err(what: &'static str, file: &str, reason: impl ToString) -> TlsError {
    TlsError::File {
        what,
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

/// The certificates of a PEM file (at least one).
pub(crate) fn read_certs(
    what: &'static str,
    file: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .map_err(|e| file_err(what, file, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(what, file, e))?;
    if certs.is_empty() {
        return Err(file_err(what, file, "no certificate found"));
    }
    Ok(certs)
}

/// The private key of a PEM file (unencrypted).
pub(crate) fn read_key(what: &'static str, file: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(file).map_err(|e| {
        file_err(
            what,
            file,
            format!("{e} (an unencrypted PEM private key is needed)"),
        )
    })
}

pub(crate) fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Builds the server TLS config from `restapi` (`None` when no certfile is set).
pub fn load_server_tls(c: &RestApiConfig) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    let Some(certfile) = c.certfile.as_deref().filter(|f| !f.is_empty()) else {
        return Ok(None);
    };
    let keyfile = c
        .keyfile
        .as_deref()
        .filter(|f| !f.is_empty())
        .unwrap_or(certfile);
    let certs = read_certs("restapi certificate", certfile)?;
    let key = read_key("restapi private key", keyfile)?;
    // `ciphers` narrows the TLS 1.2 suites (validation refused a string selecting none).
    let server_provider = match c.ciphers.as_deref().filter(|s| !s.trim().is_empty()) {
        None => provider(),
        Some(spec) => {
            let tls12 = super::ciphers::tls12_suites(spec).map_err(TlsError::Config)?;
            Arc::new(rustls::crypto::CryptoProvider {
                cipher_suites: super::ciphers::with_tls13(tls12),
                ..rustls::crypto::ring::default_provider()
            })
        }
    };
    let builder = rustls::ServerConfig::builder_with_provider(server_provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match (
        c.verify_client,
        c.cafile.as_deref().filter(|f| !f.is_empty()),
    ) {
        (VerifyClient::None, _) => builder.with_no_client_auth(),
        (_, None) => {
            return Err(TlsError::Config(
                "verify_client needs restapi.cafile".to_string(),
            ))
        }
        (mode, Some(cafile)) => {
            let trusted = read_certs("restapi CA file", cafile)?;
            let mut roots = rustls::RootCertStore::empty();
            for cert in &trusted {
                roots
                    .add(cert.clone())
                    .map_err(|e| file_err("restapi CA file", cafile, e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = match mode {
                VerifyClient::Optional => v.allow_unauthenticated(),
                VerifyClient::Required | VerifyClient::None => v,
            };
            let inner = v.build().map_err(|e| TlsError::Config(e.to_string()))?;
            builder.with_client_cert_verifier(Arc::new(PinnedClientVerifier { inner, trusted }))
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}

/// The REST API's server TLS, replaceable while serving: each accepted connection
/// uses the config current at that moment (`None`: plain HTTP). A reload swaps in
/// new certificates without dropping the listener.
#[derive(Clone, Default)]
pub struct ReloadableTls(Arc<RwLock<Option<Arc<rustls::ServerConfig>>>>);

impl ReloadableTls {
    /// Serves HTTPS with `cfg`.
    pub fn new(cfg: Arc<rustls::ServerConfig>) -> Self {
        ReloadableTls(Arc::new(RwLock::new(Some(cfg))))
    }

    /// HTTPS per `restapi` (plain HTTP without `certfile`).
    pub fn from_config(c: &RestApiConfig) -> Result<Self, TlsError> {
        Ok(ReloadableTls(Arc::new(RwLock::new(load_server_tls(c)?))))
    }

    /// Uses `cfg` for connections accepted from now on.
    pub fn replace(&self, cfg: Arc<rustls::ServerConfig>) {
        self.set(Some(cfg));
    }

    /// Uses `cfg` (`None`: plain HTTP) for connections accepted from now on.
    pub fn set(&self, cfg: Option<Arc<rustls::ServerConfig>>) {
        match self.0.write() {
            Ok(mut c) => *c = cfg,
            Err(poisoned) => *poisoned.into_inner() = cfg,
        }
    }

    /// The config for the next accepted connection.
    pub(crate) fn current(&self) -> Option<Arc<rustls::ServerConfig>> {
        match self.0.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }
}
