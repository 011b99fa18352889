//! The write fence: a forked keeper process that SIGKILLs the postmaster's process
//! group at an absolute `CLOCK_MONOTONIC` deadline unless the agent moves the deadline
//! first. It needs nothing from the agent process once armed: a frozen (SIGSTOP), hung
//! or dead agent cannot keep Postgres writable past its lease.
//!
//! Protocol: the agent writes 16-byte messages (`op`, `deadline_ns`, little endian) to
//! a pipe; `op` 1 arms/moves the deadline, 2 disarms, 3 names the pid file (the
//! second field is then the path's length, and the path follows in the same atomic
//! write: a keeper forked before the configuration is loaded learns it so, and holds
//! no copy of the agent's parsed configuration or runtime). On end-of-file (the agent died)
//! the keeper still fires at an armed deadline, then exits. The keeper runs only
//! async-signal-safe system calls (it is forked from a multi-threaded process) and
//! closes every inherited descriptor but its pipe, so it holds no sockets of the agent.

use async_trait::async_trait;
use ha_core::{MonoTime, Watchdog, WatchdogError};
use std::ffi::CString;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Mutex;

const OP_ARM: u64 = 1;
const OP_DISARM: u64 = 2;
const OP_PID_FILE: u64 = 3;
/// The longest pid file path the keeper takes (with its NUL), within `PIPE_BUF` with
/// the message header, so the message is one atomic pipe write.
const PATH_MAX: usize = 4000;

/// Why the fence could not be started.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// The pid file path cannot be passed to the keeper.
    #[error("write fence: invalid pid file path {0:?}")]
    BadPath(std::path::PathBuf),
    /// pipe() or fork() failed.
    #[error("write fence: cannot start keeper process: {0}")]
    Spawn(std::io::Error),
}

/// A running keeper process guarding the postmaster named in a `postmaster.pid` file.
pub struct ProcessFence {
    pipe: Mutex<Option<OwnedFd>>,
    keeper_pid: libc::pid_t,
}

impl ProcessFence {
    /// Forks the keeper. `pid_file` is read when the fence fires, so it always targets
    /// the postmaster running at that moment.
    pub fn spawn(pid_file: &Path) -> Result<ProcessFence, FenceError> {
        ProcessFence::fork_keeper(Some(pid_file), false)
    }

    /// Forks the keeper before the pid file is known, so that it starts small: before
    /// the configuration is loaded and the runtime started, the agent has little
    /// memory the forked keeper would hold copies of. Name the pid file with
    /// [`ProcessFence::bind`] before arming.
    pub fn spawn_unbound() -> Result<ProcessFence, FenceError> {
        ProcessFence::fork_keeper(None, false)
    }

    /// Names the pid file of the postmaster to kill, for a keeper started with
    /// [`ProcessFence::spawn_unbound`].
    pub fn bind(&self, pid_file: &Path) -> Result<(), FenceError> {
        let path = pid_file.as_os_str().as_bytes();
        if path.is_empty() || path.len() >= PATH_MAX || path.contains(&0) {
            return Err(FenceError::BadPath(pid_file.to_path_buf()));
        }
        self.send_with(OP_PID_FILE, path.len() as u64, path)
            .map_err(|e| FenceError::Spawn(std::io::Error::other(e.to_string())))
    }

    /// Forks a keeper that "resets the node" when it fires: it SIGKILLs the agent
    /// (this process, the keeper's parent) before the postmaster and its children, as a
    /// hardware watchdog's reboot would end both. The software stand-in for
    /// `/dev/watchdog` (`watchdog.driver: testing`).
    pub fn spawn_resetting(pid_file: &Path) -> Result<ProcessFence, FenceError> {
        ProcessFence::fork_keeper(Some(pid_file), true)
    }

