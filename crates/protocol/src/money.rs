//! Money on the wire: exact decimals in, JSON numbers out.
//!
//! Amounts are computed with [`Decimal`] and never pass through a float: [`Money`] writes its
//! decimal text as the JSON number token itself (`12.5`, `128`), so what the OMS reads is
//! exactly what the database holds.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::Rejection;
use crate::lenient::Scalar;

/// An amount emitted as a JSON number with exactly its decimal digits (trailing zeros dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Money(pub Decimal);

impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = self.0.normalize().to_string();
        let raw = RawValue::from_string(text).map_err(serde::ser::Error::custom)?;
        raw.serialize(serializer)
    }
}

impl From<Decimal> for Money {
    fn from(d: Decimal) -> Self {
        Money(d)
    }
}

/// Splits `total` into `parts` amounts that add up to it exactly, at the precision of the
/// total (at least cents): `10.00 / 3` is `3.34, 3.33, 3.33`. Earlier parts take the
/// remainder, so the split is the same every time.
pub fn split(total: Decimal, parts: u32) -> Vec<Decimal> {
    if parts == 0 {
        return Vec::new();
    }
    let scale = total.normalize().scale().max(2);
    let n = Decimal::from(parts);
    let share = (total / n).trunc_with_scale(scale);
    let step = if total.is_sign_negative() {
        -Decimal::new(1, scale)
    } else {
        Decimal::new(1, scale)
    };
    let mut remainder = total - share * n;
    (0..parts)
        .map(|_| {
            if remainder != Decimal::ZERO {
                remainder -= step;
                share + step
            } else {
                share
            }
        })
        .collect()
}

/// A money amount as senders write it: a JSON number or a string holding one.
pub fn optional_amount(value: Option<Scalar>, field: &str) -> Result<Option<Decimal>, Rejection> {
    let text = match value {
        None => return Ok(None),
        Some(v) if v.is_absent() => return Ok(None),
        Some(Scalar::Int(i)) => return storable_amount(Decimal::from(i), field).map(Some),
        Some(Scalar::Float(f)) => f.to_string(),
        Some(Scalar::Str(s)) => s.trim().to_owned(),
        Some(other) => {
            return Err(Rejection::new(format!(
                "\"{field}\" is not an amount: {other:?}"
            )));
        }
    };
    let amount = Decimal::from_str(&text)
        .or_else(|_| Decimal::from_scientific(&text))
        .map_err(|_| Rejection::new(format!("\"{field}\" is not an amount: {text:?}")))?;
    storable_amount(amount, field).map(Some)
}

/// Amounts are stored as `numeric(20, 4)`: at most 16 digits before the decimal point. A larger
/// one is refused here, naming the field, instead of failing its batch in the database.
pub fn storable_amount(amount: Decimal, field: &str) -> Result<Decimal, Rejection> {
    // numeric(20, 4) rounds to four places before it checks the precision.
    if amount.round_dp(4).abs() >= Decimal::from(10_i64.pow(16)) {
        return Err(Rejection::new(format!(
            "\"{field}\" is out of range: {amount} (amounts are stored with at most 16 digits before the decimal point)"
        )));
    }
    Ok(amount)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn amounts_the_database_cannot_hold_are_refused_naming_the_field() {
        for value in [
            Scalar::Str("10000000000000000".into()),
            Scalar::Str("-1e17".into()),
            Scalar::Float(1e20),
            Scalar::Str("9999999999999999.99995".into()),
        ] {
            let err = optional_amount(Some(value.clone()), "cost_gross").unwrap_err();
            assert!(
                err.reason().starts_with("\"cost_gross\" is out of range"),
                "{value:?}: {err}"
            );
        }
        assert_eq!(
            optional_amount(Some(Scalar::Str("9999999999999999.9999".into())), "a").unwrap(),
            Some(d("9999999999999999.9999"))
        );
    }

    #[test]
    fn money_is_written_as_its_exact_decimal_number() {
        let json = serde_json::to_string(&[
            Money(d("12.50")),
            Money(d("128.0000")),
            Money(d("0.1")),
            Money(d("0")),
        ])
        .unwrap();
        assert_eq!(json, "[12.5,128,0.1,0]");
        let value = serde_json::to_value(Money(d("19.99"))).unwrap();
        assert!(value.is_number());
    }

    #[test]
    fn a_split_adds_up_to_the_total() {
        assert_eq!(split(d("10.00"), 3), vec![d("3.34"), d("3.33"), d("3.33")]);
        assert_eq!(split(d("5"), 2), vec![d("2.50"), d("2.50")]);
        assert_eq!(split(d("0.125"), 2), vec![d("0.063"), d("0.062")]);
        assert_eq!(split(d("7"), 1), vec![d("7")]);
    }

    #[test]
    fn amounts_are_read_from_numbers_and_strings() {
        assert_eq!(
            optional_amount(Some(Scalar::Str("12.30".into())), "a").unwrap(),
            Some(d("12.30"))
        );
        assert_eq!(
            optional_amount(Some(Scalar::Float(0.1)), "a").unwrap(),
            Some(d("0.1"))
        );
        assert_eq!(
            optional_amount(Some(Scalar::Int(3)), "a").unwrap(),
            Some(d("3"))
        );
        assert_eq!(
            optional_amount(Some(Scalar::Str("".into())), "a").unwrap(),
            None
        );
        assert!(optional_amount(Some(Scalar::Str("lots".into())), "a").is_err());
    }

    proptest! {
        #[test]
        fn splits_are_exact(cents in 0i64..10_000_000, parts in 1u32..50) {
            let total = Decimal::new(cents, 2);
            let shares = split(total, parts);
            prop_assert_eq!(shares.len(), parts as usize);
            prop_assert_eq!(shares.iter().copied().sum::<Decimal>(), total);
            let (min, max) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            prop_assert!(*max - *min <= Decimal::new(1, 2));
        }

        #[test]
        fn money_round_trips_through_json_text(units in 0i64..1_000_000_000_000, scale in 0u32..5) {
            let amount = Decimal::new(units, scale);
            let text = serde_json::to_string(&Money(amount)).unwrap();
            prop_assert_eq!(Decimal::from_str(&text).unwrap(), amount);
        }
    }
}
