//! `EtcdDcs`: the `Dcs` trait on etcd v3 with Patroni's etcd3 lock contract.

use crate::cache::{raw_entry, ClusterCache};
use crate::client::{attempt_timeout, ClientFactory, EndpointPool};
use crate::config::EtcdConfig;
use crate::failure::{looks_like_bad_credentials, looks_like_tls, Failure};
use crate::lease::{lease_ttl_secs, LeaseHolder};
use crate::watcher::{spawn_watcher, WatcherGuard};
use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp, TxnOpResponse,
    TxnResponse,
};
use ha_core::{
    Cluster, ClusterKeys, Dcs, DcsError, DcsTiming, MemberData, RawEntry, Status, Version,
};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// A `touch_member` right after another refresh (the leader's `renew_leader` in the
/// same cycle: within this and a quarter of `loop_wait`) skips its keepalive even
/// when the lease is otherwise refreshed every cycle.
const KEEPALIVE_REUSE: Duration = Duration::from_secs(1);

struct Shared {
    keys: ClusterKeys,
    name: String,
    pool: EndpointPool,
    timing: Mutex<DcsTiming>,
    lease: LeaseHolder,
    wake: Arc<watch::Sender<u64>>,
    cache: Arc<ClusterCache>,
    /// The revision of this agent's latest acknowledged write: a cached view must
    /// hold it (read-your-writes).
    own_writes: AtomicI64,
    /// The member value last written and the lease it was bound to, so an unchanged
    /// record is not rewritten every cycle.
    member_written: Mutex<Option<(String, i64)>>,
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
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
        let cache = Arc::new(ClusterCache::new());
        let shared = Arc::new(Shared {
            keys: keys.clone(),
            name: name.to_string(),
            pool: EndpointPool::new(factory.clone()),
            timing: Mutex::new(timing),
            lease: LeaseHolder::default(),
            wake: wake.clone(),
            cache: cache.clone(),
            own_writes: AtomicI64::new(0),
            member_written: Mutex::new(None),
        });
        let dcs = EtcdDcs {
            _watcher: Arc::new(spawn_watcher(
                factory,
                keys.clone(),
                wake,
                cache,
                timing.retry_timeout,
            )),
            shared,
        };
        dcs.probe().await?;
        Ok(dcs)
    }

    /// Reads the cluster prefix once to surface wrong credentials or TLS set-up now,
    /// trying each endpoint (twice at most, within `retry_timeout`). An etcd that
    /// refuses or ignores connections is only "unreachable" (the agent may start
    /// before its DCS), but one that accepts connections and hangs up on every
    /// request speaks another protocol (plain HTTP to a TLS-only port), which no retry
    /// fixes.
    async fn probe(&self) -> Result<(), DcsError> {
        let timing = self.timing();
        let deadline = Instant::now() + timing.retry_timeout;
        let per_attempt = attempt_timeout(timing.retry_timeout, self.shared.pool.endpoints().len());
        let prefix = self.shared.keys.prefix().to_string();
        let (mut hung_up, mut other) = (0u32, 0u32);
        let mut last = String::new();
        while !deadline.saturating_duration_since(Instant::now()).is_zero() {
            let this_attempt = per_attempt.min(deadline.saturating_duration_since(Instant::now()));
            let index = self.shared.pool.preferred();
            let attempt = async {
                let mut client = self.shared.pool.client(index, per_attempt).await?;
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
                self.shared.pool.failed(index).await;
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
            // Every endpoint refused or stayed silent: plainly down, no need to wait
            // out retry_timeout. Hang-ups get a second round before they count.
            let endpoints = self.shared.pool.endpoints().len() as u32;
            if (hung_up == 0 && other >= endpoints) || hung_up + other >= 2 * endpoints {
                break;
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
                self.shared.pool.endpoints()
            )));
        }
        tracing::warn!(endpoints = ?self.shared.pool.endpoints(), error = %last,
            "etcd not reachable at start-up; will keep trying");
        Ok(())
    }

    /// The cluster's key names.
    pub fn keys(&self) -> &ClusterKeys {
        &self.shared.keys
    }

    /// The endpoint URLs in use.
    pub fn endpoints(&self) -> &[String] {
        self.shared.pool.endpoints()
    }

    /// The id of the lease this agent currently writes with, if any.
    pub fn lease_id(&self) -> Option<i64> {
        self.shared.lease.id()
    }

    fn timing(&self) -> DcsTiming {
        *lock(&self.shared.timing)
    }

    fn lease_ttl(&self) -> i64 {
        lease_ttl_secs(self.timing().ttl)
    }

    /// Runs `op` against the preferred endpoint, moving on to the next endpoint after
    /// each failed attempt, until `retry_timeout`; then `DcsError::Unreachable`.
    async fn run<T, F, Fut>(&self, what: &str, op: F) -> Result<T, DcsError>
    where
        F: Fn(Client, u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        self.run_for(what, self.timing().retry_timeout, op).await
    }

    /// [`EtcdDcs::run`] within `budget` (at most `retry_timeout`) instead.
    async fn run_for<T, F, Fut>(&self, what: &str, budget: Duration, op: F) -> Result<T, DcsError>
    where
        F: Fn(Client, u32) -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let mut timing = self.timing();
        timing.retry_timeout = budget.min(timing.retry_timeout);
        // Give up a moment before the hard bound so the answer says why.
        let margin = (timing.retry_timeout / 50).min(Duration::from_millis(50));
        let deadline = Instant::now() + timing.retry_timeout - margin;
        let per_attempt = attempt_timeout(timing.retry_timeout, self.shared.pool.endpoints().len());
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
                let index = self.shared.pool.preferred();
                let outcome = tokio::time::timeout(this_attempt, async {
                    let client = self.shared.pool.client(index, per_attempt).await?;
                    op(client, attempt).await
                })
                .await;
                if matches!(
                    outcome,
                    Ok(Err(Failure::Retry(_) | Failure::Reauthenticate(_))) | Err(_)
                ) {
                    self.shared.pool.failed(index).await;
                }
                let endpoint = &self.shared.pool.endpoints()[index];
                match outcome {
                    Ok(Ok(v)) => return Ok(v),
                    Ok(Err(Failure::Fatal(e))) => return Err(e),
                    Ok(Err(Failure::Retry(text))) | Ok(Err(Failure::Reauthenticate(text))) => {
                        last = format!("{endpoint}: {text}")
                    }
                    Ok(Err(Failure::LeaseGone)) => {
                        self.shared.lease.forget();
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
                let written = match expected {
                    None => {
                        let resp = c.put(key.clone(), value.clone(), None).await?;
                        Some(revision(resp.header()))
                    }
                    Some(v) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, v.0)])
                            .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                        let resp = c.txn(txn).await?;
                        resp.succeeded().then(|| revision(resp.header()))
                    }
                };
                if let Some(rev) = written {
                    self.wrote_put(&key, &value, rev, None);
                }
                Ok(written.map(Version))
            }
        })
        .await
    }

    /// Refreshes my lease and confirms (or re-binds) the leader key in one txn; with
    /// `status`, the same txn writes it when the key is mine, so a leader whose WAL
    /// moved still makes two requests per cycle (keepalive and txn), as Patroni's.
    async fn renew(&self, status: Option<&Status>) -> Result<bool, DcsError> {
        let key = self.shared.keys.leader();
        let name = self.shared.name.clone();
        let status_key = self.shared.keys.status();
        let status = status.map(Status::to_json);
        self.run("leader renew", |mut c, _| {
            let key = key.clone();
            let name = name.clone();
            let status_key = status_key.clone();
            let status = status.clone();
            async move {
                let lease = self.shared.lease.refresh(&mut c, self.lease_ttl()).await?;
                let put_status = || {
                    status
                        .iter()
                        .map(|v| TxnOp::put(status_key.clone(), v.clone(), None))
                        .collect::<Vec<_>>()
                };
                let mut rebind_ops = vec![TxnOp::put(
                    key.clone(),
                    name.clone(),
                    Some(PutOptions::new().with_lease(lease)),
                )];
                rebind_ops.extend(put_status());
                // One round trip: nothing to do when the key holds my name on my
                // lease; else re-bind it if it still holds my name. A key that is gone
                // is NOT re-created (unlike Patroni): the lease was lost or released
                // (e.g. by a switchover in flight), and taking it back is a new leader
                // race that the HA engine must decide on a fresh view.
                let rebind = Txn::new()
                    .when([Compare::value(key.clone(), CompareOp::Equal, name.clone())])
                    .and_then(rebind_ops);
                let txn = Txn::new()
                    .when([
                        Compare::value(key.clone(), CompareOp::Equal, name.clone()),
                        Compare::lease(key.clone(), CompareOp::Equal, lease),
                    ])
                    .and_then(put_status())
                    .or_else([TxnOp::txn(rebind)]);
                let resp = c.txn(txn).await?;
                let mine = any_branch_succeeded(&resp);
                let rev = revision(resp.header());
                if !resp.succeeded() && mine {
                    tracing::info!(
                        lease,
                        "leader key was not bound to my lease; re-bound it to my lease"
                    );
                    self.wrote_put(&key, &name, rev, Some(lease));
                }
                if let (true, Some(v)) = (mine, &status) {
                    self.wrote_put(&status_key, v, rev, None);
                }
                Ok(mine)
            }
        })
        .await
    }

    /// Records my acknowledged put of `key` at `revision` in the cluster cache.
    fn wrote_put(&self, key: &str, value: &str, revision: i64, lease: Option<i64>) {
        self.shared.cache.own_put(key, value, revision, lease);
        self.shared.own_writes.fetch_max(revision, Ordering::SeqCst);
    }

    /// Records my acknowledged delete of `key` at `revision` in the cluster cache.
    fn wrote_delete(&self, key: &str, revision: i64) {
        self.shared.cache.own_delete(key, revision);
        self.shared.own_writes.fetch_max(revision, Ordering::SeqCst);
    }

    /// The cached cluster entries if they may be served (the staleness rule in
    /// `cache.rs`): the watch stream answered a progress request sent now within
    /// `retry_timeout / 4`.
    async fn cached_entries(&self, timing: DcsTiming) -> Option<Vec<RawEntry>> {
        let cache = &self.shared.cache;
        if !cache.synced() {
            return None;
        }
        let own_writes = self.shared.own_writes.load(Ordering::SeqCst);
        let mut heard = cache.heard();
        heard.borrow_and_update();
        let asked = Instant::now();
        let ticket = cache.ask_progress();
        let deadline = asked + timing.retry_timeout / 4;
        let mut answered = false;
        while tokio::time::timeout_at(deadline, heard.changed())
            .await
            .is_ok_and(|r| r.is_ok())
        {
            answered = true;
            if let Some(entries) = cache.view(own_writes, ticket) {
                return Some(entries);
            }
        }
        if !answered {
            tracing::info!("etcd watch did not answer a progress request; reconnecting it");
            cache.request_restart();
        }
        None
    }

    /// Writes my member record unless it is unchanged, still bound to my lease and the
    /// cache shows it as written; the lease is refreshed when it is due.
    async fn write_member(&self, key: &str, value: &str) -> Result<(), DcsError> {
        let timing = self.timing();
        // Refreshing no more often than this still keeps the key alive until the next
        // cycle (which starts within loop_wait plus two calls' retry_timeout).
        let same_cycle = KEEPALIVE_REUSE.min(timing.loop_wait / 4);
        let keep_for = timing
            .ttl
            .saturating_sub(timing.loop_wait + 2 * timing.retry_timeout)
            .max(same_cycle);
        if let Some(lease) = self.member_unchanged(key, value) {
            if self.shared.lease.refreshed_within(keep_for) {
                return Ok(());
            }
            let refreshed = self
                .run("member lease refresh", |mut c, _| async move {
                    self.shared.lease.refresh(&mut c, self.lease_ttl()).await
                })
                .await?;
            if refreshed == lease {
                return Ok(());
            }
        }
        self.run("member write", |mut c, _| async move {
            let lease = if self.shared.lease.refreshed_within(keep_for) {
                self.shared.lease.ensure(&mut c, self.lease_ttl()).await?
            } else {
                self.shared.lease.refresh(&mut c, self.lease_ttl()).await?
            };
            let resp = c
                .put(key, value, Some(PutOptions::new().with_lease(lease)))
                .await?;
            self.wrote_put(key, value, revision(resp.header()), Some(lease));
            *lock(&self.shared.member_written) = Some((value.to_string(), lease));
            Ok(())
        })
        .await
    }

    /// The lease my member record is bound to, if `value` is what I last wrote, on
    /// the lease I still hold, and the cache shows exactly that.
    fn member_unchanged(&self, key: &str, value: &str) -> Option<i64> {
        let mut written = lock(&self.shared.member_written);
        let (last, lease) = written.clone()?;
        if last != value || self.shared.lease.id() != Some(lease) {
            return None;
        }
        let own_writes = self.shared.own_writes.load(Ordering::SeqCst);
        match self.shared.cache.entry(key, own_writes) {
            Some(Some(e)) if e.value == value && e.session == Some(lease.to_string()) => {
                Some(lease)
            }
            // Gone or changed behind my back: write it again.
            Some(_) => {
                *written = None;
                None
            }
            // No synced cache to check against: write.
            None => None,
        }
    }
}

