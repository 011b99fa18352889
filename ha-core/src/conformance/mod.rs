//! The shared DCS conformance suite: the behaviour of Patroni's lock contract (spec
//! §1.4/§1.5) that every [`Dcs`] backend must show against a real server.
//!
//! A backend implements [`DcsHarness`](crate::conformance::DcsHarness) in its tests
//! and calls [`run_all`](crate::conformance::run_all), or each check as its own test.
//! Every check uses its own cluster scope (so checks can share one server and run in
//! parallel), bounds every call by `retry_timeout + 2 s` (a hang is a failure, not a
//! stuck test) and deletes its cluster at the end. A failure panics with a message
//! naming the check.
//!
//! # Proving your own backend
//!
//! Enable the feature for your tests only:
//!
//! ```toml
//! [dev-dependencies]
//! ha-core = { version = "0.1", features = ["conformance"] }
//! ```
//!
//! then implement [`DcsHarness`](crate::conformance::DcsHarness) over a real server
//! (or whatever your store is) and run the suite from an integration test. Below,
//! ha-core's in-memory DCS stands in for "your" backend. `tests/conformance_memory.rs`
//! runs this, and shows that each check catches the fault it is about; dcs-etcd,
//! dcs-zookeeper and dcs-consul run the suite against etcd, ZooKeeper and the Consul
//! emulator, and the workspace's `examples` crate against a file-backed store.
//!
//! ```no_run
//! use ha_core::conformance::{run_all, DcsHarness};
//! use ha_core::memory_dcs::{MemoryDcs, SharedMemoryStore};
//! use ha_core::{ClusterKeys, Dcs, DcsTiming, SystemClock};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! struct MyHarness {
//!     store: SharedMemoryStore,
//! }
//!
//! #[async_trait::async_trait]
//! impl DcsHarness for MyHarness {
//!     async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
//!         let keys = ClusterKeys::new("service", scope);
//!         Arc::new(MemoryDcs::new(&self.store, Arc::new(SystemClock), keys, member, timing))
//!     }
//!
//!     async fn connect_unreachable(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs> {
//!         // Your backend: a client pointed at an address where nothing listens.
//!         let keys = ClusterKeys::new("service", scope);
//!         let cut = MemoryDcs::new(&self.store, Arc::new(SystemClock), keys, member, timing);
//!         cut.set_reachable(false);
//!         Arc::new(cut)
//!     }
//!
//!     fn timing(&self) -> DcsTiming {
//!         DcsTiming {
//!             ttl: Duration::from_secs(2),
//!             retry_timeout: Duration::from_secs(1),
//!             loop_wait: Duration::from_secs(1),
//!         }
//!     }
//!
//!     fn expiry_slack(&self) -> Duration {
//!         Duration::from_millis(500)
//!     }
//! }
//!
//! #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
//! async fn my_backend_passes_the_dcs_conformance_suite() {
//!     run_all(&MyHarness { store: SharedMemoryStore::new() }).await;
//! }
//! # fn main() {}
//! ```
//!
//! Each check is also a public function, so a backend can run them one by one (as
//! separate tests) or repeat one under other settings (dcs-consul repeats
//! [`lease_expiry_frees_leader_and_member`](crate::conformance::lease_expiry_frees_leader_and_member)
//! with Consul's 2× session slack).
//!
//! The checks live in one file per group (`lock`, `writes`, `watch`,
//! `unreachable`) and are re-exported here; this module holds the harness trait,
//! [`run_all`](crate::conformance::run_all) and the helpers the checks share.

mod lock;
mod unreachable;
mod watch;
mod writes;

pub use lock::{
    leader_read_back, lease_expiry_frees_leader_and_member, one_winner_among_concurrent_acquirers,
    release_only_by_owner, renew_keeps_leader_and_member, status_with_renewal_only_by_owner,
};
pub use unreachable::unreachable_is_typed_and_bounded;
pub use watch::{watch_fires_on_leader_change, watch_ignores_member_and_status_writes};
pub use writes::{
    cas_rejects_stale_versions, initialize_is_create_only, plain_writes_and_delete_cluster,
};

