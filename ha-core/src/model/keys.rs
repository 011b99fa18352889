//! Patroni's key layout: `/<namespace>/<scope>/<key>`.

/// The names of a cluster's keys under its prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterKeys {
    prefix: String,
}

impl ClusterKeys {
    /// Keys for `scope` under `namespace` (Patroni's default namespace is `service`);
    /// repeated slashes collapse as Patroni does.
    pub fn new(namespace: &str, scope: &str) -> Self {
        let joined = format!("/{}/{}/", namespace, scope);
        let mut prefix = String::with_capacity(joined.len());
        for c in joined.chars() {
            if !(c == '/' && prefix.ends_with('/')) {
                prefix.push(c);
            }
        }
        ClusterKeys { prefix }
    }

    /// The prefix with its leading and trailing slash, e.g. `/service/batman/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The prefix without its leading slash, as Consul spells keys.
    pub fn prefix_without_leading_slash(&self) -> &str {
        self.prefix.trim_start_matches('/')
    }

    /// The full path of a key relative to the prefix, e.g. `leader` ⇒ `/service/batman/leader`.
    pub fn key(&self, relative: &str) -> String {
        format!("{}{}", self.prefix, relative)
    }

    /// The key path relative to the prefix, or `None` when it lies outside this cluster.
    pub fn relative<'a>(&self, full: &'a str) -> Option<&'a str> {
        full.strip_prefix(&self.prefix)
            .or_else(|| full.strip_prefix(self.prefix_without_leading_slash()))
    }

    /// `leader`
    pub fn leader(&self) -> String {
        self.key(LEADER)
    }
    /// `members/<name>`
    pub fn member(&self, name: &str) -> String {
        self.key(&format!("{}{}", MEMBERS_DIR, name))
    }
    /// `members/`
    pub fn members_dir(&self) -> String {
        self.key(MEMBERS_DIR)
    }
    /// `proxies/<name>`
    pub fn proxy(&self, name: &str) -> String {
        self.key(&format!("{}{}", PROXIES_DIR, name))
    }
    /// `proxies/`
    pub fn proxies_dir(&self) -> String {
        self.key(PROXIES_DIR)
    }
    /// `initialize`
    pub fn initialize(&self) -> String {
        self.key(INITIALIZE)
    }
    /// `config`
    pub fn config(&self) -> String {
        self.key(CONFIG)
    }
    /// `failover`
    pub fn failover(&self) -> String {
        self.key(FAILOVER)
    }
    /// `sync`
    pub fn sync(&self) -> String {
        self.key(SYNC)
    }
    /// `history`
    pub fn history(&self) -> String {
        self.key(HISTORY)
    }
    /// `status`
    pub fn status(&self) -> String {
        self.key(STATUS)
    }
    /// `failsafe`
    pub fn failsafe(&self) -> String {
        self.key(FAILSAFE)
    }
}

/// Whether a change of this relative key calls for a new HA decision (see
/// [`crate::Dcs::subscribe`]).
pub fn wakes_ha_loop(relative: &str) -> bool {
    matches!(relative, LEADER | CONFIG | FAILOVER | SYNC | INITIALIZE)
}

/// Relative key names, as Patroni spells them.
pub const LEADER: &str = "leader";
/// Directory of member records.
pub const MEMBERS_DIR: &str = "members/";
/// Directory of proxy records (fullauto's own: each `fullauto-proxy` publishes its
/// listeners there, bound to its lease; Patroni ignores the directory).
pub const PROXIES_DIR: &str = "proxies/";
/// Bootstrap race key and system identifier.
pub const INITIALIZE: &str = "initialize";
/// Dynamic configuration.
pub const CONFIG: &str = "config";
/// Switchover / failover request.
pub const FAILOVER: &str = "failover";
/// Synchronous replication state.
pub const SYNC: &str = "sync";
/// Timeline history.
pub const HISTORY: &str = "history";
/// Leader's last known WAL position and slots.
pub const STATUS: &str = "status";
/// Legacy leader optime.
pub const LEGACY_OPTIME: &str = "optime/leader";
/// Failsafe topology.
pub const FAILSAFE: &str = "failsafe";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_collapses_repeated_slashes() {
        let keys = ClusterKeys::new("/service/", "batman");
        assert_eq!(keys.prefix(), "/service/batman/");
        assert_eq!(keys.leader(), "/service/batman/leader");
        assert_eq!(keys.member("pg0"), "/service/batman/members/pg0");
        assert_eq!(keys.prefix_without_leading_slash(), "service/batman/");
        assert_eq!(
            keys.relative("/service/batman/members/pg0"),
            Some("members/pg0")
        );
        assert_eq!(keys.relative("service/batman/leader"), Some("leader"));
        assert_eq!(keys.relative("/service/robin/leader"), None);
    }
}
