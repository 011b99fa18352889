//! Inspects the data directory before anything touches it: does it exist, is it
//! empty, does it hold a cluster, and may the server's OS user use it.

use crate::error::{DriverError, Result};
use crate::runner::OsUser;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What is at `data_dir`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DirContents {
    /// Nothing there.
    Missing,
    /// An empty directory.
    Empty,
    /// A PostgreSQL cluster (`PG_VERSION` present).
    Cluster,
    /// Something else; never touched.
    Foreign(String),
}

/// Classifies what `data_dir` holds.
pub fn contents(data_dir: &Path) -> Result<DirContents> {
    let meta = match std::fs::symlink_metadata(data_dir) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(DirContents::Missing),
        Err(e) => return Err(DriverError::io("inspect", data_dir, e)),
    };
    if !meta.is_dir()
        && !std::fs::metadata(data_dir)
            .map(|m| m.is_dir())
            .unwrap_or(false)
    {
        return Ok(DirContents::Foreign("it is not a directory".into()));
    }
    let mut entries = std::fs::read_dir(data_dir)
        .map_err(|e| DriverError::io("read", data_dir, e))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        // A mount point's lost+found does not count as data.
        .filter(|n| n != "lost+found");
    let first = entries.next();
    match first {
        None => Ok(DirContents::Empty),
        Some(_) if data_dir.join("PG_VERSION").is_file() => Ok(DirContents::Cluster),
        Some(f) => Ok(DirContents::Foreign(format!(
            "not empty (contains {f}) and holds no PostgreSQL cluster (no PG_VERSION); move its contents away"
        ))),
    }
}

/// Checks owner and mode the way the postmaster will.
pub fn check_access(data_dir: &Path, user: &OsUser) -> Result<()> {
    let meta = std::fs::metadata(data_dir).map_err(|e| DriverError::io("inspect", data_dir, e))?;
    if meta.uid() != user.uid {
        return Err(DriverError::DataDirOwner {
            path: data_dir.to_path_buf(),
            found: meta.uid(),
            user: user.name.clone(),
            expected: user.uid,
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o027 != 0 || mode & 0o700 != 0o700 {
        return Err(DriverError::DataDirPermissions {
            path: data_dir.to_path_buf(),
            mode,
        });
    }
    Ok(())
}

/// Removes everything inside `data_dir`, keeping the directory itself (it may be a
/// mount point and carries the right owner).
pub fn remove_contents(data_dir: &Path) -> Result<()> {
    let entries = match std::fs::read_dir(data_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(DriverError::io("read", data_dir, e)),
    };
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        let is_dir = e.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let r = if is_dir {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_file(&p)
        };
        r.map_err(|err| DriverError::io("remove", &p, err))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_missing_empty_cluster_and_foreign() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("data");
        assert_eq!(contents(&p).unwrap(), DirContents::Missing);
        std::fs::create_dir(&p).unwrap();
        assert_eq!(contents(&p).unwrap(), DirContents::Empty);
        std::fs::write(p.join("notes.txt"), "x").unwrap();
        assert!(matches!(contents(&p).unwrap(), DirContents::Foreign(_)));
        std::fs::write(p.join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(contents(&p).unwrap(), DirContents::Cluster);
        remove_contents(&p).unwrap();
        assert_eq!(contents(&p).unwrap(), DirContents::Empty);
    }
}
