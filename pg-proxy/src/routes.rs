//! Where clients go, computed from one read of the cluster: the primary is the member
//! the leader key names, the replicas are the running replicas that accept load.
//! Pure: no I/O, no clock.

use ha_core::{Cluster, MemberState, Role};
use std::fmt;

/// One server clients can be sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// Member name.
    pub name: String,
    /// Host from the member's `conn_url`.
    pub host: String,
    /// Port from the member's `conn_url`.
    pub port: u16,
}

impl Target {
    /// `host:port`, bracketed for IPv6, for connecting.
    pub fn address(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at {}", self.name, self.address())
    }
}

/// Why no read-write client can be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPrimary {
    /// The proxy has not read the DCS yet.
    NotRead,
    /// No member holds the leader key.
    NoLeader,
    /// The leader's member record has no usable `conn_url`.
    NoAddress(String),
    /// The DCS has not answered for longer than the leader key's ttl: the lease may
    /// have moved without the proxy hearing of it.
    DcsSilent {
        /// Seconds since the last successful read.
        seconds: u64,
    },
}

impl fmt::Display for NoPrimary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoPrimary::NotRead => write!(f, "the proxy has not read the cluster from the DCS yet"),
            NoPrimary::NoLeader => write!(f, "no member holds the leader key"),
            NoPrimary::NoAddress(name) => write!(
                f,
                "the leader {name} publishes no usable conn_url in its member record"
            ),
            NoPrimary::DcsSilent { seconds } => write!(
                f,
                "the DCS has not answered for {seconds} s (longer than the leader ttl), so \
                 the proxy cannot know which node holds the lease"
            ),
        }
    }
}

/// The routing view the listeners use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routes {
    /// The member the leader key names, or why there is none.
    pub primary: Result<Target, NoPrimary>,
    /// Running replicas that accept read-only load, by name.
    pub replicas: Vec<Target>,
    /// A switchover or failover was requested (the `failover` key is set and due):
    /// new read-write connections wait for it to finish.
    pub switching: bool,
    /// The leader's member record does not say it runs as primary yet (it took the
    /// key and is still promoting): new read-write connections wait for it.
    pub promoting: bool,
}

impl Default for Routes {
    fn default() -> Self {
        Routes {
            primary: Err(NoPrimary::NotRead),
            replicas: Vec::new(),
            switching: false,
            promoting: false,
        }
    }
}

impl Routes {
    /// The routes of `cluster` at `now_millis` (epoch ms, for scheduled switchovers);
    /// replicas more than `max_lag` bytes behind the leader's last known position
    /// are left out.
    pub fn from_cluster(cluster: &Cluster, max_lag: Option<u64>, now_millis: i64) -> Routes {
        let target = |m: &ha_core::Member| {
            m.host_port().map(|(host, port)| Target {
                name: m.name.clone(),
                host,
                port,
            })
        };
        let leader = cluster.leader.as_ref().map(|l| l.name.as_str());
        let primary = match leader {
            None => Err(NoPrimary::NoLeader),
            Some(name) => cluster
                .member(name)
                .and_then(target)
                .ok_or_else(|| NoPrimary::NoAddress(name.to_string())),
        };
        let leader_position = cluster
            .status
            .optime
            .or_else(|| cluster.leader_member().and_then(|m| m.data.xlog_location));
        let mut replicas: Vec<Target> = cluster
            .members
            .iter()
            .filter(|m| Some(m.name.as_str()) != leader)
            .filter(|m| m.data.role == Some(Role::Replica))
            .filter(|m| m.data.state == Some(MemberState::Running))
            .filter(|m| !m.data.tags.no_load_balance())
            .filter(|m| match (max_lag, leader_position) {
                (Some(limit), Some(at)) => at.saturating_sub(m.data.wal_position()) <= limit,
                _ => true,
            })
            .filter_map(target)
            .collect();
        replicas.sort_by(|a, b| a.name.cmp(&b.name));
        let switching = cluster.failover_request().is_some_and(|f| {
            !f.is_empty()
                && match f.scheduled_at_millis() {
                    Ok(Some(at)) => at <= now_millis,
                    // Not scheduled (or unreadable: the agents will refuse it, but it
                    // is not up to the proxy to decide): a request under way.
                    Ok(None) | Err(_) => true,
                }
                // A request naming a leader that no longer holds the key is done
                // (the agents clear it): the new leader's writes need not wait for
                // the key's deletion.
                && f.leader.as_deref().is_none_or(|l| leader == Some(l))
        });
        // The new leader clears the failover key as it takes the lease, before its
        // promotion ends; its record says `primary` once Postgres left recovery.
        let promoting = primary.is_ok()
            && !cluster
                .leader_member()
                .is_some_and(|m| matches!(m.data.role, Some(Role::Primary | Role::StandbyLeader)));
        Routes {
            primary,
            replicas,
            switching,
            promoting,
        }
    }

    /// Whether a new read-write connection can go to the primary now (else it waits,
    /// up to the pause deadline).
    pub fn ready_for_writes(&self) -> bool {
        self.primary.is_ok() && !self.switching && !self.promoting
    }

