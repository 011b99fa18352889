//! `query`: runs SQL on a member as patronictl does. It connects to the member's
//! `conn_url` (the leader by default, `-r ROLE` or `-m MEMBER` otherwise) as libpq
//! would with no other options: `-U`/`PGUSER` (else the OS user), `--password`'s
//! prompt/`PGPASSWORD`/`~/.pgpass`, `-d`/`PGDATABASE`, and `PGSSLMODE` and the
//! other `PGSSL*` variables. SQL errors are printed as a row
//! (`<time>\tERROR, SQLSTATE: 42P01`), not as a failure.

use super::args::{Format, RoleFilter, WatchArgs};
use super::error::{CtlError, CtlResult};
use super::session::{members_with_role, Ctx};
use super::table::Table;
use ha_core::{Cluster, Member};
use pg_driver::config::Endpoint;
use pg_driver::credentials::Credentials;
use serde_json::Value;
use std::time::Duration;
use tokio_postgres::{Client, SimpleQueryMessage};

/// patronictl's `connect_timeout`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// What `query` was asked to do.
#[derive(Debug, Clone)]
pub struct QueryArgs {
    /// Cluster name.
    pub cluster: Option<String>,
    /// `-c`: the SQL.
    pub command: Option<String>,
    /// `-f`: a file with the SQL.
    pub file: Option<std::path::PathBuf>,
    /// `-m`: this member.
    pub member: Option<String>,
    /// `-r`: a member with this role.
    pub role: Option<RoleFilter>,
    /// `-d`: database.
    pub dbname: Option<String>,
    /// `-U`: role to connect as.
    pub username: Option<String>,
    /// `--password`: ask for the password.
    pub password: bool,
    /// `--format`.
    pub format: Format,
    /// `--delimiter` of the tsv format.
    pub delimiter: String,
    /// `-W` / `-w N`.
    pub watch: WatchArgs,
}

/// Rows of one run: column names (none for an error or a statement without rows)
/// and cells.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Column names.
    pub columns: Option<Vec<String>>,
    /// Rows.
    pub rows: Vec<Vec<Value>>,
}

/// Runs `query`.
pub async fn run(ctx: &Ctx, a: &QueryArgs) -> CtlResult<()> {
    let sql = match (&a.file, &a.command) {
        (Some(_), Some(_)) => {
            return Err(CtlError::failed(
                "--file and --command are mutually exclusive options",
            ))
        }
        (Some(f), None) => std::fs::read_to_string(f)
            .map_err(|e| CtlError::Io(format!("cannot read {}: {e}", f.display())))?,
        (None, Some(c)) => c.clone(),
        (None, None) => {
            return Err(CtlError::failed(
                "You need to specify either --command or --file",
            ))
        }
    };
    if a.member.is_some() && a.role.is_some() {
        return Err(CtlError::failed(
            "--role and --member are mutually exclusive options",
        ));
    }
    let password = if a.password {
        Some(read_password()?)
    } else {
        None
    };
    let name = ctx.settings.cluster_name(a.cluster.as_deref())?;
    let session = ctx.open(&name).await?;
    let cluster = session.read().await?;
    let mut client: Option<Client> = None;
    loop {
        let out = match &client {
            Some(c) => execute(c, &sql).await,
            None => match connect(&cluster, a, password.as_deref()).await {
                Ok(c) => {
                    let out = execute(&c, &sql).await;
                    client = Some(c);
                    out
                }
                Err(out) => out,
            },
        };
        if out.columns.is_none() {
            // An error: the next round connects afresh.
            client = None;
        }
        super::say_raw(&render(&out, a.format, &a.delimiter));
        match a.watch.interval() {
            None => return Ok(()),
            Some(secs) => tokio::time::sleep(Duration::from_secs_f64(secs)).await,
        }
    }
}

