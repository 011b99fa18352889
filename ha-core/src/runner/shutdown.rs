//! SIGTERM: stop Postgres, give up the leader key and leave a member record that
//! says `stopped`, as Patroni does on a clean shutdown.

use super::{log_dcs, with_deadline, Runner, RunnerEvent};
use crate::model::{MemberData, MemberState};

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
    record
}

#[cfg(test)]
mod tests {
    use super::stopped_record;
    use crate::model::MemberData;

    #[test]
    fn a_stopped_record_keeps_addresses_role_and_tags_and_drops_positions() {
        let running = MemberData::parse(
            r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":100,"receive_lsn":100,"replay_lsn":90,"replication_state":"streaming","timeline":3,"tags":{"nofailover":true}}"#,
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
