//! Small disks for the nodes' data directories, so a fault can fill one: each node's
//! data directory lives on its own tmpfs (`size` below), and filling it writes a file
//! beside the data directory until the filesystem says it is full. Where tmpfs cannot be
//! mounted (no privilege), the data directories stay where the harness puts them and
//! disk faults are skipped, saying why.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// Room on each node's disk: the data directory of a chaos run (initdb, WAL kept for
/// replicas, a clone in progress) stays well under it.
const SIZE: &str = "512m";

pub struct Disks {
    dir: tempfile::TempDir,
    nodes: usize,
    /// Why there are no disks, when there are none.
    pub missing: Option<String>,
}

impl Disks {
    /// One tmpfs per node, owned by `postgres`; none when mounting fails.
    pub fn mount(nodes: usize) -> Disks {
        let dir = tempfile::Builder::new()
            .prefix("fullauto-chaos-disks-")
            .tempdir()
            .expect("disks dir");
        let (uid, gid) = crate::support::postgres_ids();
        for i in 0..nodes {
            let at = dir.path().join(format!("pg{i}"));
            std::fs::create_dir_all(&at).expect("disk mount point");
            let out = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={SIZE},mode=0755")])
                .arg("tmpfs")
                .arg(&at)
                .output();
            let failed = match out {
                Ok(o) if o.status.success() => None,
                Ok(o) => Some(String::from_utf8_lossy(&o.stderr).trim().to_string()),
                Err(e) => Some(e.to_string()),
            };
            if let Some(why) = failed {
                // Those mounted so far go again; the data directories stay in the
                // harness's place.
                let mut disks = Disks {
                    dir,
                    nodes: i,
                    missing: None,
                };
                disks.unmount();
                disks.missing = Some(format!("no tmpfs for the data directories: {why}"));
                return disks;
            }
            std::os::unix::fs::chown(&at, Some(uid), Some(gid)).expect("chown disk");
        }
        Disks {
            dir,
            nodes,
            missing: None,
        }
    }

    fn mount_point(&self, i: usize) -> Option<PathBuf> {
        self.missing
            .is_none()
            .then(|| self.dir.path().join(format!("pg{i}")))
    }

    /// Node `i`'s data directory on its disk, if there are disks.
    pub fn data_dir(&self, i: usize) -> Option<PathBuf> {
        self.mount_point(i).map(|m| m.join("data"))
    }

    /// Fills node `i`'s disk; returns how many MiB it took.
    pub fn fill(&self, i: usize) -> Result<u64, String> {
        let at = self
            .mount_point(i)
            .ok_or_else(|| self.missing.clone().unwrap_or_default())?;
        let mut f = std::fs::File::create(at.join("filler")).map_err(|e| e.to_string())?;
        let chunk = vec![0u8; 1 << 20];
        let mut written = 0;
        while f.write_all(&chunk).is_ok() {
            written += 1;
        }
        let _ = f.flush();
        Ok(written)
    }

    /// Frees what [`Disks::fill`] took on node `i`'s disk.
    pub fn free(&self, i: usize) {
        if let Some(at) = self.mount_point(i) {
            let _ = std::fs::remove_file(at.join("filler"));
        }
    }

    fn unmount(&self) {
        for i in 0..self.nodes {
            let at = self.dir.path().join(format!("pg{i}"));
            // Lazy: a process still holding a file there (a backend exiting) does not
            // keep the mount.
            let _ = Command::new("umount").arg("-l").arg(&at).output();
        }
    }
}

impl Drop for Disks {
    fn drop(&mut self) {
        if self.missing.is_none() {
            self.unmount();
        }
    }
}
