/* test_openapi.c — the OpenAPI document built into kassa (src/api/openapi.c): it is strict JSON,
 * it is an OpenAPI 3.0 document, and GET /v2/openapi.json serves it. Its agreement with the
 * handlers is checked by tests/blackbox/test_openapi.py against a running kassa. */
#include <criterion/criterion.h>
#include <string.h>

#include "api/api.h"
#include "http/router.h"

extern const char ks_api_openapi_json[];

Test(openapi, built_in_document_is_strict_json)
{
    json_error_t e;
    json_t *doc = json_loads(ks_api_openapi_json, JSON_REJECT_DUPLICATES, &e);
    cr_assert_not_null(doc, "docs/openapi.json line %d: %s", e.line, e.text);
    cr_assert(json_is_object(doc));
    cr_assert_str_eq(json_string_value(json_object_get(doc, "openapi")), "3.0.3");
    const json_t *paths = json_object_get(doc, "paths");
    cr_assert(json_is_object(paths));
    cr_assert_not_null(json_object_get(paths, "/v2/openapi.json"));
    cr_assert_not_null(json_object_get(paths, "/v2/processing/invoices"));
    cr_assert(json_is_object(json_object_get(json_object_get(doc, "components"), "schemas")));
    json_decref(doc);
}

Test(openapi, route_serves_the_document)
{
    static struct ks_http_router r; /* large: not on the stack */
    ks_http_router_init(&r);
    cr_assert_eq(ks_api_openapi_routes(&r), KS_OK);
    char path[] = "/v2/openapi.json";
    struct ks_http_match m;
    cr_assert_eq(ks_http_router_match(&r, "GET", path, &m), KS_OK);
    cr_assert_not_null(m.route);

    struct ks_http_req req = {.method = "GET", .path = "/v2/openapi.json", .trace = "t"};
    struct ks_http_resp resp = {0};
    cr_assert_eq(m.route->handler(m.route->ctx, &req, &resp), KS_OK);
    cr_assert_eq(resp.status, 200);
    cr_assert(json_is_object(resp.body));
    cr_assert_str_eq(json_string_value(json_object_get(resp.body, "openapi")), "3.0.3");
    json_decref(resp.body);

    char other[] = "/v2/openapi.yaml";
    cr_assert_eq(ks_http_router_match(&r, "GET", other, &m), KS_ERR_NOT_FOUND);
}
