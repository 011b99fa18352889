//! What a data directory tells about the server that runs on it, read from files
//! without starting anything: the major version (`PG_VERSION`) and the WAL segment
//! size (the size of a segment file in `pg_wal`). The rendered configuration depends on
//! both (see [`crate::version_params`]).

use std::path::Path;

/// The WAL segment size initdb uses unless told otherwise, in MB.
pub const DEFAULT_WAL_SEGMENT_MB: u64 = 16;

/// Facts about the server of a data directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerFacts {
    /// Major version (`15`), `None` when the data directory has no readable `PG_VERSION`.
    pub major: Option<u32>,
    /// WAL segment size in MB ([`DEFAULT_WAL_SEGMENT_MB`] when no segment file is found).
    pub wal_segment_mb: u64,
}

impl ServerFacts {
    /// Facts for a known major version with the default segment size.
    pub fn major(major: u32) -> Self {
        ServerFacts {
            major: Some(major),
            wal_segment_mb: DEFAULT_WAL_SEGMENT_MB,
        }
    }

    /// Reads the facts of `data_dir`.
    pub fn read(data_dir: &Path) -> Self {
        ServerFacts {
            major: read_major(data_dir),
            wal_segment_mb: read_wal_segment_mb(data_dir).unwrap_or(DEFAULT_WAL_SEGMENT_MB),
        }
    }
}

/// `PG_VERSION` holds the major version: `15` (or `9.6` before PostgreSQL 10, read as 9).
fn read_major(data_dir: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(data_dir.join("PG_VERSION")).ok()?;
    text.trim().split('.').next()?.parse().ok()
}

/// Every complete WAL segment file (24 hex digits) is exactly one segment long.
fn read_wal_segment_mb(data_dir: &Path) -> Option<u64> {
    std::fs::read_dir(data_dir.join("pg_wal"))
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.len() == 24 && n.chars().all(|c| c.is_ascii_hexdigit()))
        })
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .find(|len| *len >= 1024 * 1024 && len % (1024 * 1024) == 0)
        .map(|len| len / (1024 * 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_version_and_segment_size_from_the_data_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            ServerFacts::read(dir.path()),
            ServerFacts {
                major: None,
                wal_segment_mb: 16
            }
        );
        std::fs::write(dir.path().join("PG_VERSION"), "12\n").unwrap();
        std::fs::create_dir(dir.path().join("pg_wal")).unwrap();
        std::fs::write(dir.path().join("pg_wal").join("00000001.history"), "x").unwrap();
        let seg = std::fs::File::create(dir.path().join("pg_wal").join("000000010000000000000001"))
            .unwrap();
        seg.set_len(64 * 1024 * 1024).unwrap();
        assert_eq!(
            ServerFacts::read(dir.path()),
            ServerFacts {
                major: Some(12),
                wal_segment_mb: 64
            }
        );
        std::fs::write(dir.path().join("PG_VERSION"), "9.6\n").unwrap();
        assert_eq!(ServerFacts::read(dir.path()).major, Some(9));
    }
}
