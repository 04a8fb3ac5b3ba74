//! Catalog messages: the product export (`magento.catalog.product_management.updated`,
//! fields of `catalog/product.xml`), shipping methods as products of type `shipping`, and the
//! operator commands that travel on the catalog module's own queue
//! (`connector.catalog.export_full`).

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::lenient::{self, Scalar};
use crate::{OutgoingEnvelope, Rejection};

pub mod methods {
    /// A product created or changed in Commerce (also each product of a full export, and
    /// each shipping method).
    pub const PRODUCT_UPDATED: &str = "magento.catalog.product_management.updated";
    /// Operator command: export the whole catalog in chunks.
    pub const EXPORT_FULL: &str = "connector.catalog.export_full";
    /// The commands the catalog module consumes from its queue.
    pub const COMMANDS: &[&str] = &[EXPORT_FULL];
}

/// Methods that start with this are operator commands for the connector itself, sent by
/// `omsc`; they are never OMS methods and never part of the registration.
pub const OPERATOR_COMMAND_PREFIX: &str = "connector.";

/// Whether `method` is an operator command rather than an OMS method.
pub fn is_operator_command(method: &str) -> bool {
    method.starts_with(OPERATOR_COMMAND_PREFIX)
}

/// Products per chunk of a full-catalog export.
pub const EXPORT_CHUNK_SIZE: u32 = 5_000;
/// The largest chunk an operator may ask for.
pub const MAX_EXPORT_CHUNK_SIZE: u32 = 50_000;

/// The `type` of an exported product (`magento.catalog.product_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProductType {
    Bundle,
    Configurable,
    Downloadable,
    Grouped,
    /// A physical product (Commerce's simple product).
    Simple,
    Virtual,
    Service,
    Shipping,
}

impl ProductType {
    pub fn as_str(self) -> &'static str {
        match self {
            ProductType::Bundle => "bundle",
            ProductType::Configurable => "configurable",
            ProductType::Downloadable => "downloadable",
            ProductType::Grouped => "grouped",
            ProductType::Simple => "simple",
            ProductType::Virtual => "virtual",
            ProductType::Service => "service",
            ProductType::Shipping => "shipping",
        }
    }
}

/// A product type as Commerce stores it (`products.type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommerceType {
    Simple,
    Configurable,
    Bundle,
    Virtual,
    /// A gift card; the OMS has no such type, see [`CommerceType::export_type`].
    GiftCard(GiftCardKind),
    Downloadable,
}

/// Whether a gift card is shipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiftCardKind {
    Virtual,
    Physical,
    Combined,
}

impl CommerceType {
    /// Reads `products.type` and, for gift cards, `products.giftcard_kind` (absent: virtual).
    pub fn from_columns(type_name: &str, giftcard_kind: Option<&str>) -> Result<Self, String> {
        Ok(match type_name {
            "simple" => CommerceType::Simple,
            "configurable" => CommerceType::Configurable,
            "bundle" => CommerceType::Bundle,
            "virtual" => CommerceType::Virtual,
            "downloadable" => CommerceType::Downloadable,
            "giftcard" => CommerceType::GiftCard(match giftcard_kind {
                None | Some("virtual") => GiftCardKind::Virtual,
                Some("physical") => GiftCardKind::Physical,
                Some("combined") => GiftCardKind::Combined,
                Some(other) => return Err(format!("unknown gift card kind {other:?}")),
            }),
            other => return Err(format!("unknown product type {other:?}")),
        })
    }

    /// The OMS type: the specification has no gift card, so a gift card that is shipped
    /// (physical or combined) travels as a physical product (`simple`) and one that is not as
    /// `virtual`, which is how the OMS must fulfil it.
    pub fn export_type(self) -> ProductType {
        match self {
            CommerceType::Simple => ProductType::Simple,
            CommerceType::Configurable => ProductType::Configurable,
            CommerceType::Bundle => ProductType::Bundle,
            CommerceType::Virtual => ProductType::Virtual,
            CommerceType::Downloadable => ProductType::Downloadable,
            CommerceType::GiftCard(GiftCardKind::Virtual) => ProductType::Virtual,
            CommerceType::GiftCard(GiftCardKind::Physical | GiftCardKind::Combined) => {
                ProductType::Simple
            }
        }
    }
}

/// `magento.catalog.product`: one exported product, with exactly the specification's names.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Product {
    /// The OMS identifies products by SKU; the export uses it as the id too, so the id
    /// survives a database rebuild and an incremental export agrees with a full one.
    pub id: String,
    #[serde(rename = "type")]
    pub product_type: ProductType,
    pub sku: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_adjustable: Option<bool>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub name: Vec<LocalizedName>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price: Option<ProductPrice>,
    /// `ACTIVE`, `INACTIVE`, `EOL` or `OUTLET`, upper case.
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modified_at: Option<String>,
    /// Configurable products only: the SKUs of their configurations (possibly none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub children_skus: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub custom_attributes: Vec<CustomAttribute>,
}

