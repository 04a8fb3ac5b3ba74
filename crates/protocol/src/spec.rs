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

/// Required fields that go out as `null` when the value is not known, as the captured real
/// export writes them (an offline payment has no account and no transaction; a back-office
/// order has no customer IP): `null` says "unknown" where `""` would pass for a value.
pub const UNKNOWN_AS_NULL: &[(&str, &str)] = &[
    ("magento.sales.order", "ip"),
    ("magento.sales.order_payment_transaction_gateway", "account"),
    (
        "magento.sales.order_payment_transaction_gateway",
        "transaction_id",
    ),
];

/// The one timestamp format of outbound messages (see [`crate::outbound::format_datetime`]).
const DATETIME_FORMAT: &str = "%Y-%m-%dT%H:%M:%S%:z";

/// Whether `text` is a timestamp as the connector writes them: RFC 3339, whole seconds,
/// numeric offset.
pub fn is_outbound_datetime(text: &str) -> bool {
    // `%:z` also reads `Z`; the length keeps the numeric offset (`+00:00`) the only form.
    text.len() == "2026-03-01T10:00:00+00:00".len()
        && chrono::DateTime::parse_from_str(text, DATETIME_FORMAT).is_ok()
}

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
    /// recursively every nested struct: unknown keys, missing (or `null`, see
    /// [`UNKNOWN_AS_NULL`]) required fields, empty required strings, values of the wrong type,
    /// timestamps not in the one outbound format and maps that are not objects are listed.
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
            let unknown_allowed = UNKNOWN_AS_NULL
                .iter()
                .any(|(s, f)| *s == struct_name && f == name);
            match object.get(name) {
                None if field.required => {
                    problems.push(format!("{path}.{name}: required field is missing"));
                }
                Some(Value::Null) if field.required && !unknown_allowed => {
                    problems.push(format!("{path}.{name}: required field is null"));
                }
                None | Some(Value::Null) => {}
                Some(Value::String(s)) if field.required && s.trim().is_empty() => {
                    problems.push(format!(
                        "{path}.{name}: required string is empty (an unknown value is null)"
                    ));
                }
                Some(v) => {
                    self.check_value(&format!("{path}.{name}"), &field.field_type, v, problems);
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
        if let Some(inner) = field_type
            .strip_prefix("map[")
            .and_then(|t| t.strip_suffix(']'))
        {
            match value.as_object() {
                Some(entries) => {
                    for (key, item) in entries {
                        self.check_value(&format!("{path}.{key}"), inner, item, problems);
                    }
                }
                None => problems.push(format!("{path}: expected a map (an object)")),
            }
            return;
        }
        let ok = match field_type {
            "datetime" => value.as_str().is_some_and(is_outbound_datetime),
            // A date, or a date with its time: the OMS's own senders write a refund's status
            // date with the time that orders its updates.
            "date" => value.as_str().is_some_and(|d| {
                chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_ok() || is_outbound_datetime(d)
            }),
            "string" | "uuid" => value.is_string(),
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
                    // A type the specification names but does not define (none today).
                    true
                }
            }
        };
        if !ok {
            let expected = match field_type {
                "datetime" => {
                    "datetime (RFC 3339, whole seconds, numeric offset: 2026-03-01T10:00:00+00:00)"
                }
                "date" => "date (2026-03-01 or 2026-03-01T10:00:00+00:00)",
                other => other,
            };
            problems.push(format!("{path}: {value} is not a valid {expected}"));
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
            created_on: "2020-01-01T00:00:00+00:00".into(),
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
                    "created_on" => Value::from("2020-01-01T00:00:00+00:00"),
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
    fn datetimes_must_be_in_the_one_outbound_format() {
        let spec = spec();
        let order_with = |date: &str| {
            let mut order = serde_json::Map::new();
            for (name, field) in &spec.structs["magento.sales.order"] {
                if field.required && name != "origin_date" {
                    order.insert(name.clone(), Value::Null);
                }
            }
            order.insert("origin_date".into(), Value::from(date));
            spec.check_struct("magento.sales.order", &Value::Object(order))
                .into_iter()
                .filter(|p| p.contains("origin_date"))
                .collect::<Vec<_>>()
        };
        assert!(order_with("2026-03-01T10:00:00+00:00").is_empty());
        assert!(order_with("2026-03-01T10:00:00-07:00").is_empty());
        for other in [
            "2026-03-01T10:00:00Z",
            "2026-03-01T10:00:00.123Z",
            "2026-03-01T10:00:00.123+00:00",
            "2026-03-01 10:00:00",
            "",
        ] {
            let problems = order_with(other);
            assert_eq!(problems.len(), 1, "{other:?} passed");
            assert!(
                problems[0].contains("whole seconds") || problems[0].contains("empty"),
                "{problems:?}"
            );
        }
    }

    #[test]
    fn a_required_field_is_never_empty_and_null_only_where_unknown_is_allowed() {
        let gateway = |account: Value, gateway_id: &str| {
            spec().check_struct(
                "magento.sales.order_payment_transaction_gateway",
                &serde_json::json!({"gateway_id": gateway_id, "account": account,
                                    "transaction_id": null}),
            )
        };
        assert!(gateway(Value::Null, "OFFLINE").is_empty());
        assert_eq!(
            gateway(Value::from(""), "OFFLINE"),
            [
                "magento.sales.order_payment_transaction_gateway.account: required string is \
                 empty (an unknown value is null)"
            ]
        );
        assert_eq!(
            gateway(Value::Null, ""),
            [
                "magento.sales.order_payment_transaction_gateway.gateway_id: required string is \
                 empty (an unknown value is null)"
            ]
        );
        let problems = spec().check_struct(
            "magento.sales.order_payment_transaction_gateway",
            &serde_json::json!({"gateway_id": null, "account": null, "transaction_id": null}),
        );
        assert_eq!(
            problems,
            ["magento.sales.order_payment_transaction_gateway.gateway_id: required field is null"]
        );
    }

    #[test]
    fn maps_are_objects_whose_values_have_the_maps_type() {
        let register = |labels: Value| {
            spec().check_params(
                crate::service_bus::methods::REGISTER,
                &serde_json::json!({"id": "shop", "labels": labels}),
            )
        };
        assert!(register(serde_json::json!({"version": "1.0.0"})).is_empty());
        assert_eq!(
            register(serde_json::json!({"version": 1})),
            ["magento.service_bus.remote.register.labels.version: 1 is not a valid string"]
        );
        assert_eq!(
            register(serde_json::json!(["version"])),
            ["magento.service_bus.remote.register.labels: expected a map (an object)"]
        );
    }

    /// Names inbound parsers read that the specification does not have, each because real
    /// senders write it (PROTOCOL.md, TRANSPORT.md).
    const READ_BEYOND_THE_SPEC: &[(&str, &str)] = &[
        // The real sender's typo for `shipment_id`.
        ("magento.logistics.customer_shipment", "shimpent_id"),
        // One wire type reads an order's and a line's attribute modification; the order's
        // has no line to name, and its parser ignores these.
        ("magento.sales.custom_attributes_modification", "line_id"),
        (
            "magento.sales.custom_attributes_modification",
            "line_number",
        ),
        (
            "magento.postsales.return_custom_attributes_modification",
            "line_id",
        ),
        (
            "magento.postsales.return_custom_attributes_modification",
            "line_number",
        ),
        // A return line is found by number first, by id when the number is missing.
        (
            "magento.postsales.return_line_custom_attributes_modification",
            "line_id",
        ),
    ];

    /// The spec struct at `path` (`shipment.items[]`) of `method`'s params, with its name:
    /// the spec's types followed from the arguments down. `None` under a name the spec lacks.
    fn struct_at(
        method: &str,
        path: &str,
    ) -> Option<(&'static str, &'static BTreeMap<String, Field>)> {
        let spec = spec();
        let mut current = ("(params)", &spec.methods[method].arguments);
        for segment in path.split('.').filter(|s| !s.is_empty()) {
            let (name, listed) = match segment.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (segment, false),
            };
            let field_type = current.1.get(name)?.field_type.as_str();
            let field_type = if listed {
                field_type
                    .strip_prefix("array[")
                    .and_then(|t| t.strip_suffix(']'))?
            } else {
                field_type
            };
            current = (field_type, spec.structs.get(field_type)?);
        }
        Some(current)
    }

    /// What `fields` (a parser's wire type, probed) reads that the specification does not
    /// have, for any of `methods` (the methods that share the wire type: a name one of them
    /// has at a path is allowed there).
    fn names_beyond_the_spec(methods: &[&str], fields: &crate::spec_probe::Fields) -> Vec<String> {
        let mut problems = Vec::new();
        for (path, names) in fields {
            let structs: Vec<_> = methods.iter().filter_map(|m| struct_at(m, path)).collect();
            // A path under a name the spec lacks was reported at that name.
            if structs.is_empty() {
                continue;
            }
            for name in names {
                let known = structs.iter().any(|(struct_name, fields)| {
                    fields.contains_key(*name)
                        || READ_BEYOND_THE_SPEC
                            .iter()
                            .chain(ACCEPTED_EXTRA_KEYS)
                            .any(|(s, n)| s == struct_name && n == name)
                });
                if !known {
                    let names: Vec<&str> = structs.iter().map(|(s, _)| *s).collect();
                    problems.push(format!(
                        "{methods:?} {path}: reads {name:?}, not in {}",
                        names.join(" or ")
                    ));
                }
            }
        }
        problems
    }

    #[test]
    fn every_modules_parsers_read_only_the_names_of_the_specification() {
        use crate::spec_probe::fields;
        use crate::{inventory, logistics, postsales, sales};
        let readers: Vec<(Vec<&str>, crate::spec_probe::Fields)> = vec![
            (
                vec![
                    inventory::methods::AGGREGATE_STOCK_UPDATED,
                    inventory::methods::SOURCE_STOCK_UPDATED,
                ],
                fields::<inventory::SnapshotParams>(),
            ),
            (
                vec![
                    inventory::methods::SOURCE_CREATED,
                    inventory::methods::SOURCE_UPDATED,
                ],
                fields::<inventory::SourceParams>(),
            ),
            (
                vec![inventory::methods::SOURCE_DELETED],
                fields::<inventory::SourceDeletedParams>(),
            ),
            (
                vec![sales::methods::CREATED, sales::methods::UPDATED],
                fields::<sales::WireUpdateParams>(),
            ),
            (
                vec![sales::methods::LINE_CANCELLED],
                fields::<sales::WireLineCancelled>(),
            ),
            (
                vec![
                    sales::methods::CUSTOM_ATTRIBUTES_UPDATED,
                    sales::methods::LINE_CUSTOM_ATTRIBUTES_UPDATED,
                ],
                fields::<sales::WireAttributesParams>(),
            ),
            (
                vec![sales::methods::SHIPPING_ADDRESS_UPDATED],
                fields::<sales::WireShippingAddressParams>(),
            ),
            (
                vec![sales::methods::SHIPMENT_DONE],
                fields::<logistics::WireParams>(),
            ),
            (
                vec![
                    postsales::methods::RETURN_UPDATED,
                    postsales::methods::RETURN_RECEIVED,
                ],
                fields::<postsales::WireReturnParams>(),
            ),
            (
                vec![
                    postsales::methods::RETURN_CUSTOM_ATTRIBUTES_UPDATED,
                    postsales::methods::RETURN_LINE_CUSTOM_ATTRIBUTES_UPDATED,
                ],
                fields::<postsales::WireReturnAttributesParams>(),
            ),
            (
                vec![postsales::methods::RETURN_DUPLICATED],
                fields::<postsales::WireReturnDuplicateParams>(),
            ),
            (
                vec![postsales::methods::REFUND_UPDATED],
                fields::<postsales::WireRefundParams>(),
            ),
            (
                vec![postsales::methods::REFUND_CUSTOM_ATTRIBUTES_UPDATED],
                fields::<postsales::WireRefundAttributesParams>(),
            ),
            (
                vec![crate::service_bus::methods::ACTIVATE],
                fields::<crate::service_bus::WireActivateParams>(),
            ),
        ];
        // Every method a module consumes has its reader here.
        let checked: Vec<&str> = readers.iter().flat_map(|(m, _)| m.clone()).collect();
        for method in inventory::methods::ALL
            .iter()
            .chain(sales::methods::CONSUMED)
            .chain(postsales::methods::CONSUMED)
        {
            assert!(checked.contains(method), "{method} has no reader checked");
            assert!(
                spec().methods.contains_key(*method),
                "{method} is not in the spec"
            );
        }
        let mut problems = Vec::new();
        for (methods, fields) in &readers {
            assert!(!fields.is_empty(), "{methods:?}: the probe saw no struct");
            problems.extend(names_beyond_the_spec(methods, fields));
        }
        assert!(problems.is_empty(), "{problems:#?}");
    }

    #[test]
    fn a_name_the_specification_lacks_is_found() {
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Misread {
            shipment: Option<Item>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Item {
            order_id: Option<String>,
            #[serde(default)]
            items: Vec<Line>,
        }
        #[derive(serde::Deserialize)]
        #[allow(dead_code)]
        struct Line {
            line_id: Option<String>,
        }
        let problems = names_beyond_the_spec(
            &[crate::sales::methods::SHIPMENT_DONE],
            &crate::spec_probe::fields::<Misread>(),
        );
        assert_eq!(
            problems,
            [
                "[\"magento.logistics.fulfillment_management.customer_shipment_done\"] \
                 shipment.items[]: reads \"line_id\", not in magento.logistics.item"
            ]
        );
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
