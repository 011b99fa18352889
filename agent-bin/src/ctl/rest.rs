//! Calls to members' REST APIs (Patroni paths), with the `ctl` section's Basic auth
//! and TLS settings.

use super::error::{CtlError, CtlResult};
use crate::api::ClientTlsFiles;
use crate::config::{BasicAuth, Config};
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

impl RestClient {
    /// A client with `ctl.authentication` (else `restapi.authentication`) and the TLS
    /// files of [`ClientTlsFiles::from_config`] (`ctl.cafile` is read as a synonym of
    /// `ctl.cacert`), plus `-k`, separate connect and request deadlines, and no
    /// environment proxies. The REST API's own certificate is only a fallback: when
    /// it cannot be read (another OS user), no client certificate is presented.
    pub fn new(cfg: &Config, insecure: bool) -> CtlResult<RestClient> {
        let mut files = ClientTlsFiles::from_config(cfg);
        files.insecure |= insecure;
        if cfg.ctl.cacert.as_deref().is_none_or(str::is_empty) {
            if let Some(ca) = ctl_text(cfg, "ctl", "cafile") {
                files.ca = Some(ca);
            }
        }
        if files.cert.is_some() && !files.cert_from_restapi && cfg.ctl.keyfile_password.is_some() {
            return Err(CtlError::Config(
                "ctl.keyfile_password: encrypted client keys are not supported; use an \
                 unencrypted key file"
                    .to_string(),
            ));
        }
        let tls = match files.client_config() {
            Ok(tls) => tls,
            Err(_) if files.cert_from_restapi => {
                let without_cert = ClientTlsFiles {
                    cert: None,
                    key: None,
                    ..files
                };
                without_cert
                    .client_config()
                    .map_err(|e| CtlError::Config(e.to_string()))?
            }
            Err(e) => return Err(CtlError::Config(e.to_string())),
        };
        let client = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(CONNECT_TIMEOUT)
            .no_proxy()
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
pub fn error_chain(e: &dyn std::error::Error) -> String {
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
