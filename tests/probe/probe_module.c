/*
 * probe_module.c — the probe module, linked only into test and bench builds (the Makefile's
 * generated extra-modules list): the probe processor and its echo unit (probe.h), its routes
 * (/v0/probe/..., probe_api.c), the file relay when --probe-relay-file names a file, and
 * POST /admin/v1/ledger/ops, which runs a ledger task's arguments as the ledger unit would, so
 * black-box tests can drive the ledger directly. None of it exists in release builds: money
 * moves only through the plans that processors emit.
 */
#include <stdio.h>

#include "api/api.h"
#include "ledger/ledger.h"
#include "platform/platform.h"
#include "probe/probe.h"

#define PROBE_UNIT_WORKERS 4

static const struct ks_flag probe_flags[] = {
    {.name = "probe-relay-file", .env = "KASSA_PROBE_RELAY_FILE", .dflt = "",
     .help = "register the probe's file relay, appending every outbox row to this file"},
    {.name = "probe-relay-name", .env = "KASSA_PROBE_RELAY_NAME", .dflt = "",
     .help = "the file relay's name (empty: probe.file)"},
};

static int probe_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_engine *engine = ks_node_engine(node);
    *ctx = ks_node_service(node, "ledger"); /* NULL without the ledger module */
    int rc = ks_probe_register(engine, PROBE_UNIT_WORKERS);
    const char *file = ks_node_flag(node, "probe-relay-file");
    const char *name = ks_node_flag(node, "probe-relay-name");
    if (rc == KS_OK && file[0])
        rc = ks_probe_register_file_relay(engine, file, name[0] ? name : NULL);
    return rc;
}

/* POST /admin/v1/ledger/ops: runs ledger task arguments; 200 with the result, 422 when the
 * ledger refuses them, 503 when it could not store them. */
static int ledger_ops_post(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_ledger *ledger = vctx;
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK)
        return rc;
    json_t *result = NULL;
    char error[128] = "";
    enum ks_task_outcome oc = ks_ledger_task_run(ledger, req->json, &result, error, sizeof(error));
    if (oc == KS_TASK_OK)
        return ks_http_reply(
            resp, 200,
            json_pack("{s:s, s:o}", "outcome", "ok", "result", result ? result : json_object()));
    json_decref(result);
    if (oc == KS_TASK_RETRY)
        return ks_http_error(resp, 503, error, "the ledger could not store the ops; retry");
    return ks_http_error(resp, 422, error, "the ledger refused the ops");
}

static int probe_module_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                               struct ks_http_router *admin, char *why, size_t whylen)
{
    int rc = ks_probe_routes(pub, ks_node_engine(node));
    if (rc == KS_OK && admin && ctx)
        rc = ks_http_router_add(admin, "POST", "/admin/v1/ledger/ops",
                                KS_HTTP_ROUTE_JSON_BODY | KS_HTTP_ROUTE_AUTH, ledger_ops_post,
                                ctx);
    return rc;
}

const struct ks_module ks_probe_module = {
    .name = "probe",
    .summary = "test and bench builds: the probe processor, its routes and file relay",
    .flags = probe_flags,
    .flags_n = sizeof(probe_flags) / sizeof(probe_flags[0]),
    .test_only = true,
    .open = probe_open,
    .routes = probe_module_routes,
};
