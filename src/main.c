/*
 * main.c — the `kassa` command line: serve | migrate | vault | version | help.
 *
 * Every flag has an environment variable and a default (one table below, which also prints the
 * help); a flag beats its variable, which beats the default. Flags and variables are checked
 * before anything starts: a bad one prints the usage on stderr and exits 2. docs/configuration.md
 * documents the same table.
 *
 * `serve` opens the store (which applies migrations), starts the engine and its background
 * threads, then the public and admin listeners, and waits for SIGINT or SIGTERM. Shutdown runs
 * in the reverse order — listeners (waiting for requests in progress), engine, store — so every
 * request that got a reply is durable and nothing leaks.
 */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "api/api.h"
#include "api/payments_api.h"
#include "config/config.h"
#include "auth/auth.h"
#include "auth/auth_cli.h"
#include "core/parse.h"
#include "core/clock.h"
#include "core/err.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/wipe.h"
#include "domain/invoice/invoice.h"
#include "engine/engine.h"
#include "http/http.h"
#include "http/server.h"
#include "ledger/ledger.h"
#include "store/sql.h"
#include "store/store.h"
#include "units/acquiring.h"
#include "units/adapters/sandbox.h"
#include "vault/vault.h"
#ifdef KASSA_WITH_PROBE
#include "../tests/probe/probe.h"
#endif

#define KASSA_VERSION "0.1.0"

/* Exit codes (printed by `kassa help`). */
enum {
    EXIT_OK = 0,       /* success; serve: stopped by SIGINT/SIGTERM and shut down cleanly */
    EXIT_FAILURE_ = 1, /* a runtime failure: store, listener, token file, log file */
    EXIT_USAGE = 2,    /* unknown command, bad flag or environment variable */
};

#ifdef KASSA_WITH_PROBE
#define PROBE_UNIT_WORKERS 4
#endif

/* --- the option table --------------------------------------------------------------------- */

enum opt_id {
    OPT_STORE,
    OPT_LISTEN,
    OPT_ADMIN_LISTEN,
    OPT_ADMIN_TOKEN_FILE,
    OPT_HTTP_THREADS,
    OPT_HTTP_BODY_MAX_BYTES,
    OPT_ADMIN_BODY_MAX_BYTES,
    OPT_HTTP_CONNECTIONS_MAX,
    OPT_HTTP_CONNECTIONS_PER_IP_MAX,
    OPT_HTTP_TIMEOUT_S,
    OPT_HTTP_HEAD_DEADLINE_S,
    OPT_COMMIT_BATCH_MAX,
    OPT_LOG_FILE,
    OPT_LOG_LEVEL,
    OPT_SQLITE_SYNCHRONOUS,
    OPT_VAULT_MASTER_KEY_FILE,
    OPT_MERCHANT_KEYS,
    OPT_JWT_AUDIENCE,
    OPT_SIGNING_KEY_FILE,
    OPT_DEV_TRUST_OWN_KEY,
    OPT_PUBLIC_URL,
    OPT_PAYMENT_HOLD_MS,
    OPT_TASK_LEASE_MS,
    OPT_ACQUIRING_WORKERS,
    OPT_INITIAL_CONFIG,
    OPT_PAYMENT_RESOURCE_TTL_MS,
    OPT_COUNT
};

#define STR_(x) #x
#define STR(x) STR_(x)

