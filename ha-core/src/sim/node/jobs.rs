//! Background actions (as runner/jobs runs them): steps that take simulated time,
//! and their effect on the simulated Postgres.

use super::*;

impl World {
    pub(super) fn start_job(&mut self, i: usize, action: &Action) {
        if let Some(j) = &self.nodes[i].job {
            let (a, busy) = (short(action), j.kind.describe());
            self.trace.note(self.now, Some(i), 110, || {
                format!("{a} skipped: {busy} still running")
            });
            return;
        }
        let name = |u: &Option<crate::postgres::Upstream>| u.as_ref().map(|u| u.name.clone());
        // The read the action was decided on, which the fencing check compares with.
        let decided_on = self.nodes[i]
            .cycle
            .as_ref()
            .and_then(|c| c.core.as_ref())
            .map_or(self.now, |c| c.observation().read_at);
        let steps: Vec<JobStep> = match action {
            Action::Bootstrap => vec![JobStep::Bootstrap],
            Action::CloneReplica { source, follow } => vec![JobStep::Clone {
                source: source.name.clone(),
                follow: name(follow),
            }],
            Action::StartPrimary { token } => vec![JobStep::StartPrimary {
                token: *token,
                decided_on,
            }],
            Action::StartReplica { upstream, rewind } => vec![JobStep::StartReplica {
                upstream: name(upstream),
                rewind: *rewind,
            }],
            Action::Promote { token } => vec![JobStep::Promote {
                token: *token,
                decided_on,
            }],
            Action::Demote { mode, .. } => {
                let mut s = vec![JobStep::Stop(mode.stop_mode())];
                if mode.releases_lease() {
                    s.push(JobStep::Release);
                }
                if *mode == crate::decision::DemoteMode::Offline {
                    // As the runner: read-only until a leader is known.
                    s.push(JobStep::StartReplica {
                        upstream: None,
                        rewind: false,
                    });
                }
                s
            }
            // The simulated fast stop hands the remaining WAL to connected replicas.
            // The real job additionally waits for the candidate to confirm the
            // shutdown checkpoint (not modelled here).
            Action::SwitchoverTo { candidate, .. } => vec![
                JobStep::Stop(crate::postgres::StopMode::Fast),
                JobStep::Release,
                JobStep::StartUnlessDiverged {
                    upstream: Some(candidate.name.clone()),
                },
            ],
            Action::Restart { token, upstream } => vec![
                JobStep::Stop(crate::postgres::StopMode::Fast),
                match token {
                    Some(t) => JobStep::StartPrimary {
                        token: *t,
                        decided_on,
                    },
                    None => JobStep::StartReplica {
                        upstream: name(upstream),
                        rewind: false,
                    },
                },
            ],
            Action::Reinitialize { source, follow } => vec![
                JobStep::Stop(crate::postgres::StopMode::Immediate),
                JobStep::Clone {
                    source: source.name.clone(),
                    follow: name(follow),
                },
            ],
            // Not emitted here: simulated nodes have no `no_leader` replica method and
            // no slots (`execute` skips CopyLogicalSlots).
            Action::RestoreReplica | Action::CopyLogicalSlots { .. } => return,
            // Not background actions: `execute` never starts a job for them.
            Action::AcquireLease
            | Action::RenewLease { .. }
            | Action::ReleaseLease
            | Action::ProbePeers { .. }
            | Action::ClaimInitialize
            | Action::WriteInitialize { .. }
            | Action::CancelInitialize
            | Action::PublishMember(_)
            | Action::WriteConfig { .. }
            | Action::ClearFailover { .. }
            | Action::WriteStatus(_)
            | Action::WriteHistory(_)
            | Action::WriteFailsafe(_)
            | Action::CheckFailsafe { .. }
            | Action::WriteSync { .. }
            | Action::DeleteSync { .. }
            | Action::SetSynchronousStandbyNames { .. }
            | Action::ArmFence { .. }
            | Action::DisarmFence
            | Action::Follow { .. }
            | Action::StopPostgres { .. }
            | Action::CancelBackground
            | Action::ManageSlots(_) => return,
        };
        let Some(kind) = action.busy() else {
            return;
        };
        let writable = steps
            .iter()
            .any(|s| matches!(s, JobStep::StartPrimary { .. } | JobStep::Promote { .. }));
        if writable && self.cfg.leader_key_deletions && self.in_fault_phase() {
            let d = self.rng.millis(1, 40);
            self.after(d, Ev::DeleteLeaderKey);
        }
        let id = self.next_job;
        self.next_job += 1;
        self.nodes[i].job = Some(Job {
            id,
            kind,
            finished: false,
            steps: steps.into(),
            current: None,
        });
        self.job_next(i);
    }

