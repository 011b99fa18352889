//! Commands that act on chosen members through their REST API: `restart`, `reinit`,
//! `reload` and `flush`.

use super::args::{Format, RoleFilter};
use super::error::{CtlError, CtlResult};
use super::list::{render_cluster, Layout};
use super::prompt::Prompter;
use super::rest::{Reply, RestClient, LONG_TIMEOUT, SHORT_TIMEOUT};
use super::schedule::{next_hour_example, parse_scheduled, timestamp};
use super::session::{api_url, leader_first, members_with_role, Ctx, Session};
use super::{say, say_raw};
use ha_core::{Cluster, Failover, Member};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::time::Duration;

/// Picks the members to act on: the named ones (which must have the role), else after
/// asking (an empty answer means all of them), else with `--force` all of them.
pub fn choose_members<'c>(
    cluster: &'c Cluster,
    name: &str,
    names: &[String],
    role: RoleFilter,
    force: bool,
    action: &str,
    prompter: &mut Prompter,
) -> CtlResult<Vec<&'c Member>> {
    let candidates = members_with_role(cluster, role);
    if names.is_empty() && candidates.is_empty() {
        return Err(CtlError::failed(format!(
            "{name} cluster doesn't have any members"
        )));
    }
    let mut chosen: Vec<String> = names.to_vec();
    if chosen.is_empty() && !force {
        let list: Vec<&str> = candidates.iter().map(|m| m.name.as_str()).collect();
        let answer = prompter.ask(
            &format!(
                "Which member do you want to {action} [{}]?",
                list.join(", ")
            ),
            Some(""),
        )?;
        chosen = answer
            .split([',', ' '])
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect();
    }
    for n in &chosen {
        if !candidates.iter().any(|m| &m.name == n) {
            return Err(CtlError::failed(format!("{n} is not a member of cluster")));
        }
    }
    if chosen.is_empty() {
        return Ok(candidates);
    }
    Ok(candidates
        .into_iter()
        .filter(|m| chosen.contains(&m.name))
        .collect())
}

