//! Patroni's two-step logging: lines wait in a bounded in-memory queue
//! (`log.max_queue_size`) and one writer thread moves them to stderr or the file, so
//! a slow destination never stalls the HA loop. A line that finds the queue full is
//! dropped and counted; the count is reported in the log once there is room.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the writer thread puts lines.
pub trait Sink: Send {
    /// Writes one line (newline included). Errors are the sink's to handle.
    fn write_line(&mut self, line: &[u8]);
}

#[derive(Default)]
struct State {
    lines: VecDeque<Vec<u8>>,
    writing: bool,
    stop: bool,
    lost: u64,
}

/// The bounded queue between the loggers and the writer thread.
pub struct LineQueue {
    capacity: usize,
    state: Mutex<State>,
    /// Lines arrived or stop requested.
    wake: Condvar,
    /// The writer finished a batch.
    drained: Condvar,
}

impl LineQueue {
    /// A queue holding at most `capacity` lines.
    pub fn new(capacity: usize) -> LineQueue {
        LineQueue {
            capacity: capacity.max(1),
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
            drained: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues a line; `false` (and one more lost line) when the queue is full.
    pub fn push(&self, line: Vec<u8>) -> bool {
        let mut s = self.lock();
        if s.lines.len() >= self.capacity {
            s.lost += 1;
            return false;
        }
        s.lines.push_back(line);
        self.wake.notify_one();
        true
    }

    /// Lines lost since the last call.
    pub fn take_lost(&self) -> u64 {
        std::mem::take(&mut self.lock().lost)
    }

    /// Waits until every queued line is written, at most `within`; whether it was.
    pub fn flush(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        let mut s = self.lock();
        while !s.lines.is_empty() || s.writing {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            s = self
                .drained
                .wait_timeout(s, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Asks the writer to stop once the queue is empty.
    pub fn stop(&self) {
        self.lock().stop = true;
        self.wake.notify_all();
    }

    /// The writer thread's loop: returns after `stop` with an empty queue.
    pub fn run(&self, sink: &mut dyn Sink) {
        let mut s = self.lock();
        loop {
            if s.lines.is_empty() {
                s.writing = false;
                self.drained.notify_all();
                if s.stop {
                    return;
                }
                s = self.wake.wait(s).unwrap_or_else(|e| e.into_inner());
                continue;
            }
            let batch: Vec<Vec<u8>> = s.lines.drain(..).collect();
            s.writing = true;
            drop(s);
            for line in &batch {
                sink.write_line(line);
            }
            s = self.lock();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    struct Collect(Arc<Mutex<Vec<String>>>);
    impl Sink for Collect {
        fn write_line(&mut self, line: &[u8]) {
            self.0
                .lock()
                .unwrap()
                .push(String::from_utf8_lossy(line).into());
        }
    }

    #[test]
    fn full_queue_counts_lost_lines_and_stop_drains() {
        let q = Arc::new(LineQueue::new(2));
        assert!(q.push(b"a\n".to_vec()));
        assert!(q.push(b"b\n".to_vec()));
        assert!(!q.push(b"c\n".to_vec()));
        assert_eq!(q.take_lost(), 1);
        assert_eq!(q.take_lost(), 0);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let writer = {
            let (q, seen) = (q.clone(), seen.clone());
            std::thread::spawn(move || q.run(&mut Collect(seen)))
        };
        assert!(q.flush(Duration::from_secs(10)));
        assert!(q.push(b"d\n".to_vec()));
        q.stop();
        writer.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), ["a\n", "b\n", "d\n"]);
    }
}
