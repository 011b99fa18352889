//! The shape of `patroni.yml` described as data, and a walker that checks a parsed
//! document against it, reporting every problem with its dotted path.

use super::loose;
use super::report::{Problem, UNKNOWN_KEY};
use ha_core::model::describe_value;
use serde_json::Value;

/// What a value at some path must look like.
pub(crate) enum Kind {
    /// Anything.
    Any,
    /// A string (numbers and booleans are accepted and read as text).
    Str,
    /// An integer, optionally bounded below.
    Int(Option<i64>),
    /// A number, optionally bounded below.
    Num(Option<f64>),
    /// A boolean (`true`, `"on"`, `1`, …).
    Bool,
    /// One of fixed words (case-insensitive).
    Enum(&'static [&'static str]),
    /// `host:port`.
    Addr(AddrRule),
    /// A list of `host:port` or a comma-separated string of them.
    AddrList(AddrRule),
    /// A list of strings or a comma-separated string.
    StrList,
    /// A list whose items have one kind.
    List(Box<Kind>),
    /// A mapping with known keys.
    Map(Vec<Field>, Extra),
    /// A mapping with free keys whose values have one kind.
    MapOf(Box<Kind>),
    /// The first alternative that fits.
    Either(Vec<Kind>),
}

/// How strictly an address is checked.
#[derive(Clone, Copy)]
pub(crate) struct AddrRule {
    /// A listen address: host may be empty or a wildcard, several hosts comma-separated.
    pub listen: bool,
    /// Whether `:port` may be left out.
    pub port_optional: bool,
}

/// What to do with keys a `Map` does not know.
pub(crate) enum Extra {
    /// Warn: probably a typo.
    Warn,
    /// Keep silently (user-defined keys such as custom tags).
    Allow,
    /// Mappings with a `command` are custom method sections; others warn.
    MethodSections,
    /// Keep, but each value must be a scalar (passed on as `--key=value`).
    Scalars,
}

/// One known key of a mapping.
pub(crate) struct Field {
    pub name: &'static str,
    pub kind: Kind,
    pub required: bool,
}

pub(crate) fn opt(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: false,
    }
}

pub(crate) fn req(name: &'static str, kind: Kind) -> Field {
    Field {
        name,
        kind,
        required: true,
    }
}

pub(crate) fn map(fields: Vec<Field>) -> Kind {
    Kind::Map(fields, Extra::Warn)
}

pub(crate) const ADDR: AddrRule = AddrRule {
    listen: false,
    port_optional: false,
};
const LISTEN: AddrRule = AddrRule {
    listen: true,
    port_optional: false,
};
pub(crate) const HOST_MAYBE_PORT: AddrRule = AddrRule {
    listen: false,
    port_optional: true,
};

impl Kind {
    fn expected(&self) -> String {
        match self {
            Kind::Any => "anything".into(),
            Kind::Str => "a string".into(),
            Kind::Int(_) => "an integer".into(),
            Kind::Num(_) => "a number".into(),
            Kind::Bool => "a boolean".into(),
            Kind::Enum(words) => format!("one of {}", words.join(", ")),
            Kind::Addr(_) => "host:port".into(),
            Kind::AddrList(_) => "a list of host:port (or a comma-separated string)".into(),
            Kind::StrList => "a list of strings (or a comma-separated string)".into(),
            Kind::List(_) => "a list".into(),
            Kind::Map(..) | Kind::MapOf(_) => "a mapping".into(),
            Kind::Either(alts) => alts
                .iter()
                .map(Kind::expected)
                .collect::<Vec<_>>()
                .join(" or "),
        }
    }
}

