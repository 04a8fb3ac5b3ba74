-- The system report: per-endpoint message statistics, aggregated in memory by each worker
-- per minute and merged here, so that any number of replicas add up. Never one row per
-- message: a worker flushes once a minute (and at shutdown).
--
-- Every flush adds its minute to three resolutions at once (the minute, its hour and its
-- day), so the hourly and daily roll-ups are always current and need no job; the minute rows
-- are kept for a short while, the hours and days for the retention period
-- (OMSC_STATS_RETENTION_DAYS). Merging is a sum of counts and of latency histogram buckets,
-- so percentiles of any set of rows are computed from their merged buckets.

-- Element-wise sum of two histogram bucket arrays (a missing element counts as 0).
CREATE FUNCTION omsc_stats_add_buckets(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
      FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

-- The merged histogram of a set of rows.
CREATE AGGREGATE omsc_stats_sum_buckets(bigint[]) (
    SFUNC = omsc_stats_add_buckets,
    STYPE = bigint[],
    INITCOND = '{}'
);

-- Messages per (period, module, direction, endpoint, outcome).
-- direction 'in': messages consumed from the module's queue; endpoint is the method and
-- outcome one of applied, stale, ignored, retried, dead.
-- direction 'out': outbox rows relayed to the OMS; endpoint is the outbox topic and outcome
-- one of sent, nothing, retried, failed; the duration is the row's age when settled.
CREATE TABLE omsc_endpoint_stats (
    resolution       text NOT NULL CHECK (resolution IN ('minute', 'hour', 'day')),
    period_start     timestamptz NOT NULL,
    module           text NOT NULL,
    direction        text NOT NULL CHECK (direction IN ('in', 'out')),
    endpoint         text NOT NULL,
    outcome          text NOT NULL,
    messages         bigint NOT NULL,
    -- Seconds from receiving a message to acknowledging it (in), or from an outbox row's
    -- creation to its settlement (out).
    duration_sum     double precision NOT NULL,
    duration_max     double precision NOT NULL,
    -- Counts per bucket of runtime::stats::BUCKETS (not cumulative); the last counts what is
    -- above the last bound. Changing the bounds needs a new table.
    duration_buckets bigint[] NOT NULL,
    -- Source lag (now - the message's own timestamp), for messages that carry one.
    lag_sum          double precision NOT NULL DEFAULT 0,
    lag_count        bigint NOT NULL DEFAULT 0,
    lag_max          double precision,
    last_seen_at     timestamptz NOT NULL,
    PRIMARY KEY (resolution, period_start, module, direction, endpoint, outcome)
);

-- Sampled levels per (period, module, gauge): outbox_pending, outbox_failed,
-- queue_ready, queue_dead. Every replica sees the same level, so merging keeps the highest
-- and the latest.
CREATE TABLE omsc_gauge_stats (
    resolution   text NOT NULL CHECK (resolution IN ('minute', 'hour', 'day')),
    period_start timestamptz NOT NULL,
    module       text NOT NULL,
    gauge        text NOT NULL,
    value_max    bigint NOT NULL,
    value_last   bigint NOT NULL,
    sampled_at   timestamptz NOT NULL,
    PRIMARY KEY (resolution, period_start, module, gauge)
);

-- The workers that flushed statistics recently: which modules run where, in which version.
CREATE TABLE omsc_workers (
    worker       text NOT NULL,
    module       text NOT NULL,
    version      text NOT NULL,
    started_at   timestamptz NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (worker, module)
);

-- Outbox rows given up on, counted by every relay for omsc_outbox_failed.
CREATE INDEX outbox_failed ON outbox (module) WHERE failed_at IS NOT NULL AND sent_at IS NULL;
