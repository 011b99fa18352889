//! `postmaster.pid`: who claims the data directory, and whether that process lives.

use std::path::Path;

/// What the lock file says and what the system says about its pid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PidFileState {
    /// No postmaster.pid.
    Absent,
    /// The file does not parse (empty, truncated, garbage).
    Garbage(String),
    /// The pid does not exist.
    Stale(i32),
    /// The pid exists but is not a postgres process (pid reuse).
    Foreign(i32),
    /// A live postmaster.
    Alive {
        /// Its pid.
        pid: i32,
        /// Line 8 status (`starting`, `stopping`, `ready`, `standby`).
        status: String,
        /// Stopped by SIGSTOP / tracing (state `T` or `t`).
        stopped: bool,
    },
}

/// Reads and checks `<data_dir>/postmaster.pid`.
pub fn read(data_dir: &Path) -> PidFileState {
    let path = data_dir.join("postmaster.pid");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return PidFileState::Absent,
        Err(e) => return PidFileState::Garbage(format!("unreadable: {e}")),
    };
    let lines: Vec<&str> = text.lines().collect();
    let pid: i32 = match lines.first().and_then(|l| l.trim().parse().ok()) {
        Some(p) if p > 0 => p,
        _ => {
            return PidFileState::Garbage(format!(
                "first line is not a pid: {:?}",
                lines.first().unwrap_or(&"")
            ))
        }
    };
    if !process_exists(pid) {
        return PidFileState::Stale(pid);
    }
    if !is_postgres(pid) || !works_in(pid, data_dir) {
        return PidFileState::Foreign(pid);
    }
    PidFileState::Alive {
        pid,
        status: lines
            .get(7)
            .map(|s| s.trim().to_string())
            .unwrap_or_default(),
        stopped: is_stopped(pid),
    }
}

/// kill(pid, 0): exists (EPERM counts as existing).
pub fn process_exists(pid: i32) -> bool {
    if pid <= 0 {
        return false;
    }
    // SAFETY: signal 0 only checks for existence.
    let rc = unsafe { libc::kill(pid, 0) };
    if rc == 0 {
        // A zombie exists for kill() but is dead for us.
        return !matches!(proc_state(pid), Some('Z') | Some('X'));
    }
    std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

fn proc_stat(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()
}

/// The one-letter state from /proc/<pid>/stat.
fn proc_state(pid: i32) -> Option<char> {
    let stat = proc_stat(pid)?;
    // The command name is in parentheses and may contain spaces.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

fn is_stopped(pid: i32) -> bool {
    matches!(proc_state(pid), Some('T') | Some('t'))
}

/// The postmaster chdirs into its data directory: another cluster's postmaster that
/// reused the pid works elsewhere. Unknown (no access) counts as a match.
fn works_in(pid: i32, data_dir: &Path) -> bool {
    match (
        std::fs::read_link(format!("/proc/{pid}/cwd")),
        std::fs::canonicalize(data_dir),
    ) {
        (Ok(cwd), Ok(dir)) => cwd == dir,
        _ => true,
    }
}

fn is_postgres(pid: i32) -> bool {
    match std::fs::read(format!("/proc/{pid}/cmdline")) {
        Ok(cmd) => {
            let first = cmd.split(|b| *b == 0).next().unwrap_or(&[]);
            let first = String::from_utf8_lossy(first);
            let base = first.rsplit('/').next().unwrap_or("");
            base.starts_with("postgres") || base.starts_with("postmaster")
        }
        // No /proc (or no access): trust kill(0).
        Err(_) => true,
    }
}

/// Sends `sig` to `pid`.
pub fn signal(pid: i32, sig: i32) -> bool {
    // SAFETY: plain syscall.
    pid > 0 && unsafe { libc::kill(pid, sig) } == 0
}

/// A live process whose working directory is `dir` (every postgres process runs in
/// its data directory), if any; processes we may not inspect are skipped.
pub fn process_with_cwd(dir: &std::path::Path) -> Option<i32> {
    let want = std::fs::canonicalize(dir).ok()?;
    let entries = std::fs::read_dir("/proc").ok()?;
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        if let Ok(cwd) = std::fs::read_link(format!("/proc/{pid}/cwd")) {
            if cwd == want && process_exists(pid) {
                return Some(pid);
            }
        }
    }
    None
}

/// Whether `pid` is a zombie: dead, but still in the process table until its parent
/// reaps it (postgres counts it as alive and refuses its lock file).
pub fn is_zombie(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pid > 0
        && unsafe { libc::kill(pid, 0) } == 0
        && matches!(proc_state(pid), Some('Z') | Some('X'))
}

/// A unix-socket lock file (`<dir>/.s.PGSQL.<port>.lock`) that would make postgres
/// refuse to start although nobody uses it: it names a dead-but-unreaped postmaster
/// (a zombie, which postgres counts as alive) or a pid reused by a process that is not
/// postgres. Returns the pid it names. A lock naming a missing pid is left to postgres,
/// which removes such files itself.
pub fn leftover_socket_lock(lock: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(lock).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (is_zombie(pid) || (process_exists(pid) && !is_postgres(pid))).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_absent_garbage_stale_and_foreign() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path()), PidFileState::Absent);
        std::fs::write(d.path().join("postmaster.pid"), "hello\n").unwrap();
        assert!(matches!(read(d.path()), PidFileState::Garbage(_)));
        // pid_max is at most 2^22, so this pid cannot exist.
        std::fs::write(d.path().join("postmaster.pid"), "99999999\n/x\n").unwrap();
        assert_eq!(read(d.path()), PidFileState::Stale(99999999));
        let me = std::process::id() as i32;
        std::fs::write(d.path().join("postmaster.pid"), format!("{me}\n")).unwrap();
        assert_eq!(read(d.path()), PidFileState::Foreign(me));
    }

    #[test]
    fn socket_lock_of_a_zombie_or_foreign_pid_is_a_leftover() {
        let d = tempfile::tempdir().unwrap();
        let lock = d.path().join(".s.PGSQL.5432.lock");
        assert_eq!(leftover_socket_lock(&lock), None, "no file");
        // This test process is alive and not postgres: a reused pid.
        let me = std::process::id() as i32;
        std::fs::write(&lock, format!("{me}\n/data\n")).unwrap();
        assert_eq!(leftover_socket_lock(&lock), Some(me));
        // A child that exited and was not reaped yet is a zombie.
        let child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        let zombie = (0..200).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            is_zombie(pid)
        });
        assert!(zombie, "child never became a zombie");
        std::fs::write(&lock, format!("{pid}\n/data\n")).unwrap();
        assert_eq!(leftover_socket_lock(&lock), Some(pid));
        drop(child);
        // A pid that cannot exist is left to postgres.
        std::fs::write(&lock, "99999999\n").unwrap();
        assert_eq!(leftover_socket_lock(&lock), None);
    }
}
