-- 001_emulator: the cash-register emulator's registers and the documents they registered
-- (src/receipts/emulator.c, docs/receipts-emulator.md).
-- Written once for both stores; {{...}} are the SQL layer's dialect fragments (src/store/sql.h).
-- One register per register group. Its row is locked by every registration, so documents are
-- numbered 1, 2, 3... without gaps however many workers register at once. Times are
-- milliseconds since the Unix epoch.
CREATE TABLE fiscal_emulator_registers (
    group_id            TEXT      NOT NULL PRIMARY KEY,
    fn_number           TEXT      NOT NULL,  -- fixed by the first document
    registration_number TEXT      NOT NULL,
    key_sealed          TEXT      NOT NULL,  -- the signing key, sealed by the vault
    mode                TEXT      NOT NULL,  -- online | unreachable | slow | fail
    delay_ms            {{int64}} NOT NULL,
    fail_code           TEXT      NOT NULL,
    fail_text           TEXT      NOT NULL,
    last_document       {{int64}} NOT NULL,  -- the number of the last document, 0 for none
    shift_number        {{int64}} NOT NULL,  -- the current or last shift, 0 before the first
    shift_opened_at     {{int64}} NOT NULL,  -- 0 while no shift is open
    shift_receipts      {{int64}} NOT NULL,  -- receipts in the current shift
    created_at          {{int64}} NOT NULL,
    updated_at          {{int64}} NOT NULL
);
CREATE TABLE fiscal_emulator_documents (
    group_id            TEXT      NOT NULL,
    number              {{int64}} NOT NULL,  -- fiscal_document_number
    session_id          TEXT      NOT NULL,  -- the receipt's id: a repeat gets this document
    operation           TEXT      NOT NULL,  -- sell | sell_refund | buy | ... (fiscal.h)
    fn_number           TEXT      NOT NULL,
    registration_number TEXT      NOT NULL,
    shift_number        {{int64}} NOT NULL,
    receipt_number      {{int64}} NOT NULL,  -- fiscal_receipt_number, within the shift
    registered_at       {{int64}} NOT NULL,
    receipt_datetime    TEXT      NOT NULL,  -- dd.MM.yyyy HH:mm:ss, Moscow time
    fiscal_sign         {{int64}} NOT NULL,  -- fiscal_document_attribute, 0 .. 2^32 - 1
    total               TEXT      NOT NULL,  -- the payload's total as JSON text, as given
    PRIMARY KEY (group_id, number),
    UNIQUE (group_id, session_id)
);
