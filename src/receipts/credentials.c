/*
 * credentials.c — secrets of cash-register groups by reference (see credentials.h; table in
 * credentials_migrations/001_credentials.sql; docs/receipts-atol.md).
 *
 * Every statement runs through the SQL layer (store/sql.h), parameterised, the same on SQLite
 * and PostgreSQL. Only sealed text crosses it; plain secrets live in the caller's buffers and
 * in the vault's, which are wiped.
 */
#include "receipts/credentials.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/wipe.h"
#include "platform/platform.h"
#include "store/sql.h"
#include "vault/vault.h"

int ks_fiscal_credentials_migrate(struct ks_store *s, char *why, size_t whylen)
{
    assert(s != NULL);
    return ks_sql_migrate(s, &ks_receipts_credentials_schema, why, whylen);
}

int ks_fiscal_credentials_name_ok(const char *name)
{
    if (!name || !name[0] || strlen(name) > KS_FISCAL_CREDENTIAL_NAME_BYTES_MAX)
        return 0;
    for (const char *p = name; *p; p++)
        if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
              *p == '.' || *p == '_' || *p == '-'))
            return 0;
    return 1;
}

/* --- put ------------------------------------------------------------------------------------- */

struct put_arg {
    const char *name;
    const char *sealed;
    int64_t now_ms;
};

static int put_tx(struct ks_sql *db, void *p)
{
    struct put_arg *a = p;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db,
                            "INSERT INTO fiscal_credentials (name, sealed, created_at, updated_at)"
                            " VALUES (?1, ?2, ?3, ?3) ON CONFLICT (name) DO UPDATE SET"
                            " sealed = excluded.sealed, updated_at = excluded.updated_at",
                            &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->name);
    ks_sql_bind_text(q, 2, a->sealed);
    ks_sql_bind_i64(q, 3, a->now_ms);
    return ks_sql_exec(q);
}

int ks_fiscal_credentials_put(struct ks_store *s, struct ks_vault *vault, const char *name,
                              const void *secret, size_t len)
{
    assert(s != NULL && vault != NULL);
    if (!ks_fiscal_credentials_name_ok(name) || !secret || len == 0 || memchr(secret, 0, len))
        return KS_ERR_INVALID;
    if (len > KS_FISCAL_CREDENTIAL_BYTES_MAX)
        return KS_ERR_LIMIT;
    char *sealed = NULL;
    int rc = ks_vault_secret_seal(vault, KS_FISCAL_CREDENTIALS_PURPOSE, name, secret, len, &sealed);
    if (rc != KS_OK)
        return rc;
    struct put_arg a = {.name = name, .sealed = sealed, .now_ms = ks_now_ms()};
    rc = ks_sql_tx(s, put_tx, &a);
    free(sealed);
    return rc;
}

/* --- get ------------------------------------------------------------------------------------- */

struct get_arg {
    const char *name;
    char *sealed; /* malloc'd copy */
};

static int get_rx(struct ks_sql *db, void *p)
{
    struct get_arg *a = p;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "SELECT sealed FROM fiscal_credentials WHERE name = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->name);
    int step = ks_sql_step(q);
    if (step == KS_SQL_ROW) {
        const char *t = ks_sql_col_text(q, 0);
        a->sealed = t ? strdup(t) : NULL;
        if (!a->sealed)
            step = KS_ERR_NOMEM;
    }
    rc = ks_sql_done(q);
    if (step < 0)
        return step;
    if (rc != KS_OK)
        return rc;
    return step == KS_SQL_ROW ? KS_OK : KS_ERR_NOT_FOUND;
}

int ks_fiscal_credentials_get(struct ks_store *s, struct ks_vault *vault, const char *name,
                              char *buf, size_t cap, size_t *len)
{
    assert(s != NULL && vault != NULL && buf != NULL && cap > 0 && len != NULL);
    buf[0] = '\0';
    *len = 0;
    if (!ks_fiscal_credentials_name_ok(name))
        return KS_ERR_INVALID;
    struct get_arg a = {.name = name};
    int rc = ks_sql_read(s, get_rx, &a);
    if (rc != KS_OK) {
        free(a.sealed);
        return rc;
    }
    unsigned char *plain = NULL;
    size_t n = 0;
    rc = ks_vault_secret_open(vault, KS_FISCAL_CREDENTIALS_PURPOSE, name, a.sealed, &plain, &n);
    free(a.sealed);
    if (rc != KS_OK)
        return rc;
    if (n >= cap) {
        rc = KS_ERR_LIMIT;
    } else {
        memcpy(buf, plain, n);
        buf[n] = '\0';
        *len = n;
    }
    explicit_bzero(plain, n);
    ks_wipe_free(plain);
    return rc;
}

