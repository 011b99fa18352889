//! Runs the configured callback scripts (`postgresql.callbacks`) as Patroni does:
//! `<cmd> <action> <role> <scope>`, asynchronously; a new callback kills a previous
//! one that is still running, except `on_reload`, which runs on its own: it neither
//! kills nor is killed by the others.

use crate::config::{Callbacks, Script};
use ha_core::runner::RunnerEvent;
use tokio::sync::mpsc::UnboundedReceiver;

/// Consumes runner events until the runner stops, running the matching scripts.
pub async fn run(
    callbacks: tokio::sync::watch::Receiver<Callbacks>,
    scope: String,
    mut events: UnboundedReceiver<RunnerEvent>,
) {
    let mut running: Option<tokio::process::Child> = None;
    let mut role = "replica";
    while let Some(event) = events.recv().await {
        // The scripts as last reloaded (SIGHUP).
        let callbacks = callbacks.borrow().clone();
        let (action, script) = match event {
            RunnerEvent::Started(r) => {
                role = r;
                ("on_start", callbacks.on_start.as_ref())
            }
            RunnerEvent::Stopped => ("on_stop", callbacks.on_stop.as_ref()),
            RunnerEvent::RoleChanged(r) => {
                role = r;
                ("on_role_change", callbacks.on_role_change.as_ref())
            }
            RunnerEvent::Restarted(r) => {
                role = r;
                ("on_restart", callbacks.on_restart.as_ref())
            }
            RunnerEvent::Reloaded => {
                if let Some(script) = callbacks.on_reload.as_ref() {
                    // Reaped by tokio once it exits.
                    let _ = spawn(script, "on_reload", role, &scope);
                }
                continue;
            }
        };
        let Some(script) = script else { continue };
        if let Some(mut previous) = running.take() {
            if previous.try_wait().ok().flatten().is_none() {
                let _ = previous.kill().await;
            }
        }
        running = spawn(script, action, role, &scope);
    }
}

fn spawn(script: &Script, action: &str, role: &str, scope: &str) -> Option<tokio::process::Child> {
    let argv = script.argv();
    let (program, args) = argv.split_first()?;
    match tokio::process::Command::new(program)
        .args(args)
        .args([action, role, scope])
        .kill_on_drop(false)
        .spawn()
    {
        Ok(child) => Some(child),
        Err(e) => {
            tracing::warn!("callback {action} ({program}) could not start: {e}");
            None
        }
    }
}
