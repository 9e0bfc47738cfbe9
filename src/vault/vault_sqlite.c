/*
 * vault_sqlite.c — the vault's SQL on SQLite (tables from migrations/sqlite/003_vault.sql and
 * 005_payment_resources.sql).
 *
 * `conn` is the store's `sqlite3 *`: the writer inside ks_store_with_tx (one writer, so no
 * locking is needed beyond the transaction), a read connection inside ks_store_with_reader.
 * Every statement is prepared with bound parameters; table names come from a fixed list.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <string.h>

#include "vault/vault_int.h"

static const char *const rec_select[] = {
    [KS_VAULT_T_CARDS] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                         " FROM vault_cards r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
    [KS_VAULT_T_CVV] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                       " FROM vault_cvv r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
};

/* Copies a text column into a fixed buffer; false if NULL-less and too long. */
static bool col_text(sqlite3_stmt *q, int col, char *out, size_t cap)
{
    const unsigned char *t = sqlite3_column_text(q, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(q, col) : 0;
    if (n >= cap)
        return false;
    memcpy(out, t ? (const char *)t : "", n);
    out[n] = '\0';
    return true;
}

static bool col_blob(sqlite3_stmt *q, int col, unsigned char *out, size_t cap, size_t *len)
{
    const void *b = sqlite3_column_blob(q, col);
    size_t n = b ? (size_t)sqlite3_column_bytes(q, col) : 0;
    *len = 0;
    if (n > cap)
        return false;
    if (n)
        memcpy(out, b, n);
    *len = n;
    return true;
}

static int prepare(sqlite3 *db, const char *sql, sqlite3_stmt **q)
{
    return sqlite3_prepare_v2(db, sql, -1, q, NULL) == SQLITE_OK ? KS_OK : KS_ERR_IO;
}

/* Runs a statement without rows; `*changes` (if not NULL) gets the rows it touched. */
static int step_done(sqlite3 *db, sqlite3_stmt *q, int64_t *changes)
{
    int st = sqlite3_step(q);
    int rc = st == SQLITE_DONE ? KS_OK : (st == SQLITE_CONSTRAINT ? KS_ERR_CONFLICT : KS_ERR_IO);
    if (rc == KS_OK && changes)
        *changes = sqlite3_changes(db);
    sqlite3_finalize(q);
    return rc;
}

/* Reads the six columns of rec_select into `r`. */
static int rec_read(sqlite3_stmt *q, struct ks_vault_rec *r)
{
    memset(r, 0, sizeof(*r));
    if (!col_text(q, 0, r->token, sizeof(r->token)) ||
        !col_text(q, 1, r->key_id, sizeof(r->key_id)) ||
        !col_blob(q, 2, r->sealed, sizeof(r->sealed), &r->sealed_len) ||
        !col_text(q, 4, r->key.master_id, sizeof(r->key.master_id)) ||
        !col_blob(q, 5, r->key.wrapped, sizeof(r->key.wrapped), &r->key.wrapped_len))
        return KS_ERR_IO;
    r->created_at_ms = sqlite3_column_int64(q, 3);
    if (sqlite3_column_type(q, 5) != SQLITE_NULL)
        memcpy(r->key.key_id, r->key_id, sizeof(r->key_id));
    return KS_OK;
}

static int sq_key_current(void *conn, struct ks_vault_keyrow *out)
{
    sqlite3_stmt *q = NULL;
    int rc =
        prepare(conn, "SELECT key_id, master_id, wrapped FROM vault_keys WHERE is_current = 1", &q);
    if (rc != KS_OK)
        return rc;
    memset(out, 0, sizeof(*out));
    int st = sqlite3_step(q);
    if (st == SQLITE_DONE)
        rc = KS_ERR_NOT_FOUND;
    else if (st != SQLITE_ROW || !col_text(q, 0, out->key_id, sizeof(out->key_id)) ||
             !col_text(q, 1, out->master_id, sizeof(out->master_id)) ||
             !col_blob(q, 2, out->wrapped, sizeof(out->wrapped), &out->wrapped_len))
        rc = KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_key_make_current(void *conn, const struct ks_vault_keyrow *k, int64_t now_ms)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, "UPDATE vault_keys SET is_current = 0 WHERE is_current = 1", &q);
    if (rc != KS_OK || (rc = step_done(conn, q, NULL)) != KS_OK)
        return rc;
    rc = prepare(conn,
                 "INSERT INTO vault_keys (key_id, master_id, wrapped, is_current, created_at)"
                 " VALUES (?1, ?2, ?3, 1, ?4)",
                 &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, k->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, k->master_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 3, k->wrapped, (int)k->wrapped_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, now_ms);
    return step_done(conn, q, NULL);
}

