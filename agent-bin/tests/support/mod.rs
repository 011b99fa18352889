//! End-to-end harness: a real etcd (or ZooKeeper) and N real `fullauto` agents, each
//! managing a real PostgreSQL 15, on loopback ports, in a temp dir. Everything started here is stopped
//! by PID when the harness is dropped, also when a test fails.

#![allow(dead_code)]

mod dcs;
pub mod patroni;
pub mod proxy;
pub mod tls;

pub use dcs::{DcsKind, TestDcs};
use serde_json::Value;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Timing used by the end-to-end tests: small so scenarios take seconds.
#[derive(Clone, Copy)]
pub struct Timing {
    pub ttl: u64,
    pub loop_wait: f64,
    pub retry_timeout: f64,
}

pub const FAST: Timing = Timing {
    ttl: 6,
    loop_wait: 1.0,
    retry_timeout: 2.0,
};

pub struct Node {
    pub name: String,
    pub api_port: u16,
    pub pg_port: u16,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    pub child: Option<Child>,
    pub tags: String,
    pub timing: Timing,
    pub extra_dcs: String,
    pub extra: Extra,
}

/// Extra YAML lines of one node's config file, each already indented for its section
/// (two spaces for a key of `bootstrap:` or `postgresql:`).
#[derive(Default, Clone)]
pub struct Extra {
    /// Lines appended to the `bootstrap:` section.
    pub bootstrap: String,
    /// Lines appended to the `postgresql:` section.
    pub postgresql: String,
    /// Lines appended to `bootstrap.dcs.postgresql` (e.g. cluster-wide `parameters:`).
    pub dcs_postgresql: String,
    /// Lines appended to the `restapi:` section (e.g. `certfile:`).
    pub restapi: String,
    /// Top-level lines (e.g. a `ctl:` section).
    pub top: String,
    /// Replaces the `postgresql.authentication` section's lines (four spaces for a
    /// user) when not empty.
    pub authentication: String,
    /// Lines appended to `postgresql.callbacks` (four spaces, e.g. `on_reload:`).
    pub callbacks: String,
    /// Replaces the DCS section (top level, e.g. from [`TestDcs::config_section_for`])
    /// when not empty.
    pub dcs: String,
    /// `host:port` the node publishes for its Postgres (`postgresql.connect_address`)
    /// when not empty, e.g. a relay in front of it.
    pub pg_connect_address: String,
    /// `host:port` the node publishes for its REST API (`restapi.connect_address`) when
    /// not empty.
    pub api_connect_address: String,
    /// The node's data directory instead of `data-<name>` in the cluster's directory.
    pub data_dir: Option<PathBuf>,
}

pub struct Cluster {
    pub dcs: TestDcs,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Node>,
    pub scope: String,
    /// Set when the nodes serve HTTPS: the harness's API calls use this client.
    pub https: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// Whether a failing test prints every node's whole log (a long run keeps them
    /// elsewhere instead).
    pub print_logs_on_failure: bool,
}