/// Asks "Are you sure you want to `<action>` members a, b?" unless forced.
pub fn confirm_members(
    members: &[&Member],
    force: bool,
    action: &str,
    scheduled_at: Option<&str>,
    prompter: &mut Prompter,
) -> CtlResult<()> {
    if force {
        return Ok(());
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    let (question, refusal) = match scheduled_at {
        Some(at) => (
            format!(
                "Are you sure you want to schedule {action} of members {} at {at}?",
                names.join(", ")
            ),
            format!("Aborted scheduled {action}"),
        ),
        None => (
            format!(
                "Are you sure you want to {action} members {}?",
                names.join(", ")
            ),
            format!("Aborted {action}"),
        ),
    };
    if prompter.confirm(&question)? {
        Ok(())
    } else {
        Err(CtlError::failed(refusal))
    }
}

/// Prints patronictl's line for a member's answer; `true` when it succeeded.
fn check_response(r: &CtlResult<Reply>, member: &str, action: &str) -> bool {
    match r {
        Ok(r) if r.status < 400 => {
            say(&format!("Success: {action} for member {member}"));
            true
        }
        Ok(r) => {
            say(&format!(
                "Failed: {action} for member {member}, status code={}, ({})",
                r.status,
                r.body.trim_end()
            ));
            false
        }
        Err(e) => {
            say(&format!("Failed: {action} for member {member}, ({e})"));
            false
        }
    }
}

async fn call(
    rest: &RestClient,
    m: &Member,
    method: Method,
    endpoint: &str,
    body: Option<&Value>,
    timeout: Duration,
) -> CtlResult<Reply> {
    rest.request(api_url(m)?, method, endpoint, body, timeout)
        .await
}

fn failures(failed: usize, total: usize, action: &str) -> CtlResult<()> {
    if failed == 0 {
        Ok(())
    } else {
        Err(CtlError::failed(format!(
            "{action} failed on {failed} of {total} members"
        )))
    }
}

/// Checks `X.Y` / `X.Y.Z` as Postgres numbers versions.
pub fn valid_pg_version(v: &str) -> bool {
    let parts: Vec<&str> = v.trim().split('.').collect();
    (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
}

/// `restart` options.
#[derive(Debug, Clone, Default)]
pub struct RestartArgs {
    /// Cluster.
    pub cluster: String,
    /// Member names.
    pub members: Vec<String>,
    /// Role filter.
    pub role: RoleFilter,
    /// One random member only.
    pub any: bool,
    /// `--scheduled`.
    pub scheduled: Option<String>,
    /// `--pg-version`.
    pub pg_version: Option<String>,
    /// `--pending`.
    pub pending: bool,
    /// `--timeout`.
    pub timeout: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// The `POST /restart` body from the options.
pub fn restart_body(
    pending: bool,
    pg_version: Option<&str>,
    schedule: Option<&str>,
    timeout: Option<&str>,
) -> CtlResult<Value> {
    let mut o = Map::new();
    if pending {
        o.insert("restart_pending".into(), json!(true));
    }
    if let Some(v) = pg_version.filter(|v| !v.trim().is_empty()) {
        if !valid_pg_version(v) {
            return Err(CtlError::failed(format!(
                "{v} is not a valid PostgreSQL version (X.Y or X.Y.Z)"
            )));
        }
        o.insert("postgres_version".into(), json!(v.trim()));
    }
    if let Some(s) = schedule {
        o.insert("schedule".into(), json!(s));
    }
    if let Some(t) = timeout.filter(|t| !t.trim().is_empty()) {
        o.insert("timeout".into(), json!(t.trim()));
    }
    Ok(Value::Object(o))
}

/// `restart CLUSTER [MEMBERS]`.
pub async fn restart(ctx: &Ctx, a: &RestartArgs) -> CtlResult<()> {
    let session = ctx.open(&a.cluster).await?;
    let cluster = session.read_existing().await?;
    say_raw(&render_cluster(
        &a.cluster,
        &cluster,
        false,
        Format::Pretty,
        Layout::Flat,
    ));
    let mut p = Prompter::stdio().with_hint("use --force to restart without questions");
    let mut members = choose_members(
        &cluster, &a.cluster, &a.members, a.role, a.force, "restart", &mut p,
    )?;
    if a.any && members.len() > 1 {
        let pick = (std::process::id() as usize
            ^ chrono::Utc::now().timestamp_subsec_nanos() as usize)
            % members.len();
        members = vec![members[pick]];
    }
    let mut scheduled = a.scheduled.clone();
    let mut version = a.pg_version.clone();
    if !a.force {
        if scheduled.is_none() {
            scheduled = Some(p.ask(
                &format!(
                    "When should the restart take place (e.g. {}) ",
                    next_hour_example()
                ),
                Some("now"),
            )?);
        }
        if version.is_none() {
            version = Some(p.ask(
                "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
                Some(""),
            )?);
        }
    }
    let at = parse_scheduled(scheduled.as_deref())?.map(|t| t.to_rfc3339());
    if at.is_some() && cluster.dynamic_config().pause {
        return Err(CtlError::failed(
            "Can't schedule restart in the paused state",
        ));
    }
    let body = restart_body(
        a.pending,
        version.as_deref(),
        at.as_deref(),
        a.timeout.as_deref(),
    )?;
    confirm_members(&members, a.force, "restart", at.as_deref(), &mut p)?;
    let rest = session.rest()?;
    let mut failed = 0;
    for m in &members {
        if at.is_some()
            && a.force
            && m.data
                .extra
                .get("scheduled_restart")
                .is_some_and(|v| !v.is_null())
        {
            let r = call(&rest, m, Method::DELETE, "restart", None, SHORT_TIMEOUT).await;
            check_response(&r, &m.name, "flush scheduled restart");
        }
        match call(&rest, m, Method::POST, "restart", Some(&body), LONG_TIMEOUT).await {
            Ok(r) if r.status == 200 => say(&format!("Success: restart on member {}", m.name)),
            Ok(r) if r.status == 202 => {
                say(&format!("Success: restart scheduled on member {}", m.name))
            }
            Ok(r) if r.status == 409 => {
                failed += 1;
                say(&format!(
                    "Failed: another restart is already scheduled on member {}",
                    m.name
                ));
            }
            Ok(r) => {
                failed += 1;
                say(&format!(
                    "Failed: restart for member {}, status code={}, ({})",
                    m.name,
                    r.status,
                    r.body.trim_end()
                ));
            }
            Err(e) => {
                failed += 1;
                say(&format!("Failed: restart for member {}, ({e})", m.name));
            }
        }
    }
    failures(failed, members.len(), "restart")
}

/// `reinit CLUSTER MEMBERS`; `from_leader` takes the base backup from the leader
/// even when the member would clone from another replica.
pub async fn reinit(
    ctx: &Ctx,
    cluster_name: &str,
    names: &[String],
    force: bool,
    from_leader: bool,
    wait: bool,
) -> CtlResult<()> {
    let session = ctx.open(cluster_name).await?;
    let cluster = session.read_existing().await?;
    say_raw(&render_cluster(
        cluster_name,
        &cluster,
        false,
        Format::Pretty,
        Layout::Flat,
    ));
    let mut p = Prompter::stdio().with_hint("use --force to reinitialize without questions");
    let members = choose_members(
        &cluster,
        cluster_name,
        names,
        RoleFilter::Replica,
        force,
        "reinitialize",
        &mut p,
    )?;
    confirm_members(&members, force, "reinitialize", None, &mut p)?;
    let rest = session.rest()?;
    let mut waiting: Vec<&Member> = Vec::new();
    let mut failed = 0;
    for m in &members {
        let mut body = json!({"force": force, "from_leader": from_leader});
        loop {
            let r = call(
                &rest,
                m,
                Method::POST,
                "reinitialize",
                Some(&body),
                LONG_TIMEOUT,
            )
            .await;
            let started = check_response(&r, &m.name, "reinitialize");
            if !started {
                let in_progress = r
                    .as_ref()
                    .is_ok_and(|r| r.body.trim_end().ends_with(" already in progress"));
                if in_progress
                    && !force
                    && p.confirm("Do you want to cancel it and reinitialize anyway?")?
                {
                    body = json!({"force": true, "from_leader": from_leader});
                    continue;
                }
                failed += 1;
            } else if wait {
                waiting.push(m);
            }
            break;
        }
    }
    let mut shown: Vec<String> = Vec::new();
    while !waiting.is_empty() {
        let names: Vec<String> = waiting.iter().map(|m| m.name.clone()).collect();
        if names != shown {
            say(&format!(
                "Waiting for reinitialize to complete on: {}",
                names.join(", ")
            ));
            shown = names;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for m in waiting {
            let state = call(&rest, m, Method::GET, "patroni", None, SHORT_TIMEOUT)
                .await
                .ok()
                .filter(|r| r.status == 200 || r.status == 503)
                .and_then(|r| serde_json::from_str::<Value>(&r.body).ok())
                .and_then(|v| v.get("state").and_then(Value::as_str).map(str::to_string));
            match state.as_deref() {
                // Not answering (restarting) or still copying: keep waiting.
                None | Some("creating replica") => still.push(m),
                Some(_) => say(&format!("Reinitialize is completed on: {}", m.name)),
            }
        }
        waiting = still;
    }
    failures(failed, members.len(), "reinitialize")
}

/// `reload CLUSTER [MEMBERS]`.
pub async fn reload(
    ctx: &Ctx,
    cluster_name: &str,
    names: &[String],
    role: RoleFilter,
    force: bool,
) -> CtlResult<()> {
    let session = ctx.open(cluster_name).await?;
    let cluster = session.read_existing().await?;
    say_raw(&render_cluster(
        cluster_name,
        &cluster,
        false,
        Format::Pretty,
        Layout::Flat,
    ));
    let mut p = Prompter::stdio().with_hint("use --force to reload without questions");
    let members = choose_members(&cluster, cluster_name, names, role, force, "reload", &mut p)?;
    confirm_members(&members, force, "reload", None, &mut p)?;
    let rest = session.rest()?;
    let loop_wait = Session::loop_wait(&cluster).as_secs_f64();
    let mut failed = 0;
    for m in &members {
        match call(&rest, m, Method::POST, "reload", None, SHORT_TIMEOUT).await {
            Ok(r) if r.status == 200 => say(&format!("No changes to apply on member {}", m.name)),
            Ok(r) if r.status == 202 => {
                say(&format!(
                    "Reload request received for member {} and will be processed within {} seconds",
                    m.name, loop_wait
                ));
            }
            Ok(r) => {
                failed += 1;
                say(&format!(
                    "Failed: reload for member {}, status code={}, ({})",
                    m.name,
                    r.status,
                    r.body.trim_end()
                ));
            }
            Err(e) => {
                failed += 1;
                say(&format!("Failed: reload for member {}, ({e})", m.name));
            }
        }
    }
    failures(failed, members.len(), "reload")
}

/// `flush CLUSTER [MEMBERS] restart|switchover`.
pub async fn flush(
    ctx: &Ctx,
    cluster_name: &str,
    rest_args: &[String],
    role: RoleFilter,
    force: bool,
) -> CtlResult<()> {
    let Some((target, names)) = rest_args.split_last() else {
        return Err(CtlError::failed(
            "flush needs a target: restart or switchover",
        ));
    };
    if target != "restart" && target != "switchover" {
        return Err(CtlError::failed(format!(
            "invalid flush target {target:?}: use restart or switchover"
        )));
    }
    let session = ctx.open(cluster_name).await?;
    let cluster = session.read_existing().await?;
    let rest = session.rest()?;
    if target == "restart" {
        say_raw(&render_cluster(
            cluster_name,
            &cluster,
            false,
            Format::Pretty,
            Layout::Flat,
        ));
        let mut p = Prompter::stdio().with_hint("use --force to flush without questions");
        let members = choose_members(&cluster, cluster_name, names, role, force, "flush", &mut p)?;
        confirm_members(&members, force, "flush", None, &mut p)?;
        let mut failed = 0;
        for m in &members {
            if m.data
                .extra
                .get("scheduled_restart")
                .is_some_and(|v| !v.is_null())
            {
                let r = call(&rest, m, Method::DELETE, "restart", None, SHORT_TIMEOUT).await;
                if !check_response(&r, &m.name, "flush scheduled restart") {
                    failed += 1;
                }
            } else {
                say(&format!("No scheduled restart for member {}", m.name));
            }
        }
        return failures(failed, members.len(), "flush");
    }
    let Some(failover) = cluster
        .failover
        .as_ref()
        .filter(|f| f.value.scheduled_at.is_some())
    else {
        say("No pending scheduled switchover");
        return Ok(());
    };
    for m in leader_first(&cluster) {
        match call(&rest, m, Method::DELETE, "switchover", None, SHORT_TIMEOUT).await {
            Ok(r) if r.status == 200 => {
                say(&format!("Success: {}", r.body.trim_end()));
                return Ok(());
            }
            Ok(r) if r.status == 404 => {
                return Err(CtlError::failed(format!("Failed: {}", r.body.trim_end())));
            }
            Ok(r) => say(&format!(
                "Failed: member={}, status_code={}, ({})",
                m.name,
                r.status,
                r.body.trim_end()
            )),
            Err(e) => eprintln!("Warning: member {} is not accessible: {e}", m.name),
        }
    }
    say(&format!(
        "{} Could not find any accessible member of cluster {cluster_name}",
        timestamp()
    ));
    if session
        .dcs
        .set_failover(&Failover::default(), Some(failover.version))
        .await?
    {
        say("Success: scheduled switchover deleted from the DCS");
        Ok(())
    } else {
        Err(CtlError::failed(
            "the failover key changed meanwhile; nothing was deleted",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn cluster() -> Cluster {
        let e = |k: &str, v: &str| RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(1),
            session: None,
        };
        Cluster::from_entries(vec![
            e("leader", "pg0"),
            e("members/pg0", "{}"),
            e("members/pg1", "{}"),
            e("members/pg2", "{}"),
        ])
    }

    fn choose(
        names: &[&str],
        role: RoleFilter,
        force: bool,
        answers: &str,
    ) -> (CtlResult<Vec<String>>, String) {
        let c = cluster();
        let mut out = Vec::new();
        let r = {
            let mut p = Prompter::new(answers.as_bytes(), &mut out, false);
            let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
            choose_members(&c, "batman", &names, role, force, "restart", &mut p)
                .map(|v| v.iter().map(|m| m.name.clone()).collect())
        };
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn member_choice() {
        assert_eq!(
            choose(&["pg1"], RoleFilter::Any, false, "").0.unwrap(),
            ["pg1"]
        );
        assert_eq!(
            choose(&[], RoleFilter::Replica, true, "").0.unwrap(),
            ["pg1", "pg2"]
        );
        let (r, out) = choose(&[], RoleFilter::Any, false, "pg2\n");
        assert_eq!(r.unwrap(), ["pg2"]);
        assert!(
            out.contains("Which member do you want to restart [pg0, pg1, pg2]?"),
            "{out}"
        );
        assert_eq!(
            choose(&[], RoleFilter::Leader, false, "\n").0.unwrap(),
            ["pg0"]
        );
        assert_eq!(
            choose(&["pg0"], RoleFilter::Replica, true, "")
                .0
                .unwrap_err()
                .to_string(),
            "pg0 is not a member of cluster"
        );
        assert_eq!(
            choose(&["nope"], RoleFilter::Any, true, "")
                .0
                .unwrap_err()
                .to_string(),
            "nope is not a member of cluster"
        );
        assert!(choose(&[], RoleFilter::Any, false, "")
            .0
            .unwrap_err()
            .to_string()
            .starts_with("no answer to"));
    }

    #[test]
    fn confirmation_wording() {
        let c = cluster();
        let ms: Vec<&Member> = c.members.iter().take(2).collect();
        let mut out = Vec::new();
        let r = {
            let mut p = Prompter::new("n\n".as_bytes(), &mut out, false);
            confirm_members(
                &ms,
                false,
                "restart",
                Some("2030-01-01T00:00:00+00:00"),
                &mut p,
            )
        };
        assert_eq!(r.unwrap_err().to_string(), "Aborted scheduled restart");
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("Are you sure you want to schedule restart of members pg0, pg1 at 2030-01-01T00:00:00+00:00? [y/N]"), "{out}");
        let mut sink = Vec::new();
        let mut p = Prompter::new("".as_bytes(), &mut sink, false);
        assert!(confirm_members(&ms, true, "restart", None, &mut p).is_ok());
    }

    #[test]
    fn restart_body_fields() {
        assert_eq!(restart_body(false, None, None, None).unwrap(), json!({}));
        assert_eq!(
            restart_body(
                true,
                Some("15.4"),
                Some("2030-01-01T00:00:00+00:00"),
                Some("30")
            )
            .unwrap(),
            json!({"restart_pending": true, "postgres_version": "15.4", "schedule": "2030-01-01T00:00:00+00:00", "timeout": "30"})
        );
        assert_eq!(
            restart_body(false, Some(""), None, Some(" ")).unwrap(),
            json!({})
        );
        assert!(restart_body(false, Some("fifteen"), None, None).is_err());
        assert!(
            valid_pg_version("9.6.24")
                && valid_pg_version("15.2")
                && !valid_pg_version("15")
                && !valid_pg_version("15.x")
        );
    }
}
