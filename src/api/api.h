/*
 * api.h — kassa's HTTP handlers: health, the operators' low-level admin API, and the admin and
 * payer routes of the configuration, ledger and sandbox modules.
 *
 * Each group adds its routes to a router (http/router.h) with a context it borrows; the platform
 * (platform/serve.c) builds one router per listener and each module adds its groups. The admin API and its authentication are described in
 * docs/configuration.md ("Admin API").
 */
#ifndef KS_API_API_H
#define KS_API_API_H

#include <stddef.h>

#include "core/err.h"
#include "core/limits.h"
#include "engine/engine.h"
#include "http/http.h"
#include "http/router.h"

struct ks_sandbox; /* units/adapters/sandbox.h */
struct ks_ledger;  /* ledger/ledger.h */

/* What the platform's own handlers (health, the admin API) need. Borrowed; it must outlive the
 * servers using it. Each module's handlers take a context of their own. */
struct ks_api_ctx {
    struct ks_engine *engine;
    struct ks_store *store;
    /* The admin bearer token (NUL-terminated), compared in constant time. */
    char admin_token[KS_ADMIN_TOKEN_BYTES_MAX + 1];
};

/* What the sandbox acquirer's pages need (borrowed). */
struct ks_api_sandbox {
    struct ks_engine *engine;
    struct ks_sandbox *sandbox;
};

/* Adds GET /health/live (200 while the process serves) and GET /health/ready (200 when the
 * store answers a ping, else 503). Returns a router error (router.h) on failure. */
KS_MUST_USE int ks_api_health_routes(struct ks_http_router *r, struct ks_api_ctx *ctx);

/* Adds GET /v2/openapi.json: the OpenAPI 3 document of the public listener (docs/openapi.json,
 * built into the binary). KS_ERR_INVALID if the built-in document is not JSON. */
KS_MUST_USE int ks_api_openapi_routes(struct ks_http_router *r);

/* Adds the admin routes under /admin/v1 (machines, repair, outbox, tasks, stats), all requiring
 * the admin bearer token (see ks_api_admin_authorize). */
KS_MUST_USE int ks_api_admin_routes(struct ks_http_router *r, struct ks_api_ctx *ctx);

/* Adds the domain configuration routes under /admin/v1/config (current, revisions, put,
 * validate; api/config.c, docs/configuration-domain.md), requiring the admin bearer token. */
KS_MUST_USE int ks_api_config_routes(struct ks_http_router *r, struct ks_engine *engine);

/* Adds the ledger routes under /admin/v1/ledger (accounts, a shop's accounts, plans, account
 * statements; api/ledger.c, docs/ledger.md), requiring the admin bearer token. */
KS_MUST_USE int ks_api_ledger_routes(struct ks_http_router *r, struct ks_ledger *ledger);

/* The admin listener's authorizer (http/server.h, ks_http_authorizer): accepts
 * `Authorization: Bearer <token>` when the token equals ctx->admin_token, compared in constant
 * time; the name is "admin" and `principal` (the listener has principal_bytes 0) is unused.
 * `ctx` is a struct ks_api_ctx. */
int ks_api_admin_authorize(void *ctx, const struct ks_http_req *req, void *principal,
                           const char **name, char *why, size_t whylen);

/*
 * Reads the admin token from `path`, or, when the file does not exist, creates it (mode 0600,
 * with its directory if missing) holding KS_ADMIN_TOKEN_BYTES random base62 characters.
 * Surrounding whitespace in the file is ignored; a token shorter than KS_ADMIN_TOKEN_BYTES_MIN
 * or longer than KS_ADMIN_TOKEN_BYTES_MAX, and a file that is not regular or that group or others
 * may access, are refused (KS_ERR_INVALID). `*created` says whether the file was made. Errors:
 * KS_ERR_INVALID, KS_ERR_IO, with a reason in `why` (it names the path, never the token).
 */
KS_MUST_USE int ks_api_admin_token_load(const char *path, char *token, size_t tokenlen,
                                        int *created, char *why, size_t whylen);

/* Adds the sandbox acquirer's 3-D Secure page for payers (public listener, no token):
 * GET|POST /v2/sandbox/3ds/{tag} and POST /v2/sandbox/3ds/{tag}/complete (docs/sandbox.md). */
KS_MUST_USE int ks_api_sandbox_routes(struct ks_http_router *r, struct ks_api_sandbox *ctx);
/* Adds GET /admin/v1/sandbox/operations (the sandbox's record; admin token required). */
KS_MUST_USE int ks_api_sandbox_admin_routes(struct ks_http_router *r, struct ks_api_sandbox *ctx);

/* Adds POST /v2/callbacks/{tag} (public listener, no token: the tag is the capability, redacted
 * from the access log): a provider's or payer's callback for a session that suspended on `tag`
 * (units/adapter.h, ks_adapter_callback_url). The JSON object body is delivered to the machine
 * the tag names (ks_callback_deliver); the reply is {"delivered": true}. `engine` is borrowed. */
KS_MUST_USE int ks_api_callback_routes(struct ks_http_router *r, struct ks_engine *engine);

/* --- helpers shared by the handlers --------------------------------------------------------- */

/* Formats `ms` as RFC 3339 JSON string, or JSON null when `ms` is 0. New reference. */
json_t *ks_api_time(int64_t ms);

/* How a callback delivery's result (ks_callback_deliver) is told to whoever called back: the
 * HTTP status and the JSON error code; `message` says it to a payer in plain words. Status 200
 * for KS_OK. */
int ks_api_callback_status(int rc, const char **code, const char **message);

/* Parses stored JSON text (a snapshot, an event) into a new reference; JSON null for NULL
 * text. Stored text is kassa's own output, so a failure is logged and yields null. */
json_t *ks_api_stored_json(const char *text, struct ks_log *log, const char *trace);

#endif
