/*
 * ledger_sqlite.c — the ledger's SQLite backend (see ledger_int.h for the contract, the schema
 * in store/migrations/sqlite/002_ledger.sql, the design in docs/ledger.md).
 *
 * Writes run on the store's single writer connection inside ks_store_with_tx, so the ledger and
 * the engine's committer never wait on each other's locks, and a ledger transaction needs no row
 * locks: nothing else writes while it runs. The write statements are prepared once per
 * transaction (a transaction carries up to a thousand ops) and finalised before it ends; reads
 * prepare their one statement on the read connection they are given.
 */
#include "ledger/ledger_int.h"

#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum sq_stmt {
    Q_PLAN,
    Q_BATCHES,
    Q_PLAN_POSTINGS,
    Q_ACCOUNT,
    Q_ACCOUNT_INSERT,
    Q_ACCOUNT_UPDATE,
    Q_PLAN_UPSERT,
    Q_BATCH_INSERT,
    Q_POSTING_INSERT,
    Q_COUNT
};

static const char *const sq_sql[Q_COUNT] = {
    [Q_PLAN] = "SELECT status, created_at FROM ledger_plans WHERE id = ?1",
    [Q_BATCHES] = "SELECT seq, batch_id, fingerprint, postings_n, created_at FROM ledger_batches"
                  " WHERE plan_id = ?1 ORDER BY seq",
    [Q_PLAN_POSTINGS] = "SELECT from_account, to_account, amount FROM ledger_postings"
                        " WHERE plan_id = ?1",
    [Q_ACCOUNT] = "SELECT currency, may_go_negative, own, held_debit, held_credit, created_at"
                  " FROM ledger_accounts WHERE id = ?1",
    [Q_ACCOUNT_INSERT] = "INSERT INTO ledger_accounts (id, currency, may_go_negative, own,"
                         " held_debit, held_credit, created_at, updated_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?7)",
    [Q_ACCOUNT_UPDATE] = "UPDATE ledger_accounts SET own = ?2, held_debit = ?3, held_credit = ?4,"
                         " updated_at = ?5 WHERE id = ?1",
    [Q_PLAN_UPSERT] = "INSERT INTO ledger_plans (id, status, batches_n, created_at, updated_at)"
                      " VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (id) DO UPDATE SET"
                      " status = excluded.status, batches_n = excluded.batches_n,"
                      " updated_at = excluded.updated_at",
    [Q_BATCH_INSERT] = "INSERT INTO ledger_batches (plan_id, seq, batch_id, fingerprint,"
                       " postings_n, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    [Q_POSTING_INSERT] = "INSERT INTO ledger_postings (plan_id, batch_seq, idx, from_account,"
                         " to_account, amount, currency, created_at)"
                         " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
};

/* The statements of one transaction, prepared on first use. */
struct sq_state {
    sqlite3_stmt *st[Q_COUNT];
};

static sqlite3_stmt *stmt(sqlite3 *db, struct lx_tx *tx, enum sq_stmt id)
{
    struct sq_state *s = tx->be_state;
    if (!s) {
        s = calloc(1, sizeof(*s));
        if (!s)
            return NULL;
        tx->be_state = s;
    }
    if (!s->st[id] && sqlite3_prepare_v2(db, sq_sql[id], -1, &s->st[id], NULL) != SQLITE_OK)
        return NULL;
    sqlite3_reset(s->st[id]);
    sqlite3_clear_bindings(s->st[id]);
    return s->st[id];
}

static void sq_tx_end(void *conn, struct lx_tx *tx)
{
    (void)conn;
    struct sq_state *s = tx->be_state;
    if (!s)
        return;
    for (int i = 0; i < Q_COUNT; i++)
        sqlite3_finalize(s->st[i]);
    free(s);
    tx->be_state = NULL;
}

static void bind_text(sqlite3_stmt *st, int i, const char *v)
{
    sqlite3_bind_text(st, i, v, -1, SQLITE_STATIC);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
    const unsigned char *t = sqlite3_column_text(st, i);
    return t ? (const char *)t : "";
}

/* Steps a statement that returns no rows. */
static int exec_done(sqlite3_stmt *st)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE ? KS_OK : KS_ERR_IO;
}

/* --- the write transaction ------------------------------------------------------------------- */

