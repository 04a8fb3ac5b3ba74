//! How values leave the connector, the same way in every outbound message: timestamps as
//! RFC 3339 with whole seconds and a numeric offset (`2026-03-01T10:00:00+00:00`), as the
//! specification's examples and the captured real export write them, and an unknown value as
//! `null`, never `""`.

use chrono::{DateTime, SecondsFormat, Utc};

/// A timestamp as every outbound message writes it: RFC 3339, whole seconds (a fraction is
/// cut off, never rounded up into the next second), numeric offset `+00:00`.
pub fn format_datetime(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(SecondsFormat::Secs, false)
}

/// A text that may be unknown: `None` when blank, so that it goes out as `null` and never as
/// an empty string a reader could take for a value.
pub fn known(text: &str) -> Option<String> {
    let trimmed = text.trim();
    (!trimmed.is_empty()).then(|| text.to_owned())
}

/// [`known`] for a text the storefront may not have at all.
pub fn known_opt(text: Option<&str>) -> Option<String> {
    text.and_then(known)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn timestamps_go_out_with_whole_seconds_and_a_numeric_offset() {
        let at = Utc.with_ymd_and_hms(2026, 3, 1, 10, 0, 0).unwrap();
        assert_eq!(format_datetime(&at), "2026-03-01T10:00:00+00:00");
        let with_micros = at + chrono::Duration::microseconds(999_999);
        assert_eq!(format_datetime(&with_micros), "2026-03-01T10:00:00+00:00");
    }

    #[test]
    fn a_blank_text_is_unknown() {
        assert_eq!(known(""), None);
        assert_eq!(known("  "), None);
        assert_eq!(known("10.0.0.1").as_deref(), Some("10.0.0.1"));
        assert_eq!(known_opt(None), None);
        assert_eq!(known_opt(Some("")), None);
    }
}
