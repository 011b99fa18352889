//! Patroni's Consul service registration (`consul.register_service`): each member
//! registers itself as an instance of the service named after the scope, tagged
//! with its role, with an HTTP health check on its REST API's role endpoint, so
//! `primary.<scope>.service.consul` and `replica.<scope>.service.consul` resolve
//! through Consul DNS.
//!
//! The registration follows the member data written by `touch_member`, as in
//! Patroni's `consul.py`: a running primary, replica or standby leader is
//! (re-)registered whenever its role, state, `api_url` or `conn_url` changes; a
//! stopped member is deregistered; other states leave the registration as it is.

use crate::client::go_duration;
use ha_core::{MemberData, MemberState, Role};
use serde_json::{json, Value};
use std::time::Duration;

/// The service settings of the `consul` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSettings {
    /// Extra tags, sorted (the role tag is added per registration).
    pub tags: Vec<String>,
    /// Interval of the HTTP check, a Go duration (`5s`).
    pub check_interval: String,
    /// Server name the check's TLS handshake verifies, when the API is HTTPS.
    pub check_tls_server_name: Option<String>,
}

/// What to do with the service after a member write.
#[derive(Debug, Clone, PartialEq)]
pub enum ServiceAction {
    /// `PUT /v1/agent/service/register` with this body.
    Register(Value),
    /// `PUT /v1/agent/service/deregister/<id>`.
    Deregister(String),
    /// Leave the registration as it is.
    Keep,
}

