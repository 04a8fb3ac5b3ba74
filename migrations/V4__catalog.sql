-- Catalog: the products and shipping methods the storefront writes and the connector exports
-- to the OMS (magento.catalog.product_management.updated), the full-catalog export runs, and
-- the connector's registration with the OMS. See docs/schema.md for how a storefront writes
-- these tables.
--
-- The storefront owns products and shipping methods; every write it makes adds an outbox row
-- by trigger, in its own transaction. The connector's own sessions (omsc.actor = 'connector')
-- add none, so an import never echoes back as an export.

-- Store views: the locale and the OMS sales channel of each, for products' names.
CREATE TABLE store_views (
    code    text COLLATE "C" PRIMARY KEY,
    locale  text NOT NULL,
    channel text NOT NULL,
    active  boolean NOT NULL DEFAULT true
);

CREATE TABLE products (
    sku              text COLLATE "C" PRIMARY KEY CHECK (length(sku) BETWEEN 1 AND 64),
    type             text NOT NULL
                     CHECK (type IN ('simple', 'configurable', 'bundle', 'virtual', 'giftcard', 'downloadable')),
    -- The default (admin) name; store views may override it in product_names.
    name             text NOT NULL,
    status           text NOT NULL DEFAULT 'ACTIVE'
                     CHECK (status IN ('ACTIVE', 'INACTIVE', 'EOL', 'OUTLET')),
    price            numeric(20, 4) CHECK (price >= 0),
    currency         text CHECK (currency ~ '^[A-Z]{3}$'),
    -- The customer chooses the amount (a gift card with an open amount).
    price_adjustable boolean NOT NULL DEFAULT false,
    -- Gift cards only: whether the card is shipped (physical, combined) or not (virtual).
    giftcard_kind    text CHECK (giftcard_kind IN ('virtual', 'physical', 'combined')),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    CHECK (price IS NULL OR currency IS NOT NULL)
);

-- The name of a product in a store view, where it differs from the default name.
CREATE TABLE product_names (
    sku        text COLLATE "C" NOT NULL REFERENCES products (sku) ON DELETE CASCADE ON UPDATE CASCADE,
    store_view text COLLATE "C" NOT NULL REFERENCES store_views (code) ON DELETE CASCADE ON UPDATE CASCADE,
    value      text NOT NULL,
    PRIMARY KEY (sku, store_view)
);

-- Custom product attributes of any name (color, ean, country_of_origin …), as text.
CREATE TABLE product_attributes (
    sku   text COLLATE "C" NOT NULL REFERENCES products (sku) ON DELETE CASCADE ON UPDATE CASCADE,
    code  text COLLATE "C" NOT NULL CHECK (code <> ''),
    value text NOT NULL,
    PRIMARY KEY (sku, code)
);

-- The children of a configurable product (its configurations) or of a bundle.
CREATE TABLE product_children (
    parent_sku text COLLATE "C" NOT NULL REFERENCES products (sku) ON DELETE CASCADE ON UPDATE CASCADE,
    child_sku  text COLLATE "C" NOT NULL REFERENCES products (sku) ON DELETE CASCADE ON UPDATE CASCADE,
    position   integer NOT NULL DEFAULT 0,
    PRIMARY KEY (parent_sku, child_sku),
    CHECK (parent_sku <> child_sku)
);
CREATE INDEX product_children_by_child ON product_children (child_sku);

-- Products deleted (or renamed) by the storefront: exported once more as INACTIVE, so the
-- OMS stops selling them. A product created again under the SKU clears its tombstone.
CREATE TABLE product_tombstones (
    sku        text COLLATE "C" PRIMARY KEY,
    type       text NOT NULL,
    deleted_at timestamptz NOT NULL DEFAULT now()
);

-- updated_at follows every change, unless the writer sets it.
CREATE FUNCTION catalog_touch_product() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.updated_at IS NOT DISTINCT FROM OLD.updated_at THEN
        NEW.updated_at := now();
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER products_touch BEFORE UPDATE ON products
    FOR EACH ROW EXECUTE FUNCTION catalog_touch_product();

