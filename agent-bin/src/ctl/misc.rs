//! `history`, `remove`, `dsn` and `version`.

use super::args::{Format, RoleFilter};
use super::error::{CtlError, CtlResult};
use super::list::{render_cluster, Layout};
use super::prompt::Prompter;
use super::rest::SHORT_TIMEOUT;
use super::session::{members_with_role, Ctx};
use super::table::Table;
use super::{say, say_raw};
use ha_core::{Cluster, Member};
use reqwest::Method;
use serde_json::Value;

/// The history table: TL, LSN (bytes, as stored), Reason, Timestamp, New Leader.
pub fn history_table(cluster: &Cluster) -> Table {
    let rows = cluster
        .history
        .as_ref()
        .map(|h| {
            h.0.iter()
                .map(|e| {
                    vec![
                        Value::from(e.timeline),
                        Value::from(e.switch_lsn),
                        Value::from(e.reason.clone()),
                        Value::from(e.timestamp.clone().unwrap_or_default()),
                        Value::from(e.new_leader.clone().unwrap_or_default()),
                    ]
                })
                .collect()
        })
        .unwrap_or_default();
    Table {
        title: None,
        columns: ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
            .iter()
            .map(|s| s.to_string())
            .collect(),
        rows,
        right_aligned: vec!["TL", "LSN"],
    }
}

/// `history`.
pub async fn history(ctx: &Ctx, cluster: Option<&str>, format: Format) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(cluster)?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    say_raw(&history_table(&cluster).render(format));
    Ok(())
}

/// The three questions of `remove`; `Ok` means go ahead.
pub fn confirm_remove(name: &str, cluster: &Cluster, p: &mut Prompter) -> CtlResult<()> {
    let answer = p.ask("Please confirm the cluster name to remove", None)?;
    if answer != name {
        return Err(CtlError::failed("Cluster names specified do not match"));
    }
    let phrase = "Yes I am aware";
    let answer = p.ask(
        &format!(
            "You are about to remove all information in DCS for {name}, please type: \"{phrase}\""
        ),
        None,
    )?;
    if answer != phrase {
        return Err(CtlError::failed(format!(
            "You did not exactly type \"{phrase}\""
        )));
    }
    if let Some(leader) = &cluster.leader {
        let answer = p.ask(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if answer != leader.name {
            return Err(CtlError::failed(
                "You did not specify the current leader of the cluster",
            ));
        }
    }
    Ok(())
}

/// `remove`.
pub async fn remove(ctx: &Ctx, name: &str, format: Format) -> CtlResult<()> {
    let session = ctx.open(name).await?;
    let cluster = session.read_existing().await?;
    say_raw(&render_cluster(name, &cluster, false, format, Layout::Flat));
    let mut p = Prompter::stdio().with_hint("remove asks three questions; pipe the answers");
    confirm_remove(name, &cluster, &mut p)?;
    session.dcs.delete_cluster().await?;
    Ok(())
}

/// The member `dsn` describes: the leader by default, else by role or name.
pub fn dsn_member<'c>(
    cluster: &'c Cluster,
    role: Option<RoleFilter>,
    member: Option<&str>,
) -> CtlResult<&'c Member> {
    let found = match (role, member) {
        (Some(_), Some(_)) => {
            return Err(CtlError::failed(
                "--role and --member are mutually exclusive options",
            ))
        }
        (None, Some(n)) => cluster.member(n),
        (r, None) => members_with_role(cluster, r.unwrap_or(RoleFilter::Leader))
            .into_iter()
            .next(),
    };
    found.ok_or_else(|| CtlError::failed("Can not find a suitable member"))
}

/// `host=… port=…` of `m`.
pub fn dsn_text(m: &Member) -> CtlResult<String> {
    let (host, port) = m.host_port().ok_or_else(|| {
        CtlError::failed(format!("member {} publishes no usable conn_url", m.name))
    })?;
    Ok(format!("host={host} port={port}"))
}

/// `dsn`.
pub async fn dsn(
    ctx: &Ctx,
    cluster: Option<&str>,
    role: Option<RoleFilter>,
    member: Option<&str>,
) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(cluster)?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    let m = dsn_member(&cluster, role, member)?;
    say(&dsn_text(m)?);
    Ok(())
}

/// `150004` ⇒ `15.4`, `90624` ⇒ `9.6.24`.
pub fn format_pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10_000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10_000, v % 10_000)
    }
}

/// `version [CLUSTER [MEMBERS]]`.
pub async fn version(ctx: &Ctx, cluster: Option<&str>, members: &[String]) -> CtlResult<()> {
    say(&format!(
        "fullautoctl version {}",
        env!("CARGO_PKG_VERSION")
    ));
    let Some(name) = cluster else {
        return Ok(());
    };
    say("");
    let session = ctx.open(name).await?;
    let cluster = session.read_existing().await?;
    let rest = session.rest()?;
    for m in &cluster.members {
        let Some(url) = m.data.api_url.as_deref() else {
            continue;
        };
        if !members.is_empty() && !members.contains(&m.name) {
            continue;
        }
        let answer = rest
            .request(url, Method::GET, "patroni", None, SHORT_TIMEOUT)
            .await
            .and_then(|r| {
                serde_json::from_str::<Value>(&r.body)
                    .map_err(|e| CtlError::Rest(format!("not JSON: {e}")))
            });
        match answer {
            Ok(v) => {
                say(&format!("{}: {}", m.name, member_version_line(&v)));
            }
            Err(e) => say(&format!("{}: failed to get version: {e}", m.name)),
        }
    }
    Ok(())
}

