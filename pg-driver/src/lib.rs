//! pg-driver implements ha-core's `Postgres` trait on a real PostgreSQL server. It
//! runs the server's own tools (initdb, pg_ctl, pg_controldata, pg_basebackup,
//! pg_rewind, postgres in single-user mode) as the server's OS user, talks SQL through
//! fresh tokio-postgres connections with short timeouts, and owns one generated
//! configuration file (`postgresql.fullauto.conf`) plus `pg_hba.conf` and the standby
//! settings. It never deletes an existing data directory on its own.

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
