//! The statements of the filter, one set per ledger. Table and column names are constants of
//! this crate; every value travels as a parameter.

use std::sync::OnceLock;

use crate::StockScope;

pub(crate) struct LedgerSql {
    pub lock_shared: &'static str,
    pub lock_exclusive: &'static str,
    pub upsert: String,
    pub nonzero_pending: String,
    pub zero_left_out: String,
    pub read_all: &'static str,
}

pub(crate) fn ledger_name(ledger: StockScope) -> &'static str {
    match ledger {
        StockScope::Aggregate => "aggregate",
        StockScope::Source => "source",
    }
}

/// The oldest NONZERO snapshot of a ledger that no chunk has touched for the settle period.
/// Read without a lock: the zeroing takes the scope's advisory lock first and then locks the
/// row with [`CONFIRM_SETTLED`], the same order as writers (scope lock, then pending row), so
/// a zeroing and a late chunk of the same snapshot never wait on each other in a cycle.
pub(crate) const NEXT_SETTLED: &str = "
    SELECT scope_id, created_on
      FROM stock_nonzero_pending
     WHERE ledger = $1
       AND last_chunk_at < now() - make_interval(secs => $2::float8)
     ORDER BY created_on
     LIMIT 1";

/// Locks the candidate again, now under the scope lock; gone or refreshed means another
/// replica zeroed it or a chunk just arrived.
pub(crate) const CONFIRM_SETTLED: &str = "
    SELECT 1
      FROM stock_nonzero_pending
     WHERE ledger = $1 AND scope_id = $2 AND created_on = $3
       AND last_chunk_at < now() - make_interval(secs => $4::float8)
       FOR UPDATE";

/// Raises the scope's floor to the zeroed snapshot (never lowers it) and forgets the pending
/// snapshot.
pub(crate) const RAISE_FLOOR: &str = "
    WITH done AS (
        DELETE FROM stock_nonzero_pending
         WHERE ledger = $1 AND scope_id = $2 AND created_on = $3
    )
    INSERT INTO stock_zeroing_floors (ledger, scope_id, zeroed_through)
    VALUES ($1, $2, $3)
    ON CONFLICT (ledger, scope_id) DO UPDATE
       SET zeroed_through = greatest(stock_zeroing_floors.zeroed_through, EXCLUDED.zeroed_through)";

pub(crate) fn for_ledger(ledger: StockScope) -> &'static LedgerSql {
    static AGGREGATE: OnceLock<LedgerSql> = OnceLock::new();
    static SOURCE: OnceLock<LedgerSql> = OnceLock::new();
    match ledger {
        StockScope::Aggregate => AGGREGATE.get_or_init(|| build(StockScope::Aggregate)),
        StockScope::Source => SOURCE.get_or_init(|| build(StockScope::Source)),
    }
}

fn build(of: StockScope) -> LedgerSql {
    let ledger = ledger_name(of);
    let (table, scope, lock_shared, lock_exclusive, read_all) = match of {
        StockScope::Aggregate => (
            "stock_items",
            "aggregate_id",
            "SELECT pg_advisory_xact_lock_shared(hashtextextended('omsc.stock.aggregate:' || s, 0))
               FROM unnest($1::text[]) AS s",
            "SELECT pg_advisory_xact_lock(hashtextextended('omsc.stock.aggregate:' || $1::text, 0))",
            "SELECT aggregate_id, sku, quantity, unlimited, source_updated_at
               FROM stock_items ORDER BY aggregate_id, sku",
        ),
        StockScope::Source => (
            "source_stock_items",
            "source_id",
            "SELECT pg_advisory_xact_lock_shared(hashtextextended('omsc.stock.source:' || s, 0))
               FROM unnest($1::text[]) AS s",
            "SELECT pg_advisory_xact_lock(hashtextextended('omsc.stock.source:' || $1::text, 0))",
            "SELECT source_id, sku, quantity, unlimited, source_updated_at
               FROM source_stock_items ORDER BY source_id, sku",
        ),
    };
    // `fresh` drops, without locking anything, every update that the stored row already
    // supersedes: stale and repeated messages cost one index probe. The ON CONFLICT clause
    // repeats the comparison for rows another transaction wrote in between.
    // The statement answers with the ordinals of the updates it wrote, so each message can be
    // told apart as applied or stale.
    // A write older than the scope's floor (the newest NONZERO zeroing) to a row the zeroing
    // covered lands as 0: the zeroing is newer than it.
    let upsert = format!(
        "WITH input AS (
             SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::bool[], $5::int8[], $6::timestamptz[])
                 WITH ORDINALITY AS u(scope_id, sku, quantity, unlimited, inflight_backorders, version, ord)
         ),
         fresh AS (
             SELECT i.*, f.zeroed_through
               FROM input i
               LEFT JOIN {table} t ON t.{scope} = i.scope_id AND t.sku = i.sku
               LEFT JOIN stock_zeroing_floors f ON f.ledger = '{ledger}' AND f.scope_id = i.scope_id
              WHERE t.sku IS NULL OR t.source_updated_at < i.version
         ),
         written AS (
             INSERT INTO {table} AS t ({scope}, sku, quantity, unlimited, inflight_backorders,
                                       source_updated_at, zeroed_at, updated_at)
             SELECT scope_id, sku,
                    CASE WHEN NOT unlimited AND zeroed_through > version THEN 0 ELSE quantity END,
                    unlimited, inflight_backorders, version,
                    CASE WHEN NOT unlimited AND zeroed_through > version THEN zeroed_through END,
                    now()
               FROM fresh
              ORDER BY scope_id, sku
             ON CONFLICT ({scope}, sku) DO UPDATE
                SET quantity = EXCLUDED.quantity,
                    unlimited = EXCLUDED.unlimited,
                    inflight_backorders = EXCLUDED.inflight_backorders,
                    source_updated_at = EXCLUDED.source_updated_at,
                    zeroed_at = EXCLUDED.zeroed_at,
                    updated_at = EXCLUDED.updated_at
              WHERE t.source_updated_at < EXCLUDED.source_updated_at
             RETURNING t.{scope}, t.sku
         )
         SELECT coalesce(array_agg(f.ord::int4), '{{}}')
           FROM written w
           JOIN fresh f ON f.scope_id = w.{scope} AND f.sku = w.sku"
    );
    let nonzero_pending = format!(
        "INSERT INTO stock_nonzero_pending (ledger, scope_id, created_on, last_chunk_at)
         SELECT '{ledger}', s, c, now() FROM unnest($1::text[], $2::timestamptz[]) AS u(s, c)
          ORDER BY s, c
         ON CONFLICT (ledger, scope_id, created_on) DO UPDATE SET last_chunk_at = now()"
    );
    // Rows already at 0 are skipped: they need no write, and the floor covers them.
    let zero_left_out = format!(
        "UPDATE {table}
            SET quantity = 0, zeroed_at = $2, updated_at = now()
          WHERE {scope} = $1 AND source_updated_at < $2 AND NOT unlimited AND quantity <> 0"
    );
    LedgerSql {
        lock_shared,
        lock_exclusive,
        upsert,
        nonzero_pending,
        zero_left_out,
        read_all,
    }
}
