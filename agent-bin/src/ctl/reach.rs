//! A quick look before talking to the DCS: when none of its endpoints accepts a TCP
//! connection, fullautoctl says so at once (and which setting names them) instead of
//! retrying until `--dcs-timeout` runs out.

use super::error::{CtlError, CtlResult};
use crate::config::{Config, DcsConfig};
use std::time::Duration;

/// How long one endpoint may take to accept a TCP connection.
const CONNECT_WITHIN: Duration = Duration::from_secs(2);

/// `host:port` of every endpoint the DCS section names.
pub fn dcs_addresses(config: &Config) -> Vec<String> {
    match &config.dcs {
        DcsConfig::Etcd3(e) => e
            .endpoints()
            .unwrap_or_default()
            .iter()
            .map(|u| authority(u, 2379))
            .collect(),
        DcsConfig::Zookeeper(z) => {
            let hosts: Vec<&str> = z
                .hosts
                .iter()
                .flat_map(|h| h.split(','))
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect();
            if hosts.is_empty() {
                vec!["127.0.0.1:2181".to_string()]
            } else {
                hosts.iter().map(|h| authority(h, 2181)).collect()
            }
        }
        DcsConfig::Consul(c) => c
            .base_url()
            .map(|u| vec![authority(&u, 8500)])
            .unwrap_or_default(),
    }
}

/// `http://h:1/x` ⇒ `h:1`; `h` ⇒ `h:<default_port>`; IPv6 literals keep brackets.
fn authority(endpoint: &str, default_port: u16) -> String {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let host_port = rest.split(['/', '?']).next().unwrap_or(rest);
    let host_port = host_port.rsplit('@').next().unwrap_or(host_port);
    let has_port = match host_port.rfind(']') {
        Some(end) => host_port[end..].contains(':'),
        None => host_port.contains(':'),
    };
    if has_port {
        host_port.to_string()
    } else {
        format!("{host_port}:{default_port}")
    }
}

/// Ok when at least one endpoint accepts a TCP connection; else an error naming the
/// endpoints, why each failed, and `setting` (e.g. `etcd3.hosts (…)`) to check.
pub async fn check_reachable(addresses: &[String], setting: &str) -> CtlResult<()> {
    let mut attempts = tokio::task::JoinSet::new();
    for a in addresses {
        let a = a.clone();
        attempts.spawn(async move {
            match tokio::time::timeout(CONNECT_WITHIN, tokio::net::TcpStream::connect(&a)).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{a}: {e}")),
                Err(_) => Err(format!(
                    "{a}: no answer within {}s",
                    CONNECT_WITHIN.as_secs()
                )),
            }
        });
    }
    let mut why = Vec::new();
    while let Some(done) = attempts.join_next().await {
        match done {
            Ok(Ok(())) | Err(_) => return Ok(()),
            Ok(Err(e)) => why.push(e),
        }
    }
    if why.is_empty() {
        return Ok(());
    }
    why.sort();
    Err(CtlError::failed(format!(
        "cannot reach the DCS ({}). Is it running and reachable? Check {setting} (or pass \
         --dcs-url)",
        why.join("; ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_become_host_and_port() {
        assert_eq!(authority("http://127.0.0.1:2379", 2379), "127.0.0.1:2379");
        assert_eq!(
            authority("https://etcd.example/", 2379),
            "etcd.example:2379"
        );
        assert_eq!(authority("zk1", 2181), "zk1:2181");
        assert_eq!(authority("[::1]:2181", 2181), "[::1]:2181");
        assert_eq!(authority("[::1]", 2181), "[::1]:2181");
    }

    #[tokio::test]
    async fn a_closed_port_is_reported_with_the_setting_to_check() {
        // Bind then drop: nothing listens there any more.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let e = check_reachable(std::slice::from_ref(&addr), "etcd3.hosts (x)")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with(&format!("cannot reach the DCS ({addr}: ")),
            "{e}"
        );
        assert!(
            e.ends_with("Check etcd3.hosts (x) (or pass --dcs-url)"),
            "{e}"
        );
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let live = open.local_addr().unwrap().to_string();
        assert!(check_reachable(&[addr, live], "s").await.is_ok());
    }
}
