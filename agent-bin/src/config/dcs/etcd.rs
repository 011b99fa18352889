//! `etcd3:`: Patroni's etcd v3 section.

use super::super::loose;
use super::super::report::Problem;
use super::super::schema::{map, opt, Kind, ADDR};
use super::refuse;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `etcd3`. Endpoints come from `proxy`, else `url`, else `hosts`, else `host`
/// (Patroni's precedence). The client talks only to the endpoints given: it never
/// discovers other cluster members, which is what `use_proxies: true` asks for and
/// a superset-safe reading of the default (the configured endpoints stay in use).
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct Etcd3Config {
    /// One `host:port`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub host: Option<String>,
    /// Several `host:port`, list or comma string.
    #[serde(default, deserialize_with = "loose::string_list")]
    pub hosts: Vec<String>,
    /// One `http(s)://[user:password@]host:port` URL.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub url: Option<String>,
    /// A proxy's URL: read as `url` with `use_proxies: true`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub proxy: Option<String>,
    /// Treat the endpoints as proxies: never discover cluster members (always
    /// the case here).
    #[serde(default, deserialize_with = "loose::bool")]
    pub use_proxies: bool,
    /// `http` or `https`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub protocol: Option<String>,
    /// etcd user.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub username: Option<String>,
    /// etcd password.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub password: Option<String>,
    /// CA bundle.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cacert: Option<String>,
    /// Client certificate.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cert: Option<String>,
    /// Client key.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub key: Option<String>,
}

/// Keys refused, with what to do instead.
const REFUSED: &[(&str, &str)] = &[
    (
        "srv",
        "DNS SRV discovery is not supported by fullauto; list the etcd endpoints in \
         etcd3.hosts (or etcd3.url)",
    ),
    (
        "srv_suffix",
        "DNS SRV discovery is not supported by fullauto; list the etcd endpoints in \
         etcd3.hosts (or etcd3.url)",
    ),
    (
        "key_password",
        "encrypted client keys are not supported: decrypt the key \
         (openssl pkey -in KEY -out PLAIN_KEY), point key at it and remove key_password",
    ),
];

/// Keys Patroni accepts but ignores too, with why.
const IGNORED: &[(&str, &str)] = &[(
    "retry_timeout",
    "ignored (as by Patroni): the DCS retry timeout is the dynamic setting \
     retry_timeout (bootstrap.dcs.retry_timeout)",
)];

pub(crate) fn kind() -> Kind {
    map(vec![
        opt("host", Kind::Addr(ADDR)),
        opt("hosts", Kind::AddrList(ADDR)),
        opt("url", Kind::Str),
        opt("proxy", Kind::Str),
        opt("use_proxies", Kind::Bool),
        opt("protocol", Kind::Enum(&["http", "https"])),
        opt("username", Kind::Str),
        opt("password", Kind::Str),
        opt("cacert", Kind::Str),
        opt("cert", Kind::Str),
        opt("key", Kind::Str),
        opt("srv", Kind::Str),
        opt("srv_suffix", Kind::Str),
        opt("key_password", Kind::Str),
        opt("retry_timeout", Kind::Num(Some(0.0))),
    ])
}

pub(crate) fn check(section: &Map<String, Value>, out: &mut Vec<Problem>) {
    refuse(section, "etcd3", REFUSED, out);
    for (key, why) in IGNORED {
        if section.get(*key).is_some_and(|v| !v.is_null()) {
            out.push(Problem::warning(format!("etcd3.{key}"), *why));
        }
    }
    let has = |k: &str| section.get(k).is_some_and(|v| !v.is_null());
    if !["host", "hosts", "url", "proxy"].iter().any(|k| has(k)) {
        out.push(Problem::error(
            "etcd3",
            "one of host, hosts, url or proxy is required",
        ));
        return;
    }
    let Ok(c) = serde_json::from_value::<Etcd3Config>(Value::Object(section.clone())) else {
        return;
    };
    if has("proxy") && has("url") {
        out.push(Problem::warning(
            "etcd3.url",
            "ignored because etcd3.proxy is set (proxy wins, as in Patroni)",
        ));
    }
    if has("cert") != has("key") {
        let (set, missing) = if has("cert") {
            ("cert", "key")
        } else {
            ("key", "cert")
        };
        out.push(Problem::error(
            format!("etcd3.{set}"),
            format!(
                "set without etcd3.{missing}: client TLS needs both (for a file holding \
                 certificate and key, give it as both cert and key)"
            ),
        ));
    }
    if let Err(why) = c.endpoints() {
        out.push(Problem::error("etcd3", why));
    }
}

