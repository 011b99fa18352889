//! The node's protection against a frozen agent, behind ha-core's one `Watchdog`
//! trait: the write fence (always on) plus, per `watchdog.mode`, a watchdog that
//! resets the node when the agent stops kicking it (`/dev/watchdog`, or the software
//! `testing` driver: a resetting keeper process, or Patroni's test-harness pipe when
//! `device` names a named pipe).
//!
//! The fence fires just before the lease ends; the watchdog is the second line: its
//! timeout is `ttl − safety_margin` whole seconds from each kick (Patroni's rule), and
//! it is kicked every cycle while this node holds the lease. Modes as Patroni's:
//! `off` (fence only), `automatic` (use the watchdog when it can be used, else run
//! without it), `required` (a node without a working watchdog must not lead; it
//! reports `watchdog_failed` so peers exclude it).

pub mod device;
pub mod pipe;
pub mod testing;

use crate::config::{Config, WatchdogDriver, WatchdogMode};
use async_trait::async_trait;
use ha_core::{MonoTime, Watchdog, WatchdogError};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Something that resets the node unless kicked within a timeout.
pub trait ResetDevice: Send + Sync {
    /// Starts the countdown (first call) or restarts it, with `timeout` seconds.
    fn keepalive(&self, timeout: u32) -> Result<(), WatchdogError>;
    /// Stops the countdown (magic close).
    fn close(&self) -> Result<(), WatchdogError>;
    /// Whether it can be used now (device present and writable, keeper alive).
    fn healthy(&self) -> bool;
    /// For logs.
    fn describe(&self) -> String;
}

/// The watchdog timeout for a lease of `ttl`: `ttl − safety_margin` in whole seconds
/// (`safety_margin: -1` means `ttl/2`). An error when it would not outlast one
/// `loop_wait`: the watchdog would fire between two kicks of a healthy agent.
pub fn watchdog_timeout(
    ttl: Duration,
    loop_wait: Duration,
    safety_margin: f64,
) -> Result<u32, String> {
    let ttl_s = ttl.as_secs_f64();
    let margin = if safety_margin == -1.0 {
        ttl_s / 2.0
    } else {
        safety_margin
    };
    let timeout = (ttl_s - margin).floor();
    if timeout < 1.0 || timeout < loop_wait.as_secs_f64() {
        return Err(format!(
            "the watchdog timeout ttl − safety_margin = {timeout} s is shorter than loop_wait ({} s)",
            loop_wait.as_secs_f64()
        ));
    }
    Ok(timeout.min(u32::MAX as f64) as u32)
}

/// The write fence combined with the configured watchdog.
pub struct NodeWatchdog {
    fence: Arc<dyn Watchdog>,
    device: Option<Box<dyn ResetDevice>>,
    mode: WatchdogMode,
    safety_margin: f64,
    timing: Mutex<(Duration, Duration)>,
    failed_at: Mutex<Option<Instant>>,
    warned: AtomicBool,
    /// Kicked since it was last closed: a pause closes it once.
    kicked: AtomicBool,
}

impl NodeWatchdog {
    /// Combines `fence` with `device` (None: no watchdog) under `mode`.
    pub fn new(
        fence: Arc<dyn Watchdog>,
        device: Option<Box<dyn ResetDevice>>,
        mode: WatchdogMode,
        safety_margin: f64,
        ttl: Duration,
        loop_wait: Duration,
    ) -> NodeWatchdog {
        NodeWatchdog {
            fence,
            device,
            mode,
            safety_margin,
            timing: Mutex::new((ttl, loop_wait)),
            failed_at: Mutex::new(None),
            warned: AtomicBool::new(false),
            kicked: AtomicBool::new(false),
        }
    }

    fn timeout(&self) -> Result<u32, String> {
        let (ttl, loop_wait) = self
            .timing
            .lock()
            .map(|t| *t)
            .map_err(|_| "watchdog timing lock poisoned".to_string())?;
        watchdog_timeout(ttl, loop_wait, self.safety_margin)
    }

    fn ttl(&self) -> Duration {
        self.timing.lock().map(|t| t.0).unwrap_or_default()
    }

