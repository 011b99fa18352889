//! What the decision function is given: the node's own settings, what it observed
//! this cycle, the results of actions already taken this cycle, and its memory.

use crate::clock::MonoTime;
use crate::dcs::DcsError;
use crate::model::{Cluster, DynamicConfig, Lsn, Tags};
use crate::postgres::PgObservation;
use std::time::Duration;

/// This node's static settings.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeConfig {
    /// Member name.
    pub name: String,
    /// Configured tags.
    pub tags: Tags,
    /// Published `api_url` (`http://host:port/patroni`).
    pub api_url: Option<String>,
    /// Published `conn_url` (`postgres://host:port/postgres`).
    pub conn_url: Option<String>,
    /// Published `proxy_url` (`postgres://proxy_address/postgres`): a connection
    /// pooler in front of this member, for clients that discover it in the DCS.
    pub proxy_url: Option<String>,
    /// Whether this node may win the bootstrap race (has a `bootstrap` section).
    pub can_bootstrap: bool,
    /// Dynamic config to seed `config` with when the key is missing.
    pub bootstrap_config: DynamicConfig,
    /// A configured replica method works without a leader (`no_leader`).
    pub can_restore_without_leader: bool,
    /// How long before the end of the lease the write fence fires. Covers the fence's
    /// own reaction time and clock-rate differences between this host and the DCS.
    pub fence_margin: Duration,
    /// How long Postgres may stay unresponsive (hung) before it is treated as dead.
    pub hung_grace: Duration,
    /// Agent version published in the member record.
    pub version: String,
    /// Accepted `POST /failsafe` calls are recorded on disk and restored at start, so
    /// a restarted agent need not sit out a ttl in case it promised a leader before.
    pub failsafe_record_durable: bool,
}

impl NodeConfig {
    /// A node named `name` with defaults for everything else.
    pub fn named(name: &str) -> NodeConfig {
        NodeConfig {
            name: name.to_string(),
            tags: Tags::default(),
            api_url: None,
            conn_url: None,
            proxy_url: None,
            can_bootstrap: true,
            bootstrap_config: DynamicConfig::default(),
            can_restore_without_leader: false,
            fence_margin: Duration::from_millis(500),
            hung_grace: Duration::from_secs(5),
            version: crate::PATRONI_VERSION.to_string(),
            failsafe_record_durable: false,
        }
    }
}

/// A peer's answer to `GET /patroni`, reduced to what the leader race needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerReply {
    /// Not in recovery: it reports itself as a running primary.
    pub is_primary: bool,
    /// Furthest WAL position it reports.
    pub wal_position: Lsn,
    /// Its timeline.
    pub timeline: Option<u64>,
    /// Its own tags.
    pub tags: Tags,
    /// It reports a failed watchdog.
    pub watchdog_failed: bool,
}

/// One peer probe: `None` when the peer did not answer in time.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    /// Member name.
    pub name: String,
    /// Its reply.
    pub reply: Option<PeerReply>,
}

/// The result of a query action, fed back within the same cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// AcquireLease won; the request was sent at `sent_at`.
    LeaseAcquired {
        /// When the request was sent: the lease cannot end before `sent_at + ttl`.
        sent_at: MonoTime,
    },
    /// AcquireLease lost: someone else holds the key.
    LeaseTaken,
    /// RenewLease succeeded.
    LeaseRenewed {
        /// When the request was sent.
        sent_at: MonoTime,
    },
    /// RenewLease answered that the key is not mine any more.
    LeaseLost,
    /// AcquireLease / RenewLease failed to reach the DCS.
    LeaseError(DcsError),
    /// Peers answered (or not).
    PeersProbed(Vec<PeerStatus>),
    /// ClaimInitialize won.
    InitializeWon,
    /// ClaimInitialize lost (or failed).
    InitializeLost,
    /// WriteSync: whether the CAS succeeded.
    SyncWritten {
        /// The write went through.
        ok: bool,
    },
    /// CheckFailsafe: the members that answered `200 Accepted`.
    FailsafeChecked {
        /// When the calls were sent: a member's record of me lasts at least until
        /// `sent_at + ttl`.
        sent_at: MonoTime,
        /// Names of the members that accepted.
        accepted: Vec<String>,
        /// The WAL positions they reported: members cascading from a replica have
        /// their slots on the leader advanced by them.
        positions: std::collections::BTreeMap<String, Lsn>,
    },
}

/// A long action the runner is executing in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Busy {
    /// initdb / custom bootstrap.
    Bootstrap,
    /// Cloning a replica.
    Clone,
    /// Starting Postgres (as primary or replica, maybe after pg_rewind).
    Start,
    /// Promoting.
    Promote,
    /// Demoting.
    Demote,
    /// Restarting Postgres on an operator's request.
    Restart,
    /// Re-cloning the data directory on an operator's request.
    Reinitialize,
    /// Copying logical slots from the leader (restarts Postgres).
    CopySlots,
}

impl Busy {
    /// Human description for logs and status.
    pub fn describe(self) -> &'static str {
        match self {
            Busy::Bootstrap => "bootstrap",
            Busy::Clone => "replica creation",
            Busy::Start => "start",
            Busy::Promote => "promote",
            Busy::Demote => "demote",
            Busy::Restart => "restart",
            Busy::Reinitialize => "reinitialize",
            Busy::CopySlots => "copying logical slots",
        }
    }
}

