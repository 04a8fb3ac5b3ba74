-- Identifiers are limited in bytes, not characters. An order id or a return id is also the
-- AMQP message id of its export (an order's cancellation adds ":cancel"), and a SKU is part
-- of the full export's message ids (<run>/<sku>); AMQP counts a message id in bytes, at most
-- 255. `length()` counts characters: 64 emoji passed the old check as 256 bytes, and the
-- export could not send the order. 64 bytes is 64 characters for the ASCII ids shops use,
-- and leaves room for the suffixes.
--
-- The old checks are replaced by byte checks, added NOT VALID and validated where every
-- existing row fits: a database whose identifiers are ASCII, that is, every one we know of.
-- A database that already holds a longer identifier keeps its old character check on that
-- table (a byte check would refuse every later update of that row, an order's status
-- included) and the migration warns; the relays still fail the message of such a row with
-- its reason instead of stopping.

ALTER TABLE sales_orders
    DROP CONSTRAINT sales_orders_id_check,
    ADD CONSTRAINT sales_orders_id_1_to_64_bytes
        CHECK (id <> '' AND octet_length(id) <= 64) NOT VALID;

ALTER TABLE sales_order_items
    DROP CONSTRAINT sales_order_items_sku_check,
    ADD CONSTRAINT sales_order_items_sku_1_to_64_bytes
        CHECK (sku <> '' AND octet_length(sku) <= 64) NOT VALID;

ALTER TABLE postsales_returns
    DROP CONSTRAINT postsales_returns_id_check,
    ADD CONSTRAINT postsales_returns_id_1_to_64_bytes
        CHECK (id <> '' AND octet_length(id) <= 64) NOT VALID;

ALTER TABLE products
    DROP CONSTRAINT products_sku_check,
    ADD CONSTRAINT products_sku_1_to_64_bytes
        CHECK (sku <> '' AND octet_length(sku) <= 64) NOT VALID;

DO $$
DECLARE
    c record;
    over bigint;
BEGIN
    FOR c IN SELECT * FROM (VALUES
            ('sales_orders', 'id', 'sales_orders_id_1_to_64_bytes', 'sales_orders_id_check'),
            ('sales_order_items', 'sku', 'sales_order_items_sku_1_to_64_bytes', 'sales_order_items_sku_check'),
            ('postsales_returns', 'id', 'postsales_returns_id_1_to_64_bytes', 'postsales_returns_id_check'),
            ('products', 'sku', 'products_sku_1_to_64_bytes', 'products_sku_check'))
        AS t(tbl, col, name, old_name)
    LOOP
        EXECUTE format('SELECT count(*) FROM %I WHERE octet_length(%I) > 64', c.tbl, c.col)
            INTO over;
        IF over = 0 THEN
            EXECUTE format('ALTER TABLE %I VALIDATE CONSTRAINT %I', c.tbl, c.name);
        ELSE
            EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I, ADD CONSTRAINT %I '
                           'CHECK (%I <> %L AND length(%I) <= 64)',
                           c.tbl, c.name, c.old_name, c.col, '', c.col);
            RAISE WARNING '% rows of % have a % over 64 bytes: the table keeps its limit of 64 characters',
                over, c.tbl, c.col;
        END IF;
    END LOOP;
END
$$;
