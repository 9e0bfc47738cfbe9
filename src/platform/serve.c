/*
 * serve.c — `kassa serve` and `kassa migrate` over the modules (platform/module.h).
 *
 * serve: flags → log → token verifier → store → every module's schema → engine → each module's
 * `open`, in list order → engine runs → each `start` → the routes (the core's, then each
 * module's) → the listeners → each `serving` → the banner, then wait for SIGINT or SIGTERM.
 * Shutdown runs in reverse: listeners (waiting for requests in progress), engine (its workers
 * use the modules), each module's `close` in reverse order, store. So every request that got a
 * reply is durable and nothing leaks. Design note: docs/modules.md.
 */
#include "platform/platform_int.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "api/roles.h"
#include "auth/auth.h"
#include "auth/auth_http.h"
#include "engine/engine.h"
#include "http/server.h"
#include "store/sql.h"
#include "store/store.h"

/* No core dumps from a process that holds card data, keys and tokens in memory: the dumpable
 * flag off (also keeps other users' ptrace and /proc/PID/mem out) and a zero core size limit. */
int ks_platform_core_dumps_off(void)
{
    struct rlimit none = {0, 0};
    if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0 || setrlimit(RLIMIT_CORE, &none) != 0) {
        fprintf(stderr, "kassa: cannot turn core dumps off: %s\n", strerror(errno));
        return KS_EXIT_FAILURE;
    }
    return KS_EXIT_OK;
}

/* Opens the token verifier: the merchant key sources (a wrong key-sources file is a usage error,
 * exit 2; one that cannot be read, exit 1) and kassa's signing key (auth/auth.h). */
static int auth_open(struct ks_node *n)
{
    char why[512] = "";
    struct ks_auth_sources *sources = NULL;
    const char *sources_path = ks_node_flag(n, "merchant-keys");
    if (sources_path[0]) {
        int rc = ks_auth_sources_load(sources_path, &n->log, &sources, why, sizeof(why));
        if (rc != KS_OK) {
            /* `why` names files and sources, never key material (auth.h). */
            ks_logf(&n->log, KS_LOG_ERROR, NULL, "merchant key sources: %s (%s)", why,
                    ks_err_name(rc));
            fprintf(stderr, "kassa: --merchant-keys (KASSA_MERCHANT_KEYS): %s\n", why);
            return rc == KS_ERR_INVALID || rc == KS_ERR_LIMIT ? KS_EXIT_USAGE : KS_EXIT_FAILURE;
        }
    }
    struct ks_auth_options ao = {.merchant_sources = sources,
                                 .audience = ks_node_flag(n, "jwt-audience"),
                                 .signing_key_path = ks_node_flag(n, "signing-key-file"),
                                 .trust_own_key_for_merchants =
                                     ks_node_flag_on(n, "dev-trust-own-key"),
                                 .log = &n->log};
    int rc = ks_auth_open(&ao, &n->auth, why, sizeof(why));
    if (rc != KS_OK) {
        /* `why` names paths, never key material (auth.h). */
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "cannot open the token keys: %s (%s)", why,
                ks_err_name(rc));
        fprintf(stderr, "kassa: cannot open the token keys: %s\n", why);
        return KS_EXIT_FAILURE;
    }
    return KS_EXIT_OK;
}

/* The public listener's authorizer (http/server.h): verifies the bearer token when the request
 * head arrives (ks_auth_http_authorize, filling a struct ks_principal) and, for a merchant
 * token, checks the role the matched route needs (the route-role tables the modules added), so
 * a token without it is refused with 401 before any body byte is read. Handlers check again.
 * `ctx` is the node. Thread-safe: the tables are read-only once serving. */
