/* test_docs_ui.c — the API documentation page's parts that need no server: the assets built into
 * kassa (scripts/embed-assets.sh: text, length, ETag), the routes src/api/docs_ui.c adds, and
 * static replies (ks_http_reply_static, http/response.c). The replies themselves (headers, 304,
 * 404) are checked over HTTP by tests/blackbox/test_docs_ui.py, and the page in chromium by
 * tests/browser/test_docs.mjs. */
#include <criterion/criterion.h>
#include <string.h>

#include "api/docs_ui.h"
#include "api/docs_ui_int.h"
#include "http/http.h"
#include "http/router.h"

static void check_asset(const char *text, size_t len, const char *etag, size_t len_min)
{
    cr_assert_eq(strlen(text), len, "the length is the text's");
    cr_assert_geq(len, len_min);
    cr_assert_eq(strlen(etag), 34);
    cr_assert(etag[0] == '"' && etag[33] == '"', "a quoted entity tag: %s", etag);
    for (size_t i = 1; i < 33; i++)
        cr_assert(strchr("0123456789abcdef", etag[i]) != NULL, "%s", etag);
}

Test(docs_ui, built_in_assets_have_length_and_etag)
{
    check_asset(ks_docs_ui_page_html, ks_docs_ui_page_html_len, ks_docs_ui_page_html_etag, 100);
    check_asset(ks_docs_ui_init_js, ks_docs_ui_init_js_len, ks_docs_ui_init_js_etag, 100);
    check_asset(ks_docs_ui_css, ks_docs_ui_css_len, ks_docs_ui_css_etag, 10000);
    check_asset(ks_docs_ui_bundle_js, ks_docs_ui_bundle_js_len, ks_docs_ui_bundle_js_etag, 500000);
    cr_assert_str_neq(ks_docs_ui_css_etag, ks_docs_ui_bundle_js_etag);
    /* the page loads what the routes serve, and no inline script */
    cr_assert_not_null(strstr(ks_docs_ui_page_html, "<script src=\"/docs/init.js\"></script>"));
    cr_assert_not_null(strstr(ks_docs_ui_page_html, "\"/docs/swagger-ui-bundle.js\""));
    cr_assert_null(strstr(ks_docs_ui_page_html, "<script>"));
    cr_assert_not_null(strstr(ks_docs_ui_init_js, "\"/v2/openapi.json\""));
}

Test(docs_ui, routes_serve_the_page_and_one_level_of_files)
{
    static struct ks_http_router r; /* large: not on the stack */
    ks_http_router_init(&r);
    cr_assert_eq(ks_api_docs_ui_routes(&r), KS_OK);
    struct ks_http_match m;
    char page[] = "/docs";
    cr_assert_eq(ks_http_router_match(&r, "GET", page, &m), KS_OK);
    cr_assert_str_eq(m.route->pattern, "/docs");
    cr_assert_eq(m.route->flags, 0u, "open: no token");
    char asset[] = "/docs/swagger-ui.css";
    cr_assert_eq(ks_http_router_match(&r, "GET", asset, &m), KS_OK);
    cr_assert_eq(m.params_n, 1);
    cr_assert_str_eq(m.params[0], "swagger-ui.css");
    char deeper[] = "/docs/a/b";
    cr_assert_eq(ks_http_router_match(&r, "GET", deeper, &m), KS_ERR_NOT_FOUND);
    char post[] = "/docs";
    cr_assert_eq(ks_http_router_match(&r, "POST", post, &m), KS_ERR_CONFLICT);
    /* twice on one router is a conflict, not a silent second route */
    cr_assert_eq(ks_api_docs_ui_routes(&r), KS_ERR_CONFLICT);
}

Test(docs_ui, static_replies_borrow_the_body_and_carry_their_headers)
{
    static const char body[] = "body { color: black }";
    const struct ks_http_static_headers h = {
        .csp = "default-src 'self'", .cache_control = "no-cache", .etag = "\"e1\""};
    struct ks_http_resp resp = {0};
    cr_assert_eq(ks_http_reply_static(&resp, 200, "text/css", body, sizeof(body) - 1, &h), KS_OK);
    cr_assert_eq(resp.status, 200);
    cr_assert_eq(resp.raw_static, body, "borrowed, not copied");
    cr_assert_null(resp.raw);
    cr_assert_null(resp.body);
    cr_assert_eq(resp.raw_len, sizeof(body) - 1);
    cr_assert_str_eq(resp.raw_type, "text/css");
    cr_assert_str_eq(resp.raw_csp, h.csp);
    cr_assert_str_eq(resp.raw_cache_control, h.cache_control);
    cr_assert_str_eq(resp.raw_etag, h.etag);

    /* a later reply replaces it entirely, headers included */
    ks_http_error(&resp, 404, "notFound", "no such file");
    cr_assert_null(resp.raw_static);
    cr_assert_null(resp.raw_csp);
    cr_assert_null(resp.raw_cache_control);
    cr_assert_null(resp.raw_etag);
    cr_assert_eq(resp.status, 404);
    json_decref(resp.body);
    resp.body = NULL;

    /* an empty body (304), and no headers given: the server's defaults */
    cr_assert_eq(ks_http_reply_static(&resp, 304, "text/css", NULL, 0, NULL), KS_OK);
    cr_assert_not_null(resp.raw_static);
    cr_assert_eq(resp.raw_len, 0);
    cr_assert_null(resp.raw_csp);

    /* a type that could inject a header is refused with a 500 JSON error */
    cr_assert_eq(ks_http_reply_static(&resp, 200, "text/css\r\nX-Evil: 1", body, 4, &h),
                 KS_ERR_INVALID);
    cr_assert_eq(resp.status, 500);
    cr_assert_null(resp.raw_static);
    cr_assert_not_null(resp.body);
    json_decref(resp.body);
}
