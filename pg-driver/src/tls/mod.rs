//! TLS for the agent's own TCP connections, with libpq's meaning of a role's options:
//! `sslmode` (verify-ca checks the chain, verify-full the host name too; prefer and
//! require check the chain only when a root certificate exists), `sslrootcert`
//! (`system` for the system's trust store), client certificate and key (optionally
//! encrypted as PKCS#8, `sslpassword`), and revocation lists (`sslcrl`, `sslcrldir`;
//! with either, every certificate of the chain needs its issuer's list, as OpenSSL's
//! `CRL_CHECK_ALL`). Unset files default to libpq's
//! `~/.postgresql/{root.crt,root.crl,postgresql.crt,postgresql.key}` when they exist.
//! Built on rustls with ring, the crypto library of the rest of the agent.

mod files;
mod stream;
#[cfg(test)]
mod tests_crl;
mod verify;

pub use stream::{MakeRustls, RustlsConnect, RustlsStream};

use crate::credentials::{Credentials, SslMode};
use crate::error::{DriverError, Result};
use rustls::client::danger::ServerCertVerifier;
use rustls::client::WebPkiServerVerifier;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// A TLS connector for `creds`; `home` is where libpq's `~/.postgresql` defaults
/// are looked up.
pub fn connector(creds: &Credentials, home: Option<&Path>) -> Result<MakeRustls> {
    Ok(MakeRustls::new(client_config(creds, home)?))
}