/// Patroni's service name for a scope: lowercase, `.`, `_` and space become `-`,
/// other characters outside `[a-z0-9-]` become `u` and their code point in four
/// decimal digits, at most 230 characters (so `replica.<name>.service.consul`
/// fits in a DNS name).
pub fn service_name(scope: &str) -> String {
    let mut out = String::new();
    for c in scope.to_lowercase().chars() {
        match c {
            'a'..='z' | '0'..='9' | '-' => out.push(c),
            '.' | '_' | ' ' => out.push('-'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.chars().take(230).collect()
}

/// The service instance ID of a member: `<scope>/<member>`.
pub fn service_id(scope: &str, member: &str) -> String {
    format!("{scope}/{member}")
}

/// The registration fields a member write can change; the service is updated only
/// when they differ from the last successful update.
pub(crate) fn signature(data: &MemberData) -> Option<(String, String, String, String)> {
    Some((
        data.role.as_ref()?.as_str().to_string(),
        data.state.as_ref()?.as_str().to_string(),
        data.api_url.clone()?,
        data.conn_url.clone()?,
    ))
}

/// Host (without IPv6 brackets) and port of a URL.
fn host_port(url: &reqwest::Url) -> (Option<String>, Option<u16>) {
    let host = url
        .host_str()
        .map(|h| h.trim_start_matches('[').trim_end_matches(']').to_string());
    (host, url.port_or_known_default())
}

/// Why a member's data gives no service registration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServiceError {
    /// A field the registration needs is absent.
    #[error("not enough member data (role, state, api_url and conn_url are needed)")]
    MissingData,
    /// A role with no service tag.
    #[error("unknown role type {0}")]
    UnknownRole(String),
    /// `api_url` or `conn_url` does not parse.
    #[error("{field} {value:?} is not a URL: {reason}")]
    BadUrl {
        /// `api_url` or `conn_url`.
        field: &'static str,
        /// The value as published.
        value: String,
        /// What the URL parser said.
        reason: String,
    },
}

impl ServiceSettings {
    /// The action for member data `data` of member `member` in `scope`; `ttl` sets
    /// the check's `DeregisterCriticalServiceAfter` (5 × ttl, as Patroni). An error
    /// names what is missing or malformed in the member data.
    pub fn action(
        &self,
        scope: &str,
        member: &str,
        data: &MemberData,
        ttl: Duration,
    ) -> Result<ServiceAction, ServiceError> {
        let id = service_id(scope, member);
        let (Some(role), Some(state), Some(api_url), Some(conn_url)) = (
            data.role.as_ref(),
            data.state.as_ref(),
            data.api_url.as_deref(),
            data.conn_url.as_deref(),
        ) else {
            return Err(ServiceError::MissingData);
        };
        if *state == MemberState::Stopped {
            return Ok(ServiceAction::Deregister(id));
        }
        let role_tag = role.as_str().replace('_', "-");
        let registrable = match role {
            Role::Primary | Role::Replica | Role::StandbyLeader => true,
            Role::Demoted | Role::Promoted | Role::Uninitialized | Role::Other(_) => false,
        };
        if !registrable {
            return Err(ServiceError::UnknownRole(role_tag));
        }
        if *state != MemberState::Running {
            return Ok(ServiceAction::Keep);
        }
        let mut check_url = reqwest::Url::parse(api_url).map_err(|e| ServiceError::BadUrl {
            field: "api_url",
            value: api_url.to_string(),
            reason: e.to_string(),
        })?;
        check_url.set_path(&format!("/{role_tag}"));
        let conn = reqwest::Url::parse(conn_url).map_err(|e| ServiceError::BadUrl {
            field: "conn_url",
            value: conn_url.to_string(),
            reason: e.to_string(),
        })?;
        let (address, port) = host_port(&conn);
        let mut tags = self.tags.clone();
        tags.push(role_tag.clone());
        if *role == Role::Primary {
            // Patroni 4 keeps the 3.x tag so existing `master.` DNS names resolve.
            tags.push("master".to_string());
        }
        let mut check = json!({
            "HTTP": check_url.as_str(),
            "Interval": self.check_interval,
            "DeregisterCriticalServiceAfter": go_duration(ttl * 5),
        });
        if let Some(name) = &self.check_tls_server_name {
            check["TLSServerName"] = json!(name);
        }
        let mut body = json!({
            "Name": service_name(scope),
            "ID": id,
            "Tags": tags,
            "Check": check,
            "EnableTagOverride": true,
        });
        if let Some(a) = address {
            body["Address"] = json!(a);
        }
        if let Some(p) = port {
            body["Port"] = json!(p);
        }
        Ok(ServiceAction::Register(body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ServiceSettings {
        ServiceSettings {
            tags: vec!["dc1".into()],
            check_interval: "5s".into(),
            check_tls_server_name: None,
        }
    }

    fn data(role: Role, state: MemberState) -> MemberData {
        MemberData {
            role: Some(role),
            state: Some(state),
            api_url: Some("https://10.0.0.1:8008/patroni".into()),
            conn_url: Some("postgres://10.0.0.1:5432/postgres".into()),
            ..MemberData::default()
        }
    }

    #[test]
    fn service_names_follow_patroni() {
        assert_eq!(service_name("batman"), "batman");
        assert_eq!(service_name("My.Cluster_1 x"), "my-cluster-1-x");
        assert_eq!(service_name("a+b"), "au0043b");
        assert_eq!(service_name(&"x".repeat(300)).len(), 230);
    }

    #[test]
    fn a_running_primary_is_registered_with_its_role_tags_and_check() {
        let ttl = Duration::from_secs(30);
        let action = settings()
            .action(
                "batman",
                "pg0",
                &data(Role::Primary, MemberState::Running),
                ttl,
            )
            .unwrap();
        let ServiceAction::Register(body) = action else {
            panic!("{action:?}")
        };
        assert_eq!(
            body,
            json!({
                "Name": "batman",
                "ID": "batman/pg0",
                "Address": "10.0.0.1",
                "Port": 5432,
                "Tags": ["dc1", "primary", "master"],
                "Check": {
                    "HTTP": "https://10.0.0.1:8008/primary",
                    "Interval": "5s",
                    "DeregisterCriticalServiceAfter": "150s",
                },
                "EnableTagOverride": true,
            })
        );
        let mut s = settings();
        s.check_tls_server_name = Some("pg0.example".into());
        let ServiceAction::Register(body) = s
            .action(
                "batman",
                "pg0",
                &data(Role::StandbyLeader, MemberState::Running),
                ttl,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(body["Tags"], json!(["dc1", "standby-leader"]));
        assert_eq!(
            body["Check"]["HTTP"],
            "https://10.0.0.1:8008/standby-leader"
        );
        assert_eq!(body["Check"]["TLSServerName"], "pg0.example");
    }

    #[test]
    fn stopped_deregisters_and_other_states_keep() {
        let ttl = Duration::from_secs(30);
        let s = settings();
        assert_eq!(
            s.action("b", "m", &data(Role::Replica, MemberState::Stopped), ttl),
            Ok(ServiceAction::Deregister("b/m".into()))
        );
        assert_eq!(
            s.action("b", "m", &data(Role::Replica, MemberState::Starting), ttl),
            Ok(ServiceAction::Keep)
        );
        assert!(s
            .action(
                "b",
                "m",
                &data(Role::Uninitialized, MemberState::Running),
                ttl
            )
            .is_err());
        assert!(s.action("b", "m", &MemberData::default(), ttl).is_err());
    }
}
