/*
 * sandbox_sql.c — the sandbox acquirer's SQL, once for both stores, on the SQL layer
 * (store/sql.h; contract in sandbox_int.h, table in sandbox_migrations/001_sandbox.sql).
 *
 * Writes run inside ks_sql_tx. On SQLite that is the single writer inside BEGIN IMMEDIATE, so a
 * row read here cannot change before the transaction commits and `lock` needs nothing. On
 * PostgreSQL (READ COMMITTED, a pooled connection) two sessions that race on one payment are
 * serialised by the lock on its authorization row (`lock`: {{for_update}}), taken before any
 * limit is checked; two runs of one session id race on the UNIQUE constraint, and the loser is
 * told to try again (KS_ERR_RETRY), when it finds the winner's row.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "store/sql.h"
#include "units/adapters/sandbox_int.h"

/* A conflict (another run of the session inserted first), a deadlock or a busy database is
 * worth another try of the session. */
static int retryable(int rc)
{
    return rc == KS_ERR_CONFLICT ? KS_ERR_RETRY : rc;
}

/* Reads the KS_SANDBOX_COLUMNS of the current row. */
static int row_read(struct ks_sql_stmt *q, struct ks_sandbox_op *o)
{
    memset(o, 0, sizeof(*o));
    o->pos = ks_sql_col_i64(q, 0);
    o->amount = ks_sql_col_i64(q, 6);
    o->deadline_ms = ks_sql_col_i64(q, 18);
    o->attempts = ks_sql_col_i64(q, 19);
    o->inquiries = ks_sql_col_i64(q, 20);
    o->created_ms = ks_sql_col_i64(q, 21);
    o->updated_ms = ks_sql_col_i64(q, 22);
    if (ks_sql_col_count(q) != KS_SANDBOX_COLUMNS_N ||
        ks_sandbox_copy(o->session_id, sizeof(o->session_id), ks_sql_col_text(q, 1)) ||
        ks_sandbox_copy(o->kind, sizeof(o->kind), ks_sql_col_text(q, 2)) ||
        ks_sandbox_copy(o->invoice_id, sizeof(o->invoice_id), ks_sql_col_text(q, 3)) ||
        ks_sandbox_copy(o->payment_id, sizeof(o->payment_id), ks_sql_col_text(q, 4)) ||
        ks_sandbox_copy(o->refund_id, sizeof(o->refund_id), ks_sql_col_text(q, 5)) ||
        ks_sandbox_copy(o->currency, sizeof(o->currency), ks_sql_col_text(q, 7)) ||
        ks_sandbox_copy(o->card_mask, sizeof(o->card_mask), ks_sql_col_text(q, 8)) ||
        ks_sandbox_copy(o->payment_system, sizeof(o->payment_system), ks_sql_col_text(q, 9)) ||
        ks_sandbox_copy(o->scenario, sizeof(o->scenario), ks_sql_col_text(q, 10)) ||
        ks_sandbox_copy(o->status, sizeof(o->status), ks_sql_col_text(q, 11)) ||
        ks_sandbox_copy(o->failure_code, sizeof(o->failure_code), ks_sql_col_text(q, 12)) ||
        ks_sandbox_copy(o->failure_reason, sizeof(o->failure_reason), ks_sql_col_text(q, 13)) ||
        ks_sandbox_copy(o->provider_trx, sizeof(o->provider_trx), ks_sql_col_text(q, 14)) ||
        ks_sandbox_copy(o->rrn, sizeof(o->rrn), ks_sql_col_text(q, 15)) ||
        ks_sandbox_copy(o->approval_code, sizeof(o->approval_code), ks_sql_col_text(q, 16)) ||
        ks_sandbox_copy(o->callback_tag, sizeof(o->callback_tag), ks_sql_col_text(q, 17)))
        return KS_ERR_INTERNAL; /* only the sandbox writes this table, and it checks sizes */
    return KS_OK;
}

/* Runs a prepared query expected to give at most one row; resets it. */
static int one_row(struct ks_sql_stmt *q, struct ks_sandbox_op *out)
{
    int step = ks_sql_step(q), rc = KS_OK;
    if (step == KS_SQL_ROW)
        rc = row_read(q, out);
    int done = ks_sql_done(q);
    if (step < 0)
        return retryable(step);
    if (rc != KS_OK || done != KS_OK)
        return rc != KS_OK ? rc : done;
    return step == KS_SQL_ROW ? KS_OK : KS_ERR_NOT_FOUND;
}

