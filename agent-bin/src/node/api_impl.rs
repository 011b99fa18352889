//! The REST API's view of the running agent: snapshots from the runner, DCS writes
//! for config and switchover requests.

use crate::api::state::FailsafeReply;
use crate::api::state::{
    AgentInfo, CancelSwitchover, ConfigWrite, MemberCallError, NodeApi, NodeStatus,
    ReinitializeError, ReplicationRow, RestartOutcome, RestartRequest, Xlog,
};
use crate::config::Config;
use async_trait::async_trait;
use ha_core::decision::{Busy, OperatorRequest};
use ha_core::runner::{NodeSnapshot, RunnerHandle};
use ha_core::{
    Clock, Cluster, Dcs, DcsError, DynamicConfig, Failover, PgProcess, Postgres as _, Role,
};

/// The member-record field of a pending scheduled restart (Patroni's name).
const SCHEDULED_RESTART: &str = "scheduled_restart";
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// How long `GET /patroni` waits for live WAL positions before answering with the HA
/// loop's: a peer probing in a leader race gives up after `ttl / 4` (300 ms at least),
/// and a slow answer must not make a healthy member look unreachable.
const LIVE_POSITIONS_BUDGET: Duration = Duration::from_millis(150);

/// How long a switchover request waits for the checkpoint it runs first.
const PRE_SWITCHOVER_CHECKPOINT: Duration = Duration::from_secs(10);

/// How long a health check (`/primary`, `/replica`, ...) waits for Postgres when the
/// HA loop's last look did not find it running: load balancers wait seconds for an
/// answer (HAProxy's `timeout check`), and a loaded primary must not be reported
/// down because its answer took longer than a leader race could wait.
const CHECK_BUDGET: Duration = Duration::from_secs(1);

/// Implements [`NodeApi`] over a runner handle.
pub struct AgentApi {
    /// The config file as last (re)loaded.
    pub(super) cfg: tokio::sync::watch::Receiver<Config>,
    pub(super) handle: RunnerHandle,
    pub(super) dcs: Arc<dyn Dcs>,
    pub(super) clock: Arc<dyn Clock>,
    pub(super) http: crate::api::SharedClient,
    pub(super) scheduled_restart: super::scheduled_restart::RestartSchedule,
    pub(super) reloader: std::sync::Arc<super::reload::ConfigReloader>,
    /// The local server, for live WAL positions in `GET /patroni`.
    pub(super) pg: Arc<pg_driver::PgDriver>,
}

impl AgentApi {
    /// The snapshot's status with the role and WAL positions read from Postgres now,
    /// within `budget` (the snapshot stands if Postgres does not answer in time).
    async fn live_status_within(&self, budget: Duration) -> NodeStatus {
        let mut snap = self.handle.snapshot();
        // A stopped (SIGSTOP) postmaster accepts no new connection; the kept one
        // might still answer, but clients could not connect.
        let reachable = !self.pg.postmaster_stopped();
        if let Some(pg) = snap.pg.as_mut().filter(|_| reachable) {
            match tokio::time::timeout(budget, self.pg.wal_positions()).await {
                // Same role as the HA loop saw: only the positions moved on.
                Ok(Ok(now)) if now.in_recovery == pg.in_recovery => {
                    pg.process = PgProcess::Running;
                    pg.wal_lsn = now.wal_lsn;
                    pg.receive_lsn = now.receive_lsn;
                    pg.replay_lsn = now.replay_lsn;
                }
                // (Re)started since the HA loop looked, or its health query failed
                // (a loaded server, a lock it waited for) while this short one is
                // answered: it answers queries now, in the role it reports.
                Ok(Ok(now)) if pg.process != PgProcess::Running => {
                    pg.process = PgProcess::Running;
                    pg.in_recovery = now.in_recovery;
                    pg.wal_lsn = now.wal_lsn;
                    pg.receive_lsn = now.receive_lsn;
                    pg.replay_lsn = now.replay_lsn;
                }
                // A role change in progress, an error, or a server too slow to answer
                // within the budget: the HA loop's view stands.
                _ => {}
            }
        }
        self.status_of(&snap)
    }

