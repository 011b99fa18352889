//! `EtcdDcs`: the `Dcs` trait on etcd v3 with Patroni's etcd3 lock contract.

use crate::config::EtcdConfig;
use crate::failure::{classify, looks_like_bad_credentials, looks_like_tls, Failure};
use crate::watcher::{spawn_watcher, WatcherGuard};
use async_trait::async_trait;
use etcd_client::{
    Certificate, Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, Identity,
    PutOptions, TlsOptions, Txn, TxnOp, TxnOpResponse, TxnResponse,
};
use ha_core::{
    Cluster, ClusterKeys, Dcs, DcsError, DcsTiming, DynamicConfig, Failover, Failsafe, History,
    MemberData, RawEntry, Status, SyncState, Version,
};
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A `touch_member` right after another refresh (e.g. the leader's `renew_leader` in
/// the same cycle) skips its keepalive; anything older is refreshed.
const KEEPALIVE_REUSE: Duration = Duration::from_secs(1);

/// The lease this agent binds `leader` and its member key to.
#[derive(Debug, Clone, Copy)]
struct Lease {
    id: i64,
    /// The TTL asked for (seconds), so a changed `ttl` gets a new lease.
    requested_ttl: i64,
    /// Last grant or successful keepalive.
    refreshed: Instant,
}

/// How to build an etcd client: endpoints, credentials, TLS, timeouts.
#[derive(Clone)]
pub(crate) struct ClientFactory {
    pub endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    tls: Option<TlsOptions>,
}

impl ClientFactory {
    fn new(config: &EtcdConfig) -> Result<Self, DcsError> {
        let endpoints = config.endpoints()?;
        let credentials = config.credentials()?;
        let tls = match config.tls_material()? {
            None => None,
            Some(m) => {
                let mut tls = TlsOptions::new();
                if let Some(ca) = m.ca {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = m.identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                Some(tls)
            }
        };
        if tls.is_some() && endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(DcsError::Config(
                "etcd3: TLS files are configured but an endpoint uses http://; use https"
                    .to_string(),
            ));
        }
        Ok(ClientFactory {
            endpoints,
            credentials,
            tls,
        })
    }

    fn options(&self, attempt_timeout: Duration) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(attempt_timeout)
            .with_keep_alive_while_idle(false);
        if let Some((user, password)) = &self.credentials {
            o = o.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.clone());
        }
        o
    }

    /// A client for unary requests to endpoint `index`, each bounded by
    /// `attempt_timeout`. One client per endpoint (not etcd-client's balanced channel)
    /// so a member that hangs is left for the next one deterministically.
    pub async fn request_client(
        &self,
        index: usize,
        attempt_timeout: Duration,
    ) -> Result<Client, Failure> {
        let options = self.options(attempt_timeout).with_timeout(attempt_timeout);
        Client::connect([&self.endpoints[index]], Some(options))
            .await
            .map_err(classify)
    }

    /// A client for the long-lived watch stream: no per-request deadline, but HTTP/2
    /// pings so a silently vanished member is noticed, and only members with a raft
    /// leader serve it (a partitioned member would otherwise stay silent).
    pub async fn watch_client(
        &self,
        index: usize,
        attempt_timeout: Duration,
    ) -> Result<Client, Failure> {
        let options = self
            .options(attempt_timeout)
            .with_keep_alive(Duration::from_secs(5), attempt_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        Client::connect([&self.endpoints[index]], Some(options))
            .await
            .map_err(classify)
    }
}

/// The per-attempt deadline: `retry_timeout` spread over the endpoints as Patroni
/// does (one endpoint gets three tries, two get two each), at least one second.
pub(crate) fn attempt_timeout(retry_timeout: Duration, endpoints: usize) -> Duration {
    let tries = match endpoints {
        0 | 1 => 3,
        n => n as u32,
    };
    (retry_timeout / tries)
        .max(Duration::from_secs(1))
        .min(retry_timeout)
}

/// The lease TTL for `ttl`: whole seconds, rounded up (etcd raises anything below its
/// own minimum, about 2 s with default raft timing).
pub(crate) fn lease_ttl_secs(ttl: Duration) -> i64 {
    (ttl.as_secs_f64().ceil() as i64).max(1)
}

