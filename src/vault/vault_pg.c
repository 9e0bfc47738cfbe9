/*
 * vault_pg.c — the vault's SQL on PostgreSQL (tables from migrations/pg/003_vault.sql and
 * 005_payment_resources.sql).
 *
 * `conn` is a pooled `PGconn *`, inside BEGIN ... COMMIT for ks_store_with_tx. Parameters go as
 * text, except ciphertexts, which go and come back as binary bytea; results are read in binary
 * format. Several nodes share the tables, so the statements that must not race say how they
 * avoid it (the current key is read FOR SHARE; re-encryption updates only a row still under the
 * key it was read with).
 */
#include <libpq-fe.h>
#include <stdio.h>
#include <string.h>

#include "vault/vault_int.h"

#define PG_UNIQUE_VIOLATION "23505"
#define PG_KEY_READS_MAX 3 /* reads of the current key while a rotation switches it */

static const char *const rec_select[] = {
    [KS_VAULT_T_CARDS] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                         " FROM vault_cards r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
    [KS_VAULT_T_CVV] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                       " FROM vault_cvv r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
};

/* Runs a statement with `n` parameters; `binary` marks which ones are bytea (the others are
 * text). Results come in binary format. NULL only when out of memory. */
static PGresult *run(PGconn *pg, const char *sql, int n, const char *const *vals, const int *lens,
                     const int *binary)
{
    return PQexecParams(pg, sql, n, NULL, vals, lens, binary, 1);
}

/* Maps a result to KS_OK / KS_ERR_CONFLICT (unique violation) / KS_ERR_IO and clears it. */
static int done(PGresult *r, ExecStatusType want, int64_t *changes)
{
    int rc = KS_ERR_IO;
    if (r && PQresultStatus(r) == want) {
        rc = KS_OK;
        if (changes) {
            const char *t = PQcmdTuples(r);
            int64_t v = 0;
            for (; t && *t >= '0' && *t <= '9'; t++)
                v = v * 10 + (*t - '0');
            *changes = v;
        }
    } else if (r) {
        const char *state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
        if (state && strcmp(state, PG_UNIQUE_VIOLATION) == 0)
            rc = KS_ERR_CONFLICT;
    }
    PQclear(r);
    return rc;
}

static bool get_text(const PGresult *r, int row, int col, char *out, size_t cap)
{
    size_t n = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
    if (n >= cap)
        return false;
    memcpy(out, PQgetvalue(r, row, col), n);
    out[n] = '\0';
    return true;
}

static bool get_blob(const PGresult *r, int row, int col, unsigned char *out, size_t cap,
                     size_t *len)
{
    size_t n = PQgetisnull(r, row, col) ? 0 : (size_t)PQgetlength(r, row, col);
    *len = 0;
    if (n > cap)
        return false;
    memcpy(out, PQgetvalue(r, row, col), n);
    *len = n;
    return true;
}

/* A binary int8 (network byte order). */
static bool get_i64(const PGresult *r, int row, int col, int64_t *out)
{
    if (PQgetisnull(r, row, col) || PQgetlength(r, row, col) != 8)
        return false;
    const unsigned char *p = (const unsigned char *)PQgetvalue(r, row, col);
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    *out = (int64_t)v;
    return true;
}

static int rec_read(const PGresult *r, int row, struct ks_vault_rec *out)
{
    memset(out, 0, sizeof(*out));
    if (!get_text(r, row, 0, out->token, sizeof(out->token)) ||
        !get_text(r, row, 1, out->key_id, sizeof(out->key_id)) ||
        !get_blob(r, row, 2, out->sealed, sizeof(out->sealed), &out->sealed_len) ||
        !get_i64(r, row, 3, &out->created_at_ms) ||
        !get_text(r, row, 4, out->key.master_id, sizeof(out->key.master_id)) ||
        !get_blob(r, row, 5, out->key.wrapped, sizeof(out->key.wrapped), &out->key.wrapped_len))
        return KS_ERR_IO;
    if (!PQgetisnull(r, row, 5))
        memcpy(out->key.key_id, out->key_id, sizeof(out->key_id));
    return KS_OK;
}

static void fmt_i64(char *out, size_t cap, int64_t v)
{
    snprintf(out, cap, "%lld", (long long)v);
}

