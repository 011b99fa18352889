//! `--scheduled` values: `now`, or an ISO 8601 time (the local time zone when none is
//! given), sent to the REST API with an explicit offset.

use super::error::{CtlError, CtlResult};
use chrono::{DateTime, FixedOffset, Local, NaiveDateTime, TimeZone};

/// `None` for `now` (or nothing); otherwise the time with its offset.
pub fn parse_scheduled(text: Option<&str>) -> CtlResult<Option<DateTime<FixedOffset>>> {
    let Some(t) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if t.eq_ignore_ascii_case("now") {
        return Ok(None);
    }
    let with_zone = DateTime::parse_from_rfc3339(t)
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%#z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M%#z"))
        .or_else(|_| DateTime::parse_from_str(t, "%Y-%m-%d %H:%M%#z"));
    if let Ok(at) = with_zone {
        return Ok(Some(at));
    }
    for f in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(naive) = NaiveDateTime::parse_from_str(t, f) {
            return match Local.from_local_datetime(&naive).earliest() {
                Some(local) => Ok(Some(local.fixed_offset())),
                None => Err(CtlError::failed(format!(
                    "Unable to parse scheduled timestamp ({t}): it does not exist in the local time zone"
                ))),
            };
        }
    }
    Err(CtlError::failed(format!(
        "Unable to parse scheduled timestamp ({t}). It should be in an unambiguous format, e.g. ISO 8601"
    )))
}

/// An hour from now, as the prompts' example.
pub fn next_hour_example() -> String {
    (Local::now() + chrono::Duration::hours(1))
        .format("%Y-%m-%dT%H:%M")
        .to_string()
}

/// The current local time as patronictl stamps messages.
pub fn timestamp() -> String {
    Local::now().format("%Y-%m-%d %H:%M:%S").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_and_empty_mean_immediately() {
        assert_eq!(parse_scheduled(None).unwrap(), None);
        assert_eq!(parse_scheduled(Some("now")).unwrap(), None);
        assert_eq!(parse_scheduled(Some(" NOW ")).unwrap(), None);
    }

    #[test]
    fn explicit_offsets_are_kept() {
        let t = parse_scheduled(Some("2030-01-02T03:04:05+02:00"))
            .unwrap()
            .unwrap();
        assert_eq!(t.to_rfc3339(), "2030-01-02T03:04:05+02:00");
        let t = parse_scheduled(Some("2030-01-02T03:04Z")).unwrap().unwrap();
        assert_eq!(t.to_rfc3339(), "2030-01-02T03:04:00+00:00");
    }

    #[test]
    fn naive_times_get_the_local_offset() {
        let t = parse_scheduled(Some("2030-01-02T03:04")).unwrap().unwrap();
        assert_eq!(t.naive_local().to_string(), "2030-01-02 03:04:00");
        assert!(t.to_rfc3339().starts_with("2030-01-02T03:04:00"));
    }

    #[test]
    fn garbage_is_refused() {
        let e = parse_scheduled(Some("tomorrow-ish"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("Unable to parse scheduled timestamp"), "{e}");
    }
}
