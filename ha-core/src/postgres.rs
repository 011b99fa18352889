//! The `Postgres` trait: everything the HA loop asks of the local server, and what
//! it observes of it.

use crate::model::{Lsn, ObservedSlot, SlotKind};
use async_trait::async_trait;
use std::time::Duration;

/// `pg_ctl stop` modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    /// Wait for clients to disconnect.
    Smart,
    /// Disconnect clients, shutdown checkpoint.
    Fast,
    /// Abort at once; crash recovery on next start.
    Immediate,
}

/// Whether the postmaster runs and answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgProcess {
    /// Accepts connections and answered the health query.
    Running,
    /// Postmaster alive, not yet accepting connections (startup / recovery).
    Starting,
    /// Cleanly stopped (or never started).
    Stopped,
    /// `postmaster.pid` present but the process is gone, or it died on its own.
    Crashed,
    /// Postmaster alive but the health query timed out (SIGSTOP, stuck I/O).
    Hung,
}

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirState {
    /// Missing or empty: nothing to lose, may bootstrap or clone.
    Empty,
    /// A cluster with this system identifier.
    Initialized {
        /// `Database system identifier` from pg_control.
        system_identifier: String,
    },
    /// Not usable as it is (wrong owner, garbage); never deleted automatically.
    Invalid(String),
}

/// A parameter whose configured value only takes effect after a restart.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PendingParameter {
    /// Parameter name.
    pub name: String,
    /// The value the running server uses.
    pub old_value: String,
    /// The value in the configuration files, used after a restart.
    pub new_value: String,
}

/// One row of `pg_stat_replication`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ReplicationConnection {
    /// The standby's `application_name` (its member name).
    pub application_name: String,
    /// `streaming`, `catchup`, …
    pub state: String,
    /// `async`, `sync`, `quorum`, `potential`.
    pub sync_state: String,
    /// Flushed LSN.
    pub flush_lsn: Option<Lsn>,
    /// Written LSN.
    pub write_lsn: Option<Lsn>,
    /// Replayed LSN.
    pub replay_lsn: Option<Lsn>,
    /// Client address as Postgres prints an `inet` (`127.0.0.1`, no `/32`);
    /// `None` for a Unix-socket connection.
    pub client_addr: Option<String>,
    /// The role the standby connected as (`usename`).
    pub usename: Option<String>,
    /// The standby's priority in `synchronous_standby_names` (0 = asynchronous).
    pub sync_priority: i64,
}

impl ReplicationConnection {
    /// The position a commit waits for under the given `synchronous_commit`:
    /// `remote_apply` waits for replay, `remote_write` for the write, everything else
    /// for the flush. Patroni judges a synchronous standby's lag by the same column.
    pub fn acknowledged_lsn(&self, synchronous_commit: Option<&str>) -> Option<Lsn> {
        match synchronous_commit {
            Some("remote_apply") => self.replay_lsn,
            Some("remote_write") => self.write_lsn,
            _ => self.flush_lsn,
        }
    }
}