int ks_fiscal_credentials_options(struct ks_store *s, struct ks_vault *vault, const json_t *options,
                                  const char *ref, json_t **out)
{
    assert(out != NULL);
    *out = NULL;
    if (options && !json_is_object(options))
        return KS_ERR_INVALID;
    char secret[KS_FISCAL_CREDENTIAL_BYTES_MAX + 1];
    size_t len = 0;
    int rc = ks_fiscal_credentials_get(s, vault, ref, secret, sizeof(secret), &len);
    if (rc != KS_OK)
        return rc;
    json_t *copy = options ? json_deep_copy(options) : json_object();
    json_t *value = json_stringn(secret, len);
    explicit_bzero(secret, sizeof(secret));
    if (!json_is_object(copy) || !value || json_object_set_new(copy, "credentials", value) != 0) {
        if (!json_is_object(copy))
            json_decref(value);
        json_decref(copy);
        return KS_ERR_NOMEM;
    }
    *out = copy;
    return KS_OK;
}

/* --- delete, list ---------------------------------------------------------------------------- */

struct del_arg {
    const char *name;
    int64_t changed;
};

static int delete_tx(struct ks_sql *db, void *p)
{
    struct del_arg *a = p;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "DELETE FROM fiscal_credentials WHERE name = ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_text(q, 1, a->name);
    if ((rc = ks_sql_exec(q)) != KS_OK)
        return rc;
    a->changed = ks_sql_changes(q);
    return KS_OK;
}

int ks_fiscal_credentials_delete(struct ks_store *s, const char *name)
{
    assert(s != NULL);
    if (!ks_fiscal_credentials_name_ok(name))
        return KS_ERR_INVALID;
    struct del_arg a = {.name = name};
    int rc = ks_sql_tx(s, delete_tx, &a);
    if (rc != KS_OK)
        return rc;
    return a.changed > 0 ? KS_OK : KS_ERR_NOT_FOUND;
}

struct list_arg {
    ks_fiscal_credentials_name_fn fn;
    void *ctx;
    int more;
};

static int list_rx(struct ks_sql *db, void *p)
{
    struct list_arg *a = p;
    struct ks_sql_stmt *q = NULL;
    int rc = ks_sql_prepare(db, "SELECT name FROM fiscal_credentials ORDER BY name LIMIT ?1", &q);
    if (rc != KS_OK)
        return rc;
    ks_sql_bind_i64(q, 1, KS_FISCAL_CREDENTIALS_LIST_MAX + 1);
    int step = KS_SQL_ROW, fn_rc = KS_OK;
    for (int n = 0; n <= KS_FISCAL_CREDENTIALS_LIST_MAX && fn_rc == KS_OK; n++) {
        if ((step = ks_sql_step(q)) != KS_SQL_ROW)
            break;
        if (n == KS_FISCAL_CREDENTIALS_LIST_MAX) {
            a->more = 1;
            break;
        }
        fn_rc = a->fn(a->ctx, ks_sql_col_str(q, 0));
    }
    rc = ks_sql_done(q);
    if (step < 0)
        return step;
    return fn_rc != KS_OK ? fn_rc : rc;
}

int ks_fiscal_credentials_list(struct ks_store *s, ks_fiscal_credentials_name_fn fn, void *ctx,
                               int *more)
{
    assert(s != NULL && fn != NULL);
    struct list_arg a = {.fn = fn, .ctx = ctx};
    int rc = ks_sql_read(s, list_rx, &a);
    if (more)
        *more = a.more;
    return rc;
}

/* --- the command ----------------------------------------------------------------------------- */

/* Reads one line of at most KS_FISCAL_CREDENTIAL_BYTES_MAX bytes from standard input into
 * `buf` (without its line end), not echoed when it is a terminal. KS_ERR_INVALID for nothing,
 * KS_ERR_LIMIT for a longer line. */
static int read_secret(char *buf, size_t cap, size_t *len)
{
    *len = 0;
    int tty = isatty(STDIN_FILENO);
    struct termios old, quiet;
    if (tty && tcgetattr(STDIN_FILENO, &old) == 0) {
        quiet = old;
        quiet.c_lflag &= ~(tcflag_t)ECHO;
        fprintf(stderr, "secret: ");
        (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet);
    } else {
        tty = 0;
    }
    int rc = KS_OK, c = 0;
    size_t n = 0;
    while ((c = getchar()) != EOF && c != '\n') {
        if (n + 1 >= cap) {
            rc = KS_ERR_LIMIT;
            break;
        }
        buf[n++] = (char)c;
    }
    while (rc == KS_ERR_LIMIT && c != EOF && c != '\n') /* drain the rest of the line */
        c = getchar();
    if (tty) {
        (void)tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
        fprintf(stderr, "\n");
    }
    if (n > 0 && buf[n - 1] == '\r')
        n--;
    buf[n] = '\0';
    if (rc == KS_OK && n == 0)
        rc = KS_ERR_INVALID;
    *len = rc == KS_OK ? n : 0;
    return rc;
}

