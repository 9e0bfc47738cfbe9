/*
 * roles.h — which role each public API route needs (docs/auth.md, "Roles"; the same table).
 *
 * Deny by default: a merchant token must hold the route's merchant role, an invoice access token
 * the route's scoped role of its own invoice; a route without a role for a kind of token refuses
 * that kind. Every route ks_api_payments_routes registers must have a row here, or kassa does not
 * start.
 */
#ifndef KS_API_ROLES_H
#define KS_API_ROLES_H

#include <stddef.h>

#include "auth/auth.h"
#include "http/http.h"

struct ks_api_route_role {
    const char *method;
    const char *pattern;       /* as registered with the router */
    const char *merchant_role; /* KS_AUTH_ROLE_*; NULL: merchant tokens are refused */
    const char *invoice_role;  /* an invoice token's role, "{id}" standing for the invoice;
                                  NULL: invoice tokens are refused */
};

/* The table, `ks_api_route_roles_n` rows; static data. */
extern const struct ks_api_route_role ks_api_route_roles[];
extern const size_t ks_api_route_roles_n;

/* The row of (method, pattern) in `rows` (`rows_n` of them), or NULL when none has it. */
const struct ks_api_route_role *ks_api_route_role_in(const struct ks_api_route_role *rows,
                                                     size_t rows_n, const char *method,
                                                     const char *pattern);
/* The row of (method, pattern) in the payments table above, or NULL when the route has none. */
const struct ks_api_route_role *ks_api_route_role(const char *method, const char *pattern);

/* The same check without a response: KS_ERR_UNAUTHORIZED with the sentence naming the missing
 * role in `why` (the request-head authorizer uses it), KS_OK otherwise. */
KS_MUST_USE int ks_api_merchant_role_why(const struct ks_principal *who, const char *role,
                                         char *why, size_t whylen);

/* Deny by default for merchant tokens: KS_OK when `who` is not a merchant token (invoice tokens
 * are held to their scoped roles where the invoice is known) or holds `role`; otherwise writes a
 * 401 naming the missing role (never the token) into `resp` and returns KS_ERR_UNAUTHORIZED. */
KS_MUST_USE int ks_api_merchant_role(const struct ks_principal *who, const char *role,
                                     struct ks_http_resp *resp);

#endif