static int sq_load_plans(void *conn, struct lx_tx *tx)
{
    sqlite3 *db = conn;
    for (size_t i = 0; i < tx->plans_n; i++) {
        const char *id = tx->plans[i].id;
        sqlite3_stmt *q = stmt(db, tx, Q_PLAN);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, id);
        int step = sqlite3_step(q), rc = KS_OK;
        if (step == SQLITE_ROW)
            rc = lx_plan_loaded(tx, id, sqlite3_column_int(q, 0), sqlite3_column_int64(q, 1));
        else if (step != SQLITE_DONE)
            rc = KS_ERR_IO;
        sqlite3_reset(q);
        if (rc != KS_OK)
            return rc;
        if (step == SQLITE_DONE)
            continue; /* a new plan: no batches, no nets */

        q = stmt(db, tx, Q_BATCHES);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, id);
        while (rc == KS_OK && (step = sqlite3_step(q)) == SQLITE_ROW)
            rc = lx_batch_loaded(tx, id, sqlite3_column_int64(q, 0), col_text(q, 1), col_text(q, 2),
                                 sqlite3_column_int64(q, 3), sqlite3_column_int64(q, 4));
        sqlite3_reset(q);
        if (rc == KS_OK && step != SQLITE_DONE)
            rc = KS_ERR_IO;
        if (rc != KS_OK)
            return rc;

        q = stmt(db, tx, Q_PLAN_POSTINGS);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, id);
        while (rc == KS_OK && (step = sqlite3_step(q)) == SQLITE_ROW)
            rc = lx_posting_loaded(tx, id, col_text(q, 0), col_text(q, 1),
                                   sqlite3_column_int64(q, 2));
        sqlite3_reset(q);
        if (rc == KS_OK && step != SQLITE_DONE)
            rc = KS_ERR_IO;
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}

static int sq_load_accounts(void *conn, struct lx_tx *tx)
{
    sqlite3 *db = conn;
    for (size_t i = 0; i < tx->accounts_n; i++) {
        sqlite3_stmt *q = stmt(db, tx, Q_ACCOUNT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, tx->accounts[i].id);
        int step = sqlite3_step(q), rc = KS_OK;
        if (step == SQLITE_ROW)
            rc = lx_account_loaded(tx, tx->accounts[i].id, col_text(q, 0),
                                   sqlite3_column_int(q, 1) != 0, sqlite3_column_int64(q, 2),
                                   sqlite3_column_int64(q, 3), sqlite3_column_int64(q, 4),
                                   sqlite3_column_int64(q, 5));
        else if (step != SQLITE_DONE)
            rc = KS_ERR_IO;
        sqlite3_reset(q);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}

static int flush_accounts(sqlite3 *db, struct lx_tx *tx)
{
    for (size_t i = 0; i < tx->accounts_n; i++) {
        const struct lx_account *a = &tx->accounts[i];
        if (!a->exists || (!a->is_new && !a->dirty))
            continue;
        sqlite3_stmt *q = stmt(db, tx, a->is_new ? Q_ACCOUNT_INSERT : Q_ACCOUNT_UPDATE);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, a->id);
        if (a->is_new) {
            bind_text(q, 2, a->currency);
            sqlite3_bind_int(q, 3, a->may_go_negative ? 1 : 0);
            sqlite3_bind_int64(q, 4, a->own);
            sqlite3_bind_int64(q, 5, a->held_debit);
            sqlite3_bind_int64(q, 6, a->held_credit);
            sqlite3_bind_int64(q, 7, tx->now_ms);
        } else {
            sqlite3_bind_int64(q, 2, a->own);
            sqlite3_bind_int64(q, 3, a->held_debit);
            sqlite3_bind_int64(q, 4, a->held_credit);
            sqlite3_bind_int64(q, 5, tx->now_ms);
        }
        if (exec_done(q) != KS_OK || sqlite3_changes(db) != 1)
            return KS_ERR_IO;
    }
    return KS_OK;
}

