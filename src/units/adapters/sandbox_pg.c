/*
 * sandbox_pg.c — the sandbox acquirer's SQL for PostgreSQL (see sandbox_int.h).
 *
 * Transactions run at READ COMMITTED on a pooled connection. Two sessions that race on one
 * payment are serialised by the lock on its authorization row (`lock` = SELECT ... FOR UPDATE),
 * taken before any limit is checked; two runs of one session id race on the UNIQUE constraint,
 * and the loser is told to try again (KS_ERR_RETRY), when it finds the winner's row.
 */
#include <assert.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "units/adapters/sandbox_int.h"

/* A failed statement as a kassa code: a unique violation, a serialization failure or a
 * deadlock are worth another try; a broken connection is an I/O failure. */
static int pg_err(const PGresult *r)
{
    if (!r)
        return KS_ERR_IO;
    const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state &&
        (strcmp(state, "23505") == 0 || strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0))
        return KS_ERR_RETRY;
    return KS_ERR_IO;
}

static void fmt_i64(char buf[24], int64_t v)
{
    snprintf(buf, 24, "%lld", (long long)v);
}

static int64_t get_i64(const PGresult *r, int row, int col)
{
    return strtoll(PQgetvalue(r, row, col), NULL, 10);
}

/* NULL for an empty string: the table keeps NULL where a field does not apply. */
static const char *nul(const char *s)
{
    return s && *s ? s : NULL;
}

static int col_text(const PGresult *r, int row, int col, char *dst, size_t cap)
{
    return ks_sandbox_copy(dst, cap, PQgetisnull(r, row, col) ? NULL : PQgetvalue(r, row, col));
}

static int row_read(const PGresult *r, int i, struct ks_sandbox_op *o)
{
    memset(o, 0, sizeof(*o));
    o->pos = get_i64(r, i, 0);
    o->amount = get_i64(r, i, 6);
    o->deadline_ms = get_i64(r, i, 18);
    o->attempts = get_i64(r, i, 19);
    o->inquiries = get_i64(r, i, 20);
    o->created_ms = get_i64(r, i, 21);
    o->updated_ms = get_i64(r, i, 22);
    if (col_text(r, i, 1, o->session_id, sizeof(o->session_id)) ||
        col_text(r, i, 2, o->kind, sizeof(o->kind)) ||
        col_text(r, i, 3, o->invoice_id, sizeof(o->invoice_id)) ||
        col_text(r, i, 4, o->payment_id, sizeof(o->payment_id)) ||
        col_text(r, i, 5, o->refund_id, sizeof(o->refund_id)) ||
        col_text(r, i, 7, o->currency, sizeof(o->currency)) ||
        col_text(r, i, 8, o->card_mask, sizeof(o->card_mask)) ||
        col_text(r, i, 9, o->payment_system, sizeof(o->payment_system)) ||
        col_text(r, i, 10, o->scenario, sizeof(o->scenario)) ||
        col_text(r, i, 11, o->status, sizeof(o->status)) ||
        col_text(r, i, 12, o->failure_code, sizeof(o->failure_code)) ||
        col_text(r, i, 13, o->failure_reason, sizeof(o->failure_reason)) ||
        col_text(r, i, 14, o->provider_trx, sizeof(o->provider_trx)) ||
        col_text(r, i, 15, o->rrn, sizeof(o->rrn)) ||
        col_text(r, i, 16, o->approval_code, sizeof(o->approval_code)) ||
        col_text(r, i, 17, o->callback_tag, sizeof(o->callback_tag)))
        return KS_ERR_INTERNAL; /* only the sandbox writes this table, and it checks sizes */
    return KS_OK;
}

/* Runs a query expected to give at most one row of KS_SANDBOX_COLUMNS. */
static int one_row(PGconn *pg, const char *sql, int nparams, const char *const *params,
                   struct ks_sandbox_op *out)
{
    PGresult *r = PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(r) != PGRES_TUPLES_OK)
        rc = pg_err(r);
    else if (PQntuples(r) == 0)
        rc = KS_ERR_NOT_FOUND;
    else
        rc = PQnfields(r) == KS_SANDBOX_COLUMNS_N ? row_read(r, 0, out) : KS_ERR_INTERNAL;
    PQclear(r);
    return rc;
}