    /// The leader key names a member whose record does not say it runs as primary
    /// yet, and no switchover is pending: a session that checks for itself that the
    /// member left recovery may write there before its record says so.
    pub fn awaits_promotion(&self) -> bool {
        self.primary.is_ok() && !self.switching && self.promoting
    }

    /// The same routes with the primary withdrawn for `why` (replicas stay: they
    /// cannot take writes).
    pub fn without_primary(&self, why: NoPrimary) -> Routes {
        Routes {
            primary: Err(why),
            ..self.clone()
        }
    }

    /// The primary's member name, if there is one.
    pub fn primary_name(&self) -> Option<&str> {
        self.primary.as_ref().ok().map(|t| t.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::RawEntry;

    fn cluster(entries: &[(&str, &str)]) -> Cluster {
        Cluster::from_entries(entries.iter().map(|(k, v)| RawEntry {
            key: k.to_string(),
            value: v.to_string(),
            version: ha_core::Version(0),
            session: None,
        }))
    }

    fn member(port: u16, role: &str, state: &str, extra: &str) -> String {
        format!(
            r#"{{"conn_url":"postgres://127.0.0.1:{port}/postgres","role":"{role}","state":"{state}"{extra}}}"#
        )
    }

    #[test]
    fn primary_is_the_member_the_leader_key_names() {
        let a = member(5001, "primary", "running", "");
        let b = member(5002, "replica", "running", "");
        let c = cluster(&[("leader", "a"), ("members/a", &a), ("members/b", &b)]);
        let r = Routes::from_cluster(&c, None, 0);
        assert_eq!(r.primary_name(), Some("a"));
        assert_eq!(r.primary.as_ref().unwrap().address(), "127.0.0.1:5001");
        assert_eq!(r.replicas.len(), 1);
        assert_eq!(r.replicas[0].name, "b");
        assert!(!r.switching);

        assert!(r.ready_for_writes());

        // The record's role does not matter for the primary: the key does. But until
        // the record says primary, new writers wait.
        let c = cluster(&[("leader", "b"), ("members/a", &a), ("members/b", &b)]);
        let r = Routes::from_cluster(&c, None, 0);
        assert_eq!(r.primary_name(), Some("b"));
        assert!(r.replicas.is_empty(), "{r:?}");
        assert!(r.promoting);
        assert!(!r.ready_for_writes());
    }

    #[test]
    fn no_leader_key_or_no_address_means_no_primary() {
        let a = member(5001, "primary", "running", "");
        let r = Routes::from_cluster(&cluster(&[("members/a", &a)]), None, 0);
        assert_eq!(r.primary, Err(NoPrimary::NoLeader));
        let r = Routes::from_cluster(&cluster(&[("leader", "z"), ("members/a", &a)]), None, 0);
        assert_eq!(r.primary, Err(NoPrimary::NoAddress("z".into())));
    }

    #[test]
    fn replicas_skip_noloadbalance_stopped_and_lagging_members() {
        let a = member(5001, "primary", "running", r#","xlog_location":10000"#);
        let b = member(5002, "replica", "running", r#","xlog_location":9000"#);
        let c = member(
            5003,
            "replica",
            "running",
            r#","tags":{"noloadbalance":true}"#,
        );
        let d = member(5004, "replica", "stopped", "");
        let e = member(5005, "replica", "running", r#","xlog_location":100"#);
        let cl = cluster(&[
            ("leader", "a"),
            ("members/a", &a),
            ("members/b", &b),
            ("members/c", &c),
            ("members/d", &d),
            ("members/e", &e),
        ]);
        let names = |r: &Routes| {
            r.replicas
                .iter()
                .map(|t| t.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&Routes::from_cluster(&cl, None, 0)), ["b", "e"]);
        assert_eq!(names(&Routes::from_cluster(&cl, Some(1000), 0)), ["b"]);
    }

    #[test]
    fn a_due_failover_key_means_a_switchover_is_under_way() {
        let a = member(5001, "primary", "running", "");
        let c = cluster(&[
            ("leader", "a"),
            ("members/a", &a),
            ("failover", r#"{"leader":"a","member":"b"}"#),
        ]);
        assert!(Routes::from_cluster(&c, None, 0).switching);
        // Once the key left the request's leader, the request is over for routing:
        // the new leader's writes wait for its promotion only.
        let b = member(5002, "replica", "running", "");
        let c = cluster(&[
            ("leader", "b"),
            ("members/a", &a),
            ("members/b", &b),
            ("failover", r#"{"leader":"a","member":"b"}"#),
        ]);
        let r = Routes::from_cluster(&c, None, 0);
        assert!(!r.switching && r.promoting && r.awaits_promotion(), "{r:?}");
        assert!(!r.ready_for_writes());
        let c = cluster(&[
            ("leader", "a"),
            ("members/a", &a),
            (
                "failover",
                r#"{"leader":"a","member":"b","scheduled_at":"2030-01-01T00:00:00+00:00"}"#,
            ),
        ]);
        assert!(!Routes::from_cluster(&c, None, 0).switching);
        assert!(Routes::from_cluster(&c, None, i64::MAX).switching);
    }
}
