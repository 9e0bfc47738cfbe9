/*
 * sql_pg.c — the SQL layer's PostgreSQL part (contract in sql.h, shared parts in sql.c).
 *
 * `conn` is a pooled `PGconn *`: inside BEGIN ... COMMIT (READ COMMITTED) for ks_sql_tx, idle
 * otherwise. Parameters go typed: text as text, int64 as int8, bool as bool, blobs as binary
 * bytea; results come back as text (bytea in its hex form, decoded here).
 *
 * Prepared statements. A statement is prepared on its connection under a name of its own
 * (ks_sql_N) the first time that connection runs its text with its parameter types, and run by
 * name from then on (PQexecPrepared: one round trip, and the server neither parses nor
 * analyses the text again; it plans again only while its plan cache finds a custom plan
 * cheaper). With the unnamed statement, parsing and planning cost a small per-key query more
 * than twice its execution, on every run. The names a connection holds are kept with the
 * connection (libpq instance data of an event procedure), forgotten when libpq resets it and
 * freed when it is closed. A connection keeps up to KS_SQL_PG_PREPARED_MAX; past that a new
 * text runs unnamed, as before. Prepared statements outlive a rolled-back transaction, so the
 * cache stays true after a failure; a statement the server no longer has (26000) or whose
 * result shape changed under it (0A000, after DDL) is forgotten, so the next call prepares it
 * again under a new name (the old one stays on the server until the connection closes).
 *
 * Batches and per-key queries are one statement each, over arrays passed as array literals
 * whose elements are quoted and escaped here:
 *   INSERT INTO t (c) VALUES (e)          -> INSERT INTO t (c) SELECT e' FROM unnest($1::T1[],
 *                                             ...) WITH ORDINALITY AS u(ks_p1, ..., ks_o)
 *                                             ORDER BY u.ks_o   (e' reads ?N as u.ks_pN)
 *   UPDATE t SET .. WHERE ..              -> UPDATE t SET .. FROM unnest(...) AS u(...) WHERE ..
 *   per-key query Q(?1)                   -> SELECT u.ks_o, q.* FROM unnest($1::text[]) WITH
 *                                             ORDINALITY AS u(ks_k, ks_o) CROSS JOIN LATERAL
 *                                             (SELECT row_number() OVER () AS ks_r, s.* FROM
 *                                             (Q(u.ks_k)) AS s) AS q ORDER BY u.ks_o, q.ks_r
 * The LATERAL subquery, kept from being flattened, makes each key an index lookup whatever the
 * planner's statistics say (a fresh table's lagging statistics once made `= ANY($1)` scan the
 * whole table) and runs the keys in the order given, so row locks in Q are taken in that order.
 */
#include <assert.h>
#include <libpq-events.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "store/sql_int.h"
#include "store/store_int.h"

#define PG_TEXTOID 25
#define PG_INT8OID 20
#define PG_BOOLOID 16
#define PG_BYTEAOID 17

static int pg_error(struct ks_sql *db, const PGresult *r)
{
    const char *msg = r ? PQresultErrorMessage(r) : PQerrorMessage(db->conn);
    ks_sql_set_errmsg(db, msg);
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (!state)
        return r ? KS_ERR_IO : KS_ERR_NOMEM;
    if (strcmp(state, "23505") == 0)
        return KS_ERR_CONFLICT;
    if (strcmp(state, "40001") == 0 || strcmp(state, "40P01") == 0)
        return KS_ERR_RETRY;
    return KS_ERR_IO;
}

static int64_t cmd_tuples(const PGresult *r)
{
    int64_t v = 0;
    for (const char *t = PQcmdTuples((PGresult *)r); t && *t >= '0' && *t <= '9'; t++)
        v = v * 10 + (*t - '0');
    return v;
}

/* --- statements prepared on a connection ------------------------------------------------------ */

struct pg_prepared {
    uint64_t hash; /* of the text and the parameter types */
    char *text;
    int n;
    Oid types[KS_SQL_PARAMS_MAX]; /* 0 where the server infers the type */
    char name[24];
};

/* What one connection has prepared; its instance data. */
struct pg_conn_cache {
    struct pg_prepared items[KS_SQL_PG_PREPARED_MAX];
    size_t n;
    uint64_t names; /* names given so far: the next is ks_sql_<names + 1> */
};

