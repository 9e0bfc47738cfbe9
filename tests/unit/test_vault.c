/*
 * test_vault.c — the card vault (src/vault/, docs/vault.md) on every storage backend.
 *
 * The store comes from KASSA_TEST_STORE like the engine suite: without it each test gets a fresh
 * SQLite file; with a PostgreSQL URL each test gets its own schema (search_path), because a
 * vault owns its tables whole — a rotation re-encrypts every card, a sweep erases every old CVV,
 * and the store's data keys belong to one master key. Time is passed in (`now_ms`), so expiry
 * and CVV lifetimes are deterministic.
 *
 * The secret-leak test tokenizes known cards and then searches the raw database bytes (SQLite
 * file and WAL; PostgreSQL rows read in binary) and everything the vault logged for the card
 * numbers, CVVs and holder names.
 */
#include <criterion/criterion.h>
#include <libpq-fe.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/ids.h"
#include "store/sql.h"
#include "vault/vault.h"
#include "vault/vault_int.h"
#include "unit_store.h"

#define NOW_MS 1773576000000LL /* 2026-03-15T12:00:00Z */
#define HOUR_MS (3600LL * 1000)

struct fixture {
    char dir[64];
    char url[1024];
    struct unit_schema pg; /* PostgreSQL only: the test's own schema */
    char key_path[128];
    char log_path[128];
    FILE *log_file;
    struct ks_log log;
    struct ks_store *store;
    struct ks_vault *vault;
};

static struct fixture fx;

static bool is_pg(void)
{
    return fx.pg.schema[0] != '\0';
}

static struct ks_vault *vault_open_at(const char *key_path, int64_t ttl_ms, int64_t sweep_ms)
{
    struct ks_vault_options o = {.store = fx.store,
                                 .master_key_path = key_path,
                                 .log = &fx.log,
                                 .cvv_ttl_ms = ttl_ms,
                                 .cvv_sweep_interval_ms = sweep_ms};
    struct ks_vault *v = NULL;
    char why[512] = "";
    cr_assert_eq(ks_vault_open(&o, &v, why, sizeof(why)), KS_OK, "vault open: %s", why);
    return v;
}

static void setup(void)
{
    memset(&fx, 0, sizeof(fx));
    snprintf(fx.dir, sizeof(fx.dir), "/tmp/kassa-vault-XXXXXX");
    cr_assert_not_null(mkdtemp(fx.dir));
    unit_schema_store_url(&fx.pg, "vault_test", fx.dir, fx.url, sizeof(fx.url));
    snprintf(fx.key_path, sizeof(fx.key_path), "%s/keys/vault-master.key", fx.dir);
    snprintf(fx.log_path, sizeof(fx.log_path), "%s/vault.log", fx.dir);
    fx.log_file = fopen(fx.log_path, "w");
    cr_assert_not_null(fx.log_file);
    setvbuf(fx.log_file, NULL, _IOLBF, 0);
    ks_log_init(&fx.log, fx.log_file, KS_LOG_DEBUG);
    char why[256] = "";
    cr_assert_eq(ks_store_open(fx.url, NULL, &fx.store, why, sizeof(why)), KS_OK, "open %s: %s",
                 fx.url, why);
    fx.vault = vault_open_at(fx.key_path, 0, 0);
}

static void teardown(void)
{
    ks_vault_close(fx.vault);
    ks_store_close(fx.store);
    ks_log_release(&fx.log);
    fclose(fx.log_file);
    unit_schema_drop(&fx.pg);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(vault, .init = setup, .fini = teardown, .timeout = 60);

/* --- helpers -------------------------------------------------------------------------------- */

static struct ks_card_input card(const char *number, const char *exp, const char *cvv,
                                 const char *holder)
{
    return (struct ks_card_input){
        .card_number = number, .exp_date = exp, .cvv = cvv, .card_holder = holder};
}

static void tokenize_ok(const struct ks_card_input *in, struct ks_card_public *out)
{
    char code[32] = "x";
    int rc = ks_vault_tokenize(fx.vault, in, NOW_MS, out, code, sizeof(code));
    cr_assert_eq(rc, KS_OK, "tokenize: %s %s", ks_err_name(rc), code);
    cr_assert_str_empty(code);
    cr_assert_eq(strlen(out->token), KS_VAULT_TOKEN_BYTES);
}

static void expect_invalid(const struct ks_card_input *in, const char *code_want)
{
    struct ks_card_public pub;
    char code[32] = "";
    cr_expect_eq(ks_vault_tokenize(fx.vault, in, NOW_MS, &pub, code, sizeof(code)), KS_ERR_INVALID,
                 "number %s exp %s cvv %s holder %s", in->card_number ? in->card_number : "(null)",
                 in->exp_date ? in->exp_date : "(null)", in->cvv ? in->cvv : "(null)",
                 in->card_holder ? in->card_holder : "(null)");
    cr_expect_str_eq(code, code_want, "exp %s cvv %s", in->exp_date ? in->exp_date : "(null)",
                     in->cvv ? in->cvv : "(null)");
    cr_expect_str_empty(pub.token);
}

struct count_arg {
    const char *sql;
    int64_t n;
};

static int count_rx(void *conn, void *p)
{
    struct count_arg *a = p;
    a->n = -1;
    if (!is_pg()) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(conn, a->sql, -1, &q, NULL) == SQLITE_OK &&
            sqlite3_step(q) == SQLITE_ROW)
            a->n = sqlite3_column_int64(q, 0);
        sqlite3_finalize(q);
    } else {
        PGresult *r = PQexec(conn, a->sql);
        if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1)
            a->n = strtoll(PQgetvalue(r, 0, 0), NULL, 10);
        PQclear(r);
    }
    return KS_OK;
}

/* SELECT count(*) ... (test-controlled text only) */
static int64_t count(const char *sql)
{
    struct count_arg a = {.sql = sql};
    cr_assert_eq(ks_store_with_reader(fx.store, count_rx, &a), KS_OK);
    cr_assert_geq(a.n, 0, "%s", sql);
    return a.n;
}

static int64_t rows(const char *table)
{
    char sql[96];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM %s", table);
    return count(sql);
}

/* Raw access to a stored record, to play the attacker who can write to the database. */
struct raw_arg {
    const char *table;
    const char *token;
    char key_id[KS_VAULT_KEY_ID_BYTES + 1];
    unsigned char blob[KS_VAULT_SEALED_BYTES_MAX];
    size_t len;
    int write;
};

