//! The write fence: something outside the agent process that stops Postgres from
//! accepting writes when the agent fails to extend the deadline in time.

use crate::clock::MonoTime;
use async_trait::async_trait;

/// Why the fence could not be armed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WatchdogError {
    /// No fence available (device missing, helper process not running).
    #[error("watchdog unavailable: {0}")]
    Unavailable(String),
    /// Arming or extending failed.
    #[error("watchdog failed: {0}")]
    Failed(String),
}

/// A fence that fires at an absolute monotonic deadline unless extended: a software
/// fence process that SIGKILLs the postmaster's process group, or `/dev/watchdog`.
/// It must not depend on the agent process being scheduled.
#[async_trait]
pub trait Watchdog: Send + Sync {
    /// Arms the fence, or moves its deadline. Moving it earlier must work too.
    async fn arm_until(&self, deadline: MonoTime) -> Result<(), WatchdogError>;
    /// Disarms it (Postgres no longer writable).
    async fn disarm(&self) -> Result<(), WatchdogError>;
    /// Pause mode: arms or moves the write fence like [`Watchdog::arm_until`], but
    /// switches a reset watchdog off instead of kicking it (Patroni disables the
    /// watchdog in pause). The default, for fences without a watchdog, just arms.
    async fn arm_fence_only(&self, deadline: MonoTime) -> Result<(), WatchdogError> {
        self.arm_until(deadline).await
    }
    /// Whether this node may lead: false when a watchdog is required but cannot be
    /// used (device missing, keeper gone, a kick failed). Peers then exclude the node.
    fn usable(&self) -> bool {
        true
    }
    /// The lease timing changed (dynamic config): a watchdog whose timeout derives
    /// from the ttl reconfigures itself at the next arm.
    fn timing_changed(&self, _ttl: std::time::Duration, _loop_wait: std::time::Duration) {}
}

/// A fence that does nothing, for `watchdog.mode: off` and for tests that do not
/// need one.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoWatchdog;

#[async_trait]
impl Watchdog for NoWatchdog {
    async fn arm_until(&self, _deadline: MonoTime) -> Result<(), WatchdogError> {
        Ok(())
    }
    async fn disarm(&self) -> Result<(), WatchdogError> {
        Ok(())
    }
}
