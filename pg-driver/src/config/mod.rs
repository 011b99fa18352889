//! `PgConfig`: the `postgresql:` section of a Patroni-style configuration, plus the
//! member name and scope the driver needs. In YAML:
//!
//! ```yaml
//! name: node1                     # application_name and slot name base
//! scope: batman                   # cluster_name
//! listen: 0.0.0.0:5432
//! connect_address: 10.0.0.1:5432
//! data_dir: /var/lib/postgresql/15/main
//! config_dir: /etc/postgresql/15/main   # optional: postgresql.conf, pg_hba.conf, pg_ident.conf (default data_dir)
//! bin_dir: /usr/lib/postgresql/15/bin   # optional: pg_config --bindir, else newest /usr/lib/postgresql/*/bin
//! bin_name: {pg_ctl: pg_ctl}      # optional: a tool's file name in bin_dir
//! os_user: postgres               # used when the agent runs as root
//! pg_ctl_timeout: 60              # seconds, fractions allowed
//! pre_promote: /usr/local/bin/fence.sh   # optional: non-zero exit cancels a promotion
//! before_stop: /usr/local/bin/drain.sh   # optional: run before postgres is stopped
//! authentication:
//!   superuser: {username: postgres, password: secret}
//!   replication: {username: replicator, password: secret}
//!   rewind: {username: rewinder, password: secret}   # optional, else the superuser
//! parameters: {max_connections: 200, shared_buffers: 1GB}
//! pg_hba: ["host replication replicator 10.0.0.0/24 scram-sha-256", "host all all 0.0.0.0/0 scram-sha-256"]
//! pg_ident: ["ops alice postgres"]
//! custom_conf: /etc/postgresql/base.conf   # optional: base configuration instead of initdb's postgresql.conf
//! recovery_conf: {recovery_min_apply_delay: 5min}   # replicas only
//! use_pg_rewind: true
//! use_slots: true
//! remove_data_directory_on_rewind_failure: false
//! remove_data_directory_on_diverged_timelines: false
//! initdb: [{encoding: UTF8}, data-checksums]
//! basebackup: [{max-rate: 100M}]
//! rewind: [debug]               # pg_rewind options
//! create_replica_methods: [wal_g, basebackup]
//! wal_g: {command: "wal-g-restore.sh", no_leader: true, keep_data: false}
//! ```
//!
//! The submodules hold the pieces the section is made of: `options` (tool
//! command-line options), `methods` (custom replica and bootstrap methods,
//! bootstrap roles) and `address` (`host:port` and connection endpoints); their
//! items are re-exported here.

mod address;
mod methods;
mod options;

pub use crate::credentials::Credentials;
use crate::error::{DriverError, Result};
pub use address::{parse_host_port, Endpoint, Host, HostPort};
pub use methods::{is_basebackup, BootstrapMethod, BootstrapUser, ReplicaMethod};
pub use options::{json_scalar, ToolOption, ToolOptions};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

/// `authentication:` — the three roles Patroni knows.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Authentication {
    /// The superuser the agent connects as.
    #[serde(default = "default_superuser")]
    pub superuser: Credentials,
    /// The role replicas stream and clone with.
    #[serde(default = "default_replication")]
    pub replication: Credentials,
    /// The role pg_rewind connects as (defaults to the superuser).
    #[serde(default)]
    pub rewind: Option<Credentials>,
}

impl Default for Authentication {
    fn default() -> Self {
        Authentication {
            superuser: default_superuser(),
            replication: default_replication(),
            rewind: None,
        }
    }
}

fn default_superuser() -> Credentials {
    Credentials::user("postgres")
}

fn default_replication() -> Credentials {
    Credentials::user("replicator")
}

