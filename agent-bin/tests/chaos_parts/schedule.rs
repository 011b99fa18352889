//! The fault schedule: a pure function of the seed, the run's length and the cluster's
//! shape, so one seed replays the same faults at the same offsets. Targets named by
//! role ("the primary", "a replica") are resolved when the fault fires.

use super::proxy::LinkMode;
use std::fmt;
use std::time::Duration;

/// splitmix64: small, seedable, good enough to pick faults.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Milliseconds in `lo..hi` seconds.
    pub fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(lo * 1000 + self.below((hi - lo) * 1000))
    }
}

/// Which node a fault hits.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// The node that accepted writes last, as the checker saw it.
    Primary,
    /// One of the nodes that refused writes as read-only last.
    Replica,
    /// A fixed node.
    Node(usize),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Primary => write!(f, "the primary"),
            Target::Replica => write!(f, "a replica"),
            Target::Node(i) => write!(f, "pg{i}"),
        }
    }
}

/// One fault (or an operator's request made while faults are active).
#[derive(Clone, Debug)]
pub enum Fault {
    /// kill -9 of the agent; started again when the fault ends.
    KillAgent(Target),
    /// kill -9 of the postmaster (its agent is expected to start it again).
    KillPostmaster(Target),
    /// kill -9 of agent and postmaster; the agent is started again when the fault ends.
    KillBoth(Target),
    /// SIGSTOP of the agent, SIGCONT when the fault ends.
    FreezeAgent(Target),
    /// SIGSTOP of the postmaster, SIGCONT when the fault ends.
    FreezePostmaster(Target),
    /// SIGSTOP of one DCS member, SIGCONT when the fault ends.
    FreezeDcsMember(usize),
    /// Two of three DCS members killed (no quorum), started again when the fault ends.
    QuorumLoss([usize; 2]),
    /// The node's agent cut from some DCS members (its links to them, see `proxy`).
    Partition {
        target: Target,
        members: Vec<usize>,
        mode: LinkMode,
    },
    /// The node's peers cut from its Postgres and REST API (replication from it, the
    /// leader race's questions to it); the node still reaches the DCS and its peers.
    Isolate { target: Target, mode: LinkMode },
    /// The disk of a replica's data directory filled; freed when the fault ends.
    DiskFull(Target),
    /// POST /switchover to the primary, to a given candidate or any.
    Switchover { candidate: Option<usize> },
    /// POST /restart to a node.
    Restart(Target),
    /// POST /reinitialize (force) to a replica.
    Reinit,
    /// PATCH /config pause: true; pause: null when the fault ends.
    Pause,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::KillAgent(t) => write!(f, "kill -9 the agent of {t}"),
            Fault::KillPostmaster(t) => write!(f, "kill -9 the postmaster of {t}"),
            Fault::KillBoth(t) => write!(f, "kill -9 agent and postmaster of {t}"),
            Fault::FreezeAgent(t) => write!(f, "SIGSTOP the agent of {t}"),
            Fault::FreezePostmaster(t) => write!(f, "SIGSTOP the postmaster of {t}"),
            Fault::FreezeDcsMember(m) => write!(f, "SIGSTOP DCS member {m}"),
            Fault::QuorumLoss([a, b]) => write!(f, "DCS quorum loss: members {a} and {b} killed"),
            Fault::Partition {
                target,
                members,
                mode,
            } => write!(
                f,
                "partition {t} from DCS members {members:?} ({mode})",
                t = target
            ),
            Fault::Isolate { target, mode } => {
                write!(
                    f,
                    "cut {target}'s Postgres and REST API off from its peers ({mode})"
                )
            }
            Fault::DiskFull(t) => write!(f, "fill the disk of {t}"),
            Fault::Switchover { candidate: Some(c) } => write!(f, "switchover to pg{c}"),
            Fault::Switchover { candidate: None } => write!(f, "switchover to any replica"),
            Fault::Restart(t) => write!(f, "restart {t} through the API"),
            Fault::Reinit => write!(f, "reinitialize a replica through the API"),
            Fault::Pause => write!(f, "pause the cluster"),
        }
    }
}

