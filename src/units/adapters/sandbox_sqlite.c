/*
 * sandbox_sqlite.c — the sandbox acquirer's SQL for SQLite (see sandbox_int.h).
 *
 * Writes run on the store's single writer inside BEGIN IMMEDIATE, so a row read here cannot
 * change before the transaction commits: `lock` needs no SQL of its own.
 */
#include <assert.h>
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "units/adapters/sandbox_int.h"

/* The SQLite result code as a kassa code: a constraint or a busy database is worth another
 * try (the caller's session is retried), anything else is an I/O failure. */
static int sq_err(int rc)
{
    int primary = rc & 0xff;
    if (primary == SQLITE_CONSTRAINT || primary == SQLITE_BUSY || primary == SQLITE_LOCKED)
        return KS_ERR_RETRY;
    if (primary == SQLITE_NOMEM)
        return KS_ERR_NOMEM;
    return KS_ERR_IO;
}

/* Binds `v` as text, or NULL when it is empty. */
static int bind_text(sqlite3_stmt *st, int i, const char *v)
{
    if (!v || !*v)
        return sqlite3_bind_null(st, i);
    return sqlite3_bind_text(st, i, v, -1, SQLITE_TRANSIENT);
}

static int col_text(sqlite3_stmt *st, int i, char *dst, size_t cap)
{
    return ks_sandbox_copy(dst, cap, (const char *)sqlite3_column_text(st, i));
}

/* Reads the KS_SANDBOX_COLUMNS of the current row. */
static int row_read(sqlite3_stmt *st, struct ks_sandbox_op *o)
{
    memset(o, 0, sizeof(*o));
    o->pos = sqlite3_column_int64(st, 0);
    o->amount = sqlite3_column_int64(st, 6);
    o->deadline_ms = sqlite3_column_int64(st, 18);
    o->attempts = sqlite3_column_int64(st, 19);
    o->inquiries = sqlite3_column_int64(st, 20);
    o->created_ms = sqlite3_column_int64(st, 21);
    o->updated_ms = sqlite3_column_int64(st, 22);
    if (col_text(st, 1, o->session_id, sizeof(o->session_id)) ||
        col_text(st, 2, o->kind, sizeof(o->kind)) ||
        col_text(st, 3, o->invoice_id, sizeof(o->invoice_id)) ||
        col_text(st, 4, o->payment_id, sizeof(o->payment_id)) ||
        col_text(st, 5, o->refund_id, sizeof(o->refund_id)) ||
        col_text(st, 7, o->currency, sizeof(o->currency)) ||
        col_text(st, 8, o->card_mask, sizeof(o->card_mask)) ||
        col_text(st, 9, o->payment_system, sizeof(o->payment_system)) ||
        col_text(st, 10, o->scenario, sizeof(o->scenario)) ||
        col_text(st, 11, o->status, sizeof(o->status)) ||
        col_text(st, 12, o->failure_code, sizeof(o->failure_code)) ||
        col_text(st, 13, o->failure_reason, sizeof(o->failure_reason)) ||
        col_text(st, 14, o->provider_trx, sizeof(o->provider_trx)) ||
        col_text(st, 15, o->rrn, sizeof(o->rrn)) ||
        col_text(st, 16, o->approval_code, sizeof(o->approval_code)) ||
        col_text(st, 17, o->callback_tag, sizeof(o->callback_tag)))
        return KS_ERR_INTERNAL; /* only the sandbox writes this table, and it checks sizes */
    return KS_OK;
}

/* Runs a prepared query expected to give at most one row. */
static int one_row(sqlite3_stmt *st, struct ks_sandbox_op *out)
{
    int step = sqlite3_step(st);
    if (step == SQLITE_ROW)
        return row_read(st, out);
    return step == SQLITE_DONE ? KS_ERR_NOT_FOUND : sq_err(step);
}

