//! One long-lived connection to the local server for the queries on a failover's
//! critical path: the HA loop's health query, the position peers ask for during a
//! leader race (`/patroni`), and the promotion with its end-of-recovery polling.
//! Opening a backend per query costs a fork and authentication, a few ms on an idle
//! machine and hundreds under CPU contention; Patroni keeps one connection too.
//!
//! The connection belongs to one postmaster (by pid): a new postmaster, a closed
//! connection or a query that timed out gets a fresh one. It is dropped before every
//! stop, so a smart shutdown never waits for it.
//!
//! A second kept connection serves the REST API's quick readings (the WAL positions
//! and role for `/patroni` and the health checks): queries on one connection run one
//! after the other, and a health check must not wait behind a health query that a
//! loaded server takes a second to answer.

use super::*;

/// The kept connection and the postmaster it was opened to.
#[derive(Debug)]
pub(super) struct LocalSession {
    postmaster: i32,
    client: Arc<tokio_postgres::Client>,
}

/// Which kept connection a query uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Slot {
    /// The HA loop's (health query, promotion).
    Loop,
    /// The REST API's quick readings.
    Api,
}

impl PgDriver {
    fn slot(&self, slot: Slot) -> &tokio::sync::Mutex<Option<LocalSession>> {
        match slot {
            Slot::Loop => &self.session,
            Slot::Api => &self.api_session,
        }
    }

    /// The HA loop's kept connection ([`PgDriver::kept_session`]).
    pub(super) async fn local_session(
        &self,
        connect_timeout: Duration,
    ) -> Result<Arc<tokio_postgres::Client>> {
        self.kept_session(Slot::Loop, connect_timeout).await
    }

    /// The kept connection of `slot` to the running postmaster, opened (within
    /// `connect_timeout`) when there is none, it is closed, or it belongs to an
    /// earlier postmaster.
    pub(super) async fn kept_session(
        &self,
        slot: Slot,
        connect_timeout: Duration,
    ) -> Result<Arc<tokio_postgres::Client>> {
        let postmaster = self.postmaster_pid();
        let mut kept = self.slot(slot).lock().await;
        if let (Some(s), Some(pid)) = (kept.as_ref(), postmaster) {
            if s.postmaster == pid && !s.client.is_closed() {
                return Ok(s.client.clone());
            }
        }
        *kept = None;
        let client = Arc::new(self.connect_local(connect_timeout).await?);
        if let Some(pid) = postmaster {
            *kept = Some(LocalSession {
                postmaster: pid,
                client: client.clone(),
            });
        }
        Ok(client)
    }

    /// Forgets both kept connections (closing them once no query holds them any
    /// more): before a stop.
    pub(super) async fn drop_local_session(&self) {
        *self.session.lock().await = None;
        *self.api_session.lock().await = None;
    }

    /// Forgets the kept connection of `slot`: after a query on it failed or timed out.
    pub(super) async fn drop_session(&self, slot: Slot) {
        *self.slot(slot).lock().await = None;
    }
}
