//! One HA cycle without I/O: the rules between a cluster read and the end of the
//! cycle, which the async [`Runner`](super::Runner) drives with real I/O and the
//! simulator drives on its fake world.
//!
//! The driver reads the cluster and observes Postgres, builds the [`Observation`] and
//! starts a [`Cycle`] with it. From then on it calls [`Cycle::next`] and does what the
//! answer says: after [`Step::Decided`] it may publish or trace the new state; after
//! [`Step::Execute`] it runs the action and hands back what came of it with
//! [`Cycle::complete`] (at once, or when the answer arrives); after [`Step::Refused`]
//! it logs the refusal; [`Step::Done`] ends the cycle and says when to run the next.
//!
//! The rules kept here: `decide` runs again within the cycle while it asks to
//! (`rerun`), at most [`MAX_STEPS`] times; query outcomes and executed actions are fed
//! back into the observation; every action passes the [guard](super::guard::refuse)
//! with a view no older than `retry_timeout` + [`VIEW_AGE_MARGIN`]; an action that
//! leads (acquiring the lease, or one with a lease token) is refused while a required
//! watchdog does not work; acquiring the lease is refused while a failsafe leader's
//! call holds this node out of the race ([`FailsafeGate::claim`]). A refusal ends the
//! cycle and asks for a new read at once.

use super::failsafe::FailsafeGate;
use super::guard::{refuse, GuardContext, LeaderKeySeen, Refusal};
use crate::clock::MonoTime;
use crate::decision::{
    decide, Action, Decision, LocalState, NodeConfig, Observation, Outcome, RequestVerdict,
};
use std::collections::VecDeque;
use std::time::Duration;

/// Decision steps per cycle at most.
pub const MAX_STEPS: u32 = 8;

/// How much older than `retry_timeout` the view behind an action may be: a read can
/// take `retry_timeout`, anything much older means the agent stalled.
pub const VIEW_AGE_MARGIN: Duration = Duration::from_millis(500);

/// What the cycle needs from the driver's world at each step.
#[derive(Debug, Clone, Copy)]
pub struct Env<'a> {
    /// The time now.
    pub now: MonoTime,
    /// The `retry_timeout` in force.
    pub retry_timeout: Duration,
    /// The leader key as the latest successful read showed it.
    pub leader_key: Option<LeaderKeySeen>,
    /// Whether the write fence / watchdog works (a required one that failed blocks
    /// leading).
    pub watchdog_usable: bool,
    /// The node's record of `POST /failsafe` calls.
    pub failsafe: &'a FailsafeGate,
    /// Guard refusals to disregard (only the simulator's deliberately broken rules
    /// set any; a real agent passes none).
    pub ignored: &'a [Refusal],
}

/// Why the cycle refused an action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The guard refused it (see [`super::guard::refuse`]).
    #[error("{0}")]
    Guard(Refusal),
    /// It leads, and the required watchdog is not working.
    #[error("the required watchdog is not working")]
    WatchdogFailed,
    /// It races for the lease, and a leader in failsafe mode called this node within
    /// its ttl.
    #[error("a leader in failsafe mode called this node within ttl")]
    FailsafeCalled,
}

/// How a cycle ended, and when the next one should run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CycleEnd {
    /// An action was refused: re-read the cluster at once.
    pub refused: bool,
    /// The decision still asked to run again after [`MAX_STEPS`] steps.
    pub step_limit: bool,
    /// The decision asked for a new read right away.
    pub reread: bool,
    /// The last decision's latest time to run again.
    pub wake_at: Option<MonoTime>,
    /// The answer to the observation's operator request, if the decision gave one.
    pub verdict: Option<RequestVerdict>,
}

impl CycleEnd {
    /// Whether the next cycle should start right away (a refusal or a reread).
    pub fn again_now(&self) -> bool {
        self.refused || self.reread
    }
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// `decide` ran and replaced the node's state.
    Decided {
        /// The state's `lease_until` before this decision.
        lease_before: Option<MonoTime>,
        /// The decision's message differs from the one before.
        message_changed: bool,
    },
    /// Run this action, then call [`Cycle::complete`] with its outcome (queries) or
    /// `None` (everything else) before asking for the next step.
    Execute(Action),
    /// This action was not run, for this reason; the cycle is over (the next step is
    /// [`Step::Done`]).
    Refused {
        /// The refused action.
        action: Action,
        /// Why.
        why: Refused,
    },
    /// The cycle is over.
    Done(CycleEnd),
}

/// One HA cycle on one observation (see the module docs).
#[derive(Debug)]
pub struct Cycle {
    obs: Observation,
    queue: VecDeque<Action>,
    steps: u32,
    rerun: bool,
    reread: bool,
    refused: bool,
    wake_at: Option<MonoTime>,
    verdict: Option<RequestVerdict>,
    in_flight: Option<Action>,
}

