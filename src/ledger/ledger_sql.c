/*
 * ledger_sql.c — the ledger's SQL, once for both stores, on the SQL layer (store/sql.h). The
 * contract is in ledger_int.h, the tables in migrations/001_ledger.sql, the design in
 * docs/ledger.md.
 *
 * A write transaction (inside ks_sql_tx):
 *   1. takes a transaction-scoped advisory lock per plan it names (key: the plan id's FNV-1a
 *      hash, ascending), so two nodes never work on one plan at once (PostgreSQL; SQLite's
 *      single writer is already alone), and reads the plans, their batches and postings;
 *   2. reads the account rows it touches in id order, locking them ({{for_update}}: PostgreSQL),
 *      so balances change under a lock;
 *   3. writes every change as one batch per table (SQLite: a prepared statement per row on the
 *      writer; PostgreSQL: one statement over arrays).
 * Every transaction takes its locks in that order (plan keys ascending, then account ids
 * ascending, bytewise as in C), so transactions on shared accounts wait for each other but
 * cannot deadlock. Per-key reads are index lookups whatever the planner's statistics say (see
 * ks_sql_each_key). A constraint violation (two nodes creating one account) or a
 * deadlock/serialisation failure is reported as KS_ERR_RETRY: nothing was written.
 */
#include "ledger/ledger_int.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "store/sql.h"

#define LEDGER_LOCK_SPACE 1279607879 /* "LEDG": the advisory lock space of ledger plans */

/* The per-plan bounds, written into the statements. */
#define LX_BATCHES_SQL "64"
#define LX_POSTINGS_SQL "4096"
_Static_assert(KS_LEDGER_PLAN_BATCHES_MAX == 64, "keep LX_BATCHES_SQL in step");
_Static_assert(KS_LEDGER_COMMIT_POSTINGS_MAX == 4096, "keep LX_POSTINGS_SQL in step");

/* A conflict is another node's concurrent insert: worth a rerun, like a deadlock. */
static int retryable(int rc)
{
    return rc == KS_ERR_CONFLICT ? KS_ERR_RETRY : rc;
}

/* --- the write transaction ------------------------------------------------------------------- */

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

struct load {
    struct lx_tx *tx;
    const char **ids;
};

static int plan_row(void *ctx, size_t k, struct ks_sql_stmt *row)
{
    struct load *ld = ctx;
    return lx_plan_loaded(ld->tx, ld->ids[k], (int)ks_sql_col_i64(row, 0), ks_sql_col_i64(row, 1));
}

static int batch_row(void *ctx, size_t k, struct ks_sql_stmt *row)
{
    struct load *ld = ctx;
    return lx_batch_loaded(ld->tx, ld->ids[k], ks_sql_col_i64(row, 0), ks_sql_col_str(row, 1),
                           ks_sql_col_str(row, 2), ks_sql_col_i64(row, 3), ks_sql_col_i64(row, 4));
}

static int posting_loaded_row(void *ctx, size_t k, struct ks_sql_stmt *row)
{
    struct load *ld = ctx;
    return lx_posting_loaded(ld->tx, ld->ids[k], ks_sql_col_str(row, 0), ks_sql_col_str(row, 1),
                             ks_sql_col_i64(row, 2));
}

static int account_loaded_row(void *ctx, size_t k, struct ks_sql_stmt *row)
{
    struct load *ld = ctx;
    return lx_account_loaded(ld->tx, ld->ids[k], ks_sql_col_str(row, 0), ks_sql_col_bool(row, 1),
                             ks_sql_col_i64(row, 2), ks_sql_col_i64(row, 3), ks_sql_col_i64(row, 4),
                             ks_sql_col_i64(row, 5));
}

