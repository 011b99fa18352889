//! `POST /switchover` and `POST /failover` in spec §4.4's order of checks, then
//! waiting for the outcome.

use super::handlers::{fresh_cluster, App, Reply};
use chrono::{DateTime, FixedOffset, NaiveDateTime};
use ha_core::decision::{
    answer_allows_promotion, sync_allows, sync_restricts, why_not_candidate, NotCandidate,
};
use ha_core::{Cluster, Failover, SynchronousMode};
use serde_json::{Map, Value};
use std::time::Duration;
use tokio::time::Instant;

/// Parses a schedule with Patroni's answers: no time zone ⇒ 400, unparsable or in
/// the past ⇒ 422.
pub(crate) fn parse_schedule(
    text: &str,
    action: &str,
) -> Result<DateTime<FixedOffset>, (u16, String)> {
    let t = text.trim();
    let with_zone = DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M%:z"));
    match with_zone {
        Ok(at) => {
            if at < chrono::Utc::now() {
                Err((422, format!("Cannot schedule {action} in the past")))
            } else {
                Ok(at)
            }
        }
        Err(_) => {
            let naive = [
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M",
            ]
            .iter()
            .any(|f| NaiveDateTime::parse_from_str(t, f).is_ok());
            if naive {
                Err((
                    400,
                    format!("Timezone information is mandatory for the scheduled {action}"),
                ))
            } else {
                Err((422, "Unable to parse scheduled timestamp".to_string()))
            }
        }
    }
}

fn text_field(req: &Map<String, Value>, key: &str) -> Option<String> {
    match req.get(key)? {
        Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn is_sync_mode(c: &Cluster) -> Option<SynchronousMode> {
    let cfg = c.dynamic_config();
    if cfg.is_standby_cluster() {
        return None;
    }
    match cfg.synchronous_mode {
        SynchronousMode::Off => None,
        m => Some(m),
    }
}

/// Patroni's pre-check: `None` when the request can be carried out, else the 412
/// message.
async fn failover_impossible(
    app: &App,
    cluster: &Cluster,
    leader: Option<&str>,
    candidate: Option<&str>,
    action: &str,
) -> Option<String> {
    if let Some(l) = leader {
        if !cluster.is_leader(l) {
            return Some("leader name does not match".into());
        }
    }
    // The engine's candidate rule, asked in Patroni's order of answers: the record's
    // `nofailover` is left to the candidates' own answers below.
    let dc = cluster.dynamic_config();
    let sync = is_sync_mode(cluster).is_some() && sync_restricts(&dc, cluster);
    let leader_name = cluster.leader.as_ref().map(|l| l.name.as_str());
    let members: Vec<&ha_core::Member> = if let Some(c) = candidate {
        if action == "switchover" && sync && !sync_allows(&dc, cluster, c) {
            return Some("candidate name does not match with sync_standby".into());
        }
        let m: Vec<_> = cluster.members.iter().filter(|m| m.name == c).collect();
        if m.is_empty() {
            return Some("candidate does not exists".into());
        }
        m
    } else {
        let m: Vec<_> = cluster
            .members
            .iter()
            .filter(|m| {
                why_not_candidate(m, leader_name, &dc, cluster)
                    .iter()
                    .all(|w| match w {
                        NotCandidate::Leader => false,
                        NotCandidate::NotSyncStandby => !sync,
                        // Patroni asks a synchronous standby without one all the same (it
                        // cannot answer), and every member when nobody leads.
                        NotCandidate::NoApiUrl => sync || leader_name.is_none(),
                        NotCandidate::NoFailover => true,
                    })
            })
            .collect();
        if m.is_empty() {
            return Some(if sync {
                format!("{action} is not possible: can not find sync_standby")
            } else {
                format!("{action} is not possible: cluster does not have members except leader")
            });
        }
        m
    };
    // Probe all candidates at once; the first good answer settles it.
    let mut probes = tokio::task::JoinSet::new();
    for url in members.iter().filter_map(|m| m.data.api_url.clone()) {
        let node = app.node.clone();
        probes.spawn(async move { node.probe_member(&url).await });
    }
    while let Some(answer) = probes.join_next().await {
        if answer
            .ok()
            .flatten()
            .is_some_and(|st| candidate_is_good(&st))
        {
            return None;
        }
    }
    Some(format!(
        "{action} is not possible: no good candidates have been found"
    ))
}

/// `synchronous_mode: on`: a manual failover to a member that is not a synchronous
/// standby may lose acknowledged transactions, so it needs `"force": true`. (Quorum
/// mode needs no such guard: the candidate is promoted only with the voters' votes.)
fn data_loss_risk(cluster: &Cluster, candidate: &str) -> Option<String> {
    if is_sync_mode(cluster) != Some(SynchronousMode::On)
        || sync_allows(&cluster.dynamic_config(), cluster, candidate)
    {
        return None;
    }
    Some(format!(
        "candidate {candidate} is not a synchronous standby: failing over to it may lose \
         transactions acknowledged to clients (data loss); send \"force\": true to do it anyway"
    ))
}

/// A probed member may be promoted: not `nofailover` (or priority ≤ 0) and its
/// watchdog did not fail.
fn candidate_is_good(st: &Value) -> bool {
    let tags: ha_core::Tags = st
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    let watchdog_failed = st
        .get("watchdog_failed")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    answer_allows_promotion(&tags, watchdog_failed)
}

/// Handles both endpoints; `failover` is true for `POST /failover`.
pub(crate) async fn handle(app: &App, req: Map<String, Value>, failover: bool) -> Reply {
    let leader = text_field(&req, "leader");
    let candidate = text_field(&req, "candidate").or_else(|| text_field(&req, "member"));
    let scheduled_at = req
        .get("scheduled_at")
        .filter(|v| !v.is_null())
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string));
    if failover && candidate.is_none() {
        return Reply::text(
            400,
            "Failover could be performed only to a specific candidate",
        );
    }
    // `POST /failover` cannot be scheduled even when it names the leader (Patroni
    // checks the endpoint before it turns such a request into a switchover).
    let failover_endpoint = failover;
    // A failover request naming the leader is a switchover.
    let failover = failover && leader.is_none();
    let action = if failover { "failover" } else { "switchover" };
    if !failover && leader.is_none() {
        return Reply::text(
            400,
            "Switchover could be performed only from a specific leader",
        );
    }
    let status = app.node.status();
    let paused = status.pause || app.node.config().map(|c| c.pause).unwrap_or(false);
    let mut scheduled_iso = None;
    if let Some(at) = &scheduled_at {
        if failover_endpoint {
            return Reply::text(400, "Failover can't be scheduled");
        }
        if paused {
            return Reply::text(400, "Can't schedule switchover in the paused state");
        }
        match parse_schedule(at, action) {
            Ok(t) => scheduled_iso = Some(t.to_rfc3339()),
            Err((code, msg)) => return Reply::text(code, msg),
        }
    } else if paused && candidate.is_none() {
        return Reply::text(
            400,
            "Switchover is possible only to a specific candidate in a paused state",
        );
    }
    if !failover && leader.is_some() && leader == candidate {
        return Reply::text(400, "Switchover target and source are the same");
    }
    let Some(cluster) = fresh_cluster(app).await else {
        return Reply::text(503, "failed to read the cluster from DCS");
    };
    let forced = req.get("force").and_then(Value::as_bool).unwrap_or(false);
    if let Some(c) = candidate.as_deref().filter(|_| failover && !forced) {
        if let Some(why) = data_loss_risk(&cluster, c) {
            return Reply::text(412, why);
        }
    }
    if scheduled_iso.is_none() {
        if let Some(why) = failover_impossible(
            app,
            &cluster,
            leader.as_deref(),
            candidate.as_deref(),
            action,
        )
        .await
        {
            return Reply::text(412, why);
        }
    }
    let old_leader = leader
        .clone()
        .or_else(|| cluster.leader.as_ref().map(|l| l.name.clone()));
    let request = Failover {
        leader: leader.clone(),
        member: candidate.clone(),
        scheduled_at: scheduled_iso.clone(),
    };
    if app.node.request_failover(request).await.is_err() {
        return Reply::text(503, "failed to write failover key into DCS");
    }
    app.node.wake();
    if scheduled_iso.is_some() {
        return Reply::text(202, "Switchover scheduled");
    }
    wait_for_outcome(app, old_leader, candidate, action).await
}

