/*
 * modules/search.c — the search module (search/search.h): the read model of invoices, payments
 * and refunds kept by its relay, the merchants' search (/v2/analytics/shops/{shopID}/...) and
 * the operators' (/admin/v1/search/...). Design: docs/search.md.
 */
#include "platform/platform.h"
#include "search/search.h"

static int search_module_open(struct ks_node *node, void **ctx, char *why, size_t whylen)
{
    struct ks_search *s = NULL;
    int rc = ks_search_open(ks_node_store(node), ks_node_engine(node), &s);
    *ctx = s;
    if (rc == KS_OK)
        rc = ks_node_add_route_roles(node, ks_search_route_roles, ks_search_route_roles_n);
    return rc;
}

static int search_module_routes(void *ctx, struct ks_node *node, struct ks_http_router *pub,
                                struct ks_http_router *admin, char *why, size_t whylen)
{
    return ks_search_routes(ctx, pub, admin);
}

static void search_module_close(void *ctx)
{
    ks_search_close(ctx);
}

const struct ks_module ks_search_module = {
    .name = "search",
    .summary = "search over invoices, payments and refunds, from a read model a relay keeps",
    .schema = &ks_search_schema,
    .open = search_module_open,
    .routes = search_module_routes,
    .close = search_module_close,
};
