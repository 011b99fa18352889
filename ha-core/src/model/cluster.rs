//! The whole cluster view, assembled from one read of the DCS prefix.

use super::keys::{self, ClusterKeys};
use super::{
    DynamicConfig, Failover, Failsafe, History, Lsn, Member, MemberData, Status, SyncState,
    ValueError, Version,
};

/// One key as a backend read it: the path relative to the cluster prefix, its value,
/// its version and the lease/session that owns it (for expiring keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawEntry {
    /// Key relative to the prefix, e.g. `members/pg0`.
    pub key: String,
    /// The value as stored.
    pub value: String,
    /// Backend version for CAS.
    pub version: Version,
    /// Owning lease / session / ephemeral owner.
    pub session: Option<String>,
}

/// A value together with the version it was read at.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// The value.
    pub value: T,
    /// Its version, for CAS writes.
    pub version: Version,
}

/// Who holds the leader key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderRecord {
    /// The holder's member name.
    pub name: String,
    /// Key version: the fencing token of this leadership.
    pub version: Version,
    /// The lease/session the key is bound to.
    pub session: Option<String>,
}

/// Everything a node knows about the cluster after one DCS read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// `initialize`: `Some("")` while a bootstrap runs, then the system identifier.
    pub initialize: Option<String>,
    /// `config`, if present and valid.
    pub config: Option<Versioned<DynamicConfig>>,
    /// `leader`, if present and non-empty.
    pub leader: Option<LeaderRecord>,
    /// All member records, sorted by name.
    pub members: Vec<Member>,
    /// `failover`, if present (an empty request is kept so its version can be CASed).
    pub failover: Option<Versioned<Failover>>,
    /// `sync`, if present.
    pub sync: Option<Versioned<SyncState>>,
    /// `history`, if present and valid.
    pub history: Option<History>,
    /// `status` (or legacy `optime/leader`).
    pub status: Status,
    /// `failsafe`, if present and valid.
    pub failsafe: Option<Failsafe>,
    /// Values that could not be parsed; the engine treats their keys conservatively.
    pub malformed: Vec<ValueError>,
    /// Proxy records (`proxies/<name>`), sorted by name; the engine never reads them.
    pub proxies: Vec<ProxyRecord>,
}

/// A running `fullauto-proxy`, as it publishes itself.
#[derive(Debug, Clone, PartialEq)]
pub struct ProxyRecord {
    /// The proxy's name.
    pub name: String,
    /// Its record (JSON object: listeners, version), `Null` when unreadable.
    pub data: serde_json::Value,
}

