//! `GET /cluster` and `GET /history` bodies.

use ha_core::{format_lsn, Cluster, SynchronousMode};
use serde_json::{json, Map, Value};

/// The `/cluster` document: members sorted by name with their role, state, address
/// and lag behind the leader's last reported position (in bytes, and the replay lag
/// in seconds the member published).
pub fn cluster_json(cluster: &Cluster, scope: &str) -> Value {
    let config = cluster.dynamic_config();
    let standby_cluster = config.is_standby_cluster();
    let sync_mode = if standby_cluster {
        SynchronousMode::Off
    } else {
        config.synchronous_mode
    };
    let sync_role = if sync_mode == SynchronousMode::Quorum {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
    let leader_lsn = cluster
        .status
        .optime
        .or_else(|| cluster.leader_member().and_then(|m| m.data.xlog_location));
    let electability = ha_core::decision::explain(cluster);
    let mut members: Vec<Value> = Vec::new();
    let mut sorted: Vec<_> = cluster.members.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for m in sorted {
        let is_leader = leader == Some(m.name.as_str());
        let role = if is_leader {
            if standby_cluster {
                "standby_leader"
            } else {
                "leader"
            }
        } else if sync_mode != SynchronousMode::Off
            && cluster
                .sync
                .as_ref()
                .is_some_and(|s| s.value.is_standby(&m.name))
        {
            sync_role
        } else {
            "replica"
        };
        let data = serde_json::to_value(&m.data).unwrap_or(Value::Null);
        let state = if is_leader && role == "leader" {
            None
        } else {
            m.data.replication_state.clone().filter(|s| !s.is_empty())
        }
        .or_else(|| m.data.state.as_ref().map(|s| s.as_str().to_string()))
        .unwrap_or_default();
        let mut o = Map::new();
        o.insert("name".into(), json!(m.name));
        o.insert("role".into(), json!(role));
        o.insert("state".into(), json!(state));
        o.insert("api_url".into(), json!(m.data.api_url));
        if let Some((host, port)) = m.host_port() {
            o.insert("host".into(), json!(host));
            o.insert("port".into(), json!(port));
        }
        for k in [
            "timeline",
            "pending_restart",
            "pending_restart_reason",
            "scheduled_restart",
            "tags",
        ] {
            if let Some(v) = data.get(k) {
                o.insert(k.into(), v.clone());
            }
        }
        if !is_leader {
            // Each position with its lag behind the leader's last reported one
            // (0 when ahead), or `unknown` for both when the member reports none.
            let cluster_lsn = leader_lsn.unwrap_or(0);
            for (kind, pos) in [
                ("receive_", m.data.receive_lsn),
                ("replay_", m.data.replay_lsn),
                ("", m.data.xlog_location),
            ] {
                let (lsn, lag) = match pos.filter(|p| *p > 0) {
                    None => (json!("unknown"), json!("unknown")),
                    Some(p) => (json!(format_lsn(p)), json!(cluster_lsn.saturating_sub(p))),
                };
                o.insert(format!("{kind}lsn"), lsn);
                o.insert(format!("{kind}lag"), lag);
            }
            // Added to Patroni's fields: the replay lag in seconds the member
            // published (members that publish none, e.g. Patroni's, have none).
            let key = ha_core::decision::REPLAY_LAG_SECONDS;
            if let Some(secs) = m.data.extra.get(key).filter(|v| v.is_number()) {
                o.insert(key.into(), secs.clone());
            }
        }
        // Added to Patroni's fields: whether this member could take over now and why
        // not (the rule `fullautoctl list --explain` and the dashboard show).
        if let Some(e) = electability.iter().find(|e| e.name == m.name) {
            if !is_leader {
                o.insert("electable".into(), json!(e.electability.is_electable()));
                let why: Vec<Value> = e
                    .electability
                    .blockers()
                    .iter()
                    .map(|b| json!({"code": b.code(), "reason": b.to_string()}))
                    .collect();
                if !why.is_empty() {
                    o.insert("not_electable_because".into(), Value::Array(why));
                }
            }
        }
        members.push(Value::Object(o));
    }
    let mut out = Map::new();
    out.insert("members".into(), Value::Array(members));
    out.insert("scope".into(), json!(scope));
    if config.pause {
        out.insert("pause".into(), json!(true));
    }
    if let Some(f) = cluster.failover_request() {
        if let Some(at) = &f.scheduled_at {
            let mut s = Map::new();
            s.insert("at".into(), json!(at));
            if let Some(l) = &f.leader {
                s.insert("from".into(), json!(l));
            }
            if let Some(c) = &f.member {
                s.insert("to".into(), json!(c));
            }
            out.insert("scheduled_switchover".into(), Value::Object(s));
        }
    }
    Value::Object(out)
}

/// The `/history` list, as stored in the key.
pub fn history_json(cluster: &Cluster) -> Value {
    cluster
        .history
        .as_ref()
        .and_then(|h| serde_json::from_str(&h.to_json()).ok())
        .unwrap_or_else(|| Value::Array(Vec::new()))
}
