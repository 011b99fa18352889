//! `orchestrator`: a control plane that runs a three-node PostgreSQL cluster inside
//! its own process, with no `fullauto` binary: each node is an embedded
//! [`Runner`] driving a real server through pg-driver, all sharing the example's
//! [`FileDcs`] (a directory). It logs in its own format, waits for one primary and
//! two streaming replicas, writes a row, stops the primary's node (a planned
//! failover), checks the row on the new primary, and shuts everything down, also
//! on Ctrl-C. Exit status 0 means every step happened.
//!
//! Needs PostgreSQL 15's server binaries (Debian's `postgresql-15`; scripts/setup).

use anyhow::{bail, Context};
use examples::FileDcs;
use ha_core::decision::{NodeConfig, PeerReply};
use ha_core::runner::{Components, PeerProbe, Runner, RunnerEvent, RunnerHandle, RunnerSettings};
use ha_core::{clock::monotonic_now, DynamicConfig, Member, NoWatchdog, PgProcess, SystemClock};
use pg_driver::testing::{TestEnv, SUPERUSER_PASSWORD};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::task::JoinHandle;

const NODES: [&str; 3] = ["pg1", "pg2", "pg3"];
const SCOPE: &str = "orchestrated";

/// One node the orchestrator runs: the runner's task, its handle and its port.
struct Node {
    handle: RunnerHandle,
    task: JoinHandle<Result<(), ha_core::runner::Fatal>>,
    port: u16,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // Our own logging: the engine logs through `tracing`, so the embedding program
    // decides format and verbosity (RUST_LOG overrides this default).
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "orchestrator=info,ha_core=info,pg_driver=warn".into());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .compact()
        .init();

    // Data directories, free ports and cleanup (every server it started is stopped
    // when `env` is dropped, even on an error); the DCS is a directory next to them.
    let env = TestEnv::new();
    let dcs_dir = env.dir("dcs");
    let peers = Arc::new(LocalPeers::default());
    let (events_tx, mut events_rx) = tokio::sync::mpsc::unbounded_channel();

    let mut nodes = BTreeMap::new();
    for name in NODES {
        let pg_cfg = env.config(name); // password auth on 127.0.0.1, a free port
        let port = pg_cfg.listen_address()?.port;
        let driver = env.driver(pg_cfg);
        let timing = bootstrap_config().timing();
        let dcs = Arc::new(FileDcs::connect(&dcs_dir, SCOPE, name, timing));
        let parts = Components {
            dcs,
            pg: driver,
            fence: Arc::new(NoWatchdog),
            clock: Arc::new(SystemClock),
            peers: peers.clone(),
        };
        let cfg = NodeConfig {
            // Replicas clone from and stream from the address the leader publishes.
            conn_url: Some(format!("postgres://127.0.0.1:{port}/postgres")),
            bootstrap_config: bootstrap_config(),
            ..NodeConfig::named(name)
        };
        let (runner, handle) = Runner::new(cfg, parts, RunnerSettings::default());
        // Every event goes to our channel, tagged with the node's name.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let tagged = events_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                let _ = tagged.send((name, event));
            }
        });
        let task = tokio::spawn(runner.with_events(tx).run());
        peers.add(name, handle.clone());
        nodes.insert(name, Node { handle, task, port });
    }
    drop(events_tx);
    tokio::spawn(async move {
        while let Some((name, event)) = events_rx.recv().await {
            tracing::info!(target: "orchestrator", "{name}: {}", describe(&event));
        }
    });

    // The scenario, interrupted by Ctrl-C; the nodes are shut down either way.
    let outcome = tokio::select! {
        out = scenario(&nodes, &peers) => out,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    tracing::info!(target: "orchestrator", "shutting down every node");
    for node in nodes.values() {
        node.handle.shutdown(); // stops Postgres and releases the lease
    }
    for (name, node) in nodes {
        match node.task.await {
            Ok(Ok(())) => {}
            Ok(Err(fatal)) => tracing::error!(target: "orchestrator", "{name} stopped: {fatal}"),
            Err(e) => tracing::error!(target: "orchestrator", "{name}'s task failed: {e}"),
        }
    }
    match &outcome {
        Ok(()) => println!("orchestrator: failover done, every node stopped"),
        Err(e) => eprintln!("orchestrator: {e:#}"),
    }
    outcome
}

/// The cluster-wide settings the first node writes to the DCS: short timings so
/// the example moves quickly (loop_wait + 2 × retry_timeout ≤ ttl).
fn bootstrap_config() -> DynamicConfig {
    DynamicConfig {
        ttl: 10.0,
        loop_wait: 1.0,
        retry_timeout: 3.0,
        ..DynamicConfig::default()
    }
}

