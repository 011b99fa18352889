//! The shared DCS conformance suite: the behaviour of Patroni's lock contract (spec
//! §1.4/§1.5) that every [`Dcs`] backend must show against a real server.
//!
//! A backend implements [`DcsHarness`] in its tests and calls [`run_all`], or each check
//! as its own test. Every check uses its own cluster scope (so checks can share one
//! server and run in parallel), bounds every call by `retry_timeout + 2 s` (a hang is a
//! failure, not a stuck test) and deletes its cluster at the end. A failure panics with
//! a message naming the check.
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
//! then implement [`DcsHarness`] over a real server (or whatever your store is) and
//! run the suite from an integration test. Below, ha-core's in-memory DCS stands in
//! for "your" backend. `tests/conformance_memory.rs` runs this, and shows that each
//! check catches the fault it is about; dcs-etcd, dcs-zookeeper and dcs-consul run
//! the suite against etcd, ZooKeeper and the Consul emulator, and the workspace's
//! `examples` crate against a file-backed store.
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
//! [`lease_expiry_frees_leader_and_member`] with Consul's 2× session slack).

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

/// Members racing for the leader key at once: exactly one wins, and the key names it.
pub async fn one_winner_among_concurrent_acquirers(h: &dyn DcsHarness) {
    const RACERS: usize = 5;
    let c = Check::start(h, "one_winner_among_concurrent_acquirers");
    let mut clients = Vec::new();
    for i in 0..RACERS {
        let name = format!("racer{i}");
        let dcs = c.client(&name).await;
        clients.push((name, dcs));
    }
    let bound = c.call_bound();
    let mut race = tokio::task::JoinSet::new();
    for (name, dcs) in clients.iter().cloned() {
        race.spawn(async move {
            let out = tokio::time::timeout(bound, dcs.acquire_leader()).await;
            (name, out)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = race.join_next().await {
        let (name, out) = match joined {
            Ok(v) => v,
            Err(e) => c.fail(format!("an acquire task died: {e}")),
        };
        match out {
            Err(_) => c.fail(format!(
                "{name}: acquire_leader did not return within {bound:?}"
            )),
            Ok(Err(e)) => c.fail(format!("{name}: acquire_leader failed: {e}")),
            Ok(Ok(true)) => winners.push(name),
            Ok(Ok(false)) => {}
        }
    }
    c.ensure(winners.len() == 1, || {
        format!(
            "{} of {RACERS} concurrent acquirers won: {winners:?}",
            winners.len()
        )
    });
    let winner = &winners[0];
    let observer = &clients[0].1;
    let cluster = c.call("get_cluster", observer.get_cluster()).await;
    c.ensure(cluster.is_leader(winner), || {
        format!(
            "winner is {winner} but the leader key reads {:?}",
            cluster.leader
        )
    });
    for (name, dcs) in clients.iter().filter(|(n, _)| n != winner) {
        let again = c.call("acquire_leader (loser)", dcs.acquire_leader()).await;
        c.ensure(!again, || {
            format!("{name} acquired a key {winner} already holds")
        });
    }
    c.cleanup(observer.as_ref()).await;
}

/// The leader reads itself back as leader, and its member record round-trips.
pub async fn leader_read_back(h: &dyn DcsHarness) {
    let c = Check::start(h, "leader_read_back");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mine = sample_member("alpha", 0x300_0060, Role::Primary);
    c.call("touch_member", a.touch_member(&mine)).await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    for (who, dcs) in [("the leader", &a), ("another member", &b)] {
        let cluster = c.call("get_cluster", dcs.get_cluster()).await;
        c.ensure(cluster.is_leader("alpha"), || {
            format!("{who} reads leader {:?}, expected alpha", cluster.leader)
        });
        match cluster.member("alpha") {
            None => c.fail(format!("{who} does not see member alpha")),
            Some(m) => c.ensure(m.data == mine, || {
                format!(
                    "{who} reads member alpha as {:?}, written {:?}",
                    m.data, mine
                )
            }),
        }
    }
    // Every cycle rewrites the record; the last write must win.
    let updated = MemberData {
        state: Some(MemberState::Stopping),
        xlog_location: Some(0x400_0000),
        ..mine.clone()
    };
    c.call("touch_member (update)", a.touch_member(&updated))
        .await;
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.member("alpha").is_some_and(|m| m.data == updated),
        || {
            format!(
                "after a second touch_member, member alpha reads {:?}",
                cluster.member("alpha").map(|m| &m.data)
            )
        },
    );
    c.call("release_leader", a.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}

/// An abandoned leader's key and member record vanish within ttl + slack; then
/// another member can take the lock.
pub async fn lease_expiry_frees_leader_and_member(h: &dyn DcsHarness) {
    let c = Check::start(h, "lease_expiry_frees_leader_and_member");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    // A proxy's record lives on its lease as a member record does.
    let p = c.client("gamma").await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.call(
        "touch_proxy",
        p.touch_proxy(r#"{"listen_rw":"127.0.0.1:1"}"#),
    )
    .await;
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.proxies.len() == 1
            && cluster.proxies[0].name == "gamma"
            && cluster.proxies[0].data["listen_rw"] == "127.0.0.1:1"
            && cluster.member("gamma").is_none(),
        || format!("after touch_proxy beta reads proxies {:?}", cluster.proxies),
    );
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.is_leader("alpha") && cluster.member("alpha").is_some(),
        || format!("before abandoning, beta sees {:?}", summary(&cluster)),
    );

    let abandoned_at = Instant::now();
    h.abandon(a).await;
    h.abandon(p).await;
    let bound = c.timing.ttl + h.expiry_slack();
    let poll = (c.timing.ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let cluster = c.call("get_cluster", b.get_cluster()).await;
        if cluster.leader.is_none()
            && cluster.member("alpha").is_none()
            && cluster.proxies.is_empty()
        {
            break;
        }
        if abandoned_at.elapsed() > bound {
            c.fail(format!(
                "{:?} after abandoning the leader (ttl {:?} + slack {:?}) its keys remain: {}",
                abandoned_at.elapsed(),
                c.timing.ttl,
                h.expiry_slack(),
                summary(&cluster)
            ));
        }
        tokio::time::sleep(poll).await;
    }

    c.call(
        "touch_member",
        b.touch_member(&sample_member("beta", 1, Role::Replica)),
    )
    .await;
    c.ensure(c.call("acquire_leader", b.acquire_leader()).await, || {
        "beta could not acquire the leader key after alpha's lease expired".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_leader("beta"), || {
        format!(
            "after beta's acquire the leader key reads {:?}",
            cluster.leader
        )
    });
    c.call("release_leader", b.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}

/// Renewing every ttl/3 for 2×ttl keeps both the leader key and the member record
/// (they share one lease/session).
pub async fn renew_keeps_leader_and_member(h: &dyn DcsHarness) {
    let c = Check::start(h, "renew_keeps_leader_and_member");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let start = Instant::now();
    let step = c.timing.ttl / 3;
    while start.elapsed() < c.timing.ttl * 2 {
        tokio::time::sleep(step).await;
        let renewed = c.call("renew_leader", a.renew_leader()).await;
        c.ensure(renewed, || {
            format!(
                "renew_leader returned false {:?} after acquiring",
                start.elapsed()
            )
        });
        let cluster = c.call("get_cluster", b.get_cluster()).await;
        c.ensure(
            cluster.is_leader("alpha") && cluster.member("alpha").is_some(),
            || {
                format!(
                    "{:?} after acquiring, renewing every {step:?}, beta sees {}",
                    start.elapsed(),
                    summary(&cluster)
                )
            },
        );
    }
    c.ensure(c.call("release_leader", a.release_leader()).await, || {
        "the renewing owner's release_leader returned false".into()
    });
    c.cleanup(b.as_ref()).await;
}

/// A renewal that carries the leader's `status` writes it only while the key is the
/// caller's: a deposed leader must not overwrite the new leader's position.
pub async fn status_with_renewal_only_by_owner(h: &dyn DcsHarness) {
    let c = Check::start(h, "status_with_renewal_only_by_owner");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let status = |optime| Status {
        optime: Some(optime),
        slots: [("alpha".to_string(), optime)].into(),
        ..Default::default()
    };
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let renewed = c
        .call(
            "renew_leader_with_status (owner)",
            a.renew_leader_with_status(&status(100)),
        )
        .await;
    c.ensure(renewed, || {
        "the owner's renew_leader_with_status returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.status == status(100), || {
        format!(
            "after the owner's renewal with status the status reads {:?}",
            cluster.status
        )
    });

    let renewed = c
        .call(
            "renew_leader_with_status (non-owner)",
            b.renew_leader_with_status(&status(1)),
        )
        .await;
    c.ensure(!renewed, || {
        "a non-owner's renew_leader_with_status returned true".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(
        cluster.status == status(100) && cluster.is_leader("alpha"),
        || {
            format!(
                "a non-owner's renewal with status changed the cluster: status {:?}, leader {:?}",
                cluster.status, cluster.leader
            )
        },
    );
    c.call("release_leader", a.release_leader()).await;
    c.cleanup(a.as_ref()).await;
}

/// Only the owner releases the key; a former owner cannot renew someone else's key.
pub async fn release_only_by_owner(h: &dyn DcsHarness) {
    let c = Check::start(h, "release_only_by_owner");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let released = c
        .call("release_leader (non-owner)", b.release_leader())
        .await;
    c.ensure(!released, || {
        "a non-owner's release_leader returned true".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_leader("alpha"), || {
        format!(
            "after a non-owner's release the leader key reads {:?}",
            cluster.leader
        )
    });
    let renewed = c.call("renew_leader (non-owner)", b.renew_leader()).await;
    c.ensure(!renewed, || {
        "a non-owner's renew_leader returned true".into()
    });

    let released = c.call("release_leader (owner)", a.release_leader()).await;
    c.ensure(released, || {
        "the owner's release_leader returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_unlocked(), || {
        format!(
            "after the owner's release the leader key reads {:?}",
            cluster.leader
        )
    });

    c.ensure(c.call("acquire_leader", b.acquire_leader()).await, || {
        "beta could not acquire the released key".into()
    });
    let renewed = c
        .call("renew_leader (former owner)", a.renew_leader())
        .await;
    c.ensure(!renewed, || {
        "renew_leader by the former owner returned true after beta took the key".into()
    });
    let released = c
        .call("release_leader (former owner)", a.release_leader())
        .await;
    c.ensure(!released, || {
        "release_leader by the former owner returned true after beta took the key".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.is_leader("beta"), || {
        format!(
            "the former owner's calls changed the leader key to {:?}",
            cluster.leader
        )
    });
    c.call("release_leader", b.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}

/// `config`, `failover` and `sync` accept a write at the current version and reject
/// one at a stale version, leaving the value unchanged.
pub async fn cas_rejects_stale_versions(h: &dyn DcsHarness) {
    let c = Check::start(h, "cas_rejects_stale_versions");
    let a = c.client("alpha").await;

    // config
    let cfg = |ttl: f64| DynamicConfig {
        ttl,
        loop_wait: 5.0,
        extra: serde_json::json!({"postgresql": {"parameters": {"max_connections": 123}}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Default::default()
    };
    c.ensure(
        c.call("set_config (unconditional)", a.set_config(&cfg(30.0), None))
            .await,
        || "an unconditional set_config returned false".into(),
    );
    let old = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(old.0 == cfg(30.0), || {
        format!("config reads {:?}, written {:?}", old.0, cfg(30.0))
    });
    c.ensure(
        c.call(
            "set_config (current version)",
            a.set_config(&cfg(40.0), Some(old.1)),
        )
        .await,
        || "set_config at the current version returned false".into(),
    );
    let new = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(new.0 == cfg(40.0) && new.1 != old.1, || {
        format!(
            "after a CAS write config reads {new:?}, previous version {:?}",
            old.1
        )
    });
    c.ensure(
        !c.call(
            "set_config (stale version)",
            a.set_config(&cfg(50.0), Some(old.1)),
        )
        .await,
        || "set_config at a stale version returned true".into(),
    );
    let after = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("a rejected set_config changed config from {new:?} to {after:?}")
    });

    // failover
    let request = |member: &str| Failover {
        leader: Some("alpha".into()),
        member: Some(member.into()),
        scheduled_at: None,
    };
    c.ensure(
        c.call(
            "set_failover (unconditional)",
            a.set_failover(&request("beta"), None),
        )
        .await,
        || "an unconditional set_failover returned false".into(),
    );
    let old = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(old.0 == request("beta"), || {
        format!("failover reads {:?}, written {:?}", old.0, request("beta"))
    });
    c.ensure(
        c.call(
            "set_failover (current version)",
            a.set_failover(&request("gamma"), Some(old.1)),
        )
        .await,
        || "set_failover at the current version returned false".into(),
    );
    let new = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(new.0 == request("gamma") && new.1 != old.1, || {
        format!(
            "after a CAS write failover reads {new:?}, previous version {:?}",
            old.1
        )
    });
    c.ensure(
        !c.call(
            "set_failover (stale version)",
            a.set_failover(&Failover::default(), Some(old.1)),
        )
        .await,
        || "set_failover at a stale version returned true".into(),
    );
    let after = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("a rejected set_failover changed failover from {new:?} to {after:?}")
    });

    // sync: set_sync also reports the version it wrote.
    let sync = |standbys: &[&str]| SyncState {
        leader: Some("alpha".into()),
        sync_standby: standbys.iter().map(|s| s.to_string()).collect(),
        quorum: 0,
    };
    let written = c
        .call(
            "set_sync (unconditional)",
            a.set_sync(&sync(&["beta"]), None),
        )
        .await;
    let old = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(written == Some(old.1) && old.0 == sync(&["beta"]), || {
        format!("set_sync returned {written:?}; sync reads {old:?}")
    });
    let written = c
        .call(
            "set_sync (current version)",
            a.set_sync(&sync(&["beta", "gamma"]), Some(old.1)),
        )
        .await;
    let new = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(
        written == Some(new.1) && new.1 != old.1 && new.0 == sync(&["beta", "gamma"]),
        || {
            format!(
                "set_sync at the current version returned {written:?}; sync reads {new:?}, previous version {:?}",
                old.1
            )
        },
    );
    let stale = c
        .call(
            "set_sync (stale version)",
            a.set_sync(&sync(&["delta"]), Some(old.1)),
        )
        .await;
    c.ensure(stale.is_none(), || {
        format!("set_sync at a stale version returned {stale:?}")
    });
    let stale = c
        .call("delete_sync (stale version)", a.delete_sync(Some(old.1)))
        .await;
    c.ensure(!stale, || {
        "delete_sync at a stale version returned true".into()
    });
    let after = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("rejected sync writes changed sync from {new:?} to {after:?}")
    });
    let deleted = c
        .call("delete_sync (current version)", a.delete_sync(Some(new.1)))
        .await;
    c.ensure(deleted, || {
        "delete_sync at the current version returned false".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.sync.is_none(), || {
        format!("after delete_sync, sync reads {:?}", cluster.sync)
    });
    c.cleanup(a.as_ref()).await;
}

/// `initialize` is create-only; `set_initialize` overwrites it;
/// `cancel_initialization` deletes it so the race can run again.
pub async fn initialize_is_create_only(h: &dyn DcsHarness) {
    let c = Check::start(h, "initialize_is_create_only");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    // The bootstrap race winner writes an empty value while initdb runs.
    c.ensure(c.call("initialize", a.initialize("")).await, || {
        "the first initialize returned false".into()
    });
    let second = c.call("initialize (second)", b.initialize("999")).await;
    c.ensure(!second, || "a second initialize returned true".into());
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.as_deref() == Some(""), || {
        format!("after a lost initialize race, initialize reads {value:?}, expected \"\"")
    });
    c.call("set_initialize", a.set_initialize(SAMPLE_SYSID))
        .await;
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.as_deref() == Some(SAMPLE_SYSID), || {
        format!("after set_initialize, initialize reads {value:?}, expected {SAMPLE_SYSID}")
    });
    let again = c.call("initialize (after set)", b.initialize("999")).await;
    c.ensure(!again, || {
        "initialize returned true while the key held a system identifier".into()
    });
    c.call("cancel_initialization", a.cancel_initialization())
        .await;
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.is_none(), || {
        format!("after cancel_initialization, initialize reads {value:?}")
    });
    c.ensure(
        c.call("initialize (after cancel)", b.initialize("")).await,
        || "initialize after cancel_initialization returned false".into(),
    );
    c.cleanup(a.as_ref()).await;
}

/// Another member's subscription fires when the leader key is taken and released.
pub async fn watch_fires_on_leader_change(h: &dyn DcsHarness) {
    let c = Check::start(h, "watch_fires_on_leader_change");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mut rx = b.subscribe();
    // The HA loop subscribes once and reads before it first waits; give a backend's
    // watch the same head start.
    c.call("get_cluster", b.get_cluster()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.borrow_and_update();

    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    wait_for_change(&c, &mut rx, b.as_ref(), "alpha's acquire", |cl| {
        cl.is_leader("alpha")
    })
    .await;

    rx.borrow_and_update();
    c.ensure(c.call("release_leader", a.release_leader()).await, || {
        "the owner's release_leader returned false".into()
    });
    wait_for_change(&c, &mut rx, b.as_ref(), "alpha's release", |cl| {
        cl.is_unlocked()
    })
    .await;
    c.cleanup(b.as_ref()).await;
}

/// Writes every member makes each cycle (`members/*`, `status`, `history`,
/// `failsafe`) do not fire another member's subscription (the loop would spin), while
/// a `config` change still does.
pub async fn watch_ignores_member_and_status_writes(h: &dyn DcsHarness) {
    let c = Check::start(h, "watch_ignores_member_and_status_writes");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mut rx = b.subscribe();
    c.call("get_cluster", b.get_cluster()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.borrow_and_update();

    for lsn in 1..=3 {
        c.call(
            "touch_member",
            a.touch_member(&sample_member("alpha", lsn, Role::Replica)),
        )
        .await;
    }
    c.call(
        "set_status",
        a.set_status(&Status {
            optime: Some(7),
            ..Default::default()
        }),
    )
    .await;
    c.call("set_history", a.set_history(&History::default()))
        .await;
    c.call("set_failsafe", a.set_failsafe(&Failsafe::new()))
        .await;
    // Give a backend's watch time to deliver what it would wrongly deliver.
    let window = (c.timing.ttl / 2).min(Duration::from_secs(1));
    tokio::time::sleep(window).await;
    let woke = match rx.has_changed() {
        Ok(changed) => changed,
        Err(_) => c.fail("the subscription closed"),
    };
    c.ensure(!woke, || {
        format!(
            "the subscriber was woken within {window:?} by member/status/history/failsafe writes only"
        )
    });

    c.ensure(
        c.call("set_config", a.set_config(&DynamicConfig::default(), None))
            .await,
        || "an unconditional set_config returned false".into(),
    );
    wait_for_change(&c, &mut rx, b.as_ref(), "a config write", |cl| {
        cl.config.is_some()
    })
    .await;
    c.cleanup(b.as_ref()).await;
}

/// With the DCS unreachable, calls fail with `DcsError::Unreachable` within
/// `retry_timeout + 2 s` (not another error, not a hang).
pub async fn unreachable_is_typed_and_bounded(h: &dyn DcsHarness) {
    let c = Check::start(h, "unreachable_is_typed_and_bounded");
    let dead = match tokio::time::timeout(
        CONNECT_BOUND,
        h.connect_unreachable(&c.scope, "alpha", c.timing),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => c.fail(format!(
            "connect_unreachable did not return within {CONNECT_BOUND:?}"
        )),
    };
    expect_unreachable(&c, "get_cluster", dead.get_cluster()).await;
    expect_unreachable(&c, "acquire_leader", dead.acquire_leader()).await;
    expect_unreachable(
        &c,
        "touch_member",
        dead.touch_member(&sample_member("alpha", 1, Role::Replica)),
    )
    .await;
}

/// `status`, `history` and `failsafe` round-trip; `delete_cluster` removes every key
/// of the cluster (and nothing of another one).
pub async fn plain_writes_and_delete_cluster(h: &dyn DcsHarness) {
    let c = Check::start(h, "plain_writes_and_delete_cluster");
    let a = c.client("alpha").await;
    let neighbour_scope = format!("{}-neighbour", c.scope);
    let neighbour = match tokio::time::timeout(
        CONNECT_BOUND,
        h.connect(&neighbour_scope, "omega", c.timing),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => c.fail(format!("connect did not return within {CONNECT_BOUND:?}")),
    };
    c.call("initialize (neighbour)", neighbour.initialize("1"))
        .await;

    let status = Status {
        optime: Some(0x500_0000),
        slots: [("beta".to_string(), 0x400_0000)].into_iter().collect(),
        retain_slots: vec!["alpha".into(), "beta".into()],
    };
    let history = History(vec![HistoryEntry {
        timeline: 1,
        switch_lsn: 0x300_00A0,
        reason: "no recovery target specified".into(),
        timestamp: Some("2026-01-02T03:04:05.678+00:00".into()),
        new_leader: Some("alpha".into()),
    }]);
    let failsafe: Failsafe = [
        (
            "alpha".to_string(),
            "http://127.0.0.1:8008/patroni".to_string(),
        ),
        (
            "beta".to_string(),
            "http://127.0.0.1:8009/patroni".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    c.call("set_status", a.set_status(&status)).await;
    c.call("set_history", a.set_history(&history)).await;
    c.call("set_failsafe", a.set_failsafe(&failsafe)).await;
    c.call("initialize", a.initialize(SAMPLE_SYSID)).await;
    c.call("set_config", a.set_config(&DynamicConfig::default(), None))
        .await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.call("acquire_leader", a.acquire_leader()).await;
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.status == status, || {
        format!("status reads {:?}, written {status:?}", cluster.status)
    });
    c.ensure(cluster.history.as_ref() == Some(&history), || {
        format!("history reads {:?}, written {history:?}", cluster.history)
    });
    c.ensure(cluster.failsafe.as_ref() == Some(&failsafe), || {
        format!(
            "failsafe reads {:?}, written {failsafe:?}",
            cluster.failsafe
        )
    });
    c.ensure(cluster.malformed.is_empty(), || {
        format!(
            "values written by this backend read back malformed: {:?}",
            cluster.malformed
        )
    });

    c.call("delete_cluster", a.delete_cluster()).await;
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster == Cluster::default(), || {
        format!(
            "after delete_cluster the cluster still has {}",
            summary(&cluster)
        )
    });
    let other = c
        .call("get_cluster (neighbour)", neighbour.get_cluster())
        .await;
    c.ensure(other.initialize.as_deref() == Some("1"), || {
        format!(
            "delete_cluster of {} touched cluster {neighbour_scope}: its initialize reads {:?}",
            c.scope, other.initialize
        )
    });
    c.call("delete_cluster (neighbour)", neighbour.delete_cluster())
        .await;
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