/// `magento.catalog.localized_name`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LocalizedName {
    pub value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locale: Option<String>,
}

/// `magento.catalog.product_price`: money as a JSON number.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductPrice {
    pub currency: String,
    pub amount: f64,
}

/// `magento.common.custom_attribute`. Real receivers read the attribute's code from `name`
/// or from `attribute_code`, so both carry it (PROTOCOL.md: accept both, emit both; the spec
/// check accepts `attribute_code` as a known extra key, `spec::ACCEPTED_EXTRA_KEYS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CustomAttribute {
    pub name: String,
    pub attribute_code: String,
    pub value: String,
}

impl CustomAttribute {
    pub fn new(code: impl Into<String>, value: impl Into<String>) -> Self {
        let code = code.into();
        Self {
            name: code.clone(),
            attribute_code: code,
            value: value.into(),
        }
    }
}

/// The params of `magento.catalog.product_management.updated`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ProductUpdated<'a> {
    pub product: &'a Product,
}

impl Product {
    /// The whole message, ready to publish.
    pub fn to_message(&self, message_id: &str) -> Vec<u8> {
        OutgoingEnvelope::new(
            Some(message_id),
            methods::PRODUCT_UPDATED,
            &ProductUpdated { product: self },
        )
        .to_vec()
    }

    /// A shipping method as the OMS knows it: a product of type `shipping` whose id and SKU
    /// are [`crate::shipping::method_code`].
    pub fn shipping_method(
        carrier: &str,
        method: &str,
        title: Option<String>,
        enabled: bool,
        price: Option<ProductPrice>,
    ) -> Self {
        let code = crate::shipping::method_code(carrier, method);
        Self {
            id: code.clone(),
            product_type: ProductType::Shipping,
            sku: code,
            price_adjustable: None,
            name: title
                .filter(|t| !t.trim().is_empty())
                .map(|value| {
                    vec![LocalizedName {
                        value,
                        channel: None,
                        locale: None,
                    }]
                })
                .unwrap_or_default(),
            price,
            status: if enabled { "ACTIVE" } else { "INACTIVE" }.to_owned(),
            created_at: None,
            modified_at: None,
            children_skus: None,
            custom_attributes: Vec::new(),
        }
    }
}

/// A timestamp as the catalog export writes it: as every outbound message does.
pub use crate::outbound::format_datetime;

/// `connector.catalog.export_full`: export the whole catalog. The run id is chosen by the
/// sender, so a redelivered command finds its run instead of starting another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportFull {
    pub run_id: String,
    pub requested_by: String,
    pub chunk_size: u32,
}

impl ExportFull {
    pub fn to_message(&self) -> Vec<u8> {
        OutgoingEnvelope::new(Some(&self.run_id), methods::EXPORT_FULL, self).to_vec()
    }
}

#[derive(Deserialize)]
struct WireExportFull {
    run_id: Option<Scalar>,
    requested_by: Option<Scalar>,
    chunk_size: Option<Scalar>,
}