/// The driver's configuration: Patroni's `postgresql:` section names where they exist.
#[derive(Debug, Clone, Deserialize)]
pub struct PgConfig {
    /// Member name: `application_name` of this server's replication connection and
    /// the base of its slot name.
    pub name: String,
    /// Cluster name (`cluster_name`).
    #[serde(default)]
    pub scope: Option<String>,
    /// `host[,host...]:port` the server listens on.
    pub listen: String,
    /// `host:port` other members use to reach this server (defaults to `listen`).
    #[serde(default)]
    pub connect_address: Option<String>,
    /// PGDATA.
    pub data_dir: PathBuf,
    /// Where postgresql.conf, pg_hba.conf, pg_ident.conf and the managed settings
    /// live (default: `data_dir`); the server is started with `config_file` there
    /// and `hba_file`/`ident_file` pointing there.
    #[serde(default)]
    pub config_dir: Option<PathBuf>,
    /// Directory of initdb, pg_ctl, … (discovered when unset).
    #[serde(default)]
    pub bin_dir: Option<PathBuf>,
    /// File names of tools in `bin_dir` that differ from the tool's own name
    /// (`pg_ctl`, `initdb`, `pg_controldata`, `pg_basebackup`, `postgres`,
    /// `pg_isready`, `pg_rewind`).
    #[serde(default)]
    pub bin_name: BTreeMap<String, String>,
    /// Roles, passwords and their libpq TLS options.
    #[serde(default)]
    pub authentication: Authentication,
    /// The agent's own superuser connections to the local server go through the
    /// unix socket in the first absolute `unix_socket_directories` entry (TCP when
    /// there is none), without TLS.
    #[serde(default)]
    pub use_unix_socket: bool,
    /// Replication connections to the local server go through that socket too.
    #[serde(default)]
    pub use_unix_socket_repl: bool,
    /// The password file written before pg_basebackup, pg_rewind, custom replica
    /// methods and `post_bootstrap` run (handed to them as `PGPASSFILE`) and named
    /// by `primary_conninfo`'s `passfile`. [`crate::PgDriver`] fills in
    /// `<OS user's home>/pgpass` when unset, as Patroni does.
    #[serde(default)]
    pub pgpass: Option<PathBuf>,
    /// GUCs written to the managed configuration file; they win over
    /// `dynamic_parameters`.
    #[serde(default)]
    pub parameters: BTreeMap<String, serde_json::Value>,
    /// The cluster-wide GUCs of the dynamic configuration (`bootstrap.dcs`, then the
    /// DCS `config` key), replaced at run time by [`crate::PgDriver`]'s
    /// `apply_dynamic_parameters`.
    #[serde(default)]
    pub dynamic_parameters: BTreeMap<String, serde_json::Value>,
    /// `pg_hba.conf` lines of the local configuration; when empty, those of the
    /// dynamic configuration; when both are empty the file is left as it is.
    #[serde(default)]
    pub pg_hba: Vec<String>,
    /// `pg_hba.conf` lines of the dynamic configuration (`bootstrap.dcs`, then the
    /// DCS `config` key), replaced at run time by [`crate::PgDriver`]'s
    /// `apply_dynamic_access`.
    #[serde(default)]
    pub dynamic_pg_hba: Vec<String>,
    /// `pg_ident.conf` lines of the local configuration; when empty, those of the
    /// dynamic configuration; when both are empty the file is left as it is.
    #[serde(default)]
    pub pg_ident: Vec<String>,
    /// `pg_ident.conf` lines of the dynamic configuration.
    #[serde(default)]
    pub dynamic_pg_ident: Vec<String>,
    /// A configuration file used as the base configuration instead of the
    /// postgresql.conf initdb wrote (kept as `postgresql.base.conf` meanwhile); a
    /// relative path is relative to the configuration directory. The managed
    /// settings win.
    #[serde(default)]
    pub custom_conf: Option<String>,
    /// Extra recovery settings a replica gets (`recovery_conf`, e.g.
    /// `recovery_min_apply_delay`, `restore_command`) of the local configuration;
    /// when empty, those of the dynamic configuration. `primary_conninfo`,
    /// `primary_slot_name` and `recovery_target*` are the driver's and ignored here.
    #[serde(default)]
    pub recovery_conf: BTreeMap<String, serde_json::Value>,
    /// `recovery_conf` of the dynamic configuration.
    #[serde(default)]
    pub dynamic_recovery_conf: BTreeMap<String, serde_json::Value>,
    /// Whether pg_rewind may be used.
    #[serde(default)]
    pub use_pg_rewind: bool,
    /// Whether replicas stream through physical slots.
    #[serde(default = "default_true")]
    pub use_slots: bool,
    /// Caller may wipe the data dir when pg_rewind fails.
    #[serde(default)]
    pub remove_data_directory_on_rewind_failure: bool,
    /// Caller may wipe the data dir when timelines diverged and rewind is impossible.
    #[serde(default)]
    pub remove_data_directory_on_diverged_timelines: bool,
    /// Replica-creation methods in order; `basebackup` is the built-in one.
    #[serde(default)]
    pub create_replica_methods: Vec<String>,
    /// pg_basebackup options (Patroni list form).
    #[serde(default)]
    pub basebackup: ToolOptions,
    /// pg_rewind options (Patroni list form), e.g. `[debug]`; added after
    /// `--target-pgdata` and `--source-server`.
    #[serde(default)]
    pub rewind: ToolOptions,
    /// initdb options (Patroni list form); `data-checksums` is added unless present.
    #[serde(default)]
    pub initdb: ToolOptions,
    /// Seconds pg_ctl waits for start / stop when the caller gives no timeout
    /// (fractions allowed).
    #[serde(default = "default_pg_ctl_timeout")]
    pub pg_ctl_timeout: f64,
    /// Command line (split as a shell would, run without a shell) run after the
    /// leader lock is taken and before promoting; a non-zero exit cancels the
    /// promotion.
    #[serde(default)]
    pub pre_promote: Option<String>,
    /// Command line run before a running server is stopped; its exit code is
    /// ignored.
    #[serde(default)]
    pub before_stop: Option<String>,
    /// OS user that runs the server when the agent runs as root.
    #[serde(default)]
    pub os_user: Option<String>,
    /// Server log file for pg_ctl (default `<data_dir>/log/postmaster.log`).
    #[serde(default)]
    pub log_file: Option<PathBuf>,
    /// Custom bootstrap method used instead of initdb (`bootstrap.method`).
    #[serde(default)]
    pub bootstrap_method: Option<BootstrapMethod>,
    /// Script run once after a successful bootstrap with the superuser's connection
    /// URL as its argument (`bootstrap.post_bootstrap`, alias `post_init`); failing
    /// fails the bootstrap.
    #[serde(default)]
    pub post_bootstrap: Option<String>,
    /// Roles created (or updated) once after a successful bootstrap
    /// (`bootstrap.users`, as Patroni 3 does; Patroni 4 dropped it).
    #[serde(default)]
    pub bootstrap_users: Vec<BootstrapUser>,
    /// Sections of custom replica methods, keyed by method name.
    #[serde(flatten)]
    pub method_sections: BTreeMap<String, serde_json::Value>,
}

