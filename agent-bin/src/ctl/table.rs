//! Tables in patronictl's four formats: a boxed table whose top border carries the
//! title, tab-separated values, and JSON/YAML lists of objects keyed by column.

use super::args::Format;
use super::yaml;
use serde_json::{Map, Value};

/// Columns and rows, cells as JSON values (strings, numbers, or mappings for tags).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    /// Text put into the top border (`Cluster: batman (7311…)`); with it, a first
    /// `Cluster` column is left out of the pretty table.
    pub title: Option<String>,
    /// Column names.
    pub columns: Vec<String>,
    /// Rows, one cell per column.
    pub rows: Vec<Vec<Value>>,
    /// Columns aligned to the right (numbers).
    pub right_aligned: Vec<&'static str>,
}

fn is_empty_cell(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// A cell as text: mappings as YAML (block style in the pretty table, flow style in
/// TSV), booleans as Python prints them.
fn cell_text(v: &Value, pretty: bool) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        Value::Bool(b) => if *b { "True" } else { "False" }.to_string(),
        Value::Number(_) => yaml::normalize(v).to_string(),
        Value::Object(o) if o.is_empty() => String::new(),
        other if pretty => yaml::to_block(other).trim_end().to_string(),
        other => yaml::to_flow(other),
    }
}

fn width(s: &str) -> usize {
    s.chars().count()
}

fn justify(s: &str, w: usize, right: bool) -> String {
    let pad = " ".repeat(w.saturating_sub(width(s)));
    if right {
        format!("{pad}{s}")
    } else {
        format!("{s}{pad}")
    }
}

impl Table {
    /// Whether the first column is the cluster name that the title already shows.
    fn skips_cluster_column(&self) -> bool {
        self.title.is_some() && self.columns.first().is_some_and(|c| c == "Cluster")
    }

    /// Renders in `format`; the result ends with a newline.
    pub fn render(&self, format: Format) -> String {
        match format {
            Format::Pretty => self.pretty(),
            Format::Tsv => self.tsv(),
            Format::Json => self.json(),
            Format::Yaml => self.yaml(),
        }
    }

    /// One list of (column, cell) pairs per row, in column order. With a title,
    /// empty cells are left out (the leader has no lag, most members no tags), as
    /// patronictl does.
    pub fn elements(&self) -> Vec<Vec<(String, Value)>> {
        self.rows
            .iter()
            .map(|r| {
                self.columns
                    .iter()
                    .zip(r)
                    .filter(|(_, v)| self.title.is_none() || !is_empty_cell(v))
                    .map(|(c, v)| (c.clone(), v.clone()))
                    .collect()
            })
            .collect()
    }

    fn json(&self) -> String {
        let rows: Vec<String> = self
            .elements()
            .iter()
            .map(|pairs| {
                let items: Vec<String> = pairs
                    .iter()
                    .map(|(k, v)| {
                        format!("{}: {}", Value::String(k.clone()), yaml::to_python_json(v))
                    })
                    .collect();
                format!("{{{}}}", items.join(", "))
            })
            .collect();
        format!("[{}]\n", rows.join(", "))
    }

    fn yaml(&self) -> String {
        // PyYAML's safe_dump sorts keys; serde_json's map does too.
        let list: Vec<Value> = self
            .elements()
            .into_iter()
            .map(|pairs| Value::Object(pairs.into_iter().collect::<Map<String, Value>>()))
            .collect();
        yaml::to_block(&Value::Array(list))
    }

    fn tsv(&self) -> String {
        let mut out = String::new();
        out.push_str(&self.columns.join("\t"));
        out.push('\n');
        for r in &self.rows {
            let cells: Vec<String> = r.iter().map(|v| cell_text(v, false)).collect();
            out.push_str(&cells.join("\t"));
            out.push('\n');
        }
        out
    }

    fn pretty(&self) -> String {
        let skip = usize::from(self.skips_cluster_column());
        let columns: Vec<&String> = self.columns.iter().skip(skip).collect();
        let rows: Vec<Vec<Vec<String>>> = self
            .rows
            .iter()
            .map(|r| {
                r.iter()
                    .skip(skip)
                    .map(|v| cell_text(v, true).split('\n').map(str::to_string).collect())
                    .collect()
            })
            .collect();
        let widths: Vec<usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                rows.iter()
                    .filter_map(|r| r.get(i))
                    .flat_map(|lines| lines.iter().map(|l| width(l)))
                    .chain(std::iter::once(width(c)))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let right: Vec<bool> = columns
            .iter()
            .map(|c| self.right_aligned.contains(&c.as_str()))
            .collect();
        let hrule: String = {
            let mut s = String::from("+");
            for w in &widths {
                s.push_str(&"-".repeat(w + 2));
                s.push('+');
            }
            s
        };
        let line = |cells: &[String]| {
            let mut s = String::from("|");
            for (i, w) in widths.iter().enumerate() {
                let text = cells.get(i).map(String::as_str).unwrap_or("");
                s.push(' ');
                s.push_str(&justify(text, *w, right[i]));
                s.push_str(" |");
            }
            s
        };
        let mut out = String::new();
        out.push_str(&self.top_border(&hrule));
        out.push('\n');
        let header: Vec<String> = columns.iter().map(|c| c.to_string()).collect();
        out.push_str(&line(&header));
        out.push('\n');
        out.push_str(&hrule);
        out.push('\n');
        for r in &rows {
            let height = r.iter().map(Vec::len).max().unwrap_or(1).max(1);
            for k in 0..height {
                let cells: Vec<String> = r
                    .iter()
                    .map(|lines| lines.get(k).cloned().unwrap_or_default())
                    .collect();
                out.push_str(&line(&cells));
                out.push('\n');
            }
        }
        out.push_str(&hrule);
        out.push('\n');
        out
    }