/// The store revision a response was given at.
fn revision(header: Option<&etcd_client::ResponseHeader>) -> i64 {
    header.map_or(0, |h| h.revision())
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
        // A cached view is safe to decide on: every lease decision is confirmed by a
        // CAS/txn (acquire is create-if-absent, renew a txn on my name+lease), so a
        // stale view can only delay a decision, never make two leaders.
        let timing = self.timing();
        let started = Instant::now();
        if let Some(entries) = self.cached_entries(timing).await {
            return Ok(Cluster::from_full_paths(&self.shared.keys, entries));
        }
        let budget = timing.retry_timeout.saturating_sub(started.elapsed());
        let prefix = self.shared.keys.prefix().to_string();
        let entries = self
            .run_for("read", budget, |mut c, _| {
                let prefix = prefix.clone();
                async move {
                    let resp = c.get(prefix, Some(GetOptions::new().with_prefix())).await?;
                    Ok(resp.kvs().iter().map(raw_entry).collect::<Vec<_>>())
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
                let lease = self.shared.lease.refresh(&mut c, self.lease_ttl()).await?;
                let txn = Txn::new()
                    .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                    .and_then([TxnOp::put(
                        key.clone(),
                        name.clone(),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(key.clone(), None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    self.wrote_put(&key, &name, revision(resp.header()), Some(lease));
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
        self.renew(None).await
    }

    async fn renew_leader_with_status(&self, status: &Status) -> Result<bool, DcsError> {
        self.renew(Some(status)).await
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
                    .and_then([TxnOp::delete(key.clone(), None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    self.wrote_delete(&key, revision(resp.header()));
                }
                Ok(resp.succeeded())
            }
        })
        .await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<(), DcsError> {
        let key = self.shared.keys.member(&self.shared.name);
        let written = self.write_member(&key, &data.to_json()).await;
        if written.is_err() {
            *lock(&self.shared.member_written) = None;
        }
        written
    }

    async fn touch_proxy(&self, record: &str) -> Result<(), DcsError> {
        // A proxy writes no member record: the member slot of the lease bookkeeping
        // holds its proxy record instead.
        let key = self.shared.keys.proxy(&self.shared.name);
        let written = self.write_member(&key, record).await;
        if written.is_err() {
            *lock(&self.shared.member_written) = None;
        }
        written
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
                    .and_then([TxnOp::put(key.clone(), value.clone(), None)]);
                let resp = c.txn(txn).await?;
                if resp.succeeded() {
                    self.wrote_put(&key, &value, revision(resp.header()), None);
                }
                Ok(resp.succeeded())
            }
        })
        .await
    }

    async fn cas_key(
        &self,
        key: &str,
        value: String,
        expected: Option<Version>,
    ) -> Result<Option<Version>, DcsError> {
        let what = format!("{key} write");
        self.put_versioned(&what, self.shared.keys.key(key), value, expected)
            .await
    }

    async fn delete_key(&self, key: &str, expected: Option<Version>) -> Result<bool, DcsError> {
        let what = format!("{key} delete");
        let key = self.shared.keys.key(key);
        self.run(&what, |mut c, _| {
            let key = key.clone();
            async move {
                match expected {
                    None => {
                        let resp = c.delete(key.clone(), None).await?;
                        self.wrote_delete(&key, revision(resp.header()));
                        Ok(true)
                    }
                    Some(v) => {
                        let txn = Txn::new()
                            .when([Compare::mod_revision(key.clone(), CompareOp::Equal, v.0)])
                            .and_then([TxnOp::delete(key.clone(), None)]);
                        let resp = c.txn(txn).await?;
                        if resp.succeeded() {
                            self.wrote_delete(&key, revision(resp.header()));
                        }
                        Ok(resp.succeeded())
                    }
                }
            }
        })
        .await
    }

    async fn delete_cluster(&self) -> Result<(), DcsError> {
        let prefix = self.shared.keys.prefix().to_string();
        self.run("cluster delete", |mut c, _| {
            let prefix = prefix.clone();
            async move {
                let resp = c
                    .delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await?;
                let rev = revision(resp.header());
                self.shared.cache.own_delete_all(rev);
                self.shared.own_writes.fetch_max(rev, Ordering::SeqCst);
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
            .field("endpoints", &self.shared.pool.endpoints())
            .finish()
    }
}
