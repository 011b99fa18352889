//! Switchover and manual failover (the `failover` key) from the leader's side.

use super::health::answer_allows_promotion;
use super::{failover_candidates, upstream_of, Action, Outcome, Step};
use crate::model::Cluster;
use std::time::Duration;

/// How long a switchover waits for its candidate to stream from the leader: longer
/// than a walreceiver's default retry interval (`wal_retrieve_retry_interval`, 5 s).
const SWITCHOVER_STREAM_WAIT: Duration = Duration::from_secs(12);

impl Step<'_> {
    /// Switchover / manual failover from the leader's side. Returns true when it acted.
    pub(super) fn handle_failover_request(&mut self, c: &Cluster) -> bool {
        let Some(fv) = c.failover.as_ref() else {
            return false;
        };
        let f = &fv.value;
        if f.is_empty() {
            return false;
        }
        let clear = Action::ClearFailover {
            expected: fv.version,
        };
        if f.leader.as_deref().is_some_and(|l| l != self.me())
            || f.member.as_deref() == Some(self.me())
        {
            self.act(clear);
            return false;
        }
        let loop_wait = self.config().loop_wait();
        match f.scheduled_at_millis() {
            Err(why) => {
                self.act(clear);
                self.say(format!("ignoring failover request: {why}"));
                return false;
            }
            Ok(Some(at)) => {
                let wall = self.obs.wall_millis;
                if at > wall + loop_wait.as_millis() as i64 {
                    let wait = Duration::from_millis((at - wall) as u64);
                    self.wake_no_later_than(self.now.plus(wait));
                    return false;
                }
                if at < wall - (loop_wait.as_millis() as i64 * 3 / 2) {
                    self.act(clear);
                    self.say("ignoring a stale scheduled switchover");
                    return false;
                }
                if at > wall {
                    self.wake_no_later_than(
                        self.now.plus(Duration::from_millis((at - wall) as u64)),
                    );
                    return false;
                }
            }
            Ok(None) => {}
        }
        if self.paused() && f.member.is_none() {
            self.act(clear);
            self.say("switchover in pause mode needs a named candidate");
            return false;
        }
        let candidates = failover_candidates(self.cfg, &self.config(), c, f.member.as_deref());
        let probed = self.obs.outcomes.iter().rev().find_map(|o| match o {
            Outcome::PeersProbed(p) => Some(p),
            _ => None,
        });
        let Some(probed) = probed else {
            if candidates.is_empty() {
                self.act(clear);
                self.say("switchover: no eligible candidates");
                return false;
            }
            self.act(Action::ProbePeers {
                names: candidates.iter().map(|m| m.name.clone()).collect(),
                optional: Vec::new(),
            });
            return true;
        };
        let dc = self.config();
        let my_wal = self.obs.pg.wal_position();
        let best = candidates
            .iter()
            .filter_map(|m| {
                let r = probed.iter().find(|p| p.name == m.name)?.reply.as_ref()?;
                let healthy = !r.is_primary
                    && answer_allows_promotion(&r.tags, r.watchdog_failed)
                    && my_wal.saturating_sub(r.wal_position)
                        <= dc.maximum_lag_on_failover.max(0) as u64;
                healthy.then_some((m, r.wal_position))
            })
            .max_by_key(|(_, wal)| *wal)
            .map(|(m, _)| m);
        let best = best.filter(|m| upstream_of(m).is_some());
        // My shutdown checkpoint reaches the candidate only over a live stream (one
        // cascading through another member gets it from there): after a restart of
        // either side it reconnects on its own retry interval, so wait for it.
        if let Some(target) = best.filter(|m| m.data.tags.replicatefrom.is_none()) {
            let streams = self.obs.pg.replication.iter().any(|r| {
                r.application_name.eq_ignore_ascii_case(&target.name) && r.state == "streaming"
            });
            if streams {
                self.st.switchover_waiting_since = None;
            } else {
                let since = *self.st.switchover_waiting_since.get_or_insert(self.now);
                if self.now.since(since) < SWITCHOVER_STREAM_WAIT {
                    self.wake_no_later_than(self.now.plus(Duration::from_millis(500)));
                    self.say(format!(
                        "switchover: waiting for {} to stream from me",
                        target.name
                    ));
                    return true;
                }
                self.st.switchover_waiting_since = None;
                self.act(clear);
                self.say(format!(
                    "switchover: {} does not stream from me; not demoting",
                    target.name
                ));
                return false;
            }
        }
        match (best, self.token(Some(c))) {
            (Some(target), Some(token)) => {
                // A primary's history may fork from its successor's; a standby leader
                // replays the remote's WAL as its successor does, so it has none to rewind.
                self.st.rewind_pending = !self.obs.pg.is_replica();
                self.say(format!(
                    "manual switchover: demoting myself in favour of {}",
                    target.name
                ));
                self.act(Action::SwitchoverTo {
                    candidate: (*target).clone(),
                    token,
                });
                self.st.lease_until = None;
                true
            }
            _ => {
                self.act(clear);
                self.say("switchover: no healthy members found");
                false
            }
        }
    }
}
