//! `show-config`, `edit-config`, `pause` and `resume`: the dynamic config key.

use super::edit::{apply_pairs, invoke_editor, patch_config, pg_pairs, unified_diff};
use super::error::{CtlError, CtlResult};
use super::prompt::Prompter;
use super::rest::SHORT_TIMEOUT;
use super::session::{leader_first, Ctx, Session};
use super::{say, say_raw, yaml};
use ha_core::{Cluster, DynamicConfig, Version};
use reqwest::Method;
use serde_json::{json, Map, Value};
use std::io::Read;
use std::time::{Duration, Instant};

/// The config key as a JSON document (whole-number floats as integers), and its
/// version for CAS.
pub fn config_document(cluster: &Cluster, name: &str) -> CtlResult<(Value, Version)> {
    if let Some(bad) = cluster.malformed.iter().find(|e| e.key == "config") {
        return Err(CtlError::failed(format!(
            "the config key of cluster {name} cannot be read ({}); fix it with PUT /config on a member",
            bad.reason
        )));
    }
    let c = cluster.config.as_ref().ok_or_else(|| {
        CtlError::failed(format!(
            "The config key does not exist in the cluster {name}"
        ))
    })?;
    let v = c.value.to_value();
    Ok((yaml::normalize(&v), c.version))
}

/// `show-config`.
pub async fn show(ctx: &Ctx, cluster: Option<&str>) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(cluster)?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    let (doc, _) = config_document(&cluster, &name)?;
    say_raw(&yaml::to_block(&doc));
    Ok(())
}

/// `edit-config` options.
#[derive(Debug, Clone, Default)]
pub struct EditArgs {
    /// Cluster name argument.
    pub cluster: Option<String>,
    /// `-q`.
    pub quiet: bool,
    /// `-s`.
    pub set: Vec<String>,
    /// `-p`.
    pub pg: Vec<String>,
    /// `--apply`.
    pub apply: Option<String>,
    /// `--replace`.
    pub replace: Option<String>,
    /// `--force`.
    pub force: bool,
}

fn read_yaml_source(source: &str) -> CtlResult<Map<String, Value>> {
    let text = if source == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .map_err(|e| CtlError::Io(format!("cannot read stdin: {e}")))?;
        s
    } else {
        std::fs::read_to_string(source)
            .map_err(|e| CtlError::Io(format!("cannot read {source}: {e}")))?
    };
    let what = if source == "-" { "stdin" } else { source };
    match yaml::parse(&text, what)? {
        Value::Object(o) => Ok(o),
        Value::Null => Ok(Map::new()),
        _ => Err(CtlError::failed(format!("{what} must hold a YAML mapping"))),
    }
}

/// The edited document: `--replace`, then `--apply`, then `-s`/`-p`, and the editor
/// when none of them is given. Returns the new document and the YAML text to diff.
pub fn edited_document(
    current: &Value,
    args: &EditArgs,
    cluster: &str,
    read_source: &mut dyn FnMut(&str) -> CtlResult<Map<String, Value>>,
    editor: &mut dyn FnMut(&str, &str) -> CtlResult<String>,
) -> CtlResult<(Value, String)> {
    let mut changed = current.clone();
    let mut touched = false;
    if let Some(src) = &args.replace {
        let mut fresh = Map::new();
        patch_config(&mut fresh, &read_source(src)?);
        changed = Value::Object(fresh);
        touched = true;
    }
    if let Some(src) = &args.apply {
        let mut m = changed.as_object().cloned().unwrap_or_default();
        patch_config(&mut m, &read_source(src)?);
        changed = Value::Object(m);
        touched = true;
    }
    if !args.set.is_empty() || !args.pg.is_empty() {
        let mut pairs = args.set.clone();
        pairs.extend(pg_pairs(&args.pg));
        changed = apply_pairs(&changed, &pairs)?;
        touched = true;
    }
    if touched {
        let text = yaml::to_block(&changed);
        return Ok((changed, text));
    }
    let text = editor(&yaml::to_block(current), cluster)?;
    let doc = match yaml::parse(&text, "the edited config")? {
        Value::Null => Value::Object(Map::new()),
        v @ Value::Object(_) => v,
        _ => return Err(CtlError::failed("the edited config must be a YAML mapping")),
    };
    Ok((doc, text))
}

