//! Long actions run in the background so the HA loop keeps renewing the lease.

use super::{Components, RequestError, RunnerEvent, RunnerSettings};
use crate::clock::MonoTime;
use crate::decision::{Action, Busy, DemoteMode, LeaseToken};
use crate::model::{Failover, Lsn};
use crate::postgres::{PgError, Postgres, StartRole, StopMode, StopOutcome, Upstream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc::UnboundedSender, Notify};
use tokio::task::JoinHandle;

/// How long after a failed background action the HA loop is woken for its next
/// cycle (a success wakes it at once).
const FAILED_ACTION_BACKOFF: Duration = Duration::from_secs(1);

/// What a job checks its lease token against before a writable-making step: the
/// read its action was decided on, and the runner's latest read of the leader key.
pub(super) struct Fencing {
    /// When the read behind the decision was sent.
    pub(super) decided_on: MonoTime,
    /// The leader key as the runner's latest successful read showed it.
    pub(super) seen: tokio::sync::watch::Receiver<Option<super::guard::LeaderKeySeen>>,
}

impl Fencing {
    /// `Err` (saying why) when `token` no longer justifies making Postgres writable.
    fn check(&self, token: &LeaseToken, now: MonoTime, what: &str) -> Result<(), PgError> {
        let seen = *self.seen.borrow();
        match super::guard::refuse_writable(token, now, self.decided_on, seen.as_ref()) {
            None => Ok(()),
            Some(why) => Err(PgError::Invalid(format!("{what} refused: {why}").into())),
        }
    }
}

/// What a promotion job calls the moment Postgres accepts writes.
pub(super) type WritableSignal = Arc<dyn Fn() + Send + Sync>;

/// What a job shares with the runner besides its result.
pub(super) struct JobHooks {
    /// Set when the pre-promote check failed (the job released the lock).
    pub(super) refused: Arc<AtomicBool>,
    /// Called as soon as Postgres left recovery, before the promotion's remaining
    /// steps: the node reports itself primary from then on.
    pub(super) writable: WritableSignal,
    /// The latest `CHECKPOINT` reported to the runner: a switchover's demotion right
    /// after one does not run its own.
    pub(super) checkpoints: super::CheckpointRecord,
}

/// A running background action.
pub(super) struct BackgroundJob {
    pub(super) kind: Busy,
    handle: JoinHandle<Result<(), PgError>>,
}

impl BackgroundJob {
    /// Starts `action` in the background; `None` if it is not a background action.
    pub(super) fn spawn(
        action: Action,
        parts: Components,
        settings: RunnerSettings,
        fencing: Fencing,
        done: Arc<Notify>,
        events: Option<UnboundedSender<RunnerEvent>>,
        hooks: JobHooks,
    ) -> Option<BackgroundJob> {
        let kind = action.busy()?;
        let handle = tokio::spawn(async move {
            let name = format!("{action:?}");
            let emit = |e: RunnerEvent| {
                if let Some(tx) = &events {
                    let _ = tx.send(e);
                }
            };
            let result = run(action, &parts, settings, &fencing, &emit, &hooks).await;
            match &result {
                Ok(()) => done.notify_one(),
                Err(e) => {
                    tracing::warn!("background action failed: {e}");
                    // The next cycle may well decide the same action again (a bootstrap
                    // method that fails at once): retry after a pause, not in a tight
                    // loop. Any other wake-up (DCS event, loop_wait) still comes first.
                    tokio::spawn(async move {
                        tokio::time::sleep(FAILED_ACTION_BACKOFF).await;
                        done.notify_one();
                    });
                }
            }
            tracing::debug!("{name}: finished");
            result
        });
        Some(BackgroundJob { kind, handle })
    }

    /// Whether it has finished.
    pub(super) fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Stops it where it is (child processes it started are killed with it) and waits
    /// until it is gone.
    pub(super) async fn cancel(self) -> Result<(), RequestError> {
        self.handle.abort();
        match self.handle.await {
            Ok(result) => result.map_err(RequestError::Failed),
            Err(e) if e.is_cancelled() => Err(RequestError::Cancelled),
            Err(e) => Err(RequestError::Aborted(e.to_string())),
        }
    }

    /// Waits for it to finish; its outcome.
    pub(super) async fn finish(self) -> Result<(), PgError> {
        match self.handle.await {
            Ok(result) => result,
            Err(e) => Err(PgError::Invalid(
                format!("background action ended abnormally: {e}").into(),
            )),
        }
    }
}

