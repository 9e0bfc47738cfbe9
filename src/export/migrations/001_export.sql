-- 001_export: completed operations recorded by the export relay, and the writer's cursor.
-- See docs/export.md. Written once for both stores; {{...}} are the SQL layer's dialect
-- fragments (src/store/sql.h). Amounts are integers in minor units; times are milliseconds since
-- the Unix epoch. Written only by src/export/.

-- One row per completed operation, inserted once (ON CONFLICT DO NOTHING: the relay delivers at
-- least once). window_ms picks the file window: the finish time, or the seal at recording time
-- when that is later (a window being written is sealed first, so nothing can enter it).
CREATE TABLE export_operations (
    op_id          TEXT{{collate_c}} PRIMARY KEY,
    window_ms      {{int64}} NOT NULL,
    recorded_ms    {{int64}} NOT NULL,
    type           TEXT NOT NULL,
    invoice_id     TEXT NOT NULL,
    payment_id     TEXT NOT NULL,
    refund_id      TEXT NOT NULL,
    shop_id        TEXT NOT NULL,
    created_ms     {{int64}} NOT NULL,
    finished_ms    {{int64}} NOT NULL,
    amount         {{int64}} NOT NULL,
    gross          {{int64}} NOT NULL,
    fee            {{int64}} NOT NULL,
    net            {{int64}} NOT NULL,
    currency       TEXT NOT NULL,
    provider       TEXT NOT NULL,
    terminal       TEXT NOT NULL,
    rrn            TEXT NOT NULL,
    approval_code  TEXT NOT NULL,
    card_mask      TEXT NOT NULL,
    error          TEXT NOT NULL
){{without_rowid}};
CREATE INDEX export_operations_window ON export_operations (window_ms, op_id);

-- The single row (id 1): sealed_ms, below which no operation may be recorded any more (raised
-- before a window is read); written_ms, the end of the last window the periodic writer wrote
-- (0: none yet); next_seq, the number of its next file set.
CREATE TABLE export_state (
    id          INTEGER PRIMARY KEY,
    sealed_ms   {{int64}} NOT NULL,
    written_ms  {{int64}} NOT NULL,
    next_seq    {{int64}} NOT NULL,
    updated_ms  {{int64}} NOT NULL
);
INSERT INTO export_state (id, sealed_ms, written_ms, next_seq, updated_ms) VALUES (1, 0, 0, 1, 0);