    pub(in crate::sim) fn job_next(&mut self, i: usize) {
        let epoch = self.nodes[i].epoch;
        let Some(job) = self.nodes[i].job.as_mut() else {
            return;
        };
        let id = job.id;
        if job.finished {
            return;
        }
        let Some(step) = job.steps.pop_front() else {
            let kind = job.kind.describe();
            job.finished = true;
            self.trace
                .note(self.now, Some(i), 111, || format!("{kind} finished"));
            return self.wake(i);
        };
        // The runner's own check before it starts a writable-making step.
        let refusal = match &step {
            JobStep::StartPrimary { token, decided_on }
            | JobStep::Promote { token, decided_on } => refuse_writable(
                token,
                self.now,
                *decided_on,
                self.nodes[i].leader_seen.as_ref(),
            ),
            JobStep::Bootstrap
            | JobStep::Clone { .. }
            | JobStep::Stop(_)
            | JobStep::Release
            | JobStep::StartReplica { .. }
            | JobStep::StartUnlessDiverged { .. } => None,
        };
        let refusal = refusal.filter(|r| !self.ignores(*r));
        if let Some(r) = refusal {
            let code = match r {
                Refusal::LeaderChanged => 113,
                Refusal::LeaseExpired | Refusal::NotLeader | Refusal::ViewTooOld => 112,
            };
            self.trace.note(self.now, Some(i), code, || {
                format!("background action refused: {r}")
            });
            if let Some(job) = self.nodes[i].job.as_mut() {
                job.steps.clear();
            }
            return self.job_next(i);
        }
        if let JobStep::Release = step {
            self.cut_horizon(i);
            return self.send_dcs(i, DcsOp::Release, Some(id));
        }
        let d = match &step {
            JobStep::Stop(StopMode::Immediate) => self.rng.millis(20, 200),
            JobStep::Stop(_) => self.rng.millis(50, 1000),
            JobStep::Bootstrap | JobStep::Clone { .. } => self.rng.millis(200, 2000),
            JobStep::Release
            | JobStep::StartPrimary { .. }
            | JobStep::StartReplica { .. }
            | JobStep::StartUnlessDiverged { .. }
            | JobStep::Promote { .. } => self.rng.millis(50, 1500),
        };
        if let Some(job) = self.nodes[i].job.as_mut() {
            job.current = Some(step);
        }
        self.after(
            d,
            Ev::BgEffect {
                node: i,
                epoch,
                job: id,
            },
        );
    }

    /// A background step's effect on Postgres; happens even if the agent is frozen
    /// meanwhile (the server does its part on its own).
    pub(in crate::sim) fn bg_effect(&mut self, i: usize, epoch: u64, id: u64) {
        let n = &mut self.nodes[i];
        if n.epoch != epoch {
            return;
        }
        let Some(step) = n
            .job
            .as_mut()
            .filter(|j| j.id == id)
            .and_then(|j| j.current.take())
        else {
            return;
        };
        // As the runner right before `pg.promote()` / the primary start (after a
        // pre_promote script or a stop that may have taken long): a newer read showing
        // the leadership gone refuses the step.
        let changed = match &step {
            JobStep::StartPrimary { token, decided_on }
            | JobStep::Promote { token, decided_on } => {
                leadership_changed(token, *decided_on, self.nodes[i].leader_seen.as_ref())
            }
            JobStep::Bootstrap
            | JobStep::Clone { .. }
            | JobStep::Stop(_)
            | JobStep::Release
            | JobStep::StartReplica { .. }
            | JobStep::StartUnlessDiverged { .. } => false,
        };
        if changed && !self.ignores(Refusal::LeaderChanged) {
            self.trace.note(self.now, Some(i), 113, || {
                "background action refused: leader key changed since the decision".into()
            });
            if let Some(job) = self.nodes[i].job.as_mut() {
                job.steps.clear();
            }
            return self.push(
                self.now,
                Ev::BgNext {
                    node: i,
                    epoch,
                    job: id,
                },
            );
        }
        let text = format!("{step:?}");
        let ok = self.apply_step(i, step);
        self.trace.note(self.now, Some(i), 120 + ok as u64, || {
            format!("pg: {text} {}", if ok { "done" } else { "FAILED" })
        });
        if !ok {
            if let Some(job) = self.nodes[i].job.as_mut() {
                job.steps.clear();
            }
        }
        self.push(
            self.now,
            Ev::BgNext {
                node: i,
                epoch,
                job: id,
            },
        );
    }