static int flush_batch(sqlite3 *db, struct lx_tx *tx, const struct lx_plan *p,
                       const struct lx_batch *b)
{
    sqlite3_stmt *q = stmt(db, tx, Q_BATCH_INSERT);
    if (!q)
        return KS_ERR_IO;
    bind_text(q, 1, p->id);
    sqlite3_bind_int64(q, 2, b->seq);
    bind_text(q, 3, b->id);
    bind_text(q, 4, b->fingerprint);
    sqlite3_bind_int64(q, 5, b->postings_n);
    sqlite3_bind_int64(q, 6, b->created_at_ms);
    if (exec_done(q) != KS_OK)
        return KS_ERR_IO;
    for (int64_t j = 0; j < b->postings_n; j++) {
        const struct ks_ledger_posting *ps = &b->postings[j];
        q = stmt(db, tx, Q_POSTING_INSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, p->id);
        sqlite3_bind_int64(q, 2, b->seq);
        sqlite3_bind_int64(q, 3, j);
        bind_text(q, 4, ps->from);
        bind_text(q, 5, ps->to);
        sqlite3_bind_int64(q, 6, ps->amount);
        bind_text(q, 7, ps->currency);
        sqlite3_bind_int64(q, 8, b->created_at_ms);
        if (exec_done(q) != KS_OK)
            return KS_ERR_IO;
    }
    return KS_OK;
}

static int flush_plans(sqlite3 *db, struct lx_tx *tx)
{
    for (size_t i = 0; i < tx->plans_n; i++) {
        const struct lx_plan *p = &tx->plans[i];
        if (!p->dirty || p->status == KS_LEDGER_PLAN_NONE)
            continue;
        sqlite3_stmt *q = stmt(db, tx, Q_PLAN_UPSERT);
        if (!q)
            return KS_ERR_IO;
        bind_text(q, 1, p->id);
        sqlite3_bind_int(q, 2, (int)p->status);
        sqlite3_bind_int64(q, 3, (int64_t)p->batches_n);
        sqlite3_bind_int64(q, 4, p->created_at_ms);
        sqlite3_bind_int64(q, 5, tx->now_ms);
        if (exec_done(q) != KS_OK)
            return KS_ERR_IO;
        for (size_t j = 0; j < p->batches_n; j++)
            if (p->batches[j].is_new && flush_batch(db, tx, p, &p->batches[j]) != KS_OK)
                return KS_ERR_IO;
    }
    return KS_OK;
}

static int sq_flush(void *conn, struct lx_tx *tx)
{
    int rc = flush_accounts(conn, tx);
    return rc == KS_OK ? flush_plans(conn, tx) : rc;
}

/* --- reads ----------------------------------------------------------------------------------- */

#define ACCOUNT_COLS                                                                               \
    "id, currency, may_go_negative, own, held_debit, held_credit, created_at, updated_at"

static void account_row(sqlite3_stmt *q, struct ks_ledger_account *a)
{
    memset(a, 0, sizeof(*a));
    lx_copy(a->id, sizeof(a->id), col_text(q, 0));
    lx_copy(a->currency, sizeof(a->currency), col_text(q, 1));
    a->may_go_negative = sqlite3_column_int(q, 2) != 0;
    a->own = sqlite3_column_int64(q, 3);
    a->held_debit = sqlite3_column_int64(q, 4);
    a->held_credit = sqlite3_column_int64(q, 5);
    a->created_at_ms = sqlite3_column_int64(q, 6);
    a->updated_at_ms = sqlite3_column_int64(q, 7);
}

static int sq_account_get(void *conn, const char *id, struct ks_ledger_account *out)
{
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(conn, "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id = ?1", -1,
                           &q, NULL) != SQLITE_OK)
        return KS_ERR_IO;
    bind_text(q, 1, id);
    int step = sqlite3_step(q), rc = KS_OK;
    if (step == SQLITE_ROW)
        account_row(q, out);
    else
        rc = step == SQLITE_DONE ? KS_ERR_NOT_FOUND : KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_accounts_list(void *conn, const char *lo, const char *hi, const char *after,
                            size_t limit, struct ks_ledger_account *out, size_t *n)
{
    sqlite3_stmt *q = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(conn,
                           "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id >= ?1 AND"
                           " id < ?2 AND id > ?3 ORDER BY id LIMIT ?4",
                           -1, &q, NULL) != SQLITE_OK)
        return KS_ERR_IO;
    bind_text(q, 1, lo);
    bind_text(q, 2, hi);
    bind_text(q, 3, after);
    sqlite3_bind_int64(q, 4, (int64_t)limit);
    int step = SQLITE_DONE;
    while (*n < limit && (step = sqlite3_step(q)) == SQLITE_ROW)
        account_row(q, &out[(*n)++]);
    int rc = (*n == limit || step == SQLITE_DONE) ? KS_OK : KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

#define POSTING_COLS                                                                               \
    "p.id, p.plan_id, b.batch_id, p.batch_seq, p.idx, p.from_account, p.to_account, p.amount,"     \
    " p.currency, p.created_at, pl.status"
