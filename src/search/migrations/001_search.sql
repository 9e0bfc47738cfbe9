-- 001_search: the search read model (docs/search.md), fed by the search relay from the invoice
-- machines; the search API reads only these tables, never a machine's snapshot.
--   created_at   ms since the Unix epoch: the object's createdAt, what fromTime/toTime select
--   doc          the object as the API shows it (JSON text)
-- Payments keep the fields the filters use in columns of their own.
CREATE TABLE search_invoices (
    id TEXT PRIMARY KEY,
    party_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    created_at {{int64}} NOT NULL,
    status TEXT NOT NULL,
    amount {{int64}} NOT NULL,
    currency TEXT NOT NULL,
    doc TEXT NOT NULL
);
CREATE INDEX search_invoices_shop ON search_invoices (shop_id, created_at, id);
CREATE TABLE search_payments (
    invoice_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    party_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    created_at {{int64}} NOT NULL,
    status TEXT NOT NULL,
    flow TEXT NOT NULL,
    amount {{int64}} NOT NULL,
    currency TEXT NOT NULL,
    payer_email TEXT,
    payer_ip TEXT,
    fingerprint TEXT,
    first6 TEXT,
    last4 TEXT,
    payment_system TEXT,
    rrn TEXT,
    approval_code TEXT,
    doc TEXT NOT NULL,
    PRIMARY KEY (invoice_id, payment_id)
);
CREATE INDEX search_payments_shop ON search_payments (shop_id, created_at, invoice_id, payment_id);
CREATE INDEX search_payments_email ON search_payments (shop_id, payer_email);
CREATE INDEX search_payments_card ON search_payments (shop_id, last4, first6);
CREATE INDEX search_payments_rrn ON search_payments (shop_id, rrn);
CREATE TABLE search_refunds (
    invoice_id TEXT NOT NULL,
    payment_id TEXT NOT NULL,
    refund_id TEXT NOT NULL,
    party_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    created_at {{int64}} NOT NULL,
    status TEXT NOT NULL,
    amount {{int64}} NOT NULL,
    currency TEXT NOT NULL,
    rrn TEXT,
    approval_code TEXT,
    doc TEXT NOT NULL,
    PRIMARY KEY (invoice_id, payment_id, refund_id)
);
CREATE INDEX search_refunds_shop ON search_refunds (shop_id, created_at, invoice_id, payment_id,
    refund_id);
