//! Counting what a message holds before anything of it is kept.
//!
//! The typed parsers turn every element of a list into a struct tens of times the size of its
//! JSON: `{}` is two bytes of body and over a hundred bytes of parsed row, so an 8 MiB body of
//! empty rows would take hundreds of MiB before any check on the parsed message could refuse
//! it. [`check`] walks the params once, keeping nothing (no value, no row, only the names on
//! the path to where it is), and stops at the first list longer than
//! [`Limits::max_message_rows`] or once the params hold more JSON values than a message of
//! that many rows can need. What the parsers then build is bounded by the limit, not by the
//! body.

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::{Limits, Rejection};

/// JSON values (list items, object fields) one row may bring along: a return line with its
/// status, reason, condition and a few custom attributes is about 20.
pub const VALUES_PER_ROW: usize = 32;

/// Whatever the row limit, a message's header fields always fit.
const MIN_VALUES: usize = 4096;

/// Below this depth the walk descends; deeper values are skipped without recursion (serde_json
/// skips them iteratively). No parser reads that deep, and serde_json's own recursion limit
/// (128) refuses anything deeper that a parser would try to keep.
const MAX_DEPTH: usize = 64;

/// The most JSON values a message may hold under `limits`.
pub fn max_values(limits: &Limits) -> usize {
    limits
        .max_message_rows
        .saturating_mul(VALUES_PER_ROW)
        .max(MIN_VALUES)
}

/// Refuses params with a list of more than `limits.max_message_rows` items, or more than
/// [`max_values`] values in all, naming the list. Allocates only the names of the keys on the
/// current path (and only those written with escapes).
pub fn check(params: &RawValue, limits: &Limits) -> Result<(), Rejection> {
    let census = Census {
        max_rows: limits.max_message_rows,
        values_left: Cell::new(max_values(limits)),
        max_values: max_values(limits),
        refusal: Cell::new(None),
    };
    let root = Path::Root;
    let mut deserializer = serde_json::Deserializer::from_str(params.get());
    let walked = Node {
        census: &census,
        path: &root,
        depth: 0,
    }
    .deserialize(&mut deserializer);
    match walked {
        Ok(()) => Ok(()),
        Err(e) => Err(census
            .refusal
            .take()
            .unwrap_or_else(|| Rejection::new(format!("params are malformed: {e}")))),
    }
}

struct Census {
    max_rows: usize,
    max_values: usize,
    values_left: Cell<usize>,
    /// Why the walk stopped; the serde error that stops it carries line and column only.
    refusal: Cell<Option<Rejection>>,
}

impl Census {
    fn refuse<E: de::Error>(&self, reason: String) -> E {
        let error = E::custom(&reason);
        self.refusal.set(Some(Rejection::new(reason)));
        error
    }

    /// Counts one more value (a list item or an object field) against the budget.
    fn count_value<E: de::Error>(&self, path: &Path<'_>) -> Result<(), E> {
        match self.values_left.get().checked_sub(1) {
            Some(left) => {
                self.values_left.set(left);
                Ok(())
            }
            None => Err(self.refuse(format!(
                "params hold more than {} values (at {path}); the limit is {VALUES_PER_ROW} per row of OMSC_MAX_MESSAGE_ROWS",
                self.max_values
            ))),
        }
    }
}

/// Where a value is, for the rejection: `snapshot.stock`, `order.lines[3].payments`.
enum Path<'p> {
    Root,
    Key(&'p Path<'p>, &'p str),
    Index(&'p Path<'p>, usize),
}

impl fmt::Display for Path<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Root => f.write_str("params"),
            Path::Key(Path::Root, key) => f.write_str(key),
            Path::Key(parent, key) => write!(f, "{parent}.{key}"),
            Path::Index(parent, i) => write!(f, "{parent}[{i}]"),
        }
    }
}

struct Node<'c, 'p> {
    census: &'c Census,
    path: &'p Path<'p>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        if self.depth > 0 {
            // Every value but the params themselves is an item or a field of another one.
            self.census.count_value::<D::Error>(self.path)?;
        }
        if self.depth >= MAX_DEPTH {
            <IgnoredAny as serde::Deserialize<'de>>::deserialize(deserializer)?;
            return Ok(());
        }
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let census = self.census;
        let mut items = 0usize;
        loop {
            let path = Path::Index(self.path, items);
            let item = Node {
                census,
                path: &path,
                depth: self.depth + 1,
            };
            if seq.next_element_seed(item)?.is_none() {
                return Ok(());
            }
            items += 1;
            if items > census.max_rows {
                return Err(census.refuse(format!(
                    "{} has more than {} rows; the limit is OMSC_MAX_MESSAGE_ROWS",
                    self.path, census.max_rows
                )));
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let census = self.census;
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let path = Path::Key(self.path, &key);
            map.next_value_seed(Node {
                census,
                path: &path,
                depth: self.depth + 1,
            })?;
        }
        Ok(())
    }
}

