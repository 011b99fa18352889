//! etcd v3 backend for fullauto's `Dcs` trait. It keeps Patroni's etcd3 key layout
//! (`/<namespace>/<scope>/…`) and lock contract: one lease per agent bound to the
//! leader and member keys, leader acquire/renew/release as transactions, CAS writes
//! on `mod_revision`, and a prefix watch that feeds a cluster cache (`get_cluster`)
//! and wakes the HA loop. Every call returns within `retry_timeout`, with
//! `DcsError::Unreachable` when no etcd member answered.
//!
//! # Example
//!
//! ```no_run
//! use dcs_etcd::{EtcdConfig, EtcdDcs};
//! use ha_core::{Dcs, DcsTiming};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ha_core::DcsError> {
//! // Patroni's `etcd3:` section: hosts, protocol, TLS, credentials.
//! let config = EtcdConfig::with_hosts(&["127.0.0.1:2379".to_string()]);
//! // Member `pg1` of cluster `/service/demo`, with Patroni's default timing.
//! let dcs = EtcdDcs::connect(&config, "/service", "demo", "pg1", DcsTiming::default()).await?;
//! if dcs.acquire_leader().await? {
//!     println!("pg1 holds the leader key for the next ttl");
//! }
//! let cluster = dcs.get_cluster().await?;
//! println!("leader: {:?}", cluster.leader.map(|l| l.name));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

mod backend;
mod cache;
mod client;
mod config;
mod failure;
mod lease;
mod watcher;

#[cfg(feature = "testing")]
pub mod testing;

pub use backend::EtcdDcs;
pub use config::EtcdConfig;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
