/*
 * journal_int.h — what the offline journal's files share (journal.c: storage and sync state;
 * journal_verify.c: hashes, verification, export; journal_cli.c: the command line). Public
 * contract: journal.h; design note: docs/receipts-journal.md.
 */
#ifndef KS_RECEIPTS_JOURNAL_INT_H
#define KS_RECEIPTS_JOURNAL_INT_H

#include <stdbool.h>

#include "receipts/journal.h"

struct ks_journal {
    struct ks_store *store; /* borrowed */
    struct ks_vault *vault; /* borrowed */
    struct ks_log *log;     /* borrowed, may be NULL */
};

#define JR_HEX_BYTES (2 * KS_JOURNAL_HASH_BYTES) /* a hash or MAC in hex, without the NUL */
#define JR_PAGE_ENTRIES 256 /* entries one statement reads while verifying or exporting */

/* The columns of an entry row, in the order jr_row_read reads them. */
#define JR_COLUMNS "seq, group_id, receipt_id, appended_at, entry, prev_hash, hash, mac"

/* A stored entry as it is chained (text borrowed from the statement, or owned by a caller). */
struct jr_row {
    int64_t seq;
    const char *group, *receipt_id, *entry_json, *prev_hex, *hash_hex, *mac_hex;
    int64_t appended_at_ms;
};

struct ks_sql;

/* In a call of the SQL layer: the group's last entry, its seq (0 when none) and its hash as
 * stored (64 zeros when none; the caller checks its form). */
KS_MUST_USE int jr_last_entry(struct ks_sql *db, const char *group, int64_t *seq,
                              char hash_hex[JR_HEX_BYTES + 1]);

/* A group id or receipt id: [A-Za-z0-9._-]{1,64}. */
bool jr_id_valid(const char *s);

/* The group's journal key into `key` (the caller wipes it). With `create`, a group without one
 * gets a new random key first (sealed by the vault; another node's concurrent one wins). Without
 * it, KS_ERR_NOT_FOUND when the group has no key. KS_ERR_INTERNAL when the sealed key does not
 * open (logged without the value). */
KS_MUST_USE int jr_key(struct ks_journal *j, const char *group, bool create, int64_t now_ms,
                       unsigned char key[KS_JOURNAL_KEY_BYTES]);

/* HMAC-SHA256(key, hash): an entry's MAC. */
KS_MUST_USE int jr_entry_mac(const unsigned char key[KS_JOURNAL_KEY_BYTES],
                             const unsigned char hash[KS_JOURNAL_HASH_BYTES],
                             unsigned char out[KS_JOURNAL_HASH_BYTES]);

/* Reads JR_HEX_BYTES lowercase hex digits (and nothing more) into 32 bytes: false when `hex` is
 * anything else. */
bool jr_unhex(const char *hex, unsigned char out[KS_JOURNAL_HASH_BYTES]);

#endif
