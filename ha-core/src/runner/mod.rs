//! The async runner: drives [`crate::decision::decide`] against real `Dcs`,
//! `Postgres` and `Watchdog` trait objects. One cycle per `loop_wait`, woken early by
//! DCS changes, by the end of a background action, by the REST API, or at the time the
//! decision asked for; long actions (bootstrap, clone, rewind, promote, demote) run in
//! the background while the loop keeps renewing the lease.

mod before_stop;
pub mod cycle;
mod execute;
pub mod failsafe;
pub mod guard;
mod handle;
mod jobs;
mod probe;
mod shutdown;
#[cfg(test)]
mod test_pg;
#[cfg(test)]
mod tests;

use crate::clock::{Clock, MonoTime};
use crate::dcs::{Dcs, DcsTiming};
use crate::decision::{
    Busy, LocalState, NodeConfig, Observation, OperatorRequest, PeerReply, RequestVerdict,
};
use crate::model::{Cluster, Member};
use crate::postgres::{DynamicPostgresql, PgError, PgObservation, Postgres};
use crate::watchdog::Watchdog;
use async_trait::async_trait;
use before_stop::CheckpointRecord;
pub use before_stop::{DRAIN_LIMIT, PAUSE_GRACE, RECENT_CHECKPOINT};
use cycle::{Cycle, Env, Step};
use execute::with_deadline;
use guard::LeaderKeySeen;
pub use handle::RunnerHandle;
use handle::{MemberFields, RequestSlot};
use jobs::BackgroundJob;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{oneshot, watch, Notify};

/// Asks a peer for its status (`GET <api_url>`), within the runner's probe timeout.
#[async_trait]
pub trait PeerProbe: Send + Sync {
    /// The peer's answer, or `None` when it did not answer usefully.
    async fn probe(&self, member: &Member) -> Option<PeerReply>;

    /// `POST <api_url without /patroni>/failsafe` with `body` (failsafe mode, DCS
    /// unreachable): `Some` when the member answered `200 Accepted`, with the WAL
    /// position it reported (the `lsn` header), if any.
    async fn failsafe_call(
        &self,
        _api_url: &str,
        _body: &serde_json::Value,
    ) -> Option<Option<crate::model::Lsn>> {
        None
    }
}

/// A probe that never reaches anyone (single-node setups and tests).
#[derive(Debug, Default, Clone, Copy)]
pub struct NoPeers;

#[async_trait]
impl PeerProbe for NoPeers {
    async fn probe(&self, _member: &Member) -> Option<PeerReply> {
        None
    }
}

/// Things that happened that the embedding program may want to act on (callbacks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunnerEvent {
    /// Postgres was started (role given).
    Started(&'static str),
    /// Postgres was stopped.
    Stopped,
    /// The node's role changed (`primary`, `replica`, `demoted`).
    RoleChanged(&'static str),
    /// Postgres was restarted on request (role given).
    Restarted(&'static str),
    /// Postgres re-read its configuration (a reload), e.g. after a change of the
    /// dynamic parameters or access lines.
    Reloaded,
}

/// Why a runner stopped on its own: the node cannot go on until an operator acts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Fatal {
    /// The bootstrap failed because of the configuration (postgres refused a
    /// parameter, initdb an option): every new attempt would fail the same way. As in
    /// Patroni, the node has released `initialize`, emptied the data directory and
    /// stops.
    #[error("Failed to bootstrap cluster: {0}")]
    BootstrapMisconfigured(String),
}

/// Timeouts the runner applies to Postgres operations.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunnerSettings {
    /// `pg_ctl` start/stop timeout.
    pub pg_ctl_timeout: Duration,
    /// Whether `pg_ctl_timeout` comes from the local configuration; when not, the
    /// dynamic config's `postgresql.pg_ctl_timeout` replaces it at run time.
    pub pg_ctl_timeout_is_local: bool,
    /// Time allowed for a promotion.
    pub promote_timeout: Duration,
    /// Time a peer probe may take.
    pub probe_timeout: Duration,
    /// Delete the data directory when pg_rewind fails, so the node re-clones.
    pub remove_data_directory_on_rewind_failure: bool,
    /// The local `postgresql.use_pg_rewind`, which wins over the dynamic one.
    pub local_use_pg_rewind: Option<bool>,
    /// Whether a diverged member may be rewound: the local setting, else the
    /// dynamic config's `postgresql.use_pg_rewind`. Filled in by the runner.
    pub use_pg_rewind: bool,
    /// Delete the data directory when the timelines diverged and pg_rewind is not
    /// possible, so the node re-clones (never for a standby leader).
    pub remove_data_directory_on_diverged_timelines: bool,
    /// How long a primary's stop may take before it is made immediate: the dynamic
    /// `primary_stop_timeout` in synchronous mode (`None`: `pg_ctl_timeout`, no
    /// escalation). Filled in by the runner from the cluster's config.
    pub primary_stop_timeout: Option<Duration>,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        RunnerSettings {
            pg_ctl_timeout: Duration::from_secs(60),
            pg_ctl_timeout_is_local: false,
            promote_timeout: Duration::from_secs(60),
            probe_timeout: Duration::from_secs(2),
            remove_data_directory_on_rewind_failure: false,
            local_use_pg_rewind: None,
            use_pg_rewind: false,
            remove_data_directory_on_diverged_timelines: false,
            primary_stop_timeout: None,
        }
    }
}

