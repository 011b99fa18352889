//! `PATRONI_*` environment variables, turned into a config overlay that wins over the
//! file, following Patroni's documented variable names and value formats.

use super::report::Problem;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// The environment as a plain map, so callers (and tests) choose where it comes from.
pub type EnvMap = BTreeMap<String, String>;

/// The process environment as an [`EnvMap`] (non-UTF-8 variables are skipped).
pub fn process_env() -> EnvMap {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// What the environment contributes: the overlay, which variable set which path (for
/// messages), and warnings about variables fullauto ignores.
#[derive(Debug, Default)]
pub struct EnvOverlay {
    /// A config fragment to merge over the file.
    pub overlay: Map<String, Value>,
    /// Dotted path ⇒ the variable that set it.
    pub origins: BTreeMap<String, String>,
    /// Variables that name unsupported sections.
    pub warnings: Vec<Problem>,
    /// `PATRONI_CONFIGURATION`: a whole config document that replaces file and env.
    pub whole_config: Option<String>,
}

const PREFIX: &str = "PATRONI_";

/// How a variable's text becomes a value.
#[derive(Clone, Copy)]
enum Form {
    Text,
    Int,
    Bool,
    List,
    Dict,
    /// A `%(attr)s` template, else a list of attributes (Patroni's `log.format`).
    Format,
}

const LOG_KEYS: &[(&str, Form)] = &[
    ("type", Form::Text),
    ("level", Form::Text),
    ("traceback_level", Form::Text),
    ("format", Form::Format),
    ("dateformat", Form::Text),
    ("static_fields", Form::Dict),
    ("max_queue_size", Form::Int),
    ("dir", Form::Text),
    // Octal as C's strtol reads it (`0640`): read by the log section.
    ("mode", Form::Text),
    ("file_num", Form::Int),
    ("file_size", Form::Int),
    ("loggers", Form::Dict),
    ("deduplicate_heartbeat_logs", Form::Bool),
];

const RESTAPI_KEYS: &[(&str, Form)] = &[
    ("listen", Form::Text),
    ("connect_address", Form::Text),
    ("certfile", Form::Text),
    ("keyfile", Form::Text),
    ("keyfile_password", Form::Text),
    ("cafile", Form::Text),
    ("ciphers", Form::Text),
    ("verify_client", Form::Text),
    ("http_extra_headers", Form::Dict),
    ("https_extra_headers", Form::Dict),
    ("allowlist", Form::List),
    ("allowlist_include_members", Form::Bool),
    ("request_queue_size", Form::Int),
    ("server_tokens", Form::Text),
];

const CTL_KEYS: &[(&str, Form)] = &[
    ("insecure", Form::Bool),
    ("cacert", Form::Text),
    ("certfile", Form::Text),
    ("keyfile", Form::Text),
    ("keyfile_password", Form::Text),
];

const POSTGRESQL_KEYS: &[(&str, Form)] = &[
    ("listen", Form::Text),
    ("connect_address", Form::Text),
    ("proxy_address", Form::Text),
    ("config_dir", Form::Text),
    ("data_dir", Form::Text),
    ("pgpass", Form::Text),
    ("bin_dir", Form::Text),
];

/// Per-user connection options (`PATRONI_<USER>_<OPTION>`).
const USER_KEYS: &[&str] = &[
    "username",
    "password",
    "sslmode",
    "sslkey",
    "sslpassword",
    "sslcert",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "sslnegotiation",
    "gssencmode",
    "channel_binding",
];

const ETCD_KEYS: &[(&str, Form)] = &[
    ("host", Form::Text),
    ("hosts", Form::List),
    ("url", Form::Text),
    ("proxy", Form::Text),
    ("srv", Form::Text),
    ("srv_suffix", Form::Text),
    ("protocol", Form::Text),
    ("username", Form::Text),
    ("password", Form::Text),
    ("cacert", Form::Text),
    ("cert", Form::Text),
    ("key", Form::Text),
    ("key_password", Form::Text),
    ("use_proxies", Form::Bool),
];

const ZOOKEEPER_KEYS: &[(&str, Form)] = &[
    ("hosts", Form::List),
    ("use_ssl", Form::Bool),
    ("cacert", Form::Text),
    ("cert", Form::Text),
    ("key", Form::Text),
    ("key_password", Form::Text),
    ("verify", Form::Bool),
    ("set_acls", Form::Dict),
    ("auth_data", Form::Dict),
];

const CONSUL_KEYS: &[(&str, Form)] = &[
    ("host", Form::Text),
    ("url", Form::Text),
    ("port", Form::Int),
    ("scheme", Form::Text),
    ("token", Form::Text),
    ("verify", Form::Bool),
    ("cacert", Form::Text),
    ("cert", Form::Text),
    ("key", Form::Text),
    ("dc", Form::Text),
    ("consistency", Form::Text),
    ("checks", Form::List),
    ("register_service", Form::Bool),
    ("service_check_interval", Form::Text),
    ("service_check_tls_server_name", Form::Text),
    ("service_tags", Form::List),
];

/// Sections Patroni reads from the environment that fullauto refuses: their
/// variables land in the overlay, where the key table refuses the section.
const UNSUPPORTED: &[&str] = &["KUBERNETES", "EXHIBITOR", "RAFT", "CITUS"];

/// Parses a list the way Patroni does: a YAML list (`[a, b]` or `- a`) or a
/// comma-separated string.
pub fn parse_list(text: &str) -> Value {
    let t = text.trim();
    // Patroni reads a value that is not already a YAML list as `[value]`, so quoted
    // items (`'zk1:2181','zk2:2181'`, its documented form) lose their quotes.
    let doc = if t.starts_with('-') || t.contains('[') {
        t.to_string()
    } else {
        format!("[{t}]")
    };
    if let Ok(v) = serde_yaml::from_str::<serde_yaml::Value>(&doc) {
        if let Some(Value::Array(items)) = super::yaml_to_json(&v) {
            return Value::Array(
                items
                    .into_iter()
                    .filter(|i| !i.is_null())
                    .map(|i| match i {
                        Value::Number(_) | Value::Bool(_) => Value::String(i.to_string()),
                        other => other,
                    })
                    .collect(),
            );
        }
    }
    Value::Array(
        t.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| Value::String(s.to_string()))
            .collect(),
    )
}

