//! SIGTERM: stop Postgres, give up the leader key and leave a member record that
//! says `stopped`, as Patroni does on a clean shutdown.

use super::execute::{log_dcs, with_deadline};
use super::{Runner, RunnerEvent};
use crate::dcs::{Dcs, DcsTiming};
use crate::model::{Cluster, MemberData, MemberState};
use std::time::Duration;

impl Runner {
    /// SIGTERM: stop Postgres (fast), release the lease so a replica takes over at
    /// once and rewrite the member record as `stopped`; in pause mode leave Postgres
    /// running and keep the key and the record.
    pub(super) async fn shut_down_node(&mut self) {
        if let Some(job) = self.job.take() {
            let _ = job.finish().await;
        }
        let paused = self.state.config.as_ref().is_some_and(|c| c.pause);
        if paused {
            tracing::info!(node = %self.cfg.name, "shutting down in pause mode: leaving postgres running");
            return;
        }
        self.leave_sync_duty().await;
        tracing::info!(node = %self.cfg.name, "shutting down: stopping postgres");
        // From here on this node must not be advertised as the primary.
        let lease_until = self.state.lease_until.take();
        self.snapshot.send_modify(|s| s.state.lease_until = None);
        let stopped = self
            .parts
            .pg
            .stop(
                crate::postgres::StopMode::Fast,
                self.settings.pg_ctl_timeout,
            )
            .await;
        if let Err(e) = &stopped {
            tracing::error!(node = %self.cfg.name, "postgres failed to stop: {e}; keeping the leader key");
            return;
        }
        self.emit(RunnerEvent::Stopped);
        let retry = self.timing.retry_timeout;
        if lease_until.is_some_and(|t| self.parts.clock.now() < t) {
            log_dcs(
                "release leader",
                with_deadline(retry, self.parts.dcs.release_leader())
                    .await
                    .map(|_| ()),
            );
            self.state.lease_until = None;
        }
        if let Some(last) = self.last_member.take() {
            let record = stopped_record(last);
            log_dcs(
                "publish the stopped member record",
                with_deadline(retry, self.parts.dcs.touch_member(&record)).await,
            );
        }
        let _ = self.parts.fence.disarm().await;
    }
}

impl Runner {
    /// See [`leave_sync_duty`].
    async fn leave_sync_duty(&mut self) {
        let (Some(cluster), Some(record)) = (self.last_cluster.as_ref(), self.last_member.clone())
        else {
            return;
        };
        let dcs = self.parts.dcs.as_ref();
        if let Some(record) =
            leave_sync_duty(dcs, &self.cfg.name, cluster, record, self.timing).await
        {
            self.last_member = Some(record);
        }
    }
}

/// A synchronous standby about to stop asks the leader to release it first, as
/// Patroni does: its member record says `nosync` (and `sync_priority` 0 where it has
/// one) and it waits up to two `loop_wait`s for `sync` to stop naming it, so the
/// leader's commits do not wait for a standby that is gone. Only a hint: a DCS that
/// does not answer ends the wait; once released it streams for one more `loop_wait`,
/// the leader's next cycle. Returns the record published, if one was.
pub(super) async fn leave_sync_duty(
    dcs: &dyn Dcs,
    me: &str,
    cluster: &Cluster,
    mut record: MemberData,
    timing: DcsTiming,
) -> Option<MemberData> {
    let listed = |c: &Cluster| {
        let active = c
            .config
            .as_ref()
            .is_some_and(|dc| crate::decision::sync::is_active(&dc.value));
        active
            && c.sync
                .as_ref()
                .is_some_and(|s| s.value.is_standby(me) && !s.value.is_leader(me))
    };
    if !listed(cluster) {
        return None;
    }
    record.tags.nosync = Some(true);
    if let Some(p) = record.tags.sync_priority.as_mut() {
        p.value = 0;
    }
    with_deadline(timing.retry_timeout, dcs.touch_member(&record))
        .await
        .ok()?;
    tracing::info!(node = %me, "asking the leader to release this node from synchronous duty before it stops");
    let step = (timing.loop_wait / 2).max(Duration::from_millis(100));
    let mut waited = Duration::ZERO;
    while waited < timing.loop_wait * 2 {
        tokio::time::sleep(step).await;
        waited += step;
        match with_deadline(timing.retry_timeout, dcs.get_cluster()).await {
            Ok(c) if listed(&c) => {}
            Ok(_) => {
                // A leader drops a standby from `sync` one cycle before it drops it
                // from synchronous_standby_names (ours does; Patroni does both in one
                // cycle): stopping in between would hold its commits, and the waiters
                // would only be woken by the next reply of another standby (up to
                // wal_receiver_status_interval when no other commit comes). Keep
                // streaming for one more of its cycles.
                tokio::time::sleep(timing.loop_wait).await;
                tracing::info!(node = %me, "released from synchronous duty");
                return Some(record);
            }
            Err(_) => return Some(record),
        }
    }
    tracing::info!(node = %me, "the leader did not release this node from synchronous duty in time; stopping anyway");
    Some(record)
}

/// The member record of a node whose Postgres was stopped on shutdown: state
/// `stopped`, same role, no WAL positions or timeline (Patroni reports those only
/// while Postgres runs).
pub(super) fn stopped_record(mut record: MemberData) -> MemberData {
    record.state = Some(MemberState::Stopped);
    record.xlog_location = None;
    record.receive_lsn = None;
    record.replay_lsn = None;
    record.replication_state = None;
    record.timeline = None;
    record.extra.remove(crate::decision::REPLAY_LAG_SECONDS);
    record
}

