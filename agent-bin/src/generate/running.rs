//! `--generate-config [--dsn DSN]`: a configuration for the PostgreSQL server running
//! on this machine, read from its settings (`pg_settings`), its `pg_hba.conf` and
//! `pg_ident.conf`, and the binary its postmaster runs, as Patroni 4.1 does.

use super::{ensure_dcs, parse_dsn, template, FIXME};
use crate::config::EnvMap;
use pg_driver::config::{Endpoint, Host};
use pg_driver::credentials::Credentials;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// Connection options taken from the DSN, else from libpq's variable (Patroni's list).
const AUTH_PARAMETERS: &[(&str, &str)] = &[
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("sslmode", "PGSSLMODE"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslpassword", ""),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("gssencmode", "PGGSSENCMODE"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
];

/// Settings that go to the local `postgresql.parameters` (commands, for safety, and
/// the files' locations, so they stay where they are); every other setting goes to
/// `bootstrap.dcs`.
const LOCAL_PARAMETERS: &[&str] = &[
    "archive_command",
    "restore_command",
    "archive_cleanup_command",
    "recovery_end_command",
    "ssl_passphrase_command",
    "hba_file",
    "ident_file",
    "config_file",
];

/// Always read, whatever their source.
const REQUIRED_PARAMETERS: &[&str] = &[
    "hba_file",
    "ident_file",
    "config_file",
    "data_directory",
    "listen_addresses",
    "port",
    "cluster_name",
    "wal_level",
    "hot_standby",
    "max_connections",
    "max_wal_senders",
    "wal_keep_segments",
    "wal_keep_size",
    "max_prepared_transactions",
    "max_locks_per_transaction",
    "track_commit_timestamp",
    "max_replication_slots",
    "max_worker_processes",
    "wal_log_hints",
];

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The configuration for the server `dsn` (else libpq's `PG*` variables) reaches.
/// `password` asks for the password when neither gives one.
pub async fn running_config(
    dsn: Option<&str>,
    env: &EnvMap,
    password: impl FnOnce() -> Result<String, String>,
) -> Result<Value, String> {
    let parsed = match dsn {
        Some(d) => {
            let p = parse_dsn(d).map_err(|e| format!("Failed to parse DSN string: {e}"))?;
            if p.is_empty() {
                return Err("Failed to parse DSN string: no parameters".into());
            }
            p
        }
        None => BTreeMap::new(),
    };
    let var = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
    let mut config = template(env);
    // The superuser: as connected (DSN, else PG* variables, else PATRONI_* and the
    // OS user), password prompted for when none is given.
    let mut su: Map<String, Value> = Map::new();
    for (param, variable) in AUTH_PARAMETERS {
        if let Some(v) = parsed.get(*param).cloned().or_else(|| var(variable)) {
            su.insert(param.to_string(), Value::from(v));
        }
    }
    let env_su = config
        .pointer("/postgresql/authentication/superuser")
        .cloned();
    let env_field = |k: &str| {
        env_su
            .as_ref()
            .and_then(|s| s.get(k))
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty() && *v != FIXME)
            .map(str::to_string)
    };
    let username = match su.remove("user") {
        Some(Value::String(u)) => u,
        _ => env_field("username")
            .or_else(|| var("USER"))
            .unwrap_or_else(|| "postgres".into()),
    };
    su.insert("username".into(), Value::from(username.clone()));
    if !su.contains_key("password") {
        let p = match env_field("password") {
            Some(p) => p,
            None => password()?,
        };
        su.insert("password".into(), Value::from(p));
    }
    let creds: Credentials = serde_json::from_value(Value::Object(su.clone()))
        .map_err(|e| format!("connection options: {e}"))?;
    let host = parsed
        .get("host")
        .cloned()
        .or_else(|| var("PGHOST"))
        .unwrap_or_else(|| "/var/run/postgresql".into());
    let port_text = parsed.get("port").cloned().or_else(|| var("PGPORT"));
    let port: u16 = match &port_text {
        Some(p) => p
            .parse()
            .map_err(|_| format!("invalid port \"{p}\" in the DSN or PGPORT"))?,
        None => 5432,
    };
    let dbname = parsed
        .get("dbname")
        .cloned()
        .or_else(|| var("PGDATABASE"))
        .unwrap_or_else(|| username.clone());
    let to = if host.starts_with('/') {
        Endpoint {
            host: Host::Socket(PathBuf::from(&host)),
            port,
        }
    } else {
        Endpoint::tcp(&host, port)
    };
    let home = env.get("HOME").map(PathBuf::from);
    let client = pg_driver::sql::connect(&to, &creds, &dbname, CONNECT_TIMEOUT, home.as_deref())
        .await
        .map_err(|e| format!("Failed to establish PostgreSQL connection: {e}"))?;
    let su_row = rows(&client, "SELECT current_setting('is_superuser')").await?;
    if su_row.first().and_then(|r| r.first()).map(String::as_str) != Some("on") {
        return Err("The provided user does not have superuser privilege".into());
    }
    config["postgresql"]["authentication"] = json!({
        "superuser": Value::Object(su),
        "replication": {"username": FIXME, "password": FIXME},
    });
    set_parameters(&client, &mut config, port_text.as_deref()).await?;
    set_conf_files(&mut config)?;
    let data_dir = config["postgresql"]["data_dir"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    config["postgresql"]["bin_dir"] = Value::from(bin_dir_of_running(Path::new(&data_dir))?);
    ensure_dcs(&mut config);
    Ok(config)
}

async fn rows(client: &Client, sql: &str) -> Result<Vec<Vec<String>>, String> {
    let msgs = client
        .simple_query(sql)
        .await
        .map_err(|e| format!("query failed: {e}"))?;
    Ok(msgs
        .iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or_default().to_string())
                    .collect(),
            ),
            _ => None,
        })
        .collect())
}

