//! Writing statistics: one transaction per flush, merging into the rows that other workers
//! (and earlier flushes) wrote, and pruning what is past retention.

use chrono::{DateTime, Utc};

use super::{EndpointKey, GaugeSample, Identity, Pending, RESOLUTIONS, Retention, Tally};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] tokio_postgres::Error),
    #[error("database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// Adds one row's worth to `omsc_endpoint_stats`.
const MERGE_ENDPOINT: &str = "
    INSERT INTO omsc_endpoint_stats AS t
           (resolution, period_start, module, direction, endpoint, outcome, messages,
            duration_sum, duration_max, duration_buckets, lag_sum, lag_count, lag_max,
            last_seen_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
    ON CONFLICT (resolution, period_start, module, direction, endpoint, outcome) DO UPDATE
       SET messages = t.messages + EXCLUDED.messages,
           duration_sum = t.duration_sum + EXCLUDED.duration_sum,
           duration_max = greatest(t.duration_max, EXCLUDED.duration_max),
           duration_buckets = omsc_stats_add_buckets(t.duration_buckets, EXCLUDED.duration_buckets),
           lag_sum = t.lag_sum + EXCLUDED.lag_sum,
           lag_count = t.lag_count + EXCLUDED.lag_count,
           lag_max = greatest(t.lag_max, EXCLUDED.lag_max),
           last_seen_at = greatest(t.last_seen_at, EXCLUDED.last_seen_at)";

/// Adds one sample to `omsc_gauge_stats`: the highest value, and the latest one.
const MERGE_GAUGE: &str = "
    INSERT INTO omsc_gauge_stats AS t
           (resolution, period_start, module, gauge, value_max, value_last, sampled_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7)
    ON CONFLICT (resolution, period_start, module, gauge) DO UPDATE
       SET value_max = greatest(t.value_max, EXCLUDED.value_max),
           value_last = CASE WHEN EXCLUDED.sampled_at >= t.sampled_at
                             THEN EXCLUDED.value_last ELSE t.value_last END,
           sampled_at = greatest(t.sampled_at, EXCLUDED.sampled_at)";

const SEEN_WORKER: &str = "
    INSERT INTO omsc_workers (worker, module, version, started_at, last_seen_at)
    VALUES ($1, $2, $3, $4, $5)
    ON CONFLICT (worker, module) DO UPDATE
       SET version = EXCLUDED.version, last_seen_at = greatest(omsc_workers.last_seen_at, EXCLUDED.last_seen_at)";

const PRUNE_ENDPOINTS: &str =
    "DELETE FROM omsc_endpoint_stats WHERE resolution = $1 AND period_start < $2";
const PRUNE_GAUGES: &str =
    "DELETE FROM omsc_gauge_stats WHERE resolution = $1 AND period_start < $2";
const PRUNE_WORKERS: &str = "DELETE FROM omsc_workers WHERE last_seen_at < $1";

/// Writes `pending` (and that `identity` runs `modules`) in one transaction; returns the
/// number of rows merged. Rows are written in one fixed order (resolution, period, key), the
/// same for every worker, so concurrent flushes wait for each other but never deadlock.
pub async fn write(
    client: &mut deadpool_postgres::Client,
    identity: &Identity,
    modules: &[&'static str],
    pending: &Pending,
    now: DateTime<Utc>,
) -> Result<usize, StoreError> {
    let tx = client.transaction().await?;
    let merge_endpoint = tx.prepare_cached(MERGE_ENDPOINT).await?;
    let merge_gauge = tx.prepare_cached(MERGE_GAUGE).await?;
    let seen_worker = tx.prepare_cached(SEEN_WORKER).await?;
    let mut written = 0;
    for (resolution, endpoints, gauges) in pending.rows() {
        let resolution = resolution.as_str();
        // Pipelined: the statements go out back to back, in order, and are awaited together.
        let merges = endpoints.iter().map(|(key, tally)| {
            let stmt = &merge_endpoint;
            let tx = &tx;
            async move { merge_row(tx, stmt, resolution, key, tally).await }
        });
        written += futures::future::try_join_all(merges).await?.len();
        let merges = gauges.iter().map(|((period, module, gauge), sample)| {
            let stmt = &merge_gauge;
            let tx = &tx;
            async move { merge_gauge_row(tx, stmt, resolution, period, module, gauge, sample).await }
        });
        written += futures::future::try_join_all(merges).await?.len();
    }
    for module in modules {
        tx.execute(
            &seen_worker,
            &[
                &identity.worker,
                module,
                &identity.version,
                &identity.started_at,
                &now,
            ],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(written)
}

async fn merge_row(
    tx: &deadpool_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    resolution: &str,
    key: &EndpointKey,
    tally: &Tally,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        stmt,
        &[
            &resolution,
            &key.period,
            &key.module.as_ref(),
            &key.direction.as_str(),
            &key.endpoint.as_ref(),
            &key.outcome,
            &tally.duration.count,
            &tally.duration.sum,
            &tally.duration.max,
            &tally.duration.buckets,
            &tally.lag_sum,
            &tally.lag_count,
            &tally.lag_max,
            &tally.last_seen,
        ],
    )
    .await
}

async fn merge_gauge_row(
    tx: &deadpool_postgres::Transaction<'_>,
    stmt: &tokio_postgres::Statement,
    resolution: &str,
    period: &DateTime<Utc>,
    module: &str,
    gauge: &str,
    sample: &GaugeSample,
) -> Result<u64, tokio_postgres::Error> {
    tx.execute(
        stmt,
        &[
            &resolution,
            period,
            &module,
            &gauge,
            &sample.max,
            &sample.last,
            &sample.at,
        ],
    )
    .await
}

/// Deletes what is past retention (measured from `now`); returns the rows deleted.
pub async fn prune(
    client: &tokio_postgres::Client,
    retention: Retention,
    now: DateTime<Utc>,
) -> Result<u64, StoreError> {
    let mut deleted = 0;
    for resolution in RESOLUTIONS {
        let before = resolution.floor(now - retention.of(resolution));
        for sql in [PRUNE_ENDPOINTS, PRUNE_GAUGES] {
            deleted += client
                .execute(sql, &[&resolution.as_str(), &before])
                .await?;
        }
    }
    deleted += client
        .execute(PRUNE_WORKERS, &[&(now - retention.hours_and_days)])
        .await?;
    Ok(deleted)
}
