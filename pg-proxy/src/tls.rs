//! TLS for the proxy's clients (`proxy.certfile`, `proxy.keyfile`): a client that
//! sends `SSLRequest` gets `S` and a TLS handshake; one that does not goes on in plain
//! text (as a PostgreSQL server with `ssl = on` and a `host` pg_hba line).

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::sync::Arc;

/// The acceptor for `certfile` (PEM chain) and `keyfile` (unencrypted PEM key).
pub fn acceptor(certfile: &str, keyfile: &str) -> Result<tokio_rustls::TlsAcceptor, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(certfile)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("proxy.certfile {certfile}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("proxy.certfile {certfile}: no certificate found"));
    }
    let key = PrivateKeyDer::from_pem_file(keyfile).map_err(|e| {
        format!("proxy.keyfile {keyfile}: {e} (an unencrypted PEM private key is needed)")
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| format!("proxy.certfile/keyfile: {e}"))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(cfg)))
}