/// The settings made in a configuration file, on the postmaster's command line or in
/// its environment (not recovery targets), plus the ones every configuration needs.
async fn set_parameters(
    client: &Client,
    config: &mut Value,
    dsn_port: Option<&str>,
) -> Result<(), String> {
    let required = REQUIRED_PARAMETERS
        .iter()
        .map(|p| format!("'{p}'"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
         WHERE context <> 'internal' \
         AND source IN ('configuration file', 'command line', 'environment variable') \
         AND category <> 'Write-Ahead Log / Recovery Target' \
         AND setting <> '(disabled)' \
         OR name IN ({required}) ORDER BY name"
    );
    let mut listen_addresses = String::new();
    let mut port = String::new();
    let mut local = Map::new();
    let mut dynamic = Map::new();
    for row in rows(client, &sql).await? {
        let (name, value) = (row[0].clone(), row.get(1).cloned().unwrap_or_default());
        match name.as_str() {
            "data_directory" => config["postgresql"]["data_dir"] = Value::from(value),
            "cluster_name" => {
                if !value.is_empty() {
                    config["scope"] = Value::from(value);
                }
            }
            "listen_addresses" => listen_addresses = value,
            "port" => port = value,
            n if LOCAL_PARAMETERS.contains(&n) => {
                local.insert(name, Value::from(value));
            }
            _ => {
                dynamic.insert(name, Value::from(value));
            }
        }
    }
    let pg = &mut config["postgresql"];
    let connect_ip = pg["connect_address"]
        .as_str()
        .and_then(|a| a.rsplit_once(':').map(|(h, _)| h.to_string()))
        .unwrap_or_else(|| FIXME.into());
    let connect_port = dsn_port.unwrap_or(&port);
    pg["connect_address"] = Value::from(format!("{connect_ip}:{connect_port}"));
    pg["listen"] = Value::from(format!("{listen_addresses}:{port}"));
    pg["parameters"] = Value::Object(local);
    let params = &mut config["bootstrap"]["dcs"]["postgresql"]["parameters"];
    if let Some(p) = params.as_object_mut() {
        p.extend(dynamic);
    }
    Ok(())
}

fn read_stripped(path: &Path) -> Result<Vec<String>, String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().map(|l| l.trim().to_string()).collect())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

/// `pg_hba` and `pg_ident` from the server's files when they are the default ones in
/// the data directory (files elsewhere stay the administrator's).
fn set_conf_files(config: &mut Value) -> Result<(), String> {
    let pg = &mut config["postgresql"];
    let data_dir = PathBuf::from(pg["data_dir"].as_str().unwrap_or_default());
    let param = |pg: &Value, k: &str| pg["parameters"][k].as_str().map(PathBuf::from);
    let hba = data_dir.join("pg_hba.conf");
    if param(pg, "hba_file").as_deref() == Some(hba.as_path()) {
        let types = [
            "local",
            "host",
            "hostssl",
            "hostnossl",
            "hostgssenc",
            "hostnogssenc",
            "include",
            "include_if_exists",
            "include_dir",
        ];
        let lines: Vec<String> = read_stripped(&hba)
            .map_err(|e| format!("Failed to read pg_hba.conf: {e}"))?
            .into_iter()
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|t| types.contains(&t))
            })
            .collect();
        pg["pg_hba"] = json!(lines);
    }
    let ident = data_dir.join("pg_ident.conf");
    if param(pg, "ident_file").as_deref() == Some(ident.as_path()) {
        let lines: Vec<String> = read_stripped(&ident)
            .map_err(|e| format!("Failed to read pg_ident.conf: {e}"))?
            .into_iter()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        if !lines.is_empty() {
            pg["pg_ident"] = json!(lines);
        }
    }
    Ok(())
}

/// The directory of the binary the running postmaster executes.
fn bin_dir_of_running(data_dir: &Path) -> Result<String, String> {
    let pid_file = data_dir.join("postmaster.pid");
    let text = std::fs::read_to_string(&pid_file)
        .map_err(|e| format!("Error while reading postmaster.pid file: {e}"))?;
    let pid: u32 = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .ok_or("Failed to obtain postmaster pid from postmaster.pid file")?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|e| format!("cannot find the postmaster's binary (pid {pid}): {e}"))?;
    exe.parent()
        .map(|d| d.display().to_string())
        .ok_or_else(|| format!("{} has no directory", exe.display()))
}
