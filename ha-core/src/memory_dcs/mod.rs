//! An in-memory DCS with real lease semantics on an injectable clock, modelled on
//! etcd v3 and Patroni's etcd3 lock contract (spec §1.4/§1.5).
//!
//! Three layers:
//! - [`MemoryStore`]: a synchronous, deterministic key-value store with leases. Every
//!   operation takes `now` and first expires overdue leases, so time only matters
//!   through the values the caller passes in (the simulator drives it with a manual
//!   clock).
//! - [`MemoryDcsNode`]: one member's synchronous view of one cluster over a store,
//!   implementing every `Dcs` operation with an explicit `now`.
//! - [`MemoryDcs`]: the async [`Dcs`](crate::Dcs) implementation over a [`SharedMemoryStore`],
//!   with a reachability switch, injected latency and change notifications.
//!
//! Leases are refreshed only by explicit calls (acquire, renew, touch_member), never in
//! the background: an HA loop that stops calling must lose its keys, as with etcd.

mod node;
mod shared;
mod store;
#[cfg(test)]
mod tests;

pub use node::MemoryDcsNode;
pub use shared::{MemoryDcs, SharedMemoryStore};
pub use store::{KvEntry, LeaseId, LeaseInfo, LeaseNotFound, MemoryStore};
