//! One rule, enforced: every key of Patroni 4.1's configuration (the reference file
//! `data/patroni-4.1-reference.yml`, the variables in `data/patroni-4.1-env.txt`)
//! is in fullauto's key table (`agent-bin/src/config/keys/table.rs`) as honoured,
//! with an existing test that shows it, or refused, and `--validate-config` and
//! start-up refuse exactly the refused ones, naming the key. The generated page
//! `docs/configuration-keys.md` must equal the table.

use agent_bin::config::keys::{self, Key, Status, KEYS};
use agent_bin::config::{overlay_from_env, validate_str, yaml_to_json, EnvMap, Report};
use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn reference_text() -> String {
    std::fs::read_to_string(workspace().join("agent-bin/tests/data/patroni-4.1-reference.yml"))
        .unwrap()
}

fn reference() -> Value {
    let y: serde_yaml::Value = serde_yaml::from_str(&reference_text()).unwrap();
    yaml_to_json(&y).unwrap()
}

/// A small valid config.
fn minimal() -> Value {
    json!({
        "scope": "demo",
        "name": "pg0",
        "restapi": {"listen": "127.0.0.1:18008", "connect_address": "127.0.0.1:18008"},
        "etcd3": {"hosts": "127.0.0.1:12379"},
        "postgresql": {
            "listen": "127.0.0.1:15432",
            "connect_address": "127.0.0.1:15432",
            "data_dir": "/tmp/fullauto-keys-test",
            "authentication": {
                "superuser": {"username": "postgres", "password": "x"},
                "replication": {"username": "replicator", "password": "x"}
            }
        }
    })
}

fn set(doc: &mut Value, path: &str, v: Value) {
    let mut node = doc;
    let segs: Vec<&str> = path.split('.').collect();
    for s in &segs[..segs.len() - 1] {
        if !node.get(*s).is_some_and(Value::is_object) {
            node[*s] = Value::Object(Map::new());
        }
        node = node.get_mut(*s).unwrap();
    }
    node[segs[segs.len() - 1]] = v;
}

fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(doc, |v, k| v.get(k))
}

fn validate(doc: &Value, env: &EnvMap) -> Report {
    validate_str(&serde_yaml::to_string(doc).unwrap(), env)
}

/// A concrete path for a table path (`<…>` ⇒ `x`).
fn concrete(pattern: &str) -> String {
    pattern
        .split('.')
        .map(|s| if s.starts_with('<') { "x" } else { s })
        .collect::<Vec<_>>()
        .join(".")
}

#[test]
fn every_key_of_the_reference_config_is_in_the_table() {
    let missing: Vec<String> = keys::classify(&reference())
        .into_iter()
        .filter(|(_, k)| k.is_none())
        .map(|(p, _)| p)
        .collect();
    assert!(missing.is_empty(), "not in the key table: {missing:?}");
}

#[test]
fn the_reference_config_is_refused_exactly_at_the_refused_keys() {
    let doc = reference();
    let report = validate_str(&reference_text(), &EnvMap::new());
    let classified = keys::classify(&doc);
    for p in report.errors() {
        if p.path.is_empty() {
            assert!(p.message.contains("more than one DCS"), "{p}");
            continue;
        }
        let key = keys::lookup(&p.path);
        assert!(
            key.is_some_and(|k| !matches!(k.status, Status::Honoured { .. })),
            "error at a key the table says is honoured: {p}"
        );
    }
    for (path, key) in &classified {
        if let Some(Key {
            status: Status::Refused { why },
            ..
        }) = key
        {
            assert!(
                report.find(path, why).is_some(),
                "{path} is refused by the table but not by validation:\n{}",
                report.render()
            );
        }
    }
    let ignored: Vec<String> = report
        .warnings()
        // Patroni's own precedence rules (url under proxy, …) say so.
        .filter(|w| w.message.contains("ignored") && !w.message.contains("as in Patroni"))
        .map(|w| w.to_string())
        .collect();
    assert!(ignored.is_empty(), "accepted and ignored: {ignored:?}");
}

/// A value the schema accepts at a refused path (the reference's where it has one).
fn refused_value(path: &str) -> Value {
    if let Some(v) = get(&reference(), path) {
        return v.clone();
    }
    match path.rsplit('.').next().unwrap() {
        "primary_race_backoff" => json!(1),
        "key_password" => json!("secret"),
        _ => json!({"a": "b"}),
    }
}

