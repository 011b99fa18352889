//! Patroni's acceptance setup for connections: `ssl=on`, TCP accepted only as
//! `hostssl … clientcert=verify-ca` with passwords, `local` trust; the agents use the
//! unix socket for their own server (`use_unix_socket`, `use_unix_socket_repl`), a
//! password file (`pgpass`) for the tools, and per role `sslmode: verify-ca` with a
//! client certificate (the superuser's key encrypted, `sslpassword`). Bootstrap, a
//! streaming replica, a failover after kill -9 of the primary's agent and postmaster,
//! and the old primary's rejoin through pg_rewind all work.

mod support;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::{chown_postgres, wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// Writes a CA, a server certificate for 127.0.0.1 and one client certificate per
/// role into `dir`, readable by the postgres OS user only. The superuser's key is
/// encrypted with `keypass`.
fn make_certs(dir: &Path) {
    std::fs::create_dir_all(dir).unwrap();
    chown_postgres(dir);
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    // Distinct names: OpenSSL takes a certificate whose subject is its issuer's for
    // a self-signed one.
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "fullauto test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let put = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        chown_postgres(&p);
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    put("ca.crt", &ca_cert.pem());
    let srv_key = KeyPair::generate().unwrap();
    let mut srv =
        CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    srv.distinguished_name
        .push(rcgen::DnType::CommonName, "localhost");
    let srv = srv.signed_by(&srv_key, &ca_cert, &ca_key).unwrap();
    put("server.crt", &srv.pem());
    put("server.key", &srv_key.serialize_pem());
    for user in ["postgres", "replicator", "rewinder"] {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, user);
        let cert = p.signed_by(&key, &ca_cert, &ca_key).unwrap();
        put(&format!("{user}.crt"), &cert.pem());
        put(&format!("{user}.key"), &key.serialize_pem());
    }
    // The superuser's key, encrypted (libpq and the agent need `sslpassword`).
    let plain = dir.join("postgres.key");
    let enc = dir.join("postgres.key.enc");
    let out = Command::new("openssl")
        .args([
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-passout",
            "pass:keypass",
            "-in",
        ])
        .arg(&plain)
        .arg("-out")
        .arg(&enc)
        .output()
        .expect("openssl (apt-get install openssl)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::rename(&enc, &plain).unwrap();
    chown_postgres(&plain);
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o600)).unwrap();
}

fn extra(base: &Path, i: usize) -> Extra {
    let certs = base.join("certs");
    let c = |f: &str| certs.join(f).display().to_string();
    let user = |name: &str, pw: &str, more: &str| {
        format!(
            "    {role}: {{username: {name}, password: {pw}, sslmode: verify-ca, sslcert: {}, sslkey: {}, sslrootcert: {}{more}}}\n",
            c(&format!("{name}.crt")),
            c(&format!("{name}.key")),
            c("ca.crt"),
            role = match name {
                "postgres" => "superuser",
                "replicator" => "replication",
                _ => "rewind",
            },
        )
    };
    Extra {
        dcs_postgresql: format!(
            "      parameters: {{ssl: 'on', ssl_cert_file: {}, ssl_key_file: {}, ssl_ca_file: {}}}\n",
            c("server.crt"),
            c("server.key"),
            c("ca.crt")
        ),
        postgresql: format!(
            "  use_unix_socket: true\n  use_unix_socket_repl: true\n  pgpass: {}\n  pg_hba:\n  \
             - local all all trust\n  \
             - hostssl all all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n  \
             - hostssl replication all 127.0.0.1/32 scram-sha-256 clientcert=verify-ca\n",
            base.join(format!("pgpass{i}")).display()
        ),
        authentication: user("postgres", "su-secret", ", sslpassword: keypass")
            + &user("replicator", "rep-secret", "")
            + &user("rewinder", "rw-secret", ""),
        ..Extra::default()
    }
}

