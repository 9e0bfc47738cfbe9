/*
 * vault_sql.c — the vault's SQL, once for both stores, on the SQL layer (store/sql.h). Tables:
 * migrations/001_vault.sql and 002_payment_resources.sql; contract: vault_int.h.
 *
 * `db` is the writer inside ks_sql_tx (SQLite: the single writer, so nothing else writes until
 * the transaction ends; PostgreSQL: a pooled connection at READ COMMITTED, where several nodes
 * share the tables) or a reader inside ks_sql_read. The statements that must not race across
 * nodes say how they avoid it: the current key is read FOR SHARE, a claimed card FOR UPDATE,
 * sweeps take their rows FOR UPDATE SKIP LOCKED (the fragments are empty on SQLite), and
 * re-encryption updates only a row still under the key it was read with. Table names come from
 * a fixed list; every value is a bound parameter.
 */
#include <stdio.h>
#include <string.h>

#include "store/sql.h"
#include "vault/vault_int.h"

#define KEY_READS_MAX 3 /* reads of the current key while a rotation switches it */

static const char *const rec_select[] = {
    [KS_VAULT_T_CARDS] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                         " FROM vault_cards r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
    [KS_VAULT_T_CVV] = "SELECT r.token, r.key_id, r.sealed, r.created_at, k.master_id, k.wrapped"
                       " FROM vault_cvv r LEFT JOIN vault_keys k ON k.key_id = r.key_id",
};

/* Runs a prepared statement that returns no rows; `*changes` (if not NULL) gets the rows it
 * touched. */
static int run(struct ks_sql_stmt *q, int64_t *changes)
{
    int rc = ks_sql_exec(q);
    if (rc == KS_OK && changes)
        *changes = ks_sql_changes(q);
    return rc;
}

/* Reads the six columns of rec_select into `r`; false when one does not fit. */
static bool rec_read(struct ks_sql_stmt *q, struct ks_vault_rec *r)
{
    memset(r, 0, sizeof(*r));
    bool ok = ks_sql_col_copy(q, 0, r->token, sizeof(r->token)) &&
              ks_sql_col_copy(q, 1, r->key_id, sizeof(r->key_id)) &&
              ks_sql_col_blob(q, 2, r->sealed, sizeof(r->sealed), &r->sealed_len) &&
              ks_sql_col_copy(q, 4, r->key.master_id, sizeof(r->key.master_id)) &&
              ks_sql_col_blob(q, 5, r->key.wrapped, sizeof(r->key.wrapped), &r->key.wrapped_len);
    r->created_at_ms = ks_sql_col_i64(q, 3);
    if (ok && !ks_sql_col_is_null(q, 5))
        memcpy(r->key.key_id, r->key_id, sizeof(r->key_id));
    return ok;
}

/* Steps a query expected to give at most one row: KS_OK with `read` applied to it, NOT_FOUND
 * without one, or the error; the statement is reset. */
static int one_row(struct ks_sql_stmt *q, bool (*read)(struct ks_sql_stmt *q, void *out), void *out)
{
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW)
        read(q, out);
    int rc = ks_sql_done(q);
    if (step < 0)
        return step;
    return rc != KS_OK ? rc : step == KS_SQL_ROW ? KS_OK : KS_ERR_NOT_FOUND;
}

static bool key_read(struct ks_sql_stmt *q, void *out)
{
    struct ks_vault_keyrow *k = out;
    return ks_sql_col_copy(q, 0, k->key_id, sizeof(k->key_id)) &&
           ks_sql_col_copy(q, 1, k->master_id, sizeof(k->master_id)) &&
           ks_sql_col_blob(q, 2, k->wrapped, sizeof(k->wrapped), &k->wrapped_len);
}

int ks_vault_db_key_current(struct ks_sql *db, struct ks_vault_keyrow *out)
{
    /* FOR SHARE: a rotation's UPDATE of this row waits until our card is committed, so no card
     * is ever written under a key that a rotation has already retired and swept. When we are
     * the one who waited, the row we waited for is no longer current and the new one is not in
     * this statement's snapshot, so the statement finds nothing: read again (READ COMMITTED
     * takes a new snapshot per statement). */
    int rc = KS_ERR_IO;
    for (int attempt = 0; attempt < KEY_READS_MAX; attempt++) {
        struct ks_sql_stmt *q = NULL;
        memset(out, 0, sizeof(*out));
        rc = ks_sql_prepare(db,
                            "SELECT key_id, master_id, wrapped FROM vault_keys"
                            " WHERE is_current = 1{{for_share}}",
                            &q);
        if (rc == KS_OK)
            rc = one_row(q, key_read, out);
        if (rc != KS_ERR_NOT_FOUND)
            break;
    }
    return rc;
}

