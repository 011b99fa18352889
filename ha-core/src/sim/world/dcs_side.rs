//! The DCS side of the simulated world: the store, watches and the requests agents send.

use super::*;

impl World {
    /// Expires leases due now, wakes watchers when a decision key changed, keeps the
    /// expiry tick of the leader lease scheduled.
    pub(super) fn sync_dcs(&mut self) {
        // Nothing to do unless the key space changed or the leader lease may be due:
        // this runs after every event, so it must be cheap.
        let due = self.leader_expiry.is_some_and(|e| self.now >= e);
        if !due && self.store.changes() == self.store_changes {
            self.last_writer = None;
            return;
        }
        self.store.expire_now(self.now);
        if self.store.changes() != self.store_changes {
            self.store_changes = self.store.changes();
            let versions: Vec<Option<Version>> = self
                .decision_keys
                .iter()
                .map(|k| self.store.peek_version(k))
                .collect();
            if versions != self.decision_versions {
                self.decision_versions = versions;
                self.notify_watchers();
            }
        }
        self.last_writer = None;
        let entry = self.store.get(self.now, &self.leader_key);
        self.leader_expiry = entry
            .as_ref()
            .and_then(|e| e.lease)
            .and_then(|l| self.store.lease(self.now, l))
            .map(|l| l.expiry);
        self.leader_holder = entry.map(|e| e.value);
        if let Some(e) = self.leader_expiry {
            if self.expiry_tick.is_none_or(|t| t != e) {
                self.expiry_tick = Some(e);
                self.push(e, Ev::DcsExpiry);
            }
        }
    }

    fn notify_watchers(&mut self) {
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if Some(i) == self.last_writer || n.down || !self.net.dcs_reachable(i) {
                continue;
            }
            let epoch = n.epoch;
            let d = self.rng.millis(5, 20);
            self.after(d, Ev::Wake { node: i, epoch });
        }
    }

    /// Sends a request from node `i`; its answer comes back as `DcsReply`.
    pub(in crate::sim) fn send_dcs(&mut self, i: usize, op: DcsOp, job: Option<u64>) {
        let id = self.next_op;
        self.next_op += 1;
        let retry = self.nodes[i].retry_timeout();
        let retry_ms = retry.as_millis() as u64;
        let mut p = PendingOp {
            node: i,
            epoch: self.nodes[i].epoch,
            op: Some(op),
            sent_at: self.now,
            latency: Duration::ZERO,
            job,
            result: None,
        };
        if !self.net.dcs_reachable(i) {
            p.result = Some(Err(DcsError::Unreachable("no route to the DCS".into())));
            let d = self.rng.millis(retry_ms / 4, retry_ms);
            self.ops.insert(id, p);
            self.after(d, Ev::DcsReply { op: id });
            return;
        }
        p.latency = if self.net.dcs_slow {
            self.rng.millis(retry_ms / 5, retry_ms * 3 / 2)
        } else {
            self.rng.millis(1, 8)
        };
        let apply_in = p.latency / 2;
        self.ops.insert(id, p);
        self.after(apply_in, Ev::DcsApply { op: id });
    }

    pub(super) fn dcs_apply(&mut self, id: u64) {
        let Some(p) = self.ops.get_mut(&id) else {
            return;
        };
        let (i, epoch) = (p.node, p.epoch);
        let retry = self.nodes[i].retry_timeout();
        if self.nodes[i].epoch != epoch {
            self.ops.remove(&id);
            return;
        }
        let timed_out_at = p.sent_at.plus(retry);
        if !self.net.dcs_reachable(i) {
            p.result = Some(Err(DcsError::Unreachable("request lost".into())));
            self.push(timed_out_at, Ev::DcsReply { op: id });
            return;
        }
        let op = p.op.take();
        let (latency, sent_at) = (p.latency, p.sent_at);
        let Some(op) = op else { return };
        let val = self.apply_op(i, op);
        self.last_writer = Some(i);
        let (result, at) = if latency > retry {
            (
                Err(DcsError::Unreachable("request timed out".into())),
                timed_out_at,
            )
        } else {
            (Ok(val), sent_at.plus(latency))
        };
        if let Some(p) = self.ops.get_mut(&id) {
            p.result = Some(result);
        }
        self.push(at, Ev::DcsReply { op: id });
    }

    fn apply_op(&mut self, i: usize, op: DcsOp) -> DcsVal {
        let now = self.now;
        let s = &mut self.store;
        let d = &mut self.nodes[i].dcs;
        match op {
            DcsOp::Read => {
                // Parsing the prefix dominates the run time in debug builds; a read at
                // the same store revision (nothing written or expired since) returns
                // the same view, so it is parsed once.
                s.expire_now(now);
                let rev = s.revision();
                match &self.read_cache {
                    Some((r, c)) if *r == rev => DcsVal::Cluster(Box::new(c.clone())),
                    _ => {
                        let c = d.get_cluster(s, now);
                        self.read_cache = Some((rev, c.clone()));
                        DcsVal::Cluster(Box::new(c))
                    }
                }
            }
            DcsOp::Acquire => DcsVal::Flag(d.acquire_leader(s, now)),
            DcsOp::Renew(None) => DcsVal::Flag(d.renew_leader(s, now)),
            DcsOp::Renew(Some(st)) => DcsVal::Flag(d.renew_leader_with_status(s, now, &st)),
            DcsOp::Release => DcsVal::Flag(d.release_leader(s, now)),
            DcsOp::Claim => DcsVal::Flag(d.initialize(s, now, "")),
            DcsOp::SetInitialize(v) => {
                d.set_initialize(s, now, &v);
                DcsVal::Done
            }
            DcsOp::CancelInitialize => {
                d.cancel_initialization(s, now);
                DcsVal::Done
            }
            DcsOp::Touch(m) => {
                d.touch_member(s, now, &m);
                DcsVal::Done
            }
            DcsOp::SetConfig(c, v) => DcsVal::Flag(d.set_config(s, now, &c, v)),
            DcsOp::ClearFailover(v) => {
                DcsVal::Flag(d.set_failover(s, now, &Failover::default(), Some(v)))
            }
            DcsOp::WriteSync(sync, v) => DcsVal::Flag(d.set_sync(s, now, &sync, v).is_some()),
            DcsOp::DeleteSync(v) => DcsVal::Flag(d.delete_sync(s, now, Some(v))),
            DcsOp::Status(st) => {
                d.set_status(s, now, &st);
                DcsVal::Done
            }
            DcsOp::History(h) => {
                d.set_history(s, now, &h);
                DcsVal::Done
            }
            DcsOp::Failsafe(f) => {
                d.set_failsafe(s, now, &f);
                DcsVal::Done
            }
        }
    }
}
