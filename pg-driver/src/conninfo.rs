//! libpq connection strings and password-file lines, in the forms Patroni writes:
//! `primary_conninfo`, pg_basebackup's `--dbname`, pg_rewind's `--source-server`,
//! the `--connstring` of custom replica methods and the argument of `post_bootstrap`.

use crate::config::{Credentials, Endpoint};
use std::path::Path;

/// How a connection string carries the password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Secret<'a> {
    /// Not at all (the tool finds it through `PGPASSFILE`).
    Omit,
    /// `password=` in the string.
    Inline,
    /// `passfile=` naming the password file.
    Passfile(&'a Path),
}

/// The `(keyword, value)` pairs of a connection as `creds` to `to`, in Patroni's
/// order: dbname, user, password or passfile, host, port, TLS options,
/// application_name, gssencmode, channel_binding.
pub fn params(
    creds: &Credentials,
    to: &Endpoint,
    dbname: &str,
    secret: Secret<'_>,
    application_name: Option<&str>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("dbname", dbname.to_string()),
        ("user", creds.username.clone()),
    ];
    match secret {
        Secret::Omit => {}
        Secret::Inline => {
            if let Some(p) = &creds.password {
                out.push(("password", p.clone()));
            }
        }
        Secret::Passfile(f) => out.push(("passfile", f.display().to_string())),
    }
    out.push(("host", to.host_text()));
    out.push(("port", to.port.to_string()));
    let options = creds.libpq_options();
    let (tls, late): (Vec<_>, Vec<_>) =
        options.into_iter().partition(|(k, _)| k.starts_with("ssl"));
    out.extend(tls);
    if let Some(a) = application_name {
        out.push(("application_name", a.to_string()));
    }
    out.extend(late);
    out
}

