//! Creating a new cluster: initdb, or a custom bootstrap method (e.g. a backup
//! restore, optionally followed by archive recovery), then the `post_bootstrap`
//! script. A failed bootstrap leaves an empty data directory behind.

use super::{private_temp_dir, PgDriver, LONG_TOOL_TIMEOUT, REPLICA_METHOD_TIMEOUT, SQL_TIMEOUT};
use crate::config::{json_scalar, BootstrapMethod};
use crate::conninfo;
use crate::datadir::{self, DirContents};
use crate::error::{DriverError, Result};
use crate::rejection;
use crate::render::{self, ManagedState};
use crate::sql;
use ha_core::{StartRole, StopMode};
use std::path::PathBuf;
use std::time::Duration;

/// How often the end of a bootstrap recovery is checked.
const RECOVERY_POLL: Duration = Duration::from_secs(1);

impl PgDriver {
    /// Creates the cluster in the empty data directory and leaves it running as a
    /// primary. On failure everything it created is removed again, so another node
    /// (or a later attempt) can bootstrap.
    pub(super) async fn do_bootstrap(&self) -> Result<()> {
        self.claim_empty_data_dir(
            "already holds a cluster; bootstrap never overwrites a data directory",
        )?;
        let result = self.bootstrap_steps().await;
        if let Err(e) = &result {
            tracing::error!(error = %e, "bootstrap failed: removing what it left in the data directory");
            self.discard_failed_bootstrap().await;
        }
        result
    }

    async fn bootstrap_steps(&self) -> Result<()> {
        match self.cfg().bootstrap_method.clone() {
            None => {
                self.initdb().await?;
                self.do_start(&StartRole::Primary, self.cfg().pg_ctl_timeout())
                    .await?;
            }
            Some(m) => {
                self.run_bootstrap_method(&m).await?;
                self.start_restored_cluster(&m).await?;
            }
        }
        // Patroni's order: the superuser's password, the script, then the replication
        // and rewind roles.
        self.ensure_superuser().await?;
        self.run_post_bootstrap().await?;
        self.ensure_roles().await
    }

    /// Stops whatever the failed bootstrap started and empties the data directory
    /// (it was empty before, so everything in it is the bootstrap's).
    async fn discard_failed_bootstrap(&self) {
        if self.postmaster_pid().is_some() {
            if let Err(e) = self
                .do_stop(StopMode::Immediate, self.cfg().pg_ctl_timeout())
                .await
            {
                tracing::error!(error = %e, "could not stop postgres after a failed bootstrap");
                return;
            }
        }
        if let Err(e) = datadir::remove_contents(self.data_dir()) {
            tracing::error!(error = %e, "could not empty the data directory after a failed bootstrap");
        }
        self.set_state(ManagedState::default());
    }

    async fn initdb(&self) -> Result<()> {
        let cfg = self.cfg();
        let su = &cfg.authentication.superuser;
        let mut cmd = self.tool_cmd("initdb", false)?;
        cmd.arg("-D")
            .arg(self.data_dir())
            .arg("-U")
            .arg(&su.username);
        // The password goes through a file in a fresh private directory (mkdtemp), never
        // on the command line or at a predictable path.
        let mut pwdir: Option<PathBuf> = None;
        if let Some(p) = &su.password {
            let d = private_temp_dir()?;
            self.runner.own(&d, 0o700)?;
            let f = d.join("pwfile");
            pwdir = Some(d);
            self.runner.write_file(&f, &format!("{p}\n"), 0o600)?;
            cmd.arg(format!("--pwfile={}", f.display()));
        }
        let initdb = &cfg.initdb;
        // Checksums by default so pg_rewind works; `no-data-checksums` opts out (and is
        // not passed on, PostgreSQL 15 has no such flag).
        if !initdb.contains("data-checksums")
            && !initdb.contains("k")
            && !initdb.contains("no-data-checksums")
        {
            cmd.arg("--data-checksums");
        }
        cmd.args(
            initdb
                .to_args()?
                .into_iter()
                .filter(|a| a != "--no-data-checksums"),
        );
        if cfg.fsync_disabled() && !initdb.contains("no-sync") {
            cmd.arg("--no-sync");
        }
        let res = self.runner.run_ok("initdb", cmd, LONG_TOOL_TIMEOUT).await;
        if let Some(d) = pwdir {
            let _ = std::fs::remove_dir_all(d);
        }
        match res {
            Ok(_) => Ok(()),
            Err(DriverError::Tool { output, .. })
                if rejection::refused_initdb_options(&output).is_some() =>
            {
                Err(DriverError::Misconfigured {
                    tool: "initdb",
                    cause: rejection::refused_initdb_options(&output).unwrap_or(output),
                    fix: "Fix bootstrap.initdb (or postgresql.initdb) in the agent's configuration file, then start the agent again",
                })
            }
            Err(e) => Err(e),
        }
    }

    /// Runs the method's command as the OS user, as Patroni does: `--scope`,
    /// `--datadir` (unless `no_params`) and the section's other keys as `--key=value`.
    async fn run_bootstrap_method(&self, m: &BootstrapMethod) -> Result<()> {
        let cfg = self.cfg();
        let mut args = Vec::new();
        if !m.no_params {
            args.push(format!("--scope={}", cfg.scope.clone().unwrap_or_default()));
            args.push(format!("--datadir={}", self.data_dir().display()));
        }
        for (k, v) in &m.extra {
            args.push(format!("--{k}={}", json_scalar(v)?));
        }
        tracing::info!(method = %m.name, command = %m.command, "running custom bootstrap method");
        let tool = format!("bootstrap method {}", m.name);
        let cmd = self.shell_command(&m.command, &args);
        self.runner.vacate_empty_dir(self.data_dir())?;
        let ran = self.runner.run_ok(&tool, cmd, REPLICA_METHOD_TIMEOUT).await;
        // The failure path empties the directory; it must exist again for that.
        if datadir::contents(self.data_dir())? == DirContents::Missing {
            self.runner.create_dir(self.data_dir(), 0o700)?;
        }
        ran?;
        if datadir::contents(self.data_dir())? != DirContents::Cluster {
            return Err(DriverError::Tool {
                tool,
                output: "succeeded but left no cluster in the data directory".into(),
            });
        }
        self.runner.own(self.data_dir(), 0o700)
    }

