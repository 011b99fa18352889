//! TLS for the proxy's clients (`proxy.certfile`, `proxy.keyfile`): a client that
//! sends `SSLRequest` gets `S` and a TLS handshake; one that does not goes on in plain
//! text (as a PostgreSQL server with `ssl = on` and a `host` pg_hba line).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Why the TLS acceptor could not be built; each names the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The certificate file is unreadable or not PEM.
    #[error("proxy.certfile {path}: {reason}")]
    Certfile {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The certificate file holds no certificate.
    #[error("proxy.certfile {0}: no certificate found")]
    NoCertificate(String),
    /// The key file is unreadable or not an unencrypted PEM key.
    #[error("proxy.keyfile {path}: {reason} (an unencrypted PEM private key is needed)")]
    Keyfile {
        /// The configured path.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the protocol versions or the certificate/key pair.
    #[error("{0}")]
    Rustls(#[from] rustls::Error),
    /// The certificate and key do not go together.
    #[error("proxy.certfile/keyfile: {0}")]
    Pair(rustls::Error),
}

/// The acceptor for `certfile` (PEM chain) and `keyfile` (unencrypted PEM key).
pub fn acceptor(certfile: &str, keyfile: &str) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| TlsError::Certfile {
            path: certfile.to_string(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(certfile.to_string()));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| TlsError::Keyfile {
        path: keyfile.to_string(),
        reason: e.to_string(),
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(TlsError::Pair)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
