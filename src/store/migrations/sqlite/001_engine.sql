-- 001_engine: machines, events, outbox, timers, tasks, idempotency (SQLite).
-- Times are milliseconds since the Unix epoch. JSON is stored as text, exactly as written.
CREATE TABLE machines (
    ns            TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    last_seq      INTEGER NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,   -- 0 working, 1 failed
    reason        TEXT,
    failed_input  TEXT,
    snapshot      TEXT    NOT NULL,
    args_fp       TEXT    NOT NULL,
    timer_at      INTEGER NOT NULL DEFAULT 0,   -- 0 = no timer
    timer_id      INTEGER NOT NULL DEFAULT 0,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    PRIMARY KEY (ns, id)
) WITHOUT ROWID;
CREATE INDEX machines_timer ON machines (timer_at) WHERE timer_at > 0 AND status = 0;
CREATE INDEX machines_failed ON machines (status, ns, id) WHERE status <> 0;

CREATE TABLE events (
    ns    TEXT    NOT NULL,
    id    TEXT    NOT NULL,
    seq   INTEGER NOT NULL,
    at    INTEGER NOT NULL,
    body  TEXT    NOT NULL,
    PRIMARY KEY (ns, id, seq)
) WITHOUT ROWID;

-- One global stream in commit order: SQLite has one writer, so AUTOINCREMENT is commit order.
CREATE TABLE outbox (
    pos  INTEGER PRIMARY KEY AUTOINCREMENT,
    ns   TEXT    NOT NULL,
    id   TEXT    NOT NULL,
    seq  INTEGER NOT NULL
);

CREATE TABLE cursors (
    consumer  TEXT    PRIMARY KEY,
    pos       INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE tasks (
    id            TEXT    PRIMARY KEY,
    ns            TEXT    NOT NULL,
    machine_id    TEXT    NOT NULL,
    unit          TEXT    NOT NULL,
    args          TEXT    NOT NULL,
    status        INTEGER NOT NULL DEFAULT 0,   -- 0 pending, 1 done, 2 dead
    attempts      INTEGER NOT NULL DEFAULT 0,
    attempts_max  INTEGER NOT NULL,
    next_at       INTEGER NOT NULL,
    last_error    TEXT,
    created_at    INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX tasks_ready ON tasks (unit, next_at) WHERE status = 0;

CREATE TABLE idempotency (
    scope        TEXT    NOT NULL,
    key          TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,
    outcome      TEXT    NOT NULL,
    expires_at   INTEGER NOT NULL,
    PRIMARY KEY (scope, key)
) WITHOUT ROWID;
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
