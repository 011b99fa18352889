//! `ha-advisor ETCD_HOST:PORT SCOPE`: reads a Patroni/fullauto cluster from etcd and
//! prints, per member, what fullauto's HA engine would do next. A custom orchestrator
//! in a few lines: the decision function needs no agent around it.

use ha_core::{clock::monotonic_now, DcsTiming};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(host), Some(scope)) = (args.next(), args.next()) else {
        anyhow::bail!("usage: ha-advisor ETCD_HOST:PORT SCOPE");
    };
    let cfg = dcs_etcd::EtcdConfig {
        host: Some(host),
        ..Default::default()
    };
    let dcs =
        dcs_etcd::EtcdDcs::connect(&cfg, "/service", &scope, "ha-advisor", DcsTiming::default())
            .await?;
    let cluster = ha_core::Dcs::get_cluster(&dcs).await?;
    let leader = cluster
        .leader
        .as_ref()
        .map_or("(none)", |l| l.name.as_str());
    println!(
        "cluster {scope}: leader {leader}, {} members",
        cluster.members.len()
    );
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    for m in &cluster.members {
        let actions = examples::advise(&cluster, &m.name, monotonic_now(), wall);
        println!("  {:<12} {:?}", m.name, actions);
    }
    Ok(())
}
