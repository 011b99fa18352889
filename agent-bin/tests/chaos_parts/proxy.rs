//! Network faults without touching the host's firewall: each agent reaches each DCS
//! member through its own loopback TCP relay, and every node's peers reach its Postgres
//! and REST API through a relay in front of them (the addresses the node publishes); a
//! fault changes what a relay lets through. Threads and sockets are released when the
//! relays are dropped.

use std::fmt;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What a relay lets through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkMode {
    Open,
    /// Nothing passes either way; connections hang (as when packets are dropped).
    Blackhole,
    /// Connections are reset and new ones refused.
    Reset,
    /// Only the requests are lost (one-way: the agent's to the DCS, or the peers' to
    /// the node).
    ToDcsLost,
    /// Only the answers are lost (one-way).
    FromDcsLost,
    /// Every chunk is delayed by 400 ms each way.
    Slow,
}

impl fmt::Display for LinkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkMode::Open => "open",
            LinkMode::Blackhole => "packets dropped both ways",
            LinkMode::Reset => "connections reset",
            LinkMode::ToDcsLost => "requests to the DCS dropped",
            LinkMode::FromDcsLost => "answers from the DCS dropped",
            LinkMode::Slow => "400 ms delay",
        })
    }
}

impl LinkMode {
    fn code(self) -> u8 {
        match self {
            LinkMode::Open => 0,
            LinkMode::Blackhole => 1,
            LinkMode::Reset => 2,
            LinkMode::ToDcsLost => 3,
            LinkMode::FromDcsLost => 4,
            LinkMode::Slow => 5,
        }
    }

    fn from_code(c: u8) -> LinkMode {
        match c {
            1 => LinkMode::Blackhole,
            2 => LinkMode::Reset,
            3 => LinkMode::ToDcsLost,
            4 => LinkMode::FromDcsLost,
            5 => LinkMode::Slow,
            _ => LinkMode::Open,
        }
    }

    /// Whether data flowing `to_dcs` (or back) is held.
    fn holds(self, to_dcs: bool) -> bool {
        match self {
            LinkMode::Blackhole => true,
            LinkMode::ToDcsLost => to_dcs,
            LinkMode::FromDcsLost => !to_dcs,
            LinkMode::Open | LinkMode::Reset | LinkMode::Slow => false,
        }
    }
}

/// One relay: a loopback listener forwarding to one DCS member.
pub struct Relay {
    pub port: u16,
    /// `host:port` the relay forwards to; set when the relay starts or later
    /// ([`Relay::point_to`]), before the first connection.
    upstream: Arc<Mutex<String>>,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
}

impl Relay {
    pub fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("relay listener");
        let port = listener.local_addr().expect("relay port").port();
        let relay = Relay {
            port,
            upstream: Arc::new(Mutex::new(upstream)),
            mode: Arc::new(AtomicU8::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            conns: Arc::new(Mutex::new(Vec::new())),
        };
        let (mode, stop, conns) = (relay.mode.clone(), relay.stop.clone(), relay.conns.clone());
        let upstream = relay.upstream.clone();
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(client) = client else { continue };
                if LinkMode::from_code(mode.load(Ordering::Relaxed)) == LinkMode::Reset {
                    continue;
                }
                let (mode, stop, conns) = (mode.clone(), stop.clone(), conns.clone());
                let upstream = upstream.lock().expect("relay upstream").clone();
                std::thread::spawn(move || serve(client, &upstream, mode, stop, conns));
            }
        });
        relay
    }

    /// Forwards new connections to `upstream` from now on.
    pub fn point_to(&self, upstream: String) {
        *self.upstream.lock().expect("relay upstream") = upstream;
    }

    pub fn set(&self, mode: LinkMode) {
        self.mode.store(mode.code(), Ordering::Relaxed);
        if mode == LinkMode::Reset {
            for c in self.conns.lock().expect("relay conns").drain(..) {
                let _ = c.shutdown(Shutdown::Both);
            }
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wakes the accept loop so it sees `stop`.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        for c in self.conns.lock().expect("relay conns").drain(..) {
            let _ = c.shutdown(Shutdown::Both);
        }
    }
}

