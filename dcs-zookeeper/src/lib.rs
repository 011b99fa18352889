//! ZooKeeper backend for fullauto's `Dcs` trait, with Patroni's znode layout so a
//! fullauto agent and Patroni can read each other's cluster state: znodes under
//! `/<namespace>/<scope>/`, `leader` (plain member name) and `members/<name>` as
//! ephemeral znodes owned by the agent's session (session timeout = ttl), CAS on the
//! znode version, and watches that wake the HA loop. The `testing` feature adds a
//! harness that runs Debian's ZooKeeper (standalone or a 3-server ensemble) on
//! loopback for integration tests.

mod backend;
mod config;
mod error;
mod session;
mod watch;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::ZooKeeperDcs;
pub use config::ZooKeeperConfig;
pub use error::ZkError;