    fn fork_keeper(pid_file: Option<&Path>, reset_agent: bool) -> Result<ProcessFence, FenceError> {
        // SAFETY: getpid has no preconditions.
        let agent = if reset_agent {
            unsafe { libc::getpid() }
        } else {
            0
        };
        let path = match pid_file {
            Some(p) if p.as_os_str().len() < PATH_MAX => CString::new(p.as_os_str().as_bytes())
                .map_err(|_| FenceError::BadPath(p.to_path_buf()))?,
            Some(p) => return Err(FenceError::BadPath(p.to_path_buf())),
            None => CString::default(),
        };
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: pipe2 writes two descriptors into the array we own.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(FenceError::Spawn(std::io::Error::last_os_error()));
        }
        // SAFETY: after fork the child only runs `keeper_main`, which uses
        // async-signal-safe system calls and never returns.
        let pid = unsafe { libc::fork() };
        if pid < 0 {
            let e = std::io::Error::last_os_error();
            // SAFETY: closing descriptors we created above.
            unsafe {
                libc::close(fds[0]);
                libc::close(fds[1]);
            }
            return Err(FenceError::Spawn(e));
        }
        if pid == 0 {
            // SAFETY: in the child; see keeper_main.
            unsafe { keeper_main(fds[0], path.as_ptr(), agent) }
        }
        // SAFETY: the read end belongs to the child now; the write end is ours.
        unsafe { libc::close(fds[0]) };
        let write = unsafe { OwnedFd::from_raw_fd(fds[1]) };
        Ok(ProcessFence {
            pipe: Mutex::new(Some(write)),
            keeper_pid: pid,
        })
    }

    /// The keeper's process id.
    pub fn keeper_pid(&self) -> i32 {
        self.keeper_pid
    }

    fn send(&self, op: u64, deadline: u64) -> Result<(), WatchdogError> {
        self.send_with(op, deadline, &[])
    }

    fn send_with(&self, op: u64, value: u64, tail: &[u8]) -> Result<(), WatchdogError> {
        let guard = self
            .pipe
            .lock()
            .map_err(|_| WatchdogError::Failed("fence lock poisoned".into()))?;
        let fd = guard
            .as_ref()
            .ok_or_else(|| WatchdogError::Unavailable("fence closed".into()))?;
        let mut msg = Vec::with_capacity(16 + tail.len());
        msg.extend_from_slice(&op.to_le_bytes());
        msg.extend_from_slice(&value.to_le_bytes());
        msg.extend_from_slice(tail);
        use std::os::fd::AsRawFd;
        // SAFETY: writing our buffer to our pipe; ≤ PIPE_BUF (tail < PATH_MAX) so atomic.
        let n = unsafe { libc::write(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len()) };
        if n != msg.len() as isize {
            return Err(WatchdogError::Unavailable(format!(
                "write fence keeper is gone: {}",
                std::io::Error::last_os_error()
            )));
        }
        Ok(())
    }

    /// Closes the pipe without disarming, as a crashing agent would: an armed keeper
    /// still fires at its deadline. For tests and for the agent's own fatal exits.
    pub fn abandon(self) {
        if let Ok(mut g) = self.pipe.lock() {
            g.take();
        }
        std::mem::forget(self);
    }
}

impl Drop for ProcessFence {
    fn drop(&mut self) {
        let _ = self.send(OP_DISARM, 0);
        if let Ok(mut g) = self.pipe.lock() {
            g.take();
        }
        // SAFETY: reaping our own child; WNOHANG never blocks. A keeper that has not
        // exited yet is reaped by init (or by the agent's zombie reaper as PID 1).
        unsafe {
            libc::waitpid(self.keeper_pid, std::ptr::null_mut(), libc::WNOHANG);
        }
    }
}

impl ProcessFence {
    /// Arms the keeper or moves its deadline (a non-blocking pipe write).
    pub fn arm_now(&self, deadline: MonoTime) -> Result<(), WatchdogError> {
        self.send(OP_ARM, deadline.0.max(1))
    }

    /// Disarms the keeper (a non-blocking pipe write).
    pub fn disarm_now(&self) -> Result<(), WatchdogError> {
        self.send(OP_DISARM, 0)
    }
}

