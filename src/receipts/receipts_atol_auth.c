/*
 * receipts_atol_auth.c — ATOL Online v5's token flow for shop plugins that talk to kassa as if
 * it were ATOL (docs/receipts.md "ATOL Online v5 compatibility"): logins made by an operator
 * (`kassa receipts atol-login add`), each bound to a party and optionally to some of its shops;
 * getToken checks a login's password and hands out an opaque token for 24 hours.
 *
 * Only hashes are stored: the password as PBKDF2-HMAC-SHA256 with a random salt, a token as its
 * SHA-256. Neither a password nor a token is ever logged or printed after it is made.
 */
#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"
#include "core/clock.h"
#include "core/ids.h"
#include "core/json.h"
#include "platform/platform.h"
#include "receipts/receipts_int.h"
#include "store/sql.h"

#define PBKDF2_ITERATIONS 100000
#define SALT_BYTES 16
#define HASH_BYTES 32
#define TOKEN_CHARS 40
#define PASSWORD_CHARS 24

static void pass_hash(const char *pass, const char *salt_hex, char out[2 * HASH_BYTES + 1])
{
    unsigned char h[HASH_BYTES];
    PKCS5_PBKDF2_HMAC(pass, (int)strlen(pass), (const unsigned char *)salt_hex,
                      (int)strlen(salt_hex), PBKDF2_ITERATIONS, EVP_sha256(), HASH_BYTES, h);
    ks_hex(h, HASH_BYTES, out);
    OPENSSL_cleanse(h, sizeof(h));
}

static void token_hash(const char *token, char out[2 * HASH_BYTES + 1])
{
    unsigned char h[HASH_BYTES];
    SHA256((const unsigned char *)token, strlen(token), h);
    ks_hex(h, HASH_BYTES, out);
}

struct login_row {
    const char *login;
    char party[KS_CONFIG_ID_BYTES_MAX + 1];
    char shops[2048];
    char salt[2 * SALT_BYTES + 1];
    char hash[2 * HASH_BYTES + 1];
    bool found;
};

static int login_read(struct ks_sql *db, void *arg)
{
    struct login_row *l = arg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db,
                            "SELECT party_id, shops, salt, pass_hash FROM receipts_atol_logins"
                            " WHERE login = ?1",
                            &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, l->login);
    if ((rc = ks_sql_step(st)) == KS_SQL_ROW) {
        l->found = ks_sql_col_copy(st, 0, l->party, sizeof(l->party)) &&
                   ks_sql_col_copy(st, 1, l->shops, sizeof(l->shops)) &&
                   ks_sql_col_copy(st, 2, l->salt, sizeof(l->salt)) &&
                   ks_sql_col_copy(st, 3, l->hash, sizeof(l->hash));
        rc = KS_OK;
    }
    int drc = ks_sql_done(st);
    return rc != KS_OK ? rc : drc;
}

struct token_put {
    const char *hash, *login;
    int64_t now_ms, expires_ms;
};

static int token_put(struct ks_sql *db, void *arg)
{
    struct token_put *t = arg;
    struct ks_sql_stmt *st;
    /* Expired tokens go as new ones come: the table holds at most a day's worth. */
    int rc = ks_sql_prepare(db, "DELETE FROM receipts_atol_tokens WHERE expires_at < ?1", &st);
    if (rc == KS_OK) {
        ks_sql_bind_i64(st, 1, t->now_ms);
        rc = ks_sql_exec(st);
    }
    if (rc == KS_OK)
        rc = ks_sql_prepare(db,
                            "INSERT INTO receipts_atol_tokens (token_hash, login, expires_at)"
                            " VALUES (?1, ?2, ?3)",
                            &st);
    if (rc == KS_OK) {
        ks_sql_bind_text(st, 1, t->hash);
        ks_sql_bind_text(st, 2, t->login);
        ks_sql_bind_i64(st, 3, t->expires_ms);
        rc = ks_sql_exec(st);
    }
    return rc;
}

