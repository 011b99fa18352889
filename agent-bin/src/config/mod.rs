//! The agent's local config file in Patroni's `patroni.yml` structure, with the
//! `PATRONI_*` environment overrides, and a validator that reports every problem
//! with its path (`--validate-config`).
//!
//! Loading goes: YAML text ⇒ JSON-like tree ⇒ environment overlay ⇒ 3.x synonyms ⇒
//! schema walk (types, required and unknown keys) ⇒ cross-field rules ⇒ typed
//! [`Config`]. Only a document without errors becomes a `Config`.

mod dcs;
mod env;
pub mod keys;
mod log;
mod loose;
mod postgresql;
mod report;
mod schema;
mod types;
mod validate;

pub use validate::{validate_config_output, validate_file, validate_file_with_env, validate_str};

pub use dcs::{
    from_document as dcs_from_document, ConsulConfig, DcsConfig, Etcd3Config, ZookeeperConfig,
    ETCD_V2_REFUSAL,
};
pub use env::{overlay_from_env, parse_dict, parse_list, process_env, EnvMap, EnvOverlay};
pub use log::{
    check_dateformat, logger_targets, parse_mode, parse_template, Conversion, FieldSpec, JsonField,
    LogAttr, LogConfig, LogLayout, LogLevel, Piece, DEFAULT_FORMAT,
};
pub use postgresql::{DynamicPostgresql, MethodSections, PostgresqlConfig};
pub use report::{ConfigErrors, Problem, Report, Severity, Warning};
pub use types::*;

use ha_core::{DynamicConfig, Tags};
use serde_json::{Map, Value};
use std::path::Path;

/// The local configuration of one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Cluster name.
    pub scope: String,
    /// DCS path prefix (`/service`).
    pub namespace: String,
    /// This member's name.
    pub name: String,
    /// REST API.
    pub restapi: RestApiConfig,
    /// Client side of the REST API (fullautoctl, peer probes).
    pub ctl: CtlConfig,
    /// The DCS.
    pub dcs: DcsConfig,
    /// Cluster bootstrap.
    pub bootstrap: BootstrapConfig,
    /// Local Postgres.
    pub postgresql: PostgresqlConfig,
    /// Watchdog.
    pub watchdog: WatchdogConfig,
    /// This member's tags.
    pub tags: Tags,
    /// Logging.
    pub log: LogConfig,
    /// The merged document (file + environment) the config was built from.
    pub raw: Value,
}

impl Config {
    /// Loads `path` (a file, or a directory of YAML files merged in name order) with
    /// the process environment applied.
    pub fn load(path: impl AsRef<Path>) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        Config::load_with_env(path, &process_env())
    }

    /// Loads `path` with the given environment applied.
    pub fn load_with_env(
        path: impl AsRef<Path>,
        env: &EnvMap,
    ) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        let doc = read_document(path.as_ref()).map_err(|p| ConfigErrors(Report { problems: p }))?;
        Config::from_document(doc, env)
    }

    /// Loads YAML text with the given environment applied.
    pub fn from_yaml_str(text: &str, env: &EnvMap) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        let doc = parse_yaml(text, "").map_err(|p| ConfigErrors(Report { problems: vec![p] }))?;
        Config::from_document(doc, env)
    }

    fn from_document(doc: Value, env: &EnvMap) -> Result<(Config, Vec<Warning>), ConfigErrors> {
        let (merged, report) = check_document(doc, env);
        if report.has_errors() {
            return Err(ConfigErrors(report));
        }
        match build(&merged) {
            Ok(c) => Ok((c, report.problems)),
            Err(e) => {
                let mut report = report;
                report.problems.insert(0, e);
                Err(ConfigErrors(report))
            }
        }
    }

    /// `postgres://connect_address/postgres`, published in the member key.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.postgresql.connect_address)
    }

    /// The API URL published in the member key.
    pub fn api_url(&self) -> String {
        self.restapi.api_url()
    }

    /// Credentials for calling other members' unsafe endpoints: `ctl.authentication`,
    /// else `restapi.authentication`.
    pub fn client_auth(&self) -> Option<&BasicAuth> {
        self.ctl
            .authentication
            .as_ref()
            .or(self.restapi.authentication.as_ref())
    }
}

