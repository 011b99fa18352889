//! Checks of the change subscription: it fires on leader changes and `config`
//! writes, and stays quiet on member and status writes (the loop would spin).

use super::*;

/// Another member's subscription fires when the leader key is taken and released.
pub async fn watch_fires_on_leader_change(h: &dyn DcsHarness) {
    let c = Check::start(h, "watch_fires_on_leader_change");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mut rx = b.subscribe();
    // The HA loop subscribes once and reads before it first waits; give a backend's
    // watch the same head start.
    c.call("get_cluster", b.get_cluster()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.borrow_and_update();

    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    wait_for_change(&c, &mut rx, b.as_ref(), "alpha's acquire", |cl| {
        cl.is_leader("alpha")
    })
    .await;

    rx.borrow_and_update();
    c.ensure(c.call("release_leader", a.release_leader()).await, || {
        "the owner's release_leader returned false".into()
    });
    wait_for_change(&c, &mut rx, b.as_ref(), "alpha's release", |cl| {
        cl.is_unlocked()
    })
    .await;
    c.cleanup(b.as_ref()).await;
}

/// Writes every member makes each cycle (`members/*`, `status`, `history`,
/// `failsafe`) do not fire another member's subscription (the loop would spin), while
/// a `config` change still does.
pub async fn watch_ignores_member_and_status_writes(h: &dyn DcsHarness) {
    let c = Check::start(h, "watch_ignores_member_and_status_writes");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mut rx = b.subscribe();
    c.call("get_cluster", b.get_cluster()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    rx.borrow_and_update();

    for lsn in 1..=3 {
        c.call(
            "touch_member",
            a.touch_member(&sample_member("alpha", lsn, Role::Replica)),
        )
        .await;
    }
    c.call(
        "set_status",
        a.set_status(&Status {
            optime: Some(7),
            ..Default::default()
        }),
    )
    .await;
    c.call("set_history", a.set_history(&History::default()))
        .await;
    c.call("set_failsafe", a.set_failsafe(&Failsafe::new()))
        .await;
    // Give a backend's watch time to deliver what it would wrongly deliver.
    let window = (c.timing.ttl / 2).min(Duration::from_secs(1));
    tokio::time::sleep(window).await;
    let woke = match rx.has_changed() {
        Ok(changed) => changed,
        Err(_) => c.fail("the subscription closed"),
    };
    c.ensure(!woke, || {
        format!(
            "the subscriber was woken within {window:?} by member/status/history/failsafe writes only"
        )
    });

    c.ensure(
        c.call("set_config", a.set_config(&DynamicConfig::default(), None))
            .await,
        || "an unconditional set_config returned false".into(),
    );
    wait_for_change(&c, &mut rx, b.as_ref(), "a config write", |cl| {
        cl.config.is_some()
    })
    .await;
    c.cleanup(b.as_ref()).await;
}