int ks_vault_db_key_make_current(struct ks_sql *db, const struct ks_vault_keyrow *k, int64_t now_ms)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "UPDATE vault_keys SET is_current = 0 WHERE is_current = 1", &q);
    if (rc != KS_OK || (rc = run(q, NULL)) != KS_OK)
        return rc;
    rc =
        ks_sql_prepare(db,
                       "INSERT INTO vault_keys (key_id, master_id, wrapped, is_current, created_at)"
                       " VALUES (?1, ?2, ?3, 1, ?4)",
                       &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, k->key_id);
    ks_sql_bind_text(q, 2, k->master_id);
    ks_sql_bind_blob(q, 3, k->wrapped, k->wrapped_len);
    ks_sql_bind_i64(q, 4, now_ms);
    return run(q, NULL);
}

int ks_vault_db_card_insert(struct ks_sql *db, const struct ks_vault_rec *r, const char *bin,
                            const char *last4, const char *payment_system,
                            const struct ks_vault_binding *b)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "INSERT INTO vault_cards (token, key_id, sealed, bin, last4,"
                            " payment_system, created_at, resource_id, invoice_id, valid_until,"
                            " claimed) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, r->token);
    ks_sql_bind_text(q, 2, r->key_id);
    ks_sql_bind_blob(q, 3, r->sealed, r->sealed_len);
    ks_sql_bind_text(q, 4, bin);
    ks_sql_bind_text(q, 5, last4);
    ks_sql_bind_text(q, 6, payment_system);
    ks_sql_bind_i64(q, 7, r->created_at_ms);
    ks_sql_bind_text(q, 8, b ? b->resource_id : NULL);
    ks_sql_bind_text(q, 9, b ? b->invoice_id : NULL);
    ks_sql_bind_i64(q, 10, b ? b->valid_until_ms : 0);
    ks_sql_bind_i64(q, 11, b ? 0 : 1);
    return run(q, NULL);
}

int ks_vault_db_cvv_insert(struct ks_sql *db, const struct ks_vault_rec *r)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "INSERT INTO vault_cvv (token, key_id, sealed, created_at)"
                            " VALUES (?1, ?2, ?3, ?4)",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, r->token);
    ks_sql_bind_text(q, 2, r->key_id);
    ks_sql_bind_blob(q, 3, r->sealed, r->sealed_len);
    ks_sql_bind_i64(q, 4, r->created_at_ms);
    return run(q, NULL);
}

int ks_vault_db_cvv_delete(struct ks_sql *db, const char *token)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "DELETE FROM vault_cvv WHERE token = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, token);
    return run(q, NULL);
}

int ks_vault_db_cvv_sweep(struct ks_sql *db, int64_t cutoff_ms, int limit, int64_t *deleted)
{
    /* SKIP LOCKED: two nodes sweeping at once split the rows instead of waiting. */
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "DELETE FROM vault_cvv WHERE token IN (SELECT token FROM vault_cvv"
                            " WHERE created_at <= ?1 ORDER BY created_at LIMIT ?2{{skip_locked}})",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(q, 1, cutoff_ms);
    ks_sql_bind_i64(q, 2, limit);
    return run(q, deleted);
}

int ks_vault_db_stale_list(struct ks_sql *db, enum ks_vault_table t, const char *key_id,
                           const char *after, int limit, struct ks_vault_rec *out, int *n)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "%s WHERE r.key_id <> ?1 AND r.token > ?2 ORDER BY r.token LIMIT ?3",
             rec_select[t]);
    struct ks_sql_stmt *q = NULL;
    *n = 0;
    int rc = ks_sql_prepare(db, sql, &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, key_id);
    ks_sql_bind_text(q, 2, after);
    ks_sql_bind_i64(q, 3, limit);
    int step = KS_OK;
    while (*n < limit && (step = ks_sql_step(q)) == KS_SQL_ROW && rec_read(q, &out[*n]))
        (*n)++;
    rc = ks_sql_done(q);
    return step < 0 ? step : rc;
}

int ks_vault_db_rec_rekey(struct ks_sql *db, enum ks_vault_table t, const struct ks_vault_rec *r,
                          const char *old_key_id, int *updated)
{
    static const char *const sql[] = {
        [KS_VAULT_T_CARDS] = "UPDATE vault_cards SET key_id = ?1, sealed = ?2"
                             " WHERE token = ?3 AND key_id = ?4",
        [KS_VAULT_T_CVV] = "UPDATE vault_cvv SET key_id = ?1, sealed = ?2"
                           " WHERE token = ?3 AND key_id = ?4",
    };
    struct ks_sql_stmt *q = NULL;
    *updated = 0;
    int rc = ks_sql_prepare(db, sql[t], &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, r->key_id);
    ks_sql_bind_blob(q, 2, r->sealed, r->sealed_len);
    ks_sql_bind_text(q, 3, r->token);
    ks_sql_bind_text(q, 4, old_key_id);
    int64_t changes = 0;
    rc = run(q, &changes);
    *updated = (int)changes;
    return rc;
}

int ks_vault_db_keys_prune(struct ks_sql *db, int64_t *deleted)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(
        db,
        "DELETE FROM vault_keys WHERE is_current = 0"
        " AND NOT EXISTS (SELECT 1 FROM vault_cards c WHERE c.key_id = vault_keys.key_id)"
        " AND NOT EXISTS (SELECT 1 FROM vault_cvv v WHERE v.key_id = vault_keys.key_id)",
        &q);
    return rc == KS_OK ? run(q, deleted) : rc;
}