/// Converts YAML to the JSON data model (non-string keys are printed).
pub fn yaml_to_json(v: &serde_yaml::Value) -> Option<Value> {
    use serde_yaml::Value as Y;
    Some(match v {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(u) = n.as_u64() {
                Value::from(u)
            } else {
                serde_json::Number::from_f64(n.as_f64()?)
                    .map(Value::Number)
                    .unwrap_or(Value::Null)
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(items.iter().filter_map(yaml_to_json).collect()),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, x) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    Y::Null => "null".to_string(),
                    _ => continue,
                };
                out.insert(key, yaml_to_json(x)?);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => yaml_to_json(&t.value)?,
    })
}

fn parse_yaml(text: &str, origin: &str) -> Result<Value, Problem> {
    let where_ = |msg: String| {
        if origin.is_empty() {
            msg
        } else {
            format!("{origin}: {msg}")
        }
    };
    if text.trim().is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let y: serde_yaml::Value = serde_yaml::from_str(text)
        .map_err(|e| Problem::error("", where_(format!("not valid YAML: {e}"))))?;
    match yaml_to_json(&y) {
        Some(v @ Value::Object(_)) => Ok(v),
        Some(Value::Null) => Ok(Value::Object(Map::new())),
        _ => Err(Problem::error(
            "",
            where_("the config must be a YAML mapping".to_string()),
        )),
    }
}

fn read_document(path: &Path) -> Result<Value, Vec<Problem>> {
    let unreadable = |e: std::io::Error| {
        vec![Problem::error(
            "",
            format!("cannot read {}: {e}", path.display()),
        )]
    };
    if path.is_dir() {
        let mut files: Vec<_> = std::fs::read_dir(path)
            .map_err(unreadable)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .collect();
        files.sort();
        let mut doc = Value::Object(Map::new());
        let mut problems = Vec::new();
        for f in files {
            match std::fs::read_to_string(&f) {
                Err(e) => problems.push(Problem::error(
                    "",
                    format!("cannot read {}: {e}", f.display()),
                )),
                Ok(text) => match parse_yaml(&text, &f.display().to_string()) {
                    Ok(v) => deep_merge(&mut doc, v),
                    Err(p) => problems.push(p),
                },
            }
        }
        return if problems.is_empty() {
            Ok(doc)
        } else {
            Err(problems)
        };
    }
    let text = std::fs::read_to_string(path).map_err(unreadable)?;
    parse_yaml(&text, "").map_err(|p| vec![p])
}

/// Merges `over` into `base`: mappings recursively, everything else replaced.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => deep_merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (slot, v) => *slot = v,
    }
}

/// 3.x names read as their 4.x names.
fn apply_synonyms(doc: &mut Value) {
    let rename = |m: &mut Map<String, Value>, old: &str, new: &str| {
        if let Some(v) = m.remove(old) {
            m.entry(new.to_string()).or_insert(v);
        }
    };
    if let Some(dcs) = doc
        .get_mut("bootstrap")
        .and_then(|b| b.get_mut("dcs"))
        .and_then(Value::as_object_mut)
    {
        rename(dcs, "master_start_timeout", "primary_start_timeout");
        rename(dcs, "master_stop_timeout", "primary_stop_timeout");
        rename(dcs, "permanent_replication_slots", "slots");
        rename(dcs, "permanent_slots", "slots");
    }
    if let Some(b) = doc.get_mut("bootstrap").and_then(Value::as_object_mut) {
        // `post_init` is the older name of `post_bootstrap`.
        rename(b, "post_init", "post_bootstrap");
    }
}

use dcs::SECTIONS as DCS_SECTIONS;
const UNSUPPORTED_DCS: &[&str] = &["kubernetes", "raft", "exhibitor"];