#[test]
fn each_refused_key_is_refused_alone_by_validation_and_by_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    for key in KEYS.iter().filter(|k| k.is_refused()) {
        let Status::Refused { why } = key.status else {
            unreachable!()
        };
        let path = concrete(key.path);
        let mut doc = minimal();
        set(&mut doc, &path, refused_value(&path));
        let report = validate(&doc, &EnvMap::new());
        assert!(
            report.find(&path, why).is_some(),
            "{path}:\n{}",
            report.render()
        );
        // The binary: --validate-config and start-up both exit non-zero naming it.
        let file = dir.path().join("refused.yml");
        std::fs::write(&file, serde_yaml::to_string(&doc).unwrap()).unwrap();
        for args in [vec!["--validate-config"], vec![]] {
            let out = Command::new(env!("CARGO_BIN_EXE_fullauto"))
                .args(&args)
                .arg(&file)
                .env_clear()
                .env("PATH", std::env::var("PATH").unwrap_or_default())
                .output()
                .unwrap();
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(!out.status.success(), "{path} {args:?}: {text}");
            assert!(text.contains(&path), "{path} {args:?}: {text}");
        }
    }
}

#[test]
fn limited_keys_refuse_their_example_value_and_accept_the_reference_one() {
    for key in KEYS {
        let Status::Limited { example, .. } = key.status else {
            continue;
        };
        let path = concrete(key.path);
        let mut doc = minimal();
        // Keys of another DCS section replace the etcd3 one.
        let section = path.split('.').next().unwrap();
        if ["zookeeper", "consul"].contains(&section) {
            doc.as_object_mut().unwrap().remove("etcd3");
            set(
                &mut doc,
                &format!("{section}.hosts"),
                json!(["127.0.0.1:12181"]),
            );
            if section == "zookeeper" {
                // Without use_ssl its TLS keys are ignored, as in Patroni.
                set(&mut doc, "zookeeper.use_ssl", json!(true));
            }
        }
        let v: serde_yaml::Value = serde_yaml::from_str(example).unwrap();
        set(&mut doc, &path, yaml_to_json(&v).unwrap());
        let report = validate(&doc, &EnvMap::new());
        assert!(
            report.errors().any(|p| p.path == path),
            "{path}: {example} not refused:\n{}",
            report.render()
        );
    }
}

#[test]
fn every_honoured_key_names_a_test_that_exists() {
    for key in KEYS {
        let test = match key.status {
            Status::Honoured { test } | Status::Limited { test, .. } => test,
            Status::Refused { .. } => continue,
        };
        let (file, function) = test
            .split_once("::")
            .unwrap_or_else(|| panic!("{}: {test} is not file::function", key.path));
        let text = std::fs::read_to_string(workspace().join(file))
            .unwrap_or_else(|e| panic!("{}: {file}: {e}", key.path));
        // A decision fixture (`testdata/*.txt`) names its scenario in a comment line.
        let found = if file.ends_with(".txt") {
            text.lines()
                .any(|l| l.starts_with('#') && l.contains(function))
        } else {
            text.contains(&format!("fn {function}()"))
        };
        assert!(found, "{}: no test {function} in {file}", key.path);
    }
}

#[test]
fn every_documented_variable_reaches_a_key_of_the_table() {
    let text =
        std::fs::read_to_string(workspace().join("agent-bin/tests/data/patroni-4.1-env.txt"))
            .unwrap();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (var, value) = line.split_once('=').unwrap();
        if var == "PATRONI_CONFIGURATION" {
            // A whole document: config_env::patroni_configuration_replaces_file_and_other_variables.
            continue;
        }
        let env: EnvMap = [(var.to_string(), value.to_string())].into();
        let overlay = overlay_from_env(&env);
        let paths: Vec<&String> = overlay.origins.keys().collect();
        assert!(!paths.is_empty(), "{var} sets nothing");
        for path in paths {
            // The key itself, or the refused section it belongs to.
            let segs: Vec<&str> = path.split('.').collect();
            let key = (1..=segs.len())
                .filter_map(|n| keys::lookup(&segs[..n].join(".")))
                .find(|k| k.is_refused() || k.path.split('.').count() == segs.len());
            let key = key.unwrap_or_else(|| panic!("{var} sets {path}, not in the key table"));
            if key.is_refused() {
                let report = validate(&minimal(), &env);
                assert!(
                    report.errors().any(|p| p.message.contains(var)),
                    "{var} ({path}) is refused by the table but not when set:\n{}",
                    report.render()
                );
            }
        }
    }
}

#[test]
fn the_key_page_is_generated_from_the_table() {
    let page = workspace().join("docs/configuration-keys.md");
    let want = keys::markdown();
    if std::env::var_os("FULLAUTO_BLESS").is_some() {
        std::fs::create_dir_all(page.parent().unwrap()).unwrap();
        std::fs::write(&page, &want).unwrap();
    }
    let have = std::fs::read_to_string(&page).unwrap_or_default();
    assert!(
        have == want,
        "docs/configuration-keys.md differs from the key table; regenerate it with \
         FULLAUTO_BLESS=1 cargo test -p agent-bin --test config_keys"
    );
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    assert!(
        readme.contains("docs/configuration-keys.md"),
        "README links the page"
    );
}