use crate::dcs::{Dcs, DcsError, DcsTiming};
use crate::model::{
    Cluster, DynamicConfig, Failover, Failsafe, History, HistoryEntry, MemberData, MemberState,
    Role, Status, SyncState, Tags, Version,
};
use std::fmt::Display;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// What the suite needs from a backend's test code.
#[async_trait::async_trait]
pub trait DcsHarness: Send + Sync {
    /// A fresh client for `member` of cluster `scope` with the given timing.
    async fn connect(&self, scope: &str, member: &str, timing: DcsTiming) -> Arc<dyn Dcs>;
    /// A client whose DCS cannot be reached (dead endpoint), to check the typed error and its bound.
    async fn connect_unreachable(
        &self,
        scope: &str,
        member: &str,
        timing: DcsTiming,
    ) -> Arc<dyn Dcs>;
    /// Make `dcs` stop renewing without a clean goodbye, as if its agent froze or died. Default: drop it.
    /// (Backends whose library heartbeats in the background, like ZooKeeper, override this to sever it.)
    async fn abandon(&self, dcs: Arc<dyn Dcs>) {
        drop(dcs);
    }
    /// Timing the suite should use (small ttl the backend supports, e.g. ttl 2-4 s, retry_timeout 1-2 s).
    fn timing(&self) -> DcsTiming;
    /// Extra time beyond ttl a backend may take to expire a lease (etcd/consul ~1 s, ZooKeeper session timeout slack).
    fn expiry_slack(&self) -> Duration;
}

/// Runs every check in turn; panics with a clear message naming the check on the first failure.
pub async fn run_all(h: &dyn DcsHarness) {
    one_winner_among_concurrent_acquirers(h).await;
    leader_read_back(h).await;
    lease_expiry_frees_leader_and_member(h).await;
    renew_keeps_leader_and_member(h).await;
    release_only_by_owner(h).await;
    status_with_renewal_only_by_owner(h).await;
    cas_rejects_stale_versions(h).await;
    initialize_is_create_only(h).await;
    watch_fires_on_leader_change(h).await;
    watch_ignores_member_and_status_writes(h).await;
    unreachable_is_typed_and_bounded(h).await;
    plain_writes_and_delete_cluster(h).await;
}

const SAMPLE_SYSID: &str = "7311111111111111111";
const CONNECT_BOUND: Duration = Duration::from_secs(30);
/// How much longer than `retry_timeout` a call may take before the suite calls it a hang.
const CALL_SLACK: Duration = Duration::from_secs(2);

static SCOPE_COUNTER: AtomicU64 = AtomicU64::new(0);

/// One running check: its name (for messages), its own scope and timing.
struct Check<'h> {
    name: &'static str,
    scope: String,
    timing: DcsTiming,
    harness: &'h dyn DcsHarness,
}

impl<'h> Check<'h> {
    fn start(harness: &'h dyn DcsHarness, name: &'static str) -> Self {
        let n = SCOPE_COUNTER.fetch_add(1, Ordering::SeqCst);
        Check {
            name,
            scope: format!(
                "conformance-{}-{}-{n}",
                name.replace('_', "-"),
                std::process::id()
            ),
            timing: harness.timing(),
            harness,
        }
    }

    fn fail(&self, msg: impl Display) -> ! {
        panic!(
            "DCS conformance check `{}` failed (scope {}): {msg}",
            self.name, self.scope
        )
    }

    fn ensure(&self, ok: bool, msg: impl FnOnce() -> String) {
        if !ok {
            self.fail(msg())
        }
    }

    fn call_bound(&self) -> Duration {
        self.timing.retry_timeout + CALL_SLACK
    }

    async fn client(&self, member: &str) -> Arc<dyn Dcs> {
        match tokio::time::timeout(
            CONNECT_BOUND,
            self.harness.connect(&self.scope, member, self.timing),
        )
        .await
        {
            Ok(d) => d,
            Err(_) => self.fail(format!(
                "connect for {member} did not return within {CONNECT_BOUND:?}"
            )),
        }
    }

    /// Awaits a DCS call that must succeed within the call bound.
    async fn call<T>(&self, what: &str, fut: impl Future<Output = Result<T, DcsError>>) -> T {
        match tokio::time::timeout(self.call_bound(), fut).await {
            Ok(Ok(v)) => v,
            Ok(Err(e)) => self.fail(format!("{what} failed: {e}")),
            Err(_) => self.fail(format!(
                "{what} did not return within retry_timeout + {CALL_SLACK:?} = {:?}",
                self.call_bound()
            )),
        }
    }

