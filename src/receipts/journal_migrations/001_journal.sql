-- 001_journal: the offline journals of register groups (docs/receipts-journal.md).
-- receipt_journal_keys: one row per group that has a journal.
--   group_id    the register group (configuration: registerGroups.<id>)
--   key_sealed  its journal key, 32 random bytes sealed by the vault (purpose "receipt-journal",
--               name = group_id); the MAC key of every entry
CREATE TABLE receipt_journal_keys (
    group_id TEXT{{collate_c}} PRIMARY KEY,
    key_sealed TEXT NOT NULL,
    created_at {{int64}} NOT NULL
);
-- receipt_journal: the chained entries, never updated.
--   seq         1, 2, 3... per group without gaps
--   entry       the entry's canonical JSON (sorted keys, compact)
--   prev_hash   the previous entry's hash (64 zeros for entry 1), hex
--   hash        SHA-256 over the encoding of all the fields above, hex
--   mac         HMAC-SHA256(the group's key, hash), hex
CREATE TABLE receipt_journal (
    group_id TEXT{{collate_c}} NOT NULL,
    seq {{int64}} NOT NULL,
    receipt_id TEXT NOT NULL,
    appended_at {{int64}} NOT NULL,
    entry TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL,
    mac TEXT NOT NULL,
    PRIMARY KEY (group_id, seq)
);
CREATE UNIQUE INDEX receipt_journal_receipt ON receipt_journal (group_id, receipt_id);
-- receipt_journal_sync: the sync state, apart from the chain: one row per synced entry, written
-- in seq order (only the head may be synced), so a group's synced entries are 1..max(seq).
--   outcome     done (registered) | fail (refused for good)
CREATE TABLE receipt_journal_sync (
    group_id TEXT{{collate_c}} NOT NULL,
    seq {{int64}} NOT NULL,
    outcome TEXT NOT NULL,
    synced_at {{int64}} NOT NULL,
    PRIMARY KEY (group_id, seq)
);
