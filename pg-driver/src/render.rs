//! Renders the files the driver owns in the data directory: the managed
//! `postgresql.fullauto.conf` (included from postgresql.conf), `pg_hba.conf`, and the
//! standby settings (`standby.signal`, `primary_conninfo`, `primary_slot_name`).

use crate::config::{json_scalar, Credentials, Endpoint, PgConfig};
use crate::conninfo::{self, Secret};
use crate::error::Result;
use crate::server_facts::ServerFacts;
use crate::slots::slot_name_for_member;
use crate::version_params;
use ha_core::{RemoteSource, Upstream};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// File name of the managed configuration, relative to the data directory.
pub const MANAGED_CONF: &str = "postgresql.fullauto.conf";
/// The line postgresql.conf must contain.
pub const INCLUDE_LINE: &str = "include_if_exists 'postgresql.fullauto.conf'";
/// The socket directory rendered when `unix_socket_directories` is not set (not the
/// data directory: pg_rewind and pg_basebackup would try to copy the socket file).
pub const DEFAULT_SOCKET_DIR: &str = "/tmp";
/// Where the original postgresql.conf is kept while `custom_conf` replaces it as the
/// base configuration (Patroni's name for the base file).
pub const BASE_CONF: &str = "postgresql.base.conf";
/// First line of a postgresql.conf the driver wrote for `custom_conf`.
const CUSTOM_CONF_MARKER: &str =
    "# Written by fullauto: postgresql.custom_conf is the base configuration.";
const STATE_PREFIX: &str = "# fullauto-state: ";

/// What the driver remembers across agent restarts, kept as a comment in the managed
/// file so it travels with the settings it produced.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagedState {
    /// The upstream written into primary_conninfo (only meaningful as a replica).
    pub upstream: Option<UpstreamRecord>,
    /// Whether the file was rendered for a replica.
    pub replica: bool,
    /// `synchronous_standby_names`.
    pub synchronous_standby_names: Option<String>,
    /// Recovery settings of a custom bootstrap's first start (`recovery_conf`),
    /// rendered until that recovery has ended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recovery: BTreeMap<String, String>,
    /// The values pg_control recorded for the settings a server in recovery needs at
    /// least as high as the primary's (`max_connections`, …), read before a start in
    /// recovery: a higher one wins over the configuration, as in Patroni, or the
    /// server would refuse to recover ("insufficient parameter settings").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub recovery_floor: BTreeMap<String, i64>,
}

impl ManagedState {
    /// Whether the server starts (or runs) in recovery with this state.
    pub fn in_recovery(&self) -> bool {
        self.replica || !self.recovery.is_empty()
    }
}

/// Serializable copy of an `Upstream`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRecord {
    /// Member name.
    pub name: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// A standby cluster's remote source: its recovery settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<RemoteSource>,
}

impl From<&Upstream> for UpstreamRecord {
    fn from(u: &Upstream) -> Self {
        UpstreamRecord {
            name: u.name.clone(),
            host: u.host.clone(),
            port: u.port,
            remote: u.remote.clone(),
        }
    }
}

impl UpstreamRecord {
    /// Back to ha-core's type.
    pub fn to_upstream(&self) -> Upstream {
        Upstream {
            name: self.name.clone(),
            host: self.host.clone(),
            port: self.port,
            remote: self.remote.clone(),
        }
    }
}

/// Reads the state comment of an existing managed file.
pub fn read_state(data_dir: &Path) -> ManagedState {
    std::fs::read_to_string(data_dir.join(MANAGED_CONF))
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix(STATE_PREFIX))
                .and_then(|j| serde_json::from_str(j).ok())
        })
        .unwrap_or_default()
}

/// Quotes a value for postgresql.conf (single quotes; `'` doubled, `\` escaped).
pub fn conf_quote(v: &str) -> String {
    format!("'{}'", v.replace('\\', "\\\\").replace('\'', "''"))
}

