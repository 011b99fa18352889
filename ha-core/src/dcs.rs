//! The `Dcs` trait: what fullauto needs from a distributed consensus store, in
//! Patroni's terms (one lease per agent, a leader key bound to it, CAS writes).

use crate::model::{
    keys, Cluster, DynamicConfig, Failover, Failsafe, History, MemberData, Status, SyncState,
    Version,
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

    /// Writes the cluster key `key` (relative to the cluster prefix: one of
    /// [`keys::INITIALIZE`], [`keys::CONFIG`], [`keys::FAILOVER`], [`keys::SYNC`],
    /// [`keys::HISTORY`], [`keys::STATUS`], [`keys::FAILSAFE`]) as a permanent key,
    /// bound to no lease; with `expected`, only if the key is still at that version.
    /// Returns the key's new version, `None` when the compare failed. The typed
    /// setters below are written over it (and [`Dcs::write_key`],
    /// [`Dcs::write_key_if`], [`Dcs::delete_key`]).
    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError>;

    /// Writes `key` unconditionally (as [`Dcs::cas_key`] without `expected`). A store
    /// whose write answer carries no version (Consul) overrides it and
    /// [`Dcs::write_key_if`], so that a write whose new version nobody needs is one
    /// request.
    async fn write_key(&self, key: &str, value: String) -> Result<(), DcsError> {
        self.cas_key(key, value, None).await.map(|_| ())
    }

    /// [`Dcs::cas_key`], answering only whether the key was written.
    async fn write_key_if(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        Ok(self.cas_key(key, value, expected).await?.is_some())
    }

    /// Deletes `key` (relative, as for [`Dcs::cas_key`]); with `expected`, only if
    /// still at that version. `Ok(false)`: the compare failed. Without `expected` an
    /// absent key counts as deleted.
    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError>;

    /// Overwrites `initialize` (the winner records the system identifier).
    async fn set_initialize(&self, value: &str) -> Result<(), DcsError> {
        self.write_key(keys::INITIALIZE, value.to_string()).await
    }

    /// Deletes `initialize` after a failed bootstrap so another node can retry.
    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        self.delete_key(keys::INITIALIZE, None).await.map(|_| ())
    }

    /// Writes `config`; with `expected`, only if the key is still at that version.
    async fn set_config(
        &self,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.write_key_if(keys::CONFIG, config.to_json(), expected)
            .await
    }

    /// Writes `failover`; with `expected`, only if the key is still at that version.
    async fn set_failover(
        &self,
        failover: &Failover,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.write_key_if(keys::FAILOVER, failover.to_json(), expected)
            .await
    }

    /// Writes `sync`; with `expected`, only if still at that version. Returns the new
    /// version, `None` when the CAS failed.
    async fn set_sync(
        &self,
        sync: &SyncState,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        self.cas_key(keys::SYNC, sync.to_json(), expected).await
    }

    /// Deletes `sync`; with `expected`, only if still at that version. (Patroni never
    /// deletes it on ZooKeeper but writes `{}`: that backend overrides this.)
    async fn delete_sync(&self, expected: Option<Version>) -> Result<bool, DcsError> {
        self.delete_key(keys::SYNC, expected).await
    }

    /// Writes `history`.
    async fn set_history(&self, history: &History) -> Result<(), DcsError> {
        self.write_key(keys::HISTORY, history.to_json()).await
    }

    /// Writes `status`.
    async fn set_status(&self, status: &Status) -> Result<(), DcsError> {
        self.write_key(keys::STATUS, status.to_json()).await
    }

    /// Writes `failsafe`.
    async fn set_failsafe(&self, failsafe: &Failsafe) -> Result<(), DcsError> {
        let value = serde_json::to_string(failsafe)
            .map_err(|e| DcsError::Backend(format!("cannot encode failsafe: {e}")))?;
        self.write_key(keys::FAILSAFE, value).await
    }

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
