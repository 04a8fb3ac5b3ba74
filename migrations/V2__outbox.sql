-- The transactional outbox: what Commerce must tell the OMS. Storefront writes add rows here
-- by trigger, in their own transaction, so nothing is exported for a rolled-back change and
-- nothing committed is missed. Each module's relay builds the message from the current rows,
-- publishes it to commerce.events with publisher confirms, then marks the row sent.

CREATE TABLE outbox (
    id              bigserial PRIMARY KEY,
    -- The module whose relay sends the row (sales, postsales, catalog).
    module          text NOT NULL,
    -- What to build (order.create, order.cancel, product, …), and what it is about.
    topic           text NOT NULL,
    subject         text COLLATE "C" NOT NULL,
    -- Pending rows with the same (module, topic, coalesce_key) merge into one: many saves of
    -- a product before the relay runs export its latest state once.
    coalesce_key    text COLLATE "C",
    -- Bumped by every merged save; a row is marked sent only if no save came in while it was
    -- being sent, otherwise it goes out again with the newer state.
    version         integer NOT NULL DEFAULT 1,
    created_at      timestamptz NOT NULL DEFAULT now(),
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    -- A relay working on the row; another relay takes it over once this has passed.
    claimed_until   timestamptz,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    message_id      text,
    sent_at         timestamptz,
    -- Gave up (after the retry window, or the row can never be built).
    failed_at       timestamptz
);

CREATE INDEX outbox_due ON outbox (module, next_attempt_at, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE INDEX outbox_pending_by_subject ON outbox (module, subject, id)
    WHERE sent_at IS NULL AND failed_at IS NULL;
CREATE UNIQUE INDEX outbox_coalesce ON outbox (module, topic, coalesce_key)
    WHERE sent_at IS NULL AND failed_at IS NULL AND coalesce_key IS NOT NULL;
CREATE INDEX outbox_sent_at ON outbox (sent_at) WHERE sent_at IS NOT NULL;

-- Wakes the relays at once (LISTEN omsc_outbox); a slow poll is the safety net.
CREATE FUNCTION omsc_outbox_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('omsc_outbox', NEW.module);
    RETURN NULL;
END
$$;

CREATE TRIGGER outbox_notify
    AFTER INSERT OR UPDATE OF version ON outbox
    FOR EACH ROW EXECUTE FUNCTION omsc_outbox_notify();

-- Adds an outbox row; with a coalesce key, merges into the pending row of the same key.
-- Called by the storefront-facing triggers of each module.
CREATE FUNCTION omsc_outbox_add(p_module text, p_topic text, p_subject text, p_coalesce_key text DEFAULT NULL)
RETURNS void
LANGUAGE sql
AS $$
    INSERT INTO outbox (module, topic, subject, coalesce_key)
    VALUES (p_module, p_topic, p_subject, p_coalesce_key)
    ON CONFLICT (module, topic, coalesce_key)
        WHERE sent_at IS NULL AND failed_at IS NULL AND coalesce_key IS NOT NULL
    DO UPDATE SET version = outbox.version + 1,
                  next_attempt_at = least(outbox.next_attempt_at, now())
$$;
