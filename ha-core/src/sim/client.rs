//! The application: writes through every node that says it is a writable primary,
//! and remembers what was acknowledged.

/// When a write counts as acknowledged: what the primary's
/// `synchronous_standby_names` says, as PostgreSQL does. Empty: as soon as it is in
/// the primary's WAL; set: once the synchronous standbys it names (FIRST n, or `*`)
/// have flushed it. Until then the write is pending; it is dropped (the client sees an
/// error) if that primary stops being one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// The record id.
    pub id: u64,
    /// The primary it was written to.
    pub node: usize,
    /// Its position in that primary's WAL.
    pub index: usize,
}

/// One acknowledged write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ack {
    /// The record id.
    pub id: u64,
    /// The node that acknowledged it.
    pub node: usize,
    /// When, in simulated milliseconds.
    pub at_ms: u64,
    /// Acknowledged only after synchronous standbys had it.
    pub synchronous: bool,
}

/// The client's memory.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Every acknowledged write, in order.
    pub acked: Vec<Ack>,
    /// Writes waiting for synchronous standbys.
    pub pending: Vec<Pending>,
}

impl Client {
    /// Records an acknowledgement.
    pub fn acknowledge(&mut self, id: u64, node: usize, at_ms: u64, synchronous: bool) {
        self.acked.push(Ack {
            id,
            node,
            at_ms,
            synchronous,
        });
    }
}