/// What the agent observed of its Postgres this cycle. Unknown values are `None`:
/// after a failed query the role is unknown, and the engine treats an unknown role
/// as possibly writable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgObservation {
    /// Process state.
    pub process: PgProcess,
    /// Data directory state.
    pub data_dir: DataDirState,
    /// `pg_is_in_recovery()`; `None` if it could not be asked. A server still
    /// starting up answers nothing, but one starting with `standby.signal` is known to
    /// come up in recovery: `Some(true)`.
    pub in_recovery: Option<bool>,
    /// Current timeline.
    pub timeline: Option<u64>,
    /// Primary: `pg_current_wal_lsn()`.
    pub wal_lsn: Option<Lsn>,
    /// Replica: last received LSN.
    pub receive_lsn: Option<Lsn>,
    /// Replica: last replayed LSN.
    pub replay_lsn: Option<Lsn>,
    /// Replica: how long ago the last replayed transaction committed on the primary
    /// (`now() - pg_last_xact_replay_timestamp()`, zero when the replica's clock is
    /// behind the primary's); `None` before the first replayed transaction.
    pub replayed_xact_age: Option<std::time::Duration>,
    /// Primary: the timeline of pg_control's latest checkpoint. Older than `timeline`
    /// right after a promotion, until the first checkpoint on the new timeline;
    /// pg_rewind reads the source's timeline from there.
    pub checkpoint_timeline: Option<u64>,
    /// Replica: `streaming` or `in archive recovery`.
    pub replication_state: Option<String>,
    /// Member name in the current `primary_conninfo` (`None`: not following anyone).
    pub following: Option<String>,
    /// The whole source the recovery configuration was written for (`following` is
    /// its name), so a changed `standby_cluster` section can be told apart.
    pub upstream: Option<Upstream>,
    /// A postmaster-context parameter changed.
    pub pending_restart: bool,
    /// Why: each parameter waiting for a restart, with its running value and the
    /// configured one (Patroni 4's `pending_restart_reason`), in name order.
    pub pending_restart_reason: Vec<PendingParameter>,
    /// Standbys connected to this primary.
    pub replication: Vec<ReplicationConnection>,
    /// `server_version_num`.
    pub server_version: Option<u32>,
    /// Postmaster start time, as Postgres prints it.
    pub postmaster_start_time: Option<String>,
    /// Current `synchronous_standby_names`.
    pub synchronous_standby_names: Option<String>,
    /// Current `synchronous_commit` (`on`, `remote_apply`, …).
    pub synchronous_commit: Option<String>,
    /// `Database cluster state` from pg_control (`in production`, `shut down`, …).
    pub cluster_state: Option<String>,
    /// Replication slots on this server (empty when it could not be asked).
    pub slots: Vec<ObservedSlot>,
}

impl PgObservation {
    /// Patroni 4's `pending_restart_reason`: `{parameter: {old_value, new_value}}`,
    /// `None` when no parameter waits for a restart.
    pub fn pending_restart_reason_json(
        &self,
    ) -> Option<serde_json::Map<String, serde_json::Value>> {
        if self.pending_restart_reason.is_empty() {
            return None;
        }
        Some(
            self.pending_restart_reason
                .iter()
                .map(|p| {
                    (
                        p.name.clone(),
                        serde_json::json!({"old_value": p.old_value, "new_value": p.new_value}),
                    )
                })
                .collect(),
        )
    }

    /// A stopped server with the given data directory.
    pub fn stopped(data_dir: DataDirState) -> Self {
        PgObservation {
            process: PgProcess::Stopped,
            data_dir,
            in_recovery: None,
            timeline: None,
            wal_lsn: None,
            receive_lsn: None,
            replay_lsn: None,
            replayed_xact_age: None,
            checkpoint_timeline: None,
            replication_state: None,
            following: None,
            upstream: None,
            pending_restart: false,
            pending_restart_reason: Vec::new(),
            replication: Vec::new(),
            server_version: None,
            postmaster_start_time: None,
            synchronous_standby_names: None,
            synchronous_commit: None,
            cluster_state: None,
            slots: Vec::new(),
        }
    }

    /// The furthest WAL position this server has (primary: write; replica: max of
    /// received and replayed).
    pub fn wal_position(&self) -> Lsn {
        self.wal_lsn
            .unwrap_or(0)
            .max(self.receive_lsn.unwrap_or(0))
            .max(self.replay_lsn.unwrap_or(0))
    }

    /// Whether the postmaster process exists (running, starting or hung).
    pub fn is_alive(&self) -> bool {
        matches!(
            self.process,
            PgProcess::Running | PgProcess::Starting | PgProcess::Hung
        )
    }

