-- 002_ledger: the ledger's accounts, posting plans, batches, postings (PostgreSQL). See
-- docs/ledger.md. Amounts are bigints in minor units; times are milliseconds since the Unix
-- epoch. Written only by src/ledger/ (through ks_store_with_tx), one transaction per group of
-- ledger ops; a transaction takes advisory locks on its plans, then the account rows FOR UPDATE
-- in id order. Ids sort bytewise (COLLATE "C"), as the ledger sorts them in C.

-- Balances are kept on the account row and changed in the same transaction as the postings
-- that explain them; `kassa ledger verify` recomputes them from the postings.
CREATE TABLE ledger_accounts (
    id               text COLLATE "C" PRIMARY KEY,
    currency         text    NOT NULL,             -- ISO 4217
    may_go_negative  boolean NOT NULL,             -- true: provider/system accounts
    own              bigint  NOT NULL,             -- committed balance
    held_debit       bigint  NOT NULL,             -- what held plans may take (>= 0)
    held_credit      bigint  NOT NULL,             -- what held plans may bring (>= 0)
    created_at       bigint  NOT NULL,
    updated_at       bigint  NOT NULL
);

CREATE TABLE ledger_plans (
    id          text COLLATE "C" PRIMARY KEY,
    status      integer NOT NULL,                  -- 1 held, 2 committed, 3 rolled back
    batches_n   integer NOT NULL,
    created_at  bigint  NOT NULL,
    updated_at  bigint  NOT NULL
);

CREATE TABLE ledger_batches (
    plan_id      text COLLATE "C" NOT NULL,
    seq          integer NOT NULL,                 -- 1, 2, ... within the plan
    batch_id     text COLLATE "C" NOT NULL,
    fingerprint  text    NOT NULL,                 -- SHA-256 of the postings: repeats compare it
    postings_n   integer NOT NULL,
    created_at   bigint  NOT NULL,
    PRIMARY KEY (plan_id, seq),
    UNIQUE (plan_id, batch_id)
);

-- For one account, id ascends in the order its postings committed: every transaction that
-- writes a posting holds both accounts' row locks until it commits, and draws ids after taking
-- them. Statements page on it.
CREATE TABLE ledger_postings (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    plan_id       text COLLATE "C" NOT NULL,
    batch_seq     integer NOT NULL,
    idx           integer NOT NULL,                -- 0, 1, ... within the batch
    from_account  text COLLATE "C" NOT NULL,
    to_account    text COLLATE "C" NOT NULL,
    amount        bigint  NOT NULL,
    currency      text    NOT NULL,
    created_at    bigint  NOT NULL
);
CREATE UNIQUE INDEX ledger_postings_plan ON ledger_postings (plan_id, batch_seq, idx);
CREATE INDEX ledger_postings_from ON ledger_postings (from_account, id);
CREATE INDEX ledger_postings_to ON ledger_postings (to_account, id);
