//! The event trace: a running hash of every event (always, cheap) and, when asked
//! for, readable lines (one per event) to print for a failing seed.

use crate::clock::MonoTime;

/// Trace of one run.
#[derive(Debug, Clone)]
pub struct Trace {
    enabled: bool,
    hash: u64,
    lines: Vec<String>,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

impl Trace {
    /// A trace that keeps lines only when `enabled`.
    pub fn new(enabled: bool) -> Trace {
        Trace {
            enabled,
            hash: FNV_OFFSET,
            lines: Vec::new(),
        }
    }

    /// Whether lines are kept.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn mix(&mut self, v: u64) {
        for b in v.to_le_bytes() {
            self.hash ^= b as u64;
            self.hash = self.hash.wrapping_mul(FNV_PRIME);
        }
    }

    /// Records an event: `code` feeds the hash, `text` is built only when lines are kept.
    pub fn note(
        &mut self,
        at: MonoTime,
        node: Option<usize>,
        code: u64,
        text: impl FnOnce() -> String,
    ) {
        self.mix(at.0);
        self.mix(node.map_or(u64::MAX, |n| n as u64));
        self.mix(code);
        if self.enabled {
            let who = node.map_or_else(|| "--".to_string(), |n| format!("n{n}"));
            let ms = at.as_millis();
            self.lines.push(format!(
                "{:>4}.{:03}s {who} {}",
                ms / 1000,
                ms % 1000,
                text()
            ));
        }
    }

    /// The running hash of every event so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// The readable lines (empty unless enabled).
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Takes the lines out.
    pub fn into_lines(self) -> Vec<String> {
        self.lines
    }
}

/// A stable code for a string (for the hash of events whose identity is textual).
pub fn code_of(s: &str) -> u64 {
    let mut h = FNV_OFFSET;
    for b in s.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}
