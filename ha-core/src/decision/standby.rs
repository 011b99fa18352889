//! Standby cluster rules: the whole cluster follows a remote primary named by the
//! dynamic `standby_cluster` section. The leader-key holder is the *standby leader*:
//! it streams from the remote and never promotes; the other members follow it.

use crate::model::DynamicConfig;
use crate::postgres::{RemoteSource, Upstream};
#[cfg(test)]
use serde_json::Value;

/// The upstream name a standby leader streams from (no member has this name).
pub const REMOTE_NAME: &str = "standby_cluster";

/// The remote source of a standby cluster with the section's recovery settings. A
/// `restore_command`-only standby cluster gets a source without a host (archive
/// recovery; nothing to stream from or connect to). `None` when the section is absent
/// or invalid.
pub fn remote_upstream(dc: &DynamicConfig) -> Option<Upstream> {
    let sc = dc.standby_cluster()?;
    Some(Upstream {
        name: REMOTE_NAME.to_string(),
        host: sc.host.clone().unwrap_or_default(),
        port: sc.port,
        remote: Some(RemoteSource {
            primary_slot_name: sc.primary_slot_name,
            restore_command: sc.restore_command,
            archive_cleanup_command: sc.archive_cleanup_command,
            recovery_min_apply_delay: sc.recovery_min_apply_delay,
            create_replica_methods: sc.create_replica_methods,
        }),
    })
}

/// Whether the leader must stay a replica: a standby cluster's leader never promotes.
pub fn leader_stays_replica(dc: &DynamicConfig) -> bool {
    dc.is_standby_cluster()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dc(section: Value) -> DynamicConfig {
        let mut d = DynamicConfig::default();
        d.extra.insert("standby_cluster".into(), section);
        d
    }

    #[test]
    fn remote_upstream_reads_host_and_port() {
        let u = remote_upstream(&dc(serde_json::json!({"host": "10.0.0.1", "port": 6543})))
            .expect("upstream");
        assert_eq!((u.host.as_str(), u.port), ("10.0.0.1", 6543));
        assert_eq!(u.name, REMOTE_NAME);
    }

    #[test]
    fn remote_upstream_defaults_port_and_accepts_strings() {
        let u = remote_upstream(&dc(serde_json::json!({"host": "h"}))).expect("upstream");
        assert_eq!(u.port, 5432);
        let u = remote_upstream(&dc(serde_json::json!({"host": "h", "port": "7000"})))
            .expect("upstream");
        assert_eq!(u.port, 7000);
    }

    #[test]
    fn remote_upstream_carries_the_recovery_settings() {
        let u = remote_upstream(&dc(serde_json::json!({
            "host": "h", "primary_slot_name": "b_leader", "restore_command": "cp a b",
            "archive_cleanup_command": "true", "recovery_min_apply_delay": 500,
            "create_replica_methods": ["walg"],
        })))
        .expect("upstream");
        let r = u.remote.expect("remote settings");
        assert_eq!(r.primary_slot_name.as_deref(), Some("b_leader"));
        assert_eq!(r.restore_command.as_deref(), Some("cp a b"));
        assert_eq!(r.archive_cleanup_command.as_deref(), Some("true"));
        assert_eq!(r.recovery_min_apply_delay.as_deref(), Some("500"));
        assert_eq!(r.create_replica_methods, vec!["walg"]);
    }

    #[test]
    fn no_remote_without_a_source() {
        assert_eq!(remote_upstream(&DynamicConfig::default()), None);
        assert_eq!(remote_upstream(&dc(Value::Null)), None);
        let restore_only = dc(serde_json::json!({"restore_command": "cp x y"}));
        assert!(leader_stays_replica(&restore_only));
        let archive = remote_upstream(&restore_only).expect("archive source");
        assert!(!archive.streams());
        assert_eq!(
            archive.remote.and_then(|r| r.restore_command).as_deref(),
            Some("cp x y")
        );
    }
}
