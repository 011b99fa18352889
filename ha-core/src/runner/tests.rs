//! The runner's cycles over the in-memory DCS, a manual clock and a scripted Postgres:
//! what it does when a renewal times out, when a background action outlives its lease
//! token, and when a request arrives while a background action runs. Tokio's clock is
//! paused, so DCS deadlines pass without waiting.

use super::*;
use crate::clock::ManualClock;
use crate::memory_dcs::{MemoryDcs, SharedMemoryStore};
use crate::model::ClusterKeys;

use crate::watchdog::NoWatchdog;
use test_pg::TestPg;

/// One member, `pg1`, of a cluster initialized as system 7311, with nobody holding
/// the leader key: ttl 30 s, loop_wait 10 s, retry_timeout 10 s (the defaults).
struct Setup {
    runner: Runner,
    handle: RunnerHandle,
    pg: Arc<TestPg>,
    dcs: Arc<MemoryDcs>,
    clock: Arc<ManualClock>,
    store: SharedMemoryStore,
}

async fn setup(pg: PgObservation) -> Setup {
    let pg = TestPg {
        obs: Mutex::new(pg),
        hold_pre_promote: true,
        rewindable: true,
        ..TestPg::default()
    };
    setup_with(pg, Arc::new(NoPeers)).await
}

async fn setup_with(pg: TestPg, peers: Arc<dyn PeerProbe>) -> Setup {
    let clock = Arc::new(ManualClock::new(MonoTime::from_millis(1_000), 0));
    let cfg = NodeConfig::named("pg1");
    let store = SharedMemoryStore::new();
    let dcs = Arc::new(MemoryDcs::new(
        &store,
        clock.clone(),
        ClusterKeys::new("/service", "batman"),
        "pg1",
        cfg.bootstrap_config.timing(),
    ));
    assert!(dcs.initialize("7311").await.unwrap());
    let pg = Arc::new(pg);
    let parts = Components {
        dcs: dcs.clone(),
        pg: pg.clone(),
        fence: Arc::new(NoWatchdog),
        clock: clock.clone(),
        peers,
    };
    let (runner, handle) = Runner::new(cfg, parts, RunnerSettings::default());
    Setup {
        runner,
        handle,
        pg,
        dcs,
        clock,
        store,
    }
}

fn leader_of(s: &Setup) -> Option<String> {
    s.dcs
        .store()
        .with(|store| store.get(s.clock.now(), "/service/batman/leader"))
        .map(|e| e.value)
}

/// A running replica alone in a leaderless cluster takes the key and starts promoting.
async fn promoting() -> Setup {
    let mut s = setup(PgObservation::running_replica("7311", 1, 0x300_0000)).await;
    s.runner.cycle().await;
    assert_eq!(leader_of(&s).as_deref(), Some("pg1"));
    assert_eq!(s.runner.job.as_ref().map(|j| j.kind), Some(Busy::Promote));
    tokio::task::yield_now().await;
    assert_eq!(s.pg.calls(), ["pre_promote"]);
    s
}

#[tokio::test(start_paused = true)]
async fn a_renewal_that_times_out_near_the_lease_end_demotes_the_primary() {
    let mut s = setup(PgObservation::running_primary("7311", 1, 0x300_0000)).await;
    s.runner.cycle().await;
    assert_eq!(leader_of(&s).as_deref(), Some("pg1"));
    let lease_until = s.runner.state.lease_until.expect("the lease was acquired");
    assert_eq!(lease_until, MonoTime::from_millis(31_000));
    assert!(s.pg.calls().is_empty(), "{:?}", s.pg.calls());

    // 25 s in: the lease is valid, but not through the next decision. The read
    // answers; from then on the DCS does not, so the renewal runs into retry_timeout.
    s.clock.set(MonoTime::from_millis(26_000));
    let dcs = s.dcs.clone();
    *s.pg.on_observe.lock().unwrap() =
        Some(Box::new(move || dcs.set_latency(Duration::from_secs(60))));
    s.runner.cycle().await;

    assert_eq!(
        s.runner.state.message,
        "demoting: DCS unreachable (dcs unreachable: memory dcs: no answer within retry_timeout 10s) and the leader lease is about to end"
    );
    // Nothing extended the lease: the last confirmed one is still the one from 1 s.
    assert_eq!(s.runner.state.lease_until, Some(lease_until));
    assert_eq!(s.runner.renewed_at, Some(MonoTime::from_millis(1_000)));
    let job = s.runner.job.take().expect("a demotion runs");
    assert_eq!(job.kind, Busy::Demote);
    assert_eq!(job.finish().await, Ok(()));
    assert_eq!(s.pg.calls(), ["stop Fast 60s", "start replica"]);
    // The key was neither renewed nor released: it runs out on its own.
    assert_eq!(leader_of(&s).as_deref(), Some("pg1"));
    s.clock.set(MonoTime::from_millis(31_000));
    assert_eq!(leader_of(&s), None);
}

