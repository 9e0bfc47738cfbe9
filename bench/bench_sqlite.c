/*
 * bench_sqlite.c — the SQLite limit: single-row INSERTs, each its own durable transaction.
 *
 * Same settings as kassa's SQLite store (WAL, synchronous=FULL), in a file beside the engine's
 * store so both see the same disk. One writer, as SQLite allows: this is the number of fsync'ed
 * commits per second the disk gives, which grouped engine commits are measured against.
 */
#include "bench.h"

#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"

static int exec(sqlite3 *db, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        fprintf(stderr, "sqlite-raw: %s: %s\n", sql, msg ? msg : "?");
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

int kb_sqlite_raw_main(int argc, char **argv)
{
    int ok = 0;
    const char *dir = kb_arg_str(argc, argv, "--dir", NULL);
    long long seconds = kb_arg_int(argc, argv, "--seconds", 5, 1, KB_SECONDS_MAX, &ok);
    long long count = kb_arg_int(argc, argv, "--count", 1000000, 1, KB_COUNT_MAX, &ok);
    if (dir == NULL || ok != 0) {
        fprintf(stderr, "usage: kassa-bench sqlite-raw --dir DIR [--seconds S] [--count N]\n");
        return 2;
    }
    (void)mkdir(dir, 0700);
    char path[4096];
    if (snprintf(path, sizeof(path), "%s/raw-commits.db", dir) >= (int)sizeof(path))
        return 2;
    /* A fresh file each run, with its WAL and shared-memory files. */
    char side[4200];
    unlink(path);
    snprintf(side, sizeof(side), "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof(side), "%s-shm", path);
    unlink(side);

    int rc = 1;
    sqlite3 *db = NULL;
    sqlite3_stmt *ins = NULL;
    struct kb_lat lat;
    if (kb_lat_init(&lat, (size_t)count) != 0)
        return 1;
    if (sqlite3_open(path, &db) != SQLITE_OK) {
        fprintf(stderr, "sqlite-raw: cannot open %s\n", path);
        goto out;
    }
    if (exec(db, "PRAGMA journal_mode=WAL") || exec(db, "PRAGMA synchronous=FULL") ||
        exec(db, "CREATE TABLE raw (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, body TEXT NOT "
                 "NULL)"))
        goto out;
    if (sqlite3_prepare_v2(db, "INSERT INTO raw (at, body) VALUES (?1, ?2)", -1, &ins, NULL) !=
        SQLITE_OK) {
        fprintf(stderr, "sqlite-raw: prepare: %s\n", sqlite3_errmsg(db));
        goto out;
    }
    /* About the size of a probe event. */
    char body[160];

    int64_t t0 = ks_mono_us(), deadline = t0 + seconds * 1000000;
    long long done = 0;
    for (long long i = 0; i < count; i++) {
        int64_t s = ks_mono_us();
        if (s >= deadline)
            break;
        int blen = snprintf(body, sizeof(body), "{\"type\":\"appended\",\"value\":%lld}", i);
        sqlite3_bind_int64(ins, 1, ks_now_ms());
        sqlite3_bind_text(ins, 2, body, blen, SQLITE_STATIC);
        int step = sqlite3_step(ins);
        sqlite3_reset(ins);
        if (step != SQLITE_DONE) {
            fprintf(stderr, "sqlite-raw: insert: %s\n", sqlite3_errmsg(db));
            goto out;
        }
        kb_lat_add(&lat, ks_mono_us() - s);
        done++;
    }
    int64_t elapsed_us = ks_mono_us() - t0;
    double secs = (double)elapsed_us / 1e6;
    double rate = secs > 0 ? (double)done / secs : 0;
    int64_t p50 = 0, p99 = 0;
    kb_lat_percentiles(&lat, 1, &p50, &p99);
    printf("sqlite-raw: %lld durable single-row commits in %.2f s = %.0f commits/s "
           "(p50 %.2f ms, p99 %.2f ms)\n",
           done, secs, rate, (double)p50 / 1000, (double)p99 / 1000);
    printf("RESULT kind=sqlite-raw ops=%lld seconds=%.3f rate=%.1f p50_us=%lld p99_us=%lld\n", done,
           secs, rate, (long long)p50, (long long)p99);
    rc = done > 0 ? 0 : 1;
out:
    sqlite3_finalize(ins);
    sqlite3_close(db);
    kb_lat_release(&lat);
    return rc;
}
