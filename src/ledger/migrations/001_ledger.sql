-- 001_ledger: the ledger's accounts, posting plans, batches, postings. See docs/ledger.md.
-- replaces engine migration 002
-- Written once for both stores; {{...}} are the SQL layer's dialect fragments (src/store/sql.h).
-- Amounts are integers in minor units; times are milliseconds since the Unix epoch. Written only
-- by src/ledger/ (through ks_sql_tx), one transaction per group of ledger ops. On PostgreSQL a
-- transaction takes advisory locks on its plans, then the account rows FOR UPDATE in id order;
-- ids sort bytewise there ({{collate_c}}: COLLATE "C"), as the ledger sorts them in C.

-- Balances are kept on the account row and changed in the same transaction as the postings
-- that explain them; `kassa ledger verify` recomputes them from the postings.
CREATE TABLE ledger_accounts (
    id               TEXT{{collate_c}} PRIMARY KEY,
    currency         TEXT    NOT NULL,             -- ISO 4217
    may_go_negative  {{bool}} NOT NULL,            -- true: provider/system accounts; false: merchant
    own              {{int64}} NOT NULL,           -- committed balance
    held_debit       {{int64}} NOT NULL,           -- what held plans may take (>= 0)
    held_credit      {{int64}} NOT NULL,           -- what held plans may bring (>= 0)
    created_at       {{int64}} NOT NULL,
    updated_at       {{int64}} NOT NULL
){{without_rowid}};

CREATE TABLE ledger_plans (
    id          TEXT{{collate_c}} PRIMARY KEY,
    status      INTEGER NOT NULL,                  -- 1 held, 2 committed, 3 rolled back
    batches_n   INTEGER NOT NULL,
    created_at  {{int64}} NOT NULL,
    updated_at  {{int64}} NOT NULL
){{without_rowid}};

CREATE TABLE ledger_batches (
    plan_id      TEXT{{collate_c}} NOT NULL,
    seq          INTEGER NOT NULL,                 -- 1, 2, ... within the plan
    batch_id     TEXT{{collate_c}} NOT NULL,
    fingerprint  TEXT    NOT NULL,                 -- SHA-256 of the postings: repeats compare it
    postings_n   INTEGER NOT NULL,
    created_at   {{int64}} NOT NULL,
    PRIMARY KEY (plan_id, seq),
    UNIQUE (plan_id, batch_id)
){{without_rowid}};

-- For one account, id ascends in the order its postings committed (SQLite: one writer;
-- PostgreSQL: every transaction that writes a posting holds both accounts' row locks until it
-- commits, and draws ids after taking them). Statements page on it.
CREATE TABLE ledger_postings (
    id            {{serial_pk}},
    plan_id       TEXT{{collate_c}} NOT NULL,
    batch_seq     INTEGER NOT NULL,
    idx           INTEGER NOT NULL,                -- 0, 1, ... within the batch
    from_account  TEXT{{collate_c}} NOT NULL,
    to_account    TEXT{{collate_c}} NOT NULL,
    amount        {{int64}} NOT NULL,
    currency      TEXT    NOT NULL,
    created_at    {{int64}} NOT NULL
);
CREATE UNIQUE INDEX ledger_postings_plan ON ledger_postings (plan_id, batch_seq, idx);
CREATE INDEX ledger_postings_from ON ledger_postings (from_account, id);
CREATE INDEX ledger_postings_to ON ledger_postings (to_account, id);
