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
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

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
}

impl FailsafeGate {
    /// A leader's `POST /failsafe`: records `leader` until `now + ttl`. Refused (false)
    /// while this node races for or holds the leader key.
    pub fn accept_call(&self, leader: &str, now: MonoTime, ttl: Duration) -> bool {
        let Ok(mut g) = self.gate.lock() else {
            return false;
        };
        if g.claiming {
            return false;
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
            let ok = tokio::time::timeout(timeout, peers.failsafe_call(url, body))
                .await
                .unwrap_or(false);
            ok.then(|| name.clone())
        }
    });
    let accepted = futures::future::join_all(calls)
        .await
        .into_iter()
        .flatten()
        .collect();
    Outcome::FailsafeChecked { sent_at, accepted }
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
