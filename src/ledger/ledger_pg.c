/*
 * ledger_pg.c — the ledger's PostgreSQL backend (see ledger_int.h for the contract, the schema in
 * store/migrations/pg/002_ledger.sql, the design in docs/ledger.md).
 *
 * Many nodes may run ledger transactions at once. Each transaction, inside ks_store_with_tx:
 *   1. takes a transaction-scoped advisory lock per plan it names (key: the plan id's FNV-1a
 *      hash, ascending), so two nodes never work on one plan at once, and reads the plans;
 *   2. locks the account rows it touches with SELECT ... ORDER BY id FOR UPDATE (ids sort
 *      bytewise: COLLATE "C", as in C), so balances change under a lock;
 *   3. writes every change with one statement per table, the rows passed as arrays (unnest).
 * Every transaction takes its locks in that order (plan keys ascending, then account ids
 * ascending), so transactions on shared accounts wait for each other but cannot deadlock.
 * Arrays go as text literals whose elements are always quoted; every element is an id, a
 * currency code, a hex digest or a number, none of which can hold a quote or a backslash (the
 * builder refuses them anyway). A unique violation (two nodes creating one account) or a
 * deadlock/serialisation failure is reported as KS_ERR_RETRY: nothing was written.
 */
#include "ledger/ledger_int.h"

#include <assert.h>
#include <errno.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LEDGER_LOCK_CLASS "1279607879" /* "LEDG": the advisory lock class of ledger plans */

/* --- helpers --------------------------------------------------------------------------------- */

/* Maps a failed result to a status code: RETRY for errors a rerun can clear. */
static int pg_error(const PGresult *r)
{
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (state &&
        (strcmp(state, "23505") == 0 || strcmp(state, "40P01") == 0 || strcmp(state, "40001") == 0))
        return KS_ERR_RETRY;
    return KS_ERR_IO;
}

/* Runs `sql` with `n` text parameters; `*out` gets the result when its status is `want`. */
static int run(PGconn *pg, const char *sql, int n, const char *const *vals, ExecStatusType want,
               PGresult **out)
{
    *out = NULL;
    PGresult *r = PQexecParams(pg, sql, n, NULL, vals, NULL, NULL, 0);
    if (!r || PQresultStatus(r) != want) {
        int rc = pg_error(r);
        PQclear(r);
        return rc;
    }
    *out = r;
    return KS_OK;
}

static int run_cmd(PGconn *pg, const char *sql, int n, const char *const *vals)
{
    PGresult *r = NULL;
    int rc = run(pg, sql, n, vals, PGRES_COMMAND_OK, &r);
    PQclear(r);
    return rc;
}

