//! Revocation lists and the chain check, with a TLS handshake in memory.

use super::*;
use rcgen::{
    date_time_ymd, BasicConstraints, CertificateParams, CertificateRevocationListParams, DnType,
    IsCa, KeyIdMethod, KeyPair, KeyUsagePurpose, RevokedCertParams, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

struct Pki {
    dir: tempfile::TempDir,
    ca: rcgen::Certificate,
    ca_key: KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(DnType::CommonName, "test CA");
        let ca = ca.self_signed(&ca_key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
        Pki { dir, ca, ca_key }
    }

    /// A server certificate for localhost with `serial`, and its key.
    fn server(&self, serial: u64) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.serial_number = Some(SerialNumber::from(serial));
        let cert = p.signed_by(&key, &self.ca, &self.ca_key).unwrap();
        (
            cert.der().clone(),
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
    }

    /// Writes a revocation list revoking `serials`, valid until `until` (a year).
    fn crl(&self, name: &str, serials: &[u64], until: i32) -> PathBuf {
        let revoked = serials
            .iter()
            .map(|s| RevokedCertParams {
                serial_number: SerialNumber::from(*s),
                revocation_time: date_time_ymd(2024, 1, 1),
                reason_code: None,
                invalidity_date: None,
            })
            .collect();
        let crl = CertificateRevocationListParams {
            this_update: date_time_ymd(2024, 1, 1),
            next_update: date_time_ymd(until, 1, 1),
            crl_number: SerialNumber::from(1u64),
            issuing_distribution_point: None,
            revoked_certs: revoked,
            key_identifier_method: KeyIdMethod::Sha256,
        }
        .signed_by(&self.ca, &self.ca_key)
        .unwrap();
        let path = self.dir.path().join(name);
        std::fs::write(&path, crl.pem().unwrap()).unwrap();
        path
    }

    fn creds(&self, crl: Option<&Path>, crldir: Option<&Path>) -> Credentials {
        let mut c = Credentials::user("u");
        c.sslmode = Some(SslMode::VerifyFull);
        c.sslrootcert = Some(self.dir.path().join("ca.crt").display().to_string());
        c.sslcrl = crl.map(|p| p.display().to_string());
        c.sslcrldir = crldir.map(|p| p.display().to_string());
        c
    }
}

/// A TLS handshake between `creds`' connector and a server presenting `server`.
async fn handshake(
    creds: &Credentials,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> std::result::Result<(), String> {
    handshake_to("localhost", creds, server).await
}

async fn handshake_to(
    host: &str,
    creds: &Credentials,
    server: (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> std::result::Result<(), String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![server.0], server.1)
        .unwrap();
    let (client_io, server_io) = tokio::io::duplex(64 * 1024);
    let mut make = connector(creds, None).map_err(|e| e.to_string())?;
    let connect = MakeTlsConnect::<tokio::io::DuplexStream>::make_tls_connect(&mut make, host)
        .map_err(|e| e.to_string())?;
    let accept = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let (client, _server) = tokio::join!(connect.connect(client_io), accept.accept(server_io));
    client.map(|_| ()).map_err(|e| e.to_string())
}

#[tokio::test]
async fn revoked_server_certificates_are_refused_and_others_accepted() {
    let pki = Pki::new();
    let crl = pki.crl("root.crl", &[2], 2100);
    let creds = pki.creds(Some(&crl), None);
    handshake(&creds, pki.server(1))
        .await
        .expect("a certificate the list does not revoke");
    let e = handshake(&creds, pki.server(2)).await.unwrap_err();
    assert!(e.to_lowercase().contains("revoked"), "{e}");

    // The same from a directory of lists.
    let dir = pki.dir.path().join("crls");
    std::fs::create_dir(&dir).unwrap();
    std::fs::rename(&crl, dir.join("0123abcd.r0")).unwrap();
    let creds = pki.creds(None, Some(&dir));
    handshake(&creds, pki.server(3)).await.expect("not revoked");
    assert!(handshake(&creds, pki.server(2)).await.is_err());

    // An expired list fails every certificate, as in OpenSSL.
    let old = pki.crl("old.crl", &[], 2025);
    let e = handshake(&pki.creds(Some(&old), None), pki.server(4))
        .await
        .unwrap_err();
    assert!(e.to_lowercase().contains("expired"), "{e}");
    // Without lists the chain alone decides; a wrong host name fails verify-full
    // only.
    let mut creds = pki.creds(None, None);
    handshake(&creds, pki.server(2))
        .await
        .expect("no list: not checked");
    let e = handshake_to("other.example", &creds, pki.server(5))
        .await
        .unwrap_err();
    assert!(e.contains("not valid for name"), "{e}");
    creds.sslmode = Some(SslMode::VerifyCa);
    handshake_to("other.example", &creds, pki.server(5))
        .await
        .expect("verify-ca checks the chain only");
}