/// Everything observed for one decision. Outside ha-core, build it with
/// [`Observation::new`] (or [`Observation::dcs_failed`]) and the `with_*` methods:
/// fields are added as the engine learns to weigh more.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Observation {
    /// This cycle's cluster read, or why it failed.
    pub cluster: Result<Cluster, DcsError>,
    /// When the cluster read was sent.
    pub read_at: MonoTime,
    /// Local Postgres.
    pub pg: PgObservation,
    /// A background action in progress.
    pub busy: Option<Busy>,
    /// Results of this cycle's query actions, in order.
    pub outcomes: Vec<Outcome>,
    /// Non-query actions already executed this cycle: a re-run step does not emit
    /// them again (the runner appends each action it executed).
    pub executed: Vec<super::Action>,
    /// Wall-clock time, ms since the epoch (scheduled switchovers).
    pub wall_millis: i64,
    /// A watchdog is required (`watchdog.mode: required`) but does not work: this
    /// node must not lead.
    pub watchdog_failed: bool,
    /// The leader that called this node's `POST /failsafe` within the last ttl: this
    /// node must not race for the leader key meanwhile.
    pub failsafe_leader: Option<String>,
    /// The slot positions that leader sent along (replicas advance their slots by
    /// them while the DCS is gone).
    pub failsafe_slots: std::collections::BTreeMap<String, crate::model::Lsn>,
    /// An operator's request waiting for an answer (REST API, CLI).
    pub request: Option<OperatorRequest>,
}

/// Something an operator asked this node to do; the decision accepts or refuses it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperatorRequest {
    /// Restart Postgres in its current role.
    Restart,
    /// Stop Postgres, wipe the data directory and clone it again.
    Reinitialize {
        /// Clone from the leader even when a `clonefrom` member runs.
        from_leader: bool,
        /// Cancel a running replica creation, start or restart first (e.g. a clone
        /// that hangs) instead of refusing.
        force: bool,
    },
}

/// The decision's answer to an [`OperatorRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestVerdict {
    /// The background action carrying it out was emitted this step.
    Started,
    /// Refused, with the reason the operator sees (Patroni's messages).
    Refused(String),
}

/// What the node remembers between decisions.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LocalState {
    /// End of my leader lease as I compute it (`sent_at + ttl` of the last successful
    /// acquire/renew); `None` when I do not hold it.
    pub lease_until: Option<MonoTime>,
    /// Last cluster view that had a leader (Patroni's `old_cluster`).
    pub last_leader_view: Option<Cluster>,
    /// Last dynamic config read from the DCS.
    pub config: Option<DynamicConfig>,
    /// When the DCS last answered.
    pub dcs_last_seen: Option<MonoTime>,
    /// Since when Postgres has been down while I held the lease.
    pub down_since: Option<MonoTime>,
    /// Since when a running replica has been stuck behind the leader's timeline.
    pub stuck_since: Option<MonoTime>,
    /// Since when a requested switchover waits for its candidate to stream from me.
    pub switchover_waiting_since: Option<MonoTime>,
    /// The upstream `stuck_since` counts against (the member the replica should
    /// stream from, the leader or its `replicatefrom` member): a new upstream restarts
    /// the count.
    pub stuck_on_leader: Option<String>,
    /// Since when Postgres has been unresponsive.
    pub hung_since: Option<MonoTime>,
    /// Whether the write fence is armed.
    pub fence_armed: bool,
    /// Check for divergence (pg_rewind) before starting as a replica again.
    pub rewind_pending: bool,
    /// WAL position when `synchronous_standby_names` last changed (quorum mode: first
    /// observed after the change): a new synchronous standby is published only once it
    /// flushed up to here.
    pub sync_confirm_from: Option<crate::model::Lsn>,
    /// Quorum mode: the `synchronous_standby_names` that `sync_confirm_from` belongs
    /// to; a mark taken under another setting does not count.
    pub sync_confirm_names: Option<String>,
    /// When each member was last seen in the cluster view: its replication slot is
    /// kept for `member_slots_ttl` after it disappears, so a briefly absent replica
    /// does not need a re-clone.
    pub members_seen: std::collections::BTreeMap<String, MonoTime>,
    /// When this agent made its first decision (it remembers nothing from before).
    pub started_at: Option<MonoTime>,
    /// Failsafe mode keeps this primary running without the DCS, or a leader's
    /// `POST /failsafe` keeps this replica out of the leader race.
    pub failsafe_active: bool,
    /// The `failsafe` value last written and not yet read back: a member in it may
    /// see it in the DCS, so failsafe checks call it too.
    pub failsafe_written: Option<crate::model::Failsafe>,
    /// The cycle (its `read_at`) whose lease renewal carried the leader's `status`, so
    /// that cycle does not write it again.
    pub status_sent_with_renewal: Option<MonoTime>,
    /// The logical slots last copied from the leader with the positions the leader
    /// published for them, and when: a copy restarts Postgres, so one that would bring
    /// the same state again is not repeated soon.
    pub slot_copy_attempt: Option<(
        std::collections::BTreeMap<String, crate::model::Lsn>,
        MonoTime,
    )>,
    /// The last decision's explanation (for logs and `/patroni`).
    pub message: String,
}

impl LocalState {
    /// Whether I hold the leader lease at `now`, by my own clock.
    pub fn holds_lease(&self, now: MonoTime) -> bool {
        self.lease_until.is_some_and(|t| now < t)
    }
}
