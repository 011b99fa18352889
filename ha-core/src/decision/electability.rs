//! Who could take over now, member by member, and why not: the leader-race rules of
//! `decision::health` (the ones `decide()` applies to itself) read from the cluster
//! view alone, with member records standing in for the peers' live answers.
//!
//! `GET /cluster`, `fullautoctl list --explain` and the dashboard all show this one
//! answer, so they never disagree with each other or with the race.

use super::health::{position_blockers, quorum_restriction, standing_blockers};
use super::quorum::{self, Answer, QuorumNotReached, WalEnd};
use crate::model::{Cluster, DynamicConfig, Member, MemberState, Role};
use std::fmt;

/// One reason a member may not take over now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Blocker {
    /// Maintenance mode: only a manual failover moves leadership.
    Paused,
    /// The member is named (e.g. as a synchronous standby) but has no member key:
    /// its agent is down or cannot reach the DCS.
    NoMemberKey,
    /// Its member key has no `api_url`: peers cannot ask it for its position.
    NoApiUrl,
    /// Postgres is not running (the reported state).
    NotRunning {
        /// The state the member reports (`stopped`, `starting`, …; empty if none).
        state: String,
    },
    /// Tagged `nofailover` (or `failover_priority: 0`).
    NoFailover,
    /// Failsafe mode is active and the member is not in the failsafe topology.
    OutsideFailsafeTopology,
    /// `synchronous_mode: on` and the member is not a synchronous standby.
    NotSynchronous,
    /// Synchronous mode with an unreadable `sync` key.
    SyncKeyMalformed,
    /// Quorum mode: the voters could not elect it (the quorum rule's words).
    Quorum(QuorumNotReached),
    /// Further behind the leader's last position than `maximum_lag_on_failover`.
    Lag {
        /// Bytes behind.
        lag: u64,
        /// `maximum_lag_on_failover`.
        max: u64,
    },
    /// `check_timeline` is set and the member is on an older timeline.
    TimelineBehind {
        /// The member's timeline (0 when it reports none).
        timeline: u64,
        /// The cluster's timeline (from `history`).
        cluster: u64,
    },
}

impl Blocker {
    /// A short stable code for scripts and the dashboard.
    pub fn code(&self) -> &'static str {
        match self {
            Blocker::Paused => "paused",
            Blocker::NoMemberKey => "no_member_key",
            Blocker::NoApiUrl => "unreachable",
            Blocker::NotRunning { .. } => "not_running",
            Blocker::NoFailover => "nofailover",
            Blocker::OutsideFailsafeTopology => "not_in_failsafe_topology",
            Blocker::NotSynchronous => "not_synchronous",
            Blocker::SyncKeyMalformed => "sync_key_malformed",
            Blocker::Quorum(_) => "no_quorum",
            Blocker::Lag { .. } => "lag",
            Blocker::TimelineBehind { .. } => "timeline",
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Blocker::Paused => write!(f, "paused: only a manual failover promotes"),
            Blocker::NoMemberKey => write!(
                f,
                "unreachable: no member key (its agent is down or cannot reach the DCS)"
            ),
            Blocker::NoApiUrl => write!(f, "unreachable: its member key has no api_url"),
            Blocker::NotRunning { state } if state.is_empty() => {
                write!(f, "postgres is not running")
            }
            Blocker::NotRunning { state } => write!(f, "postgres is not running ({state})"),
            Blocker::NoFailover => write!(f, "tagged nofailover"),
            Blocker::OutsideFailsafeTopology => {
                write!(f, "failsafe mode: not in the failsafe topology")
            }
            Blocker::NotSynchronous => write!(f, "not a synchronous standby"),
            Blocker::SyncKeyMalformed => write!(f, "the sync key is malformed"),
            Blocker::Quorum(why) => write!(f, "{why}"),
            Blocker::Lag { lag, max } => {
                write!(f, "lag {lag} bytes is over maximum_lag_on_failover ({max})")
            }
            Blocker::TimelineBehind { timeline, cluster } => write!(
                f,
                "timeline {timeline} is behind the cluster's timeline {cluster}"
            ),
        }
    }
}

/// Whether one member could take over now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Electability {
    /// It holds the leader key.
    Leader,
    /// The race rules let it take over if the leader went away now.
    Electable,
    /// It may not, for these reasons (every rule that applies, in the race's order).
    NotElectable(Vec<Blocker>),
}

