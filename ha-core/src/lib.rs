//! ha-core is the pure heart of fullauto. It holds the cluster model exactly as
//! Patroni stores it in a DCS, the `Dcs` and `Postgres` traits that backends and the
//! Postgres driver implement, the HA decision function (observations in, actions out,
//! no I/O and no clock reads), the async runner that drives it against real trait
//! objects, an in-memory DCS, a shared DCS conformance suite, and a deterministic
//! simulator that checks split-brain and data-loss invariants over many seeds.
//! It depends on no backend.

pub mod clock;
pub mod dcs;
pub mod model;
pub mod postgres;
pub mod watchdog;

pub use clock::{Clock, ManualClock, MonoTime, SystemClock};
pub use dcs::{Dcs, DcsError, DcsTiming};
pub use model::*;
pub use postgres::{
    DataDirState, DynamicPostgresql, NewSlot, PgError, PgObservation, PgProcess, Postgres,
    RemoteSource, ReplicationConnection, SlotAdvance, SlotChanges, SlotStateFile, StartRole,
    StopMode, StopOutcome, Upstream,
};
pub use watchdog::{NoWatchdog, Watchdog, WatchdogError};

pub mod memory_dcs;

/// The shared DCS conformance suite that every backend runs against a real server.
#[cfg(feature = "conformance")]
pub mod conformance;

pub mod decision;
pub mod runner;
pub mod sim;
