/*
 * test_journal.c — the offline journal of a register group (src/receipts/journal.h,
 * docs/receipts-journal.md) on every storage backend: numbering and idempotency, concurrent
 * appenders, the head and sync state, verification of the stored journal and of exported files
 * tampered with in every way the design names, and the command line (ks_journal_cli).
 *
 * The store comes from KASSA_TEST_STORE: without it each test gets a fresh SQLite file; with a
 * PostgreSQL URL each test gets its own schema (search_path), because the journal's keys are
 * sealed by a vault, and a store's vault belongs to one master key.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/ids.h"
#include "core/json.h"
#include "receipts/journal.h"
#include "store/sql.h"
#include "store/store.h"
#include "vault/vault.h"

#include "unit_store.h"

#define T0_MS 1773576000000LL /* 2026-03-15T12:00:00Z */
#define LINES_MAX 64          /* lines of an exported file a test edits */

struct fixture {
    char dir[64];
    char url[1024];
    struct unit_schema pg; /* PostgreSQL only: the test's own schema */
    char key_path[128];
    FILE *log_file;
    struct ks_log log;
    struct ks_store *store;
    struct ks_vault *vault;
    struct ks_journal *j;
};

static struct fixture fx;

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-journal-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    unit_schema_store_url(&fx.pg, "journal_test", fx.dir, fx.url, sizeof(fx.url));
    snprintf(fx.key_path, sizeof(fx.key_path), "%s/vault-master.key", fx.dir);
    char log_path[128];
    snprintf(log_path, sizeof(log_path), "%s/journal.log", fx.dir);
    fx.log_file = fopen(log_path, "w");
    cr_assert_not_null(fx.log_file);
    ks_log_init(&fx.log, fx.log_file, KS_LOG_DEBUG);
    char why[512] = "";
    cr_assert_eq(ks_store_open(fx.url, NULL, &fx.store, why, sizeof(why)), KS_OK, "%s", why);
    struct ks_vault_options vo = {
        .store = fx.store, .master_key_path = fx.key_path, .log = &fx.log};
    cr_assert_eq(ks_vault_open(&vo, &fx.vault, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(ks_journal_open(fx.store, fx.vault, &fx.log, &fx.j, why, sizeof(why)), KS_OK, "%s",
                 why);
}

static void teardown(void)
{
    ks_journal_close(fx.j);
    ks_vault_close(fx.vault);
    ks_store_close(fx.store);
    ks_log_release(&fx.log);
    fclose(fx.log_file);
    unit_schema_drop(&fx.pg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(journal, .init = setup, .fini = teardown, .timeout = 120);

/* --- helpers ---------------------------------------------------------------------------------- */

static json_t *receipt_entry(int i)
{
    /* a real price too: its canonical form must survive an export and a re-parse */
    return json_pack("{s:s, s:{s:i, s:s, s:[{s:s, s:f, s:i}]}}", "operation", "sell", "receipt",
                     "total", 150 * i, "note", "receipt number", "items", "name", "tea", "price",
                     1.5, "quantity", i);
}

static int64_t append(const char *group, int i)
{
    char rid[32];
    snprintf(rid, sizeof(rid), "r%d", i);
    json_t *e = receipt_entry(i);
    int64_t seq = 0;
    cr_assert_eq(ks_journal_append(fx.j, group, rid, e, T0_MS + i, &seq), KS_OK, "append %s", rid);
    json_decref(e);
    return seq;
}

static void verify_ok(const char *group, int64_t want)
{
    int64_t n = -1, bad = -1;
    char why[KS_JOURNAL_WHY_BYTES] = "";
    cr_assert_eq(ks_journal_verify(fx.j, group, &n, &bad, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(n, want);
    cr_assert_eq(bad, 0);
}

/* An exported file, split into lines (without their newlines). */
struct file {
    char *line[LINES_MAX];
    size_t n;
};

static void file_export(const char *group, struct file *f)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    cr_assert_not_null(out);
    cr_assert_eq(ks_journal_export(fx.j, group, out), KS_OK);
    fclose(out);
    memset(f, 0, sizeof(*f));
    char *save = NULL;
    for (char *l = strtok_r(buf, "\n", &save); l; l = strtok_r(NULL, "\n", &save)) {
        cr_assert_lt(f->n, LINES_MAX);
        f->line[f->n++] = strdup(l);
    }
    free(buf);
}

static void file_release(struct file *f)
{
    for (size_t i = 0; i < f->n; i++)
        free(f->line[i]);
    memset(f, 0, sizeof(*f));
}

/* Verifies the lines of `f` as a file; returns the code, with the bad entry and why. */
static int file_verify(const struct file *f, int64_t *bad, char *why, size_t whylen)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *w = open_memstream(&buf, &len);
    cr_assert_not_null(w);
    for (size_t i = 0; i < f->n; i++)
        fprintf(w, "%s\n", f->line[i]);
    fclose(w);
    FILE *in = fmemopen(buf, len ? len : 1, "r");
    cr_assert_not_null(in);
    char group[KS_JOURNAL_GROUP_BYTES_MAX + 1];
    int64_t n = 0;
    int rc = ks_journal_verify_file(fx.j, in, group, &n, bad, why, whylen);
    fclose(in);
    free(buf);
    return rc;
}

/* Asserts that `f` fails verification at entry `want` with a reason containing `reason`. */
static void file_bad_at(const struct file *f, int64_t want, const char *reason)
{
    int64_t bad = -1;
    char why[KS_JOURNAL_WHY_BYTES] = "";
    cr_assert_eq(file_verify(f, &bad, why, sizeof(why)), KS_ERR_INVALID, "%s", why);
    cr_assert_eq(bad, want, "bad %lld, want %lld: %s", (long long)bad, (long long)want, why);
    cr_assert_not_null(strstr(why, reason), "'%s' does not say '%s'", why, reason);
    char prefix[32];
    if (want > 0)
        snprintf(prefix, sizeof(prefix), "entry %lld: ", (long long)want);
    else
        snprintf(prefix, sizeof(prefix), "header: ");
    cr_assert(strncmp(why, prefix, strlen(prefix)) == 0, "'%s' does not start '%s'", why, prefix);
}

/* A copy of `f` with line `at` (0 = header, k = entry k) removed. */
static void file_copy(const struct file *f, struct file *out)
{
    memset(out, 0, sizeof(*out));
    for (size_t i = 0; i < f->n; i++)
        out->line[out->n++] = strdup(f->line[i]);
}

static void line_remove(struct file *f, size_t at)
{
    free(f->line[at]);
    memmove(&f->line[at], &f->line[at + 1], (f->n - at - 1) * sizeof(f->line[0]));
    f->n--;
}

static void line_insert(struct file *f, size_t at, const char *text)
{
    cr_assert_lt(f->n, LINES_MAX);
    memmove(&f->line[at + 1], &f->line[at], (f->n - at) * sizeof(f->line[0]));
    f->line[at] = strdup(text);
    f->n++;
}

/* Replaces member `key` of line `at` with `v` (stolen). */
static void line_set(struct file *f, size_t at, const char *key, json_t *v)
{
    json_error_t err;
    json_t *o = json_loads(f->line[at], 0, &err);
    cr_assert_not_null(o, "%s", err.text);
    json_object_set_new(o, key, v);
    free(f->line[at]);
    f->line[at] = ks_json_canonical(o);
    json_decref(o);
}

/* --- appending -------------------------------------------------------------------------------- */

Test(journal, entries_are_numbered_in_order_and_appends_are_idempotent)
{
    for (int i = 1; i <= 3; i++)
        cr_assert_eq(append("atol-1", i), i);
    cr_assert_eq(append("atol-2", 7), 1, "each group counts from 1");
    /* the same receipt again, even with another entry: its seq, nothing changes */
    json_t *other = json_pack("{s:s}", "operation", "sell_refund");
    int64_t seq = 0;
    cr_assert_eq(ks_journal_append(fx.j, "atol-1", "r2", other, T0_MS + 99, &seq), KS_OK);
    cr_assert_eq(seq, 2);
    json_decref(other);
    int64_t count = 0, oldest = 0;
    cr_assert_eq(ks_journal_pending(fx.j, "atol-1", &count, &oldest), KS_OK);
    cr_assert_eq(count, 3);
    cr_assert_eq(oldest, T0_MS + 1);
    struct ks_journal_entry e;
    cr_assert_eq(ks_journal_head(fx.j, "atol-1", &e), KS_OK);
    cr_assert_eq(e.seq, 1);
    cr_assert_str_eq(e.receipt_id, "r1");
    cr_assert_str_eq(e.group, "atol-1");
    cr_assert_eq(e.appended_at_ms, T0_MS + 1);
    json_t *want = receipt_entry(1);
    cr_assert(json_equal(e.entry, want), "the head carries its entry");
    json_decref(want);
    ks_journal_entry_release(&e);
    verify_ok("atol-1", 3);
    verify_ok("atol-2", 1);

    json_t *ok = receipt_entry(1), *arr = json_array();
    cr_assert_eq(ks_journal_append(fx.j, "bad group", "r1", ok, T0_MS, &seq), KS_ERR_INVALID);
    cr_assert_eq(ks_journal_append(fx.j, "g", "", ok, T0_MS, &seq), KS_ERR_INVALID);
    cr_assert_eq(ks_journal_append(fx.j, "g", "r1", arr, T0_MS, &seq), KS_ERR_INVALID);
    char big[KS_JOURNAL_ENTRY_BYTES_MAX + 1];
    memset(big, 'x', sizeof(big) - 1);
    big[sizeof(big) - 1] = '\0';
    json_t *huge = json_pack("{s:s}", "note", big);
    cr_assert_eq(ks_journal_append(fx.j, "g", "r1", huge, T0_MS, &seq), KS_ERR_LIMIT);
    json_decref(huge);
    json_decref(ok);
    json_decref(arr);
    cr_assert_eq(ks_journal_head(fx.j, "g", &e), KS_ERR_NOT_FOUND, "nothing was appended to g");
    int64_t n = 0, bad = 0;
    char why[KS_JOURNAL_WHY_BYTES];
    cr_assert_eq(ks_journal_verify(fx.j, "nobody", &n, &bad, why, sizeof(why)), KS_ERR_NOT_FOUND);
}

#define APPENDERS 4
#define APPENDS_EACH 20

struct appender {
    int id;
    int64_t seqs[APPENDS_EACH + 1];
};

static void *appender_run(void *arg)
{
    struct appender *a = arg;
    for (int i = 0; i <= APPENDS_EACH; i++) {
        char rid[32];
        /* the last append of every thread is one shared receipt: it gets one entry */
        if (i == APPENDS_EACH)
            snprintf(rid, sizeof(rid), "shared");
        else
            snprintf(rid, sizeof(rid), "t%d-%d", a->id, i);
        json_t *e = receipt_entry(i + 1);
        int rc = KS_ERR_RETRY;
        for (int attempt = 0; attempt < 20 && rc == KS_ERR_RETRY; attempt++)
            rc = ks_journal_append(fx.j, "busy", rid, e, T0_MS + i, &a->seqs[i]);
        json_decref(e);
        if (rc != KS_OK)
            a->seqs[i] = -1;
    }
    return NULL;
}

Test(journal, concurrent_appenders_number_entries_one_to_n_without_gaps)
{
    struct appender a[APPENDERS];
    pthread_t th[APPENDERS];
    for (int t = 0; t < APPENDERS; t++) {
        memset(&a[t], 0, sizeof(a[t]));
        a[t].id = t;
        cr_assert_eq(pthread_create(&th[t], NULL, appender_run, &a[t]), 0);
    }
    for (int t = 0; t < APPENDERS; t++)
        pthread_join(th[t], NULL);
    const int64_t total = APPENDERS * APPENDS_EACH + 1;
    bool seen[APPENDERS * APPENDS_EACH + 2] = {false};
    int64_t shared = a[0].seqs[APPENDS_EACH];
    for (int t = 0; t < APPENDERS; t++) {
        cr_assert_eq(a[t].seqs[APPENDS_EACH], shared, "one entry for the shared receipt");
        for (int i = 0; i < APPENDS_EACH; i++) {
            int64_t s = a[t].seqs[i];
            cr_assert(s >= 1 && s <= total, "seq %lld", (long long)s);
            cr_assert_not(seen[s], "seq %lld given twice", (long long)s);
            seen[s] = true;
        }
    }
    cr_assert_not(seen[shared]);
    int64_t count = 0, oldest = 0;
    cr_assert_eq(ks_journal_pending(fx.j, "busy", &count, &oldest), KS_OK);
    cr_assert_eq(count, total);
    verify_ok("busy", total);
}

/* --- the head and sync state ------------------------------------------------------------------ */

Test(journal, only_the_head_is_synced_and_strictly_in_order)
{
    for (int i = 1; i <= 3; i++)
        append("reg", i);
    append("other", 1);
    char groups[4][65];
    size_t n = 0;
    cr_assert_eq(ks_journal_groups_pending(fx.j, groups, 4, &n), KS_OK);
    cr_assert_eq(n, 2);
    cr_assert_str_eq(groups[0], "other");
    cr_assert_str_eq(groups[1], "reg");
    cr_assert_eq(ks_journal_groups_pending(fx.j, groups, 1, &n), KS_ERR_LIMIT);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(groups[0], "other");

    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 2, "done", T0_MS + 10), KS_ERR_CONFLICT);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 9, "done", T0_MS + 10), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 1, "maybe", T0_MS + 10), KS_ERR_INVALID);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 1, "done", T0_MS + 10), KS_OK);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 1, "done", T0_MS + 11), KS_OK, "again");
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 1, "fail", T0_MS + 11), KS_ERR_CONFLICT);
    struct ks_journal_entry e;
    cr_assert_eq(ks_journal_head(fx.j, "reg", &e), KS_OK);
    cr_assert_eq(e.seq, 2);
    cr_assert_str_eq(e.receipt_id, "r2");
    ks_journal_entry_release(&e);
    int64_t count = 0, oldest = 0;
    cr_assert_eq(ks_journal_pending(fx.j, "reg", &count, &oldest), KS_OK);
    cr_assert_eq(count, 2);
    cr_assert_eq(oldest, T0_MS + 2);

    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 2, "fail", T0_MS + 12), KS_OK);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "reg", 3, "done", T0_MS + 13), KS_OK);
    cr_assert_eq(ks_journal_head(fx.j, "reg", &e), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_journal_pending(fx.j, "reg", &count, &oldest), KS_OK);
    cr_assert_eq(count, 0);
    cr_assert_eq(oldest, 0);
    cr_assert_eq(ks_journal_groups_pending(fx.j, groups, 4, &n), KS_OK);
    cr_assert_eq(n, 1);
    cr_assert_str_eq(groups[0], "other");

    /* the page for operators: sync state, no JSON; a later append is unsynced */
    append("reg", 4);
    struct ks_journal_entry rows[8];
    cr_assert_eq(ks_journal_list(fx.j, "reg", 1, 8, rows, &n), KS_OK);
    cr_assert_eq(n, 3);
    cr_assert_eq(rows[0].seq, 2);
    cr_assert_str_eq(rows[0].outcome, "fail");
    cr_assert_eq(rows[0].synced_at_ms, T0_MS + 12);
    cr_assert_str_eq(rows[1].outcome, "done");
    cr_assert_eq(rows[2].seq, 4);
    cr_assert_str_eq(rows[2].outcome, "");
    cr_assert_eq(rows[2].synced_at_ms, 0);
    cr_assert_null(rows[2].entry);
    cr_assert_eq(strlen(rows[2].hash), 64);
    json_t *page = ks_journal_entry_json(&rows[0]);
    cr_assert_eq(json_integer_value(json_object_get(page, "seq")), 2);
    cr_assert_str_eq(json_string_value(json_object_get(page, "receiptID")), "r2");
    cr_assert_str_eq(json_string_value(json_object_get(page, "appendedAt")),
                     "2026-03-15T12:00:00.002Z");
    cr_assert_str_eq(json_string_value(json_object_get(page, "syncedAt")),
                     "2026-03-15T12:00:00.012Z");
    cr_assert_str_eq(json_string_value(json_object_get(page, "outcome")), "fail");
    json_decref(page);
    page = ks_journal_entry_json(&rows[2]);
    cr_assert_null(json_object_get(page, "outcome"));
    cr_assert_null(json_object_get(page, "syncedAt"));
    cr_assert_null(json_object_get(page, "entry"));
    json_decref(page);
    for (size_t i = 0; i < n; i++)
        ks_journal_entry_release(&rows[i]);
    cr_assert_eq(ks_journal_list(fx.j, "reg", 0, 2, rows, &n), KS_OK);
    cr_assert_eq(n, 2);
    cr_assert_eq(rows[1].seq, 2);
    for (size_t i = 0; i < n; i++)
        ks_journal_entry_release(&rows[i]);
    cr_assert_eq(ks_journal_list(fx.j, "reg", 0, KS_JOURNAL_LIST_MAX + 1, rows, &n), KS_ERR_LIMIT);
    verify_ok("reg", 4); /* sync state is not chained */
}

