//! Inventory messages (`magento.inventory.*`): stock snapshots per aggregate and per source,
//! and the sources themselves. Field names follow `inventory/aggregate_stock.xml`,
//! `inventory/source_stock.xml` and `inventory/source.xml` of the OMS specification.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::{Limits, Rejection};

/// The inventory methods the connector consumes.
pub mod methods {
    /// Sellable stock per stock aggregate (FULL, NONZERO or DELTA).
    pub const AGGREGATE_STOCK_UPDATED: &str =
        "magento.inventory.aggregate_stock_management.updated";
    /// Stock per source (multi-location inventory), same modes.
    pub const SOURCE_STOCK_UPDATED: &str = "magento.inventory.source_stock_management.updated";
    pub const SOURCE_CREATED: &str = "magento.inventory.source_management.created";
    pub const SOURCE_UPDATED: &str = "magento.inventory.source_management.updated";
    pub const SOURCE_DELETED: &str = "magento.inventory.source_management.deleted";

    /// Every inventory method the connector consumes, for routing and registration.
    pub const ALL: &[&str] = &[
        AGGREGATE_STOCK_UPDATED,
        SOURCE_STOCK_UPDATED,
        SOURCE_CREATED,
        SOURCE_UPDATED,
        SOURCE_DELETED,
    ];

    /// Every source the OMS knows, page by page: a synchronous query through the service
    /// bus (`{base}/remote/oms`), which no queue is bound to, hence not in [`ALL`].
    pub const SOURCE_SEARCH: &str = "magento.inventory.source_repository.search";
}

/// How a snapshot relates to the SKUs it leaves out (`magento.inventory.snapshot_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum SnapshotMode {
    /// Every SKU of the aggregate; SKUs left out keep their value.
    #[serde(rename = "FULL")]
    Full,
    /// Every SKU that has stock; SKUs left out are 0 (unlimited ones excepted).
    #[serde(rename = "NONZERO")]
    NonZero,
    /// Only SKUs that changed.
    #[serde(rename = "DELTA")]
    Delta,
}

impl SnapshotMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SnapshotMode::Full => "FULL",
            SnapshotMode::NonZero => "NONZERO",
            SnapshotMode::Delta => "DELTA",
        }
    }

    fn parse(value: Option<Scalar>) -> Result<Self, Rejection> {
        let text = lenient::required_string(value, "mode")?;
        match text.trim().to_ascii_uppercase().as_str() {
            "FULL" => Ok(SnapshotMode::Full),
            "NONZERO" | "NON_ZERO" => Ok(SnapshotMode::NonZero),
            "DELTA" => Ok(SnapshotMode::Delta),
            _ => Err(Rejection::new(format!(
                "unknown snapshot \"mode\" {text:?} (expected FULL, NONZERO or DELTA)"
            ))),
        }
    }
}

/// Which ledger a snapshot writes: sellable stock per aggregate, or stock per source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StockScope {
    Aggregate,
    Source,
}

impl StockScope {
    /// The name of the field that identifies the scope in a snapshot.
    pub fn id_field(self) -> &'static str {
        match self {
            StockScope::Aggregate => "aggregate_id",
            StockScope::Source => "source_id",
        }
    }
}

/// A stock snapshot (`aggregate_snapshot` or `source_snapshot`), validated: the mode is
/// known, `created_on` is a real instant, every SKU is valid and every quantity is a count.
#[derive(Debug, Clone, PartialEq)]
pub struct StockSnapshot {
    pub scope: StockScope,
    /// The aggregate id or the source id, by `scope`.
    pub scope_id: String,
    pub mode: SnapshotMode,
    /// The snapshot's version: every chunk of one FULL or NONZERO export carries the time the
    /// export started.
    pub created_on: DateTime<Utc>,
    pub stock: Vec<StockEntry>,
    /// Chunk numbering, which only source snapshots carry.
    pub batch: Option<SnapshotBatch>,
}

/// One SKU of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockEntry {
    pub sku: String,
    /// Absolute quantity, never an increment.
    pub quantity: i64,
    /// Always sellable whatever the quantity.
    pub unlimited: bool,
    pub inflight_backorders: Option<i64>,
}

/// `source_snapshot_batch`: which chunk of a multi-message source export this is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBatch {
    pub process_id: String,
    pub process_number: i64,
    pub process_total: i64,
}

#[derive(Deserialize)]
pub(crate) struct SnapshotParams {
    snapshot: Option<WireSnapshot>,
}

