//! Typed sections of the local config file. They are filled from a document that
//! already passed the schema check, so their readers only need to be lenient.

use super::loose;
use super::postgresql::DynamicPostgresql;
use ha_core::{DynamicConfig, Tags};
use pg_driver::config::ToolOptions;
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// HTTP Basic credentials (`restapi.authentication`, `ctl.authentication`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BasicAuth {
    /// User name.
    #[serde(default, deserialize_with = "loose::string")]
    pub username: String,
    /// Password.
    #[serde(default, deserialize_with = "loose::string")]
    pub password: String,
}

/// `restapi.verify_client`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VerifyClient {
    /// No client certificates asked for.
    #[default]
    None,
    /// Asked for; required only for unsafe requests.
    Optional,
    /// Required at the TLS handshake.
    Required,
}

impl<'de> Deserialize<'de> for VerifyClient {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match loose::as_string(&v)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "none" => Ok(VerifyClient::None),
            "optional" => Ok(VerifyClient::Optional),
            "required" => Ok(VerifyClient::Required),
            other => Err(serde::de::Error::custom(format!(
                "verify_client: expected none, optional or required, got {other:?}"
            ))),
        }
    }
}

/// `restapi.server_tokens`: the `Server` header of every answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServerTokens {
    /// `fullauto/VERSION (Patroni/VERSION)`: fullauto's version and the Patroni
    /// version whose behaviour it implements.
    #[default]
    Original,
    /// `fullauto`.
    ProductOnly,
    /// `fullauto/VERSION`.
    Minimal,
}

impl ServerTokens {
    /// The header's value.
    pub fn header(self) -> String {
        let version = env!("CARGO_PKG_VERSION");
        match self {
            ServerTokens::Original => {
                format!("fullauto/{version} (Patroni/{})", ha_core::PATRONI_VERSION)
            }
            ServerTokens::ProductOnly => "fullauto".to_string(),
            ServerTokens::Minimal => format!("fullauto/{version}"),
        }
    }
}

impl<'de> Deserialize<'de> for ServerTokens {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        match loose::as_string(&v)
            .unwrap_or_default()
            .to_ascii_lowercase()
            .as_str()
        {
            "" | "original" => Ok(ServerTokens::Original),
            "productonly" => Ok(ServerTokens::ProductOnly),
            "minimal" => Ok(ServerTokens::Minimal),
            other => Err(serde::de::Error::custom(format!(
                "server_tokens: expected Original, ProductOnly or Minimal, got {other:?}"
            ))),
        }
    }
}

/// `restapi`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct RestApiConfig {
    /// `host:port` to listen on.
    #[serde(default, deserialize_with = "loose::string")]
    pub listen: String,
    /// `host:port` published as `api_url`.
    #[serde(default, deserialize_with = "loose::string")]
    pub connect_address: String,
    /// Basic auth for unsafe requests.
    #[serde(default)]
    pub authentication: Option<BasicAuth>,
    /// Server certificate (PEM); set ⇒ HTTPS.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub certfile: Option<String>,
    /// Server key (PEM); defaults to `certfile`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub keyfile: Option<String>,
    /// Password of an encrypted key.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub keyfile_password: Option<String>,
    /// CA bundle for client certificates.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cafile: Option<String>,
    /// OpenSSL cipher string narrowing the TLS 1.2 suites (`api::ciphers`).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub ciphers: Option<String>,
    /// Client certificate policy.
    #[serde(default)]
    pub verify_client: VerifyClient,
    /// Hosts/IPs/CIDRs allowed to call unsafe endpoints.
    #[serde(default, deserialize_with = "loose::string_list")]
    pub allowlist: Vec<String>,
    /// Also allow the cluster members' API hosts.
    #[serde(default, deserialize_with = "loose::bool")]
    pub allowlist_include_members: bool,
    /// Headers added to every answer.
    #[serde(default, deserialize_with = "loose::string_map")]
    pub http_extra_headers: BTreeMap<String, String>,
    /// Headers added to every HTTPS answer.
    #[serde(default, deserialize_with = "loose::string_map")]
    pub https_extra_headers: BTreeMap<String, String>,
    /// `request_queue_size`: the listen backlog of the API's socket (the system's
    /// default without it).
    #[serde(default, deserialize_with = "loose::opt_i64")]
    pub request_queue_size: Option<i64>,
    /// `server_tokens`: what the `Server` header says.
    #[serde(default)]
    pub server_tokens: ServerTokens,
}

impl RestApiConfig {
    /// Whether the API serves HTTPS.
    pub fn is_tls(&self) -> bool {
        self.certfile.as_deref().is_some_and(|c| !c.is_empty())
    }

    /// `http(s)://connect_address/patroni`, published in the member key.
    pub fn api_url(&self) -> String {
        let scheme = if self.is_tls() { "https" } else { "http" };
        format!("{scheme}://{}/patroni", self.connect_address)
    }
}

/// `ctl`: how fullautoctl and peer probes talk to members' APIs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct CtlConfig {
    /// Basic auth sent with unsafe requests.
    #[serde(default)]
    pub authentication: Option<BasicAuth>,
    /// Skip server certificate checks.
    #[serde(default, deserialize_with = "loose::bool")]
    pub insecure: bool,
    /// CA bundle for server certificates.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cacert: Option<String>,
    /// Client certificate.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub certfile: Option<String>,
    /// Client key.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub keyfile: Option<String>,
    /// Password of an encrypted client key.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub keyfile_password: Option<String>,
}