static bool rec_read_any(struct ks_sql_stmt *q, void *out)
{
    return rec_read(q, out);
}

int ks_vault_db_rec_get(struct ks_sql *db, enum ks_vault_table t, const char *token,
                        struct ks_vault_rec *out)
{
    char sql[512];
    snprintf(sql, sizeof(sql), "%s WHERE r.token = ?1", rec_select[t]);
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, sql, &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, token);
    return one_row(q, rec_read_any, out);
}

struct claim_row {
    char *resource_id;
    size_t cap;
    char bound[KS_VAULT_RESOURCE_ID_BYTES_MAX + 1];
    bool unbound;
    int64_t valid_until_ms;
};

static bool claim_read(struct ks_sql_stmt *q, void *out)
{
    struct claim_row *c = out;
    c->unbound = ks_sql_col_is_null(q, 0);
    c->valid_until_ms = ks_sql_col_i64(q, 2);
    return ks_sql_col_copy(q, 0, c->resource_id, c->cap) &&
           ks_sql_col_copy(q, 1, c->bound, sizeof(c->bound));
}

int ks_vault_db_card_claim(struct ks_sql *db, const char *token, const char *invoice_id,
                           int64_t now_ms, char *resource_id, size_t cap, int64_t *valid_until_ms)
{
    /* FOR UPDATE (PostgreSQL): a sweep on another node either deleted the row first (we find
     * nothing) or waits for this claim and then skips the row (its DELETE re-checks
     * claimed = 0). On SQLite the single writer keeps the check and the update together. */
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "SELECT resource_id, invoice_id, valid_until FROM vault_cards"
                            " WHERE token = ?1{{for_update}}",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, token);
    struct claim_row c = {.resource_id = resource_id, .cap = cap};
    if ((rc = one_row(q, claim_read, &c)) != KS_OK)
        return rc;
    *valid_until_ms = c.valid_until_ms;
    if (c.unbound || strcmp(c.bound, invoice_id) != 0 || c.valid_until_ms <= now_ms)
        return KS_ERR_REJECTED;
    if ((rc = ks_sql_prepare(db, "UPDATE vault_cards SET claimed = 1 WHERE token = ?1", &q)) !=
        KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, token);
    return run(q, NULL);
}

struct token_row {
    char *token;
    size_t cap;
};

static bool token_read(struct ks_sql_stmt *q, void *out)
{
    struct token_row *t = out;
    return ks_sql_col_copy(q, 0, t->token, t->cap);
}

int ks_vault_db_card_token(struct ks_sql *db, const char *resource_id, char *token, size_t cap)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "SELECT token FROM vault_cards WHERE resource_id = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, resource_id);
    struct token_row t = {.token = token, .cap = cap};
    return one_row(q, token_read, &t);
}

int ks_vault_db_card_delete(struct ks_sql *db, const char *token, int64_t *deleted)
{
    struct ks_sql_stmt *q = NULL;
    int rc = ks_vault_db_cvv_delete(db, token);
    if (rc != KS_OK ||
        (rc = ks_sql_prepare(db, "DELETE FROM vault_cards WHERE token = ?1", &q)) != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, token);
    return run(q, deleted);
}

int ks_vault_db_card_sweep(struct ks_sql *db, int64_t now_ms, int limit, int64_t *deleted)
{
    /* First the CVVs of the doomed cards, whose rows this takes (PostgreSQL: FOR UPDATE SKIP
     * LOCKED, so a card being claimed or another node's sweep is left alone, and no claim can
     * slip in before the card goes); then the cards among them whose CVV is gone. On SQLite the
     * single writer makes both statements pick the same rows. A card picked by the second
     * statement only (freed meanwhile) keeps its CVV and waits for the next sweep. */
    static const char *const sql[] = {
        "DELETE FROM vault_cvv WHERE token IN (SELECT token FROM vault_cards"
        " WHERE claimed = 0 AND valid_until > 0 AND valid_until <= ?1"
        " ORDER BY valid_until, token LIMIT ?2{{skip_locked}})",
        "DELETE FROM vault_cards WHERE token IN (SELECT token FROM vault_cards"
        " WHERE claimed = 0 AND valid_until > 0 AND valid_until <= ?1"
        " ORDER BY valid_until, token LIMIT ?2{{skip_locked}})"
        " AND NOT EXISTS (SELECT 1 FROM vault_cvv c WHERE c.token = vault_cards.token)",
    };
    for (int i = 0; i < 2; i++) {
        struct ks_sql_stmt *q = NULL;
        int rc = ks_sql_prepare(db, sql[i], &q);
        if (rc != KS_OK)
            return rc;
        ks_sql_bind_i64(q, 1, now_ms);
        ks_sql_bind_i64(q, 2, limit);
        if ((rc = run(q, i == 1 ? deleted : NULL)) != KS_OK)
            return rc;
    }
    return KS_OK;
}
