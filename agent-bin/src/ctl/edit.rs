//! Editing the dynamic config as patronictl's `edit-config` does: `-s dotted.path=yaml`
//! pairs, merging a YAML document (`--apply`), and a unified diff of the YAML text.

use super::error::{CtlError, CtlResult};
use super::yaml;
use serde_json::{Map, Value};

/// Sets (or, with `None`, removes) the value at `path`, creating mappings on the way
/// and dropping mappings left empty. Below `postgresql.parameters` the rest of the
/// path is one name: GUCs are not nested but may contain dots (`pg_stat_statements.max`).
pub fn set_path_value(config: &mut Map<String, Value>, path: &[&str], value: Option<Value>) {
    set_inner(config, path, value, &[]);
}

fn set_inner(
    config: &mut Map<String, Value>,
    path: &[&str],
    value: Option<Value>,
    prefix: &[&str],
) {
    let joined;
    let path: Vec<&str> = if prefix == ["postgresql", "parameters"] && path.len() > 1 {
        joined = path.join(".");
        vec![joined.as_str()]
    } else {
        path.to_vec()
    };
    let Some((key, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        match value {
            None => {
                config.remove(*key);
            }
            Some(v) => {
                config.insert(key.to_string(), v);
            }
        }
        return;
    }
    if !config.get(*key).is_some_and(Value::is_object) {
        config.insert(key.to_string(), Value::Object(Map::new()));
    }
    let mut next_prefix = prefix.to_vec();
    next_prefix.push(key);
    if let Some(Value::Object(child)) = config.get_mut(*key) {
        set_inner(child, rest, value, &next_prefix);
        if child.is_empty() {
            config.remove(*key);
        }
    }
}

/// Applies `key.path=value` pairs; values are YAML (`5`, `true`, `'5'`, `{a: 1}`), and
/// an empty value or `null` removes the key.
pub fn apply_pairs(data: &Value, pairs: &[String]) -> CtlResult<Value> {
    let mut out = data.as_object().cloned().unwrap_or_default();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=').filter(|_| !pair.is_empty()) else {
            return Err(CtlError::failed(format!(
                "Invalid parameter setting {pair}"
            )));
        };
        let path: Vec<&str> = key.trim().split('.').collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(CtlError::failed(format!(
                "Invalid parameter setting {pair}"
            )));
        }
        let v = yaml::parse(value, &format!("the value of {}", key.trim()))?;
        set_path_value(&mut out, &path, (!v.is_null()).then_some(v));
    }
    Ok(Value::Object(out))
}

/// `-p name=value` as `-s postgresql.parameters.name=value`.
pub fn pg_pairs(pairs: &[String]) -> Vec<String> {
    pairs
        .iter()
        .map(|p| format!("postgresql.parameters.{}", p.trim_start()))
        .collect()
}

fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => yaml::normalize(other).to_string(),
    }
}

/// Merges `patch` into `config` like Patroni's `patch_config`: `null` deletes, mappings
/// merge recursively, scalars are replaced when their text differs. Returns whether
/// anything changed.
pub fn patch_config(config: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in patch {
        if value.is_null() {
            changed |= config.remove(name).is_some_and(|old| !old.is_null());
            continue;
        }
        match (config.get_mut(name), value) {
            (Some(Value::Object(existing)), Value::Object(sub)) => {
                changed |= patch_config(existing, sub);
            }
            (Some(existing), Value::Object(_)) => {
                *existing = value.clone();
                changed = true;
            }
            (Some(existing), _) => {
                if scalar_text(existing) != scalar_text(value) {
                    *existing = value.clone();
                    changed = true;
                }
            }
            (None, _) => {
                config.insert(name.clone(), value.clone());
                changed = true;
            }
        }
    }
    changed
}

