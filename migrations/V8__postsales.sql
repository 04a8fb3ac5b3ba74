-- Post-sales: returns the storefront requests (exported to the OMS as
-- return_management.authorize) and what the OMS says about them; refunds and the credit memos
-- they become; and the two ledgers money comes back through, store credit and gift cards.
-- See docs/schema.md for how a storefront requests a return, redeems a gift card and reads
-- returns, credit memos and store credit.
--
-- Ownership: the storefront requests a return by inserting it, in one transaction, and the
-- return belongs to the OMS from the commit on. Refunds and credit memos are written by the
-- connector only. The ledgers are append-only: a balance changes only by a transaction, and
-- never goes below zero.

-- Returns ---------------------------------------------------------------------------------

CREATE TABLE postsales_returns (
    -- The return's id (the RMA): chosen by the storefront; also the `rma` of every message
    -- about the return and the message id of its authorization. A return created in the OMS
    -- has the OMS's rma ('blind:<digest>' for goods that came back without one).
    id                 text COLLATE "C" PRIMARY KEY CHECK (id <> '' AND length(id) <= 64),
    order_id           text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    -- 'commerce': requested by the storefront and exported to the OMS; 'oms': created in the
    -- OMS (by an agent, or goods that came back unannounced) and never exported back.
    origin             text NOT NULL DEFAULT 'commerce' CHECK (origin IN ('commerce', 'oms')),
    requested_at       timestamptz NOT NULL DEFAULT now(),
    -- Who asked (the customer, an agent): the OMS `user`.
    requested_by       text,
    -- Where the goods go back; when null the OMS picks the source that shipped them.
    source_id          text,
    tracking_number    text,
    tracking_url       text,
    tracking_label_url text,
    tracking_carrier   text,

    -- Written by the connector only.
    -- The status date of the OMS update that last set the tracking (the tracking's version).
    tracking_date      timestamptz,
    -- The state shown to the customer, mapped from oms_status ('requested' until the OMS
    -- answers).
    state              text NOT NULL DEFAULT 'requested',
    oms_status         text,
    oms_status_reason  text,
    -- The version the return updates compare: the OMS's status.date.
    oms_status_date    timestamptz,
    -- When the goods arrived (return_management.received); the earliest receipt.
    received_at        timestamptz,
    -- The transaction that requested the return: the only one that may add to it.
    placed_xact        xid8 NOT NULL DEFAULT pg_current_xact_id(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX postsales_returns_by_order ON postsales_returns (order_id);

-- One returned unit: an exported order line (one line per unit, see sales_order_lines).
CREATE TABLE postsales_return_lines (
    return_id             text COLLATE "C" NOT NULL REFERENCES postsales_returns (id),
    -- Filled in from the return when left out.
    order_id              text COLLATE "C" NOT NULL,
    line_id               text COLLATE "C" NOT NULL,
    -- Why the customer returns it (a reason code) and in their words; required for a
    -- return the storefront requests.
    reason                text NOT NULL DEFAULT '',
    reason_description    text NOT NULL DEFAULT '',
    -- The condition the customer declares.
    condition             text,
    condition_description text,

    -- Written by the connector only.
    oms_status            text,
    -- The line's version: the status date of the return update that set oms_status.
    oms_status_date       timestamptz,
    -- The condition the OMS reports (return_management.updated).
    oms_condition         text,
    -- When the unit arrived, and the condition it arrived in (return_management.received).
    received_at           timestamptz,
    received_condition    text,
    PRIMARY KEY (return_id, line_id),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);
CREATE INDEX postsales_return_lines_by_line ON postsales_return_lines (order_id, line_id);

CREATE TABLE postsales_return_attributes (
    return_id  text COLLATE "C" NOT NULL REFERENCES postsales_returns (id),
    code       text NOT NULL CHECK (code <> ''),
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (return_id, code)
);

CREATE TABLE postsales_return_line_attributes (
    return_id  text COLLATE "C" NOT NULL,
    line_id    text COLLATE "C" NOT NULL,
    code       text NOT NULL CHECK (code <> ''),
    value      text NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (return_id, line_id, code),
    FOREIGN KEY (return_id, line_id) REFERENCES postsales_return_lines (return_id, line_id)
);

-- Refunds and credit memos -------------------------------------------------------------

-- A refund as the OMS last reported it (refund_management.updated), known by its credit
-- note number.
CREATE TABLE postsales_refunds (
    credit_note_number text COLLATE "C" PRIMARY KEY CHECK (credit_note_number <> ''),
    order_id           text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    -- The return it refunds, when it refunds one.
    rma                text COLLATE "C",
    -- return, appeasement, cancellation (as sent, lower case).
    refund_type        text,
    refund_reason      text,
    requested_by       text,
    credit_note_date   timestamptz,
    -- What the refund's lines give back.
    amount             numeric(20, 4) NOT NULL CHECK (amount >= 0),
    -- PENDINGRELEASE (a gateway refund waiting for the gateway), RELEASED, … as sent.
    status             text NOT NULL,
    status_reason      text,
    -- The version: (status_date, status_rank); a newer date wins, and at equal dates a final
    -- status (RELEASED …, rank 2) wins over a pending one (rank 1).
    status_date        timestamptz NOT NULL,
    status_rank        smallint NOT NULL,
    custom_attributes  jsonb NOT NULL DEFAULT '{}',
    first_seen         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX postsales_refunds_by_order ON postsales_refunds (order_id);

-- The lines of the refund's newest message, with what each gives back.
CREATE TABLE postsales_refund_lines (
    credit_note_number text COLLATE "C" NOT NULL REFERENCES postsales_refunds (credit_note_number),
    order_id           text COLLATE "C" NOT NULL,
    line_id            text COLLATE "C" NOT NULL,
    amount             numeric(20, 4) NOT NULL CHECK (amount >= 0),
    tax_amount         numeric(20, 4),
    reason             text,
    reason_description text,
    PRIMARY KEY (credit_note_number, line_id),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);

-- One credit memo per released refund: exactly the refunded lines and amounts, and where the
-- money goes back (docs/schema.md, "Where refunded money goes").
CREATE TABLE postsales_credit_memos (
    id                  bigserial PRIMARY KEY,
    credit_note_number  text COLLATE "C" NOT NULL UNIQUE
                            REFERENCES postsales_refunds (credit_note_number),
    order_id            text COLLATE "C" NOT NULL REFERENCES sales_orders (id),
    rma                 text COLLATE "C",
    refund_type         text,
    credit_note_date    timestamptz,
    -- The status date of the RELEASED message.
    released_at         timestamptz NOT NULL,
    -- The refunded lines' total, and its parts: back to the order's payment (the OMS
    -- refunds it through the payment's gateway), back as store credit, and what neither
    -- returns (an order the other tender paid nothing of; a guest's store credit), which the
    -- merchant settles.
    grand_total         numeric(20, 4) NOT NULL CHECK (grand_total >= 0),
    payment_amount      numeric(20, 4) NOT NULL CHECK (payment_amount >= 0),
    store_credit_amount numeric(20, 4) NOT NULL CHECK (store_credit_amount >= 0),
    unrefunded_amount   numeric(20, 4) NOT NULL CHECK (unrefunded_amount >= 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    CHECK (payment_amount + store_credit_amount + unrefunded_amount = grand_total)
);
CREATE INDEX postsales_credit_memos_by_order ON postsales_credit_memos (order_id);

CREATE TABLE postsales_credit_memo_lines (
    credit_memo_id bigint NOT NULL REFERENCES postsales_credit_memos (id),
    order_id       text COLLATE "C" NOT NULL,
    line_id        text COLLATE "C" NOT NULL,
    amount         numeric(20, 4) NOT NULL CHECK (amount >= 0),
    tax_amount     numeric(20, 4),
    PRIMARY KEY (credit_memo_id, line_id),
    FOREIGN KEY (order_id, line_id) REFERENCES sales_order_lines (order_id, line_id)
);
CREATE INDEX postsales_credit_memo_lines_by_line ON postsales_credit_memo_lines (order_id, line_id);

-- Ledgers ----------------------------------------------------------------------------------

-- Store credit per customer (sales_orders.customer_id). The balance is the sum of the
-- transactions; it changes only by inserting one, and never goes below zero.
CREATE TABLE store_credit_accounts (
    customer_id text COLLATE "C" PRIMARY KEY CHECK (customer_id <> ''),
    balance     numeric(20, 4) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE store_credit_transactions (
    id                 bigserial PRIMARY KEY,
    customer_id        text COLLATE "C" NOT NULL REFERENCES store_credit_accounts (customer_id),
    -- What the transaction is, once: 'refund:<credit note number>' (the connector's credit),
    -- 'order:<order id>' (redeemed at checkout), or the storefront's key for an adjustment.
    natural_key        text NOT NULL CHECK (natural_key <> ''),
    -- refund (credited by the connector), redeem (spent on an order), adjust (by the merchant).
    kind               text NOT NULL CHECK (kind IN ('refund', 'redeem', 'adjust')),
    amount             numeric(20, 4) NOT NULL CHECK (amount <> 0),
    order_id           text COLLATE "C",
    credit_note_number text COLLATE "C",
    comment            text,
    created_at         timestamptz NOT NULL DEFAULT now(),
    UNIQUE (customer_id, natural_key),
    CHECK (kind <> 'refund' OR amount > 0),
    CHECK (kind <> 'redeem' OR (amount < 0 AND order_id IS NOT NULL))
);
CREATE INDEX store_credit_transactions_by_order ON store_credit_transactions (order_id)
    WHERE order_id IS NOT NULL;

-- Gift card accounts, created by the storefront when it sells a gift card. The same ledger
-- rules as store credit.
CREATE TABLE gift_card_accounts (
    code        text COLLATE "C" PRIMARY KEY CHECK (code <> ''),
    currency    text CHECK (length(currency) = 3),
    -- The customer who bought it, when known.
    customer_id text,
    balance     numeric(20, 4) NOT NULL DEFAULT 0 CHECK (balance >= 0),
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE gift_card_transactions (
    id          bigserial PRIMARY KEY,
    code        text COLLATE "C" NOT NULL REFERENCES gift_card_accounts (code),
    -- 'order:<order id>' for a redemption; the storefront's key otherwise.
    natural_key text NOT NULL CHECK (natural_key <> ''),
    -- issue (loaded when sold), redeem (spent on an order), adjust (by the merchant).
    kind        text NOT NULL CHECK (kind IN ('issue', 'redeem', 'adjust')),
    amount      numeric(20, 4) NOT NULL CHECK (amount <> 0),
    order_id    text COLLATE "C",
    comment     text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    UNIQUE (code, natural_key),
    CHECK (kind <> 'issue' OR amount > 0),
    CHECK (kind <> 'redeem' OR (amount < 0 AND order_id IS NOT NULL))
);
CREATE INDEX gift_card_transactions_by_order ON gift_card_transactions (order_id)
    WHERE order_id IS NOT NULL;

-- What a storefront reads ------------------------------------------------------------------

-- Lines a customer may return: shipped, and in no return that is still open or done (a
-- rejected or cancelled return frees its lines).
CREATE VIEW postsales_returnable_lines AS
SELECT l.order_id,
       l.line_id,
       l.line_number,
       l.item_id,
       l.sku,
       l.product_type,
       l.gross_amount
FROM sales_order_lines l
JOIN sales_shipment_lines s ON s.order_id = l.order_id AND s.line_id = l.line_id
WHERE NOT EXISTS (
    SELECT 1 FROM postsales_return_lines rl
    JOIN postsales_returns r ON r.id = rl.return_id
    WHERE rl.order_id = l.order_id AND rl.line_id = l.line_id
      AND r.state NOT IN ('rejected', 'canceled'));

-- Per order line: what its credit memos gave back.
CREATE VIEW postsales_order_line_refunds AS
SELECT ml.order_id,
       ml.line_id,
       count(*)::integer AS credit_memos,
       sum(ml.amount) AS amount_refunded
FROM postsales_credit_memo_lines ml
GROUP BY ml.order_id, ml.line_id;

-- A customer's store credit; 0 for a customer who never had any.
CREATE FUNCTION store_credit_balance(customer text) RETURNS numeric
LANGUAGE sql STABLE
AS $$
    SELECT coalesce((SELECT balance FROM store_credit_accounts WHERE customer_id = customer), 0)
$$;

-- A gift card's balance; null for a code that does not exist.
CREATE FUNCTION gift_card_balance(gift_card text) RETURNS numeric
LANGUAGE sql STABLE
AS $$
    SELECT balance FROM gift_card_accounts WHERE code = gift_card
$$;

-- Requesting a return -------------------------------------------------------------------------

-- A storefront's insert cannot set what the OMS owns, nor pretend to be the OMS.
CREATE FUNCTION omsc_postsales_return_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    NEW.placed_xact := pg_current_xact_id();
    IF omsc_may_write_oms_data() THEN
        RETURN NEW;
    END IF;
    IF NEW.origin <> 'commerce' OR NEW.state <> 'requested' OR NEW.oms_status IS NOT NULL
       OR NEW.oms_status_reason IS NOT NULL OR NEW.oms_status_date IS NOT NULL
       OR NEW.received_at IS NOT NULL OR NEW.tracking_date IS NOT NULL THEN
        RAISE EXCEPTION 'postsales_returns: the status of a return is the OMS''s; request return % without origin, state, oms_*, tracking_date or received_at values', NEW.id
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER postsales_returns_inserted
    BEFORE INSERT ON postsales_returns
    FOR EACH ROW EXECUTE FUNCTION omsc_postsales_return_inserted();

-- The rows of a return are added by the transaction that requested it, and by no later one
-- (the connector excepted: the OMS may name more lines). A line takes its return's order.
CREATE FUNCTION omsc_postsales_return_part_inserted() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    ret postsales_returns%ROWTYPE;
BEGIN
    SELECT * INTO ret FROM postsales_returns WHERE id = NEW.return_id;
    IF FOUND AND TG_TABLE_NAME = 'postsales_return_lines' THEN
        -- (Nested: NEW has an order_id only in postsales_return_lines.)
        IF NEW.order_id IS NULL THEN
            NEW.order_id := ret.order_id;
        ELSIF NEW.order_id <> ret.order_id THEN
            RAISE EXCEPTION 'postsales_return_lines: return % is of order %, not of order %', NEW.return_id, ret.order_id, NEW.order_id
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    IF omsc_may_write_oms_data() THEN
        RETURN NEW;
    END IF;
    IF FOUND AND ret.placed_xact <> pg_current_xact_id() THEN
        RAISE EXCEPTION '%: return % was requested by an earlier transaction; a requested return belongs to the OMS', TG_TABLE_NAME, NEW.return_id
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'write the whole return in the transaction that inserts it into postsales_returns';
    END IF;
    -- (Nested: NEW has these fields only in postsales_return_lines.)
    IF TG_TABLE_NAME = 'postsales_return_lines' THEN
        IF NEW.oms_status IS NOT NULL OR NEW.oms_status_date IS NOT NULL
           OR NEW.oms_condition IS NOT NULL OR NEW.received_at IS NOT NULL
           OR NEW.received_condition IS NOT NULL THEN
            RAISE EXCEPTION 'postsales_return_lines: the status of a returned line is the OMS''s; leave oms_* and received_* out'
                USING ERRCODE = 'insufficient_privilege';
        END IF;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER postsales_return_lines_part BEFORE INSERT ON postsales_return_lines
    FOR EACH ROW EXECUTE FUNCTION omsc_postsales_return_part_inserted();
CREATE TRIGGER postsales_return_attributes_part BEFORE INSERT ON postsales_return_attributes
    FOR EACH ROW EXECUTE FUNCTION omsc_postsales_return_part_inserted();
CREATE TRIGGER postsales_return_line_attributes_part BEFORE INSERT ON postsales_return_line_attributes
    FOR EACH ROW EXECUTE FUNCTION omsc_postsales_return_part_inserted();

-- At the commit of the requesting transaction, when every row of the return is there: checks
-- that the return can be authorized and queues its export. A failed check fails the commit,
-- so a return the OMS would refuse is never requested. Returns the OMS created are neither
-- checked nor exported back.
CREATE FUNCTION omsc_postsales_return_requested() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    bad record;
BEGIN
    IF NEW.origin <> 'commerce' THEN
        RETURN NULL;
    END IF;
    -- Two returns of one order committing at once see each other's lines: the second waits
    -- for the first, and (READ COMMITTED, the default) each check sees what committed before.
    PERFORM pg_advisory_xact_lock(hashtextextended('omsc.return:' || NEW.order_id, 0));
    IF NOT EXISTS (SELECT 1 FROM postsales_return_lines WHERE return_id = NEW.id) THEN
        RAISE EXCEPTION 'return % has no lines (postsales_return_lines)', NEW.id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    SELECT rl.line_id INTO bad FROM postsales_return_lines rl
     WHERE rl.return_id = NEW.id
       AND NOT EXISTS (SELECT 1 FROM sales_shipment_lines s
                        WHERE s.order_id = rl.order_id AND s.line_id = rl.line_id)
     ORDER BY rl.line_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'return %: line % of order % has not shipped; only shipped lines can be returned', NEW.id, bad.line_id, NEW.order_id
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'the lines a customer may return are in postsales_returnable_lines';
    END IF;
    SELECT rl.line_id, other.return_id INTO bad FROM postsales_return_lines rl
      JOIN postsales_return_lines other
        ON other.order_id = rl.order_id AND other.line_id = rl.line_id AND other.return_id <> rl.return_id
      JOIN postsales_returns r ON r.id = other.return_id
     WHERE rl.return_id = NEW.id AND r.state NOT IN ('rejected', 'canceled')
     ORDER BY rl.line_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'return %: line % of order % is already in return %', NEW.id, bad.line_id, NEW.order_id, bad.return_id
            USING ERRCODE = 'integrity_constraint_violation',
                  HINT = 'the lines a customer may return are in postsales_returnable_lines';
    END IF;
    SELECT rl.line_id INTO bad FROM postsales_return_lines rl
     WHERE rl.return_id = NEW.id AND btrim(rl.reason) = '' ORDER BY rl.line_id LIMIT 1;
    IF FOUND THEN
        RAISE EXCEPTION 'return %: line % has no reason; the OMS needs a reason code for every returned line', NEW.id, bad.line_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    PERFORM omsc_outbox_add('postsales', 'return.authorize', NEW.id);
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER postsales_returns_requested
    AFTER INSERT ON postsales_returns
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION omsc_postsales_return_requested();

-- A requested return changes only through the connector.
CREATE FUNCTION omsc_postsales_refuse_changes() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF omsc_may_write_oms_data() THEN
        RETURN NULL;
    END IF;
    RAISE EXCEPTION '%: a requested return belongs to the OMS; only the connector changes it', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'return statuses arrive from the OMS; to return more, request another return';
END
$$;

CREATE TRIGGER postsales_returns_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postsales_returns
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_postsales_refuse_changes();
CREATE TRIGGER postsales_return_lines_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postsales_return_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_postsales_refuse_changes();
CREATE TRIGGER postsales_return_attributes_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postsales_return_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_postsales_refuse_changes();
CREATE TRIGGER postsales_return_line_attributes_owned_by_oms
    BEFORE UPDATE OR DELETE OR TRUNCATE ON postsales_return_line_attributes
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_postsales_refuse_changes();

-- Refunds and credit memos are the connector's to write.
CREATE TRIGGER postsales_refunds_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON postsales_refunds
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER postsales_refund_lines_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON postsales_refund_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER postsales_credit_memos_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON postsales_credit_memos
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();
CREATE TRIGGER postsales_credit_memo_lines_owned_by_oms
    BEFORE INSERT OR UPDATE OR DELETE OR TRUNCATE ON postsales_credit_memo_lines
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_refuse_foreign_writes();

-- The ledgers ----------------------------------------------------------------------------------

-- A ledger is append-only, for everyone.
CREATE FUNCTION omsc_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    RAISE EXCEPTION '%: a ledger is append-only', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'to correct a balance, insert an adjustment (kind ''adjust'')';
END
$$;

-- An account's balance moves only with a transaction (the transaction's trigger is the one
-- caller at depth 2), and an account is opened empty and never closed.
CREATE FUNCTION omsc_ledger_account_guarded() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        IF NEW.balance <> 0 THEN
            RAISE EXCEPTION '%: an account opens with a balance of 0; load it with a transaction', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege';
        END IF;
        RETURN NEW;
    END IF;
    IF TG_OP = 'UPDATE' THEN
        IF NEW.balance IS DISTINCT FROM OLD.balance AND pg_trigger_depth() < 2 THEN
            RAISE EXCEPTION '%: a balance changes only by a transaction', TG_TABLE_NAME
                USING ERRCODE = 'insufficient_privilege',
                      HINT = 'insert a transaction; the balance follows';
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '%: accounts are never deleted', TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER store_credit_accounts_guarded
    BEFORE INSERT OR UPDATE OR DELETE ON store_credit_accounts
    FOR EACH ROW EXECUTE FUNCTION omsc_ledger_account_guarded();
CREATE TRIGGER store_credit_accounts_not_truncated
    BEFORE TRUNCATE ON store_credit_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_ledger_append_only();
CREATE TRIGGER gift_card_accounts_guarded
    BEFORE INSERT OR UPDATE OR DELETE ON gift_card_accounts
    FOR EACH ROW EXECUTE FUNCTION omsc_ledger_account_guarded();
CREATE TRIGGER gift_card_accounts_not_truncated
    BEFORE TRUNCATE ON gift_card_accounts
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_ledger_append_only();
CREATE TRIGGER store_credit_transactions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON store_credit_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_ledger_append_only();
CREATE TRIGGER gift_card_transactions_append_only
    BEFORE UPDATE OR DELETE OR TRUNCATE ON gift_card_transactions
    FOR EACH STATEMENT EXECUTE FUNCTION omsc_ledger_append_only();

-- Before a store credit transaction: only the connector credits refunds, and the customer's
-- account is opened on its first transaction.
CREATE FUNCTION omsc_store_credit_transaction_checked() RETURNS trigger
LANGUAGE plpgsql
AS $$
BEGIN
    IF NEW.kind = 'refund' AND NOT omsc_may_write_oms_data() THEN
        RAISE EXCEPTION 'store_credit_transactions: refunds are credited by the connector, from the OMS''s released refunds'
            USING ERRCODE = 'insufficient_privilege';
    END IF;
    INSERT INTO store_credit_accounts (customer_id) VALUES (NEW.customer_id)
    ON CONFLICT (customer_id) DO NOTHING;
    RETURN NEW;
END
$$;

CREATE TRIGGER store_credit_transactions_checked
    BEFORE INSERT ON store_credit_transactions
    FOR EACH ROW EXECUTE FUNCTION omsc_store_credit_transaction_checked();

-- After a transaction is inserted (and only then: a repeat skipped by ON CONFLICT moves
-- nothing), its amount moves the balance; a balance that would go negative fails the insert.
CREATE FUNCTION omsc_store_credit_transaction_applied() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    balance_now numeric;
BEGIN
    UPDATE store_credit_accounts SET balance = balance + NEW.amount, updated_at = now()
     WHERE customer_id = NEW.customer_id AND balance + NEW.amount >= 0
    RETURNING balance INTO balance_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'store credit of customer % is %, not enough for %', NEW.customer_id,
              store_credit_balance(NEW.customer_id), -NEW.amount
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER store_credit_transactions_applied
    AFTER INSERT ON store_credit_transactions
    FOR EACH ROW EXECUTE FUNCTION omsc_store_credit_transaction_applied();

CREATE FUNCTION omsc_gift_card_transaction_applied() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    balance_now numeric;
BEGIN
    UPDATE gift_card_accounts SET balance = balance + NEW.amount, updated_at = now()
     WHERE code = NEW.code AND balance + NEW.amount >= 0
    RETURNING balance INTO balance_now;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'gift card % has %, not enough for %', NEW.code,
              coalesce(gift_card_balance(NEW.code)::text, 'no account'), -NEW.amount
            USING ERRCODE = 'check_violation';
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER gift_card_transactions_applied
    AFTER INSERT ON gift_card_transactions
    FOR EACH ROW EXECUTE FUNCTION omsc_gift_card_transaction_applied();

-- At the commit of a transaction that redeemed on an order: the redemptions add up to what
-- the order says was paid with them, so the order's export tells the OMS the truth.
CREATE FUNCTION omsc_redemptions_checked() RETURNS trigger
LANGUAGE plpgsql
AS $$
DECLARE
    o sales_orders%ROWTYPE;
    redeemed numeric;
BEGIN
    IF NEW.kind <> 'redeem' THEN
        RETURN NULL;
    END IF;
    SELECT * INTO o FROM sales_orders WHERE id = NEW.order_id;
    IF NOT FOUND THEN
        RAISE EXCEPTION '%: order % does not exist; redeem in the transaction that places it', TG_TABLE_NAME, NEW.order_id
            USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF TG_TABLE_NAME = 'gift_card_transactions' THEN
        SELECT -sum(amount) INTO redeemed FROM gift_card_transactions
         WHERE order_id = NEW.order_id AND kind = 'redeem';
        IF redeemed <> o.gift_card_amount THEN
            RAISE EXCEPTION 'order %: gift cards redeemed % but the order says gift_card_amount %', o.id, redeemed, o.gift_card_amount
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF NOT NEW.code = ANY (o.gift_card_codes) THEN
            RAISE EXCEPTION 'order %: gift card % was redeemed but is not in its gift_card_codes', o.id, NEW.code
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    ELSE
        SELECT -sum(amount) INTO redeemed FROM store_credit_transactions
         WHERE order_id = NEW.order_id AND kind = 'redeem';
        IF redeemed <> o.store_credit_amount THEN
            RAISE EXCEPTION 'order %: store credit redeemed % but the order says store_credit_amount %', o.id, redeemed, o.store_credit_amount
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
        IF o.customer_id IS DISTINCT FROM NEW.customer_id THEN
            RAISE EXCEPTION 'order %: store credit of customer % was redeemed on an order of customer %', o.id, NEW.customer_id, coalesce(o.customer_id, 'a guest')
                USING ERRCODE = 'integrity_constraint_violation';
        END IF;
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER gift_card_redemptions_checked
    AFTER INSERT ON gift_card_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION omsc_redemptions_checked();
CREATE CONSTRAINT TRIGGER store_credit_redemptions_checked
    AFTER INSERT ON store_credit_transactions
    DEFERRABLE INITIALLY DEFERRED
    FOR EACH ROW EXECUTE FUNCTION omsc_redemptions_checked();

-- Redeems `amount` of a gift card on an order; returns the card's new balance. Redeeming
-- the same card on the same order again with the same amount changes nothing.
CREATE FUNCTION gift_card_redeem(gift_card text, order_id text, amount numeric) RETURNS numeric
LANGUAGE plpgsql
AS $$
DECLARE
    earlier numeric;
BEGIN
    IF amount <= 0 THEN
        RAISE EXCEPTION 'gift card %: redeem a positive amount, not %', gift_card, amount
            USING ERRCODE = 'check_violation';
    END IF;
    IF NOT EXISTS (SELECT 1 FROM gift_card_accounts WHERE code = gift_card) THEN
        RAISE EXCEPTION 'gift card % does not exist', gift_card
            USING ERRCODE = 'no_data_found';
    END IF;
    INSERT INTO gift_card_transactions (code, natural_key, kind, amount, order_id)
    VALUES (gift_card, 'order:' || gift_card_redeem.order_id, 'redeem', -amount, gift_card_redeem.order_id)
    ON CONFLICT (code, natural_key) DO NOTHING;
    SELECT -t.amount INTO earlier FROM gift_card_transactions t
     WHERE t.code = gift_card AND t.natural_key = 'order:' || gift_card_redeem.order_id;
    IF earlier <> amount THEN
        RAISE EXCEPTION 'gift card % was already redeemed on order % for %', gift_card, gift_card_redeem.order_id, earlier
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN gift_card_balance(gift_card);
END
$$;

-- Redeems `amount` of a customer's store credit on an order; returns the new balance. The
-- same redemption again changes nothing.
CREATE FUNCTION store_credit_redeem(customer text, order_id text, amount numeric) RETURNS numeric
LANGUAGE plpgsql
AS $$
DECLARE
    earlier numeric;
BEGIN
    IF amount <= 0 THEN
        RAISE EXCEPTION 'store credit of customer %: redeem a positive amount, not %', customer, amount
            USING ERRCODE = 'check_violation';
    END IF;
    INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount, order_id)
    VALUES (customer, 'order:' || store_credit_redeem.order_id, 'redeem', -amount, store_credit_redeem.order_id)
    ON CONFLICT (customer_id, natural_key) DO NOTHING;
    SELECT -t.amount INTO earlier FROM store_credit_transactions t
     WHERE t.customer_id = customer AND t.natural_key = 'order:' || store_credit_redeem.order_id;
    IF earlier <> amount THEN
        RAISE EXCEPTION 'store credit of customer % was already redeemed on order % for %', customer, store_credit_redeem.order_id, earlier
            USING ERRCODE = 'unique_violation';
    END IF;
    RETURN store_credit_balance(customer);
END
$$;
