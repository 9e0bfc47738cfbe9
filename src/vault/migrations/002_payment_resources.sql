-- 002_payment_resources: a tokenized card is a disposable payment resource (docs/vault.md,
-- docs/payments.md).
-- replaces engine migration 005
-- Each card is bound to the invoice whose access token made it and has a lifetime; the invoice
-- machine records the resource (by resource_id, never the token), spends it with one payment
-- and asks the vault to delete the card once nothing needs it.
--   resource_id     the resource's id in the invoice machine ("{invoice}.{n}"); NULL for cards
--                   stored before this migration or tokenized without a binding
--   invoice_id      the invoice it may pay; NULL when unbound
--   valid_until     ms since the Unix epoch; 0 = no lifetime (unbound)
--   claimed         1 once a payment request has claimed the card: the sweeper then leaves it
--                   to the invoice machine, which deletes it when its payment no longer needs
--                   it. Rows from before this migration count as claimed (never swept).
ALTER TABLE vault_cards ADD COLUMN resource_id TEXT;
ALTER TABLE vault_cards ADD COLUMN invoice_id TEXT;
ALTER TABLE vault_cards ADD COLUMN valid_until {{int64}} NOT NULL DEFAULT 0;
ALTER TABLE vault_cards ADD COLUMN claimed INTEGER NOT NULL DEFAULT 1;
CREATE UNIQUE INDEX vault_cards_resource ON vault_cards (resource_id)
    WHERE resource_id IS NOT NULL;
CREATE INDEX vault_cards_unclaimed ON vault_cards (valid_until)
    WHERE claimed = 0 AND valid_until > 0;
