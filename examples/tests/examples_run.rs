//! The example programs run as a user would run them: `ha-advisor` against a real
//! etcd holding a cluster, `orchestrator` against real PostgreSQL 15 servers.

use dcs_etcd::testing::EtcdCluster;
use dcs_etcd::EtcdDcs;
use ha_core::{Dcs, DcsTiming, MemberData, MemberState, Role};
use std::process::Command;

/// A member record as an agent publishes it.
fn record(role: Role, lsn: u64) -> MemberData {
    MemberData {
        state: Some(MemberState::Running),
        role: Some(role),
        xlog_location: Some(lsn),
        timeline: Some(1),
        conn_url: Some("postgres://127.0.0.1:1/postgres".into()),
        api_url: Some("http://127.0.0.1:1/patroni".into()),
        ..MemberData::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advisor_prints_readable_actions_for_a_cluster_in_etcd() {
    let etcd = EtcdCluster::start_single().expect("start etcd (scripts/setup installs it)");
    let timing = DcsTiming::default();
    // Two replicas and no leader: the primary and its agent are gone.
    let config = etcd.config();
    let connect = |name: &'static str| EtcdDcs::connect(&config, "/service", "shop", name, timing);
    let a = connect("a").await.expect("connect a");
    let b = connect("b").await.expect("connect b");
    a.initialize("7311").await.expect("initialize");
    a.touch_member(&record(Role::Replica, 0x300_0000))
        .await
        .expect("member a");
    b.touch_member(&record(Role::Replica, 0x200_0000))
        .await
        .expect("member b");

    let out = Command::new(env!("CARGO_BIN_EXE_ha-advisor"))
        .args([etcd.hosts()[0].as_str(), "shop"])
        .output()
        .expect("run ha-advisor");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "ha-advisor failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<String> = stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    // a is further ahead: after asking b it would race for the free key; b, after
    // asking a, would wait for a.
    assert_eq!(
        lines,
        [
            "cluster shop: leader none, 2 members",
            "a ProbePeers b; AcquireLease",
            "b ProbePeers a",
        ],
        "{stdout}"
    );
}

#[test]
fn orchestrator_runs_three_embedded_nodes_and_fails_one_over() {
    let out = Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .output()
        .expect("run orchestrator");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "orchestrator failed:\n{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("orchestrator: failover done, every node stopped"),
        "{stdout}\n{stderr}"
    );
    assert!(stderr.contains("took over from"), "{stderr}");
}
