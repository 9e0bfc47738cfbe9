-- 001_webhooks: merchant webhooks and their deliveries (docs/webhooks.md).
-- webhooks: one row per webhook a party set up.
--   id                  "wh" + random base62
--   party_id, shop_id   whose invoices it hears about (InvoicesTopic.shopID)
--   url                 where deliveries are POSTed
--   event_types         the InvoicesTopic.eventTypes, as a JSON array
--   active              false once the receiver answered 410 Gone (an operator may enable it)
--   public_key          PEM SubjectPublicKeyInfo of its RSA-2048 key (returned as publicKey)
--   private_key_sealed  the private key (PKCS#8 PEM) sealed by the vault (ks_vault_secret_seal)
--   disabled_reason     why it is inactive, NULL while active
CREATE TABLE webhooks (
    id TEXT PRIMARY KEY,
    party_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    url TEXT NOT NULL,
    event_types TEXT NOT NULL,
    active {{bool}} NOT NULL,
    public_key TEXT NOT NULL,
    private_key_sealed TEXT NOT NULL,
    created_at {{int64}} NOT NULL,
    disabled_reason TEXT
);
CREATE INDEX webhooks_shop ON webhooks (shop_id);
CREATE INDEX webhooks_party ON webhooks (party_id, created_at);
-- webhook_deliveries: one row per (webhook, invoice event) to send.
--   id            "{webhook}.{pos}": the webhook-id header, the same on every attempt
--   pos           the event's outbox position (order within an invoice)
--   event_id      the event's number within its invoice (the body's eventID)
--   status        pending | delivered | dead | cancelled
--   next_at       when a pending delivery is next due (ms)
--   first_at      when it was recorded (the retry horizon counts from here)
--   lease_owner, lease_until  the node sending it now
CREATE TABLE webhook_deliveries (
    id TEXT PRIMARY KEY,
    webhook_id TEXT NOT NULL,
    invoice_id TEXT NOT NULL,
    pos {{int64}} NOT NULL,
    event_id {{int64}} NOT NULL,
    event_type TEXT NOT NULL,
    body TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_at {{int64}} NOT NULL,
    first_at {{int64}} NOT NULL,
    last_attempt_at {{int64}} NOT NULL,
    last_http_status INTEGER NOT NULL,
    last_error TEXT,
    delivered_at {{int64}} NOT NULL,
    lease_owner TEXT,
    lease_until {{int64}} NOT NULL
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_order ON webhook_deliveries (webhook_id, invoice_id, pos)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_list ON webhook_deliveries (webhook_id, pos);
