-- How a storefront sells a gift card, and spends gift cards and store credit on an order.
-- Both are ledgers: a balance moves only by inserting a transaction, each transaction is a
-- fact under a natural key (inserting it again is refused, or a no-op with ON CONFLICT), and
-- a balance never goes below zero.

-- Selling a gift card: open its account (always at 0) and load it, once.
INSERT INTO gift_card_accounts (code, currency, customer_id) VALUES ('GC-0002', 'USD', '42');
INSERT INTO gift_card_transactions (code, natural_key, kind, amount, comment)
VALUES ('GC-0002', 'issue:GC-0002', 'issue', 50.00, 'sold with order 000000101');

-- A merchant's goodwill: store credit for customer 42.
INSERT INTO store_credit_transactions (customer_id, natural_key, kind, amount, comment)
VALUES ('42', 'goodwill:2026-03-05', 'adjust', 10.00, 'late delivery');

-- Order 000000201: a lamp (60.00) and flat-rate shipping (5.00); the gift card pays 30.00,
-- store credit 10.00, the card the other 25.00. Redeem in the transaction that places the
-- order, exactly what the order says it used: at COMMIT the database checks that the
-- redemptions add up to gift_card_amount and store_credit_amount, so the OMS is told the truth.
BEGIN;

INSERT INTO sales_orders (id, store, placed_at, currency, customer_id,
                          billing_address_reference, shipping_address_reference,
                          shipping_carrier, shipping_method, shipping_amount,
                          gift_card_amount, gift_card_codes, store_credit_amount)
VALUES ('000000201', 'default', '2026-03-06T10:00:00Z', 'USD', '42', 'bill-1', 'bill-1',
        'flatrate', 'flatrate', 5.00, 30.00, '{GC-0002}', 10.00);

INSERT INTO sales_order_addresses (order_id, reference, first_name, last_name, address1,
                                   city, zip, country_code, email)
VALUES ('000000201', 'bill-1', 'Ada', 'Lovelace', '1 Analytical Way', 'Austin', '73301', 'US',
        'ada@example.com');

INSERT INTO sales_order_items (order_id, item_id, product_type, sku, name, qty, price)
VALUES ('000000201', 1, 'simple', 'LAMP', 'Lamp', 1, 60.00);

INSERT INTO sales_order_payments (order_id, reference, payment_method, processor, gateway_id)
VALUES ('000000201', 'pay-1', 'CREDITCARD', 'braintree', 'BRAINTREE');

SELECT gift_card_redeem('GC-0002', '000000201', 30.00);  -- the card's new balance: 20.00
SELECT store_credit_redeem('42', '000000201', 10.00);    -- customer 42's new balance: 0.00

COMMIT;

-- Reading them:
-- SELECT gift_card_balance('GC-0002');
-- SELECT store_credit_balance('42');
-- SELECT * FROM store_credit_transactions WHERE customer_id = '42' ORDER BY created_at;