#[async_trait]
impl Watchdog for ProcessFence {
    async fn arm_until(&self, deadline: MonoTime) -> Result<(), WatchdogError> {
        self.arm_now(deadline)
    }

    async fn disarm(&self) -> Result<(), WatchdogError> {
        self.disarm_now()
    }
}

/// The keeper process. Only async-signal-safe calls; never returns. `agent` > 0 is
/// killed first when the deadline passes.
unsafe fn keeper_main(fd: libc::c_int, pid_file: *const libc::c_char, mut agent: libc::pid_t) -> ! {
    // The pid file's path, NUL-terminated; empty until named.
    let mut path = [0u8; PATH_MAX];
    let given = libc::strlen(pid_file).min(PATH_MAX - 1);
    std::ptr::copy_nonoverlapping(pid_file.cast::<u8>(), path.as_mut_ptr(), given);
    // Hold nothing of the agent's: no sockets, no listening ports.
    let max = libc::sysconf(libc::_SC_OPEN_MAX).clamp(256, 65536) as libc::c_int;
    for other in 3..max {
        if other != fd {
            libc::close(other);
        }
    }
    // Ignore terminal signals meant for the agent's process group.
    libc::signal(libc::SIGINT, libc::SIG_IGN);
    libc::signal(libc::SIGHUP, libc::SIG_IGN);
    let mut deadline: u64 = 0;
    let mut eof = false;
    loop {
        let now = monotonic_ns();
        if deadline != 0 && now >= deadline {
            if agent > 1 {
                // First the agent, so it cannot restart Postgres meanwhile.
                libc::kill(agent, libc::SIGKILL);
            }
            if path[0] != 0 {
                kill_postmaster(path.as_ptr().cast());
            }
            deadline = 0;
        }
        if eof && deadline == 0 {
            libc::_exit(0);
        }
        let timeout_ms: libc::c_int = if deadline == 0 {
            -1
        } else {
            ((deadline - now) / 1_000_000 + 1).min(i32::MAX as u64) as libc::c_int
        };
        if eof {
            let ts = libc::timespec {
                tv_sec: (timeout_ms / 1000) as libc::time_t,
                tv_nsec: ((timeout_ms % 1000) as libc::c_long) * 1_000_000,
            };
            libc::nanosleep(&ts, std::ptr::null_mut());
            continue;
        }
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let r = libc::poll(&mut pfd, 1, timeout_ms);
        if r <= 0 {
            continue;
        }
        let mut buf = [0u8; 16];
        let n = libc::read(fd, buf.as_mut_ptr().cast(), 16);
        if n == 0 {
            eof = true;
            // The agent is gone: its pid may be reused, never kill it now.
            agent = 0;
        } else if n == 16 {
            let mut op = [0u8; 8];
            let mut dl = [0u8; 8];
            op.copy_from_slice(&buf[..8]);
            dl.copy_from_slice(&buf[8..]);
            match u64::from_le_bytes(op) {
                OP_ARM => deadline = u64::from_le_bytes(dl),
                OP_DISARM => deadline = 0,
                OP_PID_FILE => {
                    let len = u64::from_le_bytes(dl) as usize;
                    if len < PATH_MAX && read_exact(fd, &mut path[..len]) {
                        path[len] = 0;
                    }
                }
                _ => {}
            }
        } else if n < 0 && *libc::__errno_location() != libc::EINTR {
            eof = true;
            agent = 0;
        }
    }
}

/// Reads exactly `buf.len()` bytes (the rest of one atomic write); false on error.
unsafe fn read_exact(fd: libc::c_int, buf: &mut [u8]) -> bool {
    let mut got = 0;
    while got < buf.len() {
        let n = libc::read(fd, buf[got..].as_mut_ptr().cast(), buf.len() - got);
        if n > 0 {
            got += n as usize;
        } else if n == 0 || *libc::__errno_location() != libc::EINTR {
            return false;
        }
    }
    true
}

