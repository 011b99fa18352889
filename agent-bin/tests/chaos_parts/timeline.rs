//! The run's timeline: the nemesis's faults and the checker's observations, stamped
//! like the agents' log lines (`2026-01-31 12:00:00,123`, local time) so the agents'
//! decisions can be merged in by time when a run fails.

use std::path::Path;
use std::sync::{Arc, Mutex};

#[derive(Clone, Default)]
pub struct Timeline {
    events: Arc<Mutex<Vec<(String, String)>>>,
}

pub fn now_stamp() -> String {
    chrono::Local::now()
        .format("%Y-%m-%d %H:%M:%S,%3f")
        .to_string()
}

impl Timeline {
    /// Records `text` from `source` (nemesis, checker) now; also printed when the
    /// run was started with --nocapture.
    pub fn note(&self, source: &str, text: impl AsRef<str>) {
        let stamp = now_stamp();
        let line = format!("{source:<8} {}", text.as_ref());
        println!("{stamp} {line}");
        self.events.lock().expect("timeline").push((stamp, line));
    }

    /// Every event, merged by time with the INFO/WARNING/ERROR lines of the agents'
    /// logs (`(name, path)`); a line repeating the node's previous message is left out.
    pub fn merged(&self, logs: &[(String, &Path)]) -> Vec<String> {
        let mut all: Vec<(String, String)> = self.events.lock().expect("timeline").clone();
        for (name, path) in logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            let mut last = String::new();
            for line in text.lines() {
                // `YYYY-MM-DD HH:MM:SS,mmm LEVEL: message`
                let (Some(stamp), Some(rest)) = (line.get(..23), line.get(23..)) else {
                    continue;
                };
                if !stamp.starts_with(|c: char| c.is_ascii_digit()) {
                    continue;
                }
                let rest = rest.trim_start();
                if rest.starts_with("DEBUG") {
                    continue;
                }
                if rest == last {
                    continue;
                }
                last = rest.to_string();
                all.push((stamp.to_string(), format!("{name:<8} {rest}")));
            }
        }
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all.into_iter().map(|(s, l)| format!("{s} {l}")).collect()
    }
}