/// Everything short of building the typed config: returns the merged document and
/// the report (errors then warnings).
fn check_document(file_doc: Value, env: &EnvMap) -> (Value, Report) {
    let overlay = overlay_from_env(env);
    let mut problems = overlay.warnings.clone();
    let mut doc = match &overlay.whole_config {
        Some(text) => match parse_yaml(text, "PATRONI_CONFIGURATION") {
            Ok(v) => v,
            Err(p) => {
                problems.push(p);
                Value::Object(Map::new())
            }
        },
        None => {
            let mut d = file_doc;
            deep_merge(&mut d, Value::Object(overlay.overlay.clone()));
            d
        }
    };
    apply_synonyms(&mut doc);
    schema::check(&schema::config_kind(), &doc, "", &mut problems);
    cross_checks(&doc, &mut problems);
    // Keys the table refuses whatever their value (once per path).
    for p in keys::refusals(&doc, "") {
        if !problems.iter().any(|o| o.is_error() && o.path == p.path) {
            problems.push(p);
        }
    }
    for p in &mut problems {
        if let Some((_, var)) = overlay.origins.iter().rev().find(|(path, _)| {
            p.path == **path
                || p.path.starts_with(&format!("{path}."))
                || p.path.starts_with(&format!("{path}["))
                // A refused section whose key a variable set.
                || (!p.path.is_empty() && path.starts_with(&format!("{}.", p.path)))
        }) {
            p.message.push_str(&format!(" (set by {var})"));
        }
    }
    // Unknown keys first (a misspelt key often explains an error below it), then
    // errors, then the other warnings, each group in discovery (file) order.
    problems.sort_by_key(|p| (!p.is_unknown_key(), p.severity));
    (doc, Report { problems })
}

