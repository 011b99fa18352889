//! `ConsulDcs`: the `Dcs` trait on Consul sessions and KV, with Patroni's mapping.

use crate::client::{ConsulClient, DeleteOptions, KvPair, PutOptions, SessionRequest};
use crate::config::ConsulConfig;
use crate::error::ConsulError;
use crate::service::{signature, ServiceAction, ServiceSettings};
use crate::watch::PrefixWatcher;
use async_trait::async_trait;
use ha_core::{Cluster, ClusterKeys, Dcs, DcsError, DcsTiming, MemberData, RawEntry, Version};
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// Lock-delay of our sessions: Patroni's "practically none" (0 might be read as
/// "use the default of 15s").
const LOCK_DELAY: Duration = Duration::from_millis(1);

#[derive(Debug, Clone)]
struct LiveSession {
    id: String,
    /// The `ttl` it was created for (a changed ttl needs a new session).
    ttl: Duration,
}

/// A Consul-backed `Dcs` for one member of one cluster.
pub struct ConsulDcs {
    client: ConsulClient,
    keys: ClusterKeys,
    member: String,
    session_name: String,
    checks: Vec<String>,
    timing: Mutex<DcsTiming>,
    session: tokio::sync::Mutex<Option<LiveSession>>,
    changes: watch::Receiver<u64>,
    _watcher: PrefixWatcher,
    scope: String,
    service: Option<ServiceSettings>,
    /// The member data of the last successful service update.
    service_done: tokio::sync::Mutex<Option<(String, String, String, String)>>,
}

