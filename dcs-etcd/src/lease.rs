//! The one lease per agent that `leader` and its member key are bound to.

use crate::backend::lock;
use crate::failure::{classify, Failure};
use etcd_client::{Client, LeaseKeepAliveStream, LeaseKeeper};
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

/// An open `LeaseKeepAlive` stream for one lease: every refresh is one message on it,
/// so a member opens a stream once (and again only after an error), not once per
/// refresh. etcd counts started streams (`grpc_server_started_total`), as it counts
/// unary calls.
struct KeepAliveStream {
    lease: i64,
    keeper: LeaseKeeper,
    answers: LeaseKeepAliveStream,
}

/// My lease, if any, and the lock that serializes grants and keepalives so concurrent
/// calls never grant two leases (it also holds the open keepalive stream).
#[derive(Default)]
pub(crate) struct LeaseHolder {
    state: Mutex<Option<Lease>>,
    op: tokio::sync::Mutex<Option<KeepAliveStream>>,
}

/// What one keepalive said.
enum KeepAlive {
    /// The lease lives on.
    Alive,
    /// etcd no longer knows it.
    Gone,
}

impl KeepAliveStream {
    /// Opens a stream for `lease`; opening it refreshes the lease once.
    async fn open(
        client: &mut Client,
        lease: i64,
    ) -> Result<(KeepAliveStream, KeepAlive), Failure> {
        match client.lease_keep_alive(lease).await {
            Ok((keeper, answers)) => Ok((
                KeepAliveStream {
                    lease,
                    keeper,
                    answers,
                },
                KeepAlive::Alive,
            )),
            Err(e) => match classify(e) {
                Failure::LeaseGone => Err(Failure::LeaseGone),
                other => Err(other),
            },
        }
    }

    /// One keepalive on the open stream; `Err` when the stream is no longer usable.
    async fn refresh(&mut self) -> Result<KeepAlive, String> {
        self.keeper.keep_alive().await.map_err(|e| e.to_string())?;
        match self.answers.message().await {
            Ok(Some(r)) if r.ttl() > 0 => Ok(KeepAlive::Alive),
            Ok(Some(_)) => Ok(KeepAlive::Gone),
            Ok(None) => Err("etcd closed the keepalive stream".into()),
            Err(e) => Err(e.to_string()),
        }
    }
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
        let mut stream = self.op.lock().await;
        if let Some(l) = *lock(&self.state) {
            if l.requested_ttl == ttl {
                return Ok(l.id);
            }
        }
        *stream = None;
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

    /// My lease, refreshed by one keepalive, or a new one when it is gone or `ttl`
    /// changed. The keepalive goes over the stream kept open since the last refresh;
    /// a new stream (on `client`) only when there is none or it failed. A refresh
    /// abandoned half-way (the caller's deadline) drops the stream with it, so an
    /// answer left unread on it is never taken for a later refresh's.
    pub async fn refresh(&self, client: &mut Client, ttl: i64) -> Result<i64, Failure> {
        let mut stream = self.op.lock().await;
        let current = *lock(&self.state);
        let Some(lease) = current.filter(|l| l.requested_ttl == ttl) else {
            *stream = None;
            return self.grant(client, ttl).await;
        };
        let sent = Instant::now();
        let mut open = stream.take().filter(|s| s.lease == lease.id);
        let answer = match open.as_mut() {
            Some(s) => match s.refresh().await {
                Ok(a) => Some(a),
                Err(why) => {
                    tracing::debug!(
                        lease = lease.id,
                        "etcd keepalive stream failed ({why}); opening a new one"
                    );
                    open = None;
                    None
                }
            },
            None => None,
        };
        let answer = match answer {
            Some(a) => a,
            None => match KeepAliveStream::open(client, lease.id).await {
                Ok((s, a)) => {
                    open = Some(s);
                    a
                }
                Err(Failure::LeaseGone) => KeepAlive::Gone,
                Err(other) => return Err(other),
            },
        };
        match answer {
            KeepAlive::Alive => {
                if let Some(l) = lock(&self.state).as_mut() {
                    if l.id == lease.id {
                        l.refreshed = sent;
                    }
                }
                *stream = open;
                Ok(lease.id)
            }
            KeepAlive::Gone => {
                tracing::info!(lease = lease.id, "etcd lease expired; granting a new one");
                *lock(&self.state) = None;
                self.grant(client, ttl).await
            }
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
