//! The `zookeeper:` configuration section, in Patroni's spelling.

use crate::error::ZkError;
use serde::Deserialize;
use std::collections::BTreeMap;
use zookeeper_client::{Acl, AuthId, Permission};

/// Patroni's `zookeeper:` section: where the ensemble is and how to authenticate.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooKeeperConfig {
    /// Ensemble members as `host:port` (a YAML list or one comma-separated string);
    /// the client moves between them when one fails.
    #[serde(deserialize_with = "hosts_list")]
    pub hosts: Vec<String>,
    /// Credentials added to the session: scheme ⇒ credential, e.g.
    /// `{digest: "user:password"}`.
    #[serde(default)]
    pub auth_data: BTreeMap<String, String>,
    /// ACLs put on every znode this agent creates: principal ⇒ permissions
    /// (`READ`, `WRITE`, `CREATE`, `DELETE`, `ADMIN`, `ALL`). A principal written as
    /// `scheme:id` (e.g. `digest:user:<base64 sha1>`) uses that scheme; one without a
    /// colon is an x509 principal. Empty: world-readable and writable, as Patroni.
    #[serde(default)]
    pub set_acls: BTreeMap<String, Vec<String>>,
    /// Patroni's TLS switch; only `false` is supported (TLS is refused rather than
    /// silently sending credentials in plain text).
    #[serde(default)]
    pub use_ssl: bool,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Hosts {
    One(String),
    Many(Vec<String>),
}

fn hosts_list<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let raw = match Hosts::deserialize(d)? {
        Hosts::One(s) => vec![s],
        Hosts::Many(v) => v,
    };
    Ok(raw
        .iter()
        .flat_map(|h| h.split(','))
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .collect())
}

impl ZooKeeperConfig {
    /// A config for these hosts without auth or ACLs.
    pub fn with_hosts<S: Into<String>>(hosts: impl IntoIterator<Item = S>) -> Self {
        ZooKeeperConfig {
            hosts: hosts.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }

    /// Checks the section and returns the connect string (`h1:p1,h2:p2`).
    pub fn connect_string(&self) -> Result<String, ZkError> {
        if self.use_ssl {
            return Err(ZkError::Config(
                "`use_ssl: true` is not supported by this backend yet; use a plain-text \
                 client port (or a TLS tunnel)"
                    .to_string(),
            ));
        }
        if self.hosts.is_empty() {
            return Err(ZkError::Config(
                "`hosts` is empty; list the ensemble as host:port".to_string(),
            ));
        }
        for h in &self.hosts {
            if h.contains('/') || h.contains(char::is_whitespace) {
                return Err(ZkError::Config(format!(
                    "host `{h}` is not host:port (chroot paths are not supported; use namespace)"
                )));
            }
        }
        Ok(self.hosts.join(","))
    }

    /// The ACLs to create znodes with; empty means world-open.
    pub fn acls(&self) -> Result<Vec<Acl>, ZkError> {
        let mut acls = Vec::new();
        for (principal, perms) in &self.set_acls {
            let (scheme, id) = match principal.split_once(':') {
                Some((scheme, id)) => (scheme, id),
                None => ("x509", principal.as_str()),
            };
            if scheme.is_empty() || id.is_empty() {
                return Err(ZkError::Config(format!(
                    "set_acls principal `{principal}` must be `scheme:id` or an x509 name"
                )));
            }
            let mut permission = Permission::NONE;
            for p in perms {
                permission = permission
                    | match p.to_ascii_uppercase().as_str() {
                        "READ" => Permission::READ,
                        "WRITE" => Permission::WRITE,
                        "CREATE" => Permission::CREATE,
                        "DELETE" => Permission::DELETE,
                        "ADMIN" => Permission::ADMIN,
                        "ALL" => Permission::ALL,
                        other => {
                            return Err(ZkError::Config(format!(
                                "set_acls `{principal}`: unknown permission `{other}` \
                                 (use READ, WRITE, CREATE, DELETE, ADMIN or ALL)"
                            )))
                        }
                    };
            }
            if permission == Permission::NONE {
                return Err(ZkError::Config(format!(
                    "set_acls `{principal}` grants no permission"
                )));
            }
            acls.push(Acl::new(permission, AuthId::new(scheme, id)));
        }
        Ok(acls)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_accept_list_or_comma_string() {
        let a: ZooKeeperConfig = serde_json::from_str(r#"{"hosts": "a:1, b:2,c:3"}"#).unwrap();
        let b: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": ["a:1", "b:2", "c:3"]}"#).unwrap();
        assert_eq!(a.hosts, vec!["a:1", "b:2", "c:3"]);
        assert_eq!(a, b);
        assert_eq!(a.connect_string().unwrap(), "a:1,b:2,c:3");
        let empty: ZooKeeperConfig = serde_json::from_str(r#"{"hosts": ""}"#).unwrap();
        assert!(empty.connect_string().is_err());
        let tls: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": "a:1", "use_ssl": true}"#).unwrap();
        assert!(matches!(tls.connect_string(), Err(ZkError::Config(_))));
        let typo = serde_json::from_str::<ZooKeeperConfig>(r#"{"hosts": "a:1", "host": "b"}"#);
        assert!(typo.is_err(), "unknown fields are rejected");
    }

    #[test]
    fn acls_parse_schemes_and_permissions() {
        let c: ZooKeeperConfig = serde_json::from_str(
            r#"{"hosts": "a:1", "set_acls": {"CN=node1": ["READ", "create"], "digest:u:h": ["ALL"]}}"#,
        )
        .unwrap();
        let acls = c.acls().unwrap();
        assert_eq!(acls.len(), 2);
        assert_eq!(acls[0].scheme(), "x509");
        assert_eq!(acls[0].id(), "CN=node1");
        assert!(acls[0].permission().has(Permission::READ));
        assert!(acls[0].permission().has(Permission::CREATE));
        assert!(!acls[0].permission().has(Permission::WRITE));
        assert_eq!(acls[1].scheme(), "digest");
        assert_eq!(acls[1].id(), "u:h");
        assert_eq!(acls[1].permission(), Permission::ALL);

        let bad: ZooKeeperConfig =
            serde_json::from_str(r#"{"hosts": "a:1", "set_acls": {"x": ["FLY"]}}"#).unwrap();
        assert!(matches!(bad.acls(), Err(ZkError::Config(_))));
    }
}
