//! Whether the local timeline diverged from a source's, and pg_rewind onto it.

use super::rewind_mark::RewindMark;
use super::*;

impl PgDriver {
    /// The local position for the divergence check, recovering a crashed server first.
    async fn local_position(&self) -> Result<LocalPosition> {
        if self.postmaster_pid().is_some() {
            let client = self.connect_local(SQL_TIMEOUT).await?;
            let rows = client
                .simple_query(&format!(
                    "SELECT pg_is_in_recovery()::text,
                       CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()::text
                            ELSE pg_current_wal_lsn()::text END,
                       CASE WHEN pg_is_in_recovery()
                         THEN {REPLICA_TIMELINE}::text
                         ELSE (('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int)::text END"
                ))
                .await
                .map_err(sql::query_error)?;
            let row = rows
                .iter()
                .find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => Some(r),
                    _ => None,
                })
                .ok_or_else(|| DriverError::Query("position query returned no row".into()))?;
            let lsn = row.get(1).and_then(parse_lsn).unwrap_or(0);
            let tl = row.get(2).and_then(|v| v.parse().ok()).unwrap_or(0);
            return Ok(LocalPosition {
                timeline: tl,
                lsn,
                ends_with_checkpoint: false,
            });
        }
        let mut c = self.controldata().await?;
        if c.crashed_as_primary() {
            self.single_user_recovery().await?;
            c = self.controldata().await?;
        }
        if c.cluster_state != "shut down" {
            let min = c.min_recovery_lsn.unwrap_or(0);
            let ck = c.checkpoint_lsn.unwrap_or(0);
            let tl = if min > 0 {
                c.min_recovery_timeline.unwrap_or(0)
            } else {
                c.checkpoint_timeline.unwrap_or(0)
            };
            Ok(LocalPosition {
                timeline: tl.max(c.checkpoint_timeline.unwrap_or(0)),
                lsn: min.max(ck),
                ends_with_checkpoint: false,
            })
        } else {
            Ok(LocalPosition {
                timeline: c.checkpoint_timeline.unwrap_or(0),
                lsn: c.checkpoint_lsn.unwrap_or(0),
                ends_with_checkpoint: true,
            })
        }
    }

    /// Runs a replication-protocol command on `source` through psql (tokio-postgres
    /// cannot open replication connections); rows as fields.
    async fn replication_command(
        &self,
        source: &Upstream,
        command: &str,
    ) -> Result<Vec<Vec<String>>> {
        let cfg = self.cfg();
        let auth = &cfg.authentication.replication;
        let mut params = conninfo::params(
            auth,
            &Endpoint::tcp(&source.host, source.port),
            "replication",
            Secret::Omit,
            Some("fullauto"),
        );
        params.extend([
            ("replication", "1".to_string()),
            ("connect_timeout", "3".to_string()),
        ]);
        let conninfo = conninfo::dsn(&params);
        let mut cmd = self.tool_cmd("psql", true)?;
        cmd.arg("-X")
            .arg("-A")
            .arg("-t")
            .arg("-F")
            .arg("\x1f")
            .arg("-R")
            .arg("\x1e")
            .arg("-d")
            .arg(conninfo)
            .arg("-c")
            .arg(command);
        if let Some(p) = &auth.password {
            cmd.env("PGPASSWORD", p);
        }
        let out = self.runner.run("psql", cmd, TOOL_TIMEOUT).await?;
        if !out.success {
            let msg = out.message();
            if msg.contains("could not connect")
                || msg.contains("Connection refused")
                || msg.contains("timeout")
            {
                return Err(DriverError::SourceUnreachable {
                    name: source.name.clone(),
                    host: source.host.clone(),
                    port: source.port,
                    reason: msg,
                });
            }
            return Err(DriverError::Tool {
                tool: format!("psql {command}"),
                output: msg,
            });
        }
        Ok(out
            .stdout
            .trim_end_matches('\n')
            .split('\x1e')
            .filter(|r| !r.is_empty())
            .map(|r| r.split('\x1f').map(str::to_string).collect())
            .collect())
    }

    /// The source's system identifier, timeline and timeline history.
    pub async fn source_timeline(
        &self,
        source: &Upstream,
    ) -> Result<(String, u64, Vec<HistoryEntry>)> {
        let rows = self.replication_command(source, "IDENTIFY_SYSTEM").await?;
        let row = rows.first().ok_or_else(|| DriverError::Tool {
            tool: "IDENTIFY_SYSTEM".into(),
            output: "no row".into(),
        })?;
        let sysid = row.first().cloned().unwrap_or_default();
        let tl: u64 = row
            .get(1)
            .and_then(|v| v.trim().parse().ok())
            .ok_or_else(|| DriverError::Tool {
                tool: "IDENTIFY_SYSTEM".into(),
                output: format!("unexpected row {row:?}"),
            })?;
        let history = if tl > 1 {
            let rows = self
                .replication_command(source, &format!("TIMELINE_HISTORY {tl}"))
                .await?;
            let content = rows
                .first()
                .and_then(|r| r.get(1))
                .cloned()
                .unwrap_or_default();
            timeline::parse_history(&decode_bytea(&content))
        } else {
            Vec::new()
        };
        Ok((sysid, tl, history))
    }

