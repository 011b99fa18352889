//! `--validate-config`: every problem of a file with its path and, for a usable
//! file, the settings it checked and will use, one line each.

use super::{
    build, check_document, parse_yaml, process_env, read_document, Config, DcsConfig, EnvMap,
    Report,
};
use std::path::Path;

/// Checks `path` with the process environment applied.
pub fn validate_file(path: impl AsRef<Path>) -> Report {
    validate_file_with_env(path, &process_env())
}

/// Checks `path` with the given environment applied.
pub fn validate_file_with_env(path: impl AsRef<Path>, env: &EnvMap) -> Report {
    match read_document(path.as_ref()) {
        Err(problems) => Report { problems },
        Ok(doc) => {
            let (merged, mut report) = check_document(doc, env);
            if !report.has_errors() {
                if let Err(p) = build(&merged) {
                    report.problems.insert(0, p);
                }
            }
            report
        }
    }
}

/// Checks YAML text with the given environment applied.
pub fn validate_str(text: &str, env: &EnvMap) -> Report {
    match parse_yaml(text, "") {
        Err(p) => Report { problems: vec![p] },
        Ok(doc) => {
            let (merged, mut report) = check_document(doc, env);
            if !report.has_errors() {
                if let Err(p) = build(&merged) {
                    report.problems.insert(0, p);
                }
            }
            report
        }
    }
}

/// The whole `--validate-config` output for `path` (process environment applied):
/// one line per problem, and whether the file is usable.
pub fn validate_config_output(path: impl AsRef<Path>) -> (String, bool) {
    let path = path.as_ref();
    let report = validate_file(path);
    let mut out = report.render();
    if report.has_errors() {
        return (out, false);
    }
    // Usable: say what was checked and will be used.
    if let Ok((cfg, _)) = Config::load(path) {
        out.push_str(&summary(path, &cfg));
    }
    (out, true)
}

/// The lines printed after a successful check.
pub fn summary(path: &std::path::Path, cfg: &Config) -> String {
    let dcs = match &cfg.dcs {
        DcsConfig::Etcd3(e) => format!(
            "etcd3 at {}",
            e.endpoints().map(|v| v.join(", ")).unwrap_or_else(|e| e)
        ),
        DcsConfig::Zookeeper(z) => format!("zookeeper at {}", z.hosts.join(", ")),
        DcsConfig::Consul(c) => format!("consul at {}", c.base_url().unwrap_or_else(|e| e)),
    };
    let dc = &cfg.bootstrap.dcs;
    let (loop_wait, retry) = dc.effective_timing();
    let pg = &cfg.postgresql;
    let lines = [
        format!("{}: the configuration is valid", path.display()),
        format!(
            "  cluster {} (namespace {}), member {}",
            cfg.scope, cfg.namespace, cfg.name
        ),
        format!("  DCS: {dcs}"),
        format!(
            "  REST API: listen {}, connect_address {}",
            cfg.restapi.listen, cfg.restapi.connect_address
        ),
        format!(
            "  PostgreSQL: listen {}, connect_address {}, data_dir {}",
            pg.listen, pg.connect_address, pg.data_dir
        ),
        format!(
            "  bootstrap.dcs timing: ttl {}, loop_wait {loop_wait}, retry_timeout {retry}",
            dc.ttl
        ),
    ];
    lines.iter().map(|l| format!("{l}\n")).collect()
}
