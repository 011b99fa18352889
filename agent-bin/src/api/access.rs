//! Access control for unsafe requests (spec §4.5): allowlist, client certificate,
//! HTTP Basic authentication.

use crate::config::{BasicAuth, VerifyClient};
use base64::Engine;
use std::net::IpAddr;

/// Why a request was refused: status code and message.
pub(crate) struct Denied {
    pub status: u16,
    pub message: &'static str,
}

/// Checks `Authorization: Basic …` against the configured credentials.
pub(crate) fn check_basic(auth: Option<&BasicAuth>, header: Option<&str>) -> Result<(), Denied> {
    let Some(expected) = auth else {
        return Ok(());
    };
    let Some(header) = header else {
        return Err(Denied {
            status: 401,
            message: "no auth header received",
        });
    };
    let given = header
        .strip_prefix("Basic ")
        .or_else(|| header.strip_prefix("basic "))
        .and_then(|b| {
            base64::engine::general_purpose::STANDARD
                .decode(b.trim())
                .ok()
        })
        .and_then(|raw| String::from_utf8(raw).ok());
    let ok = given.is_some_and(|g| {
        constant_time_eq(
            g.as_bytes(),
            format!("{}:{}", expected.username, expected.password).as_bytes(),
        )
    });
    if ok {
        Ok(())
    } else {
        Err(Denied {
            status: 401,
            message: "not authenticated",
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `verify_client: optional` needs a certificate for unsafe requests (`required`
/// is enforced at the handshake already).
pub(crate) fn check_client_cert(
    tls: bool,
    verify: VerifyClient,
    has_cert: bool,
) -> Result<(), Denied> {
    if tls && verify != VerifyClient::None && !has_cert {
        Err(Denied {
            status: 403,
            message: "client certificate required",
        })
    } else {
        Ok(())
    }
}

/// Whether `ip` matches an allowlist entry: an address, a CIDR, or a host name
/// (resolved now).
pub(crate) async fn ip_allowed(ip: IpAddr, entries: &[String]) -> bool {
    let ip = canonical(ip);
    for e in entries {
        let e = e.trim();
        if e.is_empty() {
            continue;
        }
        if let Some((net, bits)) = e.split_once('/') {
            if let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
                if in_cidr(ip, canonical(net), bits) {
                    return true;
                }
            }
            continue;
        }
        if let Ok(addr) = e.trim_matches(['[', ']']).parse::<IpAddr>() {
            if canonical(addr) == ip {
                return true;
            }
            continue;
        }
        if let Ok(addrs) = tokio::net::lookup_host((e, 0)).await {
            if addrs.map(|a| canonical(a.ip())).any(|a| a == ip) {
                return true;
            }
        }
    }
    false
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

fn in_cidr(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) if bits <= 32 => {
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) if bits <= 128 => {
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The host part of an `http(s)://host:port/...` URL.
pub(crate) fn url_host(url: &str) -> Option<String> {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if let Some(stripped) = authority.strip_prefix('[') {
        stripped.split(']').next()?
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    (!host.is_empty()).then(|| host.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn allowlist_matches_addresses_and_networks() {
        let ip: IpAddr = "10.1.2.3".parse().unwrap();
        assert!(ip_allowed(ip, &["10.0.0.0/8".into()]).await);
        assert!(ip_allowed(ip, &["10.1.2.3".into()]).await);
        assert!(!ip_allowed(ip, &["10.1.2.4".into(), "192.168.0.0/16".into()]).await);
        let mapped: IpAddr = "::ffff:127.0.0.1".parse().unwrap();
        assert!(ip_allowed(mapped, &["127.0.0.1".into()]).await);
        assert!(ip_allowed("127.0.0.1".parse().unwrap(), &["localhost".into()]).await);
        assert_eq!(
            url_host("http://10.0.0.2:8008/patroni").as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(
            url_host("https://[::1]:8008/patroni").as_deref(),
            Some("::1")
        );
    }

    #[test]
    fn basic_auth() {
        let a = BasicAuth {
            username: "u".into(),
            password: "p".into(),
        };
        assert!(check_basic(None, None).is_ok());
        assert_eq!(
            check_basic(Some(&a), None).unwrap_err().message,
            "no auth header received"
        );
        assert_eq!(
            check_basic(Some(&a), Some("Basic dTp4"))
                .unwrap_err()
                .message,
            "not authenticated"
        );
        assert!(check_basic(Some(&a), Some("Basic dTpw")).is_ok());
    }
}
