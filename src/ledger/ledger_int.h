/*
 * ledger_int.h — what the ledger's core (ledger.c, verify.c) shares with its SQL (ledger_sql.c,
 * one file for both stores on the SQL layer, store/sql.h); not for other modules.
 *
 * One durable transaction of the ledger works on an in-memory working set, `struct lx_tx`:
 *   1. the SQL locks and loads every plan the transaction's ops name (status, batches,
 *      postings, summed into per-account nets), then every account they touch (lx_*_loaded
 *      callbacks);
 *   2. the core applies the ops one by one to the working set (pure C, no I/O), keeping an undo
 *      journal so a failed op (or a failed atomic call) leaves the set as it was;
 *   3. the SQL writes what changed (flush): new accounts, balances, plans, batches, postings.
 * All three run inside one ks_sql_tx, so the transaction is all or nothing.
 */
#ifndef KS_LEDGER_LEDGER_INT_H
#define KS_LEDGER_LEDGER_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ledger/ledger.h"

/* An account of the working set. `id` points into the transaction's arena or an op. */
struct lx_account {
    const char *id;
    char currency[4];
    bool may_go_negative;
    bool exists; /* in the store, or created by an ensure of this transaction */
    bool is_new; /* created by this transaction: flush inserts it */
    bool dirty;  /* balances changed: flush updates it */
    int64_t own, held_debit, held_credit;
    int64_t created_at_ms;
    uint64_t stamp; /* last op that touched it (for listing touched accounts once) */
};

/* A batch of a plan. */
struct lx_batch {
    const char *id;
    int64_t seq;          /* 1, 2, ... within the plan */
    char fingerprint[65]; /* SHA-256 of the postings, hex */
    int64_t postings_n;
    bool is_new;                              /* flush inserts it and its postings */
    const struct ks_ledger_posting *postings; /* is_new: the op's postings */
    int64_t created_at_ms;
};

/* A plan's net amount on one account, over all its batches: what a commit adds to the account's
 * own balance and, while the plan is held, what counts in its held debit or credit. Not stored:
 * loading sums the plan's postings. */
struct lx_plan_account {
    size_t account;         /* index into lx_tx.accounts (after resolution) */
    const char *account_id; /* as loaded, until resolved */
    int64_t net;
};

struct lx_plan {
    const char *id;
    enum ks_ledger_plan_status status; /* NONE: not in the store (and not created yet) */
    bool dirty;                        /* flush upserts the plan row */
    int64_t created_at_ms;
    struct lx_batch *batches;
    size_t batches_n, batches_cap;
    struct lx_plan_account *accounts;
    size_t accounts_n, accounts_cap;
    size_t holds, hold_postings; /* what this transaction's ops may add */
};

struct lx_arena_block;
struct lx_journal_entry;

struct lx_tx {
    int64_t now_ms;
    struct lx_plan *plans; /* sorted by id (strcmp), distinct */
    size_t plans_n;
    struct lx_account *accounts; /* sorted by id (strcmp), distinct */
    size_t accounts_n;
    uint64_t stamp;
    /* arena for loaded strings */
    struct lx_arena_block *arena;
    size_t arena_bytes;
    /* undo journal */
    struct lx_journal_entry *journal;
    size_t journal_n, journal_cap;
    unsigned char *undo;
    size_t undo_n, undo_cap;
    int64_t postings_written; /* postings of the new batches */
};

/* Copies `s` into the transaction's arena; NULL when memory or KS_LEDGER_TX_BYTES_MAX ran out. */
const char *lx_strdup(struct lx_tx *tx, const char *s);

/* Loading callbacks for the SQL. Each returns KS_OK, KS_ERR_NOMEM, KS_ERR_LIMIT, or
 * KS_ERR_IO for a row that makes no sense (an unknown plan, a bad status, a bad currency). */
int lx_plan_loaded(struct lx_tx *tx, const char *plan, int status, int64_t created_at_ms);
int lx_batch_loaded(struct lx_tx *tx, const char *plan, int64_t seq, const char *batch,
                    const char *fingerprint, int64_t postings_n, int64_t created_at_ms);
