//! What many agents cost one etcd: runs `--members` agents' worth of the real etcd
//! backend (`EtcdDcs`, one per member, each with its own connections, lease, watch
//! and cluster cache) in clusters of `--cluster-size`, each member making an idle HA
//! cycle's DCS calls every `loop_wait` (read the cluster, take the free leader key or
//! renew it, write the member record), without Postgres. After a settle period it
//! counts etcd's own `grpc_server_started_total` by method (a unary call or a newly
//! opened stream each once) and the etcd process's CPU time over `--seconds`.
//!
//! Run against an etcd of your own (not the project's reserved ports):
//! `cargo run --release -p dcs-etcd --example etcd_load -- --endpoint 127.0.0.1:23811
//!  --etcd-pid PID --members 100` (`bench/etcd_load.sh` starts etcd and runs it for
//! 100 and 1,000 members).

use dcs_etcd::{EtcdConfig, EtcdDcs};
use ha_core::{Dcs, DcsTiming, MemberData};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;
use tokio::time::Instant;

struct Args {
    endpoint: String,
    etcd_pid: Option<u32>,
    members: usize,
    cluster_size: usize,
    timing: DcsTiming,
    settle: Duration,
    window: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        endpoint: "127.0.0.1:23811".into(),
        etcd_pid: None,
        members: 100,
        cluster_size: 3,
        timing: DcsTiming {
            ttl: Duration::from_secs(30),
            loop_wait: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(10),
        },
        settle: Duration::from_secs(40),
        window: Duration::from_secs(60),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or(format!("{flag} needs a value"))?;
        let secs = |v: &str| {
            v.parse::<f64>()
                .map(Duration::from_secs_f64)
                .map_err(|e| format!("{flag}: {e}"))
        };
        let count = |v: &str| v.parse::<usize>().map_err(|e| format!("{flag}: {e}"));
        match flag.as_str() {
            "--endpoint" => a.endpoint = value,
            "--etcd-pid" => a.etcd_pid = Some(value.parse().map_err(|e| format!("{e}"))?),
            "--members" => a.members = count(&value)?,
            "--cluster-size" => a.cluster_size = count(&value)?.max(1),
            "--ttl" => a.timing.ttl = secs(&value)?,
            "--loop-wait" => a.timing.loop_wait = secs(&value)?,
            "--retry-timeout" => a.timing.retry_timeout = secs(&value)?,
            "--settle" => a.settle = secs(&value)?,
            "--seconds" => a.window = secs(&value)?,
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(a)
}

fn member_data(port: usize) -> MemberData {
    MemberData::parse(&format!(
        r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","api_url":"http://127.0.0.1:{port}/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":50331648,"timeline":1}}"#
    ))
    .expect("a valid member record")
}

/// One member's idle HA cycles, as the runner makes them, until the process ends.
async fn member_loop(
    dcs: EtcdDcs,
    name: String,
    data: MemberData,
    loop_wait: Duration,
    start_in: Duration,
) {
    tokio::time::sleep(start_in).await;
    let mut wake = dcs.subscribe();
    loop {
        let cycle = Instant::now();
        match dcs.get_cluster().await {
            Ok(view) => {
                if view.is_leader(&name) {
                    let _ = dcs.renew_leader().await;
                } else if view.is_unlocked() {
                    let _ = dcs.acquire_leader().await;
                }
            }
            Err(e) => eprintln!("get_cluster failed: {e}"),
        }
        if let Err(e) = dcs.touch_member(&data).await {
            eprintln!("touch_member failed: {e}");
        }
        // Like the runner: sleep out loop_wait, or less when the watch wakes us.
        if let Ok(Err(_)) = tokio::time::timeout_at(cycle + loop_wait, wake.changed()).await {
            tokio::time::sleep_until(cycle + loop_wait).await;
        }
    }
}

/// etcd's `grpc_server_started_total` by gRPC method.
fn started_by_method(endpoint: &str) -> BTreeMap<String, f64> {
    let mut body = String::new();
    if let Ok(mut s) = TcpStream::connect(endpoint) {
        let _ = write!(
            s,
            "GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\nConnection: close\r\n\r\n"
        );
        let _ = s.read_to_string(&mut body);
    }
    let mut out = BTreeMap::new();
    for line in body
        .lines()
        .filter(|l| l.starts_with("grpc_server_started_total{"))
    {
        let method = line
            .split("grpc_method=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("?")
            .to_string();
        let n: f64 = line
            .rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        *out.entry(method).or_default() += n;
    }
    out
}

/// CPU seconds (user + system) and RSS (MiB) of process `pid`.
fn cpu_and_rss(pid: u32) -> (f64, f64) {
    let hz = 100.0; // USER_HZ on Linux
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let cpu = (ticks(11) + ticks(12)) / hz;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    (cpu, rss_kib / 1024.0)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let config = EtcdConfig::with_hosts(&[format!("http://{}", args.endpoint)]);
    let mut tasks = Vec::new();
    for i in 0..args.members {
        let scope = format!("load-{}", i / args.cluster_size);
        let name = format!("m{}", i % args.cluster_size);
        let dcs = EtcdDcs::connect(&config, "service", &scope, &name, args.timing).await?;
        let data = member_data(10000 + i);
        // Spread the members' cycles over loop_wait, as independent agents are.
        let start_in = args
            .timing
            .loop_wait
            .mul_f64(i as f64 / args.members as f64);
        tasks.push(tokio::spawn(member_loop(
            dcs,
            name,
            data,
            args.timing.loop_wait,
            start_in,
        )));
    }
    eprintln!(
        "{} members in clusters of {} running; settling {:?}",
        args.members, args.cluster_size, args.settle
    );
    tokio::time::sleep(args.settle).await;
    let before = started_by_method(&args.endpoint);
    let cpu_before = args.etcd_pid.map(cpu_and_rss);
    let t0 = Instant::now();
    tokio::time::sleep(args.window).await;
    let minutes = t0.elapsed().as_secs_f64() / 60.0;
    let after = started_by_method(&args.endpoint);
    let cpu_after = args.etcd_pid.map(cpu_and_rss);
    let mut total = 0.0;
    for (method, n) in &after {
        let d = n - before.get(method).copied().unwrap_or(0.0);
        if d > 0.0 {
            total += d;
            println!("started_per_min {method} {:.1}", d / minutes);
        }
    }
    let members = args.members as f64;
    println!("members {}", args.members);
    println!("started_per_min_total {:.1}", total / minutes);
    println!(
        "started_per_member_per_min {:.3}",
        total / minutes / members
    );
    if let (Some((c0, _)), Some((c1, rss))) = (cpu_before, cpu_after) {
        println!("etcd_cpu_s_per_min {:.2}", (c1 - c0) / minutes);
        println!("etcd_rss_mib {rss:.1}");
    }
    for t in tasks {
        t.abort();
    }
    Ok(())
}
