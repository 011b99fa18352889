//! pg-driver implements ha-core's `Postgres` trait on a real PostgreSQL server. It
//! runs the server's own tools (initdb, pg_ctl, pg_controldata, pg_basebackup,
//! pg_rewind, postgres in single-user mode) as the server's OS user, talks SQL through
//! fresh tokio-postgres connections with short timeouts, and owns one generated
//! configuration file (`postgresql.fullauto.conf`) plus `pg_hba.conf` and the standby
//! settings. It never deletes an existing data directory on its own.
//!
//! # Example
//!
//! A driver for one server: bootstrap a new cluster, start it as a primary and
//! observe it. In an agent the [`ha_core::runner::Runner`] makes these calls; the
//! workspace's `examples` crate runs three such nodes in one process.
//!
//! ```no_run
//! use ha_core::{Postgres, StartRole};
//! use pg_driver::{Credentials, PgConfig, PgDriver};
//! use std::time::Duration;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut cfg = PgConfig::new("pg1", "127.0.0.1:5433", "/var/lib/postgresql/15/pg1");
//! cfg.authentication.superuser = Credentials {
//!     password: Some("secret".into()),
//!     ..Credentials::user("postgres")
//! };
//! cfg.pg_hba = vec![
//!     "local all all trust".into(),
//!     "host all all 127.0.0.1/32 scram-sha-256".into(),
//! ];
//! // Finds initdb, pg_ctl, … (bin_dir, else the PATH and Debian's layout) and the
//! // OS user to run them as (`postgres` when started as root).
//! let pg = PgDriver::new(cfg)?;
//! pg.bootstrap().await?; // initdb, users, configuration files
//! pg.start(&StartRole::Primary, Duration::from_secs(60)).await?;
//! let seen = pg.observe().await;
//! assert_eq!(seen.in_recovery, Some(false));
//! # Ok(())
//! # }
//! ```

#![warn(missing_docs)]

pub mod binaries;
pub mod config;
pub mod conninfo;
pub mod controldata;
pub mod credentials;
pub mod datadir;
pub mod driver;
pub mod error;
pub mod fence;
pub mod pgpass;
pub mod pidfile;
pub mod progress;
pub mod rejection;
pub mod render;
pub mod runner;
pub mod server_facts;
pub mod slots;
pub mod sql;
pub mod timeline;
pub mod tls;
pub mod version_params;

/// A harness that runs real servers in temp dirs, for tests here and in agent-bin.
#[cfg(feature = "testing")]
pub mod testing;

pub use config::{
    Authentication, BootstrapMethod, Credentials, Endpoint, Host, PgConfig, ReplicaMethod,
    ToolOptions,
};
pub use driver::{PgDriver, WalPositions};
pub use error::DriverError;
pub use slots::slot_name_for_member;

/// The README's examples, compiled and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
