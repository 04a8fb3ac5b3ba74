//! The order export: from the rows the storefront wrote to `order_management.create`.
//!
//! [`build`] is pure and deterministic: the same rows always give the same message and the
//! same lines, which is what makes a resend after a crash carry the same content. The rules:
//!
//! - one OMS line per unit (an item of quantity 3 is three lines, `<item>-1` … `<item>-3`;
//!   an item of quantity 1 keeps its item id), numbered in item order, the shipping line
//!   last (`SHIPPING`, sku [`protocol::shipping::method_code`]);
//! - simple items are PHYSICAL; a configurable is one PHYSICAL line per unit with its chosen
//!   child's sku and name and its own price; virtual, gift card and downloadable items are
//!   VIRTUAL; a bundle is a BUNDLE line per unit followed by its children's units, each
//!   pointing at its bundle line with `parent_line_id`;
//! - row amounts (price × qty − discount, tax, each promotion) are split over the units so
//!   that they add up exactly ([`protocol::money::split`]);
//! - gift cards and store credit are order-level discounts (custom attributes): the lines
//!   keep their prices and the one payment transaction carries the rest.

mod load;

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use protocol::money::{Money, split};
use protocol::sales::{
    CreateParams, WireAddress, WireCustomAttribute, WireCustomer, WireGateway, WireLine, WireOrder,
    WirePayment, WirePrice, WirePromotion, WirePromotionInfo, WireTax, WireTransaction,
    product_types,
};
use rust_decimal::Decimal;

pub use load::{load_order, load_orders, save_lines, save_lines_of};

/// The line id of the shipping line.
pub const SHIPPING_LINE_ID: &str = "SHIPPING";

/// Order custom attributes that carry the order-level discounts.
pub mod attributes {
    pub const GIFT_CARD_AMOUNT: &str = "gift_card_amount";
    pub const GIFT_CARD_CODES: &str = "gift_card_codes";
    pub const STORE_CREDIT_AMOUNT: &str = "store_credit_amount";
    /// The sum of both: what the lines' total exceeds the payment by.
    pub const ORDER_DISCOUNT_AMOUNT: &str = "order_discount_amount";
    /// The gateway attribute naming the Commerce payment method.
    pub const GATEWAY_PROCESSOR: &str = "mdc_gateway_processor";
}

