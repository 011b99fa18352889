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
        // Not written there yet (a lagging upstream): nothing to compare either.
        if theirs == mine || theirs.iter().all(|b| *b == 0) {
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

    /// `true` when the checkpoint pg_control names is not on `source` where it says: no
    /// checkpoint record at that place of that timeline there, or one with another redo.
    /// Then the data directory holds changes of a timeline the source never had under
    /// that number, even when its WAL files were overwritten since by what it streamed
    /// from the source (which hides the first-record difference). Without the source's
    /// WAL of that place, `false`.
    pub(super) async fn checkpoint_unknown_to(
        &self,
        source: &Upstream,
        source_tl: u64,
        source_history: &[HistoryEntry],
    ) -> Result<bool> {
        if self.postmaster_pid().is_some() {
            return Ok(false);
        }
        let c = self.controldata().await?;
        let (Some(ck), Some(redo), Some(tl)) =
            (c.checkpoint_lsn, c.redo_lsn, c.checkpoint_timeline)
        else {
            return Ok(false);
        };
        // Timeline 1 is one history per system; beyond the source's timeline or past
        // the end of that timeline there, the timeline check already decides.
        let ends = source_history
            .iter()
            .find(|e| e.timeline == tl)
            .map(|e| e.switchpoint);
        if tl <= 1 || tl > source_tl || ends.is_some_and(|end| ck >= end) {
            return Ok(false);
        }
        let seg = c.wal_segment_size.max(1);
        let offset = ck % seg;
        // The header and the redo pointer right after the short data header must lie
        // on one page.
        if offset % WAL_PAGE + CHECKPOINT_PREFIX > WAL_PAGE {
            return Ok(false);
        }
        // On its own timeline the source must have written that far (a lagging
        // upstream holds zeros or an old file's bytes there).
        if tl == source_tl
            && self
                .source_position(source)
                .await
                .is_none_or(|at| at < ck + CHECKPOINT_PREFIX)
        {
            return Ok(false);
        }
        let Some(record) = self
            .read_source_segment(source, tl, source_tl, ck / seg, seg, offset)
            .await
        else {
            return Ok(false);
        };
        if is_checkpoint_with_redo(&record, redo) {
            return Ok(false);
        }
        tracing::warn!(
            source = %source.name,
            timeline = tl,
            "the last checkpoint here ({} on timeline {tl}) is not a checkpoint on {}: \
             timeline {tl} here is another than there, diverged",
            ha_core::format_lsn(ck),
            source.name
        );
        Ok(true)
    }

    /// How far the source's WAL goes: written on a primary, received or replayed on a
    /// standby.
    async fn source_position(&self, source: &Upstream) -> Option<u64> {
        let client = self.connect_source(source, SQL_TIMEOUT).await.ok()?;
        let rows = client
            .simple_query(
                "SELECT (CASE WHEN pg_is_in_recovery() \
                   THEN GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn()) \
                   ELSE pg_current_wal_lsn() END)::text",
            )
            .await
            .ok()?;
        rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).and_then(parse_lsn),
            _ => None,
        })
    }

    /// `CHECKPOINT_PREFIX` bytes at `offset` of segment `segno` as the source holds it
    /// for timeline `tl`: its file of `tl`, or of the first later timeline it has for
    /// that segment (a promotion copies the old timeline's part into the new file).
    async fn read_source_segment(
        &self,
        source: &Upstream,
        tl: u64,
        source_tl: u64,
        segno: u64,
        seg: u64,
        offset: u64,
    ) -> Option<Vec<u8>> {
        let client = self.connect_source(source, SQL_TIMEOUT).await.ok()?;
        for t in tl..=source_tl {
            let name = wal_file_name(t, segno, seg);
            for file in [name.clone(), format!("{name}.partial")] {
                let q = format!(
                    "SELECT encode(pg_read_binary_file('pg_wal/{file}', {offset}, {CHECKPOINT_PREFIX}, true), 'hex')"
                );
                let rows = client.simple_query(&q).await.ok()?;
                let hex = rows.iter().find_map(|m| match m {
                    SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                    _ => None,
                });
                if let Some(bytes) = hex.map(|h| decode_hex(&h)) {
                    if bytes.len() as u64 == CHECKPOINT_PREFIX {
                        return Some(bytes);
                    }
                }
            }
        }
        None
    }

    /// The record header at `offset` of the source's WAL file `name`; `None` when the
    /// source no longer has it or cannot be asked.
    async fn read_source_wal(&self, source: &Upstream, name: &str, offset: u64) -> Option<Vec<u8>> {
        let client = self.connect_source(source, SQL_TIMEOUT).await.ok()?;
        let q = format!(
            "SELECT encode(pg_read_binary_file('pg_wal/{name}', {offset}, {RECORD_HEADER}, true), 'hex')"
        );
        let rows = client.simple_query(&q).await.ok()?;
        let hex = rows.iter().find_map(|m| match m {
            SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
            _ => None,
        })?;
        let bytes = decode_hex(&hex);
        (bytes.len() as u64 == RECORD_HEADER).then_some(bytes)
    }
}

/// A record header (24 bytes), the short data header (2) and the checkpoint's redo
/// pointer (8).
const CHECKPOINT_PREFIX: u64 = 34;

/// Whether `record` starts a checkpoint record (`RM_XLOG_ID`, shutdown or online)
/// whose redo pointer is `redo`.
fn is_checkpoint_with_redo(record: &[u8], redo: u64) -> bool {
    const RM_XLOG_ID: u8 = 0;
    const XLOG_CHECKPOINT_SHUTDOWN: u8 = 0x00;
    const XLOG_CHECKPOINT_ONLINE: u8 = 0x10;
    if record.len() < CHECKPOINT_PREFIX as usize {
        return false;
    }
    let info = record[16] & 0xF0;
    let rmid = record[17];
    let at_redo = u64::from_ne_bytes(record[26..34].try_into().unwrap_or_default());
    rmid == RM_XLOG_ID
        && (info == XLOG_CHECKPOINT_SHUTDOWN || info == XLOG_CHECKPOINT_ONLINE)
        && at_redo == redo
}

fn decode_hex(hex: &str) -> Vec<u8> {
    (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect()
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