static bool parse_i64(const char *s, int64_t *out)
{
    if (!s || !*s)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

static int64_t col_i64(const PGresult *r, int row, int col, bool *ok)
{
    int64_t v = 0;
    if (!parse_i64(PQgetvalue(r, row, col), &v))
        *ok = false;
    return v;
}

static const char *col_text(const PGresult *r, int row, int col)
{
    return PQgetisnull(r, row, col) ? "" : PQgetvalue(r, row, col);
}

static void fmt_i64(char out[24], int64_t v)
{
    snprintf(out, 24, "%lld", (long long)v);
}

/* A growing array literal: {"a","b"} or {1,2}. */
struct abuf {
    char *p;
    size_t n, cap;
    size_t items;
    int err;
};

static void ab_put(struct abuf *b, const char *s, size_t len)
{
    if (b->err)
        return;
    if (b->n + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len + 1)
            cap *= 2;
        if (cap > KS_LEDGER_TX_BYTES_MAX) {
            b->err = KS_ERR_LIMIT;
            return;
        }
        char *p = realloc(b->p, cap);
        if (!p) {
            b->err = KS_ERR_NOMEM;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, len);
    b->n += len;
    b->p[b->n] = '\0';
}

static void ab_sep(struct abuf *b)
{
    ab_put(b, b->items++ ? "," : "{", 1);
}

static void ab_text(struct abuf *b, const char *s)
{
    if (strpbrk(s, "\"\\")) {
        b->err = KS_ERR_INTERNAL;
        return;
    }
    ab_sep(b);
    ab_put(b, "\"", 1);
    ab_put(b, s, strlen(s));
    ab_put(b, "\"", 1);
}

static void ab_i64(struct abuf *b, int64_t v)
{
    char t[24];
    fmt_i64(t, v);
    ab_sep(b);
    ab_put(b, t, strlen(t));
}

/* Closes the literal; returns it (owned by `b`) or NULL with b->err set. */
static const char *ab_end(struct abuf *b)
{
    if (b->items == 0)
        ab_put(b, "{", 1);
    ab_put(b, "}", 1);
    return b->err ? NULL : b->p;
}

static void ab_free(struct abuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* Runs `sql` whose parameters are the closed array literals of `bufs` (and then `extra`). */
static int run_arrays(PGconn *pg, const char *sql, struct abuf *bufs, int nb, const char *extra)
{
    const char *vals[12];
    assert(nb < 12);
    for (int i = 0; i < nb; i++) {
        vals[i] = ab_end(&bufs[i]);
        if (!vals[i])
            return bufs[i].err;
    }
    int n = nb;
    if (extra)
        vals[n++] = extra;
    return run_cmd(pg, sql, n, vals);
}

static void abs_free(struct abuf *bufs, int n)
{
    for (int i = 0; i < n; i++)
        ab_free(&bufs[i]);
}

/* --- the write transaction ------------------------------------------------------------------- */

/*
 * Batches and postings are looked up plan by plan (a LATERAL subquery per unnested id, with a
 * LIMIT so that it is not flattened into a plain join) rather than with `plan_id = ANY($1)`: on
 * a table whose statistics lag behind its growth (a fresh database, before autovacuum has
 * analysed it), the planner takes a few dozen ids for a large share of the table and scans all
 * of it — 30 ms per transaction at 100k postings — while the per-plan lookup stays an index
 * scan. The limits are the ledger's own bounds per plan.
 */
#define LX_BATCHES_SQL "64"
#define LX_POSTINGS_SQL "4096"
_Static_assert(KS_LEDGER_PLAN_BATCHES_MAX == 64, "keep LX_BATCHES_SQL in step");
_Static_assert(KS_LEDGER_COMMIT_POSTINGS_MAX == 4096, "keep LX_POSTINGS_SQL in step");

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static int pg_load_plans(void *conn, struct lx_tx *tx)
{
    PGconn *pg = conn;
    if (tx->plans_n == 0)
        return KS_OK;
    int32_t *keys = malloc(tx->plans_n * sizeof(*keys));
    if (!keys)
        return KS_ERR_NOMEM;
    for (size_t i = 0; i < tx->plans_n; i++)
        keys[i] = lx_plan_lock_key(tx->plans[i].id);
    qsort(keys, tx->plans_n, sizeof(*keys), cmp_i32);
    struct abuf kb = {0}, ib = {0};
    for (size_t i = 0; i < tx->plans_n; i++)
        if (i == 0 || keys[i] != keys[i - 1])
            ab_i64(&kb, keys[i]);
    free(keys);
    for (size_t i = 0; i < tx->plans_n; i++)
        ab_text(&ib, tx->plans[i].id);
    const char *kv[1] = {ab_end(&kb)}, *iv[1] = {ab_end(&ib)};
    PGresult *r = NULL;
    int rc = (!kv[0] || !iv[0]) ? (kb.err ? kb.err : ib.err) : KS_OK;
    /* unnest yields the keys in array order, so the locks are taken in ascending order. */
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT pg_advisory_xact_lock(" LEDGER_LOCK_CLASS
                 ", k) FROM unnest($1::int4[]) AS t(k)",
                 1, kv, PGRES_TUPLES_OK, &r);
    PQclear(r);
    r = NULL;
    if (rc == KS_OK)
        rc = run(pg, "SELECT id, status, created_at FROM ledger_plans WHERE id = ANY($1::text[])",
                 1, iv, PGRES_TUPLES_OK, &r);
    bool ok = true;
    for (int i = 0; rc == KS_OK && r && i < PQntuples(r); i++) {
        int64_t status = col_i64(r, i, 1, &ok), created = col_i64(r, i, 2, &ok);
        rc = ok ? lx_plan_loaded(tx, col_text(r, i, 0), (int)status, created) : KS_ERR_IO;
    }
    PQclear(r);
    r = NULL;
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT b.plan_id, b.seq, b.batch_id, b.fingerprint, b.postings_n, b.created_at"
                 " FROM unnest($1::text[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM"
                 " ledger_batches WHERE plan_id = k.id ORDER BY seq LIMIT " LX_BATCHES_SQL
                 ") AS b",
                 1, iv, PGRES_TUPLES_OK, &r);
    for (int i = 0; rc == KS_OK && r && i < PQntuples(r); i++) {
        int64_t seq = col_i64(r, i, 1, &ok), pn = col_i64(r, i, 4, &ok),
                created = col_i64(r, i, 5, &ok);
        rc = ok ? lx_batch_loaded(tx, col_text(r, i, 0), seq, col_text(r, i, 2), col_text(r, i, 3),
                                  pn, created)
                : KS_ERR_IO;
    }
    PQclear(r);
    r = NULL;
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT x.plan_id, x.from_account, x.to_account, x.amount"
                 " FROM unnest($1::text[]) AS k(id) CROSS JOIN LATERAL (SELECT * FROM"
                 " ledger_postings WHERE plan_id = k.id LIMIT " LX_POSTINGS_SQL ") AS x",
                 1, iv, PGRES_TUPLES_OK, &r);
    for (int i = 0; rc == KS_OK && r && i < PQntuples(r); i++) {
        int64_t amount = col_i64(r, i, 3, &ok);
        rc = ok ? lx_posting_loaded(tx, col_text(r, i, 0), col_text(r, i, 1), col_text(r, i, 2),
                                    amount)
                : KS_ERR_IO;
    }
    PQclear(r);
    ab_free(&kb);
    ab_free(&ib);
    return rc;
}

