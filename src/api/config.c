/*
 * config.c — the domain configuration on the admin listener (api.h; the document and its rules
 * are in docs/configuration-domain.md):
 *
 *   GET  /admin/v1/config                       the current revision with its document
 *   GET  /admin/v1/config/revisions?after=&limit=  revisions after N, without documents
 *   GET  /admin/v1/config/revisions/{n}         revision n with its document
 *   PUT  /admin/v1/config                       {baseRevision, document, reason?} -> {revision}
 *   POST /admin/v1/config/validate              {document} -> {valid: true}, nothing stored
 *
 * A put based on a revision that is no longer current is 409 {code: "revisionConflict",
 * currentRevision}; an invalid document 422 {code: "invalidConfig", message: "path: problem"};
 * a malformed body 400. Every put is logged with the operator, the base and the reason.
 */
#include "api/api.h"
#include "core/parse.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config/config.h"

/* {revision, createdAt, author, reason, document?}; steals nothing from `r`. */
static json_t *rev_json(const struct ks_config_rev *r)
{
    json_t *o = json_pack("{s:I, s:o, s:s, s:s}", "revision", (json_int_t)r->revision, "createdAt",
                          ks_api_time(r->created_at_ms), "author", r->author, "reason", r->reason);
    if (o && r->document && json_object_set(o, "document", r->document) != 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static int reply_rev(struct ks_engine *engine, int64_t revision, struct ks_http_resp *resp)
{
    struct ks_config_rev r;
    int rc = ks_config_get(engine, revision, &r);
    if (rc == KS_ERR_NOT_FOUND)
        return revision
                   ? ks_http_error(resp, 404, "notFound", "no revision %lld", (long long)revision)
                   : ks_http_error(resp, 404, "notFound", "no configuration yet");
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    json_t *body = rev_json(&r);
    ks_config_rev_release(&r);
    return ks_http_reply(resp, 200, body);
}

/* --- GET /admin/v1/config ------------------------------------------------------------------ */

static int config_current(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK)
        return rc;
    return reply_rev(vctx, 0, resp);
}

/* --- GET /admin/v1/config/revisions/{n} ---------------------------------------------------- */

static int config_revision(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    int rc = ks_http_req_query_check(req, NULL, resp);
    if (rc != KS_OK)
        return rc;
    assert(req->params_n == 1);
    int64_t n;
    if (ks_parse_int64(req->params[0], 1, INT64_MAX, &n) != KS_OK)
        return ks_http_error(resp, 400, "invalidRequest",
                             "the revision must be a positive integer");
    return reply_rev(vctx, n, resp);
}

/* --- GET /admin/v1/config/revisions -------------------------------------------------------- */

static int config_revisions(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    static const char *const allowed[] = {"after", "limit", NULL};
    int64_t after, limit;
    int rc;
    if ((rc = ks_http_req_query_check(req, allowed, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "after", 0, INT64_MAX, 0, &after, resp)) != KS_OK ||
        (rc = ks_http_req_query_int(req, "limit", 1, KS_CONFIG_HISTORY_PAGE_MAX,
                                    KS_HTTP_PAGE_DEFAULT, &limit, resp)) != KS_OK)
        return rc;
    struct ks_config_rev *revs = calloc((size_t)limit, sizeof(*revs));
    if (!revs)
        return ks_http_error_from(resp, KS_ERR_NOMEM, NULL, NULL);
    size_t n = 0;
    int64_t current = 0;
    rc = ks_config_history(engine, after, (size_t)limit, revs, &n, &current);
    if (rc != KS_OK) {
        free(revs);
        return ks_http_error_from(resp, rc, NULL, NULL);
    }
    json_t *list = json_array();
    for (size_t i = 0; list && i < n; i++) {
        json_t *item = rev_json(&revs[i]);
        if (!item || json_array_append_new(list, item) != 0) {
            json_decref(list);
            list = NULL;
        }
    }
    json_t *next = json_null();
    if (n == (size_t)limit && n > 0 && revs[n - 1].revision < current) {
        char cur[24];
        snprintf(cur, sizeof(cur), "%lld", (long long)revs[n - 1].revision);
        json_decref(next);
        next = json_string(cur);
    }
    free(revs);
    return ks_http_reply(resp, 200,
                         json_pack("{s:I, s:o, s:o}", "currentRevision", (json_int_t)current,
                                   "revisions", list, "next", next));
}

/* --- PUT /admin/v1/config ------------------------------------------------------------------ */

/* Checks that the body is an object with only `allowed` members and a "document" object. */
static int body_check(const struct ks_http_req *req, const char *const *allowed,
                      struct ks_http_resp *resp)
{
    const json_t *body = req->json;
    if (!json_is_object(body))
        return ks_http_error(resp, 400, "invalidRequest", "the body must be a JSON object");
    const char *key;
    json_t *val;
    json_object_foreach((json_t *)body, key, val)
    {
        size_t i = 0;
        while (allowed[i] && strcmp(allowed[i], key) != 0)
            i++;
        if (!allowed[i])
            return ks_http_error(resp, 400, "invalidRequest", "unknown field %.64s", key);
    }
    json_t *doc = json_object_get(body, "document");
    if (!doc)
        return ks_http_error(resp, 400, "invalidRequest", "document is required");
    if (!json_is_object(doc))
        return ks_http_error(resp, 400, "invalidRequest", "document must be a JSON object");
    return KS_OK;
}

static int config_put(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    struct ks_engine *engine = vctx;
    static const char *const allowed[] = {"baseRevision", "document", "reason", NULL};
    int rc;
    if ((rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK ||
        (rc = body_check(req, allowed, resp)) != KS_OK)
        return rc;
    json_t *base_v = json_object_get(req->json, "baseRevision");
    json_t *reason_v = json_object_get(req->json, "reason");
    if (!base_v)
        return ks_http_error(resp, 400, "invalidRequest",
                             "baseRevision is required (the revision the document was edited "
                             "from; 0 for the first)");
    if (!json_is_integer(base_v) || json_integer_value(base_v) < 0)
        return ks_http_error(resp, 400, "invalidRequest",
                             "baseRevision must be a non-negative integer");
    if (reason_v && !json_is_string(reason_v))
        return ks_http_error(resp, 400, "invalidRequest", "reason must be a string");
    const char *reason = reason_v ? json_string_value(reason_v) : NULL;
    if (reason_v && strlen(reason) != json_string_length(reason_v))
        return ks_http_error(resp, 400, "invalidRequest", "reason must not contain NUL");
    int64_t base = (int64_t)json_integer_value(base_v);
    const char *author = req->principal ? req->principal : "admin";

    char why[KS_CONFIG_WHY_BYTES] = "";
    int64_t revision = 0;
    rc = ks_config_put(engine, base, json_object_get(req->json, "document"), author, reason,
                       &revision, why, sizeof(why));
    ks_log_json(req->log, rc == KS_OK ? KS_LOG_INFO : KS_LOG_WARN, req->trace, "admin config put",
                json_pack("{s:I, s:I, s:s, s:s, s:s, s:s}", "baseRevision", (json_int_t)base,
                          "revision", (json_int_t)revision, "operator", author, "reason",
                          reason ? reason : "", "result", ks_err_name(rc), "why", why));
    switch (rc) {
    case KS_OK:
        return ks_http_reply(resp, 200, json_pack("{s:I}", "revision", (json_int_t)revision));
    case KS_ERR_CONFLICT:
        return ks_http_reply(resp, 409,
                             json_pack("{s:s, s:s, s:I}", "code", "revisionConflict", "message",
                                       why, "currentRevision", (json_int_t)revision));
    case KS_ERR_REJECTED: return ks_http_error(resp, 422, "invalidConfig", "%s", why);
    case KS_ERR_INVALID: return ks_http_error(resp, 400, "invalidRequest", "%s", why);
    default: return ks_http_error_from(resp, rc, NULL, why[0] ? why : NULL);
    }
}

/* --- POST /admin/v1/config/validate -------------------------------------------------------- */

static int config_validate(void *vctx, const struct ks_http_req *req, struct ks_http_resp *resp)
{
    static const char *const allowed[] = {"document", NULL};
    int rc;
    if ((rc = ks_http_req_query_check(req, NULL, resp)) != KS_OK ||
        (rc = body_check(req, allowed, resp)) != KS_OK)
        return rc;
    char why[KS_CONFIG_WHY_BYTES] = "";
    rc = ks_config_validate(json_object_get(req->json, "document"), why, sizeof(why));
    if (rc == KS_ERR_REJECTED)
        return ks_http_error(resp, 422, "invalidConfig", "%s", why);
    if (rc != KS_OK)
        return ks_http_error_from(resp, rc, NULL, NULL);
    return ks_http_reply(resp, 200, json_pack("{s:b}", "valid", 1));
}

int ks_api_config_routes(struct ks_http_router *r, struct ks_engine *engine)
{
    assert(r != NULL && engine != NULL);
    static const struct {
        const char *method, *pattern;
        unsigned flags;
        ks_http_handler fn;
    } routes[] = {
        {"GET", "/admin/v1/config", 0, config_current},
        {"PUT", "/admin/v1/config", KS_HTTP_ROUTE_JSON_BODY, config_put},
        {"POST", "/admin/v1/config/validate", KS_HTTP_ROUTE_JSON_BODY, config_validate},
        {"GET", "/admin/v1/config/revisions", 0, config_revisions},
        {"GET", "/admin/v1/config/revisions/{n}", 0, config_revision},
    };
    for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++) {
        int rc = ks_http_router_add(r, routes[i].method, routes[i].pattern,
                                    routes[i].flags | KS_HTTP_ROUTE_AUTH, routes[i].fn, engine);
        if (rc != KS_OK)
            return rc;
    }
    return KS_OK;
}