static int raw_tx(void *conn, void *p)
{
    struct raw_arg *a = p;
    char sql[160];
    if (!is_pg()) {
        sqlite3_stmt *q = NULL;
        if (a->write)
            snprintf(sql, sizeof(sql), "UPDATE %s SET key_id = ?2, sealed = ?3 WHERE token = ?1",
                     a->table);
        else
            snprintf(sql, sizeof(sql), "SELECT key_id, sealed FROM %s WHERE token = ?1", a->table);
        if (sqlite3_prepare_v2(conn, sql, -1, &q, NULL) != SQLITE_OK)
            return KS_ERR_IO;
        sqlite3_bind_text(q, 1, a->token, -1, SQLITE_STATIC);
        if (a->write) {
            sqlite3_bind_text(q, 2, a->key_id, -1, SQLITE_STATIC);
            sqlite3_bind_blob(q, 3, a->blob, (int)a->len, SQLITE_STATIC);
        }
        int st = sqlite3_step(q);
        int rc = KS_ERR_IO;
        if (a->write && st == SQLITE_DONE && sqlite3_changes(conn) == 1) {
            rc = KS_OK;
        } else if (!a->write && st == SQLITE_ROW) {
            snprintf(a->key_id, sizeof(a->key_id), "%s", sqlite3_column_text(q, 0));
            a->len = (size_t)sqlite3_column_bytes(q, 1);
            memcpy(a->blob, sqlite3_column_blob(q, 1), a->len);
            rc = KS_OK;
        }
        sqlite3_finalize(q);
        return rc;
    }
    PGresult *r;
    if (a->write) {
        snprintf(sql, sizeof(sql), "UPDATE %s SET key_id = $2, sealed = $3::bytea WHERE token = $1",
                 a->table);
        const char *vals[] = {a->token, a->key_id, (const char *)a->blob};
        int lens[] = {0, 0, (int)a->len}, fmts[] = {0, 0, 1};
        r = PQexecParams(conn, sql, 3, NULL, vals, lens, fmts, 0);
        int ok = PQresultStatus(r) == PGRES_COMMAND_OK && strcmp(PQcmdTuples(r), "1") == 0;
        PQclear(r);
        return ok ? KS_OK : KS_ERR_IO;
    }
    snprintf(sql, sizeof(sql), "SELECT key_id, sealed FROM %s WHERE token = $1", a->table);
    const char *vals[] = {a->token};
    r = PQexecParams(conn, sql, 1, NULL, vals, NULL, NULL, 1);
    int ok = PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1;
    if (ok) {
        snprintf(a->key_id, sizeof(a->key_id), "%.*s", PQgetlength(r, 0, 0), PQgetvalue(r, 0, 0));
        a->len = (size_t)PQgetlength(r, 0, 1);
        memcpy(a->blob, PQgetvalue(r, 0, 1), a->len);
    }
    PQclear(r);
    return ok ? KS_OK : KS_ERR_IO;
}

static struct raw_arg raw_read(const char *table, const char *token)
{
    struct raw_arg a = {.table = table, .token = token};
    cr_assert_eq(ks_store_with_tx(fx.store, raw_tx, &a), KS_OK, "read %s", table);
    return a;
}

static void raw_write(struct raw_arg a, const char *token)
{
    a.token = token;
    a.write = 1;
    cr_assert_eq(ks_store_with_tx(fx.store, raw_tx, &a), KS_OK, "write %s", a.table);
}

struct key_arg {
    struct ks_vault_keyrow k;
};

static int key_current_tx(struct ks_sql *db, void *p)
{
    struct key_arg *a = p;
    return ks_vault_db_key_current(db, &a->k);
}

/* The current data key's id, read with the vault's own SQL. */
static void current_key(char out[KS_VAULT_KEY_ID_BYTES + 1])
{
    struct key_arg a;
    cr_assert_eq(ks_sql_tx(fx.store, key_current_tx, &a), KS_OK);
    snprintf(out, KS_VAULT_KEY_ID_BYTES + 1, "%s", a.k.key_id);
}

/* Appends a file's bytes to a growing buffer. */
static void slurp(const char *path, char **buf, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return;
    char chunk[65536];
    size_t n;
    while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        *buf = realloc(*buf, *len + n + 1);
        cr_assert_not_null(*buf);
        memcpy(*buf + *len, chunk, n);
        *len += n;
        (*buf)[*len] = '\0';
    }
    fclose(f);
}

static bool mem_has(const char *buf, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; n && i + n <= len; i++)
        if (memcmp(buf + i, needle, n) == 0)
            return true;
    return false;
}

/* Overwrites every occurrence of `s` (a random identifier) so that digits inside it cannot be
 * taken for a leaked CVV. */
static void mem_blank(char *buf, size_t len, const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; n && i + n <= len; i++)
        if (memcmp(buf + i, s, n) == 0)
            memset(buf + i, '#', n);
}

/* A reveal that must succeed; the caller wipes `out`. */
static void reveal_ok(const char *token, int64_t now_ms, struct ks_card *out)
{
    int rc = ks_vault_reveal(fx.vault, token, now_ms, out);
    cr_assert_eq(rc, KS_OK, "reveal: %s", ks_err_name(rc));
}

/* Completes `prefix` (digits) to a Luhn-valid number of `len` digits, zero-padded. */
static void luhn_make(const char *prefix, size_t len, char *out)
{
    size_t n = strlen(prefix);
    memcpy(out, prefix, n);
    for (size_t i = n; i < len - 1; i++)
        out[i] = '0';
    for (char d = '0'; d <= '9'; d++) {
        out[len - 1] = d;
        if (ks_vault_luhn_ok(out, len))
            break;
    }
    out[len] = '\0';
}

/* --- round trip and public view ------------------------------------------------------------- */

Test(vault, tokenize_describe_reveal_round_trip)
{
    struct ks_card_input in = card("4242 4242 4242 4242", "12/30", "123", "  JANE Q. PAYER ");
    struct ks_card_public pub;
    tokenize_ok(&in, &pub);
    cr_assert_str_eq(pub.bin, "424242");
    cr_assert_str_eq(pub.last_digits, "4242");
    cr_assert_str_eq(pub.mask, "424242******4242");
    cr_assert_str_eq(pub.payment_system, "visa");
    cr_assert_str_eq(pub.exp_month, "12");
    cr_assert_str_eq(pub.exp_year, "2030");
    cr_assert_str_eq(pub.issuer_country, "USA");

    struct ks_card_public d;
    cr_assert_eq(ks_vault_describe(fx.vault, pub.token, &d), KS_OK);
    cr_assert_eq(memcmp(&d, &pub, sizeof(d)), 0, "describe gives what tokenize gave");

    struct ks_card c;
    reveal_ok(pub.token, NOW_MS, &c);
    cr_assert_str_eq(c.pan, "4242424242424242");
    cr_assert_str_eq(c.exp_month, "12");
    cr_assert_str_eq(c.exp_year, "2030");
    cr_assert_str_eq(c.cvv, "123");
    cr_assert_str_eq(c.holder, "JANE Q. PAYER");
    OPENSSL_cleanse(&c, sizeof(c));

    /* the same card again: a new token, both usable */
    struct ks_card_public again;
    tokenize_ok(&in, &again);
    cr_assert_str_neq(again.token, pub.token);
    cr_assert_eq(rows("vault_cards"), 2);
    cr_assert_eq(rows("vault_cvv"), 2);
}

Test(vault, card_without_cvv_or_holder)
{
    struct ks_card_input in = card("5555555555554444", "03/26", NULL, NULL);
    struct ks_card_public pub;
    tokenize_ok(&in, &pub); /* the current month is still valid */
    cr_assert_str_eq(pub.payment_system, "mastercard");
    struct ks_card c;
    reveal_ok(pub.token, NOW_MS, &c);
    cr_assert_str_eq(c.pan, "5555555555554444");
    cr_assert_str_empty(c.cvv);
    cr_assert_str_empty(c.holder);
    cr_assert_eq(rows("vault_cvv"), 0);
}

Test(vault, unknown_and_malformed_tokens_are_not_found)
{
    struct ks_card_public pub;
    struct ks_card c;
    const char *bad[] = {"",
                         "short",
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA!",
                         "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
                         "' OR 1=1 --AAAAAAAAAAAAAAAAAAAAA"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_eq(ks_vault_describe(fx.vault, bad[i], &pub), KS_ERR_NOT_FOUND, "%s", bad[i]);
        cr_expect_eq(ks_vault_reveal(fx.vault, bad[i], NOW_MS, &c), KS_ERR_NOT_FOUND, "%s", bad[i]);
        cr_expect_eq(ks_vault_erase_cvv(fx.vault, bad[i]), KS_OK, "%s", bad[i]);
    }
    cr_expect_eq(ks_vault_describe(fx.vault, NULL, &pub), KS_ERR_NOT_FOUND);
}

