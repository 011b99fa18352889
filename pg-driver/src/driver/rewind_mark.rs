//! A pg_rewind that did not finish. pg_rewind copies the source's files over the
//! target's in place; cut short after it began copying (its source died, the machine
//! went down, the agent was killed and the pg_rewind it left behind was too) it leaves
//! a mix of both servers' files. Such a data directory must not start (it would serve,
//! or even lead with, a broken copy), and a second pg_rewind cannot repair it: it
//! finds the divergence in WAL the first one already replaced with the source's
//! (PostgreSQL's advice is a fresh copy).
//!
//! pg_rewind removes every file of the target that the source does not have, so the
//! mark lives next to the data directory: `<data_dir>.fullauto-rewind`, holding the
//! source's name. It is written before pg_rewind starts and removed once it finished,
//! or failed before it changed anything.

use crate::controldata::ControlData;
use std::path::{Path, PathBuf};

/// What the mark says about the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum RewindMark {
    /// No pg_rewind left unfinished here.
    Clear,
    /// A pg_rewind (started by an earlier run of the agent) still works on it.
    Running(i32),
    /// The unfinished-looking pg_rewind did finish: pg_control and `backup_label` are
    /// what pg_rewind writes last.
    Completed,
    /// Half-rewound from `source`.
    Interrupted {
        /// The member it was rewound from.
        source: String,
    },
}

/// `<data_dir>.fullauto-rewind`, `None` for a data directory without a parent.
fn path(data_dir: &Path) -> Option<PathBuf> {
    let name = data_dir.file_name()?;
    let mut file = name.to_os_string();
    file.push(".fullauto-rewind");
    Some(data_dir.with_file_name(file))
}

/// Records that pg_rewind from `source` starts on `data_dir`. A mark that cannot be
/// written (a parent directory the agent may not write) only costs the detection.
pub(super) fn begin(data_dir: &Path, source: &str) {
    let Some(p) = path(data_dir) else { return };
    if let Err(e) = std::fs::write(&p, format!("{source}\n")) {
        tracing::warn!(
            "cannot write {} ({e}): a pg_rewind cut short would go unnoticed; let the agent write the data directory's parent",
            p.display()
        );
    }
}

/// The data directory is whole again (rewound, removed, or left untouched).
pub(super) fn clear(data_dir: &Path) {
    let Some(p) = path(data_dir) else { return };
    match std::fs::remove_file(&p) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", p.display()),
    }
}

/// Whether a mark exists at all (no pg_controldata needed to say `Clear`).
pub(super) fn present(data_dir: &Path) -> bool {
    path(data_dir).is_some_and(|p| p.exists())
}

/// What the mark of `data_dir` means now, given its pg_control.
pub(super) fn state(data_dir: &Path, control: Option<&ControlData>) -> RewindMark {
    let Some(source) = path(data_dir).and_then(|p| std::fs::read_to_string(p).ok()) else {
        return RewindMark::Clear;
    };
    if let Some(pid) = running_rewind(data_dir) {
        return RewindMark::Running(pid);
    }
    let finished = control.is_some_and(|c| c.cluster_state == "in archive recovery")
        && data_dir.join("backup_label").exists();
    if finished {
        return RewindMark::Completed;
    }
    RewindMark::Interrupted {
        source: source.trim().to_string(),
    }
}

/// Whether pg_rewind's output shows it began changing the target: it says how much it
/// will copy (with `--progress`) right before its point of no return.
pub(super) fn began_copying(output: &str) -> bool {
    output.contains("need to copy")
}

/// The pid of a live pg_rewind whose target is `data_dir`.
fn running_rewind(data_dir: &Path) -> Option<i32> {
    let target = format!("--target-pgdata={}", data_dir.display());
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: i32 = e.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        let mut args = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned());
        let tool = args.next()?;
        let is_rewind = Path::new(&tool)
            .file_name()
            .is_some_and(|n| n == "pg_rewind");
        (is_rewind && args.any(|a| a == target)).then_some(pid)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mark_sits_beside_the_data_directory() {
        assert_eq!(
            path(Path::new("/var/lib/postgresql/15/main")),
            Some(PathBuf::from("/var/lib/postgresql/15/main.fullauto-rewind"))
        );
        assert_eq!(path(Path::new("/")), None);
    }

    #[test]
    fn copying_began_only_once_the_amount_was_said() {
        assert!(!began_copying(
            "pg_rewind: servers diverged at WAL location 0/3000060 on timeline 1\n\
             pg_rewind: error: could not connect to server"
        ));
        assert!(began_copying(
            "pg_rewind: need to copy 53 MB (total source directory size is 120 MB)\n\
             pg_rewind: error: could not fetch remote file"
        ));
    }
}
