//! fullautoctl against a real etcd: the cluster is seeded through the Dcs trait, then
//! the real binary reads and changes it.

mod ctl_support;

use ctl_support::{dead_api_url, run_ctl, seed, Env, SYSID};
use ha_core::{Dcs, Failover, MemberData};
use serde_json::Value;
use std::time::Duration;

const CONFIG: &str = r#"{"ttl":30,"loop_wait":10,"retry_timeout":10,"postgresql":{"parameters":{"max_connections":100}}}"#;

fn dead3() -> [String; 3] {
    [dead_api_url(), dead_api_url(), dead_api_url()]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_commands_show_the_seeded_cluster() {
    let env = Env::start();
    let api = dead3();
    let _members = seed(&env, "batman", [&api[0], &api[1], &api[2]], CONFIG).await;

    // Pretty table: title with the system identifier, roles, Patroni 4.1's
    // receive/replay columns (both lag columns headed `Lag`), tags.
    let out = env.ctl(&["list", "batman"], "").await;
    out.ok();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert!(
        lines[0].starts_with(&format!("+ Cluster: batman ({SYSID}) ")),
        "{}",
        out.stdout
    );
    assert_eq!(
        lines[1],
        "| Member | Host           | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Tags               |"
    );
    assert_eq!(
        lines[3],
        "| pg0    | 127.0.0.1:5432 | Leader  | running   |  2 |             |     |            |     |                    |"
    );
    assert_eq!(
        lines[4],
        "| pg1    | 127.0.0.1:5433 | Replica | streaming |  2 |   0/2D00000 |   3 |    unknown |     |                    |"
    );
    assert_eq!(
        lines[5],
        "| pg2    | 127.0.0.1:5434 | Replica | running   |  2 |     unknown |     |  0/3000000 |   0 | nofailover: true   |"
    );
    assert_eq!(
        lines[6],
        "|        |                |         |           |    |             |     |            |     | replicatefrom: pg1 |"
    );
    assert_eq!(lines.len(), 8, "{}", out.stdout);

    // JSON with Patroni's field names; the leader has no lag entry.
    let out = env.ctl(&["list", "batman", "-f", "json"], "").await;
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["Cluster"], "batman");
    assert_eq!(rows[0]["Member"], "pg0");
    assert_eq!(rows[0]["Host"], "127.0.0.1:5432");
    assert_eq!(rows[0]["Role"], "Leader");
    assert_eq!(rows[0]["State"], "running");
    assert_eq!(rows[0]["TL"], 2);
    assert!(rows[0].get("Receive Lag").is_none());
    assert!(rows[0].get("Replay LSN").is_none());
    assert_eq!(rows[1]["Receive LSN"], "0/2D00000");
    assert_eq!(rows[1]["Receive Lag"], 3);
    assert_eq!(rows[1]["Replay LSN"], "unknown");
    assert!(rows[1].get("Replay Lag").is_none());
    assert_eq!(rows[2]["Tags"]["nofailover"], true);

    // YAML: the same records.
    let out = env.ctl(&["list", "batman", "--format", "yaml"], "").await;
    out.ok();
    let y: serde_yaml::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(y[1]["Member"].as_str(), Some("pg1"));
    assert_eq!(y[1]["State"].as_str(), Some("streaming"));
    assert_eq!(y[1]["Receive Lag"].as_u64(), Some(3));

    // TSV keeps the cluster column.
    let out = env.ctl(&["list", "batman", "-f", "tsv"], "").await;
    out.ok();
    assert_eq!(
        out.stdout.lines().next(),
        Some("Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\tTags")
    );
    assert!(out.stdout.contains("batman\tpg2\t127.0.0.1:5434\tReplica\trunning\t2\tunknown\t\t0/3000000\t0\t{nofailover: true, replicatefrom: pg1}"), "{}", out.stdout);

    // Topology: pg2 under pg1 under pg0.
    let out = env.ctl(&["topology", "batman"], "").await;
    out.ok();
    assert!(out.stdout.contains("| pg0    |"), "{}", out.stdout);
    assert!(out.stdout.contains("| + pg1  |"), "{}", out.stdout);
    assert!(out.stdout.contains("|  + pg2 |"), "{}", out.stdout);

    // show-config prints the config key as YAML.
    let out = env.ctl(&["show-config", "batman"], "").await;
    out.ok();
    let y: serde_yaml::Value = serde_yaml::from_str(&out.stdout).unwrap();
    assert_eq!(y["ttl"].as_u64(), Some(30));
    assert_eq!(
        y["postgresql"]["parameters"]["max_connections"].as_u64(),
        Some(100)
    );
    assert!(out.stdout.contains("ttl: 30\n"), "{}", out.stdout);

    // history.
    let out = env.ctl(&["history", "batman"], "").await;
    out.ok();
    assert!(out.stdout.contains("| TL |      LSN | Reason                       | Timestamp                 | New Leader |"), "{}", out.stdout);
    assert!(out.stdout.contains("|  1 | 25165984 | no recovery target specified | 2026-11-25T10:00:00+00:00 | pg0        |"), "{}", out.stdout);
    let out = env.ctl(&["history", "batman", "-f", "json"], "").await;
    out.ok();
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v[0]["TL"], 1);
    assert_eq!(v[0]["New Leader"], "pg0");

    // dsn of the leader and of a replica.
    env.ctl(&["dsn", "batman"], "").await.ok();
    assert_eq!(
        env.ctl(&["dsn", "batman"], "").await.stdout,
        "host=127.0.0.1 port=5432\n"
    );
    assert_eq!(
        env.ctl(&["dsn", "batman", "-m", "pg1"], "").await.stdout,
        "host=127.0.0.1 port=5433\n"
    );

    // A ctl-only config file: scope is the default cluster, the DCS section is used.
    let cfg = env.file(
        "ctl.yaml",
        &format!("scope: batman\netcd3:\n  host: {}\n", env.host),
    );
    let out = run_ctl(
        &["-c", &cfg, "list", "-f", "json"],
        "",
        env.home.path(),
        &[],
    )
    .await;
    out.ok();
    assert_eq!(
        serde_json::from_str::<Value>(&out.stdout)
            .unwrap()
            .as_array()
            .unwrap()
            .len(),
        3
    );
    // The same through PATRONICTL_CONFIG_FILE.
    let out = run_ctl(
        &["show-config"],
        "",
        env.home.path(),
        &[("PATRONICTL_CONFIG_FILE", &cfg)],
    )
    .await;
    out.ok();
    assert!(out.stdout.contains("max_connections: 100"));

    // An agent's full config file works too (its DCS section and scope).
    let agent_yaml = format!(
        "scope: batman\nname: pg9\nrestapi:\n  listen: 127.0.0.1:8008\n  connect_address: 127.0.0.1:8008\n\
         etcd3:\n  hosts: {}\npostgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n\
         \x20 data_dir: /nonexistent/data\n  authentication:\n    superuser: {{username: postgres, password: x}}\n\
         \x20   replication: {{username: rep, password: y}}\n",
        env.host
    );
    let env_map = agent_bin::config::EnvMap::default();
    agent_bin::config::Config::from_yaml_str(&agent_yaml, &env_map).expect("a valid agent config");
    let agent_cfg = env.file("agent.yaml", &agent_yaml);
    let out = run_ctl(
        &["-c", &agent_cfg, "history", "-f", "tsv"],
        "",
        env.home.path(),
        &[],
    )
    .await;
    out.ok();
    assert!(
        out.stdout
            .contains("1\t25165984\tno recovery target specified"),
        "{}",
        out.stdout
    );

    // An unknown cluster is an error, not an empty table.
    env.ctl(&["list", "robin"], "")
        .await
        .fails_with("cluster \"robin\" not found");
    env.ctl(&["show-config", "robin"], "")
        .await
        .fails_with("not found");
    // A namespace given in the URL changes the prefix (nothing there).
    let url = format!("{}/elsewhere", env.dcs_url);
    run_ctl(&["-d", &url, "list", "batman"], "", env.home.path(), &[])
        .await
        .fails_with("nothing is stored under /elsewhere/batman/");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edit_config_writes_with_cas() {
    let env = Env::start();
    let api = dead3();
    let members = seed(&env, "gotham", [&api[0], &api[1], &api[2]], CONFIG).await;
    let before = members[0].get_cluster().await.unwrap().config.unwrap();

    let out = env
        .ctl(
            &[
                "edit-config",
                "gotham",
                "-s",
                "ttl=40",
                "-p",
                "max_connections=200",
                "-s",
                "postgresql.use_pg_rewind=true",
                "--force",
            ],
            "",
        )
        .await;
    out.ok();
    assert!(
        out.stdout.contains("-ttl: 30\n+ttl: 40\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "-    max_connections: 100\n+    max_connections: 200\n+  use_pg_rewind: true\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.ends_with("Configuration changed\n"),
        "{}",
        out.stdout
    );
    let after = members[0].get_cluster().await.unwrap().config.unwrap();
    assert_eq!(after.value.ttl, 40.0);
    assert_eq!(
        after.value.extra["postgresql"]["parameters"]["max_connections"],
        200
    );
    assert_eq!(after.value.extra["postgresql"]["use_pg_rewind"], true);
    assert!(
        after.version > before.version,
        "{:?} !> {:?}",
        after.version,
        before.version
    );

    // Same value again: nothing written.
    let out = env
        .ctl(&["edit-config", "gotham", "-s", "ttl=40", "--force"], "")
        .await;
    out.ok();
    assert_eq!(out.stdout, "Not changed\n");
    assert_eq!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .version,
        after.version
    );

    // Without --force it asks; "n" leaves the key alone, no answer fails clearly.
    let out = env
        .ctl(&["edit-config", "gotham", "-s", "loop_wait=5"], "n\n")
        .await;
    out.fails_with("Aborted");
    assert!(
        out.stdout.contains("Apply these changes? [y/N]: "),
        "{}",
        out.stdout
    );
    env.ctl(&["edit-config", "gotham", "-s", "loop_wait=5"], "")
        .await
        .fails_with("no answer to \"Apply these changes?\"");
    assert_eq!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .version,
        after.version
    );
    let out = env
        .ctl(&["edit-config", "gotham", "-q", "-s", "loop_wait=5"], "y\n")
        .await;
    out.ok();
    assert!(!out.stdout.contains("+loop_wait"), "{}", out.stdout);
    assert_eq!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .value
            .loop_wait,
        5.0
    );

    // A value that does not fit the config's types is refused before writing.
    env.ctl(&["edit-config", "gotham", "-s", "ttl=soon", "--force"], "")
        .await
        .fails_with("the new config is not valid");

    // --apply from stdin needs --force.
    let out = env
        .ctl(
            &["edit-config", "gotham", "--apply", "-", "--force"],
            "retry_timeout: 9\npostgresql:\n  use_pg_rewind: null\n",
        )
        .await;
    out.ok();
    let c = members[0]
        .get_cluster()
        .await
        .unwrap()
        .config
        .unwrap()
        .value;
    assert_eq!(c.retry_timeout, 9.0);
    assert!(c.extra["postgresql"].get("use_pg_rewind").is_none());

    // $EDITOR: a script edits the file in place.
    let editor = env.file(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/^ttl: 40$/ttl: 45/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let out = run_ctl(
        &["-d", &env.dcs_url, "edit-config", "gotham", "--force"],
        "",
        env.home.path(),
        &[("EDITOR", &editor)],
    )
    .await;
    out.ok();
    assert!(
        out.stdout.contains("-ttl: 40\n+ttl: 45\n"),
        "{}",
        out.stdout
    );
    assert_eq!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .value
            .ttl,
        45.0
    );

    // A concurrent change while the editor is open: the CAS write is refused.
    let racer = env.file(
        "racer.sh",
        &format!(
            "#!/bin/sh\nETCDCTL_API=3 /usr/bin/etcdctl --endpoints=http://{} put /service/gotham/config '{{\"ttl\":50}}' >/dev/null || exit 1\nsed -i 's/^ttl: 45$/ttl: 46/' \"$1\"\n",
            env.host
        ),
    );
    std::fs::set_permissions(&racer, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    run_ctl(
        &["-d", &env.dcs_url, "edit-config", "gotham", "--force"],
        "",
        env.home.path(),
        &[("EDITOR", &racer)],
    )
    .await
    .fails_with("Config modification aborted due to concurrent changes");
    assert_eq!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .value
            .ttl,
        50.0
    );

    // An editor that fails aborts.
    run_ctl(
        &["-d", &env.dcs_url, "edit-config", "gotham"],
        "",
        env.home.path(),
        &[("EDITOR", "false")],
    )
    .await
    .fails_with("Editor exited with return code 1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_resume_fall_back_to_the_dcs_and_wait_for_members() {
    let env = Env::start();
    let api = dead3();
    let members = seed(
        &env,
        "gotham",
        [&api[0], &api[1], &api[2]],
        r#"{"ttl":30,"loop_wait":1,"retry_timeout":10}"#,
    )
    .await;

    // No member API is up: the flag is written into the config key (CAS).
    let out = env.ctl(&["pause", "gotham"], "").await;
    out.ok();
    assert_eq!(out.stdout, "Success: cluster management is paused\n");
    assert!(
        out.stderr
            .contains("wrote the change into the DCS config key directly"),
        "{}",
        out.stderr
    );
    let cluster = members[0].get_cluster().await.unwrap();
    assert!(cluster.config.as_ref().unwrap().value.pause);
    assert_eq!(cluster.config.unwrap().value.loop_wait, 1.0);
    let out = env.ctl(&["list", "gotham"], "").await;
    assert!(
        out.stdout.ends_with(" Maintenance mode: on\n"),
        "{}",
        out.stdout
    );
    env.ctl(&["pause", "gotham"], "")
        .await
        .fails_with("Cluster is already paused");

    // resume --wait: members still report pause until "their agents" notice.
    for (i, m) in members.iter().enumerate() {
        let mut d = data_of(m, &format!("pg{i}")).await;
        d.pause = Some(true);
        m.touch_member(&d).await.unwrap();
    }
    let ctl = {
        let url = env.dcs_url.clone();
        let home = env.home.path().to_path_buf();
        tokio::spawn(async move {
            run_ctl(&["-d", &url, "resume", "gotham", "--wait"], "", &home, &[]).await
        })
    };
    tokio::time::sleep(Duration::from_millis(700)).await;
    for (i, m) in members.iter().enumerate() {
        let mut d = data_of(m, &format!("pg{i}")).await;
        d.pause = None;
        m.touch_member(&d).await.unwrap();
    }
    let out = ctl.await.unwrap();
    out.ok();
    assert_eq!(
        out.stdout,
        "'resume' request sent, waiting until it is recognized by all nodes\nSuccess: cluster management is resumed\n"
    );
    assert!(
        !members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .value
            .pause
    );
    env.ctl(&["resume", "gotham"], "")
        .await
        .fails_with("Cluster is not paused");

    // pause --wait with members that never notice: fails after loop_wait + 1 s.
    let out = env.ctl(&["pause", "gotham", "--wait"], "").await;
    out.fails_with("pg0, pg1, pg2 did not recognize the pause state after 2 seconds");
    assert!(
        members[0]
            .get_cluster()
            .await
            .unwrap()
            .config
            .unwrap()
            .value
            .pause
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_switchover_clears_the_failover_key_when_no_api_answers() {
    let env = Env::start();
    let api = dead3();
    let members = seed(&env, "gotham", [&api[0], &api[1], &api[2]], CONFIG).await;
    let out = env.ctl(&["flush", "gotham", "switchover"], "").await;
    out.ok();
    assert_eq!(out.stdout, "No pending scheduled switchover\n");
    let scheduled = Failover {
        leader: Some("pg0".into()),
        member: Some("pg1".into()),
        scheduled_at: Some("2030-01-01T10:00:00+00:00".into()),
    };
    assert!(members[0].set_failover(&scheduled, None).await.unwrap());
    let out = env.ctl(&["flush", "gotham", "switchover"], "").await;
    out.ok();
    assert!(
        out.stdout
            .contains("Could not find any accessible member of cluster gotham\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .ends_with("Success: scheduled switchover deleted from the DCS\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("member pg0 is not accessible"),
        "{}",
        out.stderr
    );
    let cluster = members[0].get_cluster().await.unwrap();
    assert!(
        cluster.failover_request().is_none(),
        "{:?}",
        cluster.failover
    );
}

async fn data_of(dcs: &impl Dcs, name: &str) -> MemberData {
    dcs.get_cluster()
        .await
        .unwrap()
        .member(name)
        .unwrap()
        .data
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remove_asks_three_questions_then_deletes_everything() {
    let env = Env::start();
    let api = dead3();
    let members = seed(&env, "arkham", [&api[0], &api[1], &api[2]], CONFIG).await;
    let keys_left =
        || async { members[0].get_cluster().await.unwrap() != ha_core::Cluster::default() };

    // Wrong cluster name, wrong phrase, wrong leader, and no answers: nothing deleted.
    env.ctl(&["remove", "arkham"], "batman\n")
        .await
        .fails_with("Cluster names specified do not match");
    env.ctl(&["remove", "arkham"], "arkham\nyes\n")
        .await
        .fails_with("You did not exactly type \"Yes I am aware\"");
    env.ctl(&["remove", "arkham"], "arkham\nYes I am aware\npg1\n")
        .await
        .fails_with("You did not specify the current leader of the cluster");
    env.ctl(&["remove", "arkham"], "")
        .await
        .fails_with("no answer to \"Please confirm the cluster name to remove\"");
    assert!(keys_left().await);

    let out = env
        .ctl(&["remove", "arkham"], "arkham\nYes I am aware\npg0\n")
        .await;
    out.ok();
    assert!(out.stdout.contains("| pg0    |"), "{}", out.stdout);
    assert!(
        out.stdout
            .contains("Please confirm the cluster name to remove: "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("please type: \"Yes I am aware\": "),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains(
            "This cluster currently is healthy. Please specify the leader name to continue: "
        ),
        "{}",
        out.stdout
    );
    assert!(!keys_left().await);
    env.ctl(&["list", "arkham"], "")
        .await
        .fails_with("not found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_one_line_with_a_nonzero_exit() {
    let home = tempfile::tempdir().unwrap();
    let h = home.path();
    run_ctl(&["-d", "redis://127.0.0.1:1", "list", "b"], "", h, &[])
        .await
        .fails_with("unknown DCS scheme \"redis\"");
    run_ctl(
        &["-d", "etcd3://127.0.0.1:notaport", "list", "b"],
        "",
        h,
        &[],
    )
    .await
    .fails_with("invalid --dcs-url");
    // Nothing listens there: refused at once (not after --dcs-timeout), naming
    // the setting that says where the DCS is.
    let dead = dead_api_url()
        .replace("http://", "etcd3://")
        .replace("/patroni", "");
    let dead_addr = dead.trim_start_matches("etcd3://").to_string();
    let conf = h.join("dead-etcd.yaml");
    std::fs::write(&conf, format!("scope: b\netcd3:\n  hosts: {dead_addr}\n")).unwrap();
    let out = run_ctl(
        &[
            "-c",
            conf.to_str().unwrap(),
            "--dcs-timeout",
            "30",
            "list",
            "b",
        ],
        "",
        h,
        &[],
    )
    .await;
    out.fails_with(&format!("cannot reach the DCS ({dead_addr}: "));
    assert!(
        out.stderr.contains(&format!(
            "Check etcd3.hosts ({dead_addr}) (or pass --dcs-url)"
        )),
        "{}",
        out.stderr
    );
    run_ctl(&["-d", &dead, "list", "b"], "", h, &[])
        .await
        .fails_with("cannot reach the DCS");
    run_ctl(&["list"], "", h, &[])
        .await
        .fails_with("no cluster name given and no scope");
    run_ctl(&["list", "b"], "", h, &[])
        .await
        .fails_with("no DCS configured");
    let out = run_ctl(&["-c", "/nonexistent/ctl.yaml", "list", "b"], "", h, &[]).await;
    out.fails_with("no DCS configured");
    assert!(
        out.stderr
            .contains("ignoring configuration file \"/nonexistent/ctl.yaml\""),
        "{}",
        out.stderr
    );
    let bad = h.join("bad.yaml");
    std::fs::write(&bad, "etcd3: [unclosed\n").unwrap();
    run_ctl(&["-c", bad.to_str().unwrap(), "list", "b"], "", h, &[])
        .await
        .fails_with("not valid YAML");
    // Usage errors: clap's message and exit code 2.
    let out = run_ctl(&["list", "-f", "xml"], "", h, &[]).await;
    assert_eq!(out.code, 2, "{out:?}");
    assert!(out.stderr.contains("invalid value 'xml'"), "{}", out.stderr);
    let out = run_ctl(&["version"], "", h, &[]).await;
    out.ok();
    assert_eq!(
        out.stdout,
        format!("fullautoctl version {}\n", env!("CARGO_PKG_VERSION"))
    );
}
