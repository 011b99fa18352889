//! Whether a timeline the member and its source both hold under one number is one
//! timeline: the first record written on it must be the same on both.
//!
//! Two members promoted from the same point (an old primary stopped cleanly, both
//! replicas had all of its WAL, neither saw the other's history file) get equal
//! numbers and equal history files, yet their WAL after the switch point differs. No
//! comparison of numbers or history files tells them apart, and pg_rewind answers "no
//! rewind required"; the member then replays its own WAL of that timeline and stays
//! "starting up" on what it streams (issue 25, a ZooKeeper chaos run). The first record
//! of a promotion (its end-of-recovery record, with its time and checksum) tells.

use super::*;
use std::io::{Read, Seek, SeekFrom};

/// How many bytes of the first record are compared: its header, which ends with the
/// checksum over the whole record.
const RECORD_HEADER: u64 = 24;
/// `XLOG_BLCKSZ` and the sizes of a WAL page's short and long (segment start) header.
const WAL_PAGE: u64 = 8192;
const SHORT_PAGE_HEADER: u64 = 24;
const LONG_PAGE_HEADER: u64 = 40;

impl PgDriver {
    /// `true` when timeline `tl`, which both hold with the same history, began with
    /// another record here than on `source`: the two are different timelines under one
    /// number. Without the WAL to compare on either side, `false`.
    pub(super) async fn forked_within_timeline(
        &self,
        source: &Upstream,
        tl: u64,
        source_history: &[HistoryEntry],
    ) -> Result<bool> {
        // Where `tl` began: the switch point of its parent in the source's history.
        let Some(start) = source_history
            .iter()
            .filter(|e| e.timeline < tl)
            .max_by_key(|e| e.timeline)
            .map(|e| e.switchpoint)
        else {
            return Ok(false);
        };
        let seg = self.controldata().await?.wal_segment_size.max(1);
        let at = first_record_at(start, seg);
        let name = wal_file_name(tl, at / seg, seg);
        let offset = at % seg;
        let Some(mine) = read_local(&self.data_dir().join("pg_wal").join(&name), offset) else {
            return Ok(false);
        };
        // Not received that far: nothing to compare.
        if mine.iter().all(|b| *b == 0) {
            return Ok(false);
        }
        let Some(theirs) = self.read_source_wal(source, &name, offset).await else {
            return Ok(false);
        };
        if theirs == mine {
            return Ok(false);
        }
        tracing::warn!(
            source = %source.name,
            timeline = tl,
            "timeline {tl} here began with another record than timeline {tl} on {} \
             (at {}): two promotions from the same point, diverged",
            source.name,
            ha_core::format_lsn(start)
        );
        Ok(true)
    }

    /// The record header at `offset` of the source's WAL file `name`; `None` when the
    /// source no longer has it or cannot be asked.
    async fn read_source_wal(&self, source: &Upstream, name: &str, offset: u64) -> Option<Vec<u8>> {
        let cfg = self.cfg();
        let client = self
            .connect_as(
                &Endpoint::tcp(&source.host, source.port),
                &cfg.authentication.superuser,
                "postgres",
                SQL_TIMEOUT,
            )
            .await
            .ok()?;
        let q = format!(
            "SELECT encode(pg_read_binary_file('pg_wal/{name}', {offset}, {RECORD_HEADER}, true), 'hex')"
        );
        let rows = client.simple_query(&q).await.ok()?;
        let hex = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })?;
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        (bytes.len() as u64 == RECORD_HEADER).then_some(bytes)
    }
}

/// Where the first record at or after `lsn` starts: past the page header when `lsn`
/// is at a page's beginning.
fn first_record_at(lsn: u64, seg: u64) -> u64 {
    if lsn.is_multiple_of(seg) {
        lsn + LONG_PAGE_HEADER
    } else if lsn.is_multiple_of(WAL_PAGE) {
        lsn + SHORT_PAGE_HEADER
    } else {
        lsn
    }
}

/// `TTTTTTTTXXXXXXXXYYYYYYYY` of segment `segno` on timeline `tl`.
fn wal_file_name(tl: u64, segno: u64, seg: u64) -> String {
    let per_log = 0x1_0000_0000u64 / seg;
    format!("{tl:08X}{:08X}{:08X}", segno / per_log, segno % per_log)
}

fn read_local(path: &Path, offset: u64) -> Option<Vec<u8>> {
    let mut f = std::fs::File::open(path).ok()?;
    f.seek(SeekFrom::Start(offset)).ok()?;
    let mut buf = vec![0u8; RECORD_HEADER as usize];
    f.read_exact(&mut buf).ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_record_skips_a_page_header_and_file_names_follow_postgres() {
        let seg = 16 * 1024 * 1024;
        assert_eq!(first_record_at(0x500_0000, seg), 0x500_0028);
        assert_eq!(first_record_at(0x500_2000, seg), 0x500_2018);
        assert_eq!(first_record_at(0x504_9518, seg), 0x504_9518);
        assert_eq!(wal_file_name(2, 5, seg), "000000020000000000000005");
        assert_eq!(wal_file_name(0x1A, 259, seg), "0000001A0000000100000003");
    }
}
