/*
 * modules/payments.c — the payments module: the invoice processor (domain/invoice), the
 * acquiring unit that runs provider sessions (units/acquiring.h) with every acquiring adapter
 * the modules before it provide, and the public payments API (/v2/processing/..., api/
 * payments_api.h) with its OpenAPI document. Design: docs/payments.md.
 *
 * Needs the "vault" service (the vault module). Runs the adapters provided as
 * "adapter.acquiring.<name>" (const struct ks_adapter *), e.g. by the sandbox module.
 */
#include <stdlib.h>

#include "api/api.h"
#include "api/docs_ui.h"
#include "api/payments_api.h"
#include "api/roles.h"
#include "domain/invoice/invoice.h"
#include "platform/platform.h"
#include "units/acquiring.h"
#include "units/session.h"

struct payments_module {
    struct ks_payments_api api;
    struct ks_acquiring *acquiring;
};

static const struct ks_flag payments_flags[] = {
    {.name = "payment-hold-ms", .env = "KASSA_PAYMENT_HOLD_MS", .dflt = "259200000",
     .kind = KS_FLAG_INT, .min = 1000, .max = 30LL * 24 * 3600 * 1000,
     .help = "how long a hold payment stays authorized before onHoldExpiration",
     .doc = "how long a `PaymentFlowHold` payment stays authorized before its "
            "`onHoldExpiration` applies",
     .dflt_doc = "259200000 (3 days)"},
    {.name = "acquiring-workers", .env = "KASSA_ACQUIRING_WORKERS", .dflt = "8",
     .kind = KS_FLAG_INT, .min = 1, .max = KS_UNIT_WORKERS_MAX,
     .help = "threads running provider sessions",
     .doc = "threads running provider sessions (authorize, capture, refund...)",
     .dflt_doc = "8"},
    /* Payment resources are disposable (docs/payments.md "Payment resources"). */
    {.name = "payment-resource-ttl-ms", .env = "KASSA_PAYMENT_RESOURCE_TTL_MS", .dflt = "3600000",
     .kind = KS_FLAG_INT, .min = 1000, .max = 24LL * 3600 * 1000,
     .help = "lifetime of a tokenized card (validUntil); unused ones are then deleted from the "
             "vault",
     .doc = "lifetime of a payment resource (a tokenized card, `validUntil` in the reply): no "
            "payment may use it afterwards, and an unused card is then deleted from the vault "
            "([payments.md](payments.md#payment-resources)). How many cards and payment attempts "
            "one invoice may make is domain configuration (`terms.perInvoice`, "
            "[configuration-domain.md](configuration-domain.md))",
     .dflt_doc = "3600000 (1 hour)"},
};

static int payments_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_vault *vault = ks_node_service(node, "vault");
    if (!vault) {
        snprintf(why, whylen, "needs the vault module, opened before it");
        return KS_ERR_INVALID;
    }
    struct payments_module *p = calloc(1, sizeof(*p));
    if (!p)
        return KS_ERR_NOMEM;
    *ctx = p;
    struct ks_engine *engine = ks_node_engine(node);
    p->api = (struct ks_payments_api){
        .engine = engine,
        .auth = ks_node_auth(node),
        .vault = vault,
        .log = ks_node_log(node),
        .payment_hold_ms = ks_node_flag_int(node, "payment-hold-ms"),
        .payment_resource_ttl_ms = ks_node_flag_int(node, "payment-resource-ttl-ms")};
    int rc = ks_invoice_register(engine);
    if (rc != KS_OK)
        return rc;
    /* Provider sessions: the acquiring unit with every acquiring adapter provided so far. */
    struct ks_acquiring_options ao = {.vault = vault,
                                      .public_url = ks_node_flag(node, "public-url"),
                                      .log = ks_node_log(node),
                                      .workers = (int)ks_node_flag_int(node, "acquiring-workers")};
    if ((rc = ks_acquiring_create(&ao, &p->acquiring)) != KS_OK)
        return rc;
    void *adapters[KS_SESSION_ADAPTERS_MAX];
    size_t n = ks_node_services(node, "adapter.acquiring.", adapters, KS_SESSION_ADAPTERS_MAX);
    if (n > KS_SESSION_ADAPTERS_MAX) {
        snprintf(why, whylen, "more than %d acquiring adapters", KS_SESSION_ADAPTERS_MAX);
        return KS_ERR_LIMIT;
    }
    for (size_t i = 0; i < n; i++)
        if ((rc = ks_acquiring_add_adapter(p->acquiring, adapters[i])) != KS_OK)
            return rc;
    struct ks_unit u;
    ks_acquiring_unit(p->acquiring, &u);
    if ((rc = ks_engine_register_unit(engine, &u)) != KS_OK)
        return rc;
    /* The public listener refuses a merchant token without a route's role before the body. */
    return ks_node_add_route_roles(node, ks_api_route_roles, ks_api_route_roles_n);
}

static int payments_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                           struct ks_http_router *admin, char *why, size_t whylen)
{
    struct payments_module *p = ctx;
    int rc = ks_api_openapi_routes(pub);
    if (rc == KS_OK)
        rc = ks_api_docs_ui_routes(pub);
    if (rc == KS_OK)
        rc = ks_api_payments_routes(pub, &p->api);
    return rc;
}

/* The payer pages (3-D Secure) live on the public listener: its URL is known now. */
static void payments_serving(void *ctx, struct ks_node *node)
{
    struct payments_module *p = ctx;
    char url[256];
    ks_node_public_url(node, url, sizeof(url));
    ks_acquiring_set_public_url(p->acquiring, url);
}

static void payments_close(void *ctx)
{
    struct payments_module *p = ctx;
    if (!p)
        return;
    ks_acquiring_free(p->acquiring);
    free(p);
}

const struct ks_module ks_payments_module = {
    .name = "payments",
    .summary = "invoices, card payments, refunds: the public payments API",
    .flags = payments_flags,
    .flags_n = sizeof(payments_flags) / sizeof(payments_flags[0]),
    .open = payments_open,
    .routes = payments_routes,
    .serving = payments_serving,
    .close = payments_close,
};
