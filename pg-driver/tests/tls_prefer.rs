//! `sslmode: prefer` (the default) over TCP: the agent's connections use TLS when the
//! server offers it and stay plain when it does not (the TLS configuration is then
//! never set up).

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
}
