//! The peer probes of the leader race and the switchover candidate check.

use super::PeerProbe;
use crate::decision::{PeerReply, PeerStatus};
use crate::model::Member;
use std::sync::Arc;
use std::time::Duration;

/// Asks every member at once, each within `timeout`; the `optional` ones only until
/// [`crate::decision::OPTIONAL_PEER_GRACE`] after the others all answered (or gave
/// up): a frozen former leader does not hold the race up for the whole timeout.
pub(super) async fn probe_peers(
    peers: Arc<dyn PeerProbe>,
    members: Vec<Member>,
    optional: &[String],
    timeout: Duration,
) -> Vec<PeerStatus> {
    let mut asked: Vec<(String, bool, tokio::task::JoinHandle<Option<PeerReply>>)> = members
        .into_iter()
        .map(|m| {
            let probe = peers.clone();
            let is_optional = optional.contains(&m.name);
            let name = m.name.clone();
            let task = tokio::spawn(async move {
                tokio::time::timeout(timeout, probe.probe(&m))
                    .await
                    .ok()
                    .flatten()
            });
            (name, is_optional, task)
        })
        .collect();
    let mut replies: Vec<Option<PeerReply>> = vec![None; asked.len()];
    for (i, (_, is_optional, task)) in asked.iter_mut().enumerate() {
        if !*is_optional {
            replies[i] = task.await.ok().flatten();
        }
    }
    let grace_until = tokio::time::Instant::now() + crate::decision::OPTIONAL_PEER_GRACE;
    for (i, (name, is_optional, task)) in asked.iter_mut().enumerate() {
        if *is_optional {
            match tokio::time::timeout_at(grace_until, &mut *task).await {
                Ok(reply) => replies[i] = reply.ok().flatten(),
                Err(_) => {
                    task.abort();
                    tracing::info!("not waiting longer for {name}: the former leader does not answer, and the race does not need it");
                }
            }
        }
    }
    asked
        .into_iter()
        .zip(replies)
        .map(|((name, _, _), reply)| PeerStatus { name, reply })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_trait::async_trait;

    /// Answers at once for `fast`, after `slow_after` for `slow`, never for anyone else.
    struct Peers {
        slow_after: Duration,
    }

    #[async_trait]
    impl PeerProbe for Peers {
        async fn probe(&self, member: &Member) -> Option<PeerReply> {
            match member.name.as_str() {
                "fast" => {}
                "slow" => tokio::time::sleep(self.slow_after).await,
                _ => std::future::pending::<()>().await,
            }
            Some(PeerReply {
                is_primary: false,
                wal_position: 7,
                timeline: Some(1),
                tags: Default::default(),
                watchdog_failed: false,
            })
        }
    }

    fn member(name: &str) -> Member {
        Member {
            name: name.to_string(),
            data: Default::default(),
            version: crate::model::Version(1),
            session: None,
        }
    }

    async fn ask(optional: &[&str], slow_after: Duration) -> (Vec<PeerStatus>, Duration) {
        let started = tokio::time::Instant::now();
        let peers = Arc::new(Peers { slow_after });
        let optional: Vec<String> = optional.iter().map(|s| s.to_string()).collect();
        let members = vec![member("fast"), member("slow"), member("frozen")];
        let replies = probe_peers(peers, members, &optional, Duration::from_secs(2)).await;
        (replies, started.elapsed())
    }

    fn answered(replies: &[PeerStatus]) -> Vec<&str> {
        replies
            .iter()
            .filter(|p| p.reply.is_some())
            .map(|p| p.name.as_str())
            .collect()
    }

    #[tokio::test(start_paused = true)]
    async fn an_optional_peer_that_does_not_answer_costs_the_grace_not_the_timeout() {
        let (replies, took) = ask(&["frozen"], Duration::from_millis(30)).await;
        assert_eq!(answered(&replies), ["fast", "slow"]);
        let names: Vec<&str> = replies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["fast", "slow", "frozen"]);
        assert!(took < Duration::from_secs(2), "waited {took:?}");
        assert!(took >= crate::decision::OPTIONAL_PEER_GRACE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_required_peer_is_waited_for_until_the_timeout() {
        let (replies, took) = ask(&[], Duration::from_millis(30)).await;
        assert_eq!(answered(&replies), ["fast", "slow"]);
        assert!(took >= Duration::from_secs(2), "waited only {took:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_optional_peer_that_answers_within_the_grace_is_heard() {
        let (replies, _) = ask(&["slow", "frozen"], Duration::from_millis(10)).await;
        assert_eq!(answered(&replies), ["fast", "slow"]);
    }
}
