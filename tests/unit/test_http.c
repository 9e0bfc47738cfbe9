/* test_http.c — the HTTP router's secret parameters: their flags are checked when a route is
 * added, and ks_http_router_redact hides them from log lines, whatever the method and even in a
 * mistyped path. */
#include <criterion/criterion.h>
#include <string.h>

#include "http/router.h"

static int nop(void *ctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    (void)ctx;
    (void)req;
    (void)resp;
    return KS_OK;
}

static struct ks_http_router rt;

static void routes(void)
{
    ks_http_router_init(&rt);
    cr_assert_eq(ks_http_router_add(&rt, "GET", "/v2/sandbox/3ds/{tag}",
                                    KS_HTTP_ROUTE_SECRET_PARAM(0), nop, NULL),
                 KS_OK);
    cr_assert_eq(ks_http_router_add(&rt, "POST", "/v2/sandbox/3ds/{tag}/complete",
                                    KS_HTTP_ROUTE_SECRET_PARAM(0) | KS_HTTP_ROUTE_FORM_BODY, nop,
                                    NULL),
                 KS_OK);
    cr_assert_eq(
        ks_http_router_add(&rt, "GET", "/a/{x}/b/{key}", KS_HTTP_ROUTE_SECRET_PARAM(1), nop, NULL),
        KS_OK);
    cr_assert_eq(ks_http_router_add(&rt, "GET", "/v2/processing/invoices/{invoiceID}",
                                    KS_HTTP_ROUTE_AUTH, nop, NULL),
                 KS_OK);
}

static const char *redact(const char *path)
{
    static char out[256];
    cr_assert_eq(ks_http_router_redact(&rt, path, out, sizeof(out)), KS_OK, "%s", path);
    return out;
}

Test(http, secret_param_flags_must_name_a_parameter)
{
    ks_http_router_init(&rt);
    cr_assert_eq(ks_http_router_add(&rt, "GET", "/x/{a}", KS_HTTP_ROUTE_SECRET_PARAM(1), nop, NULL),
                 KS_ERR_INVALID);
    cr_assert_eq(ks_http_router_add(&rt, "GET", "/x/y", KS_HTTP_ROUTE_SECRET_PARAM(0), nop, NULL),
                 KS_ERR_INVALID);
    cr_assert_eq(
        ks_http_router_add(&rt, "GET", "/x/{a}/{b}", KS_HTTP_ROUTE_SECRET_PARAM(1), nop, NULL),
        KS_OK);
}

Test(http, secret_params_are_redacted_for_any_method_and_shape)
{
    routes();
    cr_assert_str_eq(redact("/v2/sandbox/3ds/inv~ab~Nonce123"), "/v2/sandbox/3ds/[redacted]");
    cr_assert_str_eq(redact("/v2/sandbox/3ds/inv~ab~Nonce123/complete"),
                     "/v2/sandbox/3ds/[redacted]/complete");
    /* mistyped: longer than any pattern, or an empty segment after the tag */
    cr_assert_str_eq(redact("/v2/sandbox/3ds/inv~ab~N/complete/x/y"),
                     "/v2/sandbox/3ds/[redacted]/complete/x/y");
    cr_assert_str_eq(redact("/v2/sandbox/3ds/inv~ab~N//x"), "/v2/sandbox/3ds/[redacted]//x");
    /* only the secret parameter, not its neighbours */
    cr_assert_str_eq(redact("/a/one/b/two"), "/a/one/b/[redacted]");
    /* other routes and unknown paths are left alone */
    cr_assert_str_eq(redact("/v2/processing/invoices/inv1"), "/v2/processing/invoices/inv1");
    cr_assert_str_eq(redact("/v2/sandbox/other/abc"), "/v2/sandbox/other/abc");
    cr_assert_str_eq(redact("/"), "/");
    cr_assert_str_eq(redact(""), "");
    cr_assert_str_eq(redact("no-slash"), "no-slash");
}

Test(http, redaction_that_does_not_fit_is_refused)
{
    routes();
    char out[20];
    cr_assert_eq(ks_http_router_redact(&rt, "/v2/sandbox/3ds/tag", out, sizeof(out)), KS_ERR_LIMIT);
    cr_assert_str_eq(out, "");
    /* the documented size always fits */
    const char *p = "/v2/sandbox/3ds/t/complete";
    char big[256];
    size_t cap = strlen(p) + 1 + KS_HTTP_PATH_SEGMENTS_MAX * strlen(KS_HTTP_LOG_REDACTED);
    cr_assert(cap <= sizeof(big));
    cr_assert_eq(ks_http_router_redact(&rt, p, big, cap), KS_OK);
    cr_assert_str_eq(big, "/v2/sandbox/3ds/[redacted]/complete");
}