#[tokio::test(start_paused = true)]
async fn a_promotion_that_outlives_its_lease_token_does_not_promote() {
    let mut s = promoting().await;
    // The promotion hangs in pre_promote past the lease it was decided under.
    s.clock.set(MonoTime::from_millis(31_000));
    s.pg.pre_promote_gate.notify_one();
    let job = s.runner.job.take().expect("the promotion runs");
    assert_eq!(
        job.finish().await.map_err(|e| e.to_string()),
        Err("invalid request: promotion refused: lease token expired".to_string())
    );
    assert_eq!(s.pg.calls(), ["pre_promote"]);
}

#[tokio::test(start_paused = true)]
async fn a_restart_requested_while_promoting_is_refused_as_busy() {
    let mut s = promoting().await;
    let reply = s.handle.request(OperatorRequest::Restart);
    // A second request while the first waits for its answer.
    let second = s.handle.request(OperatorRequest::Restart);
    assert_eq!(second.await, Ok(Err(RequestError::Busy)));
    s.clock.advance(Duration::from_secs(1));
    s.runner.cycle().await;
    assert_eq!(
        reply.await,
        Ok(Err(RequestError::Refused(
            "promote already in progress".into()
        )))
    );
    assert_eq!(s.runner.state.message, "promote in progress");
    // The lease was renewed meanwhile, and nothing else was asked of Postgres.
    assert_eq!(s.runner.renewed_at, Some(MonoTime::from_millis(2_000)));
    assert_eq!(s.pg.calls(), ["pre_promote"]);
    assert_eq!(s.handle.snapshot().busy, Some(Busy::Promote));
}

#[tokio::test(start_paused = true)]
async fn the_promotion_job_publishes_the_end_of_recovery_without_waiting_for_a_cycle() {
    let s = promoting().await;
    let primary_with_lease = |s: &Setup| {
        let snap = s.handle.snapshot();
        snap.holds_lease(s.clock.now()) && snap.pg.as_ref().is_some_and(|p| p.is_primary())
    };
    assert!(
        !primary_with_lease(&s),
        "still in recovery: not primary yet"
    );
    s.pg.pre_promote_gate.notify_one();
    let job = s.runner.job.as_ref().expect("the promotion runs");
    while !job.is_finished() {
        tokio::task::yield_now().await;
    }
    // No cycle ran since the promotion started: the job itself made it known.
    assert_eq!(s.pg.calls(), ["pre_promote", "promote", "finish promotion"]);
    assert!(primary_with_lease(&s));
}

/// Every peer answers as a healthy replica at 0x300_0000.
struct HealthyReplicas;

#[async_trait]
impl PeerProbe for HealthyReplicas {
    async fn probe(&self, _: &Member) -> Option<PeerReply> {
        Some(PeerReply {
            is_primary: false,
            wal_position: 0x300_0000,
            timeline: Some(1),
            tags: Default::default(),
            watchdog_failed: false,
        })
    }
}

