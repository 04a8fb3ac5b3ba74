-- Status versions that work when dates are present, equal or missing, and invoices that do
-- not depend on the order captures arrive in. docs/schema.md ("Status versions",
-- "Invoices") describes both rules.

-- The rule every status compare-and-set applies (the sales module's version::Version
-- compares the same way): a new status replaces the stored one when its version is greater,
-- comparing (1) the status date, a missing date before every date; (2) the status's rank in
-- its lifecycle; (3) the status and the reason as sent, byte by byte, so arrival order never
-- decides. A row that has no status yet has rank 0 and loses to any status.
CREATE FUNCTION omsc_status_supersedes(
    new_date timestamptz, new_rank smallint, new_status text, new_reason text,
    old_date timestamptz, old_rank smallint, old_status text, old_reason text
) RETURNS boolean
LANGUAGE sql IMMUTABLE PARALLEL SAFE
AS $$
    SELECT (coalesce(new_date, '-infinity'), new_rank,
            coalesce(new_status, '') COLLATE "C", coalesce(new_reason, '') COLLATE "C")
         > (coalesce(old_date, '-infinity'), old_rank,
            coalesce(old_status, '') COLLATE "C", coalesce(old_reason, '') COLLATE "C")
$$;

-- Each rank column is the second part of its status's version (0: no status yet).
ALTER TABLE sales_orders ADD COLUMN oms_status_rank smallint NOT NULL DEFAULT 0;
ALTER TABLE sales_order_lines
    ADD COLUMN status_rank smallint NOT NULL DEFAULT 0,
    ADD COLUMN payment_status_rank smallint NOT NULL DEFAULT 0;
ALTER TABLE postsales_returns ADD COLUMN oms_status_rank smallint NOT NULL DEFAULT 0;
ALTER TABLE postsales_return_lines ADD COLUMN oms_status_rank smallint NOT NULL DEFAULT 0;

-- The statuses stored before this version get their ranks, so an update of the same date
-- compares against them as it would against a status stored from now on. (The tables this
-- touches accept writes from the connector only.)
SELECT set_config('omsc.actor', 'connector', true);

CREATE FUNCTION pg_temp.normalized(status text) RETURNS text
LANGUAGE sql IMMUTABLE
AS $$ SELECT regexp_replace(upper(status), '[^A-Z0-9]', '', 'g') $$;

-- As sales::status::lifecycle_rank.
CREATE FUNCTION pg_temp.lifecycle_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN status IS NULL THEN 0
        WHEN pg_temp.normalized(status) IN ('NEW', 'RECEIVED', 'PENDING', 'IMPORTED') THEN 1
        WHEN pg_temp.normalized(status) IN ('ONHOLD', 'HOLD', 'FRAUDREVIEW') THEN 2
        WHEN pg_temp.normalized(status) IN ('LOGISTICSCOMPLETE', 'SHIPPED', 'DELIVERED', 'FULLYSHIPPED') THEN 4
        WHEN pg_temp.normalized(status) IN ('COMPLETE', 'COMPLETED') THEN 5
        WHEN pg_temp.normalized(status) IN ('CANCELLED', 'CANCELED', 'REJECTED', 'ERROR') THEN 6
        WHEN pg_temp.normalized(status) IN ('CLOSED', 'REFUNDED') THEN 7
        ELSE 3
    END::smallint
$$;

-- As sales::status::payment_rank.
CREATE FUNCTION pg_temp.payment_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN status IS NULL THEN 0
        WHEN pg_temp.normalized(status) IN ('CAPTUREREQUESTED', 'CAPTURE') THEN 2
        WHEN pg_temp.normalized(status) IN ('CAPTURED', 'PAID', 'SETTLED') THEN 3
        WHEN pg_temp.normalized(status) = 'REFUNDREQUESTED' THEN 4
        WHEN pg_temp.normalized(status) IN ('REFUNDED', 'PARTIALLYREFUNDED') THEN 5
        WHEN pg_temp.normalized(status) IN ('FAILED', 'DECLINED', 'VOIDED', 'VOID', 'CANCELLED', 'CANCELED') THEN 6
        ELSE 1
    END::smallint