/// The `primary_conninfo` for streaming from `upstream`, as Patroni writes it: the
/// replication role with its TLS options, `sslmode`, `gssencmode` and
/// `channel_binding` defaulting to `prefer`, and `passfile` instead of the password
/// when a password file is configured (the caller writes it, see
/// [`primary_conninfo_target`]); plus a 5 s `connect_timeout`.
pub fn primary_conninfo(cfg: &PgConfig, upstream: &Upstream) -> String {
    let (creds, to) = primary_conninfo_target(cfg, upstream);
    let secret = match (&cfg.pgpass, &creds.password) {
        (Some(f), Some(_)) => Secret::Passfile(f),
        _ => Secret::Inline,
    };
    let mut p = conninfo::params(creds, &to, "postgres", secret, Some(&cfg.name));
    conninfo::set_default(&mut p, "sslmode", "prefer");
    conninfo::set_default(&mut p, "gssencmode", "prefer");
    conninfo::set_default(&mut p, "channel_binding", "prefer");
    p.push(("connect_timeout", "5".into()));
    conninfo::dsn(&p)
}

/// Whom `primary_conninfo` connects as, and where: the password file must hold this
/// role's line for this endpoint.
pub fn primary_conninfo_target<'a>(
    cfg: &'a PgConfig,
    upstream: &Upstream,
) -> (&'a Credentials, Endpoint) {
    (
        &cfg.authentication.replication,
        Endpoint::tcp(&upstream.host, upstream.port),
    )
}

/// Raises each setting to the value pg_control recorded for it when that is higher.
fn raise_to_recovery_floor(p: &mut BTreeMap<String, String>, floor: &BTreeMap<String, i64>) {
    for (name, recorded) in floor {
        let configured = p.get(name).and_then(|v| v.trim().parse::<i64>().ok());
        if configured.is_some_and(|c| c < *recorded) {
            tracing::info!(
                "{name} value in pg_controldata: {recorded}, in the configuration: {}; using pg_controldata's until the server leaves recovery",
                configured.unwrap_or_default()
            );
            p.insert(name.clone(), recorded.to_string());
        }
    }
}

/// Every server parameter of `postgresql.conf` as fullauto renders it: its replication
/// defaults, the dynamic then local parameters adapted to the server version (raised
/// to what pg_control recorded while in recovery), the listen address and the
/// role's recovery settings, which belong to the driver.
pub fn parameters(
    cfg: &PgConfig,
    state: &ManagedState,
    facts: &ServerFacts,
) -> Result<BTreeMap<String, String>> {
    let mut p: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in [
        ("wal_level", "replica"),
        ("hot_standby", "on"),
        ("wal_log_hints", "on"),
        ("max_wal_senders", "10"),
        ("max_replication_slots", "10"),
        // Postmaster-context settings a replica needs at least as high as its primary;
        // rendering the same defaults everywhere keeps them equal.
        ("max_connections", "100"),
        ("max_worker_processes", "8"),
        ("max_locks_per_transaction", "64"),
        ("max_prepared_transactions", "0"),
        ("track_commit_timestamp", "off"),
    ] {
        p.insert(k.into(), v.into());
    }
    for (k, v) in cfg.dynamic_parameters.iter().chain(&cfg.parameters) {
        p.insert(k.clone(), json_scalar(v)?);
    }
    version_params::adapt(&mut p, facts)?;
    if state.in_recovery() {
        raise_to_recovery_floor(&mut p, &state.recovery_floor);
    }
    let listen = cfg.listen_address()?;
    p.insert("listen_addresses".into(), listen.host.clone());
    p.insert("port".into(), listen.port.to_string());
    if let Some(scope) = &cfg.scope {
        p.insert("cluster_name".into(), scope.clone());
    }
    // The access files live with the configuration (config_dir).
    if let Some(dir) = cfg.config_dir.as_ref().filter(|d| **d != cfg.data_dir) {
        for (k, file) in [("hba_file", "pg_hba.conf"), ("ident_file", "pg_ident.conf")] {
            p.entry(k.into())
                .or_insert_with(|| dir.join(file).display().to_string());
        }
    }
    // Not in the data directory: pg_rewind and pg_basebackup would try to copy the
    // socket file.
    p.entry("unix_socket_directories".into())
        .or_insert_with(|| DEFAULT_SOCKET_DIR.into());
    // Recovery settings belong to the driver: the role decides them.
    for k in [
        "primary_conninfo",
        "primary_slot_name",
        "synchronous_standby_names",
    ] {
        p.remove(k);
    }
    if let Some(s) = &state.synchronous_standby_names {
        p.insert("synchronous_standby_names".into(), s.clone());
    } else {
        p.insert("synchronous_standby_names".into(), String::new());
    }
    p.insert("recovery_target_timeline".into(), "latest".into());
    for (k, v) in &state.recovery {
        p.insert(k.clone(), v.clone());
    }
    p.insert("primary_conninfo".into(), String::new());
    p.insert("primary_slot_name".into(), String::new());
    if state.replica {
        // The operator's recovery settings; the ones the driver owns stay its own.
        for (k, v) in cfg.effective_recovery_conf() {
            let lower = k.to_ascii_lowercase();
            if !lower.starts_with("recovery_target")
                && lower != "primary_conninfo"
                && lower != "primary_slot_name"
            {
                p.insert(k.clone(), json_scalar(v)?);
            }
        }
        if let Some(up) = &state.upstream {
            let up = up.to_upstream();
            if up.streams() {
                p.insert("primary_conninfo".into(), primary_conninfo(cfg, &up));
            }
            match &up.remote {
                Some(remote) => standby_leader_recovery(cfg, &up, remote, &mut p),
                None if cfg.use_slots => {
                    p.insert("primary_slot_name".into(), slot_name_for_member(&cfg.name));
                }
                None => {}
            }
        }
    }
    Ok(p)
}

