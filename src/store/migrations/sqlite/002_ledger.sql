-- 002_ledger: the ledger's accounts, posting plans, batches, postings (SQLite). See docs/ledger.md.
-- Amounts are integers in minor units; times are milliseconds since the Unix epoch. Written only
-- by src/ledger/ (through ks_store_with_tx), one transaction per group of ledger ops.

-- Balances are kept on the account row and changed in the same transaction as the postings
-- that explain them; `kassa ledger verify` recomputes them from the postings.
CREATE TABLE ledger_accounts (
    id               TEXT    PRIMARY KEY,
    currency         TEXT    NOT NULL,             -- ISO 4217
    may_go_negative  INTEGER NOT NULL,             -- 1: provider/system accounts; 0: merchant
    own              INTEGER NOT NULL,             -- committed balance
    held_debit       INTEGER NOT NULL,             -- what held plans may take (>= 0)
    held_credit      INTEGER NOT NULL,             -- what held plans may bring (>= 0)
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE ledger_plans (
    id          TEXT    PRIMARY KEY,
    status      INTEGER NOT NULL,                  -- 1 held, 2 committed, 3 rolled back
    batches_n   INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
) WITHOUT ROWID;

CREATE TABLE ledger_batches (
    plan_id      TEXT    NOT NULL,
    seq          INTEGER NOT NULL,                 -- 1, 2, ... within the plan
    batch_id     TEXT    NOT NULL,
    fingerprint  TEXT    NOT NULL,                 -- SHA-256 of the postings: repeats compare it
    postings_n   INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    PRIMARY KEY (plan_id, seq),
    UNIQUE (plan_id, batch_id)
) WITHOUT ROWID;

-- id ascends in commit order (one writer), so statements page on it.
CREATE TABLE ledger_postings (
    id            INTEGER PRIMARY KEY,
    plan_id       TEXT    NOT NULL,
    batch_seq     INTEGER NOT NULL,
    idx           INTEGER NOT NULL,                -- 0, 1, ... within the batch
    from_account  TEXT    NOT NULL,
    to_account    TEXT    NOT NULL,
    amount        INTEGER NOT NULL,
    currency      TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);
CREATE UNIQUE INDEX ledger_postings_plan ON ledger_postings (plan_id, batch_seq, idx);
CREATE INDEX ledger_postings_from ON ledger_postings (from_account, id);
CREATE INDEX ledger_postings_to ON ledger_postings (to_account, id);