int lx_posting_loaded(struct lx_tx *tx, const char *plan, const char *from, const char *to,
                      int64_t amount);
int lx_account_loaded(struct lx_tx *tx, const char *id, const char *currency, bool may_go_negative,
                      int64_t own, int64_t held_debit, int64_t held_credit, int64_t created_at_ms);

/* Fills the derived balances of an account read from the store. */
void lx_account_derive(struct ks_ledger_account *a);


/* A callback over a result row of text columns (NULL for SQL NULL). Returns KS_OK to go on. */
typedef int (*lx_row_fn)(void *ctx, const char *const *cols, int ncols);

/* The verify checks, in the order they run (verify.c owns their meaning and messages). */
enum lx_check {
    LX_V_COUNTS,          /* one row: accounts, held, committed, rolled back, batches, postings */
    LX_V_CURRENCIES,      /* currency, sum(own), sum(held_debit), sum(held_credit), count */
    LX_V_POSTINGS,        /* bad postings: id, plan, from, to, amount, currency, from cur, to cur */
    LX_V_PLANS,           /* bad plans: id, status, batches_n, batches, max seq */
    LX_V_ORPHAN_BATCHES,  /* batches without plan: plan, seq */
    LX_V_BATCH_POSTINGS,  /* incomplete batches: plan, seq, postings_n, postings */
    LX_V_ORPHAN_POSTINGS, /* postings without batch: id, plan, seq */
    LX_V_BALANCES,        /* accounts whose balances differ from their postings: id, own,
                             held_debit, held_credit, and the three sums */
    LX_V_NEGATIVE,        /* accounts below zero: id, own, held_debit, held_credit */
    LX_V_COUNT
};

/* Rows one verify check reports at most (problems beyond are not counted). */
#define LX_VERIFY_ROWS_MAX 100

struct ks_sql;

/* The ledger's SQL (ledger_sql.c). Each runs on the connection of the call it is given; each
 * returns KS_OK, KS_ERR_NOT_FOUND where said, a loading callback's code, KS_ERR_RETRY for a
 * conflict or deadlock a rerun clears, or the SQL layer's error. */
/* In the write transaction: lock (advisory, PostgreSQL) and load every plan of tx->plans: its
 * row, batches and postings. */
int lx_sql_load_plans(struct ks_sql *db, struct lx_tx *tx);
/* In the write transaction: lock (PostgreSQL, in id order) and load every account of
 * tx->accounts. */
int lx_sql_load_accounts(struct ks_sql *db, struct lx_tx *tx);
/* In the write transaction: writes what the applied ops changed. */
int lx_sql_flush(struct ks_sql *db, struct lx_tx *tx);
/* Reads (ks_sql_read). NOT_FOUND when the account is absent. */
int lx_sql_account_get(struct ks_sql *db, const char *id, struct ks_ledger_account *out);
int lx_sql_accounts_list(struct ks_sql *db, const char *lo, const char *hi, const char *after,
                         size_t limit, struct ks_ledger_account *out, size_t *n);
int lx_sql_postings_read(struct ks_sql *db, const char *account, int64_t after, size_t limit,
                         struct ks_ledger_posting_row *out, size_t *n);
/* In one snapshot (ks_sql_read_snapshot): the plan, its batches and postings. NOT_FOUND. */
int lx_sql_plan_get(struct ks_sql *db, const char *plan, struct ks_ledger_plan_view *out);
/* In one snapshot: runs one verify check, calling `fn` per row. */
int lx_sql_query_text(struct ks_sql *db, enum lx_check check, lx_row_fn fn, void *ctx);

/* The ledger's store and log (for verify.c). */
struct ks_store *lx_store_of(struct ks_ledger *l);
struct ks_log *lx_log_of(struct ks_ledger *l); /* may be NULL */

/* Copies `src` into a fixed buffer of `cap` bytes, truncating safely (NULL gives ""). */
void lx_copy(char *dst, size_t cap, const char *src);

#endif
