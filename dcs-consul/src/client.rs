//! A thin typed client for the Consul HTTP endpoints the backend needs
//! (`/v1/session/*`, `/v1/kv/*`, `/v1/agent/service/*`), on reqwest, with a deadline on every call.

use crate::config::{Consistency, ConsulConfig};
use crate::error::ConsulError;
use base64::Engine as _;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use std::time::Duration;
use tokio::time::Instant;

/// One KV entry as Consul returns it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct KvPair {
    /// Full key (no leading slash).
    #[serde(rename = "Key")]
    pub key: String,
    /// Index of the write that created the key.
    #[serde(rename = "CreateIndex", default)]
    pub create_index: u64,
    /// Index of the last write: the CAS version.
    #[serde(rename = "ModifyIndex", default)]
    pub modify_index: u64,
    /// How many times the key was acquired.
    #[serde(rename = "LockIndex", default)]
    pub lock_index: u64,
    /// Opaque client flags.
    #[serde(rename = "Flags", default)]
    pub flags: u64,
    /// Base64 value; `None` for an empty value.
    #[serde(rename = "Value", default)]
    pub value: Option<String>,
    /// The session holding the lock, if any.
    #[serde(rename = "Session", default)]
    pub session: Option<String>,
}

impl KvPair {
    /// The value, base64-decoded (invalid UTF-8 is replaced, so the cluster
    /// model reports the key as malformed instead of failing the read).
    pub fn decoded_value(&self) -> Result<String, ConsulError> {
        let Some(encoded) = self.value.as_deref() else {
            return Ok(String::new());
        };
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| ConsulError::Decode {
                what: format!("value of {}", self.key),
                reason: e.to_string(),
            })?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// The holding session, with Consul's empty string read as none.
    pub fn holder(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }
}

/// A session to create.
#[derive(Debug, Clone)]
pub struct SessionRequest {
    /// Human-readable name (`<scope>-<member>`).
    pub name: String,
    /// TTL; sent as a Go duration.
    pub ttl: Duration,
    /// Lock-delay after invalidation.
    pub lock_delay: Duration,
    /// `release` or `delete`.
    pub behavior: &'static str,
    /// Health checks bound to the session.
    pub checks: Vec<String>,
}

/// Options of a KV write.
#[derive(Debug, Clone, Default)]
pub struct PutOptions {
    /// `?cas=`: 0 creates only, N writes only at ModifyIndex N.
    pub cas: Option<u64>,
    /// `?acquire=<session>`.
    pub acquire: Option<String>,
    /// `?release=<session>`.
    pub release: Option<String>,
}

/// Options of a KV delete.
#[derive(Debug, Clone, Default)]
pub struct DeleteOptions {
    /// `?cas=`: delete only at this ModifyIndex.
    pub cas: Option<u64>,
    /// `?recurse`: delete the whole prefix.
    pub recurse: bool,
}

/// Which failures a request may be retried on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, renewals, acquire by the same session: any transport failure.
    Always,
    /// Writes whose repetition could answer differently: only failures where
    /// the request surely never left (connection refused and the like).
    NotSent,
    /// Blocking queries: the caller loops itself.
    Never,
}

/// A Consul agent client.
#[derive(Debug, Clone)]
pub struct ConsulClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    dc: Option<String>,
    consistency: Consistency,
}

struct Answer {
    status: StatusCode,
    index: Option<u64>,
    body: Vec<u8>,
}

impl Answer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).trim().to_string()
    }
}

/// Whether an agent's 5xx message means "no Consul servers to answer".
fn cluster_unavailable(message: &str) -> bool {
    // Not "rpc error ..." in general: forwarded answers such as an invalid
    // session carry that prefix too.
    ["No cluster leader", "No known Consul servers"]
        .iter()
        .any(|m| message.contains(m))
}

