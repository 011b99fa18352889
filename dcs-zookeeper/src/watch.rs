//! Turns ZooKeeper watches and session state changes into `subscribe()` wake-ups.
//!
//! Each session carries persistent watches (ZooKeeper ≥ 3.6) on `leader` and
//! `config`, which fire on creation, deletion and data changes. Every session state
//! change (disconnect, reconnect, expiry) wakes the loop too, and an ended session
//! is replaced right away so that the new session's watches are in place soon.

use crate::backend::Inner;
use crate::session::Watched;
use std::sync::Weak;
use std::time::Duration;
use tokio::sync::mpsc;
use zookeeper_client::{EventType, PersistentWatcher};

/// Pause before trying again to open a session after a failure.
const RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Runs until the backend is dropped. `opened` delivers each new session's watches.
pub(crate) async fn run(inner: Weak<Inner>, mut opened: mpsc::UnboundedReceiver<Watched>) {
    let mut current: Option<Watched> = None;
    let mut sessions_seen = 0u64;
    loop {
        let event = match current.as_mut() {
            // No live session: take one opened by a call, or open one.
            None => tokio::select! {
                w = opened.recv() => Event::Opened(w),
                () = open_session(&inner) => Event::Tried,
            },
            Some(w) => tokio::select! {
                new = opened.recv() => Event::Opened(new),
                s = w.state.changed() => Event::Changed { ended: s.is_terminated() },
                ended = first_event(&mut w.watchers) => Event::Changed { ended },
            },
        };
        let Some(strong) = inner.upgrade() else {
            return;
        };
        match event {
            Event::Opened(None) => return,
            Event::Opened(Some(w)) => {
                sessions_seen += 1;
                // A replacement session: whatever happened in between is unknown.
                if sessions_seen > 1 {
                    strong.bump();
                }
                current = Some(w);
            }
            Event::Changed { ended } => {
                strong.bump();
                if ended {
                    // Watchers must not be polled after a terminal event.
                    current = None;
                }
            }
            Event::Tried => {}
        }
    }
}

enum Event {
    Opened(Option<Watched>),
    Changed { ended: bool },
    Tried,
}

/// Opens a session (its watches arrive through the channel); pauses after a failure.
async fn open_session(inner: &Weak<Inner>) {
    let Some(strong) = inner.upgrade() else {
        return std::future::pending().await;
    };
    let bound = strong.sessions.timing().retry_timeout;
    let outcome = tokio::time::timeout(bound, strong.sessions.client()).await;
    drop(strong);
    match outcome {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "zookeeper: could not open a session yet");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
        Err(_) => {
            tracing::debug!("zookeeper: no session within {bound:?}");
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// Waits for the next event on any watcher; `true` when it reports the end of the
/// session.
async fn first_event(watchers: &mut [PersistentWatcher]) -> bool {
    if watchers.is_empty() {
        return std::future::pending().await;
    }
    let events = watchers.iter_mut().map(|w| Box::pin(w.changed()));
    let (event, _, _) = futures::future::select_all(events).await;
    event.event_type == EventType::Session && event.session_state.is_terminated()
}
