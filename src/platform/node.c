/*
 * node.c — the node modules are opened on (platform/module.h): the flag table of the core and
 * every module, its parsing and checking, `kassa help` and the Markdown flag table of
 * docs/configuration.md, services, route roles and the public URL. Design note: docs/modules.md.
 */
#include "platform/platform_int.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>

#include "api/roles.h"
#include "auth/auth.h"
#include "auth/auth_cli.h"
#include "core/limits.h"
#include "core/parse.h"
#include "http/server.h"
#include "store/store.h"

#define STR_(x) #x
#define STR(x) STR_(x)

_Static_assert(KS_HTTP_BODY_BYTES_MAX_DEFAULT == 65536,
               "keep the --http-body-max-bytes default text in step");
_Static_assert(KS_HTTP_ADMIN_BODY_BYTES_MAX_DEFAULT == 1048576,
               "keep the --admin-body-max-bytes default text in step");

/* The core's flags: the store, the listeners, the log, the engine and the token verifier. */
const struct ks_flag ks_core_flags[] = {
    {.name = "store", .env = "KASSA_STORE", .dflt = "sqlite:./var/kassa.db",
     .opts = KS_FLAG_NONEMPTY,
     .help = "sqlite:PATH or postgres://... (migrations are applied at open)",
     .doc = "`sqlite:PATH` (the file and its directory are created) or "
            "`postgres://user@host:port/db` / `postgresql://...`"},
    {.name = "listen", .env = "KASSA_LISTEN", .dflt = "127.0.0.1:8080", .kind = KS_FLAG_ADDRESS,
     .help = "public API address, HOST:PORT or [IPV6]:PORT (port 0: any free port)",
     .doc = "public API address: `HOST:PORT` or `[IPV6]:PORT`. kassa binds only this address. "
            "Port 0 picks a free port, which the banner shows"},
    {.name = "admin-listen", .env = "KASSA_ADMIN_LISTEN", .dflt = "127.0.0.1:8081",
     .kind = KS_FLAG_ADDRESS, .opts = KS_FLAG_MAY_EMPTY,
     .help = "admin API address; empty disables the admin API",
     .doc = "admin API address, in the same form. An empty value (`--admin-listen \"\"`) turns "
            "the admin API off, and no token file is made"},
    {.name = "admin-token-file", .env = "KASSA_ADMIN_TOKEN_FILE", .dflt = "./var/admin.token",
     .opts = KS_FLAG_NONEMPTY, .help = "admin bearer token; created (mode 0600) if missing",
     .doc = "the admin bearer token (see below)"},
    {.name = "http-threads", .env = "KASSA_HTTP_THREADS", .dflt = STR(KS_HTTP_THREADS_DEFAULT),
     .kind = KS_FLAG_INT, .min = 1, .max = KS_HTTP_THREADS_MAX,
     .help = "HTTP worker threads per listener (handlers block on commits)",
     .doc = "worker threads per listener. A handler blocks while it waits for its transition to "
            "be durable, so this is also how many requests can wait for a commit at once",
     .dflt_doc = STR(KS_HTTP_THREADS_DEFAULT)},
    {.name = "http-body-max-bytes", .env = "KASSA_HTTP_BODY_MAX_BYTES", .dflt = "65536",
     .kind = KS_FLAG_INT, .min = 1, .max = KS_HTTP_BODY_BYTES_MAX_CEIL,
     .help = "largest request body on the public listener; larger gets 413",
     .doc = "largest request body on the public listener. A larger body gets `413`",
     .dflt_doc = "65536"},
    {.name = "admin-body-max-bytes", .env = "KASSA_ADMIN_BODY_MAX_BYTES", .dflt = "1048576",
     .kind = KS_FLAG_INT, .min = 1, .max = KS_HTTP_BODY_BYTES_MAX_CEIL,
     .help = "largest request body on the admin listener (configuration documents); larger "
             "gets 413",
     .doc = "largest request body on the admin listener (it takes whole configuration "
            "documents). A larger body gets `413`",
     .dflt_doc = "1048576"},
    {.name = "http-connections-max", .env = "KASSA_HTTP_CONNECTIONS_MAX",
     .dflt = STR(KS_HTTP_CONNECTIONS_MAX_DEFAULT), .kind = KS_FLAG_INT, .min = 1,
     .max = KS_HTTP_CONNECTIONS_MAX_CEIL, .help = "open connections per listener",
     .dflt_doc = STR(KS_HTTP_CONNECTIONS_MAX_DEFAULT)},
    {.name = "http-connections-per-ip-max", .env = "KASSA_HTTP_CONNECTIONS_PER_IP_MAX",
     .dflt = STR(KS_HTTP_PER_IP_CONNECTIONS_MAX_DEFAULT), .kind = KS_FLAG_INT, .min = 1,
     .max = KS_HTTP_CONNECTIONS_MAX_CEIL,
     .help = "open connections per listener from one client address (at most "
             "--http-connections-max); more are closed",
     .doc = "open connections per listener from one client address (used as at most "
            "`--http-connections-max`). A connection over the limit is closed at once, without "
            "an answer. Behind a proxy every client shares the proxy's address: raise it there",
     .dflt_doc = STR(KS_HTTP_PER_IP_CONNECTIONS_MAX_DEFAULT)},
    {.name = "http-timeout-s", .env = "KASSA_HTTP_TIMEOUT_S",
     .dflt = STR(KS_HTTP_TIMEOUT_S_DEFAULT), .kind = KS_FLAG_INT, .min = 1,
     .max = KS_HTTP_TIMEOUT_S_MAX, .help = "idle connection timeout in seconds",
     .doc = "seconds before an idle connection is closed",
     .dflt_doc = STR(KS_HTTP_TIMEOUT_S_DEFAULT)},
    {.name = "http-head-deadline-s", .env = "KASSA_HTTP_HEAD_DEADLINE_S",
     .dflt = STR(KS_HTTP_HEAD_DEADLINE_S_DEFAULT), .kind = KS_FLAG_INT, .min = 1,
     .max = KS_HTTP_HEAD_DEADLINE_S_MAX,
     .help = "seconds a client has to send a complete request head, from connecting or from "
             "its previous request's end; then closed",
     .doc = "seconds a client has to send a complete request head (request line and headers), "
            "counted from the connection's start or the end of its previous request, however "
            "steadily bytes arrive. Then the connection is closed. A kept-alive connection that "
            "sends no new request is therefore closed after this long too",
     .dflt_doc = STR(KS_HTTP_HEAD_DEADLINE_S_DEFAULT)},
    {.name = "commit-batch-max", .env = "KASSA_COMMIT_BATCH_MAX",
     .dflt = STR(KS_COMMIT_BATCH_MAX_DEFAULT), .kind = KS_FLAG_INT, .min = 1,
     .max = KS_COMMIT_QUEUE_MAX, .help = "transitions grouped into one durable write",
     .doc = "most transitions grouped into one durable write",
     .dflt_doc = STR(KS_COMMIT_BATCH_MAX_DEFAULT)},
    {.name = "task-lease-ms", .env = "KASSA_TASK_LEASE_MS", .dflt = STR(KS_TASK_LEASE_MS_DEFAULT),
     .kind = KS_FLAG_INT, .min = 500, .max = 3600LL * 1000,
     .help = "a claimed task is claimable again after this (crashed workers)",
     .doc = "a claimed task becomes claimable again after this, so a crashed node's work "
            "resumes; keep it above the slowest provider call",
     .dflt_doc = STR(KS_TASK_LEASE_MS_DEFAULT)},
    {.name = "log-file", .env = "KASSA_LOG_FILE", .dflt = "",
     .help = "JSON log file (appended); empty: stderr",
     .doc = "file the JSON log lines are appended to. Empty, `-` or `stderr` means stderr",
     .dflt_doc = "stderr"},
    {.name = "log-level", .env = "KASSA_LOG_LEVEL", .dflt = "info", .kind = KS_FLAG_CHOICE,
     .choices = "debug|info|warn|error", .help = "debug | info | warn | error",
     .doc = "`debug`, `info`, `warn` or `error`. At `warn` and above there are no access-log "
            "lines"},
    {.name = "sqlite-synchronous", .env = "KASSA_SQLITE_SYNCHRONOUS", .dflt = "full",
     .kind = KS_FLAG_CHOICE, .choices = "full|normal",
     .help = "full | normal (normal may lose the last commits on power loss)",
     .doc = "`full` makes every acknowledged commit survive power loss. `normal` is faster but "
            "may lose the last commits on power loss (a process crash alone loses nothing)"},
    {.name = "public-url", .env = "KASSA_PUBLIC_URL", .dflt = "", .kind = KS_FLAG_HTTP_URL,
     .help = "base URL payers reach kassa at (payer pages); empty: the public listener's own URL",
     .doc = "base URL payers and providers reach kassa at; payer pages such as the sandbox 3-D "
            "Secure page and the callback URLs given to adapters (`/v2/callbacks/{tag}`) are "
            "built on it. Set it behind a proxy",
     .dflt_doc = "the public listener's URL"},
    {.name = "merchant-keys", .env = "KASSA_MERCHANT_KEYS", .dflt = "",
     .help = "merchant key-sources JSON file: per identity provider its iss, the parties it may "
             "speak for, its keys (docs/auth.md)",
     .doc = "the merchant key-sources file: per identity provider its `iss`, the parties it may "
            "speak for and its keys ([auth.md](auth.md), \"Configuring the keys\")",
     .dflt_doc = "none"},
    {.name = "jwt-audience", .env = "KASSA_JWT_AUDIENCE", .dflt = "kassa",
     .opts = KS_FLAG_NONEMPTY, .help = "required \"aud\" of merchant tokens",
     .doc = "the `aud` merchant tokens must carry"},
    {.name = "signing-key-file", .env = "KASSA_SIGNING_KEY_FILE", .dflt = "./var/signing.key",
     .opts = KS_FLAG_NONEMPTY,
     .help = "kassa's own ES256 key (invoice tokens); created (0600) if missing",
     .doc = "kassa's own ES256 key for invoice access tokens; created (0600) if missing; refused "
            "if group or others can read it; shared by every node"},
    {.name = "dev-trust-own-key", .env = "KASSA_DEV_TRUST_OWN_KEY", .dflt = "0",
     .kind = KS_FLAG_SWITCH,
     .help = "development only: accept `kassa token issue` merchant tokens (flag alone or =1)",
     .doc = "development only: accept merchant tokens made by `kassa token issue` (`make run` "
            "turns it on)",
     .dflt_doc = "off"},
};
const size_t ks_core_flags_n = sizeof(ks_core_flags) / sizeof(ks_core_flags[0]);