static void cache_clear(struct pg_conn_cache *c)
{
    for (size_t i = 0; i < c->n; i++)
        free(c->items[i].text);
    c->n = 0;
}

/* libpq's event procedure: the cache lives and dies with its connection. */
static int pg_event(PGEventId id, void *info, void *pass)
{
    (void)pass;
    if (id == PGEVT_CONNRESET) {
        /* A reset connection is a new session: nothing is prepared on it any more. */
        struct pg_conn_cache *c = PQinstanceData(((PGEventConnReset *)info)->conn, pg_event);
        if (c)
            cache_clear(c);
    } else if (id == PGEVT_CONNDESTROY) {
        PGconn *pg = ((PGEventConnDestroy *)info)->conn;
        struct pg_conn_cache *c = PQinstanceData(pg, pg_event);
        if (c) {
            cache_clear(c);
            free(c);
            PQsetInstanceData(pg, pg_event, NULL);
        }
    }
    return 1;
}

/* The connection's cache, attached on first use; NULL when it cannot be (no memory): then
 * statements run unnamed. */
static struct pg_conn_cache *conn_cache(PGconn *pg)
{
    struct pg_conn_cache *c = PQinstanceData(pg, pg_event);
    if (c)
        return c;
    /* 0 when already registered (a cache that could not be allocated before): set it now. */
    (void)PQregisterEventProc(pg, pg_event, "kassa sql", NULL);
    c = calloc(1, sizeof(*c));
    if (c && !PQsetInstanceData(pg, pg_event, c)) {
        free(c);
        c = NULL;
    }
    return c;
}

static uint64_t stmt_hash(const char *sql, int n, const Oid *types)
{
    uint64_t h = ks_sql_hash(KS_SQL_HASH_SEED, sql, strlen(sql));
    h = ks_sql_hash(h, &n, sizeof(n));
    return types ? ks_sql_hash(h, types, (size_t)n * sizeof(*types)) : h;
}

static bool same_types(const struct pg_prepared *p, int n, const Oid *types)
{
    if (p->n != n)
        return false;
    for (int i = 0; i < n; i++)
        if (p->types[i] != (types ? types[i] : 0))
            return false;
    return true;
}

/* The statement `sql` with these parameter types is prepared as on `db`'s connection, preparing
 * it (one round trip) the first time; `*out` stays NULL when it is to run unnamed (the cache is
 * full or could not be made). An error preparing is the statement's error. */
static int prepared(struct ks_sql *db, const char *sql, int n, const Oid *types,
                    const struct pg_prepared **out)
{
    assert(n >= 0 && n <= KS_SQL_PARAMS_MAX);
    *out = NULL;
    struct pg_conn_cache *c = conn_cache(db->conn);
    if (!c)
        return KS_OK;
    uint64_t h = stmt_hash(sql, n, types);
    for (size_t i = 0; i < c->n; i++) {
        const struct pg_prepared *p = &c->items[i];
        if (p->hash == h && same_types(p, n, types) && strcmp(p->text, sql) == 0) {
            *out = p;
            return KS_OK;
        }
    }
    if (c->n == KS_SQL_PG_PREPARED_MAX)
        return KS_OK;
    struct pg_prepared *p = &c->items[c->n];
    memset(p, 0, sizeof(*p));
    if (!(p->text = strdup(sql)))
        return KS_OK;
    p->hash = h;
    p->n = n;
    for (int i = 0; i < n; i++)
        p->types[i] = types ? types[i] : 0;
    snprintf(p->name, sizeof(p->name), "ks_sql_%llu", (unsigned long long)++c->names);
    PGresult *r = PQprepare(db->conn, p->name, sql, n, p->types);
    int rc = r && PQresultStatus(r) == PGRES_COMMAND_OK ? KS_OK : pg_error(db, r);
    PQclear(r);
    if (rc != KS_OK) {
        free(p->text);
        p->text = NULL;
        return rc;
    }
    c->n++;
    *out = p;
    return KS_OK;
}

/* Forgets a prepared statement the server no longer runs as prepared. */
static void forget(struct ks_sql *db, const struct pg_prepared *p)
{
    struct pg_conn_cache *c = PQinstanceData(db->conn, pg_event);
    assert(c != NULL && p >= c->items && p < c->items + c->n);
    size_t i = (size_t)(p - c->items);
    free(c->items[i].text);
    c->items[i] = c->items[--c->n];
}