static const struct opt_def {
    const char *flag;
    const char *env;
    const char *dflt;
    const char *help;
} opt_defs[OPT_COUNT] = {
    [OPT_STORE] = {"store", "KASSA_STORE", "sqlite:./var/kassa.db",
                   "sqlite:PATH or postgres://... (migrations are applied at open)"},
    [OPT_LISTEN] = {"listen", "KASSA_LISTEN", "127.0.0.1:8080",
                    "public API address, HOST:PORT or [IPV6]:PORT (port 0: any free port)"},
    [OPT_ADMIN_LISTEN] = {"admin-listen", "KASSA_ADMIN_LISTEN", "127.0.0.1:8081",
                          "admin API address; empty disables the admin API"},
    [OPT_ADMIN_TOKEN_FILE] = {"admin-token-file", "KASSA_ADMIN_TOKEN_FILE", "./var/admin.token",
                              "admin bearer token; created (mode 0600) if missing"},
    [OPT_HTTP_THREADS] = {"http-threads", "KASSA_HTTP_THREADS", STR(KS_HTTP_THREADS_DEFAULT),
                          "HTTP worker threads per listener (handlers block on commits)"},
    [OPT_HTTP_BODY_MAX_BYTES] = {"http-body-max-bytes", "KASSA_HTTP_BODY_MAX_BYTES", "65536",
                                 "largest request body on the public listener; larger gets 413"},
    [OPT_ADMIN_BODY_MAX_BYTES] = {"admin-body-max-bytes", "KASSA_ADMIN_BODY_MAX_BYTES", "1048576",
                                  "largest request body on the admin listener (configuration "
                                  "documents); larger gets 413"},
    [OPT_HTTP_CONNECTIONS_MAX] = {"http-connections-max", "KASSA_HTTP_CONNECTIONS_MAX",
                                  STR(KS_HTTP_CONNECTIONS_MAX_DEFAULT),
                                  "open connections per listener"},
    [OPT_HTTP_CONNECTIONS_PER_IP_MAX] = {"http-connections-per-ip-max",
                                         "KASSA_HTTP_CONNECTIONS_PER_IP_MAX",
                                         STR(KS_HTTP_PER_IP_CONNECTIONS_MAX_DEFAULT),
                                         "open connections per listener from one client address "
                                         "(at most --http-connections-max); more are closed"},
    [OPT_HTTP_TIMEOUT_S] = {"http-timeout-s", "KASSA_HTTP_TIMEOUT_S",
                            STR(KS_HTTP_TIMEOUT_S_DEFAULT), "idle connection timeout in seconds"},
    [OPT_HTTP_HEAD_DEADLINE_S] = {"http-head-deadline-s", "KASSA_HTTP_HEAD_DEADLINE_S",
                                  STR(KS_HTTP_HEAD_DEADLINE_S_DEFAULT),
                                  "seconds a client has to send a complete request head, from "
                                  "connecting or from its previous request's end; then closed"},
    [OPT_COMMIT_BATCH_MAX] = {"commit-batch-max", "KASSA_COMMIT_BATCH_MAX",
                              STR(KS_COMMIT_BATCH_MAX_DEFAULT),
                              "transitions grouped into one durable write"},
    [OPT_LOG_FILE] = {"log-file", "KASSA_LOG_FILE", "", "JSON log file (appended); empty: stderr"},
    [OPT_LOG_LEVEL] = {"log-level", "KASSA_LOG_LEVEL", "info", "debug | info | warn | error"},
    [OPT_SQLITE_SYNCHRONOUS] = {"sqlite-synchronous", "KASSA_SQLITE_SYNCHRONOUS", "full",
                                "full | normal (normal may lose the last commits on power loss)"},
    [OPT_VAULT_MASTER_KEY_FILE] = {"vault-master-key-file", "KASSA_VAULT_MASTER_KEY_FILE",
                                   "./var/vault-master.key",
                                   "card vault master key; created (mode 0600) if missing, "
                                   "shared by every node (docs/vault.md)"},
    [OPT_MERCHANT_KEYS] = {"merchant-keys", "KASSA_MERCHANT_KEYS", "",
                           "merchant key-sources JSON file: per identity provider its iss, the "
                           "parties it may speak for, its keys (docs/auth.md)"},
    [OPT_JWT_AUDIENCE] = {"jwt-audience", "KASSA_JWT_AUDIENCE", "kassa",
                          "required \"aud\" of merchant tokens"},
    [OPT_SIGNING_KEY_FILE] = {"signing-key-file", "KASSA_SIGNING_KEY_FILE", "./var/signing.key",
                              "kassa's own ES256 key (invoice tokens); created (0600) if missing"},
    [OPT_DEV_TRUST_OWN_KEY] = {"dev-trust-own-key", "KASSA_DEV_TRUST_OWN_KEY", "0",
                               "development only: accept `kassa token issue` merchant tokens "
                               "(flag alone or =1)"},
    [OPT_PUBLIC_URL] = {"public-url", "KASSA_PUBLIC_URL", "",
                        "base URL payers reach kassa at (3-D Secure pages); empty: the public "
                        "listener's own URL"},
    [OPT_PAYMENT_HOLD_MS] = {"payment-hold-ms", "KASSA_PAYMENT_HOLD_MS", "259200000",
                             "how long a hold payment stays authorized before onHoldExpiration"},
    [OPT_TASK_LEASE_MS] = {"task-lease-ms", "KASSA_TASK_LEASE_MS", STR(KS_TASK_LEASE_MS_DEFAULT),
                           "a claimed task is claimable again after this (crashed workers)"},
    [OPT_ACQUIRING_WORKERS] = {"acquiring-workers", "KASSA_ACQUIRING_WORKERS", "8",
                               "threads running provider sessions"},
    [OPT_INITIAL_CONFIG] = {"initial-config", "KASSA_INITIAL_CONFIG", "sandbox",
                            "domain configuration installed into an empty store: sandbox (the "
                            "embedded one) or a JSON file; the sandbox acquirer runs only when the "
                            "configuration uses it"},
    /* Payment resources are disposable (docs/payments.md "Payment resources"). */
    [OPT_PAYMENT_RESOURCE_TTL_MS] = {"payment-resource-ttl-ms", "KASSA_PAYMENT_RESOURCE_TTL_MS",
                                     "3600000",
                                     "lifetime of a tokenized card (validUntil); unused ones "
                                     "are then deleted from the vault"},
};

_Static_assert(KS_HTTP_BODY_BYTES_MAX_DEFAULT == 65536,
               "keep the --http-body-max-bytes default text in step");
_Static_assert(KS_HTTP_ADMIN_BODY_BYTES_MAX_DEFAULT == 1048576,
               "keep the --admin-body-max-bytes default text in step");

/* Parsed configuration. Strings are borrowed from argv, the environment or opt_defs. */
struct config {
    const char *text[OPT_COUNT];
    int64_t http_threads;
    int64_t http_body_max_bytes;
    int64_t admin_body_max_bytes;
    int64_t http_connections_max;
    int64_t http_connections_per_ip_max;
    int64_t http_timeout_s;
    int64_t http_head_deadline_s;
    int64_t commit_batch_max;
    int log_level;
    int sqlite_full;
    int dev_trust_own_key;
    int64_t payment_hold_ms;
    int64_t task_lease_ms;
    int64_t acquiring_workers;
    int64_t payment_resource_ttl_ms;
};

