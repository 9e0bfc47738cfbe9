/*
 * test_sql.c — the SQL layer for module-owned tables (store/sql.h), on the store named by
 * KASSA_TEST_STORE (default: a fresh SQLite file): typed parameters and NULLs, the row cursor,
 * errors, transactions that roll back, fragments and placeholders, batches, per-key queries,
 * locks, snapshots, and the migration runner (fresh, re-run, new versions, baseline of a
 * database from before modules had their own migrations, built from old_layout.h and opened by
 * the ledger, the vault and the sandbox). Tables, schemas and module names are random, so the
 * cases share a PostgreSQL database with every other test (an old database there lives in a
 * schema of its own, named by the URL's search_path).
 */
#include <criterion/criterion.h>
#include <ctype.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "ledger/ledger.h"
#include "old_layout.h"
#include "store/sql.h"
#include "store/store.h"
#include "unit_store.h"
#include "units/adapters/sandbox.h"
#include "vault/vault.h"

static struct ks_store *store;
static char store_url[512]; /* what `store` was opened with */
static char dir[64];
static char table[32]; /* this case's own table: sqlt_<random> */

static void random_name(char *out, size_t cap, const char *prefix)
{
    char rnd[13];
    cr_assert_eq(ks_id_random(rnd, 12), KS_OK);
    for (char *p = rnd; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    snprintf(out, cap, "%s%s", prefix, rnd);
}

/* Runs `sql` (with `%s` for the table name at most twice) in its own transaction. */
struct ddl {
    char sql[512];
};

static int ddl_tx(struct ks_sql *db, void *arg)
{
    struct ddl *d = arg;
    struct ks_sql_stmt *st = NULL;
    int rc = ks_sql_prepare(db, d->sql, &st);
    return rc == KS_OK ? ks_sql_exec(st) : rc;
}

static int ddl(const char *fmt)
{
    struct ddl d;
    snprintf(d.sql, sizeof(d.sql), fmt, table, table);
    return ks_sql_tx(store, ddl_tx, &d);
}

/* Prepares `fmt` with the case's table name for its (one) %s. */
static int prepare_t(struct ks_sql *db, const char *fmt, struct ks_sql_stmt **st)
{
    char sql[256];
    snprintf(sql, sizeof(sql), fmt, table);
    return ks_sql_prepare(db, sql, st);
}

static void setup(void)
{
    char why[256];
    unit_store_url(store_url, sizeof(store_url), dir, sizeof(dir));
    cr_assert_eq(ks_store_open(store_url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    random_name(table, sizeof(table), "sqlt_");
    cr_assert_eq(ddl("CREATE TABLE %s (id TEXT PRIMARY KEY, n {{int64}}, b {{bool}},"
                     " blob {{bytes}}, note TEXT)"),
                 KS_OK);
}

static void teardown(void)
{
    cr_expect_eq(ddl("DROP TABLE %s"), KS_OK);
    ks_store_close(store);
    unit_store_remove(dir);
}

TestSuite(sql, .init = setup, .fini = teardown, .timeout = 60);

/* --- one row of every type ----------------------------------------------------------------------
 */

static const unsigned char blob_in[] = {0, 1, 0x7f, 0x80, 0xff, '\\', 'x', 0};
static const char text_in[] = "it's \"quoted\" \\ back, ? and {{not a fragment}} ü";

struct typed {
    const char *id;
    int64_t n;
    bool b;
    bool null_note;
    /* read back */
    int64_t n_out;
    bool b_out, n_null, note_null, blob_null;
    char note[128];
    unsigned char blob[32];
    size_t blob_len;
};

static int typed_insert(struct ks_sql *db, void *arg)
{
    struct typed *t = arg;
    struct ks_sql_stmt *st = NULL;
    int rc =
        prepare_t(db, "INSERT INTO %s (id, n, b, blob, note) VALUES (?1, ?2, ?3, ?4, ?5)", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, t->id);
    ks_sql_bind_i64(st, 2, t->n);
    ks_sql_bind_bool(st, 3, t->b);
    if (t->null_note) {
        ks_sql_bind_null(st, 4);
        ks_sql_bind_text(st, 5, NULL);
    } else {
        ks_sql_bind_blob(st, 4, blob_in, sizeof(blob_in));
        ks_sql_bind_text(st, 5, text_in);
    }
    rc = ks_sql_exec(st);
    if (rc == KS_OK && ks_sql_changes(st) != 1)
        rc = KS_ERR_INTERNAL;
    return rc;
}

static int typed_read(struct ks_sql *db, void *arg)
{
    struct typed *t = arg;
    struct ks_sql_stmt *st = NULL;
    int rc = prepare_t(db, "SELECT n, b, blob, note FROM %s WHERE id = ?1", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, t->id);
    int step = ks_sql_step(st);
    if (step != KS_SQL_ROW) {
        cr_expect_eq(ks_sql_done(st), KS_OK);
        return step == KS_OK ? KS_ERR_NOT_FOUND : step;
    }
    cr_expect_eq(ks_sql_col_count(st), 4);
    t->n_null = ks_sql_col_is_null(st, 0);
    t->n_out = ks_sql_col_i64(st, 0);
    t->b_out = ks_sql_col_bool(st, 1);
    t->blob_null = ks_sql_col_is_null(st, 2);
    t->note_null = ks_sql_col_is_null(st, 3);
    cr_expect(ks_sql_col_blob(st, 2, t->blob, sizeof(t->blob), &t->blob_len));
    cr_expect(ks_sql_col_copy(st, 3, t->note, sizeof(t->note)));
    cr_expect_eq(ks_sql_step(st), KS_OK, "one row only");
    return ks_sql_done(st);
}

Test(sql, parameters_of_each_type_and_nulls_read_back)
{
    int64_t values[] = {0, 1, -1, INT64_MAX, INT64_MIN, 1234567890123LL};
    for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
        char id[16];
        snprintf(id, sizeof(id), "row-%zu", i);
        struct typed t = {.id = id, .n = values[i], .b = i % 2 == 0, .null_note = i == 3};
        cr_assert_eq(ks_sql_tx(store, typed_insert, &t), KS_OK, "%s", id);
        cr_assert_eq(ks_sql_read(store, typed_read, &t), KS_OK, "%s", id);
        cr_expect_not(t.n_null);
        cr_expect_eq(t.n_out, values[i]);
        cr_expect_eq(t.b_out, i % 2 == 0);
        if (t.null_note) {
            cr_expect(t.note_null);
            cr_expect(t.blob_null);
            cr_expect_str_empty(t.note);
            cr_expect_eq(t.blob_len, 0);
        } else {
            cr_expect_not(t.note_null);
            cr_expect_str_eq(t.note, text_in);
            cr_expect_eq(t.blob_len, sizeof(blob_in));
            cr_expect_arr_eq(t.blob, blob_in, sizeof(blob_in));
        }
    }
    struct typed missing = {.id = "none"};
    cr_expect_eq(ks_sql_read(store, typed_read, &missing), KS_ERR_NOT_FOUND);
}

/* --- statements that come back ------------------------------------------------------------------
 */

struct again {
    int k;     /* the statement's text differs by k */
    int64_t n; /* read back: n + k */
};

static int again_read(struct ks_sql *db, void *arg)
{
    struct again *a = arg;
    char sql[128];
    snprintf(sql, sizeof(sql), "SELECT n + %d FROM %s WHERE id = ?1", a->k, table);
    struct ks_sql_stmt *st = NULL;
    int rc = ks_sql_prepare(db, sql, &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, "again");
    int step = ks_sql_step(st);
    a->n = step == KS_SQL_ROW ? ks_sql_col_i64(st, 0) : -1;
    int done = ks_sql_done(st);
    return step < 0 ? step : done;
}

/* PostgreSQL keeps statements prepared on each connection from call to call: a text runs again
 * by name, a connection past its bound runs new texts unnamed, and a statement whose table was
 * made again still reads the new table. SQLite prepares afresh in every call. */
Test(sql, statements_run_again_in_later_calls_past_the_prepared_bound_and_after_ddl)
{
    const int texts = 4 * KS_SQL_PG_PREPARED_MAX + 8; /* more than one connection keeps */
    cr_assert_eq(ddl("INSERT INTO %s (id, n) VALUES ('again', 10)"), KS_OK);
    for (int round = 0; round < 2; round++)
        for (int k = 0; k < texts; k += round ? 37 : 1) {
            struct again a = {.k = k};
            cr_assert_eq(ks_sql_read(store, again_read, &a), KS_OK, "text %d", k);
            cr_assert_eq(a.n, 10 + k, "text %d", k);
        }
    cr_assert_eq(ddl("DROP TABLE %s"), KS_OK);
    cr_assert_eq(ddl("CREATE TABLE %s (id TEXT PRIMARY KEY, n {{int64}}, b {{bool}},"
                     " blob {{bytes}}, note TEXT)"),
                 KS_OK);
    cr_assert_eq(ddl("INSERT INTO %s (id, n) VALUES ('again', 20)"), KS_OK);
    for (int k = 0; k < 16; k++) {
        struct again a = {.k = k};
        cr_assert_eq(ks_sql_read(store, again_read, &a), KS_OK, "text %d", k);
        cr_expect_eq(a.n, 20 + k, "text %d after the table was made again", k);
    }
}

/* A getter that cannot read what it was asked fails the statement, not the process. */
static int bad_reads(struct ks_sql *db, void *arg)
{
    (void)arg;
    struct ks_sql_stmt *st = NULL;
    int rc = prepare_t(db, "SELECT note, n FROM %s WHERE id = 'row-0'", &st);
    if (rc != KS_OK)
        return rc;
    cr_assert_eq(ks_sql_step(st), KS_SQL_ROW);
    char small[4];
    cr_expect_not(ks_sql_col_copy(st, 0, small, sizeof(small)));
    cr_expect_str_empty(small);
    cr_expect_eq(ks_sql_done(st), KS_ERR_IO, "a text longer than the buffer");
    cr_assert_eq(ks_sql_step(st), KS_SQL_ROW);
    cr_expect_eq(ks_sql_col_i64(st, 0), 0, "text is not a number");
    cr_expect_eq(ks_sql_done(st), KS_ERR_IO);
    return KS_OK;
}

Test(sql, a_value_that_does_not_fit_fails_the_statement)
{
    struct typed t = {.id = "row-0", .n = 5};
    cr_assert_eq(ks_sql_tx(store, typed_insert, &t), KS_OK);
    cr_expect_eq(ks_sql_read(store, bad_reads, NULL), KS_OK);
}

/* --- cursor, changes ----------------------------------------------------------------------------
 */

#define ROWS 50

static int fill(struct ks_sql *db, void *arg)
{
    (void)arg;
    char sql[160];
    snprintf(sql, sizeof(sql), "INSERT INTO %s (id, n) VALUES (?1, ?2)", table);
    for (int i = 0; i < ROWS; i++) {
        struct ks_sql_stmt *st = NULL;
        int rc = ks_sql_prepare(db, sql, &st); /* the same text: the cached statement */
        if (rc != KS_OK)
            return rc;
        char id[16];
        snprintf(id, sizeof(id), "k%03d", i);
        ks_sql_bind_text(st, 1, id);
        ks_sql_bind_i64(st, 2, i * 10);
        if ((rc = ks_sql_exec(st)) != KS_OK)
            return rc;
    }
    return KS_OK;
}

struct scan {
    int rows;
    int64_t sum;
    bool ordered;
};

static int scan(struct ks_sql *db, void *arg)
{
    struct scan *s = arg;
    struct ks_sql_stmt *st = NULL;
    int rc = prepare_t(db, "SELECT id, n FROM %s WHERE n >= ?1 ORDER BY id", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(st, 1, 0);
    s->ordered = true;
    char prev[16] = "";
    while ((rc = ks_sql_step(st)) == KS_SQL_ROW) {
        const char *id = ks_sql_col_text(st, 0);
        if (strcmp(prev, id) >= 0)
            s->ordered = false;
        snprintf(prev, sizeof(prev), "%s", id);
        s->sum += ks_sql_col_i64(st, 1);
        s->rows++;
    }
    int done = ks_sql_done(st);
    return rc != KS_OK ? rc : done;
}

static int change_some(struct ks_sql *db, void *arg)
{
    int64_t *changed = arg;
    struct ks_sql_stmt *st = NULL;
    int rc = prepare_t(db, "UPDATE %s SET n = n + 1 WHERE n < ?1", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(st, 1, 100);
    rc = ks_sql_exec(st);
    changed[0] = ks_sql_changes(st);
    if (rc != KS_OK || (rc = prepare_t(db, "DELETE FROM %s WHERE n > ?1", &st)) != KS_OK)
        return rc;
    ks_sql_bind_i64(st, 1, 400);
    rc = ks_sql_exec(st);
    changed[1] = ks_sql_changes(st);
    return rc;
}

Test(sql, a_cursor_walks_every_row_in_order_and_changes_are_counted)
{
    cr_assert_eq(ks_sql_tx(store, fill, NULL), KS_OK);
    struct scan s = {0};
    cr_assert_eq(ks_sql_read(store, scan, &s), KS_OK);
    cr_expect_eq(s.rows, ROWS);
    cr_expect(s.ordered);
    cr_expect_eq(s.sum, 10 * (ROWS - 1) * ROWS / 2);
    int64_t changed[2] = {0};
    cr_assert_eq(ks_sql_tx(store, change_some, changed), KS_OK);
    cr_expect_eq(changed[0], 10, "n = 0, 10, ..., 90");
    cr_expect_eq(changed[1], 9, "n = 410 ... 490");
}

/* --- errors and rollback ------------------------------------------------------------------------
 */

struct dup {
    int fail_with; /* KS_OK: insert a duplicate; else return this after one insert */
};

static int insert_then(struct ks_sql *db, void *arg)
{
    struct dup *d = arg;
    struct ks_sql_stmt *st = NULL;
    int rc = prepare_t(db, "INSERT INTO %s (id, n) VALUES (?1, 1)", &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, "fresh");
    if ((rc = ks_sql_exec(st)) != KS_OK)
        return rc;
    if (d->fail_with != KS_OK)
        return d->fail_with;
    ks_sql_bind_text(st, 1, "taken");
    return ks_sql_exec(st);
}

static int count_rows(void)
{
    struct scan s = {0};
    cr_assert_eq(ks_sql_read(store, scan, &s), KS_OK);
    return s.rows;
}

Test(sql, a_unique_violation_is_a_conflict_and_the_transaction_rolls_back)
{
    struct typed t = {.id = "taken", .n = 1};
    cr_assert_eq(ks_sql_tx(store, typed_insert, &t), KS_OK);
    struct dup d = {.fail_with = KS_OK};
    cr_expect_eq(ks_sql_tx(store, insert_then, &d), KS_ERR_CONFLICT);
    cr_expect_eq(count_rows(), 1, "the first insert of the failed transaction is gone");
    d.fail_with = KS_ERR_REJECTED;
    cr_expect_eq(ks_sql_tx(store, insert_then, &d), KS_ERR_REJECTED);
    cr_expect_eq(count_rows(), 1, "a callback's error rolls back too");
    struct typed again = {.id = "fresh", .n = 2};
    cr_expect_eq(ks_sql_tx(store, typed_insert, &again), KS_OK, "nothing of it was kept");
}

/* --- text: fragments and placeholders -----------------------------------------------------------
 */

struct texts {
    char literal[32];
};

static int texts_tx(struct ks_sql *db, void *arg)
{
    struct texts *x = arg;
    struct ks_sql_stmt *st = NULL;
    cr_expect_eq(ks_sql_prepare(db, "SELECT 1 WHERE 1 = ?", &st), KS_ERR_INTERNAL, "bare ?");
    cr_expect_eq(ks_sql_prepare(db, "SELECT ?33", &st), KS_ERR_INTERNAL, "past the bound");
    cr_expect_eq(ks_sql_prepare(db, "SELECT 1{{no_such_fragment}}", &st), KS_ERR_INTERNAL);
    cr_expect_eq(ks_sql_prepare(db, "SELECT 1 {{for_update", &st), KS_ERR_INTERNAL);
    /* A ? inside a literal or a comment is text; fragments expand in the statement. */
    char sql[200];
    snprintf(sql, sizeof(sql),
             "SELECT 'a?1 {{x}}' AS t, n FROM %s -- ?9 {{y}}\n WHERE id = ?1{{for_update}}", table);
    int rc = ks_sql_prepare(db, sql, &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, "row");
    ks_sql_bind_text(st, 2, "out of range"); /* marks the statement failed */
    cr_expect_eq(ks_sql_step(st), KS_ERR_INTERNAL);
    cr_expect_eq(ks_sql_done(st), KS_ERR_INTERNAL);
    ks_sql_bind_text(st, 1, "row");
    cr_assert_eq(ks_sql_step(st), KS_SQL_ROW);
    cr_expect(ks_sql_col_copy(st, 0, x->literal, sizeof(x->literal)));
    cr_expect_eq(ks_sql_col_i64(st, 1), 7);
    return ks_sql_done(st);
}

Test(sql, fragments_expand_and_placeholders_are_checked)
{
    struct typed t = {.id = "row", .n = 7};
    cr_assert_eq(ks_sql_tx(store, typed_insert, &t), KS_OK);
    struct texts x = {{0}};
    cr_assert_eq(ks_sql_tx(store, texts_tx, &x), KS_OK);
    cr_expect_str_eq(x.literal, "a?1 {{x}}");
}

/* --- batches, per-key queries, locks, snapshots -------------------------------------------------
 */

static const char *const batch_notes[] = {"plain", "with \"quotes\"", "back\\slash",
                                          NULL,    "{braces,comma}",  "NULL"};
#define BATCH_N (sizeof(batch_notes) / sizeof(batch_notes[0]))

static int batch_tx(struct ks_sql *db, void *arg)
{
    int64_t *changed = arg;
    char sql[200];
    snprintf(sql, sizeof(sql),
             "INSERT INTO %s (id, n, b, note) VALUES (?1, ?2, ?3, ?4)"
             " ON CONFLICT (id) DO UPDATE SET n = excluded.n",
             table);
    struct ks_sql_stmt *ins = NULL, *upd = NULL;
    int rc = ks_sql_batch(db, sql, &ins);
    snprintf(sql, sizeof(sql), "UPDATE %s SET n = ?2 WHERE id = ?1", table);
    if (rc == KS_OK)
        rc = ks_sql_batch(db, sql, &upd);
    for (size_t i = 0; rc == KS_OK && i < BATCH_N; i++) {
        char id[8];
        snprintf(id, sizeof(id), "b%zu", i);
        ks_sql_bind_text(ins, 1, id);
        ks_sql_bind_i64(ins, 2, (int64_t)i - 3);
        ks_sql_bind_bool(ins, 3, i % 2 == 1);
        ks_sql_bind_text(ins, 4, batch_notes[i]);
        rc = ks_sql_batch_add(ins);
    }
    if (rc == KS_OK)
        rc = ks_sql_batch_run(ins);
    changed[0] = ks_sql_changes(ins);
    for (size_t i = 0; rc == KS_OK && i < BATCH_N; i += 2) {
        char id[8];
        snprintf(id, sizeof(id), "b%zu", i);
        ks_sql_bind_text(upd, 1, id);
        ks_sql_bind_i64(upd, 2, 100 + (int64_t)i);
        rc = ks_sql_batch_add(upd);
    }
    ks_sql_bind_text(upd, 1, "absent");
    ks_sql_bind_i64(upd, 2, 0);
    if (rc == KS_OK && (rc = ks_sql_batch_add(upd)) == KS_OK)
        rc = ks_sql_batch_run(upd);
    changed[1] = ks_sql_changes(upd);
    /* An empty batch runs nothing. */
    if (rc == KS_OK && (rc = ks_sql_batch(db, sql, &upd)) == KS_OK)
        rc = ks_sql_batch_run(upd);
    return rc;
}

struct seen {
    size_t n;
    size_t keys[16];
    int64_t values[16];
    char notes[16][32];
    bool nulls[16];
    bool bools[16];
};

static int seen_row(void *ctx, size_t key, struct ks_sql_stmt *row)
{
    struct seen *s = ctx;
    cr_assert_lt(s->n, 16);
    s->keys[s->n] = key;
    s->values[s->n] = ks_sql_col_i64(row, 0);
    s->nulls[s->n] = ks_sql_col_is_null(row, 1);
    ks_sql_col_copy(row, 1, s->notes[s->n], sizeof(s->notes[0]));
    s->bools[s->n] = ks_sql_col_bool(row, 2);
    s->n++;
    return KS_OK;
}

static int each_rx(struct ks_sql *db, void *arg)
{
    struct seen *s = arg;
    /* Keys out of id order, one absent, one repeated: rows come key by key, as given. */
    const char *const keys[] = {"b5", "b0", "zz", "b3", "b0", "b1", "b2", "b4"};
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT n AS n_value, note, b FROM %s WHERE id = ?1", table);
    return ks_sql_each_key(db, sql, keys, sizeof(keys) / sizeof(keys[0]), seen_row, s);
}

Test(sql, batches_write_many_rows_and_per_key_queries_read_them_in_key_order)
{
    int64_t changed[2] = {0};
    cr_assert_eq(ks_sql_tx(store, batch_tx, changed), KS_OK);
    cr_expect_eq(changed[0], (int64_t)BATCH_N);
    cr_expect_eq(changed[1], 3, "b0, b2, b4 (not the absent one)");
    struct seen s = {0};
    cr_assert_eq(ks_sql_read(store, each_rx, &s), KS_OK);
    size_t want_keys[] = {0, 1, 3, 4, 5, 6, 7};
    int64_t want_values[] = {2, 100, 0, 100, -2, 102, 104};
    int note_of[] = {5, 0, 3, 0, 1, 2, 4};
    cr_assert_eq(s.n, 7);
    for (size_t i = 0; i < s.n; i++) {
        cr_expect_eq(s.keys[i], want_keys[i], "row %zu", i);
        cr_expect_eq(s.values[i], want_values[i], "row %zu", i);
        const char *note = batch_notes[note_of[i]];
        cr_expect_eq(s.nulls[i], note == NULL, "row %zu", i);
        cr_expect_str_eq(s.notes[i], note ? note : "", "row %zu", i);
        cr_expect_eq(s.bools[i], note_of[i] % 2 == 1, "row %zu", i);
    }
}

static int each_stop(void *ctx, size_t key, struct ks_sql_stmt *row)
{
    (void)key, (void)row;
    int *calls = ctx;
    return ++*calls == 2 ? KS_ERR_REJECTED : KS_OK;
}

static int lock_and_stop(struct ks_sql *db, void *arg)
{
    int *calls = arg;
    int32_t keys[] = {-5, 3, 77};
    int rc = ks_sql_lock(db, 4242, keys, 3);
    if (rc != KS_OK)
        return rc;
    const char *const ids[] = {"b0", "b1", "b2"};
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT n FROM %s WHERE id = ?1{{for_update}}", table);
    return ks_sql_each_key(db, sql, ids, 3, each_stop, calls);
}

static int snapshot_count(struct ks_sql *db, void *arg)
{
    int *rows = arg;
    for (int i = 0; i < 2; i++) {
        char sql[160];
        snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
        struct ks_sql_stmt *st = NULL;
        int rc = ks_sql_prepare(db, sql, &st);
        if (rc != KS_OK || (rc = ks_sql_step(st)) != KS_SQL_ROW)
            return rc == KS_OK ? KS_ERR_IO : rc;
        rows[i] = (int)ks_sql_col_i64(st, 0);
        if ((rc = ks_sql_done(st)) != KS_OK)
            return rc;
    }
    return KS_OK;
}

Test(sql, locks_row_locks_a_stopped_per_key_query_and_a_snapshot)
{
    int64_t changed[2];
    cr_assert_eq(ks_sql_tx(store, batch_tx, changed), KS_OK);
    int calls = 0;
    cr_expect_eq(ks_sql_tx(store, lock_and_stop, &calls), KS_ERR_REJECTED);
    cr_expect_eq(calls, 2, "the callback's code stops the rows");
    int rows[2] = {0};
    cr_assert_eq(ks_sql_read_snapshot(store, snapshot_count, rows), KS_OK);
    cr_expect_eq(rows[0], (int)BATCH_N);
    cr_expect_eq(rows[1], rows[0]);
}

/* --- migrations ---------------------------------------------------------------------------------
 */

struct mod {
    char name[32];
    char t1[32], t2[32], t3[32];
    char sql[3][256];
    struct ks_sql_migration m[3];
};

/* A module of three migrations, each creating a table (a second run of one would fail). */
static void mod_init(struct mod *md)
{
    random_name(md->name, sizeof(md->name), "unit_");
    random_name(md->t1, sizeof(md->t1), "sqlm_");
    random_name(md->t2, sizeof(md->t2), "sqlm_");
    random_name(md->t3, sizeof(md->t3), "sqlm_");
    snprintf(md->sql[0], sizeof(md->sql[0]),
             "-- a comment; with a semicolon\nCREATE TABLE %s (id TEXT PRIMARY KEY, v {{int64}}"
             " NOT NULL){{without_rowid}};\nINSERT INTO %s VALUES ('a', 1);",
             md->t1, md->t1);
    snprintf(md->sql[1], sizeof(md->sql[1]), "CREATE TABLE %s (pos {{serial_pk}}, b {{bytes}});",
             md->t2);
    snprintf(md->sql[2], sizeof(md->sql[2]), "ALTER TABLE %s ADD COLUMN w {{bool}};", md->t1);
    for (int i = 0; i < 3; i++)
        md->m[i] = (struct ks_sql_migration){i + 1, "unit", md->sql[i], 0};
}

static int module_version(const char *module)
{
    int v = -1;
    cr_assert_eq(ks_sql_schema_version(store, module, &v), KS_OK);
    return v;
}

/* Drops a table other than the case's own. */
static void drop(const char *name)
{
    char own[sizeof(table)];
    memcpy(own, table, sizeof(own));
    snprintf(table, sizeof(table), "%s", name);
    cr_expect_eq(ddl("DROP TABLE %s"), KS_OK);
    memcpy(table, own, sizeof(own));
}

static void mod_drop(struct mod *md)
{
    drop(md->t1);
    drop(md->t2);
}

Test(sql, migrations_apply_once_in_order_and_new_versions_later)
{
    struct mod md;
    mod_init(&md);
    char why[256];
    cr_expect_eq(module_version(md.name), 0);
    struct ks_sql_schema two = {md.name, md.m, 2};
    cr_assert_eq(ks_sql_migrate(store, &two, why, sizeof(why)), KS_OK, "%s", why);
    cr_expect_eq(module_version(md.name), 2);
    cr_assert_eq(ks_sql_migrate(store, &two, why, sizeof(why)), KS_OK, "a re-run: %s", why);
    cr_expect_eq(module_version(md.name), 2);
    struct ks_sql_schema three = {md.name, md.m, 3};
    cr_assert_eq(ks_sql_migrate(store, &three, why, sizeof(why)), KS_OK, "%s", why);
    cr_expect_eq(module_version(md.name), 3);

    /* A failing migration applies nothing and says which one failed. */
    struct mod bad;
    mod_init(&bad);
    snprintf(bad.sql[1], sizeof(bad.sql[1]), "CREATE TABLE %s (broken", bad.t2);
    struct ks_sql_schema bad2 = {bad.name, bad.m, 2};
    cr_expect_neq(ks_sql_migrate(store, &bad2, why, sizeof(why)), KS_OK);
    cr_expect(strstr(why, "002_unit") != NULL, "%s", why);
    cr_expect_eq(module_version(bad.name), 0, "the first one rolled back with it");
    snprintf(bad.sql[1], sizeof(bad.sql[1]), "CREATE TABLE %s (b {{bytes}});", bad.t2);
    cr_expect_eq(ks_sql_migrate(store, &bad2, why, sizeof(why)), KS_OK, "%s", why);

    /* Versions must run 1, 2, 3 ... */
    struct ks_sql_migration gap[] = {{1, "a", "SELECT 1", 0}, {3, "b", "SELECT 1", 0}};
    struct ks_sql_schema gapped = {md.name, gap, 2};
    cr_expect_eq(ks_sql_migrate(store, &gapped, why, sizeof(why)), KS_ERR_INTERNAL);
    mod_drop(&md);
    mod_drop(&bad);
}

Test(sql, a_database_from_before_is_baselined_not_migrated_again)
{
    /* Migration 1 stands for tables the engine's migration 1 (always there) created: a
     * database without a row for the module records it without running it (it would fail);
     * the leading run stops at the first engine version the store does not have. */
    struct mod md;
    mod_init(&md);
    snprintf(md.sql[0], sizeof(md.sql[0]), "THIS IS NOT SQL");
    md.m[0].engine_version = 1;
    md.m[1].engine_version = 999999; /* never applied: runs */
    char why[256];
    struct ks_sql_schema sc = {md.name, md.m, 3};
    snprintf(md.sql[2], sizeof(md.sql[2]), "ALTER TABLE %s ADD COLUMN w {{bool}};", md.t2);
    cr_assert_eq(ks_sql_migrate(store, &sc, why, sizeof(why)), KS_OK, "%s", why);
    cr_expect_eq(module_version(md.name), 3);
    /* Once recorded, the baseline is not looked at again. */
    cr_assert_eq(ks_sql_migrate(store, &sc, why, sizeof(why)), KS_OK, "%s", why);
    drop(md.t2);
}

/* Two nodes that start at once: two stores on one database migrate one module together. */
struct node {
    struct ks_store *s;
    const struct ks_sql_schema *sc;
    int rc;
    char why[256];
};

static void *node_migrate(void *arg)
{
    struct node *n = arg;
    n->rc = ks_sql_migrate(n->s, n->sc, n->why, sizeof(n->why));
    return NULL;
}

static int count_t1(struct ks_sql *db, void *arg)
{
    const struct mod *md = ((const void *const *)arg)[0];
    int64_t *n = ((void *const *)arg)[1];
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", md->t1);
    struct ks_sql_stmt *st = NULL;
    int rc = ks_sql_prepare(db, sql, &st);
    if (rc != KS_OK || (rc = ks_sql_step(st)) != KS_SQL_ROW)
        return rc == KS_OK ? KS_ERR_IO : rc;
    *n = ks_sql_col_i64(st, 0);
    return ks_sql_done(st);
}

Test(sql, two_nodes_that_start_at_once_migrate_a_module_once)
{
    struct mod md;
    mod_init(&md); /* 001 creates t1 and inserts one row: a second run would fail */
    struct ks_sql_schema sc = {md.name, md.m, 3};
    char why[256];
    struct node nodes[2];
    pthread_t th[2];
    for (int i = 0; i < 2; i++) {
        memset(&nodes[i], 0, sizeof(nodes[i]));
        nodes[i].sc = &sc;
        cr_assert_eq(ks_store_open(store_url, NULL, &nodes[i].s, why, sizeof(why)), KS_OK, "%s",
                     why);
    }
    for (int i = 0; i < 2; i++)
        cr_assert_eq(pthread_create(&th[i], NULL, node_migrate, &nodes[i]), 0);
    for (int i = 0; i < 2; i++) {
        cr_assert_eq(pthread_join(th[i], NULL), 0);
        cr_expect_eq(nodes[i].rc, KS_OK, "node %d: %s", i, nodes[i].why);
        ks_store_close(nodes[i].s);
    }
    cr_expect_eq(module_version(md.name), 3);
    int64_t rows = 0;
    const void *arg[2] = {&md, &rows};
    cr_assert_eq(ks_sql_read(store, count_t1, arg), KS_OK);
    cr_expect_eq(rows, 1, "migration 001 ran once");
    mod_drop(&md);
}

/* --- an old database ----------------------------------------------------------------------------
 */

static int raw_exec_sqlite(void *conn, void *arg)
{
    return sqlite3_exec(conn, arg, NULL, NULL, NULL) == SQLITE_OK ? KS_OK : KS_ERR_IO;
}

static int raw_exec_pg(void *conn, void *arg)
{
    PGresult *r = PQexec(conn, arg);
    ExecStatusType st = PQresultStatus(r);
    PQclear(r);
    return st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK ? KS_OK : KS_ERR_IO;
}

/* An old database of its own: on SQLite the case's fresh file; on PostgreSQL a fresh schema of
 * the shared database (the URL's search_path names it), so the module tables are its own. */
struct old_db {
    struct ks_store *s;
    bool pg;
    char schema[32];
};

static void old_open(struct old_db *o)
{
    memset(o, 0, sizeof(*o));
    o->pg = strcmp(ks_store_kind(store), "postgres") == 0;
    if (!o->pg) {
        o->s = store;
        return;
    }
    random_name(o->schema, sizeof(o->schema), "old_");
    struct ddl d;
    snprintf(d.sql, sizeof(d.sql), "CREATE SCHEMA %s", o->schema);
    cr_assert_eq(ks_sql_tx(store, ddl_tx, &d), KS_OK);
    char url[640], why[256];
    snprintf(url, sizeof(url), "%s%soptions=-csearch_path%%3D%s", store_url,
             strchr(store_url, '?') ? "&" : "?", o->schema);
    cr_assert_eq(ks_store_open(url, NULL, &o->s, why, sizeof(why)), KS_OK, "%s", why);
}

static void old_close(struct old_db *o)
{
    if (!o->pg)
        return;
    ks_store_close(o->s);
    struct ddl d;
    snprintf(d.sql, sizeof(d.sql), "DROP SCHEMA %s CASCADE", o->schema);
    cr_expect_eq(ks_sql_tx(store, ddl_tx, &d), KS_OK);
}

/* Runs raw SQL on the old database, as a binary from before did. */
static int old_exec(struct old_db *o, const char *sql)
{
    return ks_store_with_tx(o->s, o->pg ? raw_exec_pg : raw_exec_sqlite, (void *)sql);
}

/* Applies the store migrations 002 .. 002 + n - 1 as they were, and records them. */
static void old_layout(struct old_db *o, size_t n)
{
    static const char *const names[] = {"ledger", "vault", "sandbox", "payment_resources"};
    for (size_t i = 0; i < n; i++) {
        const char *sql = o->pg ? old_layout_pg[i] : old_layout_sqlite[i];
        cr_assert_eq(old_exec(o, sql), KS_OK, "old migration %zu", i + 2);
        char rec[160];
        snprintf(rec, sizeof(rec),
                 "INSERT INTO schema_migrations (version, name%s) VALUES (%zu, '%s'%s)",
                 o->pg ? "" : ", applied_at", i + 2, names[i], o->pg ? "" : ", 1");
        cr_assert_eq(old_exec(o, rec), KS_OK, "%s", rec);
    }
}

static int old_version(struct old_db *o, const char *module)
{
    int v = -1;
    cr_assert_eq(ks_sql_schema_version(o->s, module, &v), KS_OK);
    return v;
}

Test(sql, an_old_database_opens_with_its_data)
{
    /* What a binary from before made: store migrations 002-005 applied and recorded, the
     * modules' rows in them, no row of theirs in ks_module_schema. */
    struct old_db o;
    old_open(&o);
    old_layout(&o, 4);
    char acct[160];
    snprintf(acct, sizeof(acct),
             "INSERT INTO ledger_accounts VALUES ('old:acct', 'RUB', %s, 500, 0, 0, 1, 1)",
             o.pg ? "true" : "1");
    cr_assert_eq(old_exec(&o, acct), KS_OK);
    cr_assert_eq(old_exec(&o, "INSERT INTO sandbox_operations (session_id, kind, invoice_id,"
                              " payment_id, amount, currency, scenario, status, attempts,"
                              " created_at, updated_at) VALUES ('old-session', 'authorize', 'inv',"
                              " 'pay', 700, 'RUB', 'success', 'succeeded', 1, 1, 1)"),
                 KS_OK);
    cr_expect_eq(old_version(&o, "ledger"), 0);

    struct ks_ledger *l = NULL;
    cr_assert_eq(ks_ledger_open(o.s, NULL, &l), KS_OK, "the tables are there: not re-created");
    struct ks_ledger_account a;
    cr_expect_eq(ks_ledger_account_get(l, "old:acct", &a), KS_OK);
    cr_expect_eq(a.own, 500);
    cr_expect(a.may_go_negative);
    ks_ledger_close(l);

    struct ks_sandbox *sb = NULL;
    cr_assert_eq(ks_sandbox_open(o.s, NULL, &sb), KS_OK);
    struct ks_sandbox_filter f = {.session_id = "old-session", .limit = 10};
    struct ks_sandbox_op *ops = NULL;
    size_t n = 0;
    cr_expect_eq(ks_sandbox_operations_list(sb, &f, &ops, &n), KS_OK);
    cr_expect_eq(n, 1);
    cr_expect(n == 1 && ops[0].amount == 700);
    free(ops);
    ks_sandbox_close(sb);

    char why[256];
    cr_expect_eq(ks_sql_migrate(o.s, &ks_vault_schema, why, sizeof(why)), KS_OK, "%s", why);
    cr_expect_eq(old_version(&o, "ledger"), 1);
    cr_expect_eq(old_version(&o, "sandbox"), 1);
    cr_expect_eq(old_version(&o, "vault"), 2, "both vault migrations were there");
    old_close(&o);
}

Test(sql, an_old_database_without_the_last_vault_migration_gets_it)
{
    /* A binary older still: 002-004 only. The vault's first migration is baselined, its second
     * (payment resources, 005 then) runs. */
    struct old_db o;
    old_open(&o);
    old_layout(&o, 3);
    char why[256];
    cr_assert_eq(ks_sql_migrate(o.s, &ks_vault_schema, why, sizeof(why)), KS_OK, "%s", why);
    cr_expect_eq(old_version(&o, "vault"), 2);
    cr_expect_eq(old_exec(&o, "SELECT resource_id, claimed FROM vault_cards LIMIT 1"), KS_OK,
                 "the columns of migration 005 are there");
    old_close(&o);
}
