-- The connector as one sales channel of the OMS, the order commands a storefront may send
-- after placing (a line's cancellation, a comment for the OMS's agents), the shipping address
-- the OMS changes, and the returns it reports as duplicated. See docs/schema.md.

-- Another sales channel's order may have the id of one of ours: a foreign order is the pair
-- (order id, channel). '' when the message named no channel.
ALTER TABLE sales_foreign_orders
    ADD COLUMN sales_channel text COLLATE "C" NOT NULL DEFAULT '';
ALTER TABLE sales_foreign_orders DROP CONSTRAINT sales_foreign_orders_pkey;
ALTER TABLE sales_foreign_orders ADD PRIMARY KEY (order_id, sales_channel);

-- The shipping address the OMS changed (order_management.shipping_address_updated) is the
-- order's address row itself, so a storefront reads it where it always did; these say that
-- it changed, when, and who changed it (the OMS `user`). Written by the connector only.
ALTER TABLE sales_order_addresses
    ADD COLUMN oms_updated_at timestamptz,
    ADD COLUMN oms_updated_by text;

CREATE FUNCTION public.omsc_sales_address_inserted() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_may_write_oms_data() THEN
        RETURN NEW;
    END IF;
    IF NEW.oms_updated_at IS NOT NULL OR NEW.oms_updated_by IS NOT NULL THEN
        RAISE EXCEPTION 'sales_order_addresses: oms_updated_at and oms_updated_by are the connector''s; place order % without them', NEW.order_id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER sales_order_addresses_inserted
    BEFORE INSERT ON sales_order_addresses
    FOR EACH ROW EXECUTE FUNCTION public.omsc_sales_address_inserted();

-- A customer asks to cancel one line (one unit) of a placed order: exported as
-- order_management.cancel_line after the order's export, never before (its outbox row has
-- the order as its subject, and the outbox sends a subject's rows in order). line_id names
-- an exported line (sales_order_lines.line_id: `<item>` or `<item>-<unit>`); the OMS answers
-- with line_cancelled, or nothing when it is too late. A line is asked for once.
CREATE TABLE sales_order_line_cancel_requests (
    order_id     text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    line_id      text COLLATE "C" NOT NULL CHECK (line_id <> '' AND length(line_id) <= 64),
    -- Required by the OMS: why the customer cancels.
    reason       text NOT NULL CHECK (btrim(reason) <> ''),
    requested_by text,
    requested_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, line_id)
);

-- A comment on a placed order for the OMS's agents (order_management.create_comment), sent
-- after the order's export like every command about the order.
CREATE TABLE sales_order_comments (
    id         bigserial PRIMARY KEY,
    order_id   text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    -- The OMS `user`: who wrote it (required by the OMS).
    author     text NOT NULL CHECK (btrim(author) <> ''),
    comment    text NOT NULL CHECK (btrim(comment) <> ''),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sales_order_comments_by_order ON sales_order_comments (order_id);

-- The outbox row of a command names the order as its subject (so it waits for the export)
-- and the request as its coalesce key, which the relay reads to find the request. The key
-- of a line's cancellation starts with the order id, so keys of different orders never merge.
CREATE FUNCTION public.omsc_sales_line_cancel_requested() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM public.omsc_outbox_add('sales', 'order.cancel_line', NEW.order_id,
                                   NEW.order_id || '/' || NEW.line_id);
    RETURN NULL;
END
$$;

-- At the commit, like the order's own export (a deferred trigger too, queued first when the
-- placing transaction makes the request as well): the command's outbox row always comes
-- after its order's.
CREATE CONSTRAINT TRIGGER sales_order_line_cancel_requested
    AFTER INSERT ON sales_order_line_cancel_requests
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION public.omsc_sales_line_cancel_requested();

CREATE FUNCTION public.omsc_sales_comment_added() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    PERFORM public.omsc_outbox_add('sales', 'order.comment', NEW.order_id, NEW.id::text);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER sales_order_comment_added
    AFTER INSERT ON sales_order_comments
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION public.omsc_sales_comment_added();

-- The order's cancellation the same way: made in the transaction that places the order, its
-- outbox row was added before the export's (queued at the commit) and went out first.
DROP TRIGGER sales_order_cancel_requested ON sales_order_cancel_requests;
CREATE CONSTRAINT TRIGGER sales_order_cancel_requested
    AFTER INSERT ON sales_order_cancel_requests
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION public.omsc_sales_cancel_requested();

-- A request, once made, is what was sent: the storefront inserts, nobody but the connector
-- rewrites or removes (the relay builds the message from the row, so a resend after a crash
-- carries the same content).
CREATE TRIGGER sales_order_line_cancel_requests_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_line_cancel_requests
    FOR EACH STATEMENT EXECUTE FUNCTION public.omsc_sales_refuse_changes();
CREATE TRIGGER sales_order_comments_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON sales_order_comments
    FOR EACH STATEMENT EXECUTE FUNCTION public.omsc_sales_refuse_changes();

-- Returns the OMS reported as duplicated (return_management.duplicated). The specification
-- says nothing of what it means for the shop, so no return changes: the report is recorded
-- and counted, per order and rma ('' when the message named none), for the merchant.
CREATE TABLE postsales_return_duplicates (
    order_id   text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    rma        text COLLATE "C" NOT NULL DEFAULT '',
    messages   bigint NOT NULL DEFAULT 1,
    first_seen timestamptz NOT NULL DEFAULT now(),
    last_seen  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (order_id, rma)
);

CREATE TRIGGER postsales_return_duplicates_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON postsales_return_duplicates
    FOR EACH STATEMENT EXECUTE FUNCTION public.omsc_refuse_foreign_writes();

-- The storefront's grants (V9) and the two request tables, which it may only insert into.
CREATE OR REPLACE FUNCTION public.omsc_grant_storefront() RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'omsc_storefront') THEN
        RETURN;
    END IF;
    GRANT USAGE ON SCHEMA public TO omsc_storefront;
    GRANT SELECT ON ALL TABLES IN SCHEMA public TO omsc_storefront;
    -- The connector's own bookkeeping is not the shop's business.
    REVOKE ALL ON outbox, dead_letters, connector_registration, connector_modules,
                  refinery_schema_history, stock_zeroing_floors, stock_nonzero_pending,
                  omsc_endpoint_stats, omsc_gauge_stats, omsc_workers
        FROM omsc_storefront;
    -- What the shop owns.
    GRANT INSERT, UPDATE, DELETE ON
        websites, website_stock_aggregates, store_views,
        products, product_names, product_attributes, product_children, product_tombstones,
        shipping_carriers, shipping_methods,
        sales_orders, sales_order_items, sales_order_addresses, sales_order_payments,
        sales_order_attributes, sales_order_item_attributes, sales_order_item_promotions,
        sales_order_cancel_requests,
        postsales_returns, postsales_return_lines, postsales_return_attributes,
        postsales_return_line_attributes,
        gift_card_accounts, gift_card_transactions, store_credit_accounts,
        store_credit_transactions
        TO omsc_storefront;
    -- What the shop asks about an order once placed: a request is inserted, never changed.
    GRANT INSERT ON sales_order_line_cancel_requests, sales_order_comments TO omsc_storefront;
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO omsc_storefront;
END
$$;
