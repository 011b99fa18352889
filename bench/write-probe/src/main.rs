//! `write-probe --ports 5441,5442,5443 --seconds 8`: keeps one connection per node and
//! commits one row at a time, trying the node that acknowledged last first, so the
//! measured pause is the cluster's own write gap and not a client's connection set-up.
//! Prints each acknowledged commit's time offset on stderr (with `--trace`) and the
//! longest gap between consecutive acknowledgements on stdout, with the number of
//! failed attempts (errors the client saw) by message.
//!
//! With `--api 8041,8042,8043` (REST ports, same order as `--ports`) it is instead a
//! client that finds the primary through `GET /primary`, as a load balancer would: it
//! writes only to a node whose `/primary` answered 200 within the last 100 ms, keeps
//! writing there while commits succeed, and looks for a fresh 200 again after a failed
//! commit. Each `/primary` is polled every `--poll-ms` by its own task, so a node
//! whose agent is frozen (no answer) does not hold the others up. Every change of the
//! acknowledging node prints `first_ack EPOCH_SECONDS PORT` on stdout at once.

use anyhow::Context;
use clap::Parser;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::{Client, NoTls};

#[derive(Parser)]
struct Args {
    /// Ports of the nodes on 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
    /// REST API ports of the same nodes: write only where `/primary` answers 200.
    #[arg(long, value_delimiter = ',')]
    api: Vec<u16>,
    /// How long to write.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Pause between two commits (0: as fast as the server acknowledges).
    #[arg(long, default_value_t = 0)]
    interval_ms: u64,
    /// How often each `/primary` is asked (with `--api`).
    #[arg(long, default_value_t = 5)]
    poll_ms: u64,
    /// Table to insert into (`CREATE TABLE t (id bigserial primary key, at timestamptz default now())`).
    #[arg(long, default_value = "b")]
    table: String,
    /// Database user.
    #[arg(long, default_value = "postgres")]
    user: String,
    /// Password (for a proxy that authenticates clients itself).
    #[arg(long)]
    password: Option<String>,
    /// How long one commit may take before it counts as failed.
    #[arg(long, default_value_t = 0.5)]
    attempt_timeout: f64,
    /// Print every acknowledgement.
    #[arg(long)]
    trace: bool,
}

async fn connect(
    port: u16,
    user: &str,
    password: Option<&str>,
    within: Duration,
) -> Option<Client> {
    let mut conn = format!("host=127.0.0.1 port={port} user={user} dbname=postgres");
    if let Some(p) = password {
        conn.push_str(&format!(" password={p}"));
    }
    let (client, connection) = tokio::time::timeout(within, tokio_postgres::connect(&conn, NoTls))
        .await
        .ok()?
        .ok()?;
    tokio::spawn(connection);
    Some(client)
}

fn epoch() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `GET /primary` on 127.0.0.1:`port`: whether it answered 200 within 200 ms.
async fn primary_ok(port: u16) -> bool {
    let ask = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .ok()?;
        s.write_all(b"GET /primary HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.") && &head[9..12] == b"200")
    };
    matches!(
        tokio::time::timeout(Duration::from_millis(200), ask).await,
        Ok(Some(true))
    )
}

/// When each node's `/primary` last answered 200.
type Fresh = Arc<Mutex<Vec<Option<Instant>>>>;

fn spawn_pollers(api: &[u16], every: Duration) -> Fresh {
    let fresh: Fresh = Arc::new(Mutex::new(vec![None; api.len()]));
    for (i, &port) in api.iter().enumerate() {
        let fresh = fresh.clone();
        tokio::spawn(async move {
            loop {
                let ok = primary_ok(port).await;
                {
                    let mut f = fresh.lock().unwrap_or_else(|p| p.into_inner());
                    f[i] = ok.then(Instant::now);
                }
                tokio::time::sleep(every).await;
            }
        });
    }
    fresh
}

