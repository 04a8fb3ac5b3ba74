//! The OMS specification's field table, derived from the vendor's XML by
//! `tools/derive-spec.py` into `spec/mom-fields.json` and compiled in.
//!
//! Tests use it to prove that what the connector emits uses exactly the spec's field names,
//! with every required field present, and that the parsers read the names the spec defines.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::Value;

/// One property of a struct or one argument of a method.
#[derive(Debug, Clone, Deserialize)]
pub struct Field {
    /// `string`, `integer`, `float`, `boolean`, `datetime`, `magento.<module>.<struct>`,
    /// or `array[…]` of any of these.
    #[serde(rename = "type")]
    pub field_type: String,
    pub required: bool,
}

/// A method of the catalog with its arguments (the members of `params`).
#[derive(Debug, Clone, Deserialize)]
pub struct Method {
    pub kind: String,
    pub arguments: BTreeMap<String, Field>,
}

#[derive(Debug, Deserialize)]
pub struct Spec {
    pub structs: BTreeMap<String, BTreeMap<String, Field>>,
    pub methods: BTreeMap<String, Method>,
    pub enums: BTreeMap<String, Vec<String>>,
}

/// Keys the specification does not list but real senders write and readers expect, by
/// struct. Commerce keys custom attributes as `attribute_code` as well as `name` (the
/// captured order export carries both), and PROTOCOL.md asks to emit both.
pub const ACCEPTED_EXTRA_KEYS: &[(&str, &str)] =
    &[("magento.common.custom_attribute", "attribute_code")];

/// The specification, parsed once.
pub fn spec() -> &'static Spec {
    static SPEC: OnceLock<Spec> = OnceLock::new();
    SPEC.get_or_init(|| {
        serde_json::from_str(include_str!("../spec/mom-fields.json"))
            .expect("the derived specification is valid JSON")
    })
}

impl Spec {
    /// Checks the `params` of an outbound message against the method's arguments, and
    /// recursively every nested struct: unknown keys and missing required fields are listed.
    pub fn check_params(&self, method: &str, params: &Value) -> Vec<String> {
        let Some(m) = self.methods.get(method) else {
            return vec![format!("method {method} is not in the specification")];
        };
        let mut problems = Vec::new();
        self.check_object(method, method, &m.arguments, params, &mut problems);
        problems
    }

    /// Checks one value against a named struct (`magento.sales.order`).
    pub fn check_struct(&self, name: &str, value: &Value) -> Vec<String> {
        let mut problems = Vec::new();
        match self.structs.get(name) {
            Some(fields) => self.check_object(name, name, fields, value, &mut problems),
            None => problems.push(format!("struct {name} is not in the specification")),
        }
        problems
    }

    fn check_object(
        &self,
        path: &str,
        struct_name: &str,
        fields: &BTreeMap<String, Field>,
        value: &Value,
        problems: &mut Vec<String>,
    ) {
        let Some(object) = value.as_object() else {
            problems.push(format!("{path}: expected an object"));
            return;
        };
        for (name, field) in fields {
            match object.get(name) {
                None | Some(Value::Null) if field.required => {
                    problems.push(format!("{path}.{name}: required field is missing"));
                }
                None | Some(Value::Null) => {}
                Some(v) => {
                    self.check_value(&format!("{path}.{name}"), &field.field_type, v, problems)
                }
            }
        }
        for key in object.keys() {
            let accepted = ACCEPTED_EXTRA_KEYS
                .iter()
                .any(|(s, k)| *s == struct_name && k == key);
            if !fields.contains_key(key) && !accepted {
                problems.push(format!("{path}.{key}: not a field of the specification"));
            }
        }
    }

