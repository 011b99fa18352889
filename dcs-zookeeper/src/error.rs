//! The crate's error type and its mapping onto ha-core's `DcsError`.

use ha_core::DcsError;

/// What went wrong in this crate outside a `Dcs` call (configuration, test servers).
#[derive(Debug, thiserror::Error)]
pub enum ZkError {
    /// The `zookeeper` configuration section is invalid; fix the named field.
    #[error("invalid zookeeper config: {0}")]
    Config(String),
    /// A test ZooKeeper server could not be prepared, started or stopped.
    #[error("zookeeper test server: {0}")]
    Server(String),
}

impl From<ZkError> for DcsError {
    fn from(e: ZkError) -> Self {
        match e {
            ZkError::Config(m) => DcsError::Config(m),
            ZkError::Server(m) => DcsError::Backend(m),
        }
    }
}

/// Whether a client error means "ZooKeeper not reachable right now" (worth retrying
/// within the deadline, reported as `Unreachable` when the deadline passes).
pub(crate) fn is_transient(e: &zookeeper_client::Error) -> bool {
    use zookeeper_client::Error as E;
    matches!(
        e,
        E::ConnectionLoss
            | E::Timeout
            | E::NoHosts
            | E::SessionExpired
            | E::SessionMoved
            | E::ClientClosed
            | E::Throttled
            | E::NotReadOnly
    )
}

/// Maps a client error to the trait's error, naming the operation and znode.
pub(crate) fn to_dcs(what: &str, e: zookeeper_client::Error) -> DcsError {
    use zookeeper_client::Error as E;
    let msg = format!("{what}: {e}");
    if is_transient(&e) {
        return DcsError::Unreachable(msg);
    }
    match e {
        E::NoAuth | E::AuthFailed | E::InvalidAcl => {
            DcsError::Config(format!("{msg} (check zookeeper auth_data / set_acls)"))
        }
        _ => DcsError::Backend(msg),
    }
}
