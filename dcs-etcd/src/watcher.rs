//! The background watch on the cluster prefix: it feeds the cluster cache and wakes
//! the HA loop.
//!
//! It never writes or refreshes anything, so a stuck HA loop still loses its lease.

use crate::cache::{raw_entry, ClusterCache};
use crate::client::{attempt_timeout, ClientFactory};
use crate::failure::Failure;
use etcd_client::{EventType, GetOptions, WatchOptions};
use ha_core::model::keys::wakes_ha_loop;
use ha_core::ClusterKeys;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// First pause after a lost watch.
const MIN_BACKOFF: Duration = Duration::from_millis(100);

/// Stops the watch task when dropped.
pub(crate) struct WatcherGuard {
    task: JoinHandle<()>,
}

impl Drop for WatcherGuard {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn bump(wake: &watch::Sender<u64>) {
    wake.send_modify(|n| *n = n.wrapping_add(1));
}

/// Starts the watch task: it keeps one watch on the cluster prefix open, reconnecting with
/// backoff; each session fills `cache` with a range read and keeps it current from the
/// watch. It bumps `wake` on every change of a decision key (and once after each
/// reconnect, since events may have been missed while it was away).
pub(crate) fn spawn_watcher(
    factory: ClientFactory,
    keys: ClusterKeys,
    wake: Arc<watch::Sender<u64>>,
    cache: Arc<ClusterCache>,
    retry_timeout: Duration,
) -> WatcherGuard {
    let task = tokio::spawn(async move {
        let mut backoff = MIN_BACKOFF;
        let mut connected_before = false;
        let mut endpoint = 0usize;
        loop {
            let started = Instant::now();
            // Run each session in its own task: etcd-client asserts on unexpected
            // watch replies, and a panic there must not end the watching for good.
            let session = tokio::spawn(watch_session(
                factory.clone(),
                endpoint,
                keys.clone(),
                wake.clone(),
                cache.clone(),
                retry_timeout,
                connected_before,
            ));
            let ended = session.await;
            // Also after a panic in the session: the copy is no longer fed.
            cache.unsync();
            match ended {
                Ok(Ok(reason)) => {
                    connected_before = true;
                    tracing::info!(%reason, "etcd watch ended; reconnecting");
                }
                Ok(Err(SessionError::NeverStarted(reason))) => {
                    tracing::debug!(%reason, "etcd watch could not be started");
                }
                Err(e) => tracing::warn!(error = %e, "etcd watch task failed; restarting"),
            }
            // Whatever ended the session, try the next member first.
            endpoint = (endpoint + 1) % factory.endpoints.len();
            if started.elapsed() > MAX_BACKOFF * 5 {
                backoff = MIN_BACKOFF;
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    });
    WatcherGuard { task }
}

enum SessionError {
    NeverStarted(String),
}

/// One watch stream from creation to its end. `Ok(reason)` once the watch had been
/// created; `Err` if it never was.
async fn watch_session(
    factory: ClientFactory,
    endpoint: usize,
    keys: ClusterKeys,
    wake: Arc<watch::Sender<u64>>,
    cache: Arc<ClusterCache>,
    retry_timeout: Duration,
    reconnect: bool,
) -> Result<String, SessionError> {
    let per_attempt = attempt_timeout(retry_timeout, factory.endpoints.len());
    // The watch first, then one range read: the watch (from "now") is in etcd's
    // synced group at once, so it never lags in a catch-up; events it delivers that
    // the read already holds are skipped by revision. (A watch from a past revision
    // catches up in the background, and etcd before 3.4.24/3.5.8 may answer a
    // progress request before the caught-up events.)
    let start = async {
        let mut client = factory.watch_client(endpoint, per_attempt).await?;
        let options = WatchOptions::new().with_prefix().with_prev_key();
        let (watcher, stream) = client
            .watch(keys.prefix(), Some(options))
            .await
            .map_err(Failure::from)?;
        let read = client
            .get(keys.prefix(), Some(GetOptions::new().with_prefix()))
            .await
            .map_err(Failure::from)?;
        let revision = read.header().map_or(0, |h| h.revision());
        let entries: Vec<_> = read.kvs().iter().map(raw_entry).collect();
        Ok::<_, Failure>((watcher, stream, entries, revision))
    };
    let (mut watcher, mut stream, entries, revision) =
        match tokio::time::timeout(per_attempt, start).await {
            Ok(Ok(started)) => started,
            Ok(Err(f)) => return Err(SessionError::NeverStarted(format!("{f:?}"))),
            Err(_) => {
                return Err(SessionError::NeverStarted(format!(
                    "no answer within {per_attempt:?}"
                )))
            }
        };
    let session = cache.reset(entries, revision);
    if reconnect {
        bump(&wake);
    }
    let reason = loop {
        tokio::select! {
            message = stream.message() => match message {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        break format!("watch cancelled: {}", resp.cancel_reason());
                    }
                    // Into the copy first: the HA loop woken next reads it.
                    cache.apply_events(resp.events());
                    if resp.events().iter().any(|e| wakes(&keys, e)) {
                        bump(&wake);
                    }
                }
                Ok(None) => break "stream closed".to_string(),
                Err(e) => break e.to_string(),
            },
            _ = cache.progress_wanted.notified() => {
                let mut failed = None;
                while cache.next_unsent() {
                    if let Err(e) = watcher.request_progress().await {
                        failed = Some(format!("progress request failed: {e}"));
                        break;
                    }
                }
                if let Some(reason) = failed {
                    break reason;
                }
            }
            _ = cache.restart_wanted.notified() => {
                if cache.should_restart(session) {
                    break "no answer to a progress request".to_string();
                }
            }
        }
    };
    cache.unsync();
    Ok(reason)
}

/// Whether an event should wake the HA loop: a decision key was created, deleted or
/// changed (a re-write with the same value on the same lease is no change).
fn wakes(keys: &ClusterKeys, event: &etcd_client::Event) -> bool {
    let Some(kv) = event.kv() else {
        return false;
    };
    let key = String::from_utf8_lossy(kv.key());
    let Some(relative) = keys.relative(&key) else {
        return false;
    };
    // Member records, `status`, `history` and `failsafe` are rewritten every cycle;
    // waking on them would make every loop spin.
    if !wakes_ha_loop(relative) {
        return false;
    }
    if event.event_type() != EventType::Put {
        return true;
    }
    match event.prev_kv() {
        Some(prev) => kv.value() != prev.value() || kv.lease() != prev.lease(),
        None => true,
    }
}