/// What the runner publishes after every cycle (REST API, metrics). More fields may
/// come: read them, do not build it.
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct NodeSnapshot {
    /// The node's memory after the last decision.
    pub state: LocalState,
    /// Last Postgres observation.
    pub pg: Option<PgObservation>,
    /// Last successfully read cluster view.
    pub cluster: Option<Cluster>,
    /// Background action in progress.
    pub busy: Option<Busy>,
    /// When the last cycle ended.
    pub cycle_at: MonoTime,
    /// Cycles run so far.
    pub cycles: u64,
    /// A required watchdog does not work (reported as `watchdog_failed`).
    pub watchdog_failed: bool,
}

impl NodeSnapshot {
    /// Whether this node holds the leader lease at `now` by its own clock.
    pub fn holds_lease(&self, now: MonoTime) -> bool {
        self.state.holds_lease(now)
    }
}

/// Why an operator request was not carried out; shown to the operator as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    /// Another request is waiting or running.
    #[error("another request is already in progress")]
    Busy,
    /// The decision refused it, for the reason given.
    #[error("{0}")]
    Refused(String),
    /// The action it started failed.
    #[error("{0}")]
    Failed(PgError),
    /// The action it started was cancelled before it finished.
    #[error("cancelled")]
    Cancelled,
    /// The action it started ended without an outcome (its task panicked).
    #[error("background action ended abnormally: {0}")]
    Aborted(String),
}

/// The trait objects a runner drives.
#[derive(Clone)]
pub struct Components {
    /// The DCS backend.
    pub dcs: Arc<dyn Dcs>,
    /// The local Postgres.
    pub pg: Arc<dyn Postgres>,
    /// The write fence / watchdog.
    pub fence: Arc<dyn Watchdog>,
    /// Time.
    pub clock: Arc<dyn Clock>,
    /// Peer status probes.
    pub peers: Arc<dyn PeerProbe>,
}

/// Drives the decision function for one node.
pub struct Runner {
    cfg: NodeConfig,
    parts: Components,
    settings: RunnerSettings,
    state: LocalState,
    job: Option<BackgroundJob>,
    job_done: Arc<Notify>,
    wake: Arc<Notify>,
    shutdown: watch::Receiver<bool>,
    snapshot: Arc<watch::Sender<NodeSnapshot>>,
    /// Set by the running promotion job the moment Postgres left recovery; until the
    /// runner collects the job, a snapshot from an older observation still shows the
    /// server as writable.
    promoted_writable: Arc<std::sync::atomic::AtomicBool>,
    events: Option<tokio::sync::mpsc::UnboundedSender<RunnerEvent>>,
    last_cluster: Option<Cluster>,
    timing: DcsTiming,
    cycles: u64,
    requests: RequestSlot,
    reconfig: Arc<Mutex<Option<NodeConfig>>>,
    /// Answered when the running job ends (a restart's outcome).
    job_reply: Option<oneshot::Sender<Result<(), RequestError>>>,
    failsafe: Arc<failsafe::FailsafeGate>,
    member_fields: MemberFields,
    /// The cluster-wide Postgres parameters last handed to the driver.
    applied_parameters: Option<serde_json::Map<String, serde_json::Value>>,
    /// Set when the node cannot go on: the run loop ends with it.
    fatal: Option<Fatal>,
    /// The member record last published, rewritten as `stopped` on shutdown.
    last_member: Option<crate::model::MemberData>,
    /// The dynamic `pg_hba`, `pg_ident` and `recovery_conf` last handed to the driver.
    applied_files: Option<DynamicPostgresql>,
    /// Set by a promotion job whose pre-promote check failed (it released the lock).
    pre_promote_refused: Arc<std::sync::atomic::AtomicBool>,
    /// After a failed pre-promote check the node stays out of the leader race until
    /// then (one ttl, as Patroni).
    no_race_until: Option<MonoTime>,
    /// The leader key as the latest successful read showed it; background jobs check
    /// their lease token against it before a writable-making step.
    leader_key: Arc<watch::Sender<Option<LeaderKeySeen>>>,
    /// When my latest confirmed acquire or renewal was sent.
    renewed_at: Option<MonoTime>,
    /// The latest `CHECKPOINT` the handle reported.
    checkpoints: CheckpointRecord,
}

