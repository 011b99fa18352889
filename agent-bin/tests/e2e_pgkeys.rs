//! End to end on real etcd and PostgreSQL 15: keys of Patroni's `postgresql` section
//! that shape the server and its life cycle. One cluster of two for all of them:
//! `bin_name` (the only pg_ctl in `bin_dir` has another name), `config_dir` (the
//! configuration files apart from the data directory, for the bootstrapped and the
//! cloned node), `custom_conf` as the base configuration (its setting live, the
//! managed ones still winning), local `pg_ident` and the dynamic one (local wins),
//! `proxy_address` in the member key, dynamic `pg_hba` and `recovery_conf` changes
//! applied with a reload that fires `on_reload`, `before_stop` when the primary shuts
//! down, a failing `pre_promote` that keeps the replica from promoting, and the same
//! script letting it promote once it exits with 0.

mod support;

use serde_json::json;
use std::path::Path;
use std::time::Duration;
use support::{wait_until, Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

/// A bin dir with every PostgreSQL 15 tool linked under its own name, except pg_ctl,
/// which is only there as `pg_ctl_fa`.
fn renamed_bin_dir(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "initdb",
        "postgres",
        "pg_controldata",
        "pg_basebackup",
        "pg_rewind",
        "psql",
    ] {
        std::os::unix::fs::symlink(format!("/usr/lib/postgresql/15/bin/{tool}"), bin.join(tool))
            .unwrap();
    }
    std::os::unix::fs::symlink("/usr/lib/postgresql/15/bin/pg_ctl", bin.join("pg_ctl_fa")).unwrap();
    bin
}