static int print_name(void *ctx, const char *name)
{
    (void)ctx;
    printf("%s\n", name);
    return KS_OK;
}

static int cli_usage(const char *what)
{
    fprintf(stderr,
            "kassa: receipts credentials: %s\n"
            "usage: kassa receipts credentials put NAME    (the secret on standard input)\n"
            "       kassa receipts credentials list\n"
            "       kassa receipts credentials delete NAME\n",
            what);
    return KS_EXIT_USAGE;
}

/* Runs one subcommand on an open store (and vault, for put). */
static int cli_run(const char *sub, const char *name, struct ks_store *store,
                   struct ks_vault *vault)
{
    int rc;
    if (strcmp(sub, "list") == 0) {
        int more = 0;
        rc = ks_fiscal_credentials_list(store, print_name, NULL, &more);
        if (rc == KS_OK && more)
            fprintf(stderr, "kassa: receipts credentials: only the first %d names are listed\n",
                    KS_FISCAL_CREDENTIALS_LIST_MAX);
    } else if (strcmp(sub, "delete") == 0) {
        rc = ks_fiscal_credentials_delete(store, name);
        if (rc == KS_OK)
            printf("receipts credentials: %s deleted\n", name);
    } else {
        char secret[KS_FISCAL_CREDENTIAL_BYTES_MAX + 2];
        size_t len = 0;
        rc = read_secret(secret, sizeof(secret), &len);
        if (rc == KS_ERR_LIMIT || rc == KS_ERR_INVALID) {
            fprintf(stderr, "kassa: receipts credentials: %s\n",
                    rc == KS_ERR_LIMIT ? "the secret is longer than 4096 bytes"
                                       : "no secret on standard input");
            return KS_EXIT_USAGE;
        }
        rc = ks_fiscal_credentials_put(store, vault, name, secret, len);
        explicit_bzero(secret, sizeof(secret));
        if (rc == KS_OK)
            printf("receipts credentials: %s stored\n", name);
    }
    if (rc == KS_ERR_NOT_FOUND) {
        fprintf(stderr, "kassa: receipts credentials: no credentials named %s\n", name);
        return KS_EXIT_FAILURE;
    }
    if (rc != KS_OK) {
        fprintf(stderr, "kassa: receipts credentials %s: %s\n", sub, ks_err_text(rc));
        return KS_EXIT_FAILURE;
    }
    return KS_EXIT_OK;
}

int ks_fiscal_credentials_cli(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    int put = strcmp(sub, "put") == 0, del = strcmp(sub, "delete") == 0;
    if (!put && !del && strcmp(sub, "list") != 0)
        return cli_usage("expected put NAME, list or delete NAME");
    const char *name = NULL;
    if (put || del) {
        name = argc > 2 ? argv[2] : "";
        if (!ks_fiscal_credentials_name_ok(name))
            return cli_usage("NAME is 1 to 64 of A-Z a-z 0-9 . _ -");
    }
    int rc = ks_platform_core_dumps_off(); /* the secret passes through this process */
    if (rc != KS_EXIT_OK)
        return rc;
    struct ks_node *node = NULL;
    if ((rc = ks_cli_open(argc, argv, name ? 2 : 1, KS_CLI_STORE, &node)) != KS_EXIT_OK)
        return rc;
    struct ks_store *store = ks_node_store(node);
    struct ks_vault *vault = NULL;
    char why[512] = "";
    if (ks_fiscal_credentials_migrate(store, why, sizeof(why)) != KS_OK) {
        fprintf(stderr, "kassa: receipts credentials: %s\n", why);
        rc = KS_EXIT_FAILURE;
        goto out;
    }
    if (put) {
        struct ks_vault_options vo = {.store = store,
                                      .master_key_path =
                                          ks_node_flag(node, "vault-master-key-file"),
                                      .log = ks_node_log(node)};
        /* `why` names the key's path, never key material (vault.h) */
        if (ks_vault_open(&vo, &vault, why, sizeof(why)) != KS_OK) {
            fprintf(stderr, "kassa: receipts credentials: cannot open the vault: %s\n", why);
            rc = KS_EXIT_FAILURE;
            goto out;
        }
    }
    rc = cli_run(sub, name, store, vault);
out:
    ks_vault_close(vault);
    ks_cli_close(node);
    return rc;
}
