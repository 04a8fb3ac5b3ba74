-- Sales: orders placed by the storefront, exported once to the OMS, and everything the OMS
-- says about them afterwards (statuses, cancellations, shipments, captures). See
-- docs/schema.md for how a storefront places an order and reads its progress.
--
-- Ownership: the storefront places an order by inserting it, in one transaction, and may ask
-- for its cancellation; from the commit on, the order belongs to the OMS. Every change after
-- that comes through the connector (omsc.actor = 'connector'), enforced below.

-- Whether the current session may write what the OMS owns: the connector, or anyone while an
-- operator allows hand edits for development (omsc settings hand-edits allow).
CREATE FUNCTION omsc_may_write_oms_data() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(current_setting('omsc.actor', true) = 'connector', false)
        OR EXISTS (SELECT 1 FROM omsc_settings WHERE key = 'hand_edits' AND value = 'allow')
$$;

-- Written by the storefront, once, when the order is placed.

CREATE TABLE sales_orders (
    -- The order's increment id, which is also its OMS id and its export's message id.
    id                         text COLLATE "C" PRIMARY KEY CHECK (id <> '' AND length(id) <= 64),
    -- The store view code: the OMS `store` (and how a message for an order not yet here is
    -- told from one of another sales channel).
    store                      text COLLATE "C" NOT NULL CHECK (store <> ''),
    placed_at                  timestamptz NOT NULL DEFAULT now(),
    origin                     text NOT NULL DEFAULT 'FRONTEND',
    ip                         text NOT NULL DEFAULT '',
    language                   text,
    -- Where the order pays tax; the billing address's country when null.
    vat_country                text,
    currency                   text NOT NULL CHECK (length(currency) = 3),
    -- Null for a guest.
    customer_id                text,
    customer_segment           text NOT NULL DEFAULT 'B2C',
    customer_service_agent     text,
    gift_message               text,
    billing_address_reference  text NOT NULL,
    -- Null when nothing ships (only virtual items).
    shipping_address_reference text,
    shipping_carrier           text,
    shipping_method            text,
    shipping_description       text,
    -- What the customer pays for shipping, tax included, after the shipping discount.
    shipping_amount            numeric(20, 4) NOT NULL DEFAULT 0 CHECK (shipping_amount >= 0),
    shipping_tax_amount        numeric(20, 4) NOT NULL DEFAULT 0 CHECK (shipping_tax_amount >= 0),
    shipping_tax_rate          numeric(9, 4) NOT NULL DEFAULT 0 CHECK (shipping_tax_rate >= 0),
    shipping_discount_amount   numeric(20, 4) NOT NULL DEFAULT 0 CHECK (shipping_discount_amount >= 0),
    -- Order-level tenders that are not the payment: exported as order custom attributes,
    -- while the lines keep their prices.
    gift_card_amount           numeric(20, 4) NOT NULL DEFAULT 0 CHECK (gift_card_amount >= 0),
    gift_card_codes            text[] NOT NULL DEFAULT '{}',
    store_credit_amount        numeric(20, 4) NOT NULL DEFAULT 0 CHECK (store_credit_amount >= 0),

    -- Written by the connector only.
    -- The Commerce order state shown to the customer, mapped from oms_status.
    state                      text NOT NULL DEFAULT 'new',
    -- The OMS status as sent (statuses drift between senders: never a closed set).
    oms_status                 text,
    oms_status_reason          text,
    -- The version the status updates compare: the OMS's status_date.
    oms_status_date            timestamptz,
    -- When the OMS said it accepted the order (order_management.created).
    oms_accepted_at            timestamptz,
    -- The transaction that placed the order: the only one that may add to it.
    placed_xact                xid8 NOT NULL DEFAULT pg_current_xact_id(),
    updated_at                 timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sales_orders_by_store ON sales_orders (store);

CREATE TABLE sales_order_addresses (
    order_id     text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    reference    text NOT NULL CHECK (reference <> ''),
    address_type text NOT NULL DEFAULT 'customer',
    first_name   text NOT NULL,
    last_name    text NOT NULL,
    address1     text NOT NULL,
    address2     text,
    city         text NOT NULL,
    state        text,
    zip          text,
    country_code text NOT NULL CHECK (length(country_code) = 2),
    phone        text,
    email        text,
    PRIMARY KEY (order_id, reference)
);

CREATE TABLE sales_order_items (
    order_id        text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    item_id         bigint NOT NULL,
    -- The bundle or configurable item this one belongs to.
    parent_item_id  bigint,
    product_type    text NOT NULL CHECK (product_type IN
                        ('simple', 'configurable', 'bundle', 'virtual', 'giftcard', 'downloadable')),
    sku             text COLLATE "C" NOT NULL CHECK (sku <> '' AND length(sku) <= 64),
    name            text NOT NULL,
    qty             integer NOT NULL CHECK (qty > 0),
    -- Unit price, tax included, before discounts.
    price           numeric(20, 4) NOT NULL CHECK (price >= 0),
    -- Row totals (all units).
    discount_amount numeric(20, 4) NOT NULL DEFAULT 0 CHECK (discount_amount >= 0),
    tax_amount      numeric(20, 4) NOT NULL DEFAULT 0 CHECK (tax_amount >= 0),
    tax_rate        numeric(9, 4) NOT NULL DEFAULT 0 CHECK (tax_rate >= 0),
    tax_type        text,
    image_url       text,
    product_url     text,
    source_location text,
    pickup_location text,
    PRIMARY KEY (order_id, item_id),
    FOREIGN KEY (order_id, parent_item_id) REFERENCES sales_order_items (order_id, item_id),
    CHECK (price * qty >= discount_amount)
);

-- One payment per order: the OMS supports exactly one payment transaction.
CREATE TABLE sales_order_payments (
    order_id                  text COLLATE "C" PRIMARY KEY REFERENCES sales_orders (id),
    reference                 text NOT NULL CHECK (reference <> ''),
    -- The OMS payment method (ZEROPAY, CREDITCARD, PAYPAL …) and submethod.
    payment_method            text NOT NULL,
    payment_submethod         text,
    -- The Commerce payment method code (checkmo, braintree …), sent as the gateway's
    -- mdc_gateway_processor attribute.
    processor                 text,
    gateway_id                text NOT NULL DEFAULT 'OFFLINE',
    account                   text,
    transaction_id            text,
    authorization_status      text,
    original_auth_request_id  text,
    payment_account_unique_id text
);

CREATE TABLE sales_order_attributes (
    order_id   text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    code       text NOT NULL CHECK (code <> ''),
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, code)
);

