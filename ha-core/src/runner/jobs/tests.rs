//! Unit tests of the background jobs: pre-promote hooks and fencing cancelling a
//! promotion, the rewind/re-clone choices after diverged timelines or missing WAL,
//! and the primary stop timeout.

use super::*;
use crate::clock::{Clock, ManualClock, MonoTime};
use crate::dcs::{Dcs, DcsTiming};
use crate::decision::LeaseToken;
use crate::memory_dcs::{MemoryDcs, SharedMemoryStore};
use crate::model::ClusterKeys;
use crate::runner::test_pg::TestPg;
use crate::runner::NoPeers;
use crate::watchdog::NoWatchdog;

fn parts(pg: Arc<TestPg>) -> (Components, Arc<dyn Dcs>) {
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(MonoTime::from_millis(1000), 0));
    let timing = DcsTiming {
        ttl: Duration::from_secs(30),
        retry_timeout: Duration::from_secs(10),
        loop_wait: Duration::from_secs(10),
    };
    let dcs: Arc<dyn Dcs> = Arc::new(MemoryDcs::new(
        &SharedMemoryStore::new(),
        clock.clone(),
        ClusterKeys::new("/service", "batman"),
        "pg1",
        timing,
    ));
    let parts = Components {
        dcs: dcs.clone(),
        pg,
        fence: Arc::new(NoWatchdog),
        clock,
        peers: Arc::new(NoPeers),
    };
    (parts, dcs)
}

async fn execute(action: Action, pg: Arc<TestPg>, settings: RunnerSettings) -> (bool, bool) {
    let (parts, _) = parts(pg.clone());
    let hooks = hooks(&pg);
    let ok = run(action, &parts, settings, &no_news(), &|_| {}, &hooks)
        .await
        .is_ok();
    (ok, hooks.refused.load(Ordering::SeqCst))
}

/// Promotion hooks whose writable signal shows in the server's call log.
fn hooks(pg: &Arc<TestPg>) -> JobHooks {
    let pg = pg.clone();
    JobHooks {
        refused: Arc::new(AtomicBool::new(false)),
        writable: Arc::new(move || pg.log("writable".into())),
        checkpoints: Default::default(),
    }
}

/// Fencing with no read after the decision's.
fn no_news() -> Fencing {
    Fencing {
        decided_on: MonoTime::from_millis(1000),
        seen: tokio::sync::watch::channel(None).1,
    }
}

fn token() -> LeaseToken {
    LeaseToken {
        valid_until: MonoTime::from_millis(60_000),
        leader_version: None,
    }
}

#[tokio::test]
async fn a_failing_pre_promote_cancels_the_promotion_and_gives_the_key_back() {
    let pg = Arc::new(TestPg {
        pre_promote_fails: true,
        ..TestPg::default()
    });
    let (parts, dcs) = parts(pg.clone());
    assert!(dcs.acquire_leader().await.unwrap());
    let hooks = hooks(&pg);
    let action = Action::Promote { token: token() };
    let result = run(
        action,
        &parts,
        RunnerSettings::default(),
        &no_news(),
        &|_| {},
        &hooks,
    )
    .await;
    assert!(result.is_err());
    assert!(hooks.refused.load(Ordering::SeqCst));
    assert_eq!(pg.calls(), ["pre_promote"]);
    let cluster = dcs.get_cluster().await.unwrap();
    assert!(cluster.leader.is_none(), "the leader key was released");

    let pg = Arc::new(TestPg::default());
    let action = Action::Promote { token: token() };
    let (ok, refused) = execute(action, pg.clone(), RunnerSettings::default()).await;
    assert!(ok && !refused);
    // The node reports itself writable between the end of recovery and the rest.
    assert_eq!(
        pg.calls(),
        ["pre_promote", "promote", "writable", "finish promotion"]
    );
}

