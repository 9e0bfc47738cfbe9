-- 002_webhook_topics: a webhook hears the events of one topic (docs/webhooks.md).
--   topic   "InvoicesTopic": the shop's invoice events (every webhook set up before this
--           migration); "ReceiptsTopic": the shop's fiscal receipt events, kassa's addition.
-- A ReceiptsTopic webhook's deliveries keep the receipt's id in webhook_deliveries.invoice_id:
-- the column names the machine whose events are delivered in order, whichever kind it is.
ALTER TABLE webhooks ADD COLUMN topic TEXT NOT NULL DEFAULT 'InvoicesTopic';
