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
    let v = serde_json::to_value(&c.value)
        .map_err(|e| CtlError::failed(format!("cannot show the config: {e}")))?;
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
    let rest = session.rest()?;
    let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
    let mut sent = false;
    for m in leader_first(&cluster) {
        let url = m.data.api_url.as_deref().unwrap_or_default();
        match rest
            .request(url, Method::PATCH, "config", Some(&body), SHORT_TIMEOUT)
            .await
        {
            Ok(r) if r.status == 200 => {
                sent = true;
                break;
            }
            Ok(r) => {
                return Err(CtlError::failed(format!(
                    "Failed: {word} cluster management status code={}, ({})",
                    r.status,
                    r.body.trim_end()
                )))
            }
            Err(e) => eprintln!("Warning: member {} is not accessible: {e}", m.name),
        }
    }
    if !sent {
        // No member API answered: write the flag ourselves, with CAS, as the
        // members' PATCH /config would have.
        let current = cluster.config.as_ref().ok_or_else(|| {
            CtlError::failed(
                "Can not find accessible cluster member, and the config key does not exist",
            )
        })?;
        let mut cfg = current.value.clone();
        cfg.pause = paused;
        if !session.dcs.set_config(&cfg, Some(current.version)).await? {
            return Err(CtlError::failed(
                "Config modification aborted due to concurrent changes",
            ));
        }
        eprintln!("Warning: no member REST API answered; wrote the pause flag into the DCS config key directly");
    }
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