    fn check_value(&self, path: &str, field_type: &str, value: &Value, problems: &mut Vec<String>) {
        if let Some(inner) = field_type
            .strip_prefix("array[")
            .and_then(|t| t.strip_suffix(']'))
        {
            match value.as_array() {
                Some(items) => {
                    for (i, item) in items.iter().enumerate() {
                        self.check_value(&format!("{path}[{i}]"), inner, item, problems);
                    }
                }
                None => problems.push(format!("{path}: expected an array")),
            }
            return;
        }
        let ok = match field_type {
            "string" | "datetime" | "date" | "uuid" => value.is_string(),
            "integer" => value.is_i64() || value.is_u64(),
            "float" | "number" | "decimal" => value.is_number(),
            "boolean" => value.is_boolean(),
            "mixed" | "" => true,
            named => {
                if let Some(fields) = self.structs.get(named) {
                    self.check_object(path, named, fields, value, problems);
                    true
                } else if let Some(values) = self.enums.get(named) {
                    value
                        .as_str()
                        .is_some_and(|v| values.iter().any(|allowed| allowed == v))
                } else {
                    // A type the specification names but does not define (e.g. a map).
                    true
                }
            }
        };
        if !ok {
            problems.push(format!("{path}: {value} is not a valid {field_type}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::{StockScope, WireStockEntry, WireStockSnapshot, methods};
    use crate::{Limits, inventory::SnapshotMode};

    #[test]
    fn every_inventory_method_we_consume_is_in_the_specification() {
        for method in methods::ALL {
            let m = spec().methods.get(*method);
            assert!(m.is_some_and(|m| m.kind == "event"), "{method}");
        }
    }

    #[test]
    fn the_simulated_snapshot_matches_the_specification() {
        let snapshot = WireStockSnapshot {
            aggregate_id: Some("EU"),
            source_id: None,
            mode: SnapshotMode::Full,
            created_on: "2020-01-01T00:00:00Z".into(),
            stock: vec![WireStockEntry {
                sku: "A",
                quantity: 1,
                unlimited: true,
            }],
        };
        let problems = spec().check_params(methods::AGGREGATE_STOCK_UPDATED, &snapshot.params());
        assert!(problems.is_empty(), "{problems:?}");
    }

    #[test]
    fn the_parsers_read_the_field_names_of_the_specification() {
        // Build a snapshot from nothing but the spec's required names; the parser must accept
        // it, so it cannot be reading a name the spec does not have.
        for (method, scope, snapshot_struct, entry_struct) in [
            (
                methods::AGGREGATE_STOCK_UPDATED,
                StockScope::Aggregate,
                "magento.inventory.aggregate_snapshot",
                "magento.inventory.aggregate_snapshot_sku",
            ),
            (
                methods::SOURCE_STOCK_UPDATED,
                StockScope::Source,
                "magento.inventory.source_snapshot",
                "magento.inventory.source_snapshot_sku",
            ),
        ] {
            let spec = spec();
            let required = |name: &str| -> Vec<String> {
                spec.structs[name]
                    .iter()
                    .filter(|(_, f)| f.required)
                    .map(|(n, _)| n.clone())
                    .collect()
            };
            let mut entry = serde_json::Map::new();
            for name in required(entry_struct) {
                let v = match name.as_str() {
                    "sku" => Value::from("SKU-1"),
                    "quantity" => Value::from(4),
                    other => panic!("unexpected required entry field {other}"),
                };
                entry.insert(name, v);
            }
            let mut snapshot = serde_json::Map::new();
            for name in required(snapshot_struct) {
                let v = match name.as_str() {
                    "aggregate_id" | "source_id" => Value::from("X"),
                    "mode" => Value::from("DELTA"),
                    "created_on" => Value::from("2020-01-01 00:00:00"),
                    "stock" => Value::Array(vec![Value::Object(entry.clone())]),
                    other => panic!("unexpected required snapshot field {other}"),
                };
                snapshot.insert(name, v);
            }
            let params = serde_json::json!({ "snapshot": snapshot });
            assert!(spec.check_params(method, &params).is_empty());
            let raw = serde_json::value::RawValue::from_string(params.to_string()).unwrap();
            let parsed =
                crate::inventory::parse_stock_snapshot(&raw, scope, &Limits::default()).unwrap();
            assert_eq!(parsed.stock[0].quantity, 4);
        }
    }

    #[test]
    fn the_snapshot_modes_are_those_of_the_specification() {
        let modes = &spec().enums["magento.inventory.snapshot_mode"];
        for mode in [
            SnapshotMode::Full,
            SnapshotMode::NonZero,
            SnapshotMode::Delta,
        ] {
            assert!(modes.iter().any(|m| m == mode.as_str()), "{mode:?}");
        }
    }
}