fn cross_checks(doc: &Value, out: &mut Vec<Problem>) {
    let Some(top) = doc.as_object() else {
        return;
    };
    // Exactly one DCS.
    let present: Vec<&str> = DCS_SECTIONS
        .iter()
        .copied()
        .filter(|s| top.get(*s).is_some_and(|v| !v.is_null()))
        .collect();
    for s in UNSUPPORTED_DCS {
        if top.contains_key(*s) {
            out.push(Problem::error(
                *s,
                "this DCS is not supported by fullauto; use etcd3, zookeeper or consul",
            ));
        }
    }
    match present.len() {
        0 => out.push(Problem::error(
            "",
            "no DCS configured: add one of the sections etcd3, zookeeper or consul \
             (or set PATRONI_ETCD3_HOSTS, PATRONI_ZOOKEEPER_HOSTS or PATRONI_CONSUL_HOST)",
        )),
        1 => {}
        _ => out.push(Problem::error(
            "",
            format!(
                "more than one DCS configured ({}): keep exactly one",
                present.join(", ")
            ),
        )),
    }
    dcs::check(top, out);
    if let Some(name) = top.get("name").and_then(loose::as_string) {
        if name.contains('/') || name.trim().is_empty() {
            out.push(Problem::error(
                "name",
                format!("{name:?} cannot be a member name (empty or contains '/')"),
            ));
        }
    }
    check_bootstrap_dcs(top.get("bootstrap").and_then(|b| b.get("dcs")), out);
    if let Err(problems) = LogConfig::from_value(get(doc, "log")) {
        // A key with a type error was already reported with its path.
        for p in problems {
            if !out.iter().any(|o| o.is_error() && o.path == p.path) {
                out.push(p);
            }
        }
    }
    check_watchdog(top, out);
    // Tag conflicts (spec §7: nofailover wins, nosync wins).
    if let Some(t) = top.get("tags").and_then(Value::as_object) {
        // Patroni's rule and words (operators and its acceptance suite grep for them):
        // a written boolean tag wins over its priority tag when they disagree.
        for (flag, priority_key) in [
            ("nofailover", "failover_priority"),
            ("nosync", "sync_priority"),
        ] {
            let Some(set) = t
                .get(flag)
                .filter(|v| !v.is_null())
                .map(|v| loose::as_bool(v).unwrap_or(false))
            else {
                continue;
            };
            let Some(priority) = t.get(priority_key).and_then(loose::as_i64) else {
                continue;
            };
            if (set && priority > 0) || (!set && priority <= 0) {
                let word = if set { "True" } else { "False" };
                out.push(Problem::warning(
                    format!("tags.{priority_key}"),
                    format!(
                        "Conflicting configuration between {flag}: {word} and {priority_key}: {priority}. Defaulting to {flag}: {word}"
                    ),
                ));
            }
        }
        if let Some(r) = t.get("replicatefrom").and_then(loose::as_string) {
            if top.get("name").and_then(loose::as_string).as_deref() == Some(r.as_str()) {
                out.push(Problem::warning(
                    "tags.replicatefrom",
                    "names this member itself (ignored)",
                ));
            }
        }
    }
    check_encrypted_keys(top, out);
    if let Some(r) = top.get("restapi").and_then(Value::as_object) {
        let has = |k: &str| {
            r.get(k)
                .and_then(loose::as_string)
                .is_some_and(|s| !s.is_empty())
        };
        if let Some(spec) = r
            .get("ciphers")
            .and_then(loose::as_string)
            .filter(|s| !s.trim().is_empty())
        {
            if let Err(why) = crate::api::ciphers::tls12_suites(&spec) {
                out.push(Problem::error("restapi.ciphers", why));
            }
        }
        if has("keyfile") && !has("certfile") {
            out.push(Problem::error(
                "restapi.keyfile",
                "set without restapi.certfile",
            ));
        }
        let verify = r
            .get("verify_client")
            .and_then(loose::as_string)
            .unwrap_or_default()
            .to_ascii_lowercase();
        if (verify == "optional" || verify == "required") && !has("cafile") {
            out.push(Problem::error(
                "restapi.verify_client",
                format!("{verify} needs restapi.cafile to check client certificates"),
            ));
        }
        if (verify == "optional" || verify == "required") && !has("certfile") {
            out.push(Problem::error(
                "restapi.verify_client",
                format!("{verify} needs HTTPS (restapi.certfile)"),
            ));
        }
    }
    for (path, v) in [
        (
            "restapi.connect_address",
            top.get("restapi").and_then(|r| r.get("connect_address")),
        ),
        (
            "postgresql.connect_address",
            top.get("postgresql").and_then(|r| r.get("connect_address")),
        ),
    ] {
        if let Some(host) = v
            .and_then(Value::as_str)
            .and_then(|s| s.rsplit_once(':'))
            .map(|(h, _)| h)
        {
            let h = host.trim_matches(['[', ']']);
            if matches!(h, "0.0.0.0" | "::" | "*") {
                out.push(Problem::error(
                    path,
                    format!("{h:?} is not an address other members can reach"),
                ));
            }
        }
    }
    if let Some(pg) = top.get("postgresql").and_then(Value::as_object) {
        check_config_dir(pg, out);
        let methods = pg
            .get("create_replica_methods")
            .and_then(loose::as_string_list)
            .unwrap_or_default();
        for (i, m) in methods.iter().enumerate() {
            if m == "basebackup" {
                continue;
            }
            let has_command = pg
                .get(m)
                .and_then(|s| s.get("command"))
                .and_then(loose::as_string)
                .is_some();
            if !has_command {
                out.push(Problem::error(
                    format!("postgresql.create_replica_methods[{i}]"),
                    format!("method {m:?} needs a postgresql.{m}.command"),
                ));
            }
        }
    }
    if let Some(b) = top.get("bootstrap").and_then(Value::as_object) {
        if let Some(m) = b.get("method").and_then(loose::as_string) {
            if m != "initdb"
                && b.get(&m)
                    .and_then(|s| s.get("command"))
                    .and_then(loose::as_string)
                    .is_none()
            {
                out.push(Problem::error(
                    "bootstrap.method",
                    format!("method {m:?} needs a bootstrap.{m}.command"),
                ));
            }
        }
    }
}

/// `config_dir` must be an absolute path (the server is started with its
/// postgresql.conf as `config_file`).
fn check_config_dir(pg: &Map<String, Value>, out: &mut Vec<Problem>) {
    let Some(dir) = pg
        .get("config_dir")
        .and_then(loose::as_string)
        .filter(|s| !s.trim().is_empty())
    else {
        return;
    };
    if !dir.starts_with('/') {
        out.push(Problem::error(
            "postgresql.config_dir",
            format!("{dir:?} must be an absolute path"),
        ));
    }
}

