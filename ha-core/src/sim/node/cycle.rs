//! The agent's HA cycle on the simulated world: the read, then the runner's own
//! [`crate::runner::cycle::Cycle`] driven on simulated time (its actions executed on
//! the fake world, their answers fed back when their events arrive).

use super::*;
use crate::runner::cycle::{CycleEnd, Env, Refused, Step};

impl World {
    pub(in crate::sim) fn schedule_tick(&mut self, i: usize, at: MonoTime) {
        let n = &mut self.nodes[i];
        n.tick_gen += 1;
        n.next_tick = at;
        let ev = Ev::Tick {
            node: i,
            epoch: n.epoch,
            gen: n.tick_gen,
        };
        self.push(at, ev);
    }

    /// A watch event or a finished background action: decide again soon.
    pub(in crate::sim) fn wake(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.cycle.is_some() {
            n.wake_pending = true;
        } else if n.next_tick > self.now {
            let at = self.now.plus(Duration::from_millis(1));
            self.schedule_tick(i, at);
        }
    }

    pub(in crate::sim) fn start_cycle(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.cycle.is_some() {
            n.wake_pending = true;
            return;
        }
        n.cycles += 1;
        if n.job.as_ref().is_some_and(|j| j.finished) {
            n.job = None;
        }
        let pg = self.observe_pg(i);
        let n = &mut self.nodes[i];
        n.cycle = Some(Cycle {
            started: self.now,
            pg: Some(pg),
            core: None,
        });
        self.send_dcs(i, DcsOp::Read, None);
    }

    pub(in crate::sim) fn dcs_reply(&mut self, op: u64) {
        let Some(p) = self.ops.remove(&op) else {
            return;
        };
        let i = p.node;
        let result = p
            .result
            .unwrap_or_else(|| Err(DcsError::Unreachable("no answer".into())));
        if let Some(job) = p.job {
            if self.nodes[i].job.as_ref().is_some_and(|j| j.id == job) {
                self.job_next(i);
            }
            return;
        }
        let wall_millis = self.wall_millis();
        let quorum_short = self.cfg.breakage == Some(super::Breakage::QuorumOneVoteShort);
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.as_mut() else {
            return;
        };
        if cyc.core.is_none() {
            let cluster = match result {
                Ok(DcsVal::Cluster(mut c)) => {
                    if quorum_short {
                        // Broken on purpose: elections count one vote too few.
                        if let Some(s) = c.sync.as_mut().filter(|s| !s.value.is_leader(&n.cfg.name))
                        {
                            s.value.quorum = s.value.quorum.saturating_sub(1);
                        }
                    }
                    Ok(*c)
                }
                Ok(_) => Err(DcsError::Backend("unexpected answer".into())),
                Err(e) => Err(e),
            };
            if let Ok(c) = &cluster {
                let mine = c.leader.as_ref().filter(|l| l.name == n.cfg.name);
                n.leader_seen = Some(LeaderKeySeen {
                    read_at: p.sent_at,
                    mine_at: mine.map(|l| l.version),
                    renewed_at: n.renewed_at,
                });
                // As the runner: a valid changed config reaches the DCS client before
                // any request made on this view, so the lease it asks for matches the
                // ttl decide counts with.
                if let Some(cfg) = c
                    .config
                    .as_ref()
                    .filter(|v| v.value.timing_problems().is_empty())
                {
                    let t = cfg.value.timing();
                    if t != n.dcs.timing() {
                        n.dcs.set_timing(t);
                    }
                }
            }
            let obs = Observation {
                cluster,
                read_at: p.sent_at,
                pg: cyc.pg.take().unwrap_or_else(|| n.pg.observe()),
                busy: n.job.as_ref().map(|j| j.kind),
                outcomes: Vec::new(),
                executed: Vec::new(),
                wall_millis,
                request: None,
                watchdog_failed: false,
                failsafe_leader: n.failsafe.called_by(p.sent_at),
                failsafe_slots: Default::default(),
            };
            cyc.core = Some(crate::runner::cycle::Cycle::new(obs));
            return self.proceed(i);
        }
        let action = cyc.core.as_ref().and_then(|c| c.in_flight());
        let outcome = match (action, result) {
            (Some(Action::AcquireLease), Ok(DcsVal::Flag(true))) => {
                Some(Outcome::LeaseAcquired { sent_at: p.sent_at })
            }
            (Some(Action::AcquireLease), Ok(_)) => Some(Outcome::LeaseTaken),
            (Some(Action::RenewLease { .. }), Ok(DcsVal::Flag(true))) => {
                Some(Outcome::LeaseRenewed { sent_at: p.sent_at })
            }
            (Some(Action::RenewLease { .. }), Ok(_)) => Some(Outcome::LeaseLost),
            (Some(Action::AcquireLease | Action::RenewLease { .. }), Err(e)) => {
                Some(Outcome::LeaseError(e))
            }
            (Some(Action::ClaimInitialize), Ok(DcsVal::Flag(true))) => Some(Outcome::InitializeWon),
            (Some(Action::ClaimInitialize), _) => Some(Outcome::InitializeLost),
            (Some(Action::WriteSync { .. }), r) => Some(Outcome::SyncWritten {
                ok: matches!(r, Ok(DcsVal::Flag(true))),
            }),
            // Probes and failsafe calls answer through their own events; the rest
            // are not queries and feed nothing back.
            (
                None
                | Some(
                    Action::ProbePeers { .. }
                    | Action::CheckFailsafe { .. }
                    | Action::ReleaseLease
                    | Action::WriteInitialize { .. }
                    | Action::CancelInitialize
                    | Action::PublishMember(_)
                    | Action::WriteConfig { .. }
                    | Action::ClearFailover { .. }
                    | Action::WriteStatus(_)
                    | Action::WriteHistory(_)
                    | Action::WriteFailsafe(_)
                    | Action::DeleteSync { .. }
                    | Action::SetSynchronousStandbyNames { .. }
                    | Action::ArmFence { .. }
                    | Action::DisarmFence
                    | Action::Bootstrap
                    | Action::CloneReplica { .. }
                    | Action::RestoreReplica
                    | Action::StartPrimary { .. }
                    | Action::StartReplica { .. }
                    | Action::Promote { .. }
                    | Action::Demote { .. }
                    | Action::SwitchoverTo { .. }
                    | Action::Restart { .. }
                    | Action::Reinitialize { .. }
                    | Action::Follow { .. }
                    | Action::StopPostgres { .. }
                    | Action::CancelBackground
                    | Action::ManageSlots(_)
                    | Action::CopyLogicalSlots { .. },
                ),
                _,
            ) => None,
        };
        self.complete(i, outcome);
    }

