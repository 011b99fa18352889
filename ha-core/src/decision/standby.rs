//! Standby cluster rules: the whole cluster follows a remote primary named by the
//! dynamic `standby_cluster` section. The leader-key holder is the *standby leader*:
//! it streams from the remote and never promotes; the other members follow it.

use crate::model::DynamicConfig;
use crate::postgres::Upstream;
use serde_json::Value;

/// The upstream name a standby leader streams from (no member has this name).
pub const REMOTE_NAME: &str = "standby_cluster";

/// Default PostgreSQL port when `standby_cluster.port` is absent.
const DEFAULT_PORT: u16 = 5432;

/// The remote primary of a standby cluster, when `standby_cluster` names a host.
/// A `restore_command`-only standby cluster has no streaming source: `None`.
pub fn remote_upstream(dc: &DynamicConfig) -> Option<Upstream> {
    if !dc.is_standby_cluster() {
        return None;
    }
    let section = dc.extra.get("standby_cluster")?.as_object()?;
    let host = section.get("host").and_then(Value::as_str)?.to_string();
    let port = match section.get("port") {
        None | Some(Value::Null) => DEFAULT_PORT,
        Some(Value::Number(n)) => u16::try_from(n.as_u64()?).ok()?,
        Some(Value::String(s)) => s.trim().parse().ok()?,
        Some(_) => return None,
    };
    Some(Upstream {
        name: REMOTE_NAME.to_string(),
        host,
        port,
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
    fn no_remote_without_section_or_host() {
        assert_eq!(remote_upstream(&DynamicConfig::default()), None);
        assert_eq!(remote_upstream(&dc(Value::Null)), None);
        let restore_only = dc(serde_json::json!({"restore_command": "cp x y"}));
        assert!(leader_stays_replica(&restore_only));
        assert_eq!(remote_upstream(&restore_only), None);
    }
}