static int sq_card_insert(void *conn, const struct ks_vault_rec *r, const char *bin,
                          const char *last4, const char *payment_system,
                          const struct ks_vault_binding *b)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn,
                     "INSERT INTO vault_cards (token, key_id, sealed, bin, last4, payment_system,"
                     " created_at, resource_id, invoice_id, valid_until, claimed)"
                     " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                     &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, r->token, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 3, r->sealed, (int)r->sealed_len, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, bin, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 5, last4, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 6, payment_system, -1, SQLITE_STATIC);
    sqlite3_bind_int64(q, 7, r->created_at_ms);
    if (b) {
        sqlite3_bind_text(q, 8, b->resource_id, -1, SQLITE_STATIC);
        sqlite3_bind_text(q, 9, b->invoice_id, -1, SQLITE_STATIC);
        sqlite3_bind_int64(q, 10, b->valid_until_ms);
    } else {
        sqlite3_bind_null(q, 8);
        sqlite3_bind_null(q, 9);
        sqlite3_bind_int64(q, 10, 0);
    }
    sqlite3_bind_int(q, 11, b ? 0 : 1);
    return step_done(conn, q, NULL);
}

static int sq_cvv_insert(void *conn, const struct ks_vault_rec *r)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn,
                     "INSERT INTO vault_cvv (token, key_id, sealed, created_at)"
                     " VALUES (?1, ?2, ?3, ?4)",
                     &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, r->token, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, r->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 3, r->sealed, (int)r->sealed_len, SQLITE_STATIC);
    sqlite3_bind_int64(q, 4, r->created_at_ms);
    return step_done(conn, q, NULL);
}

static int sq_cvv_delete(void *conn, const char *token)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, "DELETE FROM vault_cvv WHERE token = ?1", &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, token, -1, SQLITE_STATIC);
    return step_done(conn, q, NULL);
}

static int sq_cvv_sweep(void *conn, int64_t cutoff_ms, int limit, int64_t *deleted)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn,
                     "DELETE FROM vault_cvv WHERE token IN (SELECT token FROM vault_cvv"
                     " WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2)",
                     &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_int64(q, 1, cutoff_ms);
    sqlite3_bind_int(q, 2, limit);
    return step_done(conn, q, deleted);
}

static int sq_stale_list(void *conn, enum ks_vault_table t, const char *key_id, const char *after,
                         int limit, struct ks_vault_rec *out, int *n)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "%s WHERE r.key_id <> ?1 AND r.token > ?2 ORDER BY r.token LIMIT ?3",
             rec_select[t]);
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, sql, &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, key_id, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 2, after, -1, SQLITE_STATIC);
    sqlite3_bind_int(q, 3, limit);
    *n = 0;
    int st = SQLITE_DONE;
    while (*n < limit && (st = sqlite3_step(q)) == SQLITE_ROW) {
        if ((rc = rec_read(q, &out[*n])) != KS_OK)
            break;
        (*n)++;
    }
    if (rc == KS_OK && *n < limit && st != SQLITE_DONE)
        rc = KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_rec_rekey(void *conn, enum ks_vault_table t, const struct ks_vault_rec *r,
                        const char *old_key_id, int *updated)
{
    static const char *const sql[] = {
        [KS_VAULT_T_CARDS] = "UPDATE vault_cards SET key_id = ?1, sealed = ?2"
                             " WHERE token = ?3 AND key_id = ?4",
        [KS_VAULT_T_CVV] = "UPDATE vault_cvv SET key_id = ?1, sealed = ?2"
                           " WHERE token = ?3 AND key_id = ?4",
    };
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, sql[t], &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, r->key_id, -1, SQLITE_STATIC);
    sqlite3_bind_blob(q, 2, r->sealed, (int)r->sealed_len, SQLITE_STATIC);
    sqlite3_bind_text(q, 3, r->token, -1, SQLITE_STATIC);
    sqlite3_bind_text(q, 4, old_key_id, -1, SQLITE_STATIC);
    int64_t changes = 0;
    rc = step_done(conn, q, &changes);
    *updated = (int)changes;
    return rc;
}

static int sq_keys_prune(void *conn, int64_t *deleted)
{
    sqlite3_stmt *q = NULL;
    int rc =
        prepare(conn,
                "DELETE FROM vault_keys WHERE is_current = 0"
                " AND NOT EXISTS (SELECT 1 FROM vault_cards c WHERE c.key_id = vault_keys.key_id)"
                " AND NOT EXISTS (SELECT 1 FROM vault_cvv v WHERE v.key_id = vault_keys.key_id)",
                &q);
    if (rc != KS_OK)
        return rc;
    return step_done(conn, q, deleted);
}