    /// A failure: fatal for leadership in `required` mode, a warning otherwise.
    fn failure(&self, e: WatchdogError) -> Result<(), WatchdogError> {
        if self.mode == WatchdogMode::Required {
            if let Ok(mut f) = self.failed_at.lock() {
                *f = Some(Instant::now());
            }
            return Err(e);
        }
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!("running without the watchdog: {e}");
        }
        Ok(())
    }

    fn kick(&self) -> Result<(), WatchdogError> {
        let Some(device) = &self.device else {
            return match self.mode {
                WatchdogMode::Required => Err(WatchdogError::Unavailable(
                    "watchdog required but not available".into(),
                )),
                WatchdogMode::Off | WatchdogMode::Automatic => Ok(()),
            };
        };
        let timeout = match self.timeout() {
            Ok(t) => t,
            Err(why) => return self.failure(WatchdogError::Unavailable(why)),
        };
        self.kicked.store(true, Ordering::Relaxed);
        match device.keepalive(timeout) {
            Ok(()) => {
                self.warned.store(false, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => self.failure(e),
        }
    }
}

#[async_trait]
impl Watchdog for NodeWatchdog {
    async fn arm_until(&self, deadline: MonoTime) -> Result<(), WatchdogError> {
        let fence = self.fence.arm_until(deadline).await;
        let watchdog = self.kick();
        fence.and(watchdog)
    }

    async fn disarm(&self) -> Result<(), WatchdogError> {
        let fence = self.fence.disarm().await;
        self.kicked.store(false, Ordering::Relaxed);
        let watchdog = self.device.as_ref().map_or(Ok(()), |d| d.close());
        fence.and(watchdog)
    }

    async fn arm_fence_only(&self, deadline: MonoTime) -> Result<(), WatchdogError> {
        let fence = self.fence.arm_until(deadline).await;
        let watchdog = match &self.device {
            Some(d) if self.kicked.swap(false, Ordering::Relaxed) => {
                tracing::info!("paused: {} disabled", d.describe());
                d.close()
            }
            _ => Ok(()),
        };
        fence.and(watchdog)
    }

    fn usable(&self) -> bool {
        if self.mode != WatchdogMode::Required {
            return true;
        }
        let recently_failed = self
            .failed_at
            .lock()
            .map(|f| f.is_some_and(|at| at.elapsed() < self.ttl()))
            .unwrap_or(true);
        self.device.as_ref().is_some_and(|d| d.healthy())
            && self.timeout().is_ok()
            && !recently_failed
    }

    fn timing_changed(&self, ttl: Duration, loop_wait: Duration) {
        if let Ok(mut t) = self.timing.lock() {
            *t = (ttl, loop_wait);
        }
    }
}

/// The watchdog part chosen by the config, and the pids of processes it forked.
/// Call before the runtime starts threads (the `testing` driver forks).
pub fn open_configured(cfg: &Config) -> (Option<Box<dyn ResetDevice>>, Vec<i32>) {
    let w = &cfg.watchdog;
    if w.mode == WatchdogMode::Off {
        return (None, Vec::new());
    }
    let device: Box<dyn ResetDevice> = match w.driver {
        WatchdogDriver::Default => Box::new(device::DeviceWatchdog::new(&w.device)),
        // Patroni's watchdog test harness reads a named pipe: speak its protocol.
        WatchdogDriver::Testing if pipe::is_named_pipe(&w.device) => {
            Box::new(pipe::PipeWatchdog::new(&w.device))
        }
        WatchdogDriver::Testing => {
            let pid_file = std::path::Path::new(&cfg.postgresql.data_dir).join("postmaster.pid");
            match testing::TestingWatchdog::spawn(&pid_file) {
                Ok(t) => {
                    let pid = t.keeper_pid();
                    return (Some(Box::new(t)), vec![pid]);
                }
                Err(e) => {
                    tracing::warn!("the testing watchdog could not be started: {e}");
                    return (None, Vec::new());
                }
            }
        }
    };
    if !device.healthy() {
        match w.mode {
            WatchdogMode::Required => {
                tracing::error!(
                    "{} is required but cannot be used: this node will not become the leader",
                    device.describe()
                );
            }
            WatchdogMode::Off | WatchdogMode::Automatic => {
                tracing::info!("{} cannot be used: running without it", device.describe());
                return (None, Vec::new());
            }
        }
    }
    (Some(device), Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[derive(Default)]
    struct FakeDevice {
        kicks: AtomicU32,
        last_timeout: AtomicU32,
        closed: AtomicU32,
        broken: AtomicBool,
    }

    impl ResetDevice for Arc<FakeDevice> {
        fn keepalive(&self, timeout: u32) -> Result<(), WatchdogError> {
            if self.broken.load(Ordering::Relaxed) {
                return Err(WatchdogError::Failed("broken".into()));
            }
            self.kicks.fetch_add(1, Ordering::Relaxed);
            self.last_timeout.store(timeout, Ordering::Relaxed);
            Ok(())
        }
        fn close(&self) -> Result<(), WatchdogError> {
            self.closed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        fn healthy(&self) -> bool {
            !self.broken.load(Ordering::Relaxed)
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn node(mode: WatchdogMode, device: Option<Arc<FakeDevice>>, margin: f64) -> NodeWatchdog {
        NodeWatchdog::new(
            Arc::new(ha_core::NoWatchdog),
            device.map(|d| Box::new(d) as Box<dyn ResetDevice>),
            mode,
            margin,
            secs(30),
            secs(10),
        )
    }

    #[test]
    fn timeout_is_ttl_minus_the_margin_or_half_the_ttl() {
        assert_eq!(watchdog_timeout(secs(30), secs(10), 5.0), Ok(25));
        assert_eq!(watchdog_timeout(secs(30), secs(10), -1.0), Ok(15));
        assert_eq!(watchdog_timeout(secs(6), secs(1), 2.5), Ok(3));
        assert!(watchdog_timeout(secs(12), secs(10), 5.0).is_err());
        assert!(watchdog_timeout(secs(30), secs(10), 30.0).is_err());
    }

    #[tokio::test]
    async fn arming_kicks_with_the_timeout_and_follows_ttl_changes() {
        let dev = Arc::new(FakeDevice::default());
        let w = node(WatchdogMode::Automatic, Some(dev.clone()), 5.0);
        w.arm_until(MonoTime(1)).await.expect("arm");
        assert_eq!(dev.last_timeout.load(Ordering::Relaxed), 25);
        w.timing_changed(secs(20), secs(5));
        w.arm_until(MonoTime(2)).await.expect("arm");
        assert_eq!(dev.last_timeout.load(Ordering::Relaxed), 15);
        assert_eq!(dev.kicks.load(Ordering::Relaxed), 2);
        w.disarm().await.expect("disarm");
        assert_eq!(dev.closed.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn pause_closes_the_watchdog_once_and_the_next_arm_reopens_it() {
        let dev = Arc::new(FakeDevice::default());
        let w = node(WatchdogMode::Required, Some(dev.clone()), 5.0);
        w.arm_until(MonoTime(1)).await.expect("arm");
        w.arm_fence_only(MonoTime(2)).await.expect("paused arm");
        w.arm_fence_only(MonoTime(3)).await.expect("paused arm");
        assert_eq!(dev.kicks.load(Ordering::Relaxed), 1, "not kicked in pause");
        assert_eq!(dev.closed.load(Ordering::Relaxed), 1, "closed once");
        assert!(w.usable(), "a paused watchdog is not a failed one");
        w.arm_until(MonoTime(4)).await.expect("resumed arm");
        assert_eq!(dev.kicks.load(Ordering::Relaxed), 2);
    }

    #[tokio::test]
    async fn automatic_mode_runs_on_without_a_working_watchdog() {
        let dev = Arc::new(FakeDevice::default());
        dev.broken.store(true, Ordering::Relaxed);
        let w = node(WatchdogMode::Automatic, Some(dev), 5.0);
        assert!(w.arm_until(MonoTime(1)).await.is_ok());
        assert!(w.usable());
        assert!(node(WatchdogMode::Automatic, None, 5.0).usable());
    }

    #[tokio::test]
    async fn required_mode_without_a_working_watchdog_is_not_usable() {
        let missing = node(WatchdogMode::Required, None, 5.0);
        assert!(!missing.usable());
        assert!(missing.arm_until(MonoTime(1)).await.is_err());

        let dev = Arc::new(FakeDevice::default());
        let w = node(WatchdogMode::Required, Some(dev.clone()), 5.0);
        assert!(w.usable());
        w.arm_until(MonoTime(1)).await.expect("arm");
        dev.broken.store(true, Ordering::Relaxed);
        assert!(w.arm_until(MonoTime(2)).await.is_err());
        dev.broken.store(false, Ordering::Relaxed);
        assert!(!w.usable(), "a kick failed within the last ttl");

        let too_short = node(WatchdogMode::Required, Some(Arc::default()), 25.0);
        assert!(
            !too_short.usable(),
            "a 5 s timeout cannot outlast loop_wait 10 s"
        );
    }
}
