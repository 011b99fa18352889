//! ha-core is the pure heart of fullauto. It holds the cluster model exactly as
//! Patroni stores it in a DCS, the `Dcs` and `Postgres` traits that backends and the
//! Postgres driver implement, the HA decision function (observations in, actions out,
//! no I/O and no clock reads), the async runner that drives it against real trait
//! objects, an in-memory DCS, a shared DCS conformance suite, and a deterministic
//! simulator that checks split-brain and data-loss invariants over many seeds.
//! It depends on no backend.

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
    DataDirState, DynamicPostgresql, NewSlot, PendingParameter, PgError, PgObservation, PgProcess,
    Postgres, RemoteSource, ReplicationConnection, SlotAdvance, SlotChanges, SlotStateFile,
    StartRole, StopMode, StopOutcome, Upstream,
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

/// The shared DCS conformance suite that every backend runs against a real server.
#[cfg(feature = "conformance")]
pub mod conformance;

pub mod decision;
pub mod runner;
pub mod sim;
