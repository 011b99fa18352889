//! The driver's own error type; converted to ha-core's `PgError` at the trait boundary.

use ha_core::PgError;
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
    /// A pg_rewind was cut short after it began copying: the data directory is a mix
    /// of two servers' files.
    #[error("{0}")]
    HalfRewound(String),
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

impl From<DriverError> for PgError {
    fn from(e: DriverError) -> Self {
        let msg = e.to_string();
        match e {
            DriverError::BinaryMissing { .. } => PgError::BinaryMissing(msg),
            DriverError::Config(_) | DriverError::Misconfigured { .. } => {
                PgError::Misconfigured(msg)
            }
            DriverError::Invalid(_) => PgError::Invalid(msg),
            DriverError::DataDirOwner { .. }
            | DriverError::DataDirPermissions { .. }
            | DriverError::DataDir { .. }
            | DriverError::SystemIdMismatch { .. }
            | DriverError::PidFile { .. }
            | DriverError::HalfRewound(_)
            | DriverError::Io { .. } => PgError::DataDir(msg),
            DriverError::SourceUnreachable { .. } => PgError::Tool {
                tool: "connect".into(),
                message: msg,
            },
            DriverError::DiskFull { ref tool, .. } | DriverError::Tool { ref tool, .. } => {
                PgError::Tool {
                    tool: tool.clone(),
                    message: msg,
                }
            }
            DriverError::StartFailed { .. } => PgError::StartFailed(msg),
            DriverError::StopFailed(_) => PgError::StopFailed(msg),
            DriverError::Timeout(_) => PgError::Timeout(msg),
            DriverError::Query(_) => PgError::Query(msg),
        }
    }
}

/// Result with the driver's error.
pub type Result<T, E = DriverError> = std::result::Result<T, E>;
