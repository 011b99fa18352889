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
use crate::sql;
use crate::timeline::{self, HistoryEntry, LocalPosition};
use async_trait::async_trait;
use ha_core::{
    parse_lsn, DataDirState, DynamicPostgresql, ObservedSlot, PendingParameter, PgError,
    PgObservation, PgProcess, Postgres, ReplicationConnection, SlotChanges, SlotKind,
    SlotStateFile, StartRole, StopMode, StopOutcome, Upstream,
};
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

/// Client sessions inside a transaction: a statement running, or a transaction open
/// (walsenders, background workers and this query's own session not counted).
const CLIENTS_IN_TRANSACTION: &str = "SELECT count(*) FROM pg_stat_activity \
     WHERE backend_type = 'client backend' AND pid <> pg_backend_pid() \
     AND state <> 'idle'";

/// Timeout of the driver's own short SQL (promote excluded).
const SQL_TIMEOUT: Duration = Duration::from_secs(5);

/// Short tools (pg_controldata, pg_ctl reload, psql).
const TOOL_TIMEOUT: Duration = Duration::from_secs(30);
/// Long tools without a natural bound (initdb, single-user recovery, pg_rewind).
const LONG_TOOL_TIMEOUT: Duration = Duration::from_secs(3600);
/// Custom replica methods may restore large backups.
const REPLICA_METHOD_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

mod bootstrap;
mod clone;
mod fork_point;
mod lifecycle;
mod observe;
mod rewind;
mod rewind_mark;
mod session;
mod slots;
mod sync_wake;
mod wal_gone;

pub use observe::WalPositions;

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
    /// The kept connection for the failover's critical path (`session.rs`).
    session: tokio::sync::Mutex<Option<session::LocalSession>>,
    /// The kept connection for the REST API's quick readings (`session.rs`).
    api_session: tokio::sync::Mutex<Option<session::LocalSession>>,
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
            session: tokio::sync::Mutex::new(None),
            api_session: tokio::sync::Mutex::new(None),
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

    /// A superuser session on `source`'s `postgres` database: what reading its WAL
    /// files, `pg_ls_waldir()` and its control data takes.
    async fn connect_source(
        &self,
        source: &Upstream,
        timeout: Duration,
    ) -> Result<tokio_postgres::Client> {
        let cfg = self.cfg();
        self.connect_as(
            &Endpoint::tcp(&source.host, source.port),
            &cfg.authentication.superuser,
            "postgres",
            timeout,
        )
        .await
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

    /// The postmaster is alive but stopped (SIGSTOP): connections it already
    /// handed out may still answer, new ones never will.
    pub fn postmaster_stopped(&self) -> bool {
        matches!(self.pid_state(), PidFileState::Alive { stopped: true, .. })
    }

    fn postmaster_pid(&self) -> Option<i32> {
        match self.pid_state() {
            PidFileState::Alive { pid, .. } => Some(pid),
            _ => None,
        }
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
        self.do_promote(timeout).await?;
        Ok(self.do_finish_promotion().await?)
    }

    async fn promote_until_writable(&self, timeout: Duration) -> Result<(), PgError> {
        Ok(self.do_promote(timeout).await?)
    }

    async fn finish_promotion(&self) -> Result<(), PgError> {
        Ok(self.do_finish_promotion().await?)
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

    async fn wal_gone_on(&self, source: &Upstream) -> Result<Option<String>, PgError> {
        Ok(self.do_wal_gone_on(source).await?)
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

    async fn clients_in_transaction(&self) -> Result<u64, PgError> {
        // The kept connection: the drain asks every few ms.
        let client = self.local_session(SQL_TIMEOUT).await?;
        let msgs = client
            .simple_query(CLIENTS_IN_TRANSACTION)
            .await
            .map_err(sql::query_error)?;
        let count = msgs.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(|v| v.parse().ok()),
            _ => None,
        });
        count.ok_or_else(|| PgError::Invalid("no count from pg_stat_activity".into()))
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
