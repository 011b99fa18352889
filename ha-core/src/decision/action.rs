//! What the decision function asks the runner to do.

use crate::clock::MonoTime;
use crate::model::{
    DynamicConfig, Failsafe, History, Member, MemberData, Status, SyncState, Version,
};
use crate::postgres::{SlotChanges, StopMode, Upstream};
use std::fmt;

/// The proof a role-changing action was justified by a live lease: the runner refuses
/// to execute the action once `valid_until` has passed (a frozen or slow agent must not
/// act on a view older than its lease), or once a newer read shows the leader key at
/// another version than `leader_version` (the leadership it was decided under is gone).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseToken {
    /// End of the lease as this node computes it (send time of the last successful
    /// acquire/renew + ttl), minus the fence margin.
    pub valid_until: MonoTime,
    /// Version of the leader key when the view the action was decided on showed it as
    /// mine; `None` when the lease was acquired after that read.
    pub leader_version: Option<Version>,
}

/// How a primary steps down (Patroni's demote modes, §2.13; a planned switchover is
/// [`Action::SwitchoverTo`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DemoteMode {
    /// Immediate stop, release the key (crash without timely restart, start timeout).
    Immediate,
    /// Immediate stop, the key is already lost.
    ImmediateNoLock,
    /// DCS unreachable: fast stop, key not released, restart as replica with no upstream.
    Offline,
    /// `standby_cluster` added to a running cluster: fast stop, the key is kept, the
    /// node restarts as the standby leader following the remote.
    DemoteCluster,
}

impl DemoteMode {
    /// The stop mode each demotion uses.
    pub fn stop_mode(self) -> StopMode {
        match self {
            DemoteMode::Offline | DemoteMode::DemoteCluster => StopMode::Fast,
            DemoteMode::Immediate | DemoteMode::ImmediateNoLock => StopMode::Immediate,
        }
    }

    /// Whether the leader key is released after the stop.
    pub fn releases_lease(self) -> bool {
        match self {
            DemoteMode::Immediate => true,
            DemoteMode::ImmediateNoLock | DemoteMode::Offline | DemoteMode::DemoteCluster => false,
        }
    }
}

