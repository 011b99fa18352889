//! The typed `postgresql` section (local) and `bootstrap.dcs.postgresql` (dynamic).
//!
//! `build` fills them from the checked document, so `--validate-config` reads the
//! sections with exactly these models, and `node::settings::pg_config` builds the
//! driver's `PgConfig` from them alone (never from the raw document): a key the
//! schema accepts has a field here, or it is a method section.

use super::loose;
use super::types::{BinNames, Callbacks, MethodSection};
use pg_driver::config::{Authentication, ToolOptions};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// `postgresql` (local).
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct PostgresqlConfig {
    /// `host[,host]:port` Postgres listens on.
    #[serde(default, deserialize_with = "loose::string")]
    pub listen: String,
    /// `host:port` published in `conn_url`.
    #[serde(default, deserialize_with = "loose::string")]
    pub connect_address: String,
    /// `host:port` of a connection pooler published as `proxy_url`.
    #[serde(default, deserialize_with = "text")]
    pub proxy_address: Option<String>,
    /// PGDATA.
    #[serde(default, deserialize_with = "loose::string")]
    pub data_dir: String,
    /// Where postgresql.conf lives (default: data_dir).
    #[serde(default, deserialize_with = "text")]
    pub config_dir: Option<String>,
    /// Directory of the Postgres binaries.
    #[serde(default, deserialize_with = "text")]
    pub bin_dir: Option<String>,
    /// Tool name overrides.
    #[serde(default)]
    pub bin_name: BinNames,
    /// .pgpass file the agent writes.
    #[serde(default, deserialize_with = "text")]
    pub pgpass: Option<String>,
    /// Users, read straight into the driver's type (scalars spelt loosely).
    #[serde(default, deserialize_with = "authentication")]
    pub authentication: Authentication,
    /// GUCs.
    #[serde(default, deserialize_with = "object")]
    pub parameters: Map<String, Value>,
    /// pg_hba lines (local wins over dynamic).
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub pg_hba: Option<Vec<String>>,
    /// pg_ident lines.
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub pg_ident: Option<Vec<String>>,
    /// Base config file included from postgresql.conf.
    #[serde(default, deserialize_with = "text")]
    pub custom_conf: Option<String>,
    /// Connect through the Unix socket.
    #[serde(default, deserialize_with = "loose::bool")]
    pub use_unix_socket: bool,
    /// Replication connections through the Unix socket.
    #[serde(default, deserialize_with = "loose::bool")]
    pub use_unix_socket_repl: bool,
    /// pg_ctl wait timeout, seconds (fractions allowed).
    #[serde(default, deserialize_with = "seconds")]
    pub pg_ctl_timeout: Option<f64>,
    /// Local override of `use_pg_rewind`.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub use_pg_rewind: Option<bool>,
    /// Local `use_slots`.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub use_slots: Option<bool>,
    /// pg_rewind options.
    #[serde(default, deserialize_with = "tool_options")]
    pub rewind: ToolOptions,
    /// pg_basebackup options.
    #[serde(default, deserialize_with = "tool_options")]
    pub basebackup: ToolOptions,
    /// Wipe the data directory when rewind fails.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    /// Wipe the data directory when timelines diverged and rewind is off.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub remove_data_directory_on_diverged_timelines: Option<bool>,
    /// Replica creation methods, in order (default `basebackup`).
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub create_replica_methods: Option<Vec<String>>,
    /// Extra recovery settings.
    #[serde(default, deserialize_with = "object")]
    pub recovery_conf: Map<String, Value>,
    /// Callbacks.
    #[serde(default)]
    pub callbacks: Callbacks,
    /// Run before promotion; non-zero aborts it.
    #[serde(default, deserialize_with = "text")]
    pub pre_promote: Option<String>,
    /// Run before a stop.
    #[serde(default, deserialize_with = "text")]
    pub before_stop: Option<String>,
    /// Custom replica method sections by name (every other mapping).
    #[serde(flatten)]
    pub methods: MethodSections,
}