impl Runner {
    /// A runner and the handle to control it.
    pub fn new(
        cfg: NodeConfig,
        parts: Components,
        settings: RunnerSettings,
    ) -> (Runner, RunnerHandle) {
        let wake = Arc::new(Notify::new());
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (snap_tx, snap_rx) = watch::channel(NodeSnapshot::default());
        let timing = cfg.bootstrap_config.timing();
        let failsafe = Arc::new(failsafe::FailsafeGate::default());
        parts.dcs.set_timing(timing);
        let requests = RequestSlot::default();
        let reconfig = Arc::new(Mutex::new(None));
        let member_fields = MemberFields::default();
        let checkpoints = CheckpointRecord::default();
        parts.fence.timing_changed(timing.ttl, timing.loop_wait);
        let runner = Runner {
            cfg,
            parts,
            settings,
            state: LocalState::default(),
            job: None,
            job_done: Arc::new(Notify::new()),
            wake: wake.clone(),
            shutdown: shutdown_rx,
            snapshot: Arc::new(snap_tx),
            promoted_writable: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            events: None,
            last_cluster: None,
            timing,
            cycles: 0,
            requests: requests.clone(),
            reconfig: reconfig.clone(),
            job_reply: None,
            failsafe: failsafe.clone(),
            member_fields: member_fields.clone(),
            applied_parameters: None,
            fatal: None,
            last_member: None,
            applied_files: None,
            pre_promote_refused: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            no_race_until: None,
            leader_key: Arc::new(watch::channel(None).0),
            renewed_at: None,
            checkpoints: checkpoints.clone(),
        };
        let handle = RunnerHandle {
            wake,
            shutdown: shutdown_tx,
            snapshot: snap_rx,
            requests,
            reconfig,
            failsafe,
            member_fields,
            checkpoints,
        };
        (runner, handle)
    }

    /// Sends [`RunnerEvent`]s to `tx` (for callbacks).
    pub fn with_events(mut self, tx: tokio::sync::mpsc::UnboundedSender<RunnerEvent>) -> Self {
        self.events = Some(tx);
        self
    }

    /// Records accepted `POST /failsafe` calls in `path` and restores one recorded by
    /// an earlier run: a restarted agent then knows whether it promised a leader not
    /// to race, instead of sitting out a ttl after every start.
    pub fn with_failsafe_record(mut self, path: std::path::PathBuf) -> Self {
        self.failsafe.keep_record_in(path, self.parts.clock.now());
        self.cfg.failsafe_record_durable = self.failsafe.is_durable();
        self
    }

    /// Runs until shut down through the handle (`Ok`), or until the node cannot go on
    /// without an operator (`Err`, already logged); Postgres is stopped either way
    /// (unless paused).
    pub async fn run(mut self) -> Result<(), Fatal> {
        let mut changes = self.parts.dcs.subscribe();
        let mut next = self.parts.clock.now();
        loop {
            if *self.shutdown.borrow() {
                break;
            }
            let now = self.parts.clock.now();
            if next > now {
                let sleep = tokio::time::sleep(next.since(now));
                tokio::select! {
                    biased;
                    _ = self.shutdown.changed() => {}
                    _ = self.job_done.notified() => {}
                    _ = self.wake.notified() => {}
                    _ = changes.changed() => {}
                    _ = sleep => {}
                }
                if *self.shutdown.borrow() {
                    break;
                }
            }
            let started = self.parts.clock.now();
            let wake_at = self.cycle().await;
            if self.fatal.is_some() {
                break;
            }
            let loop_wait = self.timing.loop_wait;
            next = started.plus(loop_wait);
            if let Some(w) = wake_at {
                next = next.min(w);
            }
        }
        self.shut_down_node().await;
        self.fatal.take().map_or(Ok(()), Err)
    }

