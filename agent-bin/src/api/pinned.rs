//! Certificates that are themselves in the configured CA file.
//!
//! OpenSSL, which Patroni uses, accepts a self-signed CA certificate as a peer's
//! own certificate when that very certificate is trusted (Patroni's acceptance suite
//! uses one such certificate as CA, server and client certificate). webpki refuses
//! CA certificates as end entities. The verifiers here therefore first accept an
//! exact copy of a trusted certificate that is within its validity period (the peer
//! still proves it holds the key in the handshake), and hand every other
//! certificate to webpki.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, Error, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use std::sync::Arc;

/// Whether `cert` is byte for byte one of `trusted` and valid at `now`.
fn is_pinned(
    trusted: &[CertificateDer<'static>],
    cert: &CertificateDer<'_>,
    now: UnixTime,
) -> bool {
    trusted.iter().any(|t| t.as_ref() == cert.as_ref())
        && validity(cert.as_ref()).is_some_and(|(from, until)| {
            let now = now.as_secs() as i64;
            from <= now && now <= until
        })
}

/// Checks client certificates: trusted copies first, then `inner`.
#[derive(Debug)]
pub(crate) struct PinnedClientVerifier {
    pub(crate) inner: Arc<dyn ClientCertVerifier>,
    pub(crate) trusted: Vec<CertificateDer<'static>>,
}

impl ClientCertVerifier for PinnedClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, Error> {
        if is_pinned(&self.trusted, end_entity, now) {
            return Ok(ClientCertVerified::assertion());
        }
        self.inner
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Checks server certificates: trusted copies (whose names must still match the
/// address called) first, then `inner`.
#[derive(Debug)]
pub(crate) struct PinnedServerVerifier {
    pub(crate) inner: Arc<dyn ServerCertVerifier>,
    pub(crate) trusted: Vec<CertificateDer<'static>>,
}

impl ServerCertVerifier for PinnedServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if is_pinned(&self.trusted, end_entity, now) {
            let parsed = rustls::server::ParsedCertificate::try_from(end_entity)?;
            rustls::client::verify_server_name(&parsed, server_name)?;
            return Ok(ServerCertVerified::assertion());
        }
        self.inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts any server certificate (`ctl.insecure`, `fullautoctl -k`); handshake
/// signatures are still checked.
#[derive(Debug)]
pub(crate) struct AnyServerCert(pub(crate) Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
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
    ) -> Result<HandshakeSignatureValid, Error> {
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

/// One DER element: (tag, content, rest after it).
fn der_next(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (first as usize, b)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, x| (acc << 8) | *x as usize);
        (len, &b[n..])
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// `notBefore` and `notAfter` of a DER certificate, in Unix seconds.
fn validity(cert: &[u8]) -> Option<(i64, i64)> {
    let (_, certificate, _) = der_next(cert)?;
    let (_, tbs, _) = der_next(certificate)?;
    let (tag, _, mut rest) = der_next(tbs)?;
    if tag == 0xa0 {
        // [0] version: the serial number follows.
        rest = der_next(rest)?.2;
    }
    let rest = der_next(rest)?.2; // signature algorithm
    let rest = der_next(rest)?.2; // issuer
    let (_, validity, _) = der_next(rest)?;
    let (t1, from, rest) = der_next(validity)?;
    let (t2, until, _) = der_next(rest)?;
    Some((der_time(t1, from)?, der_time(t2, until)?))
}

/// UTCTime (tag 23) or GeneralizedTime (tag 24), `Z` form, in Unix seconds.
fn der_time(tag: u8, v: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let full = match tag {
        0x17 => {
            let yy: u32 = s.get(..2)?.parse().ok()?;
            format!("{}{s}", if yy >= 50 { "19" } else { "20" })
        }
        0x18 => s.to_string(),
        _ => return None,
    };
    chrono::NaiveDateTime::parse_from_str(&full, "%Y%m%d%H%M%S")
        .ok()
        .map(|t| t.and_utc().timestamp())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn self_signed_ca(not_after_year: i32) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut p = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(not_after_year, 1, 1);
        p.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn validity_is_read_from_the_certificate() {
        let c = self_signed_ca(2060);
        let (from, until) = validity(c.as_ref()).unwrap();
        assert_eq!(from, 1_577_836_800);
        assert_eq!(until, 2_840_140_800);
    }

    #[test]
    fn only_exact_copies_within_their_validity_are_pinned() {
        let good = self_signed_ca(2060);
        let expired = self_signed_ca(2021);
        let other = self_signed_ca(2060);
        let now = UnixTime::now();
        let trusted = vec![good.clone(), expired.clone()];
        assert!(is_pinned(&trusted, &good, now));
        assert!(!is_pinned(&trusted, &expired, now));
        assert!(!is_pinned(&trusted, &other, now));
    }
}
