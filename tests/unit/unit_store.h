/*
 * unit_store.h — the store a conformance test runs on: KASSA_TEST_STORE (a PostgreSQL URL that
 * tests share, so they use random ids) or, without it, a fresh SQLite file in its own directory.
 */
#ifndef KS_TESTS_UNIT_STORE_H
#define KS_TESTS_UNIT_STORE_H

#include <criterion/criterion.h>
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

#endif
