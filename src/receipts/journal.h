/*
 * journal.h — the offline journal of a register group (docs/receipts-journal.md).
 *
 * When a register group (a cash register, or an operator such as ATOL Online) cannot be
 * reached, the fiscal unit appends the receipts that the group's configuration allows offline to
 * the group's JOURNAL; the synchroniser registers them in journal order, each exactly once, when
 * the group is back. The journal is:
 *
 *   - strictly sequential: entries are numbered 1, 2, 3... per group without gaps, also with many
 *     nodes appending at once (PostgreSQL: a per-group advisory lock; SQLite: the single writer);
 *   - idempotent: one entry per (group, receipt id);
 *   - tamper-evident: each entry's hash covers its fields and the previous entry's hash (a chain),
 *     and a MAC under the group's own key (32 random bytes, sealed by the vault) covers the hash,
 *     so a changed, removed, inserted or reordered entry is found by ks_journal_verify, and by
 *     ks_journal_verify_file in an exported copy;
 *   - synced in order: the sync state (outcome, time) is kept apart from the chained entries, and
 *     only the head (the first unsynced entry) may be marked.
 *
 * No key ever reaches a log, an error, a list or an export. Tables: journal_migrations/, applied
 * by ks_journal_open. Thread-safe: a `struct ks_journal` holds no mutable state.
 */
#ifndef KS_RECEIPTS_JOURNAL_H
#define KS_RECEIPTS_JOURNAL_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "core/err.h"

struct ks_store;
struct ks_vault;
struct ks_log;
struct ks_sql_schema;
struct ks_journal;

/* --- bounds (units last) ---------------------------------------------------------------------- */

#define KS_JOURNAL_GROUP_BYTES_MAX 64          /* a group id: [A-Za-z0-9._-]{1,64} */
#define KS_JOURNAL_RECEIPT_ID_BYTES_MAX 64     /* a receipt id: [A-Za-z0-9._-]{1,64} */
#define KS_JOURNAL_ENTRY_BYTES_MAX (64 * 1024) /* one entry's canonical JSON */
#define KS_JOURNAL_LINE_BYTES_MAX (72 * 1024)  /* one line of an exported file */
#define KS_JOURNAL_ENTRIES_MAX 10000000LL      /* entries of one group's journal (and file) */
#define KS_JOURNAL_LIST_MAX 1000               /* entries one ks_journal_list returns */
#define KS_JOURNAL_HASH_BYTES 32               /* SHA-256 and HMAC-SHA256 */
#define KS_JOURNAL_KEY_BYTES 32                /* a group's journal key */
#define KS_JOURNAL_WHY_BYTES 256               /* room a verification reason needs */

/* The vault purpose a group's key is sealed under (the name is the group id). */
#define KS_JOURNAL_VAULT_PURPOSE "receipt-journal"
/* The first line of an exported file names this format. */
#define KS_JOURNAL_FILE_FORMAT "kassa.receipt-journal"
#define KS_JOURNAL_FILE_VERSION 1

/* The journal's own tables (src/receipts/journal_migrations/). */
extern const struct ks_sql_schema ks_receipts_journal_schema;

/* One entry, with its sync state. Owns `entry` (NULL in ks_journal_list's rows); release with
 * ks_journal_entry_release. */
struct ks_journal_entry {
    int64_t seq;
    char group[KS_JOURNAL_GROUP_BYTES_MAX + 1];
    char receipt_id[KS_JOURNAL_RECEIPT_ID_BYTES_MAX + 1];
    int64_t appended_at_ms;
    json_t *entry;                            /* owned; what the fiscal unit appended */
    char hash[2 * KS_JOURNAL_HASH_BYTES + 1]; /* hex */
    int64_t synced_at_ms;                     /* 0 while unsynced */
    char outcome[8];                          /* "" while unsynced, "done" or "fail" */
};

/* Frees what `e` owns and clears it. NULL is fine. */
void ks_journal_entry_release(struct ks_journal_entry *e);