pub(crate) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Checks `v` at `path` against `kind`, appending every problem to `out`.
pub(crate) fn check(kind: &Kind, v: &Value, path: &str, out: &mut Vec<Problem>) {
    let wrong = |out: &mut Vec<Problem>| {
        out.push(Problem::error(
            path,
            format!("expected {}, got {}", kind.expected(), describe_value(v)),
        ))
    };
    match kind {
        Kind::Any => {}
        Kind::Str => {
            if loose::as_string(v).is_none() {
                wrong(out)
            }
        }
        Kind::Int(min) => match loose::as_i64(v) {
            None => wrong(out),
            Some(i) => {
                if let Some(m) = min.filter(|m| i < *m) {
                    out.push(Problem::error(path, format!("must be >= {m}, got {i}")));
                }
            }
        },
        Kind::Num(min) => match loose::as_f64(v) {
            None => wrong(out),
            Some(f) => {
                if let Some(m) = min.filter(|m| f < *m) {
                    out.push(Problem::error(path, format!("must be >= {m}, got {f}")));
                }
            }
        },
        Kind::Bool => {
            if loose::as_bool(v).is_none() {
                wrong(out)
            }
        }
        Kind::Enum(words) => {
            let ok = loose::as_string(v)
                .is_some_and(|s| words.iter().any(|w| w.eq_ignore_ascii_case(s.trim())));
            if !ok {
                wrong(out)
            }
        }
        Kind::Addr(rule) => match v.as_str() {
            Some(s) => {
                if let Err(why) = check_address(s, *rule) {
                    out.push(Problem::error(path, why));
                }
            }
            None => wrong(out),
        },
        Kind::AddrList(rule) => match loose::as_string_list(v) {
            Some(items) if !matches!(v, Value::Null) => {
                if items.is_empty() {
                    out.push(Problem::error(path, "must name at least one host"));
                }
                for (i, item) in items.iter().enumerate() {
                    if let Err(why) = check_address(item, *rule) {
                        let p = if v.is_array() {
                            format!("{path}[{i}]")
                        } else {
                            path.to_string()
                        };
                        out.push(Problem::error(p, why));
                    }
                }
            }
            _ => wrong(out),
        },
        Kind::StrList => {
            if loose::as_string_list(v).is_none() {
                wrong(out)
            }
        }
        Kind::List(item) => match v.as_array() {
            Some(items) => {
                for (i, x) in items.iter().enumerate() {
                    check(item, x, &format!("{path}[{i}]"), out);
                }
            }
            None => wrong(out),
        },
        Kind::MapOf(item) => match v.as_object() {
            Some(m) => {
                for (k, x) in m {
                    check(item, x, &join(path, k), out);
                }
            }
            None => wrong(out),
        },
        Kind::Map(fields, extra) => match v.as_object() {
            Some(m) => {
                for f in fields {
                    match m.get(f.name) {
                        None | Some(Value::Null) if f.required => {
                            out.push(Problem::error(join(path, f.name), "missing"))
                        }
                        None | Some(Value::Null) => {}
                        Some(x) => check(&f.kind, x, &join(path, f.name), out),
                    }
                }
                for (k, x) in m {
                    if fields.iter().any(|f| f.name == k) {
                        continue;
                    }
                    match extra {
                        Extra::Allow => {}
                        Extra::MethodSections if x.get("command").is_some() => {
                            check(&method_section_kind(), x, &join(path, k), out)
                        }
                        Extra::Scalars => check(&Kind::Str, x, &join(path, k), out),
                        Extra::Warn | Extra::MethodSections => {
                            let known = fields.iter().map(|f| f.name);
                            let msg = match nearest(k, known) {
                                Some(n) => format!("{UNKNOWN_KEY}; did you mean {n}?"),
                                None => UNKNOWN_KEY.to_string(),
                            };
                            out.push(Problem::warning(join(path, k), msg))
                        }
                    }
                }
            }
            None => wrong(out),
        },
        Kind::Either(alts) => {
            for alt in alts {
                let mut tmp = Vec::new();
                check(alt, v, path, &mut tmp);
                if !tmp.iter().any(Problem::is_error) {
                    out.extend(tmp);
                    return;
                }
            }
            wrong(out)
        }
    }
}