fn default_true() -> bool {
    true
}

fn default_pg_ctl_timeout() -> f64 {
    60.0
}
impl PgConfig {
    /// A minimal configuration: member name, listen address and data directory.
    pub fn new(name: &str, listen: &str, data_dir: impl Into<PathBuf>) -> Self {
        PgConfig {
            name: name.into(),
            scope: None,
            listen: listen.into(),
            connect_address: None,
            data_dir: data_dir.into(),
            config_dir: None,
            bin_dir: None,
            bin_name: BTreeMap::new(),
            authentication: Authentication::default(),
            use_unix_socket: false,
            use_unix_socket_repl: false,
            pgpass: None,
            parameters: BTreeMap::new(),
            dynamic_parameters: BTreeMap::new(),
            pg_hba: Vec::new(),
            dynamic_pg_hba: Vec::new(),
            pg_ident: Vec::new(),
            dynamic_pg_ident: Vec::new(),
            recovery_conf: BTreeMap::new(),
            dynamic_recovery_conf: BTreeMap::new(),
            custom_conf: None,
            use_pg_rewind: false,
            use_slots: true,
            remove_data_directory_on_rewind_failure: false,
            remove_data_directory_on_diverged_timelines: false,
            create_replica_methods: Vec::new(),
            basebackup: ToolOptions::None,
            rewind: ToolOptions::None,
            initdb: ToolOptions::None,
            pg_ctl_timeout: default_pg_ctl_timeout(),
            pre_promote: None,
            before_stop: None,
            os_user: None,
            log_file: None,
            bootstrap_method: None,
            post_bootstrap: None,
            bootstrap_users: Vec::new(),
            method_sections: BTreeMap::new(),
        }
    }

    /// The parsed `listen` address.
    pub fn listen_address(&self) -> Result<HostPort> {
        parse_host_port(&self.listen)
    }