static int sql_load(struct ks_sql *conn, const char *session_id, int lock,
                    struct ks_sandbox_op *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(conn,
                            lock ? "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                   " WHERE session_id = ?1{{for_update}}"
                                 : "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                   " WHERE session_id = ?1",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text_opt(q, 1, session_id);
    return one_row(q, out);
}

static int sql_load_auth(struct ks_sql *conn, const char *invoice_id, const char *payment_id,
                         int lock, struct ks_sandbox_op *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(conn,
                            lock ? "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                   " WHERE invoice_id = ?1 AND payment_id = ?2"
                                   " AND kind = 'authorize' ORDER BY pos DESC LIMIT 1{{for_update}}"
                                 : "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                   " WHERE invoice_id = ?1 AND payment_id = ?2"
                                   " AND kind = 'authorize' ORDER BY pos DESC LIMIT 1",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text_opt(q, 1, invoice_id);
    ks_sql_bind_text_opt(q, 2, payment_id);
    return one_row(q, out);
}

static int sql_load_by_tag(struct ks_sql *conn, const char *tag, struct ks_sandbox_op *out)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(conn,
                            "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                            " WHERE callback_tag = ?1 ORDER BY pos DESC LIMIT 1",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text_opt(q, 1, tag);
    return one_row(q, out);
}

static int sql_totals(struct ks_sql *conn, const char *invoice_id, const char *payment_id,
                      struct ks_sandbox_totals *out)
{
    memset(out, 0, sizeof(*out));
    struct ks_sql_stmt *q = NULL;
    /* Amounts are summed in C, not SQL, so an overflow is caught rather than turned into a
     * float (SQLite's sum()) or an error mid-query. A payment has a handful of operations. */
    int rc = ks_sql_prepare(conn,
                            "SELECT kind, amount FROM sandbox_operations"
                            " WHERE invoice_id = ?1 AND payment_id = ?2 AND status = 'succeeded'",
                            &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text_opt(q, 1, invoice_id);
    ks_sql_bind_text_opt(q, 2, payment_id);
    int step = KS_OK;
    while (rc == KS_OK && (step = ks_sql_step(q)) == KS_SQL_ROW) {
        const char *kind = ks_sql_col_str(q, 0);
        int64_t amount = ks_sql_col_i64(q, 1);
        int64_t *sum = NULL;
        if (strcmp(kind, "capture") == 0)
            sum = &out->captured;
        else if (strcmp(kind, "refund") == 0)
            sum = &out->refunded;
        else if (strcmp(kind, "cancel") == 0)
            out->cancelled = 1;
        if (sum && __builtin_add_overflow(*sum, amount, sum))
            rc = KS_ERR_INTERNAL;
    }
    int done = ks_sql_done(q);
    if (rc != KS_OK)
        return rc;
    return retryable(step < 0 ? step : done);
}

static int sql_insert(struct ks_sql *conn, struct ks_sandbox_op *o)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        conn,
        "INSERT INTO sandbox_operations (session_id, kind, invoice_id, payment_id, refund_id,"
        " amount, currency, card_mask, payment_system, scenario, status, failure_code,"
        " failure_reason, provider_trx, rrn, approval_code, callback_tag, deadline_at, attempts,"
        " inquiries, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
        " ?18, ?19, ?20, ?21, ?22) RETURNING pos",
        &q);
    if (rc != KS_OK)
        return retryable(rc);
    /* The table keeps NULL where a field does not apply: empty strings are bound as NULL. */
    ks_sql_bind_text_opt(q, 1, o->session_id);
    ks_sql_bind_text_opt(q, 2, o->kind);
    ks_sql_bind_text_opt(q, 3, o->invoice_id);
    ks_sql_bind_text_opt(q, 4, o->payment_id);
    ks_sql_bind_text_opt(q, 5, o->refund_id);
    ks_sql_bind_i64(q, 6, o->amount);
    ks_sql_bind_text_opt(q, 7, o->currency);
    ks_sql_bind_text_opt(q, 8, o->card_mask);
    ks_sql_bind_text_opt(q, 9, o->payment_system);
    ks_sql_bind_text_opt(q, 10, o->scenario);
    ks_sql_bind_text_opt(q, 11, o->status);
    ks_sql_bind_text_opt(q, 12, o->failure_code);
    ks_sql_bind_text_opt(q, 13, o->failure_reason);
    ks_sql_bind_text_opt(q, 14, o->provider_trx);
    ks_sql_bind_text_opt(q, 15, o->rrn);
    ks_sql_bind_text_opt(q, 16, o->approval_code);
    ks_sql_bind_text_opt(q, 17, o->callback_tag);
    ks_sql_bind_i64(q, 18, o->deadline_ms);
    ks_sql_bind_i64(q, 19, o->attempts);
    ks_sql_bind_i64(q, 20, o->inquiries);
    ks_sql_bind_i64(q, 21, o->created_ms);
    ks_sql_bind_i64(q, 22, o->updated_ms);
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW) {
        o->pos = ks_sql_col_i64(q, 0);
        step = ks_sql_step(q); /* to the end of the statement */
    } else if (step == KS_OK) {
        step = KS_ERR_INTERNAL; /* RETURNING gives the row */
    }
    int done = ks_sql_done(q);
    return retryable(step < 0 ? step : done);
}

