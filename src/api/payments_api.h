/*
 * payments_api.h — the public payments API (/v2/processing/...): invoices, access tokens,
 * payment resources, payments, captures, cancels, refunds, events. Names and shapes follow the
 * common API v2 (../shared/reference/swag-payments); kassa's OpenAPI document describes what is
 * served (docs/openapi.json, GET /v2/openapi.json).
 *
 * Handlers validate everything, resolve configuration (shop, terms, routes, cash flows) at the
 * current revision and pin it into the invoice machine, then call the engine. A client's
 * mistake is a 4xx {"code","message"} and changes nothing. Logic errors use 400 with the codes
 * of the public API (invalidInvoiceStatus, invalidPaymentStatus, ...); an externalID reused for
 * a different request is 409 {"externalID","id","message"}.
 */
#ifndef KS_API_PAYMENTS_API_H
#define KS_API_PAYMENTS_API_H

#include "auth/auth.h"
#include "core/log.h"
#include "engine/engine.h"
#include "http/router.h"
#include "vault/vault.h"

struct ks_payments_api {
    struct ks_engine *engine;  /* borrowed */
    struct ks_auth *auth;      /* borrowed */
    struct ks_vault *vault;    /* borrowed */
    struct ks_log *log;        /* borrowed */
    int64_t invoice_token_ttl_ms;  /* 0 = 24 hours */
    int64_t payment_hold_ms;       /* how long a hold lasts before onHoldExpiration; 0 = 3 days */
    int64_t payment_resource_ttl_ms; /* a payment resource's lifetime (validUntil); 0 = 1 hour */
};

/* Adds the public payments routes to `r`, and the provider callback route of payment sessions
 * (ks_api_callback_routes, api.h). `api` is borrowed and must outlive the server. Each route
 * that takes a token must have a row in api/roles.c, whose table the payments module gives the
 * public listener's authorizer (platform/module.h, ks_node_add_route_roles). */
KS_MUST_USE int ks_api_payments_routes(struct ks_http_router *r, struct ks_payments_api *api);

#endif