/* --- the table ---------------------------------------------------------------------------- */

/* Appends every flag of `defs` to the node's table. A name declared twice is a programmer
 * error (the modules' tests start every build's binary, which would abort here). */
static void table_add(struct ks_node *n, const char *owner, const struct ks_flag *defs,
                      size_t defs_n)
{
    for (size_t i = 0; i < defs_n; i++) {
        assert(n->flags_n < KS_NODE_FLAGS_MAX);
        for (size_t j = 0; j < n->flags_n; j++)
            assert(strcmp(n->flags[j].def->name, defs[i].name) != 0);
        n->flags[n->flags_n++] = (struct ks_node_flag){.def = &defs[i], .owner = owner};
    }
}

static void table_build(struct ks_node *n)
{
    n->flags_n = 0;
    table_add(n, "core", ks_core_flags, ks_core_flags_n);
    for (const struct ks_module *const *m = ks_modules(); *m; m++)
        table_add(n, (*m)->name, (*m)->flags, (*m)->flags_n);
}

static const struct ks_node_flag *flag_find(const struct ks_node *n, const char *name)
{
    for (size_t i = 0; i < n->flags_n; i++)
        if (strcmp(n->flags[i].def->name, name) == 0)
            return &n->flags[i];
    return NULL;
}

const char *ks_platform_flag_default(const char *name)
{
    for (size_t i = 0; i < ks_core_flags_n; i++)
        if (strcmp(ks_core_flags[i].name, name) == 0)
            return ks_core_flags[i].dflt;
    for (const struct ks_module *const *m = ks_modules(); *m; m++)
        for (size_t i = 0; i < (*m)->flags_n; i++)
            if (strcmp((*m)->flags[i].name, name) == 0)
                return (*m)->flags[i].dflt;
    return "";
}

