//! `sslmode: prefer` (the default) over TCP: the agent's connections use TLS when the
//! server offers it and stay plain when it does not (the TLS configuration is then
//! never set up); SCRAM over TLS binds to the server's certificate
//! (`channel_binding: require`).

use pg_driver::testing::{wait_for, TestEnv};
use std::process::Command;
use std::time::Duration;

const SSL_OF_THIS_CONNECTION: &str =
    "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_uses_tls_exactly_when_the_server_offers_it() {
    let env = TestEnv::new();
    let node = env.primary("tls").await;
    assert_eq!(
        node.scalar(SSL_OF_THIS_CONNECTION)
            .await
            .unwrap()
            .as_deref(),
        Some("false"),
        "a server without TLS gets a plain connection"
    );

    // A self-signed certificate, owned by the server's OS user, and ssl on by reload.
    let dir = node.driver.config().data_dir.clone();
    let (crt, key) = (dir.join("test-server.crt"), dir.join("test-server.key"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-new",
            "-x509",
            "-days",
            "1",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&crt)
        .output()
        .expect("run openssl");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let user = env.os_user();
    for f in [&crt, &key] {
        if user.switch {
            std::os::unix::fs::chown(f, Some(user.uid), Some(user.gid)).unwrap();
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    for q in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", crt.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        node.sql(&q).await.unwrap();
    }
    let tls = wait_for(Duration::from_secs(30), || async {
        match node.scalar(SSL_OF_THIS_CONNECTION).await {
            Ok(Some(s)) if s == "true" => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(tls.is_some(), "once the server offers TLS, prefer uses it");

    // SCRAM over that TLS connection with `channel_binding: require`: the server
    // checks the tls-server-end-point hash of its certificate the agent sends.
    let cfg = node.driver.config();
    let hp = cfg.local_host_port().expect("listen address");
    let mut creds = cfg.authentication.superuser.clone();
    creds.channel_binding = Some(pg_driver::credentials::Preference::Require);
    let client = pg_driver::sql::connect(
        &pg_driver::config::Endpoint::tcp(&hp.host, hp.port),
        &creds,
        "postgres",
        Duration::from_secs(10),
        None,
    )
    .await
    .expect("SCRAM-SHA-256-PLUS with the certificate's channel binding");
    let rows = client
        .simple_query(SSL_OF_THIS_CONNECTION)
        .await
        .expect("query");
    let ssl = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
        _ => None,
    });
    assert_eq!(ssl.as_deref(), Some("true"));
}