/// A standby leader's recovery settings from the `standby_cluster` section: the slot
/// on the remote only when one is named (the remote keeps no slot for our members),
/// and the archive commands and apply delay over the node's own.
fn standby_leader_recovery(
    cfg: &PgConfig,
    up: &Upstream,
    remote: &RemoteSource,
    p: &mut BTreeMap<String, String>,
) {
    if let Some(slot) = remote
        .primary_slot_name
        .as_ref()
        .filter(|_| cfg.use_slots && up.streams())
    {
        p.insert("primary_slot_name".into(), slot.clone());
    }
    for (k, v) in [
        ("restore_command", &remote.restore_command),
        ("archive_cleanup_command", &remote.archive_cleanup_command),
        ("recovery_min_apply_delay", &remote.recovery_min_apply_delay),
    ] {
        if let Some(v) = v {
            p.insert(k.into(), v.clone());
        }
    }
}

/// The managed file's text for the server `facts` describes.
pub fn managed_conf(cfg: &PgConfig, state: &ManagedState, facts: &ServerFacts) -> Result<String> {
    let mut out = String::from(
        "# Managed by fullauto: rewritten on every start, role change and reload. Do not edit;\n\
         # change the agent's postgresql configuration instead.\n",
    );
    out.push_str(STATE_PREFIX);
    out.push_str(&serde_json::to_string(state).unwrap_or_else(|_| "{}".into()));
    out.push('\n');
    for (k, v) in parameters(cfg, state, facts)? {
        out.push_str(&format!("{k} = {}\n", conf_quote(&v)));
    }
    Ok(out)
}

/// Settings that make a server recover or stream; a restored backup must not bring
/// its own into the new cluster unless asked to.
const RECOVERY_SETTINGS: &[&str] = &[
    "primary_conninfo",
    "primary_slot_name",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "recovery_min_apply_delay",
    "promote_trigger_file",
    "standby_mode",
];

fn is_recovery_setting(name: &str) -> bool {
    RECOVERY_SETTINGS.contains(&name) || name.starts_with("recovery_target")
}

/// `postgresql.auto.conf` without recovery settings (`None`: nothing to remove).
pub fn without_recovery_settings(auto_conf: &str) -> Option<String> {
    let keep = |l: &&str| {
        let name = l
            .trim_start()
            .split(|c: char| c == '=' || c.is_whitespace())
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        !is_recovery_setting(&name)
    };
    let kept: Vec<&str> = auto_conf.lines().filter(keep).collect();
    if kept.len() == auto_conf.lines().count() {
        return None;
    }
    Some(kept.iter().map(|l| format!("{l}\n")).collect())
}

