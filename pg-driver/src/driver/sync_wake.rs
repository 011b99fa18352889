//! After `synchronous_standby_names` changed on a primary: commits that already wait
//! for a standby the new setting no longer asks for are released only when a walsender
//! next hears from its standby, and an idle standby reports only every
//! `wal_receiver_status_interval` (10 s by default). So once every walsender runs with
//! the new setting, one tiny commit that waits for nobody is written: every streaming
//! standby receives it and reports at once, which releases those commits. Without it a
//! standby that stops right after it was dropped from `sync` held the writers for up
//! to 10 s.

use super::{PgDriver, SQL_TIMEOUT};
use crate::error::Result;
use crate::sql;
use ha_core::decision::sync::StandbyNames;
use std::time::{Duration, Instant};

/// How long to wait for the walsenders to read the new setting.
const RELOAD_WAIT: Duration = Duration::from_secs(1);
/// How often to look.
const RELOAD_POLL: Duration = Duration::from_millis(5);

impl PgDriver {
    /// Called right after the reload that set `synchronous_standby_names` to `value`;
    /// does nothing on a server in recovery.
    pub(super) async fn wake_waiting_commits(&self, value: Option<&str>) -> Result<()> {
        let client = self.connect_local(SQL_TIMEOUT).await?;
        let wanted = StandbyNames::parse(value);
        let started = Instant::now();
        loop {
            let rows = client
                .query(
                    "SELECT pg_is_in_recovery(), application_name, sync_priority \
                     FROM (SELECT 1) one LEFT JOIN pg_stat_replication ON true",
                    &[],
                )
                .await
                .map_err(sql::query_error)?;
            if rows.first().is_some_and(|r| r.get::<_, bool>(0)) {
                return Ok(());
            }
            let walsenders: Vec<(String, i32)> = rows
                .iter()
                .filter_map(|r| Some((r.get::<_, Option<String>>(1)?, r.get::<_, Option<i32>>(2)?)))
                .collect();
            if walsenders
                .iter()
                .all(|(name, priority)| (*priority > 0) == lists(&wanted, name))
            {
                break;
            }
            if started.elapsed() >= RELOAD_WAIT {
                tracing::debug!(
                    "walsenders did not all show the new synchronous_standby_names within {}s",
                    RELOAD_WAIT.as_secs()
                );
                break;
            }
            tokio::time::sleep(RELOAD_POLL).await;
        }
        // The commit record of a transaction that has an xid, flushed here (walsenders
        // send only flushed WAL) without waiting for any standby.
        client
            .batch_execute(
                "BEGIN; SET LOCAL synchronous_commit = local; \
                 SELECT pg_catalog.txid_current(); COMMIT",
            )
            .await
            .map_err(sql::query_error)
    }
}

/// Whether a standby of this `application_name` is named (or `*` is) in the setting;
/// Postgres compares the names without regard to case.
fn lists(wanted: &StandbyNames, application_name: &str) -> bool {
    !wanted.is_empty()
        && wanted
            .names
            .iter()
            .any(|n| n == "*" || n.eq_ignore_ascii_case(application_name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_walsender_has_a_priority_exactly_when_the_setting_names_it() {
        let first = StandbyNames::parse(Some("2 (\"pg1\",\"pg2\")"));
        assert!(lists(&first, "pg1") && lists(&first, "PG2"));
        assert!(!lists(&first, "pg3"));
        assert!(lists(&StandbyNames::parse(Some("*")), "anyone"));
        assert!(!lists(&StandbyNames::parse(None), "pg1"));
        assert!(!lists(&StandbyNames::parse(Some("")), "pg1"));
        assert!(lists(&StandbyNames::parse(Some("ANY 1 (a, b)")), "b"));
    }
}