static int pg_load_accounts(void *conn, struct lx_tx *tx)
{
    PGconn *pg = conn;
    if (tx->accounts_n == 0)
        return KS_OK;
    struct abuf ib = {0};
    for (size_t i = 0; i < tx->accounts_n; i++)
        ab_text(&ib, tx->accounts[i].id);
    const char *iv[1] = {ab_end(&ib)};
    PGresult *r = NULL;
    int rc = iv[0] ? KS_OK : ib.err;
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT id, currency, may_go_negative, own, held_debit, held_credit, created_at"
                 " FROM ledger_accounts WHERE id = ANY($1::text[]) ORDER BY id FOR UPDATE",
                 1, iv, PGRES_TUPLES_OK, &r);
    bool ok = true;
    for (int i = 0; rc == KS_OK && r && i < PQntuples(r); i++) {
        int64_t own = col_i64(r, i, 3, &ok), hd = col_i64(r, i, 4, &ok), hc = col_i64(r, i, 5, &ok),
                created = col_i64(r, i, 6, &ok);
        rc = ok ? lx_account_loaded(tx, col_text(r, i, 0), col_text(r, i, 1),
                                    strcmp(col_text(r, i, 2), "t") == 0, own, hd, hc, created)
                : KS_ERR_IO;
    }
    PQclear(r);
    ab_free(&ib);
    return rc;
}

