//! Runs server tools as the OS user that owns the data directory: as root the child
//! switches uid/gid (and drops supplementary groups) before exec; otherwise it runs
//! as ourselves.

use crate::error::{DriverError, Result};
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::process::Command;

/// The OS identity server processes run as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OsUser {
    /// Login name.
    pub name: String,
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Home directory.
    pub home: PathBuf,
    /// Whether we must switch to it (we are root and it is not root).
    pub switch: bool,
}

impl OsUser {
    /// The user to run as: `configured` (default `postgres`) when we are root,
    /// otherwise ourselves.
    pub fn resolve(configured: Option<&str>) -> Result<Self> {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        if euid != 0 {
            return lookup_uid(euid).map(|mut u| {
                u.switch = false;
                u
            });
        }
        let name = configured.unwrap_or("postgres");
        let mut u = lookup_name(name)?;
        u.switch = u.uid != 0;
        if !u.switch {
            return Err(DriverError::Config(
                "os_user is root: PostgreSQL refuses to run as root; set os_user to an unprivileged user".into(),
            ));
        }
        Ok(u)
    }
}

fn passwd_to_user(pw: &libc::passwd) -> OsUser {
    // SAFETY: getpwnam_r filled these with valid NUL-terminated strings.
    let name = unsafe { CStr::from_ptr(pw.pw_name) }
        .to_string_lossy()
        .into_owned();
    let home = unsafe { CStr::from_ptr(pw.pw_dir) }
        .to_string_lossy()
        .into_owned();
    OsUser {
        name,
        uid: pw.pw_uid,
        gid: pw.pw_gid,
        home: PathBuf::from(home),
        switch: false,
    }
}

fn lookup_name(name: &str) -> Result<OsUser> {
    let cname = CString::new(name)
        .map_err(|_| DriverError::Config(format!("os_user `{name}` contains NUL")))?;
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: zeroed passwd is a valid out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: all pointers are valid for the call; buf outlives the use of pw.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pw,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc != 0 || result.is_null() {
        return Err(DriverError::Config(format!(
            "OS user `{name}` does not exist: create it (the Debian postgresql package creates `postgres`) or set os_user"
        )));
    }
    Ok(passwd_to_user(&pw))
}

fn lookup_uid(uid: u32) -> Result<OsUser> {
    let mut buf = vec![0 as libc::c_char; 16384];
    // SAFETY: as in lookup_name.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() {
        return Ok(OsUser {
            name: uid.to_string(),
            uid,
            gid: unsafe { libc::getegid() },
            home: PathBuf::from("/"),
            switch: false,
        });
    }
    Ok(passwd_to_user(&pw))
}

/// What a finished tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    /// Exit success.
    pub success: bool,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl ToolOutput {
    /// stderr (or stdout when stderr is empty), trimmed to its last 2000 bytes.
    pub fn message(&self) -> String {
        let text = if self.stderr.trim().is_empty() {
            &self.stdout
        } else {
            &self.stderr
        };
        tail_chars(text.trim(), 2000)
    }
}

/// The last `max` bytes of `s`, on a char boundary.
pub fn tail_chars(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    s[start..].to_string()
}

/// Builds and runs tool commands as the configured OS user.
#[derive(Debug, Clone)]
pub struct Runner {
    user: OsUser,
}

impl Runner {
    /// A runner for `user`.
    pub fn new(user: OsUser) -> Self {
        Runner { user }
    }

    /// The OS user.
    pub fn user(&self) -> &OsUser {
        &self.user
    }

