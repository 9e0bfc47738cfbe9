/*
 * auth_http.h — the bridge between HTTP requests and auth.h, kept apart so that auth.h does not
 * depend on the HTTP layer (docs/auth.md).
 */
#ifndef KS_AUTH_AUTH_HTTP_H
#define KS_AUTH_AUTH_HTTP_H

#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "http/http.h"

/*
 * Verifies the request's Authorization header (ks_auth_verify) at `now_ms`. KS_OK fills `out`;
 * a missing or bad token gives KS_ERR_UNAUTHORIZED with a reason in `why` that never holds the
 * token (a handler may put it in a 401 reply). The handler still checks what the principal may
 * do: ks_auth_merchant_may, ks_auth_invoice_may, ks_auth_has_role, or `out->kind`.
 * Thread-safe; `req` is only read.
 */
KS_MUST_USE int ks_auth_from_request(struct ks_auth *a, const struct ks_http_req *req,
                                     int64_t now_ms, struct ks_principal *out, char *why,
                                     size_t whylen);

/*
 * The public listener's authorizer (http/server.h, ks_http_authorizer), run when a request head
 * arrives: `ctx` is the struct ks_auth, `principal` a zeroed struct ks_principal (the server's
 * principal_bytes must be sizeof(struct ks_principal)), which it fills; `*name` is then the
 * principal's subject. A missing or bad token gives KS_ERR_UNAUTHORIZED with the reason in `why`
 * (never the token). Thread-safe.
 */
KS_MUST_USE int ks_auth_http_authorize(void *ctx, const struct ks_http_req *req, void *principal,
                                       const char **name, char *why, size_t whylen);

#endif
