//! The status JSON (`GET /patroni`) and the health-check decisions of spec §4.2.

use super::state::{NodeStatus, Xlog};
use ha_core::{Cluster, DynamicConfig, Role, SynchronousMode};
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// One request's view: the node status with the cached cluster and config.
pub(crate) struct View {
    pub status: NodeStatus,
    pub cluster: Option<Cluster>,
    pub config: Option<DynamicConfig>,
}

impl View {
    /// The dynamic config in force: the runner's copy, else the cached cluster's.
    pub fn dynamic_config(&self) -> DynamicConfig {
        self.config
            .clone()
            .or_else(|| self.cluster.as_ref().map(Cluster::dynamic_config))
            .unwrap_or_default()
    }

    fn sync_mode(&self) -> SynchronousMode {
        if self.status.is_standby_cluster {
            SynchronousMode::Off
        } else {
            self.dynamic_config().synchronous_mode
        }
    }

    fn listed_in_sync(&self) -> bool {
        let name = &self.status.patroni.name;
        self.cluster
            .as_ref()
            .and_then(|c| c.sync.as_ref())
            .is_some_and(|s| s.value.is_standby(name))
    }

    /// Listed in `/sync` in `on` mode.
    pub fn is_sync_standby(&self) -> bool {
        self.sync_mode() == SynchronousMode::On && self.listed_in_sync()
    }

    /// Listed in `/sync` in quorum mode.
    pub fn is_quorum_standby(&self) -> bool {
        self.sync_mode() == SynchronousMode::Quorum && self.listed_in_sync()
    }

    /// No cached view, or no leader in it.
    pub fn cluster_unlocked(&self) -> bool {
        self.cluster.as_ref().is_none_or(Cluster::is_unlocked)
    }

    /// The role string reported: a standby cluster's leader reports `standby_leader`.
    pub fn role_name(&self) -> String {
        let s = &self.status;
        if s.is_standby_cluster && s.holds_leader_lease && s.role == Role::Replica {
            "standby_leader".into()
        } else {
            s.role.as_str().to_string()
        }
    }

    /// `/primary`: holds the lease, not a standby cluster, and Postgres answered as
    /// a primary. A node that only expects to become primary never passes.
    pub fn is_primary_ok(&self) -> bool {
        let s = &self.status;
        s.holds_leader_lease && !s.is_standby_cluster && s.is_running() && s.role == Role::Primary
    }

    /// `/standby-leader`: holds the lease in a standby cluster, Postgres in recovery.
    pub fn is_standby_leader_ok(&self) -> bool {
        let s = &self.status;
        s.holds_leader_lease
            && s.is_standby_cluster
            && s.is_running()
            && matches!(s.role, Role::Replica | Role::StandbyLeader)
    }

    /// The leader's WAL position as this replica knows it.
    fn leader_optime(&self) -> u64 {
        let from_dcs = self
            .cluster
            .as_ref()
            .and_then(|c| c.status.optime)
            .unwrap_or(0);
        from_dcs.max(self.status.latest_end_lsn.unwrap_or(0))
    }

    /// Bytes this replica's replay is behind the leader.
    pub fn replay_lag(&self) -> u64 {
        self.leader_optime()
            .saturating_sub(self.status.replayed_location().unwrap_or(0))
    }

    /// Replica check *R* of spec §4.2.
    pub fn is_replica_ok(&self, q: &Query) -> bool {
        let s = &self.status;
        if s.role != Role::Replica || !s.is_running() || s.tags.no_load_balance() {
            return false;
        }
        if let Some(max) = q.lag {
            if self.replay_lag() > max {
                return false;
            }
        }
        if let Some(want) = &q.replication_state {
            if s.replication_state.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    }

    fn tags_match(&self, q: &Query) -> bool {
        q.tags
            .iter()
            .all(|(k, v)| self.status.tags.value_as_text(k).as_deref() == Some(v.as_str()))
    }

    /// `/liveness`.
    pub fn liveness_ok(&self) -> bool {
        if self.status.pause {
            return true;
        }
        let ttl = self.dynamic_config().ttl();
        let limit = if self.status.holds_leader_lease {
            ttl
        } else {
            ttl * 2
        };
        self.status.loop_late_by <= limit
    }

    /// `/readiness` (4.1 rules).
    pub fn readiness_ok(&self, q: &Query) -> bool {
        let s = &self.status;
        if s.holds_leader_lease && s.is_running() {
            return true;
        }
        if !s.is_running() || s.replication_state.as_deref() != Some("streaming") {
            return false;
        }
        if self.cluster.is_none() && !s.failsafe_mode_is_active && s.latest_end_lsn.is_none() {
            return false;
        }
        let max = q
            .lag
            .unwrap_or_else(|| self.dynamic_config().maximum_lag_on_failover.max(0) as u64);
        let pos = if q.mode_write {
            s.received_location()
        } else {
            s.replayed_location()
        };
        self.leader_optime().saturating_sub(pos.unwrap_or(0)) <= max
    }

    /// The health-check status for a GET-style path (spec §4.2 matching order).
    pub fn health_status(&self, path: &str, q: &Query) -> u16 {
        let path = if path == "/" || path.is_empty() {
            "/primary"
        } else {
            path
        };
        let primary = self.is_primary_ok();
        let standby_leader = self.is_standby_leader_ok();
        let leaderish = |ok: bool| if ok { 200 } else { 503 };
        let replica = || if self.is_replica_ok(q) { 200 } else { 503 };
        let code = if path.contains("standby_leader") || path.contains("standby-leader") {
            return leaderish(standby_leader);
        } else if path.contains("leader") {
            return leaderish(primary || standby_leader);
        } else if path.contains("master") || path.contains("primary") || path.contains("read-write")
        {
            return leaderish(primary);
        } else if path.contains("replica") {
            if standby_leader {
                503
            } else {
                replica()
            }
        } else if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
            if primary || standby_leader {
                200
            } else {
                replica()
            }
        } else if path.contains("health") {
            if self.status.is_running() {
                200
            } else {
                503
            }
        } else if self.cluster.is_some() {
            let sync = self.is_sync_standby();
            let quorum = self.is_quorum_standby();
            match path.trim_end_matches('/') {
                "/sync" | "/synchronous" if sync => replica(),
                "/quorum" if quorum => replica(),
                "/async" | "/asynchronous" if !sync && !quorum => replica(),
                "/read-only-sync" | "/read-only-synchronous" => {
                    if primary || standby_leader {
                        200
                    } else if sync {
                        replica()
                    } else {
                        503
                    }
                }
                "/read-only-quorum" => {
                    if primary || standby_leader {
                        200
                    } else if quorum {
                        replica()
                    } else {
                        503
                    }
                }
                _ => 503,
            }
        } else {
            503
        };
        if code == 200 && !self.tags_match(q) {
            503
        } else {
            code
        }
    }

