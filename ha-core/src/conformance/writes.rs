//! Checks of the cluster's other keys: compare-and-set writes of `config`,
//! `failover` and `sync` rejecting stale versions, the create-only `initialize`
//! race, plain writes (`status`, `history`, `failsafe`) round-tripping, and
//! `delete_cluster` removing exactly one cluster.

use super::*;

/// `config`, `failover` and `sync` accept a write at the current version and reject
/// one at a stale version, leaving the value unchanged.
pub async fn cas_rejects_stale_versions(h: &dyn DcsHarness) {
    let c = Check::start(h, "cas_rejects_stale_versions");
    let a = c.client("alpha").await;

    // config
    let cfg = |ttl: f64| DynamicConfig {
        ttl,
        loop_wait: 5.0,
        extra: serde_json::json!({"postgresql": {"parameters": {"max_connections": 123}}})
            .as_object()
            .cloned()
            .unwrap_or_default(),
        ..Default::default()
    };
    c.ensure(
        c.call("set_config (unconditional)", a.set_config(&cfg(30.0), None))
            .await,
        || "an unconditional set_config returned false".into(),
    );
    let old = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(old.0 == cfg(30.0), || {
        format!("config reads {:?}, written {:?}", old.0, cfg(30.0))
    });
    c.ensure(
        c.call(
            "set_config (current version)",
            a.set_config(&cfg(40.0), Some(old.1)),
        )
        .await,
        || "set_config at the current version returned false".into(),
    );
    let new = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(new.0 == cfg(40.0) && new.1 != old.1, || {
        format!(
            "after a CAS write config reads {new:?}, previous version {:?}",
            old.1
        )
    });
    c.ensure(
        !c.call(
            "set_config (stale version)",
            a.set_config(&cfg(50.0), Some(old.1)),
        )
        .await,
        || "set_config at a stale version returned true".into(),
    );
    let after = read_versioned(&c, a.as_ref(), "config", |cl| {
        cl.config.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("a rejected set_config changed config from {new:?} to {after:?}")
    });

    // failover
    let request = |member: &str| Failover {
        leader: Some("alpha".into()),
        member: Some(member.into()),
        scheduled_at: None,
    };
    c.ensure(
        c.call(
            "set_failover (unconditional)",
            a.set_failover(&request("beta"), None),
        )
        .await,
        || "an unconditional set_failover returned false".into(),
    );
    let old = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(old.0 == request("beta"), || {
        format!("failover reads {:?}, written {:?}", old.0, request("beta"))
    });
    c.ensure(
        c.call(
            "set_failover (current version)",
            a.set_failover(&request("gamma"), Some(old.1)),
        )
        .await,
        || "set_failover at the current version returned false".into(),
    );
    let new = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(new.0 == request("gamma") && new.1 != old.1, || {
        format!(
            "after a CAS write failover reads {new:?}, previous version {:?}",
            old.1
        )
    });
    c.ensure(
        !c.call(
            "set_failover (stale version)",
            a.set_failover(&Failover::default(), Some(old.1)),
        )
        .await,
        || "set_failover at a stale version returned true".into(),
    );
    let after = read_versioned(&c, a.as_ref(), "failover", |cl| {
        cl.failover.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("a rejected set_failover changed failover from {new:?} to {after:?}")
    });

    // sync: set_sync also reports the version it wrote.
    let sync = |standbys: &[&str]| SyncState {
        leader: Some("alpha".into()),
        sync_standby: standbys.iter().map(|s| s.to_string()).collect(),
        quorum: 0,
    };
    let written = c
        .call(
            "set_sync (unconditional)",
            a.set_sync(&sync(&["beta"]), None),
        )
        .await;
    let old = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(written == Some(old.1) && old.0 == sync(&["beta"]), || {
        format!("set_sync returned {written:?}; sync reads {old:?}")
    });
    let written = c
        .call(
            "set_sync (current version)",
            a.set_sync(&sync(&["beta", "gamma"]), Some(old.1)),
        )
        .await;
    let new = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(
        written == Some(new.1) && new.1 != old.1 && new.0 == sync(&["beta", "gamma"]),
        || {
            format!(
                "set_sync at the current version returned {written:?}; sync reads {new:?}, previous version {:?}",
                old.1
            )
        },
    );
    let stale = c
        .call(
            "set_sync (stale version)",
            a.set_sync(&sync(&["delta"]), Some(old.1)),
        )
        .await;
    c.ensure(stale.is_none(), || {
        format!("set_sync at a stale version returned {stale:?}")
    });
    let stale = c
        .call("delete_sync (stale version)", a.delete_sync(Some(old.1)))
        .await;
    c.ensure(!stale, || {
        "delete_sync at a stale version returned true".into()
    });
    let after = read_versioned(&c, a.as_ref(), "sync", |cl| {
        cl.sync.as_ref().map(|v| (v.value.clone(), v.version))
    })
    .await;
    c.ensure(after == new, || {
        format!("rejected sync writes changed sync from {new:?} to {after:?}")
    });
    let deleted = c
        .call("delete_sync (current version)", a.delete_sync(Some(new.1)))
        .await;
    c.ensure(deleted, || {
        "delete_sync at the current version returned false".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.sync.is_none(), || {
        format!("after delete_sync, sync reads {:?}", cluster.sync)
    });
    c.cleanup(a.as_ref()).await;
}

/// `initialize` is create-only; `set_initialize` overwrites it;
/// `cancel_initialization` deletes it so the race can run again.
pub async fn initialize_is_create_only(h: &dyn DcsHarness) {
    let c = Check::start(h, "initialize_is_create_only");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    // The bootstrap race winner writes an empty value while initdb runs.
    c.ensure(c.call("initialize", a.initialize("")).await, || {
        "the first initialize returned false".into()
    });
    let second = c.call("initialize (second)", b.initialize("999")).await;
    c.ensure(!second, || "a second initialize returned true".into());
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.as_deref() == Some(""), || {
        format!("after a lost initialize race, initialize reads {value:?}, expected \"\"")
    });
    c.call("set_initialize", a.set_initialize(SAMPLE_SYSID))
        .await;
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.as_deref() == Some(SAMPLE_SYSID), || {
        format!("after set_initialize, initialize reads {value:?}, expected {SAMPLE_SYSID}")
    });
    let again = c.call("initialize (after set)", b.initialize("999")).await;
    c.ensure(!again, || {
        "initialize returned true while the key held a system identifier".into()
    });
    c.call("cancel_initialization", a.cancel_initialization())
        .await;
    let value = read_initialize(&c, b.as_ref()).await;
    c.ensure(value.is_none(), || {
        format!("after cancel_initialization, initialize reads {value:?}")
    });
    c.ensure(
        c.call("initialize (after cancel)", b.initialize("")).await,
        || "initialize after cancel_initialization returned false".into(),
    );
    c.cleanup(a.as_ref()).await;
}