/* --- usage -------------------------------------------------------------------------------- */

static void usage_flag(FILE *f, const struct ks_flag *d)
{
    const char *dflt = d->dflt[0] ? d->dflt : (d->dflt_doc ? d->dflt_doc : "(empty)");
    fprintf(f, "  --%-22s %s, default %s\n      %s\n", d->name, d->env, dflt, d->help);
}

void ks_platform_usage(FILE *f)
{
    fprintf(f, "usage: kassa <command> [flags]\n"
               "\n"
               "commands:\n"
               "  serve     run the public API, the admin API and the engine until SIGINT/SIGTERM\n"
               "  migrate   open the store, apply pending migrations, print the schema versions\n"
               "  token     token issue --party P ...: print a development merchant token\n");
    for (const struct ks_module *const *m = ks_modules(); *m; m++)
        for (size_t i = 0; i < (*m)->commands_n; i++)
            fputs((*m)->commands[i].usage, f);
    fprintf(f, "  version   print the version\n"
               "  help      print this help (help --markdown: the flag table of "
               "docs/configuration.md)\n"
               "\n"
               "flags (each also read from its environment variable; a flag wins):\n");
    for (size_t i = 0; i < ks_core_flags_n; i++)
        usage_flag(f, &ks_core_flags[i]);
    for (const struct ks_module *const *m = ks_modules(); *m; m++) {
        if ((*m)->flags_n == 0)
            continue;
        fprintf(f, "flags of the %s module%s:\n", (*m)->name,
                (*m)->test_only ? " (test and bench builds only)" : "");
        for (size_t i = 0; i < (*m)->flags_n; i++)
            usage_flag(f, &(*m)->flags[i]);
    }
    fprintf(f, "\n"
               "exit codes:\n"
               "  0  success (serve: stopped by SIGINT or SIGTERM and shut down cleanly)\n"
               "  1  runtime failure (store, vault, listener, admin token file, log file)\n"
               "  2  usage error (unknown command, bad flag or environment variable)\n"
               "  3  ledger verify found problems (each is printed)\n");
}

