//! Checks of the leader lock itself: one winner among concurrent acquirers, the
//! leader reading itself back, lease expiry freeing the key and the member record,
//! renewal keeping both, and `status`-with-renewal and release working only for the
//! key's owner.

use super::*;

/// Members racing for the leader key at once: exactly one wins, and the key names it.
pub async fn one_winner_among_concurrent_acquirers(h: &dyn DcsHarness) {
    const RACERS: usize = 5;
    let c = Check::start(h, "one_winner_among_concurrent_acquirers");
    let mut clients = Vec::new();
    for i in 0..RACERS {
        let name = format!("racer{i}");
        let dcs = c.client(&name).await;
        clients.push((name, dcs));
    }
    let bound = c.call_bound();
    let mut race = tokio::task::JoinSet::new();
    for (name, dcs) in clients.iter().cloned() {
        race.spawn(async move {
            let out = tokio::time::timeout(bound, dcs.acquire_leader()).await;
            (name, out)
        });
    }
    let mut winners = Vec::new();
    while let Some(joined) = race.join_next().await {
        let (name, out) = match joined {
            Ok(v) => v,
            Err(e) => c.fail(format!("an acquire task died: {e}")),
        };
        match out {
            Err(_) => c.fail(format!(
                "{name}: acquire_leader did not return within {bound:?}"
            )),
            Ok(Err(e)) => c.fail(format!("{name}: acquire_leader failed: {e}")),
            Ok(Ok(true)) => winners.push(name),
            Ok(Ok(false)) => {}
        }
    }
    c.ensure(winners.len() == 1, || {
        format!(
            "{} of {RACERS} concurrent acquirers won: {winners:?}",
            winners.len()
        )
    });
    let winner = &winners[0];
    let observer = &clients[0].1;
    let cluster = c.call("get_cluster", observer.get_cluster()).await;
    c.ensure(cluster.is_leader(winner), || {
        format!(
            "winner is {winner} but the leader key reads {:?}",
            cluster.leader
        )
    });
    for (name, dcs) in clients.iter().filter(|(n, _)| n != winner) {
        let again = c.call("acquire_leader (loser)", dcs.acquire_leader()).await;
        c.ensure(!again, || {
            format!("{name} acquired a key {winner} already holds")
        });
    }
    c.cleanup(observer.as_ref()).await;
}

/// The leader reads itself back as leader, and its member record round-trips.
pub async fn leader_read_back(h: &dyn DcsHarness) {
    let c = Check::start(h, "leader_read_back");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let mine = sample_member("alpha", 0x300_0060, Role::Primary);
    c.call("touch_member", a.touch_member(&mine)).await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    for (who, dcs) in [("the leader", &a), ("another member", &b)] {
        let cluster = c.call("get_cluster", dcs.get_cluster()).await;
        c.ensure(cluster.is_leader("alpha"), || {
            format!("{who} reads leader {:?}, expected alpha", cluster.leader)
        });
        match cluster.member("alpha") {
            None => c.fail(format!("{who} does not see member alpha")),
            Some(m) => c.ensure(m.data == mine, || {
                format!(
                    "{who} reads member alpha as {:?}, written {:?}",
                    m.data, mine
                )
            }),
        }
    }
    // Every cycle rewrites the record; the last write must win.
    let updated = MemberData {
        state: Some(MemberState::Stopping),
        xlog_location: Some(0x400_0000),
        ..mine.clone()
    };
    c.call("touch_member (update)", a.touch_member(&updated))
        .await;
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.member("alpha").is_some_and(|m| m.data == updated),
        || {
            format!(
                "after a second touch_member, member alpha reads {:?}",
                cluster.member("alpha").map(|m| &m.data)
            )
        },
    );
    c.call("release_leader", a.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}