impl Electability {
    /// Whether a failover now could pick this member.
    pub fn is_electable(&self) -> bool {
        match self {
            Electability::Electable => true,
            Electability::Leader | Electability::NotElectable(_) => false,
        }
    }

    /// The reasons it may not take over (empty for the leader and electable members).
    pub fn blockers(&self) -> &[Blocker] {
        match self {
            Electability::NotElectable(b) => b,
            Electability::Leader | Electability::Electable => &[],
        }
    }
}

/// One member's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberElectability {
    /// Member name.
    pub name: String,
    /// The answer.
    pub electability: Electability,
}

/// For each member key (sorted by name), then each synchronous standby the `sync` key
/// names without a member key: whether it could take over now and, if not, why.
pub fn explain(c: &Cluster) -> Vec<MemberElectability> {
    let dc = c.dynamic_config();
    let mut members: Vec<&Member> = c.members.iter().collect();
    members.sort_by(|a, b| a.name.cmp(&b.name));
    let mut out: Vec<MemberElectability> = members
        .iter()
        .map(|m| MemberElectability {
            name: m.name.clone(),
            electability: member_electability(&dc, c, m),
        })
        .collect();
    if let Some(s) = &c.sync {
        for name in &s.value.sync_standby {
            if c.member(name).is_none() && !out.iter().any(|e| e.name == *name) {
                out.push(MemberElectability {
                    name: name.clone(),
                    electability: Electability::NotElectable(vec![Blocker::NoMemberKey]),
                });
            }
        }
    }
    out
}

/// One member's answer from its record and the rest of the view.
pub fn member_electability(dc: &DynamicConfig, c: &Cluster, m: &Member) -> Electability {
    if c.is_leader(&m.name) {
        return Electability::Leader;
    }
    let mut why = Vec::new();
    if dc.pause {
        why.push(Blocker::Paused);
    }
    if m.data.api_url.is_none() {
        why.push(Blocker::NoApiUrl);
    }
    let running = m.data.state == Some(MemberState::Running);
    if !running {
        why.push(Blocker::NotRunning {
            state: m
                .data
                .state
                .as_ref()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
        });
    }
    why.extend(standing_blockers(dc, c, &m.name, &m.data.tags));
    if let Some(s) = quorum_restriction(dc, c) {
        let answers: Vec<Answer> = c
            .members
            .iter()
            .filter(|o| o.data.state == Some(MemberState::Running))
            .map(|o| Answer {
                name: o.name.clone(),
                wal: (o.data.timeline.is_some() && o.data.wal_position() > 0).then(|| wal_end(o)),
                is_primary: c.is_leader(&o.name) || o.data.role == Some(Role::Primary),
            })
            .collect();
        if let Err(reason) = quorum::may_be_elected(&s, &m.name, wal_end(m), &answers) {
            why.push(Blocker::Quorum(reason));
        }
    }
    // A stopped member reports no position: its lag and timeline say nothing more.
    if running || m.data.wal_position() > 0 {
        why.extend(position_blockers(
            dc,
            c,
            m.data.wal_position(),
            m.data.timeline.unwrap_or(0),
            false,
        ));
    }
    if why.is_empty() {
        Electability::Electable
    } else {
        Electability::NotElectable(why)
    }
}

