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

pub mod file_dcs;

pub use file_dcs::FileDcs;

use ha_core::decision::{decide, Action, LocalState, NodeConfig, Observation};
use ha_core::{Cluster, MonoTime, PgObservation};

/// What the engine would do next for `member`, judged from its published record
/// alone (a dry run: no lease outcomes, no peer probes). The member's own
/// `PublishMember` action is left out: it is done every cycle.
pub fn advise(cluster: &Cluster, member: &str, now: MonoTime, wall_millis: i64) -> Vec<Action> {
    let Some(m) = cluster.member(member) else {
        return Vec::new();
    };
    let system_id = cluster.system_identifier().unwrap_or("0");
    let pg = PgObservation::from_member_record(&m.data, system_id);
    let obs = Observation::new(cluster.clone(), pg, now).with_wall_millis(wall_millis);
    let cfg = NodeConfig {
        tags: m.data.tags.clone(),
        ..NodeConfig::named(member)
    };
    let decision = decide(&cfg, &LocalState::default(), &obs, now);
    decision
        .actions
        .into_iter()
        .filter(|a| !matches!(a, Action::PublishMember(_)))
        .collect()
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
}
