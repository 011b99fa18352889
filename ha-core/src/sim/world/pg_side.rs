//! The Postgres side of the simulated world: replication, client writes and their
//! acknowledgement, observations, the write fence.

use super::*;

impl World {
    pub(super) fn replicate(&mut self) {
        self.replicate_rounds += 1;
        let slow_round = self.replicate_rounds.is_multiple_of(SLOW_STREAM_EVERY);
        for i in 0..self.nodes.len() {
            let pg = &self.nodes[i].pg;
            if !pg.running || pg.hung || pg.role != PgRole::Replica || pg.data.is_none() {
                continue;
            }
            if self.net.slow_stream.contains(&i) && !slow_round {
                continue;
            }
            let source = pg
                .upstream
                .as_deref()
                .and_then(|u| self.index_of(u))
                .filter(|&j| j != i && self.net.link_up(i, j) && self.nodes[j].pg.serves());
            let was = self.nodes[i].pg.streaming;
            match source {
                Some(j) => {
                    let (a, b) = two(&mut self.nodes, i, j);
                    a.pg.replicate_from(b.pg.data.as_ref());
                }
                None => self.nodes[i].pg.replicate_from(None),
            }
            if was != self.nodes[i].pg.streaming {
                let now_streaming = self.nodes[i].pg.streaming;
                let up = self.nodes[i].pg.upstream.clone().unwrap_or_default();
                self.trace
                    .note(self.now, Some(i), 10 + now_streaming as u64, || {
                        if now_streaming {
                            format!("pg: streaming from {up}")
                        } else {
                            format!(
                                "pg: cannot stream from {up:?} (unreachable or diverged history)"
                            )
                        }
                    });
            }
        }
    }

    pub(super) fn client_write(&mut self) {
        for i in 0..self.nodes.len() {
            // The application is pointed at the cluster once it has a leader.
            if self.nodes[i].pg.accepts_writes() && !self.nodes[i].fresh_bootstrap {
                let id = self.new_record_id();
                let pg = &mut self.nodes[i].pg;
                pg.append(id);
                let skip_standbys = self.cfg.breakage == Some(Breakage::AckWithoutStandbys);
                if pg.synchronous_standby_names.is_some() && !skip_standbys {
                    let index = pg.data.as_ref().map_or(0, |d| d.wal.len() - 1);
                    self.client.pending.push(Pending { id, node: i, index });
                } else {
                    self.client.acknowledge(id, i, self.now.as_millis(), false);
                }
            }
        }
    }

