//! SIGHUP and `POST /reload`: re-read the config file (and `PATRONI_*` variables) and
//! apply what can change while running — tags, callbacks, the `postgresql` section's
//! parameters and pg_hba, the REST API's options and certificates, the certificates
//! and credentials used towards other members — as Patroni does. A file with errors,
//! or certificate files that cannot be used, change nothing.

use crate::config::{Callbacks, Config};
use ha_core::runner::{RunnerEvent, RunnerHandle};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::watch;

/// Applies a re-read config file to the running agent.
pub struct ConfigReloader {
    pub(super) path: PathBuf,
    pub(super) config: watch::Sender<Config>,
    pub(super) callbacks: watch::Sender<Callbacks>,
    pub(super) pg: Arc<pg_driver::PgDriver>,
    pub(super) runner: RunnerHandle,
    /// The REST API's options (auth, allowlist, client certificate policy).
    pub(super) api: crate::api::ApiControl,
    /// The REST API's server certificate, swapped for new connections.
    pub(super) tls: crate::api::ReloadableTls,
    /// Clients towards other members (API handlers, peer probes).
    pub(super) clients: Vec<crate::api::SharedClient>,
    /// Where a Postgres reload is announced (the `on_reload` callback).
    pub(super) events: tokio::sync::mpsc::UnboundedSender<RunnerEvent>,
}

impl ConfigReloader {
    /// Re-reads the file and applies it; the error names what was wrong.
    pub async fn reload(&self) -> Result<(), String> {
        let (new, warnings) = Config::load(&self.path).map_err(|e| e.0.render())?;
        for w in warnings {
            tracing::warn!("{}", w.to_string().trim_end());
        }
        let old = self.config.borrow().clone();
        if new.name != old.name || new.scope != old.scope {
            return Err("name and scope cannot change while running; restart the agent".into());
        }
        if new.log != old.log {
            return Err("the log section cannot change while running; restart the agent".into());
        }
        let server_tls = crate::api::load_server_tls(&new.restapi).map_err(|e| e.to_string())?;
        let clients = self
            .clients
            .iter()
            .map(|c| c.prepare(&new).map(|next| (c, next)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("client certificates towards members: {e}"))?;
        let mut pg_cfg = super::settings::pg_config(&new).map_err(|e| e.to_string())?;
        // The dynamic settings in force come from the DCS `config` key, not from
        // the file's bootstrap section.
        let running = self.pg.config();
        pg_cfg.dynamic_parameters = running.dynamic_parameters.clone();
        pg_cfg.dynamic_pg_hba = running.dynamic_pg_hba.clone();
        pg_cfg.dynamic_pg_ident = running.dynamic_pg_ident.clone();
        pg_cfg.dynamic_recovery_conf = running.dynamic_recovery_conf.clone();
        self.pg
            .update_config(pg_cfg)
            .map_err(|e| format!("postgresql section: {e}"))?;
        match ha_core::Postgres::reload(self.pg.as_ref()).await {
            Ok(()) if self.pg.postmaster_running() => {
                let _ = self.events.send(RunnerEvent::Reloaded);
            }
            Ok(()) => {}
            // Postgres may be stopped: the new settings apply at its next start.
            Err(e) => {
                tracing::info!("postgres not reloaded ({e}); new settings apply at its next start")
            }
        }
        if server_tls.is_some() {
            tracing::info!("REST API certificates reloaded; new connections use them");
        }
        self.tls.set(server_tls);
        self.api
            .set_options(crate::api::ApiOptions::from_config(&new.restapi));
        for (client, next) in clients {
            client.replace(next);
        }
        self.runner.reconfigure(super::settings::node_config(&new));
        self.callbacks
            .send_replace(new.postgresql.callbacks.clone());
        self.config.send_replace(new);
        tracing::info!("configuration reloaded from {}", self.path.display());
        Ok(())
    }
}