/// Percent-encodes a key for the URL path, keeping `/` as separator.
fn encode_key(key: &str) -> String {
    let mut out = String::with_capacity(key.len());
    for b in key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A Go duration string Consul accepts (`15s`, `2500ms`).
pub fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

fn read_file(path: &std::path::Path, what: &str) -> Result<Vec<u8>, ConsulError> {
    std::fs::read(path).map_err(|e| {
        ConsulError::Config(format!("cannot read consul.{what} {}: {e}", path.display()))
    })
}

impl ConsulClient {
    /// A client for the agent described by `config` (TLS files are read now).
    pub fn new(config: &ConsulConfig) -> Result<Self, ConsulError> {
        let base = config.base_url()?;
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(2))
            .pool_idle_timeout(Duration::from_secs(30));
        if config.verify == Some(false) {
            builder = builder.danger_accept_invalid_certs(true);
        }
        if let Some(path) = &config.cacert {
            let pem = read_file(path, "cacert")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ConsulError::Config(format!("consul.cacert {}: {e}", path.display()))
            })?;
            for cert in certs {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let Some(cert_path) = &config.cert {
            let mut pem = read_file(cert_path, "cert")?;
            if let Some(key_path) = &config.key {
                pem.push(b'\n');
                pem.extend(read_file(key_path, "key")?);
            }
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                ConsulError::Config(format!("consul.cert/key {}: {e}", cert_path.display()))
            })?;
            builder = builder.identity(identity);
        }
        let http = builder
            .build()
            .map_err(|e| ConsulError::Config(format!("cannot build the http client: {e}")))?;
        Ok(ConsulClient {
            http,
            base,
            token: config.token.clone().filter(|t| !t.is_empty()),
            dc: config.dc.clone().filter(|d| !d.is_empty()),
            consistency: config.consistency,
        })
    }

    /// The agent's base URL.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str, mut params: Vec<(&str, String)>) -> String {
        if let Some(dc) = &self.dc {
            params.push(("dc", dc.clone()));
        }
        let mut url = format!("{}{}", self.base, path);
        for (i, (k, v)) in params.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(k);
            if !v.is_empty() {
                url.push('=');
                url.push_str(&encode_query_value(v));
            }
        }
        url
    }

    fn unreachable(&self, what: &str, reason: impl Into<String>) -> ConsulError {
        ConsulError::Unreachable {
            url: self.base.clone(),
            what: what.to_string(),
            reason: reason.into(),
        }
    }

    async fn send(
        &self,
        what: &str,
        method: Method,
        url: String,
        body: Option<Vec<u8>>,
        retry: Retry,
        deadline: Instant,
    ) -> Result<Answer, ConsulError> {
        let mut backoff = Duration::from_millis(50);
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unreachable(what, "deadline passed"));
            }
            let mut request = self
                .http
                .request(method.clone(), &url)
                .timeout(deadline - now);
            if let Some(token) = &self.token {
                request = request.header("X-Consul-Token", token);
            }
            if let Some(body) = &body {
                request = request.body(body.clone());
            }
            let failure = match request.send().await {
                Ok(response) => {
                    let status = response.status();
                    let index = response
                        .headers()
                        .get("X-Consul-Index")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse().ok());
                    match response.bytes().await {
                        Ok(bytes) => {
                            let answer = Answer {
                                status,
                                index,
                                body: bytes.to_vec(),
                            };
                            // The agent is up but its servers are not usable
                            // (election in progress, no server reachable): the
                            // DCS is unreachable, this is not an answer.
                            let leaderless =
                                status.is_server_error() && cluster_unavailable(&answer.text());
                            if !leaderless {
                                return Ok(answer);
                            }
                            if retry != Retry::Always {
                                return Err(self.unreachable(what, answer.text()));
                            }
                            answer.text()
                        }
                        Err(e) => {
                            if retry != Retry::Always {
                                return Err(self.unreachable(what, e.to_string()));
                            }
                            e.to_string()
                        }
                    }
                }
                Err(e) => {
                    let retriable = match retry {
                        Retry::Always => true,
                        Retry::NotSent => e.is_connect(),
                        Retry::Never => false,
                    };
                    if !retriable {
                        return Err(self.unreachable(what, e.to_string()));
                    }
                    e.to_string()
                }
            };
            let now = Instant::now();
            if now + backoff >= deadline {
                return Err(self.unreachable(what, failure));
            }
            tracing::debug!(what, error = %failure, "consul request failed, retrying");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    fn failed(&self, what: &str, answer: &Answer) -> ConsulError {
        let body = answer.text();
        if answer.status == StatusCode::FORBIDDEN {
            return ConsulError::Forbidden {
                what: what.to_string(),
                body,
            };
        }
        ConsulError::Http {
            status: answer.status.as_u16(),
            what: what.to_string(),
            body,
        }
    }

    fn decode<T: for<'de> Deserialize<'de>>(what: &str, body: &[u8]) -> Result<T, ConsulError> {
        serde_json::from_slice(body).map_err(|e| ConsulError::Decode {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// Creates a session; answers its ID. A TTL the agent refuses comes back as
    /// `Http { status: 400, .. }` with Consul's message.
    pub async fn session_create(
        &self,
        request: &SessionRequest,
        deadline: Instant,
    ) -> Result<String, ConsulError> {
        let what = "session create";
        let body = serde_json::json!({
            "Name": request.name,
            "TTL": go_duration(request.ttl),
            "LockDelay": go_duration(request.lock_delay),
            "Behavior": request.behavior,
            "Checks": request.checks,
        });
        let url = self.url("/v1/session/create", vec![]);
        let answer = self
            .send(
                what,
                Method::PUT,
                url,
                Some(body.to_string().into_bytes()),
                Retry::NotSent,
                deadline,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.failed(what, &answer));
        }
        #[derive(Deserialize)]
        struct Created {
            #[serde(rename = "ID")]
            id: String,
        }
        let created: Created = Self::decode(what, &answer.body)?;
        Ok(created.id)
    }

    /// Renews a session: `false` when it no longer exists.
    pub async fn session_renew(&self, id: &str, deadline: Instant) -> Result<bool, ConsulError> {
        let what = "session renew";
        let url = self.url(&format!("/v1/session/renew/{}", encode_key(id)), vec![]);
        let answer = self
            .send(what, Method::PUT, url, None, Retry::Always, deadline)
            .await?;
        match answer.status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(self.failed(what, &answer)),
        }
    }

    /// Destroys a session (its keys are released or deleted per Behavior).
    pub async fn session_destroy(&self, id: &str, deadline: Instant) -> Result<(), ConsulError> {
        let what = "session destroy";
        let url = self.url(&format!("/v1/session/destroy/{}", encode_key(id)), vec![]);
        let answer = self
            .send(what, Method::PUT, url, None, Retry::Always, deadline)
            .await?;
        if !answer.status.is_success() {
            return Err(self.failed(what, &answer));
        }
        Ok(())
    }

    /// Registers a service instance with the local agent
    /// (`PUT /v1/agent/service/register`); registering the same ID again replaces
    /// it, so the call is retried on any transport failure.
    pub async fn service_register(
        &self,
        body: &serde_json::Value,
        deadline: Instant,
    ) -> Result<(), ConsulError> {
        let what = "service register";
        // Agent endpoints are local: no `?dc=`.
        let url = format!("{}/v1/agent/service/register", self.base);
        let answer = self
            .send(
                what,
                Method::PUT,
                url,
                Some(body.to_string().into_bytes()),
                Retry::Always,
                deadline,
            )
            .await?;
        if !answer.status.is_success() {
            return Err(self.failed(what, &answer));
        }
        Ok(())
    }

    /// Removes a service instance from the local agent
    /// (`PUT /v1/agent/service/deregister/<id>`); an unknown ID is not an error.
    pub async fn service_deregister(&self, id: &str, deadline: Instant) -> Result<(), ConsulError> {
        let what = "service deregister";
        let url = format!(
            "{}/v1/agent/service/deregister/{}",
            self.base,
            encode_key(id)
        );
        let answer = self
            .send(what, Method::PUT, url, None, Retry::Always, deadline)
            .await?;
        if !answer.status.is_success() && answer.status != StatusCode::NOT_FOUND {
            return Err(self.failed(what, &answer));
        }
        Ok(())
    }

    fn read_params(&self) -> Vec<(&'static str, String)> {
        self.consistency
            .query_flag()
            .map(|f| vec![(f, String::new())])
            .unwrap_or_default()
    }

    /// Reads one key; `None` when it does not exist. `consistent` forces a
    /// linearizable read whatever the configured mode.
    pub async fn kv_get(
        &self,
        key: &str,
        consistent: bool,
        deadline: Instant,
    ) -> Result<Option<KvPair>, ConsulError> {
        let what = "kv get";
        let params = if consistent {
            vec![("consistent", String::new())]
        } else {
            self.read_params()
        };
        let url = self.url(&format!("/v1/kv/{}", encode_key(key)), params);
        let answer = self
            .send(what, Method::GET, url, None, Retry::Always, deadline)
            .await?;
        match answer.status {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let mut pairs: Vec<KvPair> = Self::decode(what, &answer.body)?;
                Ok(pairs.pop())
            }
            _ => Err(self.failed(what, &answer)),
        }
    }

    /// Reads every key under `prefix`, with the prefix's index.
    pub async fn kv_list(
        &self,
        prefix: &str,
        deadline: Instant,
    ) -> Result<(Vec<KvPair>, u64), ConsulError> {
        let mut params = self.read_params();
        params.push(("recurse", String::new()));
        self.list(prefix, params, Retry::Always, deadline).await
    }

    /// A blocking read of `prefix`: answers when its index passes `index` or
    /// after `wait` (plus Consul's jitter of up to wait/16).
    pub async fn kv_list_blocking(
        &self,
        prefix: &str,
        index: u64,
        wait: Duration,
    ) -> Result<(Vec<KvPair>, u64), ConsulError> {
        let mut params = self.read_params();
        params.push(("recurse", String::new()));
        params.push(("index", index.to_string()));
        params.push(("wait", go_duration(wait)));
        let deadline = Instant::now() + wait + wait / 16 + Duration::from_secs(5);
        self.list(prefix, params, Retry::Never, deadline).await
    }

    async fn list(
        &self,
        prefix: &str,
        params: Vec<(&'static str, String)>,
        retry: Retry,
        deadline: Instant,
    ) -> Result<(Vec<KvPair>, u64), ConsulError> {
        let what = "kv list";
        let url = self.url(&format!("/v1/kv/{}", encode_key(prefix)), params);
        let answer = self
            .send(what, Method::GET, url, None, retry, deadline)
            .await?;
        let index = answer.index.unwrap_or(0);
        match answer.status {
            StatusCode::NOT_FOUND => Ok((Vec::new(), index)),
            s if s.is_success() => Ok((Self::decode(what, &answer.body)?, index)),
            _ => Err(self.failed(what, &answer)),
        }
    }

    /// Writes a key; `false` when a cas/acquire/release condition failed.
    pub async fn kv_put(
        &self,
        key: &str,
        value: &[u8],
        options: &PutOptions,
        deadline: Instant,
    ) -> Result<bool, ConsulError> {
        let what = if options.acquire.is_some() {
            "kv acquire"
        } else {
            "kv put"
        };
        let mut params = Vec::new();
        if let Some(cas) = options.cas {
            params.push(("cas", cas.to_string()));
        }
        if let Some(session) = &options.acquire {
            params.push(("acquire", session.clone()));
        }
        if let Some(session) = &options.release {
            params.push(("release", session.clone()));
        }
        // Acquiring with the same session again is harmless, so it may be
        // retried; a repeated cas or plain write could answer differently.
        let retry = if options.acquire.is_some() {
            Retry::Always
        } else {
            Retry::NotSent
        };
        let url = self.url(&format!("/v1/kv/{}", encode_key(key)), params);
        let answer = self
            .send(
                what,
                Method::PUT,
                url,
                Some(value.to_vec()),
                retry,
                deadline,
            )
            .await?;
        if answer.status.is_success() {
            return Self::decode(what, &answer.body);
        }
        if let Some(session) = &options.acquire {
            if answer.status.is_server_error()
                && answer
                    .text()
                    .to_ascii_lowercase()
                    .contains("invalid session")
            {
                return Err(ConsulError::InvalidSession(session.clone()));
            }
        }
        Err(self.failed(what, &answer))
    }

    /// Deletes a key or prefix; `false` when the cas index did not match.
    pub async fn kv_delete(
        &self,
        key: &str,
        options: &DeleteOptions,
        deadline: Instant,
    ) -> Result<bool, ConsulError> {
        let what = "kv delete";
        let mut params = Vec::new();
        if let Some(cas) = options.cas {
            params.push(("cas", cas.to_string()));
        }
        if options.recurse {
            params.push(("recurse", String::new()));
        }
        let retry = if options.cas.is_some() {
            Retry::NotSent
        } else {
            Retry::Always
        };
        let url = self.url(&format!("/v1/kv/{}", encode_key(key)), params);
        let answer = self
            .send(what, Method::DELETE, url, None, retry, deadline)
            .await?;
        if answer.status.is_success() {
            return Self::decode(what, &answer.body);
        }
        Err(self.failed(what, &answer))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_durations_are_encoded_for_consul() {
        assert_eq!(
            encode_key("service/b/members/pg 0"),
            "service/b/members/pg%200"
        );
        assert_eq!(go_duration(Duration::from_secs(30)), "30s");
        assert_eq!(go_duration(Duration::from_millis(2500)), "2500ms");
        assert_eq!(go_duration(Duration::from_millis(1)), "1ms");
    }

    #[test]
    fn reads_carry_the_consistency_flag_and_datacenter() {
        let config = ConsulConfig {
            consistency: Consistency::Stale,
            dc: Some("dc2".into()),
            token: Some("t".into()),
            ..ConsulConfig::with_url("http://127.0.0.1:8500")
        };
        let client = ConsulClient::new(&config).unwrap();
        let url = client.url("/v1/kv/service/b/", {
            let mut p = client.read_params();
            p.push(("recurse", String::new()));
            p
        });
        assert_eq!(
            url,
            "http://127.0.0.1:8500/v1/kv/service/b/?stale&recurse&dc=dc2"
        );
    }

    #[test]
    fn unreadable_tls_files_are_config_errors() {
        let config = ConsulConfig {
            cacert: Some("/nonexistent/ca.pem".into()),
            ..ConsulConfig::with_url("https://127.0.0.1:8501")
        };
        assert!(matches!(
            ConsulClient::new(&config),
            Err(ConsulError::Config(_))
        ));
    }

    #[test]
    fn decodes_consul_entries() {
        let pairs: Vec<KvPair> = serde_json::from_str(
            r#"[{"LockIndex":1,"Key":"service/b/leader","Flags":0,"Value":"cGcw","Session":"s1","CreateIndex":5,"ModifyIndex":7},
                {"LockIndex":0,"Key":"service/b/initialize","Flags":0,"Value":null,"CreateIndex":3,"ModifyIndex":3}]"#,
        )
        .unwrap();
        assert_eq!(pairs[0].decoded_value().unwrap(), "pg0");
        assert_eq!(pairs[0].holder(), Some("s1"));
        assert_eq!(pairs[0].modify_index, 7);
        assert_eq!(pairs[1].decoded_value().unwrap(), "");
        assert_eq!(pairs[1].holder(), None);
    }
}
