//! `watchdog.driver: testing`: a software stand-in for `/dev/watchdog`, for tests and
//! machines without a watchdog device. A keeper process (forked before the runtime,
//! like the write fence) counts down from each kick; when the agent does not kick it
//! within the timeout it "resets the node": it SIGKILLs the agent, then the postmaster
//! and its children. Unlike a real watchdog it does not reboot the machine, so it does
//! not protect against a hung kernel; it does protect against a frozen or hung agent.

use super::ResetDevice;
use ha_core::{clock::monotonic_now, WatchdogError};
use pg_driver::fence::{FenceError, ProcessFence};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The resetting keeper process.
pub struct TestingWatchdog {
    keeper: ProcessFence,
    broken: AtomicBool,
}

impl TestingWatchdog {
    /// Forks the keeper. Call before any threads exist.
    pub fn spawn(pid_file: &Path) -> Result<TestingWatchdog, FenceError> {
        Ok(TestingWatchdog {
            keeper: ProcessFence::spawn_resetting(pid_file)?,
            broken: AtomicBool::new(false),
        })
    }

    /// The keeper's pid (for the zombie reaper).
    pub fn keeper_pid(&self) -> i32 {
        self.keeper.keeper_pid()
    }

    fn send(&self, r: Result<(), WatchdogError>) -> Result<(), WatchdogError> {
        self.broken.store(r.is_err(), Ordering::Relaxed);
        r
    }
}

impl ResetDevice for TestingWatchdog {
    fn keepalive(&self, timeout: u32) -> Result<(), WatchdogError> {
        let deadline = monotonic_now().plus(Duration::from_secs(timeout.into()));
        let r = self.keeper.arm_now(deadline);
        self.send(r)
    }

    fn close(&self) -> Result<(), WatchdogError> {
        let r = self.keeper.disarm_now();
        self.send(r)
    }

    fn healthy(&self) -> bool {
        !self.broken.load(Ordering::Relaxed)
    }

    fn describe(&self) -> String {
        format!("testing watchdog (keeper pid {})", self.keeper.keeper_pid())
    }
}