    /// Releases the commits whose synchronous standbys have flushed them; drops those
    /// whose primary is gone.
    pub(super) fn acknowledge_synchronous(&mut self) {
        if self.client.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.client.pending);
        for p in pending {
            let pg = &self.nodes[p.node].pg;
            let still_there = pg.may_be_writable()
                && pg
                    .data
                    .as_ref()
                    .and_then(|d| d.wal.get(p.index))
                    .is_some_and(|e| e.id == p.id);
            if !still_there {
                continue;
            }
            let Some(names) = pg.synchronous_standby_names.clone() else {
                // Cleared (fallback to asynchronous): waiting commits are released.
                self.client
                    .acknowledge(p.id, p.node, self.now.as_millis(), false);
                continue;
            };
            let rule = StandbyNames::parse(Some(&names));
            let needed = WAL_BASE + (p.index as u64 + 1) * WAL_UNIT;
            let rows = self.replication_rows(p.node);
            let flushed = !pg.hung
                && if rule.any {
                    // ANY k: any k of the listed standbys.
                    rows.iter()
                        .filter(|r| r.sync_state == "quorum")
                        .filter(|r| r.flush_lsn.unwrap_or(0) >= needed)
                        .count()
                        >= rule.count.max(1)
                } else {
                    let sync: Vec<&ReplicationConnection> =
                        rows.iter().filter(|r| r.sync_state == "sync").collect();
                    sync.len() >= rule.count.max(1)
                        && sync.iter().all(|r| r.flush_lsn.unwrap_or(0) >= needed)
                };
            if flushed {
                self.client
                    .acknowledge(p.id, p.node, self.now.as_millis(), true);
            } else {
                self.client.pending.push(p);
            }
        }
    }

    /// `pg_stat_replication` of node `i`: its connected streaming standbys, with
    /// `sync_state` from its `synchronous_standby_names` (FIRST n by list order; `*`
    /// matches everyone, in node order).
    pub(in crate::sim) fn replication_rows(&self, i: usize) -> Vec<ReplicationConnection> {
        let me = &self.nodes[i];
        if !me.pg.may_be_writable() {
            return Vec::new();
        }
        let rule = StandbyNames::parse(me.pg.synchronous_standby_names.as_deref());
        let (count, listed) = (rule.count, rule.names);
        let any = listed.iter().any(|n| n == "*");
        let mut rows: Vec<(Option<usize>, usize, u64)> = Vec::new();
        for (j, n) in self.nodes.iter().enumerate() {
            let r = &n.pg;
            if j != i
                && r.running
                && !r.hung
                && r.streaming
                && r.upstream.as_deref() == Some(me.cfg.name.as_str())
                && self.net.link_up(i, j)
            {
                let priority = if any {
                    Some(0)
                } else {
                    listed
                        .iter()
                        .position(|l| l.eq_ignore_ascii_case(&n.cfg.name))
                };
                rows.push((priority, j, r.data.as_ref().map_or(0, |d| d.lsn())));
            }
        }
        rows.sort_by_key(|(p, j, _)| (p.is_none(), *p, *j));
        let mut synced = 0;
        let mut out: Vec<(usize, ReplicationConnection)> = rows
            .into_iter()
            .map(|(priority, j, lsn)| {
                let sync_state = match priority {
                    None => "async",
                    Some(_) if rule.any => "quorum",
                    Some(_) if synced < count => {
                        synced += 1;
                        "sync"
                    }
                    Some(_) => "potential",
                };
                (
                    j,
                    ReplicationConnection {
                        application_name: self.nodes[j].cfg.name.clone(),
                        state: "streaming".into(),
                        sync_state: sync_state.into(),
                        flush_lsn: Some(lsn),
                        write_lsn: Some(lsn),
                        replay_lsn: Some(lsn),
                        client_addr: None,
                        usename: None,
                        sync_priority: 0,
                    },
                )
            })
            .collect();
        out.sort_by_key(|(j, _)| *j);
        out.into_iter().map(|(_, r)| r).collect()
    }

    /// What the agent's queries see of node `i`'s Postgres.
    pub(in crate::sim) fn observe_pg(&self, i: usize) -> PgObservation {
        let mut o = self.nodes[i].pg.observe();
        if o.in_recovery == Some(false) {
            o.replication = self.replication_rows(i);
        }
        o
    }

    /// (c): a node just promoted must have every write acknowledged after synchronous
    /// standbys had it (in a synchronous-mode run).
    pub(in crate::sim) fn check_no_acknowledged_write_lost(&mut self, i: usize) {
        if !self.cfg.check_safety || !self.synchronous || self.violation.is_some() {
            return;
        }
        let Some(d) = self.nodes[i].pg.data.as_ref() else {
            return;
        };
        let have: BTreeSet<u64> = d.wal.iter().map(|e| e.id).collect();
        let lost: Vec<u64> = self
            .client
            .acked
            .iter()
            .filter(|a| !have.contains(&a.id))
            .map(|a| a.id)
            .collect();
        if let Some(first) = lost.first() {
            self.violation = Some(Violation::AcknowledgedWriteLost {
                at_ms: self.now.as_millis(),
                node: i,
                lost: lost.len(),
                first_id: *first,
            });
        }
    }

    /// Whether node `i`'s fence deadline has passed (it keeps Postgres from becoming
    /// writable until re-armed or disarmed).
    pub(in crate::sim) fn fence_expired(&self, i: usize) -> bool {
        self.nodes[i].fence.is_some_and(|d| self.now >= d)
    }

    pub(super) fn fence_fires(&mut self, i: usize, gen: u64) {
        let n = &mut self.nodes[i];
        if n.fence_gen != gen || n.fence.is_none_or(|d| d > self.now) {
            return;
        }
        if n.pg.kill() {
            self.trace.note(self.now, Some(i), 20, || {
                "fence: deadline passed, postgres killed".into()
            });
        }
    }

    /// Kills Postgres if it just became writable past its fence deadline.
    pub(in crate::sim) fn fence_on_writable(&mut self, i: usize) {
        if self.fence_expired(i) && self.nodes[i].pg.may_be_writable() {
            self.nodes[i].pg.kill();
            self.trace.note(self.now, Some(i), 21, || {
                "fence: postgres became writable after the deadline, killed".into()
            });
        }
    }
}