#[tokio::test]
async fn a_promotion_outliving_its_leadership_is_refused_before_promoting() {
    use crate::model::Version;
    use crate::runner::guard::LeaderKeySeen;
    let token = LeaseToken {
        leader_version: Some(Version(7)),
        ..token()
    };
    // While the job waited, the runner's next read showed the key created again
    // (version 9): the leadership behind the token is gone, though its time is not.
    let promote_with = |mine_at| async move {
        let pg = Arc::new(TestPg::default());
        let (parts, _) = parts(pg.clone());
        let (tx, rx) = tokio::sync::watch::channel(None);
        tx.send_replace(Some(LeaderKeySeen {
            read_at: MonoTime::from_millis(1500),
            mine_at,
            renewed_at: None,
        }));
        let fencing = Fencing {
            decided_on: MonoTime::from_millis(1000),
            seen: rx,
        };
        let hooks = hooks(&pg);
        let action = Action::Promote { token };
        let r = run(
            action,
            &parts,
            RunnerSettings::default(),
            &fencing,
            &|_| {},
            &hooks,
        )
        .await;
        (r.map_err(|e| e.to_string()), pg.calls())
    };
    let (r, calls) = promote_with(Some(Version(9))).await;
    assert_eq!(
        r,
        Err(
            "invalid request: promotion refused: leader key changed since the decision".to_string()
        )
    );
    assert!(calls.is_empty(), "{calls:?}");
    let (r, calls) = promote_with(None).await;
    assert!(r.is_err());
    assert!(calls.is_empty(), "{calls:?}");
    // The same version read again: the promotion goes ahead.
    let (r, calls) = promote_with(Some(Version(7))).await;
    assert_eq!(r, Ok(()));
    assert_eq!(
        calls,
        ["pre_promote", "promote", "writable", "finish promotion"]
    );
}

#[tokio::test]
async fn diverged_timelines_rewind_wipe_or_start_as_use_pg_rewind_and_the_flag_say() {
    let start = |rewindable: bool, use_pg_rewind: bool, diverged_flag: bool| async move {
        let pg = Arc::new(TestPg {
            rewindable,
            ..TestPg::default()
        });
        let settings = RunnerSettings {
            use_pg_rewind,
            remove_data_directory_on_diverged_timelines: diverged_flag,
            ..RunnerSettings::default()
        };
        let action = Action::StartReplica {
            upstream: Some(Upstream::at("pg0", "127.0.0.1", 5432)),
            rewind: true,
        };
        assert!(execute(action, pg.clone(), settings).await.0);
        pg.calls()
    };
    let check = "divergence check";
    let wipe = "remove data directory";
    // Rewind impossible (no checksums, no wal_log_hints): wipe only with the flag.
    assert_eq!(start(false, true, true).await, [check, wipe]);
    assert_eq!(
        start(false, true, false).await,
        [check, "rewind", "start replica"]
    );
    // Rewind possible and allowed.
    assert_eq!(
        start(true, true, true).await,
        [check, "rewind", "start replica"]
    );
    // use_pg_rewind off: wipe with the flag, else start as it is (Patroni).
    assert_eq!(start(true, false, true).await, [check, wipe]);
    assert_eq!(start(true, false, false).await, ["start replica"]);
}

#[tokio::test]
async fn a_failed_rewind_re_clones_with_either_removal_setting() {
    let start = |on_failure: bool, on_diverged: bool| async move {
        let pg = Arc::new(TestPg {
            rewindable: true,
            rewind_fails: true,
            ..TestPg::default()
        });
        let settings = RunnerSettings {
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: on_failure,
            remove_data_directory_on_diverged_timelines: on_diverged,
            ..RunnerSettings::default()
        };
        let action = Action::StartReplica {
            upstream: Some(Upstream::at("pg0", "127.0.0.1", 5432)),
            rewind: true,
        };
        let ok = execute(action, pg.clone(), settings).await.0;
        let calls: Vec<String> = pg.calls();
        (ok, calls)
    };
    let wiped = (
        true,
        ["divergence check", "rewind", "remove data directory"]
            .map(String::from)
            .to_vec(),
    );
    assert_eq!(start(true, false).await, wiped);
    // As in Patroni, remove_data_directory_on_diverged_timelines covers it too.
    assert_eq!(start(false, true).await, wiped);
    // Neither: the job fails and nothing starts (a half-rewound directory waits
    // for a reinit).
    assert_eq!(
        start(false, false).await,
        (
            false,
            ["divergence check", "rewind"].map(String::from).to_vec()
        )
    );
}