CREATE TABLE sales_order_item_attributes (
    order_id text COLLATE "C" NOT NULL,
    item_id  bigint NOT NULL,
    code     text NOT NULL CHECK (code <> ''),
    value    text NOT NULL,
    PRIMARY KEY (order_id, item_id, code),
    FOREIGN KEY (order_id, item_id) REFERENCES sales_order_items (order_id, item_id)
);

-- Promotions (cart rules, coupons) applied to an item; discount_amount is the row's share.
CREATE TABLE sales_order_item_promotions (
    order_id        text COLLATE "C" NOT NULL,
    item_id         bigint NOT NULL,
    code            text NOT NULL,
    name            text NOT NULL,
    discount_amount numeric(20, 4) NOT NULL CHECK (discount_amount >= 0),
    percentage      numeric(9, 4) NOT NULL DEFAULT 0,
    PRIMARY KEY (order_id, item_id, code),
    FOREIGN KEY (order_id, item_id) REFERENCES sales_order_items (order_id, item_id)
);

-- A customer asked to cancel: exported as order_management.cancel; the OMS answers with an
-- update (CANCELLED, or not if it is too late).
CREATE TABLE sales_order_cancel_requests (
    order_id     text COLLATE "C" PRIMARY KEY REFERENCES sales_orders (id),
    requested_by text,
    requested_at timestamptz NOT NULL DEFAULT now()
);

-- Written by the connector only.

-- The order as exported: one line per unit (an item of quantity 3 is three lines), bundle
-- children pointing at their bundle's line, and the shipping line. Statuses and payment
-- statuses as the OMS last reported them.
CREATE TABLE sales_order_lines (
    order_id            text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    line_id             text COLLATE "C" NOT NULL,
    line_number         integer NOT NULL,
    -- The Commerce item the line comes from; null for the shipping line.
    item_id             bigint,
    parent_line_id      text COLLATE "C",
    product_type        text NOT NULL,
    sku                 text COLLATE "C" NOT NULL,
    gross_amount        numeric(20, 4) NOT NULL,
    net_amount          numeric(20, 4) NOT NULL,
    tax_amount          numeric(20, 4) NOT NULL,
    status              text,
    status_reason       text,
    status_date         timestamptz,
    payment_status      text,
    payment_status_date timestamptz,
    cancelled_at        timestamptz,
    PRIMARY KEY (order_id, line_id),
    UNIQUE (order_id, line_number)
);

