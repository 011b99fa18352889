//! The HTTP client members and fullautoctl use to call members' REST APIs, with
//! Patroni's `ctl` TLS settings (falling back to the `restapi` ones).

use super::tls::TlsError;
use crate::config::{BasicAuth, Config, VerifyClient};
use std::time::Duration;

fn read(file: &str) -> Result<Vec<u8>, TlsError> {
    std::fs::read(file).map_err(|e| TlsError::File {
        file: file.to_string(),
        reason: e.to_string(),
    })
}

/// Builds a client whose requests give up after `timeout`:
/// - server certificates are checked against `ctl.cacert`, else `restapi.cafile`
///   (nothing is checked with `ctl.insecure`);
/// - the client certificate is `ctl.certfile`/`keyfile`, else the `restapi`
///   certificate when the API asks for client certificates.
pub fn build_api_client(cfg: &Config, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(timeout)
        .connect_timeout(timeout);
    if cfg.ctl.insecure {
        b = b.danger_accept_invalid_certs(true);
    }
    let ca = cfg.ctl.cacert.as_deref().or(cfg.restapi.cafile.as_deref());
    if let Some(ca) = ca.filter(|c| !c.is_empty()) {
        let pem = read(ca)?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| TlsError::File {
            file: ca.to_string(),
            reason: e.to_string(),
        })?;
        for c in certs {
            b = b.add_root_certificate(c);
        }
    }
    let (cert, key) = match (&cfg.ctl.certfile, &cfg.ctl.keyfile) {
        (Some(c), k) => (Some(c.clone()), k.clone().or(Some(c.clone()))),
        (None, _) if cfg.restapi.verify_client != VerifyClient::None => (
            cfg.restapi.certfile.clone(),
            cfg.restapi.keyfile.clone().or(cfg.restapi.certfile.clone()),
        ),
        _ => (None, None),
    };
    if let (Some(cert), Some(key)) = (cert.filter(|c| !c.is_empty()), key) {
        let mut pem = read(&cert)?;
        if key != cert {
            pem.push(b'\n');
            pem.extend(read(&key)?);
        }
        let id = reqwest::Identity::from_pem(&pem).map_err(|e| TlsError::File {
            file: cert.clone(),
            reason: e.to_string(),
        })?;
        b = b.identity(id);
    }
    b.build().map_err(|e| TlsError::Config(e.to_string()))
}

/// Adds the credentials for unsafe calls (`ctl.authentication`, else
/// `restapi.authentication`) to a request.
pub fn with_api_auth(
    rb: reqwest::RequestBuilder,
    auth: Option<&BasicAuth>,
) -> reqwest::RequestBuilder {
    match auth {
        Some(a) => rb.basic_auth(&a.username, Some(&a.password)),
        None => rb,
    }
}