/// A unified diff of two texts (`--- ` / `+++ ` headers, hunks with three lines of
/// context), as Python's `difflib.unified_diff` prints it.
pub fn unified_diff(before: &str, after: &str) -> String {
    let a: Vec<&str> = before.trim_end_matches('\n').split('\n').collect();
    let b: Vec<&str> = after.trim_end_matches('\n').split('\n').collect();
    let ops = diff_ops(&a, &b);
    if ops.iter().all(|o| matches!(o, Op::Same(..))) {
        return String::new();
    }
    const CONTEXT: usize = 3;
    // Group the edit script into hunks separated by more than 2*CONTEXT equal lines.
    let changed: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, o)| !matches!(o, Op::Same(..)))
        .map(|(i, _)| i)
        .collect();
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for &i in &changed {
        let start = i.saturating_sub(CONTEXT);
        let end = (i + CONTEXT + 1).min(ops.len());
        match hunks.last_mut() {
            Some(h) if start <= h.1 => h.1 = end,
            _ => hunks.push((start, end)),
        }
    }
    let mut out = String::from("--- \n+++ \n");
    for (start, end) in hunks {
        let (mut a0, mut b0) = (None, None);
        let (mut na, mut nb) = (0usize, 0usize);
        let mut body = String::new();
        for op in &ops[start..end] {
            match op {
                Op::Same(i, j) => {
                    a0.get_or_insert(*i);
                    b0.get_or_insert(*j);
                    na += 1;
                    nb += 1;
                    body.push_str(&format!(" {}\n", a[*i]));
                }
                Op::Del(i, j) => {
                    a0.get_or_insert(*i);
                    b0.get_or_insert(*j);
                    na += 1;
                    body.push_str(&format!("-{}\n", a[*i]));
                }
                Op::Ins(i, j) => {
                    a0.get_or_insert(*i);
                    b0.get_or_insert(*j);
                    nb += 1;
                    body.push_str(&format!("+{}\n", b[*j]));
                }
            }
        }
        let range = |first: Option<usize>, n: usize| {
            let first = first.unwrap_or(0);
            match n {
                0 => format!("{first},0"),
                1 => format!("{}", first + 1),
                _ => format!("{},{n}", first + 1),
            }
        };
        out.push_str(&format!("@@ -{} +{} @@\n", range(a0, na), range(b0, nb)));
        out.push_str(&body);
    }
    out
}

/// One step of an edit script, with the positions in both texts at that point.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Same(usize, usize),
    Del(usize, usize),
    Ins(usize, usize),
}

/// Longest-common-subsequence edit script; config texts are small.
fn diff_ops(a: &[&str], b: &[&str]) -> Vec<Op> {
    let (n, m) = (a.len(), b.len());
    let mut lcs = vec![vec![0u32; m + 1]; n + 1];
    for i in (0..n).rev() {
        for j in (0..m).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let (mut i, mut j) = (0, 0);
    let mut ops = Vec::new();
    while i < n || j < m {
        if i < n && j < m && a[i] == b[j] {
            ops.push(Op::Same(i, j));
            i += 1;
            j += 1;
        } else if j < m && (i == n || lcs[i][j + 1] >= lcs[i + 1][j]) {
            ops.push(Op::Ins(i, j));
            j += 1;
        } else {
            ops.push(Op::Del(i, j));
            i += 1;
        }
    }
    // Deletions before insertions within a changed block, as difflib prints them.
    let mut k = 0;
    while k < ops.len() {
        if matches!(ops[k], Op::Same(..)) {
            k += 1;
            continue;
        }
        let start = k;
        while k < ops.len() && !matches!(ops[k], Op::Same(..)) {
            k += 1;
        }
        ops[start..k].sort_by_key(|o| matches!(o, Op::Ins(..)));
    }
    ops
}

/// Opens `$EDITOR` (else `editor`, else `vi`) on `text` and returns what was saved.
pub fn invoke_editor(text: &str, cluster: &str) -> CtlResult<String> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.trim().is_empty())
        .or_else(|| {
            ["editor", "vi"]
                .iter()
                .find(|e| find_executable(e))
                .map(|e| e.to_string())
        })
        .ok_or_else(|| {
            CtlError::failed(
                "EDITOR environment variable is not set. editor or vi are not available",
            )
        })?;
    let dir = std::env::temp_dir();
    let path = dir.join(format!("{cluster}-config-{}.yaml", std::process::id()));
    std::fs::write(&path, text)
        .map_err(|e| CtlError::Io(format!("cannot write {}: {e}", path.display())))?;
    let mut words = editor.split_whitespace();
    let program = words.next().unwrap_or("vi");
    let status = std::process::Command::new(program)
        .args(words)
        .arg(&path)
        .status();
    let result = match status {
        Err(e) => Err(CtlError::Io(format!("cannot run editor {program:?}: {e}"))),
        Ok(s) if !s.success() => Err(CtlError::failed(format!(
            "Editor exited with return code {}",
            s.code().unwrap_or(-1)
        ))),
        Ok(_) => std::fs::read_to_string(&path)
            .map_err(|e| CtlError::Io(format!("cannot read {}: {e}", path.display()))),
    };
    let _ = std::fs::remove_file(&path);
    result
}

