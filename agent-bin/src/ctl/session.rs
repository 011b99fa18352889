//! One connection to the DCS of one cluster, and the member selections the commands
//! share (leader first, by role, by name).

use super::args::RoleFilter;
use super::error::{CtlError, CtlResult};
use super::rest::RestClient;
use super::settings::Settings;
use crate::config::Config;
use ha_core::{Cluster, Dcs, DcsTiming, Member};
use std::sync::Arc;
use std::time::Duration;

/// Process-wide options.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Config file, environment and `--dcs-url`.
    pub settings: Settings,
    /// Deadline of one DCS operation.
    pub dcs_timeout: Duration,
}

/// A cluster opened in the DCS.
pub struct Session {
    /// Cluster name (scope).
    pub name: String,
    /// The DCS bound to it.
    pub dcs: Arc<dyn Dcs>,
    /// The config it was opened with.
    pub config: Config,
    insecure: bool,
}

impl Ctx {
    /// Connects to the DCS of `cluster`. The member name is a throw-away one: the
    /// ctl never writes member keys or takes the leader lock.
    pub async fn open(&self, cluster: &str) -> CtlResult<Session> {
        let config = self.settings.config_for(cluster)?;
        let timing = DcsTiming {
            retry_timeout: self.dcs_timeout,
            ..DcsTiming::default()
        };
        // Fail at once, naming the setting to check, when no endpoint answers at all.
        super::reach::check_reachable(&super::reach::dcs_addresses(&config), &dcs_setting(&config))
            .await?;
        let dcs = crate::dcs_factory::connect_dcs(&config, &config.name, timing)
            .await
            .map_err(|e| with_hint(e, &config))?;
        Ok(Session {
            name: cluster.to_string(),
            dcs,
            config,
            insecure: self.settings.insecure,
        })
    }
}

impl Session {
    /// Reads the whole cluster.
    pub async fn read(&self) -> CtlResult<Cluster> {
        self.dcs
            .get_cluster()
            .await
            .map_err(|e| with_hint(e, &self.config))
    }

    /// Reads the cluster and fails when nothing at all is stored under its prefix (a
    /// mistyped name, or the wrong namespace).
    pub async fn read_existing(&self) -> CtlResult<Cluster> {
        let c = self.read().await?;
        if c == Cluster::default() {
            return Err(CtlError::failed(format!(
                "cluster {:?} not found: nothing is stored under {} in the DCS",
                self.name,
                ha_core::ClusterKeys::new(&self.config.namespace, &self.name).prefix()
            )));
        }
        Ok(c)
    }

    /// A REST client with this config's auth and TLS settings.
    pub fn rest(&self) -> CtlResult<RestClient> {
        RestClient::new(&self.config, self.insecure)
    }

    /// The dynamic config's `loop_wait` (10 s without a config).
    pub fn loop_wait(cluster: &Cluster) -> Duration {
        let lw = cluster.dynamic_config().loop_wait();
        if lw.is_zero() {
            Duration::from_secs(10)
        } else {
            lw
        }
    }
}

/// A DCS failure; when the DCS could not be reached, with the setting that says
/// where it is, so the operator knows what to check.
fn with_hint(e: ha_core::DcsError, config: &Config) -> CtlError {
    if !e.is_unreachable() {
        return CtlError::Dcs(e);
    }
    CtlError::Failed(format!(
        "{e}. Is the DCS running and reachable? Check {} (or pass --dcs-url)",
        dcs_setting(config)
    ))
}

/// The setting that names the DCS endpoints, with its value: `etcd3.hosts
/// (127.0.0.1:2379)`.
pub fn dcs_setting(config: &Config) -> String {
    let raw = &config.raw;
    let (section, keys): (&str, &[&str]) = match &config.dcs {
        crate::config::DcsConfig::Etcd3(_) => {
            let section = if raw.get("etcd3").is_some_and(|v| !v.is_null()) {
                "etcd3"
            } else {
                "etcd"
            };
            (section, &["hosts", "host", "url"])
        }
        crate::config::DcsConfig::Zookeeper(_) => ("zookeeper", &["hosts"]),
        crate::config::DcsConfig::Consul(_) => ("consul", &["url", "host"]),
    };
    let found = keys.iter().find_map(|k| {
        raw.get(section)
            .and_then(|s| s.get(*k))
            .filter(|v| !v.is_null())
            .map(|v| (*k, v))
    });
    match found {
        Some((k, serde_json::Value::String(v))) => format!("{section}.{k} ({v})"),
        Some((k, serde_json::Value::Array(list))) => {
            let items: Vec<String> = list
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                .collect();
            format!("{section}.{k} ({})", items.join(","))
        }
        Some((k, v)) => format!("{section}.{k} ({v})"),
        None => format!("{section}.{}", keys[0]),
    }
}

