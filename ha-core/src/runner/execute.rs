//! What each action does on the real world: DCS requests bounded by
//! `retry_timeout`, Postgres and fence calls, peer probes, and background jobs.

use super::jobs::{self, BackgroundJob};
use super::{failsafe, probe, RequestError, Runner, RunnerEvent};
use crate::dcs::DcsError;
use crate::decision::{Action, Observation, Outcome};
use crate::model::{Failover, Member};
use std::time::Duration;

impl Runner {
    /// Runs `action` (already past the cycle's checks); a query's outcome.
    pub(super) async fn execute(&mut self, action: Action, obs: &Observation) -> Option<Outcome> {
        let retry = self.timing.retry_timeout;
        let dcs = &self.parts.dcs;
        match action {
            Action::AcquireLease => {
                let sent_at = self.parts.clock.now();
                if self.no_race_until.is_some_and(|t| sent_at < t) {
                    tracing::info!(node = %self.cfg.name, "not taking part in the leader race: the pre_promote script failed less than a ttl ago");
                    return Some(Outcome::LeaseTaken);
                }
                Some(match with_deadline(retry, dcs.acquire_leader()).await {
                    Ok(true) => Outcome::LeaseAcquired { sent_at },
                    Ok(false) => Outcome::LeaseTaken,
                    Err(e) => Outcome::LeaseError(e),
                })
            }
            Action::RenewLease { status } => {
                let sent_at = self.parts.clock.now();
                let renewal = match &status {
                    Some(status) => {
                        with_deadline(retry, dcs.renew_leader_with_status(status)).await
                    }
                    None => with_deadline(retry, dcs.renew_leader()).await,
                };
                Some(match renewal {
                    Ok(true) => Outcome::LeaseRenewed { sent_at },
                    Ok(false) => Outcome::LeaseLost,
                    Err(e) => Outcome::LeaseError(e),
                })
            }
            Action::ReleaseLease => {
                log_dcs(
                    "release leader",
                    with_deadline(retry, dcs.release_leader()).await.map(|_| ()),
                );
                // A primary whose Postgres is down and could not be restarted gives up
                // its role with the lease: Patroni's `on_role_change` "demoted".
                if !obs.pg.is_alive() && obs.pg.was_primary() {
                    self.emit(RunnerEvent::RoleChanged("demoted"));
                }
                None
            }
            Action::ProbePeers { names, optional } => {
                let members: Vec<Member> = names
                    .iter()
                    .filter_map(|n| {
                        let from_view = obs.cluster.as_ref().ok().and_then(|c| c.member(n));
                        let from_old = self
                            .state
                            .last_leader_view
                            .as_ref()
                            .and_then(|c| c.member(n));
                        from_view.or(from_old).cloned()
                    })
                    .collect();
                let timeout = self.settings.probe_timeout;
                Some(Outcome::PeersProbed(
                    probe::probe_peers(self.parts.peers.clone(), members, &optional, timeout).await,
                ))
            }
            Action::ClaimInitialize => Some(match with_deadline(retry, dcs.initialize("")).await {
                Ok(true) => Outcome::InitializeWon,
                _ => Outcome::InitializeLost,
            }),
            Action::WriteInitialize { system_identifier } => {
                log_dcs(
                    "write initialize",
                    with_deadline(retry, dcs.set_initialize(&system_identifier)).await,
                );
                None
            }
            Action::CancelInitialize => {
                log_dcs(
                    "cancel initialize",
                    with_deadline(retry, dcs.cancel_initialization()).await,
                );
                None
            }
            Action::PublishMember(mut data) => {
                let fields = self
                    .member_fields
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone();
                data.extra.extend(fields);
                log_dcs(
                    "publish member",
                    with_deadline(retry, dcs.touch_member(&data)).await,
                );
                self.last_member = Some(data);
                None
            }
            Action::WriteConfig { config, expected } => {
                log_dcs(
                    "write config",
                    with_deadline(retry, dcs.set_config(&config, expected))
                        .await
                        .map(|_| ()),
                );
                None
            }
            Action::ClearFailover { expected } => {
                let r = with_deadline(
                    retry,
                    dcs.set_failover(&Failover::default(), Some(expected)),
                )
                .await;
                log_dcs("clear failover", r.map(|_| ()));
                None
            }
            Action::WriteSync { sync, expected } => {
                let ok = match with_deadline(retry, dcs.set_sync(&sync, expected)).await {
                    Ok(v) => v.is_some(),
                    Err(e) => {
                        tracing::warn!("write sync failed: {e}");
                        false
                    }
                };
                Some(Outcome::SyncWritten { ok })
            }
            Action::DeleteSync { expected } => {
                log_dcs(
                    "delete sync",
                    with_deadline(retry, dcs.delete_sync(Some(expected)))
                        .await
                        .map(|_| ()),
                );
                None
            }
            Action::SetSynchronousStandbyNames { value } => {
                match self
                    .parts
                    .pg
                    .set_synchronous_standby_names(value.as_deref())
                    .await
                {
                    Err(e) => {
                        tracing::warn!(node = %self.cfg.name, "setting synchronous_standby_names failed: {e}")
                    }
                    // A reload of a running server, as in Patroni (`on_reload`).
                    Ok(()) if obs.pg.is_alive() => self.emit(RunnerEvent::Reloaded),
                    Ok(()) => {}
                }
                None
            }
            Action::WriteStatus(status) => {
                log_dcs(
                    "write status",
                    with_deadline(retry, dcs.set_status(&status)).await,
                );
                None
            }
            Action::WriteFailsafe(topology) => {
                log_dcs(
                    "write failsafe",
                    with_deadline(retry, dcs.set_failsafe(&topology)).await,
                );
                None
            }
            Action::CheckFailsafe {
                members,
                ttl,
                slots,
            } => {
                let sent_at = self.parts.clock.now();
                let timeout = self.settings.probe_timeout;
                let peers = self.parts.peers.clone();
                let round = failsafe::Round {
                    members: &members,
                    ttl,
                    timeout,
                    sent_at,
                    slots: &slots,
                };
                Some(failsafe::call_members(&self.cfg, peers, round).await)
            }
            Action::WriteHistory(history) => {
                log_dcs(
                    "write history",
                    with_deadline(retry, dcs.set_history(&history)).await,
                );
                None
            }
            Action::ArmFence { deadline, watchdog } => {
                let armed = if watchdog {
                    self.parts.fence.arm_until(deadline).await
                } else {
                    self.parts.fence.arm_fence_only(deadline).await
                };
                if let Err(e) = armed {
                    tracing::error!(node = %self.cfg.name, "arming the write fence failed: {e}");
                }
                None
            }
            Action::DisarmFence => {
                if let Err(e) = self.parts.fence.disarm().await {
                    tracing::warn!(node = %self.cfg.name, "disarming the write fence failed: {e}");
                }
                None
            }
            Action::ManageSlots(changes) => {
                if let Err(e) = self.parts.pg.apply_slot_changes(&changes).await {
                    tracing::warn!(node = %self.cfg.name, "slot sync failed: {e}");
                }
                None
            }
            Action::Follow { upstream } => {
                match self.parts.pg.follow(upstream.as_ref()).await {
                    Err(e) => tracing::warn!(node = %self.cfg.name, "follow failed: {e}"),
                    // Only a standby leader streams from the standby cluster's remote.
                    Ok(_)
                        if upstream
                            .as_ref()
                            .is_some_and(|u| u.name == crate::decision::standby::REMOTE_NAME) =>
                    {
                        self.emit(RunnerEvent::RoleChanged("standby_leader"))
                    }
                    // Same role, new upstream: a reload (`on_reload`), as in Patroni.
                    Ok(_) if obs.pg.is_alive() => self.emit(RunnerEvent::Reloaded),
                    Ok(_) => {}
                }
                None
            }
            Action::CancelBackground => {
                if let Some(job) = self.job.take() {
                    tracing::warn!(node = %self.cfg.name, job = job.kind.describe(), "cancelling the running action");
                    let result = job.cancel().await;
                    if let Some(reply) = self.job_reply.take() {
                        let _ = reply.send(result.and(Err(RequestError::Cancelled)));
                    }
                }
                None
            }
            Action::StopPostgres { mode } => {
                let timeout = self.current_settings().pg_ctl_timeout;
                if let Err(e) = self.parts.pg.stop(mode, timeout).await {
                    tracing::warn!(node = %self.cfg.name, "stop failed: {e}");
                }
                self.emit(RunnerEvent::Stopped);
                None
            }
            background @ (Action::Bootstrap
            | Action::CloneReplica { .. }
            | Action::RestoreReplica
            | Action::StartPrimary { .. }
            | Action::StartReplica { .. }
            | Action::Promote { .. }
            | Action::Demote { .. }
            | Action::SwitchoverTo { .. }
            | Action::Restart { .. }
            | Action::Reinitialize { .. }
            | Action::CopyLogicalSlots { .. }) => {
                if self.job.is_some() {
                    tracing::warn!(node = %self.cfg.name, "not starting {background}: a background action is already running");
                    return None;
                }
                let settings = self.current_settings();
                let fencing = jobs::Fencing {
                    decided_on: obs.read_at,
                    seen: self.leader_key.subscribe(),
                };
                let hooks = jobs::JobHooks {
                    refused: self.pre_promote_refused.clone(),
                    writable: self.writable_signal(),
                    checkpoints: self.checkpoints.clone(),
                };
                self.job = BackgroundJob::spawn(
                    background,
                    self.parts.clone(),
                    settings,
                    fencing,
                    self.job_done.clone(),
                    self.events.clone(),
                    hooks,
                );
                None
            }
        }
    }
}

/// Bounds a DCS call by `retry_timeout`: a backend that hangs counts as unreachable.
pub(super) async fn with_deadline<T>(
    d: Duration,
    f: impl std::future::Future<Output = Result<T, DcsError>>,
) -> Result<T, DcsError> {
    match tokio::time::timeout(d, f).await {
        Ok(r) => r,
        Err(_) => Err(DcsError::Unreachable(format!("no answer within {d:?}"))),
    }
}

pub(super) fn log_dcs(what: &str, r: Result<(), DcsError>) {
    if let Err(e) = r {
        tracing::warn!("{what} failed: {e}");
    }
}