/* Runs `sql` with `n` parameters (prepared on the connection where it can be); keeps a result
 * with rows in st->handle. */
static int run(struct ks_sql_stmt *st, const char *sql, int n, const Oid *types,
               const char *const *vals, const int *lens, const int *fmts)
{
    const struct pg_prepared *p = NULL;
    int rc = prepared(st->db, sql, n, types, &p);
    if (rc != KS_OK)
        return rc;
    PGresult *r = p ? PQexecPrepared(st->db->conn, p->name, n, vals, lens, fmts, 0)
                    : PQexecParams(st->db->conn, sql, n, types, vals, lens, fmts, 0);
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK) {
        st->changes = cmd_tuples(r);
        if (s == PGRES_TUPLES_OK) {
            st->handle = r;
            st->rows = PQntuples(r);
            st->row = -1;
            return KS_OK;
        }
        PQclear(r);
        return KS_OK;
    }
    const char *state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : NULL;
    if (p && state && (strcmp(state, "26000") == 0 || strcmp(state, "0A000") == 0))
        forget(st->db, p);
    rc = pg_error(st->db, r);
    PQclear(r);
    return rc;
}

static int pg_prepare(struct ks_sql_stmt *st)
{
    if (st->kind != KS_SQL_K_EACH)
        return KS_OK; /* the server parses it at the first step; a batch's text is made at run */
    /* The window function keeps the subquery from being pulled up into a plain join (which the
     * planner may run as a hash join over the whole table, and in any order): it stays a
     * nested loop over the keys, one lookup each, and ks_r keeps each key's rows in the order
     * the query gives them. */
    static const char head[] = "SELECT u.ks_o, q.* FROM unnest($1::text[]) WITH ORDINALITY AS"
                               " u(ks_k, ks_o) CROSS JOIN LATERAL (SELECT row_number() OVER ()"
                               " AS ks_r, s.* FROM (";
    static const char tail[] = ") AS s) AS q ORDER BY u.ks_o, q.ks_r";
    struct ks_sql_buf b = {0};
    int rc = ks_sql_buf_put(&b, head, sizeof(head) - 1, KS_SQL_STATEMENT_BYTES_MAX);
    if (rc == KS_OK)
        rc = ks_sql_buf_put(&b, st->text, strlen(st->text), KS_SQL_STATEMENT_BYTES_MAX);
    if (rc == KS_OK)
        rc = ks_sql_buf_put(&b, tail, sizeof(tail) - 1, KS_SQL_STATEMENT_BYTES_MAX);
    if (rc != KS_OK) {
        ks_sql_buf_free(&b);
        return rc;
    }
    free(st->text);
    st->text = b.p;
    return KS_OK;
}

static void pg_reset(struct ks_sql_stmt *st)
{
    PQclear(st->handle);
    st->handle = NULL;
    st->row = st->rows = 0;
    st->col_off = 0;
}

static void pg_finalize(struct ks_sql_stmt *st)
{
    pg_reset(st);
}

static int pg_step(struct ks_sql_stmt *st)
{
    if (!st->running) {
        Oid types[KS_SQL_PARAMS_MAX];
        const char *vals[KS_SQL_PARAMS_MAX];
        int lens[KS_SQL_PARAMS_MAX], fmts[KS_SQL_PARAMS_MAX];
        for (int i = 0; i < st->nparams; i++) {
            const struct ks_sql_param *p = &st->params[i];
            types[i] = 0;
            vals[i] = NULL;
            lens[i] = 0;
            fmts[i] = 0;
            switch (p->type) {
            case KS_SQL_T_TEXT:
                types[i] = PG_TEXTOID;
                vals[i] = p->p;
                break;
            case KS_SQL_T_I64:
                types[i] = PG_INT8OID;
                snprintf(st->num[i], sizeof(st->num[i]), "%lld", (long long)p->i64);
                vals[i] = st->num[i];
                break;
            case KS_SQL_T_BOOL:
                types[i] = PG_BOOLOID;
                vals[i] = p->i64 ? "t" : "f";
                break;
            case KS_SQL_T_BLOB:
                types[i] = PG_BYTEAOID;
                vals[i] = p->p;
                lens[i] = (int)p->n;
                fmts[i] = 1;
                break;
            default: break;
            }
        }
        int rc = run(st, st->text, st->nparams, types, vals, lens, fmts);
        if (rc != KS_OK || !st->handle)
            return rc;
    }
    if (!st->handle)
        return KS_OK;
    st->row++;
    return st->row < st->rows ? KS_SQL_ROW : KS_OK;
}

