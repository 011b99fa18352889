//! Failsafe mode (`failsafe_mode: true`), the parts that need I/O or shared state:
//! the record of `POST /failsafe` calls a replica received, and the leader's round of
//! `POST /failsafe` calls while it cannot reach the DCS.
//!
//! A replica that accepted a call from the leader does not race for the leader key
//! for `ttl` afterwards. The check and the claim are one step under a lock: once the
//! runner decided to race (no valid record) it refuses further calls until it gives the
//! leadership up, so a leader can never count on a replica that is already taking over.

use super::PeerProbe;
use crate::clock::MonoTime;
use crate::decision::{NodeConfig, Outcome};
use crate::model::{Failsafe, Lsn};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug, Default)]
struct Gate {
    /// The leader that called us, and until when we do not race because of it.
    leader: Option<(String, MonoTime)>,
    /// This node is racing for, or holds, the leader key.
    claiming: bool,
    /// The slot positions the leader sent with its last call.
    slots: BTreeMap<String, Lsn>,
}

/// The `POST /failsafe` record of one node, shared by the REST API and the runner.
#[derive(Debug, Default)]
pub struct FailsafeGate {
    gate: Mutex<Gate>,
    /// Where accepted calls are written before they are answered, so an agent that
    /// restarts still knows it promised not to race (`None`: memory only).
    record: Mutex<Option<PathBuf>>,
}

/// The on-disk form of an accepted call: the leader, and until when (wall clock, ms
/// since the epoch: monotonic time does not survive the process).
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    leader: String,
    until_unix_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis().min(u64::MAX as u128) as u64)
}

impl FailsafeGate {
    /// Keeps accepted calls in `path` from now on, and takes over a call recorded there
    /// by an earlier run of the agent that is still valid. Whether a recorded call is
    /// valid is judged by the wall clock, the only one both runs share.
    pub fn keep_record_in(&self, path: PathBuf, now: MonoTime) {
        if let Ok(text) = std::fs::read_to_string(&path) {
            match serde_json::from_str::<Record>(&text) {
                Ok(r) => {
                    let left = r.until_unix_ms.saturating_sub(unix_ms(SystemTime::now()));
                    if left > 0 {
                        tracing::info!(
                            "failsafe: {} called this node before the agent restarted; not racing for another {} ms",
                            r.leader,
                            left
                        );
                        if let Ok(mut g) = self.gate.lock() {
                            g.leader = Some((r.leader, now.plus(Duration::from_millis(left))));
                        }
                    }
                }
                Err(e) => tracing::warn!(
                    "failsafe record {} is unreadable ({e}); ignoring it",
                    path.display()
                ),
            }
        }
        if let Ok(mut r) = self.record.lock() {
            *r = Some(path);
        }
    }

    /// Whether accepted calls survive an agent restart (see
    /// [`FailsafeGate::keep_record_in`]).
    pub fn is_durable(&self) -> bool {
        self.record.lock().is_ok_and(|r| r.is_some())
    }

    /// A leader's `POST /failsafe`: records `leader` until `now + ttl`. Refused (false)
    /// while this node races for or holds the leader key, and when the record cannot
    /// be written: a promise that a restart would forget is not given.
    pub fn accept_call(&self, leader: &str, now: MonoTime, ttl: Duration) -> bool {
        let Ok(mut g) = self.gate.lock() else {
            return false;
        };
        if g.claiming {
            return false;
        }
        if let Some(path) = self.record.lock().ok().and_then(|r| r.clone()) {
            let record = Record {
                leader: leader.to_string(),
                until_unix_ms: unix_ms(SystemTime::now() + ttl),
            };
            if let Err(e) = write_durably(&path, &record) {
                tracing::warn!(
                    "failsafe: refusing the call of {leader}: cannot record it in {}: {e}",
                    path.display()
                );
                return false;
            }
        }
        g.leader = Some((leader.to_string(), now.plus(ttl)));
        true
    }

    /// Keeps the slot positions a leader sent along with an accepted call.
    pub fn record_slots(&self, slots: BTreeMap<String, Lsn>) {
        if let Ok(mut g) = self.gate.lock() {
            g.slots = slots;
        }
    }

    /// The slot positions of the leader that called within the last ttl (empty when
    /// none did): a replica advances its slots by them while the DCS is gone.
    pub fn leader_slots(&self, now: MonoTime) -> BTreeMap<String, Lsn> {
        match self.gate.lock() {
            Ok(g) if g.leader.as_ref().is_some_and(|(_, until)| now < *until) => g.slots.clone(),
            _ => BTreeMap::new(),
        }
    }

    /// The leader that called within the last ttl, if any.
    pub fn called_by(&self, now: MonoTime) -> Option<String> {
        let g = self.gate.lock().ok()?;
        g.leader
            .as_ref()
            .filter(|(_, until)| now < *until)
            .map(|(name, _)| name.clone())
    }

    /// Before acquiring the leader key: false while a leader's call is still valid;
    /// otherwise refuses further calls from now on.
    pub fn claim(&self, now: MonoTime) -> bool {
        let Ok(mut g) = self.gate.lock() else {
            return false;
        };
        if g.leader.as_ref().is_some_and(|(_, until)| now < *until) {
            return false;
        }
        g.claiming = true;
        true
    }