async fn run(
    action: Action,
    parts: &Components,
    settings: RunnerSettings,
    fencing: &Fencing,
    emit: &(dyn Fn(RunnerEvent) + Send + Sync),
    hooks: &JobHooks,
) -> Result<(), PgError> {
    let pg = &parts.pg;
    let t = settings.pg_ctl_timeout;
    match action {
        Action::Bootstrap => {
            if let Err(e) = pg.bootstrap().await {
                // Let another node (or a later attempt) bootstrap.
                if let Err(d) = parts.dcs.cancel_initialization().await {
                    tracing::error!("bootstrap failed and initialize could not be cancelled: {d}");
                }
                return Err(e);
            }
            emit(RunnerEvent::Started("primary"));
            Ok(())
        }
        Action::CloneReplica { source, follow } => {
            crate::postgres::Postgres::clone_from(pg.as_ref(), &source).await?;
            pg.start(&StartRole::Replica { upstream: follow }, t)
                .await?;
            emit(RunnerEvent::Started("replica"));
            Ok(())
        }
        Action::RestoreReplica => {
            pg.create_replica_without_leader().await?;
            pg.start(&StartRole::Replica { upstream: None }, t).await?;
            emit(RunnerEvent::Started("replica"));
            Ok(())
        }
        Action::StartPrimary { token } => {
            // The lease may have run out (or been lost) while the job was queued.
            fencing.check(&token, parts.clock.now(), "starting as primary")?;
            pg.start(&StartRole::Primary, t).await?;
            emit(RunnerEvent::Started("primary"));
            Ok(())
        }
        Action::StartReplica { upstream, rewind } => {
            // An archive-only standby cluster source has no server to compare with.
            let source = upstream.as_ref().filter(|u| u.streams());
            let standby_leader = upstream
                .as_ref()
                .is_some_and(|u| u.name == crate::decision::standby::REMOTE_NAME);
            // Patroni checks for divergence only when something can be done about it.
            let may_wipe = settings.remove_data_directory_on_diverged_timelines && !standby_leader;
            let check = rewind && (settings.use_pg_rewind || may_wipe);
            if let (true, Some(source)) = (check, source) {
                // A leader that cannot be asked now does not keep the replica down (as in
                // Patroni): it starts, and a replica that then cannot stream is checked
                // again by the decision.
                let diverged = match pg.needs_rewind(source).await {
                    Ok(d) => d,
                    Err(e) => {
                        tracing::warn!(
                            "could not check for divergence from {}: {e}; starting as a replica anyway",
                            source.name
                        );
                        false
                    }
                };
                if diverged {
                    let can_rewind = settings.use_pg_rewind && pg.can_rewind().await;
                    if !can_rewind && may_wipe {
                        tracing::warn!(
                            "timelines diverged and pg_rewind is not possible; removing the data directory to re-clone (remove_data_directory_on_diverged_timelines)"
                        );
                        pg.remove_data_directory().await?;
                        return Ok(());
                    }
                    if !settings.use_pg_rewind {
                        tracing::warn!(
                            source = %source.name,
                            "timelines diverged and use_pg_rewind is off: starting as a replica anyway; it will not stream until reinitialized (or set use_pg_rewind or remove_data_directory_on_diverged_timelines)"
                        );
                    } else if let Err(e) = pg.rewind(source).await {
                        // Either setting re-clones after a failed pg_rewind, as in Patroni.
                        if settings.remove_data_directory_on_rewind_failure || may_wipe {
                            tracing::warn!(
                                "pg_rewind failed ({e}); removing the data directory to re-clone"
                            );
                            pg.remove_data_directory().await?;
                            return Ok(());
                        }
                        return Err(e);
                    }
                } else if !standby_leader {
                    // Not diverged, but it may still never catch up: the WAL it needs
                    // can be gone on the source (it was down, or rewound, while the
                    // source recycled it). Starting it would only fail to stream.
                    match pg.wal_gone_on(source).await {
                        Ok(None) => {}
                        Ok(Some(gone)) => {
                            if settings.remove_data_directory_on_rewind_failure || may_wipe {
                                tracing::warn!(
                                    "{gone}: removing the data directory to re-clone from {} \
                                     (remove_data_directory_on_rewind_failure)",
                                    source.name
                                );
                                pg.remove_data_directory().await?;
                                return Ok(());
                            }
                            tracing::error!(
                                "{gone}: this replica cannot catch up; reinitialize it \
                                 (fullautoctl reinit), or set \
                                 remove_data_directory_on_rewind_failure to re-clone it \
                                 automatically"
                            );
                        }
                        Err(e) => {
                            tracing::warn!(
                                "could not check whether {} still holds the WAL this member needs: {e}",
                                source.name
                            );
                        }
                    }
                }
            }
            pg.start(&StartRole::Replica { upstream }, t).await?;
            emit(RunnerEvent::Started("replica"));
            if standby_leader {
                emit(RunnerEvent::RoleChanged("standby_leader"));
            }
            Ok(())
        }
        Action::Promote { token } => {
            fencing.check(&token, parts.clock.now(), "promotion")?;
            if let Err(e) = pg.pre_promote().await {
                // Patroni's rule: no promotion, and the leader key goes so another
                // member may take over.
                tracing::warn!("promotion cancelled: {e}; releasing the leader key voluntarily");
                hooks.refused.store(true, Ordering::SeqCst);
                if let Err(d) = parts.dcs.release_leader().await {
                    tracing::warn!(
                        "releasing the leader key after the pre_promote failure failed: {d}"
                    );
                }
                return Err(e);
            }
            // The script may have taken long.
            fencing.check(&token, parts.clock.now(), "promotion")?;
            pg.promote_until_writable(settings.promote_timeout).await?;
            (hooks.writable)();
            emit(RunnerEvent::RoleChanged("primary"));
            pg.finish_promotion().await?;
            // pg_control names the new timeline only after a checkpoint, and pg_rewind
            // reads it there: members rewinding from us (Patroni's wait for it) need one
            // now rather than at the next timed checkpoint. Off the promotion's path.
            let after = Arc::clone(pg);
            tokio::spawn(async move {
                if let Err(e) = after.checkpoint().await {
                    tracing::warn!("checkpoint after the promotion failed: {e}");
                }
            });
            Ok(())
        }
        Action::Demote { mode, .. } => {
            stop_primary(
                pg.as_ref(),
                mode.stop_mode(),
                t,
                settings.primary_stop_timeout,
            )
            .await?;
            emit(RunnerEvent::Stopped);
            if mode == DemoteMode::DemoteCluster {
                if let Err(e) = pg.archive_shutdown_checkpoint().await {
                    tracing::error!("Failed to archive WAL file with the shutdown checkpoint: {e}");
                }
            }
            if mode.releases_lease() {
                if let Err(e) = parts.dcs.release_leader().await {
                    tracing::warn!("release after demote failed: {e}");
                }
            }
            emit(RunnerEvent::RoleChanged("demoted"));
            if mode == DemoteMode::Offline {
                // Without the DCS nobody can be followed: serve read-only, as
                // Patroni does; a rewind check follows once a leader is known.
                pg.start(&StartRole::Replica { upstream: None }, t).await?;
                emit(RunnerEvent::Started("replica"));
            }
            // A former primary may have diverged: the next cycle starts (or
            // restarts) it as a replica, with a rewind check, once the new leader
            // is known.
            Ok(())
        }
        Action::SwitchoverTo { candidate, token } => {
            let Some(upstream) = crate::decision::upstream_of(&candidate) else {
                return Err(PgError::Invalid(
                    format!("{} has no conn_url", candidate.name).into(),
                ));
            };
            super::before_stop::prepare_switchover_stop(parts, &hooks.checkpoints).await;
            let stopped = stop_primary(
                pg.as_ref(),
                StopMode::Fast,
                t,
                settings.primary_stop_timeout,
            )
            .await?;
            emit(RunnerEvent::Stopped);
            let confirmed = match stopped.checkpoint_lsn {
                Some(checkpoint) => {
                    candidate_has_wal_past(parts, &upstream, checkpoint, token.valid_until).await
                }
                None => false,
            };
            if confirmed {
                if let Err(e) = parts.dcs.release_leader().await {
                    tracing::warn!("release after switchover failed: {e}");
                }
                emit(RunnerEvent::RoleChanged("demoted"));
                pg.start(
                    &StartRole::Replica {
                        upstream: Some(upstream),
                    },
                    t,
                )
                .await?;
                emit(RunnerEvent::Started("replica"));
                emit(RunnerEvent::RoleChanged("replica"));
                return Ok(());
            }
            tracing::warn!(
                candidate = %candidate.name,
                "switchover aborted: the candidate did not confirm WAL up to the shutdown checkpoint"
            );
            if let Err(e) = parts.dcs.set_failover(&Failover::default(), None).await {
                tracing::warn!("could not withdraw the switchover request: {e}");
            }
            if fencing
                .check(&token, parts.clock.now(), "restart as primary")
                .is_ok()
            {
                pg.start(&StartRole::Primary, t).await?;
                emit(RunnerEvent::Started("primary"));
            }
            Ok(())
        }
        Action::Restart { token, upstream } => {
            // Only `on_restart` fires, as in Patroni (no `on_stop`/`on_start`).
            pg.stop(StopMode::Fast, t).await?;
            let role = match token {
                Some(token) => {
                    // The lease may have run out (or been lost) during the stop: the
                    // next cycle's crash-restart rule decides then, under a fresh lease.
                    fencing.check(&token, parts.clock.now(), "restart as primary")?;
                    pg.start(&StartRole::Primary, t).await?;
                    "primary"
                }
                None => {
                    pg.start(&StartRole::Replica { upstream }, t).await?;
                    "replica"
                }
            };
            emit(RunnerEvent::Restarted(role));
            Ok(())
        }
        Action::Reinitialize { source, follow } => {
            pg.stop(StopMode::Immediate, t).await?;
            emit(RunnerEvent::Stopped);
            pg.remove_data_directory().await?;
            crate::postgres::Postgres::clone_from(pg.as_ref(), &source).await?;
            pg.start(&StartRole::Replica { upstream: follow }, t)
                .await?;
            emit(RunnerEvent::Started("replica"));
            Ok(())
        }
        Action::CopyLogicalSlots {
            source,
            names,
            follow,
        } => {
            // Read first: if the leader cannot give the files, Postgres keeps running.
            let files = pg.read_logical_slot_states(&source, &names).await?;
            pg.stop(StopMode::Fast, t).await?;
            let installed = pg.install_logical_slot_states(&files).await;
            pg.start(&StartRole::Replica { upstream: follow }, t)
                .await?;
            emit(RunnerEvent::Restarted("replica"));
            installed
        }
        // `spawn` only runs actions whose `busy()` is set; one reaching here is a bug
        // that must fail loudly rather than succeed as a no-op.
        other @ (Action::AcquireLease
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
        | Action::ManageSlots(_)) => Err(PgError::Invalid(
            format!("{other:?} is not a background action").into(),
        )),
    }
}