static bool cell_ok(const struct ks_sql_stmt *st, int col)
{
    return st->handle && st->row >= 0 && st->row < st->rows && col < PQnfields(st->handle);
}

static int pg_ncols(struct ks_sql_stmt *st)
{
    return st->handle ? PQnfields(st->handle) : 0;
}

static bool pg_is_null(struct ks_sql_stmt *st, int col)
{
    return !cell_ok(st, col) || PQgetisnull(st->handle, st->row, col);
}

static const char *pg_text(struct ks_sql_stmt *st, int col)
{
    return pg_is_null(st, col) ? NULL : PQgetvalue(st->handle, st->row, col);
}

static bool pg_i64(struct ks_sql_stmt *st, int col, int64_t *out)
{
    return ks_sql_parse_i64(pg_text(st, col), out);
}

/* A bytea in its text form: \x and two hex digits a byte. */
static bool pg_blob(struct ks_sql_stmt *st, int col, void *dst, size_t cap, size_t *len)
{
    if (pg_is_null(st, col)) {
        *len = 0;
        return true;
    }
    const char *t = PQgetvalue(st->handle, st->row, col);
    size_t tl = (size_t)PQgetlength(st->handle, st->row, col);
    if (tl < 2 || t[0] != '\\' || t[1] != 'x' || (tl - 2) % 2 != 0 || (tl - 2) / 2 > cap)
        return false;
    unsigned char *o = dst;
    for (size_t i = 0; i < (tl - 2) / 2; i++) {
        int hi = ks_hex_value(t[2 + 2 * i]), lo = ks_hex_value(t[3 + 2 * i]);
        if (hi < 0 || lo < 0)
            return false;
        o[i] = (unsigned char)(hi << 4 | lo);
    }
    *len = (tl - 2) / 2;
    return true;
}

/* --- arrays ------------------------------------------------------------------------------------
 */

static int arr_sep(struct ks_sql_buf *b)
{
    return ks_sql_buf_put(b, b->items++ ? "," : "{", 1, KS_SQL_ARRAY_BYTES_MAX);
}

/* A quoted element: every `"` and `\` escaped with a backslash. */
static int arr_text(struct ks_sql_buf *b, const char *s, size_t n)
{
    int rc = arr_sep(b);
    if (rc == KS_OK)
        rc = ks_sql_buf_put(b, "\"", 1, KS_SQL_ARRAY_BYTES_MAX);
    size_t from = 0;
    for (size_t i = 0; rc == KS_OK && i <= n; i++) {
        if (i < n && s[i] != '"' && s[i] != '\\')
            continue;
        rc = ks_sql_buf_put(b, s + from, i - from, KS_SQL_ARRAY_BYTES_MAX);
        if (rc == KS_OK && i < n)
            rc = ks_sql_buf_put(b, "\\", 1, KS_SQL_ARRAY_BYTES_MAX);
        from = i;
    }
    return rc == KS_OK ? ks_sql_buf_put(b, "\"", 1, KS_SQL_ARRAY_BYTES_MAX) : rc;
}

static int arr_word(struct ks_sql_buf *b, const char *w)
{
    int rc = arr_sep(b);
    return rc == KS_OK ? ks_sql_buf_put(b, w, strlen(w), KS_SQL_ARRAY_BYTES_MAX) : rc;
}

static int arr_close(struct ks_sql_buf *b)
{
    if (b->items == 0)
        return ks_sql_buf_put(b, "{}", 2, KS_SQL_ARRAY_BYTES_MAX);
    return ks_sql_buf_put(b, "}", 1, KS_SQL_ARRAY_BYTES_MAX);
}