#define POSTING_FROM                                                                               \
    " ledger_postings p JOIN ledger_batches b ON b.plan_id = p.plan_id AND b.seq = p.batch_seq"    \
    " JOIN ledger_plans pl ON pl.id = p.plan_id"

static void posting_row(sqlite3_stmt *q, struct ks_ledger_posting_row *r)
{
    memset(r, 0, sizeof(*r));
    r->id = sqlite3_column_int64(q, 0);
    lx_copy(r->plan, sizeof(r->plan), col_text(q, 1));
    lx_copy(r->batch, sizeof(r->batch), col_text(q, 2));
    r->batch_seq = sqlite3_column_int64(q, 3);
    r->index = sqlite3_column_int64(q, 4);
    lx_copy(r->from, sizeof(r->from), col_text(q, 5));
    lx_copy(r->to, sizeof(r->to), col_text(q, 6));
    r->amount = sqlite3_column_int64(q, 7);
    lx_copy(r->currency, sizeof(r->currency), col_text(q, 8));
    r->created_at_ms = sqlite3_column_int64(q, 9);
    r->plan_status = (enum ks_ledger_plan_status)sqlite3_column_int(q, 10);
}

static int sq_postings_read(void *conn, const char *account, int64_t after, size_t limit,
                            struct ks_ledger_posting_row *out, size_t *n)
{
    /* Two ordered index range scans (debits, credits), each cut at `limit`, then merged: a page
     * costs O(limit) whatever the account's history. */
    sqlite3_stmt *q = NULL;
    *n = 0;
    if (sqlite3_prepare_v2(conn,
                           "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.id IN ("
                           "SELECT id FROM (SELECT id FROM ledger_postings WHERE from_account = ?1"
                           " AND id > ?2 ORDER BY id LIMIT ?3) UNION ALL"
                           " SELECT id FROM (SELECT id FROM ledger_postings WHERE to_account = ?1"
                           " AND id > ?2 ORDER BY id LIMIT ?3)) ORDER BY p.id LIMIT ?3",
                           -1, &q, NULL) != SQLITE_OK)
        return KS_ERR_IO;
    bind_text(q, 1, account);
    sqlite3_bind_int64(q, 2, after);
    sqlite3_bind_int64(q, 3, (int64_t)limit);
    int step = SQLITE_DONE;
    while (*n < limit && (step = sqlite3_step(q)) == SQLITE_ROW)
        posting_row(q, &out[(*n)++]);
    int rc = (*n == limit || step == SQLITE_DONE) ? KS_OK : KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_plan_get(void *conn, const char *plan, struct ks_ledger_plan_view *out)
{
    sqlite3 *db = conn;
    sqlite3_stmt *q = NULL;
    int rc = KS_ERR_IO, step = SQLITE_DONE;
    /* One read transaction: the plan, its batches and postings from one snapshot. */
    if (sqlite3_exec(db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK)
        return KS_ERR_IO;
    if (sqlite3_prepare_v2(db,
                           "SELECT id, status, created_at, updated_at FROM ledger_plans"
                           " WHERE id = ?1",
                           -1, &q, NULL) != SQLITE_OK)
        goto out_end;
    bind_text(q, 1, plan);
    step = sqlite3_step(q);
    if (step != SQLITE_ROW) {
        rc = step == SQLITE_DONE ? KS_ERR_NOT_FOUND : KS_ERR_IO;
        goto out_end;
    }
    lx_copy(out->id, sizeof(out->id), col_text(q, 0));
    out->status = (enum ks_ledger_plan_status)sqlite3_column_int(q, 1);
    out->created_at_ms = sqlite3_column_int64(q, 2);
    out->updated_at_ms = sqlite3_column_int64(q, 3);
    sqlite3_finalize(q);
    q = NULL;

    out->batches = calloc(KS_LEDGER_PLAN_BATCHES_MAX, sizeof(*out->batches));
    if (!out->batches) {
        rc = KS_ERR_NOMEM;
        goto out_end;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT batch_id, seq, fingerprint, postings_n, created_at FROM"
                           " ledger_batches WHERE plan_id = ?1 ORDER BY seq LIMIT ?2",
                           -1, &q, NULL) != SQLITE_OK)
        goto out_end;
    bind_text(q, 1, plan);
    sqlite3_bind_int(q, 2, KS_LEDGER_PLAN_BATCHES_MAX);
    while (out->batches_n < KS_LEDGER_PLAN_BATCHES_MAX && (step = sqlite3_step(q)) == SQLITE_ROW) {
        struct ks_ledger_batch_row *b = &out->batches[out->batches_n++];
        lx_copy(b->id, sizeof(b->id), col_text(q, 0));
        b->seq = sqlite3_column_int64(q, 1);
        lx_copy(b->fingerprint, sizeof(b->fingerprint), col_text(q, 2));
        b->postings_n = sqlite3_column_int64(q, 3);
        b->created_at_ms = sqlite3_column_int64(q, 4);
    }
    if (out->batches_n < KS_LEDGER_PLAN_BATCHES_MAX && step != SQLITE_DONE)
        goto out_end;
    sqlite3_finalize(q);
    q = NULL;
    /* Room for the postings the batches say they have (a broken store may hold fewer). */
    int64_t want = 0;
    for (size_t i = 0; i < out->batches_n; i++)
        if (out->batches[i].postings_n > 0)
            want += out->batches[i].postings_n;
    size_t cap =
        want < KS_LEDGER_COMMIT_POSTINGS_MAX ? (size_t)want : KS_LEDGER_COMMIT_POSTINGS_MAX;
    out->postings = calloc(cap + 1, sizeof(*out->postings));
    if (!out->postings) {
        rc = KS_ERR_NOMEM;
        goto out_end;
    }
    if (sqlite3_prepare_v2(db,
                           "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.plan_id = ?1"
                           " ORDER BY p.batch_seq, p.idx LIMIT ?2",
                           -1, &q, NULL) != SQLITE_OK)
        goto out_end;
    bind_text(q, 1, plan);
    sqlite3_bind_int64(q, 2, (int64_t)cap);
    while (out->postings_n < cap && (step = sqlite3_step(q)) == SQLITE_ROW)
        posting_row(q, &out->postings[out->postings_n++]);
    if (out->postings_n < cap && step != SQLITE_DONE)
        goto out_end;
    rc = KS_OK;
out_end:
    sqlite3_finalize(q);
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    return rc;
}

/* --- verify ---------------------------------------------------------------------------------- */

#define ROWS_MAX_SQL " LIMIT 100"
_Static_assert(LX_VERIFY_ROWS_MAX == 100, "keep ROWS_MAX_SQL in step");

static const char *const sq_verify_sql[LX_V_COUNT] = {
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
    [LX_V_BALANCES] = "WITH e AS (SELECT plan_id, to_account AS account_id, amount AS d"
                      " FROM ledger_postings UNION ALL SELECT plan_id, from_account, -amount"
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
                      " WHERE (may_go_negative = 0 AND own - held_debit < 0) OR held_debit < 0"
                      " OR held_credit < 0 ORDER BY id" ROWS_MAX_SQL,
};

static int sq_snapshot_begin(void *conn)
{
    return sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL) == SQLITE_OK ? KS_OK : KS_ERR_IO;
}