-- Queues the export of every product a statement touched, once per SKU (the outbox merges
-- repeated saves of a SKU that is still pending). Statement-level with transition tables: a
-- storefront updating 100,000 prices in one statement runs this once.
CREATE FUNCTION catalog_products_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO product_tombstones (sku, type)
        SELECT o.sku, o.type FROM old_rows o
         WHERE NOT EXISTS (SELECT 1 FROM products p WHERE p.sku = o.sku)
        ON CONFLICT (sku) DO UPDATE SET type = EXCLUDED.type, deleted_at = now();
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        DELETE FROM product_tombstones t USING new_rows n WHERE t.sku = n.sku;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku) FROM new_rows s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT sku FROM old_rows UNION SELECT sku FROM new_rows) s;
    ELSE
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku) FROM old_rows s;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER products_export_insert AFTER INSERT ON products
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_products_changed();
CREATE TRIGGER products_export_update AFTER UPDATE ON products
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_products_changed();
CREATE TRIGGER products_export_delete AFTER DELETE ON products
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_products_changed();

-- Names and attributes belong to the product of their `sku`; a change exports that product.
-- Rows removed with their product (cascade) merge into the product's own pending export.
CREATE FUNCTION catalog_product_part_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT sku FROM new_rows) s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT sku FROM old_rows UNION SELECT sku FROM new_rows) s;
    ELSE
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT sku FROM old_rows) s;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER product_names_export_insert AFTER INSERT ON product_names
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();
CREATE TRIGGER product_names_export_update AFTER UPDATE ON product_names
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();
CREATE TRIGGER product_names_export_delete AFTER DELETE ON product_names
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();
CREATE TRIGGER product_attributes_export_insert AFTER INSERT ON product_attributes
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();
CREATE TRIGGER product_attributes_export_update AFTER UPDATE ON product_attributes
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();
CREATE TRIGGER product_attributes_export_delete AFTER DELETE ON product_attributes
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_part_changed();

-- A change to a product's children exports the parent (its children_skus changed).
CREATE FUNCTION catalog_product_children_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT parent_sku AS sku FROM new_rows) s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT parent_sku AS sku FROM old_rows UNION SELECT parent_sku FROM new_rows) s;
    ELSE
        PERFORM omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT parent_sku AS sku FROM old_rows) s;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER product_children_export_insert AFTER INSERT ON product_children
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_children_changed();
CREATE TRIGGER product_children_export_update AFTER UPDATE ON product_children
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_children_changed();
CREATE TRIGGER product_children_export_delete AFTER DELETE ON product_children
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION catalog_product_children_changed();

-- Logistics: carriers and their shipping methods. A method is enabled when it and its
-- carrier are active; it is exported as a product of type `shipping` whenever it is or was
-- enabled across a change (enabled: ACTIVE; disabled or deleted: INACTIVE). Codes are
-- identifiers: rename by deleting and creating again.
CREATE TABLE shipping_carriers (
    code   text COLLATE "C" PRIMARY KEY CHECK (code <> '' AND position('/' IN code) = 0),
    title  text NOT NULL DEFAULT '',
    active boolean NOT NULL DEFAULT false
);

CREATE TABLE shipping_methods (
    carrier_code text COLLATE "C" NOT NULL REFERENCES shipping_carriers (code) ON DELETE CASCADE,
    method_code  text COLLATE "C" NOT NULL CHECK (method_code <> ''),
    title        text NOT NULL DEFAULT '',
    active       boolean NOT NULL DEFAULT true,
    price        numeric(20, 4) CHECK (price >= 0),
    currency     text CHECK (currency ~ '^[A-Z]{3}$'),
    PRIMARY KEY (carrier_code, method_code),
    CHECK (price IS NULL OR currency IS NOT NULL)
);

CREATE FUNCTION catalog_carrier_active(p_code text) RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce((SELECT active FROM shipping_carriers WHERE code = p_code), false)
$$;

CREATE FUNCTION catalog_shipping_method_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    was_enabled boolean := false;
    is_enabled  boolean := false;
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        was_enabled := OLD.active AND catalog_carrier_active(OLD.carrier_code);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        is_enabled := NEW.active AND catalog_carrier_active(NEW.carrier_code);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND was_enabled THEN
        PERFORM omsc_outbox_add('catalog', 'shipping_method',
                                OLD.carrier_code || '/' || OLD.method_code,
                                OLD.carrier_code || '/' || OLD.method_code);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND is_enabled THEN
        PERFORM omsc_outbox_add('catalog', 'shipping_method',
                                NEW.carrier_code || '/' || NEW.method_code,
                                NEW.carrier_code || '/' || NEW.method_code);
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER shipping_methods_export AFTER INSERT OR UPDATE OR DELETE ON shipping_methods
    FOR EACH ROW EXECUTE FUNCTION catalog_shipping_method_changed();

