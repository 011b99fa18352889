//! Long operations log their progress at a steady interval (`loop_wait`): a replica
//! cloned with pg_basebackup says how much it copied and how fast, while it copies.

mod support;

use std::time::Duration;
use support::{Cluster, Extra, FAST};

const BOOT: Duration = Duration::from_secs(90);

#[test]
fn a_clone_logs_how_far_it_got_while_it_copies() {
    // The copy is throttled (pg_basebackup --max-rate), so it lasts several loop_waits
    // (a new cluster's files are over 20 MB).
    let mut c = Cluster::new_with(
        2,
        &FAST,
        "",
        |_| String::new(),
        |_| Extra {
            postgresql: "  basebackup:\n    - max-rate: 4M\n".into(),
            ..Extra::default()
        },
    );
    c.start(0);
    assert_eq!(c.wait_primary(BOOT), Some(0), "{}", c.logs());
    c.start(1);
    assert!(c.wait_replica(1, BOOT), "{}", c.logs());
    let log = std::fs::read_to_string(&c.nodes[1].log).unwrap_or_default();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pg_basebackup in progress: "))
        .collect();
    assert!(lines.len() >= 2, "no progress lines in:\n{log}");
    let data_dir = c.nodes[1].data_dir.display().to_string();
    for l in &lines {
        assert!(
            l.contains(&format!("copied into {data_dir} after ")) && l.contains("/s on average)"),
            "{l}"
        );
    }
    // The amounts grow: the last line reports more than the first.
    let copied = |l: &str| -> f64 {
        let (_, rest) = l.split_once("pg_basebackup in progress: ").unwrap();
        let mut words = rest.split_whitespace();
        let n: f64 = words.next().unwrap().parse().unwrap();
        let scale = match words.next().unwrap() {
            "B" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            _ => 1024.0 * 1024.0 * 1024.0,
        };
        n * scale
    };
    assert!(
        copied(lines[lines.len() - 1]) > copied(lines[0]),
        "{lines:#?}"
    );
}
