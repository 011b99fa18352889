//! Peer status probes over the REST API (`GET <api_url>`, i.e. `/patroni`).

use async_trait::async_trait;
use ha_core::decision::PeerReply;
use ha_core::runner::PeerProbe;
use ha_core::{Member, Role, Tags};
use serde_json::Value;
use std::time::Duration;

/// Probes peers with reqwest; the runner bounds each call by its probe timeout.
pub struct HttpPeerProbe {
    client: crate::api::SharedClient,
}

impl HttpPeerProbe {
    /// A prober whose requests give up after `timeout`. It speaks the REST API's TLS
    /// as `fullautoctl` does (the configured CA, and the `ctl` else `restapi` client
    /// certificate) and sends `ctl.authentication` (else `restapi.authentication`)
    /// with `POST /failsafe`.
    pub fn new(cfg: &crate::config::Config, timeout: Duration) -> anyhow::Result<HttpPeerProbe> {
        let client = crate::api::SharedClient::new(cfg, timeout)?;
        Ok(HttpPeerProbe { client })
    }

    /// The client, for a reload to replace.
    pub fn client(&self) -> crate::api::SharedClient {
        self.client.clone()
    }
}

/// `<api_url>` names `/patroni`; `POST /failsafe` goes to the same server.
fn failsafe_url(api_url: &str) -> String {
    let base = api_url.trim_end_matches('/');
    let base = base.strip_suffix("/patroni").unwrap_or(base);
    format!("{base}/failsafe")
}

/// Reads the leader-race facts from a peer's status JSON (Patroni's shape).
pub fn reply_from_status(v: &Value) -> Option<PeerReply> {
    let role = v
        .get("role")
        .and_then(Value::as_str)
        .map(|r| Role::from(r.to_string()));
    let xlog = v.get("xlog");
    let location = xlog.and_then(|x| x.get("location")).and_then(Value::as_u64);
    let received = xlog
        .and_then(|x| x.get("received_location"))
        .and_then(Value::as_u64);
    let replayed = xlog
        .and_then(|x| x.get("replayed_location"))
        .and_then(Value::as_u64);
    let is_primary = location.is_some() || role == Some(Role::Primary);
    let tags: Tags = v
        .get("tags")
        .and_then(|t| serde_json::from_value(t.clone()).ok())
        .unwrap_or_default();
    Some(PeerReply {
        is_primary: is_primary && v.get("state").and_then(Value::as_str) == Some("running"),
        wal_position: location
            .unwrap_or(0)
            .max(received.unwrap_or(0))
            .max(replayed.unwrap_or(0)),
        timeline: v.get("timeline").and_then(Value::as_u64),
        tags,
        watchdog_failed: v
            .get("watchdog_failed")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[async_trait]
impl PeerProbe for HttpPeerProbe {
    async fn probe(&self, member: &Member) -> Option<PeerReply> {
        let url = member.data.api_url.as_deref()?;
        let resp = self.client.http().get(url).send().await.ok()?;
        let v: Value = resp.json().await.ok()?;
        reply_from_status(&v)
    }

    async fn failsafe_call(&self, api_url: &str, body: &Value) -> Option<Option<ha_core::Lsn>> {
        let client = self.client.current();
        let req = client.http.post(failsafe_url(api_url)).json(body);
        let resp = crate::api::with_api_auth(req, client.auth.as_ref())
            .send()
            .await
            .ok()?;
        if resp.status() != reqwest::StatusCode::OK {
            return None;
        }
        // The member's received/replayed position (Patroni's `lsn` header).
        let lsn = resp
            .headers()
            .get("lsn")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok());
        let text = resp.text().await.ok()?;
        (text.trim() == "Accepted").then_some(lsn)
    }
}

#[cfg(test)]
mod failsafe_tests {
    use super::failsafe_url;

    #[test]
    fn failsafe_url_replaces_the_patroni_path() {
        assert_eq!(
            failsafe_url("http://10.0.0.1:8008/patroni"),
            "http://10.0.0.1:8008/failsafe"
        );
        assert_eq!(failsafe_url("https://h:8008/"), "https://h:8008/failsafe");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_primary_and_replica_status() {
        let p = reply_from_status(&serde_json::json!({"state":"running","role":"primary","xlog":{"location":100},"timeline":2})).unwrap();
        assert!(p.is_primary);
        assert_eq!(p.wal_position, 100);
        let r = reply_from_status(&serde_json::json!({"state":"running","role":"replica","xlog":{"received_location":90,"replayed_location":80},"tags":{"nofailover":true}})).unwrap();
        assert!(!r.is_primary);
        assert_eq!(r.wal_position, 90);
        assert!(r.tags.never_promote());
    }
}
