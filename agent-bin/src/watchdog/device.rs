//! The Linux watchdog device (`/dev/watchdog`) through its ioctl interface.
//!
//! The device starts counting when it is opened: it is opened only when this node
//! starts guarding a writable primary, kicked every cycle, and closed with the magic
//! character `V` (which stops it) when the node stops leading. A driver built with
//! `nowayout` cannot be stopped at all; then closing leaves it running and the machine
//! resets when the timeout passes, as the kernel intends.

use super::ResetDevice;
use ha_core::WatchdogError;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// `struct watchdog_info` from `<linux/watchdog.h>`.
#[repr(C)]
struct WatchdogInfo {
    options: u32,
    firmware_version: u32,
    identity: [u8; 32],
}

const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;

/// `_IOC(dir, 'W', nr, size)` in the generic layout (x86, arm, riscv).
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((b'W' as u64) << 8) | nr
}

const WDIOC_GETSUPPORT: u64 = ioc(IOC_READ, 0, std::mem::size_of::<WatchdogInfo>());
const WDIOC_KEEPALIVE: u64 = ioc(IOC_READ, 5, std::mem::size_of::<libc::c_int>());
const WDIOC_SETTIMEOUT: u64 = ioc(IOC_READ | IOC_WRITE, 6, std::mem::size_of::<libc::c_int>());
const WDIOC_GETTIMEOUT: u64 = ioc(IOC_READ, 7, std::mem::size_of::<libc::c_int>());
/// `WDIOF_SETTIMEOUT`: the device supports setting the timeout.
const WDIOF_SETTIMEOUT: u32 = 0x0080;

struct Open {
    fd: OwnedFd,
    timeout: u32,
}

/// `/dev/watchdog` (or another watchdog device node).
pub struct DeviceWatchdog {
    path: String,
    open: Mutex<Option<Open>>,
}

impl DeviceWatchdog {
    /// A driver for the device at `path`; nothing is opened yet.
    pub fn new(path: &str) -> DeviceWatchdog {
        DeviceWatchdog {
            path: path.to_string(),
            open: Mutex::new(None),
        }
    }

    fn open_device(&self, timeout: u32) -> Result<Open, WatchdogError> {
        let c = CString::new(self.path.as_bytes())
            .map_err(|_| WatchdogError::Unavailable(format!("bad device path {:?}", self.path)))?;
        // SAFETY: opening a path we own as a C string.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Err(WatchdogError::Unavailable(format!(
                "cannot open {}: {}",
                self.path,
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: a descriptor we just opened and own from here on.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut open = Open { fd, timeout: 0 };
        let result = (|| {
            let mut info = WatchdogInfo {
                options: 0,
                firmware_version: 0,
                identity: [0; 32],
            };
            ioctl(&open.fd, WDIOC_GETSUPPORT, &mut info, "WDIOC_GETSUPPORT")?;
            let identity = String::from_utf8_lossy(&info.identity);
            tracing::info!(
                device = %self.path,
                "watchdog device {:?} opened",
                identity.trim_end_matches('\0')
            );
            if info.options & WDIOF_SETTIMEOUT == 0 {
                tracing::warn!(device = %self.path, "the watchdog device cannot change its timeout");
            }
            set_timeout(&mut open, timeout)
        })();
        match result {
            Ok(()) => Ok(open),
            Err(e) => {
                magic_close(open.fd);
                Err(e)
            }
        }
    }
}

impl ResetDevice for DeviceWatchdog {
    fn keepalive(&self, timeout: u32) -> Result<(), WatchdogError> {
        let mut guard = self
            .open
            .lock()
            .map_err(|_| WatchdogError::Failed("watchdog lock poisoned".into()))?;
        if guard.is_none() {
            *guard = Some(self.open_device(timeout)?);
        }
        let Some(open) = guard.as_mut() else {
            return Err(WatchdogError::Failed("watchdog not open".into()));
        };
        let kicked = if open.timeout != timeout {
            // Setting the timeout also kicks the device.
            set_timeout(open, timeout)
        } else {
            let mut dummy: libc::c_int = 0;
            ioctl(&open.fd, WDIOC_KEEPALIVE, &mut dummy, "WDIOC_KEEPALIVE")
        };
        if let Err(e) = kicked {
            if let Some(open) = guard.take() {
                magic_close(open.fd);
            }
            return Err(e);
        }
        Ok(())
    }

