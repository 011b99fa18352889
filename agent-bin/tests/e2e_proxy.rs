//! End to end on real etcd, PostgreSQL 15 and two `fullauto` agents, with two
//! `fullauto-proxy` processes: one reading the agents' config file (authentication
//! passes through), one with a proxy-only config and `auth_file` (clients log in to
//! the proxy, which logs in to the servers itself and moves sessions). Through a
//! `fullautoctl switchover`: pgbench (simple protocol, single-statement
//! transactions, persistent connections) through the second proxy sees no error and
//! every transaction it counted is on the new primary; a client opening one
//! connection per insert through the first follows the switchover, the session it
//! held on the old primary is closed, and no acknowledged write is lost. Through an
//! unplanned failover (the primary's agent frozen, its server left running and
//! writable): clients see errors only until the new primary is up, and the old
//! primary acknowledges nothing through the proxy once the proxy saw its key go.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::proxy::{server_port, via, ProxyProcess};
use support::{free_port, wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn clients_through_the_proxy_follow_a_switchover() {
    let rw = free_port();
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "",
        |_| String::new(),
        move |_| Extra {
            top: format!("proxy:\n  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 30"),
            ..Extra::default()
        },
    );
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "the replica never streamed");
    let proxy = ProxyProcess::start(&c.nodes[0].config, &c.path().join("proxy.log"));
    // The second proxy: a proxy-only config with its own users (the servers trust
    // loopback; the proxy checks the password).
    let rw2 = free_port();
    let users = c.path().join("proxy-users.txt");
    std::fs::write(&users, "\"postgres\" \"s3cret\"\n").expect("auth file");
    let config2 = c.path().join("proxy2.yml");
    std::fs::write(
        &config2,
        format!(
            "scope: {}\n{}\nproxy:\n  name: app-proxy\n  listen_rw: 127.0.0.1:{rw2}\n  pause_deadline: 30\n  auth_file: {}\n",
            c.scope,
            c.dcs.config_section(),
            users.display()
        ),
    )
    .expect("proxy config");
    let moving = ProxyProcess::start(&config2, &c.path().join("proxy2.log"));
    let (old_port, new_port) = (c.nodes[p].pg_port, c.nodes[r].pg_port);

    // Read-write clients reach the primary.
    assert_eq!(
        wait_until(BOOT, || server_port(rw).ok()),
        Some(old_port),
        "the proxy did not route to the primary"
    );
    via(rw, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create through the proxy");
    // Both proxies publish themselves; fullautoctl list shows them.
    let listed = wait_until(BOOT, || {
        let (ok, out) = c.ctl(&["list"]);
        let rows = out.lines().filter(|l| {
            l.contains(&format!("127.0.0.1:{rw}")) || l.contains(&format!("127.0.0.1:{rw2}"))
        });
        (ok && rows.count() == 2).then_some(out)
    })
    .expect("fullautoctl list does not show both proxies");
    let row = listed
        .lines()
        .find(|l| l.contains("app-proxy"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        row.contains(&format!("127.0.0.1:{rw2}")) && row.contains("yes"),
        "{listed}"
    );
    via(rw, "CREATE TABLE w (id bigserial PRIMARY KEY, port int)").expect("create");
    let script = c.path().join("insert.sql");
    std::fs::write(
        &script,
        "INSERT INTO w (port) VALUES (inet_server_port());\n",
    )
    .expect("script");
    let pgbench = std::process::Command::new("/usr/lib/postgresql/15/bin/pgbench")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &rw2.to_string(),
            "-U",
            "postgres",
            "-n",
        ])
        .args(["-M", "simple", "-c", "4", "-j", "2", "-T", "20", "-f"])
        .arg(&script)
        .arg("postgres")
        .env("PGPASSWORD", "s3cret")
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("pgbench");

    // A session held open through the proxy, on the old primary.
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let dsn = format!("host=127.0.0.1 port={rw} user=postgres dbname=postgres connect_timeout=10");
    let (held, connection) = rt
        .block_on(tokio_postgres::connect(&dsn, tokio_postgres::NoTls))
        .expect("connect through the proxy");
    let connection = rt.spawn(connection);
    rt.block_on(held.execute("INSERT INTO t VALUES (0)", &[]))
        .expect("write on the held session");

    // A client writing through the proxy, one connection per insert; each
    // acknowledged insert reports the server that acknowledged it.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut acked, mut errors) = (BTreeMap::new(), Vec::new());
            let mut id = 0i64;
            while !stop.load(Ordering::Relaxed) {
                id += 1;
                let q = format!("INSERT INTO t VALUES ({id}) RETURNING inet_server_port()");
                match via(rw, &q) {
                    Ok(port) => {
                        acked.insert(id, port);
                    }
                    Err(e) => errors.push(e),
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (acked, errors)
        })
    };
    // pgbench is connected and writing.
    wait_until(BOOT, || {
        c.sql(p, "SELECT count(*) > 100 FROM w")
            .ok()
            .filter(|v| v == "t")
    })
    .expect("pgbench does not write through the proxy");

    let (ok, out) = c.ctl(&[
        "switchover",
        &c.scope.clone(),
        "--leader",
        &c.nodes[p].name.clone(),
        "--candidate",
        &c.nodes[r].name.clone(),
        "--force",
    ]);
    assert!(ok, "switchover failed: {out}");
    assert_eq!(c.wait_primary(Duration::from_secs(30)), Some(r), "{out}");

    // The held session on the old primary is closed.
    let ended = rt
        .block_on(async { tokio::time::timeout(BOOT, connection).await })
        .expect("the session on the old primary stayed open")
        .expect("connection task");
    assert!(ended.is_err(), "the session ended without an error");
    assert!(
        rt.block_on(held.execute("INSERT INTO t VALUES (-1)", &[]))
            .is_err(),
        "the held session still writes after the switchover"
    );

    // New connections land on the new primary, which takes writes.
    assert_eq!(
        wait_until(BOOT, || server_port(rw)
            .ok()
            .filter(|port| *port == new_port)),
        Some(new_port),
        "new connections did not follow the switchover"
    );
    std::thread::sleep(Duration::from_millis(500));
    stop.store(true, Ordering::Relaxed);
    let (acked, errors) = writer.join().expect("writer");
    let on = |port: u16| acked.values().filter(|p| **p == port.to_string()).count();
    eprintln!(
        "writes through the proxy: {} acknowledged ({} by the old primary, {} by the new), \
         {} client errors during the switchover: {errors:?}",
        acked.len(),
        on(old_port),
        on(new_port),
        errors.len()
    );
    // New connections wait while the switchover runs and until the new leader runs
    // as primary: none reaches a server in recovery. (A transaction in flight when
    // the old primary stops still fails: sessions are not moved yet.)
    let misrouted: Vec<&String> = errors
        .iter()
        .filter(|e| e.contains("read-only transaction"))
        .collect();
    assert!(
        misrouted.is_empty(),
        "writes routed to a server in recovery: {misrouted:?}"
    );
    assert!(on(old_port) > 0, "no write reached the old primary");
    assert!(on(new_port) > 0, "no write reached the new primary");
    // Every acknowledged write is on the new primary.
    let present: std::collections::BTreeSet<i64> = c
        .sql(r, "SELECT id FROM t")
        .expect("read")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost: Vec<i64> = acked
        .keys()
        .copied()
        .filter(|id| !present.contains(id))
        .collect();
    assert!(lost.is_empty(), "acknowledged writes lost: {lost:?}");

    // pgbench through the moving proxy: no client error, and every transaction it
    // counted is on the new primary, old and new primary both took some.
    let bench = pgbench.wait_with_output().expect("pgbench");
    let report = String::from_utf8_lossy(&bench.stdout).to_string()
        + &String::from_utf8_lossy(&bench.stderr);
    eprintln!("pgbench through the proxy during the switchover:\n{report}");
    assert!(bench.status.success(), "pgbench failed:\n{report}");
    assert!(
        report.contains("number of failed transactions: 0 ") && !report.contains("aborted"),
        "{report}"
    );
    let processed: u64 = report
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no transaction count in:\n{report}"));
    let per_port = c
        .sql(
            r,
            "SELECT port, count(*) FROM w GROUP BY port ORDER BY port",
        )
        .expect("count");
    let rows: u64 = per_port
        .lines()
        .filter_map(|l| l.split('|').nth(1)?.parse::<u64>().ok())
        .sum();
    assert_eq!(rows, processed, "rows per server: {per_port}");
    for port in [old_port, new_port] {
        assert!(
            per_port.lines().any(|l| l.starts_with(&format!("{port}|"))),
            "no pgbench write on {port}: {per_port}"
        );
    }
    assert!(
        moving.logged("moved a session to"),
        "no session was moved:\n{}",
        moving.log()
    );

    assert!(
        proxy.logged("read-write clients now go to"),
        "the proxy did not log its routing"
    );
}

