//! Finds the PostgreSQL server binaries: the configured `bin_dir`, else
//! `pg_config --bindir`, else the newest `/usr/lib/postgresql/<ver>/bin`; each tool
//! under its own name there, or under the name `bin_name` gives it (Patroni's
//! `postgresql.bin_name`).

use crate::error::{DriverError, Result};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The major version this driver is built and tested against.
pub const EXPECTED_MAJOR: &str = "15";

/// The tools `postgresql.bin_name` may rename (Patroni's list).
pub const RENAMEABLE: &[&str] = &[
    "pg_ctl",
    "initdb",
    "pg_controldata",
    "pg_basebackup",
    "postgres",
    "pg_isready",
    "pg_rewind",
];

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
    names: BTreeMap<String, String>,
}

impl Binaries {
    /// Discovers the bin dir and checks every tool is present.
    pub fn discover(configured: Option<&Path>) -> Result<Self> {
        Binaries::discover_named(configured, &BTreeMap::new())
    }

    /// Like [`Binaries::discover`], with tools renamed: `names` maps a tool of
    /// [`RENAMEABLE`] to its file name in the bin dir (e.g. `pg_ctl` ⇒ `pg_ctl15`).
    pub fn discover_named(
        configured: Option<&Path>,
        names: &BTreeMap<String, String>,
    ) -> Result<Self> {
        if let Some(unknown) = names.keys().find(|k| !RENAMEABLE.contains(&k.as_str())) {
            return Err(DriverError::Config(format!(
                "bin_name.{unknown}: not a tool name; use one of {}",
                RENAMEABLE.join(", ")
            )));
        }
        let dir = match configured {
            Some(d) => d.to_path_buf(),
            None => discover_dir().ok_or_else(|| DriverError::BinaryMissing {
                binary: "initdb".into(),
                searched: "pg_config --bindir and /usr/lib/postgresql/*/bin".into(),
                version: EXPECTED_MAJOR.into(),
            })?,
        };
        let b = Binaries {
            dir,
            names: names.clone(),
        };
        for t in TOOLS {
            b.tool(t)?;
        }
        Ok(b)
    }

    /// The bin dir.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Path of `name` (under its configured file name), or an error naming the
    /// package to install.
    pub fn tool(&self, name: &str) -> Result<PathBuf> {
        let file = self.names.get(name).map(String::as_str).unwrap_or(name);
        let p = self.dir.join(file);
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
                binary: file.into(),
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

    #[test]
    fn bin_name_renames_a_tool_in_the_bin_dir() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for t in TOOLS
            .iter()
            .filter(|t| **t != "pg_ctl")
            .chain(&["pg_ctl15"])
        {
            let p = dir.path().join(t);
            std::fs::write(&p, "#!/bin/sh\n").unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let err = Binaries::discover(Some(dir.path())).unwrap_err();
        assert!(err.to_string().contains("pg_ctl"), "{err}");
        let names = BTreeMap::from([("pg_ctl".to_string(), "pg_ctl15".to_string())]);
        let b = Binaries::discover_named(Some(dir.path()), &names).unwrap();
        assert_eq!(b.tool("pg_ctl").unwrap(), dir.path().join("pg_ctl15"));
        assert_eq!(b.tool("initdb").unwrap(), dir.path().join("initdb"));
        let bad = BTreeMap::from([("psql".to_string(), "x".to_string())]);
        let err = Binaries::discover_named(Some(dir.path()), &bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad postgresql configuration: bin_name.psql: not a tool name; use one of pg_ctl, initdb, pg_controldata, pg_basebackup, postgres, pg_isready, pg_rewind"
        );
    }
}
