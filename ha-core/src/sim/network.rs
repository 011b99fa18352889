//! Reachability between nodes and the DCS, and the faults the simulator injects.

use std::collections::BTreeSet;
use std::time::Duration;

/// Who can talk to whom right now. The client reaches every node (so a split brain
/// shows up as two nodes taking writes).
#[derive(Debug, Clone, Default)]
pub struct Network {
    /// The whole DCS is down.
    pub dcs_down: bool,
    /// DCS answers are slow (some beyond `retry_timeout`).
    pub dcs_slow: bool,
    /// Nodes cut off from the DCS.
    pub cut_from_dcs: BTreeSet<usize>,
    /// Cut node↔node links, stored as (smaller, larger).
    pub cut_links: BTreeSet<(usize, usize)>,
    /// Replicas that stay connected but receive WAL only now and then (slow disk or
    /// network): they fall behind the others, which is when who may promote matters.
    pub slow_stream: BTreeSet<usize>,
}

impl Network {
    /// Whether node `i` reaches the DCS.
    pub fn dcs_reachable(&self, i: usize) -> bool {
        !self.dcs_down && !self.cut_from_dcs.contains(&i)
    }

    /// Whether nodes `a` and `b` reach each other.
    pub fn link_up(&self, a: usize, b: usize) -> bool {
        a == b || !self.cut_links.contains(&pair(a, b))
    }

    /// Heals every partition and outage.
    pub fn heal(&mut self) {
        *self = Network::default();
    }
}

/// An unordered node pair in canonical order.
pub fn pair(a: usize, b: usize) -> (usize, usize) {
    (a.min(b), a.max(b))
}

/// How many replication rounds a slow replica skips between two it takes part in.
pub const SLOW_STREAM_EVERY: u64 = 20;

/// One injected fault. Each has an end (heal) except requests to the cluster.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// The machine dies (agent, Postgres and fence); it reboots after `down`.
    NodeCrash {
        /// Node.
        node: usize,
        /// Downtime.
        down: Duration,
    },
    /// The agent is stopped (SIGSTOP, VM pause); Postgres and the fence keep running.
    AgentFreeze {
        /// Node.
        node: usize,
        /// For how long.
        duration: Duration,
    },
    /// Postgres dies on its own; the agent is unaffected.
    PgCrash {
        /// Node.
        node: usize,
    },
    /// Postgres stops answering for a while.
    PgHang {
        /// Node.
        node: usize,
        /// For how long.
        duration: Duration,
    },
    /// A node loses the DCS.
    PartitionFromDcs {
        /// Node.
        node: usize,
        /// For how long.
        duration: Duration,
    },
    /// Two nodes lose each other (replication, peer probes).
    PartitionNodes {
        /// One end.
        a: usize,
        /// The other end.
        b: usize,
        /// For how long.
        duration: Duration,
    },
    /// The whole DCS is down.
    DcsOutage {
        /// For how long.
        duration: Duration,
    },
    /// DCS answers slowly.
    SlowDcs {
        /// For how long.
        duration: Duration,
    },
    /// A replica receives WAL only every [`SLOW_STREAM_EVERY`] replication rounds.
    SlowReplica {
        /// Node.
        node: usize,
        /// For how long.
        duration: Duration,
    },
    /// `patronictl switchover` / `failover`: write the failover key.
    Switchover {
        /// Request a specific candidate (else any).
        candidate: Option<usize>,
        /// Include the current leader (switchover) or not (manual failover).
        with_leader: bool,
        /// Schedule it this far in the future.
        scheduled_in: Option<Duration>,
    },
    /// Toggle pause mode.
    TogglePause,
    /// Change ttl (within `loop_wait + 2·retry_timeout ≤ ttl`).
    SetTtl {
        /// New ttl, seconds.
        ttl: u64,
    },
}
