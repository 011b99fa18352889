//! The `Dcs` trait: what fullauto needs from a distributed consensus store, in
//! Patroni's terms (one lease per agent, a leader key bound to it, CAS writes).

use crate::model::{
    Cluster, DynamicConfig, Failover, Failsafe, History, MemberData, Status, SyncState, Version,
};
use async_trait::async_trait;
use std::time::Duration;

/// Why a DCS call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DcsError {
    /// The DCS could not be reached (or did not answer) within the retry bound.
    #[error("dcs unreachable: {0}")]
    Unreachable(String),
    /// The DCS answered with an error this backend does not retry.
    #[error("dcs error: {0}")]
    Backend(String),
    /// Configuration or credentials are wrong; retrying will not help.
    #[error("dcs configuration error: {0}")]
    Config(String),
}

impl DcsError {
    /// Whether the failure means "could not reach the DCS" (the HA loop treats it as
    /// losing the DCS, not as an answer).
    pub fn is_unreachable(&self) -> bool {
        matches!(self, DcsError::Unreachable(_))
    }
}

/// Timing a backend derives its lease TTL and request deadlines from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DcsTiming {
    /// Lease / session lifetime.
    pub ttl: Duration,
    /// Deadline for one operation including retries.
    pub retry_timeout: Duration,
    /// HA cycle period (ZooKeeper derives its read timeout from it).
    pub loop_wait: Duration,
}

impl Default for DcsTiming {
    fn default() -> Self {
        DcsTiming {
            ttl: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(10),
            loop_wait: Duration::from_secs(10),
        }
    }
}

/// A DCS backend bound to one cluster (`namespace`/`scope`) and one member name.
///
/// Every method must return within `retry_timeout` (then `DcsError::Unreachable`):
/// the HA loop's safety timing depends on it.
#[async_trait]
pub trait Dcs: Send + Sync {
    /// Reads the whole cluster prefix in one request.
    async fn get_cluster(&self) -> Result<Cluster, DcsError>;

    /// Creates the leader key with my name, bound to my lease, only if it does not
    /// exist. `Ok(false)`: someone else holds it.
    async fn acquire_leader(&self) -> Result<bool, DcsError>;

    /// Refreshes my lease and makes sure the leader key is still mine (re-binding it
    /// to my current lease if it carries my name with another one). `Ok(false)`: the
    /// key belongs to someone else or is gone.
    async fn renew_leader(&self) -> Result<bool, DcsError>;

    /// [`Dcs::renew_leader`], then writes `status` only if the key is still mine: a
    /// leader whose WAL moved publishes it with its renewal. Stores that can do both
    /// in one request (etcd: one transaction) override this, so the leader makes no
    /// more requests per cycle than Patroni's. A failed status write is logged, not
    /// returned: the renewal's answer is what the HA loop acts on, and the next cycle
    /// writes the status again.
    async fn renew_leader_with_status(&self, status: &Status) -> Result<bool, DcsError> {
        if !self.renew_leader().await? {
            return Ok(false);
        }
        if let Err(e) = self.set_status(status).await {
            tracing::warn!("writing status after the leader renewal failed: {e}");
        }
        Ok(true)
    }

    /// Deletes the leader key only if it holds my name. `Ok(false)`: it was not mine.
    async fn release_leader(&self) -> Result<bool, DcsError>;

    /// Writes my member record, bound to my lease so it vanishes when I stop renewing.
    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError>;

    /// Writes `proxies/<my name>` with `record` (a proxy's JSON), bound to my lease
    /// or session as a member record is, so it vanishes when the proxy stops. Only
    /// `fullauto-proxy` calls it, every cycle.
    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError>;

    /// Creates `initialize` with `value` only if it does not exist (bootstrap race).
    async fn initialize(&self, value: &str) -> Result<bool, DcsError>;

    /// Overwrites `initialize` (the winner records the system identifier).
    async fn set_initialize(&self, value: &str) -> Result<(), DcsError>;

    /// Deletes `initialize` after a failed bootstrap so another node can retry.
    async fn cancel_initialization(&self) -> Result<(), DcsError>;

    /// Writes `config`; with `expected`, only if the key is still at that version.
    async fn set_config(
        &self,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> Result<bool, DcsError>;

    /// Writes `failover`; with `expected`, only if the key is still at that version.
    async fn set_failover(
        &self,
        failover: &Failover,
        expected: Option<Version>,
    ) -> Result<bool, DcsError>;

    /// Writes `sync`; with `expected`, only if still at that version. Returns the new
    /// version, `None` when the CAS failed.
    async fn set_sync(
        &self,
        sync: &SyncState,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError>;

    /// Deletes `sync`; with `expected`, only if still at that version.
    async fn delete_sync(&self, expected: Option<Version>) -> Result<bool, DcsError>;

    /// Writes `history`.
    async fn set_history(&self, history: &History) -> Result<(), DcsError>;

    /// Writes `status`.
    async fn set_status(&self, status: &Status) -> Result<(), DcsError>;

    /// Writes `failsafe`.
    async fn set_failsafe(&self, failsafe: &Failsafe) -> Result<(), DcsError>;

    /// Deletes every key of the cluster (`fullautoctl remove`).
    async fn delete_cluster(&self) -> Result<(), DcsError>;

    /// A counter that increases whenever one of the keys that call for a new decision
    /// may have changed: `leader`, `config`, `failover`, `sync`, `initialize` (and after
    /// a reconnect, when changes may have been missed). Changes of `members/*`,
    /// `status`, `history` and `failsafe` must NOT bump it: every node writes those each
    /// cycle, and waking on them would turn the event-driven loop into a busy loop.
    fn subscribe(&self) -> tokio::sync::watch::Receiver<u64>;

    /// New timing from the dynamic config; a changed ttl takes effect with the next
    /// lease/session.
    fn set_timing(&self, timing: DcsTiming);
}
