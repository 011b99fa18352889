//! The Postgres the runner's unit tests drive: it reports what the test sets, records
//! what it is asked to do (one line a call, in the words the tests compare), can
//! hold its pre-promote step until the test lets it go, and fails where a test says.

use crate::model::Lsn;
use crate::postgres::{
    DataDirState, PgError, PgObservation, Postgres, SlotChanges, StartRole, StopMode, StopOutcome,
    Upstream,
};
use async_trait::async_trait;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::Notify;

/// Runs once, at the next observation.
pub(super) type Hook = Box<dyn FnOnce() + Send>;

/// A scripted Postgres. `TestPg::default()` has no data directory, answers every call
/// with success and holds nothing.
pub(super) struct TestPg {
    /// What `observe` reports.
    pub(super) obs: Mutex<PgObservation>,
    /// What was asked of it, one line a call (read with [`TestPg::calls`]).
    pub(super) calls: Mutex<Vec<String>>,
    /// Runs once, at the next observation (alongside the runner's cluster read).
    pub(super) on_observe: Mutex<Option<Hook>>,
    /// `pre_promote` waits for `pre_promote_gate` before it returns.
    pub(super) hold_pre_promote: bool,
    /// Lets a held `pre_promote` go on.
    pub(super) pre_promote_gate: Notify,
    /// Non-immediate stops fail with this timeout or less.
    pub(super) slow_stop_below: Option<Duration>,
    /// `pre_promote` fails (the hook exits with 1).
    pub(super) pre_promote_fails: bool,
    /// pg_rewind could bring the data directory back in line.
    pub(super) rewindable: bool,
    /// pg_rewind fails half-way.
    pub(super) rewind_fails: bool,
    /// The divergence check finds none, and the WAL the member needs is gone.
    pub(super) wal_gone: bool,
    /// Records `checkpoint` calls (off by default: the one after every promotion
    /// runs off the promotion's path, at its own pace).
    pub(super) log_checkpoints: bool,
    /// The shutdown checkpoint a (successful) stop reports.
    pub(super) stop_checkpoint: Option<Lsn>,
    /// What a peer reports as received (`received_lsn_of`).
    pub(super) peer_received: Mutex<Option<Lsn>>,
    /// The answers `clients_in_transaction` gives, first to last (then 0).
    pub(super) in_transaction: Mutex<Vec<u64>>,
}

impl Default for TestPg {
    fn default() -> Self {
        TestPg {
            obs: Mutex::new(PgObservation::stopped(DataDirState::Empty)),
            calls: Mutex::new(Vec::new()),
            on_observe: Mutex::new(None),
            hold_pre_promote: false,
            pre_promote_gate: Notify::new(),
            slow_stop_below: None,
            pre_promote_fails: false,
            rewindable: false,
            rewind_fails: false,
            wal_gone: false,
            log_checkpoints: false,
            stop_checkpoint: None,
            peer_received: Mutex::new(None),
            in_transaction: Mutex::new(Vec::new()),
        }
    }
}

impl TestPg {
    /// Records a call (or an event the test wants in the same order, such as the
    /// promotion hooks' writable signal).
    pub(super) fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    /// The calls so far, in order.
    pub(super) fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }
}

#[async_trait]
impl Postgres for TestPg {
    async fn observe(&self) -> PgObservation {
        let hook = self.on_observe.lock().unwrap().take();
        if let Some(hook) = hook {
            hook();
        }
        self.obs.lock().unwrap().clone()
    }
    async fn bootstrap(&self) -> Result<(), PgError> {
        self.log("bootstrap".into());
        Ok(())
    }
    async fn clone_from(&self, source: &Upstream) -> Result<(), PgError> {
        self.log(format!("clone from {}", source.name));
        Ok(())
    }
    async fn start(&self, role: &StartRole, _: Duration) -> Result<(), PgError> {
        let role = match role {
            StartRole::Primary => "primary",
            StartRole::Replica { .. } => "replica",
        };
        self.log(format!("start {role}"));
        Ok(())
    }
    async fn stop(&self, mode: StopMode, t: Duration) -> Result<StopOutcome, PgError> {
        self.log(format!("stop {mode:?} {}s", t.as_secs_f64()));
        match self.slow_stop_below {
            Some(limit) if mode != StopMode::Immediate && t <= limit => {
                Err(PgError::StopFailed("still running".into()))
            }
            _ => Ok(StopOutcome {
                checkpoint_lsn: self.stop_checkpoint,
            }),
        }
    }
    async fn restart(&self, _: Duration) -> Result<(), PgError> {
        self.log("restart".into());
        Ok(())
    }
    async fn promote(&self, _: Duration) -> Result<(), PgError> {
        self.log("promote".into());
        Ok(())
    }
    async fn finish_promotion(&self) -> Result<(), PgError> {
        self.log("finish promotion".into());
        Ok(())
    }
    async fn follow(&self, _: Option<&Upstream>) -> Result<(), PgError> {
        Ok(())
    }
    async fn needs_rewind(&self, _: &Upstream) -> Result<bool, PgError> {
        self.log("divergence check".into());
        Ok(!self.wal_gone)
    }
    async fn wal_gone_on(&self, _: &Upstream) -> Result<Option<String>, PgError> {
        self.log("wal check".into());
        Ok(self
            .wal_gone
            .then(|| "WAL from 0/4000000 removed on pg0".into()))
    }
    async fn rewind(&self, _: &Upstream) -> Result<(), PgError> {
        self.log("rewind".into());
        if self.rewind_fails {
            return Err(PgError::DataDir("half-rewound".into()));
        }
        Ok(())
    }
    async fn remove_data_directory(&self) -> Result<(), PgError> {
        self.log("remove data directory".into());
        Ok(())
    }
    async fn apply_slot_changes(&self, _: &SlotChanges) -> Result<(), PgError> {
        Ok(())
    }
    async fn set_synchronous_standby_names(&self, _: Option<&str>) -> Result<(), PgError> {
        Ok(())
    }
    async fn reload(&self) -> Result<(), PgError> {
        Ok(())
    }
    async fn received_lsn_of(&self, _: &Upstream) -> Result<Option<Lsn>, PgError> {
        Ok(*self.peer_received.lock().unwrap())
    }
    async fn checkpoint(&self) -> Result<(), PgError> {
        if self.log_checkpoints {
            self.log("checkpoint".into());
        }
        Ok(())
    }
    async fn clients_in_transaction(&self) -> Result<u64, PgError> {
        let mut left = self.in_transaction.lock().unwrap();
        let n = if left.is_empty() { 0 } else { left.remove(0) };
        self.log(format!("{n} in transaction"));
        Ok(n)
    }
    async fn pre_promote(&self) -> Result<(), PgError> {
        self.log("pre_promote".into());
        if self.hold_pre_promote {
            self.pre_promote_gate.notified().await;
        }
        if self.pre_promote_fails {
            return Err(PgError::Tool {
                tool: "pre_promote".into(),
                message: "exited with 1".into(),
            });
        }
        Ok(())
    }
    async fn can_rewind(&self) -> bool {
        self.rewindable
    }
}
