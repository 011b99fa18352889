//! `fullauto CONFIG.yml`: the agent, one per Postgres node. Invoked as Patroni is.

use agent_bin::config::{validate_config_output, Config};
use clap::Parser;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "fullauto",
    version,
    about = "Fully automatic high availability for PostgreSQL"
)]
struct Args {
    /// Check the config file and report every problem with its path, then exit.
    #[arg(long, conflicts_with_all = ["generate_sample_config", "generate_config"])]
    validate_config: bool,
    /// Write a sample configuration (defaults and the PATRONI_* environment) to the
    /// file given, or to stdout, then exit.
    #[arg(long, conflicts_with = "generate_config")]
    generate_sample_config: bool,
    /// Write a configuration for the PostgreSQL server running on this machine to the
    /// file given, or to stdout, then exit.
    #[arg(long)]
    generate_config: bool,
    /// With --generate-config: how to connect to the server (libpq's key=value or URL
    /// form; the PG* environment variables otherwise).
    #[arg(long, requires = "generate_config")]
    dsn: Option<String>,
    /// The config file (Patroni's patroni.yml format), or a directory of YAML files.
    config: Option<PathBuf>,
}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let args = Args::parse();
    if args.generate_sample_config || args.generate_config {
        return generate(&args);
    }
    let Some(path) = args
        .config
        .or_else(|| std::env::var_os("PATRONI_CONFIG_FILE").map(PathBuf::from))
    else {
        eprintln!("fullauto: a config file is required: fullauto CONFIG.yml");
        return ExitCode::from(2);
    };
    if args.validate_config {
        let (out, ok) = validate_config_output(&path);
        print!("{out}");
        return if ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    // Before any thread or child process exists.
    agent_bin::systemd::take_notify_socket();
    let path = match std::path::absolute(&path) {
        Ok(p) => p,
        Err(_) => path,
    };
    // The write fence's keeper is forked before the configuration is loaded and the
    // runtime exists (and learns the pid file below): it then holds copies of almost
    // none of the agent's pages.
    let fence = match pg_driver::fence::ProcessFence::spawn_unbound() {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fullauto: {e}");
            return ExitCode::from(1);
        }
    };
    let (cfg, warnings) = match Config::load(&path) {
        Ok(x) => x,
        Err(errors) => {
            eprint!("{}", errors.0.render());
            return ExitCode::from(1);
        }
    };
    let _log = match agent_bin::logging::init(&cfg.log) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("fullauto: {e}");
            return ExitCode::from(1);
        }
    };
    for w in warnings {
        tracing::warn!("{}", w.to_string().trim_end());
    }
    let pid_file = std::path::Path::new(&cfg.postgresql.data_dir).join("postmaster.pid");
    if let Err(e) = fence.bind(&pid_file) {
        eprintln!("fullauto: {e}");
        return ExitCode::from(1);
    }
    let mut own: BTreeSet<i32> = [fence.keeper_pid()].into();
    // The testing watchdog forks too.
    let (device, pids) = agent_bin::watchdog::open_configured(&cfg);
    own.extend(pids);
    let dc = &cfg.bootstrap.dcs;
    let protection = agent_bin::watchdog::NodeWatchdog::new(
        Arc::new(fence),
        device,
        cfg.watchdog.mode,
        cfg.watchdog.safety_margin,
        dc.ttl(),
        dc.loop_wait(),
    );
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("fullauto: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(agent_bin::node::run(cfg, path, Arc::new(protection), own)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The agent exits: Python's CRITICAL, as Patroni logs its fatal start errors.
            tracing::error!(critical = true, "{e:#}");
            eprintln!("fullauto: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// One malloc arena for the whole agent instead of up to eight per core: each
/// thread that allocates would otherwise get its own arena, holding its freed
/// memory (over a megabyte each in an idle agent). The agent allocates little and
/// rarely from several threads at once, so the shared arena costs no speed.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets a malloc parameter; called before any thread exists.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// The C library's `pow`, from the `libm` crate (musl's algorithm), for the agent's
/// one caller: tokio's multi-thread scheduler, which weighs its average poll time
/// with `f64::powf` each time a worker parks. Defined here, it keeps glibc's libm out
/// of the process (the linker's `--as-needed` drops a library nothing needs): about
/// 0.6 MiB resident for this one function, its tables and the symbol lookups at load.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[no_mangle]
pub extern "C" fn pow(x: f64, y: f64) -> f64 {
    libm::pow(x, y)
}

/// `--generate-sample-config` and `--generate-config`.
fn generate(args: &Args) -> ExitCode {
    use agent_bin::generate;
    let env = agent_bin::config::process_env();
    let config = if args.generate_sample_config {
        Ok(generate::sample_config(&env))
    } else {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt.block_on(generate::running_config(
                args.dsn.as_deref(),
                &env,
                generate::prompt_password,
            )),
            Err(e) => Err(format!("cannot start the runtime: {e}")),
        }
    };
    match config.and_then(|c| generate::write_out(&generate::render(&c), args.config.as_deref())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fullauto: {e}");
            ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn pow_computes_powers() {
        use super::pow;
        assert_eq!(pow(2.0, 10.0), 1024.0);
        assert_eq!(pow(5.0, 0.0), 1.0);
        for x in [0.1f64, 0.5, 0.8, 2.0, 123.456] {
            // x^0.5 against the processor's square root; x^3 against products.
            assert!((pow(x, 0.5) - x.sqrt()).abs() <= x.sqrt() * 1e-15, "{x}");
            assert!((pow(x, 3.0) - x * x * x).abs() <= x * x * x * 1e-15, "{x}");
        }
        // tokio's use: (1 - alpha)^polls with a fractional count.
        let w = pow(0.9, 2.5);
        assert!((w - 0.9f64.sqrt() * 0.81).abs() < 1e-15, "{w}");
        assert!(pow(-1.0, 0.5).is_nan());
    }
}
