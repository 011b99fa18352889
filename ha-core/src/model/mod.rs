//! The cluster as Patroni stores it in the DCS: one typed value per key, with the
//! (de)serialization rules of Patroni 4.x (writing) and 3.x/4.x (reading).

mod cluster;
mod dynamic_config;
mod failover;
mod history;
pub mod keys;
mod member;
pub mod permanent_slots;
mod slots;
pub mod standby_cluster;
mod status;
mod sync_state;
mod tags;

pub use cluster::{Cluster, LeaderRecord, RawEntry, Versioned};
pub use dynamic_config::{DynamicConfig, SynchronousMode};
pub use failover::Failover;
pub use history::{History, HistoryEntry};
pub use keys::ClusterKeys;
pub use member::{Member, MemberData, MemberState, Role};
pub use slots::{is_valid_slot_name, slot_name_for_member, IgnoreSlotRule, ObservedSlot, SlotKind};
pub use standby_cluster::StandbyClusterConfig;
pub use status::{Failsafe, Status};
pub use sync_state::SyncState;
pub use tags::Tags;

/// A WAL position as an absolute byte offset, as Patroni stores it.
pub type Lsn = u64;

/// A backend's version of one key, used for compare-and-set (etcd `mod_revision`,
/// Consul `ModifyIndex`, ZooKeeper znode version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Version(pub i64);

/// A DCS value that could not be parsed: the key it came from and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed value at key `{key}`: {reason}")]
pub struct ValueError {
    /// The key, relative to the cluster prefix.
    pub key: String,
    /// What was wrong with it.
    pub reason: String,
}

/// Why a DCS value could not be parsed, without the key ([`ValueError`] adds it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON, or JSON that does not fit the value's type.
    #[error("{0}")]
    Json(String),
    /// JSON of the wrong shape (a list where an object belongs, a missing field).
    #[error("{0}")]
    Shape(&'static str),
    /// A timestamp that is not RFC 3339.
    #[error("{field} {value:?}: {reason}")]
    Timestamp {
        /// The field holding it.
        field: &'static str,
        /// The value as written.
        value: String,
        /// What the date parser said.
        reason: String,
    },
}

impl From<serde_json::Error> for ParseError {
    fn from(e: serde_json::Error) -> Self {
        ParseError::Json(e.to_string())
    }
}

impl ValueError {
    pub(crate) fn new(key: impl Into<String>, reason: impl ToString) -> Self {
        ValueError {
            key: key.into(),
            reason: reason.to_string(),
        }
    }
}

/// How a config value is shown in an error message: scalars as written (strings
/// quoted), containers by their kind.
pub fn describe_value(v: &serde_json::Value) -> String {
    use serde_json::Value;
    match v {
        Value::Null => "nothing".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "a mapping".into(),
    }
}

/// Formats an LSN the way PostgreSQL prints it (`X/Y`).
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xffff_ffff)
}

/// Parses PostgreSQL's `X/Y` LSN notation.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    if hi > u32::MAX as u64 || lo > u32::MAX as u64 {
        return None;
    }
    Some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsn_round_trips_through_postgres_notation() {
        assert_eq!(parse_lsn("0/3000060"), Some(0x3000060));
        assert_eq!(parse_lsn("16/B374D848"), Some((0x16 << 32) | 0xB374D848));
        assert_eq!(format_lsn((0x16 << 32) | 0xB374D848), "16/B374D848");
        assert_eq!(parse_lsn("garbage"), None);
        assert_eq!(parse_lsn("1/"), None);
    }
}