    /// After each cycle: the node still claims leadership only while it holds a lease.
    pub fn settle(&self, holds_lease: bool) {
        if let Ok(mut g) = self.gate.lock() {
            g.claiming = holds_lease;
        }
    }
}

/// Writes the record through a temporary file, synced, then renamed into place.
fn write_durably(path: &Path, record: &Record) -> std::io::Result<()> {
    use std::io::Write;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(serde_json::to_string(record)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// One round of `POST /failsafe` calls.
pub(super) struct Round<'a> {
    /// Who to call (name ⇒ api_url).
    pub members: &'a Failsafe,
    /// The ttl the leader extends its lease by; sent along (`ttl`, an extension to
    /// Patroni's body) so a member with a shorter ttl still waits long enough.
    pub ttl: Duration,
    /// Per call.
    pub timeout: Duration,
    /// When the round started.
    pub sent_at: MonoTime,
    /// The leader's slot positions, for the replicas to advance theirs.
    pub slots: &'a BTreeMap<String, Lsn>,
}

/// `POST /failsafe` to every member in parallel; the outcome names those that answered
/// `200 Accepted`, and when the round was sent.
pub(super) async fn call_members(
    cfg: &NodeConfig,
    peers: Arc<dyn PeerProbe>,
    round: Round<'_>,
) -> Outcome {
    let body = serde_json::json!({
        "name": cfg.name,
        "conn_url": cfg.conn_url,
        "api_url": cfg.api_url,
        "slots": round.slots,
        "ttl": round.ttl.as_secs_f64(),
    });
    let (timeout, sent_at) = (round.timeout, round.sent_at);
    let calls = round.members.iter().map(|(name, url)| {
        let peers = peers.clone();
        let body = &body;
        async move {
            let answer = tokio::time::timeout(timeout, peers.failsafe_call(url, body))
                .await
                .ok()
                .flatten();
            answer.map(|lsn| (name.clone(), lsn))
        }
    });
    let answers: Vec<(String, Option<Lsn>)> = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    Outcome::FailsafeChecked {
        sent_at,
        positions: answers
            .iter()
            .filter_map(|(name, lsn)| Some((name.clone(), (*lsn)?)))
            .collect(),
        accepted: answers.into_iter().map(|(name, _)| name).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_call_keeps_the_node_out_of_the_race_for_ttl() {
        let g = FailsafeGate::default();
        let ttl = Duration::from_secs(30);
        assert!(g.accept_call("a", MonoTime::from_millis(1000), ttl));
        assert_eq!(
            g.called_by(MonoTime::from_millis(2000)).as_deref(),
            Some("a")
        );
        assert!(!g.claim(MonoTime::from_millis(30_999)));
        assert_eq!(g.called_by(MonoTime::from_millis(31_000)), None);
        assert!(g.claim(MonoTime::from_millis(31_000)));
    }

    #[test]
    fn an_accepted_call_survives_a_restart_when_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("failsafe.json");
        let ttl = Duration::from_secs(30);
        let before = FailsafeGate::default();
        before.keep_record_in(path.clone(), MonoTime::from_millis(1000));
        assert!(before.is_durable());
        assert!(before.accept_call("a", MonoTime::from_millis(1000), ttl));
        // A new agent process: its monotonic clock starts anywhere.
        let after = FailsafeGate::default();
        assert!(!after.is_durable());
        after.keep_record_in(path.clone(), MonoTime::from_millis(50));
        assert_eq!(
            after.called_by(MonoTime::from_millis(60)).as_deref(),
            Some("a")
        );
        assert!(!after.claim(MonoTime::from_millis(60)));
        // Nothing recorded, or an expired record: free to race at once.
        std::fs::write(&path, r#"{"leader":"a","until_unix_ms":5}"#).unwrap();
        let fresh = FailsafeGate::default();
        fresh.keep_record_in(path, MonoTime::from_millis(50));
        assert_eq!(fresh.called_by(MonoTime::from_millis(60)), None);
        assert!(fresh.claim(MonoTime::from_millis(60)));
    }

    #[test]
    fn a_call_that_cannot_be_recorded_is_refused() {
        let g = FailsafeGate::default();
        g.keep_record_in(
            PathBuf::from("/nonexistent/dir/failsafe.json"),
            MonoTime::from_millis(0),
        );
        assert!(!g.accept_call("a", MonoTime::from_millis(1), Duration::from_secs(30)));
        assert_eq!(g.called_by(MonoTime::from_millis(2)), None);
    }

    #[test]
    fn a_node_that_claimed_the_lease_refuses_calls_until_it_lets_go() {
        let g = FailsafeGate::default();
        let ttl = Duration::from_secs(30);
        assert!(g.claim(MonoTime::from_millis(1000)));
        assert!(!g.accept_call("a", MonoTime::from_millis(1001), ttl));
        g.settle(true);
        assert!(!g.accept_call("a", MonoTime::from_millis(1002), ttl));
        g.settle(false);
        assert!(g.accept_call("a", MonoTime::from_millis(1003), ttl));
    }
}
