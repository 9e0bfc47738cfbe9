-- 001_engine: machines, events, outbox, timers, tasks, idempotency (PostgreSQL).
-- Times are milliseconds since the Unix epoch. JSON is stored as text, exactly as written.
CREATE TABLE machines (
    ns            text    NOT NULL,
    id            text    NOT NULL,
    last_seq      bigint  NOT NULL,
    status        integer NOT NULL DEFAULT 0,   -- 0 working, 1 failed
    reason        text,
    failed_input  text,
    snapshot      text    NOT NULL,
    args_fp       text    NOT NULL,
    timer_at      bigint  NOT NULL DEFAULT 0,   -- 0 = no timer
    timer_id      bigint  NOT NULL DEFAULT 0,
    created_at    bigint  NOT NULL,
    updated_at    bigint  NOT NULL,
    PRIMARY KEY (ns, id)
);
CREATE INDEX machines_timer ON machines (timer_at) WHERE timer_at > 0 AND status = 0;
CREATE INDEX machines_failed ON machines (status, ns, id) WHERE status <> 0;

CREATE TABLE events (
    ns    text   NOT NULL,
    id    text   NOT NULL,
    seq   bigint NOT NULL,
    at    bigint NOT NULL,
    body  text   NOT NULL,
    PRIMARY KEY (ns, id, seq)
);

-- Outbox positions come from outbox_head, bumped under its row lock inside the committing
-- transaction: transactions that write the outbox are thereby ordered, and a reader that sees
-- position p has already seen every position below p. (A sequence would not give that.)
CREATE TABLE outbox_head (
    one  boolean PRIMARY KEY DEFAULT true CHECK (one),
    pos  bigint  NOT NULL
);
INSERT INTO outbox_head (one, pos) VALUES (true, 0);

CREATE TABLE outbox (
    pos  bigint PRIMARY KEY,
    ns   text   NOT NULL,
    id   text   NOT NULL,
    seq  bigint NOT NULL
);

CREATE TABLE cursors (
    consumer  text   PRIMARY KEY,
    pos       bigint NOT NULL
);

CREATE TABLE tasks (
    id            text    PRIMARY KEY,
    ns            text    NOT NULL,
    machine_id    text    NOT NULL,
    unit          text    NOT NULL,
    args          text    NOT NULL,
    status        integer NOT NULL DEFAULT 0,   -- 0 pending, 1 done, 2 dead
    attempts      integer NOT NULL DEFAULT 0,
    attempts_max  integer NOT NULL,
    next_at       bigint  NOT NULL,
    last_error    text,
    created_at    bigint  NOT NULL
);
CREATE INDEX tasks_ready ON tasks (unit, next_at) WHERE status = 0;

CREATE TABLE idempotency (
    scope        text   NOT NULL,
    key          text   NOT NULL,
    fingerprint  text   NOT NULL,
    outcome      text   NOT NULL,
    expires_at   bigint NOT NULL,
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_expiry ON idempotency (expires_at);