/// A custom bootstrap or replica-creation method section.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct MethodSection {
    /// The script to run.
    pub command: Option<String>,
    /// Bootstrap: keep an existing recovery configuration.
    pub keep_existing_recovery_conf: bool,
    /// Do not pass the standard arguments.
    pub no_params: bool,
    /// Replica method: works without a running leader.
    pub no_leader: bool,
    /// Replica method: keep the data directory before running.
    pub keep_data: bool,
    /// Bootstrap: recovery settings after the script ran.
    pub recovery_conf: Map<String, Value>,
    /// Every other key, passed as `--key=value`.
    pub extra: Map<String, Value>,
}

impl MethodSection {
    pub(crate) fn from_value(v: &Value) -> MethodSection {
        let mut s = MethodSection::default();
        let Some(m) = v.as_object() else {
            return s;
        };
        for (k, x) in m {
            let b = || loose::as_bool(x).unwrap_or(false);
            match k.as_str() {
                "command" => s.command = loose::as_string(x),
                "keep_existing_recovery_conf" => s.keep_existing_recovery_conf = b(),
                "no_params" => s.no_params = b(),
                "no_leader" => s.no_leader = b(),
                "keep_data" => s.keep_data = b(),
                "recovery_conf" => s.recovery_conf = x.as_object().cloned().unwrap_or_default(),
                _ => {
                    s.extra.insert(k.clone(), x.clone());
                }
            }
        }
        s
    }
}

/// `bootstrap`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootstrapConfig {
    /// Initial `/config` (validated timing).
    pub dcs: DynamicConfig,
    /// `dcs.postgresql`, typed.
    pub dcs_postgresql: DynamicPostgresql,
    /// `initdb` or the name of a custom method section.
    pub method: Option<String>,
    /// initdb options.
    pub initdb: ToolOptions,
    /// pg_hba lines for a new cluster.
    pub pg_hba: Vec<String>,
    /// Script run after the new cluster started (`post_init` is the older name).
    pub post_bootstrap: Option<String>,
    /// Roles to create after the bootstrap (Patroni 3's `bootstrap.users`).
    pub users: Vec<pg_driver::config::BootstrapUser>,
    /// Custom method sections by name.
    pub methods: BTreeMap<String, MethodSection>,
}

/// `postgresql.bin_name`: overrides of tool names.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct BinNames {
    /// `pg_ctl`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub pg_ctl: Option<String>,
    /// `initdb`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub initdb: Option<String>,
    /// `pg_controldata`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub pg_controldata: Option<String>,
    /// `pg_basebackup`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub pg_basebackup: Option<String>,
    /// `postgres`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub postgres: Option<String>,
    /// `pg_isready`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub pg_isready: Option<String>,
    /// `pg_rewind`
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub pg_rewind: Option<String>,
}

/// A callback: one command line, or a list of argv items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Script {
    /// Split on whitespace.
    Line(String),
    /// Ready argv.
    Argv(Vec<String>),
}

impl Script {
    /// The argv to run (action, role and scope are appended by the caller).
    pub fn argv(&self) -> Vec<String> {
        match self {
            Script::Line(l) => l.split_whitespace().map(str::to_string).collect(),
            Script::Argv(a) => a.clone(),
        }
    }
}

fn opt_script<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Script>, D::Error> {
    let v = Value::deserialize(d)?;
    Ok(match &v {
        Value::Array(items) => Some(Script::Argv(
            items.iter().filter_map(loose::as_string).collect(),
        )),
        other => loose::as_string(other).map(Script::Line),
    })
}

/// `postgresql.callbacks`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
pub struct Callbacks {
    /// Postgres started.
    #[serde(default, deserialize_with = "opt_script")]
    pub on_start: Option<Script>,
    /// Postgres stopped.
    #[serde(default, deserialize_with = "opt_script")]
    pub on_stop: Option<Script>,
    /// Postgres restarted.
    #[serde(default, deserialize_with = "opt_script")]
    pub on_restart: Option<Script>,
    /// Configuration reloaded.
    #[serde(default, deserialize_with = "opt_script")]
    pub on_reload: Option<Script>,
    /// Promoted or demoted.
    #[serde(default, deserialize_with = "opt_script")]
    pub on_role_change: Option<Script>,
}

/// `watchdog.mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogMode {
    /// No watchdog.
    Off,
    /// Use it when present.
    #[default]
    Automatic,
    /// Refuse leadership without it.
    Required,
}

/// `watchdog.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchdogDriver {
    /// The Linux watchdog device (`/dev/watchdog`).
    #[default]
    Default,
    /// A software stand-in for tests: a keeper process that SIGKILLs the agent and
    /// Postgres when not kicked in time.
    Testing,
}

/// `watchdog`.
#[derive(Debug, Clone, PartialEq)]
pub struct WatchdogConfig {
    /// Mode.
    pub mode: WatchdogMode,
    /// Driver.
    pub driver: WatchdogDriver,
    /// Device path.
    pub device: String,
    /// Seconds between watchdog expiry and lease expiry (-1: ttl/2).
    pub safety_margin: f64,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            driver: WatchdogDriver::Default,
            device: "/dev/watchdog".into(),
            safety_margin: 5.0,
        }
    }
}

/// Re-export for callers that name tags through the config.
pub type ConfigTags = Tags;