/// Members matching `role`: the leader key holder for leader roles, everyone else for
/// replica roles.
pub fn members_with_role(cluster: &Cluster, role: RoleFilter) -> Vec<&Member> {
    let standby = cluster.dynamic_config().is_standby_cluster();
    cluster
        .members
        .iter()
        .filter(|m| {
            let leader = cluster.is_leader(&m.name);
            match role {
                RoleFilter::Any => true,
                RoleFilter::Leader => leader,
                RoleFilter::Primary => leader && !standby,
                RoleFilter::StandbyLeader => leader && standby,
                RoleFilter::Replica | RoleFilter::Standby => !leader,
            }
        })
        .collect()
}

/// Members with an API URL, the leader first: who to ask for cluster-wide changes.
pub fn leader_first(cluster: &Cluster) -> Vec<&Member> {
    let mut out: Vec<&Member> = Vec::new();
    if let Some(l) = cluster.leader_member() {
        out.push(l);
    }
    out.extend(
        cluster
            .members
            .iter()
            .filter(|m| !cluster.is_leader(&m.name)),
    );
    out.retain(|m| m.data.api_url.as_deref().is_some_and(|u| !u.is_empty()));
    out
}

/// A member's API URL, or an error naming it.
pub fn api_url(m: &Member) -> CtlResult<&str> {
    m.data
        .api_url
        .as_deref()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| CtlError::Rest(format!("member {} publishes no api_url", m.name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn c(config: &str) -> Cluster {
        let e = |k: &str, v: &str| RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(1),
            session: None,
        };
        Cluster::from_entries(vec![
            e("leader", "b"),
            e("config", config),
            e("members/a", r#"{"api_url":"http://127.0.0.1:1/patroni"}"#),
            e("members/b", r#"{"api_url":"http://127.0.0.1:2/patroni"}"#),
            e("members/c", r#"{}"#),
        ])
    }

    #[test]
    fn role_filters() {
        let cl = c("{}");
        let names = |r| {
            members_with_role(&cl, r)
                .iter()
                .map(|m| m.name.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(RoleFilter::Leader), ["b"]);
        assert_eq!(names(RoleFilter::Primary), ["b"]);
        assert!(names(RoleFilter::StandbyLeader).is_empty());
        assert_eq!(names(RoleFilter::Replica), ["a", "c"]);
        assert_eq!(names(RoleFilter::Any), ["a", "b", "c"]);
        let cl = c(r#"{"standby_cluster":{"host":"x"}}"#);
        assert_eq!(members_with_role(&cl, RoleFilter::StandbyLeader).len(), 1);
        assert!(members_with_role(&cl, RoleFilter::Primary).is_empty());
    }

    #[test]
    fn unreachable_dcs_hint_names_the_setting_and_its_value() {
        let cfg = |yaml: &str| {
            let raw: serde_json::Value = serde_yaml::from_str(yaml).unwrap();
            Settings::from_document(raw, false)
                .unwrap()
                .config_for("s")
                .unwrap()
        };
        let c = cfg("scope: s\nname: n\netcd3:\n  hosts: [127.0.0.1:1, 127.0.0.1:2]\n");
        assert_eq!(dcs_setting(&c), "etcd3.hosts (127.0.0.1:1,127.0.0.1:2)");
        let c = cfg("scope: s\nname: n\netcd3:\n  host: 127.0.0.1:1\n");
        assert_eq!(dcs_setting(&c), "etcd3.host (127.0.0.1:1)");
        let c = cfg("scope: s\nname: n\nzookeeper:\n  hosts: z1:2181\n");
        assert_eq!(dcs_setting(&c), "zookeeper.hosts (z1:2181)");
        let e = with_hint(ha_core::DcsError::Unreachable("no answer".into()), &c);
        assert_eq!(
            e.to_string(),
            "dcs unreachable: no answer. Is the DCS running and reachable? Check \
             zookeeper.hosts (z1:2181) (or pass --dcs-url)"
        );
    }

    #[test]
    fn leader_first_skips_members_without_api() {
        let cl = c("{}");
        let names: Vec<_> = leader_first(&cl).iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, ["b", "a"]);
    }
}