/* An entry as an admin page shows it: {"seq", "receiptID", "appendedAt", "hash"} with
 * "syncedAt" and "outcome" once synced and "entry" when `e` has it; times in RFC 3339 UTC. A new
 * reference (the caller owns it), NULL when out of memory. */
json_t *ks_journal_entry_json(const struct ks_journal_entry *e);

/* Opens the journal on `store` (borrowed), brings its tables up to date (ks_sql_migrate with
 * ks_receipts_journal_schema) and keeps `vault` (borrowed: it seals the groups' keys) and `log`
 * (borrowed, may be NULL). All three must outlive the journal. On failure `why` says what failed
 * and `*out` is NULL. */
KS_MUST_USE int ks_journal_open(struct ks_store *store, struct ks_vault *vault, struct ks_log *log,
                                struct ks_journal **out, char *why, size_t whylen);
/* Frees the journal. NULL is fine. */
void ks_journal_close(struct ks_journal *j);

/* Appends `entry` (a JSON object, borrowed; stored in canonical form, at most
 * KS_JOURNAL_ENTRY_BYTES_MAX) for `receipt_id` to `group`'s journal at `now_ms`, and gives its
 * number in `*seq`. The group's key is made on its first append. Idempotent by (group, receipt
 * id): appending a receipt that is already in the journal changes nothing and gives its seq
 * (the first entry stays, even if `entry` differs). KS_ERR_INVALID for a bad group, receipt id
 * or entry; KS_ERR_LIMIT past KS_JOURNAL_ENTRY_BYTES_MAX or KS_JOURNAL_ENTRIES_MAX; KS_ERR_RETRY
 * when the store asks for a retry. */
KS_MUST_USE int ks_journal_append(struct ks_journal *j, const char *group, const char *receipt_id,
                                  const json_t *entry, int64_t now_ms, int64_t *seq);

/* The head of `group`: its first unsynced entry, in seq order, into `*out` (release it).
 * KS_ERR_NOT_FOUND when every entry is synced (or the group has none). */
KS_MUST_USE int ks_journal_head(struct ks_journal *j, const char *group,
                                struct ks_journal_entry *out);

/* Records the sync of entry `seq` of `group` with `outcome` "done" (registered) or "fail"
 * (refused for good) at `now_ms`. Only the head may be marked: KS_ERR_CONFLICT for another
 * unsynced entry, or for a synced one with another outcome; marking a synced entry again with
 * its outcome is KS_OK and changes nothing. KS_ERR_NOT_FOUND for no such entry; KS_ERR_INVALID
 * for another outcome. */
KS_MUST_USE int ks_journal_mark_synced(struct ks_journal *j, const char *group, int64_t seq,
                                       const char *outcome, int64_t now_ms);

/* How many entries of `group` are unsynced, and when the oldest of them was appended (0 when
 * none). */
KS_MUST_USE int ks_journal_pending(struct ks_journal *j, const char *group, int64_t *count,
                                   int64_t *oldest_appended_ms);

/* The groups that have unsynced entries, in byte order of their ids, into `groups[0..*n)`.
 * When there are more than `cap`, the first `cap` are given and KS_ERR_LIMIT is returned. */
KS_MUST_USE int ks_journal_groups_pending(struct ks_journal *j, char groups[][65], size_t cap,
                                          size_t *n);

/* Up to `limit` (<= KS_JOURNAL_LIST_MAX, and the room in `out`) entries of `group` with seq >
 * `after_seq`, in seq order, into `out[0..*n)`, with their sync state and without their JSON
 * (`entry` NULL): a page for operators. Release each row. */
KS_MUST_USE int ks_journal_list(struct ks_journal *j, const char *group, int64_t after_seq,
                                size_t limit, struct ks_journal_entry *out, size_t *n);

/* --- verification ----------------------------------------------------------------------------- */

