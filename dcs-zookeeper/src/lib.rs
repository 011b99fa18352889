//! ZooKeeper backend for fullauto's `Dcs` trait, with Patroni's znode layout so a
//! fullauto agent and Patroni read and write the same cluster state.
//!
//! Mapping (Patroni's `zookeeper:` backend):
//! - every key is a znode under `/<namespace>/<scope>/`; `leader` holds the plain
//!   member name, `members/<name>` the member JSON, both **ephemeral** znodes owned by
//!   the agent's session, whose timeout is `ttl`;
//! - acquire = create the ephemeral `leader` (exists ⇒ lost); renew = the leader znode
//!   still holds my name and is owned by my session (my name with another owner is
//!   re-created in my session, atomically); release = delete it if it holds my name
//!   (Patroni restarts the session instead, which also drops the member record; the
//!   delete releases the lock just as atomically and needs no reconnect);
//! - `config`, `failover`, `sync` are CAS-written on the znode version; `initialize`
//!   is create-only; `sync` is cleared by writing `{}`, which reads back as absent;
//! - the leader record's version is the znode's creation zxid, unique per
//!   leadership (its znode version is 0 for every new leader);
//! - persistent watches (ZooKeeper ≥ 3.6) on `leader` and `config`, and session state
//!   changes, wake the HA loop; member and status writes do not.
//!
//! Sessions: opened lazily; a session that ends (expiry, auth failure) is replaced by
//! a new one, and since the server deleted the old one's ephemerals, `renew_leader`
//! answers `false` from then on. A changed ttl opens a new session and moves my
//! ephemeral znodes to it. Every call gives up with `DcsError::Unreachable` after
//! `retry_timeout`.
//!
//! The `testing` feature adds a harness that runs Debian's ZooKeeper (standalone or a
//! 3-server ensemble) on loopback, and a TCP proxy to cut a client off.
//!
//! # Example
//!
//! ```no_run
//! use dcs_zookeeper::{ZooKeeperConfig, ZooKeeperDcs};
//! use ha_core::{ClusterKeys, Dcs, DcsTiming};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // Patroni's `zookeeper:` section.
//! let config = ZooKeeperConfig::with_hosts(["127.0.0.1:2181"]);
//! let keys = ClusterKeys::new("service", "demo");
//! let dcs = ZooKeeperDcs::new(&config, keys, "pg1", DcsTiming::default())?;
//! if dcs.acquire_leader().await? {
//!     println!("pg1 holds the leader znode while its session lives");
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

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

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
