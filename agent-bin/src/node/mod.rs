//! The agent process: wires the config file, the DCS backend, pg-driver, the write
//! fence, the HA runner and the REST API together, and handles signals.

mod api_impl;
mod callbacks;
mod dynamic_cache;
mod probe;
mod reaper;
mod reload;
mod scheduled_restart;
pub mod settings;

pub use api_impl::{status_from_snapshot, AgentApi};
pub use probe::{reply_from_status, HttpPeerProbe};

use crate::config::Config;
use anyhow::Context;
use ha_core::runner::{Components, Runner};
use ha_core::{Clock, SystemClock, Watchdog};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::signal::unix::{signal, SignalKind};

/// Runs the agent until SIGTERM/SIGINT. `fence` was started before the runtime (it
/// forks), `own_children` are pids the reaper may collect.
pub async fn run(
    cfg: Config,
    config_path: std::path::PathBuf,
    fence: Arc<dyn Watchdog>,
    own_children: BTreeSet<i32>,
) -> anyhow::Result<()> {
    reaper::spawn_if_pid1(own_children);
    let mut cfg = cfg;
    if let Some(cached) = dynamic_cache::load(std::path::Path::new(&cfg.postgresql.data_dir)) {
        tracing::info!(
            "using the dynamic configuration cached in {} instead of bootstrap.dcs",
            dynamic_cache::FILE
        );
        cfg.bootstrap.dcs = cached;
    }
    let timing = cfg.bootstrap.dcs.timing();
    let dcs = crate::dcs_factory::connect_dcs(&cfg, &cfg.name, timing)
        .await
        .context("connecting to the DCS")?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let http = crate::api::SharedClient::new(&cfg, Duration::from_secs(5))
        .context("REST API client (ctl/restapi TLS settings)")?;
    let tls = crate::api::ReloadableTls::from_config(&cfg.restapi)
        .context("REST API server certificate (restapi certfile/keyfile/cafile)")?;
    refuse_duplicate_name(&cfg, dcs.as_ref(), &http).await?;

    let pg_cfg = settings::pg_config(&cfg)?;
    let driver = Arc::new(pg_driver::PgDriver::new(pg_cfg).context("postgresql section")?);
    // Long operations say how far they got once per loop_wait, like the HA loop's
    // own lines.
    driver.set_progress_interval(cfg.bootstrap.dcs.loop_wait());
    let pg: Arc<dyn ha_core::Postgres> = driver.clone();
    let run_settings = settings::runner_settings(&cfg);
    let peers = Arc::new(HttpPeerProbe::new(&cfg, run_settings.probe_timeout)?);
    let peer_client = peers.client();
    let parts = Components {
        dcs: dcs.clone(),
        pg: pg.clone(),
        fence,
        clock: clock.clone(),
        peers,
    };
    let (runner, handle) = Runner::new(settings::node_config(&cfg), parts, run_settings);
    // The member record's `version` is the Patroni version fullauto implements (what
    // Patroni's tools judge); fullauto's own version goes next to it.
    handle.set_member_field(
        ha_core::FULLAUTO_VERSION_FIELD,
        Some(serde_json::Value::String(env!("CARGO_PKG_VERSION").into())),
    );
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let runner = match failsafe_record_path(&cfg) {
        Some(path) => runner.with_failsafe_record(path),
        None => runner,
    };
    let mut runner_task = tokio::spawn(runner.with_events(events_tx.clone()).run());
    tokio::spawn(dynamic_cache::keep(handle.clone(), driver.clone()));
    let (callbacks_tx, callbacks_rx) =
        tokio::sync::watch::channel(cfg.postgresql.callbacks.clone());
    tokio::spawn(callbacks::run(callbacks_rx, cfg.scope.clone(), events_rx));
    let (config_tx, config_rx) = tokio::sync::watch::channel(cfg.clone());
    let api_control =
        crate::api::ApiControl::new(crate::api::ApiOptions::from_config(&cfg.restapi));
    let reloader = Arc::new(reload::ConfigReloader {
        path: config_path,
        config: config_tx,
        callbacks: callbacks_tx,
        pg: driver.clone(),
        runner: handle.clone(),
        api: api_control.clone(),
        tls: tls.clone(),
        clients: vec![http.clone(), peer_client],
        events: events_tx,
    });

    let api = Arc::new(AgentApi {
        cfg: config_rx,
        reloader: reloader.clone(),
        handle: handle.clone(),
        dcs,
        clock,
        http,
        scheduled_restart: Default::default(),
        pg: driver,
    });
    let listener = crate::api::listen::bind(&cfg.restapi.listen, cfg.restapi.request_queue_size)
        .await
        .with_context(|| format!("restapi.listen {}", cfg.restapi.listen))?;
    let router = crate::api::router_with(api, &api_control);
    let (stop_api_tx, stop_api_rx) = tokio::sync::oneshot::channel::<()>();
    let api_task = tokio::spawn(crate::api::serve_reloadable(
        listener,
        router,
        Some(tls),
        async move {
            let _ = stop_api_rx.await;
        },
    ));

    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    // The REST API listens and the HA loop runs.
    crate::systemd::notify("READY=1");
    // The runner ends on its own only when the node cannot go on (a bootstrap the
    // configuration makes fail): the agent then exits with its reason, as Patroni does.
    let runner_ended = loop {
        tokio::select! {
            _ = term.recv() => break None,
            _ = int.recv() => break None,
            ended = &mut runner_task => break Some(ended),
            _ = hup.recv() => {
                tracing::info!("SIGHUP: reloading the configuration");
                crate::systemd::notify_reloading();
                if let Err(e) = reloader.reload().await {
                    tracing::error!("reload refused, keeping the running configuration: {e}");
                }
                crate::systemd::notify("READY=1");
            }
        }
    };
    crate::systemd::notify("STOPPING=1");
    let outcome = match runner_ended {
        None => {
            tracing::info!("shutting down");
            handle.shutdown();
            let _ = runner_task.await;
            Ok(())
        }
        Some(Ok(Ok(()))) => Ok(()),
        Some(Ok(Err(fatal))) => Err(anyhow::Error::new(fatal)),
        Some(Err(e)) => Err(anyhow::anyhow!("the HA loop ended abnormally: {e}")),
    };
    let _ = stop_api_tx.send(());
    let _ = tokio::time::timeout(Duration::from_secs(2), api_task).await;
    outcome
}

