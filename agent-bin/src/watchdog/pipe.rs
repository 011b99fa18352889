//! `watchdog.driver: testing` with `device` naming a named pipe: Patroni's watchdog
//! test harness. A watchdog device cannot be emulated with ioctls from user space, so
//! Patroni's `testing` driver turns them into writes that a reader on the pipe
//! interprets: `Ctimeout=N\n` sets the timeout, `1` kicks, `V` is the magic close.
//! The reader only notes what happened; nothing is reset. Tools built for Patroni's
//! harness (its acceptance suite among them) see the same bytes from fullauto.

use super::ResetDevice;
use ha_core::WatchdogError;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::Mutex;

/// Whether `path` is a named pipe (the harness's device).
pub fn is_named_pipe(path: &str) -> bool {
    std::fs::metadata(Path::new(path)).is_ok_and(|m| m.file_type().is_fifo())
}

struct Open {
    pipe: File,
    timeout: u32,
}

/// The harness's device: a named pipe written in Patroni's protocol.
pub struct PipeWatchdog {
    path: String,
    open: Mutex<Option<Open>>,
}

impl PipeWatchdog {
    /// A driver for the pipe at `path`; nothing is opened yet.
    pub fn new(path: &str) -> PipeWatchdog {
        PipeWatchdog {
            path: path.to_string(),
            open: Mutex::new(None),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Option<Open>>, WatchdogError> {
        self.open
            .lock()
            .map_err(|_| WatchdogError::Failed("watchdog lock poisoned".into()))
    }

    fn write(&self, pipe: &mut File, bytes: &[u8]) -> Result<(), WatchdogError> {
        pipe.write_all(bytes).map_err(|e| {
            WatchdogError::Failed(format!("writing to the watchdog pipe {}: {e}", self.path))
        })
    }
}

/// The harness's command that sets the timeout.
fn timeout_command(timeout: u32) -> Vec<u8> {
    format!("Ctimeout={timeout}\n").into_bytes()
}

impl ResetDevice for PipeWatchdog {
    fn keepalive(&self, timeout: u32) -> Result<(), WatchdogError> {
        let mut guard = self.lock()?;
        if guard.is_none() {
            // Non-blocking: with no reader on the pipe the open fails at once (ENXIO)
            // instead of stalling the HA loop.
            let pipe = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(&self.path)
                .map_err(|e| {
                    WatchdogError::Unavailable(format!(
                        "cannot open the watchdog pipe {}: {e}",
                        self.path
                    ))
                })?;
            tracing::info!(device = %self.path, "watchdog test harness pipe opened");
            *guard = Some(Open { pipe, timeout: 0 });
        }
        let Some(open) = guard.as_mut() else {
            return Err(WatchdogError::Failed("watchdog not open".into()));
        };
        let mut bytes = Vec::new();
        if open.timeout != timeout {
            bytes.extend(timeout_command(timeout));
        }
        bytes.push(b'1');
        let written = self.write(&mut open.pipe, &bytes);
        match written {
            Ok(()) => {
                open.timeout = timeout;
                Ok(())
            }
            Err(e) => {
                *guard = None;
                Err(e)
            }
        }
    }

    fn close(&self) -> Result<(), WatchdogError> {
        let mut guard = self.lock()?;
        if let Some(mut open) = guard.take() {
            self.write(&mut open.pipe, b"V")?;
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        self.open.lock().is_ok_and(|g| g.is_some()) || is_named_pipe(&self.path)
    }

    fn describe(&self) -> String {
        format!("watchdog test harness pipe {}", self.path)
    }
}

impl Drop for PipeWatchdog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn mkfifo(path: &Path) {
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: creating a FIFO at a path we own as a C string.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn speaks_patronis_harness_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("watchdog.fifo");
        mkfifo(&path);
        let p = path.to_str().unwrap().to_string();
        assert!(is_named_pipe(&p));
        let wd = PipeWatchdog::new(&p);
        // No reader yet: unavailable at once, not a hang.
        assert!(matches!(
            wd.keepalive(15),
            Err(WatchdogError::Unavailable(_))
        ));
        let mut reader = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .unwrap();
        wd.keepalive(15).unwrap();
        wd.keepalive(15).unwrap();
        wd.keepalive(25).unwrap();
        wd.close().unwrap();
        let mut got = String::new();
        reader.read_to_string(&mut got).unwrap();
        assert_eq!(got, "Ctimeout=15\n11Ctimeout=25\n1V");
    }

    #[test]
    fn a_regular_file_is_not_the_harness() {
        let f = tempfile::NamedTempFile::new().unwrap();
        assert!(!is_named_pipe(f.path().to_str().unwrap()));
        assert!(!is_named_pipe("/nonexistent/watchdog"));
    }
}
