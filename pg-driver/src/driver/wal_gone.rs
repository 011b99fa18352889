//! Whether the WAL a stopped member needs to catch up is still on its source.
//!
//! A member that was down (or rewound) while its source recycled WAL past the
//! member's position starts, asks the source for a segment, gets "requested WAL
//! segment … has already been removed" and never streams. Its timeline has not
//! diverged, so the divergence check finds nothing to rewind; only a fresh copy helps.

use super::*;
use std::collections::BTreeMap;
use std::io::Read;

impl PgDriver {
    pub(super) async fn do_wal_gone_on(&self, source: &Upstream) -> Result<Option<String>> {
        // An archive may still hold what the source removed.
        if let Some(place) = self.restore_command_setting() {
            tracing::debug!(
                "restore_command set in {place}: WAL removed upstream may come from the archive"
            );
            return Ok(None);
        }
        let c = self.controldata().await?;
        let seg = c.wal_segment_size.max(1);
        // Replay starts at the last checkpoint's redo, or where a backup_label (a
        // clone's or pg_rewind's) says.
        let label = std::fs::read_to_string(self.data_dir().join("backup_label")).ok();
        let Some(from) = [
            c.redo_lsn.or(c.checkpoint_lsn),
            label.as_deref().and_then(label_start),
        ]
        .into_iter()
        .flatten()
        .min() else {
            return Ok(None);
        };
        let local = valid_local_segments(&self.data_dir().join("pg_wal"), seg);
        // What its walreceiver asked for last and was refused, if the server log says.
        let log = progress::log_tail_since(&self.cfg().log_file(), 0);
        let refused = refused_segment(last_run(&log), seg);
        let needed = first_needed(&local, from / seg).min(refused.unwrap_or(u64::MAX));
        let Some(oldest) = self.oldest_segment_on(source, seg).await? else {
            return Ok(None);
        };
        if oldest <= needed {
            return Ok(None);
        }
        Ok(Some(format!(
            "this member needs WAL from {} on, which {} has already removed (it keeps WAL \
             from {} on) and no slot or archive holds",
            ha_core::format_lsn(needed * seg),
            source.name,
            ha_core::format_lsn(oldest * seg)
        )))
    }

    /// Where a `restore_command` is configured, if anywhere.
    fn restore_command_setting(&self) -> Option<&'static str> {
        let cfg = self.cfg();
        let set = |m: &BTreeMap<String, serde_json::Value>| {
            m.get("restore_command")
                .is_some_and(|v| v.as_str().map_or(!v.is_null(), |s| !s.trim().is_empty()))
        };
        let places = [
            ("postgresql.recovery_conf", &cfg.recovery_conf),
            ("the dynamic recovery_conf", &cfg.dynamic_recovery_conf),
            ("postgresql.parameters", &cfg.parameters),
            ("the dynamic parameters", &cfg.dynamic_parameters),
        ];
        for (place, m) in places {
            if set(m) {
                return Some(place);
            }
        }
        None
    }

    /// The lowest WAL segment number `source` still holds in its `pg_wal`
    /// (Postgres removes old segments lowest first); `None` when it lists none.
    async fn oldest_segment_on(&self, source: &Upstream, seg: u64) -> Result<Option<u64>> {
        let client = self.connect_source(source, SQL_TIMEOUT).await?;
        let rows = client
            .simple_query("SELECT name FROM pg_ls_waldir() WHERE name ~ '^[0-9A-F]{24}$'")
            .await
            .map_err(sql::query_error)?;
        Ok(rows
            .iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0),
                _ => None,
            })
            .filter_map(|n| timeline::parse_wal_file_name(n, seg))
            .map(|(_, segno)| segno)
            .min())
    }
}

/// The local WAL files that hold their segment's WAL, by segment number, and whether
/// the segment is complete (its last page written too). A recycled file already
/// carries a later segment's name but still its old content, which its first page's
/// address tells; a segment still being received has a zeroed or old last page.
fn valid_local_segments(pg_wal: &Path, seg: u64) -> BTreeMap<u64, bool> {
    let Ok(dir) = std::fs::read_dir(pg_wal) else {
        return BTreeMap::new();
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (_, segno) = timeline::parse_wal_file_name(&name, seg)?;
            let start = segno * seg;
            (page_address(&e.path(), 0) == Some(start)).then(|| {
                let last = seg.saturating_sub(WAL_PAGE);
                (segno, page_address(&e.path(), last) == Some(start + last))
            })
        })
        .collect()
}

/// `XLOG_BLCKSZ`, the WAL page size of every stock build.
const WAL_PAGE: u64 = 8192;