/// `edit-config`.
pub async fn edit(ctx: &Ctx, args: &EditArgs) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(args.cluster.as_deref())?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    let (current, version) = config_document(&cluster, &name)?;
    let before = yaml::to_block(&current);
    let (changed, after) = edited_document(
        &current,
        args,
        &name,
        &mut |src| read_yaml_source(src),
        &mut |text, cluster| invoke_editor(text, cluster),
    )?;
    if yaml::normalize(&changed) == current {
        say("Not changed");
        return Ok(());
    }
    let new_config = DynamicConfig::parse(&changed.to_string())
        .map_err(|e| CtlError::failed(format!("the new config is not valid: {e}")))?;
    if !args.quiet {
        say_raw(&unified_diff(&before, &after));
    }
    for problem in new_config.validate() {
        eprintln!("Warning: {problem}");
    }
    let from_stdin = args.apply.as_deref() == Some("-") || args.replace.as_deref() == Some("-");
    if from_stdin && !args.force {
        say("Use --force option to apply changes");
        return Ok(());
    }
    if !args.force {
        let mut p = Prompter::stdio().with_hint("use --force to apply without a question");
        if !p.confirm("Apply these changes?")? {
            return Err(CtlError::failed(
                "Aborted: the configuration was not changed",
            ));
        }
    }
    if !session.dcs.set_config(&new_config, Some(version)).await? {
        return Err(CtlError::failed(
            "Config modification aborted due to concurrent changes",
        ));
    }
    say("Configuration changed");
    Ok(())
}

/// `pause` (`paused = true`) or `resume`.
pub async fn toggle_pause(
    ctx: &Ctx,
    cluster: Option<&str>,
    paused: bool,
    wait: bool,
) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(cluster)?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    let word = if paused { "pause" } else { "resume" };
    if cluster.dynamic_config().pause == paused {
        return Err(CtlError::failed(if paused {
            "Cluster is already paused"
        } else {
            "Cluster is not paused"
        }));
    }
    let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
    patch_on_members(
        &session,
        &cluster,
        &body,
        &format!("{word} cluster management"),
    )
    .await?;
    if wait {
        say(&format!(
            "'{word}' request sent, waiting until it is recognized by all nodes"
        ));
        wait_for_pause_flag(&session, &cluster, paused).await?;
    }
    say(&format!(
        "Success: cluster management is {}",
        if paused { "paused" } else { "resumed" }
    ));
    Ok(())
}

/// Sends a `PATCH /config` to the first member that answers (the leader first); when
/// none does, merges `patch` into the config key with CAS, as the members would have.
/// `what` names the change in messages.
async fn patch_on_members(
    session: &Session,
    cluster: &Cluster,
    patch: &Value,
    what: &str,
) -> CtlResult<()> {
    let rest = session.rest()?;
    for m in leader_first(cluster) {
        let url = m.data.api_url.as_deref().unwrap_or_default();
        match rest
            .request(url, Method::PATCH, "config", Some(patch), SHORT_TIMEOUT)
            .await
        {
            Ok(r) if r.status == 200 => return Ok(()),
            Ok(r) => {
                return Err(CtlError::failed(format!(
                    "Failed: {what} status code={}, ({})",
                    r.status,
                    r.body.trim_end()
                )))
            }
            Err(e) => eprintln!("Warning: member {} is not accessible: {e}", m.name),
        }
    }
    let current = cluster.config.as_ref().ok_or_else(|| {
        CtlError::failed(
            "Can not find accessible cluster member, and the config key does not exist",
        )
    })?;
    let mut doc = serde_json::to_value(&current.value)
        .map_err(|e| CtlError::failed(format!("cannot read the config: {e}")))?;
    crate::api::merge_config_patch(&mut doc, patch);
    let cfg: DynamicConfig = serde_json::from_value(doc)
        .map_err(|e| CtlError::failed(format!("invalid config: {e}")))?;
    if let Some(problem) = cfg.validate().into_iter().next() {
        return Err(CtlError::failed(format!("invalid config: {problem}")));
    }
    if !session.dcs.set_config(&cfg, Some(current.version)).await? {
        return Err(CtlError::failed(
            "Config modification aborted due to concurrent changes",
        ));
    }
    eprintln!(
        "Warning: no member REST API answered; wrote the change into the DCS config key directly"
    );
    Ok(())
}

