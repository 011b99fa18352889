//! Test harness: real etcd members (Debian's `/usr/bin/etcd`) on free loopback ports
//! with data in a temp dir, for this crate's tests and the end-to-end tests.
//!
//! Processes are started, stopped and killed by PID only; dropping the
//! [`EtcdCluster`] kills every member it still runs and removes the data.

use crate::EtcdConfig;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why the harness could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    /// A process could not be run.
    #[error("cannot run `{what}`: {source}")]
    Spawn {
        /// The command.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command ran but failed.
    #[error("`{what}` failed: {output}")]
    Command {
        /// The command.
        what: String,
        /// Its stderr/stdout.
        output: String,
    },
    /// A member did not become healthy in time.
    #[error("etcd member {member} not healthy within {waited:?}; log tail:\n{log}")]
    NotHealthy {
        /// Member index.
        member: usize,
        /// How long we waited.
        waited: Duration,
        /// The end of its log.
        log: String,
    },
    /// Temp dir or file trouble.
    #[error("harness io: {0}")]
    Io(#[from] std::io::Error),
}

/// Path of the etcd server binary (Debian package `etcd-server`).
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// Path of etcdctl (Debian package `etcd-client`).
pub const ETCDCTL_BIN: &str = "/usr/bin/etcdctl";

static CLUSTER_SEQ: AtomicU64 = AtomicU64::new(0);

/// Certificates for a TLS test set-up, made with the `openssl` command.
#[derive(Debug, Clone)]
pub struct TestCerts {
    /// CA certificate (PEM) that signed the server and client certificates.
    pub ca: PathBuf,
    /// Server certificate for 127.0.0.1 / localhost.
    pub server_cert: PathBuf,
    /// Server key.
    pub server_key: PathBuf,
    /// Client certificate (signed by `ca`).
    pub client_cert: PathBuf,
    /// Client key.
    pub client_key: PathBuf,
    /// A CA that signed nothing here: trusting only it must fail the handshake.
    pub other_ca: PathBuf,
}

impl TestCerts {
    /// Generates a CA, a server and a client certificate in `dir`.
    pub fn generate(dir: &Path) -> Result<TestCerts, HarnessError> {
        std::fs::create_dir_all(dir)?;
        let p = |n: &str| dir.join(n);
        let ext = p("ext.cnf");
        std::fs::write(
            &ext,
            "subjectAltName=IP:127.0.0.1,DNS:localhost\n\
             extendedKeyUsage=serverAuth,clientAuth\n\
             keyUsage=digitalSignature,keyEncipherment\n",
        )?;
        for ca in ["ca", "other-ca"] {
            openssl(&[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-subj",
                &format!("/CN=fullauto-test-{ca}"),
                "-keyout",
                &p(&format!("{ca}.key")).to_string_lossy(),
                "-out",
                &p(&format!("{ca}.pem")).to_string_lossy(),
            ])?;
        }
        for leaf in ["server", "client"] {
            let s = |suffix: &str| {
                p(&format!("{leaf}.{suffix}"))
                    .to_string_lossy()
                    .into_owned()
            };
            openssl(&[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-subj",
                &format!("/CN={leaf}"),
                "-keyout",
                &s("key"),
                "-out",
                &s("csr"),
            ])?;
            openssl(&[
                "x509",
                "-req",
                "-in",
                &s("csr"),
                "-CA",
                &p("ca.pem").to_string_lossy(),
                "-CAkey",
                &p("ca.key").to_string_lossy(),
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext.to_string_lossy(),
                "-out",
                &s("pem"),
            ])?;
        }
        Ok(TestCerts {
            ca: p("ca.pem"),
            server_cert: p("server.pem"),
            server_key: p("server.key"),
            client_cert: p("client.pem"),
            client_key: p("client.key"),
            other_ca: p("other-ca.pem"),
        })
    }
}

fn openssl(args: &[&str]) -> Result<(), HarnessError> {
    let out = Command::new("openssl")
        .args(args)
        .output()
        .map_err(|source| HarnessError::Spawn {
            what: "openssl".into(),
            source,
        })?;
    if !out.status.success() {
        return Err(HarnessError::Command {
            what: format!("openssl {}", args.join(" ")),
            output: String::from_utf8_lossy(&out.stderr).into_owned(),
        });
    }
    Ok(())
}

/// One etcd member the harness manages.
#[derive(Debug)]
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// A running etcd cluster of one or more members on loopback.
#[derive(Debug)]
pub struct EtcdCluster {
    members: Vec<Member>,
    initial_cluster: String,
    token: String,
    tls: Option<TestCerts>,
    /// Root credentials once `enable_auth` ran (etcdctl needs them from then on).
    auth: Option<String>,
    // Declared last: removed after the members are killed in `drop`.
    dir: tempfile::TempDir,
}

/// Ports that were free a moment ago (held together so they are distinct).
fn free_ports(n: usize) -> Result<Vec<u16>, HarnessError> {
    let listeners = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(listeners
        .iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect::<Result<Vec<_>, _>>()?)
}

impl EtcdCluster {
    /// Starts a single-member cluster and waits until it serves requests.
    pub fn start_single() -> Result<EtcdCluster, HarnessError> {
        Self::start(1)
    }

    /// Starts an `n`-member cluster and waits until every member is healthy.
    pub fn start(n: usize) -> Result<EtcdCluster, HarnessError> {
        Self::start_inner(n, None)
    }

    /// Starts an `n`-member cluster that serves clients over TLS with `certs`
    /// (server certificate for 127.0.0.1, client certificates verified against `ca`).
    pub fn start_tls(n: usize, certs: TestCerts) -> Result<EtcdCluster, HarnessError> {
        Self::start_inner(n, Some(certs))
    }

    fn start_inner(n: usize, tls: Option<TestCerts>) -> Result<EtcdCluster, HarnessError> {
        let dir = tempfile::Builder::new()
            .prefix("fullauto-etcd-")
            .tempdir()?;
        let ports = free_ports(2 * n)?;
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("etcd{i}"),
                client_port: ports[2 * i],
                peer_port: ports[2 * i + 1],
                data_dir: dir.path().join(format!("etcd{i}.data")),
                log: dir.path().join(format!("etcd{i}.log")),
                child: None,
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!(
            "fullauto-{}-{}",
            std::process::id(),
            CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let mut cluster = EtcdCluster {
            members,
            initial_cluster,
            token,
            tls,
            auth: None,
            dir,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        for i in 0..n {
            cluster.wait_healthy(i, Duration::from_secs(30))?;
        }
        Ok(cluster)
    }

    fn scheme(&self) -> &'static str {
        if self.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), HarnessError> {
        let scheme = self.scheme();
        let tls = self.tls.clone();
        let m = &mut self.members[i];
        let client_url = format!("{scheme}://127.0.0.1:{}", m.client_port);
        let peer_url = format!("http://127.0.0.1:{}", m.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log)?;
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(&m.data_dir)
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(&self.initial_cluster)
            .arg("--initial-cluster-token")
            .arg(&self.token)
            .arg("--initial-cluster-state")
            .arg("new")
            .arg("--heartbeat-interval")
            .arg("100")
            .arg("--election-timeout")
            .arg("1000")
            .arg("--logger")
            .arg("zap")
            .arg("--log-level")
            .arg("warn");
        if let Some(t) = &tls {
            cmd.arg("--cert-file")
                .arg(&t.server_cert)
                .arg("--key-file")
                .arg(&t.server_key)
                .arg("--trusted-ca-file")
                .arg(&t.ca)
                .arg("--client-cert-auth");
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().map_err(|source| HarnessError::Spawn {
            what: ETCD_BIN.into(),
            source,
        })?;
        m.child = Some(child);
        Ok(())
    }

    /// Number of members (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether the cluster has no members (never true for a started cluster).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.scheme(),
            self.members[i].client_port
        )
    }

    /// The client URLs of all members.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// `host:port` of every member, as Patroni's `etcd3.hosts` spells them.
    pub fn hosts(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.client_port))
            .collect()
    }

    /// An `etcd3` config pointing at every member (with the client certificate when
    /// the cluster uses TLS).
    pub fn config(&self) -> EtcdConfig {
        let mut c = EtcdConfig::with_hosts(&self.endpoints());
        if let Some(t) = &self.tls {
            c.cacert = Some(t.ca.clone());
            c.cert = Some(t.client_cert.clone());
            c.key = Some(t.client_key.clone());
        }
        c
    }

    /// The temp dir holding data and logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// PID of member `i`, when it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// Whether member `i` runs.
    pub fn is_running(&mut self, i: usize) -> bool {
        match self.members[i].child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Stops member `i` with SIGTERM (SIGKILL after 10 s) and reaps it.
    pub fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            // Safety: plain FFI call with a PID this harness spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                match child.try_wait() {
                    Ok(Some(_)) => return,
                    Ok(None) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    _ => break,
                }
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes member `i` with SIGSTOP: its sockets stay open but it answers nothing,
    /// like a partitioned or hung server. Returns once every thread of it is stopped:
    /// `kill` returns before a thread running on another CPU has stopped, and such a
    /// thread may still answer a request sent right after it.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, libc::SIGSTOP);
        let Some(pid) = self.members[i].child.as_ref().map(|c| c.id()) else {
            return;
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Thaws a member frozen by [`EtcdCluster::pause`].
    pub fn resume(&mut self, i: usize) {
        self.signal(i, libc::SIGCONT);
    }

    fn signal(&mut self, i: usize, signal: libc::c_int) {
        if let Some(child) = self.members[i].child.as_ref() {
            // Safety: plain FFI call with a PID this harness spawned and has not reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, signal);
            }
        }
    }

    /// Kills member `i` with SIGKILL (a crash) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts a stopped member again on the same ports and data without waiting for it
    /// (it may have no quorum to become healthy with yet); no-op while it runs.
    pub fn spawn_member(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.is_running(i) {
            return Ok(());
        }
        self.members[i].child = None;
        self.spawn(i)
    }

    /// Starts a stopped member again on the same ports and data, and waits until it
    /// is healthy.
    pub fn restart(&mut self, i: usize) -> Result<(), HarnessError> {
        if self.members[i].child.is_none() {
            self.spawn(i)?;
        }
        self.wait_healthy(i, Duration::from_secs(30))
    }

    /// Waits until member `i` answers `etcdctl endpoint health`.
    pub fn wait_healthy(&mut self, i: usize, timeout: Duration) -> Result<(), HarnessError> {
        let start = Instant::now();
        let endpoint = self.endpoint(i);
        loop {
            if !self.is_running(i) {
                break;
            }
            let ok = self
                .etcdctl_at(&endpoint, &["endpoint", "health", "--command-timeout=1s"])
                .is_ok();
            if ok {
                return Ok(());
            }
            if start.elapsed() > timeout {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let log = std::fs::read_to_string(&self.members[i].log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(20)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        Err(HarnessError::NotHealthy {
            member: i,
            waited: start.elapsed(),
            log: tail,
        })
    }

    /// Runs etcdctl (API v3) against the running members; returns stdout.
    pub fn etcdctl(&mut self, args: &[&str]) -> Result<String, HarnessError> {
        let running: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.is_running(i))
            .collect();
        let endpoints = running
            .iter()
            .map(|&i| self.endpoint(i))
            .collect::<Vec<_>>()
            .join(",");
        self.etcdctl_at(&endpoints, args)
    }

    fn etcdctl_at(&self, endpoints: &str, args: &[&str]) -> Result<String, HarnessError> {
        let mut cmd = Command::new(ETCDCTL_BIN);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .arg("--dial-timeout=2s");
        if let Some(password) = &self.auth {
            cmd.arg(format!("--user=root:{password}"));
        }
        if let Some(t) = &self.tls {
            cmd.arg(format!("--cacert={}", t.ca.display()))
                .arg(format!("--cert={}", t.client_cert.display()))
                .arg(format!("--key={}", t.client_key.display()));
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| HarnessError::Spawn {
                what: ETCDCTL_BIN.into(),
                source,
            })?;
        if !out.status.success() {
            return Err(HarnessError::Command {
                what: format!("etcdctl {}", args.join(" ")),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stderr),
                    String::from_utf8_lossy(&out.stdout)
                ),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Revokes lease `id` (as if it had expired): its keys are deleted.
    pub fn revoke_lease(&mut self, id: i64) -> Result<(), HarnessError> {
        self.etcdctl(&["lease", "revoke", &format!("{id:x}")])?;
        Ok(())
    }

    /// The value of `key` as etcdctl prints it, `None` when absent.
    pub fn get(&mut self, key: &str) -> Result<Option<String>, HarnessError> {
        let out = self.etcdctl(&["get", "--print-value-only", key])?;
        Ok((!out.is_empty()).then(|| out.trim_end_matches('\n').to_string()))
    }

    /// Creates user `root` with `password` and turns authentication on.
    pub fn enable_auth(&mut self, password: &str) -> Result<(), HarnessError> {
        self.etcdctl(&[
            "user",
            "add",
            "root",
            &format!("--new-user-password={password}"),
        ])?;
        self.etcdctl(&["auth", "enable"])?;
        self.auth = Some(password.to_string());
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            if let Some(mut child) = m.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Whether every thread of process `pid` is in the stopped state (`T` in
/// `/proc/PID/task/*/stat`); false when that cannot be read.
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    let mut seen = false;
    for task in tasks.flatten() {
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // The state follows the parenthesized command name.
        let state = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().next());
        if state != Some("T") {
            return false;
        }
        seen = true;
    }
    seen
}
