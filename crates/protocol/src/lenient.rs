//! Lenient readers for the scalar values real senders write in many shapes.
//!
//! A [`Scalar`] takes whatever JSON scalar arrived; the `*_at` functions turn it into the type
//! the field means, or a [`Rejection`] that names the field and the value.

use std::fmt;

use chrono::{DateTime, NaiveDateTime, SubsecRound, Utc};
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
        Some(Scalar::Str(s)) if s.contains('\0') => Err(Rejection::new(format!(
            "\"{field}\" contains a NUL character, which no identifier may hold"
        ))),
        Some(Scalar::Str(s)) => Ok(s),
        Some(Scalar::Int(i)) => Ok(i.to_string()),
        Some(Scalar::BigUint(u)) => Ok(u.to_string()),
        Some(other) => Err(Rejection::new(format!(
            "\"{field}\" must be a string, got {}",
            other.describe()
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

/// A required timestamp. Accepts RFC 3339 (`2019-06-20T17:10:28+02:00`, `…Z`, fractions),
/// the same with a space for the `T`, and zone-less forms (`2019-06-20 17:10:28`) which mean
/// UTC. The result is truncated to microseconds, the precision PostgreSQL stores, so that
/// two timestamps compare the same in memory and in the database.
pub fn required_timestamp(value: Option<Scalar>, field: &str) -> Result<DateTime<Utc>, Rejection> {
    match value {
        None => Err(Rejection::new(format!("\"{field}\" is missing"))),
        Some(v) if v.is_absent() => Err(Rejection::new(format!("\"{field}\" is empty"))),
        Some(Scalar::Str(s)) => parse_timestamp(&s).ok_or_else(|| {
            Rejection::new(format!(
                "\"{field}\" is not a date and time: {s:?} (expected e.g. 2019-06-20T17:10:28+02:00 or 2019-06-20 17:10:28)"
            ))
        }),
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
