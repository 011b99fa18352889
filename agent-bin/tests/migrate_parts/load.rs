//! The client of `e2e_migrate`: one connection that keeps inserting rows on whichever
//! node is primary and records every commit the server acknowledged, and when.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

/// One client connection that inserts one row per autocommit statement into `w` on
/// whichever node is primary, recording the ids the server acknowledged and when.
pub struct Load {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<(i64, Instant)>>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Load {
    /// Starts writing to the nodes listening on `ports`.
    pub fn start(ports: Vec<u16>) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acks = Arc::new(Mutex::new(Vec::new()));
        let (flag, log) = (stop.clone(), acks.clone());
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("writer runtime");
            rt.block_on(write_loop(ports, log, flag));
        });
        Load {
            stop,
            acks,
            thread: Some(thread),
        }
    }

    /// Every acknowledged commit so far: its id and when.
    pub fn acks(&self) -> Vec<(i64, Instant)> {
        self.acks.lock().map(|a| a.clone()).unwrap_or_default()
    }

    /// Whether a commit was acknowledged after `t`.
    pub fn acked_after(&self, t: Instant) -> bool {
        self.acks().iter().any(|&(_, at)| at > t)
    }

    /// The longest time without an acknowledged commit between `from` and `to`,
    /// counted from the last commit before `from`.
    pub fn longest_gap(&self, from: Instant, to: Instant) -> Duration {
        let acks = self.acks();
        let mut last = acks
            .iter()
            .map(|&(_, at)| at)
            .filter(|&at| at <= from)
            .max()
            .unwrap_or(from);
        let mut gap = Duration::ZERO;
        for at in acks.iter().map(|&(_, at)| at).filter(|&at| at > from) {
            gap = gap.max(at - last);
            last = at;
            if at > to {
                break;
            }
        }
        gap
    }

    /// Stops writing; every acknowledged commit's id.
    pub fn finish(mut self) -> Vec<i64> {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.acks().into_iter().map(|(id, _)| id).collect()
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

async fn write_loop(ports: Vec<u16>, acks: Arc<Mutex<Vec<(i64, Instant)>>>, stop: Arc<AtomicBool>) {
    let next = AtomicI64::new(1);
    let mut node = 0;
    while !stop.load(Ordering::Relaxed) {
        if let Some(client) = connect_primary(ports[node]).await {
            while !stop.load(Ordering::Relaxed) {
                let id = next.fetch_add(1, Ordering::Relaxed);
                if !insert(&client, id).await {
                    break;
                }
                if let Ok(mut a) = acks.lock() {
                    a.push((id, Instant::now()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        node = (node + 1) % ports.len();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn connect_primary(port: u16) -> Option<Client> {
    let conninfo =
        format!("host=127.0.0.1 port={port} user=postgres dbname=postgres connect_timeout=1");
    let (client, conn) = tokio::time::timeout(
        Duration::from_secs(2),
        tokio_postgres::connect(&conninfo, NoTls),
    )
    .await
    .ok()?
    .ok()?;
    tokio::spawn(conn);
    let rows = tokio::time::timeout(
        Duration::from_secs(2),
        client.simple_query("SELECT pg_is_in_recovery()"),
    )
    .await
    .ok()?
    .ok()?;
    let primary = rows.iter().any(|m| match m {
        SimpleQueryMessage::Row(r) => r.get(0) == Some("f"),
        _ => false,
    });
    primary.then_some(client)
}

/// True only when the server answered that the insert committed (the command tag comes
/// after the wait for the synchronous standby). No statement timeout and no cancel: a
/// cancelled wait for a synchronous standby returns success for a commit that was
/// never replicated.
async fn insert(client: &Client, id: i64) -> bool {
    let q = format!("INSERT INTO w (id) VALUES ({id})");
    matches!(
        tokio::time::timeout(Duration::from_secs(30), client.simple_query(&q)).await,
        Ok(Ok(msgs)) if msgs.iter().any(|m| matches!(m, SimpleQueryMessage::CommandComplete(1)))
    )
}
