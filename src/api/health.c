/* health.c — liveness and readiness endpoints, on every listener (see api.h). */
#include "api/api.h"

#include <assert.h>

static int health_live(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    (void)vctx;
    (void)req;
    return ks_http_reply(resp, 200, json_pack("{s:s}", "status", "live"));
}

static int health_ready(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_api_ctx *ctx = vctx;
    assert(ctx != NULL && ctx->store != NULL);
    int rc = ks_store_ping(ctx->store);
    if (rc != KS_OK) {
        ks_logf(req->log, KS_LOG_WARN, req->trace, "readiness: store ping failed (%s)",
                ks_err_name(rc));
        return ks_http_reply(
            resp, 503,
            json_pack("{s:s, s:s}", "code", "notReady", "message", "the store does not answer"));
    }
    return ks_http_reply(
        resp, 200, json_pack("{s:s, s:s}", "status", "ready", "store", ks_store_kind(ctx->store)));
}

int ks_api_health_routes(struct ks_http_router *r, struct ks_api_ctx *ctx)
{
    assert(r != NULL && ctx != NULL);
    int rc = ks_http_router_add(r, "GET", "/health/live", 0, health_live, ctx);
    if (rc == KS_OK)
        rc = ks_http_router_add(r, "GET", "/health/ready", 0, health_ready, ctx);
    return rc;
}