/// One thing to do. Actions are executed in order; the ones marked *query* feed an
/// [`crate::decision::Outcome`] back into the next decision step of the same cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// *Query.* Create the leader key with my name if absent (leader race).
    AcquireLease,
    /// *Query.* Refresh my lease and confirm the leader key is still mine; with
    /// `status`, also publish it if the key is mine (one request on etcd).
    RenewLease {
        /// The leader's `status` when it changed since the view was read.
        status: Option<Status>,
    },
    /// Delete the leader key if it holds my name; done after Postgres stopped
    /// accepting writes, so a replica can take over without waiting for the ttl.
    ReleaseLease,
    /// *Query.* Ask peers' `/patroni` for their role and WAL position (leader race,
    /// switchover candidate check).
    ProbePeers {
        /// Members to ask.
        names: Vec<String>,
        /// Those of `names` the decision can do without: when every other one has
        /// answered, they get only [`crate::decision::OPTIONAL_PEER_GRACE`] more
        /// instead of the whole probe timeout (a frozen former leader).
        optional: Vec<String>,
    },
    /// *Query.* Create `initialize` (bootstrap race).
    ClaimInitialize,
    /// Record the system identifier in `initialize`.
    WriteInitialize {
        /// Decimal system identifier.
        system_identifier: String,
    },
    /// Delete `initialize` after a failed bootstrap so another node can try.
    CancelInitialize,
    /// Publish my member record (also keeps member-key leases alive).
    PublishMember(MemberData),
    /// Seed or repair `config` (CAS on `expected`).
    WriteConfig {
        /// The config to write.
        config: DynamicConfig,
        /// Version it must still have; `None` = create.
        expected: Option<Version>,
    },
    /// Clear the `failover` key with CAS (request done, stale or impossible).
    ClearFailover {
        /// Version it must still have.
        expected: Version,
    },
    /// Write `status` (leader's optime).
    WriteStatus(Status),
    /// Write `history` after a promotion.
    WriteHistory(History),
    /// Write `failsafe` (member name ⇒ api_url), failsafe mode on the leader.
    WriteFailsafe(Failsafe),
    /// *Query.* The DCS is unreachable and failsafe mode is on: `POST /failsafe` to
    /// these members (name ⇒ api_url), asking them to confirm me as the leader.
    CheckFailsafe {
        /// Members to call.
        members: Failsafe,
        /// The ttl my lease is extended by: a member keeps me as its leader for at
        /// least this long (its own ttl may be shorter during a config change).
        ttl: std::time::Duration,
        /// My slot positions, as `status.slots` would have them: the members advance
        /// their copies of my slots by them while the DCS is gone.
        slots: std::collections::BTreeMap<String, crate::model::Lsn>,
    },
    /// *Query.* CAS-write `sync` (synchronous replication bookkeeping).
    WriteSync {
        /// New value.
        sync: SyncState,
        /// Version it must still have; `None` = create.
        expected: Option<Version>,
    },
    /// CAS-delete `sync` (synchronous mode switched off).
    DeleteSync {
        /// Version it must still have.
        expected: Version,
    },
    /// Set `synchronous_standby_names` on the primary (None clears it).
    SetSynchronousStandbyNames {
        /// New value.
        value: Option<String>,
    },
    /// Arm or extend the write fence: Postgres is stopped at `deadline` unless
    /// extended, by a mechanism that does not need this process to run.
    ArmFence {
        /// Absolute monotonic deadline.
        deadline: MonoTime,
        /// Kick the watchdog (reset device) too; `false` in pause, which disables it.
        watchdog: bool,
    },
    /// Disarm the fence (Postgres is not writable any more, or paused).
    DisarmFence,
    /// *Background.* initdb (or custom bootstrap) and start as primary; record the
    /// system identifier on success, cancel `initialize` on failure.
    Bootstrap,
    /// *Background.* Clone the empty data directory from `source`, then start as its replica.
    CloneReplica {
        /// Where to copy from.
        source: Upstream,
        /// Who to stream from afterwards (the leader).
        follow: Option<Upstream>,
    },
    /// *Background.* Create a replica without any running source, with the replica
    /// methods that work without a leader (`no_leader`, e.g. a backup restore), then
    /// start it as a replica of nobody.
    RestoreReplica,
    /// *Background.* Start a stopped server as primary (crash restart while holding the lease).
    StartPrimary {
        /// Lease that justifies becoming writable.
        token: LeaseToken,
    },
    /// *Background.* Start as a replica of `upstream`; first pg_rewind if it diverged
    /// and rewind is allowed.
    StartReplica {
        /// Source to stream from (None: no upstream yet).
        upstream: Option<Upstream>,
        /// Check for divergence and pg_rewind before starting.
        rewind: bool,
    },
    /// *Background.* Promote the replica.
    Promote {
        /// Lease that justifies becoming writable.
        token: LeaseToken,
    },
    /// *Background.* Step down: stop per mode and release the lease if the mode says
    /// so; the next cycle starts Postgres as a replica (with a divergence check).
    Demote {
        /// Demotion mode.
        mode: DemoteMode,
        /// Who to follow afterwards.
        upstream: Option<Upstream>,
    },
    /// *Background.* Planned switchover to `candidate`: fast stop (shutdown
    /// checkpoint), wait until the candidate has received WAL past that checkpoint,
    /// then release the lease and follow it. If the candidate does not confirm while
    /// `token` is still valid, withdraw the request and restart as primary, so no
    /// acknowledged write is ever left behind on the old primary.
    SwitchoverTo {
        /// The member to hand over to.
        candidate: Member,
        /// The lease this primary still holds (for the abort path).
        token: LeaseToken,
    },
    /// *Background.* Restart Postgres in its role (operator request): fast stop, then
    /// start as primary while `token` is valid, or as a replica of `upstream`.
    Restart {
        /// The lease a primary restarts under; `None` restarts as a replica.
        token: Option<LeaseToken>,
        /// Where a replica streams from afterwards.
        upstream: Option<Upstream>,
    },
    /// *Background.* Re-create a replica (operator request): immediate stop, remove
    /// the data directory, clone from `source`, start streaming from `follow`.
    Reinitialize {
        /// Where to copy from.
        source: Upstream,
        /// Who to stream from afterwards.
        follow: Option<Upstream>,
    },
    /// Point the running replica at another upstream.
    Follow {
        /// New upstream (None: detach).
        upstream: Option<Upstream>,
    },
    /// Stop Postgres (pause-mode exceptions aside, e.g. the node was removed).
    StopPostgres {
        /// How.
        mode: StopMode,
    },
    /// Cancel the running background action (its child processes are killed) so an
    /// operator's forced reinitialize can start.
    CancelBackground,
    /// Create, advance and drop replication slots.
    ManageSlots(SlotChanges),
    /// *Background.* On a replica: copy the named logical slots from `source` (the
    /// leader) and restart Postgres streaming from `follow`, so the slots exist here
    /// when this node is promoted.
    CopyLogicalSlots {
        /// Where the slots are read.
        source: Upstream,
        /// Slot names.
        names: Vec<String>,
        /// Who to stream from after the restart.
        follow: Option<Upstream>,
    },
}