/* --- verification of the stored journal ------------------------------------------------------- */

struct edit_arg {
    const char *group, *sql;
    int64_t seq;
};

static int edit_tx(struct ks_sql *db, void *arg)
{
    struct edit_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, a->sql, &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    ks_sql_bind_i64(q, 2, a->seq);
    return ks_sql_exec(q);
}

/* Runs `sql` with ?1 = `group` and ?2 = `seq`, behind the journal's back. */
static void store_edit(const char *group, const char *sql, int64_t seq)
{
    struct edit_arg a = {group, sql, seq};
    cr_assert_eq(ks_sql_tx(fx.store, edit_tx, &a), KS_OK, "%s", sql);
}

static void store_bad_at(int64_t want, const char *reason)
{
    int64_t n = 0, bad = 0;
    char why[KS_JOURNAL_WHY_BYTES] = "";
    cr_assert_eq(ks_journal_verify(fx.j, "store", &n, &bad, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_eq(bad, want, "%s", why);
    cr_assert_not_null(strstr(why, reason), "'%s' does not say '%s'", why, reason);
}

Test(journal, verify_names_the_first_bad_entry_of_the_stored_journal)
{
    for (int i = 1; i <= 6; i++)
        append("store", i);
    verify_ok("store", 6);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "store", 1, "done", T0_MS), KS_OK);
    cr_assert_eq(ks_journal_mark_synced(fx.j, "store", 2, "done", T0_MS), KS_OK);
    /* one byte of entry 5's JSON */
    store_edit("store",
               "UPDATE receipt_journal SET entry = replace(entry, 'tea', 'tee')"
               " WHERE group_id = ?1 AND seq = ?2",
               5);
    store_bad_at(5, "hash mismatch");
    /* entry 4's prev_hash: the chain breaks there first */
    store_edit("store",
               "UPDATE receipt_journal SET prev_hash = hash WHERE group_id = ?1 AND seq = ?2", 4);
    store_bad_at(4, "broken chain");
    /* entry 3 removed: a gap */
    store_edit("store", "DELETE FROM receipt_journal WHERE group_id = ?1 AND seq = ?2", 3);
    store_bad_at(3, "missing: entry 2 is followed by entry 4");
    /* the synced entries removed, the rest renumbered: the sync state remembers them */
    store_edit("store", "DELETE FROM receipt_journal WHERE group_id = ?1 AND seq > ?2", 1);
    store_edit("store", "DELETE FROM receipt_journal WHERE group_id = ?1 AND seq = ?2", 1);
    store_bad_at(1, "missing: entries up to 2 were synced");
}