static int public_authorize(void *ctx, const struct ks_http_req *req, void *principal,
                            const char **name, char *why, size_t whylen)
{
    struct ks_node *n = ctx;
    assert(n != NULL && req != NULL && principal != NULL && name != NULL);
    int rc = ks_auth_http_authorize(n->auth, req, principal, name, why, whylen);
    if (rc != KS_OK)
        return rc;
    const struct ks_api_route_role *role =
        req->route ? ks_node_route_role(n, req->method, req->route) : NULL;
    if (role && role->merchant_role &&
        (rc = ks_api_merchant_role_why(principal, role->merchant_role, why, whylen)) != KS_OK)
        *name = NULL;
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

static int listener_start(struct ks_node *n, const struct listener *l,
                          struct ks_http_server **out)
{
    int64_t conns = ks_node_flag_int(n, "http-connections-max");
    int64_t per_ip = ks_node_flag_int(n, "http-connections-per-ip-max");
    struct ks_http_server_options o = {
        .name = l->name,
        .listen = l->listen,
        .router = l->router,
        .log = &n->log,
        .threads = (int)ks_node_flag_int(n, "http-threads"),
        .body_bytes_max = (size_t)l->body_bytes_max,
        .json_values_max = l->json_values_max,
        .connections_max = (unsigned)conns,
        .per_ip_connections_max = (unsigned)(per_ip < conns ? per_ip : conns),
        .timeout_s = (unsigned)ks_node_flag_int(n, "http-timeout-s"),
        .head_deadline_s = (unsigned)ks_node_flag_int(n, "http-head-deadline-s"),
        .authorize = l->authorize,
        .authorize_ctx = l->authorize_ctx,
        .principal_bytes = l->principal_bytes,
    };
    char why[256] = "";
    if (ks_http_server_start(&o, out, why, sizeof(why)) != KS_OK) {
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "%s listener: %s", l->name, why);
        fprintf(stderr, "kassa: %s listener: %s\n", l->name, why);
        return KS_EXIT_FAILURE;
    }
    ks_log_json(&n->log, KS_LOG_INFO, NULL, "listening",
                json_pack("{s:s, s:s}", "listener", l->name, "url", ks_http_server_url(*out)));
    return KS_EXIT_OK;
}

/* A module hook failed: log and print why, in the same words. */
static int hook_failed(struct ks_node *n, const struct ks_module *m, const char *hook, int rc,
                       const char *why)
{
    const char *text = why[0] ? why : ks_err_text(rc);
    ks_logf(&n->log, KS_LOG_ERROR, NULL, "module %s: %s: %s (%s)", m->name, hook, text,
            ks_err_name(rc));
    fprintf(stderr, "kassa: %s: %s\n", m->name, text);
    return KS_EXIT_FAILURE;
}

/* One `serve` run: the node, the opened modules' contexts, the routers and the servers. */
struct serve_run {
    struct ks_node *node;
    const struct ks_module *modules[KS_MODULES_MAX];
    void *ctx[KS_MODULES_MAX];
    size_t opened; /* modules[0..opened) were opened and need closing */
    size_t modules_n;
    struct ks_api_ctx core_api;
    struct ks_http_router public_router;
    struct ks_http_router admin_router;
    struct ks_http_server *public_srv;
    struct ks_http_server *admin_srv;
};

/* Loads (or creates) the admin token, when the admin listener is on. */
static int admin_token_load(struct serve_run *r)
{
    struct ks_node *n = r->node;
    const char *token_file = ks_node_flag(n, "admin-token-file");
    char why[256] = "";
    int created = 0;
    if (ks_api_admin_token_load(token_file, r->core_api.admin_token,
                                sizeof(r->core_api.admin_token), &created, why,
                                sizeof(why)) != KS_OK) {
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "admin token: %s", why);
        fprintf(stderr, "kassa: admin token: %s\n", why);
        return KS_EXIT_FAILURE;
    }
    ks_log_json(&n->log, KS_LOG_INFO, NULL, created ? "admin token created" : "admin token read",
                json_pack("{s:s}", "path", token_file));
    return KS_EXIT_OK;
}

/* The core's routes (health on both listeners, the admin API), then each module's. */
static int routes_build(struct serve_run *r, bool admin)
{
    struct ks_node *n = r->node;
    struct ks_http_router *adm = admin ? &r->admin_router : NULL;
    ks_http_router_init(&r->public_router);
    ks_http_router_init(&r->admin_router);
    int rc = ks_api_health_routes(&r->public_router, &r->core_api);
    if (rc == KS_OK && adm)
        rc = ks_api_health_routes(adm, &r->core_api);
    if (rc == KS_OK && adm)
        rc = ks_api_admin_routes(adm, &r->core_api);
    if (rc != KS_OK) {
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "cannot build the routes: %s", ks_err_name(rc));
        fprintf(stderr, "kassa: cannot build the routes: %s\n", ks_err_text(rc));
        return KS_EXIT_FAILURE;
    }
    for (size_t i = 0; i < r->modules_n; i++) {
        const struct ks_module *m = r->modules[i];
        char why[512] = "";
        if (m->routes && (rc = m->routes(r->ctx[i], n, &r->public_router, adm, why,
                                         sizeof(why))) != KS_OK)
            return hook_failed(n, m, "routes", rc, why);
    }
    return KS_EXIT_OK;
}

