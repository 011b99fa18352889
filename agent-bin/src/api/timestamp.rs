//! Timestamps as Patroni shows them: Patroni reads `timestamptz` values through
//! psycopg and prints them with Python's `str(datetime)`, so
//! `2024-01-01 12:00:00.1+00` (Postgres' text) is shown as
//! `2024-01-01 12:00:00.100000+00:00`.

/// Postgres' ISO text of a `timestamptz` (`2024-01-01 12:00:00.1+00`,
/// `… 12:00:00+05:30`) in Python's `str(datetime)` form
/// (`2024-01-01 12:00:00.100000+00:00`). Text in another form is returned unchanged.
pub fn patroni_timestamp(pg_text: &str) -> String {
    python_form(pg_text.trim()).unwrap_or_else(|| pg_text.to_string())
}

fn python_form(t: &str) -> Option<String> {
    // The zone starts at the last sign after the date's own dashes.
    let zone_at = t.get(10..)?.rfind(['+', '-'])? + 10;
    let (local, zone) = t.split_at(zone_at);
    let (date, time) = local.split_once(' ')?;
    if date.len() != 10 || !date.chars().all(|c| c.is_ascii_digit() || c == '-') {
        return None;
    }
    let (whole, fraction) = match time.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (time, None),
    };
    if whole.len() != 8 {
        return None;
    }
    let mut out = format!("{date} {whole}");
    if let Some(f) = fraction {
        if f.is_empty() || f.len() > 6 || !f.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        // Python prints microseconds in full and leaves them out when zero.
        if f.chars().any(|c| c != '0') {
            out.push('.');
            out.push_str(&format!("{f:0<6}"));
        }
    }
    let sign = &zone[..1];
    let parts: Vec<&str> = zone[1..].split(':').collect();
    if parts.is_empty()
        || parts.len() > 3
        || parts
            .iter()
            .any(|p| p.len() != 2 || !p.chars().all(|c| c.is_ascii_digit()))
    {
        return None;
    }
    let minutes = parts.get(1).copied().unwrap_or("00");
    out.push_str(&format!("{sign}{}:{minutes}", parts[0]));
    if let Some(seconds) = parts.get(2).filter(|s| **s != "00") {
        out.push_str(&format!(":{seconds}"));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::patroni_timestamp;

    #[test]
    fn postgres_text_becomes_pythons_datetime_text() {
        assert_eq!(
            patroni_timestamp("2024-01-01 12:00:00.123456+00"),
            "2024-01-01 12:00:00.123456+00:00"
        );
        assert_eq!(
            patroni_timestamp("2024-01-01 12:00:00.1+02"),
            "2024-01-01 12:00:00.100000+02:00"
        );
        assert_eq!(
            patroni_timestamp("2024-01-01 12:00:00-03:30"),
            "2024-01-01 12:00:00-03:30"
        );
        assert_eq!(
            patroni_timestamp("1900-01-01 00:00:00+00:53:28"),
            "1900-01-01 00:00:00+00:53:28"
        );
        assert_eq!(
            patroni_timestamp("2024-01-01 12:00:00.000000+00"),
            "2024-01-01 12:00:00+00:00"
        );
    }

    #[test]
    fn patroni_form_and_unknown_text_are_left_alone() {
        let done = "2023-08-18 11:03:37.966359+00:00";
        assert_eq!(patroni_timestamp(done), done);
        assert_eq!(patroni_timestamp("infinity"), "infinity");
        assert_eq!(patroni_timestamp("Mon Jan 01 2024"), "Mon Jan 01 2024");
    }
}
