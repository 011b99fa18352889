//! Observing the server: the health query, WAL positions and the observation the
//! decision engine reads.

use super::session::Slot;
use super::*;

/// Connect timeout of the health query: a SIGSTOPped postmaster never answers.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Budget for the health query itself once connected.
const HEALTH_QUERY_TIMEOUT: Duration = Duration::from_secs(1);

impl PgDriver {
    /// The health query alone, on a fresh connection with 1 s connect and 1 s query
    /// budgets: `Err(Timeout)` for a server that does not answer (SIGSTOP, stuck I/O).
    pub async fn probe(&self) -> Result<()> {
        self.health().await.map(|_| ())
    }

    /// Where this server's WAL is right now, read by one query (the HA loop's
    /// observation can be a cycle old, and under writes a cycle is many megabytes):
    /// what peers compare when they pick a leader or check a switchover candidate,
    /// and what a health check asks when the HA loop's last look failed. A short
    /// query with no catalog access, on the REST API's own kept connection: it
    /// neither waits behind the HA loop's health query nor for a lock that query
    /// waits for.
    pub async fn wal_positions(&self) -> Result<WalPositions> {
        let client = self.kept_session(Slot::Api, HEALTH_CONNECT_TIMEOUT).await?;
        let q = "SELECT pg_is_in_recovery()::text,
               CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
               pg_last_wal_receive_lsn()::text,
               pg_last_wal_replay_lsn()::text";
        let msgs = match tokio::time::timeout(HEALTH_QUERY_TIMEOUT, client.simple_query(q)).await {
            Err(_) => {
                self.drop_session(Slot::Api).await;
                return Err(DriverError::Timeout("WAL position query timed out".into()));
            }
            Ok(Err(e)) => {
                self.drop_session(Slot::Api).await;
                return Err(sql::query_error(e));
            }
            Ok(Ok(m)) => m,
        };
        let row = msgs
            .iter()
            .find_map(|m| match m {
                SimpleQueryMessage::Row(r) => Some(r),
                _ => None,
            })
            .ok_or_else(|| DriverError::Query("WAL position query returned no row".into()))?;
        let lsn = |i: usize| row.get(i).and_then(parse_lsn);
        Ok(WalPositions {
            in_recovery: row.get(0).map(|v| v == "true"),
            wal_lsn: lsn(1),
            receive_lsn: lsn(2),
            replay_lsn: lsn(3),
        })
    }

