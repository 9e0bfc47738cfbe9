/*
 * docs_ui.h — kassa's API documentation page: Swagger UI (npm's swagger-ui-dist, built into the
 * binary by the Makefile from node_modules) at GET /docs on the public listener, reading kassa's
 * OpenAPI document from GET /v2/openapi.json (api.h, ks_api_openapi_routes).
 *
 * Everything the page loads comes from kassa: the page, its start-up script and Swagger UI's
 * stylesheet and bundle are served under /docs/ with a Content-Security-Policy that allows
 * only 'self' (plus data: images, which Swagger UI's stylesheet holds inline).
 */
#ifndef KS_API_DOCS_UI_H
#define KS_API_DOCS_UI_H

#include "core/err.h"
#include "http/router.h"

/* Adds to the public router `r` GET /docs (the page, text/html) and GET /docs/{asset} (its
 * scripts and stylesheet; an unknown asset is a JSON 404 "notFound"). Both are open (no token),
 * send ETags and answer a matching If-None-Match with 304. The routes keep no context: the
 * assets are static data of the binary. Returns a router error (router.h) on failure.
 * Call once per router, before its server starts; thread-safe afterwards. */
KS_MUST_USE int ks_api_docs_ui_routes(struct ks_http_router *r);

#endif