/// Stops a primary: with a `primary_stop_timeout` (synchronous mode), a stop that
/// has not finished by then is made immediate, as Patroni does; without one it gets
/// `pg_ctl_timeout`.
pub(super) async fn stop_primary(
    pg: &dyn Postgres,
    mode: StopMode,
    pg_ctl_timeout: Duration,
    primary_stop_timeout: Option<Duration>,
) -> Result<StopOutcome, PgError> {
    let Some(limit) = primary_stop_timeout.filter(|_| mode != StopMode::Immediate) else {
        return pg.stop(mode, pg_ctl_timeout).await;
    };
    match pg.stop(mode, limit).await {
        Ok(outcome) => Ok(outcome),
        Err(e) => {
            tracing::warn!(
                "postgres did not stop within primary_stop_timeout ({}s): {e}; stopping it immediately",
                limit.as_secs_f64()
            );
            pg.stop(StopMode::Immediate, pg_ctl_timeout).await
        }
    }
}

/// Waits (bounded by half the remaining lease, at most 5 s) until `candidate`'s
/// Postgres has received WAL beyond `checkpoint`, i.e. the old primary's shutdown
/// checkpoint and with it every acknowledged commit.
async fn candidate_has_wal_past(
    parts: &Components,
    candidate: &Upstream,
    checkpoint: Lsn,
    lease_end: MonoTime,
) -> bool {
    let now = parts.clock.now();
    let budget = (lease_end.since(now) / 2).min(Duration::from_secs(5));
    let deadline = now.plus(budget);
    loop {
        match parts.pg.received_lsn_of(candidate).await {
            Ok(Some(received)) if received > checkpoint => return true,
            Ok(_) => {}
            Err(e) => tracing::debug!("asking {} for its WAL position: {e}", candidate.name),
        }
        if parts.clock.now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests;
