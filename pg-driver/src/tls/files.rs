//! Reading the PEM files of a role's TLS options: certificates, the (optionally
//! encrypted) private key, revocation lists and the system's trust store.

use pkcs8::der::Decode;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{
    CertificateDer, CertificateRevocationListDer, PrivateKeyDer, PrivatePkcs8KeyDer,
};
use std::path::Path;

/// The system's CA bundle, where OpenSSL's default paths (libpq's
/// `sslrootcert=system`) point on the usual distributions: Debian/Ubuntu, Fedora/RHEL,
/// openSUSE, Alpine.
const SYSTEM_CA_BUNDLES: &[&str] = &[
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// Every certificate in a PEM file (at least one).
pub(super) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM certificate file: {e}"))?;
    if certs.is_empty() {
        return Err("no certificate found in it".into());
    }
    Ok(certs)
}

/// The certificates of the system's trust store (the first bundle that exists).
pub(super) fn system_certificates() -> Result<Vec<CertificateDer<'static>>, String> {
    let bundle = SYSTEM_CA_BUNDLES
        .iter()
        .map(Path::new)
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "no system CA bundle found (looked for {}): install the ca-certificates \
                 package or name a file",
                SYSTEM_CA_BUNDLES.join(", ")
            )
        })?;
    certificates(bundle).map_err(|e| format!("{}: {e}", bundle.display()))
}

/// The revocation lists in a PEM file.
pub(super) fn revocation_lists(
    path: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    CertificateRevocationListDer::pem_slice_iter(&text)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("not a PEM revocation list file: {e}"))
}

/// The revocation lists of every file in `dir` (OpenSSL's hashed names, `HASH.rN`,
/// or any other name); files holding none are skipped.
pub(super) fn revocation_dir(
    dir: &Path,
) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    entries.sort();
    for p in entries {
        if let Ok(mut lists) = revocation_lists(&p) {
            out.append(&mut lists);
        }
    }
    if out.is_empty() {
        return Err("no revocation list found in it".into());
    }
    Ok(out)
}

/// The private key in a PEM file: PKCS#8, PKCS#1 (RSA) or SEC1 (EC), or an encrypted
/// PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`, PBES2) decrypted with `password`.
pub(super) fn private_key(
    path: &Path,
    password: Option<&str>,
) -> Result<PrivateKeyDer<'static>, String> {
    let text = std::fs::read(path).map_err(|e| e.to_string())?;
    let pem = String::from_utf8_lossy(&text);
    if pem.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") {
        let Some(password) = password else {
            return Err(
                "the private key is encrypted and no sslpassword is set: set sslpassword".into(),
            );
        };
        let (_, doc) = pkcs8::SecretDocument::from_pem(pem.trim())
            .map_err(|e| format!("cannot read the encrypted private key: {e}"))?;
        let info = pkcs8::EncryptedPrivateKeyInfo::from_der(doc.as_bytes())
            .map_err(|e| format!("cannot read the encrypted private key: {e}"))?;
        let plain = info
            .decrypt(password)
            .map_err(|e| format!("cannot decrypt the private key (wrong sslpassword?): {e}"))?;
        return Ok(PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
            plain.as_bytes().to_vec(),
        )));
    }
    if pem.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(
            "the private key is encrypted in OpenSSL's legacy PEM format, which is not \
             read: convert it to PKCS#8 (openssl pkcs8 -topk8 -v2 aes-256-cbc -in KEY \
             -out NEW_KEY) and point sslkey at the result"
                .into(),
        );
    }
    PrivateKeyDer::from_pem_slice(&text).map_err(|e| format!("no PEM private key in it: {e}"))
}
