-- How a storefront places an order: every row of the order in one transaction. At COMMIT the
-- database checks that the order can be exported (items, payment, addresses, shipping) and
-- queues its export to the OMS; from then on the order belongs to the OMS.
--
-- Order 000000101: two units of a simple product, a configurable (a T-shirt, size M chosen),
-- a bundle of two items, a gift card, UPS ground shipping, a 10 % coupon on the simple
-- product, part paid with a gift card, a custom order attribute and a custom item attribute.
BEGIN;

INSERT INTO sales_orders (id, store, placed_at, ip, language, vat_country, currency,
                          customer_id, billing_address_reference, shipping_address_reference,
                          shipping_carrier, shipping_method, shipping_description,
                          shipping_amount, shipping_tax_amount, shipping_tax_rate,
                          gift_card_amount, gift_card_codes)
VALUES ('000000101', 'default', '2026-03-01T10:00:00Z', '203.0.113.7', 'en_US', 'US', 'USD',
        '42', 'bill-1', 'ship-1',
        'ups', 'GND', 'UPS Ground',
        12.50, 0, 0,
        20.00, '{GC-0001}');

INSERT INTO sales_order_addresses (order_id, reference, first_name, last_name, address1,
                                   city, state, zip, country_code, phone, email)
VALUES ('000000101', 'bill-1', 'Ada', 'Lovelace', '1 Analytical Way', 'Austin', 'TX', '73301',
        'US', '555-0100', 'ada@example.com'),
       ('000000101', 'ship-1', 'Ada', 'Lovelace', '2 Engine Street', 'Austin', 'TX', '73301',
        'US', '555-0100', 'ada@example.com');

INSERT INTO sales_order_items (order_id, item_id, parent_item_id, product_type, sku, name,
                               qty, price, discount_amount, tax_amount, tax_rate)
VALUES -- two units of a simple product, 10 % off
       ('000000101', 1, NULL, 'simple',       'MUG-BLUE',   'Blue mug',        2, 15.00, 3.00, 0, 0),
       -- a configurable: the parent carries the price, the child the chosen variant
       ('000000101', 2, NULL, 'configurable', 'TSHIRT',     'T-shirt',         1, 25.00, 0, 0, 0),
       ('000000101', 3, 2,    'simple',       'TSHIRT-M',   'T-shirt M',       1,  0.00, 0, 0, 0),
       -- a bundle and its two children (per bundle: one lamp, two bulbs)
       ('000000101', 4, NULL, 'bundle',       'LAMP-KIT',   'Lamp kit',        1, 60.00, 0, 0, 0),
       ('000000101', 5, 4,    'simple',       'LAMP',       'Lamp',            1,  0.00, 0, 0, 0),
       ('000000101', 6, 4,    'simple',       'BULB',       'Bulb',            2,  0.00, 0, 0, 0),
       -- a gift card (nothing ships)
       ('000000101', 7, NULL, 'giftcard',     'GIFT-50',    'Gift card $50',   1, 50.00, 0, 0, 0);

INSERT INTO sales_order_item_promotions (order_id, item_id, code, name, discount_amount, percentage)
VALUES ('000000101', 1, 'MUGS10', '10% off mugs', 3.00, 10);

INSERT INTO sales_order_payments (order_id, reference, payment_method, payment_submethod,
                                  processor, gateway_id, account, transaction_id,
                                  authorization_status)
VALUES ('000000101', 'pay-1', 'CREDITCARD', 'VISA', 'braintree', 'BRAINTREE', 'merchant-1',
        'txn-8812', 'AUTHORIZED');

INSERT INTO sales_order_attributes (order_id, code, value)
VALUES ('000000101', 'delivery_instructions', 'leave at the door');

INSERT INTO sales_order_item_attributes (order_id, item_id, code, value)
VALUES ('000000101', 7, 'recipient_email', 'friend@example.com');

COMMIT;

-- Later, the customer changes their mind: the request goes to the OMS, which answers with
-- an update (CANCELLED, or not when it is too late).
INSERT INTO sales_order_cancel_requests (order_id, requested_by) VALUES ('000000101', 'customer');
