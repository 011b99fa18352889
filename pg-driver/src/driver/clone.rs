//! Creating a replica's data directory: pg_basebackup from an upstream or a custom
//! replica method.

use super::*;

/// pg_basebackup attempts per clone, and the pause between them (Patroni's).
const BASEBACKUP_ATTEMPTS: u32 = 2;
const BASEBACKUP_RETRY_PAUSE: Duration = Duration::from_secs(5);

impl PgDriver {
    pub(super) async fn check_reachable(&self, source: &Upstream) -> Result<()> {
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
    pub(super) fn shell_command(&self, command: &str, args: &[String]) -> tokio::process::Command {
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

    /// The data directory, created if missing, for a bootstrap or clone to fill: one
    /// that holds a cluster is refused with `refusal`, one with other files too.
    pub(super) fn claim_empty_data_dir(&self, refusal: &str) -> Result<PathBuf> {
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
    pub(super) async fn do_clone(&self, source: Option<&Upstream>) -> Result<()> {
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
}
