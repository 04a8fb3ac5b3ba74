-- Who is the connector, decided by the session's role, and functions that a session's own
-- objects cannot stand in for.
--
-- Until now the ownership checks trusted what a session can do alone: set omsc.actor, or
-- create a temporary table. PostgreSQL searches a session's temporary schema FIRST for
-- relations unless the search_path names pg_temp later, so a storefront's temporary
-- `omsc_settings` (hand_edits = allow) or `pg_auth_members` (no member of omsc_storefront)
-- answered the checks in its place; and a member of omsc_storefront through a group was not
-- seen. From here on:
--
-- * every function a trigger uses runs with search_path = pg_catalog, public, pg_temp
--   (temporary objects last), and the ownership functions name their objects with their schema;
-- * the connector is a session whose login role may act as the owner of the connector's
--   tables (the role that ran the migrations, a member of it, or a superuser), that is not a
--   member of omsc_storefront through any chain of groups, neither as its login nor as its
--   current role (unless it is a superuser), and that carries omsc.actor = 'connector'. The
--   mark alone is never enough:
--   it stays because the owner's plain sessions (a developer, the tests) must be treated like
--   a storefront, their writes exported;
-- * every trigger asks omsc_is_connector(); none reads omsc.actor itself.
--
-- The connector's objects are in schema public (the migrations create them unqualified, the
-- storefront grants are made on schema public); the functions below say so.

DO $$
BEGIN
    IF pg_catalog.to_regclass('public.outbox') IS NULL THEN
        RAISE EXCEPTION 'the connector''s tables must be in schema public, but public.outbox does not exist'
            USING HINT = 'run the migrations with a search_path whose first schema is public';
    END IF;
END
$$;

-- Whether the session is the connector. The cheap test first: a session that does not claim
-- to be the connector (every storefront statement) costs one setting lookup. Then the role:
-- the login must be able to act as the owner of the connector's tables, and neither the login
-- nor the current role (SET ROLE) may be a member of omsc_storefront, through any chain of
-- groups: pg_has_role(…, 'MEMBER') follows every chain and is answered from the backend's
-- membership cache, where a walk of pg_auth_members costs a query per statement on the
-- connector's hot path.
--
-- pg_has_role counts a superuser as a member of every role, so superusers are decided before
-- it: a session whose role is a superuser (is_superuser, which no session can set) is the
-- connector when it carries the mark. No trigger can hold a superuser anyway (it can switch
-- triggers off with session_replication_role); a storefront never logs in as one.
CREATE OR REPLACE FUNCTION public.omsc_is_connector() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    storefront oid;
BEGIN
    IF pg_catalog.current_setting('omsc.actor', true) IS DISTINCT FROM 'connector' THEN
        RETURN false;
    END IF;
    IF NOT pg_catalog.pg_has_role(session_user,
            (SELECT c.relowner FROM pg_catalog.pg_class c
              WHERE c.oid = 'public.outbox'::pg_catalog.regclass),
            'MEMBER') THEN
        RETURN false;
    END IF;
    IF pg_catalog.current_setting('is_superuser') = 'on' THEN
        RETURN true;
    END IF;
    -- Without the group (a DBA has not created it yet) there is no storefront to tell apart.
    storefront := pg_catalog.to_regrole('omsc_storefront');
    RETURN storefront IS NULL
        OR NOT (pg_catalog.pg_has_role(session_user, storefront, 'MEMBER')
                OR pg_catalog.pg_has_role(current_user, storefront, 'MEMBER'));
END
$$;

-- Whether the session may write what the OMS owns: the connector, or anyone while an
-- operator allows hand edits for development. Only the connector's role may write
-- public.omsc_settings; the schema is named so that no temporary table answers instead.
CREATE OR REPLACE FUNCTION public.omsc_may_write_oms_data() RETURNS boolean
LANGUAGE plpgsql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    RETURN public.omsc_is_connector()
        OR EXISTS (SELECT 1 FROM public.omsc_settings s
                    WHERE s.key = 'hand_edits' AND s.value = 'allow');
END
$$;

CREATE OR REPLACE FUNCTION public.omsc_refuse_foreign_writes() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_may_write_oms_data() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is owned by the OMS: only the connector writes it', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'changes arrive from the OMS; for development only, run: omsc settings hand-edits allow';
END
$$;

-- Runs with its owner's rights (the storefront has no privilege on the outbox), so nothing
-- of the caller's may be found in its place.
CREATE OR REPLACE FUNCTION public.omsc_outbox_add(p_module text, p_topic text, p_subject text, p_coalesce_key text DEFAULT NULL)
RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, public, pg_temp
AS $$
    INSERT INTO public.outbox AS o (module, topic, subject, coalesce_key)
    VALUES (p_module, p_topic, p_subject, p_coalesce_key)
    ON CONFLICT (module, topic, coalesce_key)
        WHERE sent_at IS NULL AND failed_at IS NULL AND coalesce_key IS NOT NULL
    DO UPDATE SET version = o.version + 1,
                  next_attempt_at = least(o.next_attempt_at, pg_catalog.now())
$$;

-- The catalog's exports: as in V4, with the one test of who is the connector.

