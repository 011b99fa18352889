//! The nemesis: applies the schedule's faults to the running cluster and undoes each
//! when its hold ends. A node is hit by one fault at a time and the DCS by one at a
//! time; a fault whose target is taken (or has no node in that role) is skipped and
//! says so in the timeline. Operator requests go out on their own threads so a slow
//! answer never delays the schedule.

use super::checker::Load;
use super::disk::Disks;
use super::proxy::{LinkMode, Links, Peers};
use super::schedule::{Fault, Rng, Step, Target};
use super::timeline::Timeline;
use crate::support::{http, Cluster};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

enum Undo {
    StartAgent(usize),
    Cont(usize, i32),
    ContAgent(usize),
    Release(usize),
    ContDcs(usize),
    SpawnDcs([usize; 2]),
    Heal(usize),
    HealPeers(usize),
    FreeDisk(usize),
    Resume,
}

/// What the nemesis acts through besides the cluster: the agents' links to the DCS,
/// the relays in front of each node, the nodes' disks.
pub struct Levers<'a> {
    pub links: &'a Links,
    pub peers: &'a Peers,
    pub disks: &'a Disks,
}

struct Active {
    until: Instant,
    undo: Undo,
}

pub struct Nemesis {
    rng: Rng,
    active: Vec<Active>,
    busy: Vec<bool>,
    dcs_busy: bool,
    paused: bool,
    pub injected: usize,
    pub skipped: usize,
    timeline: Timeline,
}

impl Nemesis {
    pub fn new(seed: u64, nodes: usize, timeline: Timeline) -> Nemesis {
        Nemesis {
            // Choices made when faults fire (which replica) come from the seed too.
            rng: Rng::new(seed ^ 0x5EED),
            active: Vec::new(),
            busy: vec![false; nodes],
            dcs_busy: false,
            paused: false,
            injected: 0,
            skipped: 0,
            timeline,
        }
    }

    fn note(&self, text: impl AsRef<str>) {
        self.timeline.note("nemesis", text);
    }

    /// The node `t` names now; with no free node in that role (no primary during a
    /// failover), any free node: faults keep coming while the cluster is in trouble.
    fn resolve(&mut self, t: Target, load: &Load) -> Option<usize> {
        let busy = self.busy.clone();
        let free = |i: &usize| !busy[*i];
        let found = match t {
            Target::Primary => load.primary().filter(free),
            Target::Replica => self.pick(load.replicas().into_iter().filter(free).collect()),
            Target::Node(i) => Some(i).filter(free),
        };
        found.or_else(|| self.pick((0..busy.len()).filter(free).collect()))
    }

    fn pick(&mut self, from: Vec<usize>) -> Option<usize> {
        (!from.is_empty()).then(|| from[self.rng.below(from.len() as u64) as usize])
    }

    /// Runs the schedule from `start`; every fault is undone by `start + total`.
    pub fn run(
        &mut self,
        c: &mut Cluster,
        levers: &Levers,
        load: &Load,
        steps: &[Step],
        start: Instant,
        total: Duration,
    ) {
        for step in steps {
            while Instant::now() < start + step.at {
                self.undo_due(c, levers, false);
                std::thread::sleep(Duration::from_millis(50));
            }
            self.apply(c, levers, load, step);
        }
        // Holds end by the run's end: let them end as scheduled.
        while !self.active.is_empty() && Instant::now() < start + total {
            self.undo_due(c, levers, false);
            std::thread::sleep(Duration::from_millis(50));
        }
        self.undo_due(c, levers, true);
    }

    fn skip(&mut self, step: &Step, why: &str) {
        self.skipped += 1;
        self.note(format!("skipped: {} ({why})", step.fault));
    }

    fn hold(&mut self, step: &Step, undo: Undo) {
        self.injected += 1;
        self.active.push(Active {
            until: Instant::now() + step.hold,
            undo,
        });
    }