/// postgresql.conf with the include line appended if missing.
pub fn with_include(postgresql_conf: &str) -> Option<String> {
    if postgresql_conf.lines().any(|l| l.trim() == INCLUDE_LINE) {
        return None;
    }
    let mut s = postgresql_conf.to_string();
    if !s.ends_with('\n') && !s.is_empty() {
        s.push('\n');
    }
    s.push_str("# Settings managed by fullauto (read last, so they win).\n");
    s.push_str(INCLUDE_LINE);
    s.push('\n');
    Some(s)
}

/// The postgresql.conf of a server whose base configuration is the operator's
/// `custom_conf` file: that file, then the managed settings (so they win).
pub fn custom_conf_main(custom_conf: &str) -> String {
    format!(
        "{CUSTOM_CONF_MARKER}\n# Do not edit: change postgresql.custom_conf or the agent's parameters.\n\
         include {}\n{INCLUDE_LINE}\n",
        conf_quote(custom_conf)
    )
}

/// Whether `postgresql_conf` is one [`custom_conf_main`] wrote.
pub fn is_custom_conf_main(postgresql_conf: &str) -> bool {
    postgresql_conf.starts_with(CUSTOM_CONF_MARKER)
}

/// Whether `postgresql_conf` is the file Patroni generates over `postgresql.base.conf`
/// (its two header lines, then the include of the base file): its settings are
/// Patroni's rendering of the same config file and DCS values the agent renders
/// itself, and stale ones (another upstream's `primary_conninfo`, a slot, a
/// `synchronous_standby_names`) must not outlive Patroni.
pub fn is_patroni_main(postgresql_conf: &str) -> bool {
    let mut lines = postgresql_conf.lines().map(str::trim);
    lines.next() == Some("# Do not edit this file manually!")
        && lines.next() == Some("# It will be overwritten by Patroni!")
        && lines
            .find(|l| !l.is_empty())
            .is_some_and(|l| l == format!("include {}", conf_quote(BASE_CONF)))
}

/// postgresql.conf without `custom_conf`: the base configuration with the include
/// line of the managed settings. The base is the file itself, or
/// `postgresql.base.conf` (`saved`) when the file is one this agent wrote for
/// `custom_conf` or one Patroni generated: taking over a Patroni data directory
/// keeps the base configuration and drops Patroni's rendered settings, and Patroni
/// handed the directory back finds its base file where it left it.
pub fn main_conf(current: &str, saved: Option<&str>) -> String {
    let base = match saved {
        Some(saved) if is_patroni_main(current) => saved,
        _ if is_custom_conf_main(current) => saved.unwrap_or_default(),
        _ => current,
    };
    with_include(base).unwrap_or_else(|| base.to_string())
}

/// pg_hba.conf text from the configured lines (local, else dynamic).
pub fn pg_hba(cfg: &PgConfig) -> Option<String> {
    access_file("pg_hba", cfg.effective_pg_hba())
}

/// pg_ident.conf text from the configured lines (local, else dynamic).
pub fn pg_ident(cfg: &PgConfig) -> Option<String> {
    access_file("pg_ident", cfg.effective_pg_ident())
}

fn access_file(key: &str, lines: &[String]) -> Option<String> {
    if lines.is_empty() {
        return None;
    }
    let mut s = format!("# Managed by fullauto from postgresql.{key}.\n");
    for l in lines {
        s.push_str(l.trim());
        s.push('\n');
    }
    Some(s)
}

#[cfg(test)]
mod tests {

    #[test]
    fn in_recovery_pg_controls_higher_settings_win_over_the_configuration() {
        let floor: BTreeMap<String, i64> = [
            ("max_connections".to_string(), 101),
            ("max_wal_senders".to_string(), 5),
        ]
        .into_iter()
        .collect();
        let replica = ManagedState {
            replica: true,
            recovery_floor: floor.clone(),
            ..ManagedState::default()
        };
        let p = parameters(&cfg(), &replica, &PG15).unwrap();
        assert_eq!(p["max_connections"], "101");
        assert_eq!(p["max_wal_senders"], "10", "the configured value is higher");
        // A primary renders its configuration as it is.
        let primary = ManagedState {
            recovery_floor: floor,
            ..ManagedState::default()
        };
        let p = parameters(&cfg(), &primary, &PG15).unwrap();
        assert_eq!(p["max_connections"], "42");
    }

