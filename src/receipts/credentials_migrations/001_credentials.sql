-- 001_credentials: secrets of cash-register groups, by name (docs/receipts-atol.md).
-- fiscal_credentials: one row per name a group's credentialsRef may give.
--   name        the reference: [A-Za-z0-9._-]{1,64}
--   sealed      the secret sealed by the vault (ks_vault_secret_seal, purpose
--               "fiscal-credentials", name = this name): cipher text only, never the secret
--   created_at, updated_at   ms since the epoch
CREATE TABLE fiscal_credentials (
    name TEXT PRIMARY KEY,
    sealed TEXT NOT NULL,
    created_at {{int64}} NOT NULL,
    updated_at {{int64}} NOT NULL
);