fn serve(
    client: TcpStream,
    upstream: &str,
    mode: Arc<AtomicU8>,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
) {
    // A connection opened into a blackhole hangs until the link opens again.
    loop {
        let m = LinkMode::from_code(mode.load(Ordering::Relaxed));
        if stop.load(Ordering::Relaxed) || m == LinkMode::Reset {
            return;
        }
        if !m.holds(true) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    {
        let mut list = conns.lock().expect("relay conns");
        list.retain(|s| s.peer_addr().is_ok());
        for s in [&client, &server] {
            if let Ok(s) = s.try_clone() {
                list.push(s);
            }
        }
    }
    let pump = |from: &TcpStream, to: &TcpStream, to_dcs: bool| {
        let (mut from, mut to) = (
            from.try_clone().expect("clone"),
            to.try_clone().expect("clone"),
        );
        let (mode, stop) = (mode.clone(), stop.clone());
        std::thread::spawn(move || {
            let _ = from.set_read_timeout(Some(Duration::from_millis(100)));
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let m = LinkMode::from_code(mode.load(Ordering::Relaxed));
                if stop.load(Ordering::Relaxed) || m == LinkMode::Reset {
                    break;
                }
                if m.holds(to_dcs) {
                    // Held data stays in the socket buffers (TCP would retransmit it).
                    std::thread::sleep(Duration::from_millis(50));
                    continue;
                }
                match from.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if LinkMode::from_code(mode.load(Ordering::Relaxed)) == LinkMode::Slow {
                            std::thread::sleep(Duration::from_millis(400));
                        }
                        if to.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut => {}
                    Err(_) => break,
                }
            }
            let _ = from.shutdown(Shutdown::Both);
            let _ = to.shutdown(Shutdown::Both);
        })
    };
    let a = pump(&client, &server, true);
    let b = pump(&server, &client, false);
    let _ = a.join();
    let _ = b.join();
}

/// The relays of every node to every DCS member: `links[node][member]`.
pub struct Links {
    relays: Vec<Vec<Relay>>,
}

impl Links {
    pub fn start(nodes: usize, members: &[String]) -> Links {
        Links {
            relays: (0..nodes)
                .map(|_| members.iter().map(|m| Relay::start(m.clone())).collect())
                .collect(),
        }
    }

    /// `127.0.0.1:port` of node `i`'s relays, for its config file.
    pub fn hosts(&self, node: usize) -> Vec<String> {
        self.relays[node]
            .iter()
            .map(|r| format!("127.0.0.1:{}", r.port))
            .collect()
    }

    pub fn set(&self, node: usize, members: &[usize], mode: LinkMode) {
        for &m in members {
            self.relays[node][m].set(mode);
        }
    }

    /// Every link open again.
    pub fn heal(&self) {
        for node in &self.relays {
            for r in node {
                r.set(LinkMode::Open);
            }
        }
    }
}

/// The relays in front of every node's Postgres and REST API, through which its peers
/// reach it (the node publishes their addresses); the checker and the nemesis reach
/// the nodes directly.
pub struct Peers {
    /// `(postgres, rest api)` relays of each node.
    relays: Vec<(Relay, Relay)>,
}

impl Peers {
    /// Relays for `nodes` nodes, pointed at their servers by [`Peers::point_to`] once
    /// the ports are known.
    pub fn start(nodes: usize) -> Peers {
        Peers {
            relays: (0..nodes)
                .map(|_| (Relay::start(String::new()), Relay::start(String::new())))
                .collect(),
        }
    }

    /// The addresses node `i` publishes: `(postgresql, restapi)` connect addresses.
    pub fn addresses(&self, i: usize) -> (String, String) {
        let (pg, api) = &self.relays[i];
        (
            format!("127.0.0.1:{}", pg.port),
            format!("127.0.0.1:{}", api.port),
        )
    }

    pub fn point_to(&self, i: usize, pg_port: u16, api_port: u16) {
        let (pg, api) = &self.relays[i];
        pg.point_to(format!("127.0.0.1:{pg_port}"));
        api.point_to(format!("127.0.0.1:{api_port}"));
    }

    /// What node `i`'s peers' connections to its Postgres and REST API go through.
    pub fn set(&self, i: usize, mode: LinkMode) {
        let (pg, api) = &self.relays[i];
        pg.set(mode);
        api.set(mode);
    }

    /// Every node reachable again.
    pub fn heal(&self) {
        for i in 0..self.relays.len() {
            self.set(i, LinkMode::Open);
        }
    }
}