#[derive(Deserialize)]
struct WireSnapshot {
    aggregate_id: Option<Scalar>,
    source_id: Option<Scalar>,
    mode: Option<Scalar>,
    created_on: Option<Scalar>,
    stock: Option<Vec<WireEntry>>,
    batch: Option<WireBatch>,
}

#[derive(Deserialize)]
struct WireEntry {
    sku: Option<Scalar>,
    quantity: Option<Scalar>,
    unlimited: Option<Scalar>,
    inflight_backorders: Option<Scalar>,
}

#[derive(Deserialize)]
struct WireBatch {
    process_id: Option<Scalar>,
    process_number: Option<Scalar>,
    process_total: Option<Scalar>,
}

/// Parses the params of `aggregate_stock_management.updated` (`scope = Aggregate`) or
/// `source_stock_management.updated` (`scope = Source`).
pub fn parse_stock_snapshot(
    params: &RawValue,
    scope: StockScope,
    limits: &Limits,
) -> Result<StockSnapshot, Rejection> {
    let wire: SnapshotParams = serde_json::from_str(params.get())
        .map_err(|e| Rejection::new(format!("snapshot is malformed: {e}")))?;
    let wire = wire
        .snapshot
        .ok_or_else(|| Rejection::new("params have no \"snapshot\""))?;
    validate_snapshot(wire, scope, limits).map_err(|r| r.at("snapshot"))
}

fn validate_snapshot(
    wire: WireSnapshot,
    scope: StockScope,
    limits: &Limits,
) -> Result<StockSnapshot, Rejection> {
    let id_value = match scope {
        StockScope::Aggregate => wire.aggregate_id,
        StockScope::Source => wire.source_id,
    };
    let scope_id = lenient::required_string(id_value, scope.id_field())?;
    let mode = SnapshotMode::parse(wire.mode)?;
    let created_on = lenient::required_timestamp(wire.created_on, "created_on")?;
    let wire_stock = wire
        .stock
        .ok_or_else(|| Rejection::new("\"stock\" is missing"))?;
    if wire_stock.len() > limits.max_snapshot_skus {
        return Err(Rejection::new(format!(
            "\"stock\" lists {} SKUs, over the limit of {} per snapshot",
            wire_stock.len(),
            limits.max_snapshot_skus
        )));
    }
    let mut stock = Vec::with_capacity(wire_stock.len());
    for (i, entry) in wire_stock.into_iter().enumerate() {
        stock.push(validate_entry(entry, limits).map_err(|r| r.at(&format!("stock[{i}]")))?);
    }
    let batch = wire
        .batch
        .map(|b| -> Result<SnapshotBatch, Rejection> {
            Ok(SnapshotBatch {
                process_id: lenient::required_string(b.process_id, "process_id")?,
                process_number: lenient::required_count(b.process_number, "process_number")?,
                process_total: lenient::required_count(b.process_total, "process_total")?,
            })
        })
        .transpose()
        .map_err(|r| r.at("batch"))?;
    Ok(StockSnapshot {
        scope,
        scope_id,
        mode,
        created_on,
        stock,
        batch,
    })
}

fn validate_entry(entry: WireEntry, limits: &Limits) -> Result<StockEntry, Rejection> {
    let sku = validate_sku(entry.sku, limits)?;
    Ok(StockEntry {
        quantity: lenient::required_count(entry.quantity, "quantity")?,
        unlimited: lenient::flag(entry.unlimited, "unlimited", false)?,
        inflight_backorders: lenient::optional_count(
            entry.inflight_backorders,
            "inflight_backorders",
        )?,
        sku,
    })
}

/// A SKU is a non-empty string of at most `limits.max_sku_chars` characters without
/// control characters. It is kept exactly as sent: SKUs are case- and space-sensitive.
pub fn validate_sku(value: Option<Scalar>, limits: &Limits) -> Result<String, Rejection> {
    let sku = lenient::required_string(value, "sku")?;
    let chars = sku.chars().count();
    if chars > limits.max_sku_chars {
        return Err(Rejection::new(format!(
            "\"sku\" is {chars} characters long, over the limit of {}",
            limits.max_sku_chars
        )));
    }
    if sku.chars().any(char::is_control) {
        return Err(Rejection::new(format!(
            "\"sku\" {sku:?} contains a control character"
        )));
    }
    Ok(sku)
}