    fn status_of(&self, snap: &NodeSnapshot) -> NodeStatus {
        let mut status = status_from_snapshot(
            &self.cfg.borrow(),
            snap,
            self.clock.now(),
            self.clock.wall_millis(),
        );
        status.scheduled_restart = self.scheduled_restart.shown();
        // The observation can be a cycle old: a postmaster that died since is not
        // "running" (Patroni asks Postgres for every health check and says "unknown").
        if status.state == "running" && !self.pg.postmaster_running() {
            status.state = "unknown".to_string();
        }
        status
    }

    fn ttl(&self, snap: &NodeSnapshot) -> Duration {
        self.dynamic_config(snap).ttl()
    }

    fn dynamic_config(&self, snap: &NodeSnapshot) -> DynamicConfig {
        snap.state
            .config
            .clone()
            .unwrap_or_else(|| self.cfg.borrow().bootstrap.dcs.clone())
    }

    /// How long an operator request may wait for the HA loop to take it up: a busy
    /// cycle may take a DCS round trip and a peer probe.
    fn cycle_wait(&self) -> Duration {
        let snap = self.handle.snapshot();
        let dc = self.dynamic_config(&snap);
        2 * dc.loop_wait() + 2 * dc.retry_timeout() + Duration::from_secs(5)
    }

    /// How long a restart may take in all: the request's own `timeout`, else a stop
    /// and a start at `pg_ctl_timeout` each.
    fn restart_wait(&self, request: &RestartRequest) -> Duration {
        let pg_ctl = super::settings::runner_settings(&self.cfg.borrow()).pg_ctl_timeout;
        let own = request.timeout.map(Duration::from_secs);
        self.cycle_wait() + own.unwrap_or(2 * pg_ctl)
    }
}

/// Asks the runner for a restart and waits for it to finish.
async fn restart_now(handle: &RunnerHandle, wait: Duration) -> RestartOutcome {
    let answer = handle.request(OperatorRequest::Restart);
    match tokio::time::timeout(wait, answer).await {
        Ok(Ok(Ok(()))) => RestartOutcome::Restarted,
        Ok(Ok(Err(why))) => RestartOutcome::Failed(why.to_string()),
        Ok(Err(_)) => RestartOutcome::Failed("restart failed".into()),
        Err(_) => RestartOutcome::Failed("restart failed: it did not finish in time".into()),
    }
}

