//! End to end on a real DCS that serves clients only over TLS and requires client
//! certificates: etcd (`--client-cert-auth`, Patroni's `etcd3: {protocol: https,
//! cacert, cert, key}`) and ZooKeeper's TLS client port (`zookeeper: {hosts, use_ssl:
//! true, cacert, cert, key}`). The real `fullauto` binary bootstraps a one-node
//! cluster, and `fullautoctl` reads it with the same settings, from the file or as
//! `PATRONI_<SECTION>_*` variables; without them it cannot.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;
use support::{Cluster, DcsKind, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn one_node_bootstraps_on_etcd_with_client_certificates() {
    bootstraps_over_tls(
        DcsKind::EtcdTls,
        "  protocol: https\n",
        "ETCD3",
        "  protocol: ",
    );
}

#[test]
fn one_node_bootstraps_on_zookeeper_over_tls_with_a_client_certificate() {
    bootstraps_over_tls(
        DcsKind::ZooKeeperTls,
        "  use_ssl: true\n",
        "ZOOKEEPER",
        "  use_ssl: ",
    );
}

/// `tls_switch` is the section's line that turns TLS on (`switch_key` its prefix),
/// `env_section` the section's name in `PATRONI_<SECTION>_*`.
fn bootstraps_over_tls(kind: DcsKind, tls_switch: &str, env_section: &str, switch_key: &str) {
    let mut c = Cluster::on(kind, 1, &FAST, "", |_| String::new());
    let config = std::fs::read_to_string(&c.nodes[0].config).unwrap();
    assert!(config.contains(tls_switch), "{config}");
    assert!(config.contains("  cert: "), "{config}");
    c.start(0);
    let primary = c.wait_primary(BOOT);
    assert_eq!(primary, Some(0), "no primary:\n{}", c.logs());
    assert_eq!(c.leader().as_deref(), Some("pg0"));
    assert!(c.key("initialize").is_some_and(|sysid| !sysid.is_empty()));
    let (ok, out) = c.ctl(&["list"]);
    assert!(ok && out.contains("pg0") && out.contains("Leader"), "{out}");

    // The same settings from the environment, Patroni's variable names.
    let tls_lines = [switch_key, "  cacert: ", "  cert: ", "  key: "];
    let mut env = Vec::new();
    let mut plain = String::new();
    for line in config.lines() {
        match tls_lines.iter().find(|p| line.starts_with(*p)) {
            Some(p) => env.push((
                format!(
                    "PATRONI_{env_section}_{}",
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