static int flush_accounts(PGconn *pg, struct lx_tx *tx, const char *now)
{
    struct abuf ins[6] = {{0}}, upd[4] = {{0}};
    for (size_t i = 0; i < tx->accounts_n; i++) {
        const struct lx_account *a = &tx->accounts[i];
        if (!a->exists)
            continue;
        if (a->is_new) {
            ab_text(&ins[0], a->id);
            ab_text(&ins[1], a->currency);
            ab_text(&ins[2], a->may_go_negative ? "t" : "f");
            ab_i64(&ins[3], a->own);
            ab_i64(&ins[4], a->held_debit);
            ab_i64(&ins[5], a->held_credit);
        } else if (a->dirty) {
            ab_text(&upd[0], a->id);
            ab_i64(&upd[1], a->own);
            ab_i64(&upd[2], a->held_debit);
            ab_i64(&upd[3], a->held_credit);
        }
    }
    int rc = KS_OK;
    if (ins[0].items)
        rc = run_arrays(pg,
                        "INSERT INTO ledger_accounts (id, currency, may_go_negative, own,"
                        " held_debit, held_credit, created_at, updated_at)"
                        " SELECT i, c, n, o, d, k, $7, $7 FROM unnest($1::text[], $2::text[],"
                        " $3::bool[], $4::int8[], $5::int8[], $6::int8[]) AS t(i, c, n, o, d, k)",
                        ins, 6, now);
    if (rc == KS_OK && upd[0].items)
        rc = run_arrays(pg,
                        "UPDATE ledger_accounts a SET own = t.o, held_debit = t.d,"
                        " held_credit = t.k, updated_at = $5 FROM unnest($1::text[], $2::int8[],"
                        " $3::int8[], $4::int8[]) AS t(i, o, d, k) WHERE a.id = t.i",
                        upd, 4, now);
    abs_free(ins, 6);
    abs_free(upd, 4);
    return rc;
}

static int flush_plans(PGconn *pg, struct lx_tx *tx, const char *now)
{
    struct abuf pl[4] = {{0}}, bt[6] = {{0}}, ps[7] = {{0}};
    for (size_t i = 0; i < tx->plans_n; i++) {
        const struct lx_plan *p = &tx->plans[i];
        if (!p->dirty || p->status == KS_LEDGER_PLAN_NONE)
            continue;
        ab_text(&pl[0], p->id);
        ab_i64(&pl[1], (int64_t)p->status);
        ab_i64(&pl[2], (int64_t)p->batches_n);
        ab_i64(&pl[3], p->created_at_ms);
        for (size_t j = 0; j < p->batches_n; j++) {
            const struct lx_batch *b = &p->batches[j];
            if (!b->is_new)
                continue;
            ab_text(&bt[0], p->id);
            ab_i64(&bt[1], b->seq);
            ab_text(&bt[2], b->id);
            ab_text(&bt[3], b->fingerprint);
            ab_i64(&bt[4], b->postings_n);
            ab_i64(&bt[5], b->created_at_ms);
            for (int64_t k = 0; k < b->postings_n; k++) {
                const struct ks_ledger_posting *x = &b->postings[k];
                ab_text(&ps[0], p->id);
                ab_i64(&ps[1], b->seq);
                ab_i64(&ps[2], k);
                ab_text(&ps[3], x->from);
                ab_text(&ps[4], x->to);
                ab_i64(&ps[5], x->amount);
                ab_text(&ps[6], x->currency);
            }
        }
    }
    int rc = KS_OK;
    if (pl[0].items)
        rc = run_arrays(pg,
                        "INSERT INTO ledger_plans (id, status, batches_n, created_at, updated_at)"
                        " SELECT i, s, b, c, $5 FROM unnest($1::text[], $2::int4[], $3::int4[],"
                        " $4::int8[]) AS t(i, s, b, c) ON CONFLICT (id) DO UPDATE SET"
                        " status = excluded.status, batches_n = excluded.batches_n,"
                        " updated_at = excluded.updated_at",
                        pl, 4, now);
    if (rc == KS_OK && bt[0].items)
        rc = run_arrays(pg,
                        "INSERT INTO ledger_batches (plan_id, seq, batch_id, fingerprint,"
                        " postings_n, created_at) SELECT * FROM unnest($1::text[], $2::int4[],"
                        " $3::text[], $4::text[], $5::int4[], $6::int8[])",
                        bt, 6, NULL);
    if (rc == KS_OK && ps[0].items)
        rc = run_arrays(pg,
                        "INSERT INTO ledger_postings (plan_id, batch_seq, idx, from_account,"
                        " to_account, amount, currency, created_at) SELECT p, s, x, f, t, a, c, $8"
                        " FROM unnest($1::text[], $2::int4[], $3::int4[], $4::text[], $5::text[],"
                        " $6::int8[], $7::text[]) WITH ORDINALITY AS u(p, s, x, f, t, a, c, o)"
                        " ORDER BY o",
                        ps, 7, now);
    abs_free(pl, 4);
    abs_free(bt, 6);
    abs_free(ps, 7);
    return rc;
}

