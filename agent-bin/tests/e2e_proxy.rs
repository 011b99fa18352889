//! End to end on real etcd, PostgreSQL 15 and two `fullauto` agents, with a
//! `fullauto-proxy` reading the same config file: a client writing through the
//! proxy's read-write port follows a `fullautoctl switchover` to the new primary, the
//! session it held on the old primary is closed, no write the proxy let through and
//! the server acknowledged is lost, and after an unplanned failover clients reach the
//! next primary.

mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use support::proxy::{server_port, via, ProxyProcess};
use support::{free_port, wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn clients_through_the_proxy_follow_a_switchover_and_a_failover() {
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
    let (old_port, new_port) = (c.nodes[p].pg_port, c.nodes[r].pg_port);

    // Read-write clients reach the primary.
    assert_eq!(
        wait_until(BOOT, || server_port(rw).ok()),
        Some(old_port),
        "the proxy did not route to the primary"
    );
    via(rw, "CREATE TABLE t (id bigint PRIMARY KEY)").expect("create through the proxy");

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
    std::thread::sleep(Duration::from_millis(500));

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

    // Unplanned: the new primary dies with its agent. Once the lease expires and the
    // old primary takes over, clients through the proxy reach it again.
    assert!(
        c.wait_replica(p, BOOT),
        "the old primary did not rejoin as a replica"
    );
    c.stop_node(r);
    assert_eq!(
        wait_until(BOOT, || server_port(rw)
            .ok()
            .filter(|port| *port == old_port)),
        Some(old_port),
        "clients did not follow the failover"
    );
    let id = via(rw, "INSERT INTO t VALUES (-2) RETURNING id").expect("write after failover");
    assert_eq!(id, "-2");
    assert!(
        proxy.logged("read-write clients now go to"),
        "the proxy did not log its routing"
    );
}
