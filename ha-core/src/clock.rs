//! Injectable time: a monotonic instant for leases and deadlines, and wall-clock time
//! for scheduled actions.

use std::time::Duration;

/// A point on the system-wide monotonic clock, in nanoseconds. On Linux it is
/// `CLOCK_MONOTONIC`, which every process reads alike, so a deadline can be handed to
/// another process (the write fence) as an absolute value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MonoTime(pub u64);

impl MonoTime {
    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> MonoTime {
        MonoTime(
            self.0
                .saturating_add(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// `self - d`, saturating at zero.
    pub fn minus(self, d: Duration) -> MonoTime {
        MonoTime(
            self.0
                .saturating_sub(d.as_nanos().min(u64::MAX as u128) as u64),
        )
    }

    /// Time from `earlier` to `self` (zero if `earlier` is later).
    pub fn since(self, earlier: MonoTime) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// From milliseconds (for simulations and tests).
    pub fn from_millis(ms: u64) -> MonoTime {
        MonoTime(ms.saturating_mul(1_000_000))
    }

    /// As milliseconds.
    pub fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }
}

/// A source of time.
pub trait Clock: Send + Sync {
    /// Monotonic now.
    fn now(&self) -> MonoTime;
    /// Wall-clock now, milliseconds since the Unix epoch.
    fn wall_millis(&self) -> i64;
}

/// The real clocks of this machine.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> MonoTime {
        monotonic_now()
    }

    fn wall_millis(&self) -> i64 {
        chrono::Utc::now().timestamp_millis()
    }
}

/// Reads `CLOCK_MONOTONIC`.
pub fn monotonic_now() -> MonoTime {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC is always
    // available on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return MonoTime(0);
    }
    MonoTime((ts.tv_sec as u64).saturating_mul(1_000_000_000) + ts.tv_nsec as u64)
}

/// A clock the test or simulation moves by hand.
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ns: std::sync::atomic::AtomicU64,
    wall_offset_ms: i64,
}

impl ManualClock {
    /// Starts at `start`, with wall time = `wall_at_start_ms` at that instant.
    pub fn new(start: MonoTime, wall_at_start_ms: i64) -> Self {
        ManualClock {
            now_ns: std::sync::atomic::AtomicU64::new(start.0),
            wall_offset_ms: wall_at_start_ms - start.as_millis() as i64,
        }
    }

    /// Moves time forward.
    pub fn advance(&self, d: Duration) {
        self.now_ns
            .fetch_add(d.as_nanos() as u64, std::sync::atomic::Ordering::SeqCst);
    }

    /// Sets the monotonic time (never backwards).
    pub fn set(&self, t: MonoTime) {
        self.now_ns
            .fetch_max(t.0, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> MonoTime {
        MonoTime(self.now_ns.load(std::sync::atomic::Ordering::SeqCst))
    }

    fn wall_millis(&self) -> i64 {
        self.now().as_millis() as i64 + self.wall_offset_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_now();
        let b = monotonic_now();
        assert!(b >= a && a.0 > 0);
        let c = ManualClock::new(MonoTime::from_millis(1000), 5000);
        c.advance(Duration::from_millis(250));
        assert_eq!(c.now().as_millis(), 1250);
        assert_eq!(c.wall_millis(), 5250);
    }
}