/// A node whose `/primary` said 200 within the last 100 ms (the latest such answer).
fn fresh_primary(fresh: &Fresh) -> Option<usize> {
    let f = fresh.lock().unwrap_or_else(|p| p.into_inner());
    f.iter()
        .enumerate()
        .filter_map(|(i, at)| {
            at.filter(|t| t.elapsed() < Duration::from_millis(100))
                .map(|t| (t, i))
        })
        .max()
        .map(|(_, i)| i)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.ports.is_empty(), "--ports is required");
    anyhow::ensure!(
        args.api.is_empty() || args.api.len() == args.ports.len(),
        "--api needs one REST port per --ports entry"
    );
    let insert = format!("INSERT INTO {} DEFAULT VALUES", args.table);
    let within = Duration::from_secs_f64(args.attempt_timeout);
    let password = args.password.as_deref();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut clients: Vec<Option<Client>> = Vec::new();
    for &p in &args.ports {
        clients.push(connect(p, &args.user, password, within).await);
    }
    let fresh = (!args.api.is_empty())
        .then(|| spawn_pollers(&args.api, Duration::from_millis(args.poll_ms)));
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut acks: Vec<(Duration, u16)> = Vec::new();
    let mut preferred = 0usize;
    // With `--api`: the node found through `/primary` and still acknowledging.
    let mut current: Option<usize> = None;
    let mut last_port: Option<u16> = None;
    while Instant::now() < end {
        let order: Vec<usize> = match &fresh {
            None => (0..args.ports.len())
                .map(|k| (preferred + k) % args.ports.len())
                .collect(),
            Some(f) => current.or_else(|| fresh_primary(f)).into_iter().collect(),
        };
        let mut acked = false;
        for i in order {
            if clients[i].as_ref().is_none_or(Client::is_closed) {
                clients[i] = connect(args.ports[i], &args.user, password, within).await;
            }
            let Some(c) = clients[i].as_ref() else {
                current = None;
                continue;
            };
            let attempt = tokio::time::timeout(within, c.execute(&insert, &[])).await;
            let failed = match &attempt {
                Ok(Ok(_)) => None,
                Ok(Err(e)) => Some(match e.as_db_error() {
                    Some(db) => db.message().to_string(),
                    None => e.to_string(),
                }),
                Err(_) => Some(format!("no answer within {within:?}")),
            };
            if let Some(message) = failed {
                *errors.entry(message).or_default() += 1;
            }
            if let Ok(Ok(_)) = attempt {
                let at = start.elapsed();
                if args.trace {
                    eprintln!("{:.3} ack {}", at.as_secs_f64(), args.ports[i]);
                }
                if last_port != Some(args.ports[i]) {
                    println!("first_ack {:.6} {}", epoch(), args.ports[i]);
                    last_port = Some(args.ports[i]);
                }
                acks.push((at, args.ports[i]));
                preferred = i;
                current = Some(i);
                acked = true;
                break;
            }
            current = None;
        }
        if acked && args.interval_ms > 0 {
            tokio::time::sleep(Duration::from_millis(args.interval_ms)).await;
        } else if !acked {
            // Nobody accepts writes: try again soon, nodes are reconnected lazily.
            match &fresh {
                Some(_) => tokio::time::sleep(Duration::from_millis(1)).await,
                None => tokio::task::yield_now().await,
            }
        }
    }
    let (gap, at) = acks
        .windows(2)
        .map(|w| (w[1].0 - w[0].0, w[0].0))
        .max()
        .context("fewer than two acknowledged writes")?;
    let first = acks.first().map(|a| a.1);
    let last = acks.last().map(|a| a.1);
    println!(
        "write_gap_ms {} (at {:.3} s; {} commits; first on port {:?}, last on port {:?}) errors {} {:?}",
        gap.as_millis(),
        at.as_secs_f64(),
        acks.len(),
        first,
        last,
        errors.values().sum::<usize>(),
        errors
    );
    Ok(())
}