/// `bootstrap.dcs.postgresql`: the dynamic settings a new cluster starts with.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct DynamicPostgresql {
    /// Cluster-wide GUCs.
    #[serde(default, deserialize_with = "object")]
    pub parameters: Map<String, Value>,
    /// pg_hba lines.
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub pg_hba: Option<Vec<String>>,
    /// pg_ident lines.
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub pg_ident: Option<Vec<String>>,
    /// Recovery settings.
    #[serde(default, deserialize_with = "opt_object")]
    pub recovery_conf: Option<Map<String, Value>>,
    /// pg_ctl wait timeout, seconds.
    #[serde(default, deserialize_with = "seconds")]
    pub pg_ctl_timeout: Option<f64>,
    /// `use_pg_rewind`.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub use_pg_rewind: Option<bool>,
    /// `use_slots`.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub use_slots: Option<bool>,
    /// pg_rewind options.
    #[serde(default, deserialize_with = "tool_options")]
    pub rewind: ToolOptions,
    /// pg_basebackup options.
    #[serde(default, deserialize_with = "tool_options")]
    pub basebackup: ToolOptions,
    /// Wipe the data directory when rewind fails.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub remove_data_directory_on_rewind_failure: Option<bool>,
    /// Wipe the data directory when timelines diverged and rewind is off.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub remove_data_directory_on_diverged_timelines: Option<bool>,
    /// Replica creation methods, in order.
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub create_replica_methods: Option<Vec<String>>,
    /// Method sections given here (local ones of the same name win).
    #[serde(flatten)]
    pub methods: MethodSections,
}

/// Method sections by name: every mapping of a section that is not one of its
/// known keys (a non-mapping unknown key was reported by the schema).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MethodSections(pub BTreeMap<String, MethodSection>);

impl<'de> Deserialize<'de> for MethodSections {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let m = Map::<String, Value>::deserialize(d)?;
        Ok(MethodSections(
            m.iter()
                .filter(|(_, v)| v.is_object())
                .map(|(k, v)| (k.clone(), MethodSection::from_value(v)))
                .collect(),
        ))
    }
}

/// A non-empty string.
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(loose::opt_string(d)?.filter(|s| !s.is_empty()))
}

/// Seconds from a number or a numeric string.
fn seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(None);
    }
    loose::as_f64(&v)
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("expected a number, got {v}")))
}

fn opt_object<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Map<String, Value>>, D::Error> {
    match Value::deserialize(d)? {
        Value::Null => Ok(None),
        Value::Object(m) => Ok(Some(m)),
        v => Err(serde::de::Error::custom(format!(
            "expected a mapping, got {v}"
        ))),
    }
}

fn object<'de, D: Deserializer<'de>>(d: D) -> Result<Map<String, Value>, D::Error> {
    Ok(opt_object(d)?.unwrap_or_default())
}

/// Patroni's option list (`- flag`, `- key: value`) or a mapping; null is none.
pub(crate) fn tool_options<'de, D: Deserializer<'de>>(d: D) -> Result<ToolOptions, D::Error> {
    let v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(ToolOptions::None);
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

/// The driver's `Authentication`, with the scalars of each user's settings read the
/// lenient way (`password: 1234`).
fn authentication<'de, D: Deserializer<'de>>(d: D) -> Result<Authentication, D::Error> {
    let mut v = Value::deserialize(d)?;
    if v.is_null() {
        return Ok(Authentication::default());
    }
    if let Some(users) = v.as_object_mut() {
        users.retain(|_, u| !u.is_null());
        for user in users.values_mut().filter_map(Value::as_object_mut) {
            user.retain(|_, x| !x.is_null());
            for x in user.values_mut() {
                if let Some(s) = loose::as_string(x) {
                    *x = Value::String(s);
                }
            }
        }
    }
    serde_json::from_value(v).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn local_section_reads_loosely_and_keeps_method_sections() {
        let pg: PostgresqlConfig = serde_json::from_value(json!({
            "listen": "127.0.0.1:5432", "connect_address": "127.0.0.1:5432",
            "data_dir": "/d", "pg_ctl_timeout": "2.5", "use_slots": "off",
            "authentication": {
                "superuser": {"username": "su", "password": 1234, "sslmode": "require"},
                "replication": {"username": "rep", "sslnegotiation": "direct"},
            },
            "rewind": ["debug"], "basebackup": {"max-rate": "10M"},
            "walg": {"command": "walg.sh", "no_leader": "yes", "threads": 4},
            "proxy_address": "",
        }))
        .unwrap();
        assert_eq!(pg.pg_ctl_timeout, Some(2.5));
        assert_eq!(pg.use_slots, Some(false));
        assert_eq!(
            pg.authentication.superuser.password.as_deref(),
            Some("1234")
        );
        assert!(pg.authentication.replication.sslnegotiation.is_some());
        assert_eq!(pg.rewind.to_args().unwrap(), ["--debug"]);
        assert_eq!(pg.basebackup.to_args().unwrap(), ["--max-rate=10M"]);
        let walg = &pg.methods.0["walg"];
        assert!(walg.no_leader);
        assert_eq!(walg.extra.get("threads"), Some(&json!(4)));
        assert_eq!(pg.proxy_address, None);
        // A user setting the driver does not know is an error, not dropped.
        let bad = serde_json::from_value::<PostgresqlConfig>(json!({
            "authentication": {"superuser": {"username": "su", "sslmod": "require"}},
        }));
        assert!(bad.is_err());
    }
}
