//! `fullauto --generate-sample-config` and `fullauto --generate-config` as Patroni 4.1
//! has them: the written file reflects the environment, or the running server, and
//! passes `fullauto --validate-config`.

mod support;

use serde_json::Value;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use support::{chown_postgres, Standalone};

/// `fullauto args…` with no `PATRONI_*`/`PG*` variable but those in `env`.
fn fullauto(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fullauto"));
    for (k, _) in std::env::vars() {
        if k.starts_with("PATRONI_") || k.starts_with("PG") {
            cmd.env_remove(k);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run fullauto")
}

fn text(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr)
}

fn yaml_file(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).expect("generated file");
    let y: serde_yaml::Value = serde_yaml::from_str(&text).expect("generated YAML");
    serde_json::to_value(y).expect("as JSON")
}

fn assert_valid(path: &Path) {
    let out = fullauto(&["--validate-config", path.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains(": the configuration is valid"),
        "{}",
        text(&out)
    );
}

#[test]
fn sample_config_has_the_defaults_and_the_environment_and_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    // Without any environment: defaults and #FIXME placeholders, still valid.
    let plain = dir.path().join("conf/plain.yml");
    let out = fullauto(&["--generate-sample-config", plain.to_str().unwrap()], &[]);
    assert!(out.status.success(), "{}", text(&out));
    let v = yaml_file(&plain);
    assert_eq!(v["scope"], "#FIXME");
    assert_eq!(v["bootstrap"]["dcs"]["ttl"], 30);
    assert_eq!(v["bootstrap"]["dcs"]["loop_wait"], 10);
    assert_eq!(v["bootstrap"]["dcs"]["postgresql"]["use_pg_rewind"], true);
    assert_eq!(
        v["bootstrap"]["dcs"]["postgresql"]["parameters"]["wal_level"],
        "replica"
    );
    assert_eq!(
        v["bootstrap"]["dcs"]["postgresql"]["parameters"]["wal_keep_size"],
        "128MB"
    );
    assert_eq!(
        v["postgresql"]["pg_hba"][1],
        "host replication replicator all scram-sha-256"
    );
    assert_eq!(
        v["postgresql"]["authentication"]["rewind"]["username"],
        "rewind_user"
    );
    assert_eq!(v["postgresql"]["bin_dir"], "/usr/lib/postgresql/15/bin");
    assert_eq!(v["log"]["level"], "INFO");
    assert_eq!(v["tags"]["failover_priority"], 1);
    assert_eq!(v["etcd3"]["hosts"], "127.0.0.1:2379");
    assert_valid(&plain);

    // PATRONI_* values win over the defaults; without a file, stdout.
    let out = fullauto(
        &["--generate-sample-config"],
        &[
            ("PATRONI_SCOPE", "sampled"),
            ("PATRONI_NAME", "sample0"),
            ("PATRONI_POSTGRESQL_DATA_DIR", "/srv/pg/data"),
            ("PATRONI_REPLICATION_USERNAME", "repl"),
            ("PATRONI_ZOOKEEPER_HOSTS", "'zk1:2181','zk2:2181'"),
            ("PATRONI_RESTAPI_LISTEN", "0.0.0.0:8765"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        stdout.contains(
            "# The bootstrap configuration. Works only when the cluster is not yet initialized."
        ),
        "{stdout}"
    );
    let from_env = dir.path().join("env.yml");
    std::fs::write(&from_env, &stdout).unwrap();
    let v = yaml_file(&from_env);
    assert_eq!(v["scope"], "sampled");
    assert_eq!(v["name"], "sample0");
    assert_eq!(v["postgresql"]["data_dir"], "/srv/pg/data");
    assert_eq!(v["restapi"]["listen"], "0.0.0.0:8765");
    assert_eq!(
        v["postgresql"]["pg_hba"][1],
        "host replication repl all scram-sha-256"
    );
    assert_eq!(
        v["zookeeper"]["hosts"],
        serde_json::json!(["zk1:2181", "zk2:2181"])
    );
    assert!(v.get("etcd3").is_none(), "{stdout}");
    assert_valid(&from_env);
}

#[test]
fn generated_config_reflects_the_running_server_and_is_valid() {
    let dir = tempfile::tempdir().unwrap();
    chown_postgres(dir.path());
    let pg = Standalone::start(
        dir.path(),
        "max_connections = 42\nwork_mem = '7MB'\narchive_mode = on\n\
         archive_command = '/bin/true'\ncluster_name = 'from-server'",
    );
    let port = pg.port.to_string();
    let data_dir = std::fs::canonicalize(&pg.data_dir).unwrap();
    let hba_text = std::fs::read_to_string(data_dir.join("pg_hba.conf")).unwrap();
    let hba: Vec<String> = hba_text
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("local") || l.starts_with("host"))
        .map(str::to_string)
        .collect();
    assert!(!hba.is_empty());

    let out_file = dir.path().join("generated.yml");
    let dsn = format!("host=127.0.0.1 port={port} user=postgres password=secret dbname=postgres");
    let out = fullauto(
        &[
            "--generate-config",
            "--dsn",
            &dsn,
            out_file.to_str().unwrap(),
        ],
        &[("PATRONI_NAME", "gen0")],
    );
    assert!(out.status.success(), "{}", text(&out));
    let v = yaml_file(&out_file);
    assert_eq!(v["scope"], "from-server");
    assert_eq!(v["name"], "gen0");
    let pgc = &v["postgresql"];
    assert_eq!(pgc["data_dir"], data_dir.to_str().unwrap());
    assert_eq!(pgc["listen"], format!("127.0.0.1:{port}"));
    assert!(
        pgc["connect_address"]
            .as_str()
            .is_some_and(|a| a.ends_with(&format!(":{port}"))),
        "{pgc}"
    );
    assert_eq!(pgc["bin_dir"], "/usr/lib/postgresql/15/bin");
    assert_eq!(pgc["parameters"]["archive_command"], "/bin/true");
    assert_eq!(
        pgc["parameters"]["hba_file"],
        data_dir.join("pg_hba.conf").to_str().unwrap()
    );
    assert_eq!(pgc["pg_hba"], serde_json::json!(hba));
    assert_eq!(pgc["authentication"]["superuser"]["username"], "postgres");
    assert_eq!(pgc["authentication"]["superuser"]["password"], "secret");
    assert_eq!(pgc["authentication"]["replication"]["username"], "#FIXME");
    let params = &v["bootstrap"]["dcs"]["postgresql"]["parameters"];
    assert_eq!(params["max_connections"], "42");
    assert_eq!(params["work_mem"], "7MB");
    assert_eq!(params["archive_mode"], "on");
    assert!(params.get("archive_command").is_none(), "{params}");
    assert!(params.get("data_directory").is_none(), "{params}");
    assert_valid(&out_file);

    // The PG* variables instead of --dsn; the URL form of a DSN.
    let out = fullauto(
        &["--generate-config"],
        &[
            ("PGHOST", "127.0.0.1"),
            ("PGPORT", &port),
            ("PGUSER", "postgres"),
            ("PGPASSWORD", "from-env"),
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("password: from-env"), "{stdout}");
    let url = format!("postgresql://postgres:url%20pw@127.0.0.1:{port}/postgres");
    let out = fullauto(&["--generate-config", "--dsn", &url], &[]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("password: url pw"),
        "{}",
        text(&out)
    );

    // Nothing there: a one-line error, exit 1.
    pg.stop();
    let out = fullauto(&["--generate-config", "--dsn", &dsn], &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("Failed to establish PostgreSQL connection"),
        "{}",
        text(&out)
    );
    // No password anywhere and nothing on stdin: says where to give one.
    let out = fullauto(
        &[
            "--generate-config",
            "--dsn",
            &format!("host=127.0.0.1 port={port}"),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("PGPASSWORD"), "{}", text(&out));
}
