//! `fullautoctl`, the Patroni-compatible command line (patronictl's commands, options,
//! questions and output). Reads go straight to the DCS; actions go through members'
//! REST APIs, with a DCS fallback where patronictl has one (and for pause/resume).

pub mod args;
pub mod config_cmds;
pub mod edit;
pub mod error;
pub mod list;
pub mod members;
pub mod misc;
pub mod prompt;
pub mod query;
pub mod reach;
pub mod rest;
pub mod schedule;
pub mod session;
pub mod settings;
pub mod switchover;
pub mod table;
pub mod view;
pub mod yaml;

use args::{Cli, Command};
use clap::Parser;
use error::{CtlError, CtlResult};
use session::Ctx;
use settings::Settings;
use std::io::Write;
use std::time::Duration;

/// Prints a line on stdout; a closed stdout (`| head`) is not an error worth a panic.
pub fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
}

/// Prints text as it is (it carries its own newlines).
pub fn say_raw(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

/// Runs one parsed command line.
pub async fn run(cli: Cli) -> CtlResult<()> {
    if let Command::Version { cluster: None, .. } = &cli.command {
        say(&format!(
            "fullautoctl version {}",
            env!("CARGO_PKG_VERSION")
        ));
        return Ok(());
    }
    if !(cli.dcs_timeout.is_finite() && cli.dcs_timeout > 0.0) {
        return Err(CtlError::Config(
            "--dcs-timeout must be a positive number of seconds".into(),
        ));
    }
    let settings = Settings::load(
        cli.config_file.as_deref(),
        cli.dcs_url.as_deref(),
        cli.insecure,
    )?;
    let ctx = Ctx {
        settings,
        dcs_timeout: Duration::from_secs_f64(cli.dcs_timeout),
    };
    match cli.command {
        Command::List {
            clusters,
            extended,
            explain,
            format,
            watch,
        } => {
            list::run(
                &ctx,
                &clusters,
                extended,
                explain,
                format,
                &watch,
                list::Layout::Flat,
            )
            .await
        }
        Command::Topology { cluster, watch } => {
            let clusters: Vec<String> = cluster.into_iter().collect();
            list::run(
                &ctx,
                &clusters,
                false,
                false,
                args::Format::Pretty,
                &watch,
                list::Layout::Topology,
            )
            .await
        }
        Command::Switchover {
            cluster,
            leader,
            candidate,
            scheduled,
            force,
        } => {
            let req = switchover::Request {
                cluster,
                leader,
                candidate,
                scheduled,
                force,
            };
            switchover::run(&ctx, switchover::Action::Switchover, &req).await
        }
        Command::Failover {
            cluster,
            candidate,
            leader,
            force,
        } => {
            if leader.is_some() {
                eprintln!("Warning: failover --leader is deprecated; use switchover");
            }
            let req = switchover::Request {
                cluster,
                leader,
                candidate,
                scheduled: None,
                force,
            };
            switchover::run(&ctx, switchover::Action::Failover, &req).await
        }
        Command::Restart {
            cluster,
            members,
            role,
            any,
            scheduled,
            pg_version,
            pending,
            timeout,
            force,
        } => {
            let a = members::RestartArgs {
                cluster,
                members,
                role,
                any,
                scheduled,
                pg_version,
                pending,
                timeout,
                force,
            };
            members::restart(&ctx, &a).await
        }
        Command::Reinit {
            cluster,
            members,
            force,
            from_leader,
            wait,
        } => members::reinit(&ctx, &cluster, &members, force, from_leader, wait).await,
        Command::Reload {
            cluster,
            members,
            role,
            force,
        } => members::reload(&ctx, &cluster, &members, role, force).await,
        Command::Flush {
            cluster,
            rest,
            role,
            force,
        } => members::flush(&ctx, &cluster, &rest, role, force).await,
        Command::Pause { cluster, wait } => {
            config_cmds::toggle_pause(&ctx, cluster.as_deref(), true, wait).await
        }
        Command::Resume { cluster, wait } => {
            config_cmds::toggle_pause(&ctx, cluster.as_deref(), false, wait).await
        }
        Command::DemoteCluster {
            cluster,
            host,
            port,
            restore_command,
            primary_slot_name,
            force,
        } => {
            let a = config_cmds::DemoteArgs {
                cluster,
                host,
                port,
                restore_command,
                primary_slot_name,
                force,
            };
            config_cmds::demote_cluster(&ctx, &a).await
        }
        Command::PromoteCluster { cluster, force } => {
            config_cmds::promote_cluster(&ctx, cluster.as_deref(), force).await
        }
        Command::ShowConfig { cluster } => config_cmds::show(&ctx, cluster.as_deref()).await,
        Command::EditConfig {
            cluster,
            quiet,
            set,
            pg,
            apply,
            replace,
            force,
        } => {
            let a = config_cmds::EditArgs {
                cluster,
                quiet,
                set,
                pg,
                apply,
                replace,
                force,
            };
            config_cmds::edit(&ctx, &a).await
        }
        Command::History { cluster, format } => {
            misc::history(&ctx, cluster.as_deref(), format).await
        }
        Command::Remove { cluster, format } => misc::remove(&ctx, &cluster, format).await,
        Command::Dsn {
            cluster,
            role,
            member,
        } => misc::dsn(&ctx, cluster.as_deref(), role, member.as_deref()).await,
        Command::Query {
            cluster,
            command,
            file,
            member,
            role,
            dbname,
            username,
            password,
            format,
            delimiter,
            watch,
        } => {
            let a = query::QueryArgs {
                cluster,
                command,
                file,
                member,
                role,
                dbname,
                username,
                password,
                format,
                delimiter,
                watch,
            };
            query::run(&ctx, &a).await
        }
        Command::Version { cluster, members } => {
            misc::version(&ctx, cluster.as_deref(), &members).await
        }
    }
}

/// The whole program: parses the arguments, runs the command, and turns any error
/// into `Error: <message>` on stderr. Returns the exit code (0 ok, 1 failed, 2 usage).
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = e.exit_code();
            let _ = e.print();
            return code;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("Error: cannot start the async runtime: {e}");
            return 1;
        }
    };
    let result = runtime.block_on(run(cli));
    // Background tasks of the DCS clients (watches, keepalives) must not keep us alive.
    runtime.shutdown_timeout(Duration::from_millis(200));
    match result {
        Ok(()) => 0,
        Err(e) => {
            let msg = e.to_string();
            let line = msg.lines().map(str::trim).collect::<Vec<_>>().join(" ");
            eprintln!("Error: {line}");
            1
        }
    }
}