/* The first column of the first row of `sql` (?1 = `group`) into `out`, behind the journal's
 * back. */
struct text_arg {
    const char *sql, *group;
    char *out;
    size_t cap;
};

static int text_rx(struct ks_sql *db, void *arg)
{
    struct text_arg *a = arg;
    struct ks_sql_stmt *q;
    int rc = ks_sql_prepare(db, a->sql, &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->group);
    bool row = ks_sql_step(q) == KS_SQL_ROW && ks_sql_col_copy(q, 0, a->out, a->cap);
    rc = ks_sql_done(q);
    return rc == KS_OK && !row ? KS_ERR_NOT_FOUND : rc;
}

/* The group's sealed key and, opened by the vault, the key in hex (to look for both where they
 * must not be). */
static void group_key_hex(const char *group, char sealed[512], char hex[65])
{
    struct text_arg a = {"SELECT key_sealed FROM receipt_journal_keys WHERE group_id = ?1", group,
                         sealed, 512};
    cr_assert_eq(ks_sql_read(fx.store, text_rx, &a), KS_OK);
    unsigned char *plain = NULL;
    size_t len = 0;
    cr_assert_eq(
        ks_vault_secret_open(fx.vault, KS_JOURNAL_VAULT_PURPOSE, group, sealed, &plain, &len),
        KS_OK);
    cr_assert_eq(len, KS_JOURNAL_KEY_BYTES);
    ks_hex(plain, len, hex);
    hex[64] = '\0';
    free(plain);
}