    async fn health(&self) -> Result<Health> {
        let client = self.local_session(HEALTH_CONNECT_TIMEOUT).await?;
        let q = format!(
            "SET statement_timeout = {};
             SELECT pg_is_in_recovery()::text,
               CASE WHEN pg_is_in_recovery() THEN NULL ELSE pg_current_wal_lsn()::text END,
               pg_last_wal_receive_lsn()::text,
               pg_last_wal_replay_lsn()::text,
               CASE WHEN pg_is_in_recovery()
                 THEN {REPLICA_TIMELINE}::text
                 ELSE (('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)::text END,
               (SELECT status FROM pg_stat_wal_receiver),
               current_setting('server_version_num'),
               pg_postmaster_start_time()::text,
               current_setting('synchronous_standby_names'),
               (SELECT count(*) FROM pg_settings WHERE pending_restart)::text,
               current_setting('synchronous_commit'),
               CASE WHEN pg_is_in_recovery() THEN
                 greatest(0, extract(epoch FROM now() - pg_last_xact_replay_timestamp()) * 1000)::bigint::text
               END,
               CASE WHEN NOT pg_is_in_recovery() THEN
                 (SELECT timeline_id FROM pg_control_checkpoint())::text
               END;
             SELECT application_name, state, sync_state, flush_lsn::text, write_lsn::text,
               replay_lsn::text, host(client_addr), usename::text, sync_priority::text
               FROM pg_stat_replication ORDER BY application_name;
             SELECT slot_name::text, slot_type, database::text, plugin::text, active::text,
               (CASE WHEN slot_type = 'logical' THEN confirmed_flush_lsn ELSE restart_lsn END)::text,
               xmin::text
               FROM pg_replication_slots ORDER BY slot_name;
             SELECT s.name, current_setting(s.name),
               (SELECT f.setting FROM pg_file_settings f
                 WHERE lower(f.name) = lower(s.name) ORDER BY f.seqno DESC LIMIT 1)
               FROM pg_settings s WHERE s.pending_restart ORDER BY s.name",
            HEALTH_QUERY_TIMEOUT.as_millis()
        );
        let msgs = match tokio::time::timeout(HEALTH_QUERY_TIMEOUT, client.simple_query(&q)).await {
            Err(_) => {
                self.drop_session(Slot::Loop).await;
                return Err(DriverError::Timeout("health query timed out".into()));
            }
            Ok(Err(e)) => {
                self.drop_session(Slot::Loop).await;
                return Err(sql::query_error(e));
            }
            Ok(Ok(m)) => m,
        };
        // One result set per statement: SET, the health row, replication, slots,
        // parameters waiting for a restart.
        let mut sets: Vec<Vec<&tokio_postgres::SimpleQueryRow>> = vec![Vec::new()];
        for m in &msgs {
            match m {
                SimpleQueryMessage::Row(r) => sets.last_mut().map(|set| set.push(r)).unwrap_or(()),
                SimpleQueryMessage::CommandComplete(_) => sets.push(Vec::new()),
                _ => {}
            }
        }
        let empty = Vec::new();
        let set = |i: usize| sets.get(i).unwrap_or(&empty);
        let first = set(1)
            .first()
            .ok_or_else(|| DriverError::Query("health query returned no row".into()))?;
        let s = |i: usize| first.get(i).map(str::to_string);
        let mut h = Health {
            in_recovery: s(0).map(|v| v == "true"),
            wal_lsn: s(1).and_then(|v| parse_lsn(&v)),
            receive_lsn: s(2).and_then(|v| parse_lsn(&v)),
            replay_lsn: s(3).and_then(|v| parse_lsn(&v)),
            timeline: s(4).and_then(|v| v.parse().ok()),
            receiver_status: s(5),
            server_version: s(6).and_then(|v| v.parse().ok()),
            start_time: s(7),
            sync_names: s(8),
            pending_restart: s(9).map(|v| v != "0").unwrap_or(false),
            synchronous_commit: s(10),
            replayed_xact_age: s(11)
                .and_then(|v| v.parse::<u64>().ok())
                .map(Duration::from_millis),
            checkpoint_timeline: s(12).and_then(|v| v.parse().ok()),
            replication: Vec::new(),
            slots: set(3).iter().filter_map(|r| observed_slot(r)).collect(),
            pending_restart_reason: set(4)
                .iter()
                .map(|r| PendingParameter {
                    name: r.get(0).unwrap_or_default().to_string(),
                    old_value: r.get(1).unwrap_or_default().to_string(),
                    // Not in a configuration file (set on the command line): unknown.
                    new_value: r.get(2).unwrap_or("?").to_string(),
                })
                .collect(),
        };
        for r in set(2) {
            let g = |i: usize| r.get(i).map(str::to_string);
            h.replication.push(ReplicationConnection {
                application_name: g(0).unwrap_or_default(),
                state: g(1).unwrap_or_default(),
                sync_state: g(2).unwrap_or_default(),
                flush_lsn: g(3).and_then(|v| parse_lsn(&v)),
                write_lsn: g(4).and_then(|v| parse_lsn(&v)),
                replay_lsn: g(5).and_then(|v| parse_lsn(&v)),
                client_addr: g(6),
                usename: g(7),
                sync_priority: g(8).and_then(|v| v.parse().ok()).unwrap_or(0),
            });
        }
        Ok(h)
    }

    /// A replica's timeline never goes back while the same postmaster runs, so the
    /// highest one seen since it started stands: once the walreceiver is gone (the
    /// upstream died) Postgres may only show older evidence (the last restartpoint's).
    fn replica_timeline_since_start(
        &self,
        start_time: Option<&str>,
        seen: Option<u64>,
    ) -> Option<u64> {
        let mut cached = match self.replica_timeline.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        highest_timeline_since_start(&mut cached, start_time, seen)
    }

    pub(super) async fn observe_inner(&self) -> PgObservation {
        let pid_state = self.pid_state();
        let live_pid = match &pid_state {
            PidFileState::Alive {
                pid,
                stopped: false,
                ..
            } => Some(*pid),
            _ => None,
        };
        // While the same postmaster runs and answers, its system identifier cannot
        // change and its recovery state comes from the health query: pg_controldata
        // (a process per cycle) is needed only when it does not answer, or runs no more.
        let known = live_pid.and_then(|pid| {
            lock_or_recover(&self.running_sysid)
                .as_ref()
                .filter(|r| r.pid == pid)
                .cloned()
        });
        let (dir, health) = match &known {
            Some(_) => (None, Some(self.health().await)),
            // Side by side: the cycle waits for the slower, not for both in turn.
            None => {
                let (dir, health) = tokio::join!(self.data_dir_state(), async {
                    match live_pid {
                        Some(_) => Some(self.health().await),
                        None => None,
                    }
                });
                (Some(dir), health)
            }
        };
        let started = match &health {
            Some(Ok(h)) => h.start_time.clone(),
            _ => None,
        };
        let (data_dir, control) = match (dir, known) {
            (Some(dir), _) => dir,
            (None, Some(k)) if started.is_some() && k.started == started => (
                DataDirState::Initialized {
                    system_identifier: k.system_identifier,
                },
                None,
            ),
            (None, _) => self.data_dir_state().await,
        };
        if let (Some(pid), Some(_), DataDirState::Initialized { system_identifier }) =
            (live_pid, &started, &data_dir)
        {
            *lock_or_recover(&self.running_sysid) = Some(RunningPostmaster {
                pid,
                started: started.clone(),
                system_identifier: system_identifier.clone(),
            });
        }
        let mut obs = PgObservation::stopped(data_dir);
        obs.cluster_state = match (&control, &health) {
            (Some(c), _) => Some(c.cluster_state.clone()),
            // What pg_control says of a running server, by its recovery state.
            (None, Some(Ok(h))) => match h.in_recovery {
                Some(true) => Some("in archive recovery".to_string()),
                Some(false) => Some("in production".to_string()),
                None => None,
            },
            (None, _) => None,
        };
        let state = self.state();
        let signal = self.data_dir().join("standby.signal").exists();
        obs.process = match pid_state {
            PidFileState::Absent => PgProcess::Stopped,
            PidFileState::Garbage(_) | PidFileState::Stale(_) | PidFileState::Foreign(_) => {
                PgProcess::Crashed
            }
            PidFileState::Alive { stopped: true, .. } => PgProcess::Hung,
            PidFileState::Alive { status, .. } => match health
                .unwrap_or_else(|| Err(DriverError::Invalid("postmaster not asked".into())))
            {
                Ok(h) => {
                    obs.in_recovery = h.in_recovery;
                    obs.timeline = if h.in_recovery == Some(true) {
                        self.replica_timeline_since_start(h.start_time.as_deref(), h.timeline)
                    } else {
                        h.timeline
                    };
                    obs.wal_lsn = h.wal_lsn;
                    obs.receive_lsn = h.receive_lsn;
                    obs.replay_lsn = h.replay_lsn;
                    obs.replayed_xact_age = h.replayed_xact_age;
                    obs.checkpoint_timeline = h.checkpoint_timeline;
                    obs.replication_state = match h.in_recovery {
                        Some(true) => Some(if h.receiver_status.as_deref() == Some("streaming") {
                            "streaming".to_string()
                        } else {
                            "in archive recovery".to_string()
                        }),
                        _ => None,
                    };
                    obs.server_version = h.server_version;
                    obs.postmaster_start_time = h.start_time;
                    obs.synchronous_standby_names = h.sync_names;
                    obs.synchronous_commit = h.synchronous_commit;
                    obs.pending_restart = h.pending_restart;
                    obs.pending_restart_reason = h.pending_restart_reason;
                    obs.replication = h.replication;
                    obs.slots = h.slots;
                    PgProcess::Running
                }
                Err(DriverError::Timeout(_)) => PgProcess::Hung,
                Err(e) => {
                    let msg = e.to_string();
                    // 57P03: "the database system is starting up / shutting down".
                    if msg.contains("57P03") || matches!(status.as_str(), "starting" | "stopping") {
                        PgProcess::Starting
                    } else {
                        tracing::warn!(error = %msg, "health query failed on a live postmaster");
                        PgProcess::Hung
                    }
                }
            },
        };
        if obs.process != PgProcess::Running {
            obs.timeline = control.as_ref().and_then(|c| {
                if c.cluster_state == "shut down in recovery" {
                    c.min_recovery_timeline
                        .filter(|t| *t > 0)
                        .or(c.checkpoint_timeline)
                } else {
                    c.checkpoint_timeline
                }
            });
        }
        if obs.process == PgProcess::Starting && signal {
            // It answers no query yet, but with standby.signal it comes up in recovery.
            obs.in_recovery = Some(true);
        }
        if signal && state.replica && obs.in_recovery != Some(false) {
            obs.following = state.upstream.as_ref().map(|u| u.name.clone());
            obs.upstream = state.upstream.as_ref().map(|u| u.to_upstream());
        }
        obs
    }
}

/// Folds a replica's reported timeline into `cached` (postmaster start time, highest
/// timeline) and returns the highest seen since that postmaster started.
fn highest_timeline_since_start(
    cached: &mut Option<(String, u64)>,
    start_time: Option<&str>,
    seen: Option<u64>,
) -> Option<u64> {
    let (Some(start), Some(seen)) = (start_time, seen) else {
        return seen;
    };
    let best = match cached.as_ref() {
        Some((s, tl)) if s == start => seen.max(*tl),
        _ => seen,
    };
    *cached = Some((start.to_string(), best));
    Some(best)
}

/// A live reading of the server's WAL positions ([`PgDriver::wal_positions`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalPositions {
    /// `pg_is_in_recovery()`.
    pub in_recovery: Option<bool>,
    /// `pg_current_wal_lsn()` on a primary.
    pub wal_lsn: Option<u64>,
    /// `pg_last_wal_receive_lsn()` on a replica.
    pub receive_lsn: Option<u64>,
    /// `pg_last_wal_replay_lsn()` on a replica.
    pub replay_lsn: Option<u64>,
}

struct Health {
    in_recovery: Option<bool>,
    wal_lsn: Option<u64>,
    receive_lsn: Option<u64>,
    replay_lsn: Option<u64>,
    timeline: Option<u64>,
    receiver_status: Option<String>,
    server_version: Option<u32>,
    start_time: Option<String>,
    sync_names: Option<String>,
    pending_restart: bool,
    pending_restart_reason: Vec<PendingParameter>,
    synchronous_commit: Option<String>,
    /// Replica: age of the last replayed transaction's commit.
    replayed_xact_age: Option<Duration>,
    /// Primary: timeline of pg_control's latest checkpoint.
    checkpoint_timeline: Option<u64>,
    replication: Vec<ReplicationConnection>,
    slots: Vec<ObservedSlot>,
}

/// A `pg_replication_slots` row of the health query.
fn observed_slot(r: &tokio_postgres::SimpleQueryRow) -> Option<ObservedSlot> {
    let name = r.get(0)?.to_string();
    let kind = match r.get(1)? {
        "logical" => SlotKind::Logical {
            database: r.get(2).unwrap_or_default().to_string(),
            plugin: r.get(3).unwrap_or_default().to_string(),
        },
        _ => SlotKind::Physical,
    };
    Some(ObservedSlot {
        name,
        kind,
        active: r.get(4) == Some("true"),
        lsn: r.get(5).and_then(parse_lsn),
        xmin: r.get(6).and_then(|x| x.parse().ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::highest_timeline_since_start;

    #[test]
    fn a_replica_timeline_never_goes_back_while_the_same_postmaster_runs() {
        let mut cache = None;
        let t0 = Some("2026-01-01 00:00:00+00");
        // Streaming timeline 3, then the walreceiver goes and only the last
        // restartpoint's timeline 2 is visible.
        assert_eq!(
            highest_timeline_since_start(&mut cache, t0, Some(3)),
            Some(3)
        );
        assert_eq!(
            highest_timeline_since_start(&mut cache, t0, Some(2)),
            Some(3)
        );
        assert_eq!(
            highest_timeline_since_start(&mut cache, t0, Some(4)),
            Some(4)
        );
        // A restarted postmaster starts over from what it reports.
        let t1 = Some("2026-01-01 00:05:00+00");
        assert_eq!(
            highest_timeline_since_start(&mut cache, t1, Some(2)),
            Some(2)
        );
        // Nothing reported, nothing invented.
        assert_eq!(highest_timeline_since_start(&mut cache, t1, None), None);
        assert_eq!(
            highest_timeline_since_start(&mut cache, None, Some(1)),
            Some(1)
        );
    }
}