/// `demote-cluster` options.
#[derive(Debug, Clone, Default)]
pub struct DemoteArgs {
    /// Cluster name argument.
    pub cluster: Option<String>,
    /// `--host`.
    pub host: Option<String>,
    /// `--port`.
    pub port: Option<u16>,
    /// `--restore-command`.
    pub restore_command: Option<String>,
    /// `--primary-slot-name`.
    pub primary_slot_name: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// The `standby_cluster` section `demote-cluster` writes.
pub fn standby_section(a: &DemoteArgs) -> CtlResult<Value> {
    if a.host.is_none() && a.restore_command.is_none() {
        return Err(CtlError::failed(
            "At least --host or --restore-command should be specified",
        ));
    }
    let mut s = Map::new();
    if let Some(h) = &a.host {
        s.insert("host".into(), Value::from(h.clone()));
    }
    if let Some(p) = a.port {
        s.insert("port".into(), Value::from(p));
    }
    if let Some(r) = &a.restore_command {
        s.insert("restore_command".into(), Value::from(r.clone()));
    }
    if let Some(slot) = &a.primary_slot_name {
        s.insert("primary_slot_name".into(), Value::from(slot.clone()));
    }
    let section = Value::Object(s);
    if let Err(problems) = ha_core::StandbyClusterConfig::parse(Some(&section)) {
        return Err(CtlError::failed(problems.join("; ")));
    }
    Ok(section)
}

/// `demote-cluster`: adds `standby_cluster` to the config; the primary becomes the
/// standby leader following that source, its replicas keep following it.
pub async fn demote_cluster(ctx: &Ctx, a: &DemoteArgs) -> CtlResult<()> {
    let section = standby_section(a)?;
    let name = ctx.settings.cluster_name(a.cluster.as_deref())?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    if cluster.dynamic_config().is_standby_cluster() {
        return Err(CtlError::failed("Cluster is already in the standby mode"));
    }
    if !a.force {
        let mut p = Prompter::stdio().with_hint("use --force to demote without a question");
        if !p.confirm(&format!("Are you sure you want to demote {name} cluster?"))? {
            return Err(CtlError::failed("Aborted"));
        }
    }
    let body = json!({ "standby_cluster": section });
    patch_on_members(&session, &cluster, &body, "demote cluster").await?;
    say(&format!(
        "Success: demote request for cluster {name} sent: its leader becomes the standby leader"
    ));
    Ok(())
}

/// `promote-cluster`: removes `standby_cluster`; the standby leader promotes.
pub async fn promote_cluster(ctx: &Ctx, cluster: Option<&str>, force: bool) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(cluster)?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    if !cluster
        .dynamic_config()
        .extra
        .contains_key("standby_cluster")
    {
        return Err(CtlError::failed("Cluster is not in the standby mode"));
    }
    if !force {
        let mut p = Prompter::stdio().with_hint("use --force to promote without a question");
        if !p.confirm(&format!("Are you sure you want to promote {name} cluster?"))? {
            return Err(CtlError::failed("Aborted"));
        }
    }
    let body = json!({ "standby_cluster": Value::Null });
    patch_on_members(&session, &cluster, &body, "promote cluster").await?;
    say(&format!(
        "Success: promote request for cluster {name} sent: its standby leader becomes the primary"
    ));
    Ok(())
}

