-- What a shipment says beyond its lines and tracking, kept where a storefront reads it
-- (docs/schema.md): the shipment request it fulfils, where it goes, each line's status in it,
-- and where to print each parcel's label.

-- shipment_request_id: the OMS's shipment request (the specification's replacement for
-- shipment_id); a shipment with a request id and no shipment id is keyed by it.
-- address: the delivery address as the OMS sent it (magento.common.address field names, the
-- filled-in text fields only); NULL when the message carried none.
ALTER TABLE sales_shipments
    ADD COLUMN shipment_request_id text,
    ADD COLUMN address jsonb CHECK (jsonb_typeof(address) = 'object');

-- The line's status in the shipment (SHIPPED …) and its reason, as sent.
ALTER TABLE sales_shipment_lines
    ADD COLUMN status text,
    ADD COLUMN status_reason text;

ALTER TABLE sales_shipment_packages
    ADD COLUMN shipping_label_link text;

-- The customer's order page reads tracking here; the label link and the address join it
-- (columns added at the end, so CREATE OR REPLACE keeps the view's existing columns).
CREATE OR REPLACE VIEW sales_order_tracking AS
SELECT s.order_id,
       s.id AS shipment_id,
       s.oms_shipment_id,
       s.shipped_at,
       s.method,
       p.package_id,
       p.carrier,
       p.tracking_number,
       p.tracking_link,
       p.tracking_comment,
       s.shipment_request_id,
       p.shipping_label_link,
       s.address AS shipping_address
FROM sales_shipments s
JOIN sales_shipment_packages p ON p.shipment_id = s.id;
