//! How an etcd client error is handled: retried, answered by a new lease or a new
//! client, or reported as a configuration/backend error.

use etcd_client::Error as EtcdError;
use ha_core::DcsError;
use tonic::Code;

/// What went wrong with one attempt of an operation.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Network trouble, a timeout or an etcd member without quorum: try again
    /// (possibly on another endpoint) until the deadline.
    Retry(String),
    /// The lease this agent wrote with no longer exists: grant a new one and retry.
    LeaseGone,
    /// The auth token is no longer accepted: authenticate again and retry.
    Reauthenticate(String),
    /// Retrying cannot help.
    Fatal(DcsError),
}

impl From<EtcdError> for Failure {
    fn from(e: EtcdError) -> Self {
        classify(e)
    }
}

/// Whether an error text names a TLS problem (bad CA, wrong protocol, bad cert).
pub(crate) fn looks_like_tls(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    [
        "certificate",
        "tls",
        "ssl",
        "handshake",
        "invalidcontenttype",
        "corruptmessage",
        "peer is incompatible",
        "unknownissuer",
        "frame with invalid size",
    ]
    .iter()
    .any(|m| t.contains(m))
}

/// Whether an error text is etcd refusing credentials.
pub(crate) fn looks_like_bad_credentials(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    t.contains("authentication failed")
        || t.contains("invalid user id or password")
        || t.contains("user name is empty")
        || t.contains("user name not found")
        || t.contains("authentication is not enabled")
}

/// The text of an error including its causes: etcd-client does not expose the
/// source chain, and tonic keeps the real cause (refused, reset, bad certificate)
/// in the status' source.
pub(crate) fn full_text(e: &EtcdError) -> String {
    let (mut text, mut source): (String, Option<&(dyn std::error::Error + 'static)>) = match e {
        EtcdError::GRpcStatus(s) => (
            format!("{:?}: {}", s.code(), s.message()),
            std::error::Error::source(s),
        ),
        EtcdError::TransportError(t) => (t.to_string(), std::error::Error::source(t)),
        other => (other.to_string(), None),
    };
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Sorts an etcd client error into what the caller should do about it.
pub(crate) fn classify(e: EtcdError) -> Failure {
    let text = full_text(&e);
    let lower = text.to_ascii_lowercase();
    if lower.contains("lease not found") {
        return Failure::LeaseGone;
    }
    match &e {
        EtcdError::GRpcStatus(status) => match status.code() {
            Code::Unauthenticated => {
                if looks_like_bad_credentials(&text) {
                    Failure::Fatal(DcsError::Config(format!(
                        "etcd rejected the credentials: {text}"
                    )))
                } else {
                    Failure::Reauthenticate(text)
                }
            }
            Code::InvalidArgument if looks_like_bad_credentials(&text) => Failure::Fatal(
                DcsError::Config(format!("etcd rejected the credentials: {text}")),
            ),
            Code::InvalidArgument if lower.contains("auth token") => Failure::Reauthenticate(text),
            Code::PermissionDenied => Failure::Fatal(DcsError::Config(format!(
                "etcd user lacks permission on the cluster prefix: {text}"
            ))),
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Unknown
            | Code::Internal
            | Code::FailedPrecondition
            | Code::ResourceExhausted => Failure::Retry(text),
            _ => Failure::Fatal(DcsError::Backend(text)),
        },
        EtcdError::InvalidArgs(_)
        | EtcdError::InvalidUri(_)
        | EtcdError::InvalidHeaderValue(_)
        | EtcdError::EndpointsNotManaged => Failure::Fatal(DcsError::Config(text)),
        _ => Failure::Retry(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_and_auth_errors_are_recognised() {
        let lease = EtcdError::GRpcStatus(tonic::Status::not_found(
            "etcdserver: requested lease not found",
        ));
        assert!(matches!(classify(lease), Failure::LeaseGone));
        let bad = EtcdError::GRpcStatus(tonic::Status::invalid_argument(
            "etcdserver: authentication failed, invalid user ID or password",
        ));
        assert!(matches!(classify(bad), Failure::Fatal(DcsError::Config(_))));
        let expired = EtcdError::GRpcStatus(tonic::Status::unauthenticated(
            "etcdserver: invalid auth token",
        ));
        assert!(matches!(classify(expired), Failure::Reauthenticate(_)));
        let down = EtcdError::GRpcStatus(tonic::Status::unavailable("connection refused"));
        assert!(matches!(classify(down), Failure::Retry(_)));
        let denied = EtcdError::GRpcStatus(tonic::Status::permission_denied(
            "etcdserver: permission denied",
        ));
        assert!(matches!(
            classify(denied),
            Failure::Fatal(DcsError::Config(_))
        ));
    }
}