static char *file_text(const char *path)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    static char buf[1 << 20];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    return buf;
}

Test(journal, the_key_is_sealed_per_group_and_never_shown)
{
    append("k1", 1);
    append("k2", 1);
    char sealed1[512], sealed2[512], hex1[65], hex2[65];
    group_key_hex("k1", sealed1, hex1);
    group_key_hex("k2", sealed2, hex2);
    cr_assert_str_neq(hex1, hex2, "each group has its own key");
    cr_assert_null(strstr(sealed1, hex1));
    /* not in an export, a verification's reason or the log */
    struct file f;
    file_export("k1", &f);
    for (size_t i = 0; i < f.n; i++) {
        cr_assert_null(strstr(f.line[i], hex1));
        cr_assert_null(strstr(f.line[i], sealed1));
    }
    file_release(&f);
    /* a sealed key moved to another group's row does not open there (the vault binds the
     * name): appends and checks of that group fail, and the log says so without the key */
    store_edit("k1",
               "UPDATE receipt_journal_keys SET key_sealed = (SELECT key_sealed FROM"
               " receipt_journal_keys WHERE group_id = 'k2') WHERE group_id = ?1 AND ?2 = 0",
               0);
    int64_t seq = 0, n = 0, bad = 0;
    char why[KS_JOURNAL_WHY_BYTES] = "";
    json_t *e = receipt_entry(2);
    cr_assert_eq(ks_journal_append(fx.j, "k1", "r2", e, T0_MS, &seq), KS_ERR_INTERNAL);
    json_decref(e);
    cr_assert_eq(ks_journal_verify(fx.j, "k1", &n, &bad, why, sizeof(why)), KS_ERR_INTERNAL);
    cr_assert_eq(bad, 0);
    fflush(fx.log_file);
    char log_path[128];
    snprintf(log_path, sizeof(log_path), "%s/journal.log", fx.dir);
    const char *log = file_text(log_path);
    cr_assert_not_null(strstr(log, "group k1: its journal key does not open"));
    cr_assert_null(strstr(log, hex1));
    cr_assert_null(strstr(log, hex2));
    cr_assert_null(strstr(log, sealed2));
}