Test(vault, payment_systems_masks_and_countries)
{
    static const struct {
        const char *prefix;
        size_t len;
        const char *system;
        const char *country;
        const char *cvv;
    } cases[] = {
        {"41", 16, "visa", "", "123"},
        {"41", 13, "visa", "", "123"},
        {"41", 19, "visa", "", "123"},
        {"400000", 16, "visa", "USA", "123"},
        {"424242", 16, "visa", "USA", "123"},
        {"51", 16, "mastercard", "", "123"},
        {"55", 16, "mastercard", "", "123"},
        {"2221", 16, "mastercard", "", "123"},
        {"2720", 16, "mastercard", "", "123"},
        {"2200", 16, "mir", "RUS", "123"},
        {"2204", 16, "mir", "RUS", "123"},
        {"34", 15, "amex", "", "1234"},
        {"37", 15, "amex", "", "1234"},
        {"3528", 16, "jcb", "", "123"},
        {"3589", 16, "jcb", "", "123"},
        {"353011", 16, "jcb", "JPN", "123"},
        {"621", 16, "unionpay", "", "123"},
        {"621", 19, "unionpay", "", "123"},
        {"620000", 16, "unionpay", "CHN", "123"},
        {"50", 16, "maestro", "", "123"},
        {"56", 12, "maestro", "", "123"},
        {"69", 16, "maestro", "", "123"},
        {"2205", 16, "unknown", "", "1234"},
        {"2721", 16, "unknown", "", "123"},
        {"3527", 16, "unknown", "", "123"},
        {"1", 16, "unknown", "", "123"},
        {"9", 16, "unknown", "", "123"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char pan[20], mask[24];
        luhn_make(cases[i].prefix, cases[i].len, pan);
        struct ks_card_input in = card(pan, "01/27", cases[i].cvv, NULL);
        struct ks_card_public pub;
        tokenize_ok(&in, &pub);
        cr_expect_str_eq(pub.payment_system, cases[i].system, "%s", pan);
        cr_expect_str_eq(pub.issuer_country, cases[i].country, "%s", pan);
        size_t n = cases[i].len;
        for (size_t k = 0; k < n; k++)
            mask[k] = k < 6 || k >= n - 4 ? pan[k] : '*';
        mask[n] = '\0';
        cr_expect_str_eq(pub.mask, mask);
        cr_expect_eq(strncmp(pub.bin, pan, 6), 0);
        cr_expect_str_eq(pub.last_digits, pan + n - 4);
    }
    struct ks_card_public pub;
    struct ks_card_input mir = card("2200000000000004", "12/30", "123", NULL);
    tokenize_ok(&mir, &pub);
    cr_assert_str_eq(pub.mask, "220000******0004");
    cr_assert_str_eq(pub.issuer_country, "RUS");
}

/* --- validation ------------------------------------------------------------------------------ */

Test(vault, bad_cards_are_refused_and_nothing_is_stored)
{
    /* numbers */
    const char *numbers[] = {
        "4242424242424241",     /* Luhn */
        "42424242424",          /* 11 digits */
        "42424242424242424242", /* 20 digits */
        "4242-4242-4242-4242",  /* dashes */
        "4242a24242424242",     /* a letter */
        "",
        "                ",
        "4242424242424242\n",
        "\xd9\xa4"
        "242424242424242", /* a non-ASCII digit */
    };
    for (size_t i = 0; i < sizeof(numbers) / sizeof(numbers[0]); i++) {
        struct ks_card_input in = card(numbers[i], "12/30", "123", NULL);
        expect_invalid(&in, "invalidCardNumber");
    }
    struct ks_card_input none = card(NULL, "12/30", "123", NULL);
    expect_invalid(&none, "invalidCardNumber");
    char huge[512];
    memset(huge, ' ', sizeof(huge) - 17);
    memcpy(huge + sizeof(huge) - 17, "4242424242424242", 17);
    struct ks_card_input spaced = card(huge, "12/30", "123", NULL);
    expect_invalid(&spaced, "invalidCardNumber");

    /* expiry: NOW_MS is 2026-03-15 */
    const char *exps[] = {"13/30", "00/30", "1/30",  "12-30",   "12/3",  "12/300",  "1230",  "",
                          "ab/cd", "02/26", "12/25", "02/2026", "12/47", "01/2099", " 12/30"};
    for (size_t i = 0; i < sizeof(exps) / sizeof(exps[0]); i++) {
        struct ks_card_input in = card("4242424242424242", exps[i], "123", NULL);
        expect_invalid(&in, "invalidExpDate");
    }
    struct ks_card_input noexp = card("4242424242424242", NULL, "123", NULL);
    expect_invalid(&noexp, "invalidExpDate");

    /* CVV: 3 digits, 4 for amex */
    const char *cvvs[] = {"12", "12345", "12a", "", " 123", "1234"};
    for (size_t i = 0; i < sizeof(cvvs) / sizeof(cvvs[0]); i++) {
        struct ks_card_input in = card("4242424242424242", "12/30", cvvs[i], NULL);
        expect_invalid(&in, "invalidCVV");
    }
    struct ks_card_input amex3 = card("378282246310005", "12/30", "123", NULL);
    expect_invalid(&amex3, "invalidCVV");

    /* holder */
    char long_holder[102];
    memset(long_holder, 'A', 101);
    long_holder[101] = '\0';
    const char *holders[] = {
        "", "   ", "JANE 4242", "JANE\tPAYER", "JANE\nPAYER", "J\xc3\x89R\xc3\x94ME", long_holder};
    for (size_t i = 0; i < sizeof(holders) / sizeof(holders[0]); i++) {
        struct ks_card_input in = card("4242424242424242", "12/30", "123", holders[i]);
        expect_invalid(&in, "invalidCardHolder");
    }
    cr_assert_eq(rows("vault_cards"), 0, "a refused card stores nothing");
    cr_assert_eq(rows("vault_cvv"), 0);

    /* and the boundaries that are fine */
    long_holder[100] = '\0';
    const struct ks_card_input good[] = {
        card("4242424242424242", "03/26", "123", long_holder),
        card("4242424242424242", "12/2030", "123", "O'NEIL-SMITH, J."),
        card("4242424242424242", "03/46", NULL, NULL),
        card("378282246310005", "12/30", "1234", NULL),
        card("424242424242", "12/30", NULL, NULL), /* 12 digits, Luhn-valid */
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        struct ks_card_public pub;
        tokenize_ok(&good[i], &pub);
    }
}

Test(vault, expiry_is_the_end_of_the_month_utc)
{
    /* 2026-03-31T23:59:59.999Z: March still valid; one millisecond later it is not */
    int64_t last_ms = 1775001599999LL;
    struct ks_card_input in = card("4242424242424242", "03/26", NULL, NULL);
    struct ks_card_public pub;
    char code[32];
    cr_assert_eq(ks_vault_tokenize(fx.vault, &in, last_ms, &pub, code, sizeof(code)), KS_OK);
    cr_assert_eq(ks_vault_tokenize(fx.vault, &in, last_ms + 1, &pub, code, sizeof(code)),
                 KS_ERR_INVALID);
    cr_assert_str_eq(code, "invalidExpDate");
}

/* --- the CVV -----------------------------------------------------------------------------------
 */

Test(vault, cvv_is_erased_after_authorization)
{
    struct ks_card_input in = card("4242424242424242", "12/30", "321", NULL);
    struct ks_card_public pub;
    tokenize_ok(&in, &pub);
    struct ks_card c;
    reveal_ok(pub.token, NOW_MS, &c);
    cr_assert_str_eq(c.cvv, "321");
    cr_assert_eq(ks_vault_erase_cvv(fx.vault, pub.token), KS_OK);
    cr_assert_eq(rows("vault_cvv"), 0);
    reveal_ok(pub.token, NOW_MS, &c);
    cr_assert_str_empty(c.cvv);
    cr_assert_str_eq(c.pan, "4242424242424242", "the card itself stays");
    cr_assert_eq(ks_vault_erase_cvv(fx.vault, pub.token), KS_OK, "idempotent");
}

Test(vault, cvv_lives_one_hour_by_default)
{
    struct ks_card_input in = card("4242424242424242", "12/30", "321", NULL);
    struct ks_card_public a, b;
    tokenize_ok(&in, &a);
    char code[32];
    cr_assert_eq(ks_vault_tokenize(fx.vault, &in, NOW_MS + 10 * 60 * 1000, &b, code, sizeof(code)),
                 KS_OK);
    struct ks_card c;
    reveal_ok(a.token, NOW_MS + HOUR_MS - 1, &c);
    cr_assert_str_eq(c.cvv, "321");
    reveal_ok(a.token, NOW_MS + HOUR_MS, &c);
    cr_assert_str_empty(c.cvv, "never handed out past its lifetime, swept or not");

    int64_t erased = -1;
    cr_assert_eq(ks_vault_sweep_cvv(fx.vault, NOW_MS + HOUR_MS - 1, &erased), KS_OK);
    cr_assert_eq(erased, 0);
    cr_assert_eq(ks_vault_sweep_cvv(fx.vault, NOW_MS + HOUR_MS, &erased), KS_OK);
    cr_assert_eq(erased, 1);
    cr_assert_eq(rows("vault_cvv"), 1, "the younger CVV stays");
    reveal_ok(b.token, NOW_MS + HOUR_MS, &c);
    cr_assert_str_eq(c.cvv, "321");
    cr_assert_eq(ks_vault_sweep_cvv(fx.vault, NOW_MS + 10 * 60 * 1000 + HOUR_MS, &erased), KS_OK);
    cr_assert_eq(erased, 1);
    cr_assert_eq(rows("vault_cvv"), 0);
}

Test(vault, sweep_goes_in_batches)
{
    ks_vault_close(fx.vault);
    fx.vault = vault_open_at(fx.key_path, 1000, 0);
    int n = KS_VAULT_SWEEP_BATCH_RECORDS + 7;
    for (int i = 0; i < n; i++) {
        struct ks_card_input in = card("4242424242424242", "12/30", "123", NULL);
        struct ks_card_public pub;
        tokenize_ok(&in, &pub);
    }
    int64_t erased = 0;
    cr_assert_eq(ks_vault_sweep_cvv(fx.vault, NOW_MS + 1000, &erased), KS_OK);
    cr_assert_eq(erased, n);
    cr_assert_eq(rows("vault_cvv"), 0);
}

Test(vault, background_sweeper_erases_expired_cvvs)
{
    struct ks_vault *v = vault_open_at(fx.key_path, 1, 20); /* 1 ms lifetime, sweep every 20 ms */
    struct ks_card_input in = card("4242424242424242", "12/40", "123", NULL);
    struct ks_card_public pub;
    char code[32];
    cr_assert_eq(ks_vault_tokenize(v, &in, ks_now_ms(), &pub, code, sizeof(code)), KS_OK);
    int64_t left = 1;
    for (int i = 0; i < 500 && left; i++) {
        usleep(10 * 1000);
        left = rows("vault_cvv");
    }
    cr_assert_eq(left, 0, "the sweeper thread erased the CVV");
    ks_vault_close(v); /* stops and joins the thread */
}

/* --- payment resources ----------------------------------------------------------------------- */

static void tokenize_bound_ok(const char *rid, const char *invoice, int64_t until,
                              struct ks_card_public *out)
{
    struct ks_card_input in = card("4242424242424242", "12/30", "123", NULL);
    struct ks_vault_binding b = {
        .resource_id = rid, .invoice_id = invoice, .valid_until_ms = until};
    char code[32] = "x";
    int rc = ks_vault_tokenize_bound(fx.vault, &in, &b, NOW_MS, out, code, sizeof(code));
    cr_assert_eq(rc, KS_OK, "tokenize_bound: %s %s", ks_err_name(rc), code);
}

Test(vault, a_payment_resource_is_claimed_only_for_its_invoice_and_before_it_expires)
{
    struct ks_card_public pub, got;
    tokenize_bound_ok("invA.1", "invA", NOW_MS + HOUR_MS, &pub);
    cr_assert_eq(ks_vault_claim(fx.vault, pub.token, "invB", NOW_MS, &got), KS_ERR_REJECTED,
                 "another invoice");
    cr_assert_eq(ks_vault_claim(fx.vault, pub.token, "invA", NOW_MS + HOUR_MS, &got),
                 KS_ERR_REJECTED, "expired at valid_until");
    cr_assert_eq(count("SELECT count(*) FROM vault_cards WHERE claimed = 1"), 0,
                 "a refused claim claims nothing");
    cr_assert_eq(ks_vault_claim(fx.vault, pub.token, "invA", NOW_MS + HOUR_MS - 1, &got), KS_OK);
    cr_assert_str_eq(got.resource_id, "invA.1");
    cr_assert_eq(got.valid_until_ms, NOW_MS + HOUR_MS);
    cr_assert_str_eq(got.mask, "424242******4242");
    cr_assert_str_eq(got.token, pub.token);
    cr_assert_eq(ks_vault_claim(fx.vault, pub.token, "invA", NOW_MS, &got), KS_OK, "idempotent");
    cr_assert_eq(count("SELECT count(*) FROM vault_cards WHERE claimed = 1"), 1);

    char unknown[KS_VAULT_TOKEN_BYTES + 1];
    cr_assert_eq(ks_id_random(unknown, KS_VAULT_TOKEN_BYTES), KS_OK);
    cr_assert_eq(ks_vault_claim(fx.vault, unknown, "invA", NOW_MS, &got), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_vault_claim(fx.vault, "short", "invA", NOW_MS, &got), KS_ERR_NOT_FOUND);
    struct ks_card_input in = card("4242424242424242", "12/30", "123", NULL);
    struct ks_card_public unbound;
    tokenize_ok(&in, &unbound);
    cr_assert_eq(ks_vault_claim(fx.vault, unbound.token, "invA", NOW_MS, &got), KS_ERR_REJECTED,
                 "a card without a binding pays no invoice");
}

Test(vault, a_payment_resource_is_revealed_and_released_by_its_id)
{
    struct ks_card_public pub;
    tokenize_bound_ok("invA.1", "invA", NOW_MS + HOUR_MS, &pub);
    struct ks_card c;
    cr_assert_eq(ks_vault_reveal_resource(fx.vault, "invA.1", NOW_MS, &c), KS_OK);
    cr_assert_str_eq(c.pan, "4242424242424242");
    cr_assert_str_eq(c.cvv, "123");
    cr_assert_eq(ks_vault_erase_cvv_resource(fx.vault, "invA.1"), KS_OK);
    cr_assert_eq(rows("vault_cvv"), 0);
    cr_assert_eq(ks_vault_erase_cvv_resource(fx.vault, "nope.1"), KS_OK, "idempotent");
    int64_t deleted = -1;
    cr_assert_eq(ks_vault_release(fx.vault, "invA.1", &deleted), KS_OK);
    cr_assert_eq(deleted, 1);
    cr_assert_eq(rows("vault_cards"), 0);
    cr_assert_eq(ks_vault_release(fx.vault, "invA.1", &deleted), KS_OK, "idempotent");
    cr_assert_eq(deleted, 0);
    cr_assert_eq(ks_vault_reveal_resource(fx.vault, "invA.1", NOW_MS, &c), KS_ERR_NOT_FOUND);
    struct ks_card_public got;
    cr_assert_eq(ks_vault_claim(fx.vault, pub.token, "invA", NOW_MS, &got), KS_ERR_NOT_FOUND);

    /* released with its CVV still there */
    tokenize_bound_ok("invA.2", "invA", NOW_MS + HOUR_MS, &pub);
    cr_assert_eq(ks_vault_release(fx.vault, "invA.2", &deleted), KS_OK);
    cr_assert_eq(deleted, 1);
    cr_assert_eq(rows("vault_cards") + rows("vault_cvv"), 0);
}

Test(vault, bindings_are_checked_and_resource_ids_unique)
{
    struct ks_card_input in = card("4242424242424242", "12/30", "123", NULL);
    struct ks_card_public pub;
    char code[32];
    struct ks_vault_binding bad[] = {
        {.resource_id = "", .invoice_id = "inv", .valid_until_ms = NOW_MS + 1},
        {.resource_id = "inv.1", .invoice_id = NULL, .valid_until_ms = NOW_MS + 1},
        {.resource_id = "inv.1", .invoice_id = "inv", .valid_until_ms = 0},
        {.resource_id = "x23456789012345678901234567890123456789012345678901234567890123456"
                        "789012345678901", /* 81 bytes */
         .invoice_id = "inv",
         .valid_until_ms = NOW_MS + 1},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        cr_assert_eq(
            ks_vault_tokenize_bound(fx.vault, &in, &bad[i], NOW_MS, &pub, code, sizeof(code)),
            KS_ERR_INVALID, "binding %zu", i);
    cr_assert_eq(rows("vault_cards"), 0);
    tokenize_bound_ok("inv.1", "inv", NOW_MS + HOUR_MS, &pub);
    struct ks_vault_binding again = {
        .resource_id = "inv.1", .invoice_id = "inv", .valid_until_ms = NOW_MS + HOUR_MS};
    cr_assert_eq(ks_vault_tokenize_bound(fx.vault, &in, &again, NOW_MS, &pub, code, sizeof(code)),
                 KS_ERR_CONFLICT);
    cr_assert_eq(rows("vault_cards"), 1);
    /* the pure check stores nothing */
    cr_assert_eq(ks_vault_check(&in, NOW_MS, code, sizeof(code)), KS_OK);
    struct ks_card_input wrong = card("4242424242424241", "12/30", "123", NULL);
    cr_assert_eq(ks_vault_check(&wrong, NOW_MS, code, sizeof(code)), KS_ERR_INVALID);
    cr_assert_str_eq(code, "invalidCardNumber");
    cr_assert_eq(rows("vault_cards"), 1);
}

Test(vault, the_sweep_deletes_expired_unclaimed_cards_only)
{
    struct ks_card_public a, b, c, d, got;
    tokenize_bound_ok("inv.1", "inv", NOW_MS + 1000, &a);
    tokenize_bound_ok("inv.2", "inv", NOW_MS + 1000, &b);
    tokenize_bound_ok("inv.3", "inv", NOW_MS + HOUR_MS, &c);
    struct ks_card_input in = card("4242424242424242", "12/30", "123", NULL);
    tokenize_ok(&in, &d);
    cr_assert_eq(ks_vault_claim(fx.vault, b.token, "inv", NOW_MS, &got), KS_OK);
    int64_t erased = -1;
    cr_assert_eq(ks_vault_sweep_cards(fx.vault, NOW_MS + 999, &erased), KS_OK);
    cr_assert_eq(erased, 0);
    cr_assert_eq(ks_vault_sweep_cards(fx.vault, NOW_MS + 1000, &erased), KS_OK);
    cr_assert_eq(erased, 1);
    cr_assert_eq(rows("vault_cards"), 3, "claimed, younger and unbound cards stay");
    cr_assert_eq(rows("vault_cvv"), 3, "the swept card's CVV went with it");
    struct ks_card card_out;
    cr_assert_eq(ks_vault_reveal_resource(fx.vault, "inv.1", NOW_MS, &card_out), KS_ERR_NOT_FOUND);
    cr_assert_eq(ks_vault_reveal_resource(fx.vault, "inv.2", NOW_MS + 2000, &card_out), KS_OK,
                 "a claimed card outlives its validUntil until it is released");
    cr_assert_eq(ks_vault_sweep_cards(fx.vault, NOW_MS + 100 * HOUR_MS, &erased), KS_OK);
    cr_assert_eq(erased, 1, "inv.3 in its turn");
    cr_assert_eq(rows("vault_cards"), 2);
}

Test(vault, the_card_sweep_goes_in_batches)
{
    int n = KS_VAULT_CARD_SWEEP_BATCH_RECORDS + 5;
    for (int i = 0; i < n; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "inv.%d", i + 1);
        struct ks_card_public pub;
        tokenize_bound_ok(rid, "inv", NOW_MS + 1000, &pub);
    }
    int64_t erased = 0;
    cr_assert_eq(ks_vault_sweep_cards(fx.vault, NOW_MS + 1000, &erased), KS_OK);
    cr_assert_eq(erased, n);
    cr_assert_eq(rows("vault_cards") + rows("vault_cvv"), 0);
}

Test(vault, background_sweeper_deletes_expired_unclaimed_cards)
{
    struct ks_vault *v = vault_open_at(fx.key_path, 0, 20); /* sweep every 20 ms */
    struct ks_card_input in = card("4242424242424242", "12/40", "123", NULL);
    struct ks_vault_binding b = {
        .resource_id = "inv.1", .invoice_id = "inv", .valid_until_ms = ks_now_ms() + 50};
    struct ks_card_public pub;
    char code[32];
    cr_assert_eq(ks_vault_tokenize_bound(v, &in, &b, ks_now_ms(), &pub, code, sizeof(code)), KS_OK);
    int64_t left = 1;
    for (int i = 0; i < 500 && left; i++) {
        usleep(10 * 1000);
        left = rows("vault_cards");
    }
    cr_assert_eq(left, 0, "the sweeper thread deleted the expired card");
    ks_vault_close(v);
}

Test(vault, the_vault_unit_releases_resources)
{
    struct ks_unit u;
    ks_vault_unit(fx.vault, &u);
    cr_assert_str_eq(u.name, "vault");
    struct ks_card_public pub;
    tokenize_bound_ok("inv.1", "inv", NOW_MS + HOUR_MS, &pub);
    json_t *args = json_pack("{s:s, s:s}", "op", "release", "resource", "inv.1");
    struct ks_task_view t = {.id = "t1", .args = args};
    json_t *result = NULL;
    char err[128] = "";
    for (int i = 0; i < 2; i++) { /* at-least-once delivery: twice is harmless */
        cr_assert_eq(u.run(u.ctx, &t, &result, err, sizeof(err)), KS_TASK_OK, "%s", err);
        cr_assert_eq(json_is_true(json_object_get(result, "deleted")), i == 0);
        json_decref(result);
        result = NULL;
    }
    cr_assert_eq(rows("vault_cards"), 0);
    json_decref(args);
    args = json_pack("{s:s}", "op", "forget");
    t.args = args;
    cr_assert_eq(u.run(u.ctx, &t, &result, err, sizeof(err)), KS_TASK_GIVE_UP);
    json_decref(args);
}

/* --- rotation ----------------------------------------------------------------------------------
 */

Test(vault, rotation_reencrypts_everything_and_drops_the_old_key)
{
    char before[KS_VAULT_KEY_ID_BYTES + 1], after[KS_VAULT_KEY_ID_BYTES + 1];
    current_key(before);
    const char *pans[] = {"4242424242424242", "5555555555554444", "2200000000000004",
                          "378282246310005", "3530111333300000"};
    const char *cvvs[] = {"111", "222", "333", "4444", NULL};
    struct ks_card_public pub[5];
    for (int i = 0; i < 5; i++) {
        struct ks_card_input in = card(pans[i], "12/30", cvvs[i], "HOLDER NAME");
        tokenize_ok(&in, &pub[i]);
    }
    int64_t n = 0;
    cr_assert_eq(ks_vault_rotate_batched(fx.vault, 2, &n), KS_OK); /* several batches */
    cr_assert_eq(n, 9, "5 cards + 4 CVVs");
    current_key(after);
    cr_assert_str_neq(after, before);
    cr_assert_eq(rows("vault_keys"), 1, "the old key is deleted");
    char sql[160];
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM vault_cards WHERE key_id <> '%s'", after);
    cr_assert_eq(count(sql), 0);
    snprintf(sql, sizeof(sql), "SELECT count(*) FROM vault_cvv WHERE key_id <> '%s'", after);
    cr_assert_eq(count(sql), 0);

    /* a fresh vault (no cached keys) reads everything under the new key */
    ks_vault_close(fx.vault);
    fx.vault = vault_open_at(fx.key_path, 0, 0);
    for (int i = 0; i < 5; i++) {
        struct ks_card c;
        reveal_ok(pub[i].token, NOW_MS, &c);
        cr_assert_str_eq(c.pan, pans[i]);
        cr_assert_str_eq(c.cvv, cvvs[i] ? cvvs[i] : "");
        cr_assert_str_eq(c.holder, "HOLDER NAME");
        struct ks_card_public d;
        cr_assert_eq(ks_vault_describe(fx.vault, pub[i].token, &d), KS_OK);
        cr_assert_str_eq(d.mask, pub[i].mask);
    }
    /* rotating again with nothing stale still makes a new key */
    cr_assert_eq(ks_vault_rotate(fx.vault, &n), KS_OK);
    cr_assert_eq(n, 9);
    cr_assert_eq(rows("vault_keys"), 1);
}

struct race {
    int id;
    int errors;
};

static void *race_tokenizer(void *p)
{
    struct race *r = p;
    for (int i = 0; i < 25; i++) {
        char pan[20];
        char prefix[16];
        snprintf(prefix, sizeof(prefix), "4%02d%03d", r->id, i);
        luhn_make(prefix, 16, pan);
        struct ks_card_input in = card(pan, "12/30", "123", NULL);
        struct ks_card_public pub;
        struct ks_card c;
        char code[32];
        int rc = ks_vault_tokenize(fx.vault, &in, NOW_MS, &pub, code, sizeof(code));
        if (rc == KS_OK)
            rc = ks_vault_reveal(fx.vault, pub.token, NOW_MS, &c);
        if (rc != KS_OK || strcmp(c.pan, pan) != 0 || strcmp(c.cvv, "123") != 0) {
            fprintf(stderr, "tokenizer %d: %s\n", r->id, ks_err_name(rc));
            r->errors++;
        }
    }
    return NULL;
}

static void *race_rotator(void *p)
{
    struct race *r = p;
    for (int i = 0; i < 3; i++) {
        int64_t n = 0;
        int rc = ks_vault_rotate_batched(fx.vault, 3, &n);
        if (rc != KS_OK) {
            fprintf(stderr, "rotator: %s\n", ks_err_name(rc));
            r->errors++;
        }
    }
    return NULL;
}

Test(vault, rotation_while_cards_are_tokenized_and_revealed)
{
    pthread_t th[5];
    struct race r[5];
    for (int i = 0; i < 5; i++) {
        r[i] = (struct race){.id = i};
        cr_assert_eq(pthread_create(&th[i], NULL, i == 4 ? race_rotator : race_tokenizer, &r[i]),
                     0);
    }
    for (int i = 0; i < 5; i++) {
        pthread_join(th[i], NULL);
        cr_expect_eq(r[i].errors, 0, "thread %d", i);
    }
    cr_assert_eq(rows("vault_cards"), 100);
    int64_t n = 0;
    cr_assert_eq(ks_vault_rotate(fx.vault, &n), KS_OK);
    cr_assert_eq(n, 200);
    cr_assert_eq(rows("vault_keys"), 1);
}

/* --- tampering ---------------------------------------------------------------------------------
 */

Test(vault, altered_or_swapped_ciphertexts_do_not_decrypt)
{
    struct ks_card_public a, b, c3;
    struct ks_card_input ia = card("4242424242424242", "12/30", "111", "ALICE");
    struct ks_card_input ib = card("5555555555554444", "12/30", "222", "BOB");
    struct ks_card_input ic = card("2200000000000004", "12/30", "333", "CAROL");
    tokenize_ok(&ia, &a);
    tokenize_ok(&ib, &b);
    tokenize_ok(&ic, &c3);
    struct ks_card out;
    struct ks_card_public d;

    /* one flipped bit in A's card */
    struct raw_arg ra = raw_read("vault_cards", a.token);
    ra.blob[KS_VAULT_NONCE_BYTES + 3] ^= 1;
    raw_write(ra, a.token);
    cr_assert_eq(ks_vault_reveal(fx.vault, a.token, NOW_MS, &out), KS_ERR_INTERNAL);
    cr_assert_str_empty(out.pan, "nothing handed out");
    cr_assert_eq(ks_vault_describe(fx.vault, a.token, &d), KS_ERR_INTERNAL);

    /* B's and C's cards swapped (same data key, both authentic elsewhere) */
    struct raw_arg rb = raw_read("vault_cards", b.token);
    struct raw_arg rc = raw_read("vault_cards", c3.token);
    raw_write(rc, b.token);
    raw_write(rb, c3.token);
    cr_assert_eq(ks_vault_reveal(fx.vault, b.token, NOW_MS, &out), KS_ERR_INTERNAL);
    cr_assert_eq(ks_vault_reveal(fx.vault, c3.token, NOW_MS, &out), KS_ERR_INTERNAL);
    raw_write(rb, b.token);
    raw_write(rc, c3.token);
    reveal_ok(b.token, NOW_MS, &out);
    cr_assert_str_eq(out.pan, "5555555555554444", "put back, it reads again");

    /* B's CVV moved onto C; and a card ciphertext moved into the CVV table */
    struct raw_arg vb = raw_read("vault_cvv", b.token);
    struct raw_arg vc = raw_read("vault_cvv", c3.token);
    raw_write(vb, c3.token);
    cr_assert_eq(ks_vault_reveal(fx.vault, c3.token, NOW_MS, &out), KS_ERR_INTERNAL);
    struct raw_arg as_cvv = rc;
    as_cvv.table = "vault_cvv";
    raw_write(as_cvv, c3.token);
    cr_assert_eq(ks_vault_reveal(fx.vault, c3.token, NOW_MS, &out), KS_ERR_INTERNAL);
    raw_write(vc, c3.token);
    reveal_ok(c3.token, NOW_MS, &out);
    cr_assert_str_eq(out.cvv, "333");

    /* the log says which key and table, never the card */
    char *log = NULL;
    size_t len = 0;
    slurp(fx.log_path, &log, &len);
    cr_assert(mem_has(log, len, "record does not authenticate"));
    free(log);

    /* rotation re-encrypts the rest, keeps A (and its key), and says so */
    char old_key[KS_VAULT_KEY_ID_BYTES + 1];
    current_key(old_key);
    int64_t n = 0;
    cr_assert_eq(ks_vault_rotate(fx.vault, &n), KS_ERR_INTERNAL);
    cr_assert_eq(n, 2 + 3, "B and C cards, all three CVVs");
    cr_assert_eq(rows("vault_keys"), 2, "the key of the unreadable record is kept");
    struct raw_arg still = raw_read("vault_cards", a.token);
    cr_assert_str_eq(still.key_id, old_key);
    reveal_ok(b.token, NOW_MS, &out);
    cr_assert_str_eq(out.pan, "5555555555554444");
    OPENSSL_cleanse(&out, sizeof(out));
}

static int tamper_key_tx(void *conn, void *p)
{
    (void)p;
    const char *sql = is_pg() ? "UPDATE vault_keys SET wrapped = set_byte(wrapped, 20, "
                                "get_byte(wrapped, 20) # 1) WHERE is_current = 1"
                              : "UPDATE vault_keys SET wrapped = zeroblob(60) WHERE is_current = 1";
    if (!is_pg())
        return sqlite3_exec(conn, sql, NULL, NULL, NULL) == SQLITE_OK ? KS_OK : KS_ERR_IO;
    PGresult *r = PQexec(conn, sql);
    int ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    return ok ? KS_OK : KS_ERR_IO;
}

Test(vault, an_altered_data_key_is_refused)
{
    struct ks_card_public pub;
    struct ks_card_input in = card("4242424242424242", "12/30", "111", NULL);
    tokenize_ok(&in, &pub);
    cr_assert_eq(ks_store_with_tx(fx.store, tamper_key_tx, NULL), KS_OK);
    struct ks_vault_options o = {.store = fx.store, .master_key_path = fx.key_path, .log = &fx.log};
    struct ks_vault *v = NULL;
    char why[512] = "";
    cr_assert_eq(ks_vault_open(&o, &v, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_null(v);
    cr_assert(strstr(why, "does not authenticate"), "%s", why);
    struct ks_card c;
    /* the open vault has the key cached from before the change and still works; a new node
     * would not start */
    reveal_ok(pub.token, NOW_MS, &c);
}

/* --- the master key file -------------------------------------------------------------------- */

static void file_text(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s", path);
    size_t n = fread(out, 1, cap - 1, f);
    out[n] = '\0';
    fclose(f);
}

Test(vault, master_key_file_is_created_0600_and_reused)
{
    struct stat st;
    cr_assert_eq(stat(fx.key_path, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0600);
    char dir[160];
    snprintf(dir, sizeof(dir), "%s/keys", fx.dir);
    cr_assert_eq(stat(dir, &st), 0);
    cr_assert_eq(st.st_mode & 07777, 0700, "the directory it made is private too");
    char text[128];
    file_text(fx.key_path, text, sizeof(text));
    cr_assert_eq(strlen(text), 65);
    cr_assert_eq(strspn(text, "0123456789abcdef"), 64);
    cr_assert_eq(text[64], '\n');

    struct ks_card_public pub;
    struct ks_card_input in = card("4242424242424242", "12/30", "111", NULL);
    tokenize_ok(&in, &pub);
    ks_vault_close(fx.vault);
    fx.vault = vault_open_at(fx.key_path, 0, 0);
    char again[128];
    file_text(fx.key_path, again, sizeof(again));
    cr_assert_str_eq(again, text, "an existing key is never replaced");
    struct ks_card c;
    reveal_ok(pub.token, NOW_MS, &c);
    cr_assert_str_eq(c.pan, "4242424242424242");

    /* the key never appears in the log */
    char *log = NULL;
    size_t len = 0;
    slurp(fx.log_path, &log, &len);
    text[64] = '\0';
    cr_assert_not(mem_has(log, len, text));
    free(log);
}

static int open_fails(const char *path, char *why, size_t whylen)
{
    struct ks_vault_options o = {.store = fx.store, .master_key_path = path, .log = &fx.log};
    struct ks_vault *v = NULL;
    int rc = ks_vault_open(&o, &v, why, whylen);
    cr_assert_neq(rc, KS_OK, "opened with %s", path);
    cr_assert_null(v);
    return rc;
}

Test(vault, master_key_file_problems_are_refused)
{
    char key[128], why[512];
    file_text(fx.key_path, key, sizeof(key));
    key[64] = '\0';

    /* readable by group or others */
    char loose[160];
    snprintf(loose, sizeof(loose), "%s/loose.key", fx.dir);
    FILE *f = fopen(loose, "w");
    fprintf(f, "%s\n", key);
    fclose(f);
    cr_assert_eq(chmod(loose, 0644), 0);
    cr_assert_eq(open_fails(loose, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, loose) && strstr(why, "0644"), "%s", why);
    cr_assert_null(strstr(why, key), "the key is not in the message");
    cr_assert_eq(chmod(loose, 0640), 0);
    cr_assert_eq(open_fails(loose, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert_eq(chmod(loose, 0600), 0);
    ks_vault_close(vault_open_at(loose, 0, 0)); /* same key, right mode: fine */

    /* not a key */
    const char *bad[] = {"", "abc\n", "zz",
                         "0123456789abcdef0123456789abcdef0123456789abcdef"
                         "0123456789abcdeX"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        f = fopen(loose, "w");
        fputs(bad[i], f);
        fclose(f);
        cr_assert_eq(open_fails(loose, why, sizeof(why)), KS_ERR_INVALID, "%s", bad[i]);
        cr_assert(strstr(why, "64 hexadecimal digits"), "%s", why);
    }
    /* a directory */
    cr_assert_eq(open_fails(fx.dir, why, sizeof(why)), KS_ERR_INVALID);

    /* another master key on this store: refused, the store's keys untouched */
    char other[160];
    snprintf(other, sizeof(other), "%s/other/master.key", fx.dir);
    cr_assert_eq(open_fails(other, why, sizeof(why)), KS_ERR_INVALID);
    cr_assert(strstr(why, "same master key"), "%s", why);
    char other_key[128];
    file_text(other, other_key, sizeof(other_key));
    other_key[64] = '\0';
    cr_assert_null(strstr(why, other_key));
    cr_assert_null(strstr(why, key));
    cr_assert_eq(rows("vault_keys"), 1);
}

/* --- the secret-leak test -------------------------------------------------------------------- */

struct dump_arg {
    char *buf;
    size_t len;
};

/* Every vault row of the schema, in binary, appended to the buffer (PostgreSQL). */
static int pg_dump_rx(void *conn, void *p)
{
    struct dump_arg *a = p;
    const char *sqls[] = {"SELECT * FROM vault_keys", "SELECT * FROM vault_cards",
                          "SELECT * FROM vault_cvv"};
    for (size_t s = 0; s < sizeof(sqls) / sizeof(sqls[0]); s++) {
        PGresult *r = PQexecParams(conn, sqls[s], 0, NULL, NULL, NULL, NULL, 1);
        if (PQresultStatus(r) != PGRES_TUPLES_OK) {
            PQclear(r);
            return KS_ERR_IO;
        }
        for (int i = 0; i < PQntuples(r); i++) {
            for (int j = 0; j < PQnfields(r); j++) {
                size_t n = (size_t)PQgetlength(r, i, j);
                a->buf = realloc(a->buf, a->len + n + 2);
                memcpy(a->buf + a->len, PQgetvalue(r, i, j), n);
                a->len += n;
                a->buf[a->len++] = '|';
                a->buf[a->len] = '\0';
            }
        }
        PQclear(r);
    }
    return KS_OK;
}

struct ids_arg {
    char ids[64][KS_VAULT_TOKEN_BYTES + 1];
    int n;
};

/* Tokens and key ids (random base62) and master ids: blanked before searching for CVVs. */
static int ids_rx(void *conn, void *p)
{
    struct ids_arg *a = p;
    const char *sql = "SELECT token FROM vault_cards UNION ALL SELECT key_id FROM vault_keys"
                      " UNION ALL SELECT master_id FROM vault_keys";
    if (!is_pg()) {
        sqlite3_stmt *q = NULL;
        if (sqlite3_prepare_v2(conn, sql, -1, &q, NULL) != SQLITE_OK)
            return KS_ERR_IO;
        while (a->n < 64 && sqlite3_step(q) == SQLITE_ROW)
            snprintf(a->ids[a->n++], sizeof(a->ids[0]), "%s", sqlite3_column_text(q, 0));
        sqlite3_finalize(q);
        return KS_OK;
    }
    PGresult *r = PQexec(conn, sql);
    for (int i = 0; PQresultStatus(r) == PGRES_TUPLES_OK && i < PQntuples(r) && a->n < 64; i++)
        snprintf(a->ids[a->n++], sizeof(a->ids[0]), "%s", PQgetvalue(r, i, 0));
    PQclear(r);
    return KS_OK;
}

Test(vault, no_card_number_cvv_or_holder_in_the_database_or_the_log)
{
    static const struct {
        const char *number, *exp, *cvv, *holder, *pan;
    } cards[] = {
        {"4242 4242 4242 4242", "12/30", "739", "JANE Q PAYER", "4242424242424242"},
        {"5555555555554444", "11/29", "846", "JOHN R PAYER", "5555555555554444"},
        {"2200000000000004", "10/28", "952", "IVAN I IVANOV", "2200000000000004"},
        {"378282246310005", "09/27", "6071", "AMEX HOLDER", "378282246310005"},
    };
    const size_t n = sizeof(cards) / sizeof(cards[0]);
    for (size_t i = 0; i < n; i++) {
        struct ks_card_input in =
            card(cards[i].number, cards[i].exp, cards[i].cvv, cards[i].holder);
        struct ks_card_public pub;
        tokenize_ok(&in, &pub);
        struct ks_card c;
        reveal_ok(pub.token, NOW_MS, &c); /* a reveal must not leave traces either */
        cr_assert_str_eq(c.cvv, cards[i].cvv);
        OPENSSL_cleanse(&c, sizeof(c));
    }
    /* bad attempts with the same secrets: their error codes and logs carry none of them */
    for (size_t i = 0; i < n; i++) {
        struct ks_card_input in = card(cards[i].number, "13/30", cards[i].cvv, cards[i].holder);
        expect_invalid(&in, "invalidExpDate");
    }
    int64_t r = 0;
    cr_assert_eq(ks_vault_rotate(fx.vault, &r), KS_OK);
    cr_assert_eq(r, 2 * (int64_t)n);

    struct ids_arg ids = {.n = 0};
    cr_assert_eq(ks_store_with_reader(fx.store, ids_rx, &ids), KS_OK);
    cr_assert_geq(ids.n, (int)n + 2);

    struct dump_arg db = {0};
    if (is_pg()) {
        cr_assert_eq(ks_store_with_reader(fx.store, pg_dump_rx, &db), KS_OK);
    } else {
        char path[160];
        const char *suffix[] = {"", "-wal", "-shm", "-journal"};
        for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
            snprintf(path, sizeof(path), "%s/k.db%s", fx.dir, suffix[i]);
            slurp(path, &db.buf, &db.len);
        }
    }
    cr_assert_gt(db.len, 0);
    struct dump_arg lg = {0};
    fflush(fx.log_file);
    slurp(fx.log_path, &lg.buf, &lg.len);
    cr_assert_gt(lg.len, 0, "the vault logged something");
    /* timestamps and random identifiers are not card data: blank them before the search */
    for (char *ts = lg.buf; (ts = strstr(ts, "\"ts\":\"")) != NULL;)
        for (ts += 6; *ts && *ts != '"'; ts++)
            *ts = '#';
    for (int i = 0; i < ids.n; i++) {
        mem_blank(db.buf, db.len, ids.ids[i]);
        mem_blank(lg.buf, lg.len, ids.ids[i]);
    }
    mem_blank(lg.buf, lg.len, fx.dir);

    struct dump_arg *where[] = {&db, &lg};
    const char *names[] = {"database", "log"};
    for (size_t w = 0; w < 2; w++) {
        for (size_t i = 0; i < n; i++) {
            cr_expect_not(mem_has(where[w]->buf, where[w]->len, cards[i].pan), "%s: card %zu",
                          names[w], i);
            cr_expect_not(mem_has(where[w]->buf, where[w]->len, cards[i].number),
                          "%s: card %zu as typed", names[w], i);
            cr_expect_not(mem_has(where[w]->buf, where[w]->len, cards[i].cvv), "%s: cvv %zu",
                          names[w], i);
            cr_expect_not(mem_has(where[w]->buf, where[w]->len, cards[i].holder), "%s: holder %zu",
                          names[w], i);
        }
    }
    /* what may be stored in clear is there: first six and last four */
    cr_expect(mem_has(db.buf, db.len, "424242"));
    free(db.buf);
    free(lg.buf);
}

/* --- other secrets (ks_vault_secret_seal) ------------------------------------------------------ */

Test(vault, a_sealed_secret_opens_only_for_its_purpose_and_name)
{
    static const char secret[] = "-----BEGIN PRIVATE KEY-----\nnot really\n-----END PRIVATE KEY-----\n";
    char *sealed = NULL;
    cr_assert_eq(ks_vault_secret_seal(fx.vault, "webhook-signing-key", "wh1", secret,
                                      strlen(secret), &sealed),
                 KS_OK);
    cr_assert_null(strstr(sealed, "PRIVATE"), "the sealed text shows nothing of the secret");
    unsigned char *plain = NULL;
    size_t len = 0;
    cr_assert_eq(ks_vault_secret_open(fx.vault, "webhook-signing-key", "wh1", sealed, &plain, &len),
                 KS_OK);
    cr_assert_eq(len, strlen(secret));
    cr_assert_str_eq((const char *)plain, secret);
    free(plain);
    /* moved to another row or purpose, or altered: refused, never another secret */
    cr_assert_eq(ks_vault_secret_open(fx.vault, "webhook-signing-key", "wh2", sealed, &plain, &len),
                 KS_ERR_INTERNAL);
    cr_assert_eq(ks_vault_secret_open(fx.vault, "other", "wh1", sealed, &plain, &len),
                 KS_ERR_INTERNAL);
    char *bent = strdup(sealed);
    bent[20] = bent[20] == 'A' ? 'B' : 'A';
    cr_assert_eq(ks_vault_secret_open(fx.vault, "webhook-signing-key", "wh1", bent, &plain, &len),
                 KS_ERR_INTERNAL);
    cr_assert_null(plain);
    cr_assert_eq(ks_vault_secret_open(fx.vault, "webhook-signing-key", "wh1", "not base64!", &plain,
                                      &len),
                 KS_ERR_INVALID);
    free(bent);
    /* a data-key rotation does not touch them */
    int64_t n = 0;
    cr_assert_eq(ks_vault_rotate(fx.vault, &n), KS_OK);
    cr_assert_eq(ks_vault_secret_open(fx.vault, "webhook-signing-key", "wh1", sealed, &plain, &len),
                 KS_OK);
    free(plain);
    free(sealed);
    char big[KS_VAULT_SECRET_BYTES_MAX + 1];
    memset(big, 'x', sizeof(big));
    cr_assert_eq(ks_vault_secret_seal(fx.vault, "p", "n", big, sizeof(big), &sealed), KS_ERR_LIMIT);
    cr_assert_eq(ks_vault_secret_seal(fx.vault, "", "n", big, 1, &sealed), KS_ERR_INVALID);
}