/// The member to query: `-m NAME` (any role), else the first with `-r ROLE`, else the
/// leader.
pub fn pick_member<'a>(
    cluster: &'a Cluster,
    member: Option<&str>,
    role: Option<RoleFilter>,
) -> Option<&'a Member> {
    let role = match (member, role) {
        (Some(_), _) => RoleFilter::Any,
        (None, Some(r)) => r,
        (None, None) => RoleFilter::Leader,
    };
    members_with_role(cluster, role)
        .into_iter()
        .find(|m| match member {
            Some(want) => m.name == want,
            None => true,
        })
}

async fn connect(
    cluster: &Cluster,
    a: &QueryArgs,
    password: Option<&str>,
) -> Result<Client, Output> {
    let no_member = || {
        let what = match (&a.member, a.role) {
            (Some(m), _) => format!("No connection to member {m} is available"),
            (None, Some(r)) => format!("No connection to role {} is available", role_name(r)),
            (None, None) => "No connection is available".to_string(),
        };
        error_row(what)
    };
    let m = pick_member(cluster, a.member.as_deref(), a.role).ok_or_else(no_member)?;
    let (host, port) = m.host_port().ok_or_else(no_member)?;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let username = a
        .username
        .clone()
        .or_else(|| env("PGUSER"))
        .or_else(|| env("USER"))
        .unwrap_or_else(|| "postgres".into());
    let dbname = a
        .dbname
        .clone()
        .or_else(|| env("PGDATABASE"))
        .unwrap_or_else(|| username.clone());
    let mut creds = Credentials::user(&username);
    creds.password = password
        .map(str::to_string)
        .or_else(|| env("PGPASSWORD"))
        .or_else(|| pgpass_password(&host, port, &dbname, &username));
    let ssl: serde_json::Map<String, Value> = [
        ("sslmode", "PGSSLMODE"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcrl", "PGSSLCRL"),
        ("sslcrldir", "PGSSLCRLDIR"),
    ]
    .iter()
    .filter_map(|(k, var)| env(var).map(|v| (k.to_string(), Value::String(v))))
    .collect();
    if !ssl.is_empty() {
        let mut all = ssl;
        all.insert("username".into(), Value::String(username.clone()));
        creds = serde_json::from_value(Value::Object(all))
            .map_err(|e| error_row(format!("PGSSL* settings: {e}")))?;
        creds.password = password
            .map(str::to_string)
            .or_else(|| env("PGPASSWORD"))
            .or_else(|| pgpass_password(&host, port, &dbname, &username));
    }
    let home = std::env::var_os("HOME").map(std::path::PathBuf::from);
    let to = Endpoint::tcp(&host, port);
    let client = pg_driver::sql::connect(&to, &creds, &dbname, CONNECT_TIMEOUT, home.as_deref())
        .await
        .map_err(|e| error_row(format!("ERROR, SQLSTATE: {}", one_line(&e.to_string()))))?;
    // For a replica/primary role, patronictl double-checks the server itself.
    let want_recovery = match a.role {
        Some(RoleFilter::Replica | RoleFilter::Standby | RoleFilter::StandbyLeader) => Some(true),
        Some(RoleFilter::Primary) => Some(false),
        Some(RoleFilter::Leader | RoleFilter::Any) | None => None,
    };
    if let Some(want) = want_recovery {
        let in_recovery = client
            .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
            .await
            .ok()
            .and_then(|msgs| {
                msgs.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(|v| v != "f"),
                    _ => None,
                })
            })
            .unwrap_or(true);
        if in_recovery != want {
            return Err(no_member());
        }
    }
    Ok(client)
}

fn role_name(r: RoleFilter) -> &'static str {
    match r {
        RoleFilter::Leader => "leader",
        RoleFilter::Primary => "primary",
        RoleFilter::StandbyLeader => "standby-leader",
        RoleFilter::Replica => "replica",
        RoleFilter::Standby => "standby",
        RoleFilter::Any => "any",
    }
}

/// `~/.pgpass` (or `PGPASSFILE`): the first line matching host, port, database and
/// user (`*` matches anything), as libpq reads it.
fn pgpass_password(host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let path = std::env::var_os("PGPASSFILE")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    pgpass_lookup(&text, host, port, db, user)
}