/// The seconds since the epoch of the first line of `log` (dateformat `%s%.6f`)
/// after `after` that contains one of `texts`.
fn logged_at(log: &str, after: f64, texts: &[&str]) -> Option<f64> {
    log.lines().find_map(|l| {
        let at: f64 = l.split_whitespace().next()?.parse().ok()?;
        (at > after && texts.iter().any(|t| l.contains(t))).then_some(at)
    })
}

fn epoch_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The processes whose parent is `pid` and whose command name is `comm`.
fn children_named(pid: u32, comm: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| {
        let child: i32 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).ok()?;
        // pid (comm) state ppid ...
        let (name, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == pid && name == comm).then_some(child)
    })
    .collect()
}

/// Unplanned failover with the old primary still writable: its agent and the
/// agent's write fence (the forked keeper that would kill the postmaster before
/// the lease ends) are frozen (SIGSTOP), so its server goes on running as a primary
/// and accepts any write sent to it while the leader key expires and the other node
/// takes over: only the proxy stands between clients and it. Clients
/// writing through the proxy see errors only until the new primary is up, and no
/// write the old primary ran after the proxy saw the key leave it was
/// acknowledged (each write returns its server's port and clock).
#[test]
fn no_write_is_acknowledged_by_a_frozen_primary_after_its_key_is_gone() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "the replica never streamed");
    let rw = free_port();
    let users = c.path().join("proxy-users.txt");
    std::fs::write(&users, "\"postgres\" \"s3cret\"\n").expect("auth file");
    let config = c.path().join("proxy.yml");
    std::fs::write(
        &config,
        format!(
            "scope: {}\n{}\nlog:\n  dateformat: '%s%.6f'\nproxy:\n  listen_rw: 127.0.0.1:{rw}\n  pause_deadline: 30\n  auth_file: {}\n",
            c.scope,
            c.dcs.config_section(),
            users.display()
        ),
    )
    .expect("proxy config");
    let proxy = ProxyProcess::start(&config, &c.path().join("proxy.log"));
    let (old_port, new_port) = (c.nodes[p].pg_port, c.nodes[r].pg_port);
    c.sql(p, "CREATE TABLE w (id bigserial PRIMARY KEY, port int)")
        .expect("create");
    let writers = Writers::start(rw, 3);
    wait_until(BOOT, || (writers.acked(old_port) > 20).then_some(()))
        .expect("no writes through the proxy");

    // The primary's agent freezes with its fence: nothing renews the key or stops
    // the server.
    let old_leader = c.nodes[p].name.clone();
    let agent = c.nodes[p].child.as_ref().map(|ch| ch.id()).expect("agent");
    let keepers = children_named(agent, "fullauto");
    assert_eq!(keepers.len(), 1, "the agent's fence keeper: {keepers:?}");
    let frozen_at = epoch_now();
    c.signal_agent(p, libc::SIGSTOP);
    // SAFETY: signalling the keeper process our agent forked.
    unsafe { libc::kill(keepers[0], libc::SIGSTOP) };
    // The key leaves the old primary (expires, then the other node takes it).
    let key_changed_at = wait_until(BOOT, || {
        (c.leader().as_deref() != Some(old_leader.as_str())).then(epoch_now)
    })
    .expect("the leader key never left the frozen primary");
    // Its server still runs as a primary and takes writes sent to it directly: only
    // the proxy keeps clients away from it.
    let direct = c.sql(
        p,
        "INSERT INTO w (port) VALUES (-1) RETURNING extract(epoch FROM clock_timestamp())",
    );
    let direct_at: f64 = direct
        .as_deref()
        .unwrap_or_else(|e| panic!("the old primary refused a direct write: {e}"))
        .parse()
        .expect("a time");
    let up = wait_until(BOOT, || {
        c.sql(r, "SELECT pg_is_in_recovery()")
            .ok()
            .filter(|v| v == "f")
            .map(|_| Instant::now())
    })
    .expect("no new primary after the failover");
    wait_until(BOOT, || (writers.acked(new_port) > 20).then_some(()))
        .expect("no writes on the new primary through the proxy");
    let (acks, errors) = writers.finish();
    // SAFETY: as above.
    unsafe { libc::kill(keepers[0], libc::SIGCONT) };
    c.signal_agent(p, libc::SIGCONT);

    let log = proxy.log();
    let saw = logged_at(
        &log,
        frozen_at,
        &["no primary to route to", "read-write clients now go to"],
    )
    .unwrap_or_else(|| panic!("the proxy never logged the key leaving {old_leader}:\n{log}"));
    assert!(
        direct_at > saw,
        "the direct write ran before the proxy saw the key change ({direct_at} vs {saw}): the test proves nothing"
    );
    let old = |a: &&Ack| a.port == old_port;
    let last_old = acks
        .iter()
        .filter(old)
        .map(|a| a.server_time)
        .fold(0.0, f64::max);
    // The log's clock reads to the microsecond: a write the old primary ran later
    // than the proxy's line was sent after the proxy knew.
    let late: Vec<&Ack> = acks
        .iter()
        .filter(old)
        .filter(|a| a.server_time > saw)
        .collect();
    eprintln!(
        "frozen at {frozen_at:.3}, the test saw the key change at {key_changed_at:.3}, the proxy at \
         {saw:.3}; last write acknowledged by the old primary ran at {last_old:.3}; a direct \
         write to it ran at {direct_at:.3}; {} writes acknowledged ({} old, {} new), {} client errors",
        acks.len(),
        acks.iter().filter(old).count(),
        acks.iter().filter(|a| a.port == new_port).count(),
        errors.len()
    );
    assert!(
        late.is_empty(),
        "the old primary acknowledged writes through the proxy after the proxy saw its key go: {late:?}"
    );
    assert!(
        acks.iter()
            .all(|a| a.port == old_port || a.port == new_port),
        "an acknowledgement without its server: {acks:?}"
    );
    let late_errors: Vec<&(Instant, String)> = errors.iter().filter(|(at, _)| *at > up).collect();
    assert!(
        late_errors.is_empty(),
        "client errors after the new primary was up: {late_errors:?}"
    );
}