/// `pg1` leads as primary with `pg2` streaming from it; `pg2` has received WAL past
/// pg1's shutdown checkpoint. `checkpointed` says how long before the switchover
/// request (`pg1` → `pg2`) a `CHECKPOINT` was reported to the runner's handle.
/// Returns what was asked of pg1's Postgres while it switched over.
async fn switchover_calls(checkpointed: Option<Duration>, in_transaction: &[u64]) -> Vec<String> {
    let mut obs = PgObservation::running_primary("7311", 1, 0x300_0000);
    obs.replication
        .push(crate::postgres::ReplicationConnection {
            application_name: "pg2".into(),
            state: "streaming".into(),
            sync_state: "async".into(),
            ..Default::default()
        });
    let pg = TestPg {
        obs: Mutex::new(obs),
        log_checkpoints: true,
        stop_checkpoint: Some(0x300_0000),
        ..TestPg::default()
    };
    let mut s = setup_with(pg, Arc::new(HealthyReplicas)).await;
    s.runner.cycle().await;
    assert_eq!(leader_of(&s).as_deref(), Some("pg1"));
    let pg2 = MemoryDcs::new(
        &s.store,
        s.clock.clone(),
        ClusterKeys::new("/service", "batman"),
        "pg2",
        NodeConfig::named("pg2").bootstrap_config.timing(),
    );
    pg2.touch_member(&crate::model::MemberData {
        conn_url: Some("postgres://127.0.0.1:5433/postgres".into()),
        api_url: Some("http://127.0.0.1:8009/patroni".into()),
        state: Some(crate::model::MemberState::Running),
        role: Some(crate::model::Role::Replica),
        timeline: Some(1),
        xlog_location: Some(0x300_0000),
        ..Default::default()
    })
    .await
    .unwrap();
    *s.pg.peer_received.lock().unwrap() = Some(0x300_0100);
    *s.pg.in_transaction.lock().unwrap() = in_transaction.to_vec();
    s.clock.advance(Duration::from_secs(10));
    if let Some(before) = checkpointed {
        // The REST API's checkpoint, just before it wrote the request.
        s.handle.checkpoint_finished(s.clock.now().minus(before));
    }
    let request = crate::model::Failover {
        leader: Some("pg1".into()),
        member: Some("pg2".into()),
        scheduled_at: None,
    };
    assert!(s.dcs.set_failover(&request, None).await.unwrap());
    s.runner.cycle().await;
    assert_eq!(
        s.runner.state.message,
        "manual switchover: demoting myself in favour of pg2"
    );
    let job = s.runner.job.take().expect("the switchover runs");
    assert_eq!(job.kind, Busy::Demote);
    assert_eq!(job.finish().await, Ok(()));
    // pg2 confirmed the WAL: the key went to whoever takes it next.
    assert_eq!(leader_of(&s), None);
    s.pg.calls()
}

#[tokio::test(start_paused = true)]
async fn a_switchover_right_after_a_reported_checkpoint_stops_without_another() {
    assert_eq!(
        switchover_calls(Some(Duration::from_millis(600)), &[]).await,
        ["0 in transaction", "stop Fast 60s", "start replica"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_switchover_with_no_recent_checkpoint_runs_one_before_the_stop() {
    // Requested without the REST API (a key written by a tool, a scheduled one).
    assert_eq!(
        switchover_calls(None, &[]).await,
        [
            "checkpoint",
            "0 in transaction",
            "stop Fast 60s",
            "start replica"
        ]
    );
    // The last one finished longer ago than RECENT_CHECKPOINT: writes went on since.
    assert_eq!(
        switchover_calls(Some(RECENT_CHECKPOINT + Duration::from_millis(1)), &[]).await,
        [
            "checkpoint",
            "0 in transaction",
            "stop Fast 60s",
            "start replica"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_switchover_stops_once_no_client_is_in_a_transaction() {
    let calls = switchover_calls(Some(Duration::from_millis(600)), &[2, 1]).await;
    assert_eq!(
        calls,
        [
            "2 in transaction",
            "1 in transaction",
            "0 in transaction",
            "stop Fast 60s",
            "start replica"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_switchover_stops_after_the_drain_limit_with_a_client_still_in_a_transaction() {
    // A client that keeps writing (connected directly, not paused by a proxy).
    let calls = switchover_calls(Some(Duration::from_millis(600)), &[1; 1000]).await;
    let polls = (DRAIN_LIMIT.as_millis() / 5) as usize;
    let (asked, rest) = calls.split_at(calls.len() - 2);
    assert!(
        asked.len() > polls / 2 && asked.len() <= polls + 1,
        "{} polls",
        asked.len()
    );
    assert!(asked.iter().all(|c| c == "1 in transaction"), "{asked:?}");
    assert_eq!(rest, ["stop Fast 60s", "start replica"]);
}