/// Everything the storefront wrote about one order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRows {
    pub order: OrderRow,
    pub addresses: Vec<AddressRow>,
    pub items: Vec<ItemRow>,
    pub payment: Option<PaymentRow>,
    /// `(code, value)` in code order.
    pub attributes: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderRow {
    pub id: String,
    pub store: String,
    pub placed_at: DateTime<Utc>,
    pub origin: String,
    pub ip: String,
    pub language: Option<String>,
    pub vat_country: Option<String>,
    pub currency: String,
    pub customer_id: Option<String>,
    pub customer_segment: String,
    pub customer_service_agent: Option<String>,
    pub gift_message: Option<String>,
    pub billing_address_reference: String,
    pub shipping_address_reference: Option<String>,
    pub shipping_carrier: Option<String>,
    pub shipping_method: Option<String>,
    pub shipping_description: Option<String>,
    pub shipping_amount: Decimal,
    pub shipping_tax_amount: Decimal,
    pub shipping_tax_rate: Decimal,
    pub shipping_discount_amount: Decimal,
    pub gift_card_amount: Decimal,
    pub gift_card_codes: Vec<String>,
    pub store_credit_amount: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AddressRow {
    pub reference: String,
    pub address_type: String,
    pub first_name: String,
    pub last_name: String,
    pub address1: String,
    pub address2: Option<String>,
    pub city: String,
    pub state: Option<String>,
    pub zip: Option<String>,
    pub country_code: String,
    pub phone: Option<String>,
    pub email: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ItemRow {
    pub item_id: i64,
    pub parent_item_id: Option<i64>,
    /// The Commerce product type: simple, configurable, bundle, virtual, giftcard,
    /// downloadable.
    pub product_type: String,
    pub sku: String,
    pub name: String,
    pub qty: i32,
    /// Unit price, tax included, before discounts.
    pub price: Decimal,
    /// Row totals.
    pub discount_amount: Decimal,
    pub tax_amount: Decimal,
    pub tax_rate: Decimal,
    pub tax_type: Option<String>,
    pub image_url: Option<String>,
    pub product_url: Option<String>,
    pub source_location: Option<String>,
    pub pickup_location: Option<String>,
    /// `(code, value)` in code order.
    pub attributes: Vec<(String, String)>,
    pub promotions: Vec<PromotionRow>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PromotionRow {
    pub code: String,
    pub name: String,
    /// The row's share.
    pub discount_amount: Decimal,
    pub percentage: Decimal,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PaymentRow {
    pub reference: String,
    pub payment_method: String,
    pub payment_submethod: Option<String>,
    pub processor: Option<String>,
    pub gateway_id: String,
    pub account: Option<String>,
    pub transaction_id: Option<String>,
    pub authorization_status: Option<String>,
    pub original_auth_request_id: Option<String>,
    pub payment_account_unique_id: Option<String>,
}

/// An exported line as the connector keeps it (`sales_order_lines`).
#[derive(Debug, Clone, PartialEq)]
pub struct ExportedLine {
    pub line_id: String,
    pub line_number: i32,
    pub item_id: Option<i64>,
    pub parent_line_id: Option<String>,
    pub product_type: &'static str,
    pub sku: String,
    pub gross_amount: Decimal,
    pub net_amount: Decimal,
    pub tax_amount: Decimal,
    pub attributes: Vec<(String, String)>,
}

/// The export of one order: the message params and the lines they list.
#[derive(Debug, Clone)]
pub struct Export {
    pub params: CreateParams,
    pub lines: Vec<ExportedLine>,
}

/// Why an order cannot be exported (the storefront wrote something the OMS cannot take):
/// the whole sentence, order included, as the outbox row's failure records it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

fn invalid(order: &str, reason: impl std::fmt::Display) -> Invalid {
    Invalid(format!("order {order} cannot be exported: {reason}"))
}

/// Builds the export of an order. See the module documentation for the rules.
pub fn build(rows: &OrderRows) -> Result<Export, Invalid> {
    let order = &rows.order;
    let payment = rows
        .payment
        .as_ref()
        .ok_or_else(|| invalid(&order.id, "it has no payment"))?;
    let billing = rows
        .addresses
        .iter()
        .find(|a| a.reference == order.billing_address_reference)
        .ok_or_else(|| invalid(&order.id, "its billing address is missing"))?;
    let ship_to = order
        .shipping_address_reference
        .clone()
        .unwrap_or_else(|| order.billing_address_reference.clone());

    let mut builder = LineBuilder {
        order,
        ship_to,
        payment_reference: payment.reference.clone(),
        wire: Vec::new(),
        lines: Vec::new(),
    };
    let mut children: BTreeMap<i64, Vec<&ItemRow>> = BTreeMap::new();
    for item in &rows.items {
        if let Some(parent) = item.parent_item_id {
            children.entry(parent).or_default().push(item);
        }
    }
    let mut top: Vec<&ItemRow> = rows
        .items
        .iter()
        .filter(|i| i.parent_item_id.is_none())
        .collect();
    if top.is_empty() {
        return Err(invalid(&order.id, "it has no items"));
    }
    top.sort_by_key(|i| i.item_id);
    for item in top {
        let mut kids = children.remove(&item.item_id).unwrap_or_default();
        kids.sort_by_key(|i| i.item_id);
        match ItemType::of(&item.product_type) {
            Some(ItemType::Unit(unit)) => {
                if let Some(kid) = kids.first() {
                    return Err(invalid(
                        &order.id,
                        format!(
                            "item {} ({}) is a {} and cannot have child item {}",
                            item.item_id, item.sku, item.product_type, kid.item_id
                        ),
                    ));
                }
                builder.units(item, item, unit.line_type(), None);
            }
            Some(ItemType::Configurable) => {
                let [chosen] = kids.as_slice() else {
                    return Err(invalid(
                        &order.id,
                        format!(
                            "configurable item {} ({}) has {} chosen children, expected 1",
                            item.item_id,
                            item.sku,
                            kids.len()
                        ),
                    ));
                };
                builder.units(item, chosen, line_type(&chosen.product_type), None);
            }
            Some(ItemType::Bundle) => builder.bundle(item, &kids)?,
            None => {
                return Err(invalid(
                    &order.id,
                    format!(
                        "item {} has product type {:?}",
                        item.item_id, item.product_type
                    ),
                ));
            }
        }
    }
    if let Some((parent, _)) = children.first_key_value() {
        return Err(invalid(
            &order.id,
            format!("items point at parent item {parent}, which is not in the order"),
        ));
    }
    builder.shipping();

    let lines_total: Decimal = builder.lines.iter().map(|l| l.gross_amount).sum();
    let order_discount = order.gift_card_amount + order.store_credit_amount;
    let paid = lines_total - order_discount;
    if paid < Decimal::ZERO {
        return Err(invalid(
            &order.id,
            format!(
                "gift cards and store credit ({order_discount}) exceed its total ({lines_total})"
            ),
        ));
    }

    let mut custom_attributes: Vec<WireCustomAttribute> = rows
        .attributes
        .iter()
        .map(|(c, v)| WireCustomAttribute::new(c, v))
        .collect();
    if order.gift_card_amount > Decimal::ZERO {
        custom_attributes.push(WireCustomAttribute::new(
            attributes::GIFT_CARD_AMOUNT,
            &amount_text(order.gift_card_amount),
        ));
        custom_attributes.push(WireCustomAttribute::new(
            attributes::GIFT_CARD_CODES,
            &order.gift_card_codes.join(","),
        ));
    }
    if order.store_credit_amount > Decimal::ZERO {
        custom_attributes.push(WireCustomAttribute::new(
            attributes::STORE_CREDIT_AMOUNT,
            &amount_text(order.store_credit_amount),
        ));
    }
    if order_discount > Decimal::ZERO {
        custom_attributes.push(WireCustomAttribute::new(
            attributes::ORDER_DISCOUNT_AMOUNT,
            &amount_text(order_discount),
        ));
    }

    let gateway_attributes = payment
        .processor
        .iter()
        .map(|p| WireCustomAttribute::new(attributes::GATEWAY_PROCESSOR, p))
        .collect();
    let wire = WireOrder {
        id: order.id.clone(),
        store: order.store.clone(),
        ip: protocol::outbound::known(&order.ip),
        language: order.language.clone(),
        vat_country: order
            .vat_country
            .clone()
            .unwrap_or_else(|| billing.country_code.clone()),
        origin: order.origin.clone(),
        origin_date: protocol::outbound::format_datetime(&order.placed_at),
        customer_service_agent: order.customer_service_agent.clone(),
        customer: WireCustomer {
            id: order
                .customer_id
                .clone()
                .unwrap_or_else(|| "anonymous".into()),
            customer_type: if order.customer_id.is_some() {
                "REGISTERED".into()
            } else {
                "GUEST".into()
            },
            segment: order.customer_segment.clone(),
        },
        addresses: rows.addresses.iter().map(wire_address).collect(),
        payments: vec![WirePayment {
            reference: payment.reference.clone(),
            currency: order.currency.clone(),
            transactions: [WireTransaction {
                payment_method: payment.payment_method.clone(),
                payment_submethod: payment.payment_submethod.clone(),
                amount: Money(paid),
                gateway_information: WireGateway {
                    gateway_id: payment.gateway_id.clone(),
                    account: protocol::outbound::known_opt(payment.account.as_deref()),
                    transaction_id: protocol::outbound::known_opt(
                        payment.transaction_id.as_deref(),
                    ),
                    authorization_status: payment.authorization_status.clone(),
                    original_auth_request_id: payment.original_auth_request_id.clone(),
                    payment_account_unique_id: payment.payment_account_unique_id.clone(),
                    custom_attributes: gateway_attributes,
                },
                billing_address_reference: order.billing_address_reference.clone(),
            }],
        }],
        lines: builder.wire,
        gift_message: order.gift_message.clone(),
        custom_attributes,
    };
    Ok(Export {
        params: CreateParams { order: wire },
        lines: builder.lines,
    })
}

fn amount_text(d: Decimal) -> String {
    d.normalize().to_string()
}

/// A storefront item's product type (`sales_order_items.product_type`), as the export
/// treats it: an item that is its own units, or one whose units are its children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemType {
    /// Exported as its own units, without children.
    Unit(UnitType),
    /// Exported as its own units (price, quantity) named after its one chosen child.
    Configurable,
    /// A `BUNDLE` line per unit, its children's units under it.
    Bundle,
}

/// The product types that are units themselves, each with the OMS line type it becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum UnitType {
    Simple,
    Virtual,
    GiftCard,
    Downloadable,
}

impl ItemType {
    /// The type a stored `product_type` names; `None` for one the export does not know.
    fn of(commerce_type: &str) -> Option<Self> {
        Some(match commerce_type {
            "simple" => ItemType::Unit(UnitType::Simple),
            "virtual" => ItemType::Unit(UnitType::Virtual),
            "giftcard" => ItemType::Unit(UnitType::GiftCard),
            "downloadable" => ItemType::Unit(UnitType::Downloadable),
            "configurable" => ItemType::Configurable,
            "bundle" => ItemType::Bundle,
            _ => return None,
        })
    }
}

impl UnitType {
    /// Nothing to ship is `VIRTUAL` (the specification has no gift card or download type).
    fn line_type(self) -> &'static str {
        match self {
            UnitType::Virtual | UnitType::GiftCard | UnitType::Downloadable => {
                product_types::VIRTUAL
            }
            UnitType::Simple => product_types::PHYSICAL,
        }
    }
}

/// The OMS line type of a chosen or bundled child: its own unit type's, and `PHYSICAL` for
/// anything else, as a child that is not a unit type is exported as goods to ship.
fn line_type(commerce_type: &str) -> &'static str {
    match ItemType::of(commerce_type) {
        Some(ItemType::Unit(unit)) => unit.line_type(),
        _ => product_types::PHYSICAL,
    }
}

