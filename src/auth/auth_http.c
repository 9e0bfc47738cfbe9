/*
 * auth_http.c — reads the bearer token of an HTTP request (auth_http.h).
 */
#include <assert.h>

#include "auth/auth_http.h"

int ks_auth_from_request(struct ks_auth *a, const struct ks_http_req *req, int64_t now_ms,
                         struct ks_principal *out, char *why, size_t whylen)
{
    assert(a != NULL && req != NULL && out != NULL);
    return ks_auth_verify(a, ks_http_req_header(req, "Authorization"), now_ms, out, why, whylen);
}