/// `status`, `history` and `failsafe` round-trip; `delete_cluster` removes every key
/// of the cluster (and nothing of another one).
pub async fn plain_writes_and_delete_cluster(h: &dyn DcsHarness) {
    let c = Check::start(h, "plain_writes_and_delete_cluster");
    let a = c.client("alpha").await;
    let neighbour_scope = format!("{}-neighbour", c.scope);
    let neighbour = match tokio::time::timeout(
        CONNECT_BOUND,
        h.connect(&neighbour_scope, "omega", c.timing),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => c.fail(format!("connect did not return within {CONNECT_BOUND:?}")),
    };
    c.call("initialize (neighbour)", neighbour.initialize("1"))
        .await;

    let status = Status {
        optime: Some(0x500_0000),
        slots: [("beta".to_string(), 0x400_0000)].into_iter().collect(),
        retain_slots: vec!["alpha".into(), "beta".into()],
    };
    let history = History(vec![HistoryEntry {
        timeline: 1,
        switch_lsn: 0x300_00A0,
        reason: "no recovery target specified".into(),
        timestamp: Some("2026-01-02T03:04:05.678+00:00".into()),
        new_leader: Some("alpha".into()),
    }]);
    let failsafe: Failsafe = [
        (
            "alpha".to_string(),
            "http://127.0.0.1:8008/patroni".to_string(),
        ),
        (
            "beta".to_string(),
            "http://127.0.0.1:8009/patroni".to_string(),
        ),
    ]
    .into_iter()
    .collect();
    c.call("set_status", a.set_status(&status)).await;
    c.call("set_history", a.set_history(&history)).await;
    c.call("set_failsafe", a.set_failsafe(&failsafe)).await;
    c.call("initialize", a.initialize(SAMPLE_SYSID)).await;
    c.call("set_config", a.set_config(&DynamicConfig::default(), None))
        .await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.call("acquire_leader", a.acquire_leader()).await;
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.status == status, || {
        format!("status reads {:?}, written {status:?}", cluster.status)
    });
    c.ensure(cluster.history.as_ref() == Some(&history), || {
        format!("history reads {:?}, written {history:?}", cluster.history)
    });
    c.ensure(cluster.failsafe.as_ref() == Some(&failsafe), || {
        format!(
            "failsafe reads {:?}, written {failsafe:?}",
            cluster.failsafe
        )
    });
    c.ensure(cluster.malformed.is_empty(), || {
        format!(
            "values written by this backend read back malformed: {:?}",
            cluster.malformed
        )
    });

    c.call("delete_cluster", a.delete_cluster()).await;
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster == Cluster::default(), || {
        format!(
            "after delete_cluster the cluster still has {}",
            summary(&cluster)
        )
    });
    let other = c
        .call("get_cluster (neighbour)", neighbour.get_cluster())
        .await;
    c.ensure(other.initialize.as_deref() == Some("1"), || {
        format!(
            "delete_cluster of {} touched cluster {neighbour_scope}: its initialize reads {:?}",
            c.scope, other.initialize
        )
    });
    c.call("delete_cluster (neighbour)", neighbour.delete_cluster())
        .await;
}