static int pg_load(void *conn, const char *session_id, int lock, struct ks_sandbox_op *out)
{
    const char *p[] = {session_id};
    return one_row(conn,
                   lock ? "SELECT " KS_SANDBOX_COLUMNS
                          " FROM sandbox_operations WHERE session_id = $1 FOR UPDATE"
                        : "SELECT " KS_SANDBOX_COLUMNS
                          " FROM sandbox_operations WHERE session_id = $1",
                   1, p, out);
}

static int pg_load_auth(void *conn, const char *invoice_id, const char *payment_id, int lock,
                        struct ks_sandbox_op *out)
{
    const char *p[] = {invoice_id, payment_id};
    return one_row(conn,
                   lock ? "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                          " WHERE invoice_id = $1 AND payment_id = $2 AND kind = 'authorize'"
                          " ORDER BY pos DESC LIMIT 1 FOR UPDATE"
                        : "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                          " WHERE invoice_id = $1 AND payment_id = $2 AND kind = 'authorize'"
                          " ORDER BY pos DESC LIMIT 1",
                   2, p, out);
}

static int pg_load_by_tag(void *conn, const char *tag, struct ks_sandbox_op *out)
{
    const char *p[] = {tag};
    return one_row(conn,
                   "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                   " WHERE callback_tag = $1 ORDER BY pos DESC LIMIT 1",
                   1, p, out);
}

static int pg_totals(void *conn, const char *invoice_id, const char *payment_id,
                     struct ks_sandbox_totals *out)
{
    memset(out, 0, sizeof(*out));
    const char *p[] = {invoice_id, payment_id};
    /* Summed in C so that an overflow is caught here (see the SQLite twin). */
    PGresult *r = PQexecParams(conn,
                               "SELECT kind, amount FROM sandbox_operations"
                               " WHERE invoice_id = $1 AND payment_id = $2"
                               " AND status = 'succeeded'",
                               2, NULL, p, NULL, NULL, 0);
    int rc = KS_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_err(r);
        goto out;
    }
    for (int i = 0; i < PQntuples(r); i++) {
        const char *kind = PQgetvalue(r, i, 0);
        int64_t amount = get_i64(r, i, 1);
        int64_t *sum = NULL;
        if (strcmp(kind, "capture") == 0)
            sum = &out->captured;
        else if (strcmp(kind, "refund") == 0)
            sum = &out->refunded;
        else if (strcmp(kind, "cancel") == 0)
            out->cancelled = 1;
        if (sum && __builtin_add_overflow(*sum, amount, sum)) {
            rc = KS_ERR_INTERNAL;
            goto out;
        }
    }
out:
    PQclear(r);
    return rc;
}

static int pg_insert(void *conn, struct ks_sandbox_op *o)
{
    char amount[24], deadline[24], attempts[24], inquiries[24], created[24], updated[24];
    fmt_i64(amount, o->amount);
    fmt_i64(deadline, o->deadline_ms);
    fmt_i64(attempts, o->attempts);
    fmt_i64(inquiries, o->inquiries);
    fmt_i64(created, o->created_ms);
    fmt_i64(updated, o->updated_ms);
    const char *p[] = {o->session_id,
                       o->kind,
                       o->invoice_id,
                       o->payment_id,
                       nul(o->refund_id),
                       amount,
                       o->currency,
                       nul(o->card_mask),
                       nul(o->payment_system),
                       o->scenario,
                       o->status,
                       nul(o->failure_code),
                       nul(o->failure_reason),
                       nul(o->provider_trx),
                       nul(o->rrn),
                       nul(o->approval_code),
                       nul(o->callback_tag),
                       deadline,
                       attempts,
                       inquiries,
                       created,
                       updated};
    PGresult *r = PQexecParams(
        conn,
        "INSERT INTO sandbox_operations (session_id, kind, invoice_id, payment_id, refund_id,"
        " amount, currency, card_mask, payment_system, scenario, status, failure_code,"
        " failure_reason, provider_trx, rrn, approval_code, callback_tag, deadline_at, attempts,"
        " inquiries, created_at, updated_at)"
        " VALUES ($1, $2, $3, $4, $5, $6::bigint, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16,"
        " $17, $18::bigint, $19::bigint, $20::bigint, $21::bigint, $22::bigint) RETURNING pos",
        (int)(sizeof(p) / sizeof(p[0])), NULL, p, NULL, NULL, 0);
    int rc = KS_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1)
        rc = pg_err(r);
    else
        o->pos = get_i64(r, 0, 0);
    PQclear(r);
    return rc;
}