    /// Where the agent itself connects for SQL: the first listen host, or loopback
    /// for wildcards.
    pub fn local_host_port(&self) -> Result<HostPort> {
        let l = self.listen_address()?;
        let first = l.host.split(',').next().unwrap_or("").trim().to_string();
        let host = match first.as_str() {
            "*" | "0.0.0.0" | "" => "127.0.0.1".to_string(),
            "::" => "::1".to_string(),
            h => h.to_string(),
        };
        Ok(HostPort { host, port: l.port })
    }

    /// The first absolute directory of `unix_socket_directories` (the rendered value:
    /// `/tmp` unless set), Patroni's rule for the local socket.
    pub fn socket_dir(&self) -> Option<PathBuf> {
        let dirs = self
            .parameters
            .get("unix_socket_directories")
            .or_else(|| self.dynamic_parameters.get("unix_socket_directories"))
            .and_then(|v| json_scalar(v).ok())
            .unwrap_or_else(|| crate::render::DEFAULT_SOCKET_DIR.to_string());
        dirs.split(',')
            .map(str::trim)
            .find(|d| d.starts_with('/'))
            .map(PathBuf::from)
    }

    fn local_endpoint(&self, socket: bool) -> Result<Endpoint> {
        let tcp = self.local_host_port()?;
        let host = match self.socket_dir().filter(|_| socket) {
            Some(dir) => Host::Socket(dir),
            None => Host::Tcp(tcp.host),
        };
        Ok(Endpoint {
            host,
            port: tcp.port,
        })
    }

    /// Where the agent's superuser connections to the local server go: the socket
    /// with `use_unix_socket`, else TCP to [`PgConfig::local_host_port`].
    pub fn local_superuser_endpoint(&self) -> Result<Endpoint> {
        self.local_endpoint(self.use_unix_socket)
    }

    /// Where replication connections to the local server go: the socket with
    /// `use_unix_socket_repl`, else TCP. (The driver itself opens none today: the
    /// running server's timeline comes over the superuser connection.)
    pub fn local_replication_endpoint(&self) -> Result<Endpoint> {
        self.local_endpoint(self.use_unix_socket_repl)
    }

    /// pg_ctl's default timeout (at least a second).
    pub fn pg_ctl_timeout(&self) -> Duration {
        Duration::try_from_secs_f64(self.pg_ctl_timeout)
            .unwrap_or(Duration::from_secs(60))
            .max(Duration::from_secs(1))
    }

    /// The recovery settings in force: local ones, else the dynamic ones (as a
    /// whole, as Patroni lets a local key replace the dynamic one).
    pub fn effective_recovery_conf(&self) -> &BTreeMap<String, serde_json::Value> {
        if self.recovery_conf.is_empty() {
            &self.dynamic_recovery_conf
        } else {
            &self.recovery_conf
        }
    }

    /// Whether the parameter `name` is set (locally or dynamically).
    fn has_parameter(&self, name: &str) -> bool {
        self.parameters.contains_key(name) || self.dynamic_parameters.contains_key(name)
    }

    /// The directory of the configuration files: `config_dir`, else `data_dir`.
    pub fn conf_dir(&self) -> PathBuf {
        self.config_dir
            .clone()
            .unwrap_or_else(|| self.data_dir.clone())
    }

    /// The `pg_hba.conf` lines in force: local ones, else the dynamic ones; none when
    /// the `hba_file` parameter points elsewhere (Patroni's rule).
    pub fn effective_pg_hba(&self) -> &[String] {
        if self.has_parameter("hba_file") {
            &[]
        } else if self.pg_hba.is_empty() {
            &self.dynamic_pg_hba
        } else {
            &self.pg_hba
        }
    }

    /// The `pg_ident.conf` lines in force: local ones, else the dynamic ones; none
    /// when the `ident_file` parameter points elsewhere.
    pub fn effective_pg_ident(&self) -> &[String] {
        if self.has_parameter("ident_file") {
            &[]
        } else if self.pg_ident.is_empty() {
            &self.dynamic_pg_ident
        } else {
            &self.pg_ident
        }
    }