    /// Whether this server may be accepting writes: alive and not known to be in
    /// recovery. A hung or unqueryable server counts as possibly writable.
    pub fn may_accept_writes(&self) -> bool {
        self.is_alive() && self.in_recovery != Some(true)
    }

    /// Known to run as a primary (running and answered not-in-recovery).
    pub fn is_primary(&self) -> bool {
        self.process == PgProcess::Running && self.in_recovery == Some(false)
    }

    /// Known to run as a replica.
    pub fn is_replica(&self) -> bool {
        self.process == PgProcess::Running && self.in_recovery == Some(true)
    }

    /// Whether pg_control says this data directory last ran as a primary (in
    /// production, or shut down / crashed from there).
    pub fn was_primary(&self) -> bool {
        matches!(
            self.cluster_state.as_deref(),
            Some("in production")
                | Some("shut down")
                | Some("shutting down")
                | Some("in crash recovery")
        )
    }
}

/// Where a replica streams from (or a clone / rewind copies from).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Member name of the source.
    pub name: String,
    /// Host (empty: a standby cluster's archive-only source, nothing to connect to).
    pub host: String,
    /// Port.
    pub port: u16,
    /// Set only for a standby cluster's remote source: what the standby leader uses
    /// besides the address.
    pub remote: Option<RemoteSource>,
}

impl Upstream {
    /// A member (or any server) to stream from by address.
    pub fn at(name: impl Into<String>, host: impl Into<String>, port: u16) -> Upstream {
        Upstream {
            name: name.into(),
            host: host.into(),
            port,
            remote: None,
        }
    }

    /// Whether there is a server to connect to (a standby cluster may recover from
    /// its archive only).
    pub fn streams(&self) -> bool {
        !self.host.is_empty()
    }
}

/// The dynamic `standby_cluster` settings a standby leader applies to its recovery
/// configuration, and the replica methods the standby cluster's first node clones with.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct RemoteSource {
    /// Slot on the remote to stream through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub primary_slot_name: Option<String>,
    /// `restore_command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_command: Option<String>,
    /// `archive_cleanup_command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archive_cleanup_command: Option<String>,
    /// `recovery_min_apply_delay`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery_min_apply_delay: Option<String>,
    /// Replica methods to clone with (empty: the node's own list).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub create_replica_methods: Vec<String>,
}

/// Replication slot changes for one server, worked out by the HA engine from what
/// the server has and what the cluster needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotChanges {
    /// Slots to create (physical ones reserve WAL at once).
    pub create: Vec<NewSlot>,
    /// Inactive slots to move forward (`pg_replication_slot_advance`).
    pub advance: Vec<SlotAdvance>,
    /// Slots to drop (skipped if a consumer connected meanwhile).
    pub drop: Vec<String>,
}

impl SlotChanges {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.advance.is_empty() && self.drop.is_empty()
    }
}

/// A slot to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSlot {
    /// Slot name.
    pub name: String,
    /// Physical, or logical with database and plugin.
    pub kind: SlotKind,
}

/// Moving one slot forward.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotAdvance {
    /// Slot name.
    pub name: String,
    /// The database a logical slot belongs to (advancing it must connect there).
    pub database: Option<String>,
    /// Target position; Postgres caps it at what the server has replayed.
    pub to: Lsn,
}

/// A logical slot's on-disk state (`pg_replslot/<name>/state`), read on the primary
/// and installed on a replica: before PostgreSQL 16 a standby cannot create logical
/// slots, so copying the file is how one gets there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotStateFile {
    /// Slot name.
    pub name: String,
    /// The file's bytes, checksum included.
    pub content: Vec<u8>,
}

/// How to start the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartRole {
    /// As a primary (no standby.signal).
    Primary,
    /// As a replica streaming from `upstream`, or with no upstream (archive only / waiting).
    Replica {
        /// Source to stream from.
        upstream: Option<Upstream>,
    },
}