int ks_receipts_atol_token_issue(struct ks_store *store, const char *login, const char *pass,
                                 int64_t now_ms, char *token, size_t cap)
{
    if (!login || !pass || strlen(login) > KS_RECEIPTS_ATOL_LOGIN_BYTES_MAX ||
        strlen(pass) > KS_RECEIPTS_ATOL_PASS_BYTES_MAX || cap < TOKEN_CHARS + 1)
        return KS_ERR_UNAUTHORIZED;
    struct login_row l = {.login = login};
    int rc = ks_sql_read(store, login_read, &l);
    if (rc != KS_OK)
        return rc;
    char h[2 * HASH_BYTES + 1];
    /* An unknown login costs the same hash as a known one, so timing tells nothing. */
    pass_hash(pass, l.found ? l.salt : "00000000000000000000000000000000", h);
    if (!l.found || CRYPTO_memcmp(h, l.hash, sizeof(h)) != 0)
        return KS_ERR_UNAUTHORIZED;
    if ((rc = ks_id_random(token, TOKEN_CHARS)) != KS_OK)
        return rc;
    char th[2 * HASH_BYTES + 1];
    token_hash(token, th);
    struct token_put t = {.hash = th, .login = login, .now_ms = now_ms,
                          .expires_ms = now_ms + KS_RECEIPTS_ATOL_TOKEN_TTL_MS};
    rc = ks_sql_tx(store, token_put, &t);
    if (rc != KS_OK)
        OPENSSL_cleanse(token, cap);
    return rc;
}

struct token_get {
    const char *hash;
    int64_t now_ms;
    char login[KS_RECEIPTS_ATOL_LOGIN_BYTES_MAX + 1];
    bool found;
};

static int token_read(struct ks_sql *db, void *arg)
{
    struct token_get *t = arg;
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db,
                            "SELECT login FROM receipts_atol_tokens WHERE token_hash = ?1"
                            " AND expires_at > ?2",
                            &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, t->hash);
    ks_sql_bind_i64(st, 2, t->now_ms);
    if ((rc = ks_sql_step(st)) == KS_SQL_ROW) {
        t->found = ks_sql_col_copy(st, 0, t->login, sizeof(t->login));
        rc = KS_OK;
    }
    int drc = ks_sql_done(st);
    return rc != KS_OK ? rc : drc;
}

int ks_receipts_atol_token_check(struct ks_store *store, const char *token, int64_t now_ms,
                                 char *party, size_t party_cap, json_t **shops)
{
    *shops = NULL;
    if (!token || strlen(token) != TOKEN_CHARS)
        return KS_ERR_UNAUTHORIZED;
    char th[2 * HASH_BYTES + 1];
    token_hash(token, th);
    struct token_get t = {.hash = th, .now_ms = now_ms};
    int rc = ks_sql_read(store, token_read, &t);
    if (rc != KS_OK)
        return rc;
    if (!t.found)
        return KS_ERR_UNAUTHORIZED;
    struct login_row l = {.login = t.login};
    if ((rc = ks_sql_read(store, login_read, &l)) != KS_OK)
        return rc;
    if (!l.found) /* the login was deleted: its tokens go with it */
        return KS_ERR_UNAUTHORIZED;
    snprintf(party, party_cap, "%s", l.party);
    json_error_t err;
    *shops = json_loads(l.shops, 0, &err);
    return json_is_array(*shops) ? KS_OK : KS_ERR_INTERNAL;
}

/* --- `kassa receipts atol-login ...` ------------------------------------------------------ */

struct login_put {
    const char *login, *party, *shops, *salt, *hash;
    int64_t now_ms;
    int del;
    int64_t changed;
};

