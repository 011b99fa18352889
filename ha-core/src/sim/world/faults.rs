//! Fault injection and healing: crashes, freezes, partitions, outages, operator requests.

use super::*;

impl World {
    pub(super) fn fault_tick(&mut self) {
        if !matches!(self.phase, Phase::Faults { .. }) {
            return;
        }
        let f = self.pick_fault();
        self.inject(f);
        let d = self.rng.millis(200, 2500);
        self.after(d, Ev::FaultTick);
    }

    fn pick_fault(&mut self) -> Fault {
        let n = self.nodes.len();
        let node = self.rng.index(n);
        let ttl_ms = self.current_ttl_s() * 1000;
        match self.rng.below(100) {
            0..=9 => Fault::NodeCrash {
                node,
                down: self.rng.millis(300, 8000),
            },
            10..=24 => Fault::AgentFreeze {
                node,
                duration: self.rng.millis(100, 2 * ttl_ms),
            },
            25..=31 => Fault::PgCrash { node },
            32..=36 => Fault::PgHang {
                node,
                duration: self.rng.millis(100, 4000),
            },
            37..=46 => Fault::PartitionFromDcs {
                node,
                duration: self.rng.millis(200, 8000),
            },
            47..=51 => Fault::SlowReplica {
                node,
                duration: self.rng.millis(500, 8000),
            },
            52..=63 => {
                let other = (node + 1 + self.rng.index(n - 1)) % n;
                Fault::PartitionNodes {
                    a: node,
                    b: other,
                    duration: self.rng.millis(200, 8000),
                }
            }
            64..=69 => Fault::DcsOutage {
                duration: self.rng.millis(200, 6000),
            },
            70..=77 => Fault::SlowDcs {
                duration: self.rng.millis(500, 6000),
            },
            78..=91 => Fault::Switchover {
                candidate: self.rng.chance(60).then_some(node),
                with_leader: self.rng.chance(80),
                scheduled_in: self.rng.chance(20).then(|| self.rng.millis(0, 3000)),
            },
            92..=95 => Fault::TogglePause,
            _ => Fault::SetTtl {
                ttl: TTL_CHOICES_S[self.rng.index(TTL_CHOICES_S.len())],
            },
        }
    }

    fn current_ttl_s(&mut self) -> u64 {
        self.current_config().0.ttl as u64
    }

    fn current_config(&mut self) -> (DynamicConfig, Option<Version>) {
        match self.store.get(self.now, &self.keys.config()) {
            Some(e) => (
                DynamicConfig::parse(&e.value).unwrap_or_else(|_| self.bootstrap_config.clone()),
                Some(e.version),
            ),
            None => (self.bootstrap_config.clone(), None),
        }
    }

    fn inject(&mut self, f: Fault) {
        self.faults += 1;
        let text = format!("{f:?}");
        self.trace.note(
            self.now,
            None,
            30 + crate::sim::trace::code_of(&text),
            || format!("FAULT {text}"),
        );
        match f {
            Fault::NodeCrash { node, down } => {
                if !self.nodes[node].down {
                    self.crash_node(node);
                    let gen = self.nodes[node].down_gen;
                    self.after(down, Ev::Reboot { node, gen });
                }
            }
            Fault::AgentFreeze { node, duration } => {
                let n = &mut self.nodes[node];
                if !n.down && !n.frozen {
                    n.frozen = true;
                    n.freeze_gen += 1;
                    let gen = n.freeze_gen;
                    self.after(duration, Ev::Unfreeze { node, gen });
                }
            }
            Fault::PgCrash { node } => {
                self.nodes[node].pg.kill();
            }
            Fault::PgHang { node, duration } => {
                let pg = &mut self.nodes[node].pg;
                if pg.running {
                    pg.hung = true;
                    pg.streaming = false;
                    self.after(duration, Ev::Heal(Heal::Unhang(node)));
                }
            }
            Fault::PartitionFromDcs { node, duration } => {
                self.net.cut_from_dcs.insert(node);
                self.after(duration, Ev::Heal(Heal::Dcs(node)));
            }
            Fault::PartitionNodes { a, b, duration } => {
                self.net.cut_links.insert(pair(a, b));
                self.after(duration, Ev::Heal(Heal::Link(a, b)));
            }
            Fault::DcsOutage { duration } => {
                self.net.dcs_down = true;
                self.after(duration, Ev::Heal(Heal::Outage));
            }
            Fault::SlowDcs { duration } => {
                self.net.dcs_slow = true;
                self.after(duration, Ev::Heal(Heal::Slow));
            }
            Fault::SlowReplica { node, duration } => {
                self.net.slow_stream.insert(node);
                self.after(duration, Ev::Heal(Heal::Stream(node)));
            }
            Fault::Switchover {
                candidate,
                with_leader,
                scheduled_in,
            } => self.request_switchover(candidate, with_leader, scheduled_in),
            Fault::TogglePause => {
                let (mut c, v) = self.current_config();
                c.pause = !c.pause;
                self.write_config(c, v);
            }
            Fault::SetTtl { ttl } => {
                let (mut c, v) = self.current_config();
                c.ttl = ttl as f64;
                if c.validate().is_empty() {
                    self.write_config(c, v);
                }
            }
        }
    }