    /// One HA cycle; returns when the decision wants to run again at the latest.
    async fn cycle(&mut self) -> Option<MonoTime> {
        self.cycles += 1;
        let reconfigured = self
            .reconfig
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(mut cfg) = reconfigured {
            cfg.name = self.cfg.name.clone();
            tracing::info!(node = %self.cfg.name, "settings reloaded; tags: {}", serde_json::to_string(&cfg.tags).unwrap_or_default());
            self.cfg = cfg;
        }
        if self.job.as_ref().is_some_and(BackgroundJob::is_finished) {
            if let Some(job) = self.job.take() {
                let kind = job.kind;
                let result = job.finish().await;
                if kind == Busy::Promote && result.is_ok() {
                    self.publish_promoted();
                }
                if let (Busy::Bootstrap, Err(PgError::Misconfigured(why))) = (kind, &result) {
                    let fatal = Fatal::BootstrapMisconfigured(why.to_string());
                    tracing::error!(node = %self.cfg.name, "{fatal}; not retrying: initialize is released and the data directory emptied, the agent stops");
                    self.fatal = Some(fatal);
                    return None;
                }
                if let Some(reply) = self.job_reply.take() {
                    let _ = reply.send(result.map_err(RequestError::Failed));
                }
            }
        }
        if self
            .pre_promote_refused
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            // The job released the leader key: this node is no leader any more, and
            // keeps out of the next races for a ttl so another member may take over.
            self.state.lease_until = None;
            self.no_race_until = Some(self.parts.clock.now().plus(self.timing.ttl));
        }
        let request = self.pending_request();
        let read_at = self.parts.clock.now();
        let retry = self.timing.retry_timeout;
        let (cluster, pg) = tokio::join!(
            with_deadline(retry, self.parts.dcs.get_cluster()),
            self.parts.pg.observe()
        );
        if let Ok(c) = &cluster {
            let mine_at = c.leader.as_ref().filter(|l| l.name == self.cfg.name);
            self.leader_key.send_replace(Some(LeaderKeySeen {
                read_at,
                mine_at: mine_at.map(|l| l.version),
                renewed_at: self.renewed_at,
            }));
            self.apply_dynamic_config(c);
            self.apply_dynamic_parameters(c, pg.is_alive()).await;
            self.apply_dynamic_files(c).await;
            self.last_cluster = Some(c.clone());
        }
        let obs = Observation {
            cluster,
            read_at,
            pg,
            busy: self.job.as_ref().map(|j| j.kind),
            outcomes: Vec::new(),
            executed: Vec::new(),
            wall_millis: self.parts.clock.wall_millis(),
            request,
            watchdog_failed: !self.parts.fence.usable(),
            failsafe_leader: self.failsafe.called_by(read_at),
            failsafe_slots: self.failsafe.leader_slots(read_at),
        };
        let mut cycle = Cycle::new(obs);
        let end = loop {
            let env = Env {
                now: self.parts.clock.now(),
                retry_timeout: retry,
                leader_key: *self.leader_key.borrow(),
                watchdog_usable: self.parts.fence.usable(),
                failsafe: &self.failsafe,
                ignored: &[],
            };
            match cycle.next(&self.cfg, &mut self.state, &env) {
                Step::Decided {
                    message_changed, ..
                } => {
                    if message_changed {
                        tracing::info!(node = %self.cfg.name, "{}", self.state.message);
                    }
                    // A change of role or leadership is published before this step's
                    // actions run: `/primary` answers from the snapshot, and a freshly
                    // promoted leader must not wait for its renewal, history and member
                    // record to be written (the lease it counts on is the one its last
                    // renewal confirmed).
                    if self.role_changed(&cycle.observation().pg) {
                        self.publish(cycle.observation());
                    }
                }
                Step::Execute(action) => {
                    let outcome = self.execute(action, cycle.observation()).await;
                    if let Some(sent_at) = cycle.complete(outcome) {
                        self.renewed_at = Some(sent_at);
                    }
                }
                Step::Refused { action, why } => {
                    tracing::warn!(node = %self.cfg.name, "refused {action}: {why}; re-reading the cluster");
                }
                Step::Done(end) => break end,
            }
        };
        if let Some(v) = end.verdict.clone() {
            self.answer_request(v);
        }
        self.publish(cycle.observation());
        if end.again_now() {
            Some(self.parts.clock.now())
        } else {
            end.wake_at
        }
    }

    /// Whether the published snapshot differs from the current state in what the
    /// role health checks read: leadership, and Postgres's process and recovery state.
    fn role_changed(&self, pg: &PgObservation) -> bool {
        let published = self.snapshot.borrow();
        let now = self.parts.clock.now();
        published.holds_lease(now) != self.state.holds_lease(now)
            || published
                .pg
                .as_ref()
                .is_none_or(|p| p.process != pg.process || p.in_recovery != pg.in_recovery)
    }

    /// A promotion succeeds only once Postgres answered that it left recovery (it
    /// accepts writes from then on): that is published at once, so `/primary` does
    /// not wait for this cycle's own observation, which replaces it moments later.
    fn publish_promoted(&self) {
        let state = self.state.clone();
        self.snapshot.send_if_modified(|snap| {
            if !mark_writable(snap) {
                return false;
            }
            snap.busy = None;
            snap.state = state;
            true
        });
    }

    /// What the promotion job calls the moment Postgres answered that it left
    /// recovery: `/primary` answers from then on (given the lease), without waiting
    /// for the job's remaining steps or for the runner to collect it.
    fn writable_signal(&self) -> jobs::WritableSignal {
        self.promoted_writable
            .store(false, std::sync::atomic::Ordering::SeqCst);
        let snapshot = self.snapshot.clone();
        let flag = self.promoted_writable.clone();
        Arc::new(move || {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            snapshot.send_if_modified(mark_writable);
        })
    }

    /// Publishes the node's state after (part of) a cycle.
    fn publish(&self, obs: &Observation) {
        let busy = self.job.as_ref().map(|j| j.kind);
        let mut snap = NodeSnapshot {
            state: self.state.clone(),
            pg: Some(obs.pg.clone()),
            cluster: self.last_cluster.clone(),
            busy,
            cycle_at: self.parts.clock.now(),
            cycles: self.cycles,
            watchdog_failed: obs.watchdog_failed,
        };
        let flag = &self.promoted_writable;
        // Read under the channel's lock: a promotion job that reports the end of
        // recovery while this observation (made before it) is published is not undone.
        self.snapshot.send_modify(|published| {
            if busy == Some(Busy::Promote) && flag.load(std::sync::atomic::Ordering::SeqCst) {
                mark_writable(&mut snap);
            }
            *published = snap;
        });
    }

    /// The operator request to put before the decision, if one is waiting and its
    /// submitter still listens.
    fn pending_request(&mut self) -> Option<OperatorRequest> {
        let mut slot = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|p| p.reply.is_closed()) {
            *slot = None;
        }
        slot.as_ref().map(|p| p.request)
    }

    /// Delivers the decision's verdict. A started request is only answered once its
    /// job really runs (the guard may have refused the action: then it waits for the
    /// next cycle); a restart is answered when its job ends.
    fn answer_request(&mut self, verdict: RequestVerdict) {
        let mut slot = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        let Some(pending) = slot.take() else { return };
        match verdict {
            RequestVerdict::Refused(why) => {
                let _ = pending.reply.send(Err(RequestError::Refused(why)));
            }
            RequestVerdict::Started => {
                let started = match pending.request {
                    OperatorRequest::Restart => Busy::Restart,
                    OperatorRequest::Reinitialize { .. } => Busy::Reinitialize,
                };
                if self.job.as_ref().map(|j| j.kind) != Some(started) {
                    *slot = Some(pending);
                } else if started == Busy::Restart {
                    self.job_reply = Some(pending.reply);
                } else {
                    let _ = pending.reply.send(Ok(()));
                }
            }
        }
    }

    /// Timing from the dynamic config reaches the backend when it changes.
    fn apply_dynamic_config(&mut self, c: &Cluster) {
        if let Some(cfg) = &c.config {
            if cfg.value.timing_problems().is_empty() {
                let t = cfg.value.timing();
                if t != self.timing {
                    if let Some(why) = cfg.value.timing_adjustment() {
                        tracing::warn!("dynamic configuration: {why}");
                    }
                    self.timing = t;
                    self.parts.dcs.set_timing(t);
                    self.parts.fence.timing_changed(t.ttl, t.loop_wait);
                }
            }
        }
    }

    /// `postgresql.parameters` of the dynamic config reach Postgres when they change
    /// (a reload; postmaster settings then show as pending restart). Permanent logical
    /// slots force `hot_standby_feedback` on, so the replicas' copies stay usable.
    async fn apply_dynamic_parameters(&mut self, c: &Cluster, pg_alive: bool) {
        let Some(cfg) = &c.config else { return };
        let mut params = cfg
            .value
            .extra
            .get("postgresql")
            .and_then(|p| p.get("parameters"))
            .and_then(serde_json::Value::as_object)
            .cloned()
            .unwrap_or_default();
        if crate::model::permanent_slots::has_logical_slots(&cfg.value) {
            params.insert("hot_standby_feedback".into(), "on".into());
        }
        if self.applied_parameters.as_ref() == Some(&params) {
            return;
        }
        let first = self.applied_parameters.is_none();
        match self.parts.pg.apply_dynamic_parameters(&params).await {
            Ok(()) => {
                self.applied_parameters = Some(params);
                if pg_alive && !first {
                    self.emit(RunnerEvent::Reloaded);
                }
            }
            Err(e) => {
                tracing::warn!(node = %self.cfg.name, "applying the dynamic parameters failed: {e}")
            }
        }
    }

    /// `postgresql.pg_hba`, `pg_ident` and `recovery_conf` of the dynamic config
    /// reach Postgres when they change (rewritten files and a reload).
    async fn apply_dynamic_files(&mut self, c: &Cluster) {
        let Some(cfg) = &c.config else { return };
        let wanted = DynamicPostgresql::from_section(cfg.value.extra.get("postgresql"));
        if self.applied_files.as_ref() == Some(&wanted) {
            return;
        }
        match self.parts.pg.apply_dynamic_files(&wanted).await {
            Ok(reloaded) => {
                self.applied_files = Some(wanted);
                if reloaded {
                    self.emit(RunnerEvent::Reloaded);
                }
            }
            Err(e) => {
                tracing::warn!(node = %self.cfg.name, "applying the dynamic pg_hba, pg_ident and recovery_conf failed: {e}")
            }
        }
    }

    /// The settings in force: the configured ones, with the dynamic config's
    /// `pg_ctl_timeout` and `use_pg_rewind` (unless set locally) and
    /// `primary_stop_timeout`.
    fn current_settings(&self) -> RunnerSettings {
        let dynamic_pg_ctl = self
            .state
            .config
            .as_ref()
            .filter(|_| !self.settings.pg_ctl_timeout_is_local)
            .and_then(|c| c.extra.get("postgresql"))
            .and_then(|p| p.get("pg_ctl_timeout"))
            .and_then(|v| match v {
                serde_json::Value::String(s) => s.trim().parse::<f64>().ok(),
                v => v.as_f64(),
            })
            .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
            .map(|d| d.max(Duration::from_secs(1)));
        let dynamic_rewind = self
            .state
            .config
            .as_ref()
            .unwrap_or(&self.cfg.bootstrap_config)
            .use_pg_rewind();
        RunnerSettings {
            use_pg_rewind: self.settings.local_use_pg_rewind.unwrap_or(dynamic_rewind),
            pg_ctl_timeout: dynamic_pg_ctl.unwrap_or(self.settings.pg_ctl_timeout),
            promote_timeout: dynamic_pg_ctl.unwrap_or(self.settings.promote_timeout),
            primary_stop_timeout: self.primary_stop_timeout(),
            ..self.settings
        }
    }

    /// The dynamic `primary_stop_timeout` when it applies: set and in synchronous mode.
    fn primary_stop_timeout(&self) -> Option<Duration> {
        let c = self.state.config.as_ref()?;
        let sync = !matches!(c.synchronous_mode, crate::model::SynchronousMode::Off);
        (sync && c.primary_stop_timeout > 0.0)
            .then(|| Duration::try_from_secs_f64(c.primary_stop_timeout).ok())
            .flatten()
    }

    fn emit(&self, e: RunnerEvent) {
        if let Some(tx) = &self.events {
            let _ = tx.send(e);
        }
    }
}

/// Marks a running server of `snap` as out of recovery (a promotion job saw it
/// leave); whether it changed anything.
fn mark_writable(snap: &mut NodeSnapshot) -> bool {
    match snap
        .pg
        .as_mut()
        .filter(|p| p.process == crate::postgres::PgProcess::Running)
    {
        Some(pg) => {
            pg.in_recovery = Some(false);
            true
        }
        None => false,
    }
}
