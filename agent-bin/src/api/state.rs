//! What the REST layer needs from the running agent, as a trait the runner
//! implements; the API never touches the DCS or Postgres itself.

use async_trait::async_trait;
use ha_core::{Cluster, DynamicConfig, Failover, Role, Tags};
use serde::Serialize;
use serde_json::{Map, Value};
use std::time::Duration;

/// `patroni` block of the status JSON.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentInfo {
    /// The Patroni version whose behaviour the agent implements
    /// ([`ha_core::PATRONI_VERSION`]): what Patroni's tools read.
    pub version: String,
    /// fullauto's own version (`0.1.0`); left out when empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fullauto_version: String,
    /// Cluster name.
    pub scope: String,
    /// Member name.
    pub name: String,
}

/// The WAL position block (`xlog`) of the status JSON.
#[derive(Debug, Clone, PartialEq)]
pub enum Xlog {
    /// A primary's current write position.
    Primary {
        /// `pg_current_wal_lsn()` as bytes.
        location: u64,
    },
    /// A replica's receive/replay positions.
    Replica {
        /// Last received LSN.
        received_location: Option<u64>,
        /// Last replayed LSN.
        replayed_location: Option<u64>,
        /// Commit time of the last replayed transaction.
        replayed_timestamp: Option<String>,
        /// Replay paused.
        paused: bool,
    },
}

/// One `pg_stat_replication` row, with the fields and names Patroni shows in
/// `GET /patroni` `replication[]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplicationRow {
    /// The role the standby connected as.
    pub usename: Option<String>,
    /// Standby's application_name (its member name).
    pub application_name: String,
    /// Standby's address as Postgres prints it (`127.0.0.1`); `null` over a Unix socket.
    pub client_addr: Option<String>,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: String,
    /// Position in synchronous_standby_names (0 = asynchronous).
    pub sync_priority: i64,
}

/// Everything `GET /patroni` reports, plus what the health checks decide on.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// Postgres state: `running`, `starting`, `stopped`, … and `unknown` when the
    /// last status query failed while Postgres was thought to run.
    pub state: String,
    /// Postgres role **as returned by a successful query** (`pg_is_in_recovery()`)
    /// while `state == "running"`; otherwise the agent's own idea (`demoted`,
    /// `uninitialized`, …). Health checks trust `Primary` only with `state == running`.
    pub role: Role,
    /// `"2023-08-18 11:03:37.966359+00:00"`.
    pub postmaster_start_time: Option<String>,
    /// `server_version_num`, e.g. 150004.
    pub server_version: Option<u32>,
    /// WAL positions.
    pub xlog: Option<Xlog>,
    /// Current timeline.
    pub timeline: Option<u64>,
    /// Replica: `streaming` / `in archive recovery`.
    pub replication_state: Option<String>,
    /// Walreceiver's `latest_end_lsn` (primary's flush position as last reported).
    pub latest_end_lsn: Option<u64>,
    /// Primary: `pg_stat_replication`.
    pub replication: Vec<ReplicationRow>,
    /// Cluster in maintenance mode.
    pub pause: bool,
    /// Failsafe currently keeps this primary up (or a replica got a recent failsafe call).
    pub failsafe_mode_is_active: bool,
    /// Epoch seconds of the last successful DCS read.
    pub dcs_last_seen: Option<i64>,
    /// Effective tags.
    pub tags: Tags,
    /// Postgres system identifier.
    pub database_system_identifier: Option<String>,
    /// A restart is needed to apply settings.
    pub pending_restart: bool,
    /// Which settings need it: name ⇒ `{old_value, new_value}`.
    pub pending_restart_reason: Option<Map<String, Value>>,
    /// `{"schedule": ISO, ...filters}` of a scheduled restart.
    pub scheduled_restart: Option<Value>,
    /// Watchdog required but not working.
    pub watchdog_failed: bool,
    /// Version, scope, name.
    pub patroni: AgentInfo,
    /// This node holds the leader key and its local lease view has not expired
    /// (computed by the runner from the monotonic clock, not from the DCS cache).
    pub holds_leader_lease: bool,
    /// A standby cluster is configured.
    pub is_standby_cluster: bool,
    /// How far behind its schedule the HA loop is (zero when on time).
    pub loop_late_by: Duration,
}

impl Default for NodeStatus {
    fn default() -> Self {
        NodeStatus {
            state: "stopped".into(),
            role: Role::Uninitialized,
            postmaster_start_time: None,
            server_version: None,
            xlog: None,
            timeline: None,
            replication_state: None,
            latest_end_lsn: None,
            replication: Vec::new(),
            pause: false,
            failsafe_mode_is_active: false,
            dcs_last_seen: None,
            tags: Tags::default(),
            database_system_identifier: None,
            pending_restart: false,
            pending_restart_reason: None,
            scheduled_restart: None,
            watchdog_failed: false,
            patroni: AgentInfo::default(),
            holds_leader_lease: false,
            is_standby_cluster: false,
            loop_late_by: Duration::ZERO,
        }
    }
}

impl NodeStatus {
    /// Postgres answers queries.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }

    /// The replayed position (replicas), for lag checks.
    pub fn replayed_location(&self) -> Option<u64> {
        match &self.xlog {
            Some(Xlog::Replica {
                replayed_location, ..
            }) => *replayed_location,
            _ => None,
        }
    }

    /// The received position (replicas).
    pub fn received_location(&self) -> Option<u64> {
        match &self.xlog {
            Some(Xlog::Replica {
                received_location, ..
            }) => *received_location,
            _ => None,
        }
    }
}

