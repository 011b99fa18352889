//! The agent's HA cycle on the simulated world, as the runner drives it: decide, run
//! queries, feed outcomes back, guard every action, end the cycle.

use super::*;

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
            obs: None,
            queue: VecDeque::new(),
            rerun: false,
            reread: false,
            wake_at: None,
            steps: 0,
            waiting: None,
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
        if cyc.obs.is_none() {
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
            cyc.obs = Some(obs);
            return self.decide_step(i);
        }
        let action = cyc.waiting.take();
        let outcome = match (&action, result) {
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
        if let Some(Outcome::LeaseAcquired { sent_at } | Outcome::LeaseRenewed { sent_at }) =
            &outcome
        {
            n.renewed_at = Some(*sent_at);
        }
        let Some(cyc) = n.cycle.as_mut() else {
            return;
        };
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes.extend(outcome);
            if let Some(a) = action.filter(|a| !a.is_query()) {
                obs.executed.push(a);
            }
        }
        self.proceed(i);
    }

    pub(in crate::sim) fn failsafe_reply(
        &mut self,
        i: usize,
        sent_at: MonoTime,
        accepted: Vec<String>,
    ) {
        let Some(cyc) = self.nodes[i].cycle.as_mut() else {
            return;
        };
        cyc.waiting = None;
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes.push(Outcome::FailsafeChecked {
                sent_at,
                accepted,
                positions: Default::default(),
            });
        }
        self.proceed(i);
    }

    pub(in crate::sim) fn probe_reply(&mut self, i: usize, replies: Vec<PeerStatus>) {
        let Some(cyc) = self.nodes[i].cycle.as_mut() else {
            return;
        };
        cyc.waiting = None;
        if let Some(obs) = cyc.obs.as_mut() {
            obs.outcomes.push(Outcome::PeersProbed(replies));
        }
        self.proceed(i);
    }

    fn decide_step(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.as_mut() else {
            return;
        };
        let Some(obs) = cyc.obs.as_ref() else {
            return;
        };
        let d = decide(&n.cfg, &n.state, obs, now);
        let before = n.state.lease_until;
        n.state = d.state;
        cyc.queue = d.actions.into();
        cyc.rerun = d.rerun;
        cyc.reread |= d.reread;
        cyc.wake_at = d.wake_at;
        cyc.steps += 1;
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
            if let Some(cyc) = n.cycle.as_ref() {
                for a in &cyc.queue {
                    code = code.rotate_left(7) ^ action_code(a);
                }
            }
            self.trace.note(now, Some(i), code, String::new);
        }
        if let Some(t) = lease {
            self.push(t, Ev::Check);
        }
        self.proceed(i);
    }

    fn describe_step(&self, i: usize, lease: Option<MonoTime>) -> String {
        let n = &self.nodes[i];
        let Some(cyc) = n.cycle.as_ref() else {
            return String::new();
        };
        let acts: Vec<String> = cyc.queue.iter().map(short).collect();
        let pg = cyc.obs.as_ref().map(|o| &o.pg);
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
        let dcs = match cyc.obs.as_ref().map(|o| &o.cluster) {
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
            cyc.steps,
            n.state.message,
            acts.join(", ")
        )
    }

    fn proceed(&mut self, i: usize) {
        loop {
            let n = &mut self.nodes[i];
            let retry = n.retry_timeout();
            let lease_until = n.state.lease_until;
            let Some(cyc) = n.cycle.as_mut() else {
                return;
            };
            let Some(action) = cyc.queue.pop_front() else {
                if cyc.rerun && cyc.steps < MAX_STEPS {
                    return self.decide_step(i);
                }
                if cyc.rerun {
                    self.trace.note(self.now, Some(i), 101, || {
                        "step limit reached; cycle ends".into()
                    });
                }
                return self.end_cycle(i, false);
            };
            let ctx = GuardContext {
                now: self.now,
                read_at: cyc.obs.as_ref().map_or(self.now, |o| o.read_at),
                lease_until,
                max_view_age: retry + Duration::from_millis(500),
                leader_key: self.nodes[i].leader_seen,
            };
            let refusal = refuse(&action, &ctx).filter(|r| !self.ignores(*r));
            if let Some(r) = refusal {
                let a = short(&action);
                self.trace.note(self.now, Some(i), 102 + r as u64, || {
                    format!("guard refused {a}: {r}; re-reading the cluster")
                });
                return self.end_cycle(i, true);
            }
            // As the runner: a failsafe call accepted since the read keeps the node out.
            if matches!(action, Action::AcquireLease) && !self.nodes[i].failsafe.claim(self.now) {
                self.trace.note(self.now, Some(i), 109, || {
                    "refused AcquireLease: a failsafe leader called within ttl".into()
                });
                return self.end_cycle(i, true);
            }
            if self.cfg.record_actions {
                let ms = self.now.as_millis();
                let line = format!("{}.{:03}s {action}", ms / 1000, ms % 1000);
                self.executed[i].push(line);
            }
            let record = (!action.is_query()).then(|| action.clone());
            match self.execute(i, action) {
                Flow::Wait => return,
                Flow::Continue => {
                    if let Some(obs) = self.nodes[i].cycle.as_mut().and_then(|c| c.obs.as_mut()) {
                        obs.executed.extend(record);
                    }
                }
            }
        }
    }

    fn end_cycle(&mut self, i: usize, refused: bool) {
        let n = &mut self.nodes[i];
        let Some(cyc) = n.cycle.take() else {
            return;
        };
        let mut next = cyc.started.plus(n.loop_wait());
        if let Some(w) = cyc.wake_at {
            next = next.min(w);
        }
        if refused || cyc.reread || n.wake_pending {
            next = self.now;
        }
        n.wake_pending = false;
        n.failsafe.settle(n.state.lease_until.is_some());
        // A cycle takes at least a millisecond, so a decision that keeps asking to run
        // again cannot stall simulated time.
        let next = next.max(self.now.plus(Duration::from_millis(1)));
        self.schedule_tick(i, next);
    }
}