    /// Starts the restored cluster as a primary: with `recovery_conf` (or a kept
    /// recovery configuration) it first recovers, then ends recovery on a new
    /// timeline; returns once it accepts writes.
    async fn start_restored_cluster(&self, m: &BootstrapMethod) -> Result<()> {
        let recovery = self.prepare_recovery(m)?;
        self.set_state(ManagedState {
            recovery,
            ..ManagedState::default()
        });
        // Reaching a consistent state may take long: no pg_ctl_timeout here.
        self.do_start(&StartRole::Primary, LONG_TOOL_TIMEOUT)
            .await?;
        self.wait_end_of_recovery().await?;
        let mut state = self.state();
        if !state.recovery.is_empty() {
            state.recovery.clear();
            self.write_config(&state)?;
            self.pg_ctl_reload().await?;
        }
        Ok(())
    }

    /// Decides how the restored cluster starts and returns the recovery settings for
    /// the managed configuration. The method's own standby or recovery setup is
    /// removed unless `keep_existing_recovery_conf`; `recovery_conf` replaces it.
    fn prepare_recovery(
        &self,
        m: &BootstrapMethod,
    ) -> Result<std::collections::BTreeMap<String, String>> {
        let dir = self.data_dir();
        let standby = dir.join("standby.signal");
        let recovery = dir.join("recovery.signal");
        let remove = |p: &std::path::Path| -> Result<()> {
            match std::fs::remove_file(p) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    Err(DriverError::io("remove", p, e))
                }
                _ => Ok(()),
            }
        };
        if m.keep_existing_recovery_conf && m.recovery_conf.is_none() {
            // A standby never ends recovery by itself: recover from the archive instead.
            if standby.exists() {
                std::fs::rename(&standby, &recovery)
                    .map_err(|e| DriverError::io("rename", &standby, e))?;
            }
            return Ok(Default::default());
        }
        remove(&standby)?;
        remove(&recovery)?;
        let auto = dir.join("postgresql.auto.conf");
        if let Ok(text) = std::fs::read_to_string(&auto) {
            if let Some(clean) = render::without_recovery_settings(&text) {
                self.runner.write_file(&auto, &clean, 0o600)?;
            }
        }
        let Some(rc) = &m.recovery_conf else {
            return Ok(Default::default());
        };
        self.runner.write_file(&recovery, "", 0o600)?;
        rc.iter()
            .map(|(k, v)| {
                json_scalar(v)
                    .map(|v| (k.clone(), v))
                    .map_err(|e| DriverError::Config(format!("recovery_conf.{k}: {e}")))
            })
            .collect()
    }

    /// Waits until the server has left recovery. Like Patroni it waits as long as
    /// recovery takes; a recovery paused at its target is reported, not resumed.
    async fn wait_end_of_recovery(&self) -> Result<()> {
        let mut reported_pause = false;
        loop {
            if self.postmaster_pid().is_none() {
                return Err(DriverError::StartFailed {
                    reason: "postgres stopped during the bootstrap recovery".into(),
                    log_tail: self.log_tail(),
                });
            }
            let status = match self.connect_local(SQL_TIMEOUT).await {
                Ok(client) => client
                    .query_one(
                        "SELECT pg_is_in_recovery(), pg_is_in_recovery() AND pg_is_wal_replay_paused()",
                        &[],
                    )
                    .await
                    .map(|r| (r.get::<_, bool>(0), r.get::<_, bool>(1)))
                    .ok(),
                Err(_) => None,
            };
            match status {
                Some((false, _)) => return Ok(()),
                Some((true, true)) if !reported_pause => {
                    reported_pause = true;
                    tracing::warn!(
                        "bootstrap recovery is paused at its target: resume it with pg_wal_replay_resume() (or set recovery_target_action: promote)"
                    );
                }
                _ => tracing::debug!("waiting for the end of recovery after bootstrap"),
            }
            tokio::time::sleep(RECOVERY_POLL).await;
        }
    }

    /// Runs `post_bootstrap` with the superuser's connection URL, as Patroni does;
    /// a non-zero exit fails the bootstrap.
    async fn run_post_bootstrap(&self) -> Result<()> {
        let cfg = self.cfg();
        let Some(script) = cfg
            .post_bootstrap
            .as_deref()
            .filter(|s| !s.trim().is_empty())
        else {
            return Ok(());
        };
        let to = cfg.local_superuser_endpoint()?;
        let su = &cfg.authentication.superuser;
        let url = conninfo::uri(su, &to, "postgres");
        tracing::info!(script, "running post_bootstrap");
        let mut cmd = self.shell_command(script, &[url]);
        cmd.env(
            "PGOPTIONS",
            "-c synchronous_commit=local -c statement_timeout=0",
        );
        self.hand_password(&mut cmd, su, &to)?;
        self.runner
            .run_ok("post_bootstrap", cmd, LONG_TOOL_TIMEOUT)
            .await
            .map(|_| ())
    }
}

impl PgDriver {
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
}