static void usage(FILE *f)
{
    fprintf(f, "usage: kassa <command> [flags]\n"
               "\n"
               "commands:\n"
               "  serve     run the public API, the admin API and the engine until SIGINT/SIGTERM\n"
               "  migrate   open the store, apply pending migrations, print the schema version\n"
               "  ledger verify    check the ledger's invariants; exit 3 naming what is wrong\n"
               "  config    get | put | validate | history: the domain configuration\n"
               "  token     token issue --party P ...: print a development merchant token\n"
               "  vault rotate     new card data key; re-encrypt every card under it\n"
               "  vault sweep-cvv  erase the CVVs older than their lifetime\n"
               "  version   print the version\n"
               "  help      print this help\n"
               "\n"
               "flags (each also read from its environment variable; a flag wins):\n");
    for (int i = 0; i < OPT_COUNT; i++) {
        const struct opt_def *d = &opt_defs[i];
        const char *dflt = d->dflt[0] ? d->dflt : (i == OPT_LOG_FILE ? "stderr" : "(empty)");
        fprintf(f, "  --%-22s %s, default %s\n      %s\n", d->flag, d->env, dflt, d->help);
    }
    fprintf(f, "\n"
               "exit codes:\n"
               "  0  success (serve: stopped by SIGINT or SIGTERM and shut down cleanly)\n"
               "  1  runtime failure (store, vault, listener, admin token file, log file)\n"
               "  2  usage error (unknown command, bad flag or environment variable)\n"
               "  3  ledger verify found problems (each is printed)\n");
}

static int bad_value(enum opt_id id, const char *why)
{
    fprintf(stderr, "kassa: --%s (%s): %s\n\n", opt_defs[id].flag, opt_defs[id].env, why);
    usage(stderr);
    return EXIT_USAGE;
}

static int int_option(struct config *c, enum opt_id id, int64_t min, int64_t max, int64_t *out)
{
    if (ks_parse_int64(c->text[id], min, max, out) != KS_OK) {
        char why[96];
        snprintf(why, sizeof(why), "must be an integer from %lld to %lld", (long long)min,
                 (long long)max);
        return bad_value(id, why);
    }
    return EXIT_OK;
}

/* Reads flags (argv after the command), then environment, then defaults. Returns EXIT_OK or
 * EXIT_USAGE (after printing why). */
static int config_parse(int argc, char **argv, struct config *c)
{
    memset(c, 0, sizeof(*c));
    struct option longs[OPT_COUNT + 2];
    for (int i = 0; i < OPT_COUNT; i++)
        longs[i] = (struct option){opt_defs[i].flag,
                                   i == OPT_DEV_TRUST_OWN_KEY ? optional_argument
                                                              : required_argument,
                                   NULL, i};
    longs[OPT_COUNT] = (struct option){"help", no_argument, NULL, 'h'};
    longs[OPT_COUNT + 1] = (struct option){0};

    optind = 1;
    opterr = 0;
    for (;;) {
        int idx = 0;
        int ch = getopt_long(argc, argv, "+h", longs, &idx);
        if (ch == -1)
            break;
        if (ch == 'h') {
            usage(stdout);
            exit(EXIT_OK);
        }
        if (ch < 0 || ch >= OPT_COUNT) {
            fprintf(stderr, "kassa: unknown flag or missing value: %s\n\n",
                    optind - 1 < argc ? argv[optind - 1] : "?");
            usage(stderr);
            return EXIT_USAGE;
        }
        c->text[ch] = optarg ? optarg : "1"; /* only a switch (optional value) has none */
    }
    if (optind < argc) {
        fprintf(stderr, "kassa: unexpected argument: %s\n\n", argv[optind]);
        usage(stderr);
        return EXIT_USAGE;
    }
    for (int i = 0; i < OPT_COUNT; i++) {
        if (!c->text[i])
            c->text[i] = getenv(opt_defs[i].env);
        if (!c->text[i])
            c->text[i] = opt_defs[i].dflt;
    }

    int rc;
    if ((rc = int_option(c, OPT_HTTP_THREADS, 1, KS_HTTP_THREADS_MAX, &c->http_threads)) ||
        (rc = int_option(c, OPT_HTTP_BODY_MAX_BYTES, 1, KS_HTTP_BODY_BYTES_MAX_CEIL,
                         &c->http_body_max_bytes)) ||
        (rc = int_option(c, OPT_ADMIN_BODY_MAX_BYTES, 1, KS_HTTP_BODY_BYTES_MAX_CEIL,
                         &c->admin_body_max_bytes)) ||
        (rc = int_option(c, OPT_HTTP_CONNECTIONS_MAX, 1, KS_HTTP_CONNECTIONS_MAX_CEIL,
                         &c->http_connections_max)) ||
        (rc = int_option(c, OPT_HTTP_CONNECTIONS_PER_IP_MAX, 1, KS_HTTP_CONNECTIONS_MAX_CEIL,
                         &c->http_connections_per_ip_max)) ||
        (rc = int_option(c, OPT_HTTP_TIMEOUT_S, 1, KS_HTTP_TIMEOUT_S_MAX, &c->http_timeout_s)) ||
        (rc = int_option(c, OPT_HTTP_HEAD_DEADLINE_S, 1, KS_HTTP_HEAD_DEADLINE_S_MAX,
                         &c->http_head_deadline_s)) ||
        (rc = int_option(c, OPT_COMMIT_BATCH_MAX, 1, KS_COMMIT_QUEUE_MAX, &c->commit_batch_max)) ||
        (rc = int_option(c, OPT_PAYMENT_HOLD_MS, 1000, 30LL * 24 * 3600 * 1000,
                         &c->payment_hold_ms)) ||
        (rc = int_option(c, OPT_TASK_LEASE_MS, 500, 3600LL * 1000, &c->task_lease_ms)) ||
        (rc =
             int_option(c, OPT_ACQUIRING_WORKERS, 1, KS_UNIT_WORKERS_MAX, &c->acquiring_workers)) ||
        (rc = int_option(c, OPT_PAYMENT_RESOURCE_TTL_MS, 1000, 24LL * 3600 * 1000,
                         &c->payment_resource_ttl_ms)))
        return rc;
    if (c->text[OPT_PUBLIC_URL][0] && strncmp(c->text[OPT_PUBLIC_URL], "http://", 7) != 0 &&
        strncmp(c->text[OPT_PUBLIC_URL], "https://", 8) != 0)
        return bad_value(OPT_PUBLIC_URL, "must start with http:// or https://");
    c->log_level = ks_log_level_parse(c->text[OPT_LOG_LEVEL]);
    if (c->log_level < 0)
        return bad_value(OPT_LOG_LEVEL, "must be debug, info, warn or error");
    if (strcmp(c->text[OPT_SQLITE_SYNCHRONOUS], "full") == 0)
        c->sqlite_full = 1;
    else if (strcmp(c->text[OPT_SQLITE_SYNCHRONOUS], "normal") == 0)
        c->sqlite_full = 0;
    else
        return bad_value(OPT_SQLITE_SYNCHRONOUS, "must be full or normal");
    if (!c->text[OPT_STORE][0])
        return bad_value(OPT_STORE, "must not be empty");
    char host[256];
    unsigned port;
    if (ks_http_listen_split(c->text[OPT_LISTEN], host, sizeof(host), &port) != KS_OK)
        return bad_value(OPT_LISTEN, "must be HOST:PORT or [IPV6]:PORT");
    if (c->text[OPT_ADMIN_LISTEN][0] &&
        ks_http_listen_split(c->text[OPT_ADMIN_LISTEN], host, sizeof(host), &port) != KS_OK)
        return bad_value(OPT_ADMIN_LISTEN, "must be HOST:PORT, [IPV6]:PORT or empty");
    if (!c->text[OPT_ADMIN_TOKEN_FILE][0])
        return bad_value(OPT_ADMIN_TOKEN_FILE, "must not be empty");
    if (!c->text[OPT_VAULT_MASTER_KEY_FILE][0])
        return bad_value(OPT_VAULT_MASTER_KEY_FILE, "must not be empty");
    if (!c->text[OPT_JWT_AUDIENCE][0])
        return bad_value(OPT_JWT_AUDIENCE, "must not be empty");
    if (!c->text[OPT_SIGNING_KEY_FILE][0])
        return bad_value(OPT_SIGNING_KEY_FILE, "must not be empty");
    const char *trust = c->text[OPT_DEV_TRUST_OWN_KEY];
    if (strcmp(trust, "1") == 0 || strcmp(trust, "true") == 0)
        c->dev_trust_own_key = 1;
    else if (!(trust[0] == '\0' || strcmp(trust, "0") == 0 || strcmp(trust, "false") == 0))
        return bad_value(OPT_DEV_TRUST_OWN_KEY, "must be 1, true, 0, false or empty");
    return EXIT_OK;
}

