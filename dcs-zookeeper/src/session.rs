//! The agent's ZooKeeper session: opened lazily, replaced when it ends.
//!
//! ZooKeeper ties ephemeral znodes (leader, member) to a session; once a session has
//! expired every later request on it fails, so a new one is opened. Nothing carries
//! over: the old session's ephemerals are gone, which is exactly how the backend
//! learns that it lost the leader key.

use ha_core::DcsTiming;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::mpsc;
use zookeeper_client::{AddWatchMode, Client, PersistentWatcher, StateWatcher};

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
    timing: Mutex<DcsTiming>,
    current: tokio::sync::Mutex<Option<Client>>,
    watched_paths: Vec<String>,
    opened: mpsc::UnboundedSender<Watched>,
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
        timing: DcsTiming,
        watched_paths: Vec<String>,
        opened: mpsc::UnboundedSender<Watched>,
    ) -> Self {
        Sessions {
            connect_string,
            auth,
            timing: Mutex::new(timing),
            current: tokio::sync::Mutex::new(None),
            watched_paths,
            opened,
        }
    }

    pub(crate) fn timing(&self) -> DcsTiming {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The new timing applies to the next session (a new ttl cannot be renegotiated
    /// on a live session; restarting it would drop the leader key).
    pub(crate) fn set_timing(&self, timing: DcsTiming) {
        *self.timing.lock().unwrap_or_else(|p| p.into_inner()) = timing;
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
        if let Some(c) = cur.as_ref() {
            let state = c.state();
            if !state.is_terminated() {
                return Ok(c.clone());
            }
            tracing::warn!(
                session = %c.session_id(),
                ?state,
                "zookeeper session ended; its ephemeral leader and member znodes are gone, opening a new one"
            );
            *cur = None;
        }
        let t = self.timing();
        let mut connector = Client::connector()
            .with_session_timeout(t.ttl)
            .with_connection_timeout(connection_timeout(&t))
            .with_fail_eagerly();
        for (scheme, credential) in &self.auth {
            connector = connector.with_auth(scheme, credential);
        }
        let client = connector.connect(&self.connect_string).await?;
        if client.session_timeout() != t.ttl {
            tracing::info!(
                wanted = ?t.ttl,
                negotiated = ?client.session_timeout(),
                "zookeeper negotiated a different session timeout (server min/maxSessionTimeout)"
            );
        }
        let state = client.state_watcher();
        let watchers = futures::future::try_join_all(
            self.watched_paths
                .iter()
                .map(|p| client.watch(p, AddWatchMode::Persistent)),
        )
        .await?;
        tracing::info!(session = %client.session_id(), "zookeeper session opened");
        // The watch task may be gone (backend being dropped); nothing to wake then.
        let _ = self.opened.send(Watched { state, watchers });
        *cur = Some(client.clone());
        Ok(client)
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
