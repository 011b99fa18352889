//! ha-core is the pure heart of fullauto. It holds the cluster model exactly as
//! Patroni stores it in a DCS, the `Dcs` and `Postgres` traits that backends and the
//! Postgres driver implement, the HA decision function (observations in, actions out,
//! no I/O and no clock reads), the async runner that drives it against real trait
//! objects, an in-memory DCS, a shared DCS conformance suite, and a deterministic
//! simulator that checks split-brain and data-loss invariants over many seeds.
//! It depends on no backend.
//!
//! # Three ways in
//!
//! - **Ask the engine.** [`decision::decide`] is a plain function: build an
//!   [`decision::Observation`] (see its constructors) and read the actions.
//! - **Run a node.** [`runner::Runner`] drives `decide` against your [`Dcs`],
//!   [`Postgres`], [`Watchdog`] and [`Clock`] (pg-driver implements `Postgres`;
//!   dcs-etcd, dcs-zookeeper and dcs-consul implement `Dcs`).
//! - **Bring your own store.** Implement [`Dcs`] and prove it with the
//!   `conformance` suite (module `ha_core::conformance`, feature `conformance`), as
//!   the shipped backends do.
//!
//! The workspace's `examples` crate shows each: a dry-run advisor, a file-backed DCS
//! that passes the suite, and an orchestrator embedding three runners.
//!
//! # Example
//!
//! Two members share an in-memory DCS; the decision for a replica whose leader is
//! gone is to race for the leader key, and the race has exactly one winner.
//!
//! ```
//! use ha_core::decision::{decide, Action, LocalState, NodeConfig, Observation};
//! use ha_core::memory_dcs::{MemoryDcs, SharedMemoryStore};
//! use ha_core::{Clock, ClusterKeys, Dcs, DcsTiming, PgObservation, SystemClock};
//! use std::sync::Arc;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ha_core::DcsError> {
//! let store = SharedMemoryStore::new();
//! let clock: Arc<dyn Clock> = Arc::new(SystemClock);
//! let keys = ClusterKeys::new("service", "demo");
//! let dcs = |name| MemoryDcs::new(&store, clock.clone(), keys.clone(), name, DcsTiming::default());
//! let (a, b) = (dcs("a"), dcs("b"));
//! a.initialize("7311").await?;
//!
//! // What would b do, as a running replica of that system with no leader?
//! let now = clock.now();
//! let pg = PgObservation::running_replica("7311", 1, 0x300_0000);
//! let obs = Observation::new(b.get_cluster().await?, pg, now);
//! let decision = decide(&NodeConfig::named("b"), &LocalState::default(), &obs, now);
//! let actions: Vec<String> = decision.actions.iter().map(Action::to_string).collect();
//! assert_eq!(actions, ["AcquireLease"]);
//!
//! // Carry it out: the first acquirer wins, the second finds the key taken.
//! assert!(b.acquire_leader().await?);
//! assert!(!a.acquire_leader().await?);
//! assert!(a.get_cluster().await?.is_leader("b"));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod clock;
pub mod dcs;
pub mod model;
pub mod postgres;
pub mod watchdog;

pub use clock::{Clock, ManualClock, MonoTime, SystemClock};
pub use dcs::{Dcs, DcsError, DcsTiming};
pub use model::*;
pub use postgres::{
    Cause, DataDirState, DynamicPostgresql, NewSlot, PendingParameter, PgError, PgObservation,
    PgProcess, Postgres, RemoteSource, ReplicationConnection, SlotAdvance, SlotChanges,
    SlotStateFile, StartRole, StopMode, StopOutcome, Upstream,
};
pub use watchdog::{NoWatchdog, Watchdog, WatchdogError};

pub mod memory_dcs;

/// The Patroni release whose behaviour fullauto implements. Patroni's tools judge a
/// member's capabilities by the `version` of its member record and of `GET /patroni`
/// (`checkpoint_after_promote` trusted above 1.5.6, slot positions taken from the
/// leader's `/status` from 4.0.0 on, the legacy `optime/leader` key written while a
/// member is older than 2.1.0), so fullauto reports this there and its own version in
/// [`FULLAUTO_VERSION_FIELD`].
pub const PATRONI_VERSION: &str = "4.1.4";

/// The extra field of the member record and of `GET /patroni`'s `patroni` block that
/// carries fullauto's own version.
pub const FULLAUTO_VERSION_FIELD: &str = "fullauto_version";

/// The shared DCS conformance suite that every backend runs against a real server
/// (feature `conformance`): a third party's backend is proven the same way.
#[cfg(feature = "conformance")]
pub mod conformance;

pub mod decision;
pub mod runner;
pub mod sim;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