    use super::*;

    const PG15: ServerFacts = ServerFacts {
        major: Some(15),
        wal_segment_mb: 16,
    };

    fn cfg() -> PgConfig {
        let mut c = PgConfig::new("node-1", "127.0.0.1:5544", "/tmp/x/data");
        c.scope = Some("batman".into());
        c.authentication.replication.password = Some("s3 'cret".into());
        c.parameters.insert("port".into(), serde_json::json!(9999));
        c.parameters
            .insert("max_connections".into(), serde_json::json!(42));
        c
    }

    #[test]
    fn replica_conf_streams_with_member_name_and_slot() {
        let up = Upstream::at("node-0", "127.0.0.1", 5543);
        let state = ManagedState {
            upstream: Some((&up).into()),
            replica: true,
            synchronous_standby_names: None,
            ..Default::default()
        };
        let p = parameters(&cfg(), &state, &PG15).unwrap();
        assert_eq!(p["port"], "5544", "listen wins over parameters");
        assert_eq!(p["max_connections"], "42");
        assert_eq!(p["cluster_name"], "batman");
        assert_eq!(p["primary_slot_name"], "node_1");
        assert!(p["primary_conninfo"].contains("application_name=node-1"));
        assert_eq!(
            p["primary_conninfo"],
            "dbname=postgres user=replicator password=s3\\ \\'cret host=127.0.0.1 port=5543 \
             sslmode=prefer application_name=node-1 gssencmode=prefer channel_binding=prefer \
             connect_timeout=5"
        );
        let mut tls = cfg();
        tls.pgpass = Some("/run/fa/pgpass".into());
        tls.authentication.replication.sslmode = Some(crate::credentials::SslMode::VerifyCa);
        tls.authentication.replication.sslrootcert = Some("/c/ca.crt".into());
        tls.authentication.replication.sslcert = Some("/c/rep.crt".into());
        tls.authentication.replication.sslkey = Some("/c/rep.key".into());
        assert_eq!(
            parameters(&tls, &state, &PG15).unwrap()["primary_conninfo"],
            "dbname=postgres user=replicator passfile=/run/fa/pgpass host=127.0.0.1 port=5543 \
             sslmode=verify-ca sslcert=/c/rep.crt sslkey=/c/rep.key sslrootcert=/c/ca.crt \
             application_name=node-1 gssencmode=prefer channel_binding=prefer connect_timeout=5"
        );
        assert_eq!(p["unix_socket_directories"], "/tmp");
        let text = managed_conf(&cfg(), &state, &PG15).unwrap();
        assert!(text.contains("wal_log_hints = 'on'"));
        // The state comment round-trips.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(MANAGED_CONF), &text).unwrap();
        assert_eq!(read_state(dir.path()), state);
    }

    fn standby_leader(remote: RemoteSource, host: &str) -> BTreeMap<String, String> {
        let up = Upstream {
            remote: Some(remote),
            ..Upstream::at(ha_core::decision::standby::REMOTE_NAME, host, 6000)
        };
        let state = ManagedState {
            upstream: Some((&up).into()),
            replica: true,
            ..Default::default()
        };
        parameters(&cfg(), &state, &PG15).unwrap()
    }

    #[test]
    fn standby_leader_uses_the_standby_cluster_settings() {
        let p = standby_leader(
            RemoteSource {
                primary_slot_name: Some("b_leader".into()),
                restore_command: Some("cp /arch/%f %p".into()),
                archive_cleanup_command: Some("pg_archivecleanup /arch %r".into()),
                recovery_min_apply_delay: Some("5min".into()),
                create_replica_methods: vec![],
            },
            "10.0.0.9",
        );
        assert!(p["primary_conninfo"].contains("host=10.0.0.9 port=6000"));
        assert_eq!(p["primary_slot_name"], "b_leader");
        assert_eq!(p["restore_command"], "cp /arch/%f %p");
        assert_eq!(p["archive_cleanup_command"], "pg_archivecleanup /arch %r");
        assert_eq!(p["recovery_min_apply_delay"], "5min");
    }