impl Action {
    /// Whether the result must be fed back before deciding further.
    pub fn is_query(&self) -> bool {
        // One arm per variant, so a new action cannot be added without deciding this.
        match self {
            Action::AcquireLease
            | Action::RenewLease { .. }
            | Action::ProbePeers { .. }
            | Action::ClaimInitialize
            | Action::WriteSync { .. }
            | Action::CheckFailsafe { .. } => true,
            Action::ReleaseLease
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
            | Action::CopyLogicalSlots { .. } => false,
        }
    }

    /// Whether the action runs in the background while the loop keeps renewing.
    pub fn is_background(&self) -> bool {
        self.busy().is_some()
    }

    /// What a background action keeps the node busy with; `None` for the others.
    pub fn busy(&self) -> Option<super::Busy> {
        use super::Busy;
        // One arm per variant: this is where an action is declared background.
        Some(match self {
            Action::Bootstrap => Busy::Bootstrap,
            Action::CloneReplica { .. } | Action::RestoreReplica => Busy::Clone,
            Action::StartPrimary { .. } | Action::StartReplica { .. } => Busy::Start,
            Action::Promote { .. } => Busy::Promote,
            Action::Demote { .. } | Action::SwitchoverTo { .. } => Busy::Demote,
            Action::Restart { .. } => Busy::Restart,
            Action::Reinitialize { .. } => Busy::Reinitialize,
            Action::CopyLogicalSlots { .. } => Busy::CopySlots,
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
            | Action::ManageSlots(_) => return None,
        })
    }

    /// The lease token of a role-changing action that makes Postgres writable.
    pub fn token(&self) -> Option<LeaseToken> {
        match self {
            Action::StartPrimary { token } | Action::Promote { token } => Some(*token),
            Action::Restart { token, .. } => *token,
            // A switchover's token only bounds its abort path (restart as primary),
            // which the job checks itself; the rest never make Postgres writable.
            Action::SwitchoverTo { .. }
            | Action::AcquireLease
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
            | Action::Bootstrap
            | Action::CloneReplica { .. }
            | Action::RestoreReplica
            | Action::StartReplica { .. }
            | Action::Demote { .. }
            | Action::Reinitialize { .. }
            | Action::Follow { .. }
            | Action::StopPostgres { .. }
            | Action::CancelBackground
            | Action::ManageSlots(_)
            | Action::CopyLogicalSlots { .. } => None,
        }
    }
}

