//! What the proxy did, counted, and `GET /metrics` in the Prometheus text format.

use crate::routes::Routes;
use crate::session::Listener;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Counters of what the proxy did.
#[derive(Debug, Default)]
pub struct Counters {
    /// Sessions relayed to a server, by listener and member name.
    routed: Mutex<BTreeMap<(&'static str, String), u64>>,
    /// Sessions being relayed now.
    pub active: AtomicI64,
    /// New connections refused (no server to route to, or unreachable).
    pub refused: AtomicU64,
    /// Read-write sessions closed because their server lost the leader key.
    pub fenced: AtomicU64,
    /// New read-write connections that waited for a primary.
    pub paused: AtomicU64,
    /// Their total wait, in microseconds.
    pause_micros: AtomicU64,
    /// Sessions moved to a new primary at a transaction boundary.
    pub moved: AtomicU64,
    /// Clients that failed the proxy's authentication.
    pub auth_failed: AtomicU64,
    /// Queries (`Query` and `Parse` messages) sent to each member by sessions the
    /// proxy logged in to itself.
    queries: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
}

impl Counters {
    /// Counts a session relayed from `kind`'s listener to member `target`.
    pub fn routed(&self, kind: Listener, target: &str) {
        let label = match kind {
            Listener::ReadWrite => "rw",
            Listener::ReadOnly => "ro",
        };
        let mut m = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        *m.entry((label, target.to_string())).or_default() += 1;
    }

    /// Sessions relayed so far, over every listener and target.
    pub fn routed_total(&self) -> u64 {
        let m = self.routed.lock().unwrap_or_else(|p| p.into_inner());
        m.values().sum()
    }

    /// The query counter of member `target`, to count on without a lock.
    pub fn queries_to(&self, target: &str) -> Arc<AtomicU64> {
        let mut m = self.queries.lock().unwrap_or_else(|p| p.into_inner());
        m.entry(target.to_string()).or_default().clone()
    }

    /// Adds one finished wait for a primary.
    pub fn pause_ended(&self, waited: Duration) {
        self.pause_micros
            .fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition of the counters and of `routes`.
    pub fn render(&self, routes: &Routes) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, lines: Vec<String>| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n"));
            for l in lines {
                out.push_str(&format!("{name}{l}\n"));
            }
        };
        let routed: Vec<String> = {
            let m = self.routed.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .map(|((l, t), n)| format!("{{listener=\"{l}\",target=\"{}\"}} {n}", escape(t)))
                .collect()
        };
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        metric(
            "fullauto_proxy_sessions_routed_total",
            "counter",
            "Client sessions relayed to a server, by listener and member.",
            routed,
        );
        metric(
            "fullauto_proxy_sessions_active",
            "gauge",
            "Client sessions being relayed now.",
            vec![format!(" {}", self.active.load(Ordering::Relaxed))],
        );
        metric(
            "fullauto_proxy_connections_refused_total",
            "counter",
            "New connections refused: no server to route to, or it could not be reached.",
            vec![format!(" {}", load(&self.refused))],
        );
        metric(
            "fullauto_proxy_sessions_fenced_total",
            "counter",
            "Read-write sessions closed because their server lost the leader key.",
            vec![format!(" {}", load(&self.fenced))],
        );
        metric(
            "fullauto_proxy_pauses_total",
            "counter",
            "New read-write connections that waited for a primary.",
            vec![format!(" {}", load(&self.paused))],
        );
        metric(
            "fullauto_proxy_pause_seconds_total",
            "counter",
            "Total time new read-write connections waited for a primary.",
            vec![format!(" {}", load(&self.pause_micros) as f64 / 1e6)],
        );
        metric(
            "fullauto_proxy_sessions_moved_total",
            "counter",
            "Sessions moved to a new primary at a transaction boundary.",
            vec![format!(" {}", load(&self.moved))],
        );
        metric(
            "fullauto_proxy_auth_failures_total",
            "counter",
            "Clients that failed the proxy's authentication (proxy.auth_file).",
            vec![format!(" {}", load(&self.auth_failed))],
        );
        let queries: Vec<String> = {
            let m = self.queries.lock().unwrap_or_else(|p| p.into_inner());
            m.iter()
                .map(|(t, n)| format!("{{target=\"{}\"}} {}", escape(t), n.load(Ordering::Relaxed)))
                .collect()
        };
        metric(
            "fullauto_proxy_queries_total",
            "counter",
            "Queries (Query and Parse messages) relayed to each member by sessions the proxy logged in to itself.",
            queries,
        );
        metric(
            "fullauto_proxy_primary",
            "gauge",
            "1 for the member read-write clients go to (absent: none).",
            routes
                .primary
                .as_ref()
                .map(|t| format!("{{member=\"{}\"}} 1", escape(&t.name)))
                .into_iter()
                .collect(),
        );
        metric(
            "fullauto_proxy_replicas",
            "gauge",
            "Replicas read-only clients go to.",
            vec![format!(" {}", routes.replicas.len())],
        );
        metric(
            "fullauto_proxy_switchover_pending",
            "gauge",
            "1 while a switchover or failover request is pending.",
            vec![format!(" {}", u8::from(routes.switching))],
        );
        out
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Answers `GET /metrics` (404 for anything else) on `listener`, one request per
/// connection.
pub async fn serve(listener: TcpListener, shared: std::sync::Arc<crate::session::Shared>) {
    loop {
        let Ok((mut socket, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
                match tokio::time::timeout(Duration::from_secs(5), socket.read(&mut buf)).await {
                    Ok(Ok(n)) if n > 0 => head.extend_from_slice(&buf[..n]),
                    _ => return,
                }
            }
            let line = String::from_utf8_lossy(&head);
            let (status, body) = if line.starts_with("GET /metrics ") {
                let routes = shared.routes.borrow().clone();
                let text = shared.counters.render(&routes);
                ("200 OK", text)
            } else {
                (
                    "404 Not Found",
                    "only GET /metrics is served here\n".to_string(),
                )
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(reply.as_bytes()).await;
            let _ = socket.shutdown().await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_lists_routed_sessions_by_target_and_the_primary() {
        let c = Counters::default();
        c.routed(Listener::ReadWrite, "pg0");
        c.routed(Listener::ReadWrite, "pg0");
        c.routed(Listener::ReadOnly, "pg1");
        c.fenced.fetch_add(1, Ordering::Relaxed);
        c.pause_ended(Duration::from_millis(250));
        c.queries_to("pg0").fetch_add(3, Ordering::Relaxed);
        c.moved.fetch_add(2, Ordering::Relaxed);
        let routes = Routes {
            primary: Ok(crate::Target {
                name: "pg0".into(),
                host: "127.0.0.1".into(),
                port: 5432,
            }),
            ..Routes::default()
        };
        let text = c.render(&routes);
        for line in [
            "fullauto_proxy_sessions_routed_total{listener=\"rw\",target=\"pg0\"} 2",
            "fullauto_proxy_sessions_routed_total{listener=\"ro\",target=\"pg1\"} 1",
            "fullauto_proxy_sessions_fenced_total 1",
            "fullauto_proxy_pause_seconds_total 0.25",
            "fullauto_proxy_primary{member=\"pg0\"} 1",
            "fullauto_proxy_switchover_pending 0",
            "fullauto_proxy_queries_total{target=\"pg0\"} 3",
            "fullauto_proxy_sessions_moved_total 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing:\n{text}");
        }
        assert_eq!(c.routed_total(), 3);
    }
}