    /// A command for `program` with a clean, predictable environment.
    pub fn command(&self, program: &Path, english: bool) -> Command {
        let mut c = Command::new(program);
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str() {
                // libpq and the server read these; only what we pass must count.
                if k.starts_with("PG") {
                    c.env_remove(k);
                }
            }
        }
        if english {
            c.env("LC_ALL", "C");
        }
        c.env("HOME", &self.user.home)
            .env("USER", &self.user.name)
            .env("LOGNAME", &self.user.name)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if self.user.switch {
            // std calls setgroups(0) before setuid when we are root. The other user
            // may not be allowed into our cwd (e.g. /root).
            c.uid(self.user.uid).gid(self.user.gid).current_dir("/");
        }
        // Otherwise the agent's cwd, as Patroni's commands get: custom bootstrap and
        // replica methods, scripts and callbacks may name files relative to it.
        c
    }

    /// Runs `cmd` to completion within `timeout`. A timeout, or dropping the future
    /// (a cancelled action), kills the child, and its whole process group when the
    /// command was started in a group of its own.
    pub async fn run(&self, tool: &str, mut cmd: Command, timeout: Duration) -> Result<ToolOutput> {
        let child = cmd.spawn().map_err(|e| DriverError::Tool {
            tool: tool.into(),
            output: format!("could not start: {e}"),
        })?;
        let mut group = GroupGuard::of(child.id());
        let result = tokio::time::timeout(timeout, child.wait_with_output()).await;
        if result.is_ok() {
            group.disarm();
        }
        match result {
            Err(_) => Err(DriverError::Timeout(format!(
                "{tool} did not finish within {}s",
                timeout.as_secs()
            ))),
            Ok(Err(e)) => Err(DriverError::Tool {
                tool: tool.into(),
                output: e.to_string(),
            }),
            Ok(Ok(out)) => Ok(ToolOutput {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }

    /// Runs and turns a non-zero exit into `DriverError::Tool`.
    pub async fn run_ok(&self, tool: &str, cmd: Command, timeout: Duration) -> Result<ToolOutput> {
        let out = self.run(tool, cmd, timeout).await?;
        if out.success {
            Ok(out)
        } else {
            Err(DriverError::Tool {
                tool: tool.into(),
                output: out.message(),
            })
        }
    }

    /// Gives `path` to the OS user (when we are root) with `mode`.
    pub fn own(&self, path: &Path, mode: u32) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if self.user.switch {
            std::os::unix::fs::chown(path, Some(self.user.uid), Some(self.user.gid))
                .map_err(|e| DriverError::io("chown", path, e))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| DriverError::io("chmod", path, e))
    }

    /// Writes a file owned by the OS user, atomically (temp file + rename).
    pub fn write_file(&self, path: &Path, contents: &str, mode: u32) -> Result<()> {
        let tmp = path.with_extension("fullauto-tmp");
        std::fs::write(&tmp, contents).map_err(|e| DriverError::io("write", &tmp, e))?;
        self.own(&tmp, mode)?;
        std::fs::rename(&tmp, path).map_err(|e| DriverError::io("rename to", path, e))
    }

    /// Writes a file owned by the OS user and flushes it and its directory to disk
    /// before returning (for files the server trusts after a crash, like slot state).
    pub fn write_durable(&self, path: &Path, contents: &[u8], mode: u32) -> Result<()> {
        use std::io::Write;
        let tmp = path.with_extension("fullauto-tmp");
        let mut f = std::fs::File::create(&tmp).map_err(|e| DriverError::io("create", &tmp, e))?;
        f.write_all(contents)
            .and_then(|_| f.sync_all())
            .map_err(|e| DriverError::io("write", &tmp, e))?;
        self.own(&tmp, mode)?;
        std::fs::rename(&tmp, path).map_err(|e| DriverError::io("rename to", path, e))?;
        if let Some(dir) = path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| DriverError::io("sync", dir, e))?;
        }
        Ok(())
    }

    /// Creates `dir` (and parents) with the last component owned by the OS user.
    pub fn create_dir(&self, dir: &Path, mode: u32) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| DriverError::io("create", dir, e))?;
        self.own(dir, mode)
    }

    /// Removes `dir` when it is empty, so a custom command finds no data directory, as
    /// under Patroni (whose scripts may copy a whole tree into place). Only when the
    /// commands' user may create it again: they run as the agent's own user, or that
    /// user owns the parent directory.
    pub fn vacate_empty_dir(&self, dir: &Path) -> Result<()> {
        use std::os::unix::fs::MetadataExt;
        let parent_is_theirs = dir
            .parent()
            .and_then(|p| std::fs::metadata(p).ok())
            .is_some_and(|m| m.uid() == self.user.uid);
        if self.user.switch && !parent_is_theirs {
            return Ok(());
        }
        match std::fs::remove_dir(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            // Not empty (or not removable): leave it as it is.
            Err(_) => Ok(()),
        }
    }
}

/// Kills a child's process group when dropped while armed: a command cancelled or
/// timed out must not leave the processes it started behind (a backup script's
/// download, pg_basebackup's WAL streamer).
struct GroupGuard {
    /// The group id, when the child leads a group of its own.
    group: Option<i32>,
}

impl GroupGuard {
    fn of(pid: Option<u32>) -> Self {
        let group = pid.and_then(|p| i32::try_from(p).ok()).filter(|&p| {
            // SAFETY: getpgid only reads the process table.
            p > 0 && unsafe { libc::getpgid(p) } == p
        });
        GroupGuard { group }
    }

    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(g) = self.group {
            // SAFETY: signals only the group the child leads; it was checked at spawn.
            unsafe {
                libc::kill(-g, libc::SIGKILL);
            }
        }
    }
}