struct Shared {
    keys: ClusterKeys,
    name: String,
    factory: ClientFactory,
    timing: Mutex<DcsTiming>,
    /// One lazily built client per endpoint; dropped after a failure so the next use
    /// reconnects (and re-authenticates).
    /// Each with the per-attempt timeout it was built with (a new `retry_timeout`
    /// rebuilds it).
    clients: Vec<tokio::sync::Mutex<Option<(Client, Duration)>>>,
    /// The endpoint requests go to until it fails; then the next one.
    preferred: AtomicUsize,
    lease: Mutex<Option<Lease>>,
    /// Serializes grants and keepalives so concurrent calls never grant two leases.
    lease_op: tokio::sync::Mutex<()>,
    wake: Arc<watch::Sender<u64>>,
}

/// The etcd v3 backend for one cluster (`namespace`/`scope`) and one member.
///
/// Clones share the client, the lease and the watch task; the watch task stops when
/// the last clone is dropped. The lease is refreshed only by `acquire_leader`,
/// `renew_leader` and `touch_member`, never in the background, so an agent whose HA
/// loop is stuck loses its keys after `ttl`.
#[derive(Clone)]
pub struct EtcdDcs {
    shared: Arc<Shared>,
    _watcher: Arc<WatcherGuard>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl EtcdDcs {
    /// Validates `config` and, when etcd answers, the credentials and TLS set-up
    /// (`DcsError::Config` for wrong ones). An unreachable etcd is not an error here:
    /// the backend starts and its calls report `DcsError::Unreachable` until etcd
    /// answers, so agents may start before their DCS.
    pub async fn connect(
        config: &EtcdConfig,
        namespace: &str,
        scope: &str,
        name: &str,
        timing: DcsTiming,
    ) -> Result<EtcdDcs, DcsError> {
        if name.is_empty() || scope.is_empty() {
            return Err(DcsError::Config(
                "scope and member name must not be empty".to_string(),
            ));
        }
        let factory = ClientFactory::new(config)?;
        let keys = ClusterKeys::new(namespace, scope);
        let (wake, _) = watch::channel(0u64);
        let wake = Arc::new(wake);
        let shared = Arc::new(Shared {
            keys: keys.clone(),
            name: name.to_string(),
            factory: factory.clone(),
            timing: Mutex::new(timing),
            clients: (0..factory.endpoints.len())
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            preferred: AtomicUsize::new(0),
            lease: Mutex::new(None),
            lease_op: tokio::sync::Mutex::new(()),
            wake: wake.clone(),
        });
        let dcs = EtcdDcs {
            _watcher: Arc::new(spawn_watcher(
                factory,
                keys.clone(),
                wake,
                timing.retry_timeout,
            )),
            shared,
        };
        dcs.probe().await?;
        Ok(dcs)
    }

    /// Reads the cluster prefix once to surface wrong credentials or TLS set-up now.
    /// Tries until `retry_timeout`: an etcd that refuses or ignores connections is
    /// only "unreachable" (the agent may start before its DCS), but one that accepts
    /// connections and hangs up on every request speaks another protocol (plain
    /// HTTP to a TLS-only port), which no retry fixes.
    async fn probe(&self) -> Result<(), DcsError> {
        let timing = self.timing();
        let deadline = Instant::now() + timing.retry_timeout;
        let per_attempt =
            attempt_timeout(timing.retry_timeout, self.shared.factory.endpoints.len());
        let prefix = self.shared.keys.prefix().to_string();
        let (mut hung_up, mut other) = (0u32, 0u32);
        let mut last = String::new();
        while !deadline.saturating_duration_since(Instant::now()).is_zero() {
            let this_attempt = per_attempt.min(deadline.saturating_duration_since(Instant::now()));
            let index = self.preferred_endpoint();
            let attempt = async {
                let mut client = self.client(index, per_attempt).await?;
                client
                    .get(
                        prefix.clone(),
                        Some(
                            GetOptions::new()
                                .with_prefix()
                                .with_keys_only()
                                .with_limit(1),
                        ),
                    )
                    .await
                    .map_err(Failure::from)?;
                Ok::<(), Failure>(())
            };
            let outcome = tokio::time::timeout(this_attempt, attempt).await;
            if !matches!(outcome, Ok(Ok(()))) {
                self.endpoint_failed(index).await;
            }
            match outcome {
                Ok(Ok(())) => return Ok(()),
                Ok(Err(Failure::Fatal(e))) => return Err(e),
                Ok(Err(Failure::LeaseGone)) => return Ok(()),
                Ok(Err(Failure::Retry(text))) | Ok(Err(Failure::Reauthenticate(text))) => {
                    if looks_like_tls(&text) {
                        return Err(DcsError::Config(format!(
                            "etcd TLS handshake failed (check etcd3.cacert/cert/key and the \
                             endpoints' scheme): {text}"
                        )));
                    }
                    if looks_like_bad_credentials(&text) {
                        return Err(DcsError::Config(format!(
                            "etcd rejected the credentials: {text}"
                        )));
                    }
                    let lower = text.to_ascii_lowercase();
                    if ["connection closed", "broken pipe", "connection reset"]
                        .iter()
                        .any(|m| lower.contains(m))
                    {
                        hung_up += 1;
                    } else {
                        other += 1;
                    }
                    last = text;
                }
                Err(_) => {
                    other += 1;
                    last = format!("no answer within {this_attempt:?}");
                }
            }
            let pause =
                Duration::from_millis(200).min(deadline.saturating_duration_since(Instant::now()));
            tokio::time::sleep(pause).await;
        }
        if hung_up > 0 && other == 0 {
            return Err(DcsError::Config(format!(
                "etcd at {:?} accepts connections but closes them on every request: a \
                 TLS-only etcd reached over http://? use https:// endpoints and etcd3.cacert \
                 ({last})",
                self.shared.factory.endpoints
            )));
        }
        tracing::warn!(endpoints = ?self.shared.factory.endpoints, error = %last,
            "etcd not reachable at start-up; will keep trying");
        Ok(())
    }

    /// The cluster's key names.
    pub fn keys(&self) -> &ClusterKeys {
        &self.shared.keys
    }

    /// The endpoint URLs in use.
    pub fn endpoints(&self) -> &[String] {
        &self.shared.factory.endpoints
    }

    /// The id of the lease this agent currently writes with, if any.
    pub fn lease_id(&self) -> Option<i64> {
        lock(&self.shared.lease).map(|l| l.id)
    }

    fn timing(&self) -> DcsTiming {
        *lock(&self.shared.timing)
    }

    /// Runs `op` against the preferred endpoint, moving on to the next endpoint after
    /// each failed attempt, until `retry_timeout`; then `DcsError::Unreachable`.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, DcsError>
    where
        F: Fn(Client, u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let timing = self.timing();
        // Give up a moment before the hard bound so the answer says why.
        let margin = (timing.retry_timeout / 50).min(Duration::from_millis(50));
        let deadline = Instant::now() + timing.retry_timeout - margin;
        let per_attempt =
            attempt_timeout(timing.retry_timeout, self.shared.factory.endpoints.len());
        let mut attempt = 0u32;
        let mut last = String::from("no attempt finished");
        let mut lease_regrants = 0;
        let body = async {
            loop {
                let remaining = deadline.saturating_duration_since(Instant::now());
                if remaining.is_zero() {
                    break;
                }
                let this_attempt = per_attempt.min(remaining);
                let index = self.preferred_endpoint();
                let outcome = tokio::time::timeout(this_attempt, async {
                    let client = self.client(index, per_attempt).await?;
                    op(client, attempt).await
                })
                .await;
                if matches!(
                    outcome,
                    Ok(Err(Failure::Retry(_) | Failure::Reauthenticate(_))) | Err(_)
                ) {
                    self.endpoint_failed(index).await;
                }
                let endpoint = &self.shared.factory.endpoints[index];
                match outcome {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(Failure::Fatal(e))) => return Err(e),
                    Ok(Err(Failure::Retry(text))) | Ok(Err(Failure::Reauthenticate(text))) => {
                        last = format!("{endpoint}: {text}")
                    }
                    Ok(Err(Failure::LeaseGone)) => {
                        *lock(&self.shared.lease) = None;
                        lease_regrants += 1;
                        last = "lease expired".to_string();
                        if lease_regrants <= 2 {
                            attempt += 1;
                            continue;
                        }
                    }
                    Err(_) => last = format!("{endpoint}: no answer within {this_attempt:?}"),
                }
                attempt += 1;
                let pause = Duration::from_millis(50 * u64::from(attempt.min(10)))
                    .min(deadline.saturating_duration_since(Instant::now()));
                tokio::time::sleep(pause).await;
            }
            Err(DcsError::Unreachable(format!(
                "etcd {what} failed within {:?} ({} attempts): {last}",
                timing.retry_timeout, attempt
            )))
        };
        match tokio::time::timeout(timing.retry_timeout, body).await {
            Ok(r) => r,
            Err(_) => Err(DcsError::Unreachable(format!(
                "etcd {what}: no answer within {:?}",
                timing.retry_timeout
            ))),
        }
    }