CREATE OR REPLACE FUNCTION public.catalog_products_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_is_connector() THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        INSERT INTO public.product_tombstones (sku, type)
        SELECT o.sku, o.type FROM old_rows o
         WHERE NOT EXISTS (SELECT 1 FROM public.products p WHERE p.sku = o.sku)
        ON CONFLICT (sku) DO UPDATE SET type = EXCLUDED.type, deleted_at = now();
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        DELETE FROM public.product_tombstones t USING new_rows n WHERE t.sku = n.sku;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku) FROM new_rows s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT sku FROM old_rows UNION SELECT sku FROM new_rows) s;
    ELSE
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku) FROM old_rows s;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.catalog_product_part_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_is_connector() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT sku FROM new_rows) s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT sku FROM old_rows UNION SELECT sku FROM new_rows) s;
    ELSE
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT sku FROM old_rows) s;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.catalog_product_children_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_is_connector() THEN
        RETURN NULL;
    END IF;
    IF TG_OP = 'INSERT' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT parent_sku AS sku FROM new_rows) s;
    ELSIF TG_OP = 'UPDATE' THEN
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT parent_sku AS sku FROM old_rows UNION SELECT parent_sku FROM new_rows) s;
    ELSE
        PERFORM public.omsc_outbox_add('catalog', 'product', s.sku, s.sku)
           FROM (SELECT DISTINCT parent_sku AS sku FROM old_rows) s;
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.catalog_carrier_active(p_code text) RETURNS boolean
LANGUAGE sql STABLE
SET search_path = pg_catalog, public, pg_temp
AS $$
    SELECT coalesce((SELECT c.active FROM public.shipping_carriers c WHERE c.code = p_code), false)
$$;

CREATE OR REPLACE FUNCTION public.catalog_shipping_method_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
DECLARE
    was_enabled boolean := false;
    is_enabled  boolean := false;
BEGIN
    IF public.omsc_is_connector() THEN
        RETURN NULL;
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') THEN
        was_enabled := OLD.active AND public.catalog_carrier_active(OLD.carrier_code);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        is_enabled := NEW.active AND public.catalog_carrier_active(NEW.carrier_code);
    END IF;
    IF TG_OP IN ('UPDATE', 'DELETE') AND was_enabled THEN
        PERFORM public.omsc_outbox_add('catalog', 'shipping_method',
                                       OLD.carrier_code || '/' || OLD.method_code,
                                       OLD.carrier_code || '/' || OLD.method_code);
    END IF;
    IF TG_OP IN ('INSERT', 'UPDATE') AND is_enabled THEN
        PERFORM public.omsc_outbox_add('catalog', 'shipping_method',
                                       NEW.carrier_code || '/' || NEW.method_code,
                                       NEW.carrier_code || '/' || NEW.method_code);
    END IF;
    RETURN NULL;
END
$$;

CREATE OR REPLACE FUNCTION public.catalog_shipping_carrier_changed() RETURNS trigger
LANGUAGE plpgsql
SET search_path = pg_catalog, public, pg_temp
AS $$
BEGIN
    IF public.omsc_is_connector() THEN
        RETURN coalesce(NEW, OLD);
    END IF;
    IF TG_OP = 'DELETE' AND OLD.active
       OR TG_OP = 'UPDATE' AND (OLD.active OR NEW.active)
          AND (OLD.active IS DISTINCT FROM NEW.active OR OLD.title IS DISTINCT FROM NEW.title) THEN
        PERFORM public.omsc_outbox_add('catalog', 'shipping_method',
                                       m.carrier_code || '/' || m.method_code,
                                       m.carrier_code || '/' || m.method_code)
           FROM public.shipping_methods m
          WHERE m.carrier_code = OLD.code AND m.active;
    END IF;
    RETURN coalesce(NEW, OLD);
END
$$;

-- The other trigger functions and the helpers they call already ask omsc_may_write_oms_data()
-- (or nothing about the session); pinning their search_path makes their unqualified names
-- (sales_orders, postsales_returns%ROWTYPE, store_credit_accounts …) the connector's tables,
-- never a temporary table of the caller's.
ALTER FUNCTION public.catalog_touch_product() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.catalog_export_notify() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_outbox_notify() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_sales_order_inserted() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_sales_order_placed() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_sales_order_part_inserted() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_sales_refuse_changes() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_sales_cancel_requested() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_postsales_return_inserted() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_postsales_return_part_inserted() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_postsales_return_requested() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_postsales_refuse_changes() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_ledger_append_only() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_ledger_account_guarded() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_store_credit_transaction_checked() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_store_credit_transaction_applied() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_gift_card_transaction_applied() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_redemptions_checked() SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.store_credit_balance(text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.gift_card_balance(text) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.store_credit_redeem(text, text, numeric) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.gift_card_redeem(text, text, numeric) SET search_path = pg_catalog, public, pg_temp;
ALTER FUNCTION public.omsc_grant_storefront() SET search_path = pg_catalog, public, pg_temp;

-- The pinned search_path puts public before pg_temp, so public must not be a place where a
-- storefront can create functions or operators of its own. PostgreSQL 15 no longer lets
-- every role create there; a database created by an older version still may.
DO $$
BEGIN
    REVOKE CREATE ON SCHEMA public FROM PUBLIC;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot revoke CREATE on schema public from PUBLIC (not its owner): a DBA runs REVOKE CREATE ON SCHEMA public FROM PUBLIC';
END
$$;
