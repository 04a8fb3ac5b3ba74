use std::str::FromStr;

use chrono::TimeZone;
use protocol::sales::methods;
use serde_json::Value;

use super::*;

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn item(
    item_id: i64,
    parent: Option<i64>,
    kind: &str,
    sku: &str,
    qty: i32,
    price: &str,
) -> ItemRow {
    ItemRow {
        item_id,
        parent_item_id: parent,
        product_type: kind.into(),
        sku: sku.into(),
        name: format!("{sku} name"),
        qty,
        price: d(price),
        discount_amount: Decimal::ZERO,
        tax_amount: Decimal::ZERO,
        tax_rate: Decimal::ZERO,
        tax_type: None,
        image_url: None,
        product_url: None,
        source_location: None,
        pickup_location: None,
        attributes: Vec::new(),
        promotions: Vec::new(),
    }
}

fn address(reference: &str) -> AddressRow {
    AddressRow {
        reference: reference.into(),
        address_type: "customer".into(),
        first_name: "A".into(),
        last_name: "B".into(),
        address1: "1 Street".into(),
        address2: None,
        city: "Town".into(),
        state: None,
        zip: Some("12345".into()),
        country_code: "US".into(),
        phone: None,
        email: Some("a@example.com".into()),
    }
}

fn rows(items: Vec<ItemRow>) -> OrderRows {
    OrderRows {
        order: OrderRow {
            id: "100".into(),
            store: "default".into(),
            placed_at: Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            origin: "FRONTEND".into(),
            ip: "203.0.113.1".into(),
            language: Some("en_US".into()),
            vat_country: None,
            currency: "USD".into(),
            customer_id: None,
            customer_segment: "B2C".into(),
            customer_service_agent: None,
            gift_message: None,
            billing_address_reference: "b".into(),
            shipping_address_reference: Some("s".into()),
            shipping_carrier: Some("flatrate".into()),
            shipping_method: Some("flatrate".into()),
            shipping_description: None,
            shipping_amount: d("5"),
            shipping_tax_amount: Decimal::ZERO,
            shipping_tax_rate: Decimal::ZERO,
            shipping_discount_amount: Decimal::ZERO,
            gift_card_amount: Decimal::ZERO,
            gift_card_codes: Vec::new(),
            store_credit_amount: Decimal::ZERO,
        },
        addresses: vec![address("b"), address("s")],
        items,
        payment: Some(PaymentRow {
            reference: "p".into(),
            payment_method: "ZEROPAY".into(),
            payment_submethod: Some("ZEROPAY".into()),
            processor: Some("checkmo".into()),
            gateway_id: "OFFLINE".into(),
            account: None,
            transaction_id: None,
            authorization_status: Some("AUTHORIZED".into()),
            original_auth_request_id: None,
            payment_account_unique_id: None,
        }),
        attributes: Vec::new(),
    }
}

fn params(export: &Export) -> Value {
    serde_json::to_value(&export.params).unwrap()
}

fn assert_spec(export: &Export) {
    let problems = protocol::spec::spec().check_params(methods::CREATE, &params(export));
    assert!(problems.is_empty(), "{problems:#?}");
}