    /// `parameters.fsync` is off: durability is given up already, so initdb,
    /// pg_basebackup and pg_rewind skip their final sync of the data directory too.
    pub fn fsync_disabled(&self) -> bool {
        self.parameters.get("fsync").is_some_and(|v| {
            json_scalar(v)
                .map(|s| matches!(s.to_lowercase().as_str(), "off" | "false" | "0" | "no"))
                .unwrap_or(false)
        })
    }

    /// pg_rewind's options after `--target-pgdata` and `--source-server`: the
    /// `rewind` ones, and `--no-sync` when `fsync` is off.
    pub fn rewind_args(&self) -> Result<Vec<String>> {
        let mut args = self.rewind.to_args()?;
        if self.fsync_disabled() && !self.rewind.contains("no-sync") {
            args.push("--no-sync".into());
        }
        Ok(args)
    }

    /// The rewind role (falls back to the superuser).
    pub fn rewind_credentials(&self) -> &Credentials {
        self.authentication
            .rewind
            .as_ref()
            .unwrap_or(&self.authentication.superuser)
    }

    /// The server log file pg_ctl writes.
    pub fn log_file(&self) -> PathBuf {
        self.log_file
            .clone()
            .unwrap_or_else(|| self.data_dir.join("log").join("postmaster.log"))
    }

    /// The custom replica method named `name`.
    pub fn replica_method(&self, name: &str) -> Result<ReplicaMethod> {
        let section = self.method_sections.get(name).ok_or_else(|| {
            DriverError::Config(format!(
                "create_replica_methods names `{name}` but there is no `{name}:` section"
            ))
        })?;
        serde_json::from_value(section.clone())
            .map_err(|e| DriverError::Config(format!("section `{name}`: {e}")))
    }

    /// The configured replica methods in order (`basebackup` when none is given).
    pub fn replica_methods(&self) -> Vec<String> {
        if self.create_replica_methods.is_empty() {
            vec!["basebackup".into()]
        } else {
            self.create_replica_methods.clone()
        }
    }

    /// Whether a configured replica method works without a leader (`no_leader`).
    pub fn can_create_replica_without_leader(&self) -> bool {
        self.replica_methods()
            .iter()
            .filter(|m| !is_basebackup(m))
            .any(|m| self.replica_method(m).is_ok_and(|m| m.no_leader))
    }

