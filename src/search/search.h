/*
 * search.h — search over invoices, payments and refunds (docs/search.md): the reference API's
 * GET /analytics/shops/{shopID}/{invoices,payments,refunds} under /v2, and the same for
 * operators under /admin/v1/search.
 *
 * A relay (its own cursor over the outbox) keeps a read model: for every invoice whose events it
 * sees it writes the invoice, each of its payments and each refund as they are now into tables
 * of their own (src/search/migrations/), with the fields the filters use in indexed columns.
 * Searches read only those tables, never a machine's snapshot; they see what the relay has
 * written (its lag is in GET /admin/v1/relays, "search").
 *
 * Results are newest first; a page ends with a continuationToken while more may follow.
 */
#ifndef KS_SEARCH_SEARCH_H
#define KS_SEARCH_SEARCH_H

#include <stddef.h>

#include "api/roles.h"
#include "core/err.h"

struct ks_store;
struct ks_engine;
struct ks_http_router;
struct ks_sql_schema;

#define KS_SEARCH_LIMIT_MAX 1000 /* rows a page may ask for (the spec's limit maximum) */

extern const struct ks_sql_schema ks_search_schema;
/* The role each merchant search route needs (docs/auth.md). */
extern const struct ks_api_route_role ks_search_route_roles[];
extern const size_t ks_search_route_roles_n;

struct ks_search;

/* Registers the relay that keeps the read model (before the engine runs). `store` and `engine`
 * are borrowed. */
KS_MUST_USE int ks_search_open(struct ks_store *store, struct ks_engine *engine,
                               struct ks_search **out);
void ks_search_close(struct ks_search *s);
/* Adds the merchant routes to `pub` and, when `admin` is not NULL, the operators' routes. */
KS_MUST_USE int ks_search_routes(struct ks_search *s, struct ks_http_router *pub,
                                 struct ks_http_router *admin);

#endif
