-- 001_vault: the card vault (src/vault/, docs/vault.md).
-- replaces engine migration 003
-- Written once for both stores; {{...}} are the SQL layer's dialect fragments (src/store/sql.h).
-- Card data is stored only sealed: nonce || AES-256-GCM ciphertext || tag. Times are
-- milliseconds since the Unix epoch.

-- Data keys, each sealed ("wrapped") under the master key whose fingerprint is master_id.
-- Exactly one is current: the partial unique index refuses a second, also across nodes.
CREATE TABLE vault_keys (
    key_id      TEXT    PRIMARY KEY,
    master_id   TEXT    NOT NULL,
    wrapped     {{bytes}} NOT NULL,
    is_current  INTEGER NOT NULL DEFAULT 0,
    created_at  {{int64}} NOT NULL
){{without_rowid}};
CREATE UNIQUE INDEX vault_keys_current ON vault_keys (is_current) WHERE is_current = 1;

-- A card: number, expiry and holder sealed together under key_id. bin (first six digits),
-- last4 and the payment system are what may be shown and searched, nothing more.
CREATE TABLE vault_cards (
    token           TEXT    PRIMARY KEY,
    key_id          TEXT    NOT NULL REFERENCES vault_keys (key_id),
    sealed          {{bytes}} NOT NULL,
    bin             TEXT    NOT NULL,
    last4           TEXT    NOT NULL,
    payment_system  TEXT    NOT NULL,
    created_at      {{int64}} NOT NULL
){{without_rowid}};
CREATE INDEX vault_cards_key ON vault_cards (key_id);

-- The CVV, apart: the row is deleted after authorization or when created_at is older than its
-- lifetime.
CREATE TABLE vault_cvv (
    token       TEXT    PRIMARY KEY REFERENCES vault_cards (token),
    key_id      TEXT    NOT NULL REFERENCES vault_keys (key_id),
    sealed      {{bytes}} NOT NULL,
    created_at  {{int64}} NOT NULL
){{without_rowid}};
CREATE INDEX vault_cvv_created ON vault_cvv (created_at);
CREATE INDEX vault_cvv_key ON vault_cvv (key_id);