/// `xlp_pageaddr` of the WAL page at `offset` (after magic, info and timeline).
fn page_address(path: &Path, offset: u64) -> Option<u64> {
    use std::io::{Seek, SeekFrom};
    let mut head = [0u8; 16];
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    f.read_exact(&mut head).ok()?;
    Some(u64::from_ne_bytes(head[8..16].try_into().ok()?))
}

/// The first segment the member must get from its source: replay runs through the
/// local segments from `from` on and streaming starts in the first one missing, or in
/// the last local one when that is not complete (streaming starts at a segment's
/// beginning).
fn first_needed(local: &BTreeMap<u64, bool>, from: u64) -> u64 {
    let mut s = from;
    while local.contains_key(&s) {
        s += 1;
    }
    match local.get(&s.wrapping_sub(1)) {
        Some(false) if s > from => s - 1,
        Some(_) | None => s,
    }
}

/// The log lines of the server's last run (from its last start banner on).
fn last_run(log: &str) -> &str {
    log.rfind("starting PostgreSQL")
        .map_or(log, |at| &log[at..])
}

/// The segment a walreceiver was refused in `log` ("requested WAL segment … has
/// already been removed"), the last one named.
fn refused_segment(log: &str, seg: u64) -> Option<u64> {
    log.lines()
        .rev()
        .filter_map(|l| {
            let rest = l.split("requested WAL segment ").nth(1)?;
            let (name, tail) = rest.split_once(' ')?;
            tail.starts_with("has already been removed")
                .then(|| timeline::parse_wal_file_name(name, seg))
                .flatten()
        })
        .map(|(_, segno)| segno)
        .next()
}

/// `START WAL LOCATION: 0/4000028 (file …)` of a backup_label.
fn label_start(label: &str) -> Option<u64> {
    label
        .lines()
        .find_map(|l| l.strip_prefix("START WAL LOCATION:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(parse_lsn)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_starts_after_the_local_run_or_in_its_unfinished_last_segment() {
        let local: BTreeMap<u64, bool> = [(3, true), (4, true), (5, true), (9, false)]
            .into_iter()
            .collect();
        assert_eq!(first_needed(&local, 3), 6);
        assert_eq!(first_needed(&local, 2), 2);
        assert_eq!(first_needed(&local, 9), 9);
        let partial: BTreeMap<u64, bool> = [(3, true), (4, false)].into_iter().collect();
        assert_eq!(first_needed(&partial, 3), 4);
    }

    #[test]
    fn the_refused_segment_comes_from_the_last_run_of_the_server() {
        let seg = 16 * 1024 * 1024;
        let log = "LOG:  starting PostgreSQL 15.8\n\
            FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000020000000000000003 has already been removed\n\
            LOG:  starting PostgreSQL 15.8\n\
            FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 000000020000000000000004 has already been removed\n\
            FATAL:  could not receive data from WAL stream: ERROR:  requested WAL segment 00000002000000000000000A has already been removed\n\
            LOG:  database system is shut down\n";
        assert_eq!(refused_segment(last_run(log), seg), Some(10));
        let later = format!("{log}LOG:  starting PostgreSQL 15.8\nLOG:  started streaming WAL\n");
        assert_eq!(refused_segment(last_run(&later), seg), None);
    }

    #[test]
    fn a_backup_label_names_where_replay_starts() {
        let label = "START WAL LOCATION: 0/4000028 (file 000000020000000000000004)\nCHECKPOINT LOCATION: 0/4000060\n";
        assert_eq!(label_start(label), Some(0x400_0028));
        assert_eq!(label_start("LABEL: x\n"), None);
    }

    #[test]
    fn a_recycled_file_does_not_count_as_its_new_name_and_a_written_last_page_completes() {
        let dir = std::env::temp_dir().join(format!("fullauto-walgone-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let seg = 64 * 1024;
        let segment = |first: u64, last: u64| {
            let mut h = vec![0u8; seg as usize];
            h[8..16].copy_from_slice(&first.to_ne_bytes());
            let at = (seg - WAL_PAGE) as usize;
            h[at + 8..at + 16].copy_from_slice(&last.to_ne_bytes());
            h
        };
        let name = |n: u64| format!("0000000200000000{n:08X}");
        // 4 is whole; 5 is being received (last page still zero); the file named 6 is
        // segment 1 recycled.
        std::fs::write(dir.join(name(4)), segment(4 * seg, 5 * seg - WAL_PAGE)).unwrap();
        std::fs::write(dir.join(name(5)), segment(5 * seg, 0)).unwrap();
        std::fs::write(dir.join(name(6)), segment(seg, 2 * seg - WAL_PAGE)).unwrap();
        std::fs::write(dir.join("00000002.history"), "1\t0/3000000\tx\n").unwrap();
        let found = valid_local_segments(&dir, seg);
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            found.into_iter().collect::<Vec<_>>(),
            [(4, true), (5, false)]
        );
    }
}
