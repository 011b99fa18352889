//! The application: writes through every node that says it is a writable primary,
//! and remembers what was acknowledged.

/// When a write counts as acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AckPolicy {
    /// Asynchronous replication: acknowledged once in the primary's WAL.
    #[default]
    Async,
    // TODO(invariant c): `Sync` — acknowledge only once a standby listed in the `sync`
    // key has the record (hold the write as pending until replication delivers it),
    // and check after every failover that no acknowledged write is missing from the
    // new leader's WAL. Blocked on synchronous mode in `decide` (the sync key is never
    // written yet), so there is nothing honest to check.
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
}

/// The client's memory.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// How writes are acknowledged.
    pub policy: AckPolicy,
    /// Every acknowledged write, in order.
    pub acked: Vec<Ack>,
}

impl Client {
    /// Records an acknowledgement (async mode: the primary appended the record).
    pub fn acknowledge(&mut self, id: u64, node: usize, at_ms: u64) {
        match self.policy {
            AckPolicy::Async => self.acked.push(Ack { id, node, at_ms }),
        }
    }
}