#[test]
fn a_simple_order_looks_like_the_captured_export() {
    let export = build(&rows(vec![item(8, None, "simple", "SIMPLE-1", 1, "123")])).unwrap();
    assert_spec(&export);
    let ours = params(&export);
    let captured: Value = serde_json::from_str(include_str!(
        "../../../protocol/fixtures/captured-order-create.json"
    ))
    .unwrap();
    let theirs = &captured["params"];
    // The same shape: every key the captured export fills is one we fill.
    for path in [
        &["order"][..],
        &["order", "customer"],
        &["order", "payments", "0"],
        &["order", "payments", "0", "transactions", "0"],
        &["order", "lines", "0", "amount"],
        &["order", "lines", "0", "promotions_info"],
    ] {
        let pick = |v: &Value| {
            path.iter()
                .fold(v.clone(), |v, k| match k.parse::<usize>() {
                    Ok(i) => v[i].clone(),
                    Err(_) => v[*k].clone(),
                })
        };
        let (a, b) = (pick(&ours), pick(theirs));
        for (key, value) in b.as_object().unwrap() {
            if !value.is_null() {
                assert!(a.get(key).is_some(), "{path:?}.{key} is missing");
            }
        }
    }
    let lines = ours["order"]["lines"].as_array().unwrap();
    assert_eq!(lines[0]["id"], "8");
    assert_eq!(lines[0]["product_type"], "PHYSICAL");
    assert_eq!(lines[1]["id"], "SHIPPING");
    assert_eq!(lines[1]["sku"], "STANDARD");
    assert_eq!(lines[1]["line_number"], 2);
    assert_eq!(
        ours["order"]["payments"][0]["transactions"][0]["amount"],
        serde_json::json!(128)
    );
    assert_eq!(ours["order"]["customer"]["type"], "GUEST");
}

#[test]
fn units_become_lines_whose_amounts_add_up_to_the_row() {
    let mut mug = item(1, None, "simple", "MUG", 3, "10.00");
    mug.discount_amount = d("1.00");
    mug.tax_amount = d("2.00");
    mug.tax_rate = d("8.25");
    mug.promotions.push(PromotionRow {
        code: "MUGS".into(),
        name: "Mugs".into(),
        discount_amount: d("1.00"),
        percentage: d("3.3333"),
    });
    let export = build(&rows(vec![mug])).unwrap();
    assert_spec(&export);
    let ids: Vec<&str> = export.lines.iter().map(|l| l.line_id.as_str()).collect();
    assert_eq!(ids, ["1-1", "1-2", "1-3", "SHIPPING"]);
    let gross: Decimal = export.lines[..3].iter().map(|l| l.gross_amount).sum();
    let tax: Decimal = export.lines[..3].iter().map(|l| l.tax_amount).sum();
    assert_eq!((gross, tax), (d("29.00"), d("2.00")));
    assert_eq!(export.lines[0].gross_amount, d("9.67"));
    let wire = params(&export);
    let discounts: Vec<f64> = wire["order"]["lines"].as_array().unwrap()[..3]
        .iter()
        .map(|l| {
            l["promotions_info"]["promotions"][0]["discount"]
                .as_f64()
                .unwrap()
        })
        .collect();
    assert_eq!(discounts, [0.34, 0.33, 0.33]);
}

#[test]
fn a_configurable_is_its_chosen_child_at_its_own_price() {
    let export = build(&rows(vec![
        item(2, None, "configurable", "TEE", 1, "25"),
        item(3, Some(2), "simple", "TEE-M", 1, "0"),
    ]))
    .unwrap();
    assert_spec(&export);
    let line = &export.lines[0];
    assert_eq!(
        (line.line_id.as_str(), line.sku.as_str(), line.product_type),
        ("2", "TEE-M", "PHYSICAL")
    );
    assert_eq!(line.gross_amount, d("25"));
    assert_eq!(export.lines.len(), 2, "the child is not a line of its own");
}