/// A stock source (warehouse, store) as the OMS describes it (`magento.inventory.source`).
#[derive(Debug, Clone, PartialEq)]
#[allow(
    clippy::struct_excessive_bools,
    reason = "the OMS's own flags of a source, as the specification has them"
)]
pub struct Source {
    pub id: String,
    pub name: Option<String>,
    pub source_type: Option<String>,
    pub timezone: Option<String>,
    pub active: bool,
    /// The aggregates whose sellable stock this source feeds.
    pub aggregate_ids: Vec<String>,
    /// Customers can collect orders here: one of `configurations.capabilities.services` names
    /// a pickup service (`PICKUP`, `STORE_PICKUP`, `CLICK_AND_COLLECT`, …), or the source may
    /// receive shipments from other sources for collection (`fulfillment.can_ship_to_source`).
    pub store_pickup: bool,
    pub ship_from_store: bool,
    pub accepts_returns: bool,
    /// The source exactly as sent, for everything the typed fields do not cover.
    pub raw: Value,
}

#[derive(Deserialize)]
pub(crate) struct SourceParams {
    source: Option<Value>,
}

#[derive(Deserialize)]
pub(crate) struct SourceDeletedParams {
    source_id: Option<Scalar>,
}

/// Parses the params of `source_management.created` and `.updated`.
pub fn parse_source(params: &RawValue) -> Result<Source, Rejection> {
    let wire: SourceParams = serde_json::from_str(params.get())
        .map_err(|e| Rejection::new(format!("source is malformed: {e}")))?;
    let raw = wire
        .source
        .ok_or_else(|| Rejection::new("params have no \"source\""))?;
    validate_source(raw).map_err(|r| r.at("source"))
}

fn validate_source(raw: Value) -> Result<Source, Rejection> {
    if !raw.is_object() {
        return Err(Rejection::new("must be an object"));
    }
    if contains_nul(&raw) {
        return Err(Rejection::new("contains a NUL character"));
    }
    let field = |path: &[&str]| -> Option<Scalar> {
        let mut v = &raw;
        for key in path {
            v = v.get(key)?;
        }
        Some(scalar_of(v))
    };
    let configurations = |path: &[&str]| {
        let mut full = vec!["configurations"];
        full.extend_from_slice(path);
        field(&full)
    };
    let services: Vec<String> = raw
        .pointer("/configurations/capabilities/services")
        .and_then(Value::as_array)
        .map(|list| {
            list.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let offers_pickup_service = services.iter().any(|s| {
        let s = s.to_ascii_uppercase();
        s.contains("PICKUP") || s.contains("PICK_UP") || s.contains("COLLECT")
    });
    let aggregate_ids = match raw.get("aggregate_ids") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                lenient::required_string(Some(scalar_of(v)), "aggregate_ids")
                    .map_err(|r| r.at(&format!("aggregate_ids[{i}]")))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(Rejection::new("\"aggregate_ids\" must be an array")),
    };
    Ok(Source {
        id: lenient::required_string(field(&["id"]), "id")?,
        name: lenient::optional_string(field(&["name"]), "name")?,
        source_type: lenient::optional_string(field(&["type"]), "type")?,
        timezone: lenient::optional_string(field(&["timezone"]), "timezone")?,
        active: lenient::flag(configurations(&["active"]), "configurations.active", true)?,
        store_pickup: offers_pickup_service
            || lenient::flag(
                configurations(&["capabilities", "fulfillment", "can_ship_to_source"]),
                "can_ship_to_source",
                false,
            )?,
        ship_from_store: lenient::flag(
            configurations(&["ship_from_store"]),
            "configurations.ship_from_store",
            false,
        )?,
        accepts_returns: lenient::flag(
            configurations(&["capabilities", "accepts_returns"]),
            "accepts_returns",
            false,
        )?,
        aggregate_ids,
        raw,
    })
}

/// The params of `source_repository.search` for the sources from `offset` on, `size` at
/// most (`magento.common.query`), in id order so that pages neither overlap nor skip while
/// the sources do not change.
pub fn source_search_params(offset: u64, size: u64) -> Value {
    serde_json::json!({
        "query": {"offset": offset, "size": size, "order": {"id": "ASC"}}
    })
}

/// One page of the answer to `source_repository.search` (`magento.inventory.source_collection`).
#[derive(Debug)]
pub struct SourcePage {
    /// The offset the bus says this page starts at, when it says.
    pub offset: Option<u64>,
    /// How many sources match in all, when the bus says.
    pub total: Option<u64>,
    /// Each item as a source, or why it is not one (the rejection names `items[i]`).
    pub items: Vec<Result<Source, Rejection>>,
}

/// Reads the `result` of `source_repository.search`. A page that is not a collection is
/// refused as a whole; an item that is not a valid source is refused alone.
pub fn parse_source_page(result: &Value) -> Result<SourcePage, Rejection> {
    let Value::Object(page) = result else {
        return Err(Rejection::new(format!(
            "the answer is not a source collection: {}",
            kind_of(result)
        )));
    };
    let count = |field: &str| -> Result<Option<u64>, Rejection> {
        match page.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
            Some(Value::String(s)) if s.trim().parse::<u64>().is_ok() => Ok(s.trim().parse().ok()),
            Some(other) => Err(Rejection::new(format!(
                "\"{field}\" is not a count: {other}"
            ))),
        }
    };
    let items = match page.get("items") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                validate_source(item.clone()).map_err(|r| r.at(&format!("items[{i}]")))
            })
            .collect(),
        Some(other) => {
            return Err(Rejection::new(format!(
                "\"items\" must be an array, not {}",
                kind_of(other)
            )));
        }
    };
    Ok(SourcePage {
        offset: count("offset")?,
        total: count("total")?,
        items,
    })
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Parses the params of `source_management.deleted`: the id of the source.
pub fn parse_source_deleted(params: &RawValue) -> Result<String, Rejection> {
    let wire: SourceDeletedParams = serde_json::from_str(params.get())
        .map_err(|e| Rejection::new(format!("params are malformed: {e}")))?;
    lenient::required_string(wire.source_id, "source_id")
}

