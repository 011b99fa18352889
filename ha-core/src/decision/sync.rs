//! Synchronous replication from the leader's side (Patroni §5): which standbys are
//! synchronous, in an order that never lets `sync` and `synchronous_standby_names`
//! disagree in the unsafe direction:
//! - a standby is added to `synchronous_standby_names` before it is published in
//!   `sync`, and published only once it has confirmed every commit acknowledged before
//!   it became synchronous;
//! - a standby is removed from `sync` before it leaves `synchronous_standby_names`.
//!
//! Each decision step makes at most one of these moves. A `sync` write that succeeded
//! is followed in the same cycle by the change of `synchronous_standby_names` it
//! prepared ([`after_sync_written`]), as Patroni does: a standby dropped from `sync`
//! may stop at once, and every moment it stays listed in the setting after that
//! holds commits that wait for it.

use super::input::NodeConfig;
use crate::model::{Cluster, DynamicConfig, Lsn, SyncState, SynchronousMode, Version, Versioned};
use crate::postgres::{PgObservation, ReplicationConnection};

/// `synchronous_standby_names` for strict mode with no usable standby: commits wait
/// for any standby that connects, none is published, so nobody may auto-promote.
pub const ANY_STANDBY: &str = "*";

/// The next step of the leader's synchronous-replication bookkeeping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SyncStep {
    /// Everything agrees.
    Settled,
    /// CAS-write `sync`.
    WriteSync(SyncState),
    /// Set `synchronous_standby_names` (None clears it); commits acknowledged up to the
    /// current WAL position must reach the new standbys before they are published.
    SetStandbyNames(Option<String>),
    /// Quorum mode: remember this WAL position as the point the current
    /// `synchronous_standby_names` is known to be in force by (observed after the
    /// change, so every commit acknowledged under an older setting lies before it).
    MarkConfirmPoint(Lsn),
}

/// `synchronous_standby_names` as Postgres reads it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StandbyNames {
    /// `ANY k (...)`: quorum commit; otherwise FIRST/priority semantics.
    pub any: bool,
    /// How many standbys must confirm a commit (0 when empty).
    pub count: usize,
    /// The listed names, in order; `*` stands for every standby.
    pub names: Vec<String>,
}

impl StandbyNames {
    /// Parses a setting; empty or absent gives no synchronous standbys.
    pub fn parse(value: Option<&str>) -> StandbyNames {
        let v = value.unwrap_or("").trim();
        if v.is_empty() {
            return StandbyNames::default();
        }
        let (any, count, list) = match v.find('(') {
            Some(open) => {
                let head: Vec<&str> = v[..open].split_whitespace().collect();
                let any = head.first().is_some_and(|w| w.eq_ignore_ascii_case("any"));
                let n = head.last().and_then(|w| w.parse().ok()).unwrap_or(1);
                (any, n, v[open + 1..].trim_end().trim_end_matches(')'))
            }
            None => (false, 1, v),
        };
        let names = list
            .split(',')
            .map(|n| n.trim().trim_matches('"').to_string())
            .filter(|n| !n.is_empty())
            .collect();
        StandbyNames { any, count, names }
    }

    /// `ANY count ("a","b")`, or None for an empty list.
    pub fn render_any(names: &[String], count: usize) -> Option<String> {
        if names.is_empty() {
            return None;
        }
        let quoted: Vec<String> = names
            .iter()
            .map(|n| match n.as_str() {
                ANY_STANDBY => n.clone(),
                _ => format!("\"{n}\""),
            })
            .collect();
        Some(format!(
            "ANY {} ({})",
            count.clamp(1, names.len()),
            quoted.join(",")
        ))
    }

    /// Whether commits wait for nobody.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty() || self.count == 0
    }

    /// Whether `*` (any standby at all) is listed.
    pub fn lists_every_standby(&self) -> bool {
        self.names.iter().any(|n| n == ANY_STANDBY)
    }
}

/// Parses `synchronous_standby_names` into (count, names); `*` gives `["*"]`.
pub fn parse_standby_names(value: &str) -> (usize, Vec<String>) {
    let p = StandbyNames::parse(Some(value));
    (p.count, p.names)
}