/* The range a KS_FLAG_INT flag's docs show after its meaning. */
static void markdown_range(FILE *f, const struct ks_flag *d)
{
    if (d->kind == KS_FLAG_INT)
        fprintf(f, " (range %lld..%lld)", (long long)d->min, (long long)d->max);
}

static void markdown_flag(FILE *f, const char *owner, const struct ks_flag *d)
{
    fprintf(f, "| `--%s` | `%s` | ", d->name, d->env);
    if (d->dflt_doc)
        fputs(d->dflt_doc, f);
    else
        fprintf(f, "`%s`", d->dflt);
    fprintf(f, " | %s | %s", owner, d->doc ? d->doc : d->help);
    markdown_range(f, d);
    fputs(" |\n", f);
}

/* The flag table of docs/configuration.md (between its "flags:begin" and "flags:end" marks);
 * tests/blackbox/test_cli.py checks the two agree. Test-only modules are left out. */
static void markdown_flags(FILE *f)
{
    fputs("| flag | environment | default | module | meaning |\n|---|---|---|---|---|\n", f);
    for (size_t i = 0; i < ks_core_flags_n; i++)
        markdown_flag(f, "core", &ks_core_flags[i]);
    for (const struct ks_module *const *m = ks_modules(); *m; m++)
        for (size_t i = 0; !(*m)->test_only && i < (*m)->flags_n; i++)
            markdown_flag(f, (*m)->name, &(*m)->flags[i]);
}

/* --- parsing ------------------------------------------------------------------------------ */

static int bad_value(const struct ks_flag *d, const char *why)
{
    fprintf(stderr, "kassa: --%s (%s): %s\n\n", d->name, d->env, why);
    ks_platform_usage(stderr);
    return KS_EXIT_USAGE;
}