/// What `version` shows for one member's `GET /patroni` answer: fullauto's own
/// version next to the Patroni version it implements (`fullauto 0.1.0 (Patroni 4.1.4)
/// PostgreSQL 15.4`), or `Patroni 4.1.4 PostgreSQL 15.4` for a Patroni member.
pub fn member_version_line(status: &Value) -> String {
    let patroni = status.get("patroni");
    let field = |k: &str| patroni.and_then(|p| p.get(k)).and_then(Value::as_str);
    let compat = field("version").unwrap_or("unknown");
    let pg = status
        .get("server_version")
        .and_then(Value::as_u64)
        .map(|n| format!(" PostgreSQL {}", format_pg_version(n)))
        .unwrap_or_default();
    match field(ha_core::FULLAUTO_VERSION_FIELD) {
        Some(own) => format!("fullauto {own} (Patroni {compat}){pg}"),
        None => format!("Patroni {compat}{pg}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    #[test]
    fn version_lines_name_fullauto_and_the_patroni_version_it_implements() {
        let ours = serde_json::json!({
            "server_version": 150004,
            "patroni": {"version": "4.1.4", "fullauto_version": "0.1.0", "scope": "s", "name": "pg0"}
        });
        assert_eq!(
            member_version_line(&ours),
            "fullauto 0.1.0 (Patroni 4.1.4) PostgreSQL 15.4"
        );
        let patroni = serde_json::json!({"patroni": {"version": "4.0.2"}});
        assert_eq!(member_version_line(&patroni), "Patroni 4.0.2");
    }

    fn e(k: &str, v: &str) -> RawEntry {
        RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(1),
            session: None,
        }
    }

    fn cluster() -> Cluster {
        Cluster::from_entries(vec![
            e("leader", "pg1"),
            e(
                "members/pg0",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres"}"#,
            ),
            e(
                "members/pg1",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres"}"#,
            ),
            e(
                "history",
                r#"[[1,25165984,"no recovery target specified","2026-11-25T10:00:00+00:00","pg1"],[2,33554592,"no recovery target specified"]]"#,
            ),
        ])
    }

    #[test]
    fn history_rows_pad_missing_fields() {
        let t = history_table(&cluster());
        let out = t.render(Format::Pretty);
        assert!(out.contains("|  1 | 25165984 | no recovery target specified | 2026-11-25T10:00:00+00:00 | pg1        |"), "{out}");
        assert!(out.contains("|  2 | 33554592 | no recovery target specified |                           |            |"), "{out}");
        let json: Value = serde_json::from_str(&t.render(Format::Json)).unwrap();
        assert_eq!(json[1]["New Leader"], "");
        assert_eq!(json[0]["LSN"], 25165984);
        assert_eq!(
            t.render(Format::Tsv).lines().next().unwrap(),
            "TL\tLSN\tReason\tTimestamp\tNew Leader"
        );
    }

    fn ask_remove(answers: &str, c: &Cluster) -> CtlResult<()> {
        let mut out = Vec::new();
        let mut p = Prompter::new(answers.as_bytes(), &mut out, false);
        confirm_remove("batman", c, &mut p)
    }

    #[test]
    fn remove_asks_name_phrase_and_leader() {
        let c = cluster();
        assert!(ask_remove("batman\nYes I am aware\npg1\n", &c).is_ok());
        assert_eq!(
            ask_remove("robin\n", &c).unwrap_err().to_string(),
            "Cluster names specified do not match"
        );
        assert_eq!(
            ask_remove("batman\nyes\n", &c).unwrap_err().to_string(),
            "You did not exactly type \"Yes I am aware\""
        );
        assert_eq!(
            ask_remove("batman\nYes I am aware\npg0\n", &c)
                .unwrap_err()
                .to_string(),
            "You did not specify the current leader of the cluster"
        );
        assert!(ask_remove("batman\nYes I am aware\n", &c)
            .unwrap_err()
            .to_string()
            .starts_with("no answer to"));
        let leaderless = Cluster::from_entries(vec![e("members/pg0", "{}")]);
        assert!(ask_remove("batman\nYes I am aware\n", &leaderless).is_ok());
    }

    #[test]
    fn dsn_of_leader_role_or_member() {
        let c = cluster();
        assert_eq!(
            dsn_text(dsn_member(&c, None, None).unwrap()).unwrap(),
            "host=127.0.0.1 port=5432"
        );
        assert_eq!(
            dsn_text(dsn_member(&c, Some(RoleFilter::Replica), None).unwrap()).unwrap(),
            "host=127.0.0.1 port=5433"
        );
        assert_eq!(dsn_member(&c, None, Some("pg0")).unwrap().name, "pg0");
        assert!(dsn_member(&c, None, Some("nope")).is_err());
        assert!(dsn_member(&c, Some(RoleFilter::Any), Some("pg0")).is_err());
    }

    #[test]
    fn pg_versions() {
        assert_eq!(format_pg_version(150004), "15.4");
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(100000), "10.0");
    }
}
