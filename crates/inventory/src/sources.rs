//! Sources (warehouses, stores) and the aggregates they feed.

use deadpool_postgres::Transaction;
use protocol::inventory::Source;

const SAVE: &str = "
    INSERT INTO sources (source_id, name, source_type, timezone, active, store_pickup,
                         ship_from_store, accepts_returns, payload, deleted_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL, now())
    ON CONFLICT (source_id) DO UPDATE
       SET name = EXCLUDED.name, source_type = EXCLUDED.source_type,
           timezone = EXCLUDED.timezone, active = EXCLUDED.active,
           store_pickup = EXCLUDED.store_pickup, ship_from_store = EXCLUDED.ship_from_store,
           accepts_returns = EXCLUDED.accepts_returns, payload = EXCLUDED.payload,
           deleted_at = NULL, updated_at = now()";

const REPLACE_AGGREGATES: &str = "
    WITH gone AS (
        DELETE FROM source_aggregates
         WHERE source_id = $1 AND NOT (aggregate_id = ANY ($2::text[]))
    )
    INSERT INTO source_aggregates (source_id, aggregate_id)
    SELECT $1, a FROM unnest($2::text[]) AS a
    ON CONFLICT DO NOTHING";

const DELETE: &str = "
    UPDATE sources SET deleted_at = now(), updated_at = now()
     WHERE source_id = $1 AND deleted_at IS NULL";

const EXISTS: &str = "SELECT 1 FROM sources WHERE source_id = $1";

pub async fn save(tx: &Transaction<'_>, source: &Source) -> Result<(), tokio_postgres::Error> {
    let save = tx.prepare_cached(SAVE).await?;
    tx.execute(
        &save,
        &[
            &source.id,
            &source.name,
            &source.source_type,
            &source.timezone,
            &source.active,
            &source.store_pickup,
            &source.ship_from_store,
            &source.accepts_returns,
            &source.raw,
        ],
    )
    .await?;
    let aggregates = tx.prepare_cached(REPLACE_AGGREGATES).await?;
    tx.execute(&aggregates, &[&source.id, &source.aggregate_ids])
        .await?;
    Ok(())
}

/// Marks a source deleted; false when the source was never known. Deleting twice is
/// harmless.
pub async fn delete(tx: &Transaction<'_>, source_id: &str) -> Result<bool, tokio_postgres::Error> {
    let delete = tx.prepare_cached(DELETE).await?;
    if tx.execute(&delete, &[&source_id]).await? > 0 {
        return Ok(true);
    }
    let exists = tx.prepare_cached(EXISTS).await?;
    Ok(tx.query_opt(&exists, &[&source_id]).await?.is_some())
}
