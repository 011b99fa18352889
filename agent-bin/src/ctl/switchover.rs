//! `switchover` and `failover`: checks and questions as patronictl asks them, then
//! `POST /switchover|/failover` to the leader (the candidate when there is no leader),
//! falling back to writing the `failover` key when no API answers.

use super::error::{CtlError, CtlResult};
use super::list::{render_cluster, Layout};
use super::prompt::Prompter;
use super::rest::LONG_TIMEOUT;
use super::schedule::{next_hour_example, parse_scheduled, timestamp};
use super::session::{Ctx, Session};
use super::{args::Format, say, say_raw};
use ha_core::decision::{sync_allows, why_not_candidate, NotCandidate};
use ha_core::{Cluster, Failover};
use reqwest::Method;
use serde_json::{Map, Value};

/// Which of the two commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Planned: from the current leader.
    Switchover,
    /// Promote a candidate, whatever the leader's state.
    Failover,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Switchover => "switchover",
            Action::Failover => "failover",
        }
    }
}

/// What the user asked for on the command line.
#[derive(Debug, Clone, Default)]
pub struct Request {
    /// Cluster name argument.
    pub cluster: Option<String>,
    /// `--leader`.
    pub leader: Option<String>,
    /// `--candidate`.
    pub candidate: Option<String>,
    /// `--scheduled`.
    pub scheduled: Option<String>,
    /// `--force`.
    pub force: bool,
}

/// The decided request: what goes into the REST body (and the failover key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Leader to switch over from (switchover only).
    pub leader: Option<String>,
    /// Candidate (may be empty for a switchover to "any healthy member").
    pub candidate: Option<String>,
    /// ISO time with offset.
    pub scheduled_at: Option<String>,
    /// The operator accepted losing acknowledged transactions (failover to a member
    /// that is not a synchronous standby).
    pub force: bool,
}

impl Plan {
    /// The REST body (`{"leader", "candidate", "scheduled_at"}`).
    pub fn body(&self) -> Value {
        let mut o = Map::new();
        if let Some(l) = &self.leader {
            o.insert("leader".into(), Value::from(l.clone()));
        }
        if let Some(c) = &self.candidate {
            o.insert("candidate".into(), Value::from(c.clone()));
        }
        if let Some(s) = &self.scheduled_at {
            o.insert("scheduled_at".into(), Value::from(s.clone()));
        }
        if self.force {
            o.insert("force".into(), Value::from(true));
        }
        Value::Object(o)
    }
}

/// Names a switchover/failover may promote, sorted: by the engine's candidate rule,
/// every member but the leader whose record allows promotion (not `nofailover`,
/// priority above 0). A member outside the synchronous standbys is offered too (a
/// failover to it asks for confirmation; the REST API refuses such a switchover), and
/// one without `api_url` is left for the REST API to judge.
pub fn candidate_names(cluster: &Cluster, leader: Option<&str>) -> Vec<String> {
    let dc = cluster.dynamic_config();
    let mut names: Vec<String> = cluster
        .members
        .iter()
        .filter(|m| {
            why_not_candidate(m, leader, &dc, cluster)
                .iter()
                .all(|w| match w {
                    NotCandidate::Leader | NotCandidate::NoFailover => false,
                    NotCandidate::NotSyncStandby | NotCandidate::NoApiUrl => true,
                })
        })
        .map(|m| m.name.clone())
        .collect();
    names.sort();
    names
}

