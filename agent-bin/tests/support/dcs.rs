//! The DCS an end-to-end cluster runs on: a real etcd or a real ZooKeeper server,
//! started for the test on loopback and stopped by PID on drop. Tests read keys and
//! freeze the server through this, whichever backend it is.

use dcs_etcd::testing::{EtcdCluster, TestCerts};
use dcs_zookeeper::testing::{ClientAuth, ZkCluster};
use std::time::Duration;

/// Which backend a test cluster uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DcsKind {
    Etcd,
    /// etcd serving clients over TLS only, with required client certificates.
    EtcdTls,
    ZooKeeper,
    /// ZooKeeper with a TLS client port that requires client certificates; the agents
    /// use it (`use_ssl: true`), the test reads through the plain port.
    ZooKeeperTls,
}

/// A running DCS server.
pub enum TestDcs {
    Etcd(EtcdCluster),
    EtcdTls {
        etcd: EtcdCluster,
        certs: TestCerts,
        /// Holds the certificate files.
        _dir: tempfile::TempDir,
    },
    ZooKeeper(ZooKeeperServer),
}

impl TestDcs {
    pub fn start(kind: DcsKind) -> TestDcs {
        match kind {
            DcsKind::Etcd => TestDcs::Etcd(EtcdCluster::start_single().expect("etcd")),
            DcsKind::EtcdTls => {
                let dir = tempfile::Builder::new()
                    .prefix("fullauto-e2e-certs-")
                    .tempdir()
                    .expect("tempdir");
                let certs = TestCerts::generate(dir.path()).expect("certificates (openssl)");
                let etcd = EtcdCluster::start_tls(1, certs.clone()).expect("etcd over TLS");
                TestDcs::EtcdTls {
                    etcd,
                    certs,
                    _dir: dir,
                }
            }
            DcsKind::ZooKeeper => TestDcs::ZooKeeper(ZooKeeperServer::start(1, false)),
            DcsKind::ZooKeeperTls => TestDcs::ZooKeeper(ZooKeeperServer::start(1, true)),
        }
    }

    /// An ensemble of `n` members of a plain-text `kind` (etcd or ZooKeeper; a TLS kind
    /// is refused), all serving.
    pub fn start_ensemble(kind: DcsKind, n: usize) -> TestDcs {
        match kind {
            DcsKind::Etcd => TestDcs::Etcd(EtcdCluster::start(n).expect("etcd ensemble")),
            DcsKind::ZooKeeper => TestDcs::ZooKeeper(ZooKeeperServer::start(n, false)),
            DcsKind::EtcdTls | DcsKind::ZooKeeperTls => {
                panic!("start_ensemble: {kind:?} is not supported (plain etcd or ZooKeeper)")
            }
        }
    }