static void sq_snapshot_end(void *conn)
{
    sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
}

static int sq_query_text(void *conn, enum lx_check check, lx_row_fn fn, void *ctx)
{
    assert(check < LX_V_COUNT);
    sqlite3_stmt *q = NULL;
    if (sqlite3_prepare_v2(conn, sq_verify_sql[check], -1, &q, NULL) != SQLITE_OK)
        return KS_ERR_IO;
    int ncols = sqlite3_column_count(q), rc = KS_OK, step = SQLITE_DONE;
    const char *cols[16];
    if (ncols > 16) {
        sqlite3_finalize(q);
        return KS_ERR_INTERNAL;
    }
    while (rc == KS_OK && (step = sqlite3_step(q)) == SQLITE_ROW) {
        for (int i = 0; i < ncols; i++)
            cols[i] = (const char *)sqlite3_column_text(q, i);
        rc = fn(ctx, cols, ncols);
    }
    if (rc == KS_OK && step != SQLITE_DONE)
        rc = KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

const struct lx_backend lx_sqlite_backend = {
    .kind = "sqlite",
    .load_plans = sq_load_plans,
    .load_accounts = sq_load_accounts,
    .flush = sq_flush,
    .tx_end = sq_tx_end,
    .account_get = sq_account_get,
    .accounts_list = sq_accounts_list,
    .plan_get = sq_plan_get,
    .postings_read = sq_postings_read,
    .snapshot_begin = sq_snapshot_begin,
    .snapshot_end = sq_snapshot_end,
    .query_text = sq_query_text,
};