static int sq_rec_get(void *conn, enum ks_vault_table t, const char *token,
                      struct ks_vault_rec *out)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "%s WHERE r.token = ?1", rec_select[t]);
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, sql, &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, token, -1, SQLITE_STATIC);
    int st = sqlite3_step(q);
    if (st == SQLITE_ROW)
        rc = rec_read(q, out);
    else
        rc = st == SQLITE_DONE ? KS_ERR_NOT_FOUND : KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_card_claim(void *conn, const char *token, const char *invoice_id, int64_t now_ms,
                         char *resource_id, size_t cap, int64_t *valid_until_ms)
{
    /* One writer: the check and the update cannot interleave with a sweep. */
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn,
                     "SELECT resource_id, invoice_id, valid_until FROM vault_cards"
                     " WHERE token = ?1",
                     &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, token, -1, SQLITE_STATIC);
    char bound[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1];
    int st = sqlite3_step(q);
    if (st == SQLITE_DONE) {
        rc = KS_ERR_NOT_FOUND;
    } else if (st != SQLITE_ROW || !col_text(q, 0, resource_id, cap) ||
               !col_text(q, 1, bound, sizeof(bound))) {
        rc = KS_ERR_IO;
    } else {
        *valid_until_ms = sqlite3_column_int64(q, 2);
        if (sqlite3_column_type(q, 0) == SQLITE_NULL || strcmp(bound, invoice_id) != 0 ||
            *valid_until_ms <= now_ms)
            rc = KS_ERR_REJECTED;
    }
    sqlite3_finalize(q);
    if (rc != KS_OK)
        return rc;
    if ((rc = prepare(conn, "UPDATE vault_cards SET claimed = 1 WHERE token = ?1", &q)) != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, token, -1, SQLITE_STATIC);
    return step_done(conn, q, NULL);
}

static int sq_card_token(void *conn, const char *resource_id, char *token, size_t cap)
{
    sqlite3_stmt *q = NULL;
    int rc = prepare(conn, "SELECT token FROM vault_cards WHERE resource_id = ?1", &q);
    if (rc != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, resource_id, -1, SQLITE_STATIC);
    int st = sqlite3_step(q);
    if (st == SQLITE_ROW)
        rc = col_text(q, 0, token, cap) ? KS_OK : KS_ERR_IO;
    else
        rc = st == SQLITE_DONE ? KS_ERR_NOT_FOUND : KS_ERR_IO;
    sqlite3_finalize(q);
    return rc;
}

static int sq_card_delete(void *conn, const char *token, int64_t *deleted)
{
    sqlite3_stmt *q = NULL;
    int rc = sq_cvv_delete(conn, token);
    if (rc != KS_OK ||
        (rc = prepare(conn, "DELETE FROM vault_cards WHERE token = ?1", &q)) != KS_OK)
        return rc;
    sqlite3_bind_text(q, 1, token, -1, SQLITE_STATIC);
    return step_done(conn, q, deleted);
}

static int sq_card_sweep(void *conn, int64_t now_ms, int limit, int64_t *deleted)
{
    static const char *const sql[] = {
        "DELETE FROM vault_cvv WHERE token IN (SELECT token FROM vault_cards"
        " WHERE claimed = 0 AND valid_until > 0 AND valid_until <= ?1"
        " ORDER BY valid_until, token LIMIT ?2)",
        "DELETE FROM vault_cards WHERE token IN (SELECT token FROM vault_cards"
        " WHERE claimed = 0 AND valid_until > 0 AND valid_until <= ?1"
        " ORDER BY valid_until, token LIMIT ?2)",
    };
    /* One writer: both statements pick the same rows. */
    for (int i = 0; i < 2; i++) {
        sqlite3_stmt *q = NULL;
        int rc = prepare(conn, sql[i], &q);
        if (rc != KS_OK)
            return rc;
        sqlite3_bind_int64(q, 1, now_ms);
        sqlite3_bind_int(q, 2, limit);
        if ((rc = step_done(conn, q, i == 1 ? deleted : NULL)) != KS_OK)
            return rc;
    }
    return KS_OK;
}

const struct ks_vault_sql ks_vault_sql_sqlite = {
    .key_current = sq_key_current,
    .key_make_current = sq_key_make_current,
    .card_insert = sq_card_insert,
    .cvv_insert = sq_cvv_insert,
    .cvv_delete = sq_cvv_delete,
    .cvv_sweep = sq_cvv_sweep,
    .stale_list = sq_stale_list,
    .rec_rekey = sq_rec_rekey,
    .keys_prune = sq_keys_prune,
    .card_claim = sq_card_claim,
    .card_token = sq_card_token,
    .card_delete = sq_card_delete,
    .card_sweep = sq_card_sweep,
    .rec_get = sq_rec_get,
};