    #[test]
    fn standby_leader_without_slot_name_uses_no_slot_and_archive_only_has_no_conninfo() {
        let p = standby_leader(RemoteSource::default(), "10.0.0.9");
        assert_eq!(
            p["primary_slot_name"], "",
            "the remote keeps no slot for us"
        );
        assert!(!p.contains_key("restore_command"));
        let archive = standby_leader(
            RemoteSource {
                restore_command: Some("cp /arch/%f %p".into()),
                primary_slot_name: Some("unused".into()),
                ..Default::default()
            },
            "",
        );
        assert_eq!(archive["primary_conninfo"], "");
        assert_eq!(archive["primary_slot_name"], "");
        assert_eq!(archive["restore_command"], "cp /arch/%f %p");
    }

    #[test]
    fn primary_conf_has_no_conninfo_and_keeps_sync_names() {
        let state = ManagedState {
            upstream: None,
            replica: false,
            synchronous_standby_names: Some("\"node-2\"".into()),
            ..Default::default()
        };
        let p = parameters(&cfg(), &state, &PG15).unwrap();
        assert_eq!(p["primary_conninfo"], "");
        assert_eq!(p["synchronous_standby_names"], "\"node-2\"");
    }

    #[test]
    fn dynamic_wal_keep_segments_is_rendered_as_the_name_the_server_knows() {
        let mut c = cfg();
        c.dynamic_parameters
            .insert("wal_keep_segments".into(), serde_json::json!(100));
        let state = ManagedState::default();
        let lines = |c: &PgConfig, facts: &ServerFacts| -> Vec<String> {
            managed_conf(c, &state, facts)
                .unwrap()
                .lines()
                .filter(|l| l.starts_with("wal_keep"))
                .map(String::from)
                .collect()
        };
        assert_eq!(lines(&c, &PG15), vec!["wal_keep_size = '1600MB'"]);
        assert_eq!(
            lines(&c, &ServerFacts::major(12)),
            vec!["wal_keep_segments = '100'"]
        );
        c.dynamic_parameters.clear();
        c.dynamic_parameters
            .insert("wal_keep_size".into(), serde_json::json!("1GB"));
        assert_eq!(lines(&c, &PG15), vec!["wal_keep_size = '1GB'"]);
        assert_eq!(
            lines(&c, &ServerFacts::major(12)),
            vec!["wal_keep_segments = '64'"]
        );
    }

    #[test]
    fn replicas_get_recovery_conf_except_what_the_driver_owns() {
        let mut c = cfg();
        for (k, v) in [
            ("recovery_min_apply_delay", "5min"),
            ("restore_command", "cp /arch/%f %p"),
            ("recovery_target_lsn", "0/3000000"),
            ("primary_conninfo", "host=elsewhere"),
        ] {
            c.recovery_conf.insert(k.into(), serde_json::json!(v));
        }
        let up = Upstream::at("node-0", "127.0.0.1", 5543);
        let replica = ManagedState {
            upstream: Some((&up).into()),
            replica: true,
            ..Default::default()
        };
        let p = parameters(&c, &replica, &PG15).unwrap();
        assert_eq!(p["recovery_min_apply_delay"], "5min");
        assert_eq!(p["restore_command"], "cp /arch/%f %p");
        assert!(!p.contains_key("recovery_target_lsn"));
        assert_eq!(
            p["primary_conninfo"],
            "dbname=postgres user=replicator password=s3\\ \\'cret host=127.0.0.1 port=5543 sslmode=prefer application_name=node-1 gssencmode=prefer channel_binding=prefer connect_timeout=5",
            "the driver's primary_conninfo, not recovery_conf's"
        );
        let primary = parameters(&c, &ManagedState::default(), &PG15).unwrap();
        assert!(!primary.contains_key("recovery_min_apply_delay"));
        // Local recovery_conf replaces the dynamic one as a whole.
        c.dynamic_recovery_conf
            .insert("archive_cleanup_command".into(), serde_json::json!("true"));
        let p = parameters(&c, &replica, &PG15).unwrap();
        assert!(!p.contains_key("archive_cleanup_command"));
        c.recovery_conf.clear();
        let p = parameters(&c, &replica, &PG15).unwrap();
        assert_eq!(p["archive_cleanup_command"], "true");
        assert!(!p.contains_key("recovery_min_apply_delay"));
    }