    /// What `patronictl` does through the REST API: a CAS write of `config`.
    fn write_config(&mut self, c: DynamicConfig, v: Option<Version>) {
        if self.net.dcs_down {
            return;
        }
        let ok = self.ctl.set_config(&mut self.store, self.now, &c, v);
        let (ttl, pause) = (c.ttl, c.pause);
        self.trace.note(self.now, None, 40 + ok as u64, || {
            format!("ctl: config ttl={ttl} pause={pause} written={ok}")
        });
    }

    fn request_switchover(
        &mut self,
        candidate: Option<usize>,
        with_leader: bool,
        scheduled_in: Option<Duration>,
    ) {
        if self.net.dcs_down {
            return;
        }
        let leader = self.leader_name();
        if with_leader && leader.is_none() {
            return;
        }
        let member = candidate.map(|c| self.nodes[c].cfg.name.clone());
        if member.is_none() && !with_leader {
            return;
        }
        // The REST API refuses a candidate that is not a synchronous standby (in quorum
        // mode any candidate may be named: it still needs the votes).
        let on_mode = self.bootstrap_config.synchronous_mode == SynchronousMode::On;
        if let (true, Some(m)) = (on_mode, member.as_deref()) {
            let sync = self
                .store
                .get(self.now, &self.keys.sync())
                .and_then(|e| crate::model::SyncState::parse(&e.value).ok());
            if !sync.is_some_and(|s| s.is_standby(m)) {
                return;
            }
        }
        let scheduled_at = scheduled_in.and_then(|d| {
            chrono::DateTime::from_timestamp_millis(self.wall_millis() + d.as_millis() as i64)
                .map(|t| t.to_rfc3339())
        });
        let f = Failover {
            leader: if with_leader { leader } else { None },
            member,
            scheduled_at,
        };
        let json = f.to_json();
        self.ctl.set_failover(&mut self.store, self.now, &f, None);
        self.trace
            .note(self.now, None, 50, || format!("ctl: failover key {json}"));
    }

    pub(super) fn heal(&mut self, h: Heal) {
        match h {
            Heal::Dcs(i) => {
                self.net.cut_from_dcs.remove(&i);
            }
            Heal::Link(a, b) => {
                self.net.cut_links.remove(&pair(a, b));
            }
            Heal::Outage => self.net.dcs_down = false,
            Heal::Slow => self.net.dcs_slow = false,
            Heal::Unhang(i) => self.nodes[i].pg.hung = false,
            Heal::Stream(i) => {
                self.net.slow_stream.remove(&i);
            }
        }
    }

    fn crash_node(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.pg.kill();
        n.down = true;
        n.down_gen += 1;
        n.epoch += 1;
        n.frozen = false;
        n.deferred.clear();
        n.cycle = None;
        n.job = None;
        n.fence = None;
        n.horizon = None;
        n.failsafe_horizon = false;
        n.state = Default::default();
        n.failsafe = Default::default();
        n.leader_seen = None;
        n.renewed_at = None;
    }

    pub(super) fn reboot(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.down = false;
        n.dcs = MemoryDcsNode::new(self.keys.clone(), n.cfg.name.clone(), n.dcs.timing());
        self.trace.note(self.now, Some(i), 60, || {
            "machine boots; agent starts".into()
        });
        let at = self.now.plus(Duration::from_millis(100));
        self.schedule_tick(i, at);
    }

    pub(super) fn unfreeze(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        n.frozen = false;
        let deferred = std::mem::take(&mut n.deferred);
        self.trace
            .note(self.now, Some(i), 61, || "agent resumes".into());
        for ev in deferred {
            self.push(self.now, ev);
        }
    }

    /// Ends every fault: the quiet phase starts from here.
    pub(super) fn heal_all(&mut self) {
        self.net.heal();
        for i in 0..self.nodes.len() {
            if self.nodes[i].frozen {
                self.unfreeze(i);
            }
            if self.nodes[i].down {
                self.reboot(i);
            }
            self.nodes[i].pg.hung = false;
        }
        let (mut c, v) = self.current_config();
        if c.pause {
            c.pause = false;
            self.write_config(c, v);
        }
        self.trace
            .note(self.now, None, 70, || "QUIET: all faults healed".into());
    }
}
