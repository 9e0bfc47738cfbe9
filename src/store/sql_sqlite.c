/*
 * sql_sqlite.c — the SQL layer's SQLite part (contract in sql.h, shared parts in sql.c).
 *
 * `conn` is the store's `sqlite3 *`: the single writer inside ks_sql_tx (BEGIN IMMEDIATE, so
 * nothing else writes until the transaction ends: locks are no-ops), a read connection
 * otherwise. Batches and per-key queries simply run the prepared statement once per row or key.
 *
 * Statements stay prepared on their connection (SQLITE_PREPARE_PERSISTENT) and the next call on
 * that connection finds them again by their text, so a module's transaction does not parse its
 * SQL every time (parsing was about a tenth of a payment's CPU). A connection keeps up to
 * SQ_KEPT_MAX statements; past that, or while its kept twin is in use by the same call, a text is
 * prepared for the call and finalised after it. The store calls ks_sql_sqlite_forget before it
 * closes a connection.
 */
#include <assert.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "store/sql_int.h"

static int sq_error(struct ks_sql *db, int rc)
{
    ks_sql_set_errmsg(db, sqlite3_errmsg(db->conn));
    switch (rc & 0xff) {
    case SQLITE_CONSTRAINT: return KS_ERR_CONFLICT;
    case SQLITE_BUSY:
    case SQLITE_LOCKED: return KS_ERR_RETRY;
    case SQLITE_NOMEM: return KS_ERR_NOMEM;
    default: return KS_ERR_IO;
    }
}

/* --- statements kept prepared per connection ------------------------------------------------ */

#define SQ_KEPT_MAX 128

struct sq_kept {
    uint64_t hash; /* of the text */
    sqlite3_stmt *q;
    bool in_use; /* handed to a statement of the running call */
};

/* One connection's kept statements. Only the thread using the connection touches `items`. */
struct sq_conn_cache {
    sqlite3 *conn;
    struct sq_kept items[SQ_KEPT_MAX];
    size_t n;
    struct sq_conn_cache *next;
};

static pthread_mutex_t caches_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sq_conn_cache *caches; /* every connection's, guarded by caches_mu */

/* `conn`'s cache, made on first use; NULL without memory (statements are then per call). */
static struct sq_conn_cache *conn_cache(sqlite3 *conn)
{
    pthread_mutex_lock(&caches_mu);
    struct sq_conn_cache *c = caches;
    while (c && c->conn != conn)
        c = c->next;
    if (!c && (c = calloc(1, sizeof(*c))) != NULL) {
        c->conn = conn;
        c->next = caches;
        caches = c;
    }
    pthread_mutex_unlock(&caches_mu);
    return c;
}

void ks_sql_sqlite_forget(void *conn)
{
    pthread_mutex_lock(&caches_mu);
    struct sq_conn_cache **link = &caches;
    while (*link && (*link)->conn != conn)
        link = &(*link)->next;
    struct sq_conn_cache *c = *link;
    if (c)
        *link = c->next;
    pthread_mutex_unlock(&caches_mu);
    if (!c)
        return;
    for (size_t i = 0; i < c->n; i++)
        sqlite3_finalize(c->items[i].q);
    free(c);
}

static int sq_prepare(struct ks_sql_stmt *st)
{
    struct ks_sql *db = st->db;
    if (!db->conn_cache)
        db->conn_cache = conn_cache(db->conn);
    struct sq_conn_cache *c = db->conn_cache;
    uint64_t h = ks_sql_hash(KS_SQL_HASH_SEED, st->text, strlen(st->text));
    bool keep = false;
    if (c) {
        for (size_t i = 0; i < c->n; i++) {
            struct sq_kept *k = &c->items[i];
            if (k->hash == h && !k->in_use && strcmp(sqlite3_sql(k->q), st->text) == 0) {
                k->in_use = true;
                st->handle = k->q;
                st->kept = k;
                return KS_OK;
            }
        }
        keep = c->n < SQ_KEPT_MAX;
    }
    sqlite3_stmt *q = NULL;
    int rc = sqlite3_prepare_v3(db->conn, st->text, -1, keep ? SQLITE_PREPARE_PERSISTENT : 0, &q,
                                NULL);
    if (rc != SQLITE_OK) {
        sqlite3_finalize(q);
        return sq_error(db, rc);
    }
    st->handle = q;
    if (keep) {
        struct sq_kept *k = &c->items[c->n++];
        *k = (struct sq_kept){.hash = h, .q = q, .in_use = true};
        st->kept = k;
    }
    return KS_OK;
}

static void sq_reset(struct ks_sql_stmt *st)
{
    if (st->handle) {
        sqlite3_reset(st->handle);
        sqlite3_clear_bindings(st->handle);
    }
}

/* A kept statement is reset for the next call; any other is finalised. */
static void sq_finalize(struct ks_sql_stmt *st)
{
    if (st->kept) {
        sq_reset(st);
        ((struct sq_kept *)st->kept)->in_use = false;
        st->kept = NULL;
    } else {
        sqlite3_finalize(st->handle);
    }
    st->handle = NULL;
}