static int sq_load(void *conn, const char *session_id, int lock, struct ks_sandbox_op *out)
{
    (void)lock; /* BEGIN IMMEDIATE on the single writer already excludes other writers */
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        conn, "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations WHERE session_id = ?1", -1,
        &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, session_id);
    rc = one_row(st, out);
    sqlite3_finalize(st);
    return rc;
}

static int sq_load_auth(void *conn, const char *invoice_id, const char *payment_id, int lock,
                        struct ks_sandbox_op *out)
{
    (void)lock;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn,
                                "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                " WHERE invoice_id = ?1 AND payment_id = ?2 AND kind = 'authorize'"
                                " ORDER BY pos DESC LIMIT 1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, invoice_id);
    bind_text(st, 2, payment_id);
    rc = one_row(st, out);
    sqlite3_finalize(st);
    return rc;
}

static int sq_load_by_tag(void *conn, const char *tag, struct ks_sandbox_op *out)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn,
                                "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations"
                                " WHERE callback_tag = ?1 ORDER BY pos DESC LIMIT 1",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, tag);
    rc = one_row(st, out);
    sqlite3_finalize(st);
    return rc;
}

static int sq_totals(void *conn, const char *invoice_id, const char *payment_id,
                     struct ks_sandbox_totals *out)
{
    memset(out, 0, sizeof(*out));
    sqlite3_stmt *st = NULL;
    /* Amounts are summed in C, not SQL, so an overflow is caught rather than turned into a
     * float (SQLite's sum()) or an error mid-query. A payment has a handful of operations. */
    int rc = sqlite3_prepare_v2(conn,
                                "SELECT kind, amount FROM sandbox_operations"
                                " WHERE invoice_id = ?1 AND payment_id = ?2"
                                " AND status = 'succeeded'",
                                -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, invoice_id);
    bind_text(st, 2, payment_id);
    int step = SQLITE_DONE;
    rc = KS_OK;
    while ((step = sqlite3_step(st)) == SQLITE_ROW) {
        const char *kind = (const char *)sqlite3_column_text(st, 0);
        int64_t amount = sqlite3_column_int64(st, 1);
        int64_t *sum = NULL;
        if (kind && strcmp(kind, "capture") == 0)
            sum = &out->captured;
        else if (kind && strcmp(kind, "refund") == 0)
            sum = &out->refunded;
        else if (kind && strcmp(kind, "cancel") == 0)
            out->cancelled = 1;
        if (sum && __builtin_add_overflow(*sum, amount, sum)) {
            rc = KS_ERR_INTERNAL;
            break;
        }
    }
    if (rc == KS_OK && step != SQLITE_DONE)
        rc = sq_err(step);
    sqlite3_finalize(st);
    return rc;
}

static int sq_insert(void *conn, struct ks_sandbox_op *o)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        conn,
        "INSERT INTO sandbox_operations (session_id, kind, invoice_id, payment_id, refund_id,"
        " amount, currency, card_mask, payment_system, scenario, status, failure_code,"
        " failure_reason, provider_trx, rrn, approval_code, callback_tag, deadline_at, attempts,"
        " inquiries, created_at, updated_at)"
        " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17,"
        " ?18, ?19, ?20, ?21, ?22)",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, o->session_id);
    bind_text(st, 2, o->kind);
    bind_text(st, 3, o->invoice_id);
    bind_text(st, 4, o->payment_id);
    bind_text(st, 5, o->refund_id);
    sqlite3_bind_int64(st, 6, o->amount);
    bind_text(st, 7, o->currency);
    bind_text(st, 8, o->card_mask);
    bind_text(st, 9, o->payment_system);
    bind_text(st, 10, o->scenario);
    bind_text(st, 11, o->status);
    bind_text(st, 12, o->failure_code);
    bind_text(st, 13, o->failure_reason);
    bind_text(st, 14, o->provider_trx);
    bind_text(st, 15, o->rrn);
    bind_text(st, 16, o->approval_code);
    bind_text(st, 17, o->callback_tag);
    sqlite3_bind_int64(st, 18, o->deadline_ms);
    sqlite3_bind_int64(st, 19, o->attempts);
    sqlite3_bind_int64(st, 20, o->inquiries);
    sqlite3_bind_int64(st, 21, o->created_ms);
    sqlite3_bind_int64(st, 22, o->updated_ms);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return sq_err(step);
    o->pos = sqlite3_last_insert_rowid(conn);
    return KS_OK;
}

