-- What an operator did to an outbox row, kept on the row as the dead letters keep their
-- status and settled_at: `omsc outbox retry` sends a failed or stuck row again (retried_at,
-- retries; the retry window then counts from retried_at, so an old row gets a whole window
-- again), and `omsc outbox discard` gives up on a row for good (discarded_at; it also sets
-- failed_at, so no relay takes it, and it no longer counts as failed: nobody has to look at
-- it again).

ALTER TABLE outbox
    ADD COLUMN retried_at   timestamptz,
    ADD COLUMN retries      integer NOT NULL DEFAULT 0,
    ADD COLUMN discarded_at timestamptz;

DROP INDEX IF EXISTS outbox_failed;
CREATE INDEX outbox_failed ON outbox (module)
    WHERE failed_at IS NOT NULL AND sent_at IS NULL AND discarded_at IS NULL;
