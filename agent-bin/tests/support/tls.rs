//! Certificates for HTTPS end-to-end tests (made with rcgen) and a small blocking
//! HTTPS client on rustls directly (tests must not depend on the agent's client).

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::Value;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// A CA and what it signed, as PEM files in `dir`.
pub struct TestPki {
    ca_cert: rcgen::Certificate,
    ca_key: KeyPair,
    dir: PathBuf,
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TestPki {
    /// A new CA, written to `dir/ca.pem`.
    pub fn new(dir: &Path) -> TestPki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(rcgen::DnType::CommonName, "fullauto test CA");
        let ca_cert = ca.self_signed(&ca_key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
        TestPki {
            ca_cert,
            ca_key,
            dir: dir.to_path_buf(),
        }
    }

    /// The CA file.
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// Issues a certificate for 127.0.0.1 (usable as server and client certificate)
    /// into `<name>.pem` / `<name>.key`; returns its DER form and the two paths.
    pub fn issue(&self, name: &str) -> (Vec<u8>, PathBuf, PathBuf) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        let cert = p.signed_by(&key, &self.ca_cert, &self.ca_key).unwrap();
        let (crt, kf) = (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        );
        // Written to a temp name and renamed: a reader never sees half a file.
        let tmp = self.dir.join(format!("{name}.tmp"));
        std::fs::write(&tmp, key.serialize_pem()).unwrap();
        std::fs::rename(&tmp, &kf).unwrap();
        std::fs::write(&tmp, cert.pem()).unwrap();
        std::fs::rename(&tmp, &crt).unwrap();
        (cert.der().to_vec(), crt, kf)
    }

    /// A client config trusting this CA, presenting `identity` (cert, key) if given.
    pub fn client(&self, identity: Option<(&Path, &Path)>) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from_pem_file(self.ca()).unwrap())
            .unwrap();
        let b = rustls::ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let cfg = match identity {
            Some((crt, key)) => b
                .with_client_auth_cert(
                    vec![CertificateDer::from_pem_file(crt).unwrap()],
                    PrivateKeyDer::from_pem_file(key).unwrap(),
                )
                .unwrap(),
            None => b.with_no_client_auth(),
        };
        Arc::new(cfg)
    }
}

/// What an HTTPS request to 127.0.0.1:`port` got: the server's certificate (DER)
/// and, if the request got through, the status and JSON body.
pub struct HttpsReply {
    pub server_cert: Option<Vec<u8>>,
    pub answer: Option<(u16, Value)>,
}

/// One HTTP/1.0 request over TLS with `cfg`.
pub fn https_call(
    cfg: &Arc<rustls::ClientConfig>,
    method: &str,
    port: u16,
    path: &str,
    body: Option<&Value>,
) -> HttpsReply {
    let mut reply = HttpsReply {
        server_cert: None,
        answer: None,
    };
    let Ok(tcp) = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    ) else {
        return reply;
    };
    let _ = tcp.set_read_timeout(Some(Duration::from_secs(60)));
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(cfg.clone(), name).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let sent = tls.write_all(req.as_bytes()).and_then(|_| tls.flush());
    reply.server_cert = tls
        .conn
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec());
    if sent.is_err() {
        return reply;
    }
    let mut resp = Vec::new();
    // A server may close without close_notify: keep what arrived.
    let _ = tls.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp);
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    if let Some(status) = status {
        let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let json =
            serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_string()));
        reply.answer = Some((status, json));
    }
    reply
}