/// Polls the member keys until every member that publishes an API URL reports the
/// new pause state, for up to `loop_wait + 1` seconds.
async fn wait_for_pause_flag(session: &Session, before: &Cluster, paused: bool) -> CtlResult<()> {
    let watched: Vec<String> = before
        .members
        .iter()
        .filter(|m| m.data.api_url.is_some())
        .map(|m| m.name.clone())
        .collect();
    let limit = Session::loop_wait(before) + Duration::from_secs(1);
    let deadline = Instant::now() + limit;
    loop {
        let cluster = session.read().await?;
        let lagging: Vec<String> = cluster
            .members
            .iter()
            .filter(|m| watched.contains(&m.name) && m.data.pause.unwrap_or(false) != paused)
            .map(|m| m.name.clone())
            .collect();
        if lagging.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CtlError::failed(format!(
                "{} did not recognize the {} state after {} seconds",
                lagging.join(", "),
                if paused { "pause" } else { "resume" },
                limit.as_secs()
            )));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demote_cluster_writes_the_given_source_and_checks_it() {
        let a = DemoteArgs {
            host: Some("10.0.0.1".into()),
            port: Some(6543),
            primary_slot_name: Some("b_leader".into()),
            ..Default::default()
        };
        assert_eq!(
            standby_section(&a).unwrap(),
            json!({"host": "10.0.0.1", "port": 6543, "primary_slot_name": "b_leader"})
        );
        let archive = DemoteArgs {
            restore_command: Some("cp /a/%f %p".into()),
            ..Default::default()
        };
        assert_eq!(
            standby_section(&archive).unwrap(),
            json!({"restore_command": "cp /a/%f %p"})
        );
        assert!(standby_section(&DemoteArgs::default()).is_err());
        let bad_slot = DemoteArgs {
            primary_slot_name: Some("Bad-Slot".into()),
            ..a
        };
        let err = standby_section(&bad_slot).unwrap_err().to_string();
        assert!(err.contains("standby_cluster.primary_slot_name"), "{err}");
    }

    fn run(
        current: Value,
        args: EditArgs,
        source: Value,
        edited: &str,
    ) -> CtlResult<(Value, String)> {
        let src = source.as_object().cloned().unwrap_or_default();
        edited_document(
            &current,
            &args,
            "batman",
            &mut |_| Ok(src.clone()),
            &mut |_, _| Ok(edited.to_string()),
        )
    }

    #[test]
    fn set_pg_apply_and_replace_compose_in_patronis_order() {
        let cur =
            json!({"ttl": 30, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        let args = EditArgs {
            set: vec!["ttl=40".into()],
            pg: vec!["max_connections=200".into()],
            ..Default::default()
        };
        let (doc, text) = run(cur.clone(), args, json!({}), "").unwrap();
        assert_eq!(
            doc,
            json!({"ttl": 40, "loop_wait": 10, "postgresql": {"parameters": {"work_mem": "4MB", "max_connections": 200}}})
        );
        assert!(text.contains("ttl: 40\n"));
        let args = EditArgs {
            apply: Some("f".into()),
            set: vec!["loop_wait=5".into()],
            ..Default::default()
        };
        let (doc, _) = run(
            cur.clone(),
            args,
            json!({"ttl": 20, "postgresql": null}),
            "",
        )
        .unwrap();
        assert_eq!(doc, json!({"ttl": 20, "loop_wait": 5}));
        let args = EditArgs {
            replace: Some("f".into()),
            ..Default::default()
        };
        let (doc, _) = run(cur, args, json!({"ttl": 25, "drop": null}), "").unwrap();
        assert_eq!(doc, json!({"ttl": 25}));
    }

    #[test]
    fn editor_result_is_parsed_and_must_be_a_mapping() {
        let cur = json!({"ttl": 30});
        let (doc, text) = run(cur.clone(), EditArgs::default(), json!({}), "ttl: 31\n").unwrap();
        assert_eq!(doc, json!({"ttl": 31}));
        assert_eq!(text, "ttl: 31\n");
        let (doc, _) = run(cur.clone(), EditArgs::default(), json!({}), "").unwrap();
        assert_eq!(doc, json!({}));
        assert!(run(cur.clone(), EditArgs::default(), json!({}), "- a\n").is_err());
        assert!(run(cur, EditArgs::default(), json!({}), "ttl: [").is_err());
    }

    #[test]
    fn config_document_needs_a_readable_key() {
        let e = config_document(&Cluster::default(), "batman")
            .unwrap_err()
            .to_string();
        assert_eq!(e, "The config key does not exist in the cluster batman");
        let entry = |value: &str| ha_core::RawEntry {
            key: "config".into(),
            value: value.into(),
            version: Version(3),
            session: None,
        };
        let bad = Cluster::from_entries(vec![entry("{not json")]);
        let e = config_document(&bad, "batman").unwrap_err().to_string();
        assert!(
            e.starts_with("the config key of cluster batman cannot be read ("),
            "{e}"
        );
        let ok = Cluster::from_entries(vec![entry(
            r#"{"ttl":20.0,"postgresql":{"parameters":{"a":1}}}"#,
        )]);
        let (doc, v) = config_document(&ok, "batman").unwrap();
        assert_eq!(v, Version(3));
        assert_eq!(doc["ttl"], json!(20));
        assert_eq!(doc["postgresql"]["parameters"]["a"], json!(1));
    }
}