static void banner(struct serve_run *r, bool admin)
{
    struct ks_node *n = r->node;
    printf("kassa %s serving (store: %s)\n", KASSA_VERSION, ks_store_kind(n->store));
    printf("  public API  %s   (try: curl %s/health/ready)\n", ks_http_server_url(r->public_srv),
           ks_http_server_url(r->public_srv));
    if (admin)
        printf("  admin API   %s   (bearer token in %s)\n", ks_http_server_url(r->admin_srv),
               ks_node_flag(n, "admin-token-file"));
    else
        printf("  admin API   disabled\n");
    printf("stop with Ctrl-C or SIGTERM\n");
    fflush(stdout);
    ks_log_json(&n->log, KS_LOG_INFO, NULL, "kassa serving",
                json_pack("{s:s, s:s}", "version", KASSA_VERSION, "store",
                          ks_store_kind(n->store)));
}

/* Applies every module's schema (store/sql.h) to the node's open store, in list order. */
static int schemas_apply(struct ks_node *n)
{
    for (const struct ks_module *const *m = ks_modules(); *m; m++) {
        if (!(*m)->schema)
            continue;
        char why[512] = "";
        int rc = ks_sql_migrate(n->store, (*m)->schema, why, sizeof(why));
        if (rc != KS_OK)
            return hook_failed(n, *m, "migrations", rc, why);
    }
    return KS_EXIT_OK;
}

/* Everything up to the listeners; on failure the caller unwinds what `r` records. */
static int serve_open(struct serve_run *r)
{
    struct ks_node *n = r->node;
    int rc;
    if ((rc = auth_open(n)) != KS_EXIT_OK || (rc = ks_node_open_store(n)) != KS_EXIT_OK ||
        (rc = schemas_apply(n)) != KS_EXIT_OK)
        return rc;
    struct ks_engine_options eo = {
        .store = n->store,
        .log = &n->log,
        .commit_batch_max = (int)ks_node_flag_int(n, "commit-batch-max"),
        .task_lease_ms = ks_node_flag_int(n, "task-lease-ms")};
    int erc = ks_engine_create(&eo, &n->engine);
    if (erc != KS_OK) {
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "cannot create the engine: %s", ks_err_name(erc));
        fprintf(stderr, "kassa: cannot create the engine: %s\n", ks_err_text(erc));
        return KS_EXIT_FAILURE;
    }
    r->core_api.engine = n->engine;
    r->core_api.store = n->store;
    for (size_t i = 0; i < r->modules_n; i++) {
        const struct ks_module *m = r->modules[i];
        char why[512] = "";
        r->opened = i + 1; /* closed even when its open fails half-way */
        if (m->open && (erc = m->open(n, &r->ctx[i], why, sizeof(why))) != KS_OK)
            return hook_failed(n, m, "open", erc, why);
    }
    if ((erc = ks_engine_run(n->engine, 1)) != KS_OK) {
        ks_logf(&n->log, KS_LOG_ERROR, NULL, "cannot start the engine: %s", ks_err_name(erc));
        fprintf(stderr, "kassa: cannot start the engine: %s\n", ks_err_text(erc));
        return KS_EXIT_FAILURE;
    }
    for (size_t i = 0; i < r->modules_n; i++) {
        const struct ks_module *m = r->modules[i];
        char why[512] = "";
        if (m->start && (erc = m->start(r->ctx[i], n, why, sizeof(why))) != KS_OK)
            return hook_failed(n, m, "start", erc, why);
    }
    return KS_EXIT_OK;
}

static void serve_close(struct serve_run *r)
{
    struct ks_node *n = r->node;
    ks_http_server_stop(r->admin_srv);
    ks_http_server_stop(r->public_srv);
    for (size_t i = r->opened; i > 0; i--)
        if (r->modules[i - 1]->stopping)
            r->modules[i - 1]->stopping(r->ctx[i - 1]);
    if (n->engine) /* before the modules: its workers use them */
        ks_engine_free(n->engine);
    n->engine = NULL;
    for (size_t i = r->opened; i > 0; i--)
        if (r->modules[i - 1]->close)
            r->modules[i - 1]->close(r->ctx[i - 1]);
    explicit_bzero(r->core_api.admin_token, sizeof(r->core_api.admin_token));
}

