//! Parameters renamed between PostgreSQL major versions, translated for the server
//! that will read them, as Patroni does, so one configuration serves every version:
//!
//! - `wal_keep_segments` (before 13) and `wal_keep_size` (13 and later): the one the
//!   server does not know becomes the one it knows, segments × WAL segment size in MB
//!   (rounded to whole segments going back). When both are given, the one the server
//!   knows wins and the other is dropped. Neither given: 128MB (8 segments of 16MB).
//! - `wal_level: hot_standby` (before 9.6) is `replica`.

use crate::error::{DriverError, Result};
use crate::server_facts::ServerFacts;
use std::collections::BTreeMap;

/// The first major version with `wal_keep_size` instead of `wal_keep_segments`.
pub const WAL_KEEP_SIZE_SINCE: u32 = 13;
/// What is kept when neither parameter is given, in MB.
pub const DEFAULT_WAL_KEEP_MB: u64 = 128;

/// Translates the renamed parameters in `p` for the server `facts` describes. With an
/// unknown version the parameters stay as given.
pub fn adapt(p: &mut BTreeMap<String, String>, facts: &ServerFacts) -> Result<()> {
    let Some(major) = facts.major else {
        if !p.contains_key("wal_keep_segments") {
            p.entry("wal_keep_size".into())
                .or_insert_with(|| format!("{DEFAULT_WAL_KEEP_MB}MB"));
        }
        return Ok(());
    };
    if major >= 10 && p.get("wal_level").map(String::as_str) == Some("hot_standby") {
        p.insert("wal_level".into(), "replica".into());
    }
    let seg = facts.wal_segment_mb.max(1);
    if major >= WAL_KEEP_SIZE_SINCE {
        let segments = p.remove("wal_keep_segments");
        if !p.contains_key("wal_keep_size") {
            let mb = match segments {
                Some(s) => parse_segments(&s)? * seg,
                None => DEFAULT_WAL_KEEP_MB,
            };
            p.insert("wal_keep_size".into(), format!("{mb}MB"));
        }
    } else {
        let size = p.remove("wal_keep_size");
        if !p.contains_key("wal_keep_segments") {
            let mb = match size {
                Some(s) => parse_megabytes(&s)?,
                None => DEFAULT_WAL_KEEP_MB,
            };
            p.insert(
                "wal_keep_segments".into(),
                ((mb + seg / 2) / seg).to_string(),
            );
        }
    }
    Ok(())
}

/// Checks the values [`adapt`] reads, so a bad one is refused with the configuration.
pub fn check<'a>(params: impl IntoIterator<Item = (&'a String, String)>) -> Result<()> {
    for (k, v) in params {
        match k.as_str() {
            "wal_keep_segments" => {
                parse_segments(&v)?;
            }
            "wal_keep_size" => {
                parse_megabytes(&v)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn parse_segments(v: &str) -> Result<u64> {
    v.trim().parse().map_err(|_| {
        DriverError::Config(format!(
            "parameter wal_keep_segments: `{v}` is not a whole number of WAL segments"
        ))
    })
}

/// A size in MB from a postgresql.conf value (`128`, `128MB`, `1GB`, `512kB`, `1TB`);
/// kB round up to whole MB.
fn parse_megabytes(v: &str) -> Result<u64> {
    let bad = || {
        DriverError::Config(format!(
            "parameter wal_keep_size: `{v}` is not a size such as 128MB or 1GB"
        ))
    };
    let t = v.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let n: u64 = t[..digits].parse().map_err(|_| bad())?;
    let mb = match t[digits..].trim() {
        "" | "MB" => Some(n),
        "kB" => Some(n.div_ceil(1024)),
        "GB" => n.checked_mul(1024),
        "TB" => n.checked_mul(1024 * 1024),
        _ => None,
    };
    mb.ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn adapted(major: u32, seg_mb: u64, given: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut p: BTreeMap<String, String> = given
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let facts = ServerFacts {
            major: Some(major),
            wal_segment_mb: seg_mb,
        };
        adapt(&mut p, &facts).unwrap();
        p.into_iter().collect()
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn segments_become_a_size_from_13_on() {
        assert_eq!(
            adapted(15, 16, &[("wal_keep_segments", "100")]),
            pairs(&[("wal_keep_size", "1600MB")])
        );
        assert_eq!(
            adapted(13, 64, &[("wal_keep_segments", "100")]),
            pairs(&[("wal_keep_size", "6400MB")])
        );
        assert_eq!(
            adapted(
                15,
                16,
                &[("wal_keep_segments", "100"), ("wal_keep_size", "1GB")]
            ),
            pairs(&[("wal_keep_size", "1GB")]),
            "the one the server knows wins"
        );
        assert_eq!(adapted(16, 16, &[]), pairs(&[("wal_keep_size", "128MB")]));
    }

    #[test]
    fn a_size_becomes_segments_before_13() {
        assert_eq!(
            adapted(12, 16, &[("wal_keep_size", "1GB")]),
            pairs(&[("wal_keep_segments", "64")])
        );
        assert_eq!(
            adapted(12, 16, &[("wal_keep_size", "100")]),
            pairs(&[("wal_keep_segments", "6")]),
            "100MB is 6.25 segments: rounded"
        );
        assert_eq!(
            adapted(12, 16, &[("wal_keep_size", "24MB")]),
            pairs(&[("wal_keep_segments", "2")]),
            "1.5 segments round up"
        );
        assert_eq!(
            adapted(
                12,
                16,
                &[("wal_keep_size", "1GB"), ("wal_keep_segments", "10")]
            ),
            pairs(&[("wal_keep_segments", "10")])
        );
        assert_eq!(adapted(12, 16, &[]), pairs(&[("wal_keep_segments", "8")]));
        assert_eq!(adapted(11, 64, &[]), pairs(&[("wal_keep_segments", "2")]));
    }

    #[test]
    fn hot_standby_wal_level_is_replica() {
        assert_eq!(
            adapted(15, 16, &[("wal_level", "hot_standby")]),
            pairs(&[("wal_keep_size", "128MB"), ("wal_level", "replica")])
        );
        assert_eq!(
            adapted(15, 16, &[("wal_level", "logical")]),
            pairs(&[("wal_keep_size", "128MB"), ("wal_level", "logical")])
        );
    }

    #[test]
    fn unknown_version_leaves_the_parameters_as_given() {
        let mut p = BTreeMap::from([("wal_keep_segments".to_string(), "100".to_string())]);
        let facts = ServerFacts {
            major: None,
            wal_segment_mb: 16,
        };
        adapt(&mut p, &facts).unwrap();
        assert_eq!(
            p.into_iter().collect::<Vec<_>>(),
            pairs(&[("wal_keep_segments", "100")])
        );
    }

    #[test]
    fn bad_values_are_refused_naming_the_parameter() {
        let mut p = BTreeMap::from([("wal_keep_segments".to_string(), "many".to_string())]);
        let err = adapt(&mut p, &ServerFacts::major(15)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad postgresql configuration: parameter wal_keep_segments: `many` is not a whole number of WAL segments"
        );
        let mut p = BTreeMap::from([("wal_keep_size".to_string(), "1 XB".to_string())]);
        let err = adapt(&mut p, &ServerFacts::major(12)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "bad postgresql configuration: parameter wal_keep_size: `1 XB` is not a size such as 128MB or 1GB"
        );
        assert_eq!(parse_megabytes("512kB").unwrap(), 1);
        assert_eq!(parse_megabytes(" 2 GB").unwrap(), 2048);
        assert_eq!(parse_megabytes("1TB").unwrap(), 1024 * 1024);
    }
}