impl ConsulDcs {
    /// Connects lazily (no request is made here) to the agent of `config`, for
    /// member `member` of cluster `namespace`/`scope`. Must be called inside a
    /// tokio runtime: the wake-up watcher starts at once.
    pub fn new(
        config: &ConsulConfig,
        namespace: &str,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Result<Self, DcsError> {
        let service = config.service_settings()?;
        let client = ConsulClient::new(config)?;
        let keys = ClusterKeys::new(namespace, scope);
        let (watcher, changes) =
            PrefixWatcher::start(client.clone(), keys.clone()).ok_or_else(|| {
                DcsError::Config("the consul backend must be created inside a tokio runtime".into())
            })?;
        Ok(ConsulDcs {
            client,
            keys,
            member: member.to_string(),
            session_name: format!("{scope}-{member}"),
            checks: config.checks.clone(),
            timing: Mutex::new(timing),
            session: tokio::sync::Mutex::new(None),
            changes,
            _watcher: watcher,
            scope: scope.to_string(),
            service,
            service_done: tokio::sync::Mutex::new(None),
        })
    }

    /// Registers, deregisters or keeps this member's Consul service after a member
    /// write, when `register_service` is on and the registration-relevant data
    /// changed since the last successful update. Failures are logged and retried
    /// with the next member write (as Patroni: the member key matters more).
    async fn update_service(&self, data: &MemberData) {
        let Some(settings) = &self.service else {
            return;
        };
        let mut done = self.service_done.lock().await;
        let current = signature(data);
        if current.is_some() && *done == current {
            return;
        }
        let timing = self.timing();
        let action = match settings.action(&self.scope, &self.member, data, timing.ttl) {
            Ok(a) => a,
            Err(why) => {
                tracing::warn!("could not register the consul service: {why}");
                return;
            }
        };
        let deadline = Instant::now() + timing.retry_timeout / 2;
        let result = match &action {
            ServiceAction::Register(body) => {
                tracing::info!(service = %body, "registering the consul service");
                self.client.service_register(body, deadline).await
            }
            ServiceAction::Deregister(id) => {
                tracing::info!(id, "deregistering the consul service");
                self.client.service_deregister(id, deadline).await
            }
            ServiceAction::Keep => Ok(()),
        };
        match result {
            Ok(()) => *done = current,
            Err(e) => {
                tracing::warn!(
                    "consul service update failed (retried with the next member write): {e}"
                );
                *done = None;
            }
        }
    }

    /// The current session ID, if one was created (for tests and diagnostics).
    pub async fn session_id(&self) -> Option<String> {
        self.session.lock().await.as_ref().map(|s| s.id.clone())
    }

    fn timing(&self) -> DcsTiming {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Consul's spelling of a key: the full path without the leading slash.
    fn path(&self, full: String) -> String {
        full.trim_start_matches('/').to_string()
    }

    fn leader_key(&self) -> String {
        self.path(self.keys.leader())
    }

    /// Writes `value` at `key` held by my session (a member or proxy record),
    /// replacing a key another session holds; `false` when that race was lost.
    async fn touch_session_key(
        &self,
        what: &str,
        key: &str,
        value: &str,
    ) -> Result<bool, DcsError> {
        self.bounded(what, |deadline| async move {
            if self.acquire(key, value.as_bytes(), deadline).await? {
                return Ok(true);
            }
            // Held by another session: my previous one (after a ttl change)
            // or a stale one. Replace it, as Patroni does.
            if let Some(pair) = self.read_key(key, deadline).await? {
                let delete = DeleteOptions {
                    cas: Some(pair.modify_index),
                    recurse: false,
                };
                if !self.client.kv_delete(key, &delete, deadline).await? {
                    return Ok(false);
                }
            }
            self.acquire(key, value.as_bytes(), deadline).await
        })
        .await
    }

    fn member_key(&self) -> String {
        self.path(self.keys.member(&self.member))
    }

    /// Runs one trait operation under the `retry_timeout` bound. The internal
    /// deadline keeps a small margin (5%, at most 250 ms) so that waking up and
    /// returning after it still fits in `retry_timeout`.
    async fn bounded<T, F>(&self, what: &str, op: impl FnOnce(Instant) -> F) -> Result<T, DcsError>
    where
        F: Future<Output = Result<T, ConsulError>>,
    {
        let retry_timeout = self.timing().retry_timeout;
        let limit = retry_timeout - (retry_timeout / 20).min(Duration::from_millis(250));
        let deadline = Instant::now() + limit;
        match tokio::time::timeout_at(deadline, op(deadline)).await {
            Ok(result) => result.map_err(DcsError::from),
            Err(_) => Err(DcsError::Unreachable(format!(
                "consul agent at {} did not complete {what} within {limit:?}",
                self.client.base_url()
            ))),
        }
    }

    /// Creates a session with TTL = `ttl`; if the agent's `session_ttl_min` is
    /// larger, retries with that minimum (a longer lease is safe, only slower to
    /// fail over).
    async fn create_session(
        &self,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<String, ConsulError> {
        let mut request = SessionRequest {
            name: self.session_name.clone(),
            ttl,
            lock_delay: LOCK_DELAY,
            behavior: "delete",
            checks: self.checks.clone(),
        };
        match self.client.session_create(&request, deadline).await {
            Err(ConsulError::Http {
                status: 400, body, ..
            }) if body.contains("Invalid Session TTL") => {
                let Some(min) = parse_ttl_minimum(&body).filter(|min| *min > ttl) else {
                    return Err(ConsulError::Http {
                        status: 400,
                        what: "session create".into(),
                        body,
                    });
                };
                tracing::warn!(
                    requested = ?ttl, minimum = ?min,
                    "the consul agent refuses session TTLs below its session_ttl_min; using the minimum"
                );
                request.ttl = min;
                self.client.session_create(&request, deadline).await
            }
            other => other,
        }
    }

    /// Renews my session, or creates one when there is none, it expired, or the
    /// ttl changed. Answers the session ID.
    async fn ensure_session(&self, deadline: Instant) -> Result<String, ConsulError> {
        let ttl = self.timing().ttl;
        let mut slot = self.session.lock().await;
        if let Some(live) = slot.as_ref() {
            if live.ttl == ttl {
                if self.client.session_renew(&live.id, deadline).await? {
                    return Ok(live.id.clone());
                }
                tracing::warn!(session = %live.id, "consul session expired; creating a new one");
            } else {
                // The old session is left to expire: destroying it would delete
                // the leader key before renew_leader re-binds it.
                tracing::info!(
                    "ttl changed from {} s to {} s; creating a new consul session",
                    live.ttl.as_secs_f64(),
                    ttl.as_secs_f64()
                );
            }
        }
        let id = self.create_session(ttl, deadline).await?;
        *slot = Some(LiveSession {
            id: id.clone(),
            ttl,
        });
        Ok(id)
    }

    /// Forgets `id` if it is still the current session (it was found invalid).
    async fn forget_session(&self, id: &str) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| s.id == id) {
            *slot = None;
        }
    }

    /// `PUT ?acquire=<my session>`; a session found invalid in between is replaced
    /// once.
    async fn acquire(
        &self,
        key: &str,
        value: &[u8],
        deadline: Instant,
    ) -> Result<bool, ConsulError> {
        let mut session = self.ensure_session(deadline).await?;
        for attempt in 0..2 {
            let options = PutOptions {
                acquire: Some(session.clone()),
                ..PutOptions::default()
            };
            match self.client.kv_put(key, value, &options, deadline).await {
                Err(ConsulError::InvalidSession(id)) if attempt == 0 => {
                    self.forget_session(&id).await;
                    session = self.ensure_session(deadline).await?;
                }
                other => return other,
            }
        }
        Err(ConsulError::InvalidSession(session))
    }

    /// Reads one key consistently (lock decisions must not act on stale data).
    async fn read_key(&self, key: &str, deadline: Instant) -> Result<Option<KvPair>, ConsulError> {
        self.client.kv_get(key, true, deadline).await
    }

    async fn put_plain(&self, key: String, value: String, what: &str) -> Result<(), DcsError> {
        let written = self
            .bounded(what, |deadline| async move {
                self.client
                    .kv_put(&key, value.as_bytes(), &PutOptions::default(), deadline)
                    .await
            })
            .await?;
        if written {
            Ok(())
        } else {
            Err(DcsError::Backend(format!(
                "consul refused an unconditional write during {what}"
            )))
        }
    }

    async fn put_versioned(
        &self,
        key: String,
        value: String,
        expected: Option<Version>,
        what: &str,
    ) -> Result<bool, DcsError> {
        let cas = cas_index(expected)?;
        self.bounded(what, |deadline| async move {
            let options = PutOptions {
                cas,
                ..PutOptions::default()
            };
            self.client
                .kv_put(&key, value.as_bytes(), &options, deadline)
                .await
        })
        .await
    }
}

/// A CAS version as Consul's ModifyIndex.
fn cas_index(expected: Option<Version>) -> Result<Option<u64>, DcsError> {
    expected
        .map(|v| {
            u64::try_from(v.0)
                .map_err(|_| DcsError::Backend(format!("version {} is not a consul index", v.0)))
        })
        .transpose()
}

/// The minimum of Consul's `... must be between [<min>=<max>]` message.
fn parse_ttl_minimum(body: &str) -> Option<Duration> {
    let inside = body.split_once('[')?.1.split_once(']')?.0;
    let min = inside.split_once('=')?.0.trim();
    parse_go_duration(min)
}

/// Parses the simple Go durations Consul prints for its limits (`10s`, `1m0s`, `500ms`).
pub(crate) fn parse_go_duration(text: &str) -> Option<Duration> {
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let value: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += Duration::try_from_secs_f64(value * unit).ok()?;
        rest = &rest[u..];
    }
    Some(total)
}

