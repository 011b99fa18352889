//! `GET /metrics`: Prometheus text with Patroni's metric names.

use super::health::View;
use super::state::Xlog;
use ha_core::Role;
use std::fmt::Write;

/// `0.1.0` ⇒ `000100`, `4.1.4` ⇒ `040104`, as Patroni reports its version.
pub fn version_number(version: &str) -> String {
    let mut parts = version
        .split(['.', '-', '+'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (a, b, c) = (
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
        parts.next().unwrap_or(0),
    );
    format!("{a:02}{b:02}{c:02}")
}

/// Epoch seconds of a Postgres timestamp (`2023-08-18 11:03:37.966359+00:00`).
pub fn epoch_seconds(text: &str) -> Option<f64> {
    let t = text.trim();
    let parsed = chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%:z")
        .or_else(|_| chrono::DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .or_else(|_| chrono::DateTime::parse_from_rfc3339(t))
        .ok()?;
    Some(parsed.timestamp_micros() as f64 / 1_000_000.0)
}

struct Out {
    text: String,
    labels: String,
}

impl Out {
    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.metric(name, "gauge", help, value);
    }

    fn counter(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.metric(name, "counter", help, value);
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.text, "# HELP {name} {help}");
        let _ = writeln!(self.text, "# TYPE {name} {kind}");
        let _ = writeln!(self.text, "{name}{{{}}} {value}", self.labels);
    }
}

/// Patroni's numbers for Postgres states (`PostgresqlState`; they never change), as
/// `(state, name in the "# Values" line, number)`.
const POSTGRES_STATES: [(&str, &str, i32); 15] = [
    ("initializing new cluster", "initdb", 0),
    ("initdb failed", "initdb_failed", 1),
    ("running custom bootstrap script", "custom_bootstrap", 2),
    ("custom bootstrap failed", "custom_bootstrap_failed", 3),
    ("creating replica", "creating_replica", 4),
    ("running", "running", 5),
    ("starting", "starting", 6),
    ("starting after custom bootstrap", "bootstrap_starting", 7),
    ("start failed", "start_failed", 8),
    ("restarting", "restarting", 9),
    ("restart failed", "restart_failed", 10),
    ("stopping", "stopping", 11),
    ("stopped", "stopped", 12),
    ("stop failed", "stop_failed", 13),
    ("crashed", "crashed", 14),
];

/// Patroni's number of a Postgres state; -1 for one it has no number for (`unknown`).
pub fn postgres_state_number(state: &str) -> i32 {
    POSTGRES_STATES
        .iter()
        .find(|(s, _, _)| *s == state)
        .map_or(-1, |(_, _, n)| *n)
}

/// Epoch seconds as Python prints a float (`1704110400.5`, `1704110400.0`), or `0`
/// when unknown, as Patroni's metrics show them.
fn python_seconds(value: Option<f64>) -> String {
    match value {
        Some(v) => format!("{v:?}"),
        None => "0".into(),
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The metrics page for one request's view.
pub(crate) fn render(view: &View) -> String {
    let s = &view.status;
    let labels = format!(
        "scope=\"{}\",name=\"{}\"",
        escape(&s.patroni.scope),
        escape(&s.patroni.name)
    );
    let mut o = Out {
        text: String::new(),
        labels: labels.clone(),
    };
    let b = |x: bool| u8::from(x);
    let running = s.is_running();
    o.gauge(
        "patroni_version",
        "Patroni semver without periods.",
        version_number(&s.patroni.version),
    );
    o.gauge(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        b(running),
    );
    o.gauge(
        "patroni_postmaster_start_time",
        "Epoch seconds since Postgres started.",
        python_seconds(s.postmaster_start_time.as_deref().and_then(epoch_seconds)),
    );
    let primary = view.is_primary_ok();
    // Patroni 3.x's name, still read by its dashboards.
    o.gauge(
        "patroni_master",
        "Value is 1 if this node is the leader, 0 otherwise.",
        b(primary),
    );
    o.gauge(
        "patroni_primary",
        "Value is 1 if this node is the leader, 0 otherwise.",
        b(primary),
    );
    let location = match &s.xlog {
        Some(Xlog::Primary { location }) => *location,
        _ => 0,
    };
    o.counter(
        "patroni_xlog_location",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        location,
    );
    o.gauge(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        b(view.is_standby_leader_ok()),
    );
    o.gauge(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        b(running && s.role == Role::Replica),
    );
    o.gauge(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        b(view.is_sync_standby()),
    );
    o.gauge(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        b(view.is_quorum_standby()),
    );
    let (received, replayed, replayed_ts, paused) = match &s.xlog {
        Some(Xlog::Replica {
            received_location,
            replayed_location,
            replayed_timestamp,
            paused,
        }) => (
            received_location.unwrap_or(0),
            replayed_location.unwrap_or(0),
            python_seconds(replayed_timestamp.as_deref().and_then(epoch_seconds)),
            *paused,
        ),
        _ => (0, 0, python_seconds(None), false),
    };
    o.counter(
        "patroni_xlog_received_location",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        received,
    );
    o.counter(
        "patroni_xlog_replayed_location",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        replayed,
    );
    o.gauge(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        replayed_ts,
    );
    o.gauge(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        b(paused),
    );
    // Patroni shows these two only while it knows the server version (9.6 and up).
    if s.server_version.is_some_and(|v| v >= 90600) {
        o.gauge(
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            b(s.replication_state.as_deref() == Some("streaming")),
        );
        o.gauge(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            b(s.replication_state.as_deref() == Some("in archive recovery")),
        );
    }
    o.gauge(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        s.server_version.unwrap_or(0),
    );
    o.gauge(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        b(view.cluster_unlocked()),
    );
    o.gauge(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        b(s.failsafe_mode_is_active),
    );
    o.gauge(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        s.timeline.unwrap_or(0),
    );
    o.gauge(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        s.dcs_last_seen.unwrap_or(0),
    );
    o.gauge(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        b(s.pending_restart),
    );
    o.gauge(
        "patroni_is_paused",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        b(s.pause),
    );
    o.gauge(
        "patroni_failsafe_mode_enabled",
        "Value is 1 if failsafe mode is enabled, 0 otherwise.",
        b(view.dynamic_config().failsafe_mode),
    );
    o.gauge(
        "patroni_failover_priority",
        "Value is the failover priority of this node (0 = never promoted).",
        s.tags.effective_failover_priority().max(0),
    );
    let _ = writeln!(
        o.text,
        "# HELP patroni_postgres_state Numeric representation of Postgres state."
    );
    let values: Vec<String> = POSTGRES_STATES
        .iter()
        .map(|(_, name, n)| format!("{n}={name}"))
        .collect();
    let _ = writeln!(o.text, "# Values: {}", values.join(", "));
    let _ = writeln!(o.text, "# TYPE patroni_postgres_state gauge");
    let _ = writeln!(
        o.text,
        "patroni_postgres_state{{{labels}}} {}",
        postgres_state_number(&s.state)
    );
    o.text
}

#[cfg(test)]
mod tests {
    use super::{postgres_state_number, python_seconds, version_number};

    #[test]
    fn postgres_states_have_patronis_numbers() {
        assert_eq!(postgres_state_number("initializing new cluster"), 0);
        assert_eq!(postgres_state_number("creating replica"), 4);
        assert_eq!(postgres_state_number("running"), 5);
        assert_eq!(postgres_state_number("restarting"), 9);
        assert_eq!(postgres_state_number("stopped"), 12);
        assert_eq!(postgres_state_number("crashed"), 14);
        assert_eq!(postgres_state_number("unknown"), -1);
    }

    #[test]
    fn seconds_print_like_python_floats() {
        assert_eq!(
            python_seconds(Some(1_795_600_800.123456)),
            "1795600800.123456"
        );
        assert_eq!(python_seconds(Some(1_795_600_800.0)), "1795600800.0");
        assert_eq!(python_seconds(None), "0");
    }

    #[test]
    fn versions_are_zero_padded_pairs() {
        assert_eq!(version_number("4.1.4"), "040104");
        assert_eq!(version_number("0.1.0"), "000100");
    }
}