/// One short line per action: its name and the fields that tell two of a kind apart
/// (times in seconds since the clock's origin, `-` for none). Decision tests compare
/// these lines with the exact output they expect.
impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = |t: MonoTime| format!("{}.{:03}s", t.as_millis() / 1000, t.as_millis() % 1000);
        let up = |u: &Option<Upstream>| u.as_ref().map_or("-".to_string(), |u| u.name.clone());
        let ver = |v: &Option<Version>| v.map_or("new".to_string(), |v| format!("v{}", v.0));
        let names = |m: &Failsafe| m.keys().cloned().collect::<Vec<_>>().join(",");
        match self {
            Action::AcquireLease => write!(f, "AcquireLease"),
            Action::RenewLease { status: None } => write!(f, "RenewLease"),
            Action::RenewLease { status: Some(s) } => write!(f, "RenewLease {}", status(s)),
            Action::ReleaseLease => write!(f, "ReleaseLease"),
            Action::ProbePeers { names, optional } if optional.is_empty() => {
                write!(f, "ProbePeers {}", names.join(","))
            }
            Action::ProbePeers { names, optional } => {
                write!(
                    f,
                    "ProbePeers {} optional={}",
                    names.join(","),
                    optional.join(",")
                )
            }
            Action::ClaimInitialize => write!(f, "ClaimInitialize"),
            Action::WriteInitialize { system_identifier } => {
                write!(f, "WriteInitialize {system_identifier}")
            }
            Action::CancelInitialize => write!(f, "CancelInitialize"),
            Action::PublishMember(d) => write!(
                f,
                "PublishMember role={} state={}",
                d.role.as_ref().map_or("-", |r| r.as_str()),
                d.state.as_ref().map_or("-", |s| s.as_str())
            ),
            Action::WriteConfig { expected, .. } => write!(f, "WriteConfig {}", ver(expected)),
            Action::ClearFailover { expected } => write!(f, "ClearFailover v{}", expected.0),
            Action::WriteStatus(s) => write!(f, "WriteStatus {}", status(s)),
            Action::WriteHistory(h) => {
                let last = h.0.last();
                write!(
                    f,
                    "WriteHistory lines={} last_timeline={}",
                    h.0.len(),
                    last.map_or("-".to_string(), |e| e.timeline.to_string())
                )
            }
            Action::WriteFailsafe(m) => write!(f, "WriteFailsafe {}", names(m)),
            Action::CheckFailsafe { members, ttl, .. } => {
                write!(
                    f,
                    "CheckFailsafe {} ttl={}s",
                    names(members),
                    ttl.as_secs_f64()
                )
            }
            Action::WriteSync { sync, expected } => write!(
                f,
                "WriteSync leader={} standbys={} quorum={} {}",
                sync.leader.as_deref().unwrap_or("-"),
                sync.sync_standby.join(","),
                sync.quorum,
                ver(expected)
            ),
            Action::DeleteSync { expected } => write!(f, "DeleteSync v{}", expected.0),
            Action::SetSynchronousStandbyNames { value } => write!(
                f,
                "SetSynchronousStandbyNames {}",
                value
                    .as_deref()
                    .map_or("-".to_string(), |v| format!("'{v}'"))
            ),
            Action::ArmFence { deadline, watchdog } => write!(
                f,
                "ArmFence until={}{}",
                at(*deadline),
                if *watchdog { " watchdog" } else { "" }
            ),
            Action::DisarmFence => write!(f, "DisarmFence"),
            Action::Bootstrap => write!(f, "Bootstrap"),
            Action::CloneReplica { source, follow } => {
                write!(f, "CloneReplica from={} follow={}", source.name, up(follow))
            }
            Action::RestoreReplica => write!(f, "RestoreReplica"),
            Action::StartPrimary { token } => {
                write!(f, "StartPrimary token={}", at(token.valid_until))
            }
            Action::StartReplica { upstream, rewind } => write!(
                f,
                "StartReplica upstream={}{}",
                up(upstream),
                if *rewind { " rewind" } else { "" }
            ),
            Action::Promote { token } => write!(f, "Promote token={}", at(token.valid_until)),
            Action::Demote { mode, upstream } => {
                write!(f, "Demote {mode:?} upstream={}", up(upstream))
            }
            Action::SwitchoverTo { candidate, token } => write!(
                f,
                "SwitchoverTo {} token={}",
                candidate.name,
                at(token.valid_until)
            ),
            Action::Restart {
                token: Some(t),
                upstream,
            } => write!(
                f,
                "Restart primary token={} upstream={}",
                at(t.valid_until),
                up(upstream)
            ),
            Action::Restart {
                token: None,
                upstream,
            } => write!(f, "Restart replica upstream={}", up(upstream)),
            Action::Reinitialize { source, follow } => {
                write!(f, "Reinitialize from={} follow={}", source.name, up(follow))
            }
            Action::Follow { upstream } => write!(f, "Follow {}", up(upstream)),
            Action::StopPostgres { mode } => write!(f, "StopPostgres {mode:?}"),
            Action::CancelBackground => write!(f, "CancelBackground"),
            Action::ManageSlots(c) => {
                let created: Vec<&str> = c.create.iter().map(|s| s.name.as_str()).collect();
                let advanced: Vec<String> = c
                    .advance
                    .iter()
                    .map(|a| format!("{}:{}", a.name, a.to))
                    .collect();
                write!(
                    f,
                    "ManageSlots create=[{}] advance=[{}] drop=[{}]",
                    created.join(","),
                    advanced.join(","),
                    c.drop.join(",")
                )
            }
            Action::CopyLogicalSlots {
                source,
                names,
                follow,
            } => write!(
                f,
                "CopyLogicalSlots {} from={} follow={}",
                names.join(","),
                source.name,
                up(follow)
            ),
        }
    }
}

/// `optime=… slots=name:lsn,… retain=…`, leaving out what is empty.
fn status(s: &Status) -> String {
    let mut out = format!(
        "optime={}",
        s.optime.map_or("-".to_string(), |o| o.to_string())
    );
    if !s.slots.is_empty() {
        let slots: Vec<String> = s.slots.iter().map(|(n, l)| format!("{n}:{l}")).collect();
        out.push_str(&format!(" slots={}", slots.join(",")));
    }
    if !s.retain_slots.is_empty() {
        out.push_str(&format!(" retain={}", s.retain_slots.join(",")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Patroni's demote modes: how each stops Postgres and whether the key goes.
    #[test]
    fn each_demote_mode_stops_and_releases_as_patroni_does() {
        let modes = [
            DemoteMode::Immediate,
            DemoteMode::ImmediateNoLock,
            DemoteMode::Offline,
            DemoteMode::DemoteCluster,
        ];
        let got: Vec<(DemoteMode, StopMode, bool)> = modes
            .iter()
            .map(|m| (*m, m.stop_mode(), m.releases_lease()))
            .collect();
        assert_eq!(
            got,
            vec![
                (DemoteMode::Immediate, StopMode::Immediate, true),
                (DemoteMode::ImmediateNoLock, StopMode::Immediate, false),
                (DemoteMode::Offline, StopMode::Fast, false),
                (DemoteMode::DemoteCluster, StopMode::Fast, false),
            ]
        );
    }
}
