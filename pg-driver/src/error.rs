//! The driver's own error type; converted to ha-core's `PgError` at the trait boundary.

use ha_core::{Cause, PgError};
use std::path::PathBuf;

/// Everything that can go wrong while driving a PostgreSQL server. Each message says
/// what was wrong, where, and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// A server binary is not installed where we looked.
    #[error("{binary} not found in {searched}: install the Debian package postgresql-{version} (or set postgresql.bin_dir)")]
    BinaryMissing {
        /// Which binary.
        binary: String,
        /// Where we looked.
        searched: String,
        /// Major version we expected.
        version: String,
    },
    /// The configuration is unusable.
    #[error("bad postgresql configuration: {0}")]
    Config(String),
    /// The data directory belongs to another OS user.
    #[error("data directory {path} is owned by uid {found}, not by {user} (uid {expected}): chown -R {user} {path}", path = .path.display())]
    DataDirOwner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        found: u32,
        /// The OS user that runs postgres.
        user: String,
        /// That user's uid.
        expected: u32,
    },
    /// The data directory has permissions postgres refuses.
    #[error("data directory {path} has mode {mode:04o}; postgres needs 0700 or 0750: chmod 0700 {path}", path = .path.display())]
    DataDirPermissions {
        /// The directory.
        path: PathBuf,
        /// Its mode bits.
        mode: u32,
    },
    /// The data directory is not empty but is no PostgreSQL cluster, or otherwise unusable.
    #[error("data directory {path}: {reason}", path = .path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The data directory holds another cluster than the one expected.
    #[error("data directory {path} holds system identifier {found}, the cluster's is {expected}: it belongs to another cluster; move it away or point data_dir elsewhere", path = .path.display())]
    SystemIdMismatch {
        /// The directory.
        path: PathBuf,
        /// What pg_control says.
        found: String,
        /// What the cluster expects.
        expected: String,
    },
    /// postmaster.pid cannot be trusted.
    #[error("postmaster.pid in {path}: {reason}", path = .path.display())]
    PidFile {
        /// The data directory.
        path: PathBuf,
        /// What is wrong with the file.
        reason: String,
    },
    /// The clone / rewind source does not answer.
    #[error("source {name} at {host}:{port} is unreachable: {reason}")]
    SourceUnreachable {
        /// Member name.
        name: String,
        /// Host.
        host: String,
        /// Port.
        port: u16,
        /// The connect error.
        reason: String,
    },
    /// The file system is full.
    #[error("{tool} ran out of disk space writing {path}: free space or move data_dir: {output}", path = .path.display())]
    DiskFull {
        /// Which tool.
        tool: String,
        /// Where it was writing.
        path: PathBuf,
        /// Its output.
        output: String,
    },
    /// A tool exited with an error.
    #[error("{tool} failed: {output}")]
    Tool {
        /// Which tool.
        tool: String,
        /// Its (trimmed) error output.
        output: String,
    },
    /// Start failed; carries the server log tail.
    #[error("{reason}; server log tail:\n{log_tail}")]
    StartFailed {
        /// pg_ctl's output.
        reason: String,
        /// The last lines of the server log.
        log_tail: String,
    },
    /// The server or initdb refused the configuration it was given: every attempt
    /// fails the same way until the configuration changes.
    #[error("{tool} refused its configuration: {cause}. {fix}")]
    Misconfigured {
        /// `postgres` or `initdb`.
        tool: &'static str,
        /// Its complaint.
        cause: String,
        /// Where to fix it.
        fix: &'static str,
    },
    /// A stop did not finish.
    #[error("{0}")]
    StopFailed(String),
    /// An operation ran out of time.
    #[error("{0}")]
    Timeout(String),
    /// SQL failed.
    #[error("{0}")]
    Query(String),
    /// The request does not fit the server's state.
    #[error("{0}")]
    Invalid(String),
    /// A file operation failed.
    #[error("{what} {path}: {source}", path = .path.display())]
    Io {
        /// What we tried.
        what: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl DriverError {
    /// Wraps an I/O error with the operation and path.
    pub fn io(what: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DriverError::Io {
            what,
            path: path.into(),
            source,
        }
    }
}

/// The driver's error becomes the engine's by its kind; the `Cause` keeps the
/// driver's error itself (`std::error::Error::source`), so nothing of it is lost.
impl From<DriverError> for PgError {
    fn from(e: DriverError) -> Self {
        match e {
            DriverError::BinaryMissing { .. } => PgError::BinaryMissing(Cause::from_error(e)),
            DriverError::Config(_) | DriverError::Misconfigured { .. } => {
                PgError::Misconfigured(Cause::from_error(e))
            }
            DriverError::Invalid(_) => PgError::Invalid(Cause::from_error(e)),
            DriverError::DataDirOwner { .. }
            | DriverError::DataDirPermissions { .. }
            | DriverError::DataDir { .. }
            | DriverError::SystemIdMismatch { .. }
            | DriverError::PidFile { .. }
            | DriverError::Io { .. } => PgError::DataDir(Cause::from_error(e)),
            DriverError::SourceUnreachable { .. } => PgError::Tool {
                tool: "connect".into(),
                message: Cause::from_error(e),
            },
            DriverError::DiskFull { ref tool, .. } | DriverError::Tool { ref tool, .. } => {
                PgError::Tool {
                    tool: tool.clone(),
                    message: Cause::from_error(e),
                }
            }
            DriverError::StartFailed { .. } => PgError::StartFailed(Cause::from_error(e)),
            DriverError::StopFailed(_) => PgError::StopFailed(Cause::from_error(e)),
            DriverError::Timeout(_) => PgError::Timeout(Cause::from_error(e)),
            DriverError::Query(_) => PgError::Query(Cause::from_error(e)),
        }
    }
}

/// Result with the driver's error.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn the_engine_error_keeps_the_driver_error_and_its_io_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let driver = DriverError::io("read", "/data/PG_VERSION", io);
        let text = driver.to_string();
        let pg = PgError::from(driver);
        assert_eq!(pg.to_string(), format!("data directory problem: {text}"));
        let cause = pg.source().expect("the cause");
        let kept = cause
            .source()
            .and_then(|e| e.downcast_ref::<DriverError>())
            .expect("the driver's own error");
        assert!(matches!(kept, DriverError::Io { what: "read", .. }));
        let io = kept.source().expect("the I/O error");
        assert_eq!(io.to_string(), "denied");
    }
}
