//! The runner's remote control: [`RunnerHandle`], which the REST API and signal
//! handlers use to wake the loop, hand it an operator request, a new configuration or
//! extra member fields, read its snapshot, and ask it to shut down.

use super::{failsafe, CheckpointRecord, NodeSnapshot, RequestError};
use crate::clock::MonoTime;
use crate::decision::{NodeConfig, OperatorRequest};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// An operator request waiting for the decision, and where its answer goes.
pub(super) struct PendingRequest {
    pub(super) request: OperatorRequest,
    pub(super) reply: oneshot::Sender<Result<(), RequestError>>,
}

/// The one operator request a node handles at a time.
pub(super) type RequestSlot = Arc<Mutex<Option<PendingRequest>>>;

/// Controls a running [`Runner`](super::Runner) from elsewhere (REST API, signal handlers).
#[derive(Clone)]
pub struct RunnerHandle {
    pub(super) wake: Arc<Notify>,
    pub(super) shutdown: watch::Sender<bool>,
    pub(super) snapshot: watch::Receiver<NodeSnapshot>,
    pub(super) requests: RequestSlot,
    pub(super) reconfig: Arc<Mutex<Option<NodeConfig>>>,
    pub(super) failsafe: Arc<failsafe::FailsafeGate>,
    pub(super) member_fields: MemberFields,
    pub(super) checkpoints: CheckpointRecord,
}

/// Fields the agent adds to the published member record (e.g. `scheduled_restart`).
pub(super) type MemberFields = Arc<Mutex<serde_json::Map<String, serde_json::Value>>>;

impl RunnerHandle {
    /// A `CHECKPOINT` on this node's server finished at `at` (the REST API runs one
    /// before it writes a switchover request): a switchover's demotion within
    /// [`RECENT_CHECKPOINT`](super::RECENT_CHECKPOINT) of it stops Postgres without
    /// running another.
    pub fn checkpoint_finished(&self, at: MonoTime) {
        self.checkpoints.finished(at);
    }

    /// Publishes `key` in this node's member record from the next cycle on (`None`
    /// removes it), e.g. `scheduled_restart`, which `fullautoctl flush` looks for.
    pub fn set_member_field(&self, key: &str, value: Option<serde_json::Value>) {
        let mut fields = self.member_fields.lock().unwrap_or_else(|p| p.into_inner());
        match value {
            Some(v) => fields.insert(key.to_string(), v),
            None => fields.remove(key),
        };
        drop(fields);
        self.wake.notify_one();
    }

    /// A leader's `POST /failsafe`: this node stays out of the leader race for `ttl`.
    /// False when this node races for or holds the leader key itself.
    /// `slots` are the leader's slot positions from the call's body.
    pub fn failsafe_call(
        &self,
        leader: &str,
        slots: std::collections::BTreeMap<String, crate::model::Lsn>,
        now: MonoTime,
        ttl: Duration,
    ) -> bool {
        let accepted = self.failsafe.accept_call(leader, now, ttl);
        if accepted {
            self.failsafe.record_slots(slots);
        }
        accepted
    }

    /// Replaces the node's settings (tags, addresses, …) from the next cycle on, e.g.
    /// after the config file was reloaded. The name cannot change and is kept.
    pub fn reconfigure(&self, cfg: NodeConfig) {
        *self.reconfig.lock().unwrap_or_else(|p| p.into_inner()) = Some(cfg);
        self.wake.notify_one();
    }

    /// Submits an operator request. The answer arrives when the decision refuses it,
    /// when a reinitialization has started, or when a restart has finished; `Err`
    /// carries the reason shown to the operator. Dropping the receiver withdraws it.
    pub fn request(&self, request: OperatorRequest) -> oneshot::Receiver<Result<(), RequestError>> {
        let (tx, rx) = oneshot::channel();
        let mut slot = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|p| !p.reply.is_closed()) {
            let _ = tx.send(Err(RequestError::Busy));
            return rx;
        }
        *slot = Some(PendingRequest { request, reply: tx });
        drop(slot);
        self.wake.notify_one();
        rx
    }

    /// Runs a cycle now (after a config change, a switchover request, …).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Asks the runner to stop Postgres (unless paused), release the lease and return.
    pub fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        self.wake.notify_one();
    }

    /// The latest snapshot.
    pub fn snapshot(&self) -> NodeSnapshot {
        self.snapshot.borrow().clone()
    }

    /// A receiver that sees every new snapshot.
    pub fn subscribe(&self) -> watch::Receiver<NodeSnapshot> {
        self.snapshot.clone()
    }
}