fn client_config(creds: &Credentials, home: Option<&Path>) -> Result<Arc<rustls::ClientConfig>> {
    let mode = creds.ssl_mode();
    let default = |name: &str| -> Option<PathBuf> {
        home.map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.is_file())
    };
    let bad = |key: &str, what: &dyn std::fmt::Display, e: &dyn std::fmt::Display| {
        DriverError::Config(format!("{key} {what}: {e}"))
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let system = creds.sslrootcert.as_deref() == Some("system");
    let root = match creds.sslrootcert.as_deref() {
        Some("system") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => default("root.crt"),
    };
    let verify_chain = system || root.is_some();
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && !verify_chain {
        return Err(DriverError::Config(format!(
            "sslmode {} needs a root certificate: set sslrootcert (no {} exists)",
            mode.as_str(),
            home.map(|h| h.join(".postgresql/root.crt").display().to_string())
                .unwrap_or_else(|| "~/.postgresql/root.crt".into())
        )));
    }
    let verifier: Arc<dyn ServerCertVerifier> = if verify_chain {
        let mut roots = rustls::RootCertStore::empty();
        if system {
            let certs =
                files::system_certificates().map_err(|e| bad("sslrootcert", &"system", &e))?;
            roots.add_parsable_certificates(certs);
        }
        if let Some(root) = &root {
            for c in
                files::certificates(root).map_err(|e| bad("sslrootcert", &root.display(), &e))?
            {
                roots
                    .add(c)
                    .map_err(|e| bad("sslrootcert", &root.display(), &e))?;
            }
        }
        let mut crls = Vec::new();
        if let Some(crl) = creds
            .sslcrl
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| default("root.crl"))
        {
            let mut lists =
                files::revocation_lists(&crl).map_err(|e| bad("sslcrl", &crl.display(), &e))?;
            if lists.is_empty() {
                return Err(bad(
                    "sslcrl",
                    &crl.display(),
                    &"no revocation list found in it",
                ));
            }
            crls.append(&mut lists);
        }
        if let Some(dir) = &creds.sslcrldir {
            crls.append(
                &mut files::revocation_dir(Path::new(dir))
                    .map_err(|e| bad("sslcrldir", dir, &e))?,
            );
        }
        // With revocation lists, every certificate of the chain must have its
        // issuer's list (unknown status fails), and expired lists fail, as in OpenSSL.
        let mut builder =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone());
        if !crls.is_empty() {
            builder = builder.with_crls(crls).enforce_revocation_expiration();
        }
        let inner = builder.build().map_err(|e| {
            let file = root
                .as_ref()
                .map(|r| r.display().to_string())
                .unwrap_or_else(|| "system".into());
            bad("sslrootcert", &file, &e)
        })?;
        Arc::new(verify::ChainVerifier {
            inner,
            check_name: mode == SslMode::VerifyFull || system,
        })
    } else {
        Arc::new(verify::AnyCertificate(provider.clone()))
    };
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| DriverError::Config(format!("cannot set up TLS: {e}")))?
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let cert = creds
        .sslcert
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.crt"));
    let config = match &cert {
        Some(cert) => {
            let chain =
                files::certificates(cert).map_err(|e| bad("sslcert", &cert.display(), &e))?;
            let key = creds
                .sslkey
                .as_ref()
                .map(PathBuf::from)
                .or_else(|| home.map(|h| h.join(".postgresql/postgresql.key")))
                .ok_or_else(|| DriverError::Config("sslcert is set without sslkey".into()))?;
            let pkey = files::private_key(&key, creds.sslpassword.as_deref())
                .map_err(|e| bad("sslkey", &key.display(), &e))?;
            builder
                .with_client_auth_cert(chain, pkey)
                .map_err(|e| bad("sslkey", &key.display(), &e))?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// A connector for `sslmode=prefer`/`allow` that reads the TLS files and builds the
/// client configuration only when the server agreed to TLS: most servers an agent
/// talks to have TLS off, and the set-up would cost CPU on every connection.
/// Configuration errors (a missing root
/// certificate, a wrong key password) show when TLS is used, as libpq reads those
/// files only then too.
#[derive(Clone)]
pub struct LazyTls {
    creds: Credentials,
    home: Option<PathBuf>,
}

impl LazyTls {
    /// A lazy connector for `creds`; `home` as for [`connector`].
    pub fn new(creds: &Credentials, home: Option<&Path>) -> LazyTls {
        LazyTls {
            creds: creds.clone(),
            home: home.map(Path::to_path_buf),
        }
    }
}

/// [`LazyTls`] for one server name.
pub struct LazyTlsConnect {
    tls: LazyTls,
    domain: String,
}

impl<S> MakeTlsConnect<S> for LazyTls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = LazyTlsConnect;
    type Error = std::convert::Infallible;

    fn make_tls_connect(
        &mut self,
        domain: &str,
    ) -> std::result::Result<LazyTlsConnect, Self::Error> {
        Ok(LazyTlsConnect {
            tls: self.clone(),
            domain: domain.to_string(),
        })
    }
}

impl<S> TlsConnect<S> for LazyTlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let mut make = connector(&self.tls.creds, self.tls.home.as_deref())?;
            let tls = MakeTlsConnect::<S>::make_tls_connect(&mut make, &self.domain)?;
            Ok(tls.connect(stream).await?)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(c: &Credentials, home: Option<&Path>) -> String {
        match connector(c, home) {
            Ok(_) => panic!("connector built"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn verification_without_root_certificate_and_missing_files_name_the_key() {
        let home = tempfile::tempdir().unwrap();
        let mut c = Credentials::user("u");
        c.sslmode = Some(SslMode::VerifyCa);
        let e = err(&c, Some(home.path()));
        assert!(
            e.contains("sslmode verify-ca needs a root certificate"),
            "{e}"
        );
        c.sslrootcert = Some("/nonexistent/ca.crt".into());
        assert!(err(&c, Some(home.path())).contains("sslrootcert /nonexistent/ca.crt"));
        // Without verification nothing is required.
        let mut prefer = Credentials::user("u");
        prefer.sslmode = Some(SslMode::Require);
        assert!(connector(&prefer, Some(home.path())).is_ok());
        prefer.sslcert = Some("/nonexistent/c.crt".into());
        assert!(err(&prefer, Some(home.path())).contains("sslcert /nonexistent/c.crt"));
    }
}