/// Encrypted private keys (`keyfile_password`) cannot be read by the TLS library:
/// refused rather than ignored, so the operator decrypts the key instead of getting
/// a server or client without it.
fn check_encrypted_keys(top: &Map<String, Value>, out: &mut Vec<Problem>) {
    for section in ["restapi", "ctl"] {
        let set = top
            .get(section)
            .and_then(|s| s.get("keyfile_password"))
            .and_then(loose::as_string)
            .is_some_and(|p| !p.is_empty());
        if set {
            out.push(Problem::error(
                format!("{section}.keyfile_password"),
                "encrypted private keys are not supported; decrypt the key \
                 (openssl pkey -in KEY -out PLAIN_KEY), point keyfile at the result \
                 and remove keyfile_password",
            ));
        }
    }
}

fn check_bootstrap_dcs(dcs: Option<&Value>, out: &mut Vec<Problem>) {
    let Some(dcs) = dcs.filter(|d| d.is_object()) else {
        return;
    };
    // Type errors were already reported with their own paths.
    if out
        .iter()
        .any(|p| p.is_error() && p.path.starts_with("bootstrap.dcs"))
    {
        return;
    }
    match serde_json::from_value::<DynamicConfig>(dcs.clone()) {
        Err(e) => out.push(Problem::error("bootstrap.dcs", e.to_string())),
        Ok(c) => {
            if let Some(why) = c.timing_adjustment() {
                let unset: Vec<String> = [
                    ("ttl", c.ttl),
                    ("loop_wait", c.loop_wait),
                    ("retry_timeout", c.retry_timeout),
                ]
                .iter()
                .filter(|(k, _)| matches!(dcs.get(*k), None | Some(Value::Null)))
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
                let why = if unset.is_empty() {
                    why
                } else {
                    format!(
                        "{why} (not set, so the default was used: {})",
                        unset.join(", ")
                    )
                };
                out.push(Problem::warning("bootstrap.dcs.ttl", why));
            }
            for msg in c.validate() {
                match msg.split_once(": ") {
                    Some((field, why)) if !field.contains(' ') => {
                        out.push(Problem::error(format!("bootstrap.dcs.{field}"), why))
                    }
                    _ => out.push(Problem::error("bootstrap.dcs", msg)),
                }
            }
        }
    }
}

/// `watchdog.safety_margin` is −1 (half the ttl) or a margin ≥ 0 that leaves a
/// timeout of at least `loop_wait` with the bootstrap ttl. A watchdog that fires
/// between two kicks is unusable: an error in `required` mode, a warning otherwise.
fn check_watchdog(top: &Map<String, Value>, out: &mut Vec<Problem>) {
    let Some(w) = top.get("watchdog").and_then(Value::as_object) else {
        return;
    };
    if out
        .iter()
        .any(|p| p.is_error() && p.path.starts_with("watchdog"))
    {
        return;
    }
    let mode = match w.get("mode") {
        Some(Value::Bool(false)) => "off".to_string(),
        Some(v) => loose::as_string(v).unwrap_or_default().to_ascii_lowercase(),
        None => "automatic".to_string(),
    };
    if mode == "off" || mode == "false" {
        return;
    }
    let Some(margin) = w.get("safety_margin").and_then(loose::as_f64) else {
        return;
    };
    if margin < 0.0 && margin != -1.0 {
        out.push(Problem::error(
            "watchdog.safety_margin",
            format!("must be -1 (half the ttl) or at least 0, got {margin}"),
        ));
        return;
    }
    let dc = top
        .get("bootstrap")
        .and_then(|b| b.get("dcs"))
        .and_then(|d| serde_json::from_value::<DynamicConfig>(d.clone()).ok())
        .unwrap_or_default();
    if let Err(why) = crate::watchdog::watchdog_timeout(dc.ttl(), dc.loop_wait(), margin) {
        let msg = format!("{why} (bootstrap.dcs.ttl {} s)", dc.ttl().as_secs_f64());
        if mode == "required" {
            out.push(Problem::error("watchdog.safety_margin", msg));
        } else {
            out.push(Problem::warning(
                "watchdog.safety_margin",
                format!("{msg}: the watchdog will not be used"),
            ));
        }
    }
}

fn get<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key).unwrap_or(&Value::Null)
}

fn typed<T: serde::de::DeserializeOwned + Default>(v: &Value, path: &str) -> Result<T, Problem> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_json::from_value(v.clone()).map_err(|e| Problem::error(path, e.to_string()))
}

