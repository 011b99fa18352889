//! A restart scheduled through `POST /restart` with `schedule`: one at a time, kept
//! in memory (shown in `/patroni` as `scheduled_restart`), re-checked against its
//! conditions when it is due, cancelled by `DELETE /restart`.

use crate::api::state::RestartRequest;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The one scheduled restart of this node.
#[derive(Default, Clone)]
pub struct RestartSchedule {
    slot: Arc<Mutex<Option<Scheduled>>>,
}

struct Scheduled {
    shown: Value,
    task: tokio::task::JoinHandle<()>,
}

impl RestartSchedule {
    /// Schedules `run` to happen after `delay`; `false` if a restart is already
    /// scheduled. `run` gets the request back when it is due.
    pub fn schedule<F, Fut>(&self, request: RestartRequest, delay: Duration, run: F) -> bool
    where
        F: FnOnce(RestartRequest) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|s| !s.task.is_finished()) {
            return false;
        }
        let shown = describe(&request);
        let me = self.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            run(request).await;
            me.clear_finished();
        });
        *slot = Some(Scheduled { shown, task });
        true
    }

    /// Cancels the scheduled restart; `false` if none was waiting.
    pub fn cancel(&self) -> bool {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        match slot.take() {
            Some(s) if !s.task.is_finished() => {
                s.task.abort();
                true
            }
            _ => false,
        }
    }

    /// What `/patroni` shows as `scheduled_restart`.
    pub fn shown(&self) -> Option<Value> {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.as_ref()
            .filter(|s| !s.task.is_finished())
            .map(|s| s.shown.clone())
    }

    fn clear_finished(&self) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|s| s.task.is_finished()) {
            *slot = None;
        }
    }
}

fn describe(r: &RestartRequest) -> Value {
    let mut v = json!({ "schedule": r.schedule });
    if let Some(role) = &r.role {
        v["role"] = json!(role);
    }
    if let Some(version) = &r.postgres_version {
        v["postgres_version"] = json!(version);
    }
    if r.restart_pending {
        v["restart_pending"] = json!(true);
    }
    if let Some(t) = r.timeout {
        v["timeout"] = json!(t);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> RestartRequest {
        RestartRequest {
            schedule: Some("2030-01-01T00:00:00+00:00".into()),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn one_at_a_time_until_cancelled() {
        let s = RestartSchedule::default();
        assert!(s.schedule(req(), Duration::from_secs(3600), |_| async {}));
        assert!(!s.schedule(req(), Duration::from_secs(3600), |_| async {}));
        assert_eq!(
            s.shown()
                .and_then(|v| v["schedule"].as_str().map(String::from)),
            Some("2030-01-01T00:00:00+00:00".into())
        );
        assert!(s.cancel());
        assert!(!s.cancel());
        assert!(s.shown().is_none());
        assert!(s.schedule(req(), Duration::from_secs(3600), |_| async {}));
    }

    #[tokio::test]
    async fn runs_when_due_and_then_frees_the_slot() {
        let s = RestartSchedule::default();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(
            s.schedule(req(), Duration::from_millis(10), move |r| async move {
                let _ = tx.send(r.schedule);
            })
        );
        let ran = tokio::time::timeout(Duration::from_secs(5), rx).await;
        assert!(matches!(ran, Ok(Ok(Some(_)))));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(s.shown().is_none());
        assert!(s.schedule(req(), Duration::from_secs(3600), |_| async {}));
    }
}