impl Cycle {
    /// A cycle on `obs` (its outcomes and executed actions empty).
    pub fn new(obs: Observation) -> Cycle {
        Cycle {
            obs,
            queue: VecDeque::new(),
            steps: 0,
            rerun: false,
            reread: false,
            refused: false,
            wake_at: None,
            verdict: None,
            in_flight: None,
        }
    }

    /// The observation the decisions are made on, with the outcomes so far.
    pub fn observation(&self) -> &Observation {
        &self.obs
    }

    /// The action handed out by [`Step::Execute`] and not yet completed.
    pub fn in_flight(&self) -> Option<&Action> {
        self.in_flight.as_ref()
    }

    /// The actions of the latest decision not yet handed out.
    pub fn queued(&self) -> impl Iterator<Item = &Action> {
        self.queue.iter()
    }

    /// Decisions made so far in this cycle.
    pub fn steps(&self) -> u32 {
        self.steps
    }

    /// The next thing to do. `cfg` and `state` are the node's; the decision replaces
    /// `state`.
    pub fn next(&mut self, cfg: &NodeConfig, state: &mut LocalState, env: &Env<'_>) -> Step {
        debug_assert!(
            self.in_flight.is_none(),
            "complete the executed action first"
        );
        if self.refused {
            return self.done(state, env);
        }
        if let Some(action) = self.queue.pop_front() {
            if let Some(why) = self.refusal(&action, state, env) {
                self.refused = true;
                return Step::Refused { action, why };
            }
            self.in_flight = Some(action.clone());
            return Step::Execute(action);
        }
        if self.steps == 0 || (self.rerun && self.steps < MAX_STEPS) {
            let Decision {
                actions,
                state: next,
                rerun,
                reread,
                wake_at,
                verdict,
            } = decide(cfg, state, &self.obs, env.now);
            self.steps += 1;
            self.queue = actions.into();
            self.rerun = rerun;
            self.reread |= reread;
            self.wake_at = wake_at;
            self.verdict = verdict.or(self.verdict.take());
            let previous = std::mem::replace(state, next);
            return Step::Decided {
                lease_before: previous.lease_until,
                message_changed: previous.message != state.message,
            };
        }
        self.done(state, env)
    }

    /// What came of the action last handed out: a query's outcome, or `None`. Returns
    /// when the request was sent if the outcome confirms an acquire or renewal of the
    /// lease (the node's latest confirmed lease, which the fencing check reads).
    pub fn complete(&mut self, outcome: Option<Outcome>) -> Option<MonoTime> {
        let mut confirmed = None;
        if let Some(Outcome::LeaseAcquired { sent_at } | Outcome::LeaseRenewed { sent_at }) =
            &outcome
        {
            confirmed = Some(*sent_at);
        }
        self.obs.outcomes.extend(outcome);
        if let Some(action) = self.in_flight.take().filter(|a| !a.is_query()) {
            self.obs.executed.push(action);
        }
        confirmed
    }

    fn refusal(&self, action: &Action, state: &LocalState, env: &Env<'_>) -> Option<Refused> {
        let ctx = GuardContext {
            now: env.now,
            read_at: self.obs.read_at,
            lease_until: state.lease_until,
            max_view_age: env.retry_timeout + VIEW_AGE_MARGIN,
            leader_key: env.leader_key,
        };
        if let Some(r) = refuse(action, &ctx).filter(|r| !env.ignored.contains(r)) {
            return Some(Refused::Guard(r));
        }
        // A required watchdog that failed while arming this cycle blocks leading.
        let leads = matches!(action, Action::AcquireLease) || action.token().is_some();
        if leads && !env.watchdog_usable {
            return Some(Refused::WatchdogFailed);
        }
        // A failsafe call that arrived after the observation keeps me out of the race.
        if matches!(action, Action::AcquireLease) && !env.failsafe.claim(env.now) {
            return Some(Refused::FailsafeCalled);
        }
        None
    }