    fn preferred_endpoint(&self) -> usize {
        self.shared.preferred.load(Ordering::Relaxed) % self.shared.clients.len()
    }

    /// Forgets endpoint `index`'s client (its connection may be stuck or its auth
    /// token stale) and prefers the next endpoint, unless another call already moved on.
    async fn endpoint_failed(&self, index: usize) {
        *self.shared.clients[index].lock().await = None;
        let next = (index + 1) % self.shared.clients.len();
        let _ = self.shared.preferred.compare_exchange(
            index,
            next,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The client for endpoint `index`, built (and authenticated) on first use.
    async fn client(&self, index: usize, attempt_timeout: Duration) -> Result<Client, Failure> {
        let mut slot = self.shared.clients[index].lock().await;
        if let Some((c, built_for)) = slot.as_ref() {
            if *built_for == attempt_timeout {
                return Ok(c.clone());
            }
        }
        let c = self
            .shared
            .factory
            .request_client(index, attempt_timeout)
            .await?;
        *slot = Some((c.clone(), attempt_timeout));
        Ok(c)
    }

    /// My lease, granted if there is none or `ttl` changed; not refreshed.
    async fn ensure_lease(&self, client: &mut Client) -> Result<i64, Failure> {
        let _serial = self.shared.lease_op.lock().await;
        let ttl = lease_ttl_secs(self.timing().ttl);
        if let Some(l) = *lock(&self.shared.lease) {
            if l.requested_ttl == ttl {
                return Ok(l.id);
            }
        }
        self.grant_lease(client, ttl).await
    }

    async fn grant_lease(&self, client: &mut Client, ttl: i64) -> Result<i64, Failure> {
        let sent = Instant::now();
        let resp = client.lease_grant(ttl, None).await?;
        if !resp.error().is_empty() {
            return Err(Failure::Retry(format!(
                "lease grant refused: {}",
                resp.error()
            )));
        }
        tracing::debug!(lease = resp.id(), ttl = resp.ttl(), "granted etcd lease");
        *lock(&self.shared.lease) = Some(Lease {
            id: resp.id(),
            requested_ttl: ttl,
            refreshed: sent,
        });
        Ok(resp.id())
    }

    /// My lease, refreshed by one keepalive (the stream is closed right after), or a
    /// new one when it is gone or `ttl` changed.
    async fn refresh_lease(&self, client: &mut Client) -> Result<i64, Failure> {
        let _serial = self.shared.lease_op.lock().await;
        let ttl = lease_ttl_secs(self.timing().ttl);
        let current = *lock(&self.shared.lease);
        let Some(lease) = current.filter(|l| l.requested_ttl == ttl) else {
            return self.grant_lease(client, ttl).await;
        };
        let sent = Instant::now();
        match client.lease_keep_alive(lease.id).await {
            Ok(_) => {
                if let Some(l) = lock(&self.shared.lease).as_mut() {
                    if l.id == lease.id {
                        l.refreshed = sent;
                    }
                }
                Ok(lease.id)
            }
            Err(e) => match classify(e) {
                Failure::LeaseGone => {
                    tracing::info!(lease = lease.id, "etcd lease expired; granting a new one");
                    *lock(&self.shared.lease) = None;
                    self.grant_lease(client, ttl).await
                }
                other => Err(other),
            },
        }
    }

    async fn put_versioned(
        &self,
        what: &str,
        key: String,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        self.run(what, |mut c, _| {
            let key = key.clone();
            let value = value.clone();
            async move {
                match expected {
                    None => {
                        let resp = c.put(key, value, None).await?;
                        Ok(Some(Version(resp.header().map_or(0, |h| h.revision()))))
                    }
                    Some(v) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, v.0)])
                            .and_then([TxnOp::put(key, value, None)]);
                        let resp = c.txn(txn).await?;
                        Ok(resp
                            .succeeded()
                            .then(|| Version(resp.header().map_or(0, |h| h.revision()))))
                    }
                }
            }
        })
        .await
    }

    async fn put_plain(&self, what: &str, key: String, value: String) -> Result<(), DcsError> {
        self.put_versioned(what, key, value, None).await.map(|_| ())
    }
}

