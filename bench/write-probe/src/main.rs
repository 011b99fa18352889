//! `write-probe --ports 5441,5442,5443 --seconds 8`: keeps one connection per node and
//! commits one row at a time, trying the node that acknowledged last first, so the
//! measured pause is the cluster's own write gap and not a client's connection set-up.
//! Prints each acknowledged commit's time offset on stderr (with `--trace`) and the
//! longest gap between consecutive acknowledgements on stdout, with the number of
//! failed attempts (errors the client saw) by message.

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(!args.ports.is_empty(), "--ports is required");
    let insert = format!("INSERT INTO {} DEFAULT VALUES", args.table);
    let within = Duration::from_secs_f64(args.attempt_timeout);
    let password = args.password.as_deref();
    let mut errors: std::collections::BTreeMap<String, usize> = Default::default();
    let mut clients: Vec<Option<Client>> = Vec::new();
    for &p in &args.ports {
        clients.push(connect(p, &args.user, password, within).await);
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
                clients[i] = connect(args.ports[i], &args.user, password, within).await;
            }
            let Some(c) = clients[i].as_ref() else {
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
