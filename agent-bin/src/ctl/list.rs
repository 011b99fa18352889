//! `list` and `topology`: the member table.

use super::args::{Format, WatchArgs};
use super::error::CtlResult;
use super::say;
use super::session::Ctx;
use super::table::Table;
use super::view::{cluster_view, service_info, ClusterView, MemberRow};
use ha_core::decision::{Electability, MemberElectability};
use ha_core::Cluster;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

/// How `list` lays out the members.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Sorted by name.
    Flat,
    /// Leader first, replicas under the member they stream from.
    Topology,
}

/// The member table of one cluster, as patronictl builds it.
pub fn members_table(
    name: &str,
    cluster: &Cluster,
    extended: bool,
    layout: Layout,
    format: Format,
) -> (Table, ClusterView) {
    let hide_long = format == Format::Pretty;
    let view = cluster_view(cluster);
    let mut columns: Vec<String> = [
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Receive LSN",
        "Receive Lag",
        "Replay LSN",
        "Replay Lag",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let with_host: Vec<&MemberRow> = view.members.iter().filter(|m| m.host.is_some()).collect();
    let any_pending = with_host.iter().any(|m| m.pending_restart);
    let any_reason = with_host
        .iter()
        .any(|m| !m.pending_restart_reason.is_empty());
    let any_scheduled = with_host.iter().any(|m| m.scheduled_restart.is_some());
    let any_tags = with_host.iter().any(|m| !m.tags.is_empty());
    for (col, shown) in [
        ("Pending restart", any_pending),
        ("Pending restart reason", any_reason),
        ("Scheduled restart", any_scheduled),
        ("Tags", any_tags),
    ] {
        if extended || shown {
            columns.push(col.to_string());
        }
    }
    // host:port when some member is on a non-default port or hosts repeat.
    let hosts: HashSet<&str> = with_host.iter().filter_map(|m| m.host.as_deref()).collect();
    let append_port = with_host.iter().any(|m| m.port.is_some_and(|p| p != 5432))
        || hosts.len() < with_host.len();
    let ordered: Vec<(usize, &MemberRow)> = match layout {
        Layout::Flat => view.members.iter().map(|m| (0, m)).collect(),
        Layout::Topology => topology_order(&view.members),
    };
    let rows = ordered
        .iter()
        .map(|(level, m)| {
            let host = match (&m.host, m.port) {
                (Some(h), Some(p)) if append_port => format!("{h}:{p}"),
                (Some(h), _) => h.clone(),
                (None, _) => String::new(),
            };
            let member = match level {
                0 => m.name.clone(),
                l => format!("{}+ {}", " ".repeat(l - 1), m.name),
            };
            let (receive, replay) = match m.positions {
                Some(p) => {
                    let (r, p) = p.shown(&m.state);
                    (Some(r), Some(p))
                }
                None => (None, None),
            };
            let empty = || Value::from("");
            columns
                .iter()
                .map(|c| match c.as_str() {
                    "Cluster" => Value::from(name),
                    "Member" => Value::from(member.clone()),
                    "Host" => Value::from(host.clone()),
                    "Role" => Value::from(m.role.title()),
                    "State" => Value::from(m.state.clone()),
                    "TL" => m
                        .timeline
                        .map(Value::from)
                        .unwrap_or_else(|| Value::from("")),
                    "Receive LSN" => receive.map_or_else(empty, |p| p.lsn_cell()),
                    "Receive Lag" => receive.map_or_else(empty, |p| p.lag_cell()),
                    "Replay LSN" => replay.map_or_else(empty, |p| p.lsn_cell()),
                    "Replay Lag" => replay.map_or_else(empty, |p| p.lag_cell()),
                    "Pending restart" => Value::from(if m.pending_restart { "*" } else { "" }),
                    "Pending restart reason" => {
                        Value::from(restart_reason_text(&m.pending_restart_reason, hide_long))
                    }
                    "Scheduled restart" => {
                        Value::from(scheduled_restart_text(m.scheduled_restart.as_ref()))
                    }
                    "Tags" => Value::Object(m.tags.clone()),
                    _ => Value::from(""),
                })
                .collect()
        })
        .collect();
    let table = Table {
        title: Some(format!(" Cluster: {name} ({}) ", view.initialize)),
        columns,
        rows,
        right_aligned: vec!["TL", "Receive LSN", "Replay LSN", "Lag"],
    };
    (table, view)
}

/// The `Pending restart reason` cell: `name: old->new` per line; in the pretty table
/// a line longer than 50 characters becomes `name: [hidden - too long]`.
fn restart_reason_text(reason: &serde_json::Map<String, Value>, hide_long: bool) -> String {
    let text = |v: Option<&Value>| match v {
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => String::new(),
    };
    reason
        .iter()
        .map(|(name, change)| {
            let full = format!(
                "{name}: {}->{}",
                text(change.get("old_value")),
                text(change.get("new_value"))
            );
            if hide_long && full.chars().count() > 50 {
                format!("{name}: [hidden - too long]")
            } else {
                full
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn scheduled_restart_text(v: Option<&Value>) -> String {
    let Some(v) = v else {
        return String::new();
    };
    let mut s = v
        .get("schedule")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    if let Some(ver) = v.get("postgres_version").and_then(Value::as_str) {
        s.push_str(&format!(" if version < {ver}"));
    }
    s
}

/// Leader first, then each replica under the member named by its `replicatefrom` tag
/// (when that is another replica), with its depth. Members in a replicatefrom cycle
/// are listed under the leader.
pub fn topology_order(members: &[MemberRow]) -> Vec<(usize, &MemberRow)> {
    let leader = members.iter().find(|m| m.role.is_leader());
    let replicas: HashSet<&str> = members
        .iter()
        .filter(|m| !m.role.is_leader())
        .map(|m| m.name.as_str())
        .collect();
    let mut children: BTreeMap<Option<&str>, Vec<&MemberRow>> = BTreeMap::new();
    for m in members.iter().filter(|m| !m.role.is_leader()) {
        let parent = m
            .tags
            .get("replicatefrom")
            .and_then(Value::as_str)
            .filter(|p| *p != m.name && replicas.contains(p));
        children
            .entry(parent.or(leader.map(|l| l.name.as_str())))
            .or_default()
            .push(m);
    }
    let mut out: Vec<(usize, &MemberRow)> = Vec::new();
    let mut seen: HashSet<&str> = HashSet::new();
    fn walk<'a>(
        parent: Option<&'a str>,
        level: usize,
        children: &BTreeMap<Option<&'a str>, Vec<&'a MemberRow>>,
        seen: &mut HashSet<&'a str>,
        out: &mut Vec<(usize, &'a MemberRow)>,
    ) {
        for m in children.get(&parent).into_iter().flatten() {
            if seen.insert(m.name.as_str()) {
                out.push((level, m));
                walk(Some(m.name.as_str()), level + 1, children, seen, out);
            }
        }
    }
    if let Some(l) = leader {
        seen.insert(l.name.as_str());
        out.push((0, l));
    }
    walk(
        leader.map(|l| l.name.as_str()),
        1,
        &children,
        &mut seen,
        &mut out,
    );
    // Without a leader, or in a cycle: whatever was not reached hangs off the top.
    for m in members {
        if !seen.contains(m.name.as_str()) {
            seen.insert(m.name.as_str());
            out.push((1, m));
            walk(Some(m.name.as_str()), 2, &children, &mut seen, &mut out);
        }
    }
    out
}

/// The text `list` prints for one cluster.
pub fn render_cluster(
    name: &str,
    cluster: &Cluster,
    extended: bool,
    format: Format,
    layout: Layout,
) -> String {
    render_cluster_explained(name, cluster, extended, format, layout, false)
}

/// [`render_cluster`], with `explain` adding an `Electable` column (`list --explain`):
/// the electability rule of `ha-core`, the one `/cluster` and the dashboard show.
pub fn render_cluster_explained(
    name: &str,
    cluster: &Cluster,
    extended: bool,
    format: Format,
    layout: Layout,
    explain: bool,
) -> String {
    let (mut table, view) = members_table(name, cluster, extended, layout, format);
    let explained = explain.then(|| ha_core::decision::explain(cluster));
    if let Some(answers) = &explained {
        add_electable_column(&mut table, answers);
    }
    if format == Format::Pretty {
        // The pretty table heads both lag columns `Lag`, as patronictl does.
        for c in table.columns.iter_mut() {
            if c == "Receive Lag" || c == "Replay Lag" {
                *c = "Lag".to_string();
            }
        }
    }
    let mut out = table.render(format);
    if format == Format::Pretty {
        let mut info = service_info(&view);
        // Synchronous standbys the `sync` key names but no member key shows.
        for e in explained.iter().flatten() {
            if cluster.member(&e.name).is_none() {
                info.push(format!("{}: {}", e.name, electable_text(&e.electability)));
            }
        }
        if !info.is_empty() {
            out.push(' ');
            out.push_str(&info.join("\n "));
            out.push('\n');
        }
    }
    out
}

/// The `Electable` cell: empty for the leader, `yes`, or `no: reason; reason`.
fn electable_text(e: &Electability) -> String {
    match e {
        Electability::Leader => String::new(),
        Electability::Electable => "yes".to_string(),
        Electability::NotElectable(why) => format!(
            "no: {}",
            why.iter()
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

fn add_electable_column(table: &mut Table, answers: &[MemberElectability]) {
    let Some(member_col) = table.columns.iter().position(|c| c == "Member") else {
        return;
    };
    table.columns.push("Electable".to_string());
    for row in table.rows.iter_mut() {
        // Topology rows indent the name as `+ name`.
        let shown = row[member_col].as_str().unwrap_or_default();
        let name = shown.rsplit("+ ").next().unwrap_or(shown).trim();
        let cell = answers
            .iter()
            .find(|e| e.name == name)
            .map(|e| electable_text(&e.electability))
            .unwrap_or_default();
        row.push(Value::from(cell));
    }
}

/// Runs `list` (or `topology`) once or, when watching, until interrupted.
pub async fn run(
    ctx: &Ctx,
    clusters: &[String],
    extended: bool,
    explain: bool,
    format: Format,
    watch: &WatchArgs,
    layout: Layout,
) -> CtlResult<()> {
    let names: Vec<String> = if clusters.is_empty() {
        vec![ctx.settings.cluster_name(None)?]
    } else {
        clusters.to_vec()
    };
    let mut sessions = Vec::new();
    for n in &names {
        sessions.push(ctx.open(n).await?);
    }
    loop {
        if watch.timestamp {
            say(&chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string());
        }
        for s in &sessions {
            let cluster = s.read_existing().await?;
            super::say_raw(&render_cluster_explained(
                &s.name, &cluster, extended, format, layout, explain,
            ));
        }
        match watch.interval() {
            None => return Ok(()),
            Some(secs) => {
                tokio::time::sleep(std::time::Duration::from_secs_f64(secs)).await;
                say("");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_core::{RawEntry, Version};

    fn e(k: &str, v: &str) -> RawEntry {
        RawEntry {
            key: k.into(),
            value: v.into(),
            version: Version(1),
            session: None,
        }
    }

    fn sample() -> Cluster {
        Cluster::from_entries(vec![
            e("initialize", "7311111111111111111"),
            e("leader", "pg0"),
            e("status", r#"{"optime":50331648}"#),
            e(
                "members/pg0",
                r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","state":"running","role":"primary","timeline":3,"xlog_location":50331648}"#,
            ),
            e(
                "members/pg1",
                r#"{"conn_url":"postgres://127.0.0.1:5433/postgres","state":"running","role":"replica","replication_state":"streaming","timeline":3,"xlog_location":16777216}"#,
            ),
            e(
                "members/pg2",
                r#"{"conn_url":"postgres://127.0.0.1:5434/postgres","state":"running","role":"replica","timeline":3,"xlog_location":50331648,"tags":{"replicatefrom":"pg1"}}"#,
            ),
        ])
    }

    #[test]
    fn pretty_list_shows_ports_when_hosts_repeat() {
        let out = render_cluster("batman", &sample(), false, Format::Pretty, Layout::Flat);
        let lines: Vec<&str> = out.lines().collect();
        assert!(
            lines[0].starts_with("+ Cluster: batman (7311111111111111111) "),
            "{out}"
        );
        // Patroni 4.1's columns; members reporting only xlog_location (Patroni
        // before 3.1) show it as received while streaming, as replayed otherwise.
        assert_eq!(lines[1], "| Member | Host           | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Tags               |");
        assert_eq!(lines[3], "| pg0    | 127.0.0.1:5432 | Leader  | running   |  3 |             |     |            |     |                    |");
        assert_eq!(lines[4], "| pg1    | 127.0.0.1:5433 | Replica | streaming |  3 |   0/1000000 |  32 |    unknown |     |                    |");
        assert_eq!(lines[5], "| pg2    | 127.0.0.1:5434 | Replica | running   |  3 |     unknown |     |  0/3000000 |   0 | replicatefrom: pg1 |");
        assert_eq!(lines.len(), 7);
    }

    #[test]
    fn explain_adds_the_electable_column() {
        let out =
            render_cluster_explained("batman", &sample(), false, Format::Tsv, Layout::Flat, true);
        let electable: Vec<&str> = out
            .lines()
            .map(|l| l.rsplit('\t').next().unwrap_or(""))
            .collect();
        assert_eq!(
            electable,
            [
                "Electable",
                "",
                "no: unreachable: its member key has no api_url; lag 33554432 bytes is over maximum_lag_on_failover (1048576)",
                "no: unreachable: its member key has no api_url",
            ],
            "{out}"
        );
    }

    #[test]
    fn topology_indents_by_replicatefrom() {
        let out = render_cluster("batman", &sample(), false, Format::Pretty, Layout::Topology);
        let members: Vec<String> = out
            .lines()
            .skip(3)
            .filter(|l| l.starts_with("| "))
            .map(|l| l.split('|').nth(1).unwrap().trim_end().to_string())
            .collect();
        assert_eq!(members, [" pg0", " + pg1", "  + pg2"]);
    }

    #[test]
    fn topology_cycle_and_no_leader_still_lists_everyone() {
        let c = Cluster::from_entries(vec![
            e("members/a", r#"{"tags":{"replicatefrom":"b"}}"#),
            e("members/b", r#"{"tags":{"replicatefrom":"a"}}"#),
            e("members/c", r#"{}"#),
        ]);
        let v = cluster_view(&c);
        let order: Vec<(usize, String)> = topology_order(&v.members)
            .into_iter()
            .map(|(l, m)| (l, m.name.clone()))
            .collect();
        assert_eq!(order.len(), 3);
        assert!(order.iter().any(|(_, n)| n == "c"));
    }

    #[test]
    fn json_list_uses_patroni_field_names() {
        let out = render_cluster("batman", &sample(), false, Format::Json, Layout::Flat);
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v[0]["Cluster"], "batman");
        assert_eq!(v[0]["Member"], "pg0");
        assert_eq!(v[0]["Role"], "Leader");
        assert_eq!(v[0]["TL"], 3);
        assert!(v[0].get("Receive Lag").is_none());
        assert!(v[0].get("Receive LSN").is_none());
        assert!(v[0].get("Tags").is_none());
        assert_eq!(v[1]["Receive LSN"], "0/1000000");
        assert_eq!(v[1]["Receive Lag"], 32);
        assert_eq!(v[1]["Replay LSN"], "unknown");
        assert!(v[1].get("Replay Lag").is_none());
        assert_eq!(v[1]["State"], "streaming");
        assert_eq!(v[2]["Tags"]["replicatefrom"], "pg1");
        assert!(out.starts_with(
            r#"[{"Cluster": "batman", "Member": "pg0", "Host": "127.0.0.1:5432", "Role": "Leader""#
        ));
    }

    #[test]
    fn extended_and_pending_restart_columns() {
        let c = Cluster::from_entries(vec![
            e("leader", "pg0"),
            e(
                "members/pg0",
                r#"{"conn_url":"postgres://10.0.0.1:5432/postgres","state":"running","pending_restart":true,"scheduled_restart":{"schedule":"2030-01-01T00:00:00+00:00","postgres_version":"15.5"}}"#,
            ),
        ]);
        let (t, _) = members_table("b", &c, false, Layout::Flat, Format::Pretty);
        assert_eq!(&t.columns[10..], ["Pending restart", "Scheduled restart"]);
        assert_eq!(t.rows[0][10], "*");
        assert_eq!(t.rows[0][11], "2030-01-01T00:00:00+00:00 if version < 15.5");
        assert_eq!(t.rows[0][2], "10.0.0.1");
        let (t, _) = members_table("b", &c, true, Layout::Flat, Format::Pretty);
        assert_eq!(
            &t.columns[10..],
            [
                "Pending restart",
                "Pending restart reason",
                "Scheduled restart",
                "Tags"
            ]
        );
        let out = render_cluster("b", &c, false, Format::Pretty, Layout::Flat);
        assert!(out.contains("+ Cluster: b (uninitialized) "), "{out}");
    }

    #[test]
    fn pending_restart_reasons_one_per_line_long_ones_hidden_in_pretty() {
        let long = "x".repeat(40);
        let c = Cluster::from_entries(vec![e(
            "members/pg0",
            &format!(
                r#"{{"conn_url":"postgres://10.0.0.1:5432/postgres","state":"running","pending_restart":true,"pending_restart_reason":{{"max_connections":{{"old_value":"100","new_value":"200"}},"shared_preload_libraries":{{"old_value":"","new_value":"{long}"}}}}}}"#
            ),
        )]);
        let (t, _) = members_table("b", &c, false, Layout::Flat, Format::Pretty);
        let at = t.columns.iter().position(|c| c == "Pending restart reason");
        assert_eq!(
            t.rows[0][at.expect("reason column")],
            "max_connections: 100->200\nshared_preload_libraries: [hidden - too long]"
        );
        let (t, _) = members_table("b", &c, false, Layout::Flat, Format::Json);
        let at = t.columns.iter().position(|c| c == "Pending restart reason");
        assert_eq!(
            t.rows[0][at.expect("reason column")],
            Value::from(format!(
                "max_connections: 100->200\nshared_preload_libraries: ->{long}"
            ))
        );
    }

    #[test]
    fn maintenance_mode_line_under_the_table() {
        let c = Cluster::from_entries(vec![e("config", r#"{"pause":true}"#), e("members/a", "{}")]);
        let out = render_cluster("b", &c, false, Format::Pretty, Layout::Flat);
        assert!(out.ends_with("+\n Maintenance mode: on\n"), "{out}");
        let out = render_cluster("b", &c, false, Format::Json, Layout::Flat);
        assert!(!out.contains("Maintenance"));
    }
}