static int login_write(struct ks_sql *db, void *arg)
{
    struct login_put *p = arg;
    struct ks_sql_stmt *st;
    int rc;
    if (p->del) {
        rc = ks_sql_prepare(db, "DELETE FROM receipts_atol_logins WHERE login = ?1", &st);
        if (rc == KS_OK) {
            ks_sql_bind_text(st, 1, p->login);
            rc = ks_sql_exec(st);
            p->changed = ks_sql_changes(st);
        }
        if (rc == KS_OK)
            rc = ks_sql_prepare(db, "DELETE FROM receipts_atol_tokens WHERE login = ?1", &st);
        if (rc == KS_OK) {
            ks_sql_bind_text(st, 1, p->login);
            rc = ks_sql_exec(st);
        }
        return rc;
    }
    rc = ks_sql_prepare(db,
                        "INSERT INTO receipts_atol_logins (login, party_id, shops, salt,"
                        " pass_hash, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                        &st);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(st, 1, p->login);
    ks_sql_bind_text(st, 2, p->party);
    ks_sql_bind_text(st, 3, p->shops);
    ks_sql_bind_text(st, 4, p->salt);
    ks_sql_bind_text(st, 5, p->hash);
    ks_sql_bind_i64(st, 6, p->now_ms);
    return ks_sql_exec(st);
}

static int login_list(struct ks_sql *db, void *arg)
{
    struct ks_sql_stmt *st;
    int rc = ks_sql_prepare(db,
                            "SELECT login, party_id, shops FROM receipts_atol_logins"
                            " ORDER BY login LIMIT 10000",
                            &st);
    if (rc != KS_OK)
        return rc;
    while ((rc = ks_sql_step(st)) == KS_SQL_ROW)
        printf("%s\tparty %s\tshops %s\n", ks_sql_col_str(st, 0), ks_sql_col_str(st, 1),
               ks_sql_col_str(st, 2));
    int drc = ks_sql_done(st);
    return rc < 0 ? rc : drc;
}

static int login_usage(void)
{
    fprintf(stderr, "usage: kassa receipts atol-login add LOGIN PARTY [SHOP...] [flags]\n"
                    "       kassa receipts atol-login list [flags]\n"
                    "       kassa receipts atol-login delete LOGIN [flags]\n");
    return KS_EXIT_USAGE;
}

int ks_receipts_atol_login_cli(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    int words = 1; /* the sub-command and its positional words, before the flags */
    while (1 + words < argc && strncmp(argv[1 + words], "--", 2) != 0)
        words++;
    int add = strcmp(sub, "add") == 0, del = strcmp(sub, "delete") == 0,
        list = strcmp(sub, "list") == 0;
    if ((!add && !del && !list) || (add && (words < 3 || words > 2 + 8)) ||
        (del && words != 2) || (list && words != 1))
        return login_usage();
    const char *login = words > 1 ? argv[2] : NULL;
    if (login && (strlen(login) == 0 || strlen(login) > KS_RECEIPTS_ATOL_LOGIN_BYTES_MAX ||
                  !ks_config_id_valid(login))) {
        fprintf(stderr, "kassa: a login is 1 to 64 characters of [A-Za-z0-9._-]\n");
        return KS_EXIT_USAGE;
    }
    json_t *shops = json_array();
    for (int i = 4; add && i < 1 + words; i++) {
        if (!ks_config_id_valid(argv[i]) || !ks_config_id_valid(argv[3])) {
            fprintf(stderr, "kassa: party and shop ids are [A-Za-z0-9._-]{1,64}\n");
            json_decref(shops);
            return KS_EXIT_USAGE;
        }
        json_array_append_new(shops, json_string(argv[i]));
    }
    if (add && !ks_config_id_valid(argv[3])) {
        fprintf(stderr, "kassa: party and shop ids are [A-Za-z0-9._-]{1,64}\n");
        json_decref(shops);
        return KS_EXIT_USAGE;
    }
    struct ks_node *node = NULL;
    int rc = ks_cli_open(argc, argv, words, KS_CLI_STORE, &node);
    if (rc != KS_EXIT_OK) {
        json_decref(shops);
        return rc;
    }
    int src;
    if (list) {
        src = ks_sql_read(ks_node_store(node), login_list, NULL);
    } else {
        char pass[PASSWORD_CHARS + 1] = "", salt[2 * SALT_BYTES + 1] = "",
             hash[2 * HASH_BYTES + 1] = "";
        unsigned char salt_bytes[SALT_BYTES];
        char *shops_text = json_dumps(shops, JSON_COMPACT);
        src = shops_text ? KS_OK : KS_ERR_NOMEM;
        if (add && src == KS_OK &&
            (src = ks_id_random(pass, PASSWORD_CHARS)) == KS_OK &&
            (src = ks_random_bytes(salt_bytes, sizeof(salt_bytes))) == KS_OK) {
            ks_hex(salt_bytes, SALT_BYTES, salt);
            pass_hash(pass, salt, hash);
        }
        struct login_put p = {.login = login, .party = add ? argv[3] : NULL, .shops = shops_text,
                              .salt = salt, .hash = hash, .now_ms = ks_now_ms(), .del = del};
        if (src == KS_OK)
            src = ks_sql_tx(ks_node_store(node), login_write, &p);
        if (src == KS_OK && add)
            printf("login %s for party %s: password %s\n(shown once; kassa keeps only its hash)\n",
                   login, argv[3], pass);
        else if (src == KS_OK && del)
            printf(p.changed ? "login %s deleted, with its tokens\n" : "no login %s\n", login);
        else if (src == KS_ERR_CONFLICT)
            fprintf(stderr, "kassa: login %s exists already\n", login);
        OPENSSL_cleanse(pass, sizeof(pass));
        free(shops_text);
    }
    if (src != KS_OK && src != KS_ERR_CONFLICT)
        fprintf(stderr, "kassa: receipts atol-login %s: %s\n", sub, ks_err_text(src));
    json_decref(shops);
    ks_cli_close(node);
    return src == KS_OK ? KS_EXIT_OK : KS_EXIT_FAILURE;
}
