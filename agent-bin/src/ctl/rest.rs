//! Calls to members' REST APIs (Patroni paths), with the `ctl` section's Basic auth
//! and TLS settings.

use super::error::{CtlError, CtlResult};
use crate::config::{BasicAuth, Config, VerifyClient};
use reqwest::{Method, Url};
use serde_json::Value;
use std::time::Duration;

/// Time allowed to open a connection to a member.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of quick requests (`GET /patroni`, `PATCH /config`, `POST /reload`).
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(15);
/// Deadline of requests that wait for an outcome: a switchover handler polls for up
/// to `2 × max(10, loop_wait)` seconds, a restart may wait for Postgres.
pub const LONG_TIMEOUT: Duration = Duration::from_secs(180);

/// A member's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Body as text.
    pub body: String,
}

/// HTTP(S) client for members' APIs.
#[derive(Debug, Clone)]
pub struct RestClient {
    client: reqwest::Client,
    auth: Option<BasicAuth>,
}

fn ctl_text(cfg: &Config, section: &str, key: &str) -> Option<String> {
    cfg.raw
        .get(section)
        .and_then(|s| s.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
}

fn read(path: &str, what: &str) -> CtlResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| CtlError::Config(format!("cannot read {what} {path}: {e}")))
}

impl RestClient {
    /// A client with `ctl.authentication` (else `restapi.authentication`), the CA from
    /// `ctl.cacert`/`ctl.cafile` (else `restapi.cafile`), and a client certificate from
    /// `ctl.certfile`/`keyfile` (else, when this node's API verifies clients, the REST
    /// API's own certificate if readable): the policy of `api::build_api_client`, plus
    /// `-k`, separate connect and request deadlines, and no environment proxies.
    pub fn new(cfg: &Config, insecure: bool) -> CtlResult<RestClient> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
            .danger_accept_invalid_certs(insecure || cfg.ctl.insecure);
        let ca = cfg
            .ctl
            .cacert
            .clone()
            .or_else(|| ctl_text(cfg, "ctl", "cafile"))
            .or_else(|| cfg.restapi.cafile.clone());
        if let Some(ca) = ca.filter(|c| !c.is_empty()) {
            let pem = read(&ca, "CA file")?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| CtlError::Config(format!("CA file {ca}: {e}")))?;
            for c in certs {
                b = b.add_root_certificate(c);
            }
        }
        let own = cfg.ctl.certfile.clone().filter(|c| !c.is_empty());
        let (cert, key, required) = match own {
            Some(c) => (Some(c), cfg.ctl.keyfile.clone(), true),
            // Members that demand client certificates accept their own.
            None if cfg.restapi.verify_client != VerifyClient::None => (
                cfg.restapi.certfile.clone().filter(|c| !c.is_empty()),
                cfg.restapi.keyfile.clone(),
                false,
            ),
            None => (None, None, false),
        };
        if let Some(cert) = cert {
            if required && cfg.ctl.keyfile_password.is_some() {
                return Err(CtlError::Config(
                    "ctl.keyfile_password: encrypted client keys are not supported; use an \
                     unencrypted key file"
                        .to_string(),
                ));
            }
            let identity = (|| -> CtlResult<reqwest::Identity> {
                let mut pem = read(&cert, "client certificate")?;
                if let Some(k) = key.as_deref().filter(|k| !k.is_empty() && *k != cert) {
                    pem.push(b'\n');
                    pem.extend(read(k, "client key")?);
                }
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| CtlError::Config(format!("client certificate {cert}: {e}")))
            })();
            match identity {
                Ok(i) => b = b.identity(i),
                Err(e) if required => return Err(e),
                Err(_) => {} // the REST API's own certificate is only a fallback
            }
        }
        let client = b
            .build()
            .map_err(|e| CtlError::Config(format!("cannot set up the HTTP client: {e}")))?;
        Ok(RestClient {
            client,
            auth: cfg.client_auth().cloned(),
        })
    }

    /// `method` on `/<endpoint>` of the member whose API is at `api_url`, with a JSON
    /// body if given.
    pub async fn request(
        &self,
        api_url: &str,
        method: Method,
        endpoint: &str,
        body: Option<&Value>,
        timeout: Duration,
    ) -> CtlResult<Reply> {
        let url = endpoint_url(api_url, endpoint)?;
        let mut req = self.client.request(method, url.clone()).timeout(timeout);
        if let Some(a) = &self.auth {
            req = req.basic_auth(&a.username, Some(&a.password));
        }
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| CtlError::Rest(format!("{url}: {}", error_chain(&e))))?;
        let status = resp.status().as_u16();
        let body = resp
            .text()
            .await
            .map_err(|e| CtlError::Rest(format!("{url}: reading the answer: {e}")))?;
        Ok(Reply { status, body })
    }
}

/// The error with its causes, which reqwest keeps in the source chain.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let t = c.to_string();
        if !s.contains(&t) {
            s.push_str(": ");
            s.push_str(&t);
        }
        cur = c.source();
    }
    s
}

/// `http://host:port/patroni` ⇒ `http://host:port/<endpoint>`.
pub fn endpoint_url(api_url: &str, endpoint: &str) -> CtlResult<Url> {
    let mut url = Url::parse(api_url)
        .map_err(|e| CtlError::Rest(format!("member api_url {api_url:?} is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(CtlError::Rest(format!(
            "member api_url {api_url:?} is not an http(s) URL"
        )));
    }
    url.set_path(&format!("/{}", endpoint.trim_start_matches('/')));
    url.set_query(None);
    url.set_fragment(None);
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_replaces_the_path() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8008/patroni", "switchover")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:8008/switchover"
        );
        assert_eq!(
            endpoint_url("https://[::1]:8008/patroni?x=1", "/config")
                .unwrap()
                .as_str(),
            "https://[::1]:8008/config"
        );
        assert!(endpoint_url("postgres://h/x", "a").is_err());
        assert!(endpoint_url("not a url", "a").is_err());
    }
}