fn conf_dir(dir: &Path, i: usize) -> std::path::PathBuf {
    dir.join(format!("conf-pg{i}"))
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn postgresql_section_keys_take_effect() {
    let mut c = Cluster::new(2, &FAST, "", |_| String::new());
    let dir = c.path().to_path_buf();
    let bin = renamed_bin_dir(&dir);
    let reload_cb = c.callback_script();
    let marks = dir.join("marks.log");
    let before_stop = c.script(
        "before_stop.sh",
        &format!("echo before_stop >> {}\n", marks.display()),
    );
    let pre_promote = c.script(
        "pre_promote.sh",
        &format!("echo pre_promote >> {}\nexit 3\n", marks.display()),
    );
    let custom = dir.join("custom.conf");
    std::fs::write(&custom, "work_mem = '3MB'\nwal_keep_size = '16MB'\n").unwrap();
    for i in 0..2 {
        let mut postgresql = format!(
            "  bin_dir: {}\n  bin_name: {{pg_ctl: pg_ctl_fa}}\n  custom_conf: {}\n  config_dir: {}\n",
            bin.display(),
            custom.display(),
            conf_dir(&dir, i).display()
        );
        if i == 0 {
            postgresql.push_str(&format!(
                "  proxy_address: 127.0.0.1:16432\n  pg_ident: [fa_local alice postgres]\n  before_stop: {}\n",
                before_stop.display()
            ));
        } else {
            postgresql.push_str(&format!(
                "  pre_promote: {} --check\n",
                pre_promote.display()
            ));
        }
        c.rewrite_node(
            i,
            Extra {
                postgresql,
                callbacks: format!("    on_reload: {}\n", reload_cb.display()),
                ..Extra::default()
            },
        );
    }
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "pg0 bootstraps");
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "replica never streamed");

    // bin_name: the cluster runs although bin_dir has no file called pg_ctl.
    assert!(!bin.join("pg_ctl").exists());
    // custom_conf is the base; the managed settings (wal_keep_size 128MB) win.
    for i in 0..2 {
        assert_eq!(c.sql(i, "SHOW work_mem").as_deref(), Ok("3MB"), "pg{i}");
        assert_eq!(
            c.sql(i, "SHOW wal_keep_size").as_deref(),
            Ok("128MB"),
            "pg{i}"
        );
    }
    // config_dir holds the configuration the servers run with.
    for i in 0..2 {
        let conf = conf_dir(&dir, i);
        let shown = |what: &str| c.sql(i, &format!("SHOW {what}")).unwrap();
        assert_eq!(
            shown("config_file"),
            conf.join("postgresql.conf").display().to_string()
        );
        assert_eq!(
            shown("hba_file"),
            conf.join("pg_hba.conf").display().to_string()
        );
        assert_eq!(
            shown("ident_file"),
            conf.join("pg_ident.conf").display().to_string()
        );
        assert!(conf.join("postgresql.base.conf").exists(), "pg{i}");
    }
    // proxy_address is published as Patroni's proxy_url.
    let member: serde_json::Value =
        serde_json::from_str(&c.key("members/pg0").expect("member key")).unwrap();
    assert_eq!(member["proxy_url"], "postgres://127.0.0.1:16432/postgres");
    let member1: serde_json::Value =
        serde_json::from_str(&c.key("members/pg1").expect("member key")).unwrap();
    assert!(member1.get("proxy_url").is_none(), "{member1}");

    // Dynamic pg_hba and pg_ident: applied with a reload that fires on_reload; the
    // local pg_ident of pg0 wins over the dynamic one.
    let patched = c.api_patch(
        0,
        "/config",
        &json!({"postgresql": {
            "pg_hba": [
                "local all all trust",
                "host all all 127.0.0.1/32 trust",
                "host replication all 127.0.0.1/32 trust",
                "host all fa_marker 127.0.0.2/32 reject"
            ],
            "pg_ident": ["fa_dynamic bob postgres"],
            "recovery_conf": {"recovery_min_apply_delay": "10ms"}
        }}),
    );
    assert!(patched.is_some_and(|(s, _)| s == 200));
    let hba_q = "SELECT count(*) FROM pg_hba_file_rules WHERE 'fa_marker' = ANY(user_name)";
    let ident_q = "SELECT string_agg(map_name, ',') FROM pg_ident_file_mappings";
    for (i, ident) in [(0, "fa_local"), (1, "fa_dynamic")] {
        let applied = wait_until(Duration::from_secs(30), || {
            (c.sql(i, hba_q).ok().as_deref() == Some("1")).then_some(())
        });
        assert!(applied.is_some(), "pg_hba on pg{i}: {:?}", c.sql(i, hba_q));
        assert_eq!(c.sql(i, ident_q).as_deref(), Ok(ident), "pg_ident on pg{i}");
    }
    // Dynamic recovery_conf reaches the replica.
    let delayed = wait_until(Duration::from_secs(30), || {
        (c.sql(1, "SHOW recovery_min_apply_delay").ok().as_deref() == Some("10ms")).then_some(())
    });
    assert!(delayed.is_some(), "recovery_conf on pg1");
    let reloaded = wait_until(Duration::from_secs(10), || {
        let cbs = c.callbacks();
        (cbs.iter().any(|l| l.starts_with("on_reload primary "))
            && cbs.iter().any(|l| l.starts_with("on_reload replica ")))
        .then_some(())
    });
    assert!(reloaded.is_some(), "callbacks: {:?}", c.callbacks());

    // Shutdown of the primary: before_stop runs; the replica then wins the race but
    // its pre_promote script fails, so it stays a replica and gives the key back.
    c.signal_agent(0, libc::SIGTERM);
    assert!(
        c.wait_agent_exit(0, Duration::from_secs(60)),
        "pg0 did not exit"
    );
    assert_eq!(
        lines(&marks).first().map(String::as_str),
        Some("before_stop")
    );
    let refused = wait_until(Duration::from_secs(60), || {
        lines(&marks)
            .iter()
            .any(|l| l == "pre_promote")
            .then_some(())
    });
    assert!(
        refused.is_some(),
        "pre_promote never ran: {:?}",
        lines(&marks)
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.sql(1, "SELECT pg_is_in_recovery()").as_deref(), Ok("t"));
    assert!(
        std::fs::read_to_string(&c.nodes[1].log)
            .unwrap()
            .contains("promotion cancelled"),
        "no cancellation logged"
    );

    // Once the script lets it, the replica promotes (after its ttl out of the race),
    // the script having run right before.
    c.script(
        "pre_promote.sh",
        &format!("echo pre_promote_ok >> {}\n", marks.display()),
    );
    assert_eq!(c.wait_primary(BOOT), Some(1), "pg1 never promoted");
    assert_eq!(
        lines(&marks).last().map(String::as_str),
        Some("pre_promote_ok")
    );
}
