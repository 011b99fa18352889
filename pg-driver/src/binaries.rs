//! Finds the PostgreSQL server binaries: the configured `bin_dir`, else
//! `pg_config --bindir`, else the newest `/usr/lib/postgresql/<ver>/bin`.

use crate::error::{DriverError, Result};
use std::path::{Path, PathBuf};

/// The major version this driver is built and tested against.
pub const EXPECTED_MAJOR: &str = "15";

/// The binaries the driver runs.
pub const TOOLS: &[&str] = &[
    "initdb",
    "pg_ctl",
    "postgres",
    "pg_controldata",
    "pg_basebackup",
    "pg_rewind",
    "psql",
];

/// Where the server tools live.
#[derive(Debug, Clone)]
pub struct Binaries {
    dir: PathBuf,
}

impl Binaries {
    /// Discovers the bin dir and checks every tool is present.
    pub fn discover(configured: Option<&Path>) -> Result<Self> {
        let dir = match configured {
            Some(d) => d.to_path_buf(),
            None => discover_dir().ok_or_else(|| DriverError::BinaryMissing {
                binary: "initdb".into(),
                searched: "pg_config --bindir and /usr/lib/postgresql/*/bin".into(),
                version: EXPECTED_MAJOR.into(),
            })?,
        };
        let b = Binaries { dir };
        for t in TOOLS {
            b.tool(t)?;
        }
        Ok(b)
    }

    /// The bin dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name`, or an error naming the package to install.
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        let p = self.dir.join(name);
        if is_executable(&p) {
            Ok(p)
        } else {
            let version = self
                .dir
                .parent()
                .and_then(|v| v.file_name())
                .and_then(|v| v.to_str())
                .filter(|v| v.chars().all(|c| c.is_ascii_digit()))
                .unwrap_or(EXPECTED_MAJOR)
                .to_string();
            Err(DriverError::BinaryMissing {
                binary: name.into(),
                searched: self.dir.display().to_string(),
                version,
            })
        }
    }
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

fn discover_dir() -> Option<PathBuf> {
    if let Ok(out) = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
    {
        if out.status.success() {
            let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
            if is_executable(&d.join("initdb")) {
                return Some(d);
            }
        }
    }
    // Debian installs server tools only under the versioned directory.
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            is_executable(&bin.join("initdb")).then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_bin_dir_names_the_debian_package() {
        let err = Binaries::discover(Some(Path::new("/nonexistent/15/bin"))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("postgresql-15"), "{msg}");
        assert!(msg.contains("initdb"), "{msg}");
    }
}