/* --- exported files --------------------------------------------------------------------------- */

Test(journal, an_exported_file_verifies_and_every_tampering_names_its_entry)
{
    for (int i = 1; i <= 8; i++)
        append("f", i);
    struct file f, t;
    file_export("f", &f);
    cr_assert_eq(f.n, 9, "a header and 8 entries");
    cr_assert_not_null(strstr(f.line[0], "\"format\":\"" KS_JOURNAL_FILE_FORMAT "\""));
    cr_assert_not_null(strstr(f.line[0], "\"lastSeq\":8"));
    int64_t bad = -1;
    char why[KS_JOURNAL_WHY_BYTES] = "";
    cr_assert_eq(file_verify(&f, &bad, why, sizeof(why)), KS_OK, "%s", why);
    cr_assert_eq(bad, 0);

    /* one byte flipped in entry 4's receipt */
    file_copy(&f, &t);
    char *p = strstr(t.line[4], "receipt number");
    cr_assert_not_null(p);
    p[0] = 'R';
    file_bad_at(&t, 4, "hash mismatch");
    file_release(&t);

    /* entry 3 deleted */
    file_copy(&f, &t);
    line_remove(&t, 3);
    file_bad_at(&t, 3, "missing: entry 2 is followed by entry 4");
    file_release(&t);

    /* entry 1 deleted */
    file_copy(&f, &t);
    line_remove(&t, 1);
    file_bad_at(&t, 1, "missing: the journal starts at entry 2");
    file_release(&t);

    /* the last entry deleted */
    file_copy(&f, &t);
    line_remove(&t, 8);
    file_bad_at(&t, 8, "missing: the file ends after entry 7");
    file_release(&t);

    /* a copy of entry 2 inserted before entry 5 */
    file_copy(&f, &t);
    line_insert(&t, 5, f.line[2]);
    file_bad_at(&t, 5, "an entry numbered 2 was inserted before it");
    file_release(&t);

    /* a forged entry 6, chained and hashed right, but its MAC made without the key */
    file_copy(&f, &t);
    {
        json_error_t err;
        json_t *prev = json_loads(f.line[5], 0, &err);
        unsigned char prev_hash[KS_JOURNAL_HASH_BYTES], hash[KS_JOURNAL_HASH_BYTES];
        const char *ph = json_string_value(json_object_get(prev, "hash"));
        for (int i = 0; i < KS_JOURNAL_HASH_BYTES; i++)
            prev_hash[i] =
                (unsigned char)(ks_hex_value(ph[2 * i]) << 4 | ks_hex_value(ph[2 * i + 1]));
        const char *entry = "{\"operation\":\"sell\"}";
        cr_assert_eq(ks_journal_entry_hash("f", 6, "forged", T0_MS, entry, prev_hash, hash), KS_OK);
        char hash_hex[65], prev_hex[65];
        ks_hex(hash, sizeof(hash), hash_hex);
        hash_hex[64] = '\0';
        snprintf(prev_hex, sizeof(prev_hex), "%s", ph);
        json_t *forged =
            json_pack("{s:I, s:s, s:s, s:I, s:{s:s}, s:s, s:s, s:s}", "seq", (json_int_t)6, "group",
                      "f", "receiptID", "forged", "appendedAt", (json_int_t)T0_MS, "entry",
                      "operation", "sell", "prevHash", prev_hex, "hash", hash_hex, "mac", hash_hex);
        char *text = ks_json_canonical(forged);
        line_insert(&t, 6, text);
        free(text);
        json_decref(forged);
        json_decref(prev);
    }
    file_bad_at(&t, 6, "MAC mismatch");
    file_release(&t);

    /* entries 4 and 5 swapped */
    file_copy(&f, &t);
    char *tmp = t.line[4];
    t.line[4] = t.line[5];
    t.line[5] = tmp;
    file_bad_at(&t, 4, "out of order");
    file_release(&t);

    /* entry 5's prev_hash edited */
    file_copy(&f, &t);
    line_set(&t, 5, "prevHash",
             json_string("0000000000000000000000000000000000000000000000000000000000000001"));
    file_bad_at(&t, 5, "broken chain");
    file_release(&t);

    /* entry 7's hash edited (the content intact) */
    file_copy(&f, &t);
    line_set(&t, 7, "hash",
             json_string("00000000000000000000000000000000000000000000000000000000000000ff"));
    file_bad_at(&t, 7, "hash mismatch");
    file_release(&t);

    /* an entry line appended after the last one */
    file_copy(&f, &t);
    line_insert(&t, 9, f.line[8]);
    file_bad_at(&t, 9, "past the header's last entry 8");
    file_release(&t);

    /* the header's count changed (to hide a removed tail) */
    file_copy(&f, &t);
    line_set(&t, 0, "lastSeq", json_integer(7));
    line_remove(&t, 8);
    file_bad_at(&t, 0, "MAC mismatch");
    file_release(&t);

    /* a line too long, a line that is not JSON, an empty file */
    file_copy(&f, &t);
    char *longer = malloc(KS_JOURNAL_LINE_BYTES_MAX + 10);
    memset(longer, ' ', KS_JOURNAL_LINE_BYTES_MAX + 9);
    longer[KS_JOURNAL_LINE_BYTES_MAX + 9] = '\0';
    free(t.line[2]);
    t.line[2] = longer;
    file_bad_at(&t, 2, "longer than");
    free(t.line[3]);
    t.line[3] = strdup("not json");
    line_remove(&t, 2);
    file_bad_at(&t, 2, "not a journal entry line");
    file_release(&t);
    struct file empty = {0};
    file_bad_at(&empty, 0, "empty");
    file_release(&f);
}

