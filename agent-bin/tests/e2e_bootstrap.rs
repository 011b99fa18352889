//! End to end on real etcd and PostgreSQL 15: a cluster bootstrapped by a custom
//! `bootstrap.method` that restores a backup (and archived WAL through
//! `recovery_conf`), `post_bootstrap`, a failing method that gives the bootstrap
//! up so another node can do it, and a parameter postgres refuses, which stops the
//! agent instead of re-running initdb forever.

mod support;

use std::path::Path;
use std::time::Duration;
use support::{wait_until, Cluster, Extra, Standalone, FAST};

const BOOT: Duration = Duration::from_secs(90);

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

fn is_empty_dir(p: &Path) -> bool {
    std::fs::read_dir(p).map_or(true, |mut d| d.next().is_none())
}

#[test]
fn custom_bootstrap_restores_a_backup_recovers_archived_wal_and_runs_post_bootstrap() {
    let mut c = Cluster::new_with(2, &FAST, "", |_| String::new(), |_| Extra::default());
    // Everything of the "backup store" lives in the cluster's directory (owned by
    // the postgres OS user, which runs the scripts).
    let store = c.path().to_path_buf();
    let archive = store.join("archive");
    std::fs::create_dir(&archive).expect("archive dir");
    support::chown_postgres(&archive);
    let source = Standalone::start(
        &store,
        &format!(
            "archive_mode = on\narchive_command = 'cp %p {}/%f'\n",
            archive.display()
        ),
    );
    source.sql("CREATE TABLE t (id int primary key); INSERT INTO t SELECT generate_series(1, 100)");
    let sysid = source.sql("SELECT system_identifier FROM pg_control_system()");
    let backup = store.join("backup");
    source.basebackup(&backup);
    // Written after the backup: only archive recovery can bring these back.
    source.sql("INSERT INTO t SELECT generate_series(101, 150)");
    let segment = source.sql("SELECT pg_walfile_name(pg_switch_wal())");
    let archived = wait_until(Duration::from_secs(30), || {
        let last = source.sql("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver");
        (last >= segment).then_some(())
    });
    assert!(archived.is_some(), "segment {segment} was not archived");
    source.stop();

    let restore = c.script(
        "restore.sh",
        &format!(
            "echo \"$@\" >> {args}\n\
             for a in \"$@\"; do case \"$a\" in --datadir=*) d=\"${{a#--datadir=}}\";; --backup=*) b=\"${{a#--backup=}}\";; esac; done\n\
             cp -a \"$b\"/. \"$d\"/\n",
            args = store.join("restore.args").display()
        ),
    );
    let post = c.script(
        "post.sh",
        &format!(
            "echo \"$@\" >> {args}\nexec psql \"$1\" -XAtq -v ON_ERROR_STOP=1 -c 'CREATE TABLE post_marker (x int)'\n",
            args = store.join("post.args").display()
        ),
    );
    let bootstrap = format!(
        "  method: restore\n  restore:\n    command: {}\n    backup: {}\n    recovery_conf:\n      restore_command: cp {}/%f %p\n  post_init: {}\n",
        restore.display(),
        backup.display(),
        archive.display(),
        post.display()
    );
    for i in 0..2 {
        c.rewrite_node(
            i,
            Extra {
                bootstrap: bootstrap.clone(),
                postgresql: String::new(),
                ..Extra::default()
            },
        );
    }
    c.start_all();
    let p = c.wait_primary(BOOT).expect("a primary");
    let r = 1 - p;

    // The backup's rows and the archived ones: recovery ran with restore_command.
    assert_eq!(c.sql(p, "SELECT count(*) FROM t").as_deref(), Ok("150"));
    // Recovery ended on a new timeline, and its settings are gone again.
    assert_eq!(
        c.sql(
            p,
            "SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)"
        )
        .as_deref(),
        Ok("00000002")
    );
    assert_eq!(c.sql(p, "SHOW restore_command").as_deref(), Ok(""));
    // The cluster is the backup's: the DCS records its system identifier.
    let init = wait_until(Duration::from_secs(20), || c.key("initialize"));
    assert_eq!(init.as_deref(), Some(sysid.as_str()));

    // The method ran once, with Patroni's arguments and its own keys.
    let args = lines(&store.join("restore.args"));
    assert_eq!(
        args,
        vec![format!(
            "--scope={} --datadir={} --backup={}",
            c.scope,
            c.nodes[p].data_dir.display(),
            backup.display()
        )]
    );
    // post_bootstrap ran once with the superuser's URL, against the new cluster.
    let post_args = lines(&store.join("post.args"));
    assert_eq!(
        post_args,
        vec![format!(
            "postgres://postgres@127.0.0.1:{}/postgres",
            c.nodes[p].pg_port
        )]
    );
    assert_eq!(
        c.sql(
            p,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'post_marker'"
        )
        .as_deref(),
        Ok("1")
    );

    // The other node clones the restored cluster and streams from it.
    assert!(
        c.wait_replica(r, BOOT),
        "{} never streamed",
        c.nodes[r].name
    );
    c.sql(p, "INSERT INTO t VALUES (151)").expect("write");
    let seen = wait_until(Duration::from_secs(20), || {
        c.sql(r, "SELECT count(*) FROM t")
            .ok()
            .filter(|n| n == "151")
    });
    assert!(seen.is_some(), "replica misses rows");
    assert_eq!(
        lines(&store.join("post.args")).len(),
        1,
        "post_bootstrap ran again"
    );
}

