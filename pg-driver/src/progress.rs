//! Progress lines for long operations (a clone, a rewind, a start that replays WAL):
//! while the operation runs, one log line every interval says how far it got.

use std::future::Future;
use std::path::Path;
use std::time::{Duration, Instant};

/// Runs `op`; every `every` while it runs, logs what `report` says about it after
/// that much time.
pub async fn logged<T>(
    op: impl Future<Output = T>,
    every: Duration,
    mut report: impl FnMut(Duration) -> String,
) -> T {
    let started = Instant::now();
    let every = every.max(Duration::from_millis(100));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(op);
    loop {
        tokio::select! {
            out = &mut op => return out,
            _ = ticks.tick() => {
                let line = report(started.elapsed());
                tracing::info!("{line}");
            }
        }
    }
}

/// Bytes under `dir` (files only; what cannot be read counts as nothing: a copy in
/// progress creates and renames files all the time).
pub fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            match e.metadata() {
                Ok(m) if m.is_dir() => stack.push(e.path()),
                Ok(m) => total += m.len(),
                Err(_) => {}
            }
        }
    }
    total
}

/// The last 8 KiB (at most) of what `file` got after its first `offset` bytes;
/// empty when nothing was added or it cannot be read.
pub fn log_tail_since(file: &Path, offset: u64) -> String {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::File::open(file) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    // A truncated or replaced log: all of it counts.
    let offset = if offset > len { 0 } else { offset };
    let from = offset.max(len.saturating_sub(8192));
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).into_owned()
}

/// `12.3 MiB` style.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// The reporter of a copy into `dir`: size so far, and the rate since the last line
/// and overall.
pub fn copy_reporter(what: &'static str, dir: &Path) -> impl FnMut(Duration) -> String {
    let dir = dir.to_path_buf();
    let mut last = (Duration::ZERO, 0u64);
    move |elapsed| {
        let size = dir_size(&dir);
        let span = elapsed.saturating_sub(last.0).as_secs_f64();
        let rate = if span > 0.0 {
            size.saturating_sub(last.1) as f64 / span
        } else {
            0.0
        };
        last = (elapsed, size);
        format!(
            "{what} in progress: {} copied into {} after {}s ({}/s now, {}/s on average)",
            bytes(size),
            dir.display(),
            elapsed.as_secs(),
            bytes(rate as u64),
            bytes((size as f64 / elapsed.as_secs_f64().max(0.001)) as u64),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_reads_only_what_was_added() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("log");
        std::fs::write(&f, "old line\nnew line\n").unwrap();
        assert_eq!(log_tail_since(&f, 9), "new line\n");
        assert_eq!(log_tail_since(&f, 18), "");
        assert_eq!(log_tail_since(&f, 1000), "old line\nnew line\n");
        assert_eq!(log_tail_since(&dir.path().join("none"), 0), "");
    }

    #[test]
    fn sizes_read_as_words() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(bytes(5 * 1024 * 1024 * 1024), "5.0 GiB");
    }

    #[tokio::test]
    async fn a_line_per_interval_until_the_operation_ends() {
        let done = std::sync::Arc::new(tokio::sync::Notify::new());
        let wait = done.clone();
        let mut seen = Vec::new();
        let out = logged(
            async move {
                wait.notified().await;
                7
            },
            Duration::from_millis(100),
            |e| {
                seen.push(e);
                if seen.len() == 3 {
                    done.notify_one();
                }
                String::new()
            },
        )
        .await;
        assert_eq!(out, 7);
        assert_eq!(seen.len(), 3, "{seen:?}");
        assert!(seen[0] >= Duration::from_millis(100), "{seen:?}");
        assert!(seen.windows(2).all(|w| w[0] < w[1]), "{seen:?}");
    }
}