static int pg_batch_add(struct ks_sql_stmt *st)
{
    int rc = KS_OK;
    for (int i = 0; rc == KS_OK && i < st->nparams; i++) {
        const struct ks_sql_param *p = &st->params[i];
        struct ks_sql_buf *b = &st->arrays[i];
        enum ks_sql_type t = p->type == KS_SQL_T_UNSET ? KS_SQL_T_NULL : p->type;
        bool is_null = t == KS_SQL_T_NULL || (t == KS_SQL_T_TEXT && !p->p);
        if (t == KS_SQL_T_BLOB)
            return KS_ERR_INTERNAL; /* not in batches */
        if (t != KS_SQL_T_NULL) {
            if (st->array_types[i] == KS_SQL_T_UNSET)
                st->array_types[i] = t;
            else if (st->array_types[i] != t)
                return KS_ERR_INTERNAL; /* one type per parameter */
        }
        if (is_null) {
            rc = arr_word(b, "NULL");
        } else if (t == KS_SQL_T_TEXT) {
            rc = arr_text(b, p->p, p->n);
        } else if (t == KS_SQL_T_BOOL) {
            rc = arr_word(b, p->i64 ? "t" : "f");
        } else {
            char num[24];
            snprintf(num, sizeof(num), "%lld", (long long)p->i64);
            rc = arr_word(b, num);
        }
    }
    memset(st->params, 0, sizeof(st->params));
    return rc;
}

/* Where the VALUES list of an INSERT ends: the index of its closing parenthesis. */
static const char *values_end(const char *open)
{
    int depth = 0;
    char quote = 0;
    for (const char *p = open; *p; p++) {
        if (quote) {
            if (*p == quote)
                quote = 0;
        } else if (*p == '\'' || *p == '"') {
            quote = *p;
        } else if (*p == '(') {
            depth++;
        } else if (*p == ')' && --depth == 0) {
            return p;
        }
    }
    return NULL;
}

/* The pieces a batch's statement is written from, in order. */
struct pieces {
    const char *p[8];
    size_t len[8];
    size_t n;
};

static void piece(struct pieces *ps, const char *p, size_t len)
{
    assert(ps->n < sizeof(ps->p) / sizeof(ps->p[0]));
    ps->p[ps->n] = p;
    ps->len[ps->n++] = len;
}

static int pg_batch_run(struct ks_sql_stmt *st)
{
    static const char *const type_names[] = {
        [KS_SQL_T_UNSET] = "text", [KS_SQL_T_NULL] = "text", [KS_SQL_T_TEXT] = "text",
        [KS_SQL_T_I64] = "int8",   [KS_SQL_T_BOOL] = "bool", [KS_SQL_T_BLOB] = "bytea",
    };
    char from[KS_SQL_PARAMS_MAX * 24], cols[KS_SQL_PARAMS_MAX * 16];
    size_t fl = 0, cl = 0;
    const char *vals[KS_SQL_PARAMS_MAX];
    int rc = KS_OK;
    for (int i = 0; i < st->nparams; i++) {
        if ((rc = arr_close(&st->arrays[i])) != KS_OK)
            return rc;
        vals[i] = st->arrays[i].p;
        int w = snprintf(from + fl, sizeof(from) - fl, "%s$%d::%s[]", i ? ", " : "", i + 1,
                         type_names[st->array_types[i]]);
        assert(w > 0 && (size_t)w < sizeof(from) - fl);
        fl += (size_t)w;
        w = snprintf(cols + cl, sizeof(cols) - cl, "%sks_p%d", i ? ", " : "", i + 1);
        assert(w > 0 && (size_t)w < sizeof(cols) - cl);
        cl += (size_t)w;
    }
    const char *text = st->text, *at = NULL, *end = NULL;
    struct pieces ps = {.n = 0};
    if (strncmp(text, "INSERT ", 7) == 0) {
        at = strstr(text, " VALUES (");
        end = at ? values_end(at + 8) : NULL;
        if (!end)
            return KS_ERR_INTERNAL;
        piece(&ps, text, (size_t)(at - text));
        piece(&ps, " SELECT ", 8);
        piece(&ps, at + 9, (size_t)(end - (at + 9)));
        piece(&ps, " FROM unnest(", 13);
        piece(&ps, from, fl);
        piece(&ps, ") WITH ORDINALITY AS u(", 23);
        piece(&ps, cols, cl);
        piece(&ps, ", ks_o) ORDER BY u.ks_o", 23);
        end++; /* the rest follows the VALUES list */
    } else if (strncmp(text, "UPDATE ", 7) == 0 && (at = strstr(text, " WHERE "))) {
        piece(&ps, text, (size_t)(at - text));
        piece(&ps, " FROM unnest(", 13);
        piece(&ps, from, fl);
        piece(&ps, ") AS u(", 7);
        piece(&ps, cols, cl);
        piece(&ps, ")", 1);
        end = at;
    } else {
        return KS_ERR_INTERNAL;
    }
    struct ks_sql_buf b = {0};
    for (size_t i = 0; rc == KS_OK && i < ps.n; i++)
        rc = ks_sql_buf_put(&b, ps.p[i], ps.len[i], KS_SQL_STATEMENT_BYTES_MAX);
    if (rc == KS_OK)
        rc = ks_sql_buf_put(&b, end, strlen(end), KS_SQL_STATEMENT_BYTES_MAX);
    if (rc == KS_OK)
        rc = run(st, b.p, st->nparams, NULL, vals, NULL, NULL);
    ks_sql_buf_free(&b);
    return rc;
}

