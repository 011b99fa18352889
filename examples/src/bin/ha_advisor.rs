//! `ha-advisor ETCD_HOST:PORT SCOPE [NAMESPACE]`: reads a Patroni or fullauto cluster
//! from etcd and prints, per member, what fullauto's HA engine would do next. The
//! decision function is a plain function: no agent, no Postgres, nothing written.

use ha_core::{clock::monotonic_now, Dcs, DcsTiming};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(host), Some(scope)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: ha-advisor ETCD_HOST:PORT SCOPE [NAMESPACE]");
    };
    let namespace = args.next().unwrap_or_else(|| "/service".into());

    // A read-only client: get_cluster takes no lease and writes nothing.
    let cfg = dcs_etcd::EtcdConfig {
        host: Some(host),
        ..Default::default()
    };
    let timing = DcsTiming::default();
    let dcs = dcs_etcd::EtcdDcs::connect(&cfg, &namespace, &scope, "ha-advisor", timing).await?;
    let cluster = dcs.get_cluster().await?;

    let leader = cluster.leader.as_ref().map_or("none", |l| l.name.as_str());
    let members = cluster.members.len();
    println!("cluster {scope}: leader {leader}, {members} members");
    let wall_millis = chrono_free_wall_millis();
    for m in &cluster.members {
        // One dry-run decision per member, from its published record alone.
        let actions = examples::advise(&cluster, &m.name, monotonic_now(), wall_millis);
        let said: Vec<String> = actions.iter().map(ToString::to_string).collect();
        let said = if said.is_empty() {
            "nothing to do".into()
        } else {
            said.join("; ")
        };
        println!("  {:<12} {said}", m.name);
    }
    Ok(())
}

/// Milliseconds since the Unix epoch (scheduled switchovers compare against it).
fn chrono_free_wall_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