    /// Checks what can be checked without touching the system.
    pub fn validate(&self) -> Result<()> {
        if self.name.is_empty() {
            return Err(DriverError::Config("name is empty".into()));
        }
        self.listen_address()?;
        if let Some(c) = &self.connect_address {
            parse_host_port(c)?;
        }
        if !self.data_dir.is_absolute() {
            return Err(DriverError::Config(format!(
                "data_dir {} must be an absolute path",
                self.data_dir.display()
            )));
        }
        if let Some(d) = self.config_dir.as_ref().filter(|d| !d.is_absolute()) {
            return Err(DriverError::Config(format!(
                "config_dir {} must be an absolute path",
                d.display()
            )));
        }
        for m in &self.create_replica_methods {
            if !is_basebackup(m) {
                self.replica_method(m)?;
            }
        }
        if let Some(m) = &self.bootstrap_method {
            if m.command.trim().is_empty() {
                return Err(DriverError::Config(format!(
                    "bootstrap method `{}` has an empty command",
                    m.name
                )));
            }
            for (k, v) in m.extra.iter().chain(m.recovery_conf.iter().flatten()) {
                json_scalar(v)
                    .map_err(|e| DriverError::Config(format!("bootstrap.{}.{k}: {e}", m.name)))?;
            }
        }
        self.authentication.superuser.validate("superuser")?;
        self.authentication.replication.validate("replication")?;
        if let Some(r) = &self.authentication.rewind {
            r.validate("rewind")?;
        }
        if self.pgpass.as_ref().is_some_and(|p| !p.is_absolute()) {
            return Err(DriverError::Config(
                "pgpass must be an absolute path".into(),
            ));
        }
        self.initdb.to_args()?;
        self.basebackup.to_args()?;
        self.rewind.to_args()?;
        for (k, v) in self.dynamic_parameters.iter().chain(&self.parameters) {
            json_scalar(v).map_err(|e| DriverError::Config(format!("parameter {k}: {e}")))?;
        }
        crate::version_params::check(
            self.dynamic_parameters
                .iter()
                .chain(&self.parameters)
                .filter_map(|(k, v)| Some((k, json_scalar(v).ok()?))),
        )?;
        for (k, v) in self.recovery_conf.iter().chain(&self.dynamic_recovery_conf) {
            json_scalar(v).map_err(|e| DriverError::Config(format!("recovery_conf.{k}: {e}")))?;
        }
        if !(self.pg_ctl_timeout.is_finite() && self.pg_ctl_timeout >= 0.0) {
            return Err(DriverError::Config(format!(
                "pg_ctl_timeout {} is not a number of seconds",
                self.pg_ctl_timeout
            )));
        }
        for (what, script) in [
            ("pre_promote", &self.pre_promote),
            ("before_stop", &self.before_stop),
        ] {
            if let Some(s) = script {
                if shlex::split(s).is_none_or(|a| a.is_empty()) {
                    return Err(DriverError::Config(format!(
                        "{what} `{s}` is not a command line (empty or unbalanced quotes)"
                    )));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_reads_patroni_names_and_method_sections() {
        let cfg: PgConfig = serde_json::from_value(serde_json::json!({
            "name": "node-1", "listen": "0.0.0.0:5433", "data_dir": "/var/lib/pg/data",
            "authentication": {"superuser": {"username": "su", "password": "x"},
                               "replication": {"username": "rep", "password": "y"}},
            "parameters": {"max_connections": 50, "fsync": false},
            "create_replica_methods": ["wal_g", "basebackup"],
            "wal_g": {"command": "wal-g backup-fetch", "no_leader": true, "threads": 4},
            "initdb": [{"encoding": "UTF8"}, "data-checksums"],
        }))
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.local_host_port().unwrap().host, "127.0.0.1");
        assert_eq!(cfg.local_host_port().unwrap().port, 5433);
        assert!(cfg.fsync_disabled());
        let m = cfg.replica_method("wal_g").unwrap();
        assert!(m.no_leader);
        assert_eq!(m.extra.get("threads"), Some(&serde_json::json!(4)));
        assert_eq!(cfg.rewind_credentials().username, "su");
        assert!(cfg.use_slots);
    }

    #[test]
    fn documented_yaml_example_parses() {
        let yaml = r#"
name: node1                     # application_name and slot name base
scope: batman                   # cluster_name
listen: 0.0.0.0:5432
connect_address: 10.0.0.1:5432
data_dir: /var/lib/postgresql/15/main
config_dir: /etc/postgresql/15/main   # optional: postgresql.conf, pg_hba.conf, pg_ident.conf (default data_dir)
bin_dir: /usr/lib/postgresql/15/bin   # optional: pg_config --bindir, else newest /usr/lib/postgresql/*/bin
bin_name: {pg_ctl: pg_ctl}      # optional: a tool's file name in bin_dir
os_user: postgres               # used when the agent runs as root
pg_ctl_timeout: 60              # seconds, fractions allowed
pre_promote: /usr/local/bin/fence.sh   # optional: non-zero exit cancels a promotion
before_stop: /usr/local/bin/drain.sh   # optional: run before postgres is stopped
authentication:
  superuser: {username: postgres, password: secret}
  replication: {username: replicator, password: secret}
  rewind: {username: rewinder, password: secret}   # optional, else the superuser
parameters: {max_connections: 200, shared_buffers: 1GB}
pg_hba: ["host replication replicator 10.0.0.0/24 scram-sha-256", "host all all 0.0.0.0/0 scram-sha-256"]
pg_ident: ["ops alice postgres"]
custom_conf: /etc/postgresql/base.conf   # optional: base configuration instead of initdb's postgresql.conf
recovery_conf: {recovery_min_apply_delay: 5min}   # replicas only
use_pg_rewind: true
use_slots: true
remove_data_directory_on_rewind_failure: false
remove_data_directory_on_diverged_timelines: false
initdb: [{encoding: UTF8}, data-checksums]
basebackup: [{max-rate: 100M}]
create_replica_methods: [wal_g, basebackup]
wal_g: {command: "wal-g-restore.sh", no_leader: true, keep_data: false}
"#;
        let cfg: PgConfig = serde_yaml::from_str(yaml).unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.scope.as_deref(), Some("batman"));
        assert_eq!(cfg.rewind_credentials().username, "rewinder");
        assert!(cfg.replica_method("wal_g").unwrap().no_leader);
        assert_eq!(
            cfg.initdb.to_args().unwrap(),
            vec!["--encoding=UTF8", "--data-checksums"]
        );
        assert_eq!(cfg.effective_pg_ident(), ["ops alice postgres"]);
        assert_eq!(cfg.pre_promote.as_deref(), Some("/usr/local/bin/fence.sh"));
    }

    #[test]
    fn pg_ctl_timeout_takes_fractions_and_local_access_lines_win() {
        let mut cfg = PgConfig::new("a", "127.0.0.1:5432", "/d");
        cfg.pg_ctl_timeout = 2.5;
        assert_eq!(cfg.pg_ctl_timeout(), Duration::from_millis(2500));
        cfg.pg_ctl_timeout = 0.2;
        assert_eq!(cfg.pg_ctl_timeout(), Duration::from_secs(1));
        cfg.dynamic_pg_hba = vec!["host all all 0.0.0.0/0 md5".into()];
        assert_eq!(cfg.effective_pg_hba(), ["host all all 0.0.0.0/0 md5"]);
        cfg.pg_hba = vec!["local all all trust".into()];
        assert_eq!(cfg.effective_pg_hba(), ["local all all trust"]);
        cfg.before_stop = Some("'unbalanced".into());
        assert_eq!(
            cfg.validate().unwrap_err().to_string(),
            "bad postgresql configuration: before_stop `'unbalanced` is not a command line (empty or unbalanced quotes)"
        );
    }

    #[test]
    fn rewind_options_reach_pg_rewinds_command_line() {
        let mut cfg = PgConfig::new("a", "127.0.0.1:5432", "/d");
        assert!(cfg.rewind_args().unwrap().is_empty());
        cfg.rewind =
            serde_json::from_str(r#"["debug", {"config-file": "/etc/pg/pg.conf"}]"#).unwrap();
        cfg.parameters
            .insert("fsync".into(), serde_json::json!("off"));
        assert_eq!(
            cfg.rewind_args().unwrap(),
            ["--debug", "--config-file=/etc/pg/pg.conf", "--no-sync"]
        );
        cfg.rewind = serde_json::from_str(r#"[{"a": 1, "b": 2}]"#).unwrap();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn local_endpoints_follow_use_unix_socket_and_the_first_absolute_directory() {
        let mut cfg = PgConfig::new("a", "0.0.0.0:5432", "/d");
        assert_eq!(
            cfg.local_superuser_endpoint().unwrap(),
            Endpoint::tcp("127.0.0.1", 5432)
        );
        cfg.use_unix_socket = true;
        let sock = |d: &str| Endpoint {
            host: Host::Socket(d.into()),
            port: 5432,
        };
        assert_eq!(cfg.local_superuser_endpoint().unwrap(), sock("/tmp"));
        cfg.parameters.insert(
            "unix_socket_directories".into(),
            serde_json::json!("@abstract, /run/pg ,/x"),
        );
        assert_eq!(cfg.local_superuser_endpoint().unwrap(), sock("/run/pg"));
        assert_eq!(
            cfg.local_replication_endpoint().unwrap(),
            Endpoint::tcp("127.0.0.1", 5432)
        );
        cfg.use_unix_socket_repl = true;
        assert_eq!(cfg.local_replication_endpoint().unwrap(), sock("/run/pg"));
        // No absolute directory: TCP, as in Patroni.
        cfg.parameters
            .insert("unix_socket_directories".into(), serde_json::json!("@abs"));
        assert_eq!(
            cfg.local_superuser_endpoint().unwrap(),
            Endpoint::tcp("127.0.0.1", 5432)
        );
    }

    #[test]
    fn validate_rejects_missing_method_section_and_relative_data_dir() {
        let mut cfg = PgConfig::new("a", "127.0.0.1:5432", "/d");
        cfg.create_replica_methods = vec!["pgbackrest".into()];
        assert!(cfg.validate().is_err());
        let cfg = PgConfig::new("a", "127.0.0.1:5432", "rel/d");
        assert!(cfg.validate().is_err());
        let cfg = PgConfig::new("a", "127.0.0.1", "/d");
        assert!(cfg.validate().is_err());
    }
}