/// One insert acknowledged through the proxy: the port of the server that ran it,
/// and that server's clock when it ran it (epoch seconds; the test, the proxy and
/// the servers share the machine's clock).
#[derive(Debug, Clone, Copy)]
struct Ack {
    port: u16,
    server_time: f64,
}

/// Clients writing through a proxy on persistent connections (simple protocol),
/// reconnecting after an error; each acknowledged insert reports the server port.
struct Writers {
    stop: Arc<AtomicBool>,
    acks: Arc<Mutex<Vec<Ack>>>,
    errors: Arc<Mutex<Vec<(Instant, String)>>>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Writers {
    fn start(port: u16, n: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acks: Arc<Mutex<Vec<Ack>>> = Arc::default();
        let errors: Arc<Mutex<Vec<(Instant, String)>>> = Arc::default();
        let threads = (0..n)
            .map(|_| {
                let (stop, acks, errors) = (stop.clone(), acks.clone(), errors.clone());
                std::thread::spawn(move || {
                    let rt = tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .expect("runtime");
                    let dsn = format!(
                        "host=127.0.0.1 port={port} user=postgres password=s3cret dbname=postgres connect_timeout=30"
                    );
                    let mut client = None;
                    while !stop.load(Ordering::Relaxed) {
                        let c = match client.take() {
                            Some(c) => c,
                            None => match rt.block_on(tokio_postgres::connect(&dsn, tokio_postgres::NoTls)) {
                                Ok((c, conn)) => {
                                    rt.spawn(conn);
                                    c
                                }
                                Err(e) => {
                                    errors.lock().unwrap().push((Instant::now(), e.to_string()));
                                    std::thread::sleep(Duration::from_millis(50));
                                    continue;
                                }
                            },
                        };
                        let q = "INSERT INTO w (port) VALUES (inet_server_port()) \
                                 RETURNING port::text, extract(epoch FROM clock_timestamp())::text";
                        match rt.block_on(c.simple_query(q)) {
                            Ok(m) => {
                                let row = m.iter().find_map(|m| match m {
                                    tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                                        r.get(0)?.parse().ok()?,
                                        r.get(1)?.parse().ok()?,
                                    )),
                                    _ => None,
                                });
                                let (port, server_time) = row.unwrap_or((0, 0.0));
                                acks.lock().unwrap().push(Ack { port, server_time });
                                client = Some(c);
                            }
                            Err(e) => errors.lock().unwrap().push((Instant::now(), e.to_string())),
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                })
            })
            .collect();
        Writers {
            stop,
            acks,
            errors,
            threads,
        }
    }

    fn acked(&self, port: u16) -> usize {
        self.acks
            .lock()
            .unwrap()
            .iter()
            .filter(|a| a.port == port)
            .count()
    }

    fn finish(mut self) -> (Vec<Ack>, Vec<(Instant, String)>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let acks = std::mem::take(&mut *self.acks.lock().unwrap());
        let errors = std::mem::take(&mut *self.errors.lock().unwrap());
        (acks, errors)
    }
}

impl Drop for Writers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