#[test]
fn a_bundle_is_followed_by_its_children_pointing_at_it() {
    let export = build(&rows(vec![
        item(4, None, "bundle", "KIT", 2, "60"),
        item(5, Some(4), "simple", "LAMP", 2, "0"),
        item(6, Some(4), "simple", "BULB", 4, "0"),
    ]))
    .unwrap();
    assert_spec(&export);
    let shape: Vec<(&str, &str, Option<&str>)> = export
        .lines
        .iter()
        .map(|l| {
            (
                l.line_id.as_str(),
                l.product_type,
                l.parent_line_id.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("4-1", "BUNDLE", None),
            ("5-1", "PHYSICAL", Some("4-1")),
            ("6-1", "PHYSICAL", Some("4-1")),
            ("6-2", "PHYSICAL", Some("4-1")),
            ("4-2", "BUNDLE", None),
            ("5-2", "PHYSICAL", Some("4-2")),
            ("6-3", "PHYSICAL", Some("4-2")),
            ("6-4", "PHYSICAL", Some("4-2")),
            ("SHIPPING", "SHIPPING", None),
        ]
    );
}

#[test]
fn virtual_gift_cards_and_downloads_are_virtual() {
    let mut r = rows(vec![
        item(1, None, "virtual", "WARRANTY", 1, "9.99"),
        item(2, None, "giftcard", "GC-50", 1, "50"),
        item(3, None, "downloadable", "EBOOK", 1, "5"),
    ]);
    r.order.shipping_carrier = None;
    r.order.shipping_method = None;
    r.order.shipping_address_reference = None;
    let export = build(&r).unwrap();
    assert_spec(&export);
    assert!(export.lines.iter().all(|l| l.product_type == "VIRTUAL"));
    assert_eq!(export.lines.len(), 3, "nothing ships, so no shipping line");
    let wire = params(&export);
    assert_eq!(wire["order"]["lines"][0]["shipping_address_reference"], "b");
}

#[test]
fn a_gift_card_is_an_order_discount_and_the_lines_keep_their_prices() {
    let mut r = rows(vec![item(1, None, "simple", "MUG", 1, "30")]);
    r.order.gift_card_amount = d("20.00");
    r.order.gift_card_codes = vec!["GC-1".into()];
    r.order.store_credit_amount = d("5");
    r.attributes = vec![("delivery_note".into(), "ring twice".into())];
    let export = build(&r).unwrap();
    assert_spec(&export);
    let wire = params(&export);
    assert_eq!(wire["order"]["lines"][0]["amount"]["gross_amount"], 30);
    assert_eq!(
        wire["order"]["payments"][0]["transactions"][0]["amount"],
        serde_json::json!(10)
    );
    let attributes: Vec<(String, String)> = wire["order"]["custom_attributes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            assert_eq!(a["name"], a["attribute_code"]);
            (
                a["name"].as_str().unwrap().to_owned(),
                a["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        attributes,
        [
            ("delivery_note", "ring twice"),
            ("gift_card_amount", "20"),
            ("gift_card_codes", "GC-1"),
            ("store_credit_amount", "5"),
            ("order_discount_amount", "25"),
        ]
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
    );
}

#[test]
fn orders_the_oms_cannot_take_are_refused_with_a_reason() {
    let configurable_alone = rows(vec![item(2, None, "configurable", "TEE", 1, "25")]);
    assert!(
        build(&configurable_alone)
            .unwrap_err()
            .0
            .contains("has 0 chosen children")
    );
    let mut too_much_credit = rows(vec![item(1, None, "simple", "MUG", 1, "3")]);
    too_much_credit.order.gift_card_amount = d("50");
    assert!(
        build(&too_much_credit)
            .unwrap_err()
            .0
            .contains("exceed its total")
    );
    let uneven_bundle = rows(vec![
        item(4, None, "bundle", "KIT", 2, "60"),
        item(5, Some(4), "simple", "LAMP", 3, "0"),
    ]);
    assert!(
        build(&uneven_bundle)
            .unwrap_err()
            .0
            .contains("not a multiple")
    );
}

#[test]
fn the_same_rows_always_give_the_same_message() {
    let r = rows(vec![
        item(4, None, "bundle", "KIT", 1, "60"),
        item(5, Some(4), "simple", "LAMP", 1, "0"),
        item(1, None, "simple", "MUG", 2, "3.33"),
    ]);
    let a = serde_json::to_vec(&build(&r).unwrap().params).unwrap();
    let b = serde_json::to_vec(&build(&r).unwrap().params).unwrap();
    assert_eq!(a, b);
}
