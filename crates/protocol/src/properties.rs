//! Properties of lenient parsing, over generated inputs: numbers written as strings parse to
//! the numbers, a timestamp written in any zone parses to the same instant, and keys the
//! protocol does not know change nothing.

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use proptest::prelude::*;
use serde_json::{Value, json};

use crate::inventory::{StockScope, parse_stock_snapshot};
use crate::lenient::{Scalar, parse_timestamp, required_count};
use crate::{Envelope, Limits};

fn raw(value: &Value) -> Box<serde_json::value::RawValue> {
    serde_json::value::RawValue::from_string(value.to_string()).unwrap()
}

proptest! {
    #[test]
    fn a_count_reads_the_same_as_a_number_or_as_any_string_of_it(n in 0i64..=i64::MAX / 2) {
        for written in [
            Scalar::Int(n),
            Scalar::Str(n.to_string()),
            Scalar::Str(format!("  {n} ")),
            Scalar::Str(format!("{n}.000")),
        ] {
            prop_assert_eq!(required_count(Some(written), "quantity").unwrap(), n);
        }
    }

    #[test]
    fn a_negative_count_is_always_refused_and_named(n in i64::MIN..0) {
        for written in [Scalar::Int(n), Scalar::Str(n.to_string())] {
            let reason = required_count(Some(written), "quantity").unwrap_err();
            prop_assert!(reason.reason().contains("negative"));
        }
    }

    #[test]
    fn a_timestamp_in_any_zone_is_the_same_instant(
        secs in 946_684_800i64..4_102_444_800,
        micros in 0u32..1_000_000,
        offset_minutes in -14 * 60i32..=14 * 60,
    ) {
        let instant = Utc.timestamp_opt(secs, micros * 1000).unwrap();
        let zone = FixedOffset::east_opt(offset_minutes * 60).unwrap();
        let local: DateTime<FixedOffset> = instant.with_timezone(&zone);
        for text in [
            local.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string(),
            local.format("%Y-%m-%d %H:%M:%S%.6f%:z").to_string(),
            local.format("%Y-%m-%dT%H:%M:%S%.6f%z").to_string(),
            instant.format("%Y-%m-%d %H:%M:%S%.6f").to_string(),
            instant.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string(),
        ] {
            prop_assert_eq!(parse_timestamp(&text), Some(instant), "{}", text);
        }
    }

    #[test]
    fn keys_the_protocol_does_not_know_change_nothing(
        extra in proptest::collection::btree_map("[a-z_]{1,12}", any::<i32>(), 0..5),
        quantity in 0i64..100_000,
    ) {
        let known = ["jsonrpc", "id", "method", "params", "snapshot", "aggregate_id", "mode",
                     "created_on", "stock", "sku", "quantity", "unlimited", "inflight_backorders",
                     "source_id", "batch"];
        let extra: serde_json::Map<String, Value> = extra
            .into_iter()
            .filter(|(k, _)| !known.contains(&k.as_str()))
            .map(|(k, v)| (k, json!(v)))
            .collect();
        let entry = json!({"sku": "SKU-1", "quantity": quantity});
        let snapshot = json!({"aggregate_id": "EU", "mode": "DELTA",
                              "created_on": "2026-01-01T00:00:00Z", "stock": [entry]});
        let plain = parse_stock_snapshot(&raw(&json!({"snapshot": snapshot})), StockScope::Aggregate, &Limits::default()).unwrap();

        let mut noisy_entry = entry;
        let mut noisy_snapshot = snapshot;
        for (k, v) in &extra {
            noisy_entry[k] = v.clone();
            noisy_snapshot[k] = v.clone();
        }
        noisy_snapshot["stock"] = json!([noisy_entry]);
        let mut params = json!({"snapshot": noisy_snapshot});
        let mut envelope = json!({"jsonrpc": "2.0", "method": "m", "params": params.clone()});
        for (k, v) in &extra {
            params[k] = v.clone();
            envelope[k] = v.clone();
        }
        envelope["params"] = params;
        let body = envelope.to_string();
        let parsed = Envelope::parse(body.as_bytes(), &Limits::default()).unwrap();
        let noisy = parse_stock_snapshot(parsed.params.unwrap(), StockScope::Aggregate, &Limits::default()).unwrap();
        prop_assert_eq!(plain, noisy);
    }
}
