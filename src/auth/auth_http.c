/*
 * auth_http.c — reads the bearer token of an HTTP request (auth_http.h).
 */
#include <assert.h>
#include <stdio.h>

#include "core/clock.h"

#include "auth/auth_http.h"

int ks_auth_from_request(struct ks_auth *a, const struct ks_http_req *req, int64_t now_ms,
                         struct ks_principal *out, char *why, size_t whylen)
{
    assert(a != NULL && req != NULL && out != NULL);
    return ks_auth_verify(a, ks_http_req_header(req, "Authorization"), now_ms, out, why, whylen);
}

int ks_auth_http_authorize(void *ctx, const struct ks_http_req *req, void *principal,
                           const char **name, char *why, size_t whylen)
{
    struct ks_auth *a = ctx;
    struct ks_principal *p = principal;
    assert(a != NULL && req != NULL && p != NULL && name != NULL);
    *name = NULL;
    if (!ks_http_req_header(req, "Authorization")) {
        snprintf(why, whylen, "a bearer token is required");
        return KS_ERR_UNAUTHORIZED;
    }
    int rc = ks_auth_from_request(a, req, ks_now_ms(), p, why, whylen);
    if (rc != KS_OK)
        return rc;
    *name = p->subject;
    return KS_OK;
}