fn scalar_of(v: &Value) -> Scalar {
    match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => n
            .as_i64()
            .map(Scalar::Int)
            .or_else(|| n.as_u64().map(Scalar::BigUint))
            .unwrap_or_else(|| Scalar::Float(n.as_f64().unwrap_or(f64::NAN))),
        Value::String(s) => Scalar::Str(s.clone()),
        Value::Array(_) => Scalar::Composite("an array"),
        Value::Object(_) => Scalar::Composite("an object"),
    }
}

/// PostgreSQL cannot store NUL in `text` or `jsonb`; a message carrying one is refused here
/// rather than failing its whole batch in the database.
fn contains_nul(v: &Value) -> bool {
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(contains_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || contains_nul(v)),
        _ => false,
    }
}

/// The wire form of a stock snapshot, as the OMS sends it; used by the traffic simulator and
/// tests to produce exactly what a real sender would.
#[derive(Debug, Clone, Serialize)]
pub struct WireStockSnapshot<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub aggregate_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_id: Option<&'a str>,
    pub mode: SnapshotMode,
    pub created_on: String,
    pub stock: Vec<WireStockEntry<'a>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct WireStockEntry<'a> {
    pub sku: &'a str,
    pub quantity: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unlimited: bool,
}

impl<'a> WireStockSnapshot<'a> {
    /// The params object (`{"snapshot": …}`) of the matching `*.updated` method.
    pub fn params(&self) -> Value {
        serde_json::json!({ "snapshot": self })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    fn aggregate(json: &str) -> Result<StockSnapshot, Rejection> {
        parse_stock_snapshot(&raw(json), StockScope::Aggregate, &Limits::default())
    }

    fn rendered_template(qty: &str) -> String {
        include_str!(
            "../fixtures/mock-templates/magento.inventory.aggregate_stock_management.updated.json"
        )
        .replace("{{aggregate_name}}", "EU")
        .replace("{{created_on}}", "2019-06-20 17:10:28")
        .replace("{{mode}}", "DELTA")
        .replace("{{qty}}", qty)
        .replace("{{sku}}", "24-MB01")
    }

    #[test]
    fn parses_the_mock_template_with_quantities_as_strings() {
        let snapshot = aggregate(&rendered_template("12")).unwrap();
        assert_eq!(snapshot.scope_id, "EU");
        assert_eq!(snapshot.mode, SnapshotMode::Delta);
        assert_eq!(
            snapshot.created_on,
            Utc.with_ymd_and_hms(2019, 6, 20, 17, 10, 28).unwrap()
        );
        assert_eq!(
            snapshot.stock,
            vec![StockEntry {
                sku: "24-MB01".into(),
                quantity: 12,
                unlimited: false,
                inflight_backorders: None
            }]
        );
    }

    #[test]
    fn accepts_unlimited_and_inflight_backorders() {
        let s = aggregate(
            r#"{"snapshot":{"aggregate_id":7,"mode":"FULL","created_on":"2019-06-20T17:10:28+02:00",
                "stock":[{"sku":"A","quantity":0,"unlimited":true,"inflight_backorders":"3"}],"extra":1}}"#,
        )
        .unwrap();
        assert_eq!(s.scope_id, "7");
        assert!(s.stock[0].unlimited);
        assert_eq!(s.stock[0].inflight_backorders, Some(3));
    }

    #[test]
    fn rejections_name_the_field_and_the_problem() {
        let base = |snapshot: &str| format!(r#"{{"snapshot":{snapshot}}}"#);
        let cases = [
            (r#"{}"#.to_owned(), "no \"snapshot\""),
            (
                base(r#"{"aggregate_id":"EU","created_on":"2019-06-20 17:10:28","stock":[]}"#),
                "\"mode\" is missing",
            ),
            (
                base(r#"{"aggregate_id":"EU","mode":"FULL","stock":[]}"#),
                "\"created_on\" is missing",
            ),
            (
                base(r#"{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28"}"#),
                "\"stock\" is missing",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"SOME","created_on":"2019-06-20 17:10:28","stock":[]}"#,
                ),
                "unknown snapshot \"mode\" \"SOME\"",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"FULL","created_on":"last tuesday","stock":[]}"#,
                ),
                "\"created_on\" is not a date and time",
            ),
            (
                base(r#"{"mode":"FULL","created_on":"2019-06-20 17:10:28","stock":[]}"#),
                "\"aggregate_id\" is missing",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28","stock":[{"sku":"A","quantity":-1}]}"#,
                ),
                "stock[0]: \"quantity\" is negative",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28","stock":[{"sku":"A","quantity":"lots"}]}"#,
                ),
                "stock[0]: \"quantity\" is not a whole number",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28","stock":[{"sku":"","quantity":1}]}"#,
                ),
                "stock[0]: \"sku\" is empty",
            ),
            (
                base(&format!(
                    r#"{{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28","stock":[{{"sku":"{}","quantity":1}}]}}"#,
                    "x".repeat(65)
                )),
                "65 characters long, over the limit of 64",
            ),
            (
                base(
                    r#"{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28","stock":"none"}"#,
                ),
                "snapshot is malformed",
            ),
        ];
        for (json, expected) in cases {
            let err = aggregate(&json).unwrap_err();
            assert!(
                err.reason().contains(expected),
                "{json}: {err:?} lacks {expected:?}"
            );
        }
    }

    #[test]
    fn a_sku_of_exactly_the_limit_is_accepted() {
        let json = format!(
            r#"{{"snapshot":{{"aggregate_id":"EU","mode":"DELTA","created_on":"2019-06-20 17:10:28","stock":[{{"sku":"{}","quantity":1}}]}}}}"#,
            "é".repeat(64)
        );
        assert_eq!(aggregate(&json).unwrap().stock[0].sku.chars().count(), 64);
    }

    #[test]
    fn snapshots_over_the_sku_limit_are_rejected() {
        let limits = Limits {
            max_snapshot_skus: 2,
            ..Limits::default()
        };
        let json = r#"{"snapshot":{"aggregate_id":"EU","mode":"FULL","created_on":"2019-06-20 17:10:28",
            "stock":[{"sku":"A","quantity":1},{"sku":"B","quantity":1},{"sku":"C","quantity":1}]}}"#;
        let err = parse_stock_snapshot(&raw(json), StockScope::Aggregate, &limits).unwrap_err();
        assert!(
            err.reason().contains("3 SKUs, over the limit of 2"),
            "{err}"
        );
    }

    #[test]
    fn source_snapshots_use_source_id_and_carry_their_batch() {
        let json = r#"{"snapshot":{"source_id":"WH1","mode":"NONZERO","created_on":"2019-06-20 17:10:28",
            "batch":{"process_id":"p","process_number":1,"process_total":"3"},
            "stock":[{"sku":"A","quantity":"5"}]}}"#;
        let s = parse_stock_snapshot(&raw(json), StockScope::Source, &Limits::default()).unwrap();
        assert_eq!(s.scope_id, "WH1");
        assert_eq!(s.mode, SnapshotMode::NonZero);
        assert_eq!(s.batch.unwrap().process_total, 3);
        // An aggregate parser does not take a source snapshot's id for an aggregate id.
        let err = aggregate(json).unwrap_err();
        assert!(
            err.reason().contains("\"aggregate_id\" is missing"),
            "{err}"
        );
    }

    #[test]
    fn parses_the_source_from_the_search_template() {
        let template = include_str!(
            "../fixtures/mock-templates/magento.inventory.source_repository.search.json"
        )
        .replace("{{aggregate_id}}", "EU")
        .replace("{{source_id}}", "WH-1");
        let search: Value = serde_json::from_str(&template).unwrap();
        let params = serde_json::json!({ "source": search["items"][0] }).to_string();
        let source = parse_source(&raw(&params)).unwrap();
        assert_eq!(source.id, "WH-1");
        assert_eq!(source.aggregate_ids, vec!["EU".to_owned()]);
        assert_eq!(source.source_type.as_deref(), Some("Warehouse"));
        assert!(source.active);
        assert!(!source.store_pickup);
    }

    #[test]
    fn a_pickup_service_makes_a_store_pickup_source() {
        let params = r#"{"source":{"id":"S1","name":"Shop","type":"Store",
            "configurations":{"active":false,"capabilities":{"services":["STORE_PICKUP"]}},
            "address":{}}}"#;
        let source = parse_source(&raw(params)).unwrap();
        assert!(source.store_pickup);
        assert!(!source.active);
    }

    #[test]
    fn source_messages_without_an_id_are_rejected() {
        let err = parse_source(&raw(r#"{"source":{"name":"x"}}"#)).unwrap_err();
        assert_eq!(err.reason(), "source: \"id\" is missing");
        let err = parse_source_deleted(&raw(r#"{}"#)).unwrap_err();
        assert!(err.reason().contains("\"source_id\" is missing"), "{err}");
        assert_eq!(
            parse_source_deleted(&raw(r#"{"source_id":"S1"}"#)).unwrap(),
            "S1"
        );
    }

    #[test]
    fn deep_nesting_in_a_quantity_is_a_rejection_not_a_crash() {
        let json = format!(
            r#"{{"snapshot":{{"aggregate_id":"EU","mode":"DELTA","created_on":"2019-06-20 17:10:28","ignored":{deep},"stock":[{{"sku":"A","quantity":{deep}}}]}}}}"#,
            deep = format!("{}{}", "[".repeat(50_000), "]".repeat(50_000))
        );
        let result = aggregate(&json);
        let reason = result
            .err()
            .map(|r| r.reason().chars().take(200).collect::<String>());
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("quantity") || r.contains("recursion limit")),
            "{reason:?}"
        );
    }

    #[test]
    fn wire_snapshots_round_trip_through_the_parser() {
        let snapshot = WireStockSnapshot {
            aggregate_id: Some("EU"),
            source_id: None,
            mode: SnapshotMode::NonZero,
            created_on: "2020-01-01T00:00:00.5Z".into(),
            stock: vec![WireStockEntry {
                sku: "A",
                quantity: 3,
                unlimited: true,
            }],
        };
        let params = snapshot.params().to_string();
        let parsed = aggregate(&params).unwrap();
        assert_eq!(parsed.mode, SnapshotMode::NonZero);
        assert!(parsed.stock[0].unlimited);
        assert_eq!(parsed.created_on.timestamp_subsec_millis(), 500);
    }

    #[test]
    fn a_source_page_is_read_leniently_and_its_bad_items_alone_are_refused() {
        let page = parse_source_page(&serde_json::json!({
            "offset": "100", "size": 100, "total": 102,
            "items": [
                {"id": "WH-1", "name": "One", "type": "Warehouse", "address": {}},
                {"name": "no id"},
            ],
        }))
        .unwrap();
        assert_eq!((page.offset, page.total), (Some(100), Some(102)));
        assert_eq!(page.items[0].as_ref().unwrap().id, "WH-1");
        let refused = page.items[1].as_ref().unwrap_err().reason().to_owned();
        assert!(
            refused.starts_with("items[1]: ") && refused.contains("\"id\""),
            "{refused}"
        );

        let empty = parse_source_page(&serde_json::json!({"total": 0})).unwrap();
        assert!(empty.items.is_empty());
        for bad in [
            serde_json::json!(null),
            serde_json::json!([]),
            serde_json::json!({"items": {"id": "x"}}),
            serde_json::json!({"items": [], "total": -1}),
        ] {
            assert!(parse_source_page(&bad).is_err(), "{bad}");
        }
        assert_eq!(
            source_search_params(200, 100),
            serde_json::json!({"query": {"offset": 200, "size": 100, "order": {"id": "ASC"}}})
        );
    }
}
