//! The check of an unreachable DCS: every call fails with the typed
//! `DcsError::Unreachable` within its time bound, not another error and not a hang.

use super::*;

/// With the DCS unreachable, calls fail with `DcsError::Unreachable` within
/// `retry_timeout + 2 s` (not another error, not a hang).
pub async fn unreachable_is_typed_and_bounded(h: &dyn DcsHarness) {
    let c = Check::start(h, "unreachable_is_typed_and_bounded");
    let dead = match tokio::time::timeout(
        CONNECT_BOUND,
        h.connect_unreachable(&c.scope, "alpha", c.timing),
    )
    .await
    {
        Ok(d) => d,
        Err(_) => c.fail(format!(
            "connect_unreachable did not return within {CONNECT_BOUND:?}"
        )),
    };
    expect_unreachable(&c, "get_cluster", dead.get_cluster()).await;
    expect_unreachable(&c, "acquire_leader", dead.acquire_leader()).await;
    expect_unreachable(
        &c,
        "touch_member",
        dead.touch_member(&sample_member("alpha", 1, Role::Replica)),
    )
    .await;
}
