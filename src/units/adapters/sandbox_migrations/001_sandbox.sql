-- 001_sandbox: the sandbox acquirer's own record of every operation it was asked to do
-- (src/units/adapters/sandbox.c, docs/sandbox.md).
-- replaces engine migration 004
-- Written once for both stores; {{...}} are the SQL layer's dialect fragments (src/store/sql.h).
-- One row per session_id: a repeated session returns the recorded outcome and never charges
-- twice. Card data is never stored: card_mask keeps the first six and last four digits only.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE sandbox_operations (
    pos             {{serial_pk_autoinc}},  -- arrival order, the listing cursor
    session_id      TEXT    NOT NULL UNIQUE,
    kind            TEXT    NOT NULL,   -- authorize | capture | cancel | refund
    invoice_id      TEXT    NOT NULL,
    payment_id      TEXT    NOT NULL,
    refund_id       TEXT,
    amount          {{int64}} NOT NULL, -- minor units
    currency        TEXT    NOT NULL,
    card_mask       TEXT,               -- authorize only
    payment_system  TEXT,
    scenario        TEXT    NOT NULL,   -- the test card's scenario; "operation" otherwise
    status          TEXT    NOT NULL,
    failure_code    TEXT,
    failure_reason  TEXT,
    provider_trx    TEXT,
    rrn             TEXT,
    approval_code   TEXT,
    callback_tag    TEXT,               -- 3-D Secure: the tag the payer's answer comes back on
    deadline_at     {{int64}} NOT NULL DEFAULT 0,
    attempts        {{int64}} NOT NULL,
    inquiries       {{int64}} NOT NULL DEFAULT 0,
    created_at      {{int64}} NOT NULL,
    updated_at      {{int64}} NOT NULL
);
CREATE INDEX sandbox_operations_payment ON sandbox_operations (invoice_id, payment_id, pos);
CREATE INDEX sandbox_operations_tag ON sandbox_operations (callback_tag)
    WHERE callback_tag IS NOT NULL;
