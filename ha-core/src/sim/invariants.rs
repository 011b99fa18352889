//! The properties every run is checked against.
//!
//! Safety (checked after every event, under any fault schedule):
//! - (a) never two nodes whose Postgres may accept writes at the same instant;
//! - (b) a Postgres that may accept writes belongs to a live agent that holds a valid
//!   lease by its own clock: the end of its last successful acquire/renew
//!   (`LocalState::lease_until` as last set), cut short when it sends a release;
//! - (e) whenever a node whose Postgres may accept writes holds a valid lease by its own
//!   clock, the DCS leader key names it — the DCS never expires a lease before the
//!   holder's own idea of its end (this checks the timing rule itself). With
//!   `SimConfig::strict_lease_view` it is checked for every node.
//!
//! Liveness (d), checked only after faults stop: within [`super::liveness_bound`],
//! exactly one Postgres accepts writes, its node holds the leader key, and every other
//! node runs a replica that follows it and actually streams (a replica "following" a
//! leader it cannot replicate from has not converged).
//!
//! - (c) in a synchronous-mode run, a node that is promoted has every write the client
//!   got acknowledged (commits wait for the standbys named in the primary's
//!   `synchronous_standby_names`, as PostgreSQL does; see `client`). Checked at every
//!   promotion; asynchronous runs only count lost writes.

use std::fmt;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// (a) Two writable primaries at once.
    SplitBrain {
        /// Simulated time, ms.
        at_ms: u64,
        /// The writable nodes.
        nodes: Vec<usize>,
    },
    /// (b) A writable Postgres whose agent holds no valid lease.
    WritableWithoutLease {
        /// Simulated time, ms.
        at_ms: u64,
        /// The node.
        node: usize,
        /// Its own lease end (ms), if any.
        lease_until_ms: Option<u64>,
        /// The agent is down.
        agent_down: bool,
    },
    /// (c) A promoted node lacks acknowledged writes (synchronous mode).
    AcknowledgedWriteLost {
        /// Simulated time, ms.
        at_ms: u64,
        /// The promoted node.
        node: usize,
        /// How many acknowledged writes it lacks.
        lost: usize,
        /// The first of them.
        first_id: u64,
    },
    /// (e) A node believes it holds the lease but the DCS says otherwise.
    LeaseNotInDcs {
        /// Simulated time, ms.
        at_ms: u64,
        /// The node.
        node: usize,
        /// Its own lease end (ms).
        lease_until_ms: u64,
        /// Who the DCS names instead.
        holder: Option<String>,
    },
    /// (d), one cause singled out: everything converged except replicas that follow
    /// the leader with a WAL history forked from the leader's, never rewound, so they
    /// cannot replicate. `decide` has no divergence check for a running replica.
    DivergedReplicaNotRewound {
        /// Simulated time, ms.
        at_ms: u64,
        /// The (first) diverged replica.
        node: usize,
        /// The leader it follows.
        leader: usize,
    },
    /// (d) No single leader with every replica following it within the bound.
    NoConvergence {
        /// Simulated time, ms.
        at_ms: u64,
        /// Which phase failed to converge (`setup` or `quiet`).
        phase: &'static str,
        /// What was still wrong.
        why: String,
    },
}

impl Violation {
    /// Short label naming the invariant.
    pub fn label(&self) -> &'static str {
        match self {
            Violation::SplitBrain { .. } => "(a) split brain",
            Violation::WritableWithoutLease { .. } => "(b) writable without a valid lease",
            Violation::LeaseNotInDcs { .. } => "(e) lease believed valid but not held in the DCS",
            Violation::AcknowledgedWriteLost { .. } => {
                "(c) acknowledged write lost by a failover (synchronous mode)"
            }
            Violation::DivergedReplicaNotRewound { .. } => {
                "(d) a replica with a forked WAL history is never rewound"
            }
            Violation::NoConvergence { .. } => "(d) no convergence after faults stopped",
        }
    }

    /// Whether it is a safety (not liveness) violation.
    pub fn is_safety(&self) -> bool {
        !matches!(
            self,
            Violation::NoConvergence { .. } | Violation::DivergedReplicaNotRewound { .. }
        )
    }
}

fn secs(ms: u64) -> String {
    format!("{}.{:03}s", ms / 1000, ms % 1000)
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.label())?;
        match self {
            Violation::SplitBrain { at_ms, nodes } => {
                let names: Vec<String> = nodes.iter().map(|n| format!("n{n}")).collect();
                write!(
                    f,
                    "at {} nodes {} may all accept writes",
                    secs(*at_ms),
                    names.join(", ")
                )
            }
            Violation::WritableWithoutLease {
                at_ms,
                node,
                lease_until_ms,
                agent_down,
            } => write!(
                f,
                "at {} n{node} may accept writes; its lease ends {}{}",
                secs(*at_ms),
                lease_until_ms.map_or("never (no lease)".to_string(), secs),
                if *agent_down {
                    " and its agent is down"
                } else {
                    ""
                }
            ),
            Violation::LeaseNotInDcs {
                at_ms,
                node,
                lease_until_ms,
                holder,
            } => write!(
                f,
                "at {} n{node} counts on its lease until {} but the leader key is {}",
                secs(*at_ms),
                secs(*lease_until_ms),
                holder
                    .as_deref()
                    .map_or("absent".to_string(), |h| format!("held by {h}"))
            ),
            Violation::AcknowledgedWriteLost {
                at_ms,
                node,
                lost,
                first_id,
            } => write!(
                f,
                "at {} n{node} was promoted without {lost} acknowledged writes (first: record {first_id})",
                secs(*at_ms)
            ),
            Violation::DivergedReplicaNotRewound {
                at_ms,
                node,
                leader,
            } => write!(
                f,
                "at {} everything converged except n{node}: it follows n{leader} but its WAL forked from n{leader}'s history and it was never rewound, so it cannot replicate",
                secs(*at_ms)
            ),
            Violation::NoConvergence { at_ms, phase, why } => {
                write!(f, "at {} ({phase} phase): {why}", secs(*at_ms))
            }
        }
    }
}
