//! TLS for the agent's own TCP connections, with libpq's meaning of a role's options:
//! `sslmode` (verify-ca checks the chain, verify-full the host name too; prefer and
//! require check the chain only when a root certificate exists), `sslrootcert`
//! (`system` for the system's trust store), client certificate and key (optionally
//! encrypted, `sslpassword`), and revocation lists (`sslcrl`, `sslcrldir`). Unset
//! files default to libpq's `~/.postgresql/{root.crt,root.crl,postgresql.crt,postgresql.key}`
//! when they exist.

use crate::credentials::{Credentials, SslMode};
use crate::error::{DriverError, Result};
use openssl::pkey::PKey;
use openssl::ssl::{SslConnector, SslFiletype, SslMethod, SslVerifyMode};
use openssl::x509::store::X509Lookup;
use openssl::x509::verify::X509VerifyFlags;
use postgres_openssl::MakeTlsConnector;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::tls::{MakeTlsConnect, TlsConnect};

/// A TLS connector for `creds`; `home` is where libpq's `~/.postgresql` defaults
/// are looked up.
pub fn connector(creds: &Credentials, home: Option<&Path>) -> Result<MakeTlsConnector> {
    let mode = creds.ssl_mode();
    let default = |name: &str| -> Option<PathBuf> {
        home.map(|h| h.join(".postgresql").join(name))
            .filter(|p| p.is_file())
    };
    let bad = |key: &str, what: &dyn std::fmt::Display, e: &dyn std::fmt::Display| {
        DriverError::Config(format!("{key} {what}: {e}"))
    };
    let mut b = SslConnector::builder(SslMethod::tls_client())
        .map_err(|e| DriverError::Config(format!("cannot set up TLS: {e}")))?;
    let system = creds.sslrootcert.as_deref() == Some("system");
    let root = match creds.sslrootcert.as_deref() {
        Some("system") => None,
        Some(f) => Some(PathBuf::from(f)),
        None => default("root.crt"),
    };
    let verify_chain = system || root.is_some();
    if system {
        b.set_default_verify_paths()
            .map_err(|e| bad("sslrootcert", &"system", &e))?;
    }
    if let Some(root) = &root {
        b.set_ca_file(root)
            .map_err(|e| bad("sslrootcert", &root.display(), &e))?;
    }
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && !verify_chain {
        return Err(DriverError::Config(format!(
            "sslmode {} needs a root certificate: set sslrootcert (no {} exists)",
            mode.as_str(),
            home.map(|h| h.join(".postgresql/root.crt").display().to_string())
                .unwrap_or_else(|| "~/.postgresql/root.crt".into())
        )));
    }
    if verify_chain {
        b.set_verify(SslVerifyMode::PEER);
        let crl = creds
            .sslcrl
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| default("root.crl"));
        let mut check_crl = false;
        if let Some(crl) = &crl {
            let lookup = b
                .cert_store_mut()
                .add_lookup(X509Lookup::file())
                .map_err(|e| bad("sslcrl", &crl.display(), &e))?;
            lookup
                .load_crl_file(crl, SslFiletype::PEM)
                .map_err(|e| bad("sslcrl", &crl.display(), &e))?;
            check_crl = true;
        }
        if let Some(dir) = &creds.sslcrldir {
            let lookup = b
                .cert_store_mut()
                .add_lookup(X509Lookup::hash_dir())
                .map_err(|e| bad("sslcrldir", dir, &e))?;
            lookup
                .add_dir(dir, SslFiletype::PEM)
                .map_err(|e| bad("sslcrldir", dir, &e))?;
            check_crl = true;
        }
        if check_crl {
            b.cert_store_mut()
                .set_flags(X509VerifyFlags::CRL_CHECK | X509VerifyFlags::CRL_CHECK_ALL)
                .map_err(|e| bad("sslcrl", &"flags", &e))?;
        }
    } else {
        b.set_verify(SslVerifyMode::NONE);
    }
    let cert = creds
        .sslcert
        .as_ref()
        .map(PathBuf::from)
        .or_else(|| default("postgresql.crt"));
    if let Some(cert) = &cert {
        b.set_certificate_chain_file(cert)
            .map_err(|e| bad("sslcert", &cert.display(), &e))?;
        let key = creds
            .sslkey
            .as_ref()
            .map(PathBuf::from)
            .or_else(|| home.map(|h| h.join(".postgresql/postgresql.key")))
            .ok_or_else(|| DriverError::Config("sslcert is set without sslkey".into()))?;
        let pem = std::fs::read(&key).map_err(|e| bad("sslkey", &key.display(), &e))?;
        let pkey = match &creds.sslpassword {
            Some(p) => PKey::private_key_from_pem_passphrase(&pem, p.as_bytes()),
            // Never OpenSSL's terminal prompt: an encrypted key without a password fails.
            None => PKey::private_key_from_pem_callback(&pem, |_| Ok(0)),
        }
        .map_err(|e| {
            bad(
                "sslkey",
                &key.display(),
                &format!("cannot load the private key (wrong or missing sslpassword?): {e}"),
            )
        })?;
        b.set_private_key(&pkey)
            .map_err(|e| bad("sslkey", &key.display(), &e))?;
        b.check_private_key()
            .map_err(|e| bad("sslkey", &key.display(), &e))?;
    }
    let mut c = MakeTlsConnector::new(b.build());
    let check_host = mode == SslMode::VerifyFull || system;
    c.set_callback(move |conf, _| {
        conf.set_verify_hostname(check_host);
        Ok(())
    });
    Ok(c)
}

/// A connector for `sslmode=prefer`/`allow` that builds the OpenSSL connector only
/// when the server agreed to TLS: most servers an agent talks to have TLS off, and
/// setting OpenSSL up for every connection costs CPU on each and keeps about 4 MiB
/// of its code resident in the agent. Configuration errors (a missing root
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
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + 'static + Sync + Send,
{
    type Stream = postgres_openssl::TlsStream<S>;
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
    S: AsyncRead + AsyncWrite + Unpin + std::fmt::Debug + 'static + Sync + Send,
{
    type Stream = postgres_openssl::TlsStream<S>;
    type Error = Box<dyn std::error::Error + Send + Sync>;
    type Future =
        Pin<Box<dyn Future<Output = std::result::Result<Self::Stream, Self::Error>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        Box::pin(async move {
            let mut make = connector(&self.tls.creds, self.tls.home.as_deref())?;
            let tls = MakeTlsConnect::<S>::make_tls_connect(&mut make, &self.domain)?;
            tls.connect(stream).await
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
