//! Starting, stopping, promoting, following and removing the server, with the
//! scripts and checks around each.

use super::*;

/// Where an operator fixes a parameter postgres refuses.
const FIX_PARAMETERS: &str = "Fix or remove that setting in the agent's configuration file \
     (postgresql.parameters, or bootstrap.dcs.postgresql.parameters before the cluster exists) \
     or in the cluster's dynamic configuration (fullautoctl edit-config), then start the agent again";
/// How long a promotion may show no effect before it is requested again (see
/// `do_promote`).
const PROMOTE_RESIGNAL: Duration = Duration::from_millis(50);
/// The promotion request; a server already out of recovery is left alone.
const PROMOTE_REQUEST: &str = "SELECT pg_is_in_recovery() AND pg_promote(false)";

/// Whether the server is in recovery, in one round trip.
async fn in_recovery(client: &tokio_postgres::Client) -> Result<bool> {
    let messages = client
        .simple_query("SELECT pg_is_in_recovery()")
        .await
        .map_err(sql::query_error)?;
    messages
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(|v| v == "t"),
            _ => None,
        })
        .ok_or_else(|| DriverError::Invalid("pg_is_in_recovery() returned no row".into()))
}

impl PgDriver {
    /// Checks the data directory before a start and refuses pid files postgres would
    /// refuse too.
    fn check_startable(&self) -> Result<()> {
        match datadir::contents(self.data_dir())? {
            DirContents::Cluster => {}
            DirContents::Missing | DirContents::Empty => {
                return Err(DriverError::Invalid(format!(
                    "no cluster in {}: bootstrap or clone first",
                    self.data_dir().display()
                )))
            }
            DirContents::Foreign(reason) => {
                return Err(DriverError::DataDir {
                    path: self.data_dir().to_path_buf(),
                    reason,
                })
            }
        }
        datadir::check_access(self.data_dir(), self.os_user())?;
        match self.pid_state() {
            PidFileState::Garbage(r) => {
                return Err(DriverError::PidFile {
                    path: self.data_dir().to_path_buf(),
                    reason: format!(
                        "{r}; if no postgres runs on this data directory, remove postmaster.pid"
                    ),
                })
            }
            PidFileState::Foreign(pid) => self.remove_leftover_pid_file(pid)?,
            PidFileState::Stale(pid) if pidfile::is_zombie(pid) => {
                self.remove_leftover_pid_file(pid)?
            }
            _ => {}
        }
        self.remove_leftover_socket_locks();
        Ok(())
    }

    /// Postgres refuses to start on a socket lock file naming a zombie postmaster or a
    /// reused pid (seen in containers without an init that reaps). Nothing can be using
    /// such a lock, so it and its socket go.
    fn remove_leftover_socket_locks(&self) {
        let cfg = self.cfg();
        let Ok(port) = cfg.listen_address().map(|l| l.port) else {
            return;
        };
        let dirs = match cfg.parameters.get("unix_socket_directories") {
            Some(serde_json::Value::String(s)) => s.clone(),
            Some(_) => return,
            None => "/tmp".to_string(),
        };
        for dir in dirs.split(',').map(str::trim).filter(|d| !d.is_empty()) {
            let socket = Path::new(dir).join(format!(".s.PGSQL.{port}"));
            let lock = Path::new(dir).join(format!(".s.PGSQL.{port}.lock"));
            if let Some(pid) = pidfile::leftover_socket_lock(&lock) {
                tracing::warn!(pid, lock = %lock.display(), "socket lock file is a leftover; removing it");
                let _ = std::fs::remove_file(&lock);
                let _ = std::fs::remove_file(&socket);
            }
        }
    }

    /// A postmaster.pid naming a live process that is not postgres (its pid was reused,
    /// common in containers where pids are small) or a dead postmaster nobody reaped
    /// yet (a zombie) is a leftover. Postgres itself would refuse to start on it. It is removed only when no process has the
    /// data directory as its working directory: every postgres process (postmaster or
    /// orphaned backend) runs there, so none can still be using it.
    fn remove_leftover_pid_file(&self, pid: i32) -> Result<()> {
        if let Some(user) = pidfile::process_with_cwd(self.data_dir()) {
            return Err(DriverError::PidFile {
                path: self.data_dir().to_path_buf(),
                reason: format!(
                    "names pid {pid}, a running process that is not postgres, but process {user} still works in the data directory; stop it, then remove postmaster.pid"
                ),
            });
        }
        tracing::warn!(
            pid,
            "postmaster.pid is a leftover (its pid now belongs to another process); removing it"
        );
        let path = self.data_dir().join("postmaster.pid");
        std::fs::remove_file(&path).map_err(|e| DriverError::io("remove", &path, e))
    }

