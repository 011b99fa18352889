//! The resetting keeper (`watchdog.driver: testing`) must SIGKILL the agent that
//! armed it, then the postmaster. The agent has to be a separate process for that,
//! so this test has no libtest harness: the same binary runs as the parent (the
//! test) and, with `FENCE_RESET_PID_FILE` set, as the child agent that arms the
//! keeper and waits to be killed.

use pg_driver::fence::ProcessFence;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

const CHILD_ENV: &str = "FENCE_RESET_PID_FILE";

fn main() -> ExitCode {
    if let Some(pid_file) = std::env::var_os(CHILD_ENV) {
        return child_agent(Path::new(&pid_file));
    }
    let name = "resetting_keeper_kills_the_agent_and_the_postmaster";
    match resetting_keeper_kills_the_agent_and_the_postmaster() {
        Ok(()) => {
            println!("test {name} ... ok");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("test {name} ... FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The child "agent": arms a resetting keeper that fires in 200 ms and waits.
/// Exiting on its own means the keeper never reset it.
fn child_agent(pid_file: &Path) -> ExitCode {
    let fence = match ProcessFence::spawn_resetting(pid_file) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("spawn keeper: {e}");
            return ExitCode::from(2);
        }
    };
    let deadline = ha_core::clock::monotonic_now().plus(Duration::from_millis(200));
    if let Err(e) = fence.arm_now(deadline) {
        eprintln!("arm keeper: {e}");
        return ExitCode::from(3);
    }
    std::thread::sleep(Duration::from_secs(20));
    ExitCode::from(4)
}

/// Ends a child this test started if it is still running.
struct Reap(Child);

impl Drop for Reap {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn exited(child: &mut Child, within: Duration) -> bool {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if child.try_wait().ok().flatten().is_some() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

fn resetting_keeper_kills_the_agent_and_the_postmaster() -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    // A process in its own process group, standing in for the postmaster.
    let mut pm = Reap(
        Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .map_err(|e| format!("spawn sleep: {e}"))?,
    );
    let pid_file = dir.path().join("postmaster.pid");
    std::fs::write(&pid_file, format!("{}\n/data\n", pm.0.id()))
        .map_err(|e| format!("pid file: {e}"))?;
    let exe = std::env::current_exe().map_err(|e| format!("test binary: {e}"))?;
    let mut agent = Reap(
        Command::new(exe)
            .env(CHILD_ENV, &pid_file)
            .stdout(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn child agent: {e}"))?,
    );
    if !exited(&mut agent.0, Duration::from_secs(10)) {
        return Err("the keeper did not reset the agent".into());
    }
    let status = agent.0.wait().map_err(|e| format!("agent status: {e}"))?;
    if status.signal() != Some(libc::SIGKILL) {
        return Err(format!("the agent was not SIGKILLed: {status:?}"));
    }
    if !exited(&mut pm.0, Duration::from_secs(3)) {
        return Err("the keeper did not kill the postmaster".into());
    }
    Ok(())
}
