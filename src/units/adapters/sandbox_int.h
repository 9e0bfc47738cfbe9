/*
 * sandbox_int.h — the sandbox acquirer's private parts: its table's SQL (sandbox_sql.c, once for
 * both stores on the SQL layer, store/sql.h), behind one small table of functions.
 *
 * Every function runs on the connection of a call of the SQL layer (ks_sql_tx / ks_sql_read):
 * `conn`. All SQL is parameterised. The functions never log and never see card data (rows hold
 * the mask only).
 */
#ifndef KS_UNITS_ADAPTERS_SANDBOX_INT_H
#define KS_UNITS_ADAPTERS_SANDBOX_INT_H

#include "units/adapters/sandbox.h"

struct ks_sql;

/* What has happened to a payment's authorization so far (succeeded operations only). */
struct ks_sandbox_totals {
    int64_t captured; /* sum of succeeded captures */
    int64_t refunded; /* sum of succeeded refunds */
    int cancelled;    /* 1 if a cancel succeeded */
};

struct ks_sandbox_db {
    /* The row of `session_id` into `out`; KS_ERR_NOT_FOUND if none. In a write transaction
     * `lock` takes the row's lock until commit (PostgreSQL; SQLite's writer is already alone). */
    int (*load)(struct ks_sql *conn, const char *session_id, int lock, struct ks_sandbox_op *out);
    /* The latest authorize row of (invoice_id, payment_id), locked like `load`; NOT_FOUND. */
    int (*load_auth)(struct ks_sql *conn, const char *invoice_id, const char *payment_id, int lock,
                     struct ks_sandbox_op *out);
    /* The latest row with this callback tag; NOT_FOUND. */
    int (*load_by_tag)(struct ks_sql *conn, const char *tag, struct ks_sandbox_op *out);
    /* Sums of the payment's succeeded captures and refunds, and whether it was cancelled.
     * Overflow of a sum is KS_ERR_INTERNAL (the sandbox never records such amounts). */
    int (*totals)(struct ks_sql *conn, const char *invoice_id, const char *payment_id,
                  struct ks_sandbox_totals *out);
    /* Inserts `op` (all fields but pos) and sets op->pos. KS_ERR_RETRY when another transaction
     * inserted the same session_id first (PostgreSQL): the caller runs again and finds it. Every
     * function maps a conflict, a deadlock or a busy database to KS_ERR_RETRY. */
    int (*insert)(struct ks_sql *conn, struct ks_sandbox_op *op);
    /* Writes the mutable fields of the row of op->session_id: status, failure, transaction,
     * callback tag, deadline, attempts, inquiries, updated time. */
    int (*update)(struct ks_sql *conn, const struct ks_sandbox_op *op);
    /* Up to f->limit rows matching `f`, ascending by pos, into `out` (capacity f->limit). */
    int (*list)(struct ks_sql *conn, const struct ks_sandbox_filter *f, struct ks_sandbox_op *out,
                size_t *n);
};

extern const struct ks_sandbox_db ks_sandbox_sql_db;

/* Copies `src` (NULL = "") into `dst` of `cap` bytes; KS_ERR_INVALID if it does not fit (a row
 * the sandbox wrote always fits: every field is checked before it is written). */
int ks_sandbox_copy(char *dst, size_t cap, const char *src);

/* The SELECT list, in the order of the fields of struct ks_sandbox_op. */
#define KS_SANDBOX_COLUMNS                                                                         \
    "pos, session_id, kind, invoice_id, payment_id, refund_id, amount, currency, card_mask, "      \
    "payment_system, scenario, status, failure_code, failure_reason, provider_trx, rrn, "          \
    "approval_code, callback_tag, deadline_at, attempts, inquiries, created_at, updated_at"
#define KS_SANDBOX_COLUMNS_N 23

#endif
