//! HTTPS with server certificates and `verify_client` none/optional/required.

mod api_support;

use agent_bin::api::{
    build_api_client, load_server_tls, router, serve, serve_reloadable, with_api_auth, ApiOptions,
    ReloadableTls,
};
use agent_bin::config::{Config, EnvMap, RestApiConfig, VerifyClient};
use api_support::{cluster_keys, primary_status, TestNode};
use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair};
use std::path::Path;
use std::time::Duration;

struct Pki {
    ca_pem: String,
    client_pem: String,
    dir: tempfile::TempDir,
}

fn make_pki() -> Pki {
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let srv_key = KeyPair::generate().unwrap();
    let srv = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&srv_key, &ca_cert, &ca_key)
        .unwrap();
    let cli_key = KeyPair::generate().unwrap();
    let mut cli = CertificateParams::new(vec!["client".to_string()]).unwrap();
    cli.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let cli = cli.signed_by(&cli_key, &ca_cert, &ca_key).unwrap();
    std::fs::write(dir.path().join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.path().join("server.pem"), srv.pem()).unwrap();
    std::fs::write(dir.path().join("server.key"), srv_key.serialize_pem()).unwrap();
    std::fs::write(dir.path().join("client.pem"), cli.pem()).unwrap();
    std::fs::write(dir.path().join("client.key"), cli_key.serialize_pem()).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        client_pem: format!("{}{}", cli.pem(), cli_key.serialize_pem()),
        dir,
    }
}

fn restapi(dir: &Path, verify: VerifyClient) -> RestApiConfig {
    let f = |n: &str| Some(dir.join(n).display().to_string());
    RestApiConfig {
        listen: "127.0.0.1:0".into(),
        connect_address: "127.0.0.1:0".into(),
        certfile: f("server.pem"),
        keyfile: f("server.key"),
        cafile: f("ca.pem"),
        verify_client: verify,
        ..RestApiConfig::default()
    }
}

async fn start_tls(cfg: &RestApiConfig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let tls = load_server_tls(cfg).unwrap().expect("certfile set");
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(
        listener,
        router(node, ApiOptions::from_config(cfg)),
        Some(tls),
        async move {
            let _ = rx.await;
        },
    ));
    (format!("https://localhost:{port}"), tx)
}

