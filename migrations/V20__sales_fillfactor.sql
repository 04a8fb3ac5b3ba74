-- An order's row and its lines' rows are rewritten by every status the OMS reports (six or
-- more times in an order's life; a line's status and its payment's each) and never change
-- their keys. Leaving part of each page free lets PostgreSQL update them in place (HOT
-- updates): no new index entries per update, and the old versions pruned as pages are read,
-- even where vacuum runs seldom. An invoice's totals grow as its lines are captured.
-- Existing pages keep their layout until they are rewritten; new ones follow at once.
ALTER TABLE sales_orders SET (fillfactor = 70);
ALTER TABLE sales_order_lines SET (fillfactor = 70);
ALTER TABLE sales_invoices SET (fillfactor = 80);
