//! `--generate-sample-config`: defaults, the `PATRONI_*` environment, and what the
//! PostgreSQL binaries found on this machine support.

use super::{ensure_dcs, template, FIXME};
use crate::config::EnvMap;
use serde_json::{json, Value};

/// The sample configuration (not yet rendered).
pub fn sample_config(env: &EnvMap) -> Value {
    let mut config = template(env);
    ensure_dcs(&mut config);
    let configured_bin = config
        .pointer("/postgresql/bin_dir")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .map(std::path::PathBuf::from);
    let bin_dir = pg_driver::binaries::Binaries::discover(configured_bin.as_deref())
        .ok()
        .map(|b| b.dir().display().to_string());
    let pg = &mut config["postgresql"];
    if let Some(dir) = bin_dir {
        pg["bin_dir"] = Value::from(dir);
    }
    // fullauto runs PostgreSQL 15: scram and a rewind user, as Patroni writes them for
    // 10+ and 11+.
    let auth = "scram-sha-256";
    let replicator = pg
        .pointer("/authentication/replication/username")
        .and_then(Value::as_str)
        .unwrap_or("replicator")
        .to_string();
    let parameters = pg
        .as_object_mut()
        .map(|m| m.entry("parameters").or_insert_with(|| json!({})));
    if let Some(Value::Object(p)) = parameters {
        p.entry("password_encryption")
            .or_insert_with(|| Value::from(auth));
    }
    if pg.get("pg_hba").is_none() {
        pg["pg_hba"] = json!([
            format!("host all all all {auth}"),
            format!("host replication {replicator} all {auth}"),
        ]);
    }
    if let Some(a) = pg.get_mut("authentication").and_then(Value::as_object_mut) {
        let rewind = a
            .entry("rewind")
            .or_insert_with(|| json!({"username": "rewind_user"}));
        if let Some(r) = rewind.as_object_mut() {
            r.entry("password").or_insert_with(|| Value::from(FIXME));
        }
    }
    let dcs = &mut config["bootstrap"]["dcs"];
    dcs["postgresql"]["parameters"]["wal_keep_size"] = Value::from("128MB");
    dcs["postgresql"]["parameters"]["wal_level"] = Value::from("replica");
    let hints_on = match &dcs["postgresql"]["parameters"]["wal_log_hints"] {
        Value::Bool(b) => *b,
        Value::String(s) => matches!(s.to_ascii_lowercase().as_str(), "on" | "true" | "yes" | "1"),
        _ => false,
    };
    dcs["postgresql"]["use_pg_rewind"] = Value::from(hints_on);
    config
}