/// Checks `host:port` (`[v6]:port`; listen addresses may list several hosts and use
/// an empty host or `*`).
pub(crate) fn check_address(s: &str, rule: AddrRule) -> Result<(), String> {
    let s = s.trim();
    // The port follows the last colon unless that colon belongs to an unbracketed
    // IPv6 address (several colons, no brackets, not a listen list).
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) => {
            let last_host = h.rsplit(',').next().unwrap_or(h);
            let bare_v6 = last_host.contains(':') && !last_host.starts_with('[');
            if bare_v6 && !rule.listen {
                (s, None)
            } else {
                (h, Some(p))
            }
        }
        None => (s, None),
    };
    match port {
        None if rule.port_optional => {}
        None => return Err(format!("expected host:port, got {s:?}")),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => {}
            _ => return Err(format!("invalid port {p:?} in {s:?}")),
        },
    }
    let hosts: Vec<&str> = if rule.listen {
        host.split(',').map(str::trim).collect()
    } else {
        vec![host.trim()]
    };
    for h in hosts {
        let h = h.trim_start_matches('[').trim_end_matches(']');
        if h.is_empty() || h == "*" {
            if rule.listen {
                continue;
            }
            return Err(format!("host missing in {s:?}"));
        }
        if h.chars().any(|c| c.is_whitespace() || c == '/') {
            return Err(format!("invalid host {h:?} in {s:?}"));
        }
    }
    Ok(())
}

fn auth() -> Kind {
    map(vec![req("username", Kind::Str), req("password", Kind::Str)])
}

/// Connection options of one Postgres user (`postgresql.authentication.<user>`).
fn pg_user_kind() -> Kind {
    map(vec![
        req("username", Kind::Str),
        opt("password", Kind::Str),
        opt(
            "sslmode",
            Kind::Enum(&[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ]),
        ),
        opt("sslcert", Kind::Str),
        opt("sslkey", Kind::Str),
        opt("sslpassword", Kind::Str),
        opt("sslrootcert", Kind::Str),
        opt("sslcrl", Kind::Str),
        opt("sslcrldir", Kind::Str),
        opt("sslnegotiation", Kind::Str),
        opt("gssencmode", Kind::Enum(&["disable", "prefer", "require"])),
        opt(
            "channel_binding",
            Kind::Enum(&["disable", "prefer", "require"]),
        ),
    ])
}

/// A custom bootstrap or replica-creation method section; its other keys are
/// passed to the command as `--key=value`.
pub(crate) fn method_section_kind() -> Kind {
    Kind::Map(
        vec![
            req("command", Kind::Str),
            opt("no_params", Kind::Bool),
            opt("keep_existing_recovery_conf", Kind::Bool),
            opt("recovery_conf", Kind::MapOf(Box::new(Kind::Str))),
            opt("no_leader", Kind::Bool),
            opt("keep_data", Kind::Bool),
        ],
        Extra::Scalars,
    )
}

/// `initdb` / `basebackup` options: a list of `flag` or `{key: value}`, or a mapping.
fn options_kind() -> Kind {
    Kind::Either(vec![
        Kind::List(Box::new(Kind::Either(vec![
            Kind::Str,
            Kind::MapOf(Box::new(Kind::Str)),
        ]))),
        Kind::MapOf(Box::new(Kind::Str)),
    ])
}

fn scripts_kind() -> Kind {
    Kind::Either(vec![Kind::Str, Kind::List(Box::new(Kind::Str))])
}

/// Postgres settings that may appear both locally and in the dynamic config.
fn postgresql_shared_fields() -> Vec<Field> {
    vec![
        opt("parameters", Kind::MapOf(Box::new(Kind::Any))),
        opt("parameters_primary", Kind::MapOf(Box::new(Kind::Any))),
        opt("parameters_replica", Kind::MapOf(Box::new(Kind::Any))),
        opt(
            "parameters_standby_leader",
            Kind::MapOf(Box::new(Kind::Any)),
        ),
        opt("pg_hba", Kind::List(Box::new(Kind::Str))),
        opt("pg_ident", Kind::List(Box::new(Kind::Str))),
        opt("recovery_conf", Kind::MapOf(Box::new(Kind::Any))),
        opt("pg_ctl_timeout", Kind::Num(Some(0.0))),
        opt("use_pg_rewind", Kind::Bool),
        opt("use_slots", Kind::Bool),
        opt("rewind", options_kind()),
        opt("basebackup", options_kind()),
        opt("remove_data_directory_on_rewind_failure", Kind::Bool),
        opt("remove_data_directory_on_diverged_timelines", Kind::Bool),
    ]
}