    fn apply(&mut self, c: &mut Cluster, levers: &Levers, load: &Load, step: &Step) {
        let node_fault = match &step.fault {
            Fault::KillAgent(t)
            | Fault::KillPostmaster(t)
            | Fault::KillBoth(t)
            | Fault::FreezeAgent(t)
            | Fault::FreezePostmaster(t)
            | Fault::Partition { target: t, .. }
            | Fault::Isolate { target: t, .. }
            | Fault::DiskFull(t) => Some(*t),
            Fault::FreezeDcsMember(_)
            | Fault::QuorumLoss(_)
            | Fault::Switchover { .. }
            | Fault::Restart(_)
            | Fault::Reinit
            | Fault::Pause => None,
        };
        let node = match node_fault {
            Some(t) => match self.resolve(t, load) {
                Some(i) => Some(i),
                None => return self.skip(step, "every node is under a fault"),
            },
            None => None,
        };
        match (&step.fault, node) {
            (Fault::KillAgent(_), Some(i)) => {
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                c.kill_agent(i);
                self.busy[i] = true;
                self.hold(step, Undo::StartAgent(i));
            }
            (Fault::KillPostmaster(_), Some(i)) => {
                self.note(format!("{} = pg{i}", step.fault));
                c.kill_postmaster(i);
                self.busy[i] = true;
                self.hold(step, Undo::Release(i));
            }
            (Fault::KillBoth(_), Some(i)) => {
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                c.stop_node(i);
                self.busy[i] = true;
                self.hold(step, Undo::StartAgent(i));
            }
            (Fault::FreezeAgent(_), Some(i)) => {
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                c.signal_agent(i, libc::SIGSTOP);
                self.busy[i] = true;
                self.hold(step, Undo::ContAgent(i));
            }
            (Fault::FreezePostmaster(_), Some(i)) => {
                let Some(pid) = c.postmaster_pid(i) else {
                    return self.skip(step, "no postmaster.pid");
                };
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                // SAFETY: signalling the postmaster our agent started.
                unsafe { libc::kill(pid, libc::SIGSTOP) };
                self.busy[i] = true;
                self.hold(step, Undo::Cont(i, pid));
            }
            (Fault::Partition { members, mode, .. }, Some(i)) => {
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                levers.links.set(i, members, *mode);
                self.busy[i] = true;
                self.hold(step, Undo::Heal(i));
            }
            (Fault::Isolate { mode, .. }, Some(i)) => {
                self.note(format!("{} = pg{i}, for {:?}", step.fault, step.hold));
                levers.peers.set(i, *mode);
                self.busy[i] = true;
                self.hold(step, Undo::HealPeers(i));
            }
            (Fault::DiskFull(_), Some(i)) => match levers.disks.fill(i) {
                Ok(mib) => {
                    self.note(format!(
                        "{} = pg{i} ({mib} MiB written until it was full), for {:?}",
                        step.fault, step.hold
                    ));
                    self.busy[i] = true;
                    self.hold(step, Undo::FreeDisk(i));
                }
                Err(why) => {
                    levers.disks.free(i);
                    self.skip(step, &why)
                }
            },
            (Fault::FreezeDcsMember(m), None) => {
                if self.dcs_busy {
                    return self.skip(step, "another DCS fault is active");
                }
                self.note(format!("{}, for {:?}", step.fault, step.hold));
                c.dcs.pause_member(*m);
                self.dcs_busy = true;
                self.hold(step, Undo::ContDcs(*m));
            }
            (Fault::QuorumLoss(pair), None) => {
                if self.dcs_busy {
                    return self.skip(step, "another DCS fault is active");
                }
                self.note(format!("{}, for {:?}", step.fault, step.hold));
                for &m in pair {
                    c.dcs.kill_member(m);
                }
                self.dcs_busy = true;
                self.hold(step, Undo::SpawnDcs(*pair));
            }
            (Fault::Switchover { candidate }, None) => {
                let Some(p) = load.primary() else {
                    return self.skip(step, "no primary seen");
                };
                let mut body = json!({"leader": format!("pg{p}")});
                if let Some(cand) = candidate {
                    body["candidate"] = json!(format!("pg{cand}"));
                }
                self.request(c, p, "POST", "/switchover", body, step);
            }
            (Fault::Restart(t), None) => {
                let Some(i) = self.resolve(*t, load) else {
                    return self.skip(step, "every node is under a fault");
                };
                self.request(c, i, "POST", "/restart", json!({}), step);
            }
            (Fault::Reinit, None) => {
                let Some(i) = self.pick(load.replicas()) else {
                    return self.skip(step, "no replica seen");
                };
                self.request(c, i, "POST", "/reinitialize", json!({"force": true}), step);
            }
            (Fault::Pause, None) => {
                if self.paused {
                    return self.skip(step, "already paused");
                }
                let i = self.rng.below(c.nodes.len() as u64) as usize;
                self.request(c, i, "PATCH", "/config", json!({"pause": true}), step);
                self.paused = true;
                self.active.push(Active {
                    until: Instant::now() + step.hold,
                    undo: Undo::Resume,
                });
            }
            (f, n) => panic!("nemesis: fault {f} resolved to {n:?}"),
        }
    }

