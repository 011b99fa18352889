//! Serves the Consul API emulator on 127.0.0.1 (tests and manual experiments).
//!
//! Usage: `consul-emulator [--port N] [--ttl-min SECS] [--ttl-multiplier N] [--token T]`

use dcs_consul::emulator::{Emulator, EmulatorConfig};
use std::net::SocketAddr;
use std::time::Duration;

fn usage(problem: &str) -> ! {
    eprintln!("consul-emulator: {problem}");
    eprintln!(
        "usage: consul-emulator [--port N] [--ttl-min SECS] [--ttl-multiplier N] [--token TOKEN]"
    );
    std::process::exit(2)
}

fn main() {
    let mut port: u16 = 8500;
    let mut config = EmulatorConfig::default();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || {
            args.next()
                .unwrap_or_else(|| usage(&format!("{flag} needs a value")))
        };
        match flag.as_str() {
            "--port" => port = value().parse().unwrap_or_else(|_| usage("bad --port")),
            "--ttl-min" => {
                let secs: f64 = value().parse().unwrap_or_else(|_| usage("bad --ttl-min"));
                config.session_ttl_min =
                    Duration::try_from_secs_f64(secs).unwrap_or_else(|_| usage("bad --ttl-min"));
            }
            "--ttl-multiplier" => {
                config.ttl_multiplier = value()
                    .parse()
                    .unwrap_or_else(|_| usage("bad --ttl-multiplier"))
            }
            "--token" => config.acl_token = Some(value()),
            "-h" | "--help" => usage("help"),
            other => usage(&format!("unknown argument {other}")),
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("consul-emulator: cannot start the runtime: {e}");
            std::process::exit(1)
        }
    };
    runtime.block_on(async move {
        let emulator = Emulator::new(config);
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let server = match emulator.serve(addr).await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("consul-emulator: cannot listen on {addr}: {e}");
                std::process::exit(1)
            }
        };
        println!("consul-emulator listening on {}", server.url());
        let _ = tokio::signal::ctrl_c().await;
        server.stop().await;
    });
}