static int pg_flush(void *conn, struct lx_tx *tx)
{
    char now[24];
    fmt_i64(now, tx->now_ms);
    int rc = flush_accounts(conn, tx, now);
    return rc == KS_OK ? flush_plans(conn, tx, now) : rc;
}

static void pg_tx_end(void *conn, struct lx_tx *tx)
{
    (void)conn;
    (void)tx;
    assert(tx->be_state == NULL); /* nothing kept between calls */
}

/* --- reads ----------------------------------------------------------------------------------- */

#define ACCOUNT_COLS                                                                               \
    "id, currency, may_go_negative, own, held_debit, held_credit, created_at, updated_at"

static bool account_row(const PGresult *r, int i, struct ks_ledger_account *a)
{
    bool ok = true;
    memset(a, 0, sizeof(*a));
    lx_copy(a->id, sizeof(a->id), col_text(r, i, 0));
    lx_copy(a->currency, sizeof(a->currency), col_text(r, i, 1));
    a->may_go_negative = strcmp(col_text(r, i, 2), "t") == 0;
    a->own = col_i64(r, i, 3, &ok);
    a->held_debit = col_i64(r, i, 4, &ok);
    a->held_credit = col_i64(r, i, 5, &ok);
    a->created_at_ms = col_i64(r, i, 6, &ok);
    a->updated_at_ms = col_i64(r, i, 7, &ok);
    return ok;
}

static int pg_account_get(void *conn, const char *id, struct ks_ledger_account *out)
{
    const char *v[1] = {id};
    PGresult *r = NULL;
    int rc = run(conn, "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id = $1", 1, v,
                 PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && PQntuples(r) == 0)
        rc = KS_ERR_NOT_FOUND;
    else if (rc == KS_OK && !account_row(r, 0, out))
        rc = KS_ERR_IO;
    PQclear(r);
    return rc;
}

static int pg_accounts_list(void *conn, const char *lo, const char *hi, const char *after,
                            size_t limit, struct ks_ledger_account *out, size_t *n)
{
    char lim[24];
    fmt_i64(lim, (int64_t)limit);
    const char *v[4] = {lo, hi, after, lim};
    PGresult *r = NULL;
    *n = 0;
    int rc = run(conn,
                 "SELECT " ACCOUNT_COLS " FROM ledger_accounts WHERE id >= $1 AND id < $2"
                 " AND id > $3 ORDER BY id LIMIT $4::int8",
                 4, v, PGRES_TUPLES_OK, &r);
    for (int i = 0; rc == KS_OK && i < PQntuples(r) && *n < limit; i++)
        if (!account_row(r, i, &out[(*n)++]))
            rc = KS_ERR_IO;
    PQclear(r);
    return rc;
}

#define POSTING_COLS                                                                               \
    "p.id, p.plan_id, b.batch_id, p.batch_seq, p.idx, p.from_account, p.to_account, p.amount,"     \
    " p.currency, p.created_at, pl.status"
#define POSTING_FROM                                                                               \
    " ledger_postings p JOIN ledger_batches b ON b.plan_id = p.plan_id AND b.seq = p.batch_seq"    \
    " JOIN ledger_plans pl ON pl.id = p.plan_id"