/* --- keys, locks, scripts ------------------------------------------------------------------------
 */

static int pg_each_key(struct ks_sql_stmt *st, const char *const *keys, size_t n, ks_sql_row_fn fn,
                       void *ctx)
{
    struct ks_sql_buf arr = {0};
    int rc = KS_OK;
    for (size_t k = 0; rc == KS_OK && k < n; k++)
        rc = arr_text(&arr, keys[k], strlen(keys[k]));
    if (rc == KS_OK)
        rc = arr_close(&arr);
    const char *vals[1] = {arr.p};
    if (rc == KS_OK)
        rc = run(st, st->text, 1, NULL, vals, NULL, NULL);
    ks_sql_buf_free(&arr);
    if (rc != KS_OK || !st->handle)
        return rc == KS_OK ? KS_ERR_INTERNAL : rc;
    for (st->row = 0; rc == KS_OK && st->row < st->rows; st->row++) {
        st->col_off = 0;
        int64_t o = 0;
        if (!pg_i64(st, 0, &o) || o < 1 || (uint64_t)o > n)
            return KS_ERR_IO;
        st->col_off = 2; /* ks_o, ks_r */
        rc = fn(ctx, (size_t)(o - 1), st);
        if (rc == KS_OK && st->err != KS_OK)
            rc = st->err;
    }
    st->col_off = 0;
    return rc;
}

static int pg_lock(struct ks_sql *db, int32_t space, const int32_t *keys, size_t n)
{
    struct ks_sql_stmt st = {.db = db};
    struct ks_sql_buf arr = {0};
    char sp[24];
    int rc = KS_OK;
    for (size_t i = 0; rc == KS_OK && i < n; i++) {
        char num[24];
        snprintf(num, sizeof(num), "%d", (int)keys[i]);
        rc = arr_word(&arr, num);
    }
    if (rc == KS_OK)
        rc = arr_close(&arr);
    snprintf(sp, sizeof(sp), "%d", (int)space);
    const char *vals[2] = {sp, arr.p};
    /* unnest yields the keys in array order: the locks are taken in ascending order. */
    if (rc == KS_OK)
        rc = run(&st, "SELECT pg_advisory_xact_lock($1::int4, k) FROM unnest($2::int4[]) AS t(k)",
                 2, NULL, vals, NULL, NULL);
    PQclear(st.handle);
    ks_sql_buf_free(&arr);
    return rc;
}

static int pg_exec_script(struct ks_sql *db, const char *sql)
{
    /* Migration files hold several statements: the simple protocol runs them all. */
    PGresult *r = PQexec(db->conn, sql);
    ExecStatusType s = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    int rc = s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK ? KS_OK : pg_error(db, r);
    PQclear(r);
    return rc;
}

static int pg_migrate_lock(struct ks_sql *db)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT pg_advisory_xact_lock(%lld)",
             (long long)KS_STORE_PG_MIGRATION_LOCK_KEY);
    return pg_exec_script(db, sql);
}

const struct ks_sql_engine ks_sql_pg_engine = {
    .dialect = KS_SQL_PG,
    .marks = KS_SQL_MARKS_DOLLAR,
    .snapshot_begin = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    .prepare = pg_prepare,
    .reset = pg_reset,
    .finalize = pg_finalize,
    .step = pg_step,
    .ncols = pg_ncols,
    .is_null = pg_is_null,
    .text = pg_text,
    .i64 = pg_i64,
    .blob = pg_blob,
    .batch_add = pg_batch_add,
    .batch_run = pg_batch_run,
    .each_key = pg_each_key,
    .lock = pg_lock,
    .exec_script = pg_exec_script,
    .migrate_lock = pg_migrate_lock,
};