impl std::fmt::Display for StartRole {
    /// For operators: `primary`, `replica of pg1 (10.0.0.1:5432)`, `replica of the
    /// archive (restore_command)`, `replica without an upstream`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartRole::Primary => f.write_str("primary"),
            StartRole::Replica { upstream: None } => f.write_str("replica without an upstream"),
            StartRole::Replica { upstream: Some(u) } if u.streams() => {
                write!(f, "replica of {} ({}:{})", u.name, u.host, u.port)
            }
            StartRole::Replica { upstream: Some(_) } => {
                f.write_str("replica of the archive (restore_command)")
            }
        }
    }
}

impl std::fmt::Display for StopMode {
    /// pg_ctl's word for the mode: `smart`, `fast`, `immediate`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        })
    }
}

/// Result of a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StopOutcome {
    /// Shutdown checkpoint location, if known (from pg_control).
    pub checkpoint_lsn: Option<Lsn>,
}

/// What a [`PgError`] says, and the error it was made from when there is one (a
/// driver's own error type): `std::error::Error::source` of the `Cause` gives it.
#[derive(Clone)]
pub struct Cause {
    message: String,
    source: Option<std::sync::Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with only a message.
    pub fn new(message: impl Into<String>) -> Self {
        Cause {
            message: message.into(),
            source: None,
        }
    }

    /// `source`'s message, keeping `source` itself.
    pub fn from_error(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Cause {
            message: source.to_string(),
            source: Some(std::sync::Arc::new(source)),
        }
    }

    /// The message.
    pub fn as_str(&self) -> &str {
        &self.message
    }
}

impl std::ops::Deref for Cause {
    type Target = str;
    fn deref(&self) -> &str {
        &self.message
    }
}

/// Written as its message alone, as the `String` it replaces was.
impl std::fmt::Debug for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.message, f)
    }
}

