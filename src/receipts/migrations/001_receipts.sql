-- 001_receipts: the receipts module's tables (docs/receipts.md).
--   receipts_index        the receipts as the list API finds them, fed by the "receipts" relay
--                         from the receipt machines (created_at: ms since the Unix epoch)
--   receipts_atol_logins  logins for ATOL Online v5's token flow (/atol/v5/getToken): each
--                         bound to a party (and optionally its shops), the password kept only as
--                         a salted PBKDF2-HMAC-SHA256 hash
--   receipts_atol_tokens  the tokens getToken handed out, kept only as their SHA-256
CREATE TABLE receipts_index (
    id TEXT PRIMARY KEY,
    party_id TEXT NOT NULL,
    shop_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    operation TEXT NOT NULL,
    status TEXT NOT NULL,
    external_id TEXT,
    created_at {{int64}} NOT NULL
);
CREATE INDEX receipts_index_party ON receipts_index (party_id, created_at, id);
CREATE INDEX receipts_index_external ON receipts_index (party_id, external_id);
CREATE TABLE receipts_atol_logins (
    login TEXT PRIMARY KEY,
    party_id TEXT NOT NULL,
    shops TEXT NOT NULL,
    salt TEXT NOT NULL,
    pass_hash TEXT NOT NULL,
    created_at {{int64}} NOT NULL
);
CREATE TABLE receipts_atol_tokens (
    token_hash TEXT PRIMARY KEY,
    login TEXT NOT NULL,
    expires_at {{int64}} NOT NULL
);
CREATE INDEX receipts_atol_tokens_expiry ON receipts_atol_tokens (expires_at);