/* Checks `group`'s stored journal: every entry numbered in order from 1 without gaps, each
 * entry's prev_hash the previous entry's hash, each hash recomputed from the entry's fields and
 * each MAC from the group's key, and no sync state for an entry that is not there.
 * `*entries` counts the entries checked. KS_OK when intact (`*bad_seq` 0); KS_ERR_INVALID when
 * not, with `*bad_seq` the first bad entry's number and `why` "entry N: reason" (room:
 * KS_JOURNAL_WHY_BYTES); KS_ERR_NOT_FOUND when the group has no journal; another code when the
 * check could not run. */
KS_MUST_USE int ks_journal_verify(struct ks_journal *j, const char *group, int64_t *entries,
                                  int64_t *bad_seq, char *why, size_t whylen);

/* Writes `group`'s journal to `out` as JSON lines (docs/receipts-journal.md): a header line
 * (format, version, group, lastSeq, lastHash, exportedAt, its own MAC), then one line per entry,
 * in seq order, with every chained field (seq, group, receiptID, appendedAt, entry, prevHash,
 * hash, mac; hashes in hex). One consistent snapshot. KS_ERR_NOT_FOUND when the group has no
 * journal; KS_ERR_IO when writing fails. */
KS_MUST_USE int ks_journal_export(struct ks_journal *j, const char *group, FILE *out);

/* Checks an exported file read from `in`, with the key of the group its header names (copied
 * into `group`): the header's MAC, then every entry as ks_journal_verify does, then that the
 * file ends at the header's lastSeq and lastHash. Lines are at most KS_JOURNAL_LINE_BYTES_MAX
 * bytes, entries at most KS_JOURNAL_ENTRIES_MAX. Returns like ks_journal_verify, naming the
 * FIRST bad entry: a changed byte (hash or MAC mismatch), a removed entry (missing), an inserted
 * one, two swapped (out of order), a broken chain (prev_hash); "header: ..." with `*bad_seq` 0
 * for a bad header. KS_ERR_NOT_FOUND when this store has no key for the header's group. */
KS_MUST_USE int ks_journal_verify_file(struct ks_journal *j, FILE *in,
                                       char group[KS_JOURNAL_GROUP_BYTES_MAX + 1], int64_t *entries,
                                       int64_t *bad_seq, char *why, size_t whylen);

/* The chained hash of an entry (docs/receipts-journal.md, "Hash"): SHA-256 over the
 * length-prefixed encoding of the fields, `entry_json` being the entry's canonical JSON and
 * `prev_hash` the previous entry's hash (zeros for entry 1). Pure; for tests and tools.
 * KS_ERR_NOMEM when OpenSSL cannot allocate its context. */
KS_MUST_USE int ks_journal_entry_hash(const char *group, int64_t seq, const char *receipt_id,
                                      int64_t appended_at_ms, const char *entry_json,
                                      const unsigned char prev_hash[KS_JOURNAL_HASH_BYTES],
                                      unsigned char out[KS_JOURNAL_HASH_BYTES]);

/* --- command line ----------------------------------------------------------------------------- */

/* `kassa receipts journal ...`: `argv` starts at "journal". Usage: KS_JOURNAL_CLI_USAGE.
 * Returns 0 when the journal is valid (or exported), 1 naming the first bad entry or on a
 * failure, 2 on bad usage. */
int ks_journal_cli(int argc, char **argv);

/* Usage lines for `kassa help`, in the form of struct ks_command's usage. */
#define KS_JOURNAL_CLI_USAGE                                                                       \
    "  receipts journal verify --group G\n"                                                        \
    "                   check register group G's stored offline journal; exit 1 naming the\n"      \
    "                   first bad entry\n"                                                         \
    "  receipts journal verify --file F\n"                                                         \
    "                   check an exported journal file (- for standard input)\n"                   \
    "  receipts journal export --group G [--out F]\n"                                              \
    "                   write group G's journal as JSON lines to F (default standard output)\n"

#endif