    /// The answer to the action in flight is back: hand it to the cycle, go on.
    fn complete(&mut self, i: usize, outcome: Option<Outcome>) {
        let n = &mut self.nodes[i];
        let Some(core) = n.cycle.as_mut().and_then(|c| c.core.as_mut()) else {
            return;
        };
        if let Some(sent_at) = core.complete(outcome) {
            n.renewed_at = Some(sent_at);
        }
        self.proceed(i);
    }

    pub(in crate::sim) fn failsafe_reply(
        &mut self,
        i: usize,
        sent_at: MonoTime,
        accepted: Vec<String>,
    ) {
        let outcome = Outcome::FailsafeChecked {
            sent_at,
            accepted,
            positions: Default::default(),
        };
        self.complete(i, Some(outcome));
    }

    pub(in crate::sim) fn probe_reply(&mut self, i: usize, replies: Vec<PeerStatus>) {
        self.complete(i, Some(Outcome::PeersProbed(replies)));
    }

    /// A decision was made: the lease horizon the invariants hold the node to, and the
    /// trace.
    fn decided(&mut self, i: usize, before: Option<MonoTime>) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let lease = n.state.lease_until;
        // Only a new lease end (a successful acquire/renew) moves the horizon: a stale
        // `lease_until` kept in memory after a release does not revive it.
        if let Some(t) = lease.filter(|t| before != Some(*t)) {
            n.horizon = Some(t);
            n.fresh_bootstrap = false;
            n.failsafe_horizon = n.state.failsafe_active;
            if n.state.failsafe_active {
                self.failsafe_keeps += 1;
            }
        }
        if self.trace.enabled() {
            let text = self.describe_step(i, lease);
            self.trace.note(now, Some(i), 100, || text);
        } else {
            let n = &self.nodes[i];
            let mut code = super::trace::code_of(&n.state.message);
            if let Some(core) = n.cycle.as_ref().and_then(|c| c.core.as_ref()) {
                for a in core.queued() {
                    code = code.rotate_left(7) ^ action_code(a);
                }
            }
            self.trace.note(now, Some(i), code, String::new);
        }
        if let Some(t) = lease {
            self.push(t, Ev::Check);
        }
    }

    fn describe_step(&self, i: usize, lease: Option<MonoTime>) -> String {
        let n = &self.nodes[i];
        let Some(core) = n.cycle.as_ref().and_then(|c| c.core.as_ref()) else {
            return String::new();
        };
        let acts: Vec<String> = core.queued().map(short).collect();
        let obs = core.observation();
        let pg = Some(&obs.pg);
        let pg_desc = match pg {
            None => String::new(),
            Some(o) => format!(
                "{:?}{}{} lsn={}",
                o.process,
                match o.in_recovery {
                    Some(true) => " replica",
                    Some(false) => " primary",
                    None => "",
                },
                o.timeline.map_or(String::new(), |t| format!(" tl{t}")),
                o.wal_position()
            ),
        };
        let dcs = match Some(&obs.cluster) {
            Some(Ok(c)) => format!(
                "leader={}",
                c.leader.as_ref().map_or("-", |l| l.name.as_str())
            ),
            Some(Err(_)) => "dcs=ERR".to_string(),
            None => String::new(),
        };
        let lease_s = lease.map_or("-".to_string(), |t| {
            format!("{}.{:03}s", t.as_millis() / 1000, t.as_millis() % 1000)
        });
        format!(
            "decide#{} [{dcs} pg={pg_desc} lease={lease_s}] {} -> [{}]",
            core.steps(),
            n.state.message,
            acts.join(", ")
        )
    }

    /// Drives the cycle until it waits for an answer or ends.
    fn proceed(&mut self, i: usize) {
        let ignored = self.ignored_refusals();
        loop {
            let now = self.now;
            let n = &mut self.nodes[i];
            let retry_timeout = n.retry_timeout();
            let Node {
                cfg,
                state,
                cycle,
                failsafe,
                leader_seen,
                ..
            } = n;
            let Some(core) = cycle.as_mut().and_then(|c| c.core.as_mut()) else {
                return;
            };
            let env = Env {
                now,
                retry_timeout,
                leader_key: *leader_seen,
                watchdog_usable: true,
                failsafe,
                ignored,
            };
            match core.next(cfg, state, &env) {
                Step::Decided { lease_before, .. } => self.decided(i, lease_before),
                Step::Refused { action, why } => {
                    let a = short(&action);
                    let code = match why {
                        Refused::Guard(r) => 102 + r as u64,
                        Refused::FailsafeCalled => 109,
                        Refused::WatchdogFailed => 111,
                    };
                    self.trace.note(now, Some(i), code, || {
                        format!("guard refused {a}: {why}; re-reading the cluster")
                    });
                }
                Step::Execute(action) => {
                    if self.cfg.record_actions {
                        let ms = now.as_millis();
                        let line = format!("{}.{:03}s {action}", ms / 1000, ms % 1000);
                        self.executed[i].push(line);
                    }
                    match self.execute(i, &action) {
                        Flow::Wait => return,
                        Flow::Continue => {
                            if let Some(core) =
                                self.nodes[i].cycle.as_mut().and_then(|c| c.core.as_mut())
                            {
                                core.complete(None);
                            }
                        }
                    }
                }
                Step::Done(end) => {
                    if end.step_limit {
                        self.trace.note(now, Some(i), 101, || {
                            "step limit reached; cycle ends".into()
                        });
                    }
                    return self.end_cycle(i, &end);
                }
            }
        }
    }

    fn end_cycle(&mut self, i: usize, end: &CycleEnd) {
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.take() else {
            return;
        };
        let mut next = cyc.started.plus(n.loop_wait());
        if let Some(w) = end.wake_at {
            next = next.min(w);
        }
        if end.again_now() || n.wake_pending {
            next = self.now;
        }
        n.wake_pending = false;
        // A cycle takes at least a millisecond, so a decision that keeps asking to run
        // again cannot stall simulated time.
        let next = next.max(self.now.plus(Duration::from_millis(1)));
        self.schedule_tick(i, next);
    }
}
