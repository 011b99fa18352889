//! The agent's ZooKeeper session: opened lazily, replaced when it ends.
//!
//! ZooKeeper ties ephemeral znodes (leader, member) to a session; once a session has
//! expired every later request on it fails, so a new one is opened. Nothing carries
//! over: the old session's ephemerals are gone, which is exactly how the backend
//! learns that it lost the leader key.

use ha_core::DcsTiming;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use zookeeper_client::{
    Acl, Acls, AddWatchMode, Client, CreateMode, Error as ZkClientError, PersistentWatcher,
    StateWatcher, TlsOptions,
};

/// What the watch task needs from a newly opened session: its state changes and the
/// persistent watches set on it.
pub(crate) struct Watched {
    pub(crate) state: StateWatcher,
    pub(crate) watchers: Vec<PersistentWatcher>,
}

/// Opens and hands out the current session.
pub(crate) struct Sessions {
    connect_string: String,
    auth: Vec<(String, Vec<u8>)>,
    /// Set: every host is reached over TLS with these settings.
    tls: Option<TlsOptions>,
    timing: Mutex<DcsTiming>,
    current: tokio::sync::Mutex<Option<Client>>,
    ttl_changed: AtomicBool,
    paths: SessionPaths,
    opened: mpsc::UnboundedSender<Watched>,
}

/// The znodes a session cares about.
pub(crate) struct SessionPaths {
    /// Persistent watches that wake the HA loop.
    pub(crate) watched: Vec<String>,
    /// My ephemeral znodes, moved to a replacement session when ttl changes.
    pub(crate) ephemeral: Vec<String>,
    /// ACLs to re-create them with.
    pub(crate) acls: Vec<Acl>,
}

/// How long without an answer before the client gives up on a server and tries the
/// next one. Patroni uses `max(loop_wait - 2 s, 2 s)`; it is capped at 2/5 of the
/// session timeout so there are at least two attempts before the session expires.
pub(crate) fn connection_timeout(t: &DcsTiming) -> Duration {
    let patroni = t
        .loop_wait
        .saturating_sub(Duration::from_secs(2))
        .max(Duration::from_secs(2));
    patroni.min(t.ttl * 2 / 5).max(Duration::from_millis(100))
}

impl Sessions {
    pub(crate) fn new(
        connect_string: String,
        auth: Vec<(String, Vec<u8>)>,
        tls: Option<TlsOptions>,
        timing: DcsTiming,
        paths: SessionPaths,
        opened: mpsc::UnboundedSender<Watched>,
    ) -> Self {
        Sessions {
            connect_string,
            auth,
            tls,
            timing: Mutex::new(timing),
            current: tokio::sync::Mutex::new(None),
            ttl_changed: AtomicBool::new(false),
            paths,
            opened,
        }
    }

