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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;
    use std::time::Duration;

    /// The lines the script wrote, once there are `n` of them.
    async fn lines(log: &Path, n: usize) -> Vec<String> {
        for _ in 0..500 {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<String> = text.lines().map(str::to_string).collect();
            if lines.len() >= n {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("the callback script did not write {n} lines");
    }

    #[tokio::test]
    async fn each_event_runs_its_script_with_action_role_and_scope() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("calls");
        let script = dir.path().join("callback.sh");
        std::fs::write(
            &script,
            format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
        let s = || Some(Script::Line(script.display().to_string()));
        let callbacks = Callbacks {
            on_start: s(),
            on_stop: s(),
            on_restart: s(),
            on_reload: s(),
            on_role_change: s(),
        };
        let (_keep, rx) = tokio::sync::watch::channel(callbacks);
        let (tx, events) = tokio::sync::mpsc::unbounded_channel();
        let task = tokio::spawn(run(rx, "demo".into(), events));
        let steps = [
            (RunnerEvent::Started("replica"), "on_start replica demo"),
            (
                RunnerEvent::RoleChanged("primary"),
                "on_role_change primary demo",
            ),
            (RunnerEvent::Reloaded, "on_reload primary demo"),
            (RunnerEvent::Restarted("primary"), "on_restart primary demo"),
            (RunnerEvent::Stopped, "on_stop primary demo"),
        ];
        for (i, (event, want)) in steps.into_iter().enumerate() {
            tx.send(event).unwrap();
            assert_eq!(lines(&log, i + 1).await[i], want);
        }
        drop(tx);
        task.await.unwrap();
    }
}