static int pg_key_current(void *conn, struct ks_vault_keyrow *out)
{
    /* FOR SHARE: a rotation's UPDATE of this row waits until our card is committed, so no card
     * is ever written under a key that a rotation has already retired and swept. When we are
     * the one who waited, the row we waited for is no longer current and the new one is not in
     * this statement's snapshot, so the statement finds nothing: read again (READ COMMITTED
     * takes a new snapshot per statement). */
    int rc = KS_ERR_IO;
    for (int attempt = 0; attempt < PG_KEY_READS_MAX; attempt++) {
        PGresult *r = run(conn,
                          "SELECT key_id, master_id, wrapped FROM vault_keys WHERE is_current = 1"
                          " FOR SHARE",
                          0, NULL, NULL, NULL);
        memset(out, 0, sizeof(*out));
        rc = KS_ERR_IO;
        if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
            if (PQntuples(r) == 0)
                rc = KS_ERR_NOT_FOUND;
            else if (get_text(r, 0, 0, out->key_id, sizeof(out->key_id)) &&
                     get_text(r, 0, 1, out->master_id, sizeof(out->master_id)) &&
                     get_blob(r, 0, 2, out->wrapped, sizeof(out->wrapped), &out->wrapped_len))
                rc = KS_OK;
        }
        PQclear(r);
        if (rc != KS_ERR_NOT_FOUND)
            break;
    }
    return rc;
}

static int pg_key_make_current(void *conn, const struct ks_vault_keyrow *k, int64_t now_ms)
{
    int rc = done(
        run(conn, "UPDATE vault_keys SET is_current = 0 WHERE is_current = 1", 0, NULL, NULL, NULL),
        PGRES_COMMAND_OK, NULL);
    if (rc != KS_OK)
        return rc;
    char at[24];
    fmt_i64(at, sizeof(at), now_ms);
    const char *vals[] = {k->key_id, k->master_id, (const char *)k->wrapped, at};
    int lens[] = {0, 0, (int)k->wrapped_len, 0};
    int bin[] = {0, 0, 1, 0};
    return done(run(conn,
                    "INSERT INTO vault_keys (key_id, master_id, wrapped, is_current, created_at)"
                    " VALUES ($1::text, $2::text, $3::bytea, 1, $4::bigint)",
                    4, vals, lens, bin),
                PGRES_COMMAND_OK, NULL);
}

static int pg_card_insert(void *conn, const struct ks_vault_rec *rec, const char *bin4,
                          const char *last4, const char *payment_system,
                          const struct ks_vault_binding *b)
{
    char at[24], until[24];
    fmt_i64(at, sizeof(at), rec->created_at_ms);
    fmt_i64(until, sizeof(until), b ? b->valid_until_ms : 0);
    const char *vals[] = {rec->token,
                          rec->key_id,
                          (const char *)rec->sealed,
                          bin4,
                          last4,
                          payment_system,
                          at,
                          b ? b->resource_id : NULL,
                          b ? b->invoice_id : NULL,
                          until,
                          b ? "0" : "1"};
    int lens[] = {0, 0, (int)rec->sealed_len, 0, 0, 0, 0, 0, 0, 0, 0};
    int bin[] = {0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0};
    return done(run(conn,
                    "INSERT INTO vault_cards (token, key_id, sealed, bin, last4, payment_system,"
                    " created_at, resource_id, invoice_id, valid_until, claimed)"
                    " VALUES ($1::text, $2::text, $3::bytea, $4::text, $5::text, $6::text,"
                    " $7::bigint, $8::text, $9::text, $10::bigint, $11::integer)",
                    11, vals, lens, bin),
                PGRES_COMMAND_OK, NULL);
}

static int pg_cvv_insert(void *conn, const struct ks_vault_rec *rec)
{
    char at[24];
    fmt_i64(at, sizeof(at), rec->created_at_ms);
    const char *vals[] = {rec->token, rec->key_id, (const char *)rec->sealed, at};
    int lens[] = {0, 0, (int)rec->sealed_len, 0};
    int bin[] = {0, 0, 1, 0};
    return done(run(conn,
                    "INSERT INTO vault_cvv (token, key_id, sealed, created_at)"
                    " VALUES ($1::text, $2::text, $3::bytea, $4::bigint)",
                    4, vals, lens, bin),
                PGRES_COMMAND_OK, NULL);
}