    async fn cleanup(&self, dcs: &dyn Dcs) {
        self.call("delete_cluster (cleanup)", dcs.delete_cluster())
            .await;
    }
}

async fn read_versioned<T>(
    c: &Check<'_>,
    dcs: &dyn Dcs,
    key: &str,
    pick: impl Fn(&Cluster) -> Option<(T, Version)>,
) -> (T, Version) {
    let cluster = c.call("get_cluster", dcs.get_cluster()).await;
    match pick(&cluster) {
        Some(v) => v,
        None => c.fail(format!(
            "`{key}` is missing after writing it (malformed: {:?})",
            cluster.malformed
        )),
    }
}

async fn read_initialize(c: &Check<'_>, dcs: &dyn Dcs) -> Option<String> {
    c.call("get_cluster", dcs.get_cluster()).await.initialize
}

/// Waits (up to ttl) for notifications until `b` reads a cluster satisfying `done`.
async fn wait_for_change(
    c: &Check<'_>,
    rx: &mut tokio::sync::watch::Receiver<u64>,
    reader: &dyn Dcs,
    event: &str,
    done: impl Fn(&Cluster) -> bool,
) {
    let bound = c.timing.ttl;
    let deadline = Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, rx.changed()).await {
            Err(_) => c.fail(format!(
                "the subscriber was not notified of {event} within {bound:?}"
            )),
            Ok(Err(_)) => c.fail(format!("the subscription closed while waiting for {event}")),
            Ok(Ok(())) => {}
        }
        let cluster = c.call("get_cluster", reader.get_cluster()).await;
        if done(&cluster) {
            return;
        }
    }
}

async fn expect_unreachable<T: std::fmt::Debug>(
    c: &Check<'_>,
    what: &str,
    fut: impl Future<Output = Result<T, DcsError>>,
) {
    let bound = c.call_bound();
    let start = Instant::now();
    match tokio::time::timeout(bound, fut).await {
        Err(_) => c.fail(format!(
            "{what} against an unreachable DCS did not return within retry_timeout + {CALL_SLACK:?} = {bound:?}"
        )),
        Ok(Ok(v)) => c.fail(format!(
            "{what} against an unreachable DCS succeeded: {v:?}"
        )),
        Ok(Err(DcsError::Unreachable(_))) => {}
        Ok(Err(other)) => c.fail(format!(
            "{what} against an unreachable DCS failed after {:?} with {other:?}, expected DcsError::Unreachable",
            start.elapsed()
        )),
    }
}

fn sample_member(name: &str, lsn: u64, role: Role) -> MemberData {
    let mut extra = serde_json::Map::new();
    extra.insert(
        "proxy_url".into(),
        serde_json::Value::from(format!("postgres://127.0.0.1:6432/{name}")),
    );
    MemberData {
        conn_url: Some("postgres://127.0.0.1:5432/postgres".into()),
        api_url: Some(format!("http://127.0.0.1:8008/patroni?{name}")),
        state: Some(MemberState::Running),
        role: Some(role),
        version: Some("4.1.4".into()),
        xlog_location: Some(lsn),
        replication_state: None,
        timeline: Some(3),
        tags: Tags {
            clonefrom: Some(true),
            ..Default::default()
        },
        extra,
        ..Default::default()
    }
}

/// A one-line description of what a cluster view holds, for failure messages.
fn summary(c: &Cluster) -> String {
    format!(
        "leader {:?}, members {:?}, proxies {:?}, initialize {:?}, config {}, failover {}, sync {}, history {}, status {:?}, failsafe {}",
        c.leader.as_ref().map(|l| &l.name),
        c.members.iter().map(|m| &m.name).collect::<Vec<_>>(),
        c.proxies.iter().map(|p| &p.name).collect::<Vec<_>>(),
        c.initialize,
        c.config.is_some(),
        c.failover.is_some(),
        c.sync.is_some(),
        c.history.is_some(),
        c.status,
        c.failsafe.is_some(),
    )
}
