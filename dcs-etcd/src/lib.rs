//! etcd v3 backend for fullauto's `Dcs` trait. It keeps Patroni's etcd3 key layout
//! (`/<namespace>/<scope>/…`) and lock contract: one lease per agent bound to the
//! leader and member keys, leader acquire/renew/release as transactions, CAS writes
//! on `mod_revision`, and a prefix watch that feeds a cluster cache (`get_cluster`)
//! and wakes the HA loop. Every call returns within `retry_timeout`, with
//! `DcsError::Unreachable` when no etcd member answered.

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