impl std::fmt::Display for Cause {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// Two causes are equal when they say the same.
impl PartialEq for Cause {
    fn eq(&self, other: &Self) -> bool {
        self.message == other.message
    }
}

impl Eq for Cause {}

impl From<String> for Cause {
    fn from(message: String) -> Self {
        Cause::new(message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Cause::new(message)
    }
}

/// Why a Postgres operation failed. Each says what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PgError {
    /// A required binary is missing.
    #[error("postgres binary not found: {0}")]
    BinaryMissing(#[source] Cause),
    /// The data directory is unusable as it is.
    #[error("data directory problem: {0}")]
    DataDir(#[source] Cause),
    /// The server failed to start; carries the log tail.
    #[error("postgres failed to start: {0}")]
    StartFailed(#[source] Cause),
    /// Stop did not finish.
    #[error("postgres failed to stop: {0}")]
    StopFailed(#[source] Cause),
    /// Operation exceeded its timeout: the resulting state is unknown.
    #[error("timed out: {0}")]
    Timeout(#[source] Cause),
    /// A SQL query failed.
    #[error("query failed: {0}")]
    Query(#[source] Cause),
    /// A tool (initdb, pg_basebackup, pg_rewind, a custom command) failed.
    #[error("{tool} failed: {message}")]
    Tool {
        /// Which tool.
        tool: String,
        /// Its error output.
        #[source]
        message: Cause,
    },
    /// The request does not make sense in the current state.
    #[error("invalid request: {0}")]
    Invalid(#[source] Cause),
    /// The configuration makes the operation fail (postgres refuses a parameter,
    /// initdb an option), and will on every attempt until it is changed: retrying
    /// cannot help. The message names the setting and where to fix it.
    #[error("{0}")]
    Misconfigured(#[source] Cause),
}

/// The parts of the dynamic config's `postgresql` section, besides `parameters`,
/// that reach the server at run time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DynamicPostgresql {
    /// `pg_hba` lines.
    pub pg_hba: Vec<String>,
    /// `pg_ident` lines.
    pub pg_ident: Vec<String>,
    /// `recovery_conf`: extra recovery settings of replicas.
    pub recovery_conf: serde_json::Map<String, serde_json::Value>,
}

impl DynamicPostgresql {
    /// The section of a dynamic config's `postgresql` value (absent keys empty).
    pub fn from_section(postgresql: Option<&serde_json::Value>) -> DynamicPostgresql {
        let lines = |key: &str| -> Vec<String> {
            postgresql
                .and_then(|p| p.get(key))
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|l| l.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        DynamicPostgresql {
            pg_hba: lines("pg_hba"),
            pg_ident: lines("pg_ident"),
            recovery_conf: postgresql
                .and_then(|p| p.get("recovery_conf"))
                .and_then(serde_json::Value::as_object)
                .cloned()
                .unwrap_or_default(),
        }
    }
}

/// The local PostgreSQL server as the HA loop drives it.
#[async_trait]
pub trait Postgres: Send + Sync {
    /// Observes the server: process, data dir, role, WAL positions. Never fails: what
    /// could not be learnt is `None` / unknown. Uses a fresh connection with short
    /// timeouts so a hung postmaster shows as `Hung`.
    async fn observe(&self) -> PgObservation;

    /// Creates a new cluster (initdb or the configured custom bootstrap) in the empty
    /// data directory and starts it as a primary.
    async fn bootstrap(&self) -> Result<(), PgError>;

    /// Fills the empty data directory with a copy of `source` (pg_basebackup or the
    /// configured replica-creation methods); does not start it.
    async fn clone_from(&self, source: &Upstream) -> Result<(), PgError>;

    /// Fills the empty data directory without a running source, with the replica
    /// methods that work without a leader (`no_leader`, e.g. a backup restore); does
    /// not start it.
    async fn create_replica_without_leader(&self) -> Result<(), PgError> {
        Err(PgError::Invalid(
            "no replica creation method works without a leader".into(),
        ))
    }

    /// Starts the server in the given role and waits until it accepts connections or
    /// the timeout passes.
    async fn start(&self, role: &StartRole, timeout: Duration) -> Result<(), PgError>;

    /// Stops the server.
    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome, PgError>;

    /// Restarts the server in its current role.
    async fn restart(&self, timeout: Duration) -> Result<(), PgError>;

    /// Promotes a replica and waits for the promotion to finish.
    async fn promote(&self, timeout: Duration) -> Result<(), PgError>;

    /// The first part of [`Postgres::promote`]: returns as soon as the server left
    /// recovery and accepts writes, so the node can report itself primary at once;
    /// [`Postgres::finish_promotion`] does the rest. By default the whole promotion.
    async fn promote_until_writable(&self, timeout: Duration) -> Result<(), PgError> {
        self.promote(timeout).await
    }

    /// The rest of a promotion after [`Postgres::promote_until_writable`] (such as
    /// the server's configuration for its new role); by default nothing.
    async fn finish_promotion(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// Points a running replica at a new upstream (reload or restart as needed).
    async fn follow(&self, upstream: Option<&Upstream>) -> Result<(), PgError>;

    /// Whether this data directory diverged from `source` so it needs pg_rewind.
    async fn needs_rewind(&self, source: &Upstream) -> Result<bool, PgError>;

    /// Runs pg_rewind against `source` (server must be stopped).
    async fn rewind(&self, source: &Upstream) -> Result<(), PgError>;

    /// Deletes the data directory (only called when the config allows it).
    async fn remove_data_directory(&self) -> Result<(), PgError>;

    /// Creates, advances and drops replication slots as `changes` says. A slot that
    /// cannot be changed (e.g. a consumer connected meanwhile) is logged and skipped:
    /// the next cycle works out the changes again.
    async fn apply_slot_changes(&self, changes: &SlotChanges) -> Result<(), PgError>;

    /// The cluster-wide parameters of the dynamic config (`postgresql.parameters`)
    /// changed: write them into the server's configuration and reload a running
    /// server. Local settings keep precedence as the driver defines it.
    async fn apply_dynamic_parameters(
        &self,
        parameters: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PgError> {
        let _ = parameters;
        Ok(())
    }

    /// Reads the state files of the named logical slots from `source`'s server.
    async fn read_logical_slot_states(
        &self,
        source: &Upstream,
        names: &[String],
    ) -> Result<Vec<SlotStateFile>, PgError> {
        let _ = (source, names);
        Err(PgError::Invalid(
            "this driver cannot copy logical slots".into(),
        ))
    }

    /// Installs logical slot state files into the stopped server's data directory;
    /// the server loads them at its next start.
    async fn install_logical_slot_states(&self, files: &[SlotStateFile]) -> Result<(), PgError> {
        let _ = files;
        Err(PgError::Invalid(
            "this driver cannot copy logical slots".into(),
        ))
    }

    /// Sets `synchronous_standby_names` (None clears it) and reloads.
    async fn set_synchronous_standby_names(&self, value: Option<&str>) -> Result<(), PgError>;

    /// Re-renders the managed configuration and reloads.
    async fn reload(&self) -> Result<(), PgError>;

    /// The dynamic config's `pg_hba`, `pg_ident` or `recovery_conf` changed: write
    /// them (local settings keep precedence as the driver defines it) and reload a
    /// running server. Returns whether the server was reloaded. The default does
    /// nothing.
    async fn apply_dynamic_files(&self, section: &DynamicPostgresql) -> Result<bool, PgError> {
        let _ = section;
        Ok(false)
    }

    /// Runs the operator's pre-promote check (Patroni's `pre_promote` script) after
    /// the leader lock is taken and before promoting; an error cancels the
    /// promotion. The default allows it.
    async fn pre_promote(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// Whether pg_rewind could bring this (stopped) data directory back in line
    /// (data checksums or `wal_log_hints`). The default says yes.
    async fn can_rewind(&self) -> bool {
        true
    }

    /// The WAL position `peer`'s server has received (`pg_last_wal_receive_lsn()`),
    /// asked directly of its Postgres: a switchover hands over only once the candidate
    /// has the old primary's shutdown checkpoint.
    async fn received_lsn_of(&self, peer: &Upstream) -> Result<Option<Lsn>, PgError>;

    /// After a stop that demotes the whole cluster to a standby cluster: hands the WAL
    /// segment holding the shutdown checkpoint to `archive_command` (Postgres archives
    /// only full segments), so the cluster taking over from the archive replays up to
    /// it and this one can follow the new timeline without a rewind (Patroni does the
    /// same). Does nothing when archiving is off. The default does nothing.
    async fn archive_shutdown_checkpoint(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// Whether the WAL this (stopped, not diverged) member needs to catch up is gone on
    /// `source`: removed there after its checkpoints, with no slot keeping it and no
    /// `restore_command` to fetch it from an archive. Such a member starts, asks for
    /// the WAL, is told it "has already been removed" and never streams; only a fresh
    /// copy helps. `Some` says what is missing, for the log. The default says nothing
    /// is missing.
    async fn wal_gone_on(&self, source: &Upstream) -> Result<Option<String>, PgError> {
        let _ = source;
        Ok(None)
    }

    /// Runs a `CHECKPOINT` while the server still takes writes, so the shutdown
    /// checkpoint of a following planned stop has little left to flush (a switchover's
    /// write gap). The default does nothing.
    async fn checkpoint(&self) -> Result<(), PgError> {
        Ok(())
    }

    /// How many client sessions are inside a transaction now (a statement running or
    /// a transaction open), this query's own not counted: a switchover waits briefly
    /// for none before its fast stop, so clients a proxy holds at a transaction
    /// boundary lose nothing to it. The default says none.
    async fn clients_in_transaction(&self) -> Result<u64, PgError> {
        Ok(0)
    }
}