static bool posting_row(const PGresult *r, int i, struct ks_ledger_posting_row *x)
{
    bool ok = true;
    memset(x, 0, sizeof(*x));
    x->id = col_i64(r, i, 0, &ok);
    lx_copy(x->plan, sizeof(x->plan), col_text(r, i, 1));
    lx_copy(x->batch, sizeof(x->batch), col_text(r, i, 2));
    x->batch_seq = col_i64(r, i, 3, &ok);
    x->index = col_i64(r, i, 4, &ok);
    lx_copy(x->from, sizeof(x->from), col_text(r, i, 5));
    lx_copy(x->to, sizeof(x->to), col_text(r, i, 6));
    x->amount = col_i64(r, i, 7, &ok);
    lx_copy(x->currency, sizeof(x->currency), col_text(r, i, 8));
    x->created_at_ms = col_i64(r, i, 9, &ok);
    x->plan_status = (enum ks_ledger_plan_status)col_i64(r, i, 10, &ok);
    return ok;
}

static int pg_postings_read(void *conn, const char *account, int64_t after, size_t limit,
                            struct ks_ledger_posting_row *out, size_t *n)
{
    char a[24], lim[24];
    fmt_i64(a, after);
    fmt_i64(lim, (int64_t)limit);
    const char *v[3] = {account, a, lim};
    PGresult *r = NULL;
    *n = 0;
    /* Two ordered index range scans (debits, credits), each cut at `limit`, then merged. */
    int rc = run(conn,
                 "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.id IN ("
                 "(SELECT id FROM ledger_postings WHERE from_account = $1 AND id > $2::int8"
                 " ORDER BY id LIMIT $3::int8) UNION ALL"
                 " (SELECT id FROM ledger_postings WHERE to_account = $1 AND id > $2::int8"
                 " ORDER BY id LIMIT $3::int8)) ORDER BY p.id LIMIT $3::int8",
                 3, v, PGRES_TUPLES_OK, &r);
    for (int i = 0; rc == KS_OK && i < PQntuples(r) && *n < limit; i++)
        if (!posting_row(r, i, &out[(*n)++]))
            rc = KS_ERR_IO;
    PQclear(r);
    return rc;
}

static int pg_plan_get(void *conn, const char *plan, struct ks_ledger_plan_view *out)
{
    PGconn *pg = conn;
    const char *v[1] = {plan};
    PGresult *r = NULL;
    bool ok = true;
    /* One snapshot: the plan, its batches and postings as of one moment. */
    int rc = run_cmd(pg, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL);
    if (rc != KS_OK)
        return rc;
    rc = run(pg, "SELECT id, status, created_at, updated_at FROM ledger_plans WHERE id = $1", 1, v,
             PGRES_TUPLES_OK, &r);
    if (rc == KS_OK && PQntuples(r) == 0)
        rc = KS_ERR_NOT_FOUND;
    if (rc == KS_OK) {
        lx_copy(out->id, sizeof(out->id), col_text(r, 0, 0));
        out->status = (enum ks_ledger_plan_status)col_i64(r, 0, 1, &ok);
        out->created_at_ms = col_i64(r, 0, 2, &ok);
        out->updated_at_ms = col_i64(r, 0, 3, &ok);
        out->batches = calloc(KS_LEDGER_PLAN_BATCHES_MAX, sizeof(*out->batches));
        if (!out->batches)
            rc = KS_ERR_NOMEM;
    }
    PQclear(r);
    r = NULL;
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT batch_id, seq, fingerprint, postings_n, created_at FROM ledger_batches"
                 " WHERE plan_id = $1 ORDER BY seq LIMIT "
                 "64",
                 1, v, PGRES_TUPLES_OK, &r);
    _Static_assert(KS_LEDGER_PLAN_BATCHES_MAX == 64, "keep the batches LIMIT in step");
    for (int i = 0; rc == KS_OK && i < PQntuples(r) && out->batches_n < KS_LEDGER_PLAN_BATCHES_MAX;
         i++) {
        struct ks_ledger_batch_row *b = &out->batches[out->batches_n++];
        lx_copy(b->id, sizeof(b->id), col_text(r, i, 0));
        b->seq = col_i64(r, i, 1, &ok);
        lx_copy(b->fingerprint, sizeof(b->fingerprint), col_text(r, i, 2));
        b->postings_n = col_i64(r, i, 3, &ok);
        b->created_at_ms = col_i64(r, i, 4, &ok);
    }
    PQclear(r);
    r = NULL;
    if (rc == KS_OK)
        rc = run(pg,
                 "SELECT " POSTING_COLS " FROM" POSTING_FROM " WHERE p.plan_id = $1"
                 " ORDER BY p.batch_seq, p.idx LIMIT "
                 "4096",
                 1, v, PGRES_TUPLES_OK, &r);
    _Static_assert(KS_LEDGER_COMMIT_POSTINGS_MAX == 4096, "keep the postings LIMIT in step");
    size_t rows = rc == KS_OK ? (size_t)PQntuples(r) : 0;
    if (rc == KS_OK && !(out->postings = calloc(rows + 1, sizeof(*out->postings))))
        rc = KS_ERR_NOMEM;
    for (size_t i = 0; rc == KS_OK && i < rows && out->postings_n < KS_LEDGER_COMMIT_POSTINGS_MAX;
         i++)
        if (!posting_row(r, (int)i, &out->postings[out->postings_n++]))
            ok = false;
    PQclear(r);
    if (rc == KS_OK && !ok)
        rc = KS_ERR_IO;
    (void)run_cmd(pg, "COMMIT", 0, NULL);
    return rc;
}

