//! The HTTP client members and fullautoctl use to call members' REST APIs, with
//! Patroni's `ctl` TLS settings (falling back to the `restapi` ones).

use super::pinned::{AnyServerCert, PinnedServerVerifier};
use super::tls::{provider, read_certs, read_key, TlsError};
use crate::config::{BasicAuth, Config};
use std::sync::{Arc, RwLock};
use std::time::Duration;

/// The TLS files a client uses towards members' APIs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTlsFiles {
    /// CA bundle that server certificates are checked against (besides the
    /// built-in public roots).
    pub ca: Option<String>,
    /// Client certificate (PEM), presented when a server asks for one.
    pub cert: Option<String>,
    /// Its private key (defaults to `cert`).
    pub key: Option<String>,
    /// The client certificate is the `restapi` one (a fallback, not `ctl.certfile`).
    pub cert_from_restapi: bool,
    /// Server certificates are not checked.
    pub insecure: bool,
}

fn non_empty(s: &Option<String>) -> Option<String> {
    s.clone().filter(|s| !s.trim().is_empty())
}

impl ClientTlsFiles {
    /// Patroni's choice: CA `ctl.cacert`, else `restapi.cafile`; client certificate
    /// `ctl.certfile`/`keyfile`, else the REST API's own `restapi.certfile`/`keyfile`.
    pub fn from_config(cfg: &Config) -> ClientTlsFiles {
        let ca = non_empty(&cfg.ctl.cacert).or_else(|| non_empty(&cfg.restapi.cafile));
        let (cert, key, cert_from_restapi) = match non_empty(&cfg.ctl.certfile) {
            Some(c) => (Some(c), non_empty(&cfg.ctl.keyfile), false),
            None => (
                non_empty(&cfg.restapi.certfile),
                non_empty(&cfg.restapi.keyfile),
                true,
            ),
        };
        ClientTlsFiles {
            ca,
            cert_from_restapi: cert_from_restapi && cert.is_some(),
            cert,
            key,
            insecure: cfg.ctl.insecure,
        }
    }

    /// The rustls client config: server certificates checked against the built-in
    /// public roots plus `ca` (a certificate that is itself in `ca` is trusted as
    /// is, as OpenSSL does), the client certificate presented when asked for.
    pub fn client_config(&self) -> Result<rustls::ClientConfig, TlsError> {
        let provider = provider();
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config(e.to_string()))?;
        let builder = if self.insecure {
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyServerCert(provider)))
        } else {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let trusted = match &self.ca {
                Some(ca) => read_certs("CA file", ca)?,
                None => Vec::new(),
            };
            for c in &trusted {
                roots.add(c.clone()).map_err(|e| TlsError::File {
                    what: "CA file",
                    file: self.ca.clone().unwrap_or_default(),
                    reason: e.to_string(),
                })?;
            }
            let inner = rustls::client::WebPkiServerVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .map_err(|e| TlsError::Config(e.to_string()))?;
            builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(PinnedServerVerifier { inner, trusted }))
        };
        let mut cfg = match &self.cert {
            Some(cert) => {
                let key = self.key.as_deref().unwrap_or(cert);
                builder
                    .with_client_auth_cert(
                        read_certs("client certificate", cert)?,
                        read_key("client key", key)?,
                    )
                    .map_err(|e| TlsError::File {
                        what: "client certificate",
                        file: cert.clone(),
                        reason: e.to_string(),
                    })?
            }
            None => builder.with_no_client_auth(),
        };
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(cfg)
    }
}

/// Builds a client whose requests give up after `timeout`, with the TLS settings of
/// [`ClientTlsFiles::from_config`].
pub fn build_api_client(cfg: &Config, timeout: Duration) -> Result<reqwest::Client, TlsError> {
    let tls = ClientTlsFiles::from_config(cfg).client_config()?;
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(timeout)
        .connect_timeout(timeout)
        .no_proxy()
        .build()
        .map_err(|e| TlsError::Config(e.to_string()))
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

/// A client for members' APIs and the credentials for their unsafe endpoints.
#[derive(Clone)]
pub struct ApiClient {
    /// The HTTP(S) client.
    pub http: reqwest::Client,
    /// `ctl.authentication`, else `restapi.authentication`.
    pub auth: Option<BasicAuth>,
}

/// An [`ApiClient`] that a configuration reload replaces (new certificates, CA or
/// credentials) while the agent runs; every call takes the current one.
#[derive(Clone)]
pub struct SharedClient {
    timeout: Duration,
    current: Arc<RwLock<ApiClient>>,
}

impl SharedClient {
    /// A client per `cfg` whose requests give up after `timeout`.
    pub fn new(cfg: &Config, timeout: Duration) -> Result<SharedClient, TlsError> {
        let first = Self::build(cfg, timeout)?;
        Ok(SharedClient {
            timeout,
            current: Arc::new(RwLock::new(first)),
        })
    }

    fn build(cfg: &Config, timeout: Duration) -> Result<ApiClient, TlsError> {
        Ok(ApiClient {
            http: build_api_client(cfg, timeout)?,
            auth: cfg.client_auth().cloned(),
        })
    }

    /// Builds the client a reload of `cfg` would use, without using it yet.
    pub fn prepare(&self, cfg: &Config) -> Result<ApiClient, TlsError> {
        Self::build(cfg, self.timeout)
    }

    /// Uses `next` for calls from now on.
    pub fn replace(&self, next: ApiClient) {
        match self.current.write() {
            Ok(mut c) => *c = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
    }

    /// The client for the next call.
    pub fn current(&self) -> ApiClient {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The HTTP(S) client for the next call.
    pub fn http(&self) -> reqwest::Client {
        self.current().http
    }
}
