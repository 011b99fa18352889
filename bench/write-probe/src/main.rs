//! `write-probe --ports 5441,5442,5443 --seconds 8`: keeps one connection per node and
//! commits one row at a time, trying the node that acknowledged last first, so the
//! measured pause is the cluster's own write gap and not a client's connection set-up.
//! Prints each acknowledged commit's time offset on stderr (with `--trace`) and the
//! longest gap between consecutive acknowledgements on stdout.

use anyhow::Context;
use clap::Parser;
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

#[derive(Parser)]
struct Args {
    /// Ports of the nodes on 127.0.0.1.
    #[arg(long, value_delimiter = ',')]
    ports: Vec<u16>,
    /// How long to write.
    #[arg(long, default_value_t = 8.0)]
    seconds: f64,
    /// Table to insert into (`CREATE TABLE t (id bigserial primary key, at timestamptz default now())`).
    #[arg(long, default_value = "b")]
    table: String,
    /// Database user.
    #[arg(long, default_value = "postgres")]
    user: String,
    /// Print every acknowledgement.
    #[arg(long)]
    trace: bool,
}

async fn connect(port: u16, user: &str) -> Option<Client> {
    let conn = format!("host=127.0.0.1 port={port} user={user} dbname=postgres connect_timeout=1");
    let (client, connection) = tokio::time::timeout(
        Duration::from_millis(500),
        tokio_postgres::connect(&conn, NoTls),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(connection);
    Some(client)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.ports.is_empty(), "--ports is required");
    let insert = format!("INSERT INTO {} DEFAULT VALUES", args.table);
    let mut clients: Vec<Option<Client>> = Vec::new();
    for &p in &args.ports {
        clients.push(connect(p, &args.user).await);
    }
    let start = Instant::now();
    let end = start + Duration::from_secs_f64(args.seconds);
    let mut acks: Vec<(Duration, u16)> = Vec::new();
    let mut preferred = 0usize;
    while Instant::now() < end {
        let mut acked = false;
        for k in 0..args.ports.len() {
            let i = (preferred + k) % args.ports.len();
            if clients[i].as_ref().is_none_or(Client::is_closed) {
                clients[i] = connect(args.ports[i], &args.user).await;
            }
            let Some(c) = clients[i].as_ref() else {
                continue;
            };
            let attempt = tokio::time::timeout(Duration::from_millis(500), c.execute(&insert, &[]));
            if let Ok(Ok(_)) = attempt.await {
                let at = start.elapsed();
                if args.trace {
                    eprintln!("{:.3} ack {}", at.as_secs_f64(), args.ports[i]);
                }
                acks.push((at, args.ports[i]));
                preferred = i;
                acked = true;
                break;
            }
        }
        if !acked {
            // Nobody accepts writes: try again at once, nodes are reconnected lazily.
            tokio::task::yield_now().await;
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
        "write_gap_ms {} (at {:.3} s; {} commits; first on port {:?}, last on port {:?})",
        gap.as_millis(),
        at.as_secs_f64(),
        acks.len(),
        first,
        last
    );
    Ok(())
}