static int pg_update(void *conn, const struct ks_sandbox_op *o)
{
    char deadline[24], attempts[24], inquiries[24], updated[24];
    fmt_i64(deadline, o->deadline_ms);
    fmt_i64(attempts, o->attempts);
    fmt_i64(inquiries, o->inquiries);
    fmt_i64(updated, o->updated_ms);
    const char *p[] = {o->session_id,
                       o->status,
                       nul(o->failure_code),
                       nul(o->failure_reason),
                       nul(o->provider_trx),
                       nul(o->rrn),
                       nul(o->approval_code),
                       nul(o->callback_tag),
                       deadline,
                       attempts,
                       inquiries,
                       updated};
    PGresult *r = PQexecParams(
        conn,
        "UPDATE sandbox_operations SET status = $2, failure_code = $3, failure_reason = $4,"
        " provider_trx = $5, rrn = $6, approval_code = $7, callback_tag = $8,"
        " deadline_at = $9::bigint, attempts = $10::bigint, inquiries = $11::bigint,"
        " updated_at = $12::bigint WHERE session_id = $1",
        (int)(sizeof(p) / sizeof(p[0])), NULL, p, NULL, NULL, 0);
    int rc;
    if (PQresultStatus(r) != PGRES_COMMAND_OK)
        rc = pg_err(r);
    else
        rc = strcmp(PQcmdTuples(r), "1") == 0 ? KS_OK : KS_ERR_NOT_FOUND;
    PQclear(r);
    return rc;
}

static int pg_list(void *conn, const struct ks_sandbox_filter *f, struct ks_sandbox_op *out,
                   size_t *n)
{
    /* PostgreSQL wants every $n it is given to appear in the text, so the fragments present
     * are numbered in order; the statement is made of fixed fragments only. */
    const char *params[5];
    char after[24], limit[24];
    fmt_i64(after, f->after_pos);
    fmt_i64(limit, (int64_t)f->limit);
    int np = 0;
    params[np++] = after;
    char sql[640], cond[160] = "";
    size_t cl = 0;
    const struct {
        const char *column, *value;
    } filters[] = {
        {"invoice_id", f->invoice_id},
        {"payment_id", f->payment_id},
        {"session_id", f->session_id},
    };
    for (size_t i = 0; i < sizeof(filters) / sizeof(filters[0]); i++) {
        const char *v = filters[i].value;
        if (!v || !*v)
            continue;
        params[np++] = v;
        int w = snprintf(cond + cl, sizeof(cond) - cl, " AND %s = $%d", filters[i].column, np);
        assert(w > 0 && (size_t)w < sizeof(cond) - cl);
        cl += (size_t)w;
    }
    params[np++] = limit;
    int len = snprintf(sql, sizeof(sql),
                       "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                       " WHERE pos > $1::bigint%s ORDER BY pos LIMIT $%d::bigint",
                       cond, np);
    assert(len > 0 && (size_t)len < sizeof(sql));
    (void)len;

    *n = 0;
    PGresult *r = PQexecParams(conn, sql, np, NULL, params, NULL, NULL, 0);
    int rc = KS_OK;
    if (PQresultStatus(r) != PGRES_TUPLES_OK) {
        rc = pg_err(r);
        goto out;
    }
    if (PQnfields(r) != KS_SANDBOX_COLUMNS_N) {
        rc = KS_ERR_INTERNAL;
        goto out;
    }
    for (int i = 0; i < PQntuples(r) && *n < f->limit; i++) {
        rc = row_read(r, i, &out[*n]);
        if (rc != KS_OK)
            goto out;
        (*n)++;
    }
out:
    PQclear(r);
    return rc;
}

const struct ks_sandbox_db ks_sandbox_pg_db = {
    .load = pg_load,
    .load_auth = pg_load_auth,
    .load_by_tag = pg_load_by_tag,
    .totals = pg_totals,
    .insert = pg_insert,
    .update = pg_update,
    .list = pg_list,
};