/// Where accepted `POST /failsafe` calls are recorded: beside the data directory (not
/// in it: a clone or reinitialize empties it, and pg_basebackup would copy it to other
/// nodes). `None` when that place is not writable: calls are then remembered in
/// memory only, and a restarted agent sits out a ttl before it races.
fn failsafe_record_path(cfg: &Config) -> Option<std::path::PathBuf> {
    let data_dir = std::path::Path::new(&cfg.postgresql.data_dir);
    let name = data_dir.file_name()?.to_string_lossy().to_string();
    let path = data_dir.with_file_name(format!(".{name}.fullauto-failsafe.json"));
    if path.exists() {
        return Some(path);
    }
    let probe = path.with_extension("probe");
    // The data directory's parent may not exist before the first bootstrap or clone.
    if let Some(parent) = path.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    match std::fs::write(&probe, b"") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            Some(path)
        }
        Err(e) => {
            tracing::info!(
                "failsafe calls are remembered in memory only ({} is not writable: {e})",
                probe.display()
            );
            None
        }
    }
}

/// Patroni refuses to start a second agent with a name that is alive in the cluster.
async fn refuse_duplicate_name(
    cfg: &Config,
    dcs: &dyn ha_core::Dcs,
    http: &crate::api::SharedClient,
) -> anyhow::Result<()> {
    let Ok(cluster) = dcs.get_cluster().await else {
        return Ok(());
    };
    let Some(me) = cluster.member(&cfg.name) else {
        return Ok(());
    };
    let Some(api_url) = me.data.api_url.as_deref() else {
        return Ok(());
    };
    // Probed even when it is this node's own address: the API is not bound yet, so
    // whatever answers there is another agent (Patroni's rule; its acceptance suite
    // starts a duplicate with another listen port but the same connect_address). Any
    // HTTP answer counts, as in Patroni.
    let liveness = api_url.trim_end_matches("/patroni").to_string() + "/liveness";
    let alive = http
        .http()
        .get(&liveness)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok();
    if alive {
        anyhow::bail!(
            "Can't start; there is already a node named '{}' running",
            cfg.name
        );
    }
    Ok(())
}
