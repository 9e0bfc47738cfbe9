/*
 * docs_ui.c — GET /docs and GET /docs/{asset}: Swagger UI over kassa's OpenAPI document (see
 * docs_ui.h). The page (web/docs/index.html), its start-up script (web/docs/init.js) and Swagger
 * UI's stylesheet and bundle (node_modules/swagger-ui-dist, pinned in package-lock.json) are
 * built into the binary by scripts/embed-assets.sh, each with its length and an ETag.
 *
 * Replies borrow the built-in bytes (ks_http_reply_static): a 1.8 MB bundle is never copied per
 * request. The page and its script are revalidated on every load (no-cache), so a new kassa is
 * seen at once; Swagger UI's own files, which change only with the pinned package, may be kept
 * for a day. A matching If-None-Match gets 304 without a body either way.
 */
#include "api/docs_ui.h"

#include <assert.h>
#include <stddef.h>
#include <string.h>

#include "api/docs_ui_int.h"
#include "http/http.h"

/* Only kassa itself: scripts and styles from files it serves, the document and "Try it out"
 * requests to the same origin. Images may also be data: URIs, because Swagger UI's stylesheet
 * draws its icons with inline SVG; that lets no byte leave for another host. */
#define DOCS_CSP                                                                                   \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "              \
    "font-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "            \
    "base-uri 'none'"
#define REVALIDATE "no-cache"
#define ONE_DAY "public, max-age=86400"

#define TYPE_HTML "text/html; charset=utf-8"
#define TYPE_JS "text/javascript; charset=utf-8"
#define TYPE_CSS "text/css; charset=utf-8"

struct docs_asset {
    const char *name; /* the {asset} segment under /docs/ */
    const char *type;
    const char *cache_control;
    const char *text;
    const size_t *len;
    const char *etag;
};

static const struct docs_asset page = {
    "",
    TYPE_HTML,
    REVALIDATE,
    ks_docs_ui_page_html,
    &ks_docs_ui_page_html_len,
    ks_docs_ui_page_html_etag,
};

/* The files web/docs/index.html names, and nothing else. */
static const struct docs_asset assets[] = {
    {"init.js", TYPE_JS, REVALIDATE, ks_docs_ui_init_js, &ks_docs_ui_init_js_len,
     ks_docs_ui_init_js_etag},
    {"swagger-ui.css", TYPE_CSS, ONE_DAY, ks_docs_ui_css, &ks_docs_ui_css_len, ks_docs_ui_css_etag},
    {"swagger-ui-bundle.js", TYPE_JS, ONE_DAY, ks_docs_ui_bundle_js, &ks_docs_ui_bundle_js_len,
     ks_docs_ui_bundle_js_etag},
};

/* Whether an If-None-Match value (`*`, or a comma-separated list of entity tags, weak or not)
 * names `etag`. A weak comparison, as RFC 9110 asks for If-None-Match. */
static int etag_listed(const char *header, const char *etag)
{
    size_t etag_len = strlen(etag);
    const char *p = header;
    while (*p) { /* each turn moves past at least one byte: bounded by the header's length */
        while (*p == ' ' || *p == '\t' || *p == ',')
            p++;
        const char *start = p;
        while (*p && *p != ',')
            p++;
        const char *end = p;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
        if (end - start >= 2 && start[0] == 'W' && start[1] == '/')
            start += 2;
        size_t n = (size_t)(end - start);
        if ((n == 1 && *start == '*') || (n == etag_len && memcmp(start, etag, n) == 0))
            return 1;
    }
    return 0;
}

static int send_asset(const struct ks_http_req *req, struct ks_http_resp *resp,
                      const struct docs_asset *a)
{
    assert(a->text != NULL && a->etag[0] == '"');
    const struct ks_http_static_headers h = {
        .csp = DOCS_CSP, .cache_control = a->cache_control, .etag = a->etag};
    const char *inm = ks_http_req_header(req, "If-None-Match");
    if (inm && etag_listed(inm, a->etag))
        return ks_http_reply_static(resp, 304, a->type, NULL, 0, &h);
    return ks_http_reply_static(resp, 200, a->type, a->text, *a->len, &h);
}

static int docs_page(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    (void)ctx;
    return send_asset(req, resp, &page);
}

static int docs_asset_get(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    (void)ctx;
    assert(req->params_n == 1);
    for (size_t i = 0; i < sizeof(assets) / sizeof(assets[0]); i++)
        if (strcmp(req->params[0], assets[i].name) == 0)
            return send_asset(req, resp, &assets[i]);
    return ks_http_error(resp, 404, "notFound", "no such file in the documentation page");
}

int ks_api_docs_ui_routes(struct ks_http_router *r)
{
    assert(r != NULL);
    int rc = ks_http_router_add(r, "GET", "/docs", 0, docs_page, NULL);
    if (rc == KS_OK)
        rc = ks_http_router_add(r, "GET", "/docs/{asset}", 0, docs_asset_get, NULL);
    return rc;
}