static int sq_update(void *conn, const struct ks_sandbox_op *o)
{
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(
        conn,
        "UPDATE sandbox_operations SET status = ?2, failure_code = ?3, failure_reason = ?4,"
        " provider_trx = ?5, rrn = ?6, approval_code = ?7, callback_tag = ?8, deadline_at = ?9,"
        " attempts = ?10, inquiries = ?11, updated_at = ?12 WHERE session_id = ?1",
        -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    bind_text(st, 1, o->session_id);
    bind_text(st, 2, o->status);
    bind_text(st, 3, o->failure_code);
    bind_text(st, 4, o->failure_reason);
    bind_text(st, 5, o->provider_trx);
    bind_text(st, 6, o->rrn);
    bind_text(st, 7, o->approval_code);
    bind_text(st, 8, o->callback_tag);
    sqlite3_bind_int64(st, 9, o->deadline_ms);
    sqlite3_bind_int64(st, 10, o->attempts);
    sqlite3_bind_int64(st, 11, o->inquiries);
    sqlite3_bind_int64(st, 12, o->updated_ms);
    int step = sqlite3_step(st);
    sqlite3_finalize(st);
    if (step != SQLITE_DONE)
        return sq_err(step);
    return sqlite3_changes(conn) == 1 ? KS_OK : KS_ERR_NOT_FOUND;
}

static int sq_list(void *conn, const struct ks_sandbox_filter *f, struct ks_sandbox_op *out,
                   size_t *n)
{
    /* The statement is put together from fixed fragments only (which filters are present);
     * every value is a bound parameter. */
    char sql[512];
    int len = snprintf(sql, sizeof(sql),
                       "SELECT " KS_SANDBOX_COLUMNS " FROM sandbox_operations WHERE pos > ?1%s%s%s"
                       " ORDER BY pos LIMIT ?5",
                       f->invoice_id && *f->invoice_id ? " AND invoice_id = ?2" : "",
                       f->payment_id && *f->payment_id ? " AND payment_id = ?3" : "",
                       f->session_id && *f->session_id ? " AND session_id = ?4" : "");
    assert(len > 0 && (size_t)len < sizeof(sql));
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(conn, sql, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return sq_err(rc);
    sqlite3_bind_int64(st, 1, f->after_pos);
    if (f->invoice_id && *f->invoice_id)
        bind_text(st, 2, f->invoice_id);
    if (f->payment_id && *f->payment_id)
        bind_text(st, 3, f->payment_id);
    if (f->session_id && *f->session_id)
        bind_text(st, 4, f->session_id);
    sqlite3_bind_int64(st, 5, (sqlite3_int64)f->limit);
    *n = 0;
    int step = SQLITE_DONE;
    rc = KS_OK;
    while (*n < f->limit && (step = sqlite3_step(st)) == SQLITE_ROW) {
        rc = row_read(st, &out[*n]);
        if (rc != KS_OK)
            break;
        (*n)++;
    }
    if (rc == KS_OK && *n < f->limit && step != SQLITE_DONE)
        rc = sq_err(step);
    sqlite3_finalize(st);
    return rc;
}

const struct ks_sandbox_db ks_sandbox_sqlite_db = {
    .load = sq_load,
    .load_auth = sq_load_auth,
    .load_by_tag = sq_load_by_tag,
    .totals = sq_totals,
    .insert = sq_insert,
    .update = sq_update,
    .list = sq_list,
};
