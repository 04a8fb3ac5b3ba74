-- How a storefront requests a return: the return, its lines and its custom attributes in one
-- transaction. At COMMIT the database checks that every line has shipped, is in no other open
-- return and has a reason, and queues the return's authorization for the OMS
-- (return_management.authorize); from then on the return belongs to the OMS. The lines a
-- customer may still return are in postsales_returnable_lines.
--
-- Return R-000000101-1 of order 000000101 (docs/examples/place-order.sql), once it shipped:
-- one of the two mugs, chipped, and one bulb of the lamp kit, not wanted. The customer ships
-- them back with a label of their own.
BEGIN;

INSERT INTO postsales_returns (id, order_id, requested_by, tracking_number, tracking_carrier)
VALUES ('R-000000101-1', '000000101', 'customer', '1Z999AA10123456784', 'UPS');

-- One row per unit: an order line as exported (an item of quantity 2 is lines 1-1 and 1-2).
INSERT INTO postsales_return_lines (return_id, line_id, reason, reason_description, condition)
VALUES ('R-000000101-1', '1-2', 'DAMAGED', 'The handle is chipped', 'DAMAGED'),
       ('R-000000101-1', '6-1', 'NOT_WANTED', 'Bought one too many', 'NEW');

INSERT INTO postsales_return_attributes (return_id, code, value)
VALUES ('R-000000101-1', 'refund_method', 'original_payment');

INSERT INTO postsales_return_line_attributes (return_id, line_id, code, value)
VALUES ('R-000000101-1', '1-2', 'photo_url', 'https://img.example/returns/1-2.jpg');

COMMIT;