static int pg_cvv_delete(void *conn, const char *token)
{
    const char *vals[] = {token};
    return done(run(conn, "DELETE FROM vault_cvv WHERE token = $1::text", 1, vals, NULL, NULL),
                PGRES_COMMAND_OK, NULL);
}

static int pg_cvv_sweep(void *conn, int64_t cutoff_ms, int limit, int64_t *deleted)
{
    char cut[24], lim[24];
    fmt_i64(cut, sizeof(cut), cutoff_ms);
    fmt_i64(lim, sizeof(lim), limit);
    const char *vals[] = {cut, lim};
    /* SKIP LOCKED: two nodes sweeping at once split the rows instead of waiting. */
    return done(run(conn,
                    "DELETE FROM vault_cvv WHERE token IN (SELECT token FROM vault_cvv"
                    " WHERE created_at <= $1::bigint ORDER BY created_at LIMIT $2::bigint"
                    " FOR UPDATE SKIP LOCKED)",
                    2, vals, NULL, NULL),
                PGRES_COMMAND_OK, deleted);
}

static int pg_card_claim(void *conn, const char *token, const char *invoice_id, int64_t now_ms,
                         char *resource_id, size_t cap, int64_t *valid_until_ms)
{
    /* FOR UPDATE: a sweep on another node either deleted the row first (we find nothing) or
     * waits for this claim and then skips the row (its DELETE re-checks claimed = 0). */
    const char *vals[] = {token};
    PGresult *r = run(conn,
                      "SELECT resource_id, invoice_id, valid_until FROM vault_cards"
                      " WHERE token = $1::text FOR UPDATE",
                      1, vals, NULL, NULL);
    int rc = KS_ERR_IO;
    char bound[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1];
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK) {
        if (PQntuples(r) == 0)
            rc = KS_ERR_NOT_FOUND;
        else if (get_text(r, 0, 0, resource_id, cap) && get_text(r, 0, 1, bound, sizeof(bound)) &&
                 get_i64(r, 0, 2, valid_until_ms))
            rc = PQgetisnull(r, 0, 0) || strcmp(bound, invoice_id) != 0 || *valid_until_ms <= now_ms
                     ? KS_ERR_REJECTED
                     : KS_OK;
    }
    PQclear(r);
    if (rc != KS_OK)
        return rc;
    return done(
        run(conn, "UPDATE vault_cards SET claimed = 1 WHERE token = $1::text", 1, vals, NULL, NULL),
        PGRES_COMMAND_OK, NULL);
}

static int pg_card_token(void *conn, const char *resource_id, char *token, size_t cap)
{
    const char *vals[] = {resource_id};
    PGresult *r = run(conn, "SELECT token FROM vault_cards WHERE resource_id = $1::text", 1, vals,
                      NULL, NULL);
    int rc = KS_ERR_IO;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK)
        rc = PQntuples(r) == 0               ? KS_ERR_NOT_FOUND
             : get_text(r, 0, 0, token, cap) ? KS_OK
                                             : KS_ERR_IO;
    PQclear(r);
    return rc;
}

static int pg_card_delete(void *conn, const char *token, int64_t *deleted)
{
    const char *vals[] = {token};
    int rc = pg_cvv_delete(conn, token);
    if (rc != KS_OK)
        return rc;
    return done(run(conn, "DELETE FROM vault_cards WHERE token = $1::text", 1, vals, NULL, NULL),
                PGRES_COMMAND_OK, deleted);
}

static int pg_card_sweep(void *conn, int64_t now_ms, int limit, int64_t *deleted)
{
    char now[24], lim[24];
    fmt_i64(now, sizeof(now), now_ms);
    fmt_i64(lim, sizeof(lim), limit);
    const char *vals[] = {now, lim};
    /* The rows are locked first (SKIP LOCKED: a card being claimed, or another node's sweep,
     * is left alone), so a claim cannot slip in between the CVV and the card. */
    return done(run(conn,
                    "WITH doomed AS (SELECT token FROM vault_cards WHERE claimed = 0"
                    " AND valid_until > 0 AND valid_until <= $1::bigint"
                    " ORDER BY valid_until LIMIT $2::bigint FOR UPDATE SKIP LOCKED),"
                    " cvv AS (DELETE FROM vault_cvv WHERE token IN (SELECT token FROM doomed))"
                    " DELETE FROM vault_cards WHERE token IN (SELECT token FROM doomed)",
                    2, vals, NULL, NULL),
                PGRES_COMMAND_OK, deleted);
}

