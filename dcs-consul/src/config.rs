//! The `consul` section of a Patroni-style configuration.

use crate::error::ConsulError;
use crate::service::ServiceSettings;
use serde::Deserialize;
use std::path::PathBuf;

/// Read consistency mode (Consul's `?consistent` / `?stale` query flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// The agent's default mode (leader-served, not linearizable in every case).
    #[default]
    Default,
    /// Linearizable reads (`?consistent`).
    Consistent,
    /// Any server may answer, possibly stale (`?stale`).
    Stale,
}

impl Consistency {
    /// The query flag to add to reads, if any.
    pub fn query_flag(self) -> Option<&'static str> {
        match self {
            Consistency::Default => None,
            Consistency::Consistent => Some("consistent"),
            Consistency::Stale => Some("stale"),
        }
    }
}

/// Patroni's `consul:` settings. The agent URL is `url` when set, else
/// `scheme://host[:port]` (`host` may carry the port, as in Patroni's
/// `host: 127.0.0.1:8500`). Default: `http://127.0.0.1:8500`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct ConsulConfig {
    /// `host` or `host:port` of the local agent.
    pub host: Option<String>,
    /// Full agent URL; wins over host/port/scheme.
    pub url: Option<String>,
    /// Agent port when `host` has none.
    pub port: Option<u16>,
    /// `http` (default) or `https`.
    pub scheme: Option<String>,
    /// ACL token, sent as `X-Consul-Token`.
    pub token: Option<String>,
    /// Verify the agent's TLS certificate (default true).
    pub verify: Option<bool>,
    /// CA bundle (PEM) to verify the agent with.
    pub cacert: Option<PathBuf>,
    /// Client certificate (PEM), for agents with `verify_incoming`.
    pub cert: Option<PathBuf>,
    /// Client key (PEM); may also be inside `cert`.
    pub key: Option<PathBuf>,
    /// Datacenter (`?dc=`); the agent's own when unset.
    pub dc: Option<String>,
    /// Read consistency mode.
    pub consistency: Consistency,
    /// Health checks bound to the session (Patroni's default: none).
    pub checks: Vec<String>,
    /// Register the member as an instance of the Consul service named after the
    /// scope (Patroni's `register_service`; see [`crate::service`]).
    pub register_service: bool,
    /// Tags added to the role tag of the registered service.
    pub service_tags: Vec<String>,
    /// Interval of the service's HTTP check, a Go duration (default `5s`).
    pub service_check_interval: Option<String>,
    /// Server name the check verifies the REST API's certificate against.
    pub service_check_tls_server_name: Option<String>,
}

impl ConsulConfig {
    /// A configuration pointing at `url` with everything else default.
    pub fn with_url(url: impl Into<String>) -> Self {
        ConsulConfig {
            url: Some(url.into()),
            ..ConsulConfig::default()
        }
    }

    /// The service registration settings, `None` when `register_service` is off.
    /// An interval that is not a positive Go duration is a config error.
    pub fn service_settings(&self) -> Result<Option<ServiceSettings>, ConsulError> {
        if !self.register_service {
            return Ok(None);
        }
        let interval = self
            .service_check_interval
            .as_deref()
            .map(str::trim)
            .filter(|i| !i.is_empty())
            .unwrap_or("5s");
        if crate::backend::parse_go_duration(interval).is_none_or(|d| d.is_zero()) {
            return Err(ConsulError::Config(format!(
                "consul.service_check_interval `{interval}` is not a duration: use e.g. 5s, 500ms or 1m30s"
            )));
        }
        let mut tags = self.service_tags.clone();
        tags.sort();
        Ok(Some(ServiceSettings {
            tags,
            check_interval: interval.to_string(),
            check_tls_server_name: self
                .service_check_tls_server_name
                .clone()
                .filter(|n| !n.is_empty()),
        }))
    }

    /// The agent's base URL without a trailing slash.
    pub fn base_url(&self) -> Result<String, ConsulError> {
        if let Some(url) = self.url.as_deref().filter(|u| !u.trim().is_empty()) {
            let url = url.trim().trim_end_matches('/');
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConsulError::Config(format!(
                    "consul.url `{url}` must start with http:// or https://"
                )));
            }
            return Ok(url.to_string());
        }
        let scheme = self.scheme.as_deref().unwrap_or("http");
        if scheme != "http" && scheme != "https" {
            return Err(ConsulError::Config(format!(
                "consul.scheme `{scheme}` must be http or https"
            )));
        }
        let host = self.host.as_deref().unwrap_or("127.0.0.1").trim();
        let has_port = match host.strip_prefix('[') {
            Some(bracketed) => bracketed.contains("]:"),
            None => matches!(host.split_once(':'),
                Some((h, p)) if !h.is_empty() && !p.is_empty() && p.chars().all(|c| c.is_ascii_digit())),
        };
        if has_port {
            Ok(format!("{scheme}://{host}"))
        } else {
            Ok(format!("{scheme}://{host}:{}", self.port.unwrap_or(8500)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn agent_url_follows_patroni_precedence() {
        assert_eq!(
            ConsulConfig::default().base_url().unwrap(),
            "http://127.0.0.1:8500"
        );
        let c = ConsulConfig {
            host: Some("consul.local:8501".into()),
            scheme: Some("https".into()),
            ..ConsulConfig::default()
        };
        assert_eq!(c.base_url().unwrap(), "https://consul.local:8501");
        let c = ConsulConfig {
            host: Some("consul.local".into()),
            port: Some(9500),
            ..ConsulConfig::default()
        };
        assert_eq!(c.base_url().unwrap(), "http://consul.local:9500");
        let c = ConsulConfig {
            host: Some("ignored".into()),
            url: Some("http://10.0.0.1:8500/".into()),
            ..ConsulConfig::default()
        };
        assert_eq!(c.base_url().unwrap(), "http://10.0.0.1:8500");
        assert!(ConsulConfig::with_url("10.0.0.1:8500").base_url().is_err());
    }

    #[test]
    fn parses_a_patroni_consul_section() {
        let c: ConsulConfig = serde_json::from_str(
            r#"{"host":"127.0.0.1:8500","token":"t","consistency":"consistent","verify":false,"checks":[]}"#,
        )
        .unwrap();
        assert_eq!(c.consistency, Consistency::Consistent);
        assert_eq!(c.token.as_deref(), Some("t"));
        assert_eq!(c.verify, Some(false));
    }
}
