//! Consul backend for fullauto's `Dcs` trait, with Patroni's Consul mapping, and
//! an emulator of Consul's HTTP API (feature `emulator`) that the tests run against.
//!
//! # Mapping (Patroni spec §1.5)
//!
//! Keys live under `service/<scope>/` (Patroni's prefix without the leading
//! slash). Each agent holds one session, named `<scope>-<member>`, with
//! `Behavior: delete`, a lock-delay of 1 ms and the configured `checks` (none by
//! default). The leader key is taken with `PUT ?acquire=<session>` (false when
//! another session holds it); renewing the leader renews the session (a missing
//! session is replaced by a new one) and, when the leader key carries my name
//! under another session, re-binds it with `DELETE ?cas=<ModifyIndex>` followed by
//! an acquire; releasing deletes the key with `?cas=<ModifyIndex>`, only when its
//! value is my name. Member keys are written with `?acquire=<session>` so they
//! vanish with the session. Versioned writes use `?cas=<ModifyIndex>`,
//! `initialize` uses `?cas=0`, the cluster is read with one `?recurse` read, and
//! a background blocking query on the prefix (`?recurse&index=&wait=`) bumps the
//! [`Dcs::subscribe`](ha_core::Dcs::subscribe) counter, reconnecting with backoff.
//!
//! # Session TTL: why `ttl`, not Patroni's `ttl/2`
//!
//! Consul documents a session TTL as a *lower bound*: the session is not
//! invalidated before the TTL passes without a renewal, and in practice the
//! servers wait up to twice as long. Patroni asks for `ttl/2` and relies on that
//! slack to land near `ttl`, but only `ttl/2` is guaranteed: a leader whose loop
//! stalls could lose its key after `ttl/2` while it still believes itself leader
//! until `ttl`. The HA engine assumes the leader key lives at least `ttl` after
//! the last successful renewal, so this backend requests `TTL = ttl` — the
//! guaranteed lifetime is exactly what the engine assumes. The price: after a
//! leader dies, a real Consul may keep its key for up to `2 × ttl` before the
//! others can take over. When the agent's `session_ttl_min` is above `ttl`, the
//! minimum is used (logged): a longer lease is still safe, only slower.
//!
//! Sessions are renewed only by explicit calls (`renew_leader`, `touch_member`,
//! `acquire_leader`): there is no background renewer, so a stuck HA loop loses
//! its lease as it must. A changed `ttl` (`set_timing`) takes effect with a new
//! session, created at the next renewal; the old one is left to expire rather
//! than destroyed (destroying it would delete the leader key before it is
//! re-bound).
//!
//! # Client: a thin reqwest client, not the `consul` crate
//!
//! The `consul` crate (0.4) is synchronous (blocking reqwest 0.11, so every call
//! would need a blocking thread and could not be cancelled at the deadline), its
//! `KV::delete` takes no CAS index, and it exposes no blocking-query index on
//! list reads that a watcher could use. The endpoints needed here are few, so
//! [`client::ConsulClient`] is a small typed async client on the workspace's
//! reqwest with a deadline on every request: reads, renewals and re-acquires are
//! retried on transport errors until the deadline; conditional writes only when
//! the request surely never left (a retried CAS could report a false failure).
//!
//! Every `Dcs` call returns within `retry_timeout`, with `DcsError::Unreachable`
//! when the agent cannot be reached or does not answer (also when it answers
//! "No cluster leader" or "No known Consul servers"). A refused ACL token is
//! `DcsError::Config`.
//!
//! # Service registration
//!
//! With `register_service: true` each member registers itself with its local
//! agent as an instance of the service named after the scope, as Patroni does
//! (see [`service`]): tags are the role (`primary` plus `master`, `replica`,
//! `standby-leader`) and `service_tags`, the HTTP check probes the member's REST
//! API at `/<role>` every `service_check_interval`.
//!
//! This backend is verified against the emulator (module `emulator`, feature
//! `emulator`) only; no real Consul agent runs in this project's tests.
//!
//! # Example
//!
//! ```no_run
//! use dcs_consul::{ConsulConfig, ConsulDcs};
//! use ha_core::{Dcs, DcsTiming};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ha_core::DcsError> {
//! // Patroni's `consul:` section; here the local agent's default address.
//! let config = ConsulConfig::with_url("http://127.0.0.1:8500");
//! // Member `pg1` of cluster `demo` (keys under `service/demo/`).
//! let dcs = ConsulDcs::new(&config, "service", "demo", "pg1", DcsTiming::default())?;
//! if dcs.acquire_leader().await? {
//!     println!("pg1 holds the leader key while its session lives");
//! }
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod backend;
pub mod client;
pub mod config;
pub mod error;
pub mod service;
mod watch;

#[cfg(feature = "emulator")]
pub mod emulator;

pub use backend::ConsulDcs;
pub use config::{Consistency, ConsulConfig};
pub use error::ConsulError;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