/* --- shared steps ------------------------------------------------------------------------- */

static int log_start(const struct config *c, struct ks_log *lg)
{
    const char *path = c->text[OPT_LOG_FILE];
    if (!path[0] || strcmp(path, "-") == 0 || strcmp(path, "stderr") == 0) {
        ks_log_init(lg, stderr, (enum ks_log_level)c->log_level);
        return EXIT_OK;
    }
    if (ks_log_open(lg, path, (enum ks_log_level)c->log_level) != KS_OK) {
        fprintf(stderr, "kassa: cannot open log file %s: %s\n", path, strerror(errno));
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}

static int store_start(const struct config *c, struct ks_log *lg, struct ks_store **out)
{
    struct ks_store_options so = {.readers = KS_STORE_READERS_DEFAULT,
                                  .sqlite_synchronous_full = c->sqlite_full};
    char why[256] = "";
    int rc = ks_store_open(c->text[OPT_STORE], &so, out, why, sizeof(why));
    if (rc != KS_OK) {
        /* `why` is written without credentials (store.h). */
        ks_logf(lg, KS_LOG_ERROR, NULL, "cannot open the store: %s (%s)", why, ks_err_name(rc));
        fprintf(stderr, "kassa: cannot open the store: %s\n", why);
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}

/* Opens the token verifier: the merchant key sources (a wrong key-sources file is a usage error,
 * exit 2; one that cannot be read, exit 1) and kassa's signing key (auth/auth.h). */
static int auth_start(const struct config *c, struct ks_log *lg, struct ks_auth **out)
{
    char why[512] = "";
    struct ks_auth_sources *sources = NULL;
    const char *sources_path = c->text[OPT_MERCHANT_KEYS];
    if (sources_path[0]) {
        int rc = ks_auth_sources_load(sources_path, lg, &sources, why, sizeof(why));
        if (rc != KS_OK) {
            /* `why` names files and sources, never key material (auth.h). */
            ks_logf(lg, KS_LOG_ERROR, NULL, "merchant key sources: %s (%s)", why,
                    ks_err_name(rc));
            fprintf(stderr, "kassa: --%s (%s): %s\n", opt_defs[OPT_MERCHANT_KEYS].flag,
                    opt_defs[OPT_MERCHANT_KEYS].env, why);
            return rc == KS_ERR_INVALID || rc == KS_ERR_LIMIT ? EXIT_USAGE : EXIT_FAILURE_;
        }
    }
    struct ks_auth_options ao = {.merchant_sources = sources,
                                 .audience = c->text[OPT_JWT_AUDIENCE],
                                 .signing_key_path = c->text[OPT_SIGNING_KEY_FILE],
                                 .trust_own_key_for_merchants = c->dev_trust_own_key,
                                 .log = lg};
    int rc = ks_auth_open(&ao, out, why, sizeof(why));
    if (rc != KS_OK) {
        /* `why` names paths, never key material (auth.h). */
        ks_logf(lg, KS_LOG_ERROR, NULL, "cannot open the token keys: %s (%s)", why,
                ks_err_name(rc));
        fprintf(stderr, "kassa: cannot open the token keys: %s\n", why);
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}

/* Opens the card vault on `store`; `sweep` starts its CVV sweeper thread (serve only). */
static int vault_start(const struct config *c, struct ks_log *lg, struct ks_store *store,
                       int sweep, struct ks_vault **out)
{
    struct ks_vault_options vo = {
        .store = store,
        .master_key_path = c->text[OPT_VAULT_MASTER_KEY_FILE],
        .log = lg,
        .cvv_sweep_interval_ms = sweep ? KS_VAULT_CVV_SWEEP_INTERVAL_MS_DEFAULT : 0};
    char why[512] = "";
    if (ks_vault_open(&vo, out, why, sizeof(why)) != KS_OK) {
        /* `why` names the path, never key material (vault.h). */
        ks_logf(lg, KS_LOG_ERROR, NULL, "cannot open the vault: %s", why);
        fprintf(stderr, "kassa: cannot open the vault: %s\n", why);
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}

/* --- commands ----------------------------------------------------------------------------- */
/* `kassa vault rotate | sweep-cvv [flags]` */
/* No core dumps from a process that holds card data, keys and tokens in memory: the dumpable
 * flag off (also keeps other users' ptrace and /proc/PID/mem out) and a zero core size limit. */
static int core_dumps_off(void)
{
    struct rlimit none = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &none) != 0)
        return -1;
    return 0;
}

static int cmd_vault(int argc, char **argv)
{
    const char *sub = argc > 1 ? argv[1] : "";
    int rotate = strcmp(sub, "rotate") == 0;
    if (!rotate && strcmp(sub, "sweep-cvv") != 0) {
        fprintf(stderr, "kassa: vault: expected rotate or sweep-cvv, got '%s'\n\n", sub);
        usage(stderr);
        return EXIT_USAGE;
    }
    if (core_dumps_off() != 0) { /* rotation decrypts every card */
        fprintf(stderr, "kassa: cannot turn core dumps off: %s\n", strerror(errno));
        return EXIT_FAILURE_;
    }
    struct config c;
    int rc = config_parse(argc - 1, argv + 1, &c);
    if (rc != EXIT_OK)
        return rc;
    struct ks_log lg;
    if ((rc = log_start(&c, &lg)) != EXIT_OK)
        return rc;
    struct ks_store *store = NULL;
    struct ks_vault *vault = NULL;
    if ((rc = store_start(&c, &lg, &store)) != EXIT_OK ||
        (rc = vault_start(&c, &lg, store, 0, &vault)) != EXIT_OK)
        goto out;
    int64_t n = 0;
    int vrc = rotate ? ks_vault_rotate(vault, &n) : ks_vault_sweep_cvv(vault, ks_now_ms(), &n);
    printf(rotate ? "vault rotate: %lld records re-encrypted\n"
                  : "vault sweep-cvv: %lld CVVs erased\n",
           (long long)n);
    if (vrc != KS_OK) {
        fprintf(stderr, "kassa: vault %s: %s (see the log)\n", sub, ks_err_text(vrc));
        rc = EXIT_FAILURE_;
    }
out:
    ks_vault_close(vault);
    ks_store_close(store);
    ks_log_release(&lg);
    return rc;
}


/* `kassa ledger verify [flags]`: the ledger's invariants (src/ledger/, docs/ledger.md). */
static int cmd_ledger(int argc, char **argv)
{
    enum { EXIT_LEDGER_BROKEN = 3 };
    const char *sub = argc > 1 ? argv[1] : "";
    if (strcmp(sub, "verify") != 0) {
        fprintf(stderr, "kassa: ledger: expected verify, got '%s'\n\n", sub);
        usage(stderr);
        return EXIT_USAGE;
    }
    struct config c;
    int rc = config_parse(argc - 1, argv + 1, &c);
    if (rc != EXIT_OK)
        return rc;
    struct ks_log lg;
    if ((rc = log_start(&c, &lg)) != EXIT_OK)
        return rc;
    struct ks_store *store = NULL;
    struct ks_ledger *ledger = NULL;
    struct ks_ledger_verify_report *report = calloc(1, sizeof(*report));
    if (!report || (rc = store_start(&c, &lg, &store)) != EXIT_OK) {
        rc = EXIT_FAILURE_;
        goto out;
    }
    int lrc = ks_ledger_open(store, NULL, &ledger);
    if (lrc == KS_OK)
        lrc = ks_ledger_verify(ledger, report);
    if (lrc != KS_OK) {
        fprintf(stderr, "kassa: ledger verify: %s\n", ks_err_text(lrc));
        rc = EXIT_FAILURE_;
        goto out;
    }
    ks_ledger_verify_print(report, stdout);
    if (report->problems_n > 0) {
        fprintf(stderr, "kassa: ledger verify: %zu problem(s), listed above\n",
                report->problems_n);
        rc = EXIT_LEDGER_BROKEN;
    }
out:
    free(report);
    ks_ledger_close(ledger);
    ks_store_close(store);
    ks_log_release(&lg);
    return rc;
}

/* Opens the ledger and registers its unit with the engine (before ks_engine_run). */
static int ledger_start(struct ks_store *store, struct ks_log *lg, struct ks_engine *engine,
                        struct ks_ledger **out)
{
    struct ks_ledger_options lo = {.log = lg};
    int rc = ks_ledger_open(store, &lo, out);
    if (rc == KS_OK) {
        struct ks_unit u;
        ks_ledger_unit(*out, 0, &u);
        rc = ks_engine_register_unit(engine, &u);
    }
    return rc;
}

static int cmd_migrate(int argc, char **argv)
{
    struct config c;
    int rc = config_parse(argc, argv, &c);
    if (rc != EXIT_OK)
        return rc;
    struct ks_log lg;
    if ((rc = log_start(&c, &lg)) != EXIT_OK)
        return rc;
    struct ks_store *store = NULL;
    if ((rc = store_start(&c, &lg, &store)) != EXIT_OK)
        goto out_log;
    /* The modules' own tables (each module also applies its schema when it opens). */
    const struct ks_sql_schema *const schemas[] = {&ks_ledger_schema, &ks_vault_schema,
                                                   &ks_sandbox_schema};
    for (size_t i = 0; i < sizeof(schemas) / sizeof(schemas[0]); i++) {
        char why[256];
        if (ks_sql_migrate(store, schemas[i], why, sizeof(why)) != KS_OK) {
            fprintf(stderr, "kassa: %s\n", why);
            rc = EXIT_FAILURE_;
            goto out_store;
        }
    }
    int version = 0;
    if (ks_store_schema_version(store, &version) != KS_OK) {
        fprintf(stderr, "kassa: cannot read the schema version\n");
        rc = EXIT_FAILURE_;
        goto out_store;
    }
    printf("%s store migrated: schema version %d\n", ks_store_kind(store), version);
out_store:
    ks_store_close(store);
out_log:
    ks_log_release(&lg);
    return rc;
}

/* Routers and servers of one `serve` run. */
struct serve_state {
    struct ks_api_ctx api;
    struct ks_payments_api payments;
    struct ks_http_router public_router;
    struct ks_http_router admin_router;
    struct ks_http_server *public_srv;
    struct ks_http_server *admin_srv;
};

static int routes_build(struct serve_state *st, int admin_enabled, struct ks_log *lg)
{
    int rc;
    ks_http_router_init(&st->public_router);
    ks_http_router_init(&st->admin_router);
    rc = ks_api_health_routes(&st->public_router, &st->api);
    if (rc == KS_OK)
        rc = ks_api_openapi_routes(&st->public_router);
#ifdef KASSA_WITH_PROBE
    if (rc == KS_OK)
        rc = ks_api_probe_routes(&st->public_router, &st->api);
#endif
    if (rc == KS_OK)
        rc = ks_api_payments_routes(&st->public_router, &st->payments);
    if (rc == KS_OK && st->api.sandbox)
        rc = ks_api_sandbox_routes(&st->public_router, &st->api);
    if (rc == KS_OK && admin_enabled && st->api.sandbox)
        rc = ks_api_sandbox_admin_routes(&st->admin_router, &st->api);
    if (rc == KS_OK && admin_enabled)
        rc = ks_api_health_routes(&st->admin_router, &st->api);
    if (rc == KS_OK && admin_enabled)
        rc = ks_api_admin_routes(&st->admin_router, &st->api);
    if (rc == KS_OK && admin_enabled)
        rc = ks_api_ledger_routes(&st->admin_router, &st->api);
    if (rc == KS_OK && admin_enabled)
        rc = ks_api_config_routes(&st->admin_router, &st->api);
    if (rc != KS_OK)
        ks_logf(lg, KS_LOG_ERROR, NULL, "cannot build the routes: %s", ks_err_name(rc));
    return rc;
}

/* What differs between the two listeners. */
struct listener {
    const char *name;
    const char *listen;
    const struct ks_http_router *router;
    int64_t body_bytes_max;
    size_t json_values_max;
    ks_http_authorizer authorize;
    void *authorize_ctx;
    size_t principal_bytes;
};

static int server_start(const struct config *c, const struct listener *l, struct ks_log *lg,
                        struct ks_http_server **out)
{
    const char *name = l->name;
    unsigned per_ip = (unsigned)(c->http_connections_per_ip_max < c->http_connections_max
                                     ? c->http_connections_per_ip_max
                                     : c->http_connections_max);
    struct ks_http_server_options o = {
        .name = name,
        .listen = l->listen,
        .router = l->router,
        .log = lg,
        .threads = (int)c->http_threads,
        .body_bytes_max = (size_t)l->body_bytes_max,
        .json_values_max = l->json_values_max,
        .connections_max = (unsigned)c->http_connections_max,
        .per_ip_connections_max = per_ip,
        .timeout_s = (unsigned)c->http_timeout_s,
        .head_deadline_s = (unsigned)c->http_head_deadline_s,
        .authorize = l->authorize,
        .authorize_ctx = l->authorize_ctx,
        .principal_bytes = l->principal_bytes,
    };
    char why[256] = "";
    int rc = ks_http_server_start(&o, out, why, sizeof(why));
    if (rc != KS_OK) {
        ks_logf(lg, KS_LOG_ERROR, NULL, "%s listener: %s", name, why);
        fprintf(stderr, "kassa: %s listener: %s\n", name, why);
        return EXIT_FAILURE_;
    }
    ks_log_json(lg, KS_LOG_INFO, NULL, "listening",
                json_pack("{s:s, s:s}", "listener", name, "url", ks_http_server_url(*out)));
    return EXIT_OK;
}

/* The document --initial-config names: the embedded sandbox, or a file read now, so that a
 * missing or malformed file stops the start before anything opens. Validation happens when it is
 * installed (only into an empty store). */
static int initial_config_load(const struct config *c, json_t **out)
{
    const char *v = c->text[OPT_INITIAL_CONFIG];
    char why[512] = "";
    int rc = strcmp(v, "sandbox") == 0 ? ks_config_sandbox_doc(out)
                                       : ks_config_load_file(v, out, why, sizeof(why));
    if (rc != KS_OK) {
        fprintf(stderr, "kassa: --initial-config: %s\n", why[0] ? why : ks_err_text(rc));
        return EXIT_FAILURE_;
    }
    return EXIT_OK;
}

/* Whether this node runs the sandbox acquirer: only when the configuration it starts with — the
 * store's current one, or the initial one for an empty store — has a provider using the sandbox
 * adapter. A configuration that adds one later takes effect at the next start. */
static bool sandbox_wanted(struct ks_engine *engine, const json_t *initial, struct ks_log *lg)
{
    json_t *doc = NULL;
    int64_t revision = 0;
    bool on;
    if (ks_config_current(engine, &doc, &revision) == KS_OK) {
        on = ks_config_uses_adapter(doc, "sandbox");
        json_decref(doc);
    } else {
        on = ks_config_uses_adapter(initial, "sandbox");
    }
    ks_log_json(lg, KS_LOG_INFO, NULL, on ? "sandbox acquirer on" : "sandbox acquirer off",
                json_pack("{s:b}", "configurationUsesSandbox", on));
    return on;
}

static int cmd_serve(int argc, char **argv)
{
    struct config c;
    int rc = config_parse(argc, argv, &c);
    if (rc != EXIT_OK)
        return rc;

    /* Signals: SIGINT/SIGTERM are blocked in every thread (they inherit this mask) and taken
     * synchronously by sigwait below; SIGPIPE from a vanished client is ignored. */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (core_dumps_off() != 0) {
        fprintf(stderr, "kassa: cannot turn core dumps off: %s\n", strerror(errno));
        return EXIT_FAILURE_;
    }

    struct ks_log lg;
    if ((rc = log_start(&c, &lg)) != EXIT_OK)
        return rc;
    struct serve_state *st = calloc(1, sizeof(*st));
    struct ks_store *store = NULL;
    struct ks_engine *engine = NULL;
    struct ks_ledger *ledger = NULL;
    struct ks_vault *vault = NULL;
    struct ks_auth *auth = NULL;
    struct ks_acquiring *acquiring = NULL;
    json_t *initial_config = NULL;
    int admin_enabled = c.text[OPT_ADMIN_LISTEN][0] != '\0';
    if (!st) {
        rc = EXIT_FAILURE_;
        goto out_log;
    }

    if ((rc = initial_config_load(&c, &initial_config)) != EXIT_OK)
        goto out_state;
    if ((rc = auth_start(&c, &lg, &auth)) != EXIT_OK)
        goto out_state;
    if ((rc = store_start(&c, &lg, &store)) != EXIT_OK)
        goto out_state;
    if ((rc = vault_start(&c, &lg, store, 1, &vault)) != EXIT_OK)
        goto out_engine;

    struct ks_engine_options eo = {.store = store,
                                   .log = &lg,
                                   .commit_batch_max = (int)c.commit_batch_max,
                                   .task_lease_ms = c.task_lease_ms};
    int erc = ks_engine_create(&eo, &engine);
    if (erc == KS_OK)
        erc = ks_config_register(engine);
    if (erc == KS_OK && sandbox_wanted(engine, initial_config, &lg) &&
        ks_sandbox_open(store, &lg, &st->api.sandbox) != KS_OK) {
        fprintf(stderr, "kassa: cannot open the sandbox acquirer\n");
        rc = EXIT_FAILURE_;
        goto out_engine;
    }
    if (erc == KS_OK)
        erc = ks_invoice_register(engine);
    if (erc == KS_OK) {
        /* Provider sessions: the acquiring unit with the adapters kassa ships. */
        struct ks_acquiring_options ao = {.vault = vault,
                                          .public_url = c.text[OPT_PUBLIC_URL],
                                          .log = &lg,
                                          .workers = (int)c.acquiring_workers};
        struct ks_unit u;
        erc = ks_acquiring_create(&ao, &acquiring);
        if (erc == KS_OK && st->api.sandbox)
            erc = ks_acquiring_add_adapter(acquiring, ks_sandbox_adapter(st->api.sandbox));
        if (erc == KS_OK) {
            ks_acquiring_unit(acquiring, &u);
            erc = ks_engine_register_unit(engine, &u);
        }
        if (erc == KS_OK) { /* releases the cards of spent and expired payment resources */
            ks_vault_unit(vault, &u);
            erc = ks_engine_register_unit(engine, &u);
        }
    }
#ifdef KASSA_WITH_PROBE
    if (erc == KS_OK)
        erc = ks_probe_register(engine, PROBE_UNIT_WORKERS);
    const char *probe_relay_file = getenv("KASSA_PROBE_RELAY_FILE");
    if (erc == KS_OK && probe_relay_file && *probe_relay_file)
        erc = ks_probe_register_file_relay(engine, probe_relay_file,
                                           getenv("KASSA_PROBE_RELAY_NAME"));
#endif
    if (erc == KS_OK)
        erc = ledger_start(store, &lg, engine, &ledger);
    if (erc == KS_OK)
        erc = ks_engine_run(engine, 1);
    char config_why[512] = "";
    if (erc == KS_OK) /* installs the initial configuration into an empty store */
        erc = ks_config_bootstrap_with(engine, &lg, initial_config,
                                       strcmp(c.text[OPT_INITIAL_CONFIG], "sandbox") == 0
                                           ? "the sandbox configuration"
                                           : c.text[OPT_INITIAL_CONFIG],
                                       NULL, config_why, sizeof(config_why));
    if (erc == KS_ERR_REJECTED) {
        fprintf(stderr, "kassa: the initial configuration %s is invalid: %s\n",
                c.text[OPT_INITIAL_CONFIG], config_why);
        rc = EXIT_FAILURE_;
        goto out_engine;
    }
    if (erc != KS_OK) {
        ks_logf(&lg, KS_LOG_ERROR, NULL, "cannot start the engine: %s", ks_err_name(erc));
        fprintf(stderr, "kassa: cannot start the engine: %s\n", ks_err_text(erc));
        rc = EXIT_FAILURE_;
        goto out_engine;
    }

    st->api.engine = engine;
    st->api.store = store;
    st->api.ledger = ledger;
    st->api.vault = vault;
    st->api.log = &lg;
    st->api.auth = auth;
    st->payments = (struct ks_payments_api){.engine = engine,
                                            .auth = auth,
                                            .vault = vault,
                                            .log = &lg,
                                            .payment_hold_ms = c.payment_hold_ms,
                                            .payment_resource_ttl_ms = c.payment_resource_ttl_ms};
    const char *token_file = c.text[OPT_ADMIN_TOKEN_FILE];
    if (admin_enabled) {
        char why[256] = "";
        int created = 0;
        if (ks_api_admin_token_load(token_file, st->api.admin_token, sizeof(st->api.admin_token),
                                    &created, why, sizeof(why)) != KS_OK) {
            ks_logf(&lg, KS_LOG_ERROR, NULL, "admin token: %s", why);
            fprintf(stderr, "kassa: admin token: %s\n", why);
            rc = EXIT_FAILURE_;
            goto out_engine;
        }
        ks_log_json(&lg, KS_LOG_INFO, NULL, created ? "admin token created" : "admin token read",
                    json_pack("{s:s}", "path", token_file));
    }

    if (routes_build(st, admin_enabled, &lg) != KS_OK) {
        rc = EXIT_FAILURE_;
        goto out_engine;
    }
    /* The public API's bearer tokens are verified when a request head arrives, before its body
     * is read; handlers get the verified struct ks_principal as req->auth. */
    const struct listener public_l = {.name = "public",
                                      .listen = c.text[OPT_LISTEN],
                                      .router = &st->public_router,
                                      .body_bytes_max = c.http_body_max_bytes,
                                      .json_values_max = KS_HTTP_JSON_VALUES_MAX,
                                      .authorize = ks_api_payments_authorize,
                                      .authorize_ctx = &st->payments,
                                      .principal_bytes = sizeof(struct ks_principal)};
    const struct listener admin_l = {.name = "admin",
                                     .listen = c.text[OPT_ADMIN_LISTEN],
                                     .router = &st->admin_router,
                                     .body_bytes_max = c.admin_body_max_bytes,
                                     .json_values_max = KS_HTTP_ADMIN_JSON_VALUES_MAX,
                                     .authorize = ks_api_admin_authorize,
                                     .authorize_ctx = &st->api};
    if ((rc = server_start(&c, &public_l, &lg, &st->public_srv)) != EXIT_OK)
        goto out_servers;
    if (admin_enabled && (rc = server_start(&c, &admin_l, &lg, &st->admin_srv)) != EXIT_OK)
        goto out_servers;

    if (!c.text[OPT_PUBLIC_URL][0]) /* the payer pages live on the public listener */
        ks_acquiring_set_public_url(acquiring, ks_http_server_url(st->public_srv));
    printf("kassa %s serving (store: %s)\n", KASSA_VERSION, ks_store_kind(store));
    printf("  public API  %s   (try: curl %s/health/ready)\n", ks_http_server_url(st->public_srv),
           ks_http_server_url(st->public_srv));
    if (admin_enabled)
        printf("  admin API   %s   (bearer token in %s)\n", ks_http_server_url(st->admin_srv),
               token_file);
    else
        printf("  admin API   disabled\n");
    printf("stop with Ctrl-C or SIGTERM\n");
    fflush(stdout);
    ks_log_json(&lg, KS_LOG_INFO, NULL, "kassa serving",
                json_pack("{s:s, s:s}", "version", KASSA_VERSION, "store", ks_store_kind(store)));

    int sig = 0;
    while (sigwait(&stop_set, &sig) != 0)
        ;
    ks_log_json(&lg, KS_LOG_INFO, NULL, "shutting down",
                json_pack("{s:s}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    rc = EXIT_OK;

out_servers:
    ks_http_server_stop(st->admin_srv);
    ks_http_server_stop(st->public_srv);
out_engine:
    if (engine)
        ks_engine_free(engine);
    ks_ledger_close(ledger); /* after the engine: its unit workers use the ledger */
    ks_acquiring_free(acquiring);      /* after the engine: its unit workers run sessions */
    ks_sandbox_close(st->api.sandbox); /* after the engine: its unit workers use the adapter */
    ks_vault_close(vault);
    ks_store_close(store);
out_state:
    json_decref(initial_config);
    ks_auth_close(auth);
    explicit_bzero(st->api.admin_token, sizeof(st->api.admin_token));
    free(st);
out_log:
    if (rc == EXIT_OK)
        ks_log_json(&lg, KS_LOG_INFO, NULL, "stopped", NULL);
    ks_log_release(&lg);
    return rc;
}

int main(int argc, char **argv)
{
    /* Before any JSON value exists: every jansson block is zeroed when freed (core/wipe.h). */
    ks_wipe_install_json_allocator();
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    const char *cmd = argv[1];
    /* The command's flags start after the command name. */
    int sub_argc = argc - 1;
    char **sub_argv = argv + 1;
    if (strcmp(cmd, "serve") == 0)
        return cmd_serve(sub_argc, sub_argv);
    if (strcmp(cmd, "migrate") == 0)
        return cmd_migrate(sub_argc, sub_argv);
    if (strcmp(cmd, "ledger") == 0)
        return cmd_ledger(sub_argc, sub_argv);
    if (strcmp(cmd, "vault") == 0)
        return cmd_vault(sub_argc, sub_argv);
    if (strcmp(cmd, "config") == 0)
        return ks_config_cli(sub_argc, sub_argv, opt_defs[OPT_STORE].dflt);
    if (strcmp(cmd, "token") == 0)
        return ks_auth_cli_token(sub_argc, sub_argv);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("kassa %s\n", KASSA_VERSION);
        return EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        usage(stdout);
        return EXIT_OK;
    }
    fprintf(stderr, "kassa: unknown command: %s\n\n", cmd);
    usage(stderr);
    return EXIT_USAGE;
}