fn wire_address(a: &AddressRow) -> WireAddress {
    WireAddress {
        reference: a.reference.clone(),
        address_type: a.address_type.clone(),
        first_name: a.first_name.clone(),
        last_name: a.last_name.clone(),
        address1: a.address1.clone(),
        address2: a.address2.clone(),
        city: a.city.clone(),
        state: a.state.clone(),
        zip: a.zip.clone(),
        country_code: a.country_code.clone(),
        phone: a.phone.clone(),
        email: a.email.clone(),
    }
}

/// The id of unit `unit` (1-based) of an item of quantity `qty`.
pub fn unit_line_id(item_id: i64, qty: i32, unit: i32) -> String {
    if qty == 1 {
        item_id.to_string()
    } else {
        format!("{item_id}-{unit}")
    }
}

struct LineBuilder<'a> {
    order: &'a OrderRow,
    ship_to: String,
    payment_reference: String,
    wire: Vec<WireLine>,
    lines: Vec<ExportedLine>,
}

/// One unit's amounts.
struct UnitAmounts {
    gross: Decimal,
    tax: Decimal,
    promotions: Vec<WirePromotion>,
}

impl LineBuilder<'_> {
    fn next_number(&self) -> i32 {
        self.wire.len() as i32 + 1
    }

    /// The per-unit amounts of `priced`, unit by unit.
    fn unit_amounts(priced: &ItemRow) -> Vec<UnitAmounts> {
        let qty = priced.qty.max(1) as u32;
        let gross = split(
            priced.price * Decimal::from(qty) - priced.discount_amount,
            qty,
        );
        let tax = split(priced.tax_amount, qty);
        let promotions: Vec<Vec<Decimal>> = priced
            .promotions
            .iter()
            .map(|p| split(p.discount_amount, qty))
            .collect();
        (0..qty as usize)
            .map(|u| UnitAmounts {
                gross: gross[u],
                tax: tax[u],
                promotions: priced
                    .promotions
                    .iter()
                    .zip(&promotions)
                    .map(|(p, shares)| WirePromotion {
                        code: p.code.clone(),
                        name: p.name.clone(),
                        discount: Money(shares[u]),
                        percentage: Money(p.percentage),
                    })
                    .collect(),
            })
            .collect()
    }

    /// Adds one line per unit of `priced` (the item that carries price and quantity), named
    /// and skued after `product` (the chosen child of a configurable, else the item itself).
    fn units(
        &mut self,
        priced: &ItemRow,
        product: &ItemRow,
        product_type: &'static str,
        parent_line_id: Option<&str>,
    ) -> Vec<String> {
        let amounts = Self::unit_amounts(priced);
        let mut ids = Vec::new();
        for (u, amount) in amounts.into_iter().enumerate() {
            let id = unit_line_id(priced.item_id, priced.qty, u as i32 + 1);
            self.push(priced, product, product_type, parent_line_id, &id, amount);
            ids.push(id);
        }
        ids
    }

    fn push(
        &mut self,
        priced: &ItemRow,
        product: &ItemRow,
        product_type: &'static str,
        parent_line_id: Option<&str>,
        id: &str,
        amount: UnitAmounts,
    ) {
        let number = self.next_number();
        let net = amount.gross - amount.tax;
        let tax_type = priced.tax_type.clone().unwrap_or_else(|| {
            if priced.tax_rate.is_zero() {
                "NO TAX".into()
            } else {
                "VAT".into()
            }
        });
        let mut attributes = priced.attributes.clone();
        if !std::ptr::eq(priced, product) {
            for (code, value) in &product.attributes {
                if !attributes.iter().any(|(c, _)| c == code) {
                    attributes.push((code.clone(), value.clone()));
                }
            }
        }
        self.wire.push(WireLine {
            id: id.to_owned(),
            line_number: number,
            product_type,
            sku: product.sku.clone(),
            product_name: product.name.clone(),
            parent_line_id: parent_line_id.map(str::to_owned),
            image_url: product
                .image_url
                .clone()
                .or_else(|| priced.image_url.clone()),
            product_url: priced.product_url.clone(),
            shipping_address_reference: self.ship_to.clone(),
            payment_reference: self.payment_reference.clone(),
            amount: WirePrice {
                net_amount: Money(net),
                gross_amount: Money(amount.gross),
                tax_amount: Money(amount.tax),
                tax_rate: Money(priced.tax_rate),
                taxes: vec![WireTax {
                    tax_type,
                    amount: Money(amount.tax),
                    rate: Money(priced.tax_rate),
                }],
                currency: self.order.currency.clone(),
            },
            promotions_info: WirePromotionInfo {
                original_price: Money(priced.price),
                promotions: amount.promotions,
            },
            source_location: priced.source_location.clone(),
            pickup_location: priced.pickup_location.clone(),
            custom_attributes: attributes
                .iter()
                .map(|(c, v)| WireCustomAttribute::new(c, v))
                .collect(),
        });
        self.lines.push(ExportedLine {
            line_id: id.to_owned(),
            line_number: number,
            item_id: Some(priced.item_id),
            parent_line_id: parent_line_id.map(str::to_owned),
            product_type,
            sku: product.sku.clone(),
            gross_amount: amount.gross,
            net_amount: net,
            tax_amount: amount.tax,
            attributes,
        });
    }

    /// A bundle: per unit, its BUNDLE line, then that unit's share of each child.
    fn bundle(&mut self, bundle: &ItemRow, children: &[&ItemRow]) -> Result<(), Invalid> {
        if children.is_empty() {
            return Err(invalid(
                &self.order.id,
                format!(
                    "bundle item {} ({}) has no children",
                    bundle.item_id, bundle.sku
                ),
            ));
        }
        let mut per_bundle = Vec::new();
        for child in children {
            if child.qty % bundle.qty != 0 {
                return Err(invalid(
                    &self.order.id,
                    format!(
                        "bundle child item {} has quantity {}, not a multiple of its bundle's {}",
                        child.item_id, child.qty, bundle.qty
                    ),
                ));
            }
            per_bundle.push((child, child.qty / bundle.qty, Self::unit_amounts(child)));
        }
        let bundle_amounts = Self::unit_amounts(bundle);
        for (u, amount) in bundle_amounts.into_iter().enumerate() {
            let bundle_line = unit_line_id(bundle.item_id, bundle.qty, u as i32 + 1);
            self.push(
                bundle,
                bundle,
                product_types::BUNDLE,
                None,
                &bundle_line,
                amount,
            );
            for (child, k, amounts) in &mut per_bundle {
                for j in 0..*k {
                    let unit = u as i32 * *k + j + 1;
                    let id = unit_line_id(child.item_id, child.qty, unit);
                    let amount = std::mem::replace(
                        &mut amounts[unit as usize - 1],
                        UnitAmounts {
                            gross: Decimal::ZERO,
                            tax: Decimal::ZERO,
                            promotions: Vec::new(),
                        },
                    );
                    self.push(
                        child,
                        child,
                        line_type(&child.product_type),
                        Some(&bundle_line),
                        &id,
                        amount,
                    );
                }
            }
        }
        Ok(())
    }

    fn shipping(&mut self) {
        let order = self.order;
        let (Some(carrier), Some(method)) = (&order.shipping_carrier, &order.shipping_method)
        else {
            return;
        };
        let number = self.next_number();
        let gross = order.shipping_amount;
        let tax = order.shipping_tax_amount;
        let sku = protocol::shipping::method_code(carrier, method);
        let promotions = if order.shipping_discount_amount > Decimal::ZERO {
            vec![WirePromotion {
                code: "SHIPPING_DISCOUNT".into(),
                name: "Shipping discount".into(),
                discount: Money(order.shipping_discount_amount),
                percentage: Money(Decimal::ZERO),
            }]
        } else {
            Vec::new()
        };
        self.wire.push(WireLine {
            id: SHIPPING_LINE_ID.into(),
            line_number: number,
            product_type: product_types::SHIPPING,
            sku: sku.clone(),
            product_name: order
                .shipping_description
                .clone()
                .unwrap_or_else(|| "Shipping".into()),
            parent_line_id: None,
            image_url: None,
            product_url: None,
            shipping_address_reference: self.ship_to.clone(),
            payment_reference: self.payment_reference.clone(),
            amount: WirePrice {
                net_amount: Money(gross - tax),
                gross_amount: Money(gross),
                tax_amount: Money(tax),
                tax_rate: Money(order.shipping_tax_rate),
                taxes: vec![WireTax {
                    tax_type: if order.shipping_tax_rate.is_zero() {
                        "NO TAX".into()
                    } else {
                        "VAT".into()
                    },
                    amount: Money(tax),
                    rate: Money(order.shipping_tax_rate),
                }],
                currency: order.currency.clone(),
            },
            promotions_info: WirePromotionInfo {
                original_price: Money(gross + order.shipping_discount_amount),
                promotions,
            },
            source_location: None,
            pickup_location: None,
            custom_attributes: Vec::new(),
        });
        self.lines.push(ExportedLine {
            line_id: SHIPPING_LINE_ID.into(),
            line_number: number,
            item_id: None,
            parent_line_id: None,
            product_type: product_types::SHIPPING,
            sku,
            gross_amount: gross,
            net_amount: gross - tax,
            tax_amount: tax,
            attributes: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests;
