//! Real Patroni agents in a test cluster, next to fullauto's: Debian's `patroni`
//! package (3.0.2, installed by scripts/setup) and PyPI's `patroni[etcd3]` 4.1 in a
//! virtualenv made once per machine under /var/tmp. Patroni runs as the postgres OS
//! user (PostgreSQL refuses root), with the node's config file as written by the harness.

use super::{postgres_ids, Cluster};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Which Patroni a node runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Patroni {
    /// Debian 12's package: /usr/bin/patroni.
    V3,
    /// PyPI's 4.1 series in a virtualenv.
    V4,
}

/// The virtualenv holding Patroni 4.1; its scripts name this path, so it is made in place.
const VENV: &str = "/var/tmp/fullauto-patroni-4.1";
/// Written last by the set-up: a virtualenv without it is incomplete and made again.
const VENV_DONE: &str = ".fullauto-complete";

impl Patroni {
    /// Path of one of its programs (`patroni`, `patronictl`); makes the virtualenv of
    /// 4.1 on first use.
    pub fn program(self, name: &str) -> PathBuf {
        match self {
            Patroni::V3 => {
                let p = PathBuf::from("/usr/bin").join(name);
                assert!(
                    p.exists(),
                    "{} missing: run scripts/setup (Debian package patroni)",
                    p.display()
                );
                p
            }
            Patroni::V4 => venv().join("bin").join(name),
        }
    }

    /// The version a member of this kind writes into its member key.
    pub fn version_prefix(self) -> &'static str {
        match self {
            Patroni::V3 => "3.0.",
            Patroni::V4 => "4.1.",
        }
    }
}

/// The Patroni 4.1 virtualenv, made once per machine (under an exclusive lock so that
/// parallel tests wait for one set-up).
fn venv() -> PathBuf {
    let dir = PathBuf::from(VENV);
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(format!("{VENV}.lock"))
        .expect("venv lock file");
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a descriptor we own; released when `lock` is closed.
    assert_eq!(unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) }, 0);
    if !dir.join(VENV_DONE).exists() {
        let _ = std::fs::remove_dir_all(&dir);
        run(Command::new("/usr/bin/python3").args(["-m", "venv", VENV]));
        run(Command::new(dir.join("bin/pip")).args([
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "patroni[etcd3]==4.1.*",
            "psycopg2-binary",
        ]));
        std::fs::write(dir.join(VENV_DONE), "").expect("venv marker");
    }
    dir
}

fn run(cmd: &mut Command) {
    let out = cmd.output().expect("run set-up command");
    assert!(
        out.status.success(),
        "{cmd:?} failed (python3-venv and PyPI needed): {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Cluster {
    /// Starts Patroni `kind` as node `i`'s agent, on the node's config file.
    pub fn start_patroni(&mut self, i: usize, kind: Patroni) {
        let program = kind.program("patroni");
        let n = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&n.log)
            .expect("log");
        let err = log.try_clone().expect("log");
        let (uid, gid) = postgres_ids();
        let child = Command::new(program)
            .arg(&n.config)
            .uid(uid)
            .gid(gid)
            .current_dir("/")
            .env("HOME", n.data_dir.parent().unwrap_or(Path::new("/")))
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("spawn patroni");
        n.child = Some(child);
    }

    /// Runs `patronictl -c <node i's config> args…` of Patroni `kind`: exit success
    /// and stdout+stderr.
    pub fn patronictl(&self, kind: Patroni, i: usize, args: &[&str]) -> (bool, String) {
        let out = Command::new(kind.program("patronictl"))
            .arg("-c")
            .arg(&self.nodes[i].config)
            .args(args)
            .env("PAGER", "cat")
            .stdin(Stdio::null())
            .output()
            .expect("run patronictl");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }
}