#[async_trait]
impl Dcs for ConsulDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let prefix = self.keys.prefix_without_leading_slash().to_string();
        let pairs = self
            .bounded("get_cluster", |deadline| async move {
                self.client.kv_list(&prefix, deadline).await
            })
            .await?
            .0;
        let mut entries = Vec::with_capacity(pairs.len());
        for pair in pairs {
            let value = pair.decoded_value().map_err(DcsError::from)?;
            entries.push(RawEntry {
                session: pair.holder().map(str::to_string),
                version: Version(i64::try_from(pair.modify_index).unwrap_or(i64::MAX)),
                key: pair.key,
                value,
            });
        }
        Ok(Cluster::from_full_paths(&self.keys, entries))
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        let key = self.leader_key();
        self.bounded("acquire_leader", |deadline| async move {
            self.acquire(&key, self.member.as_bytes(), deadline).await
        })
        .await
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        let key = self.leader_key();
        self.bounded("renew_leader", |deadline| async move {
            let session = self.ensure_session(deadline).await?;
            let Some(pair) = self.read_key(&key, deadline).await? else {
                return Ok(false);
            };
            if pair.decoded_value()?.trim() != self.member {
                return Ok(false);
            }
            if pair.holder() == Some(session.as_str()) {
                return Ok(true);
            }
            // My name under another (older) session, or none: re-bind it to my
            // current session, unless someone changed the key meanwhile.
            tracing::info!(
                key = %key, holder = ?pair.holder(),
                "the leader key carries my name but not my session; re-acquiring it"
            );
            let delete = DeleteOptions {
                cas: Some(pair.modify_index),
                recurse: false,
            };
            if !self.client.kv_delete(&key, &delete, deadline).await? {
                return Ok(false);
            }
            self.acquire(&key, self.member.as_bytes(), deadline).await
        })
        .await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        let key = self.leader_key();
        self.bounded("release_leader", |deadline| async move {
            let Some(pair) = self.read_key(&key, deadline).await? else {
                return Ok(false);
            };
            if pair.decoded_value()?.trim() != self.member {
                return Ok(false);
            }
            let delete = DeleteOptions {
                cas: Some(pair.modify_index),
                recurse: false,
            };
            self.client.kv_delete(&key, &delete, deadline).await
        })
        .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let key = self.member_key();
        if self
            .touch_session_key("touch_member", &key, &data.to_json())
            .await?
        {
            self.update_service(data).await;
            Ok(())
        } else {
            Err(DcsError::Backend(format!(
                "member key {key} is held by another consul session (another agent named {}?)",
                self.member
            )))
        }
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        let key = self.path(self.keys.proxy(&self.member));
        if self.touch_session_key("touch_proxy", &key, record).await? {
            Ok(())
        } else {
            Err(DcsError::Backend(format!(
                "proxy key {key} is held by another consul session (another proxy named {}?)",
                self.member
            )))
        }
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        let key = self.path(self.keys.initialize());
        self.put_versioned(key, value.to_string(), Some(Version(0)), "initialize")
            .await
    }

    /// Consul's write answer carries no index: a written key is read back for its
    /// new ModifyIndex.
    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        let what = format!("set_{key}");
        let key = self.path(self.keys.key(key));
        let cas = cas_index(expected)?;
        self.bounded(&what, |deadline| async move {
            let options = PutOptions {
                cas,
                ..PutOptions::default()
            };
            if !self
                .client
                .kv_put(&key, value.as_bytes(), &options, deadline)
                .await?
            {
                return Ok(None);
            }
            let Some(pair) = self.read_key(&key, deadline).await? else {
                return Ok(None);
            };
            if pair.decoded_value()? != value {
                // Overwritten in between: the caller must re-read before a CAS.
                return Ok(None);
            }
            Ok(Some(Version(
                i64::try_from(pair.modify_index).unwrap_or(i64::MAX),
            )))
        })
        .await
    }

    /// One request: no read-back for a version nobody asked for.
    async fn write_key(&self, key: &str, value: String) -> Result<(), DcsError> {
        let what = format!("set_{key}");
        self.put_plain(self.path(self.keys.key(key)), value, &what)
            .await
    }

    /// One request: no read-back for a version nobody asked for.
    async fn write_key_if(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        let what = format!("set_{key}");
        self.put_versioned(self.path(self.keys.key(key)), value, expected, &what)
            .await
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        let what = format!("delete_{key}");
        let key = self.path(self.keys.key(key));
        let cas = cas_index(expected)?;
        self.bounded(&what, |deadline| async move {
            let options = DeleteOptions {
                cas,
                recurse: false,
            };
            self.client.kv_delete(&key, &options, deadline).await
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.keys.prefix_without_leading_slash().to_string();
        self.bounded("delete_cluster", |deadline| async move {
            let options = DeleteOptions {
                cas: None,
                recurse: true,
            };
            self.client.kv_delete(&prefix, &options, deadline).await
        })
        .await
        .map(|_| ())
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    fn set_timing(&self, timing: DcsTiming) {
        *self.timing.lock().unwrap_or_else(|e| e.into_inner()) = timing;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_agents_ttl_minimum() {
        assert_eq!(
            parse_ttl_minimum("Invalid Session TTL '5s', must be between [10s=24h0m0s]"),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            parse_ttl_minimum("Invalid Session TTL '5000000000', must be between [1m0s=24h0m0s]"),
            Some(Duration::from_secs(60))
        );
        assert_eq!(parse_ttl_minimum("garbage"), None);
    }

    #[test]
    fn creating_outside_a_runtime_is_a_config_error() {
        let created = ConsulDcs::new(
            &ConsulConfig::default(),
            "service",
            "batman",
            "pg0",
            DcsTiming::default(),
        );
        assert!(matches!(created, Err(DcsError::Config(_))));
    }

    #[test]
    fn versions_map_to_consul_indexes() {
        assert_eq!(cas_index(Some(Version(7))).unwrap(), Some(7));
        assert_eq!(cas_index(None).unwrap(), None);
        assert!(cas_index(Some(Version(-1))).is_err());
    }
}
