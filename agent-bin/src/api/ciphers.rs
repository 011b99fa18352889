//! `restapi.ciphers`: an OpenSSL cipher string (Patroni hands it to Python's
//! `set_ciphers`) applied to the TLS 1.2 suites fullauto's TLS library offers. As
//! with OpenSSL, TLS 1.3 suites are not governed by the string, names of suites the
//! library lacks select nothing, and the string must select at least one suite.

use rustls::crypto::ring::cipher_suite as cs;
use rustls::SupportedCipherSuite;

/// One TLS 1.2 suite with the OpenSSL names and aliases that select it.
struct Suite {
    suite: SupportedCipherSuite,
    name: &'static str,
    attrs: &'static [&'static str],
}

const COMMON: &[&str] = &[
    "ALL", "DEFAULT", "HIGH", "ECDHE", "EECDH", "kECDHE", "kEECDH", "TLSv1.2", "AEAD",
];

/// The TLS 1.2 suites of the library, in its order of preference.
fn tls12() -> [Suite; 6] {
    [
        Suite {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
            name: "ECDHE-ECDSA-AES256-GCM-SHA384",
            attrs: &["aECDSA", "ECDSA", "AESGCM", "AES", "AES256", "SHA384"],
        },
        Suite {
            suite: cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
            name: "ECDHE-ECDSA-AES128-GCM-SHA256",
            attrs: &["aECDSA", "ECDSA", "AESGCM", "AES", "AES128", "SHA256"],
        },
        Suite {
            suite: cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
            name: "ECDHE-ECDSA-CHACHA20-POLY1305",
            attrs: &["aECDSA", "ECDSA", "CHACHA20", "SHA256"],
        },
        Suite {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
            name: "ECDHE-RSA-AES256-GCM-SHA384",
            attrs: &["aRSA", "AESGCM", "AES", "AES256", "SHA384"],
        },
        Suite {
            suite: cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
            name: "ECDHE-RSA-AES128-GCM-SHA256",
            attrs: &["aRSA", "AESGCM", "AES", "AES128", "SHA256"],
        },
        Suite {
            suite: cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
            name: "ECDHE-RSA-CHACHA20-POLY1305",
            attrs: &["aRSA", "CHACHA20", "SHA256"],
        },
    ]
}

/// Whether the OpenSSL word `word` (`NAME`, `ALIAS`, `A+B`) selects `s`.
fn selects(word: &str, s: &Suite) -> bool {
    word == s.name
        || word
            .split('+')
            .all(|part| COMMON.contains(&part) || s.attrs.contains(&part))
}

/// The TLS 1.2 suites the cipher string `spec` selects, or why it selects none.
pub fn tls12_suites(spec: &str) -> Result<Vec<SupportedCipherSuite>, String> {
    let all = tls12();
    let mut on = vec![false; all.len()];
    let mut banned = vec![false; all.len()];
    for item in spec.split([':', ',', ' ']).filter(|w| !w.is_empty()) {
        let (op, word) = match item.as_bytes()[0] {
            b'!' | b'-' | b'+' => (item.as_bytes()[0], &item[1..]),
            _ => (b' ', item),
        };
        if word.starts_with('@') {
            // @STRENGTH, @SECLEVEL=n: ordering and levels, nothing to select.
            continue;
        }
        for (i, s) in all.iter().enumerate() {
            if selects(word, s) {
                match op {
                    b'!' => banned[i] = true,
                    b'-' => on[i] = false,
                    b'+' => {}
                    _ => on[i] = true,
                }
            }
        }
    }
    let chosen: Vec<SupportedCipherSuite> = all
        .iter()
        .enumerate()
        .filter(|(i, _)| on[*i] && !banned[*i])
        .map(|(_, s)| s.suite)
        .collect();
    if chosen.is_empty() {
        let names: Vec<&str> = all.iter().map(|s| s.name).collect();
        return Err(format!(
            "{spec:?} selects none of the TLS 1.2 cipher suites fullauto's TLS library \
             offers; name at least one of {} (TLS 1.3 suites are always offered)",
            names.join(", ")
        ));
    }
    Ok(chosen)
}

/// The TLS 1.3 suites (always offered) followed by the chosen TLS 1.2 ones.
pub fn with_tls13(tls12: Vec<SupportedCipherSuite>) -> Vec<SupportedCipherSuite> {
    let mut v = vec![
        cs::TLS13_AES_256_GCM_SHA384,
        cs::TLS13_AES_128_GCM_SHA256,
        cs::TLS13_CHACHA20_POLY1305_SHA256,
    ];
    v.extend(tls12);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(spec: &str) -> Vec<String> {
        tls12_suites(spec)
            .unwrap()
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect()
    }

    #[test]
    fn openssl_strings_select_suites() {
        // Patroni's documented example: the DHE suites do not exist here.
        assert_eq!(
            names(
                "ECDHE-RSA-AES256-GCM-SHA384:DHE-RSA-AES256-GCM-SHA384:\
                 ECDHE-RSA-AES128-GCM-SHA256:DHE-RSA-AES128-GCM-SHA256:\
                 !SSLv1:!SSLv2:!SSLv3:!TLSv1:!TLSv1.1"
            ),
            [
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"
            ]
        );
        assert_eq!(names("HIGH:!aRSA:!CHACHA20").len(), 2);
        assert_eq!(names("ECDHE+CHACHA20").len(), 2);
        assert_eq!(names("DEFAULT:-AES:@STRENGTH").len(), 2);
        assert!(tls12_suites("DHE-RSA-AES256-GCM-SHA384").is_err());
        assert!(tls12_suites("HIGH:!ECDHE").is_err());
    }
}
