-- Inventory: sellable stock per aggregate, stock per source, sources, and the map from
-- websites to stock aggregates. See docs/schema.md for how a storefront reads these.
--
-- Identifiers compare bytewise (COLLATE "C"): SKUs are codes, not words, and bytewise
-- btree comparisons are several times cheaper than locale-aware ones on the hot path.

-- Connector-wide switches that operators change at run time (omsc settings).
CREATE TABLE omsc_settings (
    key   text PRIMARY KEY,
    value text NOT NULL
);

-- Sellable stock per stock aggregate: the contract table the storefront reads.
CREATE TABLE stock_items (
    aggregate_id        text COLLATE "C" NOT NULL,
    sku                 text COLLATE "C" NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity >= 0),
    unlimited           boolean NOT NULL DEFAULT false,
    inflight_backorders bigint,
    -- created_on of the snapshot that last wrote this row: the version the filter compares.
    source_updated_at   timestamptz NOT NULL,
    -- created_on of the NONZERO snapshot that zeroed this row, if one did after that write.
    zeroed_at           timestamptz,
    -- When the connector last changed the row (database clock).
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (aggregate_id, sku)
);

-- Stock per source (warehouse, store) for multi-location inventory, under the same filter.
CREATE TABLE source_stock_items (
    source_id           text COLLATE "C" NOT NULL,
    sku                 text COLLATE "C" NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity >= 0),
    unlimited           boolean NOT NULL DEFAULT false,
    inflight_backorders bigint,
    source_updated_at   timestamptz NOT NULL,
    zeroed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source_id, sku)
);

-- Per ledger and scope (aggregate or source): the created_on of the newest NONZERO snapshot
-- whose zeroing has run. A write older than it, to a SKU it left out, lands as 0.
CREATE TABLE stock_zeroing_floors (
    ledger         text NOT NULL CHECK (ledger IN ('aggregate', 'source')),
    scope_id       text COLLATE "C" NOT NULL,
    zeroed_through timestamptz NOT NULL,
    PRIMARY KEY (ledger, scope_id)
);

-- NONZERO snapshots seen but not yet zeroed: the zeroing waits until no chunk of the
-- snapshot has arrived for the settle period, so that SKUs in chunks still on their way are
-- not shown out of stock in between.
CREATE TABLE stock_nonzero_pending (
    ledger        text NOT NULL CHECK (ledger IN ('aggregate', 'source')),
    scope_id      text COLLATE "C" NOT NULL,
    created_on    timestamptz NOT NULL,
    last_chunk_at timestamptz NOT NULL,
    PRIMARY KEY (ledger, scope_id, created_on)
);

-- Sources as the OMS describes them. A deleted source keeps its row with deleted_at set.
CREATE TABLE sources (
    source_id       text COLLATE "C" PRIMARY KEY,
    name            text,
    source_type     text,
    timezone        text,
    active          boolean NOT NULL,
    store_pickup    boolean NOT NULL,
    ship_from_store boolean NOT NULL,
    accepts_returns boolean NOT NULL,
    payload         jsonb NOT NULL,
    deleted_at      timestamptz,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Which aggregates each source feeds.
CREATE TABLE source_aggregates (
    source_id    text COLLATE "C" NOT NULL REFERENCES sources (source_id) ON DELETE CASCADE,
    aggregate_id text COLLATE "C" NOT NULL,
    PRIMARY KEY (source_id, aggregate_id)
);
CREATE INDEX source_aggregates_by_aggregate ON source_aggregates (aggregate_id);

-- Commerce websites, and the stock aggregate each one sells from ("Manage Stock Aggregates").
CREATE TABLE websites (
    code text COLLATE "C" PRIMARY KEY,
    name text NOT NULL DEFAULT ''
);

CREATE TABLE website_stock_aggregates (
    website_code text COLLATE "C" PRIMARY KEY REFERENCES websites (code) ON DELETE CASCADE,
    aggregate_id text COLLATE "C" NOT NULL
);
CREATE INDEX website_stock_aggregates_by_aggregate ON website_stock_aggregates (aggregate_id);

-- What a storefront asks: the stock of a SKU on a website, and whether it can be sold.
CREATE VIEW website_stock AS
SELECT w.website_code,
       s.sku,
       s.aggregate_id,
       s.quantity,
       s.unlimited,
       (s.unlimited OR s.quantity > 0) AS is_sellable,
       s.source_updated_at
FROM website_stock_aggregates w
JOIN stock_items s ON s.aggregate_id = w.aggregate_id;

-- Is `wanted` of `sku` sellable on `website`? A SKU the OMS never reported is not.
CREATE FUNCTION is_sellable(website text, sku text, wanted bigint DEFAULT 1)
RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(
        (SELECT s.unlimited OR s.quantity >= wanted
           FROM website_stock_aggregates w
           JOIN stock_items s ON s.aggregate_id = w.aggregate_id
          WHERE w.website_code = website AND s.sku = is_sellable.sku),
        false)
$$;

-- What the OMS owns is read-only for everyone but the connector. The connector's sessions
-- carry omsc.actor = 'connector' (set at connection start-up); everything else is refused,
-- unless an operator allowed hand edits for development (omsc settings hand-edits allow).
-- A statement-level trigger costs one check per statement, not one per row.
CREATE FUNCTION omsc_refuse_foreign_writes() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN NULL;
    END IF;
    IF EXISTS (SELECT 1 FROM omsc_settings WHERE key = 'hand_edits' AND value = 'allow') THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is owned by the OMS: only the connector writes it', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'changes arrive from the OMS; for development only, run: omsc settings hand-edits allow';
END
$$;

CREATE TRIGGER stock_items_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON stock_items
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER source_stock_items_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON source_stock_items
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sources_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sources
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER source_aggregates_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON source_aggregates
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