/// The password of the first `.pgpass` line matching the connection.
pub fn pgpass_lookup(text: &str, host: &str, port: u16, db: &str, user: &str) -> Option<String> {
    let port = port.to_string();
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass(line);
            let [h, p, d, u, pw] = <[String; 5]>::try_from(fields).ok()?;
            let ok = |pattern: &str, value: &str| pattern == "*" || pattern == value;
            (ok(&h, host) && ok(&p, &port) && ok(&d, db) && ok(&u, user)).then_some(pw)
        })
}

/// Fields of a `.pgpass` line: `:` separates, `\` escapes `:` and `\`.
fn split_pgpass(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let (Some(next), Some(f)) = (chars.next(), fields.last_mut()) {
                    f.push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            c => {
                if let Some(f) = fields.last_mut() {
                    f.push(c);
                }
            }
        }
    }
    fields
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// patronictl's error row: the local time to the second, and the message.
fn error_row(message: String) -> Output {
    let now = chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string();
    Output {
        columns: None,
        rows: vec![vec![Value::from(now), Value::from(message)]],
    }
}

/// Runs `sql` and returns the rows of its first statement that has any columns.
async fn execute(client: &Client, sql: &str) -> Output {
    // Column types, when the SQL is one statement, so numbers and booleans print
    // as psycopg returns them.
    let types: Option<Vec<tokio_postgres::types::Type>> = client
        .prepare(sql)
        .await
        .ok()
        .map(|s| s.columns().iter().map(|c| c.type_().clone()).collect());
    let msgs = match client.simple_query(sql).await {
        Ok(m) => m,
        Err(e) => {
            let state = e
                .as_db_error()
                .map(|d| d.code().code().to_string())
                .unwrap_or_else(|| one_line(&e.to_string()));
            return error_row(format!("ERROR, SQLSTATE: {state}"));
        }
    };
    let mut columns: Option<Vec<String>> = None;
    let mut rows = Vec::new();
    for m in &msgs {
        match m {
            SimpleQueryMessage::RowDescription(cols) if columns.is_none() => {
                columns = Some(cols.iter().map(|c| c.name().to_string()).collect());
            }
            SimpleQueryMessage::Row(r) => {
                let cells = (0..r.len())
                    .map(|i| cell(r.get(i), types.as_ref().and_then(|t| t.get(i))))
                    .collect();
                rows.push(cells);
            }
            SimpleQueryMessage::CommandComplete(_) if columns.is_some() => break,
            _ => {}
        }
    }
    Output { columns, rows }
}

/// A text value as psycopg would hand it over: NULL as `None`, booleans, numbers.
pub fn cell(text: Option<&str>, ty: Option<&tokio_postgres::types::Type>) -> Value {
    use tokio_postgres::types::Type;
    let Some(t) = text else {
        return Value::Null;
    };
    match ty {
        Some(&Type::BOOL) => Value::Bool(t == "t"),
        Some(&Type::INT2 | &Type::INT4 | &Type::INT8 | &Type::OID) => t
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| Value::from(t)),
        Some(&Type::FLOAT4 | &Type::FLOAT8) => t
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or_else(|| Value::from(t)),
        Some(&Type::TIMESTAMPTZ) => Value::from(crate::api::patroni_timestamp(t)),
        _ => Value::from(t),
    }
}

