//! `PgDriver`: ha-core's `Postgres` trait on a real server.

use crate::binaries::Binaries;
use crate::config::{is_basebackup, Credentials, Endpoint, PgConfig, ReplicaMethod};
use crate::conninfo::{self, Secret};
use crate::controldata::ControlData;
use crate::datadir::{self, DirContents};
use crate::error::{DriverError, Result};
use crate::pgpass;
use crate::pidfile::{self, PidFileState};
use crate::progress;
use crate::rejection;
use crate::render::{self, ManagedState, UpstreamRecord, MANAGED_CONF};
use crate::runner::{tail_chars, OsUser, Runner};
use crate::server_facts::ServerFacts;
use crate::slots;
use crate::sql;
use crate::timeline::{self, HistoryEntry, LocalPosition};
use async_trait::async_trait;
use ha_core::{
    parse_lsn, DataDirState, DynamicPostgresql, ObservedSlot, PendingParameter, PgError,
    PgObservation, PgProcess, Postgres, ReplicationConnection, SlotChanges, SlotKind,
    SlotStateFile, StartRole, StopMode, StopOutcome, Upstream,
};
use rewind_mark::RewindMark;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio_postgres::SimpleQueryMessage;

/// SQL for a running replica's timeline: the walreceiver's while there is one, and
/// never older than the minimum recovery point's or the last restartpoint's. The last
/// restartpoint alone lags by minutes after pg_rewind or a timeline switch, which made a
/// healthy replica look behind the leader as soon as its walreceiver stopped (the
/// primary had just died) and got it restarted for a divergence check mid-failover.
const REPLICA_TIMELINE: &str = "GREATEST((SELECT received_tli FROM pg_stat_wal_receiver), \
     (SELECT timeline_id FROM pg_control_checkpoint()), \
     (SELECT min_recovery_end_timeline FROM pg_control_recovery()))";

/// Where an operator fixes a parameter postgres refuses.
const FIX_PARAMETERS: &str = "Fix or remove that setting in the agent's configuration file \
     (postgresql.parameters, or bootstrap.dcs.postgresql.parameters before the cluster exists) \
     or in the cluster's dynamic configuration (fullautoctl edit-config), then start the agent again";