    fn done(&mut self, state: &LocalState, env: &Env<'_>) -> Step {
        env.failsafe.settle(state.lease_until.is_some());
        Step::Done(CycleEnd {
            refused: self.refused,
            step_limit: !self.refused && self.rerun && self.steps >= MAX_STEPS,
            reread: self.reread,
            wake_at: self.wake_at,
            verdict: self.verdict.take(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Cluster;
    use crate::postgres::PgObservation;

    /// A running replica alone in a leaderless cluster of system 7311: it races.
    fn racing() -> Cycle {
        let cluster = Cluster {
            initialize: Some("7311".into()),
            ..Cluster::default()
        };
        let pg = PgObservation::running_replica("7311", 1, 0x300_0000);
        Cycle::new(Observation::new(cluster, pg, MonoTime::from_millis(1_000)))
    }

    /// Drives `cycle` to its end, executing every action, answering queries with
    /// `answer`; the actions handed out and the refusal, if any.
    fn drive_answering(
        cycle: &mut Cycle,
        env: &Env<'_>,
        answer: impl Fn(&Action) -> Option<Outcome>,
    ) -> (Vec<String>, Option<String>, CycleEnd) {
        let cfg = NodeConfig::named("b");
        let mut state = LocalState::default();
        let (mut executed, mut refused) = (Vec::new(), None);
        loop {
            match cycle.next(&cfg, &mut state, env) {
                Step::Decided { .. } => {}
                Step::Execute(a) => {
                    executed.push(a.to_string());
                    cycle.complete(answer(&a));
                }
                Step::Refused { action, why } => refused = Some(format!("{action}: {why}")),
                Step::Done(end) => return (executed, refused, end),
            }
        }
    }

    /// [`drive_answering`] with no answer to any query.
    fn drive(cycle: &mut Cycle, env: &Env<'_>) -> (Vec<String>, Option<String>, CycleEnd) {
        drive_answering(cycle, env, |_| None)
    }

    fn env(gate: &FailsafeGate, watchdog_usable: bool) -> Env<'_> {
        Env {
            now: MonoTime::from_millis(1_100),
            retry_timeout: Duration::from_secs(10),
            leader_key: None,
            watchdog_usable,
            failsafe: gate,
            ignored: &[],
        }
    }

    #[test]
    fn a_failed_watchdog_refuses_the_race_and_asks_for_a_new_read() {
        let gate = FailsafeGate::default();
        let (executed, refused, end) = drive(&mut racing(), &env(&gate, false));
        assert_eq!(executed, Vec::<String>::new());
        assert_eq!(
            refused.as_deref(),
            Some("AcquireLease: the required watchdog is not working")
        );
        assert!(end.refused && end.again_now() && !end.step_limit);
    }

    #[test]
    fn a_failsafe_call_after_the_read_refuses_the_race() {
        let gate = FailsafeGate::default();
        assert!(gate.accept_call("a", MonoTime::from_millis(1_050), Duration::from_secs(30)));
        let (_, refused, end) = drive(&mut racing(), &env(&gate, true));
        assert_eq!(
            refused.as_deref(),
            Some("AcquireLease: a leader in failsafe mode called this node within ttl")
        );
        assert!(end.refused);
    }

    #[test]
    fn a_lost_race_claims_the_failsafe_gate_for_the_cycle_only_and_asks_for_a_new_read() {
        let gate = FailsafeGate::default();
        let call = || gate.accept_call("a", MonoTime::from_millis(1_200), Duration::from_secs(30));
        let taken = |a: &Action| {
            // While the race is on, a leader's call is refused.
            assert!(!call(), "accepted a failsafe call while racing");
            matches!(a, Action::AcquireLease).then_some(Outcome::LeaseTaken)
        };
        let (executed, refused, end) = drive_answering(&mut racing(), &env(&gate, true), taken);
        assert_eq!(
            executed,
            ["AcquireLease", "PublishMember role=replica state=running"]
        );
        assert_eq!(refused, None);
        assert!(end.reread && !end.refused && !end.step_limit);
        // The cycle ended without a lease, which released the claim.
        assert!(call());
    }

    #[test]
    fn a_query_that_is_never_answered_ends_the_cycle_after_max_steps() {
        let gate = FailsafeGate::default();
        let mut cycle = racing();
        let (executed, refused, end) = drive(&mut cycle, &env(&gate, true));
        assert_eq!(executed, ["AcquireLease"; MAX_STEPS as usize]);
        assert_eq!(refused, None);
        assert!(end.step_limit && !end.refused);
        assert_eq!(cycle.steps(), MAX_STEPS);
        assert!(
            cycle.observation().executed.is_empty(),
            "queries are not recorded"
        );
    }

    #[test]
    fn an_action_on_a_view_older_than_retry_timeout_and_the_margin_is_refused() {
        let gate = FailsafeGate::default();
        let late = Env {
            now: MonoTime::from_millis(1_000).plus(Duration::from_millis(10_501)),
            ..env(&gate, true)
        };
        let (executed, refused, _) = drive(&mut racing(), &late);
        assert_eq!(executed, Vec::<String>::new());
        assert_eq!(
            refused.as_deref(),
            Some("AcquireLease: cluster view too old")
        );
        let just_in_time = Env {
            now: MonoTime::from_millis(1_000).plus(Duration::from_millis(10_500)),
            ..env(&gate, true)
        };
        assert_eq!(drive(&mut racing(), &just_in_time).1, None);
    }
}