fn wal_end(m: &Member) -> WalEnd {
    WalEnd {
        timeline: m.data.timeline.unwrap_or(0),
        lsn: m.data.wal_position(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{RawEntry, Version};

    fn cluster(entries: &[(&str, &str)]) -> Cluster {
        Cluster::from_entries(entries.iter().map(|(k, v)| RawEntry {
            key: (*k).to_string(),
            value: (*v).to_string(),
            version: Version(1),
            session: None,
        }))
    }

    /// Each member as `name: electable` / `name: leader` / `name: reason; reason`.
    fn render(c: &Cluster) -> Vec<String> {
        explain(c)
            .into_iter()
            .map(|e| match e.electability {
                Electability::Leader => format!("{}: leader", e.name),
                Electability::Electable => format!("{}: electable", e.name),
                Electability::NotElectable(why) => format!(
                    "{}: {}",
                    e.name,
                    why.iter()
                        .map(|b| b.to_string())
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            })
            .collect()
    }

    const RUNNING_A: (&str, &str) = (
        "members/a",
        r#"{"api_url":"http://a:8008/patroni","state":"running","role":"primary","xlog_location":1000,"timeline":2}"#,
    );

    fn replica(lsn: u64, timeline: u64, extra: &str) -> String {
        format!(
            r#"{{"api_url":"http://x/patroni","state":"running","role":"replica","xlog_location":{lsn},"timeline":{timeline}{extra}}}"#
        )
    }

    #[test]
    fn healthy_replicas_are_electable_and_the_leader_is_named() {
        let b = replica(1000, 2, "");
        let c = cluster(&[
            ("leader", "a"),
            RUNNING_A,
            ("members/b", &b),
            ("members/c", &b),
            ("status", r#"{"optime":1000}"#),
        ]);
        assert_eq!(render(&c), ["a: leader", "b: electable", "c: electable"]);
    }

    #[test]
    fn each_rule_names_its_reason() {
        let lagging = replica(100, 2, "");
        let nofailover = replica(1000, 2, r#","tags":{"nofailover":true}"#);
        let stopped = r#"{"api_url":"http://d/patroni","state":"stopped","role":"replica"}"#;
        let no_api = r#"{"state":"running","role":"replica","xlog_location":1000,"timeline":2}"#;
        let old_timeline = replica(1000, 1, "");
        let c = cluster(&[
            ("leader", "a"),
            RUNNING_A,
            ("members/b", &lagging),
            ("members/c", &nofailover),
            ("members/d", stopped),
            ("members/e", no_api),
            ("members/f", &old_timeline),
            (
                "config",
                r#"{"maximum_lag_on_failover":500,"check_timeline":true}"#,
            ),
            ("history", r#"[[1,900,"no recovery target specified"]]"#),
            ("status", r#"{"optime":1000}"#),
        ]);
        assert_eq!(
            render(&c),
            [
                "a: leader",
                "b: lag 900 bytes is over maximum_lag_on_failover (500)",
                "c: tagged nofailover",
                "d: postgres is not running (stopped)",
                "e: unreachable: its member key has no api_url",
                "f: timeline 1 is behind the cluster's timeline 2",
            ]
        );
    }

    #[test]
    fn synchronous_mode_allows_only_the_sync_standbys_and_names_missing_ones() {
        let r = replica(1000, 2, "");
        let c = cluster(&[
            ("leader", "a"),
            RUNNING_A,
            ("members/b", &r),
            ("members/c", &r),
            ("config", r#"{"synchronous_mode":true}"#),
            ("sync", r#"{"leader":"a","sync_standby":"b,z"}"#),
        ]);
        assert_eq!(
            render(&c),
            [
                "a: leader",
                "b: electable",
                "c: not a synchronous standby",
                "z: unreachable: no member key (its agent is down or cannot reach the DCS)",
            ]
        );
    }

    #[test]
    fn quorum_mode_needs_the_voters() {
        let caught_up = replica(1000, 2, "");
        let behind = replica(900, 2, "");
        let c = cluster(&[
            ("leader", "a"),
            RUNNING_A,
            ("members/b", &caught_up),
            ("members/c", &behind),
            ("members/d", &caught_up),
            ("config", r#"{"synchronous_mode":"quorum"}"#),
            ("sync", r#"{"leader":"a","sync_standby":"b,c","quorum":1}"#),
        ]);
        // b: c votes (not ahead of b). c: b and d are ahead of it, so no vote.
        // d: not a voter, needs quorum + 1 = 2 votes: b (equal) and c (behind).
        assert_eq!(
            render(&c),
            [
                "a: leader",
                "b: electable",
                "c: quorum not reached: 0 of 1 votes from the synchronous standbys b,c",
                "d: electable",
            ]
        );
    }

    #[test]
    fn pause_and_failsafe_topology_block_everyone_they_apply_to() {
        let r = replica(1000, 2, "");
        let c = cluster(&[
            ("leader", "a"),
            RUNNING_A,
            ("members/b", &r),
            ("members/c", &r),
            ("config", r#"{"pause":true,"failsafe_mode":true}"#),
            (
                "failsafe",
                r#"{"a":"http://a:8008/patroni","b":"http://b/patroni"}"#,
            ),
        ]);
        assert_eq!(
            render(&c),
            [
                "a: leader",
                "b: paused: only a manual failover promotes",
                "c: paused: only a manual failover promotes; failsafe mode: not in the failsafe topology",
            ]
        );
    }
}
