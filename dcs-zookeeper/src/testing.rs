//! Test harness: real ZooKeeper servers from Debian's `zookeeper` package, run as
//! plain Java processes on loopback with data in temp dirs, and a TCP proxy that can
//! cut a client off without closing its session.
//!
//! Servers use a short tick (200 ms) so that sessions of a few seconds are allowed,
//! a 128 MiB heap, no admin HTTP server, and are killed by PID when dropped.
//!
//! [`ZkCluster::standalone_tls`] adds a TLS client port (Netty, PEM key and trust
//! stores) with certificates made for the test by [`TlsFiles`].

use crate::error::ZkError;
use crate::ZooKeeperConfig;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Server tick; sessions may be as short as two ticks.
pub const TICK: Duration = Duration::from_millis(200);

/// Where Debian installs ZooKeeper's jar (its manifest names the other jars).
const ZOOKEEPER_JAR: &str = "/usr/share/java/zookeeper.jar";
/// A logging backend for the server's slf4j calls, if installed (logs to the file).
const SLF4J_SIMPLE_JAR: &str = "/usr/share/java/slf4j-simple.jar";
/// Netty jars that ZooKeeper's TLS port needs beyond those its manifest names.
const NETTY_TLS_JARS: &[&str] = &[
    "/usr/share/java/netty-codec.jar",
    "/usr/share/java/netty-resolver.jar",
];
/// How long a server may take to start serving (JVM start on a busy 2-core box).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// A loopback port that was free a moment ago.
pub fn free_port() -> Result<u16, ZkError> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")
        .map_err(|e| ZkError::Server(format!("bind a free port: {e}")))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| ZkError::Server(format!("read bound port: {e}")))
}

/// One ZooKeeper server process.
pub struct ZkServer {
    id: usize,
    dir: PathBuf,
    client_port: u16,
    secure_port: Option<u16>,
    child: Option<Child>,
}

impl ZkServer {
    /// `127.0.0.1:<client port>` (plain text; a TLS server keeps it for its health
    /// checks).
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    /// `127.0.0.1:<TLS client port>`, for a server started with TLS.
    pub fn secure_address(&self) -> Option<String> {
        self.secure_port.map(|p| format!("127.0.0.1:{p}"))
    }

