/*
 * modules/config.c — the configuration module: the revisioned domain configuration's processor
 * (config/config.h), the initial configuration installed into an empty store, its admin routes
 * (/admin/v1/config) and `kassa config`. Design: docs/configuration-domain.md.
 *
 * Service it provides: "config.initial" (the json_t * of the initial document, borrowed until
 * close), so that a module can decide from the configuration it starts with (the sandbox).
 */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "config/config.h"
#include "platform/platform.h"

struct config_module {
    json_t *initial; /* the document --initial-config names */
    const char *initial_name;
};

static const struct ks_flag config_flags[] = {
    {.name = "initial-config", .env = "KASSA_INITIAL_CONFIG", .dflt = "sandbox",
     .opts = KS_FLAG_NONEMPTY,
     .help = "domain configuration installed into an empty store: sandbox (the embedded one) or "
             "a JSON file; the sandbox acquirer runs only when the configuration uses it",
     .doc = "the domain configuration installed as revision 1 when the store has none: "
            "`sandbox` (the one embedded from `config/sandbox.json`) or the path of a JSON "
            "document ([configuration-domain.md](configuration-domain.md)). A store that already "
            "has a configuration ignores it. A file that is missing, not JSON or invalid stops "
            "the start (exit 1)"},
};

/* Reads the document now, so that a missing or malformed file stops the start before anything
 * serves; it is validated when installed (only into an empty store). */
static int config_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct config_module *c = calloc(1, sizeof(*c));
    if (!c)
        return KS_ERR_NOMEM;
    *ctx = c;
    const char *v = ks_node_flag(node, "initial-config");
    int sandbox = strcmp(v, "sandbox") == 0;
    c->initial_name = sandbox ? "the sandbox configuration" : v;
    char load_why[512] = "";
    int rc = sandbox ? ks_config_sandbox_doc(&c->initial)
                     : ks_config_load_file(v, &c->initial, load_why, sizeof(load_why));
    if (rc != KS_OK) {
        snprintf(why, whylen, "--initial-config: %s", load_why[0] ? load_why : ks_err_text(rc));
        return rc;
    }
    if ((rc = ks_config_register(ks_node_engine(node))) != KS_OK)
        return rc;
    return ks_node_provide(node, "config.initial", c->initial);
}

/* Installs the initial configuration into an empty store. */
static int config_start(void *ctx, struct ks_node *node, char *why, size_t whylen)
{
    struct config_module *c = ctx;
    char config_why[512] = "";
    int rc = ks_config_bootstrap_with(ks_node_engine(node), ks_node_log(node), c->initial,
                                      c->initial_name, NULL, config_why, sizeof(config_why));
    if (rc == KS_ERR_REJECTED)
        snprintf(why, whylen, "the initial configuration %s is invalid: %s", c->initial_name,
                 config_why);
    return rc;
}

static int config_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                         struct ks_http_router *admin, char *why, size_t whylen)
{
    return admin ? ks_api_config_routes(admin, ks_node_engine(node)) : KS_OK;
}

static void config_close(void *ctx)
{
    struct config_module *c = ctx;
    if (!c)
        return;
    json_decref(c->initial);
    free(c);
}

static int config_command(int argc, char **argv)
{
    return ks_config_cli(argc, argv, ks_platform_flag_default("store"));
}

static const struct ks_command config_commands[] = {
    {"config",
     "  config    get | put | validate | history: the domain configuration\n",
     config_command},
};

const struct ks_module ks_config_module = {
    .name = "config",
    .summary = "the revisioned domain configuration",
    .flags = config_flags,
    .flags_n = sizeof(config_flags) / sizeof(config_flags[0]),
    .commands = config_commands,
    .commands_n = 1,
    .open = config_open,
    .start = config_start,
    .routes = config_routes,
    .close = config_close,
};
