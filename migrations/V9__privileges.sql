-- Least privilege. The connector's role owns this schema (it ran the migrations) and needs
-- nothing else: no superuser, no other database. A storefront connects with a role that is a
-- member of `omsc_storefront`: it reads everything a shop needs, writes only what the shop
-- owns (orders it places, returns it requests, its catalog, its websites, its ledgers), and
-- is refused, by privilege, every table the OMS owns. The triggers that say "owned by the OMS"
-- stay as the first, readable answer; the privileges are what a storefront cannot get around,
-- even by setting omsc.actor itself.
--
-- Creating the role needs CREATEROLE. A connector role without it leaves the role to a DBA
-- (CREATE ROLE omsc_storefront NOLOGIN) and the grants below are made the next time a
-- migration runs after that (omsc_grant_storefront()).

DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'omsc_storefront') THEN
        CREATE ROLE omsc_storefront NOLOGIN;
    END IF;
EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'cannot create role omsc_storefront (no CREATEROLE): a DBA creates it, then run omsc migrate again';
END
$$;

-- Whether the session is the connector: it says so (omsc.actor, set at connection start-up)
-- and its login role is not a member of omsc_storefront. A storefront that sets omsc.actor
-- itself is still a storefront. Membership is the direct grant (GRANT omsc_storefront TO
-- <login>): pg_has_role would count every superuser as a member of every role.
CREATE FUNCTION omsc_is_connector() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT coalesce(current_setting('omsc.actor', true) = 'connector', false)
       AND NOT EXISTS (
            SELECT 1
              FROM pg_auth_members m
              JOIN pg_roles storefront ON storefront.oid = m.roleid
              JOIN pg_roles login ON login.oid = m.member
             WHERE storefront.rolname = 'omsc_storefront' AND login.rolname = session_user)
$$;

CREATE OR REPLACE FUNCTION omsc_may_write_oms_data() RETURNS boolean
LANGUAGE sql STABLE
AS $$
    SELECT omsc_is_connector()
        OR EXISTS (SELECT 1 FROM omsc_settings WHERE key = 'hand_edits' AND value = 'allow')
$$;

CREATE OR REPLACE FUNCTION omsc_refuse_foreign_writes() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF omsc_may_write_oms_data() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '% is owned by the OMS: only the connector writes it', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'changes arrive from the OMS; for development only, run: omsc settings hand-edits allow';
END
$$;

-- Storefront writes add outbox rows through this function; the outbox itself is the
-- connector's, so the function runs with its owner's rights.
ALTER FUNCTION omsc_outbox_add(text, text, text, text) SECURITY DEFINER SET search_path = public, pg_temp;

-- The grants, in a function so that a DBA who creates the role later can have them made.
CREATE FUNCTION omsc_grant_storefront() RETURNS void
LANGUAGE plpgsql
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
    GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO omsc_storefront;
END
$$;

SELECT omsc_grant_storefront();
