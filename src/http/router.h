/*
 * router.h — method + path pattern dispatch for the HTTP server.
 *
 * A pattern is an absolute path whose segments are literals or `{name}` parameters, e.g.
 * "/admin/v1/machines/{ns}/{id}". A parameter matches one non-empty segment. Literal segments
 * win over parameters when both could match ("/v0/probe/{id}/call" vs "/v0/probe/{id}/{x}").
 * An empty segment (double or trailing slash) never matches.
 *
 * Routes are added once, before the server starts; matching is then read-only and safe from any
 * number of threads. The router has a fixed capacity (KS_HTTP_ROUTES_MAX) and allocates nothing.
 */
#ifndef KS_HTTP_ROUTER_H
#define KS_HTTP_ROUTER_H

#include <stddef.h>

#include "core/err.h"
#include "core/limits.h"
#include "http/http.h"

/* Route flags. */
#define KS_HTTP_ROUTE_AUTH 1u      /* the server's authorizer must accept the caller */
#define KS_HTTP_ROUTE_JSON_BODY 2u /* the body must be a JSON document: parsed into req->json */
/* The body may be empty, a JSON document (parsed into req->json) or, as a browser's form posts
 * it, application/x-www-form-urlencoded (left raw in req->body; see ks_http_form_get). */
#define KS_HTTP_ROUTE_FORM_BODY 4u
/* The route's `i`-th {param} (0-based, in pattern order) is a secret, e.g. a capability tag:
 * the access log shows KS_HTTP_LOG_REDACTED in its place. `i` < KS_HTTP_PATH_SEGMENTS_MAX. */
#define KS_HTTP_ROUTE_SECRET_PARAM(i) (1u << (8 + (i)))
#define KS_HTTP_LOG_REDACTED "[redacted]"

struct ks_http_route {
    char method[8];
    char pattern[128];
    unsigned flags;
    ks_http_handler handler;
    void *ctx;
    size_t segments_n;
    /* The pattern's segments; a parameter's is its name, without braces. */
    char segments[KS_HTTP_PATH_SEGMENTS_MAX][64];
    unsigned char is_param[KS_HTTP_PATH_SEGMENTS_MAX];
};

struct ks_http_router {
    struct ks_http_route routes[KS_HTTP_ROUTES_MAX];
    size_t routes_n;
};

/* The outcome of a lookup. `params` point into the `path` buffer given to ks_http_router_match,
 * which the match borrows. */
struct ks_http_match {
    const struct ks_http_route *route; /* NULL when nothing matched */
    const char *params[KS_HTTP_PATH_SEGMENTS_MAX];
    size_t params_n;
    char allow[64]; /* methods the path accepts (for 405), comma-separated */
};

/* Empties `r`. */
void ks_http_router_init(struct ks_http_router *r);

/* Adds a route. `pattern` must start with '/', have at most KS_HTTP_PATH_SEGMENTS_MAX segments
 * of at most 63 bytes, and not repeat an existing (method, pattern). Returns KS_ERR_INVALID for
 * a bad pattern or method, KS_ERR_LIMIT when the router is full, KS_ERR_CONFLICT for a repeat.
 * `ctx` is borrowed and passed to `handler`. */
KS_MUST_USE int ks_http_router_add(struct ks_http_router *r, const char *method,
                                   const char *pattern, unsigned flags, ks_http_handler handler,
                                   void *ctx);

/*
 * Looks up (method, path). `path` is a writable copy of the request path: its '/' separators
 * are overwritten with NULs so the parameters can point into it. Returns KS_OK with `m->route`
 * set; KS_ERR_NOT_FOUND when no route has this path; KS_ERR_CONFLICT when the path exists with
 * other methods only (then `m->allow` lists them, for a 405).
 */
KS_MUST_USE int ks_http_router_match(const struct ks_http_router *r, const char *method, char *path,
                                     struct ks_http_match *m);

/*
 * Writes `path` into `out` (`cap` bytes, NUL-terminated) for a log line, with each segment that
 * sits where any route has a KS_HTTP_ROUTE_SECRET_PARAM parameter replaced by
 * KS_HTTP_LOG_REDACTED. A route counts when its literal segments equal the path's as far as both
 * go, whatever the method and even if the path is longer or shorter than the pattern, so a
 * capability in a mistyped URL (a 404 or 405) is hidden too. `path` is only read. Returns KS_OK,
 * or KS_ERR_LIMIT (and "" in `out`) if the result does not fit: strlen(path) + 1 +
 * KS_HTTP_PATH_SEGMENTS_MAX * strlen(KS_HTTP_LOG_REDACTED) bytes always do. Thread-safe.
 */
KS_MUST_USE int ks_http_router_redact(const struct ks_http_router *r, const char *path, char *out,
                                      size_t cap);

#endif
