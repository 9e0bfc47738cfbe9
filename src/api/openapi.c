/*
 * openapi.c — GET /v2/openapi.json: kassa's OpenAPI 3 document of its public listener (see
 * api.h). The document is docs/openapi.json, built into the binary by scripts/embed-text.sh
 * (Makefile); tests/blackbox/openapi_check.py checks real replies against the same file.
 *
 * The text is parsed once when the route is added, so a document that is not JSON stops kassa
 * at start instead of failing requests. Each request parses it again into a value of its own,
 * which the server serialises and frees: nothing is shared between requests, and the cost
 * (well under a millisecond for this size) only matters to tools that read the document once.
 */
#include "api/api.h"

#include <assert.h>

/* Generated from docs/openapi.json at build time. */
extern const char ks_api_openapi_json[];

static int openapi_get(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    (void)ctx;
    (void)req;
    json_t *doc = json_loads(ks_api_openapi_json, 0, NULL);
    if (!doc) /* it parsed at start: only memory can be missing now */
        return ks_http_error(resp, 503, "outOfMemory", "out of memory");
    return ks_http_reply(resp, 200, doc);
}

int ks_api_openapi_routes(struct ks_http_router *r)
{
    assert(r != NULL);
    json_error_t e;
    json_t *doc = json_loads(ks_api_openapi_json, JSON_REJECT_DUPLICATES, &e);
    int valid = json_is_object(doc);
    json_decref(doc);
    if (!valid)
        return KS_ERR_INVALID;
    return ks_http_router_add(r, "GET", "/v2/openapi.json", 0, openapi_get, NULL);
}
