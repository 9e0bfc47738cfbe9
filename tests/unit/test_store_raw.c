/*
 * test_store_raw.c — ks_store_with_tx / ks_store_with_reader, the raw access sibling modules
 * (ledger, vault) use: a transaction commits when the callback succeeds and leaves nothing when
 * it fails. Runs on the store named by KASSA_TEST_STORE (default: a fresh SQLite file).
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
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

/* Runs a count(*) query in the backend's own API; -1 on failure. */
static int count_rows(void *conn, const char *kind, const char *sql)
{
    if (strcmp(kind, "sqlite") == 0) {
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

static int count_cursor(void *conn, void *p)
{
    struct raw_arg *a = p;
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cursors WHERE consumer = '%s'", consumer);
    return count_rows(conn, a->kind, sql);
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

/* --- many writers at once: each write stands or falls alone ------------------------------------ */

#define GROUP_THREADS 16
#define GROUP_WRITES 40 /* per thread */

struct group_writer {
    const char *kind;
    int thread;
    int ok, failed; /* what ks_store_with_tx returned */
};

struct group_write {
    const char *kind;
    char consumer[96];
    int fail; /* the callback writes, then fails */
};

static int write_one(void *conn, void *p)
{
    struct group_write *w = p;
    char sql[200];
    snprintf(sql, sizeof(sql), "INSERT INTO cursors (consumer, pos) VALUES ('%s', 7)",
             w->consumer);
    if (strcmp(w->kind, "sqlite") == 0) {
        if (sqlite3_exec(conn, sql, NULL, NULL, NULL) != SQLITE_OK)
            return KS_ERR_IO;
    } else {
        PGresult *r = PQexec(conn, sql);
        int ok = r && PQresultStatus(r) == PGRES_COMMAND_OK;
        PQclear(r);
        if (!ok)
            return KS_ERR_IO;
    }
    return w->fail ? KS_ERR_CONFLICT : KS_OK;
}

static void *group_writer_main(void *p)
{
    struct group_writer *g = p;
    for (int i = 0; i < GROUP_WRITES; i++) {
        struct group_write w = {.kind = g->kind, .fail = (i % 3 == 1)};
        snprintf(w.consumer, sizeof(w.consumer), "%s-%d-%d", consumer, g->thread, i);
        int rc = ks_store_with_tx(store, write_one, &w);
        if (rc == KS_OK)
            g->ok++;
        else if (rc == KS_ERR_CONFLICT)
            g->failed++;
    }
    return NULL;
}

static int count_prefix(void *conn, void *p)
{
    struct raw_arg *a = p;
    char sql[200];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM cursors WHERE consumer LIKE '%s-%%'",
             consumer);
    return count_rows(conn, a->kind, sql);
}

/* Sixteen threads write at once, a third of the writes failing after their INSERT: every
 * successful write is kept, no failed one leaves anything, and on SQLite the writes shared
 * transactions (the group commit) and were all synced. */
Test(store_raw, concurrent_writes_commit_alone_or_together)
{
    pthread_t th[GROUP_THREADS];
    struct group_writer g[GROUP_THREADS];
    struct ks_store_stats before, after;
    ks_store_stats(store, &before);
    for (int t = 0; t < GROUP_THREADS; t++) {
        g[t] = (struct group_writer){.kind = ks_store_kind(store), .thread = t};
        cr_assert_eq(pthread_create(&th[t], NULL, group_writer_main, &g[t]), 0);
    }
    int ok = 0, failed = 0;
    for (int t = 0; t < GROUP_THREADS; t++) {
        pthread_join(th[t], NULL);
        ok += g[t].ok;
        failed += g[t].failed;
    }
    int fails_per_thread = 0;
    for (int i = 0; i < GROUP_WRITES; i++)
        fails_per_thread += i % 3 == 1;
    cr_assert_eq(failed, GROUP_THREADS * fails_per_thread);
    cr_assert_eq(ok, GROUP_THREADS * (GROUP_WRITES - fails_per_thread));
    struct raw_arg a = {.kind = ks_store_kind(store)};
    cr_assert_eq(ks_store_with_reader(store, count_prefix, &a), ok);
    ks_store_stats(store, &after);
    if (strcmp(ks_store_kind(store), "sqlite") == 0) {
        int64_t jobs = after.write_jobs - before.write_jobs;
        int64_t groups = after.write_groups - before.write_groups;
        cr_assert_eq(jobs, GROUP_THREADS * GROUP_WRITES);
        cr_assert(groups >= 1 && groups < jobs, "groups %lld jobs %lld: nothing was grouped",
                  (long long)groups, (long long)jobs);
        cr_assert(after.wal_syncs > before.wal_syncs);
        cr_assert(after.wal_syncs - before.wal_syncs <= groups);
    } else {
        cr_assert_eq(after.write_jobs, 0);
    }
}