/// The dynamic configuration (`bootstrap.dcs`, and the DCS `config` key).
pub(crate) fn dynamic_config_kind() -> Kind {
    let mut pg = postgresql_shared_fields();
    pg.push(opt("create_replica_methods", Kind::StrList));
    let slot = map(vec![
        opt("type", Kind::Enum(&["physical", "logical"])),
        opt("database", Kind::Str),
        opt("plugin", Kind::Str),
        opt("cluster_type", Kind::Enum(&["any", "primary", "standby"])),
    ]);
    map(vec![
        opt("ttl", Kind::Num(Some(1.0))),
        // Sub-second values are allowed (the fast profile); what keeps them safe is
        // the cross-field rule loop_wait + 2*retry_timeout <= ttl.
        opt("loop_wait", Kind::Num(Some(0.1))),
        opt("retry_timeout", Kind::Num(Some(0.1))),
        opt("maximum_lag_on_failover", Kind::Int(Some(0))),
        opt("maximum_lag_on_syncnode", Kind::Int(Some(-1))),
        opt("max_timelines_history", Kind::Int(Some(0))),
        opt("primary_start_timeout", Kind::Num(Some(0.0))),
        opt("primary_stop_timeout", Kind::Num(Some(0.0))),
        opt("primary_race_backoff", Kind::Num(Some(0.0))),
        opt(
            "synchronous_mode",
            Kind::Either(vec![Kind::Bool, Kind::Enum(&["off", "on", "quorum"])]),
        ),
        opt("synchronous_mode_strict", Kind::Bool),
        opt("synchronous_node_count", Kind::Int(Some(1))),
        opt("failsafe_mode", Kind::Bool),
        opt("check_timeline", Kind::Bool),
        opt("pause", Kind::Bool),
        opt(
            "member_slots_ttl",
            Kind::Either(vec![Kind::Num(Some(0.0)), Kind::Str]),
        ),
        opt("postgresql", Kind::Map(pg, Extra::Warn)),
        opt(
            "standby_cluster",
            map(vec![
                opt("host", Kind::Str),
                opt("port", Kind::Int(Some(1))),
                opt("primary_slot_name", Kind::Str),
                opt("create_replica_methods", Kind::StrList),
                opt("restore_command", Kind::Str),
                opt("archive_cleanup_command", Kind::Str),
                opt("recovery_min_apply_delay", Kind::Str),
                opt("leader_tags", Kind::MapOf(Box::new(Kind::Any))),
            ]),
        ),
        opt("slots", Kind::MapOf(Box::new(Kind::Either(vec![slot])))),
        opt(
            "ignore_slots",
            Kind::List(Box::new(Kind::MapOf(Box::new(Kind::Str)))),
        ),
    ])
}

