//! The `consul-emulator` binary serves the API on the port it is given.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

/// Kills the emulator process (by PID) even when the test fails.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn binary_serves_sessions_and_kv_on_the_given_port() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_consul-emulator"))
            .args(["--port", &port.to_string(), "--ttl-min", "1"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).unwrap();
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");

    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let created: serde_json::Value = http
        .put(format!("{base}/v1/session/create"))
        .body(r#"{"TTL":"1s","Behavior":"delete"}"#)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = created["ID"].as_str().unwrap();
    let acquired = http
        .put(format!("{base}/v1/kv/service/b/leader?acquire={id}"))
        .body("pg0")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(acquired.trim(), "true");
    let status = http
        .get(format!("{base}/v1/kv/service/b/leader"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);
}