unsafe fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts);
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Reads the postmaster pid from the first line of the pid file and kills the
/// postmaster and all its children. Postgres puts every child in its own session, so
/// a process-group kill is not enough: the postmaster is stopped first (it cannot fork
/// or be reparented away meanwhile), its children are found in /proc and killed, then
/// the postmaster itself.
unsafe fn kill_postmaster(pid_file: *const libc::c_char) {
    let f = libc::open(pid_file, libc::O_RDONLY | libc::O_CLOEXEC);
    if f < 0 {
        return;
    }
    let mut buf = [0u8; 32];
    let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
    libc::close(f);
    if n <= 0 {
        return;
    }
    let pid = parse_leading_int(&buf[..n as usize]);
    if pid <= 1 {
        return;
    }
    libc::kill(pid, libc::SIGSTOP);
    kill_children_of(pid);
    libc::kill(pid, libc::SIGKILL);
    // A child forked between the scan and the stop would be missed: scan once more.
    kill_children_of(pid);
}

fn parse_leading_int(bytes: &[u8]) -> libc::pid_t {
    let mut v: libc::pid_t = 0;
    for &b in bytes {
        if !b.is_ascii_digit() {
            break;
        }
        v = v
            .saturating_mul(10)
            .saturating_add((b - b'0') as libc::pid_t);
    }
    v
}

