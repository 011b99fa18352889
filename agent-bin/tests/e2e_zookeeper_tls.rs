//! End to end on a real ZooKeeper whose TLS client port requires client
//! certificates: the real `fullauto` binary, configured with Patroni's
//! `zookeeper: {hosts, use_ssl: true, cacert, cert, key}`, bootstraps a one-node
//! cluster, and `fullautoctl` reads it with the same settings, from the file or as
//! `PATRONI_ZOOKEEPER_*` variables.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Cluster, DcsKind, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn one_node_bootstraps_on_zookeeper_over_tls_with_a_client_certificate() {
    let mut c = Cluster::on(DcsKind::ZooKeeperTls, 1, &FAST, "", |_| String::new());
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    assert!(config.contains("  use_ssl: true\n"), "{config}");
    assert!(config.contains("  cert: "), "{config}");
    c.start(0);
    let primary = c.wait_primary(BOOT);
    assert_eq!(primary, Some(0), "no primary:\n{}", c.logs());
    assert_eq!(c.leader().as_deref(), Some("pg0"));
    assert!(c.key("initialize").is_some_and(|sysid| !sysid.is_empty()));
    let (ok, out) = c.ctl(&["list"]);
    assert!(ok && out.contains("pg0") && out.contains("Leader"), "{out}");

    // The same settings from the environment, Patroni's variable names.
    let tls_lines = ["  use_ssl: ", "  cacert: ", "  cert: ", "  key: "];
    let mut env = Vec::new();
    let mut plain = String::new();
    for line in config.lines() {
        match tls_lines.iter().find(|p| line.starts_with(*p)) {
            Some(p) => env.push((
                format!(
                    "PATRONI_ZOOKEEPER_{}",
                    p.trim().trim_end_matches(':').to_uppercase()
                ),
                line[p.len()..].to_string(),
            )),
            None => plain.push_str(&format!("{line}\n")),
        }
    }
    assert_eq!(env.len(), 4, "{config}");
    let plain_path = c.path().join("plain.yml");
    std::fs::write(&plain_path, plain).unwrap();
    let ctl = |env: &[(String, String)]| {
        let out = Command::new(env!("CARGO_BIN_EXE_fullautoctl"))
            .arg("-c")
            .arg(&plain_path)
            .arg("list")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run fullautoctl");
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    };
    let (ok, out) = ctl(&env);
    assert!(ok && out.contains("pg0") && out.contains("Leader"), "{out}");
    let (ok, out) = ctl(&[]);
    assert!(!ok, "plain text to the TLS port must fail:\n{out}");
}
