-- 004_sandbox: the sandbox acquirer's own record of every operation it was asked to do
-- (src/units/adapters/sandbox.c, docs/sandbox.md). PostgreSQL.
-- One row per session_id: a repeated session returns the recorded outcome and never charges
-- twice. Card data is never stored: card_mask keeps the first six and last four digits only.
-- Times are milliseconds since the Unix epoch.
CREATE TABLE sandbox_operations (
    pos             bigint  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- the listing cursor
    session_id      text    NOT NULL UNIQUE,
    kind            text    NOT NULL,   -- authorize | capture | cancel | refund
    invoice_id      text    NOT NULL,
    payment_id      text    NOT NULL,
    refund_id       text,
    amount          bigint  NOT NULL,   -- minor units
    currency        text    NOT NULL,
    card_mask       text,               -- authorize only
    payment_system  text,
    scenario        text    NOT NULL,   -- the test card's scenario; "operation" otherwise
    status          text    NOT NULL,
    failure_code    text,
    failure_reason  text,
    provider_trx    text,
    rrn             text,
    approval_code   text,
    callback_tag    text,               -- 3-D Secure: the tag the payer's answer comes back on
    deadline_at     bigint  NOT NULL DEFAULT 0,
    attempts        bigint  NOT NULL,
    inquiries       bigint  NOT NULL DEFAULT 0,
    created_at      bigint  NOT NULL,
    updated_at      bigint  NOT NULL
);
CREATE INDEX sandbox_operations_payment ON sandbox_operations (invoice_id, payment_id, pos);
CREATE INDEX sandbox_operations_tag ON sandbox_operations (callback_tag)
    WHERE callback_tag IS NOT NULL;