int ks_platform_serve(int argc, char **argv)
{
    struct ks_node *n = NULL;
    int rc = ks_node_parse(argc, argv, 0, &n);
    if (rc != KS_EXIT_OK)
        return rc;

    /* Signals: SIGINT/SIGTERM are blocked in every thread (they inherit this mask) and taken
     * synchronously by sigwait below; SIGPIPE from a vanished client is ignored. */
    sigset_t stop_set;
    sigemptyset(&stop_set);
    sigaddset(&stop_set, SIGINT);
    sigaddset(&stop_set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &stop_set, NULL);
    signal(SIGPIPE, SIG_IGN);
    struct serve_run *r = calloc(1, sizeof(*r));
    if (!r || (rc = ks_platform_core_dumps_off()) != KS_EXIT_OK ||
        (rc = ks_node_open_log(n)) != KS_EXIT_OK) {
        rc = rc ? rc : KS_EXIT_FAILURE;
        free(r);
        ks_node_free(n);
        return rc;
    }
    r->node = n;
    for (const struct ks_module *const *m = ks_modules(); *m; m++) {
        assert(r->modules_n < KS_MODULES_MAX);
        r->modules[r->modules_n++] = *m;
    }
    bool admin = ks_node_flag(n, "admin-listen")[0] != '\0';

    if ((rc = serve_open(r)) != KS_EXIT_OK)
        goto out;
    if (admin && (rc = admin_token_load(r)) != KS_EXIT_OK)
        goto out;
    if ((rc = routes_build(r, admin)) != KS_EXIT_OK)
        goto out;
    /* The public API's bearer tokens are verified when a request head arrives, before its body
     * is read; handlers get the verified struct ks_principal as req->auth. */
    const struct listener public_l = {
        .name = "public",
        .listen = ks_node_flag(n, "listen"),
        .router = &r->public_router,
        .body_bytes_max = ks_node_flag_int(n, "http-body-max-bytes"),
        .json_values_max = KS_HTTP_JSON_VALUES_MAX,
        .authorize = public_authorize,
        .authorize_ctx = n,
        .principal_bytes = sizeof(struct ks_principal)};
    const struct listener admin_l = {.name = "admin",
                                     .listen = ks_node_flag(n, "admin-listen"),
                                     .router = &r->admin_router,
                                     .body_bytes_max = ks_node_flag_int(n, "admin-body-max-bytes"),
                                     .json_values_max = KS_HTTP_ADMIN_JSON_VALUES_MAX,
                                     .authorize = ks_api_admin_authorize,
                                     .authorize_ctx = &r->core_api};
    if ((rc = listener_start(n, &public_l, &r->public_srv)) != KS_EXIT_OK)
        goto out;
    if (admin && (rc = listener_start(n, &admin_l, &r->admin_srv)) != KS_EXIT_OK)
        goto out;

    const char *public_url = ks_node_flag(n, "public-url");
    pthread_mutex_lock(&n->url_mu);
    snprintf(n->public_url, sizeof(n->public_url), "%s",
             public_url[0] ? public_url : ks_http_server_url(r->public_srv));
    pthread_mutex_unlock(&n->url_mu);
    for (size_t i = 0; i < r->modules_n; i++)
        if (r->modules[i]->serving)
            r->modules[i]->serving(r->ctx[i], n);
    banner(r, admin);

    int sig = 0;
    while (sigwait(&stop_set, &sig) != 0)
        ;
    ks_log_json(&n->log, KS_LOG_INFO, NULL, "shutting down",
                json_pack("{s:s}", "signal", sig == SIGINT ? "SIGINT" : "SIGTERM"));
    rc = KS_EXIT_OK;
out:
    serve_close(r);
    if (rc == KS_EXIT_OK)
        ks_log_json(&n->log, KS_LOG_INFO, NULL, "stopped", NULL);
    free(r);
    ks_node_free(n);
    return rc;
}

int ks_platform_migrate(int argc, char **argv)
{
    struct ks_node *n = NULL;
    int rc = ks_cli_open(argc, argv, 0, KS_CLI_STORE, &n);
    if (rc != KS_EXIT_OK)
        return rc;
    int version = 0;
    if ((rc = schemas_apply(n)) != KS_EXIT_OK)
        goto out;
    if (ks_store_schema_version(n->store, &version) != KS_OK) {
        fprintf(stderr, "kassa: cannot read the schema version\n");
        rc = KS_EXIT_FAILURE;
        goto out;
    }
    printf("%s store migrated: schema version %d\n", ks_store_kind(n->store), version);
    for (const struct ks_module *const *m = ks_modules(); *m; m++) {
        int mv = 0;
        if ((*m)->schema && ks_sql_schema_version(n->store, (*m)->schema->module, &mv) == KS_OK)
            printf("  module %s: schema version %d\n", (*m)->name, mv);
    }
out:
    ks_cli_close(n);
    return rc;
}
