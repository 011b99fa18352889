//! Writes the password file (`postgresql.pgpass`) the server's tools and the
//! walreceiver read, as Patroni does before each tool run: mode 0600, owned by the
//! server's OS user, never readable by anyone else even for a moment.

use crate::config::{Credentials, Endpoint};
use crate::conninfo::pgpass_content;
use crate::error::{DriverError, Result};
use crate::runner::Runner;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Writes the line(s) for `creds` connecting to `to` into `path`. Returns whether a
/// file was written: without a password there is nothing to write and the file is
/// left alone (the caller then sets no `PGPASSFILE`).
pub fn write(runner: &Runner, path: &Path, creds: &Credentials, to: &Endpoint) -> Result<bool> {
    let Some(content) = pgpass_content(creds, &to.host_text(), to.port) else {
        return Ok(false);
    };
    if path.exists() && !path.is_file() {
        return Err(DriverError::Config(format!(
            "pgpass {} exists and is not a file: check postgresql.pgpass",
            path.display()
        )));
    }
    let tmp = path.with_extension("fullauto-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| DriverError::io("create", &tmp, e))?;
    f.write_all(content.as_bytes())
        .map_err(|e| DriverError::io("write", &tmp, e))?;
    drop(f);
    runner.own(&tmp, 0o600)?;
    std::fs::rename(&tmp, path).map_err(|e| DriverError::io("rename to", path, e))?;
    Ok(true)
}