/// Python's `str()` of a cell in the tsv format.
fn tsv_cell(v: &Value) -> String {
    match v {
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The output in `format`, as patronictl's `print_output` without a title.
pub fn render(out: &Output, format: Format, delimiter: &str) -> String {
    match format {
        Format::Tsv => {
            let mut text = String::new();
            if let Some(cols) = &out.columns {
                text.push_str(&cols.join(delimiter));
                text.push('\n');
            }
            for r in &out.rows {
                let cells: Vec<String> = r.iter().map(tsv_cell).collect();
                text.push_str(&cells.join(delimiter));
                text.push('\n');
            }
            text
        }
        Format::Pretty | Format::Json | Format::Yaml => {
            let width = out.rows.first().map_or(0, Vec::len);
            let columns = out
                .columns
                .clone()
                .unwrap_or_else(|| (1..=width).map(|i| format!("Field {i}")).collect());
            let rows = out
                .rows
                .iter()
                .map(|r| {
                    r.iter()
                        .map(|v| match (format, v) {
                            (Format::Pretty, Value::Null) => Value::from("None"),
                            _ => v.clone(),
                        })
                        .collect()
                })
                .collect();
            if out.rows.is_empty() && out.columns.is_none() {
                return match format {
                    Format::Pretty => String::new(),
                    _ => Table::default().render(format),
                };
            }
            Table {
                title: None,
                columns,
                rows,
                right_aligned: vec![],
            }
            .render(format)
        }
    }
}

fn read_password() -> CtlResult<String> {
    crate::secret::read_line("Password: ", crate::secret::Ask::Stdout).ok_or_else(|| {
        CtlError::NoAnswer {
            question: "Password".into(),
            hint: "give it on stdin or set PGPASSWORD".into(),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_postgres::types::Type;

    #[test]
    fn pgpass_first_matching_line_with_wildcards_and_escapes() {
        let text =
            "# comment\nother:5432:*:postgres:no\n*:5433:*:postgres:a\\:b\\\\c\n*:*:*:*:any\n";
        assert_eq!(
            pgpass_lookup(text, "db1", 5433, "postgres", "postgres").as_deref(),
            Some("a:b\\c")
        );
        assert_eq!(
            pgpass_lookup(text, "db1", 5432, "x", "alice").as_deref(),
            Some("any")
        );
        assert_eq!(pgpass_lookup("h:1:d:u\n", "h", 1, "d", "u"), None);
    }

    #[test]
    fn cells_have_psycopgs_types() {
        assert_eq!(cell(None, Some(&Type::INT4)), Value::Null);
        assert_eq!(cell(Some("t"), Some(&Type::BOOL)), Value::Bool(true));
        assert_eq!(cell(Some("42"), Some(&Type::INT8)), Value::from(42));
        assert_eq!(cell(Some("1.5"), Some(&Type::FLOAT8)), Value::from(1.5));
        assert_eq!(cell(Some("0/3000000"), None), Value::from("0/3000000"));
        assert_eq!(
            cell(Some("2024-01-01 12:00:00.5+00"), Some(&Type::TIMESTAMPTZ)),
            Value::from("2024-01-01 12:00:00.500000+00:00")
        );
    }

    #[test]
    fn tsv_json_and_pretty_output() {
        let out = Output {
            columns: Some(vec!["a".into(), "b".into()]),
            rows: vec![
                vec![Value::from(1), Value::Null],
                vec![Value::Bool(true), Value::from("x")],
            ],
        };
        assert_eq!(render(&out, Format::Tsv, "\t"), "a\tb\n1\tNone\nTrue\tx\n");
        assert_eq!(render(&out, Format::Tsv, ","), "a,b\n1,None\nTrue,x\n");
        assert_eq!(
            render(&out, Format::Json, "\t"),
            "[{\"a\": 1, \"b\": null}, {\"a\": true, \"b\": \"x\"}]\n"
        );
        assert_eq!(
            render(&out, Format::Pretty, "\t"),
            "+------+------+\n| a    | b    |\n+------+------+\n| 1    | None |\n| True | x    |\n+------+------+\n"
        );
        let err = Output {
            columns: None,
            rows: vec![vec![
                Value::from("2026-01-01 00:00:00"),
                Value::from("ERROR, SQLSTATE: 42P01"),
            ]],
        };
        assert_eq!(
            render(&err, Format::Tsv, "\t"),
            "2026-01-01 00:00:00\tERROR, SQLSTATE: 42P01\n"
        );
    }
}