$$;

-- As postsales::status::return_rank.
CREATE FUNCTION pg_temp.return_rank(status text) RETURNS smallint
LANGUAGE sql IMMUTABLE
AS $$
    SELECT CASE
        WHEN status IS NULL THEN 0
        WHEN pg_temp.normalized(status) IN ('NEW', 'REQUESTED', 'PENDING', 'PENDINGAPPROVAL') THEN 1
        WHEN pg_temp.normalized(status) IN ('APPROVED', 'AUTHORIZED', 'AUTHORISED') THEN 2
        WHEN pg_temp.normalized(status) IN ('RECEIVED', 'PARTIALLYRECEIVED', 'INSPECTED') THEN 4
        WHEN pg_temp.normalized(status) IN ('REJECTED', 'DENIED', 'DECLINED', 'CANCELLED', 'CANCELED') THEN 5
        WHEN pg_temp.normalized(status) IN ('CLOSED', 'COMPLETE', 'COMPLETED', 'REFUNDED') THEN 6
        ELSE 3
    END::smallint
$$;

UPDATE sales_orders SET oms_status_rank = pg_temp.lifecycle_rank(oms_status)
 WHERE oms_status IS NOT NULL;
UPDATE sales_order_lines
   SET status_rank = pg_temp.lifecycle_rank(status),
       payment_status_rank = pg_temp.payment_rank(payment_status)
 WHERE status IS NOT NULL OR payment_status IS NOT NULL;
UPDATE postsales_returns SET oms_status_rank = pg_temp.return_rank(oms_status)
 WHERE oms_status IS NOT NULL;
UPDATE postsales_return_lines SET oms_status_rank = pg_temp.return_rank(oms_status)
 WHERE oms_status IS NOT NULL;

-- Invoices. An invoice is named by the first line it was made for (a line is invoiced once),
-- no longer by its date: two captures of the same date are two invoices.
ALTER TABLE sales_invoices ADD COLUMN first_line_id text COLLATE "C";
UPDATE sales_invoices i
   SET first_line_id = (SELECT min(line_id) FROM sales_invoice_lines l WHERE l.invoice_id = i.id);
-- An invoice without lines (none is ever made) would have no name: named by its id.
UPDATE sales_invoices SET first_line_id = 'invoice:' || id WHERE first_line_id IS NULL;
ALTER TABLE sales_invoices
    ALTER COLUMN first_line_id SET NOT NULL,
    DROP CONSTRAINT sales_invoices_order_id_captured_at_key,
    ADD CONSTRAINT sales_invoices_first_line UNIQUE (order_id, first_line_id);
CREATE INDEX sales_invoices_by_capture ON sales_invoices (order_id, captured_at);

-- What each invoiced line was captured for: the amounts the OMS sent with the capture
-- (lines[].payments[] gross, net, tax), the exported line's when it sent none. `amount` is
-- the gross amount; an invoice's tax_amount adds up its lines'.
ALTER TABLE sales_invoice_lines
    ADD COLUMN net_amount numeric(20, 4),
    ADD COLUMN tax_amount numeric(20, 4);
UPDATE sales_invoice_lines il
   SET net_amount = l.net_amount, tax_amount = l.tax_amount
  FROM sales_order_lines l
 WHERE l.order_id = il.order_id AND l.line_id = il.line_id;
ALTER TABLE sales_invoice_lines
    ALTER COLUMN net_amount SET NOT NULL,
    ALTER COLUMN tax_amount SET NOT NULL;
ALTER TABLE sales_invoices ADD COLUMN tax_amount numeric(20, 4) NOT NULL DEFAULT 0;
UPDATE sales_invoices i
   SET tax_amount = (SELECT coalesce(sum(tax_amount), 0) FROM sales_invoice_lines l
                      WHERE l.invoice_id = i.id);