impl Cluster {
    /// Builds the view from raw entries; malformed values never fail the read but are
    /// listed in `malformed`.
    pub fn from_entries(entries: impl IntoIterator<Item = RawEntry>) -> Cluster {
        let mut c = Cluster::default();
        let mut legacy_optime: Option<Lsn> = None;
        for e in entries {
            let key = e.key.trim_start_matches('/');
            match key {
                keys::INITIALIZE => c.initialize = Some(e.value.trim().to_string()),
                keys::CONFIG => match DynamicConfig::parse(&e.value) {
                    Ok(value) => {
                        c.config = Some(Versioned {
                            value,
                            version: e.version,
                        })
                    }
                    Err(r) => c.malformed.push(ValueError::new(key, r)),
                },
                keys::LEADER => {
                    let name = e.value.trim();
                    if !name.is_empty() {
                        c.leader = Some(LeaderRecord {
                            name: name.to_string(),
                            version: e.version,
                            session: e.session,
                        });
                    }
                }
                keys::FAILOVER => match Failover::parse(&e.value) {
                    Ok(value) => {
                        c.failover = Some(Versioned {
                            value,
                            version: e.version,
                        })
                    }
                    Err(r) => {
                        c.malformed.push(ValueError::new(key, r));
                        // Keep the version so the leader can CAS-clear the garbage.
                        c.failover = Some(Versioned {
                            value: Failover::default(),
                            version: e.version,
                        });
                    }
                },
                keys::SYNC => match SyncState::parse(&e.value) {
                    Ok(value) => {
                        c.sync = Some(Versioned {
                            value,
                            version: e.version,
                        })
                    }
                    Err(r) => c.malformed.push(ValueError::new(key, r)),
                },
                keys::HISTORY => match History::parse(&e.value) {
                    Ok(h) => c.history = Some(h),
                    Err(r) => c.malformed.push(ValueError::new(key, r)),
                },
                keys::STATUS => match Status::parse(&e.value) {
                    Ok(s) => c.status = s,
                    Err(r) => c.malformed.push(ValueError::new(key, r)),
                },
                keys::LEGACY_OPTIME => legacy_optime = e.value.trim().parse().ok(),
                keys::FAILSAFE => match serde_json::from_str::<Failsafe>(&e.value) {
                    Ok(f) => c.failsafe = Some(f),
                    Err(r) => c.malformed.push(ValueError::new(key, r)),
                },
                _ => {
                    if let Some(name) = key.strip_prefix(keys::PROXIES_DIR) {
                        if !name.is_empty() && !name.contains('/') {
                            c.proxies.push(ProxyRecord {
                                name: name.to_string(),
                                data: serde_json::from_str(&e.value)
                                    .unwrap_or(serde_json::Value::Null),
                            });
                        }
                        continue;
                    }
                    if let Some(name) = key.strip_prefix(keys::MEMBERS_DIR) {
                        if name.is_empty() || name.contains('/') {
                            continue;
                        }
                        let data = match MemberData::parse(&e.value) {
                            Ok(d) => d,
                            Err(r) => {
                                c.malformed.push(ValueError::new(key, r));
                                MemberData::default()
                            }
                        };
                        c.members.push(Member {
                            name: name.to_string(),
                            data,
                            version: e.version,
                            session: e.session,
                        });
                    }
                }
            }
        }
        if c.status.optime.is_none() {
            c.status.optime = legacy_optime;
        }
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c.proxies.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    /// Builds the view from full key paths, dropping keys outside `keys`' prefix.
    pub fn from_full_paths(
        keys: &ClusterKeys,
        entries: impl IntoIterator<Item = RawEntry>,
    ) -> Cluster {
        Cluster::from_entries(entries.into_iter().filter_map(|mut e| {
            let rel = keys.relative(&e.key)?.to_string();
            e.key = rel;
            Some(e)
        }))
    }

    /// No leader key (or an empty one).
    pub fn is_unlocked(&self) -> bool {
        self.leader.is_none()
    }

    /// Whether `name` holds the leader key.
    pub fn is_leader(&self, name: &str) -> bool {
        self.leader.as_ref().is_some_and(|l| l.name == name)
    }

    /// A member by name.
    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    /// The leader's member record, if both exist.
    pub fn leader_member(&self) -> Option<&Member> {
        self.member(&self.leader.as_ref()?.name)
    }

    /// Cluster timeline from `history`: 0 when unknown.
    pub fn timeline(&self) -> u64 {
        self.history.as_ref().map_or(0, History::cluster_timeline)
    }

    /// The non-empty failover request, if any.
    pub fn failover_request(&self) -> Option<&Failover> {
        self.failover
            .as_ref()
            .map(|f| &f.value)
            .filter(|f| !f.is_empty())
    }

    /// The dynamic config in force (defaults when absent).
    pub fn dynamic_config(&self) -> DynamicConfig {
        self.config
            .as_ref()
            .map(|c| c.value.clone())
            .unwrap_or_default()
    }

    /// Whether a key could not be parsed.
    pub fn is_malformed(&self, key: &str) -> bool {
        self.malformed.iter().any(|e| e.key == key)
    }

    /// The system identifier recorded in `initialize`, if it is one.
    pub fn system_identifier(&self) -> Option<&str> {
        self.initialize
            .as_deref()
            .filter(|s| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(key: &str, value: &str, v: i64) -> RawEntry {
        RawEntry {
            key: key.into(),
            value: value.into(),
            version: Version(v),
            session: None,
        }
    }

    #[test]
    fn builds_view_and_survives_garbage() {
        let c = Cluster::from_entries(vec![
            e("leader", "pg0", 7),
            e(
                "members/pg1",
                r#"{"role":"replica","state":"running","xlog_location":10}"#,
                3,
            ),
            e("members/pg0", "{broken", 2),
            e("config", "not json", 1),
            e("sync", "[]", 4),
            e("history", r#"[[1,100,"r"]]"#, 5),
            e("optime/leader", "55", 6),
            e("initialize", "7311111111111111111", 8),
        ]);
        assert_eq!(c.leader.as_ref().unwrap().name, "pg0");
        assert_eq!(c.leader.as_ref().unwrap().version, Version(7));
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.members[0].name, "pg0");
        assert_eq!(c.members[0].data, MemberData::default());
        assert!(c.config.is_none());
        assert!(c.is_malformed("config"));
        assert!(c.is_malformed("sync"));
        assert!(c.is_malformed("members/pg0"));
        assert_eq!(c.timeline(), 2);
        assert_eq!(c.status.optime, Some(55));
        assert_eq!(c.system_identifier(), Some("7311111111111111111"));
    }

    #[test]
    fn empty_leader_means_unlocked() {
        let c = Cluster::from_entries(vec![e("leader", "", 1)]);
        assert!(c.is_unlocked());
        assert_eq!(c.timeline(), 0);
    }
}
