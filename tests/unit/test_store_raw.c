/*
 * test_store_raw.c — ks_store_with_tx / ks_store_with_reader, the raw access sibling modules
 * (ledger, vault) use: a transaction commits when the callback succeeds and leaves nothing when
 * it fails. Runs on the store named by KASSA_TEST_STORE (default: a fresh SQLite file).
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/ids.h"
#include "store/store.h"

static struct ks_store *store;
static char dir[64];
static char consumer[64];

static void setup(void)
{
    char url[512], why[256];
    const char *env = getenv("KASSA_TEST_STORE");
    dir[0] = '\0';
    if (env && *env && strncmp(env, "sqlite:", 7) != 0) {
        snprintf(url, sizeof(url), "%s", env);
    } else {
        snprintf(dir, sizeof(dir), "/tmp/kassa-raw-XXXXXX");
        cr_assert_not_null(mkdtemp(dir));
        snprintf(url, sizeof(url), "sqlite:%s/k.db", dir);
    }
    cr_assert_eq(ks_store_open(url, NULL, &store, why, sizeof(why)), KS_OK, "%s", why);
    char rnd[17];
    cr_assert_eq(ks_id_random(rnd, 16), KS_OK);
    snprintf(consumer, sizeof(consumer), "raw-%s", rnd);
}

static void teardown(void)
{
    ks_store_close(store);
    if (dir[0]) {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
        cr_assert_eq(system(cmd), 0);
    }
}

struct raw_arg {
    const char *kind;
    int result; /* what the callback returns after its write */
};

/* Inserts a cursor row with plain SQL in the backend's own API. */
static int write_cursor(void *conn, void *p)
{
    struct raw_arg *a = p;
    char sql[160];
    snprintf(sql, sizeof(sql), "INSERT INTO cursors (consumer, pos) VALUES ('%s', 42)", consumer);
    if (strcmp(a->kind, "sqlite") == 0) {
        if (sqlite3_exec(conn, sql, NULL, NULL, NULL) != SQLITE_OK)
            return KS_ERR_IO;
    } else {
        PGresult *r = PQexec(conn, sql);
        int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return KS_ERR_IO;
    }
    return a->result;
}

static int count_cursor(void *conn, void *p)
{
    struct raw_arg *a = p;
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cursors WHERE consumer = '%s'", consumer);
    if (strcmp(a->kind, "sqlite") == 0) {
        sqlite3_stmt *q = NULL;
        int n = -1;
        if (sqlite3_prepare_v2(conn, sql, -1, &q, NULL) == SQLITE_OK && sqlite3_step(q) == SQLITE_ROW)
            n = sqlite3_column_int(q, 0);
        sqlite3_finalize(q);
        return n;
    }
    PGresult *r = PQexec(conn, sql);
    int n = r && PQresultStatus(r) == PGRES_TUPLES_OK ? (int)strtol(PQgetvalue(r, 0, 0), NULL, 10)
                                                       : -1;
    PQclear(r);
    return n;
}

TestSuite(store_raw, .init = setup, .fini = teardown, .timeout = 30);

Test(store_raw, failed_callback_rolls_back)
{
    struct raw_arg a = {.kind = ks_store_kind(store), .result = KS_ERR_CONFLICT};
    cr_assert_eq(ks_store_with_tx(store, write_cursor, &a), KS_ERR_CONFLICT);
    cr_assert_eq(ks_store_with_reader(store, count_cursor, &a), 0);
    int64_t pos = -1;
    cr_assert_eq(ks_store_cursor_get(store, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 0);
}

Test(store_raw, successful_callback_commits)
{
    struct raw_arg a = {.kind = ks_store_kind(store), .result = KS_OK};
    cr_assert_eq(ks_store_with_tx(store, write_cursor, &a), KS_OK);
    cr_assert_eq(ks_store_with_reader(store, count_cursor, &a), 1);
    int64_t pos = 0;
    cr_assert_eq(ks_store_cursor_get(store, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 42);
    /* a failing statement inside the callback rolls back and the store stays usable */
    cr_assert_eq(ks_store_with_tx(store, write_cursor, &a), KS_ERR_IO);
    cr_assert_eq(ks_store_cursor_set(store, consumer, 50), KS_OK);
    cr_assert_eq(ks_store_cursor_get(store, consumer, &pos), KS_OK);
    cr_assert_eq(pos, 50);
}
