//! The sections that name outside programs and roles: custom replica-creation
//! methods (`create_replica_methods` entries), a custom bootstrap method
//! (`bootstrap.method`) and the roles of `bootstrap.users`.

use serde::Deserialize;
use std::collections::BTreeMap;

/// A custom replica-creation method (`create_replica_methods` entry's section).
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ReplicaMethod {
    /// Command line run through `sh -c`; gets `--scope`, `--role=replica`,
    /// `--datadir`, `--connstring` and the section's other keys appended.
    pub command: String,
    /// Works without a running leader (restores from a backup store).
    #[serde(default)]
    pub no_leader: bool,
    /// Do not empty the data directory if the method fails.
    #[serde(default)]
    pub keep_data: bool,
    /// Pass only the section's own keys, not `--scope`, `--role`, `--datadir`,
    /// `--connstring`.
    #[serde(default)]
    pub no_params: bool,
    /// Other keys, passed as `--key=value`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A custom bootstrap method (`bootstrap.method: <name>` and its `bootstrap.<name>:`
/// section): a command that fills the empty data directory, e.g. by restoring a
/// backup, instead of initdb.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
pub struct BootstrapMethod {
    /// The section's name (for messages).
    pub name: String,
    /// Command line run through `sh -c`; gets `--scope=<scope> --datadir=<data_dir>`
    /// (unless `no_params`) and the section's other keys as `--key=value`.
    pub command: String,
    /// Pass only the section's other keys.
    #[serde(default)]
    pub no_params: bool,
    /// Keep the recovery configuration the command left (`recovery.signal`, recovery
    /// settings in `postgresql.auto.conf`) instead of removing it.
    #[serde(default)]
    pub keep_existing_recovery_conf: bool,
    /// Recovery settings (`restore_command`, `recovery_target*`, …) for the first
    /// start: the server recovers with them, then ends recovery on a new timeline.
    #[serde(default)]
    pub recovery_conf: Option<BTreeMap<String, serde_json::Value>>,
    /// Other keys, passed as `--key=value`.
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_json::Value>,
}

/// A role of `bootstrap.users`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BootstrapUser {
    /// Role name.
    pub name: String,
    /// Its password, if any.
    #[serde(default)]
    pub password: Option<String>,
    /// Role options (`createrole`, `createdb`, …), as `CREATE ROLE` takes them.
    #[serde(default)]
    pub options: Vec<String>,
}

impl BootstrapUser {
    /// The role's attributes: the options upper-cased, `LOGIN` unless `LOGIN` or
    /// `NOLOGIN` is given (Patroni's rule). `None` when an option is not a plain
    /// word (it would go into SQL as it is).
    pub fn attributes(&self) -> Option<String> {
        let mut words: Vec<String> = Vec::new();
        for o in &self.options {
            let w = o.trim().to_ascii_uppercase();
            if w.is_empty()
                || !w
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ' ')
            {
                return None;
            }
            words.push(w);
        }
        if !words.iter().any(|w| w == "LOGIN" || w == "NOLOGIN") {
            words.push("LOGIN".into());
        }
        Some(words.join(" "))
    }
}

/// Whether a `create_replica_methods` entry names the built-in pg_basebackup.
pub fn is_basebackup(method: &str) -> bool {
    method == "basebackup" || method == "pg_basebackup"
}
