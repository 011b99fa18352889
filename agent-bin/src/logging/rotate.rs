//! `<dir>/patroni.log`, rotated as Python's `RotatingFileHandler` does: before a line
//! would take the file to `file_size` bytes, `patroni.log.N-1` becomes `patroni.log.N`
//! … `patroni.log` becomes `patroni.log.1`, keeping `file_num` old files.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Patroni's log file name.
pub const FILE_NAME: &str = "patroni.log";

/// An open, rotating log file.
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    backups: u32,
    mode: Option<u32>,
    file: File,
    size: u64,
}

impl RotatingFile {
    /// Opens (appends to) `<dir>/patroni.log`.
    pub fn open(dir: &Path, max_bytes: u64, backups: u32, mode: Option<u32>) -> io::Result<Self> {
        let path = dir.join(FILE_NAME);
        let (file, size) = open(&path, mode)?;
        Ok(RotatingFile {
            path,
            max_bytes,
            backups,
            mode,
            file,
            size,
        })
    }

    /// The current file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn backup(&self, i: u32) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{i}"));
        PathBuf::from(p)
    }

    /// Writes one line (with its newline), rotating first if it would fill the file.
    /// A line longer than `file_size` goes whole into an empty file.
    pub fn write_line(&mut self, line: &[u8]) -> io::Result<()> {
        if self.size > 0 && self.size + line.len() as u64 >= self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(line)?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        for i in (1..self.backups).rev() {
            let from = self.backup(i);
            if from.exists() {
                std::fs::rename(&from, self.backup(i + 1))?;
            }
        }
        std::fs::rename(&self.path, self.backup(1))?;
        let (file, size) = open(&self.path, self.mode)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn open(path: &Path, mode: Option<u32>) -> io::Result<(File, u64)> {
    let mut o = OpenOptions::new();
    o.create(true).append(true);
    if let Some(m) = mode {
        o.mode(m);
    }
    let file = o.open(path)?;
    if let Some(m) = mode {
        // The umask narrowed the creation mode; Patroni sets it as given.
        file.set_permissions(std::fs::Permissions::from_mode(m))?;
    }
    let size = file.metadata()?.len();
    Ok((file, size))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_like_python() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), 20, 2, Some(0o640)).unwrap();
        for i in 0..7 {
            f.write_line(format!("line {i} .....\n").as_bytes())
                .unwrap();
        }
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        // 14-byte lines: each file holds one line; two old files are kept.
        assert_eq!(read("patroni.log"), "line 6 .....\n");
        assert_eq!(read("patroni.log.1"), "line 5 .....\n");
        assert_eq!(read("patroni.log.2"), "line 4 .....\n");
        assert!(!dir.path().join("patroni.log.3").exists());
        let mode = std::fs::metadata(f.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o640);
        // Appends to an existing file.
        drop(f);
        let mut f = RotatingFile::open(dir.path(), 100, 2, None).unwrap();
        f.write_line(b"again\n").unwrap();
        assert_eq!(read("patroni.log"), "line 6 .....\nagain\n");
        // A line longer than the limit is written whole.
        let mut f = RotatingFile::open(dir.path(), 5, 2, None).unwrap();
        f.write_line(b"a long line\n").unwrap();
        assert_eq!(read("patroni.log"), "a long line\n");
        assert_eq!(read("patroni.log.1"), "line 6 .....\nagain\n");
    }
}