async fn scenario(nodes: &BTreeMap<&str, Node>, peers: &LocalPeers) -> anyhow::Result<()> {
    let first = wait_for_cluster(nodes, None, Duration::from_secs(300)).await?;
    tracing::info!(target: "orchestrator", "{first} is the primary, the others stream from it");
    let port = nodes[first.as_str()].port;
    sql(
        port,
        "CREATE TABLE orders (id int); INSERT INTO orders VALUES (42)",
    )
    .await?;

    // A planned failover: take the primary's node out (its runner stops Postgres
    // cleanly and releases the leader key); the replicas elect a new primary.
    tracing::info!(target: "orchestrator", "stopping {first}'s node");
    peers.remove(&first);
    nodes[first.as_str()].handle.shutdown();
    let second = wait_for_cluster(nodes, Some(&first), Duration::from_secs(120)).await?;
    tracing::info!(target: "orchestrator", "{second} took over from {first}");
    let rows = sql(nodes[second.as_str()].port, "SELECT id FROM orders").await?;
    if rows != ["42"] {
        bail!("the new primary {second} has rows {rows:?}, expected [42]");
    }
    Ok(())
}

/// Waits until one node (not `gone`) holds the lease with a writable Postgres and
/// every other running node streams from it; returns the primary's name.
async fn wait_for_cluster(
    nodes: &BTreeMap<&str, Node>,
    gone: Option<&str>,
    bound: Duration,
) -> anyhow::Result<String> {
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        let now = monotonic_now();
        let live: Vec<_> = nodes
            .iter()
            .filter(|(name, _)| Some(**name) != gone)
            .map(|(name, node)| (*name, node.handle.snapshot()))
            .collect();
        let primary = live.iter().find(|(_, s)| {
            s.holds_lease(now)
                && s.pg.as_ref().is_some_and(|pg| {
                    pg.process == PgProcess::Running && pg.in_recovery == Some(false)
                })
        });
        if let Some((leader, _)) = primary {
            let streaming = live
                .iter()
                .filter(|(name, _)| name != leader)
                .all(|(_, s)| {
                    s.pg.as_ref().is_some_and(|pg| {
                        pg.in_recovery == Some(true) && pg.following.as_deref() == Some(*leader)
                    })
                });
            if streaming {
                return Ok(leader.to_string());
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no primary with streaming replicas within {bound:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Runs `query` as the superuser on the node listening on `port`; returns the first
/// column of every row.
async fn sql(port: u16, query: &str) -> anyhow::Result<Vec<String>> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user=postgres password={SUPERUSER_PASSWORD} dbname=postgres"
    );
    let (client, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    tokio::spawn(conn);
    let mut out = Vec::new();
    for message in client.simple_query(query).await? {
        if let tokio_postgres::SimpleQueryMessage::Row(row) = message {
            out.push(row.get(0).unwrap_or_default().to_string());
        }
    }
    Ok(out)
}

fn describe(event: &RunnerEvent) -> String {
    match event {
        RunnerEvent::Started(role) => format!("Postgres started as {role}"),
        RunnerEvent::Stopped => "Postgres stopped".into(),
        RunnerEvent::RoleChanged(role) => format!("now {role}"),
        RunnerEvent::Restarted(role) => format!("Postgres restarted as {role}"),
        RunnerEvent::Reloaded => "Postgres reloaded its configuration".into(),
    }
}

/// Peer probes without HTTP: the orchestrator knows every node, so a leader race
/// asks the other runners' snapshots directly (the agent binary asks their REST
/// APIs). A node taken out answers nothing, like a dead agent.
#[derive(Default)]
struct LocalPeers {
    handles: Mutex<BTreeMap<String, RunnerHandle>>,
}

impl LocalPeers {
    fn add(&self, name: &str, handle: RunnerHandle) {
        self.lock().insert(name.to_string(), handle);
    }

    fn remove(&self, name: &str) {
        self.lock().remove(name);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, RunnerHandle>> {
        self.handles.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait::async_trait]
impl PeerProbe for LocalPeers {
    async fn probe(&self, member: &Member) -> Option<PeerReply> {
        let snapshot = self.lock().get(&member.name)?.snapshot();
        let pg = snapshot.pg?;
        Some(PeerReply {
            is_primary: pg.process == PgProcess::Running && pg.in_recovery == Some(false),
            wal_position: pg.wal_position(),
            timeline: pg.timeline,
            tags: member.data.tags.clone(),
            watchdog_failed: snapshot.watchdog_failed,
        })
    }
}
