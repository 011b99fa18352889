//! Zombie reaping for the agent running as PID 1 in a container. Only orphans that
//! were re-parented to us are reaped (a dead postmaster, the write-fence keeper):
//! children that tokio spawned are left to tokio, which waits for them itself.

use std::collections::BTreeSet;

/// Reaps re-parented zombie children whenever SIGCHLD arrives. Does nothing unless
/// this process is PID 1.
pub fn spawn_if_pid1(own_children: BTreeSet<i32>) {
    // SAFETY: getpid has no preconditions.
    if unsafe { libc::getpid() } != 1 {
        return;
    }
    tokio::spawn(async move {
        let Ok(mut sig) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
        else {
            tracing::warn!("cannot watch SIGCHLD: zombies will not be reaped");
            return;
        };
        loop {
            sig.recv().await;
            for pid in reparented_zombies(&own_children) {
                // SAFETY: waiting for a specific zombie child with WNOHANG never blocks.
                unsafe {
                    libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG);
                }
            }
        }
    });
}

/// Zombie children of ours that tokio did not spawn: the postmaster (a daemon whose
/// pg_ctl parent exited) and the fence keeper, identified by command name.
fn reparented_zombies(own: &BTreeSet<i32>) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let me = std::process::id() as i32;
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            let Some(close) = stat.rfind(')') else {
                return false;
            };
            // `pid (comm) state ppid ...`: the command name sits between the parentheses.
            let name = stat.find('(').and_then(|open| stat.get(open + 1..close));
            let mut rest = stat[close + 1..].split_whitespace();
            let state = rest.next();
            let ppid = rest.next().and_then(|p| p.parse::<i32>().ok());
            state == Some("Z")
                && ppid == Some(me)
                && (own.contains(pid) || name == Some("postgres"))
        })
        .collect()
}