fn str_of(v: &Value) -> Option<String> {
    loose::as_string(v).filter(|s| !s.is_empty())
}

fn method_sections(
    section: &Value,
    known: &[&str],
) -> std::collections::BTreeMap<String, MethodSection> {
    section
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(k, v)| !known.contains(&k.as_str()) && v.is_object())
                .map(|(k, v)| (k.clone(), MethodSection::from_value(v)))
                .collect()
        })
        .unwrap_or_default()
}

/// `bootstrap.users`: `{name: {password, options: [...]}}`, as Patroni 3 reads it.
fn bootstrap_users(v: &Value) -> Result<Vec<pg_driver::config::BootstrapUser>, Problem> {
    let Some(users) = v.as_object() else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for (name, spec) in users {
        let path = format!("bootstrap.users.{name}");
        let user = pg_driver::config::BootstrapUser {
            name: name.clone(),
            password: str_of(get(spec, "password")),
            options: match get(spec, "options") {
                Value::Null => Vec::new(),
                other => loose::as_string_list(other).ok_or_else(|| {
                    Problem::error(
                        format!("{path}.options"),
                        "expected a list of role attributes",
                    )
                })?,
            },
        };
        if user.attributes().is_none() {
            return Err(Problem::error(
                format!("{path}.options"),
                "role attributes are words such as createdb or createrole",
            ));
        }
        out.push(user);
    }
    Ok(out)
}

const BOOTSTRAP_KEYS: &[&str] = &[
    "dcs",
    "method",
    "initdb",
    "pg_hba",
    "post_bootstrap",
    "post_init",
    "users",
];
/// Builds the typed config from a checked document.
fn build(doc: &Value) -> Result<Config, Problem> {
    let dcs = dcs::from_document(doc)?;

    let b = get(doc, "bootstrap");
    let bootstrap = BootstrapConfig {
        dcs: typed(get(b, "dcs"), "bootstrap.dcs")?,
        dcs_postgresql: typed(get(get(b, "dcs"), "postgresql"), "bootstrap.dcs.postgresql")?,
        method: str_of(get(b, "method")),
        initdb: postgresql::tool_options(get(b, "initdb"))
            .map_err(|e| Problem::error("bootstrap.initdb", e.to_string()))?,
        pg_hba: loose::as_string_list(get(b, "pg_hba")).unwrap_or_default(),
        post_bootstrap: str_of(get(b, "post_bootstrap")),
        users: bootstrap_users(get(b, "users"))?,
        methods: method_sections(b, BOOTSTRAP_KEYS),
    };

    let postgresql = typed(get(doc, "postgresql"), "postgresql")?;

    let w = get(doc, "watchdog");
    let mode = match get(w, "mode") {
        Value::Bool(false) => WatchdogMode::Off,
        Value::Bool(true) => WatchdogMode::Automatic,
        other => match loose::as_string(other)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "off" | "false" => WatchdogMode::Off,
            "required" => WatchdogMode::Required,
            _ => WatchdogMode::Automatic,
        },
    };
    let driver = match str_of(get(w, "driver")).as_deref() {
        Some("testing") => WatchdogDriver::Testing,
        _ => WatchdogDriver::Default,
    };
    let watchdog = WatchdogConfig {
        mode,
        driver,
        device: str_of(get(w, "device")).unwrap_or_else(|| "/dev/watchdog".into()),
        safety_margin: loose::as_f64(get(w, "safety_margin")).unwrap_or(5.0),
    };

    let log = LogConfig::from_value(get(doc, "log")).map_err(|mut p| p.swap_remove(0))?;

    Ok(Config {
        scope: str_of(get(doc, "scope")).unwrap_or_default(),
        namespace: str_of(get(doc, "namespace")).unwrap_or_else(|| "/service".into()),
        name: str_of(get(doc, "name")).unwrap_or_default(),
        restapi: typed(get(doc, "restapi"), "restapi")?,
        ctl: typed(get(doc, "ctl"), "ctl")?,
        dcs,
        bootstrap,
        postgresql,
        watchdog,
        tags: typed(get(doc, "tags"), "tags")?,
        log,
        raw: doc.clone(),
    })
}