int lx_sql_load_plans(struct ks_sql *db, struct lx_tx *tx)
{
    if (tx->plans_n == 0)
        return KS_OK;
    int32_t *keys = malloc(tx->plans_n * sizeof(*keys));
    const char **ids = malloc(tx->plans_n * sizeof(*ids));
    int rc = keys && ids ? KS_OK : KS_ERR_NOMEM;
    size_t kn = 0;
    for (size_t i = 0; rc == KS_OK && i < tx->plans_n; i++) {
        keys[i] = ks_sql_lock_key(tx->plans[i].id);
        ids[i] = tx->plans[i].id;
    }
    if (rc == KS_OK) {
        qsort(keys, tx->plans_n, sizeof(*keys), cmp_i32);
        for (size_t i = 0; i < tx->plans_n; i++)
            if (i == 0 || keys[i] != keys[kn - 1])
                keys[kn++] = keys[i];
        rc = ks_sql_lock(db, LEDGER_LOCK_SPACE, keys, kn);
    }
    struct load ld = {.tx = tx, .ids = ids};
    if (rc == KS_OK)
        rc = ks_sql_each_key(db, "SELECT status, created_at FROM ledger_plans WHERE id = ?1", ids,
                             tx->plans_n, plan_row, &ld);
    if (rc == KS_OK)
        rc = ks_sql_each_key(db,
                             "SELECT seq, batch_id, fingerprint, postings_n, created_at"
                             " FROM ledger_batches WHERE plan_id = ?1 ORDER BY seq"
                             " LIMIT " LX_BATCHES_SQL,
                             ids, tx->plans_n, batch_row, &ld);
    if (rc == KS_OK)
        rc = ks_sql_each_key(db,
                             "SELECT from_account, to_account, amount FROM ledger_postings"
                             " WHERE plan_id = ?1 LIMIT " LX_POSTINGS_SQL,
                             ids, tx->plans_n, posting_loaded_row, &ld);
    free(keys);
    free(ids);
    return retryable(rc);
}

int lx_sql_load_accounts(struct ks_sql *db, struct lx_tx *tx)
{
    if (tx->accounts_n == 0)
        return KS_OK;
    const char **ids = malloc(tx->accounts_n * sizeof(*ids));
    if (!ids)
        return KS_ERR_NOMEM;
    for (size_t i = 0; i < tx->accounts_n; i++)
        ids[i] = tx->accounts[i].id;
    /* tx->accounts is sorted by id: the rows are locked in that order. */
    struct load ld = {.tx = tx, .ids = ids};
    int rc = ks_sql_each_key(db,
                             "SELECT currency, may_go_negative, own, held_debit, held_credit,"
                             " created_at FROM ledger_accounts WHERE id = ?1{{for_update}}",
                             ids, tx->accounts_n, account_loaded_row, &ld);
    free(ids);
    return retryable(rc);
}

static int flush_accounts(struct ks_sql *db, struct lx_tx *tx)
{
    struct ks_sql_stmt *ins = NULL, *upd = NULL;
    int rc = ks_sql_batch(db,
                          "INSERT INTO ledger_accounts (id, currency, may_go_negative, own,"
                          " held_debit, held_credit, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
                          &ins);
    if (rc == KS_OK)
        rc = ks_sql_batch(db,
                          "UPDATE ledger_accounts SET own = ?2, held_debit = ?3,"
                          " held_credit = ?4, updated_at = ?5 WHERE id = ?1",
                          &upd);
    int64_t updates = 0;
    for (size_t i = 0; rc == KS_OK && i < tx->accounts_n; i++) {
        const struct lx_account *a = &tx->accounts[i];
        if (!a->exists || (!a->is_new && !a->dirty))
            continue;
        if (a->is_new) {
            ks_sql_bind_text(ins, 1, a->id);
            ks_sql_bind_text(ins, 2, a->currency);
            ks_sql_bind_bool(ins, 3, a->may_go_negative);
            ks_sql_bind_i64(ins, 4, a->own);
            ks_sql_bind_i64(ins, 5, a->held_debit);
            ks_sql_bind_i64(ins, 6, a->held_credit);
            ks_sql_bind_i64(ins, 7, tx->now_ms);
            rc = ks_sql_batch_add(ins);
        } else {
            ks_sql_bind_text(upd, 1, a->id);
            ks_sql_bind_i64(upd, 2, a->own);
            ks_sql_bind_i64(upd, 3, a->held_debit);
            ks_sql_bind_i64(upd, 4, a->held_credit);
            ks_sql_bind_i64(upd, 5, tx->now_ms);
            rc = ks_sql_batch_add(upd);
            updates++;
        }
    }
    if (rc == KS_OK)
        rc = ks_sql_batch_run(ins);
    if (rc == KS_OK && (rc = ks_sql_batch_run(upd)) == KS_OK && ks_sql_changes(upd) != updates)
        rc = KS_ERR_IO; /* a locked account row went missing */
    return rc;
}