-- A carrier switched on or off, renamed or deleted exports its active methods. On delete this
-- runs before the methods are removed with it, while they can still be read.
CREATE FUNCTION catalog_shipping_carrier_changed() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF current_setting('omsc.actor', true) = 'connector' THEN
        RETURN coalesce(NEW, OLD);
    END IF;
    IF TG_OP = 'DELETE' AND OLD.active
       OR TG_OP = 'UPDATE' AND (OLD.active OR NEW.active)
          AND (OLD.active IS DISTINCT FROM NEW.active OR OLD.title IS DISTINCT FROM NEW.title) THEN
        PERFORM omsc_outbox_add('catalog', 'shipping_method',
                                m.carrier_code || '/' || m.method_code,
                                m.carrier_code || '/' || m.method_code)
           FROM shipping_methods m
          WHERE m.carrier_code = OLD.code AND m.active;
    END IF;
    RETURN coalesce(NEW, OLD);
END
$$;

CREATE TRIGGER shipping_carriers_export BEFORE UPDATE OR DELETE ON shipping_carriers
    FOR EACH ROW EXECUTE FUNCTION catalog_shipping_carrier_changed();

-- Full-catalog exports ("Export full catalog"): one row per operator command, driven by
-- whichever catalog worker holds the lease. `cursor_sku` is the last SKU of the last chunk
-- the broker confirmed: a run taken over after a crash resumes after it, so at most the
-- chunk in flight is sent twice.
CREATE TABLE catalog_export_runs (
    id           text PRIMARY KEY,
    requested_by text NOT NULL DEFAULT '',
    requested_at timestamptz NOT NULL DEFAULT now(),
    state        text NOT NULL DEFAULT 'pending'
                 CHECK (state IN ('pending', 'running', 'done', 'cancelled')),
    chunk_size   integer NOT NULL DEFAULT 5000 CHECK (chunk_size > 0),
    -- Products in the catalog when the run started (the progress bar's end).
    total        bigint,
    exported     bigint NOT NULL DEFAULT 0,
    chunks       bigint NOT NULL DEFAULT 0,
    cursor_sku   text COLLATE "C",
    -- Chunks published but not confirmed again after a takeover.
    resumes      integer NOT NULL DEFAULT 0,
    lease_owner  text,
    lease_until  timestamptz,
    started_at   timestamptz,
    finished_at  timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now(),
    last_error   text
);
CREATE INDEX catalog_export_runs_open ON catalog_export_runs (requested_at, id)
    WHERE state IN ('pending', 'running');

CREATE FUNCTION catalog_export_notify() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM pg_notify('omsc_catalog_export', NEW.id);
    RETURN NULL;
END
$$;

CREATE TRIGGER catalog_export_runs_notify AFTER INSERT ON catalog_export_runs
    FOR EACH ROW EXECUTE FUNCTION catalog_export_notify();

-- Registration with the OMS (magento.service_bus.remote.register). Every worker process
-- records the modules it runs and the methods they consume; the registration sent is the
-- union of this table, so one process per module (Kubernetes) registers the same as one
-- process running every module.
CREATE TABLE connector_modules (
    module     text PRIMARY KEY,
    methods    text[] NOT NULL,
    version    text NOT NULL,
    started_at timestamptz NOT NULL DEFAULT now()
);

-- The registration as last sent (or being sent): one row. `confirmed_at` is set when the
-- broker confirmed it; a failed attempt leaves state 'pending' with the error.
CREATE TABLE connector_registration (
    singleton     boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    state         text NOT NULL CHECK (state IN ('pending', 'registered', 'unregistered')),
    connector_id  text NOT NULL,
    url           text NOT NULL,
    subscribes    text[] NOT NULL,
    labels        jsonb NOT NULL,
    -- The secret is never stored; its digest tells whether it changed since.
    secret_sha256 text NOT NULL,
    message_id    text NOT NULL,
    -- Who sent it: a worker (its modules) or the omsc command line.
    sent_by       text NOT NULL,
    attempted_at  timestamptz NOT NULL DEFAULT now(),
    confirmed_at  timestamptz,
    last_error    text
);
