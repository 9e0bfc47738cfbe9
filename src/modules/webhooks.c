/*
 * modules/webhooks.c — the webhooks module (webhooks/webhooks.h): merchant webhooks for invoice
 * and fiscal receipt events, the relay that turns events into deliveries, the dispatcher that sends them, the
 * merchant routes (/v2/processing/webhooks) and the operators' (/admin/v1/webhooks). Design:
 * docs/webhooks.md.
 *
 * Needs the "vault" service (signing keys are sealed by it). Comes after payments: it reads the
 * invoice machines (and the receipt machines, which it reads from the store whether or not the
 * receipts module runs on this node).
 */
#include <stdio.h>

#include "platform/platform.h"
#include "webhooks/webhooks.h"

static const struct ks_flag webhooks_flags[] = {
    {.name = "webhook-allow-loopback", .env = "KASSA_WEBHOOK_ALLOW_LOOPBACK", .dflt = "0",
     .kind = KS_FLAG_SWITCH,
     .help = "webhook URLs may lead to loopback addresses (127.0.0.0/8, ::1)",
     .doc = "webhook URLs may lead to loopback addresses (`127.0.0.0/8`, `::1`): a receiver on "
            "the same host, as in tests. Off, such a URL is refused when the webhook is set up "
            "and at every connection. Receipts' `callback_url` follows the same rule"},
    {.name = "webhook-allow-private", .env = "KASSA_WEBHOOK_ALLOW_PRIVATE", .dflt = "0",
     .kind = KS_FLAG_SWITCH,
     .help = "webhook URLs may lead to private, link-local and other non-public addresses",
     .doc = "webhook URLs may lead to any address, private (`10/8`, `172.16/12`, `192.168/16`, "
            "`fc00::/7`), link-local (`169.254/16`, `fe80::/10`), loopback and other non-public "
            "ones. Off, they are refused (no webhook, nor a receipt's `callback_url`, may reach "
            "into kassa's own network)"},
    {.name = "webhook-timeout-ms", .env = "KASSA_WEBHOOK_TIMEOUT_MS", .dflt = "10000",
     .kind = KS_FLAG_INT, .min = 100, .max = 60000,
     .help = "a delivery counts only if the receiver answers 2xx within this time",
     .dflt_doc = "10000 (10 s)"},
    {.name = "webhook-retry-schedule", .env = "KASSA_WEBHOOK_RETRY_SCHEDULE",
     .dflt = "30s,5m,15m,1h", .kind = KS_FLAG_TEXT, .opts = KS_FLAG_NONEMPTY,
     .help = "delays before the 2nd, 3rd, ... attempt of a delivery; the last one repeats",
     .doc = "delays before the second, third, ... attempt of a failed delivery (units `ms`, `s`, "
            "`m`, `h`); the last one repeats until the horizon. A receiver's `Retry-After` may "
            "ask for longer"},
    {.name = "webhook-retry-horizon-ms", .env = "KASSA_WEBHOOK_RETRY_HORIZON_MS",
     .dflt = "86400000", .kind = KS_FLAG_INT, .min = 1000, .max = 7LL * 24 * 3600 * 1000,
     .help = "a delivery not made within this time of its event is dead-lettered",
     .doc = "a delivery still failing this long after it was recorded is dead-lettered: "
            "listed for operators, who may redeliver it",
     .dflt_doc = "86400000 (24 h)"},
    {.name = "webhook-per-shop-max", .env = "KASSA_WEBHOOK_PER_SHOP_MAX", .dflt = "10",
     .kind = KS_FLAG_INT, .min = 1, .max = 100,
     .help = "webhooks one shop may have (more: 429)"},
    {.name = "webhook-per-party-max", .env = "KASSA_WEBHOOK_PER_PARTY_MAX", .dflt = "100",
     .kind = KS_FLAG_INT, .min = 1, .max = 10000,
     .help = "webhooks one party may have (more: 429)"},
    {.name = "webhook-concurrency", .env = "KASSA_WEBHOOK_CONCURRENCY", .dflt = "64",
     .kind = KS_FLAG_INT, .min = 1, .max = 1024,
     .help = "deliveries this node sends at once"},
};

static int webhooks_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_vault *vault = ks_node_service(node, "vault");
    if (!vault) {
        snprintf(why, whylen, "needs the vault module, opened before it");
        return KS_ERR_INVALID;
    }
    struct ks_webhooks_options o = {
        .store = ks_node_store(node),
        .engine = ks_node_engine(node),
        .vault = vault,
        .log = ks_node_log(node),
        .allow_loopback = ks_node_flag_on(node, "webhook-allow-loopback"),
        .allow_private = ks_node_flag_on(node, "webhook-allow-private"),
        .timeout_ms = ks_node_flag_int(node, "webhook-timeout-ms"),
        .horizon_ms = ks_node_flag_int(node, "webhook-retry-horizon-ms"),
        .per_shop_max = (int)ks_node_flag_int(node, "webhook-per-shop-max"),
        .per_party_max = (int)ks_node_flag_int(node, "webhook-per-party-max"),
        .concurrency = (int)ks_node_flag_int(node, "webhook-concurrency"),
    };
    char bad[200];
    if (ks_webhook_retry_parse(ks_node_flag(node, "webhook-retry-schedule"), o.retry_ms,
                               &o.retry_n, bad, sizeof(bad)) != KS_OK) {
        snprintf(why, whylen, "--webhook-retry-schedule: %s", bad);
        return KS_ERR_INVALID;
    }
    struct ks_webhooks *w = NULL;
    int rc = ks_webhooks_open(&o, &w, why, whylen);
    *ctx = w;
    if (rc == KS_OK)
        rc = ks_node_add_route_roles(node, ks_webhooks_route_roles, ks_webhooks_route_roles_n);
    return rc;
}

static int webhooks_start(void *ctx, struct ks_node *node, char *why, size_t whylen)
{
    int rc = ks_webhooks_start(ctx);
    if (rc != KS_OK)
        snprintf(why, whylen, "cannot start the webhooks' dispatcher");
    return rc;
}

static int webhooks_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                           struct ks_http_router *admin, char *why, size_t whylen)
{
    return ks_webhooks_routes(ctx, pub, admin);
}

static void webhooks_close(void *ctx)
{
    ks_webhooks_close(ctx);
}

const struct ks_module ks_webhooks_module = {
    .name = "webhooks",
    .summary = "merchant webhooks: signed deliveries of invoice and receipt events, retried, in "
               "order",
    .schema = &ks_webhooks_schema,
    .flags = webhooks_flags,
    .flags_n = sizeof(webhooks_flags) / sizeof(webhooks_flags[0]),
    .open = webhooks_open,
    .start = webhooks_start,
    .routes = webhooks_routes,
    .close = webhooks_close,
};
