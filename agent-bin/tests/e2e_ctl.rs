//! End to end through `fullautoctl` on real etcd and PostgreSQL 15: `list` shows the
//! cluster, `switchover` to a named candidate swaps roles without losing an
//! acknowledged write, `restart` restarts Postgres in place without a failover, and
//! `reinit` re-clones a replica (and is refused on the leader), and SIGHUP reloads
//! the config file.

mod support;

use std::time::Duration;
use support::{wait_until, Cluster, Writer, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn ctl_list_switchover_restart_reinit_and_sighup_reload() {
    let mut c = Cluster::new(3, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let replicas: Vec<usize> = (0..3).filter(|&i| i != p).collect();
    for &r in &replicas {
        assert!(
            c.wait_replica(r, BOOT),
            "{} never streamed",
            c.nodes[r].name
        );
    }
    let scope = c.scope.clone();

    // list: every member with its role and state.
    let listed = wait_until(Duration::from_secs(30), || {
        let (ok, out) = c.ctl(&["list", &scope, "-f", "json"]);
        let rows: serde_json::Value = serde_json::from_str(out.trim()).ok()?;
        let rows = rows.as_array()?.clone();
        let running = rows
            .iter()
            .filter(|r| r["State"] == "streaming" || r["State"] == "running")
            .count();
        (ok && rows.len() == 3 && running == 3).then_some(rows)
    })
    .unwrap_or_else(|| panic!("fullautoctl list: {}", c.ctl(&["list", &scope]).1));
    let leader_row = listed
        .iter()
        .find(|r| r["Role"] == "Leader")
        .expect("a Leader row");
    assert_eq!(leader_row["Member"], c.nodes[p].name.as_str());

    // switchover to a named candidate while a client writes.
    c.sql(p, "CREATE TABLE w (id bigint primary key)")
        .expect("create");
    let writer = Writer::start(&c, "w");
    std::thread::sleep(Duration::from_millis(500));
    let candidate = replicas[0];
    let (ok, out) = c.ctl(&[
        "switchover",
        &scope,
        "--leader",
        &c.nodes[p].name,
        "--candidate",
        &c.nodes[candidate].name,
        "--force",
    ]);
    assert!(ok, "switchover failed: {out}");
    let new = c
        .wait_primary(Duration::from_secs(30))
        .expect("new primary");
    assert_eq!(new, candidate, "{out}");
    std::thread::sleep(Duration::from_millis(500));
    let acks = writer.finish();
    assert!(
        acks.iter().any(|a| a.node == new),
        "no write acknowledged by the new primary"
    );
    let present: std::collections::BTreeSet<i64> = c
        .sql(new, "SELECT id FROM w")
        .expect("read")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    let lost: Vec<i64> = acks
        .iter()
        .map(|a| a.id)
        .filter(|id| !present.contains(id))
        .collect();
    assert!(
        lost.is_empty(),
        "acknowledged writes lost in the switchover: {lost:?}"
    );
    assert!(
        c.wait_replica(p, Duration::from_secs(60)),
        "old primary did not follow"
    );

    // restart the primary in place: same leader, new postmaster, no failover.
    let leader = c.nodes[new].name.clone();
    let old_pm = c.postmaster_pid(new).expect("postmaster pid");
    let (ok, out) = c.ctl(&["restart", &scope, &leader, "--force"]);
    assert!(ok, "restart failed: {out}");
    let restarted = c.postmaster_pid(new).expect("postmaster after restart");
    assert_ne!(restarted, old_pm, "postgres was not restarted: {out}");
    assert_eq!(c.api(new, "/primary").map(|r| r.0), Some(200));
    assert_eq!(
        c.leader().as_deref(),
        Some(leader.as_str()),
        "leadership moved on a restart"
    );
    c.sql(new, "INSERT INTO w VALUES (-1)")
        .expect("write after restart");

    // reinit: refused on the leader, re-clones a replica.
    let (ok, out) = c.ctl(&["reinit", &scope, &leader, "--force"]);
    assert!(
        !ok || out.contains("I am the leader"),
        "reinit of the leader: {out}"
    );
    let target = p;
    let marker = c.nodes[target].data_dir.join("fullauto-reinit-marker");
    std::fs::write(&marker, b"x").expect("marker in the data dir");
    let (ok, out) = c.ctl(&["reinit", &scope, &c.nodes[target].name, "--force", "--wait"]);
    assert!(ok, "reinit failed: {out}");
    let recloned = wait_until(Duration::from_secs(90), || {
        (!marker.exists() && c.api(target, "/replica").is_some_and(|(s, _)| s == 200)).then_some(())
    });
    assert!(
        recloned.is_some(),
        "replica not re-cloned: {out}\n{}",
        c.logs()
    );
    let seen = wait_until(Duration::from_secs(30), || {
        c.sql(target, "SELECT count(*) FROM w WHERE id = -1")
            .ok()
            .filter(|n| n == "1")
    });
    assert!(
        seen.is_some(),
        "re-cloned replica does not stream from the leader"
    );

    // SIGHUP re-reads the config file: a new tag reaches /patroni and the member key.
    let other = replicas[1];
    let path = c.nodes[other].config.clone();
    let text = std::fs::read_to_string(&path).expect("config");
    let text = text.replace(
        "  noloadbalance: false\n",
        "  noloadbalance: false\n  nofailover: true\n",
    );
    std::fs::write(&path, text).expect("rewrite config");
    c.signal_agent(other, libc::SIGHUP);
    let tagged = wait_until(Duration::from_secs(30), || {
        let (_, status) = c.api(other, "/patroni")?;
        let member = c.key(&format!("members/{}", c.nodes[other].name))?;
        (status["tags"]["nofailover"] == true && member.contains("\"nofailover\":true"))
            .then_some(())
    });
    assert!(
        tagged.is_some(),
        "reloaded tag not applied: {:?}",
        c.api(other, "/patroni")
    );
    assert!(
        c.wait_replica(other, Duration::from_secs(10)),
        "reload disturbed the replica"
    );
}

/// `fullautoctl restart --scheduled` a few seconds ahead, then `flush … restart`: the
/// schedule is gone from `/patroni` and from the member key, and when its time has
/// passed Postgres still runs under the same postmaster.
#[test]
fn flush_restart_cancels_a_scheduled_restart() {
    let mut c = Cluster::new(1, &FAST, "", |_| String::new());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let scope = c.scope.clone();
    let name = c.nodes[p].name.clone();
    let postmaster = c.postmaster_pid(p).expect("postmaster pid");

    let due = chrono::Utc::now() + chrono::Duration::seconds(15);
    let at = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (ok, out) = c.ctl(&["restart", &scope, &name, "--scheduled", &at, "--force"]);
    assert!(ok, "scheduling the restart failed: {out}");
    let shown = |c: &mut Cluster| {
        let (_, status) = c.api(p, "/patroni")?;
        let member = c.key(&format!("members/{name}"))?;
        Some((
            !status["scheduled_restart"].is_null(),
            member.contains("scheduled_restart"),
        ))
    };
    assert!(
        wait_until(Duration::from_secs(10), || shown(&mut c)
            .filter(|s| *s == (true, true)))
        .is_some(),
        "the scheduled restart is not shown: {:?}",
        shown(&mut c)
    );

    let (ok, out) = c.ctl(&["flush", &scope, "restart", "--force"]);
    assert!(ok, "flush failed: {out}");
    assert!(
        !out.contains("No scheduled restart"),
        "flush found nothing to cancel: {out}"
    );
    assert!(
        wait_until(Duration::from_secs(10), || shown(&mut c)
            .filter(|s| *s == (false, false)))
        .is_some(),
        "the flushed restart is still shown: {:?}",
        shown(&mut c)
    );

    // Past the restart's time: nothing restarted.
    while chrono::Utc::now() < due + chrono::Duration::seconds(3) {
        std::thread::sleep(Duration::from_millis(500));
    }
    assert_eq!(
        c.postmaster_pid(p),
        Some(postmaster),
        "postgres restarted although the restart was flushed"
    );
    assert_eq!(c.api(p, "/primary").map(|r| r.0), Some(200));
}