    #[test]
    fn access_files_use_local_lines_else_dynamic_ones() {
        let mut c = cfg();
        assert_eq!(pg_ident(&c), None);
        c.dynamic_pg_ident = vec!["map1 bob postgres".into()];
        assert_eq!(
            pg_ident(&c).unwrap(),
            "# Managed by fullauto from postgresql.pg_ident.\nmap1 bob postgres\n"
        );
        c.pg_ident = vec![" map2 alice postgres ".into()];
        assert_eq!(
            pg_ident(&c).unwrap(),
            "# Managed by fullauto from postgresql.pg_ident.\nmap2 alice postgres\n"
        );
        c.dynamic_pg_hba = vec!["host all all 10.0.0.0/8 md5".into()];
        assert_eq!(
            pg_hba(&c).unwrap(),
            "# Managed by fullauto from postgresql.pg_hba.\nhost all all 10.0.0.0/8 md5\n"
        );
    }

    #[test]
    fn custom_conf_is_the_base_and_the_managed_settings_win() {
        let text = custom_conf_main("/etc/pg/base's.conf");
        assert_eq!(
            text,
            "# Written by fullauto: postgresql.custom_conf is the base configuration.\n\
             # Do not edit: change postgresql.custom_conf or the agent's parameters.\n\
             include '/etc/pg/base''s.conf'\n\
             include_if_exists 'postgresql.fullauto.conf'\n"
        );
        assert!(is_custom_conf_main(&text));
        assert!(!is_custom_conf_main("max_connections = 100\n"));
    }

    /// The head of a postgresql.conf Patroni 3.0 and 4.1 generate.
    const PATRONI_MAIN: &str = "# Do not edit this file manually!\n\
         # It will be overwritten by Patroni!\n\
         include 'postgresql.base.conf'\n\n\
         port = '5432'\n\
         primary_conninfo = 'host=10.0.0.1 port=5432 application_name=pg1'\n\
         primary_slot_name = 'pg1'\n\
         synchronous_standby_names = 'pg2'\n";

    #[test]
    fn a_patroni_postgresql_conf_is_replaced_by_its_base_file_and_the_include() {
        let base = "max_connections = 100\nshared_buffers = 128MB\n";
        assert!(is_patroni_main(PATRONI_MAIN));
        let taken = main_conf(PATRONI_MAIN, Some(base));
        assert_eq!(
            taken,
            format!(
                "{base}# Settings managed by fullauto (read last, so they win).\n{INCLUDE_LINE}\n"
            )
        );
        // Patroni's rendered settings are gone; the next start keeps the file as is.
        assert!(!taken.contains("primary_conninfo") && !taken.contains("synchronous"));
        assert_eq!(main_conf(&taken, Some(base)), taken);
        // Without the base file (Patroni ran with its own custom_conf) the file stays
        // the base, nothing dropped.
        assert!(main_conf(PATRONI_MAIN, None).starts_with(PATRONI_MAIN));
    }

    #[test]
    fn only_patronis_generated_file_counts_as_patronis() {
        let auto_conf = "# Do not edit this file manually!\n\
                         # It will be overwritten by the ALTER SYSTEM command.\n";
        assert!(!is_patroni_main(auto_conf));
        let custom = "# Do not edit this file manually!\n\
                      # It will be overwritten by Patroni!\n\
                      include '/etc/pg/custom.conf'\n";
        assert!(!is_patroni_main(custom));
        assert!(!is_patroni_main("max_connections = 100\n"));
        // initdb's file, or one the driver wrote before: the include line, once.
        let plain = "max_connections = 100\n";
        assert_eq!(
            main_conf(plain, Some("other = 1\n")),
            with_include(plain).unwrap()
        );
        let own = custom_conf_main("/etc/pg/custom.conf");
        assert_eq!(main_conf(&own, Some(plain)), with_include(plain).unwrap());
    }

    #[test]
    fn include_line_is_added_once() {
        let once = with_include("a = 1").unwrap();
        assert!(once.ends_with(&format!("{INCLUDE_LINE}\n")));
        assert!(with_include(&once).is_none());
        assert_eq!(conf_quote("it's\\"), "'it''s\\\\'");
    }
}