    /// Stops Postgres; a clean shutdown of a primary first sends all WAL to the
    /// replicas streaming from it (walsenders finish before the shutdown checkpoint).
    pub(super) fn stop_pg(&mut self, i: usize, mode: StopMode) {
        let pg = &self.nodes[i].pg;
        if mode != StopMode::Immediate && pg.running && !pg.hung && pg.role == PgRole::Primary {
            let name = self.nodes[i].cfg.name.clone();
            for j in 0..self.nodes.len() {
                let r = &self.nodes[j].pg;
                if j != i
                    && r.running
                    && !r.hung
                    && r.streaming
                    && r.upstream.as_deref() == Some(name.as_str())
                    && self.net.link_up(i, j)
                {
                    let (a, b) = two(&mut self.nodes, j, i);
                    a.pg.replicate_from(b.pg.data.as_ref());
                }
            }
        }
        self.nodes[i].pg.stop(mode);
    }

    /// A node `i` can copy from right now (pg_basebackup, pg_rewind, needs_rewind).
    fn reachable_source(&self, i: usize, name: &str) -> Option<usize> {
        self.index_of(name)
            .filter(|&j| j != i && self.net.link_up(i, j) && self.nodes[j].pg.serves())
    }

    /// Whether node `i`'s WAL may have diverged from `source` (unknown = yes, as the
    /// runner's `needs_rewind(..).unwrap_or(true)`).
    fn needs_rewind(&self, i: usize, source: &str) -> bool {
        match self.reachable_source(i, source) {
            None => true,
            Some(j) => match (&self.nodes[i].pg.data, &self.nodes[j].pg.data) {
                (Some(mine), Some(theirs)) => !mine.is_prefix_of(theirs),
                _ => true,
            },
        }
    }

    fn apply_step(&mut self, i: usize, step: JobStep) -> bool {
        match step {
            JobStep::Bootstrap => {
                let marker = self.new_record_id();
                let sysid = self.system_identifier.clone();
                self.nodes[i].pg.bootstrap(sysid, marker);
                self.nodes[i].fresh_bootstrap = true;
                self.fence_on_writable(i);
                true
            }
            JobStep::Clone { source, follow } => {
                let Some(j) = self.reachable_source(i, &source) else {
                    return false;
                };
                let (a, b) = two(&mut self.nodes, i, j);
                a.pg.data = b.pg.data.clone();
                a.pg.start(PgRole::Replica, follow)
            }
            JobStep::Stop(mode) => {
                self.stop_pg(i, mode);
                true
            }
            JobStep::StartPrimary { .. } => {
                let ok = self.nodes[i].pg.start(PgRole::Primary, None);
                self.fence_on_writable(i);
                ok
            }
            JobStep::StartReplica { upstream, rewind } => {
                if self.nodes[i].pg.data.is_none() {
                    return false;
                }
                if let (true, Some(u)) = (rewind, upstream.as_deref()) {
                    if self.needs_rewind(i, u) {
                        let Some(j) = self.reachable_source(i, u) else {
                            return false; // pg_rewind cannot reach its source
                        };
                        let (a, b) = two(&mut self.nodes, i, j);
                        if let Some(theirs) = b.pg.data.as_ref() {
                            let dropped = a.pg.rewind_to(theirs);
                            self.trace.note(self.now, Some(i), 130, || {
                                format!("pg_rewind from {u}: {dropped} records dropped")
                            });
                        }
                    }
                }
                self.nodes[i].pg.start(PgRole::Replica, upstream)
            }
            JobStep::StartUnlessDiverged { upstream } => {
                if upstream.as_deref().is_some_and(|u| self.needs_rewind(i, u)) {
                    return true; // left stopped: the next cycle starts it with a rewind
                }
                self.nodes[i].pg.start(PgRole::Replica, upstream)
            }
            JobStep::Promote { .. } => {
                let marker = self.new_record_id();
                let ok = self.nodes[i].pg.promote(marker);
                self.fence_on_writable(i);
                if ok {
                    self.check_no_acknowledged_write_lost(i);
                }
                ok
            }
            JobStep::Release => true,
        }
    }
}