/// Asks what is missing and checks everything that can be checked locally; the
/// member's API checks the rest.
pub fn plan(
    action: Action,
    name: &str,
    cluster: &Cluster,
    req: &Request,
    prompter: &mut Prompter,
) -> CtlResult<Plan> {
    let config = cluster.dynamic_config();
    let current_leader = cluster.leader.as_ref().map(|l| l.name.clone());
    let mut leader = req.leader.clone();
    if action == Action::Switchover {
        let Some(current) = current_leader.clone() else {
            return Err(CtlError::failed("This cluster has no leader"));
        };
        if leader.is_none() {
            leader = Some(if req.force {
                current.clone()
            } else {
                let q = if config.is_standby_cluster() {
                    "Standby Leader"
                } else {
                    "Primary"
                };
                prompter.ask(q, Some(&current))?
            });
        }
        if leader.as_deref() != Some(current.as_str()) {
            return Err(CtlError::failed(format!(
                "Member {} is not the leader of cluster {name}",
                leader.unwrap_or_default()
            )));
        }
    } else if let Some(l) = &leader {
        if current_leader.as_deref() != Some(l.as_str()) {
            return Err(CtlError::failed(format!(
                "Member {l} is not the leader of cluster {name}"
            )));
        }
    }
    let excluded = leader.clone().or(current_leader.clone());
    let candidates = candidate_names(cluster, excluded.as_deref());
    if candidates.is_empty() {
        return Err(CtlError::failed(format!(
            "No candidates found to {} to",
            action.name()
        )));
    }
    let mut candidate = req.candidate.clone().filter(|c| !c.is_empty());
    if candidate.is_none() && !req.force {
        let listed: Vec<String> = candidates.iter().map(|c| format!("'{c}'")).collect();
        let answer = prompter.ask(&format!("Candidate [{}]", listed.join(", ")), Some(""))?;
        candidate = Some(answer).filter(|a| !a.is_empty());
    }
    if action == Action::Failover && candidate.is_none() {
        return Err(CtlError::failed(
            "Failover could be performed only to a specific candidate",
        ));
    }
    if let Some(c) = &candidate {
        if !candidates.contains(c) {
            if excluded.as_deref() == Some(c.as_str()) {
                return Err(CtlError::failed(format!(
                    "Member {c} is already the leader of cluster {name}"
                )));
            }
            return Err(CtlError::failed(format!(
                "Member {c} does not exist in cluster {name} or is tagged as nofailover"
            )));
        }
    }
    let mut force = false;
    if action == Action::Failover {
        // The candidate rule's synchronous part (quorum mode needs no warning: a
        // candidate is promoted only with the votes).
        let async_candidate =
            !sync_allows(&config, cluster, candidate.as_deref().unwrap_or_default());
        if async_candidate {
            let c = candidate.clone().unwrap_or_default();
            eprintln!(
                "Warning: {c} is not a synchronous standby: transactions acknowledged to clients \
                 may be lost if it is promoted"
            );
            if !req.force
                && !prompter.confirm(&format!(
                    "Are you sure you want to failover to the asynchronous node {c}?"
                ))?
            {
                return Err(CtlError::failed("Aborting failover"));
            }
            force = true;
        }
    }
    let mut scheduled_at = None;
    if action == Action::Switchover {
        let mut text = req.scheduled.clone();
        if text.is_none() && !req.force {
            text = Some(prompter.ask(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    next_hour_example()
                ),
                Some("now"),
            )?);
        }
        if let Some(at) = parse_scheduled(text.as_deref())? {
            if config.pause {
                return Err(CtlError::failed(
                    "Can't schedule switchover in the paused state",
                ));
            }
            scheduled_at = Some(at.to_rfc3339());
        }
    }
    if !req.force {
        let demote = current_leader
            .as_deref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        let question = match &scheduled_at {
            Some(at) => format!(
                "Are you sure you want to schedule switchover of cluster {name} at {at}{demote}?"
            ),
            None => format!(
                "Are you sure you want to {} cluster {name}{demote}?",
                action.name()
            ),
        };
        if !prompter.confirm(&question)? {
            return Err(CtlError::failed(match scheduled_at {
                Some(_) => format!("Aborting scheduled {}", action.name()),
                None => format!("Aborting {}", action.name()),
            }));
        }
    }
    Ok(Plan {
        leader: if action == Action::Switchover {
            leader
        } else {
            req.leader.clone()
        },
        candidate,
        scheduled_at,
        force,
    })
}

/// Runs the command.
pub async fn run(ctx: &Ctx, action: Action, req: &Request) -> CtlResult<()> {
    let name = ctx.settings.cluster_name(req.cluster.as_deref())?;
    let session = ctx.open(&name).await?;
    let cluster = session.read_existing().await?;
    say("Current cluster topology");
    say_raw(&render_cluster(
        &name,
        &cluster,
        false,
        Format::Pretty,
        Layout::Flat,
    ));
    let mut prompter =
        Prompter::stdio().with_hint("use --force (with --candidate) to run without questions");
    let plan = plan(action, &name, &cluster, req, &mut prompter)?;
    execute(&session, &cluster, action, &plan).await?;
    let after = session.read().await?;
    say_raw(&render_cluster(
        &name,
        &after,
        false,
        Format::Pretty,
        Layout::Flat,
    ));
    Ok(())
}