/* --- verify ---------------------------------------------------------------------------------- */

#define ROWS_MAX_SQL " LIMIT 100"
_Static_assert(LX_VERIFY_ROWS_MAX == 100, "keep ROWS_MAX_SQL in step");

static const char *const pg_verify_sql[LX_V_COUNT] = {
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
    [LX_V_BALANCES] = "WITH e AS (SELECT plan_id, to_account AS account_id, amount::numeric AS d"
                      " FROM ledger_postings UNION ALL SELECT plan_id, from_account,"
                      " -(amount::numeric) FROM ledger_postings),"
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
                      " WHERE (NOT may_go_negative AND own::numeric - held_debit < 0)"
                      " OR held_debit < 0 OR held_credit < 0 ORDER BY id" ROWS_MAX_SQL,
};

static int pg_snapshot_begin(void *conn)
{
    return run_cmd(conn, "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY", 0, NULL);
}

static void pg_snapshot_end(void *conn)
{
    (void)run_cmd(conn, "COMMIT", 0, NULL);
}

static int pg_query_text(void *conn, enum lx_check check, lx_row_fn fn, void *ctx)
{
    assert(check < LX_V_COUNT);
    PGresult *r = NULL;
    int rc = run(conn, pg_verify_sql[check], 0, NULL, PGRES_TUPLES_OK, &r);
    if (rc != KS_OK)
        return rc;
    int ncols = PQnfields(r);
    const char *cols[16];
    if (ncols > 16)
        rc = KS_ERR_INTERNAL;
    for (int i = 0; rc == KS_OK && i < PQntuples(r); i++) {
        for (int c = 0; c < ncols; c++)
            cols[c] = PQgetisnull(r, i, c) ? NULL : PQgetvalue(r, i, c);
        rc = fn(ctx, cols, ncols);
    }
    PQclear(r);
    return rc;
}

const struct lx_backend lx_pg_backend = {
    .kind = "postgres",
    .load_plans = pg_load_plans,
    .load_accounts = pg_load_accounts,
    .flush = pg_flush,
    .tx_end = pg_tx_end,
    .account_get = pg_account_get,
    .accounts_list = pg_accounts_list,
    .plan_get = pg_plan_get,
    .postings_read = pg_postings_read,
    .snapshot_begin = pg_snapshot_begin,
    .snapshot_end = pg_snapshot_end,
    .query_text = pg_query_text,
};