/// psql through node `i`'s unix socket (`local … trust`): TCP needs a certificate.
fn sql(c: &Cluster, i: usize, q: &str) -> Result<String, String> {
    let out = Command::new("psql")
        .args(["-h"])
        .arg(c.path().join("run"))
        .args(["-p", &c.nodes[i].pg_port.to_string()])
        .args([
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            q,
        ])
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

#[test]
fn tls_client_certificates_unix_socket_and_pgpass() {
    let base = tempfile::Builder::new()
        .prefix("fullauto-e2e-ssl-")
        .tempdir()
        .unwrap();
    chown_postgres(base.path());
    make_certs(&base.path().join("certs"));
    let b = base.path().to_path_buf();
    let mut c = Cluster::new_with(2, &FAST, "", |_| String::new(), |i| extra(&b, i));
    c.start(0);
    let p = c.wait_primary(BOOT).expect("a primary");
    assert_eq!(p, 0);
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "the replica never streamed");

    // Plain TCP is refused; the replica streams over TLS with the replication role,
    // its password in the password file named by primary_conninfo.
    let plain = Command::new("psql")
        .args(["-h", "127.0.0.1", "-p", &c.nodes[0].pg_port.to_string()])
        .args(["-U", "postgres", "-d", "postgres", "-XAtc", "SELECT 1"])
        .env("PGSSLMODE", "disable")
        .env("PGPASSWORD", "su-secret")
        .output()
        .unwrap();
    assert!(!plain.status.success(), "plain TCP must be refused");
    assert_eq!(
        sql(
            &c,
            0,
            "SELECT s.ssl::text || ' ' || r.usename FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
        ),
        Ok("true replicator".to_string())
    );
    let conninfo = sql(&c, 1, "SHOW primary_conninfo").unwrap();
    let pgpass = b.join("pgpass1");
    assert!(
        conninfo.contains(&format!("passfile={}", pgpass.display()))
            && conninfo.contains("sslmode=verify-ca")
            && conninfo.contains("user=replicator")
            && !conninfo.contains("rep-secret"),
        "{conninfo}"
    );
    let meta = std::fs::metadata(&pgpass).expect("pgpass written");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::read_to_string(&pgpass).unwrap(),
        format!("127.0.0.1:{}:*:replicator:rep-secret\n", c.nodes[0].pg_port)
    );

    sql(
        &c,
        0,
        "CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)",
    )
    .unwrap();
    let seen = wait_until(Duration::from_secs(20), || {
        sql(&c, 1, "SELECT count(*) FROM t")
            .ok()
            .filter(|n| n == "1")
    });
    assert!(seen.is_some(), "row not replicated");

    // Failover: kill -9 of the primary's agent and postmaster.
    c.kill_agent(0);
    c.kill_postmaster(0);
    let new = wait_until(Duration::from_secs(60), || {
        c.api(1, "/primary")
            .is_some_and(|(s, _)| s == 200)
            .then_some(1)
    });
    assert_eq!(new, Some(1), "the replica did not take over");
    sql(&c, 1, "INSERT INTO t VALUES (2)").unwrap();

    // Rejoin: the crashed primary ran past the switchover point (its crash recovery
    // ends with a checkpoint), so it comes back through pg_rewind as the rewind role.
    c.start(0);
    assert!(c.wait_replica(0, BOOT), "old primary did not rejoin");
    let seen = wait_until(Duration::from_secs(30), || {
        sql(&c, 0, "SELECT count(*) FROM t")
            .ok()
            .filter(|n| n == "2")
    });
    assert!(
        seen.is_some(),
        "rejoined node lacks the new primary's write"
    );
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    assert!(
        log.contains("running pg_rewind"),
        "no pg_rewind ran:\n{log}"
    );
    // The superuser's TLS connection (encrypted key) to the new primary worked.
    assert!(!log.contains("could not connect to rewind source"), "{log}");
    assert_eq!(
        sql(
            &c,
            1,
            "SELECT s.ssl::text || ' ' || r.usename FROM pg_stat_replication r JOIN pg_stat_ssl s USING (pid)"
        ),
        Ok("true replicator".to_string())
    );
}