async fn execute(
    session: &Session,
    cluster: &Cluster,
    action: Action,
    plan: &Plan,
) -> CtlResult<()> {
    let target = cluster
        .leader_member()
        .filter(|m| m.data.api_url.is_some())
        .or_else(|| plan.candidate.as_deref().and_then(|c| cluster.member(c)));
    let rest = session.rest()?;
    let attempt = match target.and_then(|m| m.data.api_url.clone()) {
        None => Err(CtlError::Rest(
            "no member API to send the request to".into(),
        )),
        Some(url) => {
            rest.request(
                &url,
                Method::POST,
                action.name(),
                Some(&plan.body()),
                LONG_TIMEOUT,
            )
            .await
        }
    };
    match attempt {
        Ok(r) if r.status == 200 || r.status == 202 => {
            say(&format!("{} {}", timestamp(), r.body.trim_end()));
            Ok(())
        }
        Ok(r) => Err(CtlError::failed(format!(
            "{} failed, details: {}, {}",
            capitalize(action.name()),
            r.status,
            r.body.trim_end()
        ))),
        Err(e) => {
            eprintln!("Warning: {e}");
            say(&format!(
                "{} Could not {} using Patroni api, falling back to DCS",
                timestamp(),
                action.name()
            ));
            let failover = Failover {
                leader: plan.leader.clone(),
                member: plan.candidate.clone(),
                scheduled_at: plan.scheduled_at.clone(),
            };
            session.dcs.set_failover(&failover, None).await?;
            Ok(())
        }
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn e(k: &str, v: &str) -> RawEntry {
        RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(1),
            session: None,
        }
    }

    fn cluster(extra: &[(&str, &str)]) -> Cluster {
        let mut v = vec![
            e("leader", "pg0"),
            e("members/pg0", r#"{"role":"primary"}"#),
            e("members/pg1", r#"{"role":"replica"}"#),
            e("members/pg2", r#"{"role":"replica"}"#),
            e(
                "members/pg3",
                r#"{"role":"replica","tags":{"nofailover":true}}"#,
            ),
        ];
        v.extend(extra.iter().map(|(k, x)| e(k, x)));
        Cluster::from_entries(v)
    }

    fn plan_with(
        action: Action,
        c: &Cluster,
        req: Request,
        answers: &str,
    ) -> (CtlResult<Plan>, String) {
        let mut out = Vec::new();
        let r = {
            let mut p = Prompter::new(answers.as_bytes(), &mut out, false);
            plan(action, "batman", c, &req, &mut p)
        };
        (r, String::from_utf8(out).unwrap())
    }

    #[test]
    fn forced_switchover_asks_nothing() {
        let req = Request {
            candidate: Some("pg1".into()),
            force: true,
            ..Default::default()
        };
        let (p, out) = plan_with(Action::Switchover, &cluster(&[]), req, "");
        let p = p.unwrap();
        assert_eq!(out, "");
        assert_eq!(p.leader.as_deref(), Some("pg0"));
        assert_eq!(
            p.body(),
            serde_json::json!({"leader": "pg0", "candidate": "pg1"})
        );
    }

    #[test]
    fn interactive_switchover_asks_leader_candidate_time_and_confirmation() {
        let (p, out) = plan_with(
            Action::Switchover,
            &cluster(&[]),
            Request::default(),
            "\npg2\nnow\ny\n",
        );
        let p = p.unwrap();
        assert_eq!(p.candidate.as_deref(), Some("pg2"));
        assert_eq!(p.scheduled_at, None);
        assert!(out.contains("Primary [pg0]: "), "{out}");
        assert!(out.contains("Candidate ['pg1', 'pg2']: "), "{out}");
        assert!(
            out.contains("When should the switchover take place"),
            "{out}"
        );
        assert!(out.contains("Are you sure you want to switchover cluster batman, demoting current leader pg0? [y/N]: "), "{out}");
    }

    #[test]
    fn declining_aborts_and_scheduled_question_names_the_time() {
        let req = Request {
            candidate: Some("pg1".into()),
            scheduled: Some("2030-01-01T10:00+00:00".into()),
            leader: Some("pg0".into()),
            ..Default::default()
        };
        let (p, out) = plan_with(Action::Switchover, &cluster(&[]), req, "n\n");
        assert_eq!(p.unwrap_err().to_string(), "Aborting scheduled switchover");
        assert!(out.contains("schedule switchover of cluster batman at 2030-01-01T10:00:00+00:00, demoting current leader pg0?"), "{out}");
    }

    #[test]
    fn wrong_names_are_refused() {
        let force = |c: &str| Request {
            candidate: Some(c.into()),
            force: true,
            ..Default::default()
        };
        let (p, _) = plan_with(Action::Switchover, &cluster(&[]), force("pg3"), "");
        assert_eq!(
            p.unwrap_err().to_string(),
            "Member pg3 does not exist in cluster batman or is tagged as nofailover"
        );
        let (p, _) = plan_with(Action::Switchover, &cluster(&[]), force("pg0"), "");
        assert_eq!(
            p.unwrap_err().to_string(),
            "Member pg0 is already the leader of cluster batman"
        );
        let req = Request {
            leader: Some("pg1".into()),
            force: true,
            ..Default::default()
        };
        let (p, _) = plan_with(Action::Switchover, &cluster(&[]), req, "");
        assert_eq!(
            p.unwrap_err().to_string(),
            "Member pg1 is not the leader of cluster batman"
        );
        let no_leader = Cluster::from_entries(vec![e("members/pg1", "{}")]);
        let (p, _) = plan_with(Action::Switchover, &no_leader, force("pg1"), "");
        assert_eq!(p.unwrap_err().to_string(), "This cluster has no leader");
    }

    #[test]
    fn failover_needs_a_candidate_but_not_a_leader() {
        let no_leader = Cluster::from_entries(vec![e("members/pg1", "{}"), e("members/pg2", "{}")]);
        let req = Request {
            candidate: Some("pg2".into()),
            force: true,
            ..Default::default()
        };
        let (p, _) = plan_with(Action::Failover, &no_leader, req, "");
        let p = p.unwrap();
        assert_eq!(p.body(), serde_json::json!({"candidate": "pg2"}));
        let (p, _) = plan_with(
            Action::Failover,
            &no_leader,
            Request {
                force: true,
                ..Default::default()
            },
            "",
        );
        assert_eq!(
            p.unwrap_err().to_string(),
            "Failover could be performed only to a specific candidate"
        );
    }

    #[test]
    fn failover_to_async_node_in_sync_mode_needs_confirmation_or_force() {
        let c = cluster(&[
            ("config", r#"{"synchronous_mode":"on"}"#),
            ("sync", r#"{"leader":"pg0","sync_standby":"pg1"}"#),
        ]);
        let ask = Request {
            candidate: Some("pg2".into()),
            ..Default::default()
        };
        let (p, out) = plan_with(Action::Failover, &c, ask.clone(), "n\n");
        assert_eq!(p.unwrap_err().to_string(), "Aborting failover");
        assert!(
            out.contains("Are you sure you want to failover to the asynchronous node pg2? [y/N]"),
            "{out}"
        );
        let (p, _) = plan_with(Action::Failover, &c, ask.clone(), "y\ny\n");
        assert!(p.is_ok());
        let (p, _) = plan_with(Action::Failover, &c, ask, "");
        assert!(p.unwrap_err().to_string().starts_with("no answer to"));
        let forced = Request {
            candidate: Some("pg2".into()),
            force: true,
            ..Default::default()
        };
        let p = plan_with(Action::Failover, &c, forced, "").0.unwrap();
        // The API refuses such a failover unless told the operator accepted the risk.
        assert_eq!(
            p.body(),
            serde_json::json!({"candidate": "pg2", "force": true})
        );
        // The sync standby needs only the usual confirmation.
        let sync = Request {
            candidate: Some("pg1".into()),
            ..Default::default()
        };
        let (p, out) = plan_with(Action::Failover, &c, sync, "y\n");
        assert!(p.is_ok());
        assert!(!out.contains("asynchronous"));
    }

    #[test]
    fn paused_cluster_cannot_schedule() {
        let c = cluster(&[("config", r#"{"pause":true}"#)]);
        let req = Request {
            candidate: Some("pg1".into()),
            scheduled: Some("2030-01-01T10:00+00:00".into()),
            force: true,
            ..Default::default()
        };
        let (p, _) = plan_with(Action::Switchover, &c, req, "");
        assert_eq!(
            p.unwrap_err().to_string(),
            "Can't schedule switchover in the paused state"
        );
    }
}