/// A port nothing listens on, picked below the kernel's ephemeral range (32768 and
/// up by default): a port bound and released there can be taken as the source port of
/// an outgoing connection before the server binds it (seen in CI: Postgres "Address
/// already in use", and the node never started).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    // Each test process starts elsewhere in the span, then walks it.
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        std::process::id().wrapping_mul(7919) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    for _ in 0..SPAN {
        let port = (LOW + NEXT.fetch_add(1, Ordering::SeqCst) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port in {LOW}..{}", LOW + SPAN);
}

/// Gives `path` to the postgres OS user.
pub fn chown_postgres(path: &Path) {
    let (uid, gid) = postgres_ids();
    std::os::unix::fs::chown(path, Some(uid), Some(gid)).expect("chown");
}

pub fn postgres_ids() -> (u32, u32) {
    let out = Command::new("id")
        .args(["-u", "postgres"])
        .output()
        .expect("id -u postgres");
    let uid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres uid (apt-get install postgresql-15)");
    let out = Command::new("id")
        .args(["-g", "postgres"])
        .output()
        .expect("id -g postgres");
    let gid = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("postgres gid");
    (uid, gid)
}

impl Cluster {
    /// Starts etcd and writes configs for `n` nodes; `tags(i)` gives YAML tag lines.
    pub fn new(
        n: usize,
        timing: &Timing,
        extra_dcs: &str,
        tags: impl Fn(usize) -> String,
    ) -> Cluster {
        Cluster::on(DcsKind::Etcd, n, timing, extra_dcs, tags)
    }

    /// Like `new`, on the DCS `kind`.
    pub fn on(
        kind: DcsKind,
        n: usize,
        timing: &Timing,
        extra_dcs: &str,
        tags: impl Fn(usize) -> String,
    ) -> Cluster {
        Cluster::build(kind, n, timing, extra_dcs, tags, |_| Extra::default())
    }

    /// Like `new`, with `extra(i)` lines added to node `i`'s config.
    pub fn new_with(
        n: usize,
        timing: &Timing,
        extra_dcs: &str,
        tags: impl Fn(usize) -> String,
        extra: impl Fn(usize) -> Extra,
    ) -> Cluster {
        Cluster::build(DcsKind::Etcd, n, timing, extra_dcs, tags, extra)
    }

    fn build(
        kind: DcsKind,
        n: usize,
        timing: &Timing,
        extra_dcs: &str,
        tags: impl Fn(usize) -> String,
        extra: impl Fn(usize) -> Extra,
    ) -> Cluster {
        Cluster::with_dcs(TestDcs::start(kind), n, timing, extra_dcs, tags, extra)
    }

    /// Like `new_with`, on a DCS the caller started (e.g. an ensemble).
    pub fn with_dcs(
        dcs: TestDcs,
        n: usize,
        timing: &Timing,
        extra_dcs: &str,
        tags: impl Fn(usize) -> String,
        extra: impl Fn(usize) -> Extra,
    ) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("fullauto-e2e-")
            .tempdir()
            .expect("tempdir");
        let (uid, gid) = postgres_ids();
        std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        let scope = format!("e2e{}", std::process::id());
        let mut c = Cluster {
            dcs,
            dir,
            nodes: Vec::new(),
            scope,
            https: None,
            print_logs_on_failure: true,
        };
        for i in 0..n {
            let node = c.write_node(i, timing, extra_dcs, &tags(i), &extra(i));
            c.nodes.push(node);
        }
        c
    }

    fn write_node(&self, i: usize, t: &Timing, extra_dcs: &str, tags: &str, extra: &Extra) -> Node {
        let name = format!("pg{i}");
        let base = self.dir.path();
        let node = Node {
            api_port: free_port(),
            pg_port: free_port(),
            config: base.join(format!("{name}.yml")),
            data_dir: extra
                .data_dir
                .clone()
                .unwrap_or_else(|| base.join(format!("data-{name}"))),
            log: base.join(format!("pg{i}.log")),
            child: None,
            tags: tags.to_string(),
            timing: Timing { ..*t },
            extra_dcs: extra_dcs.to_string(),
            extra: extra.clone(),
            name,
        };
        self.write_config(&node);
        node
    }

    /// Replaces the extra lines of node `i`'s config file (same name and ports).
    pub fn rewrite_node(&mut self, i: usize, extra: Extra) {
        self.nodes[i].extra = extra;
        self.write_config(&self.nodes[i]);
    }

    fn write_config(&self, n: &Node) {
        let (t, extra) = (&n.timing, &n.extra);
        let (api_port, pg_port) = (n.api_port, n.pg_port);
        let base = self.dir.path();
        let run_dir = base.join("run");
        let _ = std::fs::create_dir_all(&run_dir);
        let (uid, gid) = postgres_ids();
        let _ = std::os::unix::fs::chown(&run_dir, Some(uid), Some(gid));
        let lines = [
            format!("scope: {}", self.scope),
            format!("name: {}", n.name),
            "restapi:".into(),
            format!("  listen: 127.0.0.1:{api_port}"),
            if extra.api_connect_address.is_empty() {
                format!("  connect_address: 127.0.0.1:{api_port}")
            } else {
                format!("  connect_address: {}", extra.api_connect_address)
            },
            extra.restapi.trim_end().to_string(),
            if extra.dcs.is_empty() {
                self.dcs.config_section()
            } else {
                extra.dcs.trim_end().to_string()
            },
            "bootstrap:".into(),
            "  dcs:".into(),
            format!("    ttl: {}", t.ttl),
            format!("    loop_wait: {}", t.loop_wait),
            format!("    retry_timeout: {}", t.retry_timeout),
            "    primary_start_timeout: 30".into(),
            n.extra_dcs.trim_end().to_string(),
            "    postgresql:".into(),
            "      use_pg_rewind: true".into(),
            extra.dcs_postgresql.trim_end().to_string(),
            "  initdb:".into(),
            "  - encoding: UTF8".into(),
            "  - data-checksums".into(),
            "  pg_hba:".into(),
            "  - local all all trust".into(),
            "  - host all all 127.0.0.1/32 trust".into(),
            "  - host replication all 127.0.0.1/32 trust".into(),
            extra.bootstrap.trim_end().to_string(),
            "postgresql:".into(),
            format!("  listen: 127.0.0.1:{pg_port}"),
            if extra.pg_connect_address.is_empty() {
                format!("  connect_address: 127.0.0.1:{pg_port}")
            } else {
                format!("  connect_address: {}", extra.pg_connect_address)
            },
            format!("  data_dir: {}", n.data_dir.display()),
            "  pg_ctl_timeout: 30".into(),
            "  parameters:".into(),
            format!("    unix_socket_directories: {}", run_dir.display()),
            "    wal_keep_size: 64MB".into(),
            "    fsync: 'off'".into(),
            "  callbacks:".into(),
            format!("    on_start: {}", self.callback_script().display()),
            format!("    on_role_change: {}", self.callback_script().display()),
            extra.callbacks.trim_end().to_string(),
            "  authentication:".into(),
            if extra.authentication.is_empty() {
                "    superuser: {username: postgres}\n    replication: {username: postgres}".into()
            } else {
                extra.authentication.trim_end().to_string()
            },
            extra.postgresql.trim_end().to_string(),
            "tags:".into(),
            "  noloadbalance: false".into(),
            n.tags.trim_end().to_string(),
            extra.top.trim_end().to_string(),
        ];
        let text: String = lines
            .iter()
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(&n.config, text).expect("write config");
    }

    /// A callback script that appends its arguments (action, role, scope) to
    /// `callbacks.log` in the cluster's directory.
    pub fn callback_script(&self) -> PathBuf {
        let path = self.dir.path().join("callback.sh");
        if !path.exists() {
            let log = self.dir.path().join("callbacks.log");
            std::fs::write(
                &path,
                format!("#!/bin/sh\necho \"$@\" >> {}\n", log.display()),
            )
            .expect("script");
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        path
    }

    /// Lines the callback script recorded so far.
    pub fn callbacks(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.path().join("callbacks.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// Starts the agent of node `i`.
    pub fn start(&mut self, i: usize) {
        self.start_with_env(i, &[]);
    }

    /// Starts the agent of node `i` with extra environment variables (applied after
    /// the harness's `PATRONI_LOG_LEVEL=debug`, so they can replace it).
    pub fn start_with_env(&mut self, i: usize, env: &[(&str, &str)]) {
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("log");
        let err = log.try_clone().expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_fullauto"))
            .arg(&n.config)
            .env("PATRONI_LOG_LEVEL", "debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn fullauto");
        n.child = Some(child);
    }

    pub fn start_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.start(i);
        }
    }

    /// Runs `fullautoctl -c <node 0's config> args…`; exit success and stdout+stderr.
    pub fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_fullautoctl"))
            .arg("-c")
            .arg(&self.nodes[0].config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run fullautoctl");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    /// SIGKILL of the agent of node `i` (not Postgres).
    pub fn kill_agent(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends `sig` to the agent of node `i`.
    pub fn signal_agent(&self, i: usize, sig: i32) {
        if let Some(c) = &self.nodes[i].child {
            // SAFETY: signalling a child process we started.
            unsafe { libc::kill(c.id() as i32, sig) };
        }
    }

    /// Waits for the agent process of node `i` to exit.
    pub fn wait_agent_exit(&mut self, i: usize, within: Duration) -> bool {
        self.nodes[i].child.is_none() || self.agent_exit_status(i, within).is_some()
    }

    /// Waits for the agent process of node `i` to exit on its own; its exit status
    /// (`None`: still running after `within`, or not started).
    pub fn agent_exit_status(
        &mut self,
        i: usize,
        within: Duration,
    ) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + within;
        while Instant::now() < end {
            let c = self.nodes[i].child.as_mut()?;
            if let Some(status) = c.try_wait().ok().flatten() {
                self.nodes[i].child = None;
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        let s = std::fs::read_to_string(self.nodes[i].data_dir.join("postmaster.pid")).ok()?;
        s.lines().next()?.trim().parse().ok()
    }

    /// SIGKILL of node `i`'s postmaster.
    pub fn kill_postmaster(&self, i: usize) {
        if let Some(pid) = self.postmaster_pid(i) {
            // SAFETY: killing the postmaster our agent started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }

    /// GET an API path of node `i`: (status, JSON body).
    pub fn api(&self, i: usize, path: &str) -> Option<(u16, Value)> {
        self.call("GET", i, path, None)
    }

    pub fn api_post(&self, i: usize, path: &str, body: &Value) -> Option<(u16, Value)> {
        self.call("POST", i, path, Some(body))
    }

    pub fn api_patch(&self, i: usize, path: &str, body: &Value) -> Option<(u16, Value)> {
        self.call("PATCH", i, path, Some(body))
    }

    /// An API call over HTTP, or over HTTPS with `self.https` when set.
    fn call(
        &self,
        method: &str,
        i: usize,
        path: &str,
        body: Option<&Value>,
    ) -> Option<(u16, Value)> {
        let port = self.nodes[i].api_port;
        match &self.https {
            Some(tls) => tls::https_call(tls, method, port, path, body).answer,
            None => http(method, port, path, body),
        }
    }

    /// The leader key's value.
    pub fn leader(&mut self) -> Option<String> {
        self.key("leader")
    }

    /// A DCS key's value.
    pub fn key(&mut self, rel: &str) -> Option<String> {
        let key = format!("/service/{}/{}", self.scope, rel);
        self.dcs.get(&key)
    }

    pub fn index_of(&self, name: &str) -> usize {
        self.nodes
            .iter()
            .position(|n| n.name == name)
            .expect("node name")
    }

    /// Waits until `/primary` answers 200 on exactly one node and returns it.
    pub fn wait_primary(&self, within: Duration) -> Option<usize> {
        wait_until(within, || {
            let ok: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| self.api(i, "/primary").is_some_and(|(s, _)| s == 200))
                .collect();
            (ok.len() == 1).then(|| ok[0])
        })
    }

    /// Waits until node `i` runs as a streaming replica.
    pub fn wait_replica(&self, i: usize, within: Duration) -> bool {
        wait_until(within, || {
            self.api(i, "/replica")
                .filter(|(s, _)| *s == 200)
                .and_then(|(_, v)| (v["replication_state"] == "streaming").then_some(()))
        })
        .is_some()
    }

    /// Runs SQL on node `i` through psql; Err carries psql's message.
    pub fn sql(&self, i: usize, q: &str) -> Result<String, String> {
        let out = Command::new("psql")
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.nodes[i].pg_port.to_string(),
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                q,
            ])
            .env("PGCONNECT_TIMEOUT", "2")
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
        }
    }

    pub fn logs(&self) -> String {
        self.nodes
            .iter()
            .map(|n| {
                format!(
                    "----- {} -----\n{}",
                    n.name,
                    std::fs::read_to_string(&n.log).unwrap_or_default()
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes an executable shell script into the cluster's directory (readable and
    /// runnable by the postgres OS user) and returns its path.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    /// Stops node `i` completely: SIGKILL of its agent, then of its postmaster.
    pub fn stop_node(&mut self, i: usize) {
        self.kill_agent(i);
        self.kill_postmaster(i);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() && self.print_logs_on_failure {
            eprintln!("{}", self.logs());
        }
        for i in 0..self.nodes.len() {
            self.kill_agent(i);
        }
        for i in 0..self.nodes.len() {
            if let Some(pid) = self.postmaster_pid(i) {
                // SAFETY: the postmaster our agent started; SIGCONT first in case a test stopped it.
                unsafe {
                    libc::kill(pid, libc::SIGCONT);
                    libc::kill(pid, libc::SIGKILL);
                }
            }
        }
        // Backends exit once their postmaster is gone; give them a moment before the
        // temp dir goes.
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// Polls `f` every 100 ms until it returns Some or `within` passes.
pub fn wait_until<T>(within: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A minimal HTTP/1.0 client (tests must not depend on the code under test's client).
pub fn http(method: &str, port: u16, path: &str, body: Option<&Value>) -> Option<(u16, Value)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(
        &([127, 0, 0, 1], port).into(),
        Duration::from_secs(2),
    )
    .ok()?;
    s.set_read_timeout(Some(Duration::from_secs(60))).ok()?;
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).ok()?;
    let text = String::from_utf8_lossy(&resp);
    let status: u16 = text.split_whitespace().nth(1)?.parse().ok()?;
    let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    let json = serde_json::from_str(payload).unwrap_or_else(|_| Value::String(payload.to_string()));
    Some((status, json))
}

/// A client that keeps inserting into `table` on every node's Postgres and records
/// which inserts were acknowledged, by whom and when.
pub struct Writer {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    handle: Option<std::thread::JoinHandle<Vec<Ack>>>,
}

/// One acknowledged insert.
#[derive(Debug, Clone, Copy)]
pub struct Ack {
    pub node: usize,
    pub id: i64,
    pub at: Instant,
}

/// The first and the last time `node` acknowledged a write, if it ever did.
pub fn ack_span(acks: &[Ack], node: usize) -> Option<(Instant, Instant)> {
    let mine = acks.iter().filter(|a| a.node == node).map(|a| a.at);
    Some((mine.clone().min()?, mine.max()?))
}

impl Writer {
    pub fn start(c: &Cluster, table: &str) -> Writer {
        let ports: Vec<u16> = c.nodes.iter().map(|n| n.pg_port).collect();
        let table = table.to_string();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut acks = Vec::new();
            let mut id = 0i64;
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                for (node, port) in ports.iter().enumerate() {
                    id += 1;
                    let ok = Command::new("psql")
                        .args([
                            "-h",
                            "127.0.0.1",
                            "-p",
                            &port.to_string(),
                            "-U",
                            "postgres",
                            "-XAtq",
                            "-v",
                            "ON_ERROR_STOP=1",
                        ])
                        .args([
                            "-c",
                            &format!(
                                "SET statement_timeout = '2s'; INSERT INTO {table} VALUES ({id})"
                            ),
                        ])
                        .env("PGCONNECT_TIMEOUT", "1")
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .is_ok_and(|s| s.success());
                    if ok {
                        acks.push(Ack {
                            node,
                            id,
                            at: Instant::now(),
                        });
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            acks
        });
        Writer {
            stop,
            handle: Some(handle),
        }
    }

    pub fn finish(mut self) -> Vec<Ack> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Runs a PostgreSQL 15 tool as the postgres OS user; panics with its output on failure.
pub fn pg_tool(tool: &str, args: &[&str]) -> String {
    use std::os::unix::process::CommandExt;
    let (uid, gid) = postgres_ids();
    let out = Command::new(format!("/usr/lib/postgresql/15/bin/{tool}"))
        .args(args)
        .uid(uid)
        .gid(gid)
        .current_dir("/")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .output()
        .expect("run postgres tool");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{tool} {args:?} failed: {text}");
    text
}

/// A throwaway PostgreSQL (not managed by any agent) to take backups from; stopped on
/// drop.
pub struct Standalone {
    pub data_dir: PathBuf,
    pub port: u16,
}

impl Standalone {
    /// initdb + start in `dir`, with `conf` lines appended to postgresql.conf.
    pub fn start(dir: &Path, conf: &str) -> Standalone {
        let data_dir = dir.join("standalone");
        let d = data_dir.to_string_lossy().to_string();
        pg_tool(
            "initdb",
            &["-D", &d, "-U", "postgres", "--auth=trust", "--no-sync"],
        );
        let port = free_port();
        let mut text = std::fs::read_to_string(data_dir.join("postgresql.conf")).expect("conf");
        text.push_str(&format!(
            "\nport = {port}\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = '{}'\nfsync = off\n{conf}\n",
            dir.display()
        ));
        std::fs::write(data_dir.join("postgresql.conf"), text).expect("conf");
        let s = Standalone { data_dir, port };
        let log = dir.join("standalone.log").to_string_lossy().to_string();
        pg_tool("pg_ctl", &["start", "-w", "-D", &d, "-l", &log]);
        s
    }

    /// Runs SQL through psql.
    pub fn sql(&self, q: &str) -> String {
        let port = self.port.to_string();
        pg_tool(
            "psql",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-d",
                "postgres",
                "-XAtq",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                q,
            ],
        )
        .trim()
        .to_string()
    }

    /// A pg_basebackup (WAL included) into `target`.
    pub fn basebackup(&self, target: &Path) {
        let port = self.port.to_string();
        pg_tool(
            "pg_basebackup",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &port,
                "-U",
                "postgres",
                "-D",
                &target.to_string_lossy(),
                "-X",
                "stream",
                "--checkpoint=fast",
                "--no-sync",
            ],
        );
    }

    pub fn stop(&self) {
        let d = self.data_dir.to_string_lossy().to_string();
        let _ = std::process::Command::new("/usr/lib/postgresql/15/bin/pg_ctl")
            .args(["stop", "-m", "fast", "-w", "-D", &d])
            .uid_gid_postgres()
            .output();
    }
}

impl Drop for Standalone {
    fn drop(&mut self) {
        self.stop();
    }
}

trait AsPostgres {
    fn uid_gid_postgres(&mut self) -> &mut Self;
}

impl AsPostgres for Command {
    fn uid_gid_postgres(&mut self) -> &mut Self {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = postgres_ids();
        self.uid(uid).gid(gid).current_dir("/")
    }
}