    /// Sends an operator's request from its own thread; the answer goes to the timeline.
    fn request(
        &mut self,
        c: &Cluster,
        i: usize,
        method: &str,
        path: &str,
        body: Value,
        step: &Step,
    ) {
        self.injected += 1;
        self.note(format!("{} = {method} {path} {body} to pg{i}", step.fault));
        let (port, method, path, tl) = (
            c.nodes[i].api_port,
            method.to_string(),
            path.to_string(),
            self.timeline.clone(),
        );
        std::thread::spawn(move || {
            let answer = http(&method, port, &path, Some(&body));
            tl.note(
                "nemesis",
                match answer {
                    Some((s, v)) => format!("pg{i} answered {method} {path}: {s} {v}"),
                    None => format!("pg{i} did not answer {method} {path}"),
                },
            );
        });
    }

    /// Undoes the faults whose hold ended (all of them with `all`).
    fn undo_due(&mut self, c: &mut Cluster, levers: &Levers, all: bool) {
        let now = Instant::now();
        let (mut due, keep): (Vec<Active>, Vec<Active>) = std::mem::take(&mut self.active)
            .into_iter()
            .partition(|a| all || a.until <= now);
        self.active = keep;
        // Resuming asks the agents: after every other fault is undone.
        due.sort_by_key(|a| matches!(a.undo, Undo::Resume));
        for a in due {
            match a.undo {
                Undo::StartAgent(i) => {
                    self.note(format!("start the agent of pg{i} again"));
                    c.start(i);
                    self.busy[i] = false;
                }
                Undo::Cont(i, pid) => {
                    self.note(format!("SIGCONT the postmaster of pg{i}"));
                    // SAFETY: the postmaster this nemesis stopped.
                    unsafe { libc::kill(pid, libc::SIGCONT) };
                    self.busy[i] = false;
                }
                Undo::ContAgent(i) => {
                    self.note(format!("SIGCONT the agent of pg{i}"));
                    c.signal_agent(i, libc::SIGCONT);
                    self.busy[i] = false;
                }
                Undo::Release(i) => self.busy[i] = false,
                Undo::ContDcs(m) => {
                    self.note(format!("SIGCONT DCS member {m}"));
                    c.dcs.resume_member(m);
                    self.dcs_busy = false;
                }
                Undo::SpawnDcs(pair) => {
                    self.note(format!(
                        "start DCS members {} and {} again",
                        pair[0], pair[1]
                    ));
                    for m in pair {
                        c.dcs.spawn_member(m);
                    }
                    self.dcs_busy = false;
                }
                Undo::Heal(i) => {
                    self.note(format!("pg{i}'s links to the DCS open again"));
                    levers
                        .links
                        .set(i, &(0..c.dcs.members()).collect::<Vec<_>>(), LinkMode::Open);
                    self.busy[i] = false;
                }
                Undo::HealPeers(i) => {
                    self.note(format!("pg{i}'s peers reach it again"));
                    levers.peers.set(i, LinkMode::Open);
                    self.busy[i] = false;
                }
                Undo::FreeDisk(i) => {
                    self.note(format!("free the disk of pg{i}"));
                    levers.disks.free(i);
                    self.busy[i] = false;
                }
                Undo::Resume => {
                    let ports: Vec<u16> = c.nodes.iter().map(|n| n.api_port).collect();
                    let tl = self.timeline.clone();
                    let resume = std::thread::spawn(move || resume(&ports, &tl));
                    if all {
                        let _ = resume.join();
                    }
                    self.paused = false;
                }
            }
        }
    }
}

/// PATCH /config pause: null, asking each node in turn until one takes it.
fn resume(ports: &[u16], timeline: &Timeline) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while Instant::now() < deadline {
        for (i, port) in ports.iter().enumerate() {
            if let Some((200, _)) = http("PATCH", *port, "/config", Some(&json!({"pause": null}))) {
                timeline.note("nemesis", format!("resumed the cluster through pg{i}"));
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    timeline.note("nemesis", "could not resume the cluster in 180 s");
}