/// Sets `key` to `value` unless present (Patroni's defaults for primary_conninfo).
pub fn set_default(params: &mut Vec<(&'static str, String)>, key: &'static str, value: &str) {
    if params.iter().any(|(k, _)| *k == key) {
        return;
    }
    // Keep Patroni's order: sslmode right after port, the others before anything
    // that follows them in its keyword list.
    let pos = match key {
        "sslmode" => params.iter().position(|(k, _)| *k == "port").map(|i| i + 1),
        "gssencmode" => params.iter().position(|(k, _)| *k == "channel_binding"),
        _ => None,
    }
    .unwrap_or(params.len());
    params.insert(pos, (key, value.to_string()));
}

/// `key=value` pairs joined by spaces; values escaped the way Patroni does (a
/// backslash before `'`, `\` and space; an empty value as `''`).
pub fn dsn(params: &[(&str, String)]) -> String {
    params
        .iter()
        .map(|(k, v)| format!("{k}={}", escape(v)))
        .collect::<Vec<_>>()
        .join(" ")
}

fn escape(v: &str) -> String {
    if v.is_empty() {
        return "''".into();
    }
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        if matches!(c, '\'' | '\\' | ' ') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// `postgres://user@host:port/dbname?option=value&…`: the URL form handed to
/// scripts, with the TLS options as query parameters (no password).
pub fn uri(creds: &Credentials, to: &Endpoint, dbname: &str) -> String {
    let host = match &to.host {
        crate::config::Host::Tcp(h) if h.contains(':') => format!("[{h}]"),
        _ => percent(&to.host_text()),
    };
    let mut s = format!(
        "postgres://{}@{host}:{}/{}",
        percent(&creds.username),
        to.port,
        percent(dbname)
    );
    let query: Vec<String> = creds
        .libpq_options()
        .iter()
        .map(|(k, v)| format!("{k}={}", percent(v)))
        .collect();
    if !query.is_empty() {
        s.push('?');
        s.push_str(&query.join("&"));
    }
    s
}

fn percent(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The password file's text for `creds` connecting to `hosts` (comma-separated) and
/// `port`, as Patroni writes it: one `host:port:*:user:password` line per host, and
/// a `localhost` line too when a host is a socket directory. `None` without password.
pub fn pgpass_content(creds: &Credentials, hosts: &str, port: u16) -> Option<String> {
    let password = creds.password.as_ref()?;
    let esc = |v: &str| v.replace('\\', "\\\\").replace(':', "\\:");
    let mut list: Vec<String> = hosts
        .split(',')
        .map(str::trim)
        .filter(|h| !h.is_empty())
        .map(esc)
        .collect();
    if list.is_empty() {
        list.push("*".into());
    }
    if list.iter().any(|h| h.starts_with('/')) && !list.iter().any(|h| h == "localhost") {
        list.push("localhost".into());
    }
    let user = if creds.username.is_empty() {
        "*".to_string()
    } else {
        esc(&creds.username)
    };
    Some(
        list.iter()
            .map(|h| format!("{h}:{port}:*:{user}:{}\n", esc(password)))
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credentials::{Preference, SslMode};

    fn tls_user() -> Credentials {
        Credentials {
            username: "rep".into(),
            password: Some("s3 'cr:t\\".into()),
            sslmode: Some(SslMode::VerifyCa),
            sslcert: Some("/certs/rep.crt".into()),
            sslkey: Some("/certs/rep.key".into()),
            sslrootcert: Some("/certs/ca.crt".into()),
            sslcrl: Some("/certs/ca.crl".into()),
            channel_binding: Some(Preference::Prefer),
            ..Default::default()
        }
    }

    #[test]
    fn dsn_keeps_patroni_order_and_escaping() {
        let p = params(
            &tls_user(),
            &Endpoint::tcp("10.0.0.1", 5432),
            "postgres",
            Secret::Inline,
            Some("node 1"),
        );
        assert_eq!(
            dsn(&p),
            "dbname=postgres user=rep password=s3\\ \\'cr:t\\\\ host=10.0.0.1 port=5432 \
             sslmode=verify-ca sslcert=/certs/rep.crt sslkey=/certs/rep.key \
             sslrootcert=/certs/ca.crt sslcrl=/certs/ca.crl application_name=node\\ 1 \
             channel_binding=prefer"
        );
        let p = params(
            &tls_user(),
            &Endpoint::tcp("db", 6000),
            "postgres",
            Secret::Omit,
            None,
        );
        assert!(!dsn(&p).contains("password"));
        assert_eq!(dsn(&[("password", String::new())]), "password=''");
    }

    #[test]
    fn defaults_go_where_patroni_puts_them() {
        let mut p = params(
            &Credentials::user("rep"),
            &Endpoint::tcp("h", 1),
            "postgres",
            Secret::Passfile(Path::new("/tmp/pgpass0")),
            Some("n"),
        );
        set_default(&mut p, "sslmode", "prefer");
        set_default(&mut p, "gssencmode", "prefer");
        set_default(&mut p, "channel_binding", "prefer");
        assert_eq!(
            dsn(&p),
            "dbname=postgres user=rep passfile=/tmp/pgpass0 host=h port=1 sslmode=prefer \
             application_name=n gssencmode=prefer channel_binding=prefer"
        );
    }

    #[test]
    fn uri_carries_tls_options_as_query() {
        let to = Endpoint {
            host: crate::config::Host::Socket("/run/pg".into()),
            port: 5432,
        };
        assert_eq!(
            uri(&Credentials::user("postgres"), &to, "postgres"),
            "postgres://postgres@%2Frun%2Fpg:5432/postgres"
        );
        assert_eq!(
            uri(&tls_user(), &Endpoint::tcp("::1", 5), "postgres"),
            "postgres://rep@[::1]:5/postgres?sslmode=verify-ca&sslcert=%2Fcerts%2Frep.crt\
             &sslkey=%2Fcerts%2Frep.key&sslrootcert=%2Fcerts%2Fca.crt&sslcrl=%2Fcerts%2Fca.crl\
             &channel_binding=prefer"
        );
    }

    #[test]
    fn pgpass_lines_per_host_with_escapes() {
        assert_eq!(
            pgpass_content(&tls_user(), "10.0.0.1", 5432).unwrap(),
            "10.0.0.1:5432:*:rep:s3 'cr\\:t\\\\\n"
        );
        let mut su = Credentials::user("postgres");
        su.password = Some("pw".into());
        assert_eq!(
            pgpass_content(&su, "/tmp", 5433).unwrap(),
            "/tmp:5433:*:postgres:pw\nlocalhost:5433:*:postgres:pw\n"
        );
        assert_eq!(
            pgpass_content(&su, "a, b", 1).unwrap(),
            "a:1:*:postgres:pw\nb:1:*:postgres:pw\n"
        );
        assert_eq!(pgpass_content(&Credentials::user("x"), "h", 1), None);
    }
}