    /// The top border with the title written over it after the first `+`, cut to fit.
    fn top_border(&self, hrule: &str) -> String {
        let Some(title) = &self.title else {
            return hrule.to_string();
        };
        let chars: Vec<char> = hrule.chars().collect();
        let room = chars.len().saturating_sub(2);
        let title: String = title.chars().take(room).collect();
        let n = width(&title);
        let mut s = String::new();
        s.extend(chars.first());
        s.push_str(&title);
        s.extend(chars.iter().skip(1 + n));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn members_table() -> Table {
        Table {
            title: Some(" Cluster: batman (7311) ".to_string()),
            columns: [
                "Cluster",
                "Member",
                "Host",
                "Role",
                "State",
                "TL",
                "Lag in MB",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            rows: vec![
                vec![
                    json!("batman"),
                    json!("pg0"),
                    json!("127.0.0.1"),
                    json!("Leader"),
                    json!("running"),
                    json!(2),
                    json!(""),
                ],
                vec![
                    json!("batman"),
                    json!("pg1"),
                    json!("127.0.0.2"),
                    json!("Replica"),
                    json!("streaming"),
                    json!(2),
                    json!(12),
                ],
            ],
            right_aligned: vec!["TL", "Lag in MB"],
        }
    }

    #[test]
    fn pretty_table_has_title_in_top_border_and_right_aligned_numbers() {
        let out = members_table().render(Format::Pretty);
        let expected = "\
+ Cluster: batman (7311) ---+---------+-----------+----+-----------+
| Member | Host      | Role    | State     | TL | Lag in MB |
+--------+-----------+---------+-----------+----+-----------+
| pg0    | 127.0.0.1 | Leader  | running   |  2 |           |
| pg1    | 127.0.0.2 | Replica | streaming |  2 |        12 |
+--------+-----------+---------+-----------+----+-----------+
";
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "+ Cluster: batman (7311) ------+-----------+----+-----------+"
        );
        assert_eq!(&lines[1..], &expected.lines().collect::<Vec<_>>()[1..]);
    }

    #[test]
    fn title_longer_than_the_table_is_cut() {
        let t = Table {
            title: Some(" Cluster: a-very-long-cluster-name (uninitialized) ".into()),
            columns: vec!["Cluster".into(), "Member".into()],
            rows: vec![],
            right_aligned: vec![],
        };
        let out = t.render(Format::Pretty);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0], "+ Cluster+");
        assert_eq!(lines[1], "| Member |");
        assert_eq!(lines.len(), 4);
    }

    #[test]
    fn tsv_keeps_cluster_column_and_prints_tags_in_flow_style() {
        let mut t = members_table();
        t.columns.push("Tags".into());
        t.rows[0].push(json!({}));
        t.rows[1].push(json!({"nofailover": true, "zone": "a"}));
        let out = t.render(Format::Tsv);
        assert_eq!(
            out,
            "Cluster\tMember\tHost\tRole\tState\tTL\tLag in MB\tTags\n\
             batman\tpg0\t127.0.0.1\tLeader\trunning\t2\t\t\n\
             batman\tpg1\t127.0.0.2\tReplica\tstreaming\t2\t12\t{nofailover: true, zone: a}\n"
        );
    }

    #[test]
    fn multi_line_tags_in_pretty_table() {
        let mut t = members_table();
        t.columns.push("Tags".into());
        t.rows[0].push(json!(""));
        t.rows[1].push(json!({"nofailover": true, "zone": "a"}));
        let out = t.render(Format::Pretty);
        assert!(out.contains("|        12 | nofailover: true |\n"), "{out}");
        assert!(out.contains("|           | zone: a          |\n"), "{out}");
    }

    #[test]
    fn json_keeps_column_order_and_drops_empty_cells() {
        let out = members_table().render(Format::Json);
        assert_eq!(
            out,
            "[{\"Cluster\": \"batman\", \"Member\": \"pg0\", \"Host\": \"127.0.0.1\", \"Role\": \"Leader\", \"State\": \"running\", \"TL\": 2}, \
{\"Cluster\": \"batman\", \"Member\": \"pg1\", \"Host\": \"127.0.0.2\", \"Role\": \"Replica\", \"State\": \"streaming\", \"TL\": 2, \"Lag in MB\": 12}]\n"
        );
        let parsed: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed[1]["Lag in MB"], 12);
    }

    #[test]
    fn yaml_is_a_list_of_sorted_mappings() {
        let out = members_table().render(Format::Yaml);
        assert!(out.starts_with("- Cluster: batman\n  Host: 127.0.0.1\n  Member: pg0\n  Role: Leader\n  State: running\n  TL: 2\n- Cluster: batman\n"), "{out}");
        assert!(out.contains("  Lag in MB: 12\n"));
    }

    #[test]
    fn untitled_tables_keep_empty_cells() {
        let t = Table {
            title: None,
            columns: vec!["TL".into(), "LSN".into(), "Reason".into()],
            rows: vec![vec![json!(1), json!(25165984), json!("")]],
            right_aligned: vec!["TL", "LSN"],
        };
        assert_eq!(
            t.render(Format::Json),
            "[{\"TL\": 1, \"LSN\": 25165984, \"Reason\": \"\"}]\n"
        );
        assert_eq!(
            t.render(Format::Pretty),
            "+----+----------+--------+\n| TL |      LSN | Reason |\n+----+----------+--------+\n|  1 | 25165984 |        |\n+----+----------+--------+\n"
        );
    }
}