fn find_executable(name: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|d| d.join(name).is_file()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn set_creates_nested_mappings_and_parses_yaml_values() {
        let data = json!({"ttl": 30, "postgresql": {"use_pg_rewind": true}});
        let out = apply_pairs(
            &data,
            &[
                "ttl=40".into(),
                "postgresql.parameters.max_connections=200".into(),
                "synchronous_mode=true".into(),
                "standby_cluster.host= 10.0.0.1".into(),
                "tags='5'".into(),
            ],
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"ttl": 40, "synchronous_mode": true, "tags": "5",
                   "postgresql": {"use_pg_rewind": true, "parameters": {"max_connections": 200}},
                   "standby_cluster": {"host": "10.0.0.1"}})
        );
    }

    #[test]
    fn empty_or_null_value_removes_and_prunes_empty_mappings() {
        let data = json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB"}}});
        let out = apply_pairs(
            &data,
            &["postgresql.parameters.work_mem=".into(), "ttl=null".into()],
        )
        .unwrap();
        assert_eq!(out, json!({}));
        let out = apply_pairs(&data, &["absent.key=".into()]).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn pg_parameters_with_dots_stay_one_name() {
        let out = apply_pairs(
            &json!({}),
            &pg_pairs(&["pg_stat_statements.max=1000".into()]),
        )
        .unwrap();
        assert_eq!(
            out,
            json!({"postgresql": {"parameters": {"pg_stat_statements.max": 1000}}})
        );
    }

    #[test]
    fn a_scalar_on_the_path_is_replaced_by_a_mapping() {
        let out = apply_pairs(&json!({"a": 1}), &["a.b=2".into()]).unwrap();
        assert_eq!(out, json!({"a": {"b": 2}}));
    }

    #[test]
    fn invalid_pairs_are_refused() {
        for bad in ["ttl", "", "=5", "a..b=1"] {
            let e = apply_pairs(&json!({}), &[bad.to_string()])
                .unwrap_err()
                .to_string();
            assert!(e.contains("Invalid parameter setting"), "{bad}: {e}");
        }
        assert!(apply_pairs(&json!({}), &["a={x: [".into()]).is_err());
    }

    #[test]
    fn patch_merges_deletes_and_compares_as_text() {
        let mut c = json!({"ttl": 30, "postgresql": {"parameters": {"a": 1, "b": "x"}}, "slots": {"s": {"type": "physical"}}})
            .as_object()
            .cloned()
            .unwrap();
        let patch =
            json!({"ttl": "30", "postgresql": {"parameters": {"a": null, "c": 3}}, "slots": null});
        assert!(patch_config(&mut c, patch.as_object().unwrap()));
        assert_eq!(
            Value::Object(c.clone()),
            json!({"ttl": 30, "postgresql": {"parameters": {"b": "x", "c": 3}}})
        );
        assert!(!patch_config(
            &mut c,
            json!({"ttl": 30, "gone": null}).as_object().unwrap()
        ));
    }

    #[test]
    fn unified_diff_shows_changed_lines_with_context() {
        let before = "a: 1\nb: 2\nc: 3\nd: 4\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\n";
        let after = "a: 1\nb: 2\nc: 3\nd: 40\ne: 5\nf: 6\ng: 7\nh: 8\ni: 9\nj: 10\n";
        assert_eq!(
            unified_diff(before, after),
            "--- \n+++ \n@@ -1,9 +1,10 @@\n a: 1\n b: 2\n c: 3\n-d: 4\n+d: 40\n e: 5\n f: 6\n g: 7\n h: 8\n i: 9\n+j: 10\n"
        );
        assert_eq!(unified_diff("x: 1\n", "x: 1\n"), "");
    }

    #[test]
    fn unified_diff_splits_distant_changes_into_hunks() {
        let before: String = (1..=20).map(|i| format!("k{i}: {i}\n")).collect();
        let after = before
            .replace("k2: 2\n", "k2: 22\n")
            .replace("k19: 19\n", "");
        let d = unified_diff(&before, &after);
        assert!(
            d.contains("@@ -1,5 +1,5 @@\n k1: 1\n-k2: 2\n+k2: 22\n k3: 3\n"),
            "{d}"
        );
        assert!(
            d.contains("@@ -16,5 +16,4 @@\n k16: 16\n k17: 17\n k18: 18\n-k19: 19\n k20: 20\n"),
            "{d}"
        );
    }
}