/// An object key, borrowed from the body unless it is written with escapes.
struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rows: usize) -> Limits {
        Limits {
            max_message_rows: rows,
            ..Limits::default()
        }
    }

    fn check_text(json: &str, rows: usize) -> Result<(), Rejection> {
        check(
            &RawValue::from_string(json.to_owned()).unwrap(),
            &limits(rows),
        )
    }

    #[test]
    fn a_list_of_exactly_the_limit_passes() {
        let json = format!(r#"{{"snapshot":{{"stock":[{}]}}}}"#, ["{}"; 3].join(","));
        assert_eq!(check_text(&json, 3), Ok(()));
        assert_eq!(check_text(r#"{"snapshot":{"stock":[]}}"#, 0), Ok(()));
    }

    #[test]
    fn a_list_over_the_limit_is_refused_by_its_name() {
        let json = format!(r#"{{"snapshot":{{"stock":[{}]}}}}"#, ["{}"; 4].join(","));
        let err = check_text(&json, 3).unwrap_err();
        assert_eq!(
            err.reason(),
            "snapshot.stock has more than 3 rows; the limit is OMSC_MAX_MESSAGE_ROWS"
        );
    }

    #[test]
    fn nested_lists_are_named_with_their_index() {
        let json = r#"{"order":{"lines":[{"payments":[]},{"payments":[1,2,3]}]}}"#;
        let err = check_text(json, 2).unwrap_err();
        assert_eq!(
            err.reason(),
            "order.lines[1].payments has more than 2 rows; the limit is OMSC_MAX_MESSAGE_ROWS"
        );
    }

    #[test]
    fn the_walk_stops_at_the_first_row_over_the_limit() {
        // The rest of the list is not even valid JSON: nothing after the limit is read.
        let json = r#"{"stock":[{},{},{}, this is never read"#;
        let mut deserializer = serde_json::Deserializer::from_str(json);
        let census = Census {
            max_rows: 2,
            max_values: 100,
            values_left: Cell::new(100),
            refusal: Cell::new(None),
        };
        let walked = Node {
            census: &census,
            path: &Path::Root,
            depth: 0,
        }
        .deserialize(&mut deserializer);
        assert!(walked.is_err());
        assert_eq!(
            census.refusal.take().map(|r| r.reason().to_owned()),
            Some("stock has more than 2 rows; the limit is OMSC_MAX_MESSAGE_ROWS".to_owned())
        );
    }

    #[test]
    fn many_short_lists_are_bounded_by_the_values_they_hold_in_all() {
        // 200 lines of 100 payments each: no list is over the limit of 200 rows, but 20,000
        // payments are more than 200 rows' worth of values.
        let line = format!(r#"{{"payments":[{}]}}"#, vec!["{}"; 100].join(","));
        let json = format!(r#"{{"order":{{"lines":[{}]}}}}"#, vec![line; 200].join(","));
        let err = check_text(&json, 200).unwrap_err();
        assert!(
            err.reason()
                .starts_with("params hold more than 6400 values (at order.lines["),
            "{err}"
        );
        assert!(err.reason().contains("OMSC_MAX_MESSAGE_ROWS"), "{err}");
    }

    #[test]
    fn a_realistic_full_message_fits() {
        let row = r#"{"id":"l","line_number":1,"sku":"S","status":"RETURNED","reason":"r","condition":"c","condition_description":"d","custom_attributes":[{"name":"a","value":"1"},{"name":"b","value":"2"},{"name":"c","value":"3"}]}"#;
        let json = format!(
            r#"{{"return":{{"order_id":"o","rma":"r","status":{{"code":"c","date":"d"}},"lines":[{}]}}}}"#,
            vec![row; 10_000].join(",")
        );
        assert_eq!(check_text(&json, 10_000), Ok(()));
    }

    #[test]
    fn escaped_keys_are_named_as_read() {
        let json = r#"{"sn\u0061pshot":{"stock":[1,2]}}"#;
        let err = check_text(json, 1).unwrap_err();
        assert!(err.reason().starts_with("snapshot.stock has more"), "{err}");
    }

    #[test]
    fn deep_nesting_is_skipped_not_recursed() {
        let json = format!(r#"{{"x":{}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(check_text(&json, 10), Ok(()));
    }
}
