//! Keeps the routing view current: reads the cluster whenever the DCS says the
//! leader or failover key may have changed, and at a short interval for member
//! records (which do not wake watchers); while a new leader is still promoting at a
//! much shorter one, so held clients move the moment its record says it runs as
//! primary (the leader and failover keys wake the watcher themselves). When the DCS stays silent for longer than
//! the leader key's ttl, the primary is withdrawn: the lease may have moved without
//! the proxy hearing of it. Every `loop_wait` it also publishes the proxy's own
//! record (`proxies/<name>`, on its lease) so `fullautoctl list` shows it.

use crate::routes::{NoPrimary, Routes};
use ha_core::Dcs;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// How often the cluster is read without a wake-up (member records, lag).
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// How often it is read while the leader promotes and clients wait for its record
/// (etcd's backend serves these reads from its watch-fed cache: no request).
pub const CHANGING_POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Starts the watcher task; the receiver always holds the latest routes. `record`
/// is the proxy's own record, published every `loop_wait`.
pub fn spawn(dcs: Arc<dyn Dcs>, max_lag: Option<u64>, record: String) -> watch::Receiver<Routes> {
    let (tx, rx) = watch::channel(Routes::default());
    tokio::spawn(run(dcs, max_lag, record, tx));
    rx
}

/// Publishes the proxy's record unless the previous write still runs (a slow DCS
/// must not hold up routing).
fn publish_record(dcs: &Arc<dyn Dcs>, record: &str, busy: &Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::Ordering;
    if busy.swap(true, Ordering::AcqRel) {
        return;
    }
    let (dcs, record, busy) = (dcs.clone(), record.to_string(), busy.clone());
    tokio::spawn(async move {
        if let Err(e) = dcs.touch_proxy(&record).await {
            tracing::warn!("cannot publish the proxy's record in the DCS: {e}");
        }
        busy.store(false, Ordering::Release);
    });
}

async fn run(dcs: Arc<dyn Dcs>, max_lag: Option<u64>, record: String, tx: watch::Sender<Routes>) {
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut published: Option<Instant> = None;
    let mut wake = dcs.subscribe();
    let mut last_ok: Option<Instant> = None;
    // Until the cluster has been read once, the default ttl bounds the silence.
    let mut ttl = Duration::from_secs(30);
    let mut complained = false;
    loop {
        // A read never takes past the moment the view goes stale.
        let budget = last_ok
            .map(|t| (t + ttl).saturating_duration_since(Instant::now()))
            .unwrap_or(ttl)
            .max(Duration::from_millis(100));
        match tokio::time::timeout(budget, dcs.get_cluster()).await {
            Ok(Ok(cluster)) => {
                last_ok = Some(Instant::now());
                ttl = cluster.dynamic_config().ttl();
                let every = cluster.dynamic_config().loop_wait();
                if published.is_none_or(|t| t.elapsed() >= every) {
                    published = Some(Instant::now());
                    publish_record(&dcs, &record, &busy);
                }
                if complained {
                    tracing::info!("the DCS answers again");
                    complained = false;
                }
                let now_millis = chrono::Utc::now().timestamp_millis();
                let routes = Routes::from_cluster(&cluster, max_lag, now_millis);
                publish(&tx, routes);
            }
            outcome => {
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {} ms", budget.as_millis()),
                };
                if !complained {
                    tracing::warn!("cannot read the cluster from the DCS: {why}");
                    complained = true;
                }
                let silent = last_ok.map_or(Duration::MAX, |t| t.elapsed());
                if silent >= ttl && tx.borrow().primary.is_ok() {
                    let seconds = last_ok.map_or(0, |t| t.elapsed().as_secs());
                    let routes = tx
                        .borrow()
                        .without_primary(NoPrimary::DcsSilent { seconds });
                    publish(&tx, routes);
                }
            }
        }
        let every = if !complained && tx.borrow().promoting {
            CHANGING_POLL_INTERVAL
        } else {
            POLL_INTERVAL
        };
        tokio::select! {
            changed = wake.changed() => {
                if changed.is_err() {
                    tracing::warn!("the DCS backend stopped its watch; reading every {} ms", POLL_INTERVAL.as_millis());
                    wake = dcs.subscribe();
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
            }
            _ = tokio::time::sleep(every) => {}
        }
        if tx.is_closed() {
            return;
        }
    }
}

/// Sends `routes` if they differ from the current ones, logging what changed.
fn publish(tx: &watch::Sender<Routes>, routes: Routes) {
    tx.send_if_modified(|current| {
        if *current == routes {
            return false;
        }
        if current.primary != routes.primary {
            match &routes.primary {
                Ok(t) => tracing::info!("read-write clients now go to {t}"),
                Err(why) => tracing::warn!("no primary to route to: {why}"),
            }
        }
        if current.replicas != routes.replicas {
            let names: Vec<String> = routes.replicas.iter().map(|t| t.to_string()).collect();
            tracing::info!(
                "read-only clients now go to: {}",
                if names.is_empty() {
                    "no replica".to_string()
                } else {
                    names.join(", ")
                }
            );
        }
        if routes.promoting && !current.promoting {
            if let Ok(t) = &routes.primary {
                tracing::info!("{} holds the leader key but does not run as primary yet: new read-write connections wait", t.name);
            }
        }
        if current.switching != routes.switching {
            if routes.switching {
                tracing::info!("switchover requested: new read-write connections wait for it");
            } else {
                tracing::info!("no switchover pending");
            }
        }
        *current = routes;
        true
    });
}