/// Splits `scheme://user:password@rest` into the URL without credentials and them.
fn split_credentials(url: &str) -> (String, Option<(String, String)>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    match rest[..authority_end].rsplit_once('@') {
        Some((userinfo, host)) => {
            let (u, p) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            (
                format!("{scheme}://{host}{}", &rest[authority_end..]),
                Some((u.to_string(), p.to_string())),
            )
        }
        None => (url.to_string(), None),
    }
}

impl Etcd3Config {
    /// The backend's config: `proxy` read as `url`, credentials in the URL read as
    /// `username`/`password` (they win, as in Patroni). An error says what is
    /// wrong with the section.
    pub fn backend(&self) -> Result<dcs_etcd::EtcdConfig, String> {
        let Etcd3Config {
            host,
            hosts,
            url,
            proxy,
            // The client never discovers members: the endpoints are always used
            // as given, which is what use_proxies asks for.
            use_proxies: _,
            protocol,
            username,
            password,
            cacert,
            cert,
            key,
        } = self.clone();
        let url = proxy.or(url).filter(|u| !u.trim().is_empty());
        let (url, from_url) = match url {
            Some(u) => {
                let (u, creds) = split_credentials(u.trim());
                (Some(u), creds)
            }
            None => (None, None),
        };
        let (username, password) = match from_url {
            Some((u, p)) => (Some(u), Some(p)),
            None => (username, password),
        };
        let config = dcs_etcd::EtcdConfig {
            host,
            hosts,
            url,
            protocol,
            username,
            password,
            cacert: cacert.map(Into::into),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
        };
        if config.password.as_deref().is_some_and(|p| !p.is_empty())
            && config.username.as_deref().is_none_or(str::is_empty)
        {
            return Err("password is set but username is not: set etcd3.username".into());
        }
        Ok(config)
    }

    /// The endpoint URLs the client uses.
    pub fn endpoints(&self) -> Result<Vec<String>, String> {
        self.backend()?.endpoints().map_err(|e| match e {
            ha_core::DcsError::Config(m) => m,
            other => other.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_matches_schema() {
        super::super::tests::assert_model_matches_schema::<Etcd3Config>(
            "etcd3",
            &["srv", "srv_suffix", "key_password", "retry_timeout"],
        );
    }

    #[test]
    fn proxy_and_url_forms() {
        let c = |v: Value| serde_json::from_value::<Etcd3Config>(v).unwrap();
        let e = c(serde_json::json!({"url": "https://u:p%w@e1:2379/"}));
        let b = e.backend().unwrap();
        assert_eq!(b.endpoints().unwrap(), vec!["https://e1:2379"]);
        assert_eq!(
            (b.username.as_deref(), b.password.as_deref()),
            (Some("u"), Some("p%w"))
        );
        let e =
            c(serde_json::json!({"proxy": "http://p:2379", "url": "http://u:1", "hosts": "h:1"}));
        assert_eq!(e.endpoints().unwrap(), vec!["http://p:2379"]);
        let e = c(serde_json::json!({"hosts": "a:1,b", "host": "c:1", "use_proxies": "true"}));
        assert_eq!(e.endpoints().unwrap(), vec!["http://a:1", "http://b:2379"]);
        let e = c(serde_json::json!({"host": "a:1", "password": "x"}));
        assert!(e.backend().unwrap_err().contains("set etcd3.username"));
    }
}