    /// Whether sessions are opened over TLS.
    pub(crate) fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(crate) fn timing(&self) -> DcsTiming {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A session's timeout cannot change, so a new ttl means a new session: the next
    /// call opens one and moves my ephemeral znodes to it before closing the old one
    /// (Patroni restarts the session, which drops the leader key; the handover keeps
    /// it without a gap).
    pub(crate) fn set_timing(&self, timing: DcsTiming) {
        let mut t = self.timing.lock().unwrap_or_else(|p| p.into_inner());
        if t.ttl != timing.ttl {
            self.ttl_changed.store(true, Ordering::SeqCst);
        }
        *t = timing;
    }

    /// The session if it is still usable, without opening one.
    pub(crate) fn live(&self) -> Option<Client> {
        let cur = self.current.try_lock().ok()?;
        cur.as_ref().filter(|c| !c.state().is_terminated()).cloned()
    }

    /// The current session, opening a new one when there is none or it has ended
    /// (expired, closed, auth failed). A new session gets its persistent watches
    /// before it is used, so a caller's first read is already covered by them. The
    /// caller bounds the wait.
    pub(crate) async fn client(&self) -> Result<Client, zookeeper_client::Error> {
        let mut cur = self.current.lock().await;
        let mut previous = None;
        if let Some(c) = cur.as_ref() {
            let state = c.state();
            if !state.is_terminated() {
                if !self.ttl_changed.load(Ordering::SeqCst) {
                    return Ok(c.clone());
                }
                previous = Some(c.clone());
            } else {
                tracing::warn!(
                    session = %c.session_id(),
                    ?state,
                    "zookeeper session ended; its ephemeral leader and member znodes are gone, opening a new one"
                );
                *cur = None;
            }
        }
        let t = self.timing();
        let mut connector = Client::connector()
            .with_session_timeout(t.ttl)
            .with_connection_timeout(connection_timeout(&t))
            .with_fail_eagerly();
        for (scheme, credential) in &self.auth {
            connector = connector.with_auth(scheme, credential);
        }
        let client = match &self.tls {
            Some(tls) => {
                connector
                    .with_tls(tls.clone())
                    .secure_connect(&self.connect_string)
                    .await?
            }
            None => connector.connect(&self.connect_string).await?,
        };
        if client.session_timeout() != t.ttl {
            tracing::info!(
                wanted = ?t.ttl,
                negotiated = ?client.session_timeout(),
                "zookeeper negotiated a different session timeout (server min/maxSessionTimeout)"
            );
        }
        let state = client.state_watcher();
        let mut watchers = Vec::new();
        for result in futures::future::join_all(
            self.paths
                .watched
                .iter()
                .map(|p| client.watch(p, AddWatchMode::Persistent)),
        )
        .await
        {
            match result {
                Ok(w) => watchers.push(w),
                Err(ZkClientError::Unimplemented) => {
                    tracing::warn!(
                        "zookeeper server older than 3.6 has no persistent watches; \
                         the HA loop wakes only every loop_wait"
                    );
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(old) = previous {
            // If this future is dropped mid-way, the new session closes and takes
            // what it already received with it: the lock is lost, never doubled.
            let handed_over = self.hand_over(&old, &client).await;
            self.ttl_changed.store(false, Ordering::SeqCst);
            match handed_over {
                Ok(()) => tracing::info!(
                    old = %old.session_id(),
                    new = %client.session_id(),
                    ttl = ?t.ttl,
                    "zookeeper session replaced for the new ttl"
                ),
                Err(e) => {
                    // Keep the old session (and what it still owns) for one more
                    // HA cycle: renew_leader / touch_member re-bind my znodes to the
                    // new session, as for any znode with my name and another owner.
                    tracing::warn!(error = %e, "zookeeper session handover incomplete");
                    let grace = t.loop_wait + t.retry_timeout;
                    tokio::spawn(async move {
                        tokio::time::sleep(grace).await;
                        drop(old);
                    });
                }
            }
        }
        tracing::info!(session = %client.session_id(), "zookeeper session opened");
        // The watch task may be gone (backend being dropped); nothing to wake then.
        let _ = self.opened.send(Watched { state, watchers });
        *cur = Some(client.clone());
        Ok(client)
    }
}

impl Sessions {
    /// Moves my ephemeral znodes owned by `old` to `new`, each atomically (delete at
    /// its version + create), so the leader key never disappears on the way.
    async fn hand_over(&self, old: &Client, new: &Client) -> Result<(), ZkClientError> {
        let options = if self.paths.acls.is_empty() {
            CreateMode::Ephemeral.with_acls(Acls::anyone_all())
        } else {
            CreateMode::Ephemeral.with_acls(Acls::new(&self.paths.acls))
        };
        for path in &self.paths.ephemeral {
            let (data, stat) = match new.get_data(path).await {
                Ok(r) => r,
                Err(ZkClientError::NoNode) => continue,
                Err(e) => return Err(e),
            };
            if stat.ephemeral_owner != old.session_id().0 {
                continue;
            }
            let mut txn = new.new_multi_writer();
            txn.add_delete(path, Some(stat.version))?;
            txn.add_create(path, &data, &options)?;
            match txn.commit().await.map_err(ZkClientError::from) {
                // Changed meanwhile: no longer mine to move.
                Ok(_) | Err(ZkClientError::NoNode | ZkClientError::BadVersion) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_timeout_follows_patroni_within_the_session() {
        let t = DcsTiming::default();
        assert_eq!(connection_timeout(&t), Duration::from_secs(8));
        let short = DcsTiming {
            ttl: Duration::from_secs(4),
            loop_wait: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(1),
        };
        assert_eq!(connection_timeout(&short), Duration::from_millis(1600));
    }
}
