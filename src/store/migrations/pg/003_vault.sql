-- 003_vault: the card vault (src/vault/, docs/vault.md) on PostgreSQL.
-- Card data is stored only sealed: nonce || AES-256-GCM ciphertext || tag. Times are
-- milliseconds since the Unix epoch.

-- Data keys, each sealed ("wrapped") under the master key whose fingerprint is master_id.
-- Exactly one is current: the partial unique index refuses a second, also across nodes.
CREATE TABLE vault_keys (
    key_id      text    PRIMARY KEY,
    master_id   text    NOT NULL,
    wrapped     bytea   NOT NULL,
    is_current  integer NOT NULL DEFAULT 0,
    created_at  bigint  NOT NULL
);
CREATE UNIQUE INDEX vault_keys_current ON vault_keys (is_current) WHERE is_current = 1;

-- A card: number, expiry and holder sealed together under key_id. bin (first six digits),
-- last4 and the payment system are what may be shown and searched, nothing more.
CREATE TABLE vault_cards (
    token           text    PRIMARY KEY,
    key_id          text    NOT NULL REFERENCES vault_keys (key_id),
    sealed          bytea   NOT NULL,
    bin             text    NOT NULL,
    last4           text    NOT NULL,
    payment_system  text    NOT NULL,
    created_at      bigint  NOT NULL
);
CREATE INDEX vault_cards_key ON vault_cards (key_id);

-- The CVV, apart: the row is deleted after authorization or when created_at is older than its
-- lifetime.
CREATE TABLE vault_cvv (
    token       text    PRIMARY KEY REFERENCES vault_cards (token),
    key_id      text    NOT NULL REFERENCES vault_keys (key_id),
    sealed      bytea   NOT NULL,
    created_at  bigint  NOT NULL
);
CREATE INDEX vault_cvv_created ON vault_cvv (created_at);
CREATE INDEX vault_cvv_key ON vault_cvv (key_id);