/// Reads an export command. The run id is required; the chunk size defaults to
/// [`EXPORT_CHUNK_SIZE`].
pub fn parse_export_full(params: &RawValue) -> Result<ExportFull, Rejection> {
    let wire: WireExportFull = serde_json::from_str(params.get())
        .map_err(|e| Rejection::new(format!("export command is not an object: {e}")))?;
    let run_id = lenient::required_string(wire.run_id, "run_id")?;
    if run_id.chars().count() > 100 {
        return Err(Rejection::new("\"run_id\" is longer than 100 characters"));
    }
    let requested_by =
        lenient::optional_string(wire.requested_by, "requested_by")?.unwrap_or_default();
    let chunk_size = match lenient::optional_count(wire.chunk_size, "chunk_size")? {
        None => EXPORT_CHUNK_SIZE,
        Some(n) if n >= 1 && n <= i64::from(MAX_EXPORT_CHUNK_SIZE) => n as u32,
        Some(n) => {
            return Err(Rejection::new(format!(
                "\"chunk_size\" is {n}; it must be between 1 and {MAX_EXPORT_CHUNK_SIZE}"
            )));
        }
    };
    Ok(ExportFull {
        run_id,
        requested_by,
        chunk_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::spec;

    fn problems(params: &serde_json::Value) -> Vec<String> {
        spec().check_params(methods::PRODUCT_UPDATED, params)
    }

    fn configurable() -> Product {
        Product {
            id: "TS-1".into(),
            product_type: CommerceType::Configurable.export_type(),
            sku: "TS-1".into(),
            price_adjustable: Some(false),
            name: vec![LocalizedName {
                value: "T-Shirt".into(),
                channel: Some("base".into()),
                locale: Some("en_US".into()),
            }],
            price: Some(ProductPrice {
                currency: "EUR".into(),
                amount: 19.99,
            }),
            status: "ACTIVE".into(),
            created_at: Some("2026-01-01T00:00:00+00:00".into()),
            modified_at: Some("2026-01-02T00:00:00+00:00".into()),
            children_skus: Some(vec!["TS-1-S".into(), "TS-1-M".into()]),
            custom_attributes: vec![CustomAttribute::new("color", "red")],
        }
    }

    #[test]
    fn a_product_has_exactly_the_fields_of_the_specification() {
        let message: serde_json::Value =
            serde_json::from_slice(&configurable().to_message("m-1")).unwrap();
        assert_eq!(message["method"], methods::PRODUCT_UPDATED);
        assert_eq!(problems(&message["params"]), Vec::<String>::new());
        let attribute = &message["params"]["product"]["custom_attributes"][0];
        assert_eq!(attribute["name"], "color");
        assert_eq!(attribute["attribute_code"], "color");
        assert_eq!(message["params"]["product"]["price"]["amount"], 19.99);
    }

    #[test]
    fn the_attribute_code_alias_is_a_known_extra_key_of_the_specification() {
        assert!(
            crate::spec::ACCEPTED_EXTRA_KEYS
                .contains(&("magento.common.custom_attribute", "attribute_code"))
        );
    }

    #[test]
    fn gift_cards_travel_as_what_the_oms_must_fulfil() {
        let card = |kind| CommerceType::from_columns("giftcard", kind).unwrap();
        assert_eq!(card(None).export_type(), ProductType::Virtual);
        assert_eq!(card(Some("physical")).export_type(), ProductType::Simple);
        assert_eq!(card(Some("combined")).export_type(), ProductType::Simple);
        assert!(CommerceType::from_columns("tshirt", None).is_err());
    }

    #[test]
    fn every_export_type_is_a_value_of_the_specification() {
        let allowed = &spec().enums["magento.catalog.product_type"];
        for t in [
            ProductType::Bundle,
            ProductType::Configurable,
            ProductType::Downloadable,
            ProductType::Grouped,
            ProductType::Simple,
            ProductType::Virtual,
            ProductType::Service,
            ProductType::Shipping,
        ] {
            assert!(allowed.iter().any(|a| a == t.as_str()), "{t:?}");
        }
    }

    #[test]
    fn a_shipping_method_is_a_shipping_product_named_by_its_code() {
        let ups = Product::shipping_method("ups", "GND", Some("UPS Ground".into()), true, None);
        assert_eq!((ups.id.as_str(), ups.sku.as_str()), ("UPS-GND", "UPS-GND"));
        let flat = Product::shipping_method("flatrate", "flatrate", None, false, None);
        assert_eq!(
            (flat.sku.as_str(), flat.status.as_str()),
            ("STANDARD", "INACTIVE")
        );
        let params = serde_json::json!({"product": flat});
        assert_eq!(problems(&params), Vec::<String>::new());
    }

    #[test]
    fn an_export_command_needs_a_run_id_and_a_sane_chunk_size() {
        let parse = |text: &str| parse_export_full(&RawValue::from_string(text.into()).unwrap());
        let ok = parse(r#"{"run_id": "r-1", "chunk_size": "100"}"#).unwrap();
        assert_eq!((ok.run_id.as_str(), ok.chunk_size), ("r-1", 100));
        assert_eq!(
            parse(r#"{"run_id": 7}"#).unwrap().chunk_size,
            EXPORT_CHUNK_SIZE
        );
        assert!(parse("{}").unwrap_err().reason().contains("run_id"));
        assert!(
            parse(r#"{"run_id": "r", "chunk_size": 0}"#)
                .unwrap_err()
                .reason()
                .contains("between 1 and")
        );
        let command = ExportFull {
            run_id: "r-2".into(),
            requested_by: "omsc".into(),
            chunk_size: 5000,
        };
        let body: serde_json::Value = serde_json::from_slice(&command.to_message()).unwrap();
        assert_eq!(body["method"], methods::EXPORT_FULL);
        assert_eq!(body["id"], "r-2");
        assert!(is_operator_command(methods::EXPORT_FULL));
        assert!(!is_operator_command(methods::PRODUCT_UPDATED));
    }
}