Test(journal, a_file_checked_with_another_groups_key_fails)
{
    for (int i = 1; i <= 3; i++) {
        append("group-a", i);
        append("group-b", i);
    }
    struct file f;
    file_export("group-a", &f);
    /* every line says group-b, and each entry is re-chained and re-hashed for it: only the keys
     * differ */
    unsigned char prev[KS_JOURNAL_HASH_BYTES] = {0}, hash[KS_JOURNAL_HASH_BYTES];
    for (size_t i = 0; i < f.n; i++) {
        line_set(&f, i, "group", json_string("group-b"));
        if (i == 0)
            continue;
        json_error_t err;
        json_t *o = json_loads(f.line[i], 0, &err);
        char *entry = ks_json_canonical(json_object_get(o, "entry"));
        cr_assert_eq(ks_journal_entry_hash("group-b", json_integer_value(json_object_get(o, "seq")),
                                           json_string_value(json_object_get(o, "receiptID")),
                                           json_integer_value(json_object_get(o, "appendedAt")),
                                           entry, prev, hash),
                     KS_OK);
        char hex[65], prev_hex[65];
        ks_hex(hash, sizeof(hash), hex);
        ks_hex(prev, sizeof(prev), prev_hex);
        hex[64] = prev_hex[64] = '\0';
        memcpy(prev, hash, sizeof(prev));
        free(entry);
        json_decref(o);
        line_set(&f, i, "prevHash", json_string(prev_hex));
        line_set(&f, i, "hash", json_string(hex));
    }
    file_bad_at(&f, 0, "MAC mismatch: not written with group group-b's journal key");
    file_release(&f);
}

