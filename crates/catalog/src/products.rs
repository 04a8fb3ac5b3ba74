//! Reading products from the commerce database into [`protocol::catalog::Product`]s: one by
//! SKU (the relay) or a chunk after a SKU (the full export, keyset pagination).

use chrono::{DateTime, Utc};
use protocol::catalog::{
    CommerceType, CustomAttribute, LocalizedName, Product, ProductPrice, ProductType,
    format_datetime,
};
use serde_json::Value;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

/// One product with everything its message holds, gathered per row by subqueries so that a
/// chunk is one statement: the effective name in every active store view (its own name or
/// the default one), custom attributes, and children in their position order.
macro_rules! select_products {
    () => {
        "SELECT p.sku, p.type, p.giftcard_kind, p.name, p.status, p.price::text, p.currency,
                p.price_adjustable, p.created_at, p.updated_at,
                ARRAY(SELECT c.child_sku FROM product_children c
                       WHERE c.parent_sku = p.sku ORDER BY c.position, c.child_sku) AS children,
                (SELECT jsonb_agg(jsonb_build_array(a.code, a.value) ORDER BY a.code)
                   FROM product_attributes a WHERE a.sku = p.sku) AS attributes,
                (SELECT jsonb_agg(jsonb_build_array(coalesce(n.value, p.name), v.locale, v.channel)
                                  ORDER BY v.code)
                   FROM store_views v
                   LEFT JOIN product_names n ON n.sku = p.sku AND n.store_view = v.code
                  WHERE v.active) AS names
           FROM products p"
    };
}

const BY_SKU: &str = concat!(select_products!(), " WHERE p.sku = $1");

/// The next chunk of the catalog in SKU order, after `$1` (`''` for the first).
const AFTER_SKU: &str = concat!(
    select_products!(),
    " WHERE p.sku > $1 ORDER BY p.sku LIMIT $2"
);

const TOMBSTONE: &str = "SELECT type FROM product_tombstones WHERE sku = $1";

/// Why a stored product cannot be exported (the relay marks its row failed with it).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

/// What the database holds about a SKU.
#[derive(Debug)]
pub enum Found {
    Product(Result<Product, Invalid>),
    /// Deleted (or renamed) by the storefront: exported once more as INACTIVE.
    Deleted(Product),
    Unknown,
}

pub async fn by_sku(
    client: &impl deadpool_postgres::GenericClient,
    sku: &str,
) -> Result<Found, tokio_postgres::Error> {
    if let Some(row) = client.query_opt(BY_SKU, &[&sku]).await? {
        return Ok(Found::Product(from_row(&row)));
    }
    Ok(match client.query_opt(TOMBSTONE, &[&sku]).await? {
        Some(row) => {
            let type_name: String = row.get(0);
            let product_type = CommerceType::from_columns(&type_name, None)
                .map(CommerceType::export_type)
                .unwrap_or(ProductType::Simple);
            Found::Deleted(inactive(sku, product_type))
        }
        None => Found::Unknown,
    })
}

/// Up to `limit` products after `after` in SKU order, with their SKUs (an invalid product
/// still advances the cursor).
pub async fn chunk_after(
    client: &impl deadpool_postgres::GenericClient,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, Result<Product, Invalid>)>, tokio_postgres::Error> {
    let params: [&(dyn ToSql + Sync); 2] = [&after, &limit];
    let statement = client.prepare_cached(AFTER_SKU).await?;
    Ok(client
        .query(&statement, &params)
        .await?
        .iter()
        .map(|row| (row.get::<_, String>(0), from_row(row)))
        .collect())
}

fn inactive(sku: &str, product_type: ProductType) -> Product {
    Product {
        id: sku.to_owned(),
        product_type,
        sku: sku.to_owned(),
        price_adjustable: None,
        name: Vec::new(),
        price: None,
        status: "INACTIVE".to_owned(),
        created_at: None,
        modified_at: None,
        children_skus: None,
        custom_attributes: Vec::new(),
    }
}

fn from_row(row: &Row) -> Result<Product, Invalid> {
    let sku: String = row.get(0);
    let invalid = |reason: String| Invalid(format!("product {sku}: {reason}"));
    let commerce_type = CommerceType::from_columns(row.get(1), row.get(2)).map_err(invalid)?;
    let default_name: String = row.get(3);
    let price: Option<String> = row.get(5);
    let currency: Option<String> = row.get(6);
    let price = match (price, currency) {
        (Some(amount), Some(currency)) => Some(ProductPrice {
            currency,
            amount: amount
                .parse::<f64>()
                .map_err(|e| invalid(format!("price {amount:?}: {e}")))?,
        }),
        _ => None,
    };
    let created_at: DateTime<Utc> = row.get(8);
    let updated_at: DateTime<Utc> = row.get(9);
    let children: Vec<String> = row.get(10);
    let product_type = commerce_type.export_type();
    Ok(Product {
        id: sku.clone(),
        product_type,
        price_adjustable: Some(row.get(7)),
        name: names(row.get(12), default_name),
        price,
        status: row.get(4),
        created_at: Some(format_datetime(&created_at)),
        modified_at: Some(format_datetime(&updated_at)),
        children_skus: (product_type == ProductType::Configurable).then_some(children),
        custom_attributes: attributes(row.get(11)),
        sku,
    })
}

/// `[[value, locale, channel], …]` per active store view; without store views, the default
/// name alone.
fn names(per_store_view: Option<Value>, default_name: String) -> Vec<LocalizedName> {
    let entries: Vec<LocalizedName> = pairs(per_store_view)
        .filter_map(|entry| {
            let text = |i: usize| entry.get(i).and_then(Value::as_str).map(str::to_owned);
            Some(LocalizedName {
                value: text(0)?,
                locale: text(1),
                channel: text(2),
            })
        })
        .collect();
    if entries.is_empty() {
        vec![LocalizedName {
            value: default_name,
            channel: None,
            locale: None,
        }]
    } else {
        entries
    }
}

fn attributes(pairs_json: Option<Value>) -> Vec<CustomAttribute> {
    pairs(pairs_json)
        .filter_map(|entry| {
            let code = entry.first()?.as_str()?;
            let value = entry.get(1)?.as_str()?;
            Some(CustomAttribute::new(code, value))
        })
        .collect()
}

fn pairs(json: Option<Value>) -> impl Iterator<Item = Vec<Value>> {
    let items = match json {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    items.into_iter().filter_map(|item| match item {
        Value::Array(entry) => Some(entry),
        _ => None,
    })
}