#[test]
fn failing_bootstrap_method_releases_initialize_and_another_node_bootstraps() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    let attempts = c.path().join("attempts");
    // First attempt fails outright; later ones "succeed" without leaving a cluster.
    let broken = c.script(
        "broken.sh",
        &format!(
            "echo x >> {a}\n\
             for x in \"$@\"; do case \"$x\" in --datadir=*) d=\"${{x#--datadir=}}\";; esac; done\n\
             echo junk > \"$d/junk\"\n\
             [ \"$(wc -l < {a})\" -gt 1 ] && exit 0\n\
             exit 3\n",
            a = attempts.display()
        ),
    );
    c.rewrite_node(
        0,
        Extra {
            bootstrap: format!(
                "  method: broken\n  broken:\n    command: {}\n",
                broken.display()
            ),
            postgresql: String::new(),
            ..Extra::default()
        },
    );
    c.start(0);
    // Both kinds of failure happened and neither left anything behind.
    let failed_twice = wait_until(BOOT, || (lines(&attempts).len() >= 2).then_some(()));
    assert!(failed_twice.is_some(), "the method was not retried");
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    assert!(log.contains("bootstrap method broken failed"), "{log}");
    assert!(
        log.contains("left no cluster in the data directory"),
        "{log}"
    );
    let clean = wait_until(Duration::from_secs(20), || {
        (is_empty_dir(&c.nodes[0].data_dir) && c.key("initialize").is_none()).then_some(())
    });
    assert!(clean.is_some(), "data dir not cleaned or initialize kept");
    assert_ne!(c.api(0, "/primary").map(|r| r.0), Some(200));
    assert!(c.leader().is_none());

    // A node with a working method (initdb) bootstraps; the broken one then joins.
    c.start(1);
    let p = wait_until(BOOT, || {
        c.api(1, "/primary").filter(|(s, _)| *s == 200).map(|_| 1)
    });
    assert_eq!(p, Some(1), "node 1 did not bootstrap");
    assert!(c.wait_replica(0, BOOT), "node 0 did not join as a replica");
}

/// Patroni's behaviour for a bootstrap that cannot succeed: `initialize` released, the
/// data directory emptied, the agent exits with "Failed to bootstrap cluster" and the
/// reason (here the parameter postgres refused) instead of re-running initdb.
#[test]
fn a_parameter_postgres_refuses_stops_the_bootstrap_with_its_reason() {
    let mut c = Cluster::new_with(
        1,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            dcs_postgresql: "      parameters:\n        no_such_setting: 100\n".into(),
            ..Extra::default()
        },
    );
    c.start(0);
    let status = c.agent_exit_status(0, BOOT);
    let log = std::fs::read_to_string(&c.nodes[0].log).unwrap_or_default();
    let status = status.unwrap_or_else(|| panic!("the agent kept running:\n{log}"));
    assert_eq!(status.code(), Some(1), "{log}");
    // The exit message goes to stderr at once; queued log lines may follow it.
    let last = log
        .lines()
        .find(|l| l.starts_with("fullauto: "))
        .unwrap_or_default();
    assert!(
        last.starts_with("fullauto: Failed to bootstrap cluster: postgres refused its configuration: unrecognized configuration parameter \"no_such_setting\""),
        "{log}"
    );
    assert!(last.contains("Fix or remove that setting"), "{last}");
    assert_eq!(
        log.matches("bootstrap failed: removing what it left")
            .count(),
        1,
        "initdb ran more than once:\n{log}"
    );
    assert!(
        is_empty_dir(&c.nodes[0].data_dir),
        "data directory not emptied"
    );
    assert!(c.key("initialize").is_none(), "initialize kept");
    assert!(c.postmaster_pid(0).is_none());
}

/// Patroni refuses to start a second agent under a name that is alive in the
/// cluster, probing the member's published API address even when it is this
/// config's own (its acceptance suite starts the duplicate with another listen port
/// and the same connect_address).
#[test]
fn a_second_agent_with_a_live_members_name_refuses_to_start() {
    // Also Patroni 3's `bootstrap.users`: roles made once after the bootstrap.
    let users = Extra {
        bootstrap: "  users:\n    app:\n      password: s3cret\n      options: [createdb]\n    \
                    reader:\n      options: [nologin]\n"
            .into(),
        ..Extra::default()
    };
    let mut c = Cluster::new_with(1, &FAST, "", |_| String::new(), |_| users.clone());
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 did not bootstrap");
    assert_eq!(
        c.sql(
            0,
            "SELECT string_agg(rolname || ':' || rolcanlogin || ':' || rolcreatedb || ':' \
             || (rolpassword IS NOT NULL), ',' ORDER BY rolname) FROM pg_authid \
             WHERE rolname IN ('app', 'reader')"
        )
        .as_deref(),
        Ok("app:true:true:true,reader:false:false:false"),
        "bootstrap.users were not created as configured"
    );
    let config = std::fs::read_to_string(&c.nodes[0].config).expect("config");
    let listen = format!("  listen: 127.0.0.1:{}", c.nodes[0].api_port);
    assert!(config.contains(&listen), "{config}");
    let spare = std::net::TcpListener::bind("127.0.0.1:0").expect("port");
    let port = spare.local_addr().expect("addr").port();
    drop(spare);
    let dup = c.path().join("dup.yml");
    std::fs::write(
        &dup,
        config.replace(&listen, &format!("  listen: 127.0.0.1:{port}")),
    )
    .expect("write dup config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fullauto"))
        .arg(&dup)
        .output()
        .expect("run the duplicate");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the duplicate started: {stderr}");
    // Patroni logs it as CRITICAL; its acceptance suite greps for that level.
    assert!(
        stderr.contains(&format!(
            "CRITICAL: Can't start; there is already a node named '{}' running",
            c.nodes[0].name
        )),
        "{stderr}"
    );
    assert_eq!(
        c.api(0, "/primary").map(|r| r.0),
        Some(200),
        "the first agent was disturbed"
    );
}