/// Renders `synchronous_standby_names` for `names` with FIRST-n semantics.
pub fn render_standby_names(names: &[String], count: usize) -> Option<String> {
    match names {
        [] => None,
        [only] if only == ANY_STANDBY => Some(ANY_STANDBY.to_string()),
        [only] => Some(format!("\"{only}\"")),
        many => {
            let quoted: Vec<String> = many.iter().map(|n| format!("\"{n}\"")).collect();
            Some(format!(
                "{} ({})",
                count.min(many.len()).max(1),
                quoted.join(",")
            ))
        }
    }
}

/// Standbys eligible to be synchronous, best first, at most `synchronous_node_count`
/// (sorted by name).
pub fn pick_sync_standbys(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
) -> Vec<String> {
    let n = dc.synchronous_node_count.max(1) as usize;
    let mut names: Vec<String> = eligible_standbys(cfg, dc, c, pg)
        .into_iter()
        .take(n)
        .collect();
    names.sort();
    names
}

/// Every standby that may be synchronous, best first: streams from me, runs, is not
/// `nosync`, has reported the position commits wait for (flush, or replay/write under
/// `synchronous_commit` `remote_apply`/`remote_write`) and, with
/// `maximum_lag_on_syncnode` > 0, is not lagging beyond it behind the best one by that
/// position: a standby that receives but stopped replaying holds up `remote_apply`
/// commits as much as one that receives nothing.
pub fn eligible_standbys(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
) -> Vec<String> {
    let acked = |r: &ReplicationConnection| r.acknowledged_lsn(pg.synchronous_commit.as_deref());
    let mut rows: Vec<(&ReplicationConnection, i64)> = pg
        .replication
        .iter()
        .filter_map(|r| {
            let m = c
                .members
                .iter()
                .find(|m| m.name.eq_ignore_ascii_case(&r.application_name))?;
            let eligible = m.name != cfg.name
                && m.data.state == Some(crate::model::MemberState::Running)
                && !m.data.tags.never_sync()
                && m.data
                    .tags
                    .replicatefrom
                    .as_deref()
                    .is_none_or(|f| f == cfg.name)
                && acked(r).is_some();
            eligible.then_some((r, m.data.tags.effective_sync_priority()))
        })
        .collect();
    rows.sort_by(|(a, pa), (b, pb)| {
        pb.cmp(pa)
            .then_with(|| (b.sync_state == "sync").cmp(&(a.sync_state == "sync")))
            .then_with(|| acked(b).cmp(&acked(a)))
            .then_with(|| a.application_name.cmp(&b.application_name))
    });
    if dc.maximum_lag_on_syncnode > 0 {
        // Measured against the best standby, or the primary itself when there is one.
        let best = match rows.len() {
            1 => pg.wal_position(),
            _ => rows.iter().filter_map(|(r, _)| acked(r)).max().unwrap_or(0),
        };
        rows.retain(|(r, _)| {
            best.saturating_sub(acked(r).unwrap_or(0)) <= dc.maximum_lag_on_syncnode as u64
        });
    }
    rows.into_iter()
        .map(|(r, _)| member_name(c, &r.application_name))
        .collect()
}

fn member_name(c: &Cluster, application_name: &str) -> String {
    c.members
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(application_name))
        .map_or_else(|| application_name.to_string(), |m| m.name.clone())
}