/* Binds st->params to the prepared statement; the values stay borrowed (SQLITE_STATIC). */
static int bind_params(struct ks_sql_stmt *st)
{
    sqlite3_stmt *q = st->handle;
    int rc = SQLITE_OK;
    for (int i = 0; rc == SQLITE_OK && i < st->nparams; i++) {
        const struct ks_sql_param *p = &st->params[i];
        switch (p->type) {
        case KS_SQL_T_TEXT:
            rc = p->p ? sqlite3_bind_text(q, i + 1, p->p, (int)p->n, SQLITE_STATIC)
                      : sqlite3_bind_null(q, i + 1);
            break;
        case KS_SQL_T_I64:
        case KS_SQL_T_BOOL: rc = sqlite3_bind_int64(q, i + 1, p->i64); break;
        case KS_SQL_T_BLOB: rc = sqlite3_bind_blob(q, i + 1, p->p, (int)p->n, SQLITE_STATIC); break;
        default: rc = sqlite3_bind_null(q, i + 1); break;
        }
    }
    return rc == SQLITE_OK ? KS_OK : sq_error(st->db, rc);
}

/* One step: KS_SQL_ROW, KS_OK at the end (changes counted), or an error. */
static int step_once(struct ks_sql_stmt *st)
{
    int rc = sqlite3_step(st->handle);
    if (rc == SQLITE_ROW)
        return KS_SQL_ROW;
    if (rc == SQLITE_DONE) {
        st->changes = sqlite3_changes64(st->db->conn);
        return KS_OK;
    }
    return sq_error(st->db, rc);
}

static int sq_step(struct ks_sql_stmt *st)
{
    if (!st->running) {
        int rc = bind_params(st);
        if (rc != KS_OK)
            return rc;
    }
    return step_once(st);
}

static int sq_ncols(struct ks_sql_stmt *st)
{
    return sqlite3_column_count(st->handle);
}

static bool sq_is_null(struct ks_sql_stmt *st, int col)
{
    return sqlite3_column_type(st->handle, col) == SQLITE_NULL;
}

static const char *sq_text(struct ks_sql_stmt *st, int col)
{
    return (const char *)sqlite3_column_text(st->handle, col);
}

static bool sq_i64(struct ks_sql_stmt *st, int col, int64_t *out)
{
    switch (sqlite3_column_type(st->handle, col)) {
    case SQLITE_INTEGER: *out = sqlite3_column_int64(st->handle, col); return true;
    case SQLITE_TEXT:
        return ks_sql_parse_i64((const char *)sqlite3_column_text(st->handle, col), out);
    default: return false;
    }
}

static bool sq_blob(struct ks_sql_stmt *st, int col, void *dst, size_t cap, size_t *len)
{
    const void *b = sqlite3_column_blob(st->handle, col);
    size_t n = b ? (size_t)sqlite3_column_bytes(st->handle, col) : 0;
    if (n > cap)
        return false;
    if (n)
        memcpy(dst, b, n);
    *len = n;
    return true;
}

static int sq_batch_add(struct ks_sql_stmt *st)
{
    int64_t before = st->changes; /* the rows of the batch so far */
    int rc = bind_params(st);
    if (rc == KS_OK) {
        rc = step_once(st);
        st->changes = before + (rc == KS_OK ? st->changes : 0);
        if (rc == KS_SQL_ROW)
            rc = KS_ERR_INTERNAL; /* a batch statement returns no rows */
    }
    sqlite3_reset(st->handle);
    memset(st->params, 0, sizeof(st->params));
    return rc;
}

static int sq_batch_run(struct ks_sql_stmt *st)
{
    (void)st; /* every row ran as it was added */
    return KS_OK;
}

static int sq_each_key(struct ks_sql_stmt *st, const char *const *keys, size_t n, ks_sql_row_fn fn,
                       void *ctx)
{
    int rc = KS_OK;
    for (size_t k = 0; rc == KS_OK && k < n; k++) {
        sqlite3_reset(st->handle);
        int b = sqlite3_bind_text(st->handle, 1, keys[k], -1, SQLITE_STATIC);
        if (b != SQLITE_OK)
            return sq_error(st->db, b);
        while (rc == KS_OK && (rc = step_once(st)) == KS_SQL_ROW) {
            rc = fn(ctx, k, st);
            if (rc == KS_OK && st->err != KS_OK)
                rc = st->err;
        }
    }
    sqlite3_reset(st->handle);
    return rc;
}

static int sq_lock(struct ks_sql *db, int32_t space, const int32_t *keys, size_t n)
{
    (void)db, (void)space, (void)keys, (void)n; /* the writer is alone */
    return KS_OK;
}

static int sq_exec_script(struct ks_sql *db, const char *sql)
{
    char *err = NULL;
    int rc = sqlite3_exec(db->conn, sql, NULL, NULL, &err);
    if (rc == SQLITE_OK)
        return KS_OK;
    int code = sq_error(db, rc);
    if (err)
        ks_sql_set_errmsg(db, err);
    sqlite3_free(err);
    return code;
}

static int sq_migrate_lock(struct ks_sql *db)
{
    (void)db; /* BEGIN IMMEDIATE on the single writer already serialises */
    return KS_OK;
}

const struct ks_sql_engine ks_sql_sqlite_engine = {
    .dialect = KS_SQL_SQLITE,
    .marks = KS_SQL_MARKS_QN,
    .snapshot_begin = "BEGIN",
    .prepare = sq_prepare,
    .reset = sq_reset,
    .finalize = sq_finalize,
    .step = sq_step,
    .ncols = sq_ncols,
    .is_null = sq_is_null,
    .text = sq_text,
    .i64 = sq_i64,
    .blob = sq_blob,
    .batch_add = sq_batch_add,
    .batch_run = sq_batch_run,
    .each_key = sq_each_key,
    .lock = sq_lock,
    .exec_script = sq_exec_script,
    .migrate_lock = sq_migrate_lock,
};