#[tokio::test]
async fn wal_gone_upstream_re_clones_with_either_removal_setting_else_starts() {
    let start = |on_failure: bool, on_diverged: bool| async move {
        let pg = Arc::new(TestPg {
            rewindable: true,
            wal_gone: true,
            ..TestPg::default()
        });
        let settings = RunnerSettings {
            use_pg_rewind: true,
            remove_data_directory_on_rewind_failure: on_failure,
            remove_data_directory_on_diverged_timelines: on_diverged,
            ..RunnerSettings::default()
        };
        let action = Action::StartReplica {
            upstream: Some(Upstream::at("pg0", "127.0.0.1", 5432)),
            rewind: true,
        };
        assert!(execute(action, pg.clone(), settings).await.0);
        pg.calls()
    };
    let wiped = ["divergence check", "wal check", "remove data directory"];
    assert_eq!(start(true, false).await, wiped);
    assert_eq!(start(false, true).await, wiped);
    // Neither: it starts (and says how to reinitialize it).
    assert_eq!(
        start(false, false).await,
        ["divergence check", "wal check", "start replica"]
    );
}

#[tokio::test]
async fn primary_stop_timeout_makes_a_slow_stop_immediate() {
    let pg = TestPg {
        slow_stop_below: Some(Duration::from_secs(5)),
        ..TestPg::default()
    };
    let t = Duration::from_secs(60);
    stop_primary(&pg, StopMode::Fast, t, Some(Duration::from_millis(2500)))
        .await
        .unwrap();
    stop_primary(&pg, StopMode::Fast, t, None).await.unwrap();
    assert_eq!(
        pg.calls(),
        ["stop Fast 2.5s", "stop Immediate 60s", "stop Fast 60s"]
    );
}

#[test]
fn dynamic_pg_ctl_timeout_use_pg_rewind_and_primary_stop_timeout_apply_unless_local() {
    let (parts, _) = parts(Arc::new(TestPg::default()));
    let settings = RunnerSettings {
        pg_ctl_timeout: Duration::from_secs(30),
        promote_timeout: Duration::from_secs(30),
        ..RunnerSettings::default()
    };
    let (mut runner, _) =
        super::super::Runner::new(crate::decision::NodeConfig::named("pg1"), parts, settings);
    let mut config: crate::model::DynamicConfig = serde_json::from_value(serde_json::json!({
        "postgresql": {"pg_ctl_timeout": 7.5, "use_pg_rewind": true},
        "primary_stop_timeout": 3,
    }))
    .unwrap();
    runner.state.config = Some(config.clone());
    let s = runner.current_settings();
    assert_eq!(s.pg_ctl_timeout, Duration::from_millis(7500));
    assert_eq!(s.promote_timeout, Duration::from_millis(7500));
    assert_eq!(s.primary_stop_timeout, None, "asynchronous mode");
    config.synchronous_mode = crate::model::SynchronousMode::On;
    runner.state.config = Some(config);
    assert_eq!(
        runner.current_settings().primary_stop_timeout,
        Some(Duration::from_secs(3))
    );
    assert!(runner.current_settings().use_pg_rewind);
    runner.settings.pg_ctl_timeout_is_local = true;
    runner.settings.local_use_pg_rewind = Some(false);
    assert_eq!(
        runner.current_settings().pg_ctl_timeout,
        Duration::from_secs(30)
    );
    assert!(!runner.current_settings().use_pg_rewind);
}
