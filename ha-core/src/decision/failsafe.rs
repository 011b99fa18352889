//! The DCS cannot be reached: a primary keeps running only while its lease is
//! certainly valid, or while failsafe mode (every member confirming it) extends it.

use super::input::RequestVerdict;
use super::{Action, DemoteMode, Outcome, Step};
use crate::dcs::DcsError;
use crate::model::{Cluster, Failsafe};
use crate::postgres::{DataDirState, PgProcess};

impl Step<'_> {
    /// The DCS could not be read or written: a primary keeps running only while its
    /// lease is certainly valid through the next decision, or while failsafe mode
    /// extends it.
    pub(super) fn dcs_unreachable(&mut self, e: &DcsError) {
        self.publish = false;
        if self.obs.request.is_some() {
            // Who leads is unknown: neither a restart nor a re-clone is safe to judge.
            self.verdict = Some(RequestVerdict::Refused(format!(
                "DCS is not accessible ({e})"
            )));
        }
        self.apply_lease_outcomes(None);
        self.st.failsafe_active = false;
        if self.paused() {
            return self.say(format!("DCS unreachable ({e}); paused, doing nothing"));
        }
        if !self.obs.pg.may_accept_writes() || self.obs.pg.is_replica() {
            self.st.failsafe_active = self.obs.failsafe_leader.is_some();
            if matches!(self.obs.pg.process, PgProcess::Stopped | PgProcess::Crashed)
                && matches!(self.obs.pg.data_dir, DataDirState::Initialized { .. })
            {
                // Nobody can be followed without the DCS: serve reads, as Patroni's
                // offline demotion does (also after the write fence stopped it). A
                // former primary is checked for divergence once a leader is known.
                if self.obs.pg.was_primary() {
                    self.st.rewind_pending = true;
                }
                self.say(format!(
                    "DCS unreachable ({e}); starting postgres read-only"
                ));
                return self.act(Action::StartReplica {
                    upstream: None,
                    rewind: false,
                });
            }
            self.advance_slots_from_failsafe_leader();
            return self.say(format!("DCS unreachable ({e}); replica keeps running"));
        }
        let failsafe = self.failsafe_keeps_primary(e);
        if failsafe == FailsafeVerdict::Keep {
            return;
        }
        let cfg = self.config();
        let next_decision = self.now.plus(cfg.loop_wait() + cfg.retry_timeout());
        match self.token(None) {
            // A member that did not confirm me may be cut off with the DCS, or taking
            // over: in failsafe mode that ends the primary at once, as in Patroni.
            Some(t) if next_decision < t.valid_until && failsafe != FailsafeVerdict::Refuted => {
                self.wake_no_later_than(t.valid_until.minus(cfg.loop_wait() + cfg.retry_timeout()));
                self.say(format!(
                    "DCS unreachable ({e}); the leader lease is still valid, keeping the primary"
                ))
            }
            _ => {
                self.st.rewind_pending = true;
                self.act(Action::Demote {
                    mode: DemoteMode::Offline,
                    upstream: None,
                });
                self.say(format!(
                    "demoting: DCS unreachable ({e}) and the leader lease is about to end"
                ))
            }
        }
    }

    /// The leader publishes who must confirm it when the DCS is gone: every member
    /// with an API address, itself included. Written only when it changed.
    pub(super) fn publish_failsafe_topology(&mut self, c: &Cluster) {
        if !self.config().failsafe_mode {
            self.st.failsafe_written = None;
            return;
        }
        let mut topology: Failsafe = c
            .members
            .iter()
            .filter_map(|m| Some((m.name.clone(), m.data.api_url.clone()?)))
            .collect();
        if let Some(url) = &self.cfg.api_url {
            topology.insert(self.me().to_string(), url.clone());
        }
        if c.failsafe.as_ref() == Some(&topology) {
            self.st.failsafe_written = None;
            return;
        }
        self.act(Action::WriteFailsafe(topology.clone()));
        self.st.failsafe_written = Some(topology);
    }

    /// Who must confirm me: the `failsafe` map I last read, which must name me (so any
    /// member that can still read the DCS sees a map, and races only if it is in it),
    /// plus what I wrote after that read (it may have reached the DCS).
    fn failsafe_topology(&self) -> Option<Failsafe> {
        let read = self
            .st
            .last_leader_view
            .as_ref()
            .and_then(|c| c.failsafe.clone())
            .filter(|f| f.contains_key(self.me()))?;
        let mut all = read;
        if let Some(written) = &self.st.failsafe_written {
            all.extend(written.clone());
        }
        Some(all)
    }

    /// Failsafe mode: a primary cut off from the DCS keeps running while every member
    /// of the failsafe topology accepts its `POST /failsafe` each cycle.
    fn failsafe_keeps_primary(&mut self, e: &DcsError) -> FailsafeVerdict {
        if !self.config().failsafe_mode {
            return FailsafeVerdict::NotApplicable;
        }
        let Some(topology) = self.failsafe_topology() else {
            return FailsafeVerdict::NotApplicable;
        };
        let others: Failsafe = topology
            .into_iter()
            .filter(|(name, _)| name != self.me())
            .collect();
        let round = self.obs.outcomes.iter().rev().find_map(|o| match o {
            Outcome::FailsafeChecked {
                sent_at,
                accepted,
                positions,
            } => Some((*sent_at, accepted, positions)),
            _ => None,
        });
        let (sent_at, all_accepted, positions) = match round {
            None if others.is_empty() => (self.now, true, None),
            None => {
                let ttl = self.ttl();
                let slots = match self.st.last_leader_view.clone() {
                    Some(view) => self.published_slots(&view),
                    None => Default::default(),
                };
                self.act(Action::CheckFailsafe {
                    members: others,
                    ttl,
                    slots,
                });
                return FailsafeVerdict::Keep;
            }
            Some((sent_at, accepted, positions)) => (
                sent_at,
                others.keys().all(|name| accepted.contains(name)),
                Some(positions.clone()),
            ),
        };
        // Split-brain safety: each member that accepted will not race before sent_at + ttl
        // (and one that is already racing refuses), a member outside the map may not race
        // at all, and the lease still covered sent_at — so the fence at sent_at + ttl −
        // margin stops these writes before any other node can become primary.
        let Some(lease) = self.st.lease_until.filter(|l| sent_at < *l) else {
            return FailsafeVerdict::NotApplicable;
        };
        if !all_accepted {
            self.say(format!(
                "DCS unreachable ({e}); failsafe: not every member confirmed me as the leader"
            ));
            return FailsafeVerdict::Refuted;
        }
        let ttl = self.ttl();
        self.st.lease_until = Some(lease.max(sent_at.plus(ttl)));
        self.arm_fence();
        self.st.failsafe_active = true;
        let cfg = self.config();
        if let Some(t) = self.token(None) {
            self.wake_no_later_than(t.valid_until.minus(cfg.loop_wait() + cfg.retry_timeout()));
        }
        if let Some(positions) = positions {
            self.advance_cascading_slots_in_failsafe(&positions);
        }
        self.say(format!(
            "DCS unreachable ({e}); failsafe: every member confirmed me as the leader, keeping the primary"
        ));
        FailsafeVerdict::Keep
    }
}

/// What failsafe mode says about a primary cut off from the DCS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailsafeVerdict {
    /// Every member confirmed it (or the calls are under way): it stays primary.
    Keep,
    /// A member did not confirm it: it stops being primary now.
    Refuted,
    /// Failsafe mode does not decide (off, no topology, or the round came too late).
    NotApplicable,
}
