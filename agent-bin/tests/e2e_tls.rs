//! End to end over HTTPS on real etcd and PostgreSQL 15: two `fullauto` agents serve
//! their REST API with `restapi.certfile` and `verify_client: required`, elect a
//! leader and stream (peer probes over mutual TLS), publish `https://` API URLs,
//! refuse callers without a client certificate and plain HTTP, answer `fullautoctl
//! list` and carry out a `fullautoctl switchover`; then a reload switches one node to
//! `verify_client: optional` and `none`, a certificate replaced on disk is served to
//! new connections after SIGHUP, and an unusable one is refused while the running
//! certificate stays.

mod support;

use serde_json::Value;
use std::path::Path;
use std::time::Duration;
use support::tls::{https_call, TestPki};
use support::{http, wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);
const RELOAD: Duration = Duration::from_secs(15);

fn restapi_tls(cert: &Path, key: &Path, ca: &Path, verify: &str) -> Extra {
    Extra {
        restapi: format!(
            "  certfile: {}\n  keyfile: {}\n  cafile: {}\n  verify_client: {verify}\n",
            cert.display(),
            key.display(),
            ca.display()
        ),
        ..Extra::default()
    }
}

#[test]
fn https_cluster_with_client_certificates_switchover_and_certificate_reload() {
    let pki_dir = tempfile::tempdir().expect("tempdir");
    let pki = TestPki::new(pki_dir.path());
    let node_certs: Vec<_> = (0..2).map(|i| pki.issue(&format!("pg{i}"))).collect();
    let (_, op_cert, op_key) = pki.issue("operator");
    let extra = |i: usize, verify: &str| {
        let (_, cert, key) = &node_certs[i];
        restapi_tls(cert, key, &pki.ca(), verify)
    };
    let mut c = Cluster::new_with(2, &FAST, "", |_| String::new(), |i| extra(i, "required"));
    let with_cert = pki.client(Some((&op_cert, &op_key)));
    let without_cert = pki.client(None);
    c.https = Some(with_cert.clone());
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary over HTTPS");
    let r = 1 - p;
    assert!(c.wait_replica(r, BOOT), "the replica never streamed");

    // Member keys publish https URLs.
    for i in 0..2 {
        let name = c.nodes[i].name.clone();
        let member: Value =
            serde_json::from_str(&c.key(&format!("members/{name}")).unwrap()).expect("member JSON");
        assert_eq!(
            member["api_url"],
            format!("https://127.0.0.1:{}/patroni", c.nodes[i].api_port),
        );
    }

    // verify_client required: no client certificate, no answer; plain HTTP, no answer.
    for i in 0..2 {
        let port = c.nodes[i].api_port;
        let reply = https_call(&without_cert, "GET", port, "/patroni", None);
        assert!(reply.answer.is_none(), "answered without a client cert");
        assert!(
            http("GET", port, "/patroni", None).is_none(),
            "plain HTTP answered"
        );
    }

    // fullautoctl (node 0's config: it presents that node's certificate) lists the
    // cluster and switches over.
    let scope = c.scope.clone();
    wait_until(Duration::from_secs(30), || {
        let (ok, out) = c.ctl(&["list", &scope, "-f", "json"]);
        let rows: Value = serde_json::from_str(out.trim()).ok()?;
        (ok && rows.as_array()?.len() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("fullautoctl list: {}", c.ctl(&["list", &scope]).1));
    let (ok, out) = c.ctl(&[
        "switchover",
        &scope,
        "--leader",
        &c.nodes[p].name,
        "--candidate",
        &c.nodes[r].name,
        "--force",
    ]);
    assert!(ok, "switchover over TLS failed: {out}");
    let new = c
        .wait_primary(Duration::from_secs(30))
        .expect("new primary");
    assert_eq!(new, r, "{out}");
    assert!(c.wait_replica(p, BOOT), "the old leader never streamed");

    // verify_client optional (after a reload): reads without a certificate, unsafe
    // requests need one.
    let port = c.nodes[p].api_port;
    c.rewrite_node(p, extra(p, "optional"));
    c.signal_agent(p, libc::SIGHUP);
    wait_until(RELOAD, || {
        https_call(&without_cert, "GET", port, "/patroni", None)
            .answer
            .filter(|(s, _)| *s == 200)
    })
    .expect("optional: GET without a client certificate");
    let denied = https_call(&without_cert, "POST", port, "/reload", None).answer;
    assert_eq!(
        denied,
        Some((403, Value::String("client certificate required".into())))
    );
    let reply = https_call(&with_cert, "POST", port, "/reload", None).answer;
    assert_eq!(reply.map(|(s, _)| s), Some(202));

    // verify_client none: unsafe requests without a certificate too.
    c.rewrite_node(p, extra(p, "none"));
    c.signal_agent(p, libc::SIGHUP);
    wait_until(RELOAD, || {
        https_call(&without_cert, "POST", port, "/reload", None)
            .answer
            .filter(|(s, _)| *s == 202)
    })
    .expect("none: POST without a client certificate");

    // A certificate replaced on disk is served to new connections after SIGHUP.
    let before = https_call(&with_cert, "GET", port, "/patroni", None).server_cert;
    assert_eq!(before.as_deref(), Some(node_certs[p].0.as_slice()));
    let (fresh, cert_path, _) = pki.issue(&c.nodes[p].name);
    c.signal_agent(p, libc::SIGHUP);
    wait_until(RELOAD, || {
        let reply = https_call(&with_cert, "GET", port, "/patroni", None);
        (reply.server_cert.as_deref() == Some(fresh.as_slice()) && reply.answer.is_some())
            .then_some(())
    })
    .expect("the new certificate is served after SIGHUP");

    // An unusable certificate file is refused; the running certificate stays.
    std::fs::write(&cert_path, "not a certificate\n").expect("write");
    c.signal_agent(p, libc::SIGHUP);
    let log = c.nodes[p].log.clone();
    wait_until(RELOAD, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        text.contains("reload refused").then_some(())
    })
    .expect("the bad certificate is reported");
    let reply = https_call(&with_cert, "GET", port, "/patroni", None);
    assert_eq!(reply.server_cert.as_deref(), Some(fresh.as_slice()));
    assert_eq!(reply.answer.map(|(s, _)| s), Some(200));
    // Peers still reach each other: the replica keeps streaming from the new leader.
    assert!(c.wait_replica(p, Duration::from_secs(10)));
}