#[cfg(test)]
mod tests {
    use super::{leave_sync_duty, stopped_record};
    use crate::clock::{Clock, ManualClock, MonoTime};
    use crate::dcs::{Dcs, DcsTiming};
    use crate::memory_dcs::{MemoryDcs, SharedMemoryStore};
    use crate::model::{ClusterKeys, DynamicConfig, MemberData, SyncState};
    use std::sync::Arc;
    use std::time::Duration;

    const TIMING: DcsTiming = DcsTiming {
        ttl: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(10),
        loop_wait: Duration::from_secs(10),
    };

    fn dcs(store: &SharedMemoryStore, name: &str) -> Arc<dyn Dcs> {
        let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(MonoTime::from_millis(1000), 0));
        Arc::new(MemoryDcs::new(
            store,
            clock,
            ClusterKeys::new("/service", "batman"),
            name,
            TIMING,
        ))
    }

    fn replica_record() -> MemberData {
        MemberData::parse(
            r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","api_url":"http://127.0.0.1:8009/patroni","state":"running","role":"replica","tags":{"sync_priority":2}}"#,
        )
        .expect("member record")
    }

    /// pg1, a synchronous standby of pg0 in synchronous mode, stops.
    async fn sync_cluster(store: &SharedMemoryStore) -> (Arc<dyn Dcs>, Arc<dyn Dcs>) {
        let (leader, me) = (dcs(store, "pg0"), dcs(store, "pg1"));
        let config = DynamicConfig::parse(r#"{"synchronous_mode":true}"#).unwrap();
        assert!(leader.set_config(&config, None).await.unwrap());
        let sync = SyncState {
            leader: Some("pg0".into()),
            sync_standby: vec!["pg1".into(), "pg2".into()],
            quorum: 0,
        };
        assert!(leader.set_sync(&sync, None).await.unwrap().is_some());
        me.touch_member(&replica_record()).await.unwrap();
        (leader, me)
    }

    #[tokio::test(start_paused = true)]
    async fn a_stopping_sync_standby_says_nosync_and_waits_until_the_leader_releases_it() {
        let store = SharedMemoryStore::new();
        let (leader, me) = sync_cluster(&store).await;
        let cluster = me.get_cluster().await.unwrap();
        // The leader drops pg1 once its record asks for it (as Patroni's and ours do).
        let releaser = tokio::spawn(async move {
            loop {
                let c = leader.get_cluster().await.unwrap();
                let asks = c
                    .members
                    .iter()
                    .any(|m| m.name == "pg1" && m.data.tags.nosync == Some(true));
                if asks {
                    let sync = SyncState {
                        leader: Some("pg0".into()),
                        sync_standby: vec!["pg2".into()],
                        quorum: 0,
                    };
                    let version = c.sync.map(|s| s.version);
                    assert!(leader.set_sync(&sync, version).await.unwrap().is_some());
                    return tokio::time::Instant::now();
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        });
        let record = leave_sync_duty(me.as_ref(), "pg1", &cluster, replica_record(), TIMING)
            .await
            .expect("a record asking for release");
        let returned = tokio::time::Instant::now();
        let released = releaser.await.unwrap();
        // Released, it streams for one more leader cycle, no longer.
        assert!(
            returned >= released + TIMING.loop_wait,
            "stopped before the leader's next cycle"
        );
        assert!(
            returned - released <= TIMING.loop_wait + TIMING.loop_wait / 2,
            "waited on after the release"
        );
        let published = me.get_cluster().await.unwrap();
        let mine = published.members.iter().find(|m| m.name == "pg1").unwrap();
        assert_eq!(mine.data.tags.nosync, Some(true));
        assert_eq!(
            mine.data.tags.sync_priority.as_ref().map(|p| p.value),
            Some(0)
        );
        assert_eq!(record, mine.data);
    }

    #[tokio::test(start_paused = true)]
    async fn only_a_listed_standby_asks_and_it_stops_waiting_after_two_loop_waits() {
        let store = SharedMemoryStore::new();
        let (leader, me) = sync_cluster(&store).await;
        let cluster = me.get_cluster().await.unwrap();
        // The leader itself, and a replica not named in `sync`, do not ask.
        assert_eq!(
            leave_sync_duty(leader.as_ref(), "pg0", &cluster, replica_record(), TIMING).await,
            None
        );
        assert_eq!(
            leave_sync_duty(me.as_ref(), "pg3", &cluster, replica_record(), TIMING).await,
            None
        );
        // A leader that never releases it: the stop goes on after two loop_waits.
        let before = tokio::time::Instant::now();
        assert!(
            leave_sync_duty(me.as_ref(), "pg1", &cluster, replica_record(), TIMING)
                .await
                .is_some()
        );
        assert_eq!(before.elapsed(), TIMING.loop_wait * 2);
    }

    #[test]
    fn a_stopped_record_keeps_addresses_role_and_tags_and_drops_positions() {
        let running = MemberData::parse(
            r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":100,"receive_lsn":100,"replay_lsn":90,"replication_state":"streaming","timeline":3,"tags":{"nofailover":true},"replay_lag_seconds":1.5}"#,
        )
        .expect("member record");
        let stopped = serde_json::to_value(stopped_record(running)).expect("json");
        assert_eq!(
            stopped,
            serde_json::json!({
                "conn_url": "postgres://127.0.0.1:5432/postgres",
                "api_url": "http://127.0.0.1:8008/patroni",
                "state": "stopped",
                "role": "replica",
                "version": "4.1.4",
                "tags": {"nofailover": true}
            })
        );
    }
}
