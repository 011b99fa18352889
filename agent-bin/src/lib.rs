//! agent-bin holds the thin binaries `fullauto` (the agent) and `fullautoctl` (the
//! CLI) and their wiring: the Patroni-format config file, the REST API, building the
//! DCS backend and the Postgres driver, and running the HA runner.

#![warn(missing_docs)]

pub mod api;
pub mod config;
pub mod ctl;
pub mod dcs_factory;
pub mod generate;
pub mod logging;
pub mod node;
pub mod secret;
pub mod systemd;
pub mod watchdog;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
