//! TLS from the proxy to the servers (`proxy.server_tls_sslmode` and its files, named
//! and meant as in pgbouncer): the proxy sends `SSLRequest` before its startup
//! packet and, when the server answers `S`, talks TLS to it; the server's certificate
//! is checked as libpq's `sslmode` says.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::PrivateKeyDer;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// `SSLRequest`: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// How the proxy asks servers for TLS (libpq's `sslmode` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain text only.
    Disable,
    /// TLS when the server offers it, plain text otherwise; no certificate check.
    Prefer,
    /// TLS or no connection; no certificate check.
    Require,
    /// TLS with a certificate signed by `server_tls_ca_file`.
    VerifyCa,
    /// As `VerifyCa`, and the certificate names the host the proxy connects to.
    VerifyFull,
}

impl SslMode {
    /// Reads libpq's spelling (`allow` is read as `prefer`, as the proxy never
    /// retries a refused plain connection over TLS).
    pub fn parse(text: &str) -> Option<SslMode> {
        match text {
            "disable" => Some(SslMode::Disable),
            "allow" | "prefer" => Some(SslMode::Prefer),
            "require" => Some(SslMode::Require),
            "verify-ca" => Some(SslMode::VerifyCa),
            "verify-full" => Some(SslMode::VerifyFull),
            _ => None,
        }
    }
}

/// The TLS settings for server connections, ready to use.
#[derive(Clone)]
pub struct ServerTls {
    mode: SslMode,
    config: Option<Arc<rustls::ClientConfig>>,
}

impl ServerTls {
    /// Plain-text server connections.
    pub fn disabled() -> ServerTls {
        ServerTls {
            mode: SslMode::Disable,
            config: None,
        }
    }

    /// Builds the client side for `mode`: `ca_file` (PEM) is needed for the verify
    /// modes, `cert_file`/`key_file` (PEM, unencrypted key) are presented when the
    /// server asks for a client certificate.
    pub fn new(
        mode: SslMode,
        ca_file: Option<&str>,
        cert_file: Option<&str>,
        key_file: Option<&str>,
    ) -> Result<ServerTls, String> {
        if mode == SslMode::Disable {
            return Ok(ServerTls::disabled());
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous();
        let verifier: Arc<dyn ServerCertVerifier> = match mode {
            SslMode::Disable | SslMode::Prefer | SslMode::Require => {
                Arc::new(AnyCertificate(provider))
            }
            SslMode::VerifyCa | SslMode::VerifyFull => {
                let ca = ca_file.ok_or_else(|| {
                    "proxy.server_tls_ca_file: needed for server_tls_sslmode verify-ca and \
                     verify-full (the CA that signed the servers' certificates)"
                        .to_string()
                })?;
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs("server_tls_ca_file", ca)? {
                    roots
                        .add(c)
                        .map_err(|e| format!("proxy.server_tls_ca_file {ca}: {e}"))?;
                }
                let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| format!("proxy.server_tls_ca_file {ca}: {e}"))?;
                Arc::new(CaVerifier {
                    inner,
                    check_name: mode == SslMode::VerifyFull,
                })
            }
        };
        let builder = builder.with_custom_certificate_verifier(verifier);
        let config = match cert_file {
            Some(cert) => {
                let key_file = key_file.unwrap_or(cert);
                let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
                    format!("proxy.server_tls_key_file {key_file}: {e} (an unencrypted PEM private key is needed)")
                })?;
                builder
                    .with_client_auth_cert(read_certs("server_tls_cert_file", cert)?, key)
                    .map_err(|e| format!("proxy.server_tls_cert_file {cert}: {e}"))?
            }
            None => builder.with_no_client_auth(),
        };
        Ok(ServerTls {
            mode,
            config: Some(Arc::new(config)),
        })
    }

    /// Connects to `host:port`, negotiating TLS as the mode says.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<ServerStream> {
        let address = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let mut tcp = TcpStream::connect(&address).await?;
        let _ = tcp.set_nodelay(true);
        let config = match (&self.config, self.mode) {
            (None, _) | (_, SslMode::Disable) => return Ok(ServerStream::Plain(tcp)),
            (Some(c), _) => c.clone(),
        };
        tcp.write_all(&SSL_REQUEST).await?;
        match tcp.read_u8().await? {
            b'S' => {}
            b'N' if self.mode == SslMode::Prefer => return Ok(ServerStream::Plain(tcp)),
            b'N' => {
                return Err(io::Error::other(
                    "the server does not accept TLS connections (ssl is off) and \
                     proxy.server_tls_sslmode requires TLS",
                ))
            }
            other => {
                return Err(io::Error::other(format!(
                    "the server answered the TLS request with {:?}, not S or N",
                    other as char
                )))
            }
        }
        let name = ServerName::try_from(host.to_string()).map_err(|e| {
            io::Error::other(format!(
                "{host} cannot be checked against a certificate: {e}"
            ))
        })?;
        let tls = tokio_rustls::TlsConnector::from(config)
            .connect(name, tcp)
            .await
            .map_err(|e| io::Error::other(format!("TLS with the server failed: {e}")))?;
        Ok(ServerStream::Tls(Box::new(tls)))
    }
}

fn read_certs(key: &str, file: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(file)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| format!("proxy.{key} {file}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("proxy.{key} {file}: no certificate found"));
    }
    Ok(certs)
}

/// A connection to a server, in plain text or TLS.
pub enum ServerStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl ServerStream {
    /// Whether the connection is encrypted.
    pub fn is_tls(&self) -> bool {
        match self {
            ServerStream::Plain(_) => false,
            ServerStream::Tls(_) => true,
        }
    }
}

impl AsyncRead for ServerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ServerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ServerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ServerStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// `require`/`prefer`: any certificate (the connection is encrypted, the server not
/// authenticated), signatures still checked.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `verify-ca`/`verify-full`: the chain must lead to the CA; the name must match
/// only for `verify-full`.
#[derive(Debug)]
struct CaVerifier {
    inner: Arc<WebPkiServerVerifier>,
    check_name: bool,
}

impl ServerCertVerifier for CaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) if !self.check_name => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
