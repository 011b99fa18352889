//! `zookeeper:`.

use super::super::loose;
use super::super::report::Problem;
use super::super::schema::{map, opt, req, Kind, HOST_MAYBE_PORT};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `zookeeper`. With `use_ssl: true` the client connects over TLS, checks the
/// server certificate against `cacert` (not the host name, as Patroni) and presents
/// `cert`/`key`; `key_password` and `verify: false` are refused.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct ZookeeperConfig {
    /// `host[:port]` list.
    #[serde(default, deserialize_with = "loose::string_list")]
    pub hosts: Vec<String>,
    /// `scheme ⇒ credential` pairs added to the session.
    #[serde(default, deserialize_with = "auth_pairs")]
    pub auth_data: Vec<(String, String)>,
    /// Principal ⇒ permissions applied to created znodes.
    #[serde(default, deserialize_with = "acls")]
    pub set_acls: BTreeMap<String, Vec<String>>,
    /// Connect over TLS.
    #[serde(default, deserialize_with = "loose::bool")]
    pub use_ssl: bool,
    /// CA bundle the servers' certificates must chain to (default: the system's).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cacert: Option<String>,
    /// Client certificate (PEM).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cert: Option<String>,
    /// Client key (PEM, unencrypted).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub key: Option<String>,
    /// Password of an encrypted key: refused with `use_ssl`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub key_password: Option<String>,
    /// Verify the server certificate (default true); `false` is refused with
    /// `use_ssl`.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub verify: Option<bool>,
}

/// TLS settings that only matter with `use_ssl: true`.
const TLS_KEYS: &[&str] = &["cacert", "cert", "key", "key_password", "verify"];

pub(crate) fn kind() -> Kind {
    let mut fields = vec![
        req("hosts", Kind::AddrList(HOST_MAYBE_PORT)),
        opt(
            "auth_data",
            Kind::Either(vec![
                Kind::MapOf(Box::new(Kind::Str)),
                Kind::List(Box::new(Kind::List(Box::new(Kind::Str)))),
            ]),
        ),
        opt("set_acls", Kind::MapOf(Box::new(Kind::StrList))),
        opt("use_ssl", Kind::Bool),
        opt("verify", Kind::Bool),
    ];
    for k in ["cacert", "cert", "key", "key_password"] {
        fields.push(opt(k, Kind::Str));
    }
    map(fields)
}

pub(crate) fn check(section: &Map<String, Value>, out: &mut Vec<Problem>) {
    let use_ssl = section
        .get("use_ssl")
        .and_then(loose::as_bool)
        .unwrap_or(false);
    if !use_ssl {
        for k in TLS_KEYS {
            if section.get(*k).is_some_and(|v| !v.is_null()) {
                out.push(Problem::warning(
                    format!("zookeeper.{k}"),
                    "ignored because zookeeper.use_ssl is not set (as in Patroni)",
                ));
            }
        }
    }
    let Ok(c) = serde_json::from_value::<ZookeeperConfig>(Value::Object(section.clone())) else {
        return;
    };
    match c.backend() {
        Err(p) => out.push(p),
        Ok(b) => {
            if let Some((key, why)) = b.tls_refusal() {
                out.push(Problem::error(format!("zookeeper.{key}"), why));
            }
            if let Err(e) = b.connect_string() {
                out.push(Problem::error("zookeeper.hosts", message(e)));
            }
            if let Err(e) = b.acls() {
                out.push(Problem::error("zookeeper.set_acls", message(e)));
            }
        }
    }
}

/// The backend's message without its "invalid zookeeper config" prefix.
fn message(e: dcs_zookeeper::ZkError) -> String {
    match e {
        dcs_zookeeper::ZkError::Config(m) => m,
        other => other.to_string(),
    }
}

impl ZookeeperConfig {
    /// The backend's config. An error names the key that cannot be used.
    pub fn backend(&self) -> Result<dcs_zookeeper::ZooKeeperConfig, Problem> {
        let ZookeeperConfig {
            hosts,
            auth_data,
            set_acls,
            use_ssl,
            cacert,
            cert,
            key,
            key_password,
            verify,
        } = self.clone();
        let path = |p: Option<String>| p.filter(|p| !p.is_empty()).map(Into::into);
        let mut auth = BTreeMap::new();
        for (scheme, credential) in auth_data {
            if auth.insert(scheme.clone(), credential).is_some() {
                return Err(Problem::error(
                    "zookeeper.auth_data",
                    format!(
                        "scheme {scheme:?} is given twice; only one credential per scheme \
                         is supported"
                    ),
                ));
            }
        }
        Ok(dcs_zookeeper::ZooKeeperConfig {
            hosts,
            auth_data: auth,
            set_acls,
            use_ssl,
            cacert: path(cacert),
            cert: path(cert),
            key: path(key),
            key_password,
            verify: verify.unwrap_or(true),
        })
    }
}

fn auth_pairs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<(String, String)>, D::Error> {
    let v = Value::deserialize(d)?;
    let pair = |a: &Value, b: &Value| Some((loose::as_string(a)?, loose::as_string(b)?));
    match &v {
        Value::Null => Ok(Vec::new()),
        Value::Object(m) => Ok(m
            .iter()
            .filter_map(|(k, x)| Some((k.clone(), loose::as_string(x)?)))
            .collect()),
        Value::Array(items) => Ok(items
            .iter()
            .filter_map(|i| {
                let a = i.as_array()?;
                pair(a.first()?, a.get(1)?)
            })
            .collect()),
        _ => Err(serde::de::Error::custom("auth_data: expected a mapping")),
    }
}

fn acls<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, Vec<String>>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(v.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, x)| (k.clone(), loose::as_string_list(x).unwrap_or_default()))
                .collect()
        })
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_matches_schema() {
        super::super::tests::assert_model_matches_schema::<ZookeeperConfig>("zookeeper", &[]);
    }

    #[test]
    fn settings_reach_the_backend() {
        let c: ZookeeperConfig = serde_json::from_value(serde_json::json!({
            "hosts": "127.0.0.1:2181, zk2",
            "auth_data": [["digest", "u:p"]],
            "set_acls": {"CN=node1": "READ,CREATE"},
        }))
        .unwrap();
        let b = c.backend().unwrap();
        assert_eq!(b.connect_string().unwrap(), "127.0.0.1:2181,zk2");
        assert_eq!(b.auth_data["digest"], "u:p");
        assert_eq!(b.set_acls["CN=node1"], vec!["READ", "CREATE"]);
        assert!(!b.use_ssl);
        assert!(b.verify, "verify defaults to true");
        assert_eq!(b.acls().unwrap().len(), 1);
        let tls: ZookeeperConfig = serde_json::from_value(serde_json::json!({
            "hosts": "a:2281", "use_ssl": "true", "cacert": "/ca.pem", "cert": "/c.pem",
            "key": "/k.pem", "verify": "true",
        }))
        .unwrap();
        let b = tls.backend().unwrap();
        assert!(b.use_ssl && b.verify);
        assert_eq!(b.cacert.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(b.cert.as_deref(), Some(std::path::Path::new("/c.pem")));
        assert_eq!(b.key.as_deref(), Some(std::path::Path::new("/k.pem")));
        assert_eq!(b.tls_refusal(), None);
        let twice: ZookeeperConfig = serde_json::from_value(serde_json::json!({
            "hosts": "a", "auth_data": [["digest", "u:p"], ["digest", "v:q"]],
        }))
        .unwrap();
        assert_eq!(twice.backend().unwrap_err().path, "zookeeper.auth_data");
    }
}