static int pg_stale_list(void *conn, enum ks_vault_table t, const char *key_id, const char *after,
                         int limit, struct ks_vault_rec *out, int *n)
{
    char sql[512], lim[24];
    snprintf(sql, sizeof(sql),
             "%s WHERE r.key_id <> $1::text AND r.token > $2::text ORDER BY r.token"
             " LIMIT $3::bigint",
             rec_select[t]);
    fmt_i64(lim, sizeof(lim), limit);
    const char *vals[] = {key_id, after, lim};
    PGresult *r = run(conn, sql, 3, vals, NULL, NULL);
    int rc = KS_ERR_IO;
    *n = 0;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) <= limit) {
        rc = KS_OK;
        for (int i = 0; i < PQntuples(r) && rc == KS_OK; i++)
            if ((rc = rec_read(r, i, &out[i])) == KS_OK)
                (*n)++;
    }
    PQclear(r);
    return rc;
}

static int pg_rec_rekey(void *conn, enum ks_vault_table t, const struct ks_vault_rec *rec,
                        const char *old_key_id, int *updated)
{
    static const char *const sql[] = {
        [KS_VAULT_T_CARDS] = "UPDATE vault_cards SET key_id = $1::text, sealed = $2::bytea"
                             " WHERE token = $3::text AND key_id = $4::text",
        [KS_VAULT_T_CVV] = "UPDATE vault_cvv SET key_id = $1::text, sealed = $2::bytea"
                           " WHERE token = $3::text AND key_id = $4::text",
    };
    const char *vals[] = {rec->key_id, (const char *)rec->sealed, rec->token, old_key_id};
    int lens[] = {0, (int)rec->sealed_len, 0, 0};
    int bin[] = {0, 1, 0, 0};
    int64_t changes = 0;
    int rc = done(run(conn, sql[t], 4, vals, lens, bin), PGRES_COMMAND_OK, &changes);
    *updated = (int)changes;
    return rc;
}

static int pg_keys_prune(void *conn, int64_t *deleted)
{
    return done(run(conn,
                    "DELETE FROM vault_keys k WHERE is_current = 0"
                    " AND NOT EXISTS (SELECT 1 FROM vault_cards c WHERE c.key_id = k.key_id)"
                    " AND NOT EXISTS (SELECT 1 FROM vault_cvv v WHERE v.key_id = k.key_id)",
                    0, NULL, NULL, NULL),
                PGRES_COMMAND_OK, deleted);
}

static int pg_rec_get(void *conn, enum ks_vault_table t, const char *token,
                      struct ks_vault_rec *out)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "%s WHERE r.token = $1::text", rec_select[t]);
    const char *vals[] = {token};
    PGresult *r = run(conn, sql, 1, vals, NULL, NULL);
    int rc = KS_ERR_IO;
    if (r && PQresultStatus(r) == PGRES_TUPLES_OK)
        rc = PQntuples(r) == 0 ? KS_ERR_NOT_FOUND : rec_read(r, 0, out);
    PQclear(r);
    return rc;
}

const struct ks_vault_sql ks_vault_sql_pg = {
    .key_current = pg_key_current,
    .key_make_current = pg_key_make_current,
    .card_insert = pg_card_insert,
    .cvv_insert = pg_cvv_insert,
    .cvv_delete = pg_cvv_delete,
    .cvv_sweep = pg_cvv_sweep,
    .stale_list = pg_stale_list,
    .rec_rekey = pg_rec_rekey,
    .keys_prune = pg_keys_prune,
    .card_claim = pg_card_claim,
    .card_token = pg_card_token,
    .card_delete = pg_card_delete,
    .card_sweep = pg_card_sweep,
    .rec_get = pg_rec_get,
};