static bool choice_ok(const char *choices, const char *v)
{
    size_t len = strlen(v);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t n = bar ? (size_t)(bar - p) : strlen(p);
        if (n == len && len > 0 && strncmp(p, v, n) == 0)
            return true;
        p += n + (bar ? 1 : 0);
    }
    return false;
}

/* Checks one value against its definition; fills `f->number`. */
static int flag_check(struct ks_node_flag *f)
{
    const struct ks_flag *d = f->def;
    const char *v = f->value;
    char why[160];
    if ((d->opts & KS_FLAG_NONEMPTY) && !v[0])
        return bad_value(d, "must not be empty");
    switch (d->kind) {
    case KS_FLAG_TEXT:
        return KS_EXIT_OK;
    case KS_FLAG_INT:
        if (ks_parse_int64(v, d->min, d->max, &f->number) != KS_OK) {
            snprintf(why, sizeof(why), "must be an integer from %lld to %lld", (long long)d->min,
                     (long long)d->max);
            return bad_value(d, why);
        }
        return KS_EXIT_OK;
    case KS_FLAG_SWITCH:
        if (strcmp(v, "1") == 0 || strcmp(v, "true") == 0)
            f->number = 1;
        else if (v[0] == '\0' || strcmp(v, "0") == 0 || strcmp(v, "false") == 0)
            f->number = 0;
        else
            return bad_value(d, "must be 1, true, 0, false or empty");
        return KS_EXIT_OK;
    case KS_FLAG_CHOICE:
        if (!choice_ok(d->choices, v)) {
            snprintf(why, sizeof(why), "must be one of %s", d->choices);
            return bad_value(d, why);
        }
        return KS_EXIT_OK;
    case KS_FLAG_HTTP_URL:
        if (v[0] && strncmp(v, "http://", 7) != 0 && strncmp(v, "https://", 8) != 0)
            return bad_value(d, "must start with http:// or https://");
        return KS_EXIT_OK;
    case KS_FLAG_ADDRESS: {
        char host[256];
        unsigned port;
        if (!v[0] && (d->opts & KS_FLAG_MAY_EMPTY))
            return KS_EXIT_OK;
        if (ks_http_listen_split(v, host, sizeof(host), &port) != KS_OK)
            return bad_value(d, (d->opts & KS_FLAG_MAY_EMPTY)
                                    ? "must be HOST:PORT, [IPV6]:PORT or empty"
                                    : "must be HOST:PORT or [IPV6]:PORT");
        return KS_EXIT_OK;
    }
    }
    return bad_value(d, "has an unknown kind");
}

int ks_node_parse(int argc, char **argv, int skip, struct ks_node **out)
{
    *out = NULL;
    struct ks_node *n = calloc(1, sizeof(*n));
    if (!n) {
        fprintf(stderr, "kassa: out of memory\n");
        return KS_EXIT_FAILURE;
    }
    pthread_mutex_init(&n->url_mu, NULL);
    table_build(n);
    argc -= skip;
    argv += skip;

    struct option longs[KS_NODE_FLAGS_MAX + 2];
    for (size_t i = 0; i < n->flags_n; i++)
        longs[i] = (struct option){n->flags[i].def->name,
                                   n->flags[i].def->kind == KS_FLAG_SWITCH ? optional_argument
                                                                           : required_argument,
                                   NULL, (int)i};
    longs[n->flags_n] = (struct option){"help", no_argument, NULL, 'h' + KS_NODE_FLAGS_MAX};
    longs[n->flags_n + 1] = (struct option){0};
    optind = 1;
    opterr = 0;
    for (;;) {
        int idx = 0;
        int ch = getopt_long(argc, argv, "+h", longs, &idx);
        if (ch == -1)
            break;
        if (ch == 'h' || ch == 'h' + KS_NODE_FLAGS_MAX) {
            ks_platform_usage(stdout);
            ks_node_free(n);
            exit(KS_EXIT_OK);
        }
        if (ch < 0 || (size_t)ch >= n->flags_n) {
            fprintf(stderr, "kassa: unknown flag or missing value: %s\n\n",
                    optind - 1 < argc ? argv[optind - 1] : "?");
            ks_platform_usage(stderr);
            ks_node_free(n);
            return KS_EXIT_USAGE;
        }
        n->flags[ch].value = optarg ? optarg : "1"; /* only a switch has an optional value */
    }
    if (optind < argc) {
        fprintf(stderr, "kassa: unexpected argument: %s\n\n", argv[optind]);
        ks_platform_usage(stderr);
        ks_node_free(n);
        return KS_EXIT_USAGE;
    }
    for (size_t i = 0; i < n->flags_n; i++) {
        struct ks_node_flag *f = &n->flags[i];
        if (!f->value)
            f->value = getenv(f->def->env);
        if (!f->value)
            f->value = f->def->dflt;
        int rc = flag_check(f);
        if (rc != KS_EXIT_OK) {
            ks_node_free(n);
            return rc;
        }
    }
    *out = n;
    return KS_EXIT_OK;
}