/// An abandoned leader's key and member record vanish within ttl + slack; then
/// another member can take the lock.
pub async fn lease_expiry_frees_leader_and_member(h: &dyn DcsHarness) {
    let c = Check::start(h, "lease_expiry_frees_leader_and_member");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    // A proxy's record lives on its lease as a member record does.
    let p = c.client("gamma").await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.call(
        "touch_proxy",
        p.touch_proxy(r#"{"listen_rw":"127.0.0.1:1"}"#),
    )
    .await;
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.proxies.len() == 1
            && cluster.proxies[0].name == "gamma"
            && cluster.proxies[0].data["listen_rw"] == "127.0.0.1:1"
            && cluster.member("gamma").is_none(),
        || format!("after touch_proxy beta reads proxies {:?}", cluster.proxies),
    );
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(
        cluster.is_leader("alpha") && cluster.member("alpha").is_some(),
        || format!("before abandoning, beta sees {:?}", summary(&cluster)),
    );

    let abandoned_at = Instant::now();
    h.abandon(a).await;
    h.abandon(p).await;
    let bound = c.timing.ttl + h.expiry_slack();
    let poll = (c.timing.ttl / 10).clamp(Duration::from_millis(50), Duration::from_millis(500));
    loop {
        let cluster = c.call("get_cluster", b.get_cluster()).await;
        if cluster.leader.is_none()
            && cluster.member("alpha").is_none()
            && cluster.proxies.is_empty()
        {
            break;
        }
        if abandoned_at.elapsed() > bound {
            c.fail(format!(
                "{:?} after abandoning the leader (ttl {:?} + slack {:?}) its keys remain: {}",
                abandoned_at.elapsed(),
                c.timing.ttl,
                h.expiry_slack(),
                summary(&cluster)
            ));
        }
        tokio::time::sleep(poll).await;
    }

    c.call(
        "touch_member",
        b.touch_member(&sample_member("beta", 1, Role::Replica)),
    )
    .await;
    c.ensure(c.call("acquire_leader", b.acquire_leader()).await, || {
        "beta could not acquire the leader key after alpha's lease expired".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_leader("beta"), || {
        format!(
            "after beta's acquire the leader key reads {:?}",
            cluster.leader
        )
    });
    c.call("release_leader", b.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}

/// Renewing every ttl/3 for 2×ttl keeps both the leader key and the member record
/// (they share one lease/session).
pub async fn renew_keeps_leader_and_member(h: &dyn DcsHarness) {
    let c = Check::start(h, "renew_keeps_leader_and_member");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    c.call(
        "touch_member",
        a.touch_member(&sample_member("alpha", 1, Role::Primary)),
    )
    .await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let start = Instant::now();
    let step = c.timing.ttl / 3;
    while start.elapsed() < c.timing.ttl * 2 {
        tokio::time::sleep(step).await;
        let renewed = c.call("renew_leader", a.renew_leader()).await;
        c.ensure(renewed, || {
            format!(
                "renew_leader returned false {:?} after acquiring",
                start.elapsed()
            )
        });
        let cluster = c.call("get_cluster", b.get_cluster()).await;
        c.ensure(
            cluster.is_leader("alpha") && cluster.member("alpha").is_some(),
            || {
                format!(
                    "{:?} after acquiring, renewing every {step:?}, beta sees {}",
                    start.elapsed(),
                    summary(&cluster)
                )
            },
        );
    }
    c.ensure(c.call("release_leader", a.release_leader()).await, || {
        "the renewing owner's release_leader returned false".into()
    });
    c.cleanup(b.as_ref()).await;
}

/// A renewal that carries the leader's `status` writes it only while the key is the
/// caller's: a deposed leader must not overwrite the new leader's position.
pub async fn status_with_renewal_only_by_owner(h: &dyn DcsHarness) {
    let c = Check::start(h, "status_with_renewal_only_by_owner");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    let status = |optime| Status {
        optime: Some(optime),
        slots: [("alpha".to_string(), optime)].into(),
        ..Default::default()
    };
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let renewed = c
        .call(
            "renew_leader_with_status (owner)",
            a.renew_leader_with_status(&status(100)),
        )
        .await;
    c.ensure(renewed, || {
        "the owner's renew_leader_with_status returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.status == status(100), || {
        format!(
            "after the owner's renewal with status the status reads {:?}",
            cluster.status
        )
    });

    let renewed = c
        .call(
            "renew_leader_with_status (non-owner)",
            b.renew_leader_with_status(&status(1)),
        )
        .await;
    c.ensure(!renewed, || {
        "a non-owner's renew_leader_with_status returned true".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(
        cluster.status == status(100) && cluster.is_leader("alpha"),
        || {
            format!(
                "a non-owner's renewal with status changed the cluster: status {:?}, leader {:?}",
                cluster.status, cluster.leader
            )
        },
    );
    c.call("release_leader", a.release_leader()).await;
    c.cleanup(a.as_ref()).await;
}

/// Only the owner releases the key; a former owner cannot renew someone else's key.
pub async fn release_only_by_owner(h: &dyn DcsHarness) {
    let c = Check::start(h, "release_only_by_owner");
    let a = c.client("alpha").await;
    let b = c.client("beta").await;
    c.ensure(c.call("acquire_leader", a.acquire_leader()).await, || {
        "acquire_leader on an empty cluster returned false".into()
    });
    let released = c
        .call("release_leader (non-owner)", b.release_leader())
        .await;
    c.ensure(!released, || {
        "a non-owner's release_leader returned true".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_leader("alpha"), || {
        format!(
            "after a non-owner's release the leader key reads {:?}",
            cluster.leader
        )
    });
    let renewed = c.call("renew_leader (non-owner)", b.renew_leader()).await;
    c.ensure(!renewed, || {
        "a non-owner's renew_leader returned true".into()
    });

    let released = c.call("release_leader (owner)", a.release_leader()).await;
    c.ensure(released, || {
        "the owner's release_leader returned false".into()
    });
    let cluster = c.call("get_cluster", b.get_cluster()).await;
    c.ensure(cluster.is_unlocked(), || {
        format!(
            "after the owner's release the leader key reads {:?}",
            cluster.leader
        )
    });

    c.ensure(c.call("acquire_leader", b.acquire_leader()).await, || {
        "beta could not acquire the released key".into()
    });
    let renewed = c
        .call("renew_leader (former owner)", a.renew_leader())
        .await;
    c.ensure(!renewed, || {
        "renew_leader by the former owner returned true after beta took the key".into()
    });
    let released = c
        .call("release_leader (former owner)", a.release_leader())
        .await;
    c.ensure(!released, || {
        "release_leader by the former owner returned true after beta took the key".into()
    });
    let cluster = c.call("get_cluster", a.get_cluster()).await;
    c.ensure(cluster.is_leader("beta"), || {
        format!(
            "the former owner's calls changed the leader key to {:?}",
            cluster.leader
        )
    });
    c.call("release_leader", b.release_leader()).await;
    c.cleanup(b.as_ref()).await;
}