    /// The server's log file (for diagnosing a failed test); lines start with a UTC
    /// timestamp such as `2026-01-02T03:04:05.678`.
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("server.log")
    }

    /// Whether the process was started and not stopped.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the process (no-op if running) without waiting for it to serve.
    pub fn spawn(&mut self) -> Result<(), ZkError> {
        if self.child.is_some() {
            return Ok(());
        }
        if !Path::new(ZOOKEEPER_JAR).exists() {
            return Err(ZkError::Server(format!(
                "{ZOOKEEPER_JAR} not found; install the Debian package `zookeeper` (scripts/setup)"
            )));
        }
        let mut classpath = ZOOKEEPER_JAR.to_string();
        if Path::new(SLF4J_SIMPLE_JAR).exists() {
            classpath.push(':');
            classpath.push_str(SLF4J_SIMPLE_JAR);
        }
        if self.secure_port.is_some() {
            for jar in NETTY_TLS_JARS {
                if !Path::new(jar).exists() {
                    return Err(ZkError::Server(format!(
                        "{jar} not found; ZooKeeper's TLS port needs it (Debian package \
                         libnetty-java, a dependency of `zookeeper`)"
                    )));
                }
                classpath.push(':');
                classpath.push_str(jar);
            }
        }
        let log = std::fs::File::create(self.log_path())
            .map_err(|e| ZkError::Server(format!("create {}: {e}", self.log_path().display())))?;
        let log2 = log
            .try_clone()
            .map_err(|e| ZkError::Server(format!("clone log handle: {e}")))?;
        let child = Command::new("java")
            .args([
                "-Xmx128m",
                "-Xss512k",
                "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1",
                "-Dzookeeper.jmx.log4j.disable=true",
                // Timestamped log lines (UTC, millisecond) so tests and the latency
                // example can line up server events with client observations.
                "-Duser.timezone=UTC",
                "-Dorg.slf4j.simpleLogger.showDateTime=true",
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=yyyy-MM-dd'T'HH:mm:ss.SSS",
                "-cp",
                &classpath,
                "org.apache.zookeeper.server.quorum.QuorumPeerMain",
            ])
            .arg(self.dir.join("zoo.cfg"))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2)
            .spawn()
            .map_err(|e| {
                ZkError::Server(format!("run java (install the `zookeeper` package): {e}"))
            })?;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process (SIGKILL, by PID) and reaps it: a crash, as far as clients
    /// and peers can tell.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process with SIGSTOP: its sockets stay open but it answers nothing
    /// and its clock-driven work (session expiry) stops, like a hung server.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
    }

    /// Thaws a process frozen by [`ZkServer::pause`].
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, signal: libc::c_int) {
        if let Some(child) = self.child.as_ref() {
            // Safety: plain FFI call with a PID this harness spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Starts the process and waits until it serves clients.
    pub async fn start(&mut self) -> Result<(), ZkError> {
        self.spawn()?;
        self.wait_serving(START_TIMEOUT).await
    }

    /// Waits until the server answers `srvr` with a mode (standalone, leader or
    /// follower), i.e. serves client requests.
    pub async fn wait_serving(&mut self, limit: Duration) -> Result<(), ZkError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    self.child = None;
                    return Err(ZkError::Server(format!(
                        "server {} exited with {status}; see {}",
                        self.id,
                        self.log_path().display()
                    )));
                }
            }
            if let Some(mode) = four_letter(&self.address(), "srvr").await {
                if mode.contains("Mode: ") {
                    return Ok(());
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ZkError::Server(format!(
                    "server {} not serving after {limit:?}; see {}",
                    self.id,
                    self.log_path().display()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Answer to `srvr`'s `Mode:` line, e.g. `standalone`, `leader`, `follower`.
    pub async fn mode(&self) -> Option<String> {
        let text = four_letter(&self.address(), "srvr").await?;
        text.lines()
            .find_map(|l| l.strip_prefix("Mode: "))
            .map(|m| m.trim().to_string())
    }
}

impl Drop for ZkServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Sends a four-letter command and returns the whole answer.
async fn four_letter(address: &str, cmd: &str) -> Option<String> {
    let io = async {
        let mut s = TcpStream::connect(address).await.ok()?;
        s.write_all(cmd.as_bytes()).await.ok()?;
        let mut out = String::new();
        s.read_to_string(&mut out).await.ok()?;
        Some(out)
    };
    tokio::time::timeout(Duration::from_secs(2), io)
        .await
        .ok()
        .flatten()
}

/// A standalone server or an ensemble, with its temp dir (removed on drop, after the
/// servers are killed).
pub struct ZkCluster {
    servers: Vec<ZkServer>,
    tls: Option<TlsFiles>,
    _dir: tempfile::TempDir,
}

/// Whether a TLS test server asks clients for a certificate (`ssl.clientAuth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client certificate is required: clients without one are refused.
    Need,
    /// A client certificate is requested, and checked when given.
    Want,
}

/// PEM files made for a TLS test: a CA, the server's certificate and key (signed by
/// it, for `127.0.0.1` and `localhost`), a client's, and an unrelated CA that signed
/// nothing here.
pub struct TlsFiles {
    /// The CA that signed the server and client certificates.
    pub ca: PathBuf,
    /// The server's private key followed by its certificate (ZooKeeper's PEM key
    /// store).
    pub server_keystore: PathBuf,
    /// The client certificate (subject `CN=fullauto-client`).
    pub client_cert: PathBuf,
    /// The client certificate's private key (PKCS#8, unencrypted).
    pub client_key: PathBuf,
    /// A CA that signed neither the server nor the client certificate.
    pub other_ca: PathBuf,
}

impl TlsFiles {
    /// Makes the certificates and writes them into `dir`.
    pub fn create(dir: &Path) -> Result<TlsFiles, ZkError> {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        let fail = |what: &str, e: rcgen::Error| ZkError::Server(format!("{what}: {e}"));
        let ca_for = |cn: &str| -> Result<(rcgen::Certificate, KeyPair), ZkError> {
            let key = KeyPair::generate().map_err(|e| fail("generate CA key", e))?;
            let mut params =
                CertificateParams::new(Vec::<String>::new()).map_err(|e| fail("CA params", e))?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            let cert = params
                .self_signed(&key)
                .map_err(|e| fail("sign CA certificate", e))?;
            Ok((cert, key))
        };
        let (ca, ca_key) = ca_for("fullauto test ZooKeeper CA")?;
        let (other_ca, _) = ca_for("fullauto unrelated CA")?;
        let leaf = |names: Vec<String>, cn: &str, usage: ExtendedKeyUsagePurpose| {
            let key = KeyPair::generate().map_err(|e| fail("generate key", e))?;
            let mut params = CertificateParams::new(names).map_err(|e| fail("params", e))?;
            params.distinguished_name.push(DnType::CommonName, cn);
            params.extended_key_usages = vec![usage];
            let cert = params
                .signed_by(&key, &ca, &ca_key)
                .map_err(|e| fail("sign certificate", e))?;
            Ok::<_, ZkError>((cert, key))
        };
        let (server, server_key) = leaf(
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
            "localhost",
            ExtendedKeyUsagePurpose::ServerAuth,
        )?;
        let (client, client_key) = leaf(
            vec!["fullauto-client".to_string()],
            "fullauto-client",
            ExtendedKeyUsagePurpose::ClientAuth,
        )?;
        let files = TlsFiles {
            ca: dir.join("ca.pem"),
            server_keystore: dir.join("server-keystore.pem"),
            client_cert: dir.join("client.pem"),
            client_key: dir.join("client-key.pem"),
            other_ca: dir.join("other-ca.pem"),
        };
        let write = |path: &Path, text: String| {
            std::fs::write(path, text)
                .map_err(|e| ZkError::Server(format!("write {}: {e}", path.display())))
        };
        write(&files.ca, ca.pem())?;
        write(
            &files.server_keystore,
            format!("{}{}", server_key.serialize_pem(), server.pem()),
        )?;
        write(&files.client_cert, client.pem())?;
        write(&files.client_key, client_key.serialize_pem())?;
        write(&files.other_ca, other_ca.pem())?;
        Ok(files)
    }
}

impl ZkCluster {
    /// One standalone server, started and serving.
    pub async fn standalone() -> Result<ZkCluster, ZkError> {
        Self::start(1, None).await
    }

    /// `n` servers forming one ensemble on loopback, all started and serving.
    pub async fn ensemble(n: usize) -> Result<ZkCluster, ZkError> {
        Self::start(n, None).await
    }

    /// One standalone server with a TLS client port (certificates from
    /// [`TlsFiles`], see [`ZkCluster::tls_files`]) next to its plain one, started and
    /// serving. [`ZkCluster::config`] then connects over TLS with the client
    /// certificate.
    pub async fn standalone_tls(client_auth: ClientAuth) -> Result<ZkCluster, ZkError> {
        Self::start(1, Some(client_auth)).await
    }

    async fn start(n: usize, tls: Option<ClientAuth>) -> Result<ZkCluster, ZkError> {
        // A port picked by `free_port` can be taken by someone else before the JVM
        // binds it; one more try with fresh ports covers that race.
        match Self::start_once(n, tls).await {
            Ok(c) => Ok(c),
            Err(e) => {
                tracing::warn!(error = %e, "zookeeper test servers failed to start; retrying once");
                Self::start_once(n, tls).await
            }
        }
    }

    async fn start_once(n: usize, tls: Option<ClientAuth>) -> Result<ZkCluster, ZkError> {
        let dir = tempfile::Builder::new()
            .prefix("fullauto-zk-")
            .tempdir()
            .map_err(|e| ZkError::Server(format!("create temp dir: {e}")))?;
        let mut ports = Vec::new();
        for _ in 0..n {
            ports.push((free_port()?, free_port()?, free_port()?));
        }
        let tls_files = match tls {
            Some(_) => Some(TlsFiles::create(dir.path())?),
            None => None,
        };
        let mut servers = Vec::new();
        for (i, (client_port, _, _)) in ports.iter().enumerate() {
            let id = i + 1;
            let sdir = dir.path().join(format!("zk{id}"));
            let data = sdir.join("data");
            std::fs::create_dir_all(&data)
                .map_err(|e| ZkError::Server(format!("create {}: {e}", data.display())))?;
            let mut cfg = format!(
                "tickTime={tick}\n\
                 initLimit=50\n\
                 syncLimit=15\n\
                 dataDir={data}\n\
                 clientPort={client_port}\n\
                 clientPortAddress=127.0.0.1\n\
                 minSessionTimeout={min}\n\
                 maxSessionTimeout=120000\n\
                 admin.enableServer=false\n\
                 4lw.commands.whitelist=srvr,ruok,mntr,cons,stat\n\
                 forceSync=no\n",
                tick = TICK.as_millis(),
                data = data.display(),
                min = 2 * TICK.as_millis(),
            );
            let secure_port = match (tls, &tls_files) {
                (Some(auth), Some(files)) => {
                    let port = free_port()?;
                    cfg.push_str(&format!(
                        "secureClientPort={port}\n\
                         secureClientPortAddress=127.0.0.1\n\
                         serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory\n\
                         ssl.keyStore.location={keystore}\n\
                         ssl.keyStore.type=PEM\n\
                         ssl.trustStore.location={ca}\n\
                         ssl.trustStore.type=PEM\n\
                         ssl.clientAuth={auth}\n",
                        keystore = files.server_keystore.display(),
                        ca = files.ca.display(),
                        auth = match auth {
                            ClientAuth::Need => "need",
                            ClientAuth::Want => "want",
                        },
                    ));
                    Some(port)
                }
                _ => None,
            };
            if n > 1 {
                std::fs::write(data.join("myid"), format!("{id}\n"))
                    .map_err(|e| ZkError::Server(format!("write myid: {e}")))?;
                for (j, (_, quorum, election)) in ports.iter().enumerate() {
                    cfg.push_str(&format!("server.{}=127.0.0.1:{quorum}:{election}\n", j + 1));
                }
            }
            std::fs::write(sdir.join("zoo.cfg"), cfg)
                .map_err(|e| ZkError::Server(format!("write zoo.cfg: {e}")))?;
            servers.push(ZkServer {
                id,
                dir: sdir,
                client_port: *client_port,
                secure_port,
                child: None,
            });
        }
        let mut cluster = ZkCluster {
            servers,
            tls: tls_files,
            _dir: dir,
        };
        for s in &mut cluster.servers {
            s.spawn()?;
        }
        for s in &mut cluster.servers {
            s.wait_serving(START_TIMEOUT).await?;
        }
        Ok(cluster)
    }

    /// Plain-text client addresses of all servers.
    pub fn hosts(&self) -> Vec<String> {
        self.servers.iter().map(ZkServer::address).collect()
    }

    /// TLS client addresses of all servers (empty without TLS).
    pub fn secure_hosts(&self) -> Vec<String> {
        self.servers
            .iter()
            .filter_map(ZkServer::secure_address)
            .collect()
    }

    /// The certificates of a cluster started with TLS.
    pub fn tls_files(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// A backend config listing every server: for a TLS cluster, its TLS ports with
    /// `use_ssl`, `cacert` and the client certificate.
    pub fn config(&self) -> ZooKeeperConfig {
        match &self.tls {
            None => ZooKeeperConfig::with_hosts(self.hosts()),
            Some(files) => ZooKeeperConfig {
                use_ssl: true,
                cacert: Some(files.ca.clone()),
                cert: Some(files.client_cert.clone()),
                key: Some(files.client_key.clone()),
                ..ZooKeeperConfig::with_hosts(self.secure_hosts())
            },
        }
    }

    /// Server `i` (0-based).
    pub fn server(&mut self, i: usize) -> &mut ZkServer {
        &mut self.servers[i]
    }

    /// All servers.
    pub fn servers(&self) -> &[ZkServer] {
        &self.servers
    }
}

impl Drop for ZkCluster {
    fn drop(&mut self) {
        for s in &mut self.servers {
            s.kill();
        }
    }
}

/// A TCP forwarder to one upstream. `cut()` drops every connection and stops
/// listening, so a client behind it loses its server without closing its session:
/// ZooKeeper then expires the session after its timeout, as for a crashed or
/// partitioned agent. `restore()` listens again on the same port.
pub struct TcpProxy {
    address: SocketAddr,
    upstream: String,
    accept: Mutex<Option<JoinHandle<()>>>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards each connection to `upstream`.
    pub async fn start(upstream: &str) -> Result<TcpProxy, ZkError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ZkError::Server(format!("proxy bind: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ZkError::Server(format!("proxy address: {e}")))?;
        let proxy = TcpProxy {
            address,
            upstream: upstream.to_string(),
            accept: Mutex::new(None),
            connections: Arc::default(),
        };
        proxy.serve(listener);
        Ok(proxy)
    }

    fn serve(&self, listener: TcpListener) {
        let conns = self.connections.clone();
        let upstream = self.upstream.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let upstream = upstream.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                if let Ok(mut list) = conns.lock() {
                    list.retain(|t| !t.is_finished());
                    list.push(task);
                }
            }
        });
        if let Ok(mut slot) = self.accept.lock() {
            if let Some(old) = slot.replace(task) {
                old.abort();
            }
        }
    }

    /// `127.0.0.1:<port>` to give to the client.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    /// Drops every forwarded connection and stops accepting new ones; returns once
    /// the forwarding tasks are gone (nothing in flight gets through afterwards).
    pub async fn cut(&self) {
        let mut tasks = self.abort_all();
        for t in tasks.drain(..) {
            let _ = t.await;
        }
    }

    fn abort_all(&self) -> Vec<JoinHandle<()>> {
        let mut tasks = Vec::new();
        if let Ok(mut slot) = self.accept.lock() {
            tasks.extend(slot.take());
        }
        if let Ok(mut list) = self.connections.lock() {
            tasks.append(&mut list);
        }
        for t in &tasks {
            t.abort();
        }
        tasks
    }

    /// Listens again on the same port after `cut()`.
    pub async fn restore(&self) -> Result<(), ZkError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match TcpListener::bind(self.address).await {
                Ok(listener) => {
                    self.serve(listener);
                    return Ok(());
                }
                // The aborted accept task may not have released the port yet.
                Err(e) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(error = %e, "proxy port still busy");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(ZkError::Server(format!("proxy re-bind: {e}"))),
            }
        }
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.abort_all();
    }
}

/// A port that accepts TCP connections and never answers: a hung server.
pub struct Blackhole {
    address: SocketAddr,
    task: JoinHandle<()>,
}

impl Blackhole {
    /// Listens on a free loopback port.
    pub async fn start() -> Result<Blackhole, ZkError> {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| ZkError::Server(format!("blackhole bind: {e}")))?;
        let address = listener
            .local_addr()
            .map_err(|e| ZkError::Server(format!("blackhole address: {e}")))?;
        let task = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                held.push(s);
            }
        });
        Ok(Blackhole { address, task })
    }

    /// `127.0.0.1:<port>`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }
}

impl Drop for Blackhole {
    fn drop(&mut self) {
        self.task.abort();
    }
}
