//! Embedding fullauto's crates as a library, in three small programs that run in CI:
//!
//! - `ha-advisor` (`src/bin/ha_advisor.rs`): a dry run of the HA decision function
//!   over a live cluster read from etcd, built with [`Observation::new`]; [`advise`]
//!   is its core.
//! - [`FileDcs`] (`src/file_dcs.rs`): a custom DCS backend (a JSON file under
//!   `flock`, leases by the wall clock) that passes ha-core's conformance suite
//!   (`tests/file_dcs_conformance.rs`).
//! - `orchestrator` (`src/bin/orchestrator.rs`): a control plane that runs three
//!   PostgreSQL nodes in its own process, each an embedded [`ha_core::runner::Runner`]
//!   over pg-driver and the [`FileDcs`], with its own logging and shutdown, and
//!   fails one over (`tests/examples_run.rs` runs it).

#![warn(missing_docs)]

pub mod file_dcs;

pub use file_dcs::FileDcs;

use ha_core::decision::{
    decide, Action, LocalState, NodeConfig, Observation, Outcome, PeerReply, PeerStatus,
};
use ha_core::{Cluster, MonoTime, PgObservation, PgProcess};

/// What the engine would do next for `member`, judged from the published member
/// records alone (a dry run: nothing is written, no peer is called). Peer probes are
/// answered from the peers' records, as their agents would answer them; the run
/// stops at the first lease request, whose outcome only the DCS can tell. The
/// member's own `PublishMember` action is left out: every cycle does it.
pub fn advise(cluster: &Cluster, member: &str, now: MonoTime, wall_millis: i64) -> Vec<Action> {
    let Some(m) = cluster.member(member) else {
        return Vec::new();
    };
    let system_id = cluster.system_identifier().unwrap_or("0");
    let pg = PgObservation::from_member_record(&m.data, system_id);
    let mut obs = Observation::new(cluster.clone(), pg, now).with_wall_millis(wall_millis);
    let cfg = NodeConfig {
        tags: m.data.tags.clone(),
        ..NodeConfig::named(member)
    };
    let mut state = LocalState::default();
    let mut said = Vec::new();
    // The runner's cycle, without I/O: decide, feed back what a query would answer,
    // decide again while the decision asks for it.
    for _ in 0..8 {
        let decision = decide(&cfg, &state, &obs, now);
        state = decision.state;
        for action in decision.actions {
            if let Action::ProbePeers { names, .. } = &action {
                let replies = names.iter().map(|n| peer_from_record(cluster, n)).collect();
                obs.outcomes.push(Outcome::PeersProbed(replies));
            }
            let stop = matches!(action, Action::AcquireLease | Action::RenewLease { .. });
            if !action.is_query() {
                obs.executed.push(action.clone());
            }
            if !matches!(action, Action::PublishMember(_)) {
                said.push(action);
            }
            if stop {
                return said;
            }
        }
        if !decision.rerun {
            break;
        }
    }
    said
}

/// What a peer's agent would answer to a probe, read from its member record.
fn peer_from_record(cluster: &Cluster, name: &str) -> PeerStatus {
    let reply = cluster.member(name).map(|m| {
        let pg = PgObservation::from_member_record(&m.data, "");
        PeerReply {
            is_primary: pg.process == PgProcess::Running && pg.in_recovery == Some(false),
            wal_position: pg.wal_position(),
            timeline: pg.timeline,
            tags: m.data.tags.clone(),
            watchdog_failed: false,
        }
    });
    PeerStatus {
        name: name.to_string(),
        reply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn entry(key: &str, value: &str) -> RawEntry {
        RawEntry {
            key: key.into(),
            value: value.into(),
            version: Version(1),
            session: None,
        }
    }

    #[test]
    fn replica_of_a_dead_leader_would_race() {
        let c = Cluster::from_entries(vec![
            entry("initialize", "7"),
            entry(
                "members/b",
                r#"{"state":"running","role":"replica","xlog_location":5,"api_url":"http://x/patroni"}"#,
            ),
        ]);
        let actions = advise(&c, "b", MonoTime::from_millis(1), 0);
        assert_eq!(actions, vec![Action::AcquireLease]);
    }

    #[test]
    fn of_two_replicas_only_the_one_further_ahead_would_race() {
        let replica = |lsn: u64| {
            format!(
                r#"{{"state":"running","role":"replica","xlog_location":{lsn},"timeline":1,"api_url":"http://x/patroni"}}"#
            )
        };
        let c = Cluster::from_entries(vec![
            entry("initialize", "7"),
            entry("members/a", &replica(900)),
            entry("members/b", &replica(500)),
        ]);
        let now = MonoTime::from_millis(1);
        let probe = |peer: &str| Action::ProbePeers {
            names: vec![peer.to_string()],
            optional: Vec::new(),
        };
        assert_eq!(
            advise(&c, "a", now, 0),
            vec![probe("b"), Action::AcquireLease]
        );
        assert_eq!(advise(&c, "b", now, 0), vec![probe("a")]);
    }
}