CREATE TABLE sales_order_line_attributes (
    order_id   text COLLATE "C" NOT NULL,
    line_id    text COLLATE "C" NOT NULL,
    code       text NOT NULL,
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_id, code),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);

-- One physical shipment. shipment_key identifies it: the OMS's shipment id when it sends
-- one, otherwise a digest of its content, so the same shipment delivered twice is one row.
CREATE TABLE sales_shipments (
    id              bigserial PRIMARY KEY,
    order_id        text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    shipment_key    text NOT NULL,
    oms_shipment_id text,
    source_id       text,
    method          text,
    shipped_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, shipment_key)
);

-- Which shipment carried each line: a line (one unit) ships once.
CREATE TABLE sales_shipment_lines (
    order_id    text COLLATE "C" NOT NULL,
    line_id     text COLLATE "C" NOT NULL,
    shipment_id bigint NOT NULL REFERENCES sales_shipments (id),
    PRIMARY KEY (order_id, line_id),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);
CREATE INDEX sales_shipment_lines_by_shipment ON sales_shipment_lines (shipment_id);

CREATE TABLE sales_shipment_packages (
    shipment_id      bigint NOT NULL REFERENCES sales_shipments (id),
    package_id       text NOT NULL,
    carrier          text,
    tracking_number  text,
    tracking_link    text,
    tracking_comment text,
    line_numbers     integer[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (shipment_id, package_id)
);

-- One invoice per capture: the lines whose payment the OMS captured (or asked to capture)
-- at captured_at, plus the shipping line with the capture that completes the order.
CREATE TABLE sales_invoices (
    id          bigserial PRIMARY KEY,
    order_id    text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    captured_at timestamptz NOT NULL,
    grand_total numeric(20, 4) NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (order_id, captured_at)
);

-- A line is invoiced once.
CREATE TABLE sales_invoice_lines (
    order_id   text COLLATE "C" NOT NULL,
    line_id    text COLLATE "C" NOT NULL,
    invoice_id bigint NOT NULL REFERENCES sales_invoices (id),
    amount     numeric(20, 4) NOT NULL,
    PRIMARY KEY (order_id, line_id),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);
CREATE INDEX sales_invoice_lines_by_invoice ON sales_invoice_lines (invoice_id);

-- Orders the OMS told us about that this Commerce never exported (another sales channel on
-- the same OMS): recorded and counted, never applied.
CREATE TABLE sales_foreign_orders (
    order_id   text COLLATE "C" PRIMARY KEY,
    messages   bigint NOT NULL DEFAULT 1,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now()
);

-- What a storefront reads.

-- Tracking per package, for the customer's order page.
CREATE VIEW sales_order_tracking AS
SELECT s.order_id,
       s.id AS shipment_id,
       s.oms_shipment_id,
       s.shipped_at,
       s.method,
       p.package_id,
       p.carrier,
       p.tracking_number,
       p.tracking_link,
       p.tracking_comment
FROM sales_shipments s
JOIN sales_shipment_packages p ON p.shipment_id = s.id;

-- Per item: units ordered, shipped, invoiced and cancelled, added up over its lines.
CREATE VIEW sales_order_item_progress AS
SELECT i.order_id,
       i.item_id,
       i.sku,
       i.qty AS qty_ordered,
       count(sl.line_id)::integer AS qty_shipped,
       count(il.line_id)::integer AS qty_invoiced,
       count(l.cancelled_at)::integer AS qty_cancelled
FROM sales_order_items i
LEFT JOIN sales_order_lines l ON l.order_id = i.order_id AND l.item_id = i.item_id
LEFT JOIN sales_shipment_lines sl ON sl.order_id = l.order_id AND sl.line_id = l.line_id
LEFT JOIN sales_invoice_lines il ON il.order_id = l.order_id AND il.line_id = l.line_id
GROUP BY i.order_id, i.item_id, i.sku, i.qty;

-- Placing an order.

-- A storefront's insert cannot set what the OMS owns.
CREATE FUNCTION omsc_sales_order_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.placed_xact := pg_current_xact_id();
    IF omsc_may_write_oms_data() THEN
        RETURN NEW;
    END IF;
    IF NEW.state <> 'new' OR NEW.oms_status IS NOT NULL OR NEW.oms_status_reason IS NOT NULL
       OR NEW.oms_status_date IS NOT NULL OR NEW.oms_accepted_at IS NOT NULL THEN
        RAISE EXCEPTION 'sales_orders: the status of an order is the OMS''s; place order % without state or oms_* values', NEW.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sales_orders_inserted
    BEFORE INSERT ON sales_orders
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_inserted();

-- At the commit of the placing transaction, when every row of the order is there: checks that
-- the order can be exported and queues its export. A failed check fails the commit, so an
-- order that cannot be exported is never placed.
CREATE FUNCTION omsc_sales_order_placed() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    ships boolean;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM sales_order_items WHERE order_id = NEW.id AND parent_item_id IS NULL) THEN
        RAISE EXCEPTION 'order % has no items', NEW.id USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sales_order_payments WHERE order_id = NEW.id) THEN
        RAISE EXCEPTION 'order % has no payment (sales_order_payments)', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM sales_order_addresses
                    WHERE order_id = NEW.id AND reference = NEW.billing_address_reference) THEN
        RAISE EXCEPTION 'order %: billing address % is not in sales_order_addresses', NEW.id, NEW.billing_address_reference
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT EXISTS (SELECT 1 FROM sales_order_items WHERE order_id = NEW.id AND product_type = 'simple')
      INTO ships;
    IF ships AND (NEW.shipping_carrier IS NULL OR NEW.shipping_method IS NULL) THEN
        RAISE EXCEPTION 'order % ships physical items but has no shipping_carrier and shipping_method', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF ships AND NOT EXISTS (SELECT 1 FROM sales_order_addresses
                              WHERE order_id = NEW.id AND reference = NEW.shipping_address_reference) THEN
        RAISE EXCEPTION 'order % ships physical items but its shipping address is not in sales_order_addresses', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    PERFORM omsc_outbox_add('sales', 'order.create', NEW.id);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER sales_orders_placed
    AFTER INSERT ON sales_orders
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_placed();

