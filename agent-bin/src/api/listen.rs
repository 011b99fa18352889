//! The REST API's listening socket: `restapi.listen` with `restapi.request_queue_size`
//! as its listen backlog.

use std::io;
use tokio::net::{TcpListener, TcpSocket};

/// The backlog without `request_queue_size` (what tokio's own bind uses).
const DEFAULT_BACKLOG: u32 = 1024;

/// Listens on `listen` (`host:port`; the first address it resolves to that can be
/// bound, as tokio's own bind) with `queue` pending connections at most (the system
/// caps it at `somaxconn`).
pub async fn bind(listen: &str, queue: Option<i64>) -> io::Result<TcpListener> {
    let backlog = queue.map_or(DEFAULT_BACKLOG, |q| q.clamp(0, i64::from(u32::MAX)) as u32);
    let mut last = io::Error::new(io::ErrorKind::NotFound, "resolves to no address");
    for addr in tokio::net::lookup_host(listen).await? {
        let socket = if addr.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        // As tokio's TcpListener::bind: a restarted agent can listen again at once.
        socket.set_reuseaddr(true)?;
        match socket.bind(addr).and_then(|()| socket.listen(backlog)) {
            Ok(l) => return Ok(l),
            Err(e) => last = e,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The backlog of the listening socket on `port`, as `ss` reports it (Send-Q).
    fn backlog(port: u16) -> u32 {
        let out = std::process::Command::new("ss")
            .args(["-ltnH", &format!("sport = :{port}")])
            .output()
            .expect("ss (iproute2, installed by scripts/setup)");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text
            .lines()
            .next()
            .unwrap_or_else(|| panic!("no listener: {text}"));
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    }

    #[tokio::test]
    async fn request_queue_size_sets_the_listen_backlog() {
        let l = bind("127.0.0.1:0", Some(7)).await.unwrap();
        assert_eq!(backlog(l.local_addr().unwrap().port()), 7);
        let l = bind("127.0.0.1:0", None).await.unwrap();
        let default = backlog(l.local_addr().unwrap().port());
        assert_ne!(default, 7);
    }
}
