//! `consul:`.

use super::super::loose;
use super::super::report::Problem;
use super::super::schema::{map, opt, Kind, HOST_MAYBE_PORT};
use dcs_consul::Consistency;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// `consul`: every key of Patroni's section is honoured.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
pub struct ConsulConfig {
    /// `host[:port]` of the local agent.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub host: Option<String>,
    /// Full URL, instead of host/port/scheme.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub url: Option<String>,
    /// Port when `host` has none.
    #[serde(default, deserialize_with = "loose::opt_u16")]
    pub port: Option<u16>,
    /// `http` or `https`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub scheme: Option<String>,
    /// ACL token.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub token: Option<String>,
    /// Verify the server certificate.
    #[serde(default, deserialize_with = "loose::opt_bool")]
    pub verify: Option<bool>,
    /// CA bundle.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cacert: Option<String>,
    /// Client certificate (may hold the key too).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub cert: Option<String>,
    /// Client key.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub key: Option<String>,
    /// Datacenter.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub dc: Option<String>,
    /// `default`, `consistent` or `stale`.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub consistency: Option<String>,
    /// Health checks bound to the session.
    #[serde(default, deserialize_with = "loose::opt_string_list")]
    pub checks: Option<Vec<String>>,
    /// Register the member as a Consul service.
    #[serde(default, deserialize_with = "loose::bool")]
    pub register_service: bool,
    /// Tags of that service (besides the role).
    #[serde(default, deserialize_with = "loose::string_list")]
    pub service_tags: Vec<String>,
    /// Interval of the service check (`5s`).
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub service_check_interval: Option<String>,
    /// TLS server name the service check verifies.
    #[serde(default, deserialize_with = "loose::opt_string")]
    pub service_check_tls_server_name: Option<String>,
}

pub(crate) fn kind() -> Kind {
    map(vec![
        opt("host", Kind::Addr(HOST_MAYBE_PORT)),
        opt("url", Kind::Str),
        opt("port", Kind::Int(Some(1))),
        opt("scheme", Kind::Enum(&["http", "https"])),
        opt("token", Kind::Str),
        opt("verify", Kind::Bool),
        opt("cacert", Kind::Str),
        opt("cert", Kind::Str),
        opt("key", Kind::Str),
        opt("dc", Kind::Str),
        opt(
            "consistency",
            Kind::Enum(&["default", "consistent", "stale"]),
        ),
        opt("checks", Kind::StrList),
        opt("register_service", Kind::Bool),
        opt("service_tags", Kind::StrList),
        opt("service_check_interval", Kind::Str),
        opt("service_check_tls_server_name", Kind::Str),
    ])
}

pub(crate) fn check(section: &Map<String, Value>, out: &mut Vec<Problem>) {
    let Ok(c) = serde_json::from_value::<ConsulConfig>(Value::Object(section.clone())) else {
        return;
    };
    let b = c.backend();
    if let Err(e) = b.base_url() {
        out.push(Problem::error("consul", message(e)));
    }
    match b.service_settings() {
        Err(e) => out.push(Problem::error("consul.service_check_interval", message(e))),
        Ok(None) => {
            for k in [
                "service_tags",
                "service_check_interval",
                "service_check_tls_server_name",
            ] {
                if section.get(k).is_some_and(|v| !v.is_null()) {
                    out.push(Problem::warning(
                        format!("consul.{k}"),
                        "ignored because consul.register_service is not set",
                    ));
                }
            }
        }
        Ok(Some(_)) => {}
    }
    if c.key.is_some() && c.cert.is_none() {
        out.push(Problem::error(
            "consul.key",
            "set without consul.cert: client TLS needs the certificate too",
        ));
    }
}

/// The backend's message without its "consul configuration" prefix.
fn message(e: dcs_consul::ConsulError) -> String {
    match e {
        dcs_consul::ConsulError::Config(m) => m,
        other => other.to_string(),
    }
}

impl ConsulConfig {
    /// The backend's config.
    pub fn backend(&self) -> dcs_consul::ConsulConfig {
        let ConsulConfig {
            host,
            url,
            port,
            scheme,
            token,
            verify,
            cacert,
            cert,
            key,
            dc,
            consistency,
            checks,
            register_service,
            service_tags,
            service_check_interval,
            service_check_tls_server_name,
        } = self.clone();
        let consistency = match consistency
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "consistent" => Consistency::Consistent,
            "stale" => Consistency::Stale,
            // The schema admits only these words.
            _ => Consistency::Default,
        };
        dcs_consul::ConsulConfig {
            host,
            url,
            port,
            scheme: scheme.map(|s| s.to_ascii_lowercase()),
            token,
            verify,
            cacert: cacert.map(Into::into),
            cert: cert.map(Into::into),
            key: key.map(Into::into),
            dc,
            consistency,
            checks: checks.unwrap_or_default(),
            register_service,
            service_tags,
            service_check_interval,
            service_check_tls_server_name,
        }
    }

    /// `scheme://host:port` of the agent (default `http://127.0.0.1:8500`).
    pub fn base_url(&self) -> Result<String, String> {
        self.backend().base_url().map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_matches_schema() {
        super::super::tests::assert_model_matches_schema::<ConsulConfig>("consul", &[]);
    }

    #[test]
    fn settings_reach_the_backend() {
        let c: ConsulConfig = serde_json::from_value(serde_json::json!({
            "host": "127.0.0.1", "port": "8501", "scheme": "https", "consistency": "stale",
            "checks": "a,b", "register_service": "on", "service_tags": "x, y",
            "service_check_interval": "10s", "service_check_tls_server_name": "pg",
        }))
        .unwrap();
        let b = c.backend();
        assert_eq!(b.base_url().unwrap(), "https://127.0.0.1:8501");
        assert_eq!(b.consistency, Consistency::Stale);
        assert_eq!(b.checks, vec!["a", "b"]);
        let s = b.service_settings().unwrap().unwrap();
        assert_eq!(s.tags, vec!["x", "y"]);
        assert_eq!(s.check_interval, "10s");
        assert_eq!(s.check_tls_server_name.as_deref(), Some("pg"));
    }
}