/// A fault at `at` after the start of the run, undone `hold` later.
#[derive(Clone, Debug)]
pub struct Step {
    pub at: Duration,
    pub hold: Duration,
    pub fault: Fault,
}

fn target(rng: &mut Rng, nodes: usize) -> Target {
    match rng.below(10) {
        0..=4 => Target::Primary,
        5..=7 => Target::Replica,
        _ => Target::Node(rng.below(nodes as u64) as usize),
    }
}

/// The schedule of a run of `total` on `nodes` nodes and `members` DCS members.
pub fn schedule(seed: u64, total: Duration, nodes: usize, members: usize) -> Vec<Step> {
    let mut rng = Rng::new(seed);
    let mut steps = Vec::new();
    // Writes and replication settle first.
    let mut at = rng.secs(3, 8);
    while at < total {
        let fault = match rng.below(22) {
            0 | 1 => Fault::KillAgent(target(&mut rng, nodes)),
            2 | 3 => Fault::KillPostmaster(target(&mut rng, nodes)),
            4 | 5 => Fault::KillBoth(target(&mut rng, nodes)),
            6 | 7 => Fault::FreezeAgent(target(&mut rng, nodes)),
            8 => Fault::FreezePostmaster(target(&mut rng, nodes)),
            9 => Fault::FreezeDcsMember(rng.below(members as u64) as usize),
            10 => {
                let a = rng.below(members as u64) as usize;
                let b = (a + 1 + rng.below(members as u64 - 1) as usize) % members;
                Fault::QuorumLoss([a, b])
            }
            11..=13 => {
                let all = rng.below(3) > 0;
                let members = if all {
                    (0..members).collect()
                } else {
                    vec![rng.below(members as u64) as usize]
                };
                let mode = match rng.below(5) {
                    0 => LinkMode::Reset,
                    1 => LinkMode::ToDcsLost,
                    2 => LinkMode::FromDcsLost,
                    3 => LinkMode::Slow,
                    _ => LinkMode::Blackhole,
                };
                Fault::Partition {
                    target: target(&mut rng, nodes),
                    members,
                    mode,
                }
            }
            14 | 15 => Fault::Switchover {
                candidate: (rng.below(2) == 0).then(|| rng.below(nodes as u64) as usize),
            },
            16 => Fault::Restart(target(&mut rng, nodes)),
            17 => Fault::Reinit,
            18 => Fault::Pause,
            19 => Fault::Isolate {
                target: target(&mut rng, nodes),
                mode: match rng.below(3) {
                    0 => LinkMode::Reset,
                    1 => LinkMode::Slow,
                    _ => LinkMode::Blackhole,
                },
            },
            20 => Fault::DiskFull(Target::Replica),
            _ => Fault::KillAgent(target(&mut rng, nodes)),
        };
        let hold = rng.secs(2, 30).min(total.saturating_sub(at));
        steps.push(Step { at, hold, fault });
        // Faults overlap: the next one often starts before this one ends; now and
        // then a quiet spell lets the cluster settle so the next faults hit a
        // working cluster.
        at += if rng.below(8) == 0 {
            rng.secs(20, 40)
        } else {
            rng.secs(1, 10)
        };
    }
    steps
}

#[test]
fn the_same_seed_gives_the_same_schedule_and_another_seed_another() {
    let a = schedule(42, Duration::from_secs(600), 3, 3);
    let b = schedule(42, Duration::from_secs(600), 3, 3);
    let c = schedule(43, Duration::from_secs(600), 3, 3);
    let show = |s: &[Step]| {
        s.iter()
            .map(|x| format!("{:?} {:?} {}", x.at, x.hold, x.fault))
            .collect::<Vec<_>>()
    };
    assert!(a.len() > 20, "{}", a.len());
    assert_eq!(show(&a), show(&b));
    assert_ne!(show(&a), show(&c));
}
