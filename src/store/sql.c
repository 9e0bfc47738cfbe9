/*
 * sql.c — the SQL layer for module-owned tables, the part both engines share (contract in
 * sql.h, engine parts in sql_sqlite.c and sql_pg.c, shared structures in sql_int.h): statement
 * text (fragments, placeholders), parameters, the per-call statement cache, the migration
 * runner.
 */
#include "store/sql_int.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/store.h"
#include "core/clock.h"
#include "store/store_int.h"

/* --- statement text ------------------------------------------------------------------------- */

struct fragment {
    const char *name;
    const char *text[KS_SQL_DIALECTS];
};

static const struct fragment fragments[] = {
    {"for_update", {"", " FOR UPDATE"}},
    {"for_share", {"", " FOR SHARE"}},
    {"skip_locked", {"", " FOR UPDATE SKIP LOCKED"}},
    {"int64", {"INTEGER", "bigint"}},
    {"bool", {"INTEGER", "boolean"}},
    {"bytes", {"BLOB", "bytea"}},
    {"collate_c", {"", " COLLATE \"C\""}},
    {"without_rowid", {" WITHOUT ROWID", ""}},
    {"serial_pk", {"INTEGER PRIMARY KEY", "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}},
    {"serial_pk_autoinc",
     {"INTEGER PRIMARY KEY AUTOINCREMENT", "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY"}},
};

#define FRAGMENT_NAME_BYTES_MAX 32

static const char *fragment_text(const char *name, size_t len, enum ks_sql_dialect d)
{
    for (size_t i = 0; i < sizeof(fragments) / sizeof(fragments[0]); i++)
        if (strlen(fragments[i].name) == len && memcmp(fragments[i].name, name, len) == 0)
            return fragments[i].text[d];
    return NULL;
}

int ks_sql_buf_put(struct ks_sql_buf *b, const char *s, size_t n, size_t max)
{
    if (b->n + n + 1 > b->cap) {
        if (b->n + n + 1 > max)
            return KS_ERR_LIMIT;
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + n + 1)
            cap *= 2;
        if (cap > max)
            cap = max;
        char *p = realloc(b->p, cap);
        if (!p)
            return KS_ERR_NOMEM;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
    return KS_OK;
}

void ks_sql_buf_free(struct ks_sql_buf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

static int put_mark(struct ks_sql_buf *o, enum ks_sql_marks marks, int n)
{
    char t[32];
    int w;
    switch (marks) {
    case KS_SQL_MARKS_QN: w = snprintf(t, sizeof(t), "?%d", n); break;
    case KS_SQL_MARKS_DOLLAR: w = snprintf(t, sizeof(t), "$%d", n); break;
    case KS_SQL_MARKS_KEY:
        if (n != 1)
            return KS_ERR_INTERNAL;
        w = snprintf(t, sizeof(t), "u.ks_k");
        break;
    default: w = snprintf(t, sizeof(t), "u.ks_p%d", n); break;
    }
    assert(w > 0 && (size_t)w < sizeof(t));
    return ks_sql_buf_put(o, t, (size_t)w, KS_SQL_STATEMENT_BYTES_MAX);
}

int ks_sql_translate(const char *src, enum ks_sql_dialect d, enum ks_sql_marks marks, char **out,
                     int *nparams)
{
    assert(src != NULL && out != NULL && nparams != NULL && d < KS_SQL_DIALECTS);
    struct ks_sql_buf o = {0};
    int rc = ks_sql_buf_put(&o, "", 0, KS_SQL_STATEMENT_BYTES_MAX);
    char quote = 0; /* ' or " while inside one, '-' inside a line comment */
    *out = NULL;
    *nparams = 0;
    for (const char *p = src; rc == KS_OK && *p;) {
        if (quote) {
            /* Text, a quoted name or a comment is copied as it is, up to its end. */
            if ((quote == '-' && *p == '\n') || (quote != '-' && *p == quote))
                quote = 0;
            rc = ks_sql_buf_put(&o, p++, 1, KS_SQL_STATEMENT_BYTES_MAX);
        } else if (*p == '\'' || *p == '"' || (p[0] == '-' && p[1] == '-')) {
            quote = *p;
            rc = ks_sql_buf_put(&o, p++, 1, KS_SQL_STATEMENT_BYTES_MAX);
        } else if (p[0] == '{' && p[1] == '{') {
            const char *end = strstr(p + 2, "}}");
            size_t len = end ? (size_t)(end - (p + 2)) : 0;
            const char *t =
                end && len <= FRAGMENT_NAME_BYTES_MAX ? fragment_text(p + 2, len, d) : NULL;
            if (!t)
                rc = KS_ERR_INTERNAL;
            else
                rc = ks_sql_buf_put(&o, t, strlen(t), KS_SQL_STATEMENT_BYTES_MAX);
            p = end ? end + 2 : p + 2;
        } else if (*p == '?') {
            int n = 0, digits = 0;
            for (p++; *p >= '0' && *p <= '9' && digits < 3; p++, digits++)
                n = n * 10 + (*p - '0');
            if (digits == 0 || n < 1 || n > KS_SQL_PARAMS_MAX || (*p >= '0' && *p <= '9')) {
                rc = KS_ERR_INTERNAL;
                break;
            }
            if (n > *nparams)
                *nparams = n;
            rc = put_mark(&o, marks, n);
        } else {
            rc = ks_sql_buf_put(&o, p++, 1, KS_SQL_STATEMENT_BYTES_MAX);
        }
    }
    if (rc != KS_OK) {
        ks_sql_buf_free(&o);
        return rc;
    }
    *out = o.p;
    return KS_OK;
}

uint64_t ks_sql_hash(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    for (size_t i = 0; i < n; i++)
        h = (h ^ b[i]) * 0x100000001b3ULL;
    return h;
}

bool ks_sql_parse_i64(const char *t, int64_t *out)
{
    if (!t || !*t)
        return false;
    char *end = NULL;
    errno = 0;
    long long v = strtoll(t, &end, 10);
    if (errno != 0 || *end != '\0')
        return false;
    *out = (int64_t)v;
    return true;
}

void ks_sql_set_errmsg(struct ks_sql *db, const char *msg)
{
    snprintf(db->errmsg, sizeof(db->errmsg), "%s", msg ? msg : "");
    /* One line is enough for `why`. */
    char *nl = strchr(db->errmsg, '\n');
    if (nl)
        *nl = '\0';
}

/* --- calls -------------------------------------------------------------------------------------
 */

static const struct ks_sql_engine *engine_of(struct ks_store *s)
{
    const char *kind = ks_store_kind(s);
    if (strcmp(kind, "sqlite") == 0)
        return &ks_sql_sqlite_engine;
    if (strcmp(kind, "postgres") == 0)
        return &ks_sql_pg_engine;
    return NULL;
}

static void stmt_free(struct ks_sql_stmt *st)
{
    st->db->en->finalize(st);
    for (int i = 0; i < KS_SQL_PARAMS_MAX; i++)
        ks_sql_buf_free(&st->arrays[i]);
    free(st->source);
    free(st->text);
    free(st);
}

/* Finalises every statement of the call: before the transaction ends, on its connection. */
static void db_release(struct ks_sql *db)
{
    for (size_t i = 0; i < db->stmts_n; i++)
        stmt_free(db->stmts[i]);
    db->stmts_n = 0;
}

struct call {
    struct ks_store *store;
    const struct ks_sql_engine *en;
    ks_sql_fn fn;
    void *arg;
    bool writer, snapshot;
};

static int call_fn(void *conn, void *arg)
{
    struct call *c = arg;
    struct ks_sql db = {.store = c->store, .en = c->en, .conn = conn, .writer = c->writer};
    int rc = KS_OK;
    if (c->snapshot && (rc = c->en->exec_script(&db, c->en->snapshot_begin)) != KS_OK)
        return rc;
    rc = c->fn(&db, c->arg);
    db_release(&db);
    if (c->snapshot && c->en->exec_script(&db, "COMMIT") != KS_OK && rc == KS_OK)
        rc = KS_ERR_IO;
    return rc;
}

static int run_call(struct ks_store *s, ks_sql_fn fn, void *arg, bool writer, bool snapshot)
{
    assert(s != NULL && fn != NULL);
    struct call c = {.store = s,
                     .en = engine_of(s),
                     .fn = fn,
                     .arg = arg,
                     .writer = writer,
                     .snapshot = snapshot};
    if (!c.en)
        return KS_ERR_INVALID;
    return writer ? ks_store_with_tx(s, call_fn, &c) : ks_store_with_reader(s, call_fn, &c);
}

int ks_sql_tx(struct ks_store *s, ks_sql_fn fn, void *arg)
{
    return run_call(s, fn, arg, true, false);
}

int ks_sql_read(struct ks_store *s, ks_sql_fn fn, void *arg)
{
    return run_call(s, fn, arg, false, false);
}

int ks_sql_read_snapshot(struct ks_store *s, ks_sql_fn fn, void *arg)
{
    return run_call(s, fn, arg, false, true);
}

/* --- statements ----------------------------------------------------------------------------------
 */

static void stmt_reset(struct ks_sql_stmt *st)
{
    st->db->en->reset(st);
    memset(st->params, 0, sizeof(st->params));
    for (int i = 0; i < KS_SQL_PARAMS_MAX; i++) {
        st->arrays[i].n = 0;
        st->arrays[i].items = 0;
    }
    memset(st->array_types, 0, sizeof(st->array_types));
    st->batch_rows = 0;
    st->err = KS_OK;
    st->running = false;
    st->changes = 0;
}

static int stmt_get(struct ks_sql *db, const char *sql, enum ks_sql_stmt_kind kind,
                    struct ks_sql_stmt **out)
{
    assert(db != NULL && sql != NULL && out != NULL);
    *out = NULL;
    for (size_t i = 0; i < db->stmts_n; i++) {
        struct ks_sql_stmt *st = db->stmts[i];
        if (st->kind == kind && strcmp(st->source, sql) == 0) {
            stmt_reset(st);
            *out = st;
            return KS_OK;
        }
    }
    if (db->stmts_n == KS_SQL_STMTS_MAX)
        return KS_ERR_LIMIT;
    struct ks_sql_stmt *st = calloc(1, sizeof(*st));
    if (!st)
        return KS_ERR_NOMEM;
    st->db = db;
    st->kind = kind;
    enum ks_sql_marks marks = db->en->marks;
    if (marks == KS_SQL_MARKS_DOLLAR && kind == KS_SQL_K_EACH)
        marks = KS_SQL_MARKS_KEY;
    else if (marks == KS_SQL_MARKS_DOLLAR && kind == KS_SQL_K_BATCH)
        marks = KS_SQL_MARKS_ARRAY;
    int rc = (st->source = strdup(sql)) ? KS_OK : KS_ERR_NOMEM;
    if (rc == KS_OK)
        rc = ks_sql_translate(sql, db->en->dialect, marks, &st->text, &st->nparams);
    if (rc == KS_OK && kind == KS_SQL_K_EACH && st->nparams != 1)
        rc = KS_ERR_INTERNAL;
    if (rc == KS_OK)
        rc = db->en->prepare(st);
    if (rc != KS_OK) {
        stmt_free(st);
        return rc;
    }
    db->stmts[db->stmts_n++] = st;
    *out = st;
    return KS_OK;
}

int ks_sql_prepare(struct ks_sql *db, const char *sql, struct ks_sql_stmt **out)
{
    return stmt_get(db, sql, KS_SQL_K_PLAIN, out);
}

static struct ks_sql_param *param(struct ks_sql_stmt *st, int i)
{
    assert(st != NULL && i >= 1 && i <= KS_SQL_PARAMS_MAX);
    if (i < 1 || i > KS_SQL_PARAMS_MAX || i > st->nparams) {
        st->err = KS_ERR_INTERNAL;
        return NULL;
    }
    return &st->params[i - 1];
}

void ks_sql_bind_text(struct ks_sql_stmt *st, int i, const char *v)
{
    struct ks_sql_param *p = param(st, i);
    if (!p)
        return;
    if (!v) {
        *p = (struct ks_sql_param){.type = KS_SQL_T_TEXT};
        return;
    }
    size_t n = strnlen(v, (size_t)KS_SQL_TEXT_BYTES_MAX + 1);
    if (n > KS_SQL_TEXT_BYTES_MAX) {
        st->err = KS_ERR_LIMIT;
        return;
    }
    *p = (struct ks_sql_param){.type = KS_SQL_T_TEXT, .p = v, .n = n};
}

void ks_sql_bind_text_opt(struct ks_sql_stmt *st, int i, const char *v)
{
    ks_sql_bind_text(st, i, v && *v ? v : NULL);
}

void ks_sql_bind_i64(struct ks_sql_stmt *st, int i, int64_t v)
{
    struct ks_sql_param *p = param(st, i);
    if (p)
        *p = (struct ks_sql_param){.type = KS_SQL_T_I64, .i64 = v};
}

void ks_sql_bind_bool(struct ks_sql_stmt *st, int i, bool v)
{
    struct ks_sql_param *p = param(st, i);
    if (p)
        *p = (struct ks_sql_param){.type = KS_SQL_T_BOOL, .i64 = v ? 1 : 0};
}

void ks_sql_bind_blob(struct ks_sql_stmt *st, int i, const void *v, size_t n)
{
    struct ks_sql_param *p = param(st, i);
    if (!p)
        return;
    if (n > KS_SQL_TEXT_BYTES_MAX) {
        st->err = KS_ERR_LIMIT;
        return;
    }
    *p = (struct ks_sql_param){.type = KS_SQL_T_BLOB, .p = v ? v : "", .n = n};
}

void ks_sql_bind_null(struct ks_sql_stmt *st, int i)
{
    struct ks_sql_param *p = param(st, i);
    if (p)
        *p = (struct ks_sql_param){.type = KS_SQL_T_NULL};
}

int ks_sql_step(struct ks_sql_stmt *st)
{
    assert(st != NULL && st->kind == KS_SQL_K_PLAIN);
    if (st->err != KS_OK)
        return st->err;
    int rc = st->db->en->step(st);
    st->running = true;
    if (rc < 0)
        st->err = rc;
    return rc;
}

int ks_sql_exec(struct ks_sql_stmt *st)
{
    /* A statement that returns rows (RETURNING) is stepped to its end: the engine bounds it. */
    int rc;
    while ((rc = ks_sql_step(st)) == KS_SQL_ROW)
        continue;
    int64_t changes = st->changes;
    int done = ks_sql_done(st);
    st->changes = changes;
    return rc != KS_OK ? rc : done;
}

int ks_sql_done(struct ks_sql_stmt *st)
{
    assert(st != NULL);
    int rc = st->err;
    int64_t changes = st->changes;
    stmt_reset(st);
    st->changes = changes;
    return rc;
}

int64_t ks_sql_changes(const struct ks_sql_stmt *st)
{
    return st->changes;
}

/* --- columns ------------------------------------------------------------------------------------
 */

int ks_sql_col_count(struct ks_sql_stmt *st)
{
    assert(st != NULL);
    int n = st->db->en->ncols(st) - st->col_off;
    return n > 0 ? n : 0;
}

bool ks_sql_col_is_null(struct ks_sql_stmt *st, int col)
{
    assert(st != NULL && col >= 0);
    return st->db->en->is_null(st, col + st->col_off);
}

const char *ks_sql_col_text(struct ks_sql_stmt *st, int col)
{
    assert(st != NULL && col >= 0);
    return st->db->en->text(st, col + st->col_off);
}

const char *ks_sql_col_str(struct ks_sql_stmt *st, int col)
{
    const char *t = ks_sql_col_text(st, col);
    return t ? t : "";
}

int64_t ks_sql_col_i64(struct ks_sql_stmt *st, int col)
{
    assert(st != NULL && col >= 0);
    int64_t v = 0;
    if (!st->db->en->i64(st, col + st->col_off, &v)) {
        st->err = KS_ERR_IO;
        return 0;
    }
    return v;
}

bool ks_sql_col_bool(struct ks_sql_stmt *st, int col)
{
    const char *t = ks_sql_col_text(st, col);
    if (!t)
        return false;
    if (strcmp(t, "t") == 0 || strcmp(t, "true") == 0)
        return true;
    if (strcmp(t, "f") == 0 || strcmp(t, "false") == 0)
        return false;
    return ks_sql_col_i64(st, col) != 0;
}

bool ks_sql_col_copy(struct ks_sql_stmt *st, int col, char *dst, size_t cap)
{
    assert(dst != NULL && cap > 0);
    const char *t = ks_sql_col_str(st, col);
    size_t n = strlen(t);
    if (n >= cap) {
        dst[0] = '\0';
        st->err = KS_ERR_IO;
        return false;
    }
    memcpy(dst, t, n + 1);
    return true;
}

bool ks_sql_col_blob(struct ks_sql_stmt *st, int col, void *dst, size_t cap, size_t *len)
{
    assert(st != NULL && dst != NULL && len != NULL);
    *len = 0;
    if (!st->db->en->blob(st, col + st->col_off, dst, cap, len)) {
        *len = 0;
        st->err = KS_ERR_IO;
        return false;
    }
    return true;
}

/* --- many rows -----------------------------------------------------------------------------------
 */

int ks_sql_batch(struct ks_sql *db, const char *sql, struct ks_sql_stmt **out)
{
    return stmt_get(db, sql, KS_SQL_K_BATCH, out);
}

int ks_sql_batch_add(struct ks_sql_stmt *st)
{
    assert(st != NULL && st->kind == KS_SQL_K_BATCH);
    if (st->err != KS_OK)
        return st->err;
    int rc = st->db->en->batch_add(st);
    if (rc != KS_OK)
        st->err = rc;
    st->batch_rows++;
    return rc;
}

int ks_sql_batch_run(struct ks_sql_stmt *st)
{
    assert(st != NULL && st->kind == KS_SQL_K_BATCH);
    int rc = st->err;
    if (rc == KS_OK && st->batch_rows > 0)
        rc = st->db->en->batch_run(st);
    int64_t changes = st->changes;
    stmt_reset(st);
    st->changes = changes;
    return rc;
}

int ks_sql_each_key(struct ks_sql *db, const char *sql, const char *const *keys, size_t n,
                    ks_sql_row_fn fn, void *ctx)
{
    assert(fn != NULL && (keys != NULL || n == 0));
    if (n == 0)
        return KS_OK;
    struct ks_sql_stmt *st = NULL;
    int rc = stmt_get(db, sql, KS_SQL_K_EACH, &st);
    if (rc != KS_OK)
        return rc;
    rc = db->en->each_key(st, keys, n, fn, ctx);
    if (rc == KS_OK)
        rc = st->err;
    stmt_reset(st);
    return rc;
}

int ks_sql_lock(struct ks_sql *db, int32_t space, const int32_t *keys, size_t n)
{
    assert(db != NULL && db->writer);
    for (size_t i = 1; i < n; i++)
        assert(keys[i - 1] < keys[i]);
    return n == 0 ? KS_OK : db->en->lock(db, space, keys, n);
}

/* --- migrations
 * ------------------------------------------------------------------------------------ */

static bool schema_valid(const struct ks_sql_schema *sc)
{
    size_t len = sc->module ? strlen(sc->module) : 0;
    if (len == 0 || len > KS_SQL_MODULE_BYTES_MAX || sc->n > KS_SQL_MIGRATIONS_MAX ||
        (sc->n > 0 && !sc->migrations))
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = sc->module[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
            return false;
    }
    for (size_t i = 0; i < sc->n; i++)
        if (sc->migrations[i].version != (int)i + 1 || !sc->migrations[i].sql)
            return false;
    return true;
}

struct migrate {
    const struct ks_sql_schema *sc;
    char *why;
    size_t whylen;
    int to; /* out: the version reached */
};

static int migrate_fail(struct ks_sql *db, struct migrate *m, const char *what, int rc)
{
    snprintf(m->why, m->whylen, "%s migrations: %s: %s%s%s", m->sc->module, what, ks_err_text(rc),
             db->errmsg[0] ? ": " : "", db->errmsg);
    return rc;
}

/* The version recorded for the module; -1 when it has no row. */
static int module_version(struct ks_sql *db, const char *module, int *version)
{
    struct ks_sql_stmt *st = NULL;
    int rc = ks_sql_prepare(db, "SELECT version FROM ks_module_schema WHERE module = ?1", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, module);
    *version = -1;
    rc = ks_sql_step(st);
    if (rc == KS_SQL_ROW) {
        int64_t v = ks_sql_col_i64(st, 0);
        *version = v >= 0 && v <= KS_SQL_MIGRATIONS_MAX ? (int)v : KS_SQL_MIGRATIONS_MAX + 1;
        rc = KS_OK;
    }
    int done = ks_sql_done(st);
    return rc != KS_OK ? rc : done;
}

/* Whether the store's own schema_migrations holds `version`. */
static int engine_has(struct ks_sql *db, int version, bool *has)
{
    struct ks_sql_stmt *st = NULL;
    int rc = ks_sql_prepare(db, "SELECT 1 FROM schema_migrations WHERE version = ?1", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(st, 1, version);
    rc = ks_sql_step(st);
    *has = rc == KS_SQL_ROW;
    if (rc == KS_SQL_ROW)
        rc = KS_OK;
    int done = ks_sql_done(st);
    return rc != KS_OK ? rc : done;
}

static int migrate_tx(struct ks_sql *db, void *arg)
{
    struct migrate *m = arg;
    const struct ks_sql_schema *sc = m->sc;
    int rc = db->en->migrate_lock(db);
    if (rc != KS_OK)
        return migrate_fail(db, m, "lock", rc);
    char *sql = NULL;
    int np = 0;
    int cur = 0;
    if ((rc = module_version(db, sc->module, &cur)) != KS_OK)
        return migrate_fail(db, m, "read version", rc);
    bool baseline = cur < 0;
    if (baseline) {
        /* A database from before modules had their own migrations: the leading ones that
         * the engine applied then are there already. */
        cur = 0;
        for (size_t i = 0; i < sc->n && sc->migrations[i].engine_version > 0; i++) {
            bool has = false;
            if ((rc = engine_has(db, sc->migrations[i].engine_version, &has)) != KS_OK)
                return migrate_fail(db, m, "read engine versions", rc);
            if (!has)
                break;
            cur = sc->migrations[i].version;
        }
    }
    m->to = cur;
    if (!baseline && (size_t)cur >= sc->n)
        return KS_OK; /* nothing pending: the transaction wrote nothing */
    for (size_t i = (size_t)cur; i < sc->n; i++) {
        const struct ks_sql_migration *mg = &sc->migrations[i];
        char what[128];
        snprintf(what, sizeof(what), "%03d_%s", mg->version, mg->name ? mg->name : "");
        rc = ks_sql_translate(mg->sql, db->en->dialect, KS_SQL_MARKS_QN, &sql, &np);
        if (rc == KS_OK)
            rc = db->en->exec_script(db, sql);
        free(sql);
        if (rc != KS_OK)
            return migrate_fail(db, m, what, rc);
        m->to = mg->version;
    }
    struct ks_sql_stmt *st = NULL;
    rc = ks_sql_prepare(db,
                        "INSERT INTO ks_module_schema (module, version, updated_at)"
                        " VALUES (?1, ?2, ?3) ON CONFLICT (module) DO UPDATE SET"
                        " version = excluded.version, updated_at = excluded.updated_at",
                        &st);
    if (rc == KS_OK) {
        ks_sql_bind_text(st, 1, sc->module);
        ks_sql_bind_i64(st, 2, m->to);
        ks_sql_bind_i64(st, 3, ks_now_ms());
        rc = ks_sql_exec(st);
    }
    return rc == KS_OK ? KS_OK : migrate_fail(db, m, "record version", rc);
}

int ks_sql_migrate(struct ks_store *s, const struct ks_sql_schema *schema, char *why, size_t whylen)
{
    assert(s != NULL && schema != NULL && why != NULL && whylen > 0);
    why[0] = '\0';
    if (!schema_valid(schema)) {
        snprintf(why, whylen, "a module's migrations are malformed");
        return KS_ERR_INTERNAL;
    }
    /* Up to date (the common case, at every open): one read, no write transaction. */
    int version = 0;
    if (ks_sql_schema_version(s, schema->module, &version) == KS_OK && version > 0 &&
        (size_t)version >= schema->n)
        return KS_OK;
    struct migrate m = {.sc = schema, .why = why, .whylen = whylen};
    int rc = ks_sql_tx(s, migrate_tx, &m);
    if (rc != KS_OK && !why[0])
        snprintf(why, whylen, "%s migrations: %s", schema->module, ks_err_text(rc));
    return rc;
}

struct version_rd {
    const char *module;
    int version;
};

static int version_rd(struct ks_sql *db, void *arg)
{
    struct version_rd *v = arg;
    int rc = module_version(db, v->module, &v->version);
    if (v->version < 0)
        v->version = 0;
    return rc;
}

int ks_sql_schema_version(struct ks_store *s, const char *module, int *version)
{
    assert(s != NULL && module != NULL && version != NULL);
    struct version_rd v = {.module = module};
    int rc = ks_sql_read(s, version_rd, &v);
    *version = rc == KS_OK ? v.version : 0;
    return rc;
}

int32_t ks_sql_lock_key(const char *text)
{
    uint32_t h = 2166136261u;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++)
        h = (h ^ *p) * 16777619u;
    return (int32_t)h;
}