    pub(super) fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.cfg().log_file()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let start = lines.len().saturating_sub(20);
        tail_chars(&lines[start..].join("\n"), 4000)
    }

    /// What the server log got after its first `offset` bytes (all of it when it
    /// was truncated or replaced since).
    fn log_since(&self, offset: u64) -> String {
        let text = std::fs::read(self.cfg().log_file()).unwrap_or_default();
        let from = usize::try_from(offset)
            .ok()
            .filter(|o| *o <= text.len())
            .unwrap_or(0);
        String::from_utf8_lossy(&text[from..]).into_owned()
    }

    async fn pg_ctl_start(&self, timeout: Duration) -> Result<()> {
        // Only this start's log lines tell why it failed.
        let log_offset = std::fs::metadata(self.cfg().log_file()).map_or(0, |m| m.len());
        let mut cmd = self.tool_cmd("pg_ctl", true)?;
        cmd.arg("start")
            .arg("-D")
            .arg(self.data_dir())
            .arg("-w")
            .arg("-t")
            .arg((timeout.as_secs_f64().ceil() as u64).max(1).to_string())
            .arg("-l")
            .arg(self.cfg().log_file());
        if let Some(file) = self.config_file_option() {
            // pg_ctl hands -o to a shell.
            let quoted = shlex::try_quote(&file)
                .map_err(|e| DriverError::Config(format!("config_dir: {e}")))?;
            cmd.arg("-o").arg(format!("-c {quoted}"));
        }
        // Recovery before the server accepts connections can take long: say what the
        // server last logged (its startup progress, `redo in progress … current LSN`).
        let out = progress::logged(
            self.runner
                .run("pg_ctl start", cmd, timeout + Duration::from_secs(10)),
            self.progress_every(),
            |elapsed| {
                let log = progress::log_tail_since(&self.cfg().log_file(), log_offset);
                match log.lines().rev().map(str::trim).find(|l| !l.is_empty()) {
                    Some(last) => format!(
                        "PostgreSQL is still starting after {}s; its last message: {last}",
                        elapsed.as_secs()
                    ),
                    None => format!("PostgreSQL is still starting after {}s", elapsed.as_secs()),
                }
            },
        )
        .await?;
        if out.success {
            return Ok(());
        }
        if matches!(self.pid_state(), PidFileState::Alive { .. }) {
            return Err(DriverError::Timeout(format!(
                "server did not accept connections within {}s (still starting); log tail:\n{}",
                timeout.as_secs(),
                self.log_tail()
            )));
        }
        let log_tail = self.log_tail();
        if let Some(cause) = rejection::refused_configuration(&self.log_since(log_offset)) {
            return Err(DriverError::Misconfigured {
                tool: "postgres",
                cause,
                fix: FIX_PARAMETERS,
            });
        }
        Err(DriverError::StartFailed {
            reason: out.message(),
            log_tail,
        })
    }

    pub(super) async fn pg_ctl_reload(&self) -> Result<()> {
        if self.postmaster_pid().is_none() {
            return Ok(());
        }
        let mut cmd = self.tool_cmd("pg_ctl", true)?;
        cmd.arg("reload").arg("-D").arg(self.data_dir()).arg("-s");
        self.runner
            .run_ok("pg_ctl reload", cmd, TOOL_TIMEOUT)
            .await?;
        Ok(())
    }

    /// Crash recovery in single-user mode so pg_control shows a clean shutdown (needed
    /// before divergence checks and pg_rewind).
    pub async fn single_user_recovery(&self) -> Result<()> {
        match self.pid_state() {
            PidFileState::Alive { pid, .. } => {
                return Err(DriverError::Invalid(format!(
                    "postmaster {pid} runs: stop it before crash recovery"
                )))
            }
            PidFileState::Foreign(pid) => self.remove_leftover_pid_file(pid)?,
            PidFileState::Stale(pid) if pidfile::is_zombie(pid) => {
                self.remove_leftover_pid_file(pid)?
            }
            _ => {}
        }
        // Single-user mode refuses standby mode; keep the signal file out of its way.
        let signal = self.data_dir().join("standby.signal");
        let aside = self.data_dir().join("standby.signal.fullauto");
        let had_signal = signal.exists();
        if had_signal {
            std::fs::rename(&signal, &aside).map_err(|e| DriverError::io("rename", &signal, e))?;
        }
        let mut cmd = self.tool_cmd("postgres", true)?;
        cmd.arg("--single").arg("-D").arg(self.data_dir());
        if let Some(file) = self.config_file_option() {
            cmd.arg("-c").arg(file);
        }
        cmd.arg("-c")
            .arg("archive_mode=off")
            .arg("-c")
            .arg("archive_command=false")
            .arg("template1");
        let result = self
            .runner
            .run("postgres --single", cmd, LONG_TOOL_TIMEOUT)
            .await;
        if had_signal {
            std::fs::rename(&aside, &signal).map_err(|e| DriverError::io("rename", &aside, e))?;
        }
        let out = result?;
        let c = self.controldata().await?;
        if !c.is_clean_shutdown() {
            return Err(DriverError::Tool {
                tool: "postgres --single".into(),
                output: format!(
                    "crash recovery left pg_control in state `{}`: {}",
                    c.cluster_state,
                    out.message()
                ),
            });
        }
        Ok(())
    }

    pub(super) async fn do_start(&self, role: &StartRole, timeout: Duration) -> Result<()> {
        tracing::info!(
            "starting postgres as {role} in {}",
            self.data_dir().display()
        );
        self.check_startable()?;
        if self.postmaster_pid().is_none() {
            self.settle_rewind_mark().await?;
        }
        let mut state = self.state();
        match role {
            StartRole::Primary => {
                state.replica = false;
                state.upstream = None;
            }
            StartRole::Replica { upstream } => {
                state.replica = true;
                state.upstream = upstream.as_ref().map(UpstreamRecord::from);
            }
        }
        if state.in_recovery() && self.postmaster_pid().is_none() {
            state.recovery_floor = match self.controldata().await {
                Ok(c) => c.recovery_floor,
                Err(e) => {
                    tracing::warn!("pg_controldata before a start in recovery failed: {e}");
                    Default::default()
                }
            };
        }
        if let Some(pid) = self.postmaster_pid() {
            let running_as_replica = self.data_dir().join("standby.signal").exists();
            if running_as_replica == state.replica {
                self.write_config(&state)?;
                return self.pg_ctl_reload().await;
            }
            return Err(DriverError::Invalid(format!(
                "postmaster {pid} already runs as {}: stop it first",
                if running_as_replica {
                    "a replica"
                } else {
                    "a primary"
                }
            )));
        }
        self.write_config(&state)?;
        self.pg_ctl_start(timeout).await
    }

    /// Runs an operator script (`pre_promote`, `before_stop`) as the agent's user,
    /// without a shell, and waits for it; its exit code (`None`: killed by a signal).
    async fn run_script(&self, what: &str, line: &str) -> Result<Option<i32>> {
        let argv = shlex::split(line).unwrap_or_default();
        let Some((program, args)) = argv.split_first() else {
            return Err(DriverError::Config(format!("{what} is empty")));
        };
        tracing::info!("running the {what} script `{line}`");
        let status = tokio::process::Command::new(program)
            .args(args)
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| DriverError::Tool {
                tool: what.into(),
                output: format!("`{line}` could not start: {e}"),
            })?;
        tracing::info!("{what} script `{line}` exited with {status}");
        Ok(status.code())
    }

    pub(super) async fn do_archive_shutdown_checkpoint(&self) -> Result<()> {
        let cfg = self.cfg();
        let setting = |name: &str| {
            cfg.parameters
                .get(name)
                .or_else(|| cfg.dynamic_parameters.get(name))
                .and_then(|v| match v {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Bool(b) => Some(if *b { "on" } else { "off" }.into()),
                    _ => None,
                })
        };
        let mode = setting("archive_mode")
            .unwrap_or_default()
            .to_ascii_lowercase();
        let command = setting("archive_command").unwrap_or_default();
        if !matches!(mode.as_str(), "on" | "always" | "true") || command.trim().is_empty() {
            tracing::info!(
                "Not archiving latest checkpoint WAL file. Archiving is not configured."
            );
            return Ok(());
        }
        let Some(file) = self.controldata().await?.redo_wal_file else {
            return Err(DriverError::Tool {
                tool: "pg_controldata".into(),
                output: "Cannot extract latest checkpoint's WAL file name".into(),
            });
        };
        let path = self.data_dir.join("pg_wal").join(&file);
        let line = archiver_command(&command, &path.to_string_lossy(), &file);
        tracing::info!("archiving the WAL file {file} with the shutdown checkpoint");
        let status = tokio::process::Command::new("/bin/sh")
            .args(["-c", &line])
            .kill_on_drop(true)
            .status()
            .await
            .map_err(|e| DriverError::Tool {
                tool: "archive_command".into(),
                output: format!("`{line}` could not start: {e}"),
            })?;
        if !status.success() {
            return Err(DriverError::Tool {
                tool: "archive_command".into(),
                output: format!("`{line}` exited with {status}"),
            });
        }
        Ok(())
    }

    pub(super) async fn do_pre_promote(&self) -> Result<()> {
        let Some(line) = self.cfg().pre_promote.clone() else {
            return Ok(());
        };
        match self.run_script("pre_promote", &line).await? {
            Some(0) => Ok(()),
            code => Err(DriverError::Tool {
                tool: "pre_promote".into(),
                output: format!(
                    "`{line}` exited with {}: the promotion is cancelled",
                    code.map_or("a signal".to_string(), |c| c.to_string())
                ),
            }),
        }
    }

    pub(super) async fn do_stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        tracing::info!("stopping postgres ({mode} mode)");
        // A smart shutdown waits for every client, the kept connection included.
        self.drop_local_session().await;
        if self.postmaster_pid().is_some() {
            // Patroni runs it before every stop of a running server; the outcome only
            // gets logged.
            if let Some(line) = self.cfg().before_stop.clone() {
                if let Err(e) = self.run_script("before_stop", &line).await {
                    tracing::error!("{e}");
                }
            }
        }
        if let Some(pid) = self.postmaster_pid() {
            let m = match mode {
                StopMode::Smart => "smart",
                StopMode::Fast => "fast",
                StopMode::Immediate => "immediate",
            };
            // The postmaster's own shutdown signals (SIGTERM smart, SIGINT fast, SIGQUIT
            // immediate), sent directly: spawning pg_ctl costs tens of ms a switchover
            // would pay. pg_ctl only when we may not signal it (another OS user).
            // Either way we wait ourselves in 5 ms steps (pg_ctl -w polls every 100 ms).
            let sig = match mode {
                StopMode::Smart => libc::SIGTERM,
                StopMode::Fast => libc::SIGINT,
                StopMode::Immediate => libc::SIGQUIT,
            };
            let res = if pidfile::signal(pid, sig) {
                Ok(None)
            } else {
                let mut cmd = self.tool_cmd("pg_ctl", true)?;
                cmd.arg("stop")
                    .arg("-D")
                    .arg(self.data_dir())
                    .arg("-m")
                    .arg(m)
                    .arg("-W");
                self.runner
                    .run("pg_ctl stop", cmd, timeout + Duration::from_secs(10))
                    .await
                    .map(Some)
            };
            let signalled = match &res {
                Ok(None) => true,
                Ok(Some(o)) => o.success,
                Err(_) => false,
            };
            let started = std::time::Instant::now();
            while signalled && pidfile::process_exists(pid) && started.elapsed() < timeout {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            // The postmaster removes postmaster.pid as its very last step.
            while signalled && self.postmaster_pid().is_some() && started.elapsed() < timeout {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let ok = signalled && !pidfile::process_exists(pid);
            if !ok && self.postmaster_pid().is_some() {
                if mode != StopMode::Immediate {
                    let msg = match res {
                        Ok(Some(o)) => o.message(),
                        Ok(None) => "signalled directly".to_string(),
                        Err(e) => e.to_string(),
                    };
                    return Err(DriverError::StopFailed(format!(
                        "{m} stop of postmaster {pid} did not finish within {}s: {msg}",
                        timeout.as_secs_f64()
                    )));
                }
                // An immediate stop that did not work (stopped or stuck process):
                // SIGKILL; children notice the postmaster's death and exit.
                pidfile::signal(pid, libc::SIGKILL);
                for _ in 0..50 {
                    if !pidfile::process_exists(pid) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                if pidfile::process_exists(pid) {
                    return Err(DriverError::StopFailed(format!(
                        "postmaster {pid} survived SIGKILL"
                    )));
                }
            }
        }
        let c = self.controldata().await.ok();
        Ok(StopOutcome {
            checkpoint_lsn: c
                .filter(|c| c.is_clean_shutdown())
                .and_then(|c| c.checkpoint_lsn),
        })
    }

    pub(super) async fn do_promote(&self, timeout: Duration) -> Result<()> {
        tracing::info!("promoting postgres");
        // The kept connection: no new backend on the failover's critical path.
        let client = self.local_session(SQL_TIMEOUT).await?;
        let promoted = self.promote_on(&client, timeout).await;
        if promoted.is_err() {
            self.drop_local_session().await;
        }
        promoted
    }

    async fn promote_on(&self, client: &tokio_postgres::Client, timeout: Duration) -> Result<()> {
        let secs = timeout.as_secs().max(1);
        // Simple-protocol queries: one round trip each (an unprepared extended-protocol
        // query costs a second one to prepare). pg_promote(wait => true) checks for
        // the end of recovery only every 100 ms; polling ourselves every 2 ms shortens
        // the write gap of a failover.
        client
            .simple_query(PROMOTE_REQUEST)
            .await
            .map_err(sql::query_error)?;
        let started = std::time::Instant::now();
        let mut signalled = started;
        while in_recovery(client).await? {
            // The startup process can miss the request: when it arrives while the
            // startup process waits for a walreceiver that is starting (the upstream
            // is gone), it is noticed there, but the startup process then sleeps out
            // the rest of wal_retrieve_retry_interval (5 s by default) before it
            // checks again, and nothing wakes it. Asking again wakes it at once.
            if signalled.elapsed() >= PROMOTE_RESIGNAL {
                signalled = std::time::Instant::now();
                if let Err(e) = client.simple_query(PROMOTE_REQUEST).await {
                    // Recovery may have ended between the two calls.
                    tracing::debug!("repeating the promotion request failed: {e}");
                }
            }
            if started.elapsed() > timeout {
                return Err(DriverError::Timeout(format!(
                    "promotion did not finish within {secs}s"
                )));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        Ok(())
    }

    /// After the server left recovery (it accepts writes and the node already
    /// reports itself primary): its configuration for the new role, without
    /// `primary_conninfo` and the other recovery settings, and a reload.
    pub(super) async fn do_finish_promotion(&self) -> Result<()> {
        let mut state = self.state();
        state.replica = false;
        state.upstream = None;
        state.recovery.clear();
        self.write_config(&state)?;
        // Over the kept connection: spawning pg_ctl costs a fork and exec.
        let reloaded = match self.local_session(SQL_TIMEOUT).await {
            Ok(client) => client
                .simple_query("SELECT pg_reload_conf()")
                .await
                .map(|_| ())
                .map_err(sql::query_error),
            Err(e) => Err(e),
        };
        if reloaded.is_err() {
            self.drop_local_session().await;
        }
        reloaded
    }

    pub(super) async fn do_follow(&self, upstream: Option<&Upstream>) -> Result<()> {
        match upstream {
            Some(u) => tracing::info!("pointing the replica at its new upstream {}", u.name),
            None => tracing::info!("pointing the replica at no upstream"),
        }
        if self.postmaster_pid().is_some() && !self.starting_as_standby() {
            let client = self.connect_local(SQL_TIMEOUT).await?;
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(sql::query_error)?;
            let in_recovery: bool = row.get(0);
            if !in_recovery {
                return Err(DriverError::Invalid(
                    "server runs as a primary: stop it and start it as a replica to demote".into(),
                ));
            }
        }
        let mut state = self.state();
        state.replica = true;
        state.upstream = upstream.map(UpstreamRecord::from);
        self.write_config(&state)?;
        // PostgreSQL 13+ re-reads primary_conninfo and primary_slot_name on reload.
        self.pg_ctl_reload().await
    }

    /// A postmaster still starting up (it answers no query yet) with `standby.signal`:
    /// it comes up in recovery, and its startup process re-reads `primary_conninfo` on
    /// reload (PostgreSQL 13+), also before the server is consistent.
    fn starting_as_standby(&self) -> bool {
        let starting = matches!(
            self.pid_state(),
            PidFileState::Alive { ref status, stopped: false, .. } if status == "starting"
        );
        starting && self.data_dir().join("standby.signal").exists()
    }

    pub(super) async fn do_remove(&self) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            return Err(DriverError::Invalid(format!(
                "postmaster {pid} runs on the data directory: stop it first"
            )));
        }
        datadir::remove_contents(self.data_dir())?;
        rewind_mark::clear(self.data_dir());
        self.set_state(ManagedState::default());
        Ok(())
    }
}

/// `archive_command` with Postgres' placeholders filled in for one WAL file: `%p` its
/// path, `%f` its name, `%r` the oldest file to keep (the first one: keep everything),
/// `%%` a percent sign; any other `%` stays as it is.
fn archiver_command(command: &str, path: &str, file: &str) -> String {
    let mut out = String::new();
    let mut chars = command.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('p') => out.push_str(path),
            Some('f') => out.push_str(file),
            Some('r') => out.push_str("000000010000000000000001"),
            Some('%') => out.push('%'),
            _ => {
                out.push('%');
                continue;
            }
        }
        chars.next();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::archiver_command;

    #[test]
    fn archive_command_placeholders() {
        assert_eq!(
            archiver_command("cp %p /a/%f && echo 100%% %r %x%", "/d/pg_wal/F", "F"),
            "cp /d/pg_wal/F /a/F && echo 100% 000000010000000000000001 %x%"
        );
    }
}