async fn wait_for_outcome(
    app: &App,
    old_leader: Option<String>,
    candidate: Option<String>,
    action: &str,
) -> Reply {
    let loop_wait = app
        .node
        .config()
        .map(|c| c.loop_wait)
        .unwrap_or(10.0)
        .max(10.0);
    let timeout = app
        .opts()
        .switchover_timeout
        .unwrap_or_else(|| Duration::from_secs_f64(2.0 * loop_wait));
    let deadline = Instant::now() + timeout;
    let (done, title) = if action == "failover" {
        ("failed", "Failed")
    } else {
        ("switched", "Switched")
    };
    let cap = if action == "failover" {
        "Failover"
    } else {
        "Switchover"
    };
    while Instant::now() < deadline {
        app.node
            .wait_cluster_change(app.opts().switchover_poll_interval)
            .await;
        let Ok(c) = app.node.read_cluster().await else {
            continue;
        };
        if let Some(l) = &c.leader {
            if Some(&l.name) != old_leader.as_ref() {
                return match &candidate {
                    Some(want) if *want != l.name => Reply::text(
                        200,
                        format!("{title} over to \"{}\" instead of \"{want}\"", l.name),
                    ),
                    _ => Reply::text(200, format!("Successfully {done} over to \"{}\"", l.name)),
                };
            }
            if c.failover_request().is_none() {
                return Reply::text(503, format!("{cap} failed"));
            }
        }
    }
    Reply::text(503, format!("{cap} status unknown"))
}
