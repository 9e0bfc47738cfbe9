/*
 * modules/sandbox.c — the sandbox acquirer module (units/adapters/sandbox.h): an adapter that
 * answers like an acquiring bank for test cards, its 3-D Secure page for payers
 * (/v2/sandbox/3ds/...) and its record for operators (/admin/v1/sandbox/operations). Design:
 * docs/sandbox.md.
 *
 * It is on only when the configuration this node starts with — the store's current one, or the
 * initial one for an empty store — has a provider using the sandbox adapter; otherwise it opens
 * nothing and adds no route. Service it provides when on: "adapter.acquiring.sandbox" (a const
 * struct ks_adapter *), which the payments module's acquiring unit runs.
 */
#include <stdlib.h>

#include "api/api.h"
#include "config/config.h"
#include "platform/platform.h"
#include "units/adapters/sandbox.h"

/* Whether the configuration this node starts with uses the sandbox adapter. */
static bool sandbox_wanted(struct ks_node *node)
{
    json_t *doc = NULL;
    int64_t revision = 0;
    bool on;
    if (ks_config_current(ks_node_engine(node), &doc, &revision) == KS_OK) {
        on = ks_config_uses_adapter(doc, KS_SANDBOX_ADAPTER_NAME);
        json_decref(doc);
    } else {
        const json_t *initial = ks_node_service(node, "config.initial");
        on = initial && ks_config_uses_adapter(initial, KS_SANDBOX_ADAPTER_NAME);
    }
    ks_log_json(ks_node_log(node), KS_LOG_INFO, NULL,
                on ? "sandbox acquirer on" : "sandbox acquirer off",
                json_pack("{s:b}", "configurationUsesSandbox", on));
    return on;
}

static int sandbox_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    if (!sandbox_wanted(node))
        return KS_OK;
    struct ks_api_sandbox *s = calloc(1, sizeof(*s));
    if (!s)
        return KS_ERR_NOMEM;
    *ctx = s;
    s->engine = ks_node_engine(node);
    int rc = ks_sandbox_open(ks_node_store(node), ks_node_log(node), &s->sandbox);
    if (rc != KS_OK) {
        snprintf(why, whylen, "cannot open the sandbox acquirer");
        return rc;
    }
    /* The service table holds mutable pointers; the acquiring unit only reads the adapter. */
    return ks_node_provide(node, "adapter.acquiring." KS_SANDBOX_ADAPTER_NAME,
                           (void *)ks_sandbox_adapter(s->sandbox));
}

static int sandbox_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                          struct ks_http_router *admin, char *why, size_t whylen)
{
    struct ks_api_sandbox *s = ctx;
    if (!s) /* off */
        return KS_OK;
    int rc = ks_api_sandbox_routes(pub, s);
    if (rc == KS_OK && admin)
        rc = ks_api_sandbox_admin_routes(admin, s);
    return rc;
}

static void sandbox_module_close(void *ctx)
{
    struct ks_api_sandbox *s = ctx;
    if (!s)
        return;
    ks_sandbox_close(s->sandbox);
    free(s);
}

const struct ks_module ks_sandbox_module = {
    .name = "sandbox",
    .schema = &ks_sandbox_schema,
    .summary = "the sandbox acquirer: test cards, 3-D Secure page, operations record",
    .open = sandbox_module_open,
    .routes = sandbox_routes,
    .close = sandbox_module_close,
};