/// Result of writing the DCS `config` key.
#[derive(Debug, Clone, PartialEq)]
pub enum ConfigWrite {
    /// Written (or already equal): the config now in force.
    Ok(Value),
    /// Compare-and-set lost against a concurrent change (409).
    Conflict,
    /// There is no `config` key to patch (503).
    Missing,
    /// The DCS write failed (502 for PUT, 503 for PATCH).
    WriteFailed(String),
}

/// `POST /restart` filters, already checked for shape by the API.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RestartRequest {
    /// Only restart when a restart is pending.
    pub restart_pending: bool,
    /// Only restart in this role (`primary`, `standby_leader`, `replica`).
    pub role: Option<String>,
    /// Only restart when running an older version than this (`15.2`).
    pub postgres_version: Option<String>,
    /// Seconds to wait for the restart before failing.
    pub timeout: Option<u64>,
    /// ISO time with zone; `None` means now.
    pub schedule: Option<String>,
}

/// What the runner did with a restart request.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartOutcome {
    /// Immediate restart finished (200 `restarted successfully`).
    Restarted,
    /// Immediate restart refused or failed: 503 with this message
    /// (`restart already in progress`, `postgres is still starting`, `restart failed`, …).
    Failed(String),
    /// Future restart recorded (202).
    Scheduled,
    /// Another restart is already scheduled (409).
    AlreadyScheduled,
}

/// What deleting a scheduled switchover did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelSwitchover {
    /// Deleted (200).
    Deleted,
    /// None was scheduled (404).
    NotScheduled,
    /// CAS lost (409).
    Conflict,
}

/// `POST /failsafe` result.
#[derive(Debug, Clone, PartialEq)]
pub enum FailsafeReply {
    /// Failsafe mode is off (502).
    Disabled,
    /// Accepted by a non-primary; reports this node's LSN in the `lsn` header.
    Accepted(Option<u64>),
    /// This node runs as a leader (500 `Running as a leader`).
    RunningAsLeader,
}

/// The agent as the REST API sees it. Implemented by the HA runner; methods that
/// change something should wake the HA loop.
#[async_trait]
pub trait NodeApi: Send + Sync + 'static {
    /// A consistent snapshot of this node's status.
    fn status(&self) -> NodeStatus;

    /// [`NodeApi::status`] with the WAL positions read from Postgres now: `GET
    /// /patroni` is what peers compare positions on (leader race, switchover
    /// candidates), and the HA loop's snapshot can be a whole cycle behind.
    async fn live_status(&self) -> NodeStatus {
        self.status()
    }

    /// [`NodeApi::live_status`] for a health check, which may wait longer for
    /// Postgres: asked when the HA loop's last look did not find it running.
    async fn checked_status(&self) -> NodeStatus {
        self.live_status().await
    }

    /// The last cluster view read from the DCS, if still valid (≤ ttl old).
    fn cached_cluster(&self) -> Option<Cluster>;

    /// The last cluster view read from the DCS however old it is: during a DCS outage
    /// `GET /failsafe` still answers with the topology the members work with.
    fn last_known_cluster(&self) -> Option<Cluster> {
        self.cached_cluster()
    }

    /// A fresh read of the DCS (for `/cluster`, `/history` and switchover checks).
    async fn read_cluster(&self) -> Result<Cluster, String>;

    /// The dynamic config in force, if `config` exists and is valid.
    fn config(&self) -> Option<DynamicConfig>;

    /// Applies a `PATCH /config` body: read `config` with its version, merge with
    /// [`crate::api::merge_config_patch`], CAS-write, wake the loop.
    async fn patch_config(&self, patch: Value) -> ConfigWrite;

    /// `PUT /config`: unconditional write of a whole config (skipped when identical).
    async fn put_config(&self, config: Value) -> ConfigWrite;

    /// Writes the `failover` key (no CAS) and wakes the loop.
    async fn request_failover(&self, request: Failover) -> Result<(), String>;

    /// Deletes a scheduled switchover (CAS on the failover key).
    async fn cancel_scheduled_switchover(&self) -> CancelSwitchover;

    /// `GET` another member's `/patroni` (2 s, no retries, `ctl` TLS/auth settings).
    async fn probe_member(&self, api_url: &str) -> Option<Value>;

    /// `POST /<endpoint>` of another member's API with a JSON body, with the `ctl`
    /// TLS settings and credentials as `fullautoctl` uses them (the dashboard acting
    /// on a member other than the one serving it): the member's status and body, or
    /// why it could not be asked.
    async fn call_member(
        &self,
        _api_url: &str,
        _endpoint: &str,
        _body: Value,
        _timeout: Duration,
    ) -> Result<(u16, String), String> {
        Err("this agent does not call other members".to_string())
    }

    /// Restarts Postgres now (filters already checked) or schedules it.
    async fn restart(&self, request: RestartRequest) -> RestartOutcome;

    /// Removes a scheduled restart; `false` if none was scheduled.
    async fn cancel_scheduled_restart(&self) -> bool;

    /// Starts a reinitialization (`Err` = 503 reason, e.g. `reinitialize already in progress`).
    async fn reinitialize(&self, force: bool, from_leader: bool) -> Result<(), String>;

    /// Re-reads the local config file (as SIGHUP does).
    async fn reload(&self);

    /// Wakes the HA loop for an early cycle.
    fn wake(&self);

    /// Returns when the cluster view may have changed, or after `max` at the latest
    /// (used while waiting for a switchover's outcome). The default just sleeps.
    async fn wait_cluster_change(&self, max: std::time::Duration) {
        tokio::time::sleep(max).await;
    }

    /// `POST /failsafe` from the leader: records its heartbeat.
    async fn failsafe_heartbeat(&self, _body: Value) -> FailsafeReply {
        FailsafeReply::Disabled
    }
}
