/*
 * roles.c — the role each public API route needs (roles.h). docs/auth.md ("Roles") holds the
 * same table; tests/blackbox/test_sec_auth.py checks every row of it against the running server.
 */
#include <assert.h>
#include <stdio.h>
#include <string.h>

#include "api/roles.h"

#define INV "/v2/processing/invoices/{invoiceID}"
#define PAY INV "/payments/{paymentID}"

const struct ks_api_route_role ks_api_route_roles[] = {
    {"POST", "/v2/processing/invoices", KS_AUTH_ROLE_INVOICES_WRITE, NULL},
    {"GET", "/v2/processing/invoices", KS_AUTH_ROLE_INVOICES_READ, NULL}, /* ?externalID= */
    {"GET", INV, KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
    {"GET", INV "/events", KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
    {"POST", INV "/access-tokens", KS_AUTH_ROLE_INVOICES_WRITE, NULL},
    {"POST", INV "/rescind", KS_AUTH_ROLE_INVOICES_WRITE, NULL},
    {"POST", INV "/fulfill", KS_AUTH_ROLE_INVOICES_WRITE, NULL},
    {"POST", "/v2/processing/payment-resources", NULL, "payment_resources:write"},
    {"POST", INV "/payments", KS_AUTH_ROLE_PAYMENTS_WRITE, "invoices.{id}.payments:write"},
    {"GET", INV "/payments", KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
    {"GET", PAY, KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
    {"POST", PAY "/capture", KS_AUTH_ROLE_PAYMENTS_WRITE, NULL},
    {"POST", PAY "/cancel", KS_AUTH_ROLE_PAYMENTS_WRITE, NULL},
    {"POST", PAY "/refunds", KS_AUTH_ROLE_REFUNDS_WRITE, NULL},
    {"GET", PAY "/refunds", KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
    {"GET", PAY "/refunds/{refundID}", KS_AUTH_ROLE_INVOICES_READ, "invoices.{id}:read"},
};

const size_t ks_api_route_roles_n = sizeof(ks_api_route_roles) / sizeof(ks_api_route_roles[0]);

const struct ks_api_route_role *ks_api_route_role_in(const struct ks_api_route_role *rows,
                                                     size_t rows_n, const char *method,
                                                     const char *pattern)
{
    if (!method || !pattern)
        return NULL;
    for (size_t i = 0; i < rows_n; i++) {
        const struct ks_api_route_role *r = &rows[i];
        assert(r->merchant_role || r->invoice_role); /* a route nobody may call has no place */
        if (strcmp(r->method, method) == 0 && strcmp(r->pattern, pattern) == 0)
            return r;
    }
    return NULL;
}

const struct ks_api_route_role *ks_api_route_role(const char *method, const char *pattern)
{
    return ks_api_route_role_in(ks_api_route_roles, ks_api_route_roles_n, method, pattern);
}

int ks_api_merchant_role_why(const struct ks_principal *who, const char *role, char *why,
                             size_t whylen)
{
    assert(who != NULL && role != NULL && why != NULL);
    if (who->kind != KS_PRINCIPAL_MERCHANT || ks_auth_has_role(who, role))
        return KS_OK;
    snprintf(why, whylen,
             "this token does not hold the role %s that this call needs (docs/auth.md, \"Roles\")",
             role);
    return KS_ERR_UNAUTHORIZED;
}

int ks_api_merchant_role(const struct ks_principal *who, const char *role,
                         struct ks_http_resp *resp)
{
    assert(resp != NULL);
    char why[160];
    if (ks_api_merchant_role_why(who, role, why, sizeof(why)) == KS_OK)
        return KS_OK;
    return ks_http_error(resp, 401, "unauthorized", "%s", why);
}
