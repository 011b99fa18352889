//! HTTPS for the REST API: server certificate, and client certificates checked
//! against `cafile` per `verify_client`.

use crate::config::{RestApiConfig, VerifyClient};
use rustls::server::WebPkiClientVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// Why the TLS settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or holds no usable PEM item.
    #[error("restapi tls: {file}: {reason}")]
    File {
        /// Which file.
        file: String,
        /// What was wrong.
        reason: String,
    },
    /// rustls refused the combination.
    #[error("restapi tls: {0}")]
    Config(String),
}

fn file_err(file: &str, reason: impl ToString) -> TlsError {
    TlsError::File {
        file: file.to_string(),
        reason: reason.to_string(),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
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
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .map_err(|e| file_err(certfile, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(certfile, e))?;
    if certs.is_empty() {
        return Err(file_err(certfile, "no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| {
        let hint = if c.keyfile_password.is_some() {
            " (encrypted keys are not supported: decrypt it with openssl pkey)"
        } else {
            ""
        };
        file_err(keyfile, format!("{e}{hint}"))
    })?;
    let builder = rustls::ServerConfig::builder_with_provider(provider())
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
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(cafile).map_err(|e| file_err(cafile, e))? {
                let cert = cert.map_err(|e| file_err(cafile, e))?;
                roots.add(cert).map_err(|e| file_err(cafile, e))?;
            }
            let v = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider());
            let v = if mode == VerifyClient::Optional {
                v.allow_unauthenticated()
            } else {
                v
            };
            builder
                .with_client_cert_verifier(v.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
    };
    let mut cfg = builder
        .with_single_cert(certs, key)
        .map_err(|e| TlsError::Config(e.to_string()))?;
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(cfg)))
}
