//! Wake-ups: a background blocking query on the cluster prefix that bumps a
//! counter when a key that calls for a decision (`leader`, `config`, `failover`,
//! `sync`, `initialize`) changed, and after every reconnect.

use crate::client::{ConsulClient, KvPair};
use ha_core::model::keys::wakes_ha_loop;
use ha_core::ClusterKeys;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// How long one blocking query waits at most.
const BLOCKING_WAIT: Duration = Duration::from_secs(30);
/// Backoff bounds after a failed query.
const MIN_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// The background watcher; stops when dropped.
pub(crate) struct PrefixWatcher {
    task: JoinHandle<()>,
}

impl PrefixWatcher {
    /// Starts watching the cluster's prefix on the current tokio runtime; the
    /// receiver's counter increases on every relevant change. `None` outside a
    /// runtime.
    pub(crate) fn start(
        client: ConsulClient,
        keys: ClusterKeys,
    ) -> Option<(Self, watch::Receiver<u64>)> {
        let runtime = tokio::runtime::Handle::try_current().ok()?;
        let (tx, rx) = watch::channel(0u64);
        let task = runtime.spawn(watch_loop(client, keys, tx));
        Some((PrefixWatcher { task }, rx))
    }
}

impl Drop for PrefixWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `(key, ModifyIndex, holder)` of the decision keys: what a wake-up is about.
/// Every member rewrites `members/*` and the leader `status` each cycle; those
/// move the prefix index too but must not wake the loop.
type Fingerprint = BTreeMap<String, (u64, Option<String>)>;

fn fingerprint(keys: &ClusterKeys, pairs: &[KvPair]) -> Fingerprint {
    pairs
        .iter()
        .filter_map(|p| {
            let relative = keys.relative(&p.key)?;
            wakes_ha_loop(relative).then(|| {
                (
                    relative.to_string(),
                    (p.modify_index, p.holder().map(str::to_string)),
                )
            })
        })
        .collect()
}

async fn watch_loop(client: ConsulClient, keys: ClusterKeys, tx: watch::Sender<u64>) {
    let prefix = keys.prefix_without_leading_slash().to_string();
    // 0 = "answer at once": used first and after every failure, since the agent
    // may have been restarted with a lower index.
    let mut index = 0u64;
    // None: nothing seen yet, or a reconnect (changes may have been missed).
    let mut seen: Option<Fingerprint> = None;
    let mut backoff = MIN_BACKOFF;
    loop {
        match client.kv_list_blocking(&prefix, index, BLOCKING_WAIT).await {
            Ok((pairs, new_index)) => {
                backoff = MIN_BACKOFF;
                let now = fingerprint(&keys, &pairs);
                if seen.as_ref() != Some(&now) {
                    tx.send_modify(|n| *n += 1);
                }
                seen = Some(now);
                if new_index == 0 {
                    // No index header: never spin on non-blocking reads.
                    tokio::time::sleep(MIN_BACKOFF).await;
                }
                index = new_index;
            }
            Err(e) => {
                tracing::debug!(error = %e, "consul watch failed; reconnecting");
                index = 0;
                seen = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}