    /// The status JSON of spec §4.3.
    pub fn status_json(&self) -> Value {
        let s = &self.status;
        let mut m = Map::new();
        m.insert("state".into(), json!(s.state));
        m.insert("role".into(), json!(self.role_name()));
        if let Some(t) = &s.postmaster_start_time {
            m.insert("postmaster_start_time".into(), json!(t));
        }
        if let Some(v) = s.server_version {
            m.insert("server_version".into(), json!(v));
        }
        match &s.xlog {
            Some(Xlog::Primary { location }) => {
                m.insert("xlog".into(), json!({ "location": location }));
            }
            Some(Xlog::Replica {
                received_location,
                replayed_location,
                replayed_timestamp,
                paused,
            }) => {
                m.insert(
                    "xlog".into(),
                    json!({
                        "received_location": received_location,
                        "replayed_location": replayed_location,
                        "replayed_timestamp": replayed_timestamp,
                        "paused": paused,
                    }),
                );
            }
            None => {}
        }
        if let Some(t) = s.timeline {
            m.insert("timeline".into(), json!(t));
        }
        if let Some(r) = &s.replication_state {
            m.insert("replication_state".into(), json!(r));
        }
        if !s.replication.is_empty() {
            m.insert("replication".into(), json!(s.replication));
        }
        if self.is_sync_standby() {
            m.insert("sync_standby".into(), json!(true));
        }
        if self.is_quorum_standby() {
            m.insert("quorum_standby".into(), json!(true));
        }
        if s.pause {
            m.insert("pause".into(), json!(true));
        }
        if self.cluster_unlocked() {
            m.insert("cluster_unlocked".into(), json!(true));
        }
        if s.failsafe_mode_is_active {
            m.insert("failsafe_mode_is_active".into(), json!(true));
        }
        if let Some(t) = s.dcs_last_seen {
            m.insert("dcs_last_seen".into(), json!(t));
        }
        let tags = serde_json::to_value(&s.tags).unwrap_or(Value::Null);
        if tags.as_object().is_some_and(|t| !t.is_empty()) {
            m.insert("tags".into(), tags);
        }
        if let Some(id) = &s.database_system_identifier {
            m.insert("database_system_identifier".into(), json!(id));
        }
        if s.pending_restart {
            m.insert("pending_restart".into(), json!(true));
            if let Some(r) = &s.pending_restart_reason {
                m.insert("pending_restart_reason".into(), Value::Object(r.clone()));
            }
        }
        if let Some(r) = &s.scheduled_restart {
            m.insert("scheduled_restart".into(), r.clone());
        }
        if s.watchdog_failed {
            m.insert("watchdog_failed".into(), json!(true));
        }
        m.insert("patroni".into(), json!(s.patroni));
        Value::Object(m)
    }
}

/// Health-check query parameters.
#[derive(Debug, Default)]
pub(crate) struct Query {
    /// `?lag=` in bytes.
    pub lag: Option<u64>,
    /// `?replication_state=`.
    pub replication_state: Option<String>,
    /// `?tag_<key>=<value>`.
    pub tags: BTreeMap<String, String>,
    /// `/readiness?mode=write`: compare the received position instead of replayed.
    pub mode_write: bool,
}

impl Query {
    pub fn parse(raw: Option<&str>) -> Query {
        let mut q = Query::default();
        for pair in raw.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let k = percent_decode(k);
            let v = percent_decode(v);
            if k == "lag" {
                // An unparsable limit means no limit, as in Patroni.
                q.lag = Some(parse_size(&v).unwrap_or(u64::MAX));
            } else if k == "replication_state" {
                q.replication_state = Some(v);
            } else if k == "mode" {
                q.mode_write = v == "write";
            } else if let Some(tag) = k.strip_prefix("tag_") {
                q.tags.insert(tag.to_string(), v);
            }
        }
        q
    }
}

/// Decodes `%xx` and `+` in a query component.
pub(crate) fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'+', _) => out.push(b' '),
            (b'%', Some(b)) => {
                out.push(b);
                i += 2;
            }
            (b, _) => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `16kB`, `64MB`, `1GB`, `1024` (bytes) as Postgres spells sizes (1 kB = 1024 B).
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" | "kb" => 1024.0,
        "MB" | "mb" => 1024.0 * 1024.0,
        "GB" | "gb" => 1024.0 * 1024.0 * 1024.0,
        "TB" | "tb" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    if n < 0.0 {
        return None;
    }
    Some((n * mult) as u64)
}
