//! What a switchover's demotion does before it stops Postgres (fast): flush dirty
//! buffers with a `CHECKPOINT` while writes still flow, unless the REST API ran one
//! just before it wrote the request (a second would only lengthen the clients' pause);
//! and let clients reach a transaction boundary, so a proxy that paused them at the
//! request loses no transaction to the fast stop.

use super::Components;
use crate::clock::MonoTime;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How recent a finished `CHECKPOINT` must be for a switchover's demotion to skip its
/// own. The leader is woken the moment the request is written and decides within a
/// cycle or two (a peer probe); a request that waits longer (for its candidate to
/// stream, up to 12 s) lets writes dirty buffers again, and the demotion flushes them
/// itself before it stops Postgres.
pub const RECENT_CHECKPOINT: Duration = Duration::from_secs(5);

/// How long after the request was written (the API's checkpoint ended just before) a
/// demotion that skipped its checkpoint waits before it stops Postgres, so proxies
/// see the request and hold their clients at a transaction boundary first (they learn
/// of it from a DCS watch: a few ms, ~40 ms on a loaded machine). Without this the
/// fast stop can cut a transaction a proxy let through a moment before it paused.
pub const PAUSE_GRACE: Duration = Duration::from_millis(50);

/// How long the demotion waits at most for client sessions to leave their
/// transactions before the fast stop. Clients held by a proxy are idle within
/// milliseconds; clients connected directly keep writing (to this primary, which still
/// holds the lease) and are cut by the stop as before.
pub const DRAIN_LIMIT: Duration = Duration::from_millis(200);

/// How often the drain asks Postgres.
const DRAIN_POLL: Duration = Duration::from_millis(5);

/// The end of the latest `CHECKPOINT` reported to the runner (shared by its handle and
/// its jobs).
#[derive(Debug, Clone, Default)]
pub(super) struct CheckpointRecord(Arc<Mutex<Option<MonoTime>>>);

impl CheckpointRecord {
    /// A `CHECKPOINT` finished at `at`.
    pub(super) fn finished(&self, at: MonoTime) {
        let mut last = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *last = Some(last.map_or(at, |before| before.max(at)));
    }

    /// When the latest `CHECKPOINT` finished, if that was less than
    /// [`RECENT_CHECKPOINT`] before `now`.
    pub(super) fn recent(&self, now: MonoTime) -> Option<MonoTime> {
        let last = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        last.filter(|at| *at <= now && now.since(*at) < RECENT_CHECKPOINT)
    }
}

/// Prepares a running primary for a switchover's fast stop (see the module docs).
pub(super) async fn prepare_switchover_stop(parts: &Components, checkpoints: &CheckpointRecord) {
    let pg = &parts.pg;
    match checkpoints.recent(parts.clock.now()) {
        Some(at) => {
            let age = parts.clock.now().since(at);
            tracing::info!(
                "no checkpoint before the switchover stop: one finished {} ms ago",
                age.as_millis()
            );
            if let Some(rest) = PAUSE_GRACE.checked_sub(age) {
                tokio::time::sleep(rest).await;
            }
        }
        None => {
            if let Err(e) = pg.checkpoint().await {
                tracing::debug!("checkpoint before the switchover stop failed: {e}");
            }
        }
    }
    let started = tokio::time::Instant::now();
    loop {
        match pg.clients_in_transaction().await {
            Ok(0) => break,
            Ok(n) if started.elapsed() >= DRAIN_LIMIT => {
                tracing::info!(
                    "stopping with {n} client session(s) still in a transaction after {} ms",
                    DRAIN_LIMIT.as_millis()
                );
                break;
            }
            Ok(_) => tokio::time::sleep(DRAIN_POLL).await,
            Err(e) => {
                tracing::warn!("cannot see which clients are in a transaction: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_counts_as_recent_for_five_seconds() {
        let record = CheckpointRecord::default();
        let t = MonoTime::from_millis(10_000);
        assert_eq!(record.recent(t), None, "none reported yet");
        record.finished(t);
        assert_eq!(record.recent(t.plus(Duration::from_millis(300))), Some(t));
        assert_eq!(record.recent(t.plus(RECENT_CHECKPOINT)), None);
        // An older report does not hide a newer one.
        record.finished(MonoTime::from_millis(9_000));
        assert_eq!(record.recent(t.plus(Duration::from_secs(1))), Some(t));
    }
}