fn client(pki: &Pki, with_cert: bool) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap());
    if with_cert {
        b = b.identity(reqwest::Identity::from_pem(pki.client_pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

#[tokio::test]
async fn https_without_client_certificates() {
    let pki = make_pki();
    let (base, _stop) = start_tls(&restapi(pki.dir.path(), VerifyClient::None)).await;
    let r = client(&pki, false)
        .get(format!("{base}/primary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client(&pki, false)
        .post(format!("{base}/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The dashboard comes over the same TLS listener.
    let r = client(&pki, false)
        .get(format!("{base}/ui"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("fullauto dashboard"));
    // Plain HTTP to the TLS port does not get an answer.
    let plain = reqwest::get(base.replace("https://", "http://") + "/primary").await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test]
async fn required_client_certificate_is_enforced_at_the_handshake() {
    let pki = make_pki();
    let (base, _stop) = start_tls(&restapi(pki.dir.path(), VerifyClient::Required)).await;
    let without = client(&pki, false)
        .get(format!("{base}/patroni"))
        .send()
        .await;
    assert!(
        without.is_err(),
        "handshake must fail without a certificate"
    );
    let r = client(&pki, true)
        .get(format!("{base}/patroni"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client(&pki, true)
        .post(format!("{base}/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[tokio::test]
async fn optional_client_certificate_is_needed_for_unsafe_requests() {
    let pki = make_pki();
    let (base, _stop) = start_tls(&restapi(pki.dir.path(), VerifyClient::Optional)).await;
    let r = client(&pki, false)
        .get(format!("{base}/patroni"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = client(&pki, false)
        .post(format!("{base}/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.text().await.unwrap(), "client certificate required");
    // So are the dashboard's own actions.
    let r = client(&pki, false)
        .post(format!("{base}/ui/restart"))
        .body(r#"{"member":"pg1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = client(&pki, true)
        .post(format!("{base}/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

#[test]
fn unusable_tls_files_are_errors() {
    let pki = make_pki();
    let mut cfg = restapi(pki.dir.path(), VerifyClient::None);
    cfg.certfile = Some("/nonexistent/cert.pem".into());
    let err = load_server_tls(&cfg).unwrap_err().to_string();
    assert!(err.contains("/nonexistent/cert.pem"), "{err}");
    let mut cfg = restapi(pki.dir.path(), VerifyClient::Required);
    cfg.cafile = None;
    assert!(load_server_tls(&cfg).is_err());
    cfg.certfile = None;
    assert!(load_server_tls(&cfg).unwrap().is_none());
}

#[tokio::test]
async fn member_client_uses_ctl_tls_settings() {
    let pki = make_pki();
    let (base, _stop) = start_tls(&restapi(pki.dir.path(), VerifyClient::Required)).await;
    let d = pki.dir.path().display();
    let yaml = format!(
        r#"
scope: s
name: n
restapi: {{listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008, authentication: {{username: a, password: b}}}}
ctl: {{cacert: {d}/ca.pem, certfile: {d}/client.pem, keyfile: {d}/client.key}}
etcd3: {{host: 127.0.0.1:2379}}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: rep}}
"#
    );
    let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
    let c = build_api_client(&cfg, Duration::from_secs(2)).unwrap();
    let r = c.get(format!("{base}/patroni")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = with_api_auth(c.post(format!("{base}/reload")), cfg.client_auth())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // Without the client certificate the handshake fails.
    let mut no_cert = cfg.clone();
    no_cert.ctl.certfile = None;
    no_cert.ctl.keyfile = None;
    let c = build_api_client(&no_cert, Duration::from_secs(2)).unwrap();
    assert!(c.get(format!("{base}/patroni")).send().await.is_err());
}

#[tokio::test]
async fn certificates_can_be_replaced_while_serving() {
    let first = make_pki();
    let second = make_pki();
    let cfg1 = restapi(first.dir.path(), VerifyClient::None);
    let cfg2 = restapi(second.dir.path(), VerifyClient::None);
    let tls = ReloadableTls::new(load_server_tls(&cfg1).unwrap().unwrap());
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "https://localhost:{}",
        listener.local_addr().unwrap().port()
    );
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_reloadable(
        listener,
        router(node, ApiOptions::from_config(&cfg1)),
        Some(tls.clone()),
        async move {
            let _ = rx.await;
        },
    ));
    let get = |pki: &Pki| {
        let c = client(pki, false);
        let url = format!("{base}/patroni");
        async move { c.get(url).send().await.map(|r| r.status().as_u16()) }
    };
    assert_eq!(get(&first).await.unwrap(), 200);
    assert!(get(&second).await.is_err());
    tls.replace(load_server_tls(&cfg2).unwrap().unwrap());
    assert_eq!(get(&second).await.unwrap(), 200);
    assert!(get(&first).await.is_err());
}

#[tokio::test]
async fn peer_probes_present_the_node_certificate_when_peers_require_one() {
    use ha_core::runner::PeerProbe;
    let pki = make_pki();
    let (base, _stop) = start_tls(&restapi(pki.dir.path(), VerifyClient::Required)).await;
    let d = pki.dir.path().display();
    // The agent's own restapi section: its server certificate doubles as the client
    // certificate towards peers that require one, as Patroni does.
    let yaml = format!(
        r#"
scope: s
name: n
restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
  certfile: {d}/client.pem
  keyfile: {d}/client.key
  cafile: {d}/ca.pem
  verify_client: required
etcd3: {{host: 127.0.0.1:2379}}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: rep}}
"#
    );
    let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
    let probe = agent_bin::node::HttpPeerProbe::new(&cfg, Duration::from_secs(2)).unwrap();
    let peer = |url: String| {
        let data = ha_core::MemberData {
            api_url: Some(url),
            ..Default::default()
        };
        ha_core::Member {
            name: "pg0".into(),
            data,
            version: ha_core::Version(1),
            session: None,
        }
    };
    let reply = probe.probe(&peer(format!("{base}/patroni"))).await;
    assert!(
        reply.as_ref().is_some_and(|r| r.is_primary),
        "probe over mutual TLS: {reply:?}"
    );
    // Without a client certificate the same peer does not answer.
    let mut no_cert = cfg.clone();
    no_cert.restapi.verify_client = VerifyClient::None;
    no_cert.restapi.certfile = None;
    no_cert.restapi.keyfile = None;
    let probe = agent_bin::node::HttpPeerProbe::new(&no_cert, Duration::from_secs(2)).unwrap();
    assert_eq!(probe.probe(&peer(format!("{base}/patroni"))).await, None);
}

/// Patroni's acceptance suite uses one self-signed CA certificate (`openssl req
/// -x509`, so `CA:TRUE`) as CA file, server and client certificate. OpenSSL accepts
/// that; so must we, on both sides of the connection.
#[tokio::test]
async fn one_self_signed_ca_certificate_for_everything() {
    let dir = tempfile::tempdir().unwrap();
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = p.self_signed(&key).unwrap();
    let crt = dir.path().join("patroni.crt");
    let kf = dir.path().join("patroni.key");
    std::fs::write(&crt, cert.pem()).unwrap();
    std::fs::write(&kf, key.serialize_pem()).unwrap();
    let (crt, kf) = (crt.display().to_string(), kf.display().to_string());
    let rest = RestApiConfig {
        listen: "127.0.0.1:0".into(),
        connect_address: "127.0.0.1:0".into(),
        certfile: Some(crt.clone()),
        keyfile: Some(kf.clone()),
        cafile: Some(crt.clone()),
        verify_client: VerifyClient::Required,
        ..RestApiConfig::default()
    };
    let (base, _stop) = start_tls(&rest).await;
    let base = base.replace("localhost", "127.0.0.1");
    let yaml = format!(
        r#"
scope: s
name: n
restapi: {{listen: 127.0.0.1:8008, connect_address: 127.0.0.1:8008, certfile: {crt}, keyfile: {kf}, cafile: {crt}, verify_client: required}}
ctl: {{cacert: {crt}, certfile: {crt}, keyfile: {kf}}}
etcd3: {{host: 127.0.0.1:2379}}
postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: /data
  authentication:
    superuser: {{username: postgres}}
    replication: {{username: rep}}
"#
    );
    let (cfg, _) = Config::from_yaml_str(&yaml, &EnvMap::new()).unwrap();
    let c = build_api_client(&cfg, Duration::from_secs(2)).unwrap();
    let r = c.get(format!("{base}/patroni")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c.post(format!("{base}/reload")).send().await.unwrap();
    assert_eq!(r.status(), 202);
    // The pinned certificate still has to name the address called.
    let wrong_name = base.replace("127.0.0.1", "localhost");
    assert!(c.get(format!("{wrong_name}/patroni")).send().await.is_err());
}

/// A reload that adds or removes `restapi.certfile` switches the running listener
/// between plain HTTP and HTTPS for new connections.
#[tokio::test]
async fn a_reload_can_switch_between_http_and_https() {
    let pki = make_pki();
    let cfg = restapi(pki.dir.path(), VerifyClient::None);
    let mut plain_cfg = cfg.clone();
    plain_cfg.certfile = None;
    plain_cfg.keyfile = None;
    let tls = ReloadableTls::from_config(&plain_cfg).unwrap();
    let node = TestNode::new(primary_status("pg0"), cluster_keys("pg0"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_reloadable(
        listener,
        router(node, ApiOptions::from_config(&plain_cfg)),
        Some(tls.clone()),
        async move {
            let _ = rx.await;
        },
    ));
    let plain = format!("http://127.0.0.1:{port}/patroni");
    let secure = format!("https://localhost:{port}/patroni");
    assert_eq!(reqwest::get(&plain).await.unwrap().status(), 200);
    tls.set(load_server_tls(&cfg).unwrap());
    assert!(reqwest::get(&plain).await.is_err());
    let r = client(&pki, false).get(&secure).send().await.unwrap();
    assert_eq!(r.status(), 200);
    tls.set(load_server_tls(&plain_cfg).unwrap());
    assert_eq!(reqwest::get(&plain).await.unwrap().status(), 200);
}

/// Runs a TLS 1.2 handshake in memory between the API's server config for `cfg`
/// and a client offering only `offered`; the negotiated suite, or the error.
fn handshake(
    cfg: &RestApiConfig,
    ca_pem: &str,
    offered: rustls::SupportedCipherSuite,
) -> Result<rustls::CipherSuite, rustls::Error> {
    use rustls::pki_types::pem::PemObject;
    use std::sync::Arc;
    let server = load_server_tls(cfg).unwrap().expect("certfile set");
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls::pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).unwrap())
        .unwrap();
    let provider = rustls::crypto::CryptoProvider {
        cipher_suites: vec![offered],
        ..rustls::crypto::ring::default_provider()
    };
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(provider))
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut c =
        rustls::ClientConnection::new(Arc::new(client), "localhost".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server).unwrap();
    while c.is_handshaking() || s.is_handshaking() {
        let mut buf = Vec::new();
        c.write_tls(&mut buf).unwrap();
        s.read_tls(&mut &buf[..]).unwrap();
        let server_result = s.process_new_packets();
        let mut back = Vec::new();
        s.write_tls(&mut back).unwrap();
        c.read_tls(&mut &back[..]).unwrap();
        server_result?;
        c.process_new_packets()?;
    }
    Ok(c.negotiated_cipher_suite().unwrap().suite())
}

#[test]
fn ciphers_choose_the_tls12_suites_the_server_accepts() {
    use rustls::crypto::ring::cipher_suite as cs;
    // rcgen's keys are ECDSA: the server can use the ECDHE-ECDSA suites.
    let pki = make_pki();
    let mut cfg = restapi(pki.dir.path(), VerifyClient::None);
    let chacha = cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256;
    let aes = cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256;
    // Without ciphers both are accepted.
    assert_eq!(
        handshake(&cfg, &pki.ca_pem, chacha).unwrap(),
        chacha.suite()
    );
    assert_eq!(handshake(&cfg, &pki.ca_pem, aes).unwrap(), aes.suite());
    // Only the named one is.
    cfg.ciphers = Some("ECDHE-ECDSA-AES128-GCM-SHA256:!SSLv3".into());
    assert_eq!(handshake(&cfg, &pki.ca_pem, aes).unwrap(), aes.suite());
    assert!(handshake(&cfg, &pki.ca_pem, chacha).is_err());
    cfg.ciphers = Some("HIGH:!AESGCM".into());
    assert_eq!(
        handshake(&cfg, &pki.ca_pem, chacha).unwrap(),
        chacha.suite()
    );
    assert!(handshake(&cfg, &pki.ca_pem, aes).is_err());
}