    /// Number of members (running or not).
    pub fn members(&self) -> usize {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.len(),
            TestDcs::ZooKeeper(z) => z.cluster.servers().len(),
        }
    }

    /// `127.0.0.1:port` of every member's plain client port.
    pub fn member_hosts(&self) -> Vec<String> {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.hosts(),
            TestDcs::ZooKeeper(z) => z.cluster.hosts(),
        }
    }

    /// The DCS section of an agent's config file listing `hosts` (`host:port`)
    /// instead of the members' own addresses (e.g. proxies in front of them).
    pub fn config_section_for(&self, hosts: &[String]) -> String {
        match self {
            TestDcs::Etcd(_) | TestDcs::EtcdTls { .. } => {
                format!("etcd3:\n  hosts: [{}]", hosts.join(", "))
            }
            TestDcs::ZooKeeper(_) => format!("zookeeper:\n  hosts: [{}]", hosts.join(", ")),
        }
    }

    /// Kills member `i` (SIGKILL; SIGCONT first in case it was frozen).
    pub fn kill_member(&mut self, i: usize) {
        self.resume_member(i);
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.kill(i),
            TestDcs::ZooKeeper(z) => z.cluster.server(i).kill(),
        }
    }

    /// Starts a killed member again on its data, without waiting for it to serve
    /// (it may have no quorum to serve with yet).
    pub fn spawn_member(&mut self, i: usize) {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => {
                if !e.is_running(i) {
                    e.spawn_member(i).expect("start etcd member");
                }
            }
            TestDcs::ZooKeeper(z) => z.cluster.server(i).spawn().expect("start zookeeper"),
        }
    }

    /// Freezes member `i` (SIGSTOP).
    pub fn pause_member(&mut self, i: usize) {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.pause(i),
            TestDcs::ZooKeeper(z) => z.cluster.server(i).pause(),
        }
    }

    /// Thaws member `i` (SIGCONT).
    pub fn resume_member(&mut self, i: usize) {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.resume(i),
            TestDcs::ZooKeeper(z) => z.cluster.server(i).resume(),
        }
    }

    /// The DCS section of an agent's config file (YAML lines).
    pub fn config_section(&self) -> String {
        match self {
            TestDcs::Etcd(e) => format!(
                "etcd3:\n  hosts: {}",
                e.endpoint(0).trim_start_matches("http://")
            ),
            TestDcs::EtcdTls { etcd, certs, .. } => format!(
                "etcd3:\n  hosts: {}\n  protocol: https\n  cacert: {}\n  cert: {}\n  key: {}",
                etcd.hosts()[0],
                certs.ca.display(),
                certs.client_cert.display(),
                certs.client_key.display()
            ),
            TestDcs::ZooKeeper(z) => match z.cluster.tls_files() {
                None => format!("zookeeper:\n  hosts: [{}]", z.cluster.hosts().join(", ")),
                Some(files) => format!(
                    "zookeeper:\n  hosts: [{}]\n  use_ssl: true\n  cacert: {}\n  cert: {}\n  \
                     key: {}",
                    z.cluster.secure_hosts().join(", "),
                    files.ca.display(),
                    files.client_cert.display(),
                    files.client_key.display()
                ),
            },
        }
    }

    /// Freezes the server (SIGSTOP): clients keep their connections but get no answers.
    pub fn pause(&mut self) {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.pause(0),
            TestDcs::ZooKeeper(z) => z.cluster.server(0).pause(),
        }
    }

    /// Thaws a server frozen by [`TestDcs::pause`].
    pub fn resume(&mut self) {
        match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e.resume(0),
            TestDcs::ZooKeeper(z) => z.cluster.server(0).resume(),
        }
    }

    /// The value of an absolute key (`/service/<scope>/leader`), None when it is absent,
    /// empty or the server does not answer.
    pub fn get(&mut self, key: &str) -> Option<String> {
        let value = match self {
            TestDcs::Etcd(e) | TestDcs::EtcdTls { etcd: e, .. } => e
                .etcdctl(&["get", "--print-value-only", key])
                .ok()?
                .trim()
                .to_string(),
            TestDcs::ZooKeeper(z) => z.get(key)?,
        };
        (!value.is_empty()).then_some(value)
    }
}

/// A standalone ZooKeeper server and a client session of the test's own to read it.
pub struct ZooKeeperServer {
    cluster: ZkCluster,
    client: Option<zookeeper_client::Client>,
    runtime: tokio::runtime::Runtime,
}

impl ZooKeeperServer {
    fn start(n: usize, tls: bool) -> ZooKeeperServer {
        // One worker keeps the reader's session alive between reads.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("tokio runtime");
        let cluster = runtime
            .block_on(async {
                if tls {
                    ZkCluster::standalone_tls(ClientAuth::Need).await
                } else if n > 1 {
                    ZkCluster::ensemble(n).await
                } else {
                    ZkCluster::standalone().await
                }
            })
            .expect("zookeeper");
        ZooKeeperServer {
            cluster,
            client: None,
            runtime,
        }
    }

    /// Reads a znode's data; a failed read drops the session so the next read opens a
    /// fresh one (the server may have been frozen and expired it).
    fn get(&mut self, path: &str) -> Option<String> {
        let address = self.cluster.hosts().join(",");
        let client = self.client.take();
        let (client, value) = self.runtime.block_on(async move {
            let read = async {
                let client = match client {
                    Some(c) => c,
                    None => zookeeper_client::Client::connector()
                        .with_session_timeout(Duration::from_secs(10))
                        .connect(&address)
                        .await
                        .ok()?,
                };
                let value = match client.get_data(path).await {
                    Ok((data, _)) => Some(String::from_utf8_lossy(&data).into_owned()),
                    Err(zookeeper_client::Error::NoNode) => Some(String::new()),
                    Err(_) => None,
                };
                Some((client, value))
            };
            match tokio::time::timeout(Duration::from_secs(3), read).await {
                Ok(Some((client, Some(value)))) => (Some(client), Some(value)),
                _ => (None, None),
            }
        });
        self.client = client;
        value
    }
}

impl Drop for ZooKeeperServer {
    fn drop(&mut self) {
        // The client's background task lives on this runtime: close it there.
        let _guard = self.runtime.enter();
        self.client = None;
    }
}
