//! Phases of a run and the invariants checked after every event.

use super::*;

impl World {
    pub(super) fn phase_step(&mut self) {
        self.after(Duration::from_millis(PHASE_EVERY_MS), Ev::Phase);
        match self.phase {
            Phase::Setup => {
                let formed = self.converged();
                if formed.is_ok() || self.now >= MonoTime::from_millis(SETUP_DEADLINE_MS) {
                    if let (Err(e), true) = (formed, self.cfg.check_liveness) {
                        self.violation = Some(e.into_violation(self.now, "setup"));
                        return;
                    }
                    let (lo, hi) = self.cfg.fault_phase_ms;
                    let until = self.now.plus(self.rng.millis(lo, hi));
                    self.phase = Phase::Faults { until };
                    self.trace.note(self.now, None, 71, || {
                        "FAULTS: cluster formed, injecting faults".into()
                    });
                    let d = self.rng.millis(0, 1000);
                    self.after(d, Ev::FaultTick);
                }
            }
            Phase::Faults { until } => {
                if self.now >= until {
                    self.heal_all();
                    if !self.cfg.check_liveness {
                        self.phase = Phase::Done;
                        return;
                    }
                    self.phase = Phase::Quiet {
                        started: self.now,
                        deadline: self.now.plus(liveness_bound()),
                        stable_since: None,
                    };
                }
            }
            Phase::Quiet {
                started,
                deadline,
                stable_since,
            } => match self.converged() {
                Ok(()) => {
                    let since = stable_since.unwrap_or(self.now);
                    if self.now.since(since) >= Duration::from_millis(STABLE_MS) {
                        self.converged_after = Some(since.since(started));
                        self.phase = Phase::Done;
                    } else {
                        self.phase = Phase::Quiet {
                            started,
                            deadline,
                            stable_since: Some(since),
                        };
                    }
                }
                Err(e) => {
                    if self.now >= deadline {
                        self.violation = Some(e.into_violation(self.now, "quiet"));
                    }
                    self.phase = Phase::Quiet {
                        started,
                        deadline,
                        stable_since: None,
                    };
                }
            },
            Phase::Done => {}
        }
    }

    /// (d): one writable leader holding the key, every other node streaming from it.
    /// On failure, what is wrong; a replica that follows the leader but whose WAL
    /// history diverged from it is reported apart (`diverged`).
    fn converged(&mut self) -> Result<(), NotConverged> {
        let other = |why: String| NotConverged {
            why,
            diverged: Vec::new(),
            leader: None,
        };
        let leader = self
            .leader_name()
            .ok_or_else(|| other("no leader key".into()))?;
        let l = self
            .index_of(&leader)
            .ok_or_else(|| other(format!("leader key names unknown member {leader}")))?;
        let mut problems = Vec::new();
        let mut diverged = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.down || n.frozen {
                problems.push(format!("n{i}'s agent is not running"));
            } else if i == l {
                if !n.pg.accepts_writes() {
                    problems.push(format!("leader {leader} does not accept writes"));
                }
            } else if n.pg.may_be_writable() {
                problems.push(format!("n{i} is writable but {leader} leads"));
            } else if !n.pg.running || n.pg.hung {
                problems.push(format!("n{i}'s postgres is not running"));
            } else if n.pg.upstream.as_deref() != Some(leader.as_str()) {
                problems.push(format!(
                    "n{i} follows {:?} instead of {leader}",
                    n.pg.upstream
                ));
            } else if !n.pg.streaming {
                let history_forked = match (&n.pg.data, &self.nodes[l].pg.data) {
                    (Some(mine), Some(theirs)) => !mine.is_prefix_of(theirs),
                    _ => false,
                };
                if history_forked && self.net.link_up(i, l) {
                    diverged.push(i);
                } else {
                    problems.push(format!("n{i} follows {leader} but cannot stream from it"));
                }
            }
        }
        if problems.is_empty() && diverged.is_empty() {
            return Ok(());
        }
        let mut why = problems;
        why.extend(diverged.iter().map(|i| {
            format!("n{i} follows {leader} but its WAL history forked from the leader's and it was never rewound")
        }));
        Err(NotConverged {
            why: why.join("; "),
            diverged: if why_is_only_divergence(&why, &diverged) {
                diverged
            } else {
                Vec::new()
            },
            leader: Some(l),
        })
    }

    pub(super) fn after_event(&mut self) {
        self.sync_dcs();
        for n in &mut self.nodes {
            if !n.pg.may_be_writable() {
                n.fresh_bootstrap = false;
            }
        }
        if !self.cfg.check_safety || self.violation.is_some() {
            return;
        }
        let at_ms = self.now.as_millis();
        let writable: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| self.nodes[i].pg.may_be_writable())
            .collect();
        if writable.len() > 1 {
            self.violation = Some(Violation::SplitBrain {
                at_ms,
                nodes: writable,
            });
            return;
        }
        if !self.cfg.check_lease {
            return;
        }
        for &i in &writable {
            let n = &self.nodes[i];
            if n.fresh_bootstrap && !n.down {
                continue;
            }
            {
                if n.down || n.horizon.is_none_or(|h| h <= self.now) {
                    self.violation = Some(Violation::WritableWithoutLease {
                        at_ms,
                        node: i,
                        lease_until_ms: n.horizon.map(|h| h.as_millis()),
                        agent_down: n.down,
                    });
                    return;
                }
            }
        }
        let holder = self.leader_name();
        for (i, n) in self.nodes.iter().enumerate() {
            if !self.cfg.strict_lease_view && !n.pg.may_be_writable() {
                continue;
            }
            if let Some(h) = n.horizon.filter(|h| *h > self.now) {
                // A lease extended by failsafe mode outlives the key on purpose; (a)
                // still holds it to a single writable primary.
                if holder.as_deref() != Some(n.cfg.name.as_str()) && !n.failsafe_horizon {
                    self.violation = Some(Violation::LeaseNotInDcs {
                        at_ms,
                        node: i,
                        lease_until_ms: h.as_millis(),
                        holder,
                    });
                    return;
                }
            }
        }
    }
}

/// Why the cluster has not converged.
struct NotConverged {
    why: String,
    /// Replicas whose only problem is a forked history (set only when nothing else
    /// is wrong).
    diverged: Vec<usize>,
    leader: Option<usize>,
}

fn why_is_only_divergence(why: &[String], diverged: &[usize]) -> bool {
    !diverged.is_empty() && why.len() == diverged.len()
}

impl NotConverged {
    fn into_violation(self, now: MonoTime, phase: &'static str) -> Violation {
        match (self.diverged.first(), self.leader) {
            (Some(&node), Some(leader)) => Violation::DivergedReplicaNotRewound {
                at_ms: now.as_millis(),
                node,
                leader,
            },
            _ => Violation::NoConvergence {
                at_ms: now.as_millis(),
                phase,
                why: self.why,
            },
        }
    }
}
