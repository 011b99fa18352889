//! `fullauto --generate-sample-config [FILE]` and `fullauto --generate-config [--dsn
//! DSN] [FILE]`, as Patroni 4.1 has them: a local configuration file written from
//! defaults and the `PATRONI_*` environment, or from a running PostgreSQL server.
//! Values the user must still decide are `#FIXME`, as in Patroni.

mod dsn;
mod running;
mod sample;

pub use dsn::parse_dsn;
pub use running::running_config;
pub use sample::sample_config;

use crate::config::{deep_merge, overlay_from_env, EnvMap};
use serde_json::{json, Map, Value};
use std::path::Path;

/// What a value the user must still set reads (Patroni's marker).
pub const FIXME: &str = "#FIXME";

/// The DCS sections, in the order Patroni writes them.
const DCS_SECTIONS: &[&str] = &["consul", "etcd", "etcd3", "zookeeper"];

/// This machine's host name and the first address it resolves to (IPv4 first), or
/// `#FIXME` for both when either cannot be found.
pub fn host_and_address() -> (String, String) {
    use std::net::ToSocketAddrs;
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return (FIXME.into(), FIXME.into());
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let host = String::from_utf8_lossy(&buf[..end]).to_string();
    let mut addrs: Vec<std::net::IpAddr> = match (host.as_str(), 0).to_socket_addrs() {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(_) => return (FIXME.into(), FIXME.into()),
    };
    addrs.sort_by_key(|a| a.is_ipv6());
    match addrs.first() {
        Some(ip) => (host, ip.to_string()),
        None => (FIXME.into(), FIXME.into()),
    }
}

/// `ip:port`, brackets around an IPv6 address.
fn endpoint(ip: &str, port: u16) -> String {
    if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    }
}

/// Patroni's dynamic-configuration defaults (`bootstrap.dcs`).
fn default_dcs() -> Value {
    json!({
        "ttl": 30,
        "loop_wait": 10,
        "retry_timeout": 10,
        "postgresql": {
            "use_slots": true,
            "parameters": {
                "wal_level": "hot_standby",
                "hot_standby": "on",
                "max_connections": 100,
                "max_wal_senders": 10,
                "max_prepared_transactions": 0,
                "max_locks_per_transaction": 64,
                "track_commit_timestamp": "off",
                "max_replication_slots": 10,
                "max_worker_processes": 8,
                "wal_log_hints": "on",
            }
        }
    })
}

/// The configuration both generators start from: defaults, this machine's name and
/// address, then whatever the `PATRONI_*` environment sets.
fn template(env: &EnvMap) -> Value {
    let (host, ip) = host_and_address();
    let mut config = json!({
        "scope": FIXME,
        "name": host,
        "restapi": {
            "connect_address": endpoint(&ip, 8008),
            "listen": endpoint(&ip, 8008),
        },
        "log": {
            "type": "plain",
            "level": "INFO",
            "traceback_level": "ERROR",
            "format": crate::config::DEFAULT_FORMAT,
            "max_queue_size": 1000,
        },
        "postgresql": {
            "data_dir": FIXME,
            "connect_address": endpoint(&ip, 5432),
            "listen": endpoint(&ip, 5432),
            "authentication": {
                "superuser": {"username": "postgres", "password": FIXME},
                "replication": {"username": "replicator", "password": FIXME},
            }
        },
        "tags": {
            "failover_priority": 1,
            "sync_priority": 1,
            "noloadbalance": false,
            "clonefrom": true,
            "nosync": false,
            "nostream": false,
        },
        "bootstrap": {"dcs": default_dcs()},
    });
    let overlay = overlay_from_env(env);
    deep_merge(&mut config, Value::Object(overlay.overlay));
    config
}

/// Without a DCS from the environment, the local etcd's default endpoint, so the
/// file is usable as written (Patroni leaves the DCS out).
fn ensure_dcs(config: &mut Value) {
    let has_dcs = DCS_SECTIONS
        .iter()
        .any(|s| config.get(*s).is_some_and(|v| !v.is_null()));
    if !has_dcs {
        if let Some(m) = config.as_object_mut() {
            m.insert("etcd3".into(), json!({"hosts": "127.0.0.1:2379"}));
        }
    }
}

/// One YAML block, every line prefixed with `indent`.
fn block(name: &str, value: &Value, indent: &str) -> String {
    let mut m = Map::new();
    m.insert(name.to_string(), value.clone());
    let text = serde_yaml::to_string(&Value::Object(m)).unwrap_or_default();
    text.trim_end()
        .lines()
        .map(|l| format!("{indent}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The configuration as YAML, in Patroni's section order and with its comments on
/// the `bootstrap` section.
pub fn render(config: &Value) -> String {
    let mut out: Vec<String> = Vec::new();
    let empty = Map::new();
    let top = config.as_object().unwrap_or(&empty);
    let section = |name: &str, out: &mut Vec<String>| {
        if let Some(v) = top.get(name) {
            if v.is_object() {
                out.push(String::new());
            }
            out.push(block(name, v, ""));
        }
    };
    for name in ["scope", "namespace", "name", "log", "restapi", "ctl"]
        .iter()
        .chain(DCS_SECTIONS)
    {
        section(name, &mut out);
    }
    if let Some(b) = top.get("bootstrap").and_then(Value::as_object) {
        out.push(String::new());
        out.push(
            "# The bootstrap configuration. Works only when the cluster is not yet initialized.\n\
             # If the cluster is already initialized, all changes in the `bootstrap` section are ignored!\n\
             bootstrap:"
                .into(),
        );
        if let Some(dcs) = b.get("dcs").and_then(Value::as_object) {
            out.push(
                "  # This section will be written into <dcs>:/<namespace>/<scope>/config after initializing\n  \
                 # new cluster and all other cluster members will use it as a `global configuration`.\n  \
                 # WARNING! If you want to change any of the parameters that were set up\n  \
                 # via `bootstrap.dcs` section, please use `fullautoctl edit-config`!\n  \
                 dcs:"
                    .into(),
            );
            let first = ["loop_wait", "retry_timeout", "ttl"];
            for name in first {
                if let Some(v) = dcs.get(name) {
                    out.push(block(name, v, "    "));
                }
            }
            for (name, v) in dcs.iter().filter(|(k, _)| !first.contains(&k.as_str())) {
                out.push(block(name, v, "    "));
            }
        }
        for (name, v) in b.iter().filter(|(k, _)| *k != "dcs") {
            out.push(block(name, v, "  "));
        }
    }
    for name in ["postgresql", "watchdog", "tags"] {
        section(name, &mut out);
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// Writes `text` to `path` (creating its directory), or to stdout without one.
pub fn write_out(text: &str, path: Option<&Path>) -> Result<(), String> {
    match path {
        None => {
            use std::io::Write;
            std::io::stdout()
                .write_all(text.as_bytes())
                .map_err(|e| format!("cannot write to stdout: {e}"))
        }
        Some(p) => {
            if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            std::fs::write(p, text).map_err(|e| format!("cannot write {}: {e}", p.display()))
        }
    }
}

/// Asks for the superuser's password on stdin (without echo on a terminal); the
/// question goes to stderr, so the configuration on stdout stays clean.
pub fn prompt_password() -> Result<String, String> {
    crate::secret::read_line(
        "Please enter the user password: ",
        crate::secret::Ask::Stderr,
    )
    .ok_or_else(|| {
        "no password given: put it in --dsn (password=…), set PGPASSWORD or \
         PATRONI_SUPERUSER_PASSWORD, or type it when asked"
            .into()
    })
}