-- The rows of an order are added by the transaction that placed it, and by no later one.
CREATE FUNCTION omsc_sales_order_part_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    placed xid8;
BEGIN
    IF omsc_may_write_oms_data() THEN
        RETURN NEW;
    END IF;
    SELECT placed_xact INTO placed FROM sales_orders WHERE id = NEW.order_id;
    IF FOUND AND placed <> pg_current_xact_id() THEN
        RAISE EXCEPTION '%: order % was placed by an earlier transaction; a placed order belongs to the OMS', TG_TABLE_NAME, NEW.order_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'write the whole order in the transaction that inserts it into sales_orders';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sales_order_addresses_part BEFORE INSERT ON sales_order_addresses
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();
CREATE TRIGGER sales_order_items_part BEFORE INSERT ON sales_order_items
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();
CREATE TRIGGER sales_order_payments_part BEFORE INSERT ON sales_order_payments
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();
CREATE TRIGGER sales_order_attributes_part BEFORE INSERT ON sales_order_attributes
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();
CREATE TRIGGER sales_order_item_attributes_part BEFORE INSERT ON sales_order_item_attributes
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();
CREATE TRIGGER sales_order_item_promotions_part BEFORE INSERT ON sales_order_item_promotions
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_order_part_inserted();

-- A placed order changes only through the connector: its status, its content, its
-- attributes. (The export is built from these rows, so a resend after a crash carries the
-- same content.)
CREATE FUNCTION omsc_sales_refuse_changes() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF omsc_may_write_oms_data() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '%: a placed order belongs to the OMS; only the connector changes it', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'status changes arrive from the OMS; to ask for a cancellation, INSERT INTO sales_order_cancel_requests';
END
$$;

CREATE TRIGGER sales_orders_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_orders
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_addresses_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_addresses
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_items_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_items
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_payments_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_payments
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_attributes_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_item_attributes_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_item_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_item_promotions_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_item_promotions
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_cancel_requests_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_cancel_requests
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_sales_refuse_changes();

-- A cancellation request goes out after the order's own export (the outbox keeps the order
-- of rows about one subject).
CREATE FUNCTION omsc_sales_cancel_requested() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    PERFORM omsc_outbox_add('sales', 'order.cancel', NEW.order_id);
    RETURN NULL;
END
$$;

CREATE TRIGGER sales_order_cancel_requested
    AFTER INSERT ON sales_order_cancel_requests
    FOR EACH ROW EXECUTE FUNCTION omsc_sales_cancel_requested();

-- What only the connector writes: lines as exported, shipments, invoices (captures).
CREATE TRIGGER sales_order_lines_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_order_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_order_line_attributes_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_order_line_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_shipments_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_shipments
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_shipment_lines_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_shipment_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_shipment_packages_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_shipment_packages
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_invoices_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_invoices
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_invoice_lines_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_invoice_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER sales_foreign_orders_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON sales_foreign_orders
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
