//! Timeline history and the divergence decision: does a data directory hold WAL the
//! source's timeline does not, so it needs pg_rewind before it can follow?

use ha_core::{parse_lsn, Lsn};

/// One line of a `.history` file: timeline `timeline` ended at `switchpoint`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Parent timeline.
    pub timeline: u64,
    /// Where the next timeline branched off.
    pub switchpoint: Lsn,
}

/// Parses a timeline history file (`tli<TAB>X/Y<TAB>reason`, `#` comments).
pub fn parse_history(text: &str) -> Vec<HistoryEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let timeline = f.next()?.parse().ok()?;
            let switchpoint = parse_lsn(f.next()?)?;
            Some(HistoryEntry {
                timeline,
                switchpoint,
            })
        })
        .collect()
}

/// Where the local data directory stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalPosition {
    /// Its timeline.
    pub timeline: u64,
    /// Primary (clean shutdown): the shutdown checkpoint's location; replica: the
    /// furthest replayed LSN.
    pub lsn: Lsn,
    /// Whether `lsn` is a primary's last checkpoint record (its end is past `lsn`).
    pub ends_with_checkpoint: bool,
}

/// Whether `local` diverged from a source on `source_timeline` with `history`.
pub fn diverged(local: LocalPosition, source_timeline: u64, history: &[HistoryEntry]) -> bool {
    if local.timeline == source_timeline {
        return false;
    }
    if local.timeline > source_timeline {
        return true;
    }
    match history.iter().find(|e| e.timeline == local.timeline) {
        // Our timeline is not an ancestor of the source's.
        None => true,
        Some(e) => {
            if local.ends_with_checkpoint {
                // The checkpoint record starts at lsn and ends after it: if it starts at
                // or past the switchpoint the source never received it.
                local.lsn >= e.switchpoint
            } else {
                local.lsn > e.switchpoint
            }
        }
    }
}

/// Whether the local timeline's own history (`local_history`, the entries of its
/// `.history` file: every ancestor and where it ended) contradicts the source's: an
/// ancestor the source does not have, or that ended elsewhere. Two servers promoted
/// from the same parent without seeing each other's history file pick the same new
/// timeline number on different histories; the numbers alone then look compatible
/// (seen in the chaos run: a node whose pg_rewind had failed was promoted to the
/// timeline number another node already used, and that node then followed it as if
/// nothing had diverged).
pub fn histories_conflict(local_history: &[HistoryEntry], source_history: &[HistoryEntry]) -> bool {
    local_history.iter().any(|l| {
        source_history
            .iter()
            .find(|s| s.timeline == l.timeline)
            .is_none_or(|s| s.switchpoint != l.switchpoint)
    })
}

/// Parses a WAL segment file name into (timeline, segment number).
pub fn parse_wal_file_name(name: &str, segment_size: u64) -> Option<(u64, u64)> {
    if name.len() != 24 || !name.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let tli = u64::from_str_radix(&name[0..8], 16).ok()?;
    let log = u64::from_str_radix(&name[8..16], 16).ok()?;
    let seg = u64::from_str_radix(&name[16..24], 16).ok()?;
    let per_log = 0x1_0000_0000u64 / segment_size.max(1);
    Some((tli, log * per_log + seg))
}

/// WAL files of a parent timeline from the segment holding its switchpoint on: after
/// pg_rewind they hold the target's own divergent records, which recovery could
/// otherwise read once the new timeline's copy of that segment runs out.
pub fn divergent_wal_files<'a>(
    names: impl IntoIterator<Item = &'a str>,
    history: &[HistoryEntry],
    segment_size: u64,
) -> Vec<String> {
    names
        .into_iter()
        .filter(|n| {
            parse_wal_file_name(n, segment_size).is_some_and(|(tli, segno)| {
                history
                    .iter()
                    .any(|e| e.timeline == tli && segno >= e.switchpoint / segment_size)
            })
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HIST: &str = "1\t0/3000148\tno recovery target specified\n\n2\t0/5000000\tx\n";

    #[test]
    fn parses_history_lines() {
        let h = parse_history(HIST);
        assert_eq!(
            h,
            vec![
                HistoryEntry {
                    timeline: 1,
                    switchpoint: 0x3000148
                },
                HistoryEntry {
                    timeline: 2,
                    switchpoint: 0x5000000
                }
            ]
        );
    }

    #[test]
    fn finds_parent_timeline_segments_from_the_switchpoint_on() {
        let h = parse_history(HIST);
        let seg = 16 * 1024 * 1024;
        let names = [
            "000000010000000000000002",
            "000000010000000000000003",
            "000000010000000000000004",
            "000000020000000000000004",
            "000000020000000000000005",
            "000000030000000000000005",
            "00000002.history",
        ];
        assert_eq!(
            divergent_wal_files(names, &h, seg),
            vec![
                "000000010000000000000003",
                "000000010000000000000004",
                "000000020000000000000005"
            ]
        );
    }

    fn pos(timeline: u64, lsn: Lsn, ckpt: bool) -> LocalPosition {
        LocalPosition {
            timeline,
            lsn,
            ends_with_checkpoint: ckpt,
        }
    }

    #[test]
    fn divergence_rules() {
        let h = parse_history(HIST);
        // Same timeline: never.
        assert!(!diverged(pos(3, 0x9000000, true), 3, &h));
        // Ahead of the source's timeline.
        assert!(diverged(pos(4, 0, false), 3, &h));
        // Not in the history.
        assert!(diverged(pos(2, 0, false), 3, &[]));
        // Ex-primary whose shutdown checkpoint the new primary received.
        assert!(!diverged(pos(1, 0x3000100, true), 3, &h));
        // Ex-primary that wrote past the switchpoint.
        assert!(diverged(pos(1, 0x3000148, true), 3, &h));
        // Replica that replayed exactly to the switchpoint, and past it.
        assert!(!diverged(pos(1, 0x3000148, false), 3, &h));
        assert!(diverged(pos(1, 0x3000149, false), 3, &h));
    }

    #[test]
    fn a_timeline_number_reached_on_another_history_conflicts() {
        let source = parse_history(HIST);
        // Our timeline 2 forked from 1 where the source's did: a prefix, no conflict.
        assert!(!histories_conflict(
            &parse_history("1\t0/3000148\tx\n"),
            &source
        ));
        assert!(!histories_conflict(&[], &source));
        assert!(!histories_conflict(&source, &source));
        // Our timeline 2 forked from 1 later than the source's timeline 2 did.
        assert!(histories_conflict(
            &parse_history("1\t0/4000000\tx\n"),
            &source
        ));
        // An ancestor the source never had.
        let other = parse_history("1\t0/3000148\tx\n2\t0/5000000\tx\n3\t0/6000000\tx\n");
        assert!(histories_conflict(&other, &source));
    }
}
