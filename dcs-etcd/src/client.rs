//! Building etcd clients (endpoints, credentials, TLS, timeouts) and choosing the
//! endpoint each attempt goes to.

use crate::config::EtcdConfig;
use crate::failure::{classify, Failure};
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use ha_core::DcsError;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// How to build an etcd client: endpoints, credentials, TLS, timeouts.
#[derive(Clone)]
pub(crate) struct ClientFactory {
    pub endpoints: Vec<String>,
    credentials: Option<(String, String)>,
    tls: Option<TlsOptions>,
}

impl ClientFactory {
    pub fn new(config: &EtcdConfig) -> Result<Self, DcsError> {
        let endpoints = config.endpoints()?;
        let credentials = config.credentials()?;
        let tls = match config.tls_material()? {
            None => None,
            Some(m) => {
                let mut tls = TlsOptions::new();
                if let Some(ca) = m.ca {
                    tls = tls.ca_certificate(Certificate::from_pem(ca));
                }
                if let Some((cert, key)) = m.identity {
                    tls = tls.identity(Identity::from_pem(cert, key));
                }
                Some(tls)
            }
        };
        if tls.is_some() && endpoints.iter().any(|e| e.starts_with("http://")) {
            return Err(DcsError::Config(
                "etcd3: TLS files are configured but an endpoint uses http://; use https"
                    .to_string(),
            ));
        }
        Ok(ClientFactory {
            endpoints,
            credentials,
            tls,
        })
    }

    fn options(&self, attempt_timeout: Duration) -> ConnectOptions {
        let mut o = ConnectOptions::new()
            .with_connect_timeout(attempt_timeout)
            .with_keep_alive_while_idle(false);
        if let Some((user, password)) = &self.credentials {
            o = o.with_user(user.clone(), password.clone());
        }
        if let Some(tls) = &self.tls {
            o = o.with_tls(tls.clone());
        }
        o
    }

    /// A client for unary requests to endpoint `index`, each bounded by
    /// `attempt_timeout`. One client per endpoint (not etcd-client's balanced channel)
    /// so a member that hangs is left for the next one deterministically.
    pub async fn request_client(
        &self,
        index: usize,
        attempt_timeout: Duration,
    ) -> Result<Client, Failure> {
        let options = self.options(attempt_timeout).with_timeout(attempt_timeout);
        Client::connect([&self.endpoints[index]], Some(options))
            .await
            .map_err(classify)
    }

    /// A client for the long-lived watch stream: no per-request deadline, but HTTP/2
    /// pings so a silently vanished member is noticed, and only members with a raft
    /// leader serve it (a partitioned member would otherwise stay silent).
    pub async fn watch_client(
        &self,
        index: usize,
        attempt_timeout: Duration,
    ) -> Result<Client, Failure> {
        let options = self
            .options(attempt_timeout)
            .with_keep_alive(Duration::from_secs(5), attempt_timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        Client::connect([&self.endpoints[index]], Some(options))
            .await
            .map_err(classify)
    }
}

/// The per-attempt deadline: `retry_timeout` spread over the endpoints as Patroni
/// does (one endpoint gets three tries, two get two each), at least one second.
pub(crate) fn attempt_timeout(retry_timeout: Duration, endpoints: usize) -> Duration {
    let tries = match endpoints {
        0 | 1 => 3,
        n => n as u32,
    };
    (retry_timeout / tries)
        .max(Duration::from_secs(1))
        .min(retry_timeout)
}

/// One lazily built client per endpoint and the endpoint currently preferred.
pub(crate) struct EndpointPool {
    factory: ClientFactory,
    /// Each with the per-attempt timeout it was built with (a new `retry_timeout`
    /// rebuilds it); dropped after a failure so the next use reconnects (and
    /// re-authenticates).
    clients: Vec<tokio::sync::Mutex<Option<(Client, Duration)>>>,
    /// The endpoint requests go to until it fails; then the next one.
    preferred: AtomicUsize,
}

impl EndpointPool {
    pub fn new(factory: ClientFactory) -> Self {
        EndpointPool {
            clients: (0..factory.endpoints.len())
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            factory,
            preferred: AtomicUsize::new(0),
        }
    }

    pub fn endpoints(&self) -> &[String] {
        &self.factory.endpoints
    }

    /// The endpoint the next attempt should use.
    pub fn preferred(&self) -> usize {
        self.preferred.load(Ordering::Relaxed) % self.clients.len()
    }

    /// Forgets endpoint `index`'s client (its connection may be stuck or its auth
    /// token stale) and prefers the next endpoint, unless another call already moved on.
    pub async fn failed(&self, index: usize) {
        *self.clients[index].lock().await = None;
        let next = (index + 1) % self.clients.len();
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// The client for endpoint `index`, built (and authenticated) on first use.
    pub async fn client(&self, index: usize, attempt_timeout: Duration) -> Result<Client, Failure> {
        let mut slot = self.clients[index].lock().await;
        if let Some((c, built_for)) = slot.as_ref() {
            if *built_for == attempt_timeout {
                return Ok(c.clone());
            }
        }
        let c = self.factory.request_client(index, attempt_timeout).await?;
        *slot = Some((c.clone(), attempt_timeout));
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_timeouts_follow_patroni() {
        let t = Duration::from_secs(9);
        assert_eq!(attempt_timeout(t, 1), Duration::from_secs(3));
        assert_eq!(attempt_timeout(t, 3), Duration::from_secs(3));
        assert_eq!(
            attempt_timeout(Duration::from_secs(10), 2),
            Duration::from_secs(5)
        );
        assert_eq!(
            attempt_timeout(Duration::from_secs(2), 3),
            Duration::from_secs(1)
        );
        assert_eq!(
            attempt_timeout(Duration::from_millis(500), 1),
            Duration::from_millis(500)
        );
    }
}