fn tls_files(fields: &mut Vec<Field>, names: &[&'static str]) {
    for n in names {
        fields.push(opt(n, Kind::Str));
    }
}

/// The whole local config file.
pub(crate) fn config_kind() -> Kind {
    let restapi = map(vec![
        req("listen", Kind::Addr(LISTEN)),
        req("connect_address", Kind::Addr(ADDR)),
        opt("authentication", auth()),
        opt("certfile", Kind::Str),
        opt("keyfile", Kind::Str),
        opt("keyfile_password", Kind::Str),
        opt("cafile", Kind::Str),
        opt("ciphers", Kind::Str),
        opt(
            "verify_client",
            Kind::Enum(&["none", "optional", "required"]),
        ),
        opt("allowlist", Kind::StrList),
        opt("allowlist_include_members", Kind::Bool),
        opt("http_extra_headers", Kind::MapOf(Box::new(Kind::Str))),
        opt("https_extra_headers", Kind::MapOf(Box::new(Kind::Str))),
        opt("request_queue_size", Kind::Int(Some(0))),
        // Refused by the key table (agent-bin/src/config/keys/table.rs).
        opt("thread_pool_size", Kind::Any),
        opt(
            "server_tokens",
            Kind::Enum(&["original", "productonly", "minimal"]),
        ),
    ]);
    let mut ctl = vec![opt("authentication", auth()), opt("insecure", Kind::Bool)];
    tls_files(
        &mut ctl,
        &["cacert", "certfile", "keyfile", "keyfile_password"],
    );
    let bootstrap = Kind::Map(
        vec![
            opt("dcs", dynamic_config_kind()),
            opt("method", Kind::Str),
            opt("initdb", options_kind()),
            opt("pg_hba", Kind::List(Box::new(Kind::Str))),
            opt("post_bootstrap", Kind::Str),
            opt("post_init", Kind::Str),
            opt("users", Kind::MapOf(Box::new(Kind::Any))),
        ],
        Extra::MethodSections,
    );
    let bin_name = map(pg_driver::binaries::RENAMEABLE
        .iter()
        .map(|&n| opt(n, Kind::Str))
        .collect());
    let callbacks = map([
        "on_start",
        "on_stop",
        "on_restart",
        "on_reload",
        "on_role_change",
    ]
    .into_iter()
    .map(|n| opt(n, scripts_kind()))
    .collect());
    let mut postgresql = vec![
        req("listen", Kind::Addr(LISTEN)),
        req("connect_address", Kind::Addr(ADDR)),
        opt("proxy_address", Kind::Addr(ADDR)),
        req("data_dir", Kind::Str),
        opt("config_dir", Kind::Str),
        opt("bin_dir", Kind::Str),
        opt("bin_name", bin_name),
        opt("pgpass", Kind::Str),
        req(
            "authentication",
            map(vec![
                req("superuser", pg_user_kind()),
                req("replication", pg_user_kind()),
                opt("rewind", pg_user_kind()),
            ]),
        ),
        opt("custom_conf", Kind::Str),
        opt("use_unix_socket", Kind::Bool),
        opt("use_unix_socket_repl", Kind::Bool),
        opt("create_replica_methods", Kind::StrList),
        opt("callbacks", callbacks),
        opt("pre_promote", Kind::Str),
        opt("before_stop", Kind::Str),
    ];
    postgresql.extend(postgresql_shared_fields());
    let watchdog = map(vec![
        opt(
            "mode",
            Kind::Either(vec![
                Kind::Enum(&["off", "automatic", "required"]),
                Kind::Bool,
            ]),
        ),
        opt("driver", Kind::Enum(&["default", "testing"])),
        opt("device", Kind::Str),
        opt("safety_margin", Kind::Num(Some(-1.0))),
    ]);
    let tags = Kind::Map(
        vec![
            opt("nofailover", Kind::Bool),
            opt("failover_priority", Kind::Int(Some(0))),
            opt("noloadbalance", Kind::Bool),
            opt("clonefrom", Kind::Bool),
            opt("replicatefrom", Kind::Str),
            opt("nosync", Kind::Bool),
            opt("sync_priority", Kind::Int(Some(0))),
            opt("nostream", Kind::Bool),
        ],
        Extra::Allow,
    );
    // Read by pg-proxy (`fullauto-proxy`); the agent itself ignores the section.
    let proxy = map(vec![
        opt("listen_rw", Kind::Addr(ADDR)),
        opt("listen_ro", Kind::Addr(ADDR)),
        opt("ro_fallback_to_primary", Kind::Bool),
        opt("max_replica_lag", Kind::Int(Some(0))),
        opt("pause_deadline", Kind::Num(Some(0.0))),
        opt("metrics_listen", Kind::Addr(ADDR)),
        opt("auth_file", Kind::Str),
        opt("auth_type", Kind::Enum(&["scram-sha-256", "md5"])),
        opt("name", Kind::Str),
        opt("certfile", Kind::Str),
        opt("keyfile", Kind::Str),
        opt(
            "server_tls_sslmode",
            Kind::Enum(&[
                "disable",
                "allow",
                "prefer",
                "require",
                "verify-ca",
                "verify-full",
            ]),
        ),
        opt("server_tls_ca_file", Kind::Str),
        opt("server_tls_cert_file", Kind::Str),
        opt("server_tls_key_file", Kind::Str),
    ]);
    // Levels, format, mode and loggers are read (and refused) by `LogConfig::from_value`.
    let log = map(vec![
        opt("type", Kind::Enum(&["plain", "json"])),
        opt("level", Kind::Any),
        opt("traceback_level", Kind::Any),
        opt("format", Kind::Any),
        opt("dateformat", Kind::Str),
        opt("static_fields", Kind::MapOf(Box::new(Kind::Any))),
        opt("max_queue_size", Kind::Int(Some(1))),
        opt("dir", Kind::Str),
        opt("mode", Kind::Any),
        opt("file_num", Kind::Int(Some(1))),
        opt("file_size", Kind::Int(Some(1))),
        opt("loggers", Kind::MapOf(Box::new(Kind::Any))),
        opt("deduplicate_heartbeat_logs", Kind::Bool),
    ]);
    map(vec![
        req("scope", Kind::Str),
        opt("namespace", Kind::Str),
        req("name", Kind::Str),
        // Refused by the key table (agent-bin/src/config/keys/table.rs).
        opt("thread_pool_size", Kind::Any),
        opt("thread_stack_size", Kind::Any),
        req("restapi", restapi),
        opt("ctl", map(ctl)),
        opt("etcd3", super::dcs::section_kind("etcd3")),
        opt("etcd", super::dcs::section_kind("etcd")),
        opt("zookeeper", super::dcs::section_kind("zookeeper")),
        opt("consul", super::dcs::section_kind("consul")),
        opt("kubernetes", Kind::Any),
        opt("raft", Kind::Any),
        opt("exhibitor", Kind::Any),
        opt("citus", Kind::Any),
        opt("bootstrap", bootstrap),
        req("postgresql", Kind::Map(postgresql, Extra::MethodSections)),
        opt("watchdog", watchdog),
        opt("tags", tags),
        opt("log", log),
        opt("proxy", proxy),
    ])
}

/// The known key closest to the misspelt `key` (at most a third of its letters, and
/// at least one, different), for "did you mean …?".
pub fn nearest<'a>(key: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (key.chars().count() / 3).max(1);
    known
        .map(|k| (edit_distance(key, k), k))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance (insert, delete, substitute, and a swap of neighbours).
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses() {
        let ok = |s: &str, r| check_address(s, r).is_ok();
        assert!(ok("127.0.0.1:5432", ADDR));
        assert!(ok("[::1]:5432", ADDR));
        assert!(ok("db.example:5432", ADDR));
        assert!(!ok("::1", ADDR));
        assert!(!ok("127.0.0.1", ADDR));
        assert!(!ok(":5432", ADDR));
        assert!(!ok("127.0.0.1:0", ADDR));
        assert!(!ok("127.0.0.1:70000", ADDR));
        assert!(ok("*:5432", LISTEN));
        assert!(ok(":8008", LISTEN));
        assert!(ok("127.0.0.1,::1:5432", LISTEN));
        assert!(ok("0.0.0.0:8008", LISTEN));
        assert!(!ok("0.0.0.0", LISTEN));
        assert!(ok("zk1", HOST_MAYBE_PORT));
        assert!(ok("zk1:2181", HOST_MAYBE_PORT));
        assert!(!ok("zk1:port", HOST_MAYBE_PORT));
    }

    #[test]
    fn typos_get_a_suggestion() {
        let known = ["hosts", "host", "url", "protocol", "parameters"];
        assert_eq!(nearest("urll", known.into_iter()), Some("url"));
        assert_eq!(nearest("protcol", known.into_iter()), Some("protocol"));
        assert_eq!(nearest("paramters", known.into_iter()), Some("parameters"));
        assert_eq!(nearest("xyz", known.into_iter()), None);
    }
}