static int flush_plans(struct ks_sql *db, struct lx_tx *tx)
{
    struct ks_sql_stmt *pl = NULL, *bt = NULL, *ps = NULL;
    int rc = ks_sql_batch(db,
                          "INSERT INTO ledger_plans (id, status, batches_n, created_at, updated_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET"
                          " status = excluded.status, batches_n = excluded.batches_n,"
                          " updated_at = excluded.updated_at",
                          &pl);
    if (rc == KS_OK)
        rc = ks_sql_batch(db,
                          "INSERT INTO ledger_batches (plan_id, seq, batch_id, fingerprint,"
                          " postings_n, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                          &bt);
    if (rc == KS_OK)
        rc = ks_sql_batch(db,
                          "INSERT INTO ledger_postings (plan_id, batch_seq, idx, from_account,"
                          " to_account, amount, currency, created_at)"
                          " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                          &ps);
    for (size_t i = 0; rc == KS_OK && i < tx->plans_n; i++) {
        const struct lx_plan *p = &tx->plans[i];
        if (!p->dirty || p->status == KS_LEDGER_PLAN_NONE)
            continue;
        ks_sql_bind_text(pl, 1, p->id);
        ks_sql_bind_i64(pl, 2, (int64_t)p->status);
        ks_sql_bind_i64(pl, 3, (int64_t)p->batches_n);
        ks_sql_bind_i64(pl, 4, p->created_at_ms);
        ks_sql_bind_i64(pl, 5, tx->now_ms);
        rc = ks_sql_batch_add(pl);
        for (size_t j = 0; rc == KS_OK && j < p->batches_n; j++) {
            const struct lx_batch *b = &p->batches[j];
            if (!b->is_new)
                continue;
            ks_sql_bind_text(bt, 1, p->id);
            ks_sql_bind_i64(bt, 2, b->seq);
            ks_sql_bind_text(bt, 3, b->id);
            ks_sql_bind_text(bt, 4, b->fingerprint);
            ks_sql_bind_i64(bt, 5, b->postings_n);
            ks_sql_bind_i64(bt, 6, b->created_at_ms);
            rc = ks_sql_batch_add(bt);
            for (int64_t k = 0; rc == KS_OK && k < b->postings_n; k++) {
                const struct ks_ledger_posting *x = &b->postings[k];
                ks_sql_bind_text(ps, 1, p->id);
                ks_sql_bind_i64(ps, 2, b->seq);
                ks_sql_bind_i64(ps, 3, k);
                ks_sql_bind_text(ps, 4, x->from);
                ks_sql_bind_text(ps, 5, x->to);
                ks_sql_bind_i64(ps, 6, x->amount);
                ks_sql_bind_text(ps, 7, x->currency);
                ks_sql_bind_i64(ps, 8, b->created_at_ms);
                rc = ks_sql_batch_add(ps);
            }
        }
    }
    if (rc == KS_OK)
        rc = ks_sql_batch_run(pl);
    if (rc == KS_OK)
        rc = ks_sql_batch_run(bt);
    if (rc == KS_OK)
        rc = ks_sql_batch_run(ps);
    return rc;
}

int lx_sql_flush(struct ks_sql *db, struct lx_tx *tx)
{
    int rc = flush_accounts(db, tx);
    if (rc == KS_OK)
        rc = flush_plans(db, tx);
    return retryable(rc);
}

/* --- reads ----------------------------------------------------------------------------------- */

#define ACCOUNT_COLS                                                                               \
    "id, currency, may_go_negative, own, held_debit, held_credit, created_at, updated_at"

static void account_row(struct ks_sql_stmt *q, void *elem)
{
    struct ks_ledger_account *a = elem;
    memset(a, 0, sizeof(*a));
    lx_copy(a->id, sizeof(a->id), ks_sql_col_str(q, 0));
    lx_copy(a->currency, sizeof(a->currency), ks_sql_col_str(q, 1));
    a->may_go_negative = ks_sql_col_bool(q, 2);
    a->own = ks_sql_col_i64(q, 3);
    a->held_debit = ks_sql_col_i64(q, 4);
    a->held_credit = ks_sql_col_i64(q, 5);
    a->created_at_ms = ks_sql_col_i64(q, 6);
    a->updated_at_ms = ks_sql_col_i64(q, 7);
}

/* Steps `q` into up to `limit` elements of `size` bytes at `out` (`*n` counts them), each read
 * by `read`; then resets it. */
static int read_rows(struct ks_sql_stmt *q, void *out, size_t size, size_t *n, size_t limit,
                     void (*read)(struct ks_sql_stmt *q, void *elem))
{
    int step = KS_OK;
    while (*n < limit && (step = ks_sql_step(q)) == KS_SQL_ROW)
        read(q, (char *)out + size * (*n)++);
    int done = ks_sql_done(q);
    return step < 0 ? step : done;
}

int lx_sql_account_get(struct ks_sql *db, const char *id, struct ks_ledger_account *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, id);
    size_t n = 0;
    rc = read_rows(q, out, sizeof(*out), &n, 1, account_row);
    return rc == KS_OK && n == 0 ? KS_ERR_NOT_FOUND : rc;
}

int lx_sql_accounts_list(struct ks_sql *db, const char *lo, const char *hi, const char *after,
                         size_t limit, struct ks_ledger_account *out, size_t *n)
{
    struct ks_sql_stmt *q = NULL;
    *n = 0;
    int rc = ks_sql_prepare(db,
                            "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id >= ?1 AND"
                            " id < ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, lo);
    ks_sql_bind_text(q, 2, hi);
    ks_sql_bind_text(q, 3, after);
    ks_sql_bind_i64(q, 4, (int64_t)limit);
    rc = read_rows(q, out, sizeof(*out), n, limit, account_row);
    return rc;
}

#define POSTING_COLS                                                                               \
    "p.id, p.plan_id, b.batch_id, p.batch_seq, p.idx, p.from_account, p.to_account, p.amount,"     \
    " p.currency, p.created_at, pl.status"
#define POSTING_FROM                                                                               \
    " ledger_postings p JOIN ledger_batches b ON b.plan_id = p.plan_id AND b.seq = p.batch_seq"    \
    " JOIN ledger_plans pl ON pl.id = p.plan_id"

static void posting_row(struct ks_sql_stmt *q, void *elem)
{
    struct ks_ledger_posting_row *r = elem;
    memset(r, 0, sizeof(*r));
    r->id = ks_sql_col_i64(q, 0);
    lx_copy(r->plan, sizeof(r->plan), ks_sql_col_str(q, 1));
    lx_copy(r->batch, sizeof(r->batch), ks_sql_col_str(q, 2));
    r->batch_seq = ks_sql_col_i64(q, 3);
    r->index = ks_sql_col_i64(q, 4);
    lx_copy(r->from, sizeof(r->from), ks_sql_col_str(q, 5));
    lx_copy(r->to, sizeof(r->to), ks_sql_col_str(q, 6));
    r->amount = ks_sql_col_i64(q, 7);
    lx_copy(r->currency, sizeof(r->currency), ks_sql_col_str(q, 8));
    r->created_at_ms = ks_sql_col_i64(q, 9);
    r->plan_status = (enum ks_ledger_plan_status)ks_sql_col_i64(q, 10);
}

int lx_sql_postings_read(struct ks_sql *db, const char *account, int64_t after, size_t limit,
                         struct ks_ledger_posting_row *out, size_t *n)
{
    /* Two ordered index range scans (debits, credits), each cut at `limit`, then merged: a page
     * costs O(limit) whatever the account's history. */
    struct ks_sql_stmt *q = NULL;
    *n = 0;
    int rc = ks_sql_prepare(db,
                            "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.id IN ("
                            "SELECT id FROM (SELECT id FROM ledger_postings WHERE"
                            " from_account = ?1 AND id > ?2 ORDER BY id LIMIT ?3) AS d UNION ALL"
                            " SELECT id FROM (SELECT id FROM ledger_postings WHERE"
                            " to_account = ?1 AND id > ?2 ORDER BY id LIMIT ?3) AS c)"
                            " ORDER BY p.id LIMIT ?3",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, account);
    ks_sql_bind_i64(q, 2, after);
    ks_sql_bind_i64(q, 3, (int64_t)limit);
    rc = read_rows(q, out, sizeof(*out), n, limit, posting_row);
    return rc;
}

static void batch_view_row(struct ks_sql_stmt *q, void *elem)
{
    struct ks_ledger_batch_row *b = elem;
    lx_copy(b->id, sizeof(b->id), ks_sql_col_str(q, 0));
    b->seq = ks_sql_col_i64(q, 1);
    lx_copy(b->fingerprint, sizeof(b->fingerprint), ks_sql_col_str(q, 2));
    b->postings_n = ks_sql_col_i64(q, 3);
    b->created_at_ms = ks_sql_col_i64(q, 4);
}

int lx_sql_plan_get(struct ks_sql *db, const char *plan, struct ks_ledger_plan_view *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "SELECT id, status, created_at, updated_at FROM ledger_plans"
                            " WHERE id = ?1",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, plan);
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW) {
        lx_copy(out->id, sizeof(out->id), ks_sql_col_str(q, 0));
        out->status = (enum ks_ledger_plan_status)ks_sql_col_i64(q, 1);
        out->created_at_ms = ks_sql_col_i64(q, 2);
        out->updated_at_ms = ks_sql_col_i64(q, 3);
    }
    rc = ks_sql_done(q);
    if (step != KS_SQL_ROW)
        return step == KS_OK ? KS_ERR_NOT_FOUND : step;
    if (rc != KS_OK)
        return rc;

    out->batches = calloc(KS_LEDGER_PLAN_BATCHES_MAX, sizeof(*out->batches));
    if (!out->batches)
        return KS_ERR_NOMEM;
    if ((rc = ks_sql_prepare(db,
                             "SELECT batch_id, seq, fingerprint, postings_n, created_at FROM"
                             " ledger_batches WHERE plan_id = ?1 ORDER BY seq LIMIT ?2",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, plan);
    ks_sql_bind_i64(q, 2, KS_LEDGER_PLAN_BATCHES_MAX);
    rc = read_rows(q, out->batches, sizeof(*out->batches), &out->batches_n,
                   KS_LEDGER_PLAN_BATCHES_MAX, batch_view_row);
    if (rc != KS_OK)
        return rc;
    /* Room for the postings the batches say they have (a broken store may hold fewer). */
    int64_t want = 0;
    for (size_t i = 0; i < out->batches_n; i++)
        if (out->batches[i].postings_n > 0)
            want += out->batches[i].postings_n;
    size_t cap =
        want < KS_LEDGER_COMMIT_POSTINGS_MAX ? (size_t)want : KS_LEDGER_COMMIT_POSTINGS_MAX;
    out->postings = calloc(cap + 1, sizeof(*out->postings));
    if (!out->postings)
        return KS_ERR_NOMEM;
    if ((rc = ks_sql_prepare(db,
                             "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.plan_id = ?1"
                             " ORDER BY p.batch_seq, p.idx LIMIT ?2",
                             &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, plan);
    ks_sql_bind_i64(q, 2, (int64_t)cap);
    rc = read_rows(q, out->postings, sizeof(*out->postings), &out->postings_n, cap, posting_row);
    return rc;
}

/* --- verify ---------------------------------------------------------------------------------- */

#define ROWS_MAX_SQL " LIMIT 100"
_Static_assert(LX_VERIFY_ROWS_MAX == 100, "keep ROWS_MAX_SQL in step");

/* Sums are taken over NUMERIC (PostgreSQL: no bigint overflow; SQLite: integers stay integers
 * and an overflowing sum() fails the query). */
static const char *const verify_sql[LX_V_COUNT] = {
    [LX_V_COUNTS] =
        "SELECT (SELECT count(*) FROM ledger_accounts),"
        " (SELECT count(*) FROM ledger_plans WHERE status = 1),"
        " (SELECT count(*) FROM ledger_plans WHERE status = 2),"
        " (SELECT count(*) FROM ledger_plans WHERE status = 3),"
        " (SELECT count(*) FROM ledger_batches), (SELECT count(*) FROM ledger_postings)",
    [LX_V_CURRENCIES] = "SELECT currency, sum(own), sum(held_debit), sum(held_credit), count(*)"
                        " FROM ledger_accounts GROUP BY currency ORDER BY currency",
    [LX_V_POSTINGS] = "SELECT p.id, p.plan_id, p.from_account, p.to_account, p.amount, p.currency,"
                      " f.currency, t.currency FROM ledger_postings p"
                      " LEFT JOIN ledger_accounts f ON f.id = p.from_account"
                      " LEFT JOIN ledger_accounts t ON t.id = p.to_account"
                      " WHERE p.amount <= 0 OR p.from_account = p.to_account OR f.id IS NULL"
                      " OR t.id IS NULL OR f.currency <> p.currency OR t.currency <> p.currency"
                      " ORDER BY p.id" ROWS_MAX_SQL,
    [LX_V_PLANS] = "SELECT p.id, p.status, p.batches_n, count(b.seq), coalesce(max(b.seq), 0)"
                   " FROM ledger_plans p LEFT JOIN ledger_batches b ON b.plan_id = p.id"
                   " GROUP BY p.id, p.status, p.batches_n"
                   " HAVING p.status NOT IN (1, 2, 3) OR p.batches_n <> count(b.seq)"
                   " OR coalesce(max(b.seq), 0) <> count(b.seq) OR coalesce(min(b.seq), 1) <> 1"
                   " OR (count(b.seq) = 0 AND p.status <> 3) ORDER BY p.id" ROWS_MAX_SQL,
    [LX_V_ORPHAN_BATCHES] = "SELECT b.plan_id, b.seq FROM ledger_batches b"
                            " LEFT JOIN ledger_plans p ON p.id = b.plan_id WHERE p.id IS NULL"
                            " ORDER BY b.plan_id, b.seq" ROWS_MAX_SQL,
    [LX_V_BATCH_POSTINGS] =
        "SELECT b.plan_id, b.seq, b.postings_n, count(x.id) FROM ledger_batches b"
        " LEFT JOIN ledger_postings x ON x.plan_id = b.plan_id"
        " AND x.batch_seq = b.seq GROUP BY b.plan_id, b.seq, b.postings_n"
        " HAVING count(x.id) <> b.postings_n OR coalesce(min(x.idx), 0) <> 0"
        " OR coalesce(max(x.idx), -1) <> count(x.id) - 1"
        " ORDER BY b.plan_id, b.seq" ROWS_MAX_SQL,
    [LX_V_ORPHAN_POSTINGS] = "SELECT x.id, x.plan_id, x.batch_seq FROM ledger_postings x"
                             " LEFT JOIN ledger_batches b ON b.plan_id = x.plan_id"
                             " AND b.seq = x.batch_seq WHERE b.plan_id IS NULL"
                             " ORDER BY x.id" ROWS_MAX_SQL,
    [LX_V_BALANCES] = "WITH e AS (SELECT plan_id, to_account AS account_id,"
                      " CAST(amount AS NUMERIC) AS d FROM ledger_postings UNION ALL"
                      " SELECT plan_id, from_account, -CAST(amount AS NUMERIC)"
                      " FROM ledger_postings),"
                      " n AS (SELECT plan_id, account_id, sum(d) AS net FROM e"
                      " GROUP BY plan_id, account_id),"
                      " c AS (SELECT n.account_id,"
                      " sum(CASE WHEN pl.status = 2 THEN n.net ELSE 0 END) AS own,"
                      " sum(CASE WHEN pl.status = 1 AND n.net < 0 THEN -n.net ELSE 0 END) AS hd,"
                      " sum(CASE WHEN pl.status = 1 AND n.net > 0 THEN n.net ELSE 0 END) AS hc"
                      " FROM n JOIN ledger_plans pl ON pl.id = n.plan_id GROUP BY n.account_id)"
                      " SELECT a.id, a.own, a.held_debit, a.held_credit, coalesce(c.own, 0),"
                      " coalesce(c.hd, 0), coalesce(c.hc, 0) FROM ledger_accounts a"
                      " LEFT JOIN c ON c.account_id = a.id"
                      " WHERE a.own <> coalesce(c.own, 0) OR a.held_debit <> coalesce(c.hd, 0)"
                      " OR a.held_credit <> coalesce(c.hc, 0) ORDER BY a.id" ROWS_MAX_SQL,
    [LX_V_NEGATIVE] = "SELECT id, own, held_debit, held_credit FROM ledger_accounts"
                      " WHERE (NOT may_go_negative AND CAST(own AS NUMERIC) - held_debit < 0)"
                      " OR held_debit < 0 OR held_credit < 0 ORDER BY id" ROWS_MAX_SQL,
};

#define VERIFY_COLS_MAX 16

int lx_sql_query_text(struct ks_sql *db, enum lx_check check, lx_row_fn fn, void *ctx)
{
    assert(check < LX_V_COUNT);
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, verify_sql[check], &q);
    if (rc != KS_OK)
        return rc;
    const char *cols[VERIFY_COLS_MAX];
    int step = KS_OK;
    while (rc == KS_OK && (step = ks_sql_step(q)) == KS_SQL_ROW) {
        int ncols = ks_sql_col_count(q);
        if (ncols > VERIFY_COLS_MAX) {
            rc = KS_ERR_INTERNAL;
            break;
        }
        for (int i = 0; i < ncols; i++)
            cols[i] = ks_sql_col_text(q, i);
        rc = fn(ctx, cols, ncols);
    }
    if (rc == KS_OK && step < 0)
        rc = step;
    int done = ks_sql_done(q);
    return rc != KS_OK ? rc : done;
}
