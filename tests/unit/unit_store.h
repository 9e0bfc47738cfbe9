/*
 * unit_store.h — the store a conformance test runs on: KASSA_TEST_STORE (a PostgreSQL URL that
 * tests share, so they use random ids) or, without it, a fresh SQLite file in its own directory.
 */
#ifndef KS_TESTS_UNIT_STORE_H
#define KS_TESTS_UNIT_STORE_H

#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Fills `url`; `dir` gets the SQLite file's directory, or "" on a shared store. */
static inline void unit_store_url(char *url, size_t cap, char *dir, size_t dircap)
{
    const char *env = getenv("KASSA_TEST_STORE");
    dir[0] = '\0';
    if (env && *env && strncmp(env, "sqlite:", 7) != 0) {
        snprintf(url, cap, "%s", env);
        return;
    }
    snprintf(dir, dircap, "/tmp/kassa-unit-XXXXXX");
    cr_assert_not_null(mkdtemp(dir));
    snprintf(url, cap, "sqlite:%s/kassa.db", dir);
}

/* Removes the directory unit_store_url made (nothing on a shared store). */
static inline void unit_store_remove(const char *dir)
{
    if (!dir[0])
        return;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    cr_assert_eq(system(cmd), 0);
}

/* A store of one test's own, for what keeps one key per database (the vault's data key, the
 * journal's and the emulator's keys): on the PostgreSQL of KASSA_TEST_STORE a schema of its own,
 * `prefix` and random hex, that the URL selects with search_path; otherwise a SQLite file in
 * `dir` (made by the caller). unit_schema_drop removes the schema again. */
struct unit_schema {
    char pg_url[768]; /* the shared database, for the schema's own connection */
    char schema[48];  /* "" on SQLite */
};

static void unit_schema_quiet(void *arg, const char *msg)
{
    (void)arg;
    (void)msg; /* DROP SCHEMA ... CASCADE lists every table it drops */
}

static inline void unit_schema_exec(const struct unit_schema *s, const char *sql)
{
    PGconn *pg = PQconnectdb(s->pg_url);
    cr_assert_eq(PQstatus(pg), CONNECTION_OK, "%s", PQerrorMessage(pg));
    PQsetNoticeProcessor(pg, unit_schema_quiet, NULL);
    PGresult *r = PQexec(pg, sql);
    cr_assert_eq(PQresultStatus(r), PGRES_COMMAND_OK, "%s: %s", sql, PQerrorMessage(pg));
    PQclear(r);
    PQfinish(pg);
}

static inline void unit_schema_store_url(struct unit_schema *s, const char *prefix,
                                         const char *dir, char *url, size_t cap)
{
    memset(s, 0, sizeof(*s));
    const char *env = getenv("KASSA_TEST_STORE");
    if (!env || !*env || strncmp(env, "sqlite:", 7) == 0) {
        snprintf(url, cap, "sqlite:%s/k.db", dir);
        return;
    }
    unsigned char rnd[8];
    FILE *f = fopen("/dev/urandom", "rb");
    cr_assert(f && fread(rnd, 1, sizeof(rnd), f) == sizeof(rnd));
    fclose(f);
    char hex[17];
    for (size_t i = 0; i < sizeof(rnd); i++)
        snprintf(hex + 2 * i, 3, "%02x", rnd[i]);
    snprintf(s->schema, sizeof(s->schema), "%s_%s", prefix, hex);
    snprintf(s->pg_url, sizeof(s->pg_url), "%s", env);
    char sql[128];
    snprintf(sql, sizeof(sql), "CREATE SCHEMA %s", s->schema);
    unit_schema_exec(s, sql);
    snprintf(url, cap, "%s%soptions=-csearch_path%%3D%s", env, strchr(env, '?') ? "&" : "?",
             s->schema);
}

static inline void unit_schema_drop(const struct unit_schema *s)
{
    if (!s->schema[0])
        return;
    char sql[128];
    snprintf(sql, sizeof(sql), "DROP SCHEMA %s CASCADE", s->schema);
    unit_schema_exec(s, sql);
}

#endif