    fn close(&self) -> Result<(), WatchdogError> {
        let mut guard = self
            .open
            .lock()
            .map_err(|_| WatchdogError::Failed("watchdog lock poisoned".into()))?;
        if let Some(open) = guard.take() {
            magic_close(open.fd);
        }
        Ok(())
    }

    fn healthy(&self) -> bool {
        if self.open.lock().is_ok_and(|g| g.is_some()) {
            return true;
        }
        let Ok(c) = CString::new(self.path.as_bytes()) else {
            return false;
        };
        // SAFETY: access() on a path we own as a C string.
        unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 }
    }

    fn describe(&self) -> String {
        format!("watchdog device {}", self.path)
    }
}

impl Drop for DeviceWatchdog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

/// Sets the device timeout and checks what the device actually uses: a device that
/// would fire later than asked cannot protect the lease.
fn set_timeout(open: &mut Open, wanted: u32) -> Result<(), WatchdogError> {
    let mut t = wanted as libc::c_int;
    ioctl(&open.fd, WDIOC_SETTIMEOUT, &mut t, "WDIOC_SETTIMEOUT")?;
    let mut actual: libc::c_int = 0;
    ioctl(&open.fd, WDIOC_GETTIMEOUT, &mut actual, "WDIOC_GETTIMEOUT")?;
    if actual <= 0 || actual as u32 > wanted {
        return Err(WatchdogError::Failed(format!(
            "the watchdog device uses a timeout of {actual} s, longer than the {wanted} s needed"
        )));
    }
    open.timeout = wanted;
    Ok(())
}

fn ioctl<T>(fd: &OwnedFd, request: u64, arg: &mut T, name: &str) -> Result<(), WatchdogError> {
    // SAFETY: `arg` has the size the request encodes; the kernel reads/writes only it.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), request as _, arg as *mut T) };
    if r < 0 {
        return Err(WatchdogError::Failed(format!(
            "{name} failed: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Writes the magic character so the driver stops the timer on close.
fn magic_close(fd: OwnedFd) {
    // SAFETY: writing one byte from a static buffer to our descriptor.
    let n = unsafe { libc::write(fd.as_raw_fd(), b"V".as_ptr().cast(), 1) };
    if n != 1 {
        tracing::warn!(
            "writing the magic close character to the watchdog failed: {}",
            std::io::Error::last_os_error()
        );
    }
    drop(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers_match_linux_watchdog_h() {
        assert_eq!(WDIOC_GETSUPPORT, 0x8028_5700);
        assert_eq!(WDIOC_KEEPALIVE, 0x8004_5705);
        assert_eq!(WDIOC_SETTIMEOUT, 0xC004_5706);
        assert_eq!(WDIOC_GETTIMEOUT, 0x8004_5707);
    }

    #[test]
    fn a_missing_device_is_unavailable_and_unhealthy() {
        let d = DeviceWatchdog::new("/nonexistent/watchdog");
        assert!(!d.healthy());
        assert!(matches!(
            d.keepalive(10),
            Err(WatchdogError::Unavailable(_))
        ));
    }

    #[test]
    fn a_file_that_is_not_a_watchdog_fails_and_gets_the_magic_close() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("not-a-watchdog");
        std::fs::write(&path, "").expect("file");
        let d = DeviceWatchdog::new(&path.display().to_string());
        assert!(d.healthy(), "a writable path counts as usable until tried");
        assert!(matches!(d.keepalive(10), Err(WatchdogError::Failed(_))));
        assert_eq!(std::fs::read(&path).expect("read"), b"V");
        assert!(d.open.lock().expect("lock").is_none());
    }
}