/// Connect timeout of the health query: a SIGSTOPped postmaster never answers.
const HEALTH_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// Budget for the health query itself once connected.
const HEALTH_QUERY_TIMEOUT: Duration = Duration::from_secs(1);
/// Timeout of the driver's own short SQL (promote excluded).
const SQL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a promotion may show no effect before it is requested again (see
/// `do_promote`).
const PROMOTE_RESIGNAL: Duration = Duration::from_millis(50);
/// pg_basebackup attempts per clone, and the pause between them (Patroni's).
const BASEBACKUP_ATTEMPTS: u32 = 2;
const BASEBACKUP_RETRY_PAUSE: Duration = Duration::from_secs(5);

/// Short tools (pg_controldata, pg_ctl reload, psql).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Long tools without a natural bound (initdb, single-user recovery, pg_rewind).
const LONG_TOOL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Custom replica methods may restore large backups.
const REPLICA_METHOD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

mod bootstrap;
mod rewind_mark;
mod sync_wake;

/// The local PostgreSQL server, driven through its own tools and SQL.
#[derive(Debug)]
pub struct PgDriver {
    cfg: RwLock<Arc<PgConfig>>,
    data_dir: PathBuf,
    bins: Binaries,
    runner: Runner,
    state: Mutex<ManagedState>,
    /// The highest timeline a running replica reported, with its postmaster's start time.
    replica_timeline: Mutex<Option<(String, u64)>>,
    /// The system identifier pg_controldata gave for the running postmaster:
    /// observations of the same postmaster reuse it.
    running_sysid: Mutex<Option<RunningPostmaster>>,
    /// How often a long operation (clone, rewind, start) logs its progress, in ms.
    progress_every_ms: std::sync::atomic::AtomicU64,
}

/// A running postmaster (pid and start time) and its cluster's system identifier.
#[derive(Debug, Clone)]
struct RunningPostmaster {
    pid: i32,
    started: Option<String>,
    system_identifier: String,
}

fn lock_or_recover<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl PgDriver {
    /// Validates `cfg`, finds the binaries and the OS user. Fails when a binary is
    /// missing (naming the package) or the OS user does not exist.
    pub fn new(mut cfg: PgConfig) -> Result<Self> {
        cfg.validate()?;
        let bins = Binaries::discover_named(cfg.bin_dir.as_deref(), &cfg.bin_name)?;
        let user = OsUser::resolve(cfg.os_user.as_deref())?;
        default_pgpass(&mut cfg, &user);
        let state = render::read_state(&cfg.conf_dir());
        Ok(PgDriver {
            data_dir: cfg.data_dir.clone(),
            cfg: RwLock::new(Arc::new(cfg)),
            bins,
            runner: Runner::new(user),
            state: Mutex::new(state),
            replica_timeline: Mutex::new(None),
            running_sysid: Mutex::new(None),
            progress_every_ms: std::sync::atomic::AtomicU64::new(10_000),
        })
    }

    /// How often a long operation (pg_basebackup, pg_rewind, a start that replays
    /// WAL) logs a progress line (10 s unless set; the agent uses `loop_wait`).
    pub fn set_progress_interval(&self, every: Duration) {
        let ms = u64::try_from(every.as_millis())
            .unwrap_or(u64::MAX)
            .max(100);
        self.progress_every_ms
            .store(ms, std::sync::atomic::Ordering::Relaxed);
    }

    fn progress_every(&self) -> Duration {
        Duration::from_millis(
            self.progress_every_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<PgConfig> {
        match self.cfg.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn cfg(&self) -> Arc<PgConfig> {
        self.config()
    }

    /// Replaces the configuration (e.g. new parameters from the DCS); takes effect
    /// at the next `reload`, start or role change. The data directory, bin dir and OS
    /// user cannot change under a driver.
    pub fn update_config(&self, mut cfg: PgConfig) -> Result<()> {
        cfg.validate()?;
        default_pgpass(&mut cfg, self.os_user());
        let cur = self.cfg();
        if cfg.data_dir != cur.data_dir
            || cfg.conf_dir() != cur.conf_dir()
            || cfg.bin_dir != cur.bin_dir
            || cfg.bin_name != cur.bin_name
            || cfg.os_user != cur.os_user
        {
            return Err(DriverError::Config(
                "data_dir, config_dir, bin_dir, bin_name and os_user cannot change while the agent runs: restart it"
                    .into(),
            ));
        }
        match self.cfg.write() {
            Ok(mut c) => *c = Arc::new(cfg),
            Err(p) => *p.into_inner() = Arc::new(cfg),
        }
        Ok(())
    }

    /// The binaries in use.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// The OS user server processes run as.
    pub fn os_user(&self) -> &OsUser {
        self.runner.user()
    }

    /// PGDATA.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Writes a file of the agent's own into the data directory (owned by the server's
    /// OS user, mode 0600, atomically), only when the directory holds a cluster:
    /// nothing may appear in a directory a clone or bootstrap is about to fill.
    /// Returns whether it was written.
    pub fn write_agent_file(&self, name: &str, contents: &str) -> Result<bool> {
        if !self.data_dir.join("PG_VERSION").exists() {
            return Ok(false);
        }
        self.runner
            .write_file(&self.data_dir.join(name), contents, 0o600)?;
        Ok(true)
    }

    fn state(&self) -> ManagedState {
        match self.state.lock() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    fn set_state(&self, s: ManagedState) {
        match self.state.lock() {
            Ok(mut g) => *g = s,
            Err(p) => *p.into_inner() = s,
        }
    }

    fn tool_cmd(&self, name: &str, english: bool) -> Result<tokio::process::Command> {
        let mut cmd = self.runner.command(&self.bins.tool(name)?, english);
        // A cancelled or timed-out tool takes its helpers with it (pg_basebackup's WAL
        // streamer); pg_ctl and postgres must not: the postmaster outlives pg_ctl.
        if !matches!(name, "pg_ctl" | "postgres") {
            cmd.process_group(0);
        }
        Ok(cmd)
    }

    /// Reads pg_control of the data directory.
    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = self.tool_cmd("pg_controldata", true)?;
        cmd.arg("-D").arg(self.data_dir());
        let out = self
            .runner
            .run_ok("pg_controldata", cmd, TOOL_TIMEOUT)
            .await?;
        ControlData::parse(&out.stdout).ok_or_else(|| DriverError::DataDir {
            path: self.data_dir().to_path_buf(),
            reason: "pg_controldata printed no system identifier: pg_control is damaged".into(),
        })
    }

    /// What the data directory holds, for observations.
    pub async fn data_dir_state(&self) -> (DataDirState, Option<ControlData>) {
        match datadir::contents(self.data_dir()) {
            Ok(DirContents::Missing) | Ok(DirContents::Empty) => (DataDirState::Empty, None),
            Ok(DirContents::Foreign(r)) => (DataDirState::Invalid(r), None),
            Err(e) => (DataDirState::Invalid(e.to_string()), None),
            Ok(DirContents::Cluster) => {
                if let Err(e) = datadir::check_access(self.data_dir(), self.os_user()) {
                    return (DataDirState::Invalid(e.to_string()), None);
                }
                match self.controldata().await {
                    Ok(c) => (
                        DataDirState::Initialized {
                            system_identifier: c.system_identifier.clone(),
                        },
                        Some(c),
                    ),
                    Err(e) => (DataDirState::Invalid(e.to_string()), None),
                }
            }
        }
    }

    /// Fails unless the data directory holds the cluster with `expected` system
    /// identifier.
    pub async fn check_system_identifier(&self, expected: &str) -> Result<()> {
        let c = self.controldata().await?;
        if c.system_identifier != expected {
            return Err(DriverError::SystemIdMismatch {
                path: self.data_dir().to_path_buf(),
                found: c.system_identifier,
                expected: expected.into(),
            });
        }
        Ok(())
    }

    /// A fresh superuser connection to the local server (through the unix socket
    /// with `use_unix_socket`).
    pub async fn connect_local(&self, timeout: Duration) -> Result<tokio_postgres::Client> {
        let cfg = self.cfg();
        sql::connect(
            &cfg.local_superuser_endpoint()?,
            &cfg.authentication.superuser,
            "postgres",
            timeout,
            Some(&self.os_user().home),
        )
        .await
    }

    /// A connection as `creds` to `to`, TLS as the role's options ask.
    async fn connect_as(
        &self,
        to: &Endpoint,
        creds: &Credentials,
        dbname: &str,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client> {
        sql::connect(to, creds, dbname, timeout, Some(&self.os_user().home)).await
    }

    /// The password file tools read (`postgresql.pgpass`, else `~/pgpass`).
    fn pgpass_path(&self) -> PathBuf {
        self.cfg()
            .pgpass
            .clone()
            .unwrap_or_else(|| self.os_user().home.join("pgpass"))
    }

    /// Writes `creds`' password for `to` into the password file and points `cmd`'s
    /// `PGPASSFILE` at it, as Patroni does before running a tool; no password, no
    /// file.
    fn hand_password(
        &self,
        cmd: &mut tokio::process::Command,
        creds: &Credentials,
        to: &Endpoint,
    ) -> Result<()> {
        let path = self.pgpass_path();
        if pgpass::write(&self.runner, &path, creds, to)? {
            cmd.env("PGPASSFILE", &path);
        }
        Ok(())
    }

    /// Writes the managed conf, the include line, pg_hba.conf and standby.signal for
    /// `state`.
    fn write_config(&self, state: &ManagedState) -> Result<()> {
        let dir = self.data_dir();
        let conf_dir = self.cfg().conf_dir();
        if !conf_dir.exists() {
            self.runner.create_dir(&conf_dir, 0o700)?;
        }
        // primary_conninfo names the password file: it must hold the replication
        // role's line (a tool run since may have written another role's).
        if let Some(up) = state.upstream.as_ref().filter(|_| state.replica) {
            let up = up.to_upstream();
            if up.streams() && self.cfg().pgpass.is_some() {
                let cfg = self.cfg();
                let (creds, to) = render::primary_conninfo_target(&cfg, &up);
                pgpass::write(&self.runner, &self.pgpass_path(), creds, &to)?;
            }
        }
        self.write_main_conf()?;
        self.runner.write_file(
            &conf_dir.join(MANAGED_CONF),
            &render::managed_conf(&self.cfg(), state, &ServerFacts::read(dir))?,
            0o600,
        )?;
        for (file, text) in [
            ("pg_hba.conf", render::pg_hba(&self.cfg())),
            ("pg_ident.conf", render::pg_ident(&self.cfg())),
        ] {
            let path = conf_dir.join(file);
            match text {
                Some(text) => self.runner.write_file(&path, &text, 0o600)?,
                // A config_dir apart from the data directory starts with the data
                // directory's file (initdb's, or the one a clone brought).
                None if !path.exists() && conf_dir != dir => {
                    let original = dir.join(file);
                    let text = std::fs::read_to_string(&original)
                        .map_err(|e| DriverError::io("read", &original, e))?;
                    self.runner.write_file(&path, &text, 0o600)?;
                }
                None => {}
            }
        }
        let signal = dir.join("standby.signal");
        if state.replica {
            if !signal.exists() {
                self.runner.write_file(&signal, "", 0o600)?;
            }
        } else if signal.exists() {
            std::fs::remove_file(&signal).map_err(|e| DriverError::io("remove", &signal, e))?;
        }
        let log = self.cfg().log_file();
        if let Some(parent) = log.parent() {
            if !parent.exists() {
                self.runner.create_dir(parent, 0o700)?;
            }
        }
        self.set_state(state.clone());
        Ok(())
    }

    /// postgresql.conf: initdb's (or the custom bootstrap's) file with the include
    /// line of the managed settings, or with `custom_conf` one the driver writes that
    /// includes that file instead (the original kept as `postgresql.base.conf`, and
    /// restored when `custom_conf` goes away again).
    fn write_main_conf(&self) -> Result<()> {
        let dir = self.cfg().conf_dir();
        let conf = dir.join("postgresql.conf");
        let saved = dir.join(render::BASE_CONF);
        // A config_dir apart from the data directory starts from the data
        // directory's postgresql.conf.
        let source = if conf.exists() {
            conf.clone()
        } else {
            self.data_dir().join("postgresql.conf")
        };
        let current =
            std::fs::read_to_string(&source).map_err(|e| DriverError::io("read", &source, e))?;
        let own = render::is_custom_conf_main(&current) || render::is_patroni_main(&current);
        let wanted = match &self.cfg().custom_conf {
            Some(custom) => {
                let path = dir.join(custom);
                if !path.is_file() {
                    return Err(DriverError::Config(format!(
                        "custom_conf {} is not a file: create it or remove custom_conf",
                        path.display()
                    )));
                }
                if !own && !saved.exists() {
                    self.runner.write_file(&saved, &current, 0o600)?;
                }
                render::custom_conf_main(custom)
            }
            None => render::main_conf(&current, std::fs::read_to_string(&saved).ok().as_deref()),
        };
        if wanted != current || source != conf {
            self.runner.write_file(&conf, &wanted, 0o600)?;
        }
        Ok(())
    }

    fn pid_state(&self) -> PidFileState {
        pidfile::read(self.data_dir())
    }

    /// `config_file=<config_dir>/postgresql.conf` when config_dir is apart from the
    /// data directory.
    fn config_file_option(&self) -> Option<String> {
        let cfg = self.cfg();
        let dir = cfg.conf_dir();
        (dir != cfg.data_dir)
            .then(|| format!("config_file={}", dir.join("postgresql.conf").display()))
    }

    /// Whether a postmaster runs on the data directory (per `postmaster.pid`).
    pub fn postmaster_running(&self) -> bool {
        self.postmaster_pid().is_some()
    }

    fn postmaster_pid(&self) -> Option<i32> {
        match self.pid_state() {
            PidFileState::Alive { pid, .. } => Some(pid),
            _ => None,
        }
    }

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

    fn log_tail(&self) -> String {
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

    async fn pg_ctl_reload(&self) -> Result<()> {
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

    /// The health query alone, on a fresh connection with 1 s connect and 1 s query
    /// budgets: `Err(Timeout)` for a server that does not answer (SIGSTOP, stuck I/O).
    pub async fn probe(&self) -> Result<()> {
        self.health().await.map(|_| ())
    }

    /// Where this server's WAL is right now, read by one query (the HA loop's
    /// observation can be a cycle old, and under writes a cycle is many megabytes):
    /// what peers compare when they pick a leader or check a switchover candidate.
    pub async fn wal_positions(&self) -> Result<WalPositions> {
        let h = self.health().await?;
        Ok(WalPositions {
            in_recovery: h.in_recovery,
            wal_lsn: h.wal_lsn,
            receive_lsn: h.receive_lsn,
            replay_lsn: h.replay_lsn,
        })
    }

    async fn health(&self) -> Result<Health> {
        let client = self.connect_local(HEALTH_CONNECT_TIMEOUT).await?;
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
            Err(_) => return Err(DriverError::Timeout("health query timed out".into())),
            Ok(Err(e)) => return Err(sql::query_error(e)),
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

    async fn observe_inner(&self) -> PgObservation {
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

    /// Gives the configured superuser its password, creating the role if needed (only
    /// when a password is configured, as Patroni): after a custom bootstrap the roles
    /// are the backup's, whose superuser password may differ from this node's.
    async fn ensure_superuser(&self) -> Result<()> {
        let su = &self.cfg().authentication.superuser;
        let Some(password) = &su.password else {
            return Ok(());
        };
        let client = self.connect_local(SQL_TIMEOUT).await?;
        let stmts = format!(
            "DO $fa$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN CREATE ROLE {id}; END IF; END $fa$;
             ALTER ROLE {id} WITH LOGIN SUPERUSER PASSWORD {pw};\n",
            lit = sql::literal(&su.username),
            id = sql::ident(&su.username),
            pw = sql::literal(password),
        );
        sql::batch(&client, &stmts, SQL_TIMEOUT).await
    }

    async fn ensure_roles(&self) -> Result<()> {
        let client = self.connect_local(SQL_TIMEOUT).await?;
        let su = &self.cfg().authentication.superuser.username;
        let mut stmts = String::new();
        let role_sql = |name: &str, password: &Option<String>, attrs: &str| -> String {
            let pw = password
                .as_ref()
                .map(|p| format!(" PASSWORD {}", sql::literal(p)))
                .unwrap_or_default();
            format!(
                "DO $fa$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = {lit}) THEN CREATE ROLE {id}; END IF; END $fa$;
                 ALTER ROLE {id} WITH {attrs}{pw};\n",
                lit = sql::literal(name),
                id = sql::ident(name),
            )
        };
        let repl = &self.cfg().authentication.replication;
        if &repl.username != su {
            stmts.push_str(&role_sql(
                &repl.username,
                &repl.password,
                "LOGIN REPLICATION",
            ));
        }
        if let Some(rw) = &self.cfg().authentication.rewind {
            if &rw.username != su {
                stmts.push_str(&role_sql(&rw.username, &rw.password, "LOGIN"));
                let id = sql::ident(&rw.username);
                for f in [
                    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
                    "pg_catalog.pg_stat_file(text, boolean)",
                    "pg_catalog.pg_read_binary_file(text)",
                    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
                ] {
                    stmts.push_str(&format!("GRANT EXECUTE ON FUNCTION {f} TO {id};\n"));
                }
            }
        }
        // `bootstrap.users`, except the roles configured above.
        let rewind = self
            .cfg()
            .authentication
            .rewind
            .as_ref()
            .map(|r| r.username.clone());
        for u in &self.cfg().bootstrap_users {
            if &u.name == su
                || u.name == repl.username
                || rewind.as_deref() == Some(u.name.as_str())
            {
                continue;
            }
            let Some(attrs) = u.attributes() else {
                tracing::error!(
                    "bootstrap.users.{}: options must be role attributes such as CREATEDB; the role is not created",
                    u.name
                );
                continue;
            };
            stmts.push_str(&role_sql(&u.name, &u.password, &attrs));
        }
        if !stmts.is_empty() {
            sql::batch(&client, &stmts, SQL_TIMEOUT).await?;
        }
        Ok(())
    }

    async fn check_reachable(&self, source: &Upstream) -> Result<()> {
        let addr = format!("{}:{}", source.host, source.port);
        let unreachable = |reason: String| DriverError::SourceUnreachable {
            name: source.name.clone(),
            host: source.host.clone(),
            port: source.port,
            reason,
        };
        match tokio::time::timeout(
            Duration::from_secs(3),
            tokio::net::TcpStream::connect(&addr),
        )
        .await
        {
            Err(_) => Err(unreachable("no answer within 3s".into())),
            Ok(Err(e)) => Err(unreachable(e.to_string())),
            Ok(Ok(_)) => Ok(()),
        }
    }

    /// pg_basebackup from `source`, tried twice 5 s apart as Patroni does: a source
    /// that restarts mid-copy (an operator's restart, a switchover) ends the stream,
    /// and a second attempt usually succeeds. A full disk is not retried.
    async fn basebackup(&self, source: &Upstream) -> Result<()> {
        let mut attempt = 1;
        loop {
            match self.basebackup_once(source).await {
                Err(e)
                    if attempt < BASEBACKUP_ATTEMPTS
                        && !matches!(e, DriverError::DiskFull { .. }) =>
                {
                    tracing::warn!("pg_basebackup failed, trying again in 5 seconds: {e}");
                    datadir::remove_contents(self.data_dir())?;
                    tokio::time::sleep(BASEBACKUP_RETRY_PAUSE).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    async fn basebackup_once(&self, source: &Upstream) -> Result<()> {
        self.check_reachable(source).await?;
        let cfg = self.cfg();
        let auth = &cfg.authentication.replication;
        let to = Endpoint::tcp(&source.host, source.port);
        let conn = conninfo::dsn(&conninfo::params(auth, &to, "postgres", Secret::Omit, None));
        let mut cmd = self.tool_cmd("pg_basebackup", true)?;
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-X")
            .arg("stream")
            .arg(format!("--dbname={conn}"))
            .arg("--no-password");
        if !self.cfg().basebackup.contains("checkpoint") {
            cmd.arg("--checkpoint=fast");
        }
        cmd.args(self.cfg().basebackup.to_args()?);
        if self.cfg().fsync_disabled() && !self.cfg().basebackup.contains("no-sync") {
            cmd.arg("--no-sync");
        }
        self.hand_password(&mut cmd, auth, &to)?;
        let out = progress::logged(
            self.runner
                .run("pg_basebackup", cmd, REPLICA_METHOD_TIMEOUT),
            self.progress_every(),
            progress::copy_reporter("pg_basebackup", self.data_dir()),
        )
        .await?;
        if out.success {
            return Ok(());
        }
        let msg = out.message();
        if msg.contains("No space left on device") {
            return Err(DriverError::DiskFull {
                tool: "pg_basebackup".into(),
                path: self.data_dir().to_path_buf(),
                output: msg,
            });
        }
        if msg.contains("could not connect") || msg.contains("Connection refused") {
            return Err(DriverError::SourceUnreachable {
                name: source.name.clone(),
                host: source.host.clone(),
                port: source.port,
                reason: msg,
            });
        }
        Err(DriverError::Tool {
            tool: "pg_basebackup".into(),
            output: msg,
        })
    }

    async fn custom_method(
        &self,
        name: &str,
        m: &ReplicaMethod,
        source: Option<&Upstream>,
    ) -> Result<()> {
        let cfg = self.cfg();
        let auth = &cfg.authentication.replication;
        let to = source
            .filter(|s| s.streams())
            .map(|s| Endpoint::tcp(&s.host, s.port));
        let conn = to
            .as_ref()
            .map(|to| conninfo::uri(auth, to, "postgres"))
            .unwrap_or_default();
        let mut args = Vec::new();
        if !m.no_params {
            args.extend([
                format!("--scope={}", cfg.scope.clone().unwrap_or_default()),
                "--role=replica".to_string(),
                format!("--datadir={}", self.data_dir().display()),
                format!("--connstring={conn}"),
            ]);
        }
        for (k, v) in &m.extra {
            args.push(format!("--{k}={}", crate::config::json_scalar(v)?));
        }
        let mut cmd = self.shell_command(&m.command, &args);
        if let Some(to) = &to {
            self.hand_password(&mut cmd, auth, to)?;
        }
        self.runner
            .run_ok(
                &format!("replica method {name}"),
                cmd,
                REPLICA_METHOD_TIMEOUT,
            )
            .await?;
        Ok(())
    }

    /// `command` run through `sh -c` as the OS user, with `args` appended shell-quoted.
    fn shell_command(&self, command: &str, args: &[String]) -> tokio::process::Command {
        let mut line = command.to_string();
        for a in args {
            line.push(' ');
            line.push_str(&shell_quote(a));
        }
        let mut cmd = self.runner.command(Path::new("/bin/sh"), false);
        // Its own process group: cancelling the command ends what the script started.
        cmd.arg("-c").arg(line).process_group(0);
        cmd
    }

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
        let cfg = self.cfg();
        match self
            .connect_as(
                &Endpoint::tcp(&source.host, source.port),
                &cfg.authentication.superuser,
                "postgres",
                Duration::from_secs(3),
            )
            .await
        {
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

    async fn do_start(&self, role: &StartRole, timeout: Duration) -> Result<()> {
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

    async fn do_archive_shutdown_checkpoint(&self) -> Result<()> {
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

    async fn do_pre_promote(&self) -> Result<()> {
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

    async fn do_stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome> {
        tracing::info!("stopping postgres ({mode} mode)");
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

    /// The data directory, created if missing, for a bootstrap or clone to fill: one
    /// that holds a cluster is refused with `refusal`, one with other files too.
    fn claim_empty_data_dir(&self, refusal: &str) -> Result<PathBuf> {
        let dir = self.data_dir().to_path_buf();
        match datadir::contents(&dir)? {
            DirContents::Missing | DirContents::Empty => self.runner.create_dir(&dir, 0o700)?,
            DirContents::Cluster => {
                return Err(DriverError::DataDir {
                    path: dir,
                    reason: refusal.into(),
                })
            }
            DirContents::Foreign(reason) => return Err(DriverError::DataDir { path: dir, reason }),
        }
        Ok(dir)
    }

    /// Fills the empty data directory with the configured replica methods, in order,
    /// until one leaves a cluster. Without a `source` (no leader) only the methods
    /// marked `no_leader` are tried, with an empty `--connstring`.
    async fn do_clone(&self, source: Option<&Upstream>) -> Result<()> {
        let dir = self.claim_empty_data_dir(
            "already holds a cluster; clone never overwrites a data directory (remove it only if it is disposable)",
        )?;
        let cfg = self.cfg();
        let mut last_err = None;
        let mut tried = 0;
        // A standby cluster's first node clones with the section's methods, if any.
        let methods = source
            .and_then(|s| s.remote.as_ref())
            .map(|r| r.create_replica_methods.clone())
            .filter(|m| !m.is_empty())
            .unwrap_or_else(|| cfg.replica_methods());
        for name in methods {
            let (res, keep) = if is_basebackup(&name) {
                // An archive-only standby cluster source has nothing to copy from.
                let Some(source) = source.filter(|s| s.streams()) else {
                    continue;
                };
                tracing::info!(source = %source.name, "creating replica with pg_basebackup");
                (self.basebackup(source).await, false)
            } else {
                let m = cfg.replica_method(&name)?;
                if source.is_none() && !m.no_leader {
                    continue;
                }
                tracing::info!(method = %name, source = ?source.map(|s| &s.name), "creating replica with a custom method");
                if !m.keep_data {
                    self.runner.vacate_empty_dir(&dir)?;
                }
                let ran = self.custom_method(&name, &m, source).await;
                if datadir::contents(&dir)? == DirContents::Missing {
                    self.runner.create_dir(&dir, 0o700)?;
                }
                (ran, m.keep_data)
            };
            tried += 1;
            match res {
                Ok(()) if datadir::contents(&dir)? == DirContents::Cluster => {
                    tracing::info!(method = %name, "replica created");
                    last_err = None;
                    break;
                }
                Ok(()) => {
                    last_err = Some(DriverError::Tool {
                        tool: format!("replica method {name}"),
                        output: "succeeded but left no cluster in the data directory".into(),
                    })
                }
                Err(e) => {
                    tracing::warn!(method = %name, error = %e, "replica creation method failed");
                    last_err = Some(e);
                }
            }
            // The directory was empty before we started: what is in it is ours.
            if !keep {
                datadir::remove_contents(&dir)?;
            }
        }
        if tried == 0 {
            return Err(DriverError::Invalid(if source.is_some() {
                "no replica creation method applies (pg_basebackup needs a host to copy from)"
                    .into()
            } else {
                "no replica creation method works without a leader (none has no_leader: true)"
                    .into()
            }));
        }
        if let Some(e) = last_err {
            return Err(e);
        }
        self.runner.own(&dir, 0o700)?;
        let state = ManagedState {
            upstream: source.map(UpstreamRecord::from),
            replica: true,
            ..Default::default()
        };
        self.write_config(&state)
    }

    async fn do_promote(&self, timeout: Duration) -> Result<()> {
        tracing::info!("promoting postgres");
        let client = self.connect_local(SQL_TIMEOUT).await?;
        let secs = timeout.as_secs().max(1);
        // pg_promote(wait => true) checks for the end of recovery only every 100 ms;
        // polling ourselves every 2 ms shortens the write gap of a failover.
        client
            .query_one("SELECT pg_is_in_recovery() AND pg_promote(false)", &[])
            .await
            .map_err(sql::query_error)?;
        let started = std::time::Instant::now();
        let mut signalled = started;
        loop {
            let row = client
                .query_one("SELECT pg_is_in_recovery()", &[])
                .await
                .map_err(sql::query_error)?;
            let in_recovery: bool = row.get(0);
            if !in_recovery {
                break;
            }
            // The startup process can miss the request: when it arrives while the
            // startup process waits for a walreceiver that is starting (the upstream
            // is gone), it is noticed there, but the startup process then sleeps out
            // the rest of wal_retrieve_retry_interval (5 s by default) before it
            // checks again, and nothing wakes it. Asking again wakes it at once.
            if signalled.elapsed() >= PROMOTE_RESIGNAL {
                signalled = std::time::Instant::now();
                if let Err(e) = client
                    .query_one("SELECT pg_is_in_recovery() AND pg_promote(false)", &[])
                    .await
                {
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
        let mut state = self.state();
        state.replica = false;
        state.upstream = None;
        state.recovery.clear();
        self.write_config(&state)?;
        // Over the open connection: spawning pg_ctl would delay the end of the
        // promotion (and so the moment the node reports itself primary).
        client
            .batch_execute("SELECT pg_reload_conf()")
            .await
            .map_err(sql::query_error)
    }

    async fn do_follow(&self, upstream: Option<&Upstream>) -> Result<()> {
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

    async fn do_needs_rewind(&self, source: &Upstream) -> Result<bool> {
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

    async fn do_rewind(&self, source: &Upstream) -> Result<()> {
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
        if local_tl == source_tl
            && timeline::histories_conflict(&self.local_history(local_tl), &history)
        {
            return Err(DriverError::Invalid(format!(
                "timeline {local_tl} here forked from another place than timeline {source_tl} \
                 on {}: pg_rewind cannot repair equal timeline numbers; reinitialize this member \
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

    /// Connects as the superuser to another member's server.
    async fn connect_peer(&self, peer: &Upstream) -> Result<tokio_postgres::Client> {
        self.connect_as(
            &Endpoint::tcp(&peer.host, peer.port),
            &self.cfg().authentication.superuser,
            "postgres",
            SQL_TIMEOUT,
        )
        .await
    }

    /// Connects as the superuser to database `dbname` of the local server.
    async fn connect_local_db(&self, dbname: &str) -> Result<tokio_postgres::Client> {
        let cfg = self.cfg();
        self.connect_as(
            &cfg.local_superuser_endpoint()?,
            &cfg.authentication.superuser,
            dbname,
            SQL_TIMEOUT,
        )
        .await
    }

    async fn do_apply_slot_changes(&self, changes: &SlotChanges) -> Result<()> {
        let names = changes
            .create
            .iter()
            .map(|s| &s.name)
            .chain(changes.advance.iter().map(|a| &a.name))
            .chain(changes.drop.iter());
        for name in names {
            if !slots::is_valid_slot_name(name) {
                return Err(DriverError::Invalid(format!(
                    "`{name}` is not a valid slot name (lowercase letters, digits, _; at most 63)"
                )));
            }
        }
        let client = self.connect_local(SQL_TIMEOUT).await?;
        // Every change is tried: one failing slot must not hold up the others.
        let mut failures: Vec<String> = Vec::new();
        for name in &changes.drop {
            // A consumer may have connected since the observation: such a slot stays.
            let r = client
                .execute(
                    "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots \
                     WHERE slot_name = $1 AND NOT active",
                    &[name],
                )
                .await;
            if let Err(e) = r {
                failures.push(format!("drop {name}: {}", sql::query_error(e)));
            }
        }
        for slot in &changes.create {
            let r = match &slot.kind {
                SlotKind::Physical => client
                    .execute(
                        "SELECT pg_create_physical_replication_slot($1, true)",
                        &[&slot.name],
                    )
                    .await
                    .map_err(sql::query_error),
                SlotKind::Logical { database, plugin } => {
                    match self.connect_local_db(database).await {
                        Ok(db) => db
                            .execute(
                                "SELECT pg_create_logical_replication_slot($1, $2)",
                                &[&slot.name, plugin],
                            )
                            .await
                            .map_err(sql::query_error),
                        Err(e) => Err(e),
                    }
                }
            };
            if let Err(e) = r {
                failures.push(format!("create {}: {e}", slot.name));
            }
        }
        for adv in &changes.advance {
            let target = ha_core::model::format_lsn(adv.to);
            let r = match &adv.database {
                None => Ok(None),
                Some(db) => self.connect_local_db(db).await.map(Some),
            };
            let conn = match r {
                Err(e) => {
                    failures.push(format!("advance {} to {target}: {e}", adv.name));
                    continue;
                }
                Ok(db) => db,
            };
            let conn = conn.as_ref().unwrap_or(&client);
            let r = conn
                .execute(
                    "SELECT pg_replication_slot_advance($1, $2::text::pg_lsn)",
                    &[&adv.name, &target],
                )
                .await;
            let Err(e) = r else { continue };
            let wal_gone = e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_FILE);
            failures.push(format!(
                "advance {} to {target}: {}",
                adv.name,
                sql::query_error(e)
            ));
            // A copied logical slot that starts before this server's oldest WAL can
            // never decode: drop it so the next copy brings a newer state.
            if wal_gone && adv.database.is_some() {
                let dropped = conn
                    .execute("SELECT pg_drop_replication_slot($1)", &[&adv.name])
                    .await;
                if dropped.is_ok() {
                    failures.push(format!(
                        "dropped {}: it needs WAL this server no longer has",
                        adv.name
                    ));
                }
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Query(failures.join("; ")))
        }
    }

    async fn do_read_logical_slot_states(
        &self,
        source: &Upstream,
        names: &[String],
    ) -> Result<Vec<SlotStateFile>> {
        let client = self.connect_peer(source).await?;
        let mut files = Vec::new();
        for name in names {
            if !slots::is_valid_slot_name(name) {
                return Err(DriverError::Invalid(format!(
                    "`{name}` is not a valid slot name"
                )));
            }
            // Only a logical slot's state is copied: a physical one is created in place.
            let row = client
                .query_opt(
                    "SELECT pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
                     FROM pg_replication_slots WHERE slot_name = $1 AND slot_type = 'logical'",
                    &[name],
                )
                .await
                .map_err(sql::query_error)?;
            let Some(row) = row else {
                return Err(DriverError::Invalid(format!(
                    "{} has no logical slot `{name}` to copy",
                    source.name
                )));
            };
            files.push(SlotStateFile {
                name: name.clone(),
                content: row.get(0),
            });
        }
        Ok(files)
    }

    fn do_install_logical_slot_states(&self, files: &[SlotStateFile]) -> Result<()> {
        if let Some(pid) = self.postmaster_pid() {
            return Err(DriverError::Invalid(format!(
                "postmaster {pid} runs on the data directory: stop it before installing slots"
            )));
        }
        for f in files {
            if !slots::is_valid_slot_name(&f.name) {
                return Err(DriverError::Invalid(format!(
                    "`{}` is not a valid slot name",
                    f.name
                )));
            }
            let replslot = self.data_dir().join("pg_replslot");
            let dir = replslot.join(&f.name);
            // A leftover of an interrupted copy (or an older slot) is replaced whole.
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(|e| DriverError::io("remove", &dir, e))?;
            }
            self.runner.create_dir(&dir, 0o700)?;
            self.runner
                .write_durable(&dir.join("state"), &f.content, 0o600)?;
            std::fs::File::open(&replslot)
                .and_then(|d| d.sync_all())
                .map_err(|e| DriverError::io("sync", &replslot, e))?;
        }
        Ok(())
    }

    async fn do_remove(&self) -> Result<()> {
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

    /// Acts on the mark of a pg_rewind that did not finish (see [`rewind_mark`]): one
    /// still running or cut short is an error, one that did finish after all is
    /// completed here.
    async fn settle_rewind_mark(&self) -> Result<()> {
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

/// A new directory only we can have created (mkdtemp under the temp dir).
fn private_temp_dir() -> Result<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let template = std::env::temp_dir().join("fullauto-XXXXXX");
    let mut bytes = template.as_os_str().as_bytes().to_vec();
    bytes.push(0);
    // SAFETY: bytes is a NUL-terminated template mkdtemp may modify in place.
    let ptr = unsafe { libc::mkdtemp(bytes.as_mut_ptr() as *mut libc::c_char) };
    if ptr.is_null() {
        return Err(DriverError::io(
            "create private temp dir in",
            std::env::temp_dir(),
            std::io::Error::last_os_error(),
        ));
    }
    bytes.pop();
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(&bytes)))
}

/// The password file defaults to `~/pgpass` of the server's OS user, as in Patroni.
fn default_pgpass(cfg: &mut PgConfig, user: &OsUser) {
    if cfg.pgpass.is_none() {
        cfg.pgpass = Some(user.home.join("pgpass"));
    }
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
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

#[async_trait]
impl Postgres for PgDriver {
    async fn observe(&self) -> PgObservation {
        self.observe_inner().await
    }

    async fn bootstrap(&self) -> Result<(), PgError> {
        Ok(self.do_bootstrap().await?)
    }

    async fn clone_from(&self, source: &Upstream) -> Result<(), PgError> {
        Ok(self.do_clone(Some(source)).await?)
    }

    async fn create_replica_without_leader(&self) -> Result<(), PgError> {
        Ok(self.do_clone(None).await?)
    }

    async fn start(&self, role: &StartRole, timeout: Duration) -> Result<(), PgError> {
        Ok(self.do_start(role, timeout).await?)
    }

    async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<StopOutcome, PgError> {
        Ok(self.do_stop(mode, timeout).await?)
    }

    async fn restart(&self, timeout: Duration) -> Result<(), PgError> {
        let state = self.state();
        let role = if self.data_dir().join("standby.signal").exists() {
            StartRole::Replica {
                upstream: state.upstream.as_ref().map(|u| u.to_upstream()),
            }
        } else {
            StartRole::Primary
        };
        self.do_stop(StopMode::Fast, timeout).await?;
        Ok(self.do_start(&role, timeout).await?)
    }

    async fn promote(&self, timeout: Duration) -> Result<(), PgError> {
        Ok(self.do_promote(timeout).await?)
    }

    async fn follow(&self, upstream: Option<&Upstream>) -> Result<(), PgError> {
        Ok(self.do_follow(upstream).await?)
    }

    async fn needs_rewind(&self, source: &Upstream) -> Result<bool, PgError> {
        Ok(self.do_needs_rewind(source).await?)
    }

    async fn rewind(&self, source: &Upstream) -> Result<(), PgError> {
        Ok(self.do_rewind(source).await?)
    }

    async fn remove_data_directory(&self) -> Result<(), PgError> {
        Ok(self.do_remove().await?)
    }

    async fn apply_slot_changes(&self, changes: &SlotChanges) -> Result<(), PgError> {
        Ok(self.do_apply_slot_changes(changes).await?)
    }

    async fn apply_dynamic_parameters(
        &self,
        parameters: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<(), PgError> {
        // `null` removes a setting (the REST API's merge rule).
        let wanted: std::collections::BTreeMap<String, serde_json::Value> = parameters
            .iter()
            .filter(|(_, v)| !v.is_null())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let current = self.cfg();
        if current.dynamic_parameters == wanted {
            return Ok(());
        }
        let mut cfg = (*current).clone();
        cfg.dynamic_parameters = wanted;
        self.update_config(cfg)?;
        tracing::info!("dynamic postgresql.parameters changed");
        // A stopped server gets them at its next start.
        if self.postmaster_pid().is_some() {
            Postgres::reload(self).await?;
        }
        Ok(())
    }

    async fn read_logical_slot_states(
        &self,
        source: &Upstream,
        names: &[String],
    ) -> Result<Vec<SlotStateFile>, PgError> {
        Ok(self.do_read_logical_slot_states(source, names).await?)
    }

    async fn install_logical_slot_states(&self, files: &[SlotStateFile]) -> Result<(), PgError> {
        Ok(self.do_install_logical_slot_states(files)?)
    }

    async fn set_synchronous_standby_names(&self, value: Option<&str>) -> Result<(), PgError> {
        let mut state = self.state();
        state.synchronous_standby_names = value.map(str::to_string);
        self.write_config(&state)?;
        self.pg_ctl_reload().await?;
        if self.postmaster_pid().is_some() && !state.replica {
            // Only a hint: the setting is in force either way.
            if let Err(e) = self.wake_waiting_commits(value).await {
                tracing::warn!(error = %e, "could not make the standbys report after changing synchronous_standby_names: commits waiting for a dropped standby may wait up to wal_receiver_status_interval");
            }
        }
        Ok(())
    }

    async fn received_lsn_of(&self, peer: &Upstream) -> Result<Option<ha_core::Lsn>, PgError> {
        let client = self.connect_peer(peer).await?;
        let row = client
            .query_one("SELECT pg_last_wal_receive_lsn()::text", &[])
            .await
            .map_err(sql::query_error)?;
        let text: Option<String> = row.get(0);
        Ok(text.as_deref().and_then(ha_core::parse_lsn))
    }

    async fn checkpoint(&self) -> Result<(), PgError> {
        let client = self.connect_local(SQL_TIMEOUT).await?;
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(sql::query_error)?;
        Ok(())
    }

    async fn apply_dynamic_files(&self, section: &DynamicPostgresql) -> Result<bool, PgError> {
        let current = self.cfg();
        let recovery: std::collections::BTreeMap<String, serde_json::Value> = section
            .recovery_conf
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        if current.dynamic_pg_hba == section.pg_hba
            && current.dynamic_pg_ident == section.pg_ident
            && current.dynamic_recovery_conf == recovery
        {
            return Ok(false);
        }
        let mut cfg = (*current).clone();
        cfg.dynamic_pg_hba = section.pg_hba.clone();
        cfg.dynamic_pg_ident = section.pg_ident.clone();
        cfg.dynamic_recovery_conf = recovery;
        self.update_config(cfg)?;
        let new = self.cfg();
        let rewritten = |old: Option<String>, new: Option<String>| new.is_some() && new != old;
        let changed = rewritten(render::pg_hba(&current), render::pg_hba(&new))
            || rewritten(render::pg_ident(&current), render::pg_ident(&new))
            || (self.state().replica
                && current.effective_recovery_conf() != new.effective_recovery_conf());
        if !changed || self.postmaster_pid().is_none() {
            // Local settings win, or a stopped server gets them at its next start.
            return Ok(false);
        }
        tracing::info!(
            "dynamic pg_hba, pg_ident or recovery_conf changed: rewriting the configuration and reloading"
        );
        Postgres::reload(self).await?;
        Ok(true)
    }

    async fn pre_promote(&self) -> Result<(), PgError> {
        Ok(self.do_pre_promote().await?)
    }

    async fn can_rewind(&self) -> bool {
        self.controldata().await.is_ok_and(|c| c.rewindable())
    }

    async fn archive_shutdown_checkpoint(&self) -> Result<(), PgError> {
        Ok(self.do_archive_shutdown_checkpoint().await?)
    }

    async fn reload(&self) -> Result<(), PgError> {
        if datadir::contents(self.data_dir())? != DirContents::Cluster {
            return Err(PgError::Invalid("no cluster to reload".into()));
        }
        self.write_config(&self.state())?;
        Ok(self.pg_ctl_reload().await?)
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
    use super::{archiver_command, highest_timeline_since_start};

    #[test]
    fn archive_command_placeholders() {
        assert_eq!(
            archiver_command("cp %p /a/%f && echo 100%% %r %x%", "/d/pg_wal/F", "F"),
            "cp /d/pg_wal/F /a/F && echo 100% 000000010000000000000001 %x%"
        );
    }

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
