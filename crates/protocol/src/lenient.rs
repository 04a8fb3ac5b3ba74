//! Lenient readers for the scalar values real senders write in many shapes.
//!
//! A [`Scalar`] takes whatever JSON scalar arrived; the `*_at` functions turn it into the type
//! the field means, or a [`Rejection`] that names the field and the value.

use std::fmt;

use chrono::{DateTime, NaiveDate, NaiveDateTime, SubsecRound, Utc};
use serde::de::{self, Deserialize, Deserializer, Visitor};

use crate::Rejection;

/// Any JSON value in a field that should hold a scalar. Arrays and objects are kept as
/// `Composite` so that the validation step can name them in its rejection.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Null,
    Bool(bool),
    Int(i64),
    /// Unsigned integers above `i64::MAX`.
    BigUint(u64),
    Float(f64),
    Str(String),
    Composite(&'static str),
}

impl Scalar {
    /// True for `null` and for strings that are empty or only whitespace: senders use both
    /// for "no value".
    pub fn is_absent(&self) -> bool {
        match self {
            Scalar::Null => true,
            Scalar::Str(s) => s.trim().is_empty(),
            _ => false,
        }
    }

    fn describe(&self) -> String {
        match self {
            Scalar::Null => "null".into(),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::BigUint(u) => u.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Str(s) => format!("{s:?}"),
            Scalar::Composite(kind) => (*kind).to_owned(),
        }
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ScalarVisitor;

        impl<'de> Visitor<'de> for ScalarVisitor {
            type Value = Scalar;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_none<E: de::Error>(self) -> Result<Scalar, E> {
                Ok(Scalar::Null)
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Scalar, E> {
                Ok(Scalar::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Scalar, E> {
                Ok(Scalar::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Scalar, E> {
                Ok(i64::try_from(v).map_or(Scalar::BigUint(v), Scalar::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Scalar, E> {
                Ok(Scalar::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scalar, E> {
                Ok(Scalar::Str(v.to_owned()))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Scalar, E> {
                Ok(Scalar::Str(v))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Scalar, A::Error> {
                while seq.next_element::<de::IgnoredAny>()?.is_some() {}
                Ok(Scalar::Composite("an array"))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Scalar, A::Error> {
                while map
                    .next_entry::<de::IgnoredAny, de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(Scalar::Composite("an object"))
            }
        }

        deserializer.deserialize_any(ScalarVisitor)
    }
}

/// A required, non-empty string. Numbers are accepted and kept in their decimal form
/// (some senders write ids as numbers).
pub fn required_string(value: Option<Scalar>, field: &str) -> Result<String, Rejection> {
    match value {
        None => Err(Rejection::new(format!("\"{field}\" is missing"))),
        Some(v) if v.is_absent() => Err(Rejection::new(format!("\"{field}\" is empty"))),
        Some(Scalar::Str(s)) => storable_text(s, field),
        Some(Scalar::Int(i)) => Ok(i.to_string()),
        Some(Scalar::BigUint(u)) => Ok(u.to_string()),
        Some(other) => Err(Rejection::new(format!(
            "\"{field}\" must be a string, got {}",
            other.describe()
        ))),
    }
}

/// Text as PostgreSQL can store it: `text` cannot hold a NUL character, so a string with one
/// is refused here, naming the field, instead of failing its batch in the database.
pub fn storable_text(text: String, field: &str) -> Result<String, Rejection> {
    if text.contains('\0') {
        return Err(Rejection::new(format!(
            "\"{field}\" contains a NUL character, which the database cannot store"
        )));
    }
    Ok(text)
}

/// A free value (a custom attribute's): any scalar, kept in its textual form; absent and null
/// are the empty string.
pub fn value_text(value: Option<Scalar>, field: &str) -> Result<String, Rejection> {
    match value {
        None | Some(Scalar::Null) => Ok(String::new()),
        Some(Scalar::Str(s)) => storable_text(s, field),
        Some(Scalar::Int(n)) => Ok(n.to_string()),
        Some(Scalar::BigUint(n)) => Ok(n.to_string()),
        Some(Scalar::Float(f)) => Ok(f.to_string()),
        Some(Scalar::Bool(b)) => Ok(b.to_string()),
        Some(Scalar::Composite(kind)) => Err(Rejection::new(format!(
            "\"{field}\" must be a string, got {kind}"
        ))),
    }
}

/// An optional string: absent, null and empty all mean "no value".
pub fn optional_string(value: Option<Scalar>, field: &str) -> Result<Option<String>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if v.is_absent() => Ok(None),
        Some(v) => required_string(Some(v), field).map(Some),
    }
}

/// A required count that cannot be negative: an integer, or a string holding one
/// (`"12"`, `" 12 "`), or a float with no fractional part (`12.0`).
pub fn required_count(value: Option<Scalar>, field: &str) -> Result<i64, Rejection> {
    let value = match value {
        None => return Err(Rejection::new(format!("\"{field}\" is missing"))),
        Some(v) if v.is_absent() => {
            return Err(Rejection::new(format!("\"{field}\" is empty")));
        }
        Some(v) => v,
    };
    let n = match &value {
        Scalar::Int(i) => Some(*i),
        Scalar::Float(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        Scalar::Str(s) => parse_integer_text(s.trim()),
        _ => None,
    };
    if n.is_none() && is_whole_beyond_bigint(&value) {
        return Err(Rejection::new(format!(
            "\"{field}\" is out of range: {} (quantities are stored as 64-bit integers, at most {})",
            value.describe(),
            i64::MAX
        )));
    }
    match n {
        Some(n) if n < 0 => Err(Rejection::new(format!(
            "\"{field}\" is negative ({n}); quantities are absolute and never below zero"
        ))),
        Some(n) => Ok(n),
        None => Err(Rejection::new(format!(
            "\"{field}\" is not a whole number: {}",
            value.describe()
        ))),
    }
}

/// An optional count: absent, null or empty mean "no value".
pub fn optional_count(value: Option<Scalar>, field: &str) -> Result<Option<i64>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if v.is_absent() => Ok(None),
        Some(v) => required_count(Some(v), field).map(Some),
    }
}

/// A whole number too large for a 64-bit integer (the `bigint` a quantity is stored in), as
/// opposed to something that is not a whole number at all.
fn is_whole_beyond_bigint(value: &Scalar) -> bool {
    match value {
        Scalar::BigUint(_) => true,
        Scalar::Float(f) => f.is_finite() && f.fract() == 0.0,
        Scalar::Str(s) => {
            let digits = s.trim().trim_start_matches(['-', '+']);
            let digits = digits.split_once('.').map_or(digits, |(whole, fraction)| {
                if fraction.bytes().all(|b| b == b'0') {
                    whole
                } else {
                    ""
                }
            });
            !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
        }
        _ => false,
    }
}

fn parse_integer_text(s: &str) -> Option<i64> {
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    // "12.0" and "12.000" from senders that format every number as a decimal.
    let (whole, fraction) = s.split_once('.')?;
    if !fraction.is_empty() && fraction.bytes().all(|b| b == b'0') {
        whole.parse().ok()
    } else {
        None
    }
}

/// An optional flag: JSON booleans, `"true"`/`"false"`, `"1"`/`"0"`, `1`/`0`.
/// Absent, null or empty mean `default`.
pub fn flag(value: Option<Scalar>, field: &str, default: bool) -> Result<bool, Rejection> {
    match value {
        None => Ok(default),
        Some(v) if v.is_absent() => Ok(default),
        Some(Scalar::Bool(b)) => Ok(b),
        Some(Scalar::Int(0)) => Ok(false),
        Some(Scalar::Int(1)) => Ok(true),
        Some(Scalar::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "1" | "yes" => Ok(true),
            "false" | "0" | "no" => Ok(false),
            _ => Err(Rejection::new(format!(
                "\"{field}\" is not a boolean: {s:?}"
            ))),
        },
        Some(other) => Err(Rejection::new(format!(
            "\"{field}\" is not a boolean: {}",
            other.describe()
        ))),
    }
}

/// The first instant a timestamp may be: year 1. PostgreSQL goes back to 4713 BC, but RFC 3339
/// (what the connector sends on) has no year 0 or before, and no sender means one.
pub fn earliest_timestamp() -> DateTime<Utc> {
    DateTime::<Utc>::from_naive_utc_and_offset(
        NaiveDate::from_ymd_opt(1, 1, 1)
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .expect("year 1 is a date"),
        Utc,
    )
}

/// The last instant a timestamp may be: the end of year 9999, the last a four-digit RFC 3339
/// year can write (PostgreSQL and chrono go further; the OMS and Commerce do not).
pub fn latest_timestamp() -> DateTime<Utc> {
    DateTime::<Utc>::from_naive_utc_and_offset(
        NaiveDate::from_ymd_opt(9999, 12, 31)
            .and_then(|d| d.and_hms_micro_opt(23, 59, 59, 999_999))
            .expect("9999-12-31 is a date"),
        Utc,
    )
}

/// A timestamp the database can store and the connector can write back: between
/// [`earliest_timestamp`] and [`latest_timestamp`]. One outside is refused at once, naming the
/// field, instead of failing its batch in the database.
pub fn storable_timestamp(ts: DateTime<Utc>, field: &str) -> Result<DateTime<Utc>, Rejection> {
    if ts < earliest_timestamp() || ts > latest_timestamp() {
        return Err(Rejection::new(format!(
            "\"{field}\" is out of range: {} (dates from year 1 to year 9999 are accepted)",
            ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        )));
    }
    Ok(ts)
}

/// A required timestamp. Accepts RFC 3339 (`2019-06-20T17:10:28+02:00`, `…Z`, fractions),
/// the same with a space for the `T`, and zone-less forms (`2019-06-20 17:10:28`) which mean
/// UTC. The result is truncated to microseconds, the precision PostgreSQL stores, so that
/// two timestamps compare the same in memory and in the database, and must lie between years
/// 1 and 9999 ([`storable_timestamp`]).
pub fn required_timestamp(value: Option<Scalar>, field: &str) -> Result<DateTime<Utc>, Rejection> {
    match value {
        None => Err(Rejection::new(format!("\"{field}\" is missing"))),
        Some(v) if v.is_absent() => Err(Rejection::new(format!("\"{field}\" is empty"))),
        Some(Scalar::Str(s)) => match parse_timestamp(&s) {
            Some(ts) => storable_timestamp(ts, field),
            None => Err(Rejection::new(format!(
                "\"{field}\" is not a date and time: {s:?} (expected e.g. 2019-06-20T17:10:28+02:00 or 2019-06-20 17:10:28)"
            ))),
        },
        Some(other) => Err(Rejection::new(format!(
            "\"{field}\" must be a date-time string, got {}",
            other.describe()
        ))),
    }
}

/// An optional timestamp: absent, null or empty mean "no value".
pub fn optional_timestamp(
    value: Option<Scalar>,
    field: &str,
) -> Result<Option<DateTime<Utc>>, Rejection> {
    match value {
        None => Ok(None),
        Some(v) if v.is_absent() => Ok(None),
        Some(v) => required_timestamp(Some(v), field).map(Some),
    }
}

/// Parses the timestamp shapes real senders write; see [`required_timestamp`].
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let text = text.trim();
    let parsed = DateTime::parse_from_rfc3339(text)
        .ok()
        .or_else(|| DateTime::parse_from_rfc3339(&text.replacen(' ', "T", 1)).ok())
        .map(|dt| dt.with_timezone(&Utc))
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"]
                .iter()
                .find_map(|f| DateTime::parse_from_str(text, f).ok())
                .map(|dt| dt.with_timezone(&Utc))
        })
        .or_else(|| {
            ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M:%S%.f"]
                .iter()
                .find_map(|f| NaiveDateTime::parse_from_str(text, f).ok())
                .map(|naive| naive.and_utc())
        })?;
    Some(parsed.trunc_subsecs(6))
}

/// Formats a timestamp the way the connector emits it: RFC 3339 in UTC, with as many
/// fractional digits as it has (none, milli, micro).
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn s(text: &str) -> Option<Scalar> {
        Some(Scalar::Str(text.into()))
    }

    #[test]
    fn counts_accept_numbers_written_every_way() {
        assert_eq!(required_count(Some(Scalar::Int(7)), "q").unwrap(), 7);
        assert_eq!(required_count(s("7"), "q").unwrap(), 7);
        assert_eq!(required_count(s(" 7 "), "q").unwrap(), 7);
        assert_eq!(required_count(s("7.00"), "q").unwrap(), 7);
        assert_eq!(required_count(Some(Scalar::Float(7.0)), "q").unwrap(), 7);
        assert_eq!(required_count(Some(Scalar::Int(0)), "q").unwrap(), 0);
    }

    #[test]
    fn counts_reject_negatives_fractions_and_words() {
        for (value, expected) in [
            (Some(Scalar::Int(-1)), "negative"),
            (s("-3"), "negative"),
            (s("1.5"), "not a whole number"),
            (Some(Scalar::Float(1.5)), "not a whole number"),
            (s("ten"), "not a whole number"),
            (Some(Scalar::Bool(true)), "not a whole number"),
            (Some(Scalar::Composite("an array")), "not a whole number"),
            (s(""), "empty"),
            (None, "missing"),
        ] {
            let err = required_count(value.clone(), "quantity").unwrap_err();
            assert!(err.reason().contains(expected), "{value:?}: {err}");
            assert!(err.reason().contains("\"quantity\""), "{err}");
        }
    }

    #[test]
    fn timestamps_with_and_without_zones() {
        let utc = |h, m, s| Utc.with_ymd_and_hms(2019, 6, 20, h, m, s).unwrap();
        assert_eq!(
            parse_timestamp("2019-06-20T17:10:28+02:00"),
            Some(utc(15, 10, 28))
        );
        assert_eq!(
            parse_timestamp("2019-06-20T17:10:28Z"),
            Some(utc(17, 10, 28))
        );
        assert_eq!(
            parse_timestamp("2019-06-20 17:10:28"),
            Some(utc(17, 10, 28))
        );
        assert_eq!(
            parse_timestamp("2019-06-20T17:10:28"),
            Some(utc(17, 10, 28))
        );
        assert_eq!(
            parse_timestamp("2019-06-20 17:10:28+0200"),
            Some(utc(15, 10, 28))
        );
        assert_eq!(
            parse_timestamp("2019-06-20 17:10:28+02:00"),
            Some(utc(15, 10, 28))
        );
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_timestamp("2019-13-40 17:10:28"), None);
    }

    #[test]
    fn timestamps_are_truncated_to_microseconds() {
        let ts = parse_timestamp("2019-06-20T17:10:28.123456789Z").unwrap();
        assert_eq!(ts.timestamp_subsec_nanos(), 123_456_000);
        assert_eq!(format_timestamp(&ts), "2019-06-20T17:10:28.123456Z");
    }

    #[test]
    fn timestamps_the_database_cannot_hold_are_refused_naming_the_field() {
        for text in [
            "-5000-01-01T00:00:00Z",
            "-5000-01-01 00:00:00",
            "0000-12-31 23:59:59",
            "10000-01-01T00:00:00Z",
            "+10000-01-01 00:00:00",
            "262143-12-31 23:59:59",
            // Year 9999 in its zone, year 10000 in UTC.
            "9999-12-31T23:30:00-01:00",
        ] {
            let err = required_timestamp(s(text), "created_on").unwrap_err();
            assert!(
                err.reason().starts_with("\"created_on\" is")
                    && (err.reason().contains("out of range")
                        || err.reason().contains("not a date and time")),
                "{text}: {err}"
            );
        }
        for text in [
            "+10000-01-01 00:00:00",
            "0000-12-31 23:59:59",
            "9999-12-31T23:30:00-01:00",
        ] {
            let err = required_timestamp(s(text), "created_on").unwrap_err();
            assert!(err.reason().contains("is out of range"), "{text}: {err}");
        }
        let err = required_timestamp(s("-5000-01-01 00:00:00"), "created_on").unwrap_err();
        assert_eq!(
            err.reason(),
            "\"created_on\" is out of range: -5000-01-01T00:00:00Z (dates from year 1 to year 9999 are accepted)"
        );
        assert!(optional_timestamp(s("10000-01-01 00:00:00"), "status_date").is_err());
    }

    #[test]
    fn timestamps_at_the_ends_of_the_range_are_accepted() {
        let first = required_timestamp(s("0001-01-01T00:00:00Z"), "t").unwrap();
        assert_eq!(first, earliest_timestamp());
        let last = required_timestamp(s("9999-12-31T23:59:59.999999Z"), "t").unwrap();
        assert_eq!(last, latest_timestamp());
    }

    #[test]
    fn text_with_a_nul_is_refused_wherever_it_is_read() {
        let nul = || s("a\u{0}b");
        for err in [
            required_string(nul(), "order_id").unwrap_err(),
            optional_string(nul(), "status_reason").unwrap_err(),
            value_text(nul(), "value").unwrap_err(),
        ] {
            assert!(
                err.reason()
                    .ends_with("contains a NUL character, which the database cannot store"),
                "{err}"
            );
        }
        assert_eq!(value_text(s("plain"), "value").unwrap(), "plain");
        assert_eq!(value_text(None, "value").unwrap(), "");
        assert_eq!(value_text(Some(Scalar::Int(3)), "value").unwrap(), "3");
    }

    #[test]
    fn counts_beyond_a_bigint_are_out_of_range_not_words() {
        for value in [
            Scalar::BigUint(u64::MAX),
            Scalar::Str("9223372036854775808".into()),
            Scalar::Str("-99999999999999999999".into()),
            Scalar::Float(1e300),
        ] {
            let err = required_count(Some(value.clone()), "quantity").unwrap_err();
            assert!(
                err.reason().starts_with("\"quantity\" is out of range"),
                "{value:?}: {err}"
            );
        }
        assert_eq!(
            required_count(Some(Scalar::Int(i64::MAX)), "quantity").unwrap(),
            i64::MAX
        );
    }

    #[test]
    fn flags_accept_common_spellings() {
        assert!(flag(Some(Scalar::Bool(true)), "f", false).unwrap());
        assert!(flag(s("true"), "f", false).unwrap());
        assert!(!flag(s("0"), "f", true).unwrap());
        assert!(flag(s(""), "f", true).unwrap());
        assert!(flag(None, "f", true).unwrap());
        assert!(flag(s("maybe"), "f", false).is_err());
    }

    #[test]
    fn strings_accept_numbers_and_refuse_empties() {
        assert_eq!(required_string(Some(Scalar::Int(12)), "id").unwrap(), "12");
        assert!(
            required_string(s("  "), "id")
                .unwrap_err()
                .reason()
                .contains("empty")
        );
        assert_eq!(optional_string(s(""), "id").unwrap(), None);
    }
}