/* --- what modules read -------------------------------------------------------------------- */

struct ks_store *ks_node_store(const struct ks_node *n)
{
    return n->store;
}

struct ks_engine *ks_node_engine(const struct ks_node *n)
{
    return n->engine;
}

struct ks_log *ks_node_log(const struct ks_node *n)
{
    return (struct ks_log *)&n->log;
}

struct ks_auth *ks_node_auth(const struct ks_node *n)
{
    return n->auth;
}

const char *ks_node_flag(const struct ks_node *n, const char *name)
{
    const struct ks_node_flag *f = flag_find(n, name);
    assert(f != NULL && "a flag no module declares");
    return f ? f->value : "";
}

int64_t ks_node_flag_int(const struct ks_node *n, const char *name)
{
    const struct ks_node_flag *f = flag_find(n, name);
    assert(f != NULL && f->def->kind == KS_FLAG_INT);
    return f ? f->number : 0;
}

bool ks_node_flag_on(const struct ks_node *n, const char *name)
{
    const struct ks_node_flag *f = flag_find(n, name);
    assert(f != NULL && f->def->kind == KS_FLAG_SWITCH);
    return f && f->number != 0;
}

int ks_node_provide(struct ks_node *n, const char *name, void *service)
{
    assert(name != NULL && service != NULL);
    if (ks_node_service(n, name))
        return KS_ERR_CONFLICT;
    if (n->services_n >= KS_NODE_SERVICES_MAX)
        return KS_ERR_LIMIT;
    n->services[n->services_n++] = (struct ks_node_service){name, service};
    return KS_OK;
}

void *ks_node_service(const struct ks_node *n, const char *name)
{
    for (size_t i = 0; i < n->services_n; i++)
        if (strcmp(n->services[i].name, name) == 0)
            return n->services[i].service;
    return NULL;
}

size_t ks_node_services(const struct ks_node *n, const char *prefix, void **out, size_t cap)
{
    size_t found = 0, plen = strlen(prefix);
    for (size_t i = 0; i < n->services_n; i++) {
        if (strncmp(n->services[i].name, prefix, plen) != 0)
            continue;
        if (found < cap)
            out[found] = n->services[i].service;
        found++;
    }
    return found;
}

int ks_node_add_route_roles(struct ks_node *n, const struct ks_api_route_role *rows,
                            size_t rows_n)
{
    if (n->roles_n >= KS_NODE_ROLE_TABLES_MAX)
        return KS_ERR_LIMIT;
    n->roles[n->roles_n++] = (struct ks_node_role_table){rows, rows_n};
    return KS_OK;
}

const struct ks_api_route_role *ks_node_route_role(const struct ks_node *n, const char *method,
                                                   const char *pattern)
{
    for (size_t t = 0; t < n->roles_n; t++) {
        const struct ks_api_route_role *r =
            ks_api_route_role_in(n->roles[t].rows, n->roles[t].n, method, pattern);
        if (r)
            return r;
    }
    return NULL;
}

void ks_node_public_url(const struct ks_node *n, char *buf, size_t cap)
{
    struct ks_node *mut = (struct ks_node *)n; /* the lock only */
    pthread_mutex_lock(&mut->url_mu);
    snprintf(buf, cap, "%s", n->public_url);
    pthread_mutex_unlock(&mut->url_mu);
}

