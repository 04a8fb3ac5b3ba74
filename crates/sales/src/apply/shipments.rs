//! `customer_shipment_done`: one physical shipment with its lines and parcels. A shipment is
//! stored once (by the OMS's shipment id, else its shipment request id, else a digest of its
//! content); each line is one unit and ships once, so partial shipments add up line by line
//! and a shipment of a line already shipped is one of more units than were ordered. What a
//! storefront shows of it is kept with it: each line's status, each parcel's label link, the
//! delivery address.

use deadpool_postgres::Transaction;
use protocol::logistics::Shipment;
use runtime::Outcome;

use super::lines;

/// The key of a shipment: `id:<OMS id>`, `request:<shipment request id>`, or
/// `content:<md5 of its content>`.
const EXISTING: &str = "
    SELECT id FROM sales_shipments
     WHERE order_id = $1
       AND shipment_key = coalesce('id:' || $2, 'request:' || $4, 'content:' || md5($3))";

const ALREADY_SHIPPED: &str = "
    SELECT line_id, shipment_id FROM sales_shipment_lines
     WHERE order_id = $1 AND line_id = ANY ($2::text[]) ORDER BY line_id";

const SHIPMENT: &str = "
    INSERT INTO sales_shipments (order_id, shipment_key, oms_shipment_id, shipment_request_id,
                                 source_id, method, shipped_at, address)
    VALUES ($1, coalesce('id:' || $2, 'request:' || $4, 'content:' || md5($3)), $2, $4, $5, $6,
            $7, $8)
    RETURNING id";

const SHIPMENT_LINES: &str = "
    INSERT INTO sales_shipment_lines (order_id, line_id, shipment_id, status, status_reason)
    SELECT $1, l.line_id, $2, l.status, l.reason
      FROM unnest($3::text[], $4::text[], $5::text[]) AS l (line_id, status, reason)";

const PACKAGES: &str = "
    INSERT INTO sales_shipment_packages (shipment_id, package_id, carrier, tracking_number,
                                         tracking_link, tracking_comment, line_numbers,
                                         shipping_label_link)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
    ON CONFLICT (shipment_id, package_id) DO NOTHING";

pub async fn apply(
    tx: &Transaction<'_>,
    shipment: &Shipment,
) -> Result<Outcome, tokio_postgres::Error> {
    let order_id = shipment.order_id.as_str();
    let lines = lines::load(tx, order_id).await?;
    let shipped = match lines::resolve(&lines, order_id, shipment.lines.iter().map(|l| &l.line)) {
        Ok(found) => found,
        Err(outcome) => return Ok(outcome),
    };
    if let Some((i, line)) = shipped
        .iter()
        .enumerate()
        .find(|(i, l)| shipped[..*i].iter().any(|e| e.line_id == l.line_id))
    {
        return Ok(Outcome::Reject(format!(
            "shipment.items[{i}]: line {:?} is listed twice; a line is one unit and ships once",
            line.line_id
        )));
    }
    let content = shipment.content();
    let existing = tx.prepare_cached(EXISTING).await?;
    if tx
        .query_opt(
            &existing,
            &[
                &order_id,
                &shipment.shipment_id,
                &content,
                &shipment.shipment_request_id,
            ],
        )
        .await?
        .is_some()
    {
        return Ok(Outcome::Stale);
    }
    let line_ids: Vec<&str> = shipped.iter().map(|l| l.line_id.as_str()).collect();
    let already = tx.prepare_cached(ALREADY_SHIPPED).await?;
    if let Some(row) = tx.query(&already, &[&order_id, &line_ids]).await?.first() {
        let line_id: String = row.get(0);
        let earlier: i64 = row.get(1);
        let sku = shipped
            .iter()
            .find(|l| l.line_id == line_id)
            .map_or("", |l| l.sku.as_str());
        return Ok(Outcome::Reject(format!(
            "order {order_id}: line {line_id:?} ({sku}) already shipped in shipment {earlier}; \
             this shipment ships more units than were ordered"
        )));
    }
    let address = shipment
        .address
        .as_ref()
        .map(|a| serde_json::to_value(a).expect("a map of texts is JSON"));
    let insert = tx.prepare_cached(SHIPMENT).await?;
    let id: i64 = tx
        .query_one(
            &insert,
            &[
                &order_id,
                &shipment.shipment_id,
                &content,
                &shipment.shipment_request_id,
                &shipment.source_id,
                &shipment.method,
                &shipment.shipped_at,
                &address,
            ],
        )
        .await?
        .get(0);
    let statuses: Vec<Option<&str>> = shipment.lines.iter().map(|l| l.status.as_deref()).collect();
    let reasons: Vec<Option<&str>> = shipment
        .lines
        .iter()
        .map(|l| l.status_reason.as_deref())
        .collect();
    let add_lines = tx.prepare_cached(SHIPMENT_LINES).await?;
    tx.execute(
        &add_lines,
        &[&order_id, &id, &line_ids, &statuses, &reasons],
    )
    .await?;
    let packages = tx.prepare_cached(PACKAGES).await?;
    for (i, p) in shipment.packages.iter().enumerate() {
        let package_id = p.id.clone().unwrap_or_else(|| format!("#{}", i + 1));
        let numbers: Vec<i32> = p
            .line_numbers
            .iter()
            .map(|n| i32::try_from(*n).unwrap_or(i32::MAX))
            .collect();
        tx.execute(
            &packages,
            &[
                &id,
                &package_id,
                &p.carrier,
                &p.tracking_number,
                &p.tracking_link,
                &p.tracking_comment,
                &numbers,
                &p.shipping_label_link,
            ],
        )
        .await?;
    }
    Ok(Outcome::Applied)
}
