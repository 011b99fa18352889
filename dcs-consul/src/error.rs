//! The crate's error type and its mapping onto `DcsError`.

use ha_core::DcsError;

/// Why a Consul request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConsulError {
    /// The agent could not be reached or did not answer before the deadline.
    #[error("consul agent at {url} unreachable during {what}: {reason}")]
    Unreachable {
        /// Agent URL.
        url: String,
        /// The operation.
        what: String,
        /// Transport error or timeout.
        reason: String,
    },
    /// The ACL token was refused (403); fix `consul.token`.
    #[error("consul refused the acl token for {what}: {body}; check consul.token")]
    Forbidden {
        /// The operation.
        what: String,
        /// Consul's message.
        body: String,
    },
    /// The session named in an acquire does not exist (any more).
    #[error("consul session {0} is invalid (expired or destroyed)")]
    InvalidSession(String),
    /// Any other error answer.
    #[error("consul answered {status} to {what}: {body}")]
    Http {
        /// HTTP status.
        status: u16,
        /// The operation.
        what: String,
        /// Consul's message.
        body: String,
    },
    /// An answer that does not parse as Consul's JSON.
    #[error("undecodable consul answer to {what}: {reason}")]
    Decode {
        /// The operation.
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// Bad configuration (URL, TLS files).
    #[error("consul configuration: {0}")]
    Config(String),
}

impl ConsulError {
    /// Whether this is a transport failure.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ConsulError::Unreachable { .. })
    }
}

impl From<ConsulError> for DcsError {
    fn from(e: ConsulError) -> Self {
        match e {
            ConsulError::Unreachable { .. } => DcsError::Unreachable(e.to_string()),
            ConsulError::Forbidden { .. } | ConsulError::Config(_) => {
                DcsError::Config(e.to_string())
            }
            ConsulError::InvalidSession(_)
            | ConsulError::Http { .. }
            | ConsulError::Decode { .. } => DcsError::Backend(e.to_string()),
        }
    }
}