/// Whether a txn (or the first nested txn of its failure branch, recursively) took
/// its success branch.
fn any_branch_succeeded(resp: &TxnResponse) -> bool {
    if resp.succeeded() {
        return true;
    }
    resp.op_responses().iter().any(|r| match r {
        TxnOpResponse::Txn(inner) => any_branch_succeeded(inner),
        _ => false,
    })
}

#[async_trait]
impl Dcs for EtcdDcs {
    async fn get_cluster(&self) -> Result<Cluster, DcsError> {
        let prefix = self.shared.keys.prefix().to_string();
        let entries = self
            .run("read", |mut c, _| {
                let prefix = prefix.clone();
                async move {
                    let resp = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
                    Ok(resp
                        .kvs()
                        .iter()
                        .map(|kv| RawEntry {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: String::from_utf8_lossy(kv.value()).into_owned(),
                            version: Version(kv.mod_revision()),
                            session: (kv.lease() != 0).then(|| kv.lease().to_string()),
                        })
                        .collect::<Vec<_>>())
                }
            })
            .await?;
        Ok(Cluster::from_full_paths(&self.shared.keys, entries))
    }

    async fn acquire_leader(&self) -> Result<bool, DcsError> {
        let key = self.shared.keys.leader();
        let name = self.shared.name.clone();
        self.run("leader acquire", |mut c, attempt| {
            let key = key.clone();
            let name = name.clone();
            async move {
                // Refreshed, not just present: the caller counts its leadership from
                // now, so the key must not expire earlier than now + ttl.
                let lease = self.refresh_lease(&mut c).await?;
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        name.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key, None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    return Ok(true);
                }
                // An earlier attempt may have created the key and lost the answer.
                let mine_already = attempt > 0
                    && resp.op_responses().iter().any(|r| match r {
                        TxnOpResponse::Get(g) => g
                            .kvs()
                            .iter()
                            .any(|kv| kv.value() == name.as_bytes() && kv.lease() == lease),
                        _ => false,
                    });
                Ok(mine_already)
            }
        })
        .await
    }

    async fn renew_leader(&self) -> Result<bool, DcsError> {
        let key = self.shared.keys.leader();
        let name = self.shared.name.clone();
        self.run("leader renew", |mut c, _| {
            let key = key.clone();
            let name = name.clone();
            async move {
                let lease = self.refresh_lease(&mut c).await?;
                let put = || {
                    TxnOp::put(
                        key.clone(),
                        name.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )
                };
                // Patroni's contract in one round trip: nothing to do when the key
                // holds my name on my lease; else re-bind it if it holds my name;
                // else create it if it is absent.
                let create_if_absent = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([put()]);
                let rebind = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, name.clone())])
                    .and_then([put()])
                    .or_else([TxnOp::txn(create_if_absent)]);
                let txn = Txn::new()
                    .when([
                        Compare::value(key.clone(), CompareOp::Equal, name.clone()),
                        Compare::lease(key.clone(), CompareOp::Equal, lease),
                    ])
                    .or_else([TxnOp::txn(rebind)]);
                let resp = c.txn(txn).await?;
                if !resp.succeeded() && any_branch_succeeded(&resp) {
                    tracing::info!(
                        lease,
                        "leader key was not bound to my lease; re-bound it to my lease"
                    );
                }
                Ok(any_branch_succeeded(&resp))
            }
        })
        .await
    }

    async fn release_leader(&self) -> Result<bool, DcsError> {
        let key = self.shared.keys.leader();
        let name = self.shared.name.clone();
        self.run("leader release", |mut c, _| {
            let key = key.clone();
            let name = name.clone();
            async move {
                let txn = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, name)])
                    .and_then([TxnOp::delete(key, None)]);
                Ok(c.txn(txn).await?.succeeded())
            }
        })
        .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let key = self.shared.keys.member(&self.shared.name);
        let value = data.to_json();
        self.run("member write", |mut c, _| {
            let key = key.clone();
            let value = value.clone();
            async move {
                let fresh = lock(&self.shared.lease)
                    .is_some_and(|l| l.refreshed.elapsed() < KEEPALIVE_REUSE);
                let lease = if fresh {
                    self.ensure_lease(&mut c).await?
                } else {
                    self.refresh_lease(&mut c).await?
                };
                c.put(key, value, Some(PutOptions::new().with_lease(lease)))
                    .await?;
                Ok(())
            }
        })
        .await
    }

    async fn initialize(&self, value: &str) -> Result<bool, DcsError> {
        let key = self.shared.keys.initialize();
        let value = value.to_string();
        self.run("initialize", |mut c, _| {
            let key = key.clone();
            let value = value.clone();
            async move {
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(key, value, None)]);
                Ok(c.txn(txn).await?.succeeded())
            }
        })
        .await
    }

    async fn set_initialize(&self, value: &str) -> Result<(), DcsError> {
        self.put_plain(
            "initialize write",
            self.shared.keys.initialize(),
            value.to_string(),
        )
        .await
    }

    async fn cancel_initialization(&self) -> Result<(), DcsError> {
        let key = self.shared.keys.initialize();
        self.run("initialize delete", |mut c, _| {
            let key = key.clone();
            async move {
                c.delete(key, None).await?;
                Ok(())
            }
        })
        .await
    }

    async fn set_config(
        &self,
        config: &DynamicConfig,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.put_versioned(
            "config write",
            self.shared.keys.config(),
            config.to_json(),
            expected,
        )
        .await
        .map(|v| v.is_some())
    }

    async fn set_failover(
        &self,
        failover: &Failover,
        expected: Option<Version>,
    ) -> Result<bool, DcsError> {
        self.put_versioned(
            "failover write",
            self.shared.keys.failover(),
            failover.to_json(),
            expected,
        )
        .await
        .map(|v| v.is_some())
    }

    async fn set_sync(
        &self,
        sync: &SyncState,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        self.put_versioned(
            "sync write",
            self.shared.keys.sync(),
            sync.to_json(),
            expected,
        )
        .await
    }

    async fn delete_sync(&self, expected: Option<Version>) -> Result<bool, DcsError> {
        let key = self.shared.keys.sync();
        self.run("sync delete", |mut c, _| {
            let key = key.clone();
            async move {
                match expected {
                    None => {
                        c.delete(key, None).await?;
                        Ok(true)
                    }
                    Some(v) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, v.0)])
                            .and_then([TxnOp::delete(key, None)]);
                        Ok(c.txn(txn).await?.succeeded())
                    }
                }
            }
        })
        .await
    }

    async fn set_history(&self, history: &History) -> Result<(), DcsError> {
        self.put_plain(
            "history write",
            self.shared.keys.history(),
            history.to_json(),
        )
        .await
    }

    async fn set_status(&self, status: &Status) -> Result<(), DcsError> {
        self.put_plain("status write", self.shared.keys.status(), status.to_json())
            .await
    }

    async fn set_failsafe(&self, failsafe: &Failsafe) -> Result<(), DcsError> {
        let value = serde_json::to_string(failsafe)
            .map_err(|e| DcsError::Backend(format!("cannot encode failsafe: {e}")))?;
        self.put_plain("failsafe write", self.shared.keys.failsafe(), value)
            .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.shared.keys.prefix().to_string();
        self.run("cluster delete", |mut c, _| {
            let prefix = prefix.clone();
            async move {
                c.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await?;
                Ok(())
            }
        })
        .await
    }

    fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.wake.subscribe()
    }

    fn set_timing(&self, timing: DcsTiming) {
        *lock(&self.shared.timing) = timing;
    }
}

impl std::fmt::Debug for EtcdDcs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDcs")
            .field("prefix", &self.shared.keys.prefix())
            .field("name", &self.shared.name)
            .field("endpoints", &self.shared.factory.endpoints)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_timeouts_follow_patroni() {
        let t = Duration::from_secs(9);
        assert_eq!(attempt_timeout(t, 1), Duration::from_secs(3));
        assert_eq!(attempt_timeout(t, 3), Duration::from_secs(3));
        assert_eq!(
            attempt_timeout(Duration::from_secs(10), 2),
            Duration::from_secs(5)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(2), 3),
            Duration::from_secs(1)
        );
        assert_eq!(
            attempt_timeout(Duration::from_millis(500), 1),
            Duration::from_millis(500)
        );
    }

    #[test]
    fn lease_ttl_rounds_up() {
        assert_eq!(lease_ttl_secs(Duration::from_millis(2500)), 3);
        assert_eq!(lease_ttl_secs(Duration::from_secs(30)), 30);
        assert_eq!(lease_ttl_secs(Duration::from_millis(10)), 1);
    }
}
