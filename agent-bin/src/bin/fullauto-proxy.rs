//! `fullauto-proxy CONFIG.yml`: the PostgreSQL proxy (crate `pg-proxy`). It reads an
//! agent's config file, or a proxy-only one, for the DCS section, `scope`/`namespace`
//! and the `proxy:` section, and routes clients from the DCS alone.

use agent_bin::config::{Config, LogConfig, Warning};
use agent_bin::ctl::settings::Settings;
use clap::Parser;
use pg_proxy::{Proxy, ProxySettings};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};

#[derive(Parser)]
#[command(
    name = "fullauto-proxy",
    version,
    about = "PostgreSQL proxy that follows the fullauto (Patroni) leader key"
)]
struct Args {
    /// The config file (an agent's, or one with only scope, the DCS section and
    /// proxy), or a directory of YAML files.
    config: PathBuf,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (cfg, warnings) = match load(&args.config) {
        Ok(x) => x,
        Err(text) => {
            eprint!("{text}");
            return ExitCode::from(1);
        }
    };
    let section = cfg.raw.get("proxy").unwrap_or(&serde_json::Value::Null);
    let settings = match ProxySettings::from_value(section) {
        Ok(Some(s)) => s,
        Ok(None) => {
            eprintln!(
                "fullauto-proxy: {} has no proxy section: add one with listen_rw (read-write \
                 clients, host:port) and/or listen_ro (read-only clients)",
                args.config.display()
            );
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("fullauto-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    let _log = match agent_bin::logging::init(&cfg.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fullauto-proxy: {e}");
            return ExitCode::from(1);
        }
    };
    for w in warnings {
        tracing::warn!("{}", w.to_string().trim_end());
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fullauto-proxy: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cfg, settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("fullauto-proxy: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// An agent's config file (it has a `postgresql` or `restapi` section) is loaded and
/// checked as the agent does; a proxy-only file (`scope`, `namespace`, the DCS section,
/// `proxy`, as on an application host) only needs what the proxy reads.
fn load(path: &Path) -> Result<(Config, Vec<Warning>), String> {
    let lenient =
        Settings::load(Some(path), None, false).map_err(|e| format!("fullauto-proxy: {e}\n"))?;
    let is_agent_config = ["postgresql", "restapi"]
        .iter()
        .any(|k| lenient.doc.get(*k).is_some_and(|v| !v.is_null()));
    if is_agent_config {
        return Config::load(path).map_err(|errors| errors.0.render());
    }
    let scope = lenient.scope.clone().ok_or_else(|| {
        format!(
            "fullauto-proxy: {} names no cluster: add scope: <cluster name>\n",
            path.display()
        )
    })?;
    let mut cfg = lenient
        .config_for(&scope)
        .map_err(|e| format!("fullauto-proxy: {e}\n"))?;
    let log = lenient.doc.get("log").unwrap_or(&serde_json::Value::Null);
    cfg.log = LogConfig::from_value(log).map_err(|problems| {
        let lines: Vec<String> = problems.iter().map(|p| format!("{p}\n")).collect();
        lines.concat()
    })?;
    Ok((cfg, Vec::new()))
}

async fn run(cfg: Config, settings: ProxySettings) -> anyhow::Result<()> {
    use anyhow::Context;
    let timing = cfg.bootstrap.dcs.timing();
    // The proxy never writes a member record: its name names its own record,
    // `proxies/<name>`, published on its lease.
    let name = settings
        .name
        .clone()
        .unwrap_or_else(|| default_name(&settings));
    let dcs = agent_bin::dcs_factory::connect_dcs(&cfg, &name, timing)
        .await
        .context("connecting to the DCS")?;
    let proxy = Proxy::start(settings, dcs).await?;
    tracing::info!(
        "fullauto-proxy {name} serves cluster {} (read-write {}, read-only {})",
        cfg.scope,
        proxy
            .rw_address
            .map_or("off".to_string(), |a| a.to_string()),
        proxy
            .ro_address
            .map_or("off".to_string(), |a| a.to_string()),
    );
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("fullauto-proxy stops");
    drop(proxy);
    Ok(())
}

/// `<hostname>-<port>` of the first listener: unique per proxy on a host.
fn default_name(settings: &ProxySettings) -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    let host = if rc == 0 {
        let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    } else {
        "fullauto-proxy".to_string()
    };
    let port = settings
        .listen_rw
        .as_deref()
        .or(settings.listen_ro.as_deref())
        .and_then(|a| a.rsplit(':').next())
        .unwrap_or("0");
    format!("{host}-{port}")
}
