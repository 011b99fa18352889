//! Operator requests (REST `POST /restart`, `POST /reinitialize`): accepted only when
//! they cannot cost the cluster its primary or its data, refused with Patroni's reasons
//! otherwise. Allowed in pause mode too, as in Patroni.

use super::input::{Busy, OperatorRequest, RequestVerdict};
use super::{upstream_of, Action, Renewal, Step};
use crate::model::Cluster;
use crate::postgres::{DataDirState, PgProcess};

impl Step<'_> {
    /// Answers a pending request. Returns true when it took over this step (an action
    /// carrying it out, or a lease renewal it waits for, was emitted).
    pub(super) fn answer_request(&mut self, c: &Cluster, request: OperatorRequest) -> bool {
        match request {
            OperatorRequest::Restart => self.restart(c),
            OperatorRequest::Reinitialize { from_leader, .. } => self.reinitialize(c, from_leader),
        }
    }

    fn refuse_request(&mut self, why: impl Into<String>) -> bool {
        self.verdict = Some(RequestVerdict::Refused(why.into()));
        false
    }

    fn restart(&mut self, c: &Cluster) -> bool {
        if self.obs.pg.data_dir == DataDirState::Empty {
            return self.refuse_request("postgres is not initialized");
        }
        match self.obs.pg.process {
            PgProcess::Starting => return self.refuse_request("postgres is still starting"),
            // A hung postmaster may still commit: the recovery rules stop it first.
            PgProcess::Hung => return self.refuse_request("postgres is not running"),
            // Unpaused, a leader's stopped or crashed Postgres is the recovery rules'
            // job. Otherwise a restart starts it, as Patroni's does (a stop of a stopped
            // server is a no-op): in pause nothing else would.
            PgProcess::Stopped | PgProcess::Crashed if c.is_leader(self.me()) && !self.paused() => {
                return self.refuse_request("postgres is not running")
            }
            PgProcess::Stopped | PgProcess::Crashed | PgProcess::Running => {}
        }
        if !c.is_leader(self.me()) {
            if self.obs.pg.may_accept_writes() {
                // A writable node without the lease is being demoted by the rules.
                return self.refuse_request("restart conditions are not satisfied");
            }
            let upstream = self.upstream_for_replica(c);
            self.say("restarting postgres as a replica on request");
            self.verdict = Some(RequestVerdict::Started);
            self.act(Action::Restart {
                token: None,
                upstream,
            });
            return true;
        }
        // The primary restarts under a freshly confirmed lease, so it comes back writable
        // only while it still leads.
        match self.ensure_renewed() {
            Renewal::Pending => true,
            Renewal::Lost | Renewal::Failed(_) => {
                self.refuse_request("restart failed: the leader lock could not be confirmed")
            }
            Renewal::Renewed => {
                self.arm_fence();
                let Some(token) = self.token(Some(c)) else {
                    return self.refuse_request("restart failed: no valid leader lock");
                };
                self.say("restarting postgres as primary on request");
                self.verdict = Some(RequestVerdict::Started);
                self.act(Action::Restart {
                    token: Some(token),
                    upstream: None,
                });
                true
            }
        }
    }

    /// A forced reinitialize cancels what a replica is busy with, when that is only
    /// getting its data or its server up: nothing a leader does, nothing that changes
    /// roles. Returns true when it took over this step.
    pub(super) fn cancel_for_reinitialize(
        &mut self,
        c: &Cluster,
        busy: Busy,
        from_leader: bool,
    ) -> bool {
        let cancellable = matches!(
            busy,
            Busy::Clone | Busy::Start | Busy::Restart | Busy::Reinitialize | Busy::CopySlots
        );
        if !cancellable || c.is_leader(self.me()) || self.st.lease_until.is_some() {
            return false;
        }
        let before = self.actions.len();
        self.act(Action::CancelBackground);
        if self.reinitialize(c, from_leader) {
            self.say(format!(
                "cancelled {} for a forced reinitialize",
                busy.describe()
            ));
            return true;
        }
        // Refused (no leader to clone from): leave the running action alone.
        self.actions.truncate(before);
        true
    }

    fn reinitialize(&mut self, c: &Cluster, from_leader: bool) -> bool {
        if c.is_leader(self.me()) || self.st.lease_until.is_some() {
            return self.refuse_request("I am the leader, can not reinitialize");
        }
        let Some(leader) = c.leader_member().filter(|m| m.name != self.me()) else {
            return self.refuse_request("Cluster has no leader, can not reinitialize");
        };
        let source = if from_leader {
            upstream_of(leader)
        } else {
            self.clone_source(c).or_else(|| upstream_of(leader))
        };
        let Some(source) = source else {
            return self.refuse_request("the leader has not published its address yet");
        };
        let follow = self.upstream_for_replica(c);
        self.say(format!("reinitializing: re-cloning from {}", source.name));
        self.verdict = Some(RequestVerdict::Started);
        self.st.rewind_pending = false;
        self.act(Action::Reinitialize { source, follow });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{cfg, obs, pg_primary, pg_replica, t, without_publish, View};
    use super::super::{decide, Busy, LocalState, Outcome};
    use super::*;
    use crate::dcs::DcsError;

    fn three_node_view() -> Cluster {
        View::new()
            .leader("a")
            .member("a", "primary", 100)
            .member("b", "replica", 100)
            .member("c", "replica", 100)
            .cluster()
    }

    fn ask(
        name: &str,
        pg: crate::postgres::PgObservation,
        request: OperatorRequest,
        outcomes: Vec<Outcome>,
    ) -> super::super::Decision {
        let mut o = obs(three_node_view(), pg, outcomes);
        o.request = Some(request);
        decide(&cfg(name), &LocalState::default(), &o, t(1000))
    }

    #[test]
    fn primary_restarts_only_under_a_freshly_renewed_lease() {
        let d = ask("a", pg_primary(100), OperatorRequest::Restart, vec![]);
        assert!(
            matches!(d.actions.as_slice(), [Action::RenewLease { .. }]),
            "{:?}",
            d.actions
        );
        assert_eq!(d.verdict, None, "no answer before the lease is confirmed");

        let renewed = vec![Outcome::LeaseRenewed { sent_at: t(1000) }];
        let d = ask("a", pg_primary(100), OperatorRequest::Restart, renewed);
        assert_eq!(d.verdict, Some(RequestVerdict::Started));
        let restart = without_publish(&d.actions)
            .into_iter()
            .find(|a| matches!(a, Action::Restart { .. }));
        match restart {
            Some(Action::Restart {
                token: Some(token),
                upstream: None,
            }) => assert!(token.valid_until > t(1000)),
            other => panic!("expected a primary restart with a token, got {other:?}"),
        }
    }

    #[test]
    fn primary_restart_refused_when_the_lease_is_lost() {
        let d = ask(
            "a",
            pg_primary(100),
            OperatorRequest::Restart,
            vec![Outcome::LeaseLost],
        );
        assert!(matches!(d.verdict, Some(RequestVerdict::Refused(_))));
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::Restart { .. })));
    }

    #[test]
    fn replica_restarts_following_the_leader() {
        let d = ask("b", pg_replica(100), OperatorRequest::Restart, vec![]);
        assert_eq!(d.verdict, Some(RequestVerdict::Started));
        let upstream = d.actions.iter().find_map(|a| match a {
            Action::Restart {
                token: None,
                upstream,
            } => Some(upstream.clone()),
            _ => None,
        });
        assert_eq!(
            upstream.flatten().map(|u| u.name),
            Some("a".to_string()),
            "{:?}",
            d.actions
        );
    }

    #[test]
    fn restart_starts_a_replica_whose_postgres_died() {
        // Patroni's acceptance suite: in pause, kill a replica's postmaster, then
        // `patronictl restart`: the restart starts it again.
        let mut pg = pg_replica(100);
        pg.process = crate::postgres::PgProcess::Crashed;
        let d = ask("b", pg, OperatorRequest::Restart, vec![]);
        assert_eq!(d.verdict, Some(RequestVerdict::Started));
        assert!(
            d.actions.iter().any(
                |a| matches!(a, Action::Restart { token: None, upstream: Some(u) } if u.name == "a")
            ),
            "{:?}",
            d.actions
        );
        // The leader's dead Postgres stays the recovery rules' job (not paused here).
        let mut pg = pg_primary(100);
        pg.process = crate::postgres::PgProcess::Crashed;
        let d = ask("a", pg, OperatorRequest::Restart, vec![]);
        assert_eq!(
            d.verdict,
            Some(RequestVerdict::Refused("postgres is not running".into()))
        );
    }

    #[test]
    fn restart_of_a_starting_server_is_refused() {
        let mut pg = pg_replica(100);
        pg.process = crate::postgres::PgProcess::Starting;
        let d = ask("b", pg, OperatorRequest::Restart, vec![]);
        assert_eq!(
            d.verdict,
            Some(RequestVerdict::Refused("postgres is still starting".into()))
        );
    }

    #[test]
    fn reinitialize_refused_on_the_leader() {
        let renewed = vec![Outcome::LeaseRenewed { sent_at: t(1000) }];
        let d = ask(
            "a",
            pg_primary(100),
            OperatorRequest::Reinitialize {
                from_leader: false,
                force: false,
            },
            renewed,
        );
        assert_eq!(
            d.verdict,
            Some(RequestVerdict::Refused(
                "I am the leader, can not reinitialize".into()
            ))
        );
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::Reinitialize { .. })));
    }

    #[test]
    fn reinitialize_refused_without_a_leader() {
        let c = View::new()
            .member("a", "primary", 100)
            .member("b", "replica", 100)
            .cluster();
        let mut o = obs(c, pg_replica(100), vec![]);
        o.request = Some(OperatorRequest::Reinitialize {
            from_leader: false,
            force: false,
        });
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert_eq!(
            d.verdict,
            Some(RequestVerdict::Refused(
                "Cluster has no leader, can not reinitialize".into()
            ))
        );
    }

    #[test]
    fn replica_reinitializes_from_the_leader() {
        let d = ask(
            "b",
            pg_replica(100),
            OperatorRequest::Reinitialize {
                from_leader: true,
                force: false,
            },
            vec![],
        );
        assert_eq!(d.verdict, Some(RequestVerdict::Started));
        let source = d.actions.iter().find_map(|a| match a {
            Action::Reinitialize { source, .. } => Some(source.name.clone()),
            _ => None,
        });
        assert_eq!(source.as_deref(), Some("a"));
    }

    #[test]
    fn requests_while_busy_are_refused_with_the_running_action() {
        let mut o = obs(three_node_view(), pg_replica(100), vec![]);
        o.busy = Some(Busy::Clone);
        o.request = Some(OperatorRequest::Restart);
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert_eq!(
            d.verdict,
            Some(RequestVerdict::Refused(
                "replica creation already in progress".into()
            ))
        );
    }

    #[test]
    fn forced_reinitialize_cancels_a_replica_creation_but_nothing_a_leader_does() {
        let forced = OperatorRequest::Reinitialize {
            from_leader: false,
            force: true,
        };
        let mut o = obs(three_node_view(), pg_replica(100), vec![]);
        o.busy = Some(Busy::Clone);
        o.request = Some(forced);
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert_eq!(d.verdict, Some(RequestVerdict::Started));
        assert!(
            matches!(
                without_publish(&d.actions).as_slice(),
                [Action::CancelBackground, Action::Reinitialize { .. }]
            ),
            "{:?}",
            d.actions
        );
        // A promotion is never cancelled.
        o.busy = Some(Busy::Promote);
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert!(matches!(d.verdict, Some(RequestVerdict::Refused(_))));
        assert!(!d.actions.contains(&Action::CancelBackground));
        // Without a leader to clone from, the running action is left alone.
        let leaderless = View::new()
            .member("a", "primary", 100)
            .member("b", "replica", 100)
            .cluster();
        let mut o = obs(leaderless, pg_replica(100), vec![]);
        o.busy = Some(Busy::Start);
        o.request = Some(forced);
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert!(matches!(d.verdict, Some(RequestVerdict::Refused(_))));
        assert!(!d.actions.contains(&Action::CancelBackground));
    }

    #[test]
    fn requests_without_the_dcs_are_refused() {
        let mut o = obs(three_node_view(), pg_replica(100), vec![]);
        o.cluster = Err(DcsError::Unreachable("down".into()));
        o.request = Some(OperatorRequest::Reinitialize {
            from_leader: false,
            force: false,
        });
        let d = decide(&cfg("b"), &LocalState::default(), &o, t(1000));
        assert!(matches!(d.verdict, Some(RequestVerdict::Refused(ref m)) if m.contains("DCS")));
        assert!(!d
            .actions
            .iter()
            .any(|a| matches!(a, Action::Reinitialize { .. })));
    }
}