/* --- the command line ------------------------------------------------------------------------- */

/* Runs `journal a1 a2 a3 a4` (the words up to the first NULL) on the fixture's store and vault. */
static int cli(const char *a1, const char *a2, const char *a3, const char *a4)
{
    char store[1100], key[200];
    snprintf(store, sizeof(store), "--store=%s", fx.url);
    snprintf(key, sizeof(key), "--vault-master-key-file=%s", fx.key_path);
    const char *words[] = {a1, a2, a3, a4};
    char *argv[10] = {"journal"};
    int argc = 1;
    for (int i = 0; i < 4 && words[i]; i++)
        argv[argc++] = (char *)words[i];
    argv[argc++] = store;
    argv[argc++] = key;
    argv[argc++] = "--log-level=error";
    argv[argc] = NULL;
    return ks_journal_cli(argc, argv);
}

Test(journal, the_command_line_verifies_and_exports)
{
    for (int i = 1; i <= 3; i++)
        append("cli", i);
    char path[200];
    snprintf(path, sizeof(path), "%s/cli.jsonl", fx.dir);
    cr_assert_eq(cli("verify", "--group", "cli", NULL), 0);
    cr_assert_eq(cli("export", "--group", "cli", "--out"), 2, "--out without a path");
    char out[220];
    snprintf(out, sizeof(out), "--out=%s", path);
    cr_assert_eq(cli("export", "--group", "cli", out), 0);
    cr_assert_eq(cli("verify", "--file", path, NULL), 0);
    /* the file tampered with: exit 1 */
    FILE *f = fopen(path, "r+");
    cr_assert_not_null(f);
    char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    char *p = strstr(buf, "receipt number");
    cr_assert_not_null(p);
    cr_assert_eq(fseek(f, p - buf, SEEK_SET), 0);
    fputc('R', f);
    fclose(f);
    char err_path[200];
    snprintf(err_path, sizeof(err_path), "%s/stderr.txt", fx.dir);
    fflush(stderr);
    int saved = dup(2);
    FILE *err = fopen(err_path, "w");
    cr_assert(saved >= 0 && err);
    dup2(fileno(err), 2);
    int rc = cli("verify", "--file", path, NULL);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    fclose(err);
    cr_assert_eq(rc, 1);
    const char *said = file_text(err_path);
    cr_assert_not_null(strstr(said, "cli.jsonl, group cli: entry 1: hash mismatch"), "%s", said);
    cr_assert_eq(cli("verify", "--group", "nobody", NULL), 1);
    cr_assert_eq(cli("verify", NULL, NULL, NULL), 2, "neither --group nor --file");
    cr_assert_eq(cli("verify", "--group", "cli", "--file=x"), 2, "both");
    cr_assert_eq(cli("rotate", NULL, NULL, NULL), 2);
    cr_assert_eq(cli("export", "--file", path, NULL), 2);
    cr_assert_eq(cli("verify", "--group", "no spaces", NULL), 2);
}