/// The status JSON fields from a runner snapshot. Role and state come from the last
/// successful observation: a node is reported primary only once Postgres answered
/// that it is not in recovery.
pub fn status_from_snapshot(
    cfg: &Config,
    snap: &NodeSnapshot,
    now: ha_core::MonoTime,
    wall_ms: i64,
) -> NodeStatus {
    let pg = snap.pg.as_ref();
    let state = match pg.map(|p| p.process) {
        Some(PgProcess::Running) => "running",
        Some(PgProcess::Starting) => "starting",
        Some(PgProcess::Crashed) => "crashed",
        Some(PgProcess::Hung) => "unknown",
        Some(PgProcess::Stopped) | None => match snap.busy {
            Some(Busy::Clone | Busy::Reinitialize) => "creating replica",
            Some(Busy::Restart) => "restarting",
            Some(Busy::Bootstrap) => "initializing new cluster",
            Some(Busy::Start) => "starting",
            // No state name of their own while Postgres is down.
            Some(Busy::Promote | Busy::Demote | Busy::CopySlots) | None => "stopped",
        },
    };
    let role = match pg {
        Some(p) if p.is_primary() => Role::Primary,
        Some(p) if p.is_replica() => Role::Replica,
        Some(p) if p.data_dir == ha_core::DataDirState::Empty => Role::Uninitialized,
        _ => Role::Demoted,
    };
    let xlog = pg.and_then(|p| {
        if p.is_primary() {
            p.wal_lsn.map(|location| Xlog::Primary { location })
        } else if p.is_replica() {
            Some(Xlog::Replica {
                received_location: p.receive_lsn,
                replayed_location: p.replay_lsn,
                replayed_timestamp: None,
                paused: false,
            })
        } else {
            None
        }
    });
    let dc = snap
        .state
        .config
        .clone()
        .unwrap_or_else(|| cfg.bootstrap.dcs.clone());
    let since_seen = snap.state.dcs_last_seen.map(|t| now.since(t));
    NodeStatus {
        state: state.to_string(),
        role,
        postmaster_start_time: pg.and_then(|p| {
            p.postmaster_start_time
                .as_deref()
                .map(crate::api::patroni_timestamp)
        }),
        server_version: pg.and_then(|p| p.server_version),
        xlog,
        timeline: pg.and_then(|p| p.timeline),
        replication_state: pg
            .filter(|p| p.is_replica())
            .and_then(|p| p.replication_state.clone()),
        latest_end_lsn: None,
        replication: pg
            .map(|p| {
                p.replication
                    .iter()
                    .map(|r| ReplicationRow {
                        usename: r.usename.clone(),
                        application_name: r.application_name.clone(),
                        client_addr: r.client_addr.clone(),
                        state: r.state.clone(),
                        sync_state: r.sync_state.clone(),
                        sync_priority: r.sync_priority,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        pause: dc.pause,
        failsafe_mode_is_active: snap.state.failsafe_active,
        dcs_last_seen: since_seen.map(|d| (wall_ms / 1000) - d.as_secs() as i64),
        tags: cfg.tags.clone(),
        database_system_identifier: pg.and_then(|p| match &p.data_dir {
            ha_core::DataDirState::Initialized { system_identifier } => {
                Some(system_identifier.clone())
            }
            ha_core::DataDirState::Empty | ha_core::DataDirState::Invalid(_) => None,
        }),
        pending_restart: pg.is_some_and(|p| p.pending_restart),
        pending_restart_reason: pg.and_then(|p| p.pending_restart_reason_json()),
        scheduled_restart: None,
        watchdog_failed: snap.watchdog_failed,
        patroni: AgentInfo {
            version: ha_core::PATRONI_VERSION.to_string(),
            fullauto_version: env!("CARGO_PKG_VERSION").to_string(),
            scope: cfg.scope.clone(),
            name: cfg.name.clone(),
        },
        holds_leader_lease: snap.holds_lease(now),
        is_standby_cluster: dc.is_standby_cluster(),
        loop_late_by: now.since(snap.cycle_at).saturating_sub(dc.loop_wait()),
    }
}

#[async_trait]
impl NodeApi for AgentApi {
    fn status(&self) -> NodeStatus {
        self.status_of(&self.handle.snapshot())
    }

    async fn live_status(&self) -> NodeStatus {
        self.live_status_within(LIVE_POSITIONS_BUDGET).await
    }

    async fn checked_status(&self) -> NodeStatus {
        self.live_status_within(CHECK_BUDGET).await
    }

    fn cached_cluster(&self) -> Option<Cluster> {
        let snap = self.handle.snapshot();
        let fresh = snap
            .state
            .dcs_last_seen
            .is_some_and(|t| self.clock.now().since(t) < self.ttl(&snap));
        if fresh {
            snap.cluster
        } else {
            None
        }
    }

    fn last_known_cluster(&self) -> Option<Cluster> {
        self.handle.snapshot().cluster
    }

    async fn read_cluster(&self) -> Result<Cluster, DcsError> {
        self.dcs.get_cluster().await
    }

    fn config(&self) -> Option<DynamicConfig> {
        self.handle
            .snapshot()
            .cluster
            .and_then(|c| c.config)
            .map(|c| c.value)
    }

    async fn patch_config(&self, patch: Value) -> ConfigWrite {
        let cluster = match self.dcs.get_cluster().await {
            Ok(c) => c,
            Err(e) => return ConfigWrite::WriteFailed(e.to_string()),
        };
        let Some(current) = cluster.config else {
            return ConfigWrite::Missing;
        };
        let mut merged = serde_json::to_value(&current.value).unwrap_or(Value::Null);
        crate::api::merge_config_patch(&mut merged, &patch);
        let new = match DynamicConfig::from_value(merged.clone()) {
            Ok(c) => c,
            Err(e) => return ConfigWrite::WriteFailed(format!("invalid config: {e}")),
        };
        if let Some(problem) = new.validate().into_iter().next() {
            return ConfigWrite::WriteFailed(problem);
        }
        match self.dcs.set_config(&new, Some(current.version)).await {
            Ok(true) => {
                self.handle.wake();
                ConfigWrite::Ok(new.to_value())
            }
            Ok(false) => ConfigWrite::Conflict,
            Err(e) => ConfigWrite::WriteFailed(e.to_string()),
        }
    }

    async fn put_config(&self, config: Value) -> ConfigWrite {
        let new = match DynamicConfig::from_value(config.clone()) {
            Ok(c) => c,
            Err(e) => return ConfigWrite::WriteFailed(format!("invalid config: {e}")),
        };
        if let Some(problem) = new.validate().into_iter().next() {
            return ConfigWrite::WriteFailed(problem);
        }
        match self.dcs.set_config(&new, None).await {
            Ok(_) => {
                self.handle.wake();
                ConfigWrite::Ok(config)
            }
            Err(e) => ConfigWrite::WriteFailed(e.to_string()),
        }
    }

    async fn request_failover(&self, request: Failover) -> Result<(), DcsError> {
        // A switchover from this primary, now: its dirty buffers are flushed while
        // it still takes writes, and the demotion right after skips its own
        // checkpoint (clients paused by a proxy, or failing, meanwhile).
        let snap = self.handle.snapshot();
        let leading =
            snap.holds_lease(self.clock.now()) && snap.pg.as_ref().is_some_and(|p| p.is_primary());
        if request.scheduled_at.is_none() && leading {
            let started = std::time::Instant::now();
            match tokio::time::timeout(PRE_SWITCHOVER_CHECKPOINT, self.pg.checkpoint()).await {
                Ok(Ok(())) => {
                    // The demotion that follows need not run another one.
                    self.handle.checkpoint_finished(self.clock.now());
                    tracing::info!(
                        "checkpoint before the switchover request took {} ms (writes went on meanwhile)",
                        started.elapsed().as_millis()
                    )
                }
                Ok(Err(e)) => tracing::warn!("checkpoint before the switchover request failed: {e}"),
                Err(_) => tracing::warn!(
                    "checkpoint before the switchover request still runs after {} s: requesting the switchover anyway",
                    PRE_SWITCHOVER_CHECKPOINT.as_secs()
                ),
            }
        }
        self.dcs.set_failover(&request, None).await?;
        self.handle.wake();
        Ok(())
    }

    async fn cancel_scheduled_switchover(&self) -> CancelSwitchover {
        let Ok(cluster) = self.dcs.get_cluster().await else {
            return CancelSwitchover::Conflict;
        };
        match cluster.failover {
            Some(f) if f.value.scheduled_at.is_some() => {
                match self
                    .dcs
                    .set_failover(&Failover::default(), Some(f.version))
                    .await
                {
                    Ok(true) => CancelSwitchover::Deleted,
                    _ => CancelSwitchover::Conflict,
                }
            }
            _ => CancelSwitchover::NotScheduled,
        }
    }

    async fn probe_member(&self, api_url: &str) -> Option<Value> {
        let resp = self
            .http
            .http()
            .get(api_url)
            .timeout(Duration::from_secs(2))
            .send()
            .await
            .ok()?;
        resp.json().await.ok()
    }

    async fn call_member(
        &self,
        api_url: &str,
        endpoint: &str,
        body: Value,
        timeout: Duration,
    ) -> Result<(u16, String), MemberCallError> {
        let url = crate::ctl::rest::endpoint_url(api_url, endpoint)
            .map_err(|e| MemberCallError::BadUrl(e.to_string()))?;
        let client = self.http.current();
        let req = client
            .http
            .post(url.clone())
            .timeout(timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        let resp = crate::api::with_api_auth(req, client.auth.as_ref())
            .send()
            .await
            .map_err(|e| MemberCallError::Unreachable {
                url: url.to_string(),
                cause: crate::ctl::rest::error_chain(&e),
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| MemberCallError::Unreadable {
            url: url.to_string(),
            cause: e.to_string(),
        })?;
        Ok((status, text))
    }

    async fn restart(&self, request: RestartRequest) -> RestartOutcome {
        let wait = self.restart_wait(&request);
        let Some(at) = request.schedule.as_deref() else {
            return restart_now(&self.handle, wait).await;
        };
        let due_in = chrono::DateTime::parse_from_rfc3339(at)
            .map(|t| t.timestamp_millis() - self.clock.wall_millis())
            .unwrap_or(0)
            .max(0) as u64;
        let (cfg, handle, clock) = (
            self.cfg.borrow().clone(),
            self.handle.clone(),
            self.clock.clone(),
        );
        let scheduled = self.scheduled_restart.schedule(
            request,
            Duration::from_millis(due_in),
            move |request| async move {
                // Due: no longer pending, whatever happens now.
                handle.set_member_field(SCHEDULED_RESTART, None);
                // Conditions are judged when the restart is due, as Patroni does.
                let status = status_from_snapshot(
                    &cfg,
                    &handle.snapshot(),
                    clock.now(),
                    clock.wall_millis(),
                );
                if status.pause || !crate::api::restart_conditions_hold(&status, &request) {
                    tracing::info!("scheduled restart skipped: its conditions do not hold");
                    return;
                }
                match restart_now(&handle, wait).await {
                    RestartOutcome::Restarted => tracing::info!("scheduled restart done"),
                    other => tracing::warn!("scheduled restart: {other:?}"),
                }
            },
        );
        if scheduled {
            // In the member key too, where `fullautoctl list` and `flush` look for it.
            self.handle
                .set_member_field(SCHEDULED_RESTART, self.scheduled_restart.shown());
            RestartOutcome::Scheduled
        } else {
            RestartOutcome::AlreadyScheduled
        }
    }

    async fn cancel_scheduled_restart(&self) -> bool {
        let cancelled = self.scheduled_restart.cancel();
        self.handle.set_member_field(SCHEDULED_RESTART, None);
        cancelled
    }

    async fn reinitialize(&self, force: bool, from_leader: bool) -> Result<(), ReinitializeError> {
        let answer = self
            .handle
            .request(OperatorRequest::Reinitialize { from_leader, force });
        let wait = self.cycle_wait();
        match tokio::time::timeout(wait, answer).await {
            Ok(Ok(result)) => result.map_err(ReinitializeError::from),
            Ok(Err(_)) => Err(ReinitializeError::ShuttingDown),
            Err(_) => Err(ReinitializeError::NoDecision),
        }
    }

    async fn reload(&self) {
        if let Err(e) = self.reloader.reload().await {
            tracing::error!("reload refused, keeping the running configuration: {e}");
        }
    }

    fn wake(&self) {
        self.handle.wake();
    }

    async fn wait_cluster_change(&self, max: Duration) {
        let mut rx = self.handle.subscribe();
        // A copy of the handle's receiver has "seen" only the first snapshot, so
        // `changed()` would return at once forever: wait for the next cycle's view.
        rx.borrow_and_update();
        let _ = tokio::time::timeout(max, rx.changed()).await;
    }

    async fn failsafe_heartbeat(&self, body: Value) -> FailsafeReply {
        let snap = self.handle.snapshot();
        let dc = self.dynamic_config(&snap);
        if !dc.failsafe_mode {
            return FailsafeReply::Disabled;
        }
        let pg = snap.pg.as_ref();
        if pg.is_some_and(|p| p.may_accept_writes() && !p.is_replica()) {
            return FailsafeReply::RunningAsLeader;
        }
        let leader = body.get("name").and_then(Value::as_str).unwrap_or_default();
        // Stay out of the race for as long as the leader counts on (its ttl may be longer).
        let leader_ttl = body
            .get("ttl")
            .and_then(Value::as_f64)
            .filter(|t| t.is_finite() && *t > 0.0 && *t < 86_400.0)
            .map(Duration::from_secs_f64)
            .unwrap_or_default();
        let ttl = dc.ttl().max(leader_ttl);
        // Refused while this node races for or holds the leader key itself.
        // The leader's slot positions (`{"name": lsn}`); malformed entries are skipped.
        let slots = body
            .get("slots")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        if !self
            .handle
            .failsafe_call(leader, slots, self.clock.now(), ttl)
        {
            return FailsafeReply::RunningAsLeader;
        }
        self.handle.wake();
        FailsafeReply::Accepted(pg.map(|p| p.wal_position()))
    }
}