static int sql_update(struct ks_sql *conn, const struct ks_sandbox_op *o)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        conn,
        "UPDATE sandbox_operations SET status = ?2, failure_code = ?3, failure_reason = ?4,"
        " provider_trx = ?5, rrn = ?6, approval_code = ?7, callback_tag = ?8, deadline_at = ?9,"
        " attempts = ?10, inquiries = ?11, updated_at = ?12 WHERE session_id = ?1",
        &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_text_opt(q, 1, o->session_id);
    ks_sql_bind_text_opt(q, 2, o->status);
    ks_sql_bind_text_opt(q, 3, o->failure_code);
    ks_sql_bind_text_opt(q, 4, o->failure_reason);
    ks_sql_bind_text_opt(q, 5, o->provider_trx);
    ks_sql_bind_text_opt(q, 6, o->rrn);
    ks_sql_bind_text_opt(q, 7, o->approval_code);
    ks_sql_bind_text_opt(q, 8, o->callback_tag);
    ks_sql_bind_i64(q, 9, o->deadline_ms);
    ks_sql_bind_i64(q, 10, o->attempts);
    ks_sql_bind_i64(q, 11, o->inquiries);
    ks_sql_bind_i64(q, 12, o->updated_ms);
    rc = ks_sql_exec(q);
    if (rc != KS_OK)
        return retryable(rc);
    return ks_sql_changes(q) == 1 ? KS_OK : KS_ERR_NOT_FOUND;
}

static int sql_list(struct ks_sql *conn, const struct ks_sandbox_filter *f,
                    struct ks_sandbox_op *out, size_t *n)
{
    /* The statement is put together from fixed fragments only (which filters are present);
     * every value is a bound parameter, an absent filter's as NULL. */
    bool inv = f->invoice_id && *f->invoice_id, pay = f->payment_id && *f->payment_id,
         ses = f->session_id && *f->session_id;
    char sql[512];
    int len = snprintf(sql, sizeof(sql),
                       "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations WHERE pos > ?1%s%s%s"
                       " ORDER BY pos LIMIT ?5",
                       inv ? " AND invoice_id = ?2" : "", pay ? " AND payment_id = ?3" : "",
                       ses ? " AND session_id = ?4" : "");
    assert(len > 0 && (size_t)len < sizeof(sql));
    (void)len;
    struct ks_sql_stmt *q = NULL;
    *n = 0;
    int rc = ks_sql_prepare(conn, sql, &q);
    if (rc != KS_OK)
        return retryable(rc);
    ks_sql_bind_i64(q, 1, f->after_pos);
    ks_sql_bind_text_opt(q, 2, f->invoice_id);
    ks_sql_bind_text_opt(q, 3, f->payment_id);
    ks_sql_bind_text_opt(q, 4, f->session_id);
    ks_sql_bind_i64(q, 5, (int64_t)f->limit);
    int step = KS_OK;
    while (rc == KS_OK && *n < f->limit && (step = ks_sql_step(q)) == KS_SQL_ROW)
        if ((rc = row_read(q, &out[*n])) == KS_OK)
            (*n)++;
    int done = ks_sql_done(q);
    if (rc != KS_OK)
        return rc;
    return retryable(step < 0 ? step : done);
}

const struct ks_sandbox_db ks_sandbox_sql_db = {
    .load = sql_load,
    .load_auth = sql_load_auth,
    .load_by_tag = sql_load_by_tag,
    .totals = sql_totals,
    .insert = sql_insert,
    .update = sql_update,
    .list = sql_list,
};