/// SIGKILLs every process whose parent is `parent`, scanning /proc with raw
/// getdents64 and fixed buffers (no allocation in the forked keeper).
unsafe fn kill_children_of(parent: libc::pid_t) {
    let dir = libc::open(
        c"/proc".as_ptr(),
        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
    );
    if dir < 0 {
        return;
    }
    let mut entries = [0u8; 8192];
    loop {
        let n = libc::syscall(
            libc::SYS_getdents64,
            dir,
            entries.as_mut_ptr(),
            entries.len(),
        );
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            // struct linux_dirent64: ino u64, off i64, reclen u16, type u8, name[].
            let reclen = u16::from_ne_bytes([entries[off + 16], entries[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name = &entries[off + 19..off + reclen];
            let len = name.iter().position(|&b| b == 0).unwrap_or(name.len());
            let name = &name[..len];
            if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
                let child = parse_leading_int(name);
                if parent_of(name) == Some(parent) {
                    libc::kill(child, libc::SIGKILL);
                }
            }
            off += reclen;
        }
    }
    libc::close(dir);
}

/// The parent pid from /proc/<pid>/stat (fourth field, after the `)` of the name).
unsafe fn parent_of(pid_name: &[u8]) -> Option<libc::pid_t> {
    let mut path = [0u8; 32];
    let prefix = b"/proc/";
    let suffix = b"/stat";
    if prefix.len() + pid_name.len() + suffix.len() >= path.len() {
        return None;
    }
    path[..prefix.len()].copy_from_slice(prefix);
    path[prefix.len()..prefix.len() + pid_name.len()].copy_from_slice(pid_name);
    let end = prefix.len() + pid_name.len();
    path[end..end + suffix.len()].copy_from_slice(suffix);
    let f = libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC);
    if f < 0 {
        return None;
    }
    let mut buf = [0u8; 512];
    let n = libc::read(f, buf.as_mut_ptr().cast(), buf.len());
    libc::close(f);
    if n <= 0 {
        return None;
    }
    let stat = &buf[..n as usize];
    let close = stat.iter().rposition(|&b| b == b')')?;
    // ") S 1234 ..." : skip ") ", the state letter and a space.
    let rest = stat.get(close + 4..)?;
    Some(parse_leading_int(rest))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command};
    use std::time::Duration;

    /// A process in its own process group, standing in for a postmaster.
    fn victim(dir: &Path) -> (Child, std::path::PathBuf) {
        let child = Command::new("sleep")
            .arg("1000")
            .process_group(0)
            .spawn()
            .expect("spawn sleep");
        let pid_file = dir.join("postmaster.pid");
        std::fs::write(&pid_file, format!("{}\n/data\n", child.id())).expect("pid file");
        (child, pid_file)
    }

    fn exited(child: &mut Child, within: Duration) -> bool {
        let end = std::time::Instant::now() + within;
        while std::time::Instant::now() < end {
            if child.try_wait().ok().flatten().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    fn in_ms(ms: u64) -> MonoTime {
        ha_core::clock::monotonic_now().plus(Duration::from_millis(ms))
    }

    #[tokio::test]
    async fn fires_at_the_deadline_unless_extended() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, pid_file) = victim(dir.path());
        let fence = ProcessFence::spawn(&pid_file).expect("fence");
        // Kept alive while the deadline keeps moving.
        for _ in 0..8 {
            fence.arm_until(in_ms(300)).await.expect("arm");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            child.try_wait().expect("wait").is_none(),
            "fence fired although extended"
        );
        // Not extended any more: killed.
        assert!(
            exited(&mut child, Duration::from_secs(3)),
            "fence did not fire"
        );
        drop(fence);
    }

    #[tokio::test]
    async fn a_keeper_forked_before_the_pid_file_is_known_fires_once_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, pid_file) = victim(dir.path());
        let fence = ProcessFence::spawn_unbound().expect("fence");
        fence.bind(&pid_file).expect("bind");
        fence.arm_until(in_ms(200)).await.expect("arm");
        assert!(
            exited(&mut child, Duration::from_secs(3)),
            "fence did not fire"
        );
        drop(fence);
        // A path the keeper cannot take is refused, not cut short.
        let fence = ProcessFence::spawn_unbound().expect("fence");
        let long = dir.path().join("x".repeat(PATH_MAX));
        assert!(matches!(fence.bind(&long), Err(FenceError::BadPath(_))));
    }

    #[tokio::test]
    async fn kills_children_in_their_own_sessions_too() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A "postmaster" whose "backend" runs in its own session, as Postgres does.
        let mut pm = Command::new("sh")
            .arg("-c")
            .arg("setsid sleep 1000 & echo $! > \"$0\"/backend.pid; wait")
            .arg(dir.path())
            .process_group(0)
            .spawn()
            .expect("spawn");
        let pid_file = dir.path().join("postmaster.pid");
        std::fs::write(&pid_file, format!("{}\n", pm.id())).expect("pid file");
        let backend_file = dir.path().join("backend.pid");
        let mut backend = 0;
        for _ in 0..100 {
            if let Ok(s) = std::fs::read_to_string(&backend_file) {
                if let Ok(p) = s.trim().parse::<i32>() {
                    backend = p;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(backend > 0, "backend did not start");
        let fence = ProcessFence::spawn(&pid_file).expect("fence");
        fence.arm_until(in_ms(100)).await.expect("arm");
        assert!(
            exited(&mut pm, Duration::from_secs(3)),
            "postmaster not killed"
        );
        let mut gone = false;
        for _ in 0..100 {
            // SAFETY: probing a pid with signal 0.
            if unsafe { libc::kill(backend, 0) } != 0 {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        assert!(gone, "backend in its own session survived the fence");
        drop(fence);
    }

    #[tokio::test]
    async fn disarmed_fence_does_not_fire() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, pid_file) = victim(dir.path());
        let fence = ProcessFence::spawn(&pid_file).expect("fence");
        fence.arm_until(in_ms(200)).await.expect("arm");
        fence.disarm().await.expect("disarm");
        assert!(!exited(&mut child, Duration::from_millis(600)));
        drop(fence);
        let _ = child.kill();
        let _ = child.wait();
    }

    #[tokio::test]
    async fn fires_even_after_the_agent_is_gone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (mut child, pid_file) = victim(dir.path());
        let fence = ProcessFence::spawn(&pid_file).expect("fence");
        fence.arm_until(in_ms(300)).await.expect("arm");
        // The agent dies without disarming: the keeper still fires.
        fence.abandon();
        assert!(
            exited(&mut child, Duration::from_secs(3)),
            "fence did not fire after the agent vanished"
        );
    }
}