    async fn checkpoint_source(&self, source: &Upstream) {
        // pg_rewind reads the source's timeline from its pg_control, which a fresh
        // promotion updates only at the next checkpoint.
        match self.connect_source(source, Duration::from_secs(3)).await {
            Ok(c) => {
                if let Err(e) = sql::batch(&c, "CHECKPOINT", Duration::from_secs(60)).await {
                    tracing::warn!(error = %e, "CHECKPOINT on rewind source failed");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not connect to rewind source for CHECKPOINT")
            }
        }
    }

    pub(super) async fn do_needs_rewind(&self, source: &Upstream) -> Result<bool> {
        if let Err(e) = self.settle_rewind_mark().await {
            // Half-rewound: pg_control no longer tells where it stands, so it takes
            // the rewind path, whose failure handling (re-clone) applies.
            return match e {
                DriverError::HalfRewound(_) => Ok(true),
                e => Err(e),
            };
        }
        let (sysid, source_tl, history) = self.source_timeline(source).await?;
        let local_sysid = self.controldata().await?.system_identifier;
        if sysid != local_sysid {
            return Err(DriverError::SystemIdMismatch {
                path: self.data_dir().to_path_buf(),
                found: local_sysid,
                expected: sysid,
            });
        }
        let local = self.local_position().await?;
        if timeline::diverged(local, source_tl, &history) {
            return Ok(true);
        }
        // Same or an ancestor timeline number: the histories behind it must agree too.
        let mine = self.local_history(local.timeline);
        if timeline::histories_conflict(&mine, &history) {
            tracing::warn!(
                source = %source.name,
                timeline = local.timeline,
                "timeline {} here has another history than on {}: diverged",
                local.timeline,
                source.name
            );
            return Ok(true);
        }
        // Equal numbers and histories may still be two promotions from one point.
        if local.timeline > 1
            && local.timeline <= source_tl
            && self
                .forked_within_timeline(source, local.timeline, &history)
                .await?
        {
            return Ok(true);
        }
        if self
            .checkpoint_unknown_to(source, source_tl, &history)
            .await?
        {
            return Ok(true);
        }
        Ok(false)
    }

    /// The entries of the local `.history` file of `timeline` (none for timeline 1 or
    /// when the file is missing).
    fn local_history(&self, timeline: u64) -> Vec<HistoryEntry> {
        if timeline <= 1 {
            return Vec::new();
        }
        let path = self
            .data_dir()
            .join("pg_wal")
            .join(format!("{timeline:08X}.history"));
        std::fs::read_to_string(path)
            .map(|t| timeline::parse_history(&t))
            .unwrap_or_default()
    }

    pub(super) async fn do_rewind(&self, source: &Upstream) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            return Err(DriverError::Invalid(format!(
                "postmaster {pid} runs: stop it before pg_rewind"
            )));
        }
        datadir::check_access(self.data_dir(), self.os_user())?;
        self.settle_rewind_mark().await?;
        let c = self.controldata().await?;
        if !c.rewindable() {
            return Err(DriverError::Invalid(
                "pg_rewind is impossible: the cluster has neither data checksums nor wal_log_hints; reclone this member".into(),
            ));
        }
        if !c.is_clean_shutdown() {
            self.single_user_recovery().await?;
        }
        self.check_reachable(source).await?;
        self.checkpoint_source(source).await;
        // Fetched before pg_rewind: afterwards nothing may fail before the
        // configuration is rendered again.
        let (_, source_tl, history) = self.source_timeline(source).await?;
        // pg_rewind takes equal timeline numbers for one history ("no rewind
        // required") and would leave a data directory that cannot stream.
        let local_tl = if c.min_recovery_lsn.unwrap_or(0) > 0 {
            c.min_recovery_timeline
                .unwrap_or(0)
                .max(c.checkpoint_timeline.unwrap_or(0))
        } else {
            c.checkpoint_timeline.unwrap_or(0)
        };
        // Nor does it see two promotions from one point under one number (it takes
        // that timeline for common): refused too.
        if (local_tl == source_tl
            && timeline::histories_conflict(&self.local_history(local_tl), &history))
            || (local_tl > 1
                && local_tl <= source_tl
                && self
                    .forked_within_timeline(source, local_tl, &history)
                    .await?)
            || self
                .checkpoint_unknown_to(source, source_tl, &history)
                .await?
        {
            return Err(DriverError::Invalid(format!(
                "timeline {local_tl} here began at another place or with another promotion than \
                 on {}: pg_rewind cannot repair one timeline number on two histories; \
                 reinitialize this member \
                 (fullautoctl reinit) or set remove_data_directory_on_rewind_failure",
                source.name
            )));
        }
        tracing::info!(source = %source.name, "running pg_rewind");
        let cfg = self.cfg();
        let creds = cfg.rewind_credentials();
        let to = Endpoint::tcp(&source.host, source.port);
        let mut params = conninfo::params(creds, &to, "postgres", Secret::Omit, None);
        params.push(("connect_timeout", "5".to_string()));
        let conn = conninfo::dsn(&params);
        let mut cmd = self.tool_cmd("pg_rewind", true)?;
        let args = cfg.rewind_args()?;
        cmd.arg(format!("--target-pgdata={}", self.data_dir().display()))
            .arg(format!("--source-server={conn}"))
            .args(&args);
        // Says when it reaches its point of no return ("need to copy …").
        if !args.iter().any(|a| a == "--progress" || a == "-P") {
            cmd.arg("--progress");
        }
        self.hand_password(&mut cmd, creds, &to)?;
        rewind_mark::begin(self.data_dir(), &source.name);
        let out = progress::logged(
            self.runner.run("pg_rewind", cmd, LONG_TOOL_TIMEOUT),
            self.progress_every(),
            |elapsed| format!("pg_rewind still running after {}s", elapsed.as_secs()),
        )
        .await?;
        // pg_rewind copied the source's configuration files, ours included.
        let state = ManagedState {
            upstream: Some(source.into()),
            replica: true,
            synchronous_standby_names: None,
            ..Default::default()
        };
        self.write_config(&state)?;
        if out.success {
            if let Err(e) = self.remove_divergent_wal(&history).await {
                tracing::warn!(error = %e, "could not remove divergent WAL after pg_rewind");
            }
            rewind_mark::clear(self.data_dir());
        } else if !rewind_mark::began_copying(&format!("{}\n{}", out.stdout, out.stderr)) {
            // It failed before it changed anything: the data directory is whole.
            rewind_mark::clear(self.data_dir());
        }
        if !out.success {
            return Err(DriverError::Tool {
                tool: "pg_rewind".into(),
                output: out.message(),
            });
        }
        Ok(())
    }

    /// Acts on the mark of a pg_rewind that did not finish (see [`rewind_mark`]): one
    /// still running or cut short is an error, one that did finish after all is
    /// completed here.
    pub(super) async fn settle_rewind_mark(&self) -> Result<()> {
        let dir = self.data_dir();
        if !rewind_mark::present(dir) {
            return Ok(());
        }
        let control = self.controldata().await.ok();
        match rewind_mark::state(dir, control.as_ref()) {
            RewindMark::Clear => Ok(()),
            RewindMark::Running(pid) => Err(DriverError::Invalid(format!(
                "pg_rewind (pid {pid}), started before the agent restarted, still works on {}: waiting for it to end",
                dir.display()
            ))),
            RewindMark::Completed => {
                tracing::info!("the pg_rewind running when the agent stopped has finished");
                let history = control
                    .as_ref()
                    .and_then(|c| c.min_recovery_timeline)
                    .map(|tl| self.local_history(tl))
                    .unwrap_or_default();
                if !history.is_empty() {
                    if let Err(e) = self.remove_divergent_wal(&history).await {
                        tracing::warn!(error = %e, "could not remove divergent WAL after pg_rewind");
                    }
                }
                rewind_mark::clear(dir);
                Ok(())
            }
            RewindMark::Interrupted { source } => Err(DriverError::HalfRewound(format!(
                "the data directory {} is half-rewound: a pg_rewind from {source} was cut short, \
                 so it can neither start nor be rewound again; reinitialize this member \
                 (fullautoctl reinit), or set remove_data_directory_on_rewind_failure to re-clone \
                 it automatically",
                dir.display()
            ))),
        }
    }

    /// Removes the target's own WAL of parent timelines from their switchpoints on:
    /// recovery must only ever read the source's history there.
    async fn remove_divergent_wal(&self, history: &[HistoryEntry]) -> Result<()> {
        let seg = self.controldata().await?.wal_segment_size;
        let wal = self.data_dir().join("pg_wal");
        let names: Vec<String> = std::fs::read_dir(&wal)
            .map_err(|e| DriverError::io("read", &wal, e))?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        for n in timeline::divergent_wal_files(names.iter().map(String::as_str), history, seg) {
            let p = wal.join(&n);
            std::fs::remove_file(&p).map_err(|e| DriverError::io("remove", &p, e))?;
        }
        Ok(())
    }
}

/// TIMELINE_HISTORY's content comes as text or as bytea hex, depending on version.
fn decode_bytea(s: &str) -> String {
    match s.strip_prefix("\\x") {
        Some(hex) => {
            let bytes: Vec<u8> = (0..hex.len() / 2)
                .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
                .collect();
            String::from_utf8_lossy(&bytes).into_owned()
        }
        None => s.to_string(),
    }
}