/// Parses a mapping the way Patroni does: YAML flow mapping, braces optional.
pub fn parse_dict(text: &str) -> Option<Value> {
    let t = text.trim();
    let doc = if t.starts_with('{') {
        t.to_string()
    } else {
        format!("{{{t}}}")
    };
    let v: serde_yaml::Value = serde_yaml::from_str(&doc).ok()?;
    super::yaml_to_json(&v).filter(Value::is_object)
}

fn convert(text: &str, form: Form) -> Value {
    match form {
        Form::Text => Value::String(text.to_string()),
        // Unparsable numbers and booleans stay text so validation names the variable.
        Form::Int => text
            .trim()
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::String(text.to_string())),
        Form::Bool => super::loose::as_bool(&Value::String(text.to_string()))
            .map(Value::Bool)
            .unwrap_or_else(|| Value::String(text.to_string())),
        Form::List => parse_list(text),
        Form::Dict => parse_dict(text).unwrap_or_else(|| Value::String(text.to_string())),
        Form::Format if text.contains("%(") => Value::String(text.to_string()),
        Form::Format => parse_list(text),
    }
}

impl EnvOverlay {
    fn set(&mut self, path: &[&str], value: Value, var: &str) {
        let mut node = &mut self.overlay;
        for key in &path[..path.len() - 1] {
            let entry = node
                .entry(key.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            node = match entry {
                Value::Object(m) => m,
                _ => return,
            };
        }
        node.insert(path[path.len() - 1].to_string(), value);
        self.origins.insert(path.join("."), var.to_string());
    }

    fn section(&mut self, env: &EnvMap, section: &str, keys: &[(&str, Form)]) {
        self.section_as(env, &section.to_ascii_uppercase(), section, keys)
    }

    fn section_as(&mut self, env: &EnvMap, var_part: &str, section: &str, keys: &[(&str, Form)]) {
        for (key, form) in keys {
            let var = format!("{PREFIX}{var_part}_{}", key.to_ascii_uppercase());
            if let Some(text) = env.get(&var).filter(|t| !t.is_empty()) {
                self.set(&[section, key], convert(text, *form), &var);
            }
        }
    }

    fn auth(&mut self, env: &EnvMap, var_part: &str, path: &[&str], keys: &[&str]) {
        for key in keys {
            let var = format!("{PREFIX}{var_part}_{}", key.to_ascii_uppercase());
            if let Some(text) = env.get(&var).filter(|t| !t.is_empty()) {
                let mut p = path.to_vec();
                p.push(key);
                self.set(&p, Value::String(text.clone()), &var);
            }
        }
    }
}

/// Builds the overlay from `env`.
pub fn overlay_from_env(env: &EnvMap) -> EnvOverlay {
    let mut o = EnvOverlay::default();
    if let Some(whole) = env
        .get("PATRONI_CONFIGURATION")
        .filter(|t| !t.trim().is_empty())
    {
        o.whole_config = Some(whole.clone());
        return o;
    }
    for key in ["name", "namespace", "scope"] {
        let var = format!("{PREFIX}{}", key.to_ascii_uppercase());
        if let Some(text) = env.get(&var).filter(|t| !t.is_empty()) {
            o.set(&[key], Value::String(text.clone()), &var);
        }
    }
    // 3.x spelling of the log level.
    if let Some(text) = env.get("PATRONI_LOGLEVEL").filter(|t| !t.is_empty()) {
        o.set(
            &["log", "level"],
            Value::String(text.clone()),
            "PATRONI_LOGLEVEL",
        );
    }
    o.section(env, "log", LOG_KEYS);
    o.section(env, "restapi", RESTAPI_KEYS);
    o.auth(
        env,
        "RESTAPI",
        &["restapi", "authentication"],
        &["username", "password"],
    );
    o.section(env, "ctl", CTL_KEYS);
    o.auth(
        env,
        "CTL",
        &["ctl", "authentication"],
        &["username", "password"],
    );
    o.section(env, "postgresql", POSTGRESQL_KEYS);
    for bin in pg_driver::binaries::RENAMEABLE {
        let var = format!("{PREFIX}POSTGRESQL_BIN_{}", bin.to_ascii_uppercase());
        if let Some(text) = env.get(&var).filter(|t| !t.is_empty()) {
            o.set(
                &["postgresql", "bin_name", bin],
                Value::String(text.clone()),
                &var,
            );
        }
    }
    for user in ["superuser", "replication", "rewind"] {
        o.auth(
            env,
            &user.to_ascii_uppercase(),
            &["postgresql", "authentication", user],
            USER_KEYS,
        );
    }
    o.section(env, "etcd", ETCD_KEYS);
    o.section(env, "etcd3", ETCD_KEYS);
    o.section(env, "zookeeper", ZOOKEEPER_KEYS);
    o.section(env, "consul", CONSUL_KEYS);
    // Documented by Patroni, refused by fullauto's key table: set them so the
    // refusal names the key and the variable.
    for (var, path) in [
        ("PATRONI_THREAD_POOL_SIZE", &["thread_pool_size"][..]),
        ("PATRONI_THREAD_STACK_SIZE", &["thread_stack_size"]),
        (
            "PATRONI_RESTAPI_THREAD_POOL_SIZE",
            &["restapi", "thread_pool_size"],
        ),
        // Patroni's documentation names it so; it belongs to the kubernetes section.
        (
            "PATRONI_RETRIABLE_HTTP_CODES",
            &["kubernetes", "retriable_http_codes"],
        ),
        // Patroni's documentation spells pg_isready's variable so.
        (
            "PATRONI_POSTGRESQL_BIN_IS_READY",
            &["postgresql", "bin_name", "pg_isready"],
        ),
    ] {
        if let Some(text) = env.get(var).filter(|t| !t.is_empty()) {
            o.set(path, Value::String(text.clone()), var);
        }
    }
    for (var, text) in env.iter().filter(|(_, t)| !t.is_empty()) {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if let Some(section) = UNSUPPORTED
            .iter()
            .find(|s| rest.starts_with(&format!("{s}_")))
        {
            let key = rest[section.len() + 1..].to_ascii_lowercase();
            o.set(
                &[&section.to_ascii_lowercase(), &key],
                Value::String(text.clone()),
                var,
            );
        }
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key of a DCS section's model can be set by `PATRONI_<SECTION>_<KEY>`,
    /// and every such variable names a key the section knows.
    #[test]
    fn dcs_variables_cover_the_section_models() {
        for (section, keys) in [
            ("etcd3", ETCD_KEYS),
            ("zookeeper", ZOOKEEPER_KEYS),
            ("consul", CONSUL_KEYS),
        ] {
            let mut from_env: Vec<&str> = keys.iter().map(|(k, _)| *k).collect();
            let mut model = super::super::dcs::section_keys(section);
            if section == "etcd3" {
                // Not an environment setting in Patroni either.
                model.retain(|k| *k != "retry_timeout");
            }
            from_env.sort_unstable();
            model.sort_unstable();
            assert_eq!(from_env, model, "{section}");
        }
    }
}
