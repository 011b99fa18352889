//! The one lease per agent that `leader` and its member key are bound to.

use crate::backend::lock;
use crate::failure::{classify, Failure};
use etcd_client::Client;
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

/// The lease this agent binds `leader` and its member key to.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// The TTL asked for (seconds), so a changed `ttl` gets a new lease.
    requested_ttl: i64,
    /// Last grant or successful keepalive.
    refreshed: Instant,
}

/// The lease TTL for `ttl`: whole seconds, rounded up (etcd raises anything below its
/// own minimum, about 2 s with default raft timing).
pub(crate) fn lease_ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_secs_f64().ceil() as i64).max(1)
}

/// My lease, if any, and the lock that serializes grants and keepalives so concurrent
/// calls never grant two leases.
#[derive(Default)]
pub(crate) struct LeaseHolder {
    state: Mutex<Option<Lease>>,
    op: tokio::sync::Mutex<()>,
}

impl LeaseHolder {
    /// The current lease id, if any.
    pub fn id(&self) -> Option<i64> {
        lock(&self.state).map(|l| l.id)
    }

    /// Forgets the lease (etcd said it is gone); the next call grants a new one.
    pub fn forget(&self) {
        *lock(&self.state) = None;
    }

    /// Whether the lease was granted or refreshed less than `window` ago.
    pub fn refreshed_within(&self, window: Duration) -> bool {
        lock(&self.state).is_some_and(|l| l.refreshed.elapsed() < window)
    }

    /// My lease, granted if there is none or `ttl` changed; not refreshed.
    pub async fn ensure(&self, client: &mut Client, ttl: i64) -> Result<i64, Failure> {
        let _serial = self.op.lock().await;
        if let Some(l) = *lock(&self.state) {
            if l.requested_ttl == ttl {
                return Ok(l.id);
            }
        }
        self.grant(client, ttl).await
    }

    async fn grant(&self, client: &mut Client, ttl: i64) -> Result<i64, Failure> {
        let sent = Instant::now();
        let resp = client.lease_grant(ttl, None).await?;
        if !resp.error().is_empty() {
            return Err(Failure::Retry(format!(
                "lease grant refused: {}",
                resp.error()
            )));
        }
        tracing::debug!(lease = resp.id(), ttl = resp.ttl(), "granted etcd lease");
        *lock(&self.state) = Some(Lease {
            id: resp.id(),
            requested_ttl: ttl,
            refreshed: sent,
        });
        Ok(resp.id())
    }

    /// My lease, refreshed by one keepalive (the stream is closed right after), or a
    /// new one when it is gone or `ttl` changed.
    pub async fn refresh(&self, client: &mut Client, ttl: i64) -> Result<i64, Failure> {
        let _serial = self.op.lock().await;
        let current = *lock(&self.state);
        let Some(lease) = current.filter(|l| l.requested_ttl == ttl) else {
            return self.grant(client, ttl).await;
        };
        let sent = Instant::now();
        match client.lease_keep_alive(lease.id).await {
            Ok(_) => {
                if let Some(l) = lock(&self.state).as_mut() {
                    if l.id == lease.id {
                        l.refreshed = sent;
                    }
                }
                Ok(lease.id)
            }
            Err(e) => match classify(e) {
                Failure::LeaseGone => {
                    tracing::info!(lease = lease.id, "etcd lease expired; granting a new one");
                    *lock(&self.state) = None;
                    self.grant(client, ttl).await
                }
                other => Err(other),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ttl_rounds_up() {
        assert_eq!(lease_ttl_secs(Duration::from_millis(2500)), 3);
        assert_eq!(lease_ttl_secs(Duration::from_secs(30)), 30);
        assert_eq!(lease_ttl_secs(Duration::from_millis(10)), 1);
    }
}