/// The leader's next synchronous-replication move. `confirm_from` is the WAL position
/// at the last change of `synchronous_standby_names`: a standby is published only
/// once it flushed up to there.
pub fn next_step(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
    confirm_from: Option<Lsn>,
) -> SyncStep {
    let me = cfg.name.as_str();
    let strict = dc.synchronous_mode_strict;
    let current = match c
        .sync
        .as_ref()
        .map(|s| &s.value)
        .filter(|s| s.is_leader(me))
    {
        Some(s) => s.clone(),
        None => {
            // Take the key over first: nobody else may be published while I lead.
            return SyncStep::WriteSync(SyncState {
                leader: Some(me.to_string()),
                sync_standby: Vec::new(),
                quorum: 0,
            });
        }
    };
    let have = StandbyNames::parse(pg.synchronous_standby_names.as_deref());
    // 0. Coming from quorum mode: a voter alone need not hold every acknowledged
    //    commit, so none is trusted until confirmed under FIRST semantics.
    if (have.any || current.quorum > 0) && !current.sync_standby.is_empty() {
        return SyncStep::WriteSync(SyncState {
            sync_standby: Vec::new(),
            quorum: 0,
            ..current
        });
    }
    let picked = pick_sync_standbys(cfg, dc, c, pg);
    // 1. Standbys leaving: out of `sync` first.
    let keep: Vec<String> = current
        .sync_standby
        .iter()
        .filter(|s| picked.contains(s))
        .cloned()
        .collect();
    if keep != current.sync_standby {
        return SyncStep::WriteSync(SyncState {
            sync_standby: keep,
            ..current
        });
    }
    // 2. `synchronous_standby_names` follows the picked set (strict: never empty).
    let wanted_names: Vec<String> = if picked.is_empty() && strict {
        vec![ANY_STANDBY.to_string()]
    } else {
        picked.clone()
    };
    let wanted = render_standby_names(&wanted_names, wanted_names.len());
    let have_count = have.count;
    let mut have_sorted = have.names.clone();
    have_sorted.sort();
    let mut want_sorted = wanted_names.clone();
    want_sorted.sort();
    if have.any
        || have_sorted != want_sorted
        || (have_count != want_sorted.len().min(have_count.max(1)) && want_sorted.len() > 1)
    {
        return SyncStep::SetStandbyNames(wanted);
    }
    // 3. Publish picked standbys that are synchronous and caught up.
    let mark = confirm_from.unwrap_or(0);
    let mut published = keep.clone();
    for name in &picked {
        if published.contains(name) {
            continue;
        }
        let confirmed = pg.replication.iter().any(|r| {
            r.application_name.eq_ignore_ascii_case(name)
                && r.sync_state == "sync"
                && r.flush_lsn.unwrap_or(0) >= mark
        });
        if confirmed {
            published.push(name.clone());
        }
    }
    published.sort();
    if published != current.sync_standby {
        return SyncStep::WriteSync(SyncState {
            sync_standby: published,
            ..current
        });
    }
    SyncStep::Settled
}

/// The change of `synchronous_standby_names` that follows, in the same cycle, the
/// `sync` write [`next_step`] asked for on this view once that write succeeded (None:
/// nothing follows it before the next observation). The key then says what was
/// written, so the ordering rule holds: a standby leaving is already out of `sync`, and
/// one joining is published only after a later observation confirms it.
pub fn after_sync_written(
    cfg: &NodeConfig,
    dc: &DynamicConfig,
    c: &Cluster,
    pg: &PgObservation,
    confirm_from: Option<Lsn>,
) -> Option<Option<String>> {
    let SyncStep::WriteSync(written) = next_step(cfg, dc, c, pg, confirm_from) else {
        return None;
    };
    let mut after = c.clone();
    after.sync = Some(Versioned {
        value: written,
        version: c.sync.as_ref().map_or(Version(0), |s| s.version),
    });
    match next_step(cfg, dc, &after, pg, confirm_from) {
        SyncStep::SetStandbyNames(value) => Some(value),
        SyncStep::Settled | SyncStep::WriteSync(_) | SyncStep::MarkConfirmPoint(_) => None,
    }
}

/// Whether synchronous replication is managed (on or quorum, and not a standby cluster).
pub fn is_active(dc: &DynamicConfig) -> bool {
    dc.synchronous_mode != SynchronousMode::Off && !dc.is_standby_cluster()
}

/// The `sync` value a new leader writes before promoting: no standby is trusted yet.
/// Keeping the old standbys (as Patroni does in strict mode) is unsafe: while
/// `synchronous_standby_names` is `*`, commits are acknowledged by whichever standby
/// flushes first, which need not be the one still named in the key, and that one could
/// then be promoted without them. Standbys are published again once they confirm.
pub fn before_promote(cfg: &NodeConfig) -> SyncState {
    SyncState {
        leader: Some(cfg.name.clone()),
        sync_standby: Vec::new(),
        quorum: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standby_names_round_trip() {
        assert_eq!(parse_standby_names(""), (0, vec![]));
        assert_eq!(parse_standby_names("\"b\""), (1, vec!["b".to_string()]));
        assert_eq!(
            parse_standby_names("2 (\"b\",\"c\")"),
            (2, vec!["b".into(), "c".into()])
        );
        assert_eq!(
            parse_standby_names("FIRST 1 (b, c)"),
            (1, vec!["b".into(), "c".into()])
        );
        assert_eq!(parse_standby_names("*"), (1, vec!["*".to_string()]));
        assert_eq!(
            render_standby_names(&["b".into(), "c".into()], 2).as_deref(),
            Some("2 (\"b\",\"c\")")
        );
        assert_eq!(render_standby_names(&[], 1), None);
    }
}