/* --- opening and closing ------------------------------------------------------------------ */

int ks_node_open_log(struct ks_node *n)
{
    const char *path = ks_node_flag(n, "log-file");
    enum ks_log_level level = (enum ks_log_level)ks_log_level_parse(ks_node_flag(n, "log-level"));
    if (!path[0] || strcmp(path, "-") == 0 || strcmp(path, "stderr") == 0) {
        ks_log_init(&n->log, stderr, level);
    } else if (ks_log_open(&n->log, path, level) != KS_OK) {
        fprintf(stderr, "kassa: cannot open log file %s: %s\n", path, strerror(errno));
        return KS_EXIT_FAILURE;
    }
    n->log_open = true;
    return KS_EXIT_OK;
}

int ks_node_open_store(struct ks_node *n)
{
    struct ks_store_options so = {
        .readers = KS_STORE_READERS_DEFAULT,
        .sqlite_synchronous_full = strcmp(ks_node_flag(n, "sqlite-synchronous"), "full") == 0};
    char why[256] = "";
    int rc = ks_store_open(ks_node_flag(n, "store"), &so, &n->store, why, sizeof(why));
    if (rc != KS_OK) {
        /* `why` is written without credentials (store.h). */
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "cannot open the store: %s (%s)", why,
                ks_err_name(rc));
        fprintf(stderr, "kassa: cannot open the store: %s\n", why);
        return KS_EXIT_FAILURE;
    }
    return KS_EXIT_OK;
}

void ks_node_free(struct ks_node *n)
{
    if (!n)
        return;
    ks_store_close(n->store);
    ks_auth_close(n->auth);
    if (n->log_open)
        ks_log_release(&n->log);
    pthread_mutex_destroy(&n->url_mu);
    free(n);
}

/* --- the command line --------------------------------------------------------------------- */

int ks_cli_open(int argc, char **argv, int skip, unsigned what, struct ks_node **out)
{
    struct ks_node *n = NULL;
    int rc = ks_node_parse(argc, argv, skip, &n);
    if (rc != KS_EXIT_OK)
        return rc;
    if ((what & KS_CLI_LOG) && (rc = ks_node_open_log(n)) != KS_EXIT_OK)
        goto out_fail;
    if ((what & KS_CLI_STORE) == KS_CLI_STORE && (rc = ks_node_open_store(n)) != KS_EXIT_OK)
        goto out_fail;
    *out = n;
    return KS_EXIT_OK;
out_fail:
    ks_node_free(n);
    return rc;
}

void ks_cli_close(struct ks_node *n)
{
    ks_node_free(n);
}

int ks_platform_main(int argc, char **argv)
{
    if (argc < 2) {
        ks_platform_usage(stderr);
        return KS_EXIT_USAGE;
    }
    const char *cmd = argv[1];
    /* A command's flags start after its name. */
    if (strcmp(cmd, "serve") == 0)
        return ks_platform_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "migrate") == 0)
        return ks_platform_migrate(argc - 1, argv + 1);
    for (const struct ks_module *const *m = ks_modules(); *m; m++)
        for (size_t i = 0; i < (*m)->commands_n; i++)
            if (strcmp(cmd, (*m)->commands[i].name) == 0)
                return (*m)->commands[i].run(argc - 1, argv + 1);
    if (strcmp(cmd, "token") == 0)
        return ks_auth_cli_token(argc - 1, argv + 1);
    if (strcmp(cmd, "version") == 0 || strcmp(cmd, "--version") == 0) {
        printf("kassa %s\n", KASSA_VERSION);
        return KS_EXIT_OK;
    }
    if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0) {
        if (argc > 2 && strcmp(argv[2], "--markdown") == 0)
            markdown_flags(stdout);
        else
            ks_platform_usage(stdout);
        return KS_EXIT_OK;
    }
    fprintf(stderr, "kassa: unknown command: %s\n\n", cmd);
    ks_platform_usage(stderr);
    return KS_EXIT_USAGE;
}
